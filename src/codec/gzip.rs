//! Gzip, read-only: WAL-G never writes it but reads `.gz` objects (left by
//! WAL-E or by hand), multi-member like Go's `gzip.Reader`. Decoding uses
//! `flate2` with the pure-Rust `miniz_oxide` backend; its fixed 32 KiB window
//! keeps the state small.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

use super::{ErrorSlot, Source, Sticky, corrupt, remember, truncated};

/// Heap of [`GzipDecoder`]: `flate2`'s 32 KiB input buffer, `miniz_oxide`'s
/// inflate state (32 KiB window plus Huffman tables, about 43 KiB), the gzip
/// header buffer (filename/comment fields, capped by `flate2` at 64 KiB) and
/// the boxed structs. Checked by the allocation test.
pub(super) fn decoder_state_bytes() -> u64 {
    (32 + 44 + 64 + 4) * 1024
}

/// Streaming gzip decompressor.
pub(super) struct GzipDecoder<R> {
    d: MultiGzDecoder<Source<R>>,
    slot: ErrorSlot,
    produced_any: bool,
    failed: Option<Sticky>,
}

impl<R: Read> GzipDecoder<R> {
    pub(super) fn new(inner: R) -> Self {
        let slot = ErrorSlot::default();
        let d = MultiGzDecoder::new(Source {
            inner,
            slot: slot.clone(),
        });
        GzipDecoder {
            d,
            slot,
            produced_any: false,
            failed: None,
        }
    }
}

impl<R: Read> Read for GzipDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.error());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.d.read(buf) {
            Ok(0) if !self.produced_any && self.d.header().is_none() => {
                // Go's gzip reader fails on an empty object; so do we.
                Err(remember(
                    &mut self.failed,
                    truncated("gzip: empty input, no gzip member"),
                ))
            }
            Ok(n) => {
                self.produced_any |= n > 0;
                Ok(n)
            }
            Err(e) => {
                if let Some(orig) = self.slot.take() {
                    return Err(orig);
                }
                let e = match e.kind() {
                    io::ErrorKind::UnexpectedEof => truncated(format!("gzip: {e}")),
                    _ => corrupt(format!("gzip: {e}")),
                };
                Err(remember(&mut self.failed, e))
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::testdata::walish;
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    pub(crate) fn gzip_bytes(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GzipDecoder::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_round_trip() {
        let a = walish(300_000, 1);
        let b = walish(1000, 2);
        assert!(decode(&gzip_bytes(&a)).unwrap() == a);
        let two = [gzip_bytes(&a), gzip_bytes(&b)].concat();
        assert!(decode(&two).unwrap() == [a, b].concat());
        assert_eq!(decode(&gzip_bytes(b"")).unwrap(), b"");
    }

    #[test]
    fn truncation_and_corruption_are_errors() {
        let data = walish(20_000, 3);
        let f = gzip_bytes(&data);
        for cut in 0..f.len() {
            assert!(decode(&f[..cut]).is_err(), "cut {cut}");
        }
        for i in (10..f.len()).step_by(7) {
            let mut g = f.clone();
            g[i] ^= 0x04;
            assert!(decode(&g).is_err(), "flip at {i}");
        }
        let mut g = f.clone();
        g.extend_from_slice(b"garbage!");
        assert!(decode(&g).is_err());
    }
}

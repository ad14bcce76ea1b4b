//! LZMA "alone" (classic `.lzma`, not `.xz`): 13-byte header (properties
//! byte, dictionary size u32 LE, uncompressed size u64 LE) followed by the
//! range-coded data, as written by WAL-G's `ulikunitz/xz/lzma` writer.
//!
//! We write the same header shape (props `0x5D` = lc 3, lp 0, pb 2; size
//! unknown, all `FF`, with an end-of-stream marker) but with a 1 MiB
//! dictionary and the fast hash-chain encoder instead of WAL-G's 8 MiB: the
//! encoder's tables scale with the dictionary (about 8 bytes per byte of
//! dictionary), and 1 MiB already covers the redundancy in WAL records.
//!
//! Reading accepts unknown size with end marker or a known size, any
//! dictionary up to 64 MiB (WAL-G writes 8 MiB), and refuses larger
//! dictionaries and `lc + lp > 4` (as liblzma does) instead of allocating
//! for them. The decoder grows its window with the output, so small objects
//! never pay for the full dictionary. Like WAL-G's reader it ignores bytes
//! after the end marker. The format has no checksum: truncation is always
//! detected, but a corrupted byte may decode to wrong data.

use std::io::{self, Read, Write};

use lzma_rust2::{EncodeMode, LzmaOptions, LzmaReader, LzmaWriter, MfType};

use super::{ErrorSlot, OUT_BUF_BYTES, OutBuf, Source, Sticky, corrupt, remember, truncated};

/// Dictionary size we write.
pub(super) const OWN_DICT_SIZE: u32 = 1 << 20;
/// Dictionary size WAL-G writes.
pub(super) const WALG_DICT_SIZE: u32 = 8 << 20;
/// Largest dictionary we decode.
pub(super) const MAX_DICT_SIZE: u32 = 64 << 20;

const HEADER_BYTES: usize = 13;

/// `lzma-rust2`'s compressed-input buffer (`INPUT_BUFFER_MAX`, not exported).
const READER_INPUT_BYTES: u64 = 64 * 1024;
/// Allowance for the boxed decoder struct and the decoder's small state.
const DECODER_FIXED_BYTES: u64 = 16 * 1024;

/// Encoder settings: xz preset 1 (fast mode, hash chain over 4-byte hashes,
/// nice length 128, depth 8) with the classic lc/lp/pb.
fn options() -> LzmaOptions {
    LzmaOptions::new(
        OWN_DICT_SIZE,
        LzmaOptions::LC_DEFAULT,
        LzmaOptions::LP_DEFAULT,
        LzmaOptions::PB_DEFAULT,
        EncodeMode::Fast,
        128,
        MfType::Hc4,
        8,
    )
}

/// Heap of [`LzmaEncoder`]: `lzma-rust2`'s own estimate for these options
/// (window buffer, hash chain, hash tables, probability models) plus our
/// output buffer.
pub(super) fn encoder_state_bytes() -> u64 {
    options().get_memory_usage() as u64 * 1024 + OUT_BUF_BYTES as u64
}

/// Most bytes one `write_all` of `len` bytes (or `finish`, `len` 0) hands
/// to the sink: LZMA encodes as input arrives, keeping back only the match
/// finder's lookahead (under 1 KiB), and adaptive range coding expands even
/// random data by about 1 %; plus the 13-byte header, the end marker, and up
/// to 16 KiB our output buffer held back from earlier calls.
pub(super) fn burst_bytes(len: u64) -> u64 {
    let input = len + 1024;
    input + input / 16 + 64 + OUT_BUF_BYTES as u64
}

/// Heap of [`LzmaDecoder`] for a dictionary of `dict_size` bytes with
/// `lc + lp <= 4`: window, probability models (`lzma-rust2`'s estimate),
/// its input buffer and our struct. The window grows by doubling through
/// `realloc`; glibc serves blocks this large with `mremap`, so the old and
/// new block are not both resident.
pub(super) fn decoder_state_bytes(dict_size: u32) -> u64 {
    let kib = lzma_rust2::lzma_get_memory_usage(dict_size, 4, 0).unwrap_or(u32::MAX) as u64;
    kib * 1024 + READER_INPUT_BYTES + DECODER_FIXED_BYTES
}

fn wrap_error(src_err: Option<io::Error>, err: io::Error) -> io::Error {
    if let Some(e) = src_err {
        return e;
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => truncated(format!("lzma: {err}")),
        _ => corrupt(format!("lzma: {err}")),
    }
}

/// Streaming LZMA-alone compressor.
pub(super) struct LzmaEncoder<W: Write> {
    w: LzmaWriter<OutBuf<W>>,
}

impl<W: Write> LzmaEncoder<W> {
    pub(super) fn new(inner: W) -> io::Result<Self> {
        let w = LzmaWriter::new_use_header(OutBuf::new(inner), &options(), None)?;
        Ok(LzmaEncoder { w })
    }

    pub(super) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.w.write_all(buf)
    }

    pub(super) fn flush_output(&mut self) -> io::Result<()> {
        self.w.inner_mut().flush()
    }

    pub(super) fn finish(self) -> io::Result<W> {
        self.w.finish()?.into_inner()
    }
}

/// Streaming LZMA-alone decompressor. The header is read on the first `read`.
pub(super) struct LzmaDecoder<R> {
    inner: Option<R>,
    header: [u8; HEADER_BYTES],
    header_len: usize,
    reader: Option<LzmaReader<Source<R>>>,
    slot: ErrorSlot,
    failed: Option<Sticky>,
}

impl<R: Read> LzmaDecoder<R> {
    pub(super) fn new(inner: R) -> Self {
        LzmaDecoder {
            inner: Some(inner),
            header: [0; HEADER_BYTES],
            header_len: 0,
            reader: None,
            slot: ErrorSlot::default(),
            failed: None,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        let inner = self.inner.as_mut().expect("header not yet read");
        while self.header_len < HEADER_BYTES {
            let n = super::read_retry(inner, &mut self.header[self.header_len..])?;
            if n == 0 {
                return Err(truncated("lzma: truncated header"));
            }
            self.header_len += n;
        }
        let props = self.header[0];
        if props >= 9 * 5 * 5 {
            return Err(corrupt("lzma: invalid properties byte"));
        }
        let lc = props % 9;
        let lp = (props / 9) % 5;
        if lc + lp > 4 {
            return Err(corrupt("lzma: lc + lp > 4 is not supported"));
        }
        let dict = u32::from_le_bytes(self.header[1..5].try_into().expect("4 bytes"));
        if dict > MAX_DICT_SIZE {
            return Err(corrupt(format!(
                "lzma: dictionary size {dict} exceeds the {} MiB limit",
                MAX_DICT_SIZE >> 20
            )));
        }
        let size = u64::from_le_bytes(self.header[5..13].try_into().expect("8 bytes"));
        let src = Source {
            inner: self.inner.take().expect("header not yet read"),
            slot: self.slot.clone(),
        };
        // Reads the range coder's first bytes, so it can fail like `read`.
        let reader = LzmaReader::new_with_props(src, size, props, dict, None)
            .map_err(|e| wrap_error(self.slot.take(), e))?;
        self.reader = Some(reader);
        Ok(())
    }
}

impl<R: Read> Read for LzmaDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.error());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.reader.is_none()
            && let Err(e) = self.start()
        {
            return Err(remember(&mut self.failed, e));
        }
        let reader = self.reader.as_mut().expect("started");
        match reader.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let e = wrap_error(self.slot.take(), e);
                Err(remember(&mut self.failed, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{ErrOf, noise, walish};
    use super::*;

    /// Unknown uncompressed size in the header.
    const SIZE_UNKNOWN: u64 = u64::MAX;

    fn encode(data: &[u8]) -> Vec<u8> {
        let mut e = LzmaEncoder::new(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        LzmaDecoder::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    /// An LZMA-alone stream as WAL-G writes it: 8 MiB dictionary, unknown
    /// size, end marker (xz preset 6 = normal mode, binary tree).
    fn walg_like(data: &[u8], known_size: bool) -> Vec<u8> {
        let mut o = LzmaOptions::with_preset(6);
        o.dict_size = WALG_DICT_SIZE;
        let size = known_size.then_some(data.len() as u64);
        let mut w = LzmaWriter::new_use_header(Vec::new(), &o, size).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_is_walg_shaped() {
        let f = encode(b"hello");
        assert_eq!(f[0], 0x5D);
        assert_eq!(
            u32::from_le_bytes(f[1..5].try_into().unwrap()),
            OWN_DICT_SIZE
        );
        assert_eq!(
            u64::from_le_bytes(f[5..13].try_into().unwrap()),
            SIZE_UNKNOWN
        );
        assert_eq!(decode(&f).unwrap(), b"hello");
        assert_eq!(decode(&encode(b"")).unwrap(), b"");
    }

    #[test]
    fn reads_walg_dictionary_known_and_unknown_size() {
        let data = [walish(3 << 20, 1), noise(100_000, 2)].concat();
        for known in [false, true] {
            let f = walg_like(&data, known);
            assert_eq!(&f[..5], &[0x5D, 0, 0, 0x80, 0]);
            assert!(decode(&f).unwrap() == data, "known size {known}");
        }
    }

    #[test]
    fn truncation_and_bad_headers() {
        let f = encode(&walish(30_000, 3));
        for cut in 0..f.len() {
            assert!(decode(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut big = f.clone();
        big[1..5].copy_from_slice(&(MAX_DICT_SIZE + 1).to_le_bytes());
        let err = decode(&big).err_of();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let mut bad = f.clone();
        bad[0] = 225;
        assert_eq!(decode(&bad).err_of().kind(), io::ErrorKind::InvalidData);
        let mut lclp = f.clone();
        lclp[0] = 4 + 9; // lc 4, lp 1
        assert!(decode(&lclp).err_of().to_string().contains("lc + lp"));
        // Known size shorter than the data it claims.
        let mut known = walg_like(b"abcdefgh", true);
        known[5] = 20;
        assert!(decode(&known).is_err());
    }

    #[test]
    fn corruption_is_detected_or_harmless() {
        // LZMA has no checksum: a flipped bit may decode to other bytes.
        // What matters is that it never panics or runs away.
        let data = walish(20_000, 4);
        let f = encode(&data);
        for i in (13..f.len()).step_by(11) {
            let mut g = f.clone();
            g[i] ^= 0x20;
            if let Ok(out) = decode(&g) {
                assert!(out.len() < 10 * data.len());
            }
        }
    }
}

//! The room as a whole: every method round trip through [`Encoder`] and [`Decoder`],
//! determinism across chunkings, errors that name their format or pass through, and the
//! reported memory bounds.

use super::testdata::{ALL_METHODS, ErrOf, noise, walish};
use super::*;
use std::io::{self, Read, Write};

fn opts(method: Method) -> EncodeOptions {
    EncodeOptions {
        method,
        zstd_level: ZstdLevel::Default,
    }
}

fn encode_chunked(o: EncodeOptions, data: &[u8], chunk: usize, hint: Option<u64>) -> Vec<u8> {
    let mut e = Encoder::new(o, Vec::new(), hint).unwrap();
    for c in data.chunks(chunk.max(1)) {
        e.write_all(c).unwrap();
    }
    e.finish().unwrap()
}

fn decode(f: ReadFormat, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut d = Decoder::new(f, data)?;
    let mut out = Vec::new();
    d.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn round_trip_every_method_and_size() {
    for m in ALL_METHODS {
        for len in [0usize, 1, 5, 100, 65_535, 65_536, 65_537, 300_000] {
            let data = walish(len, len as u64 + 7);
            let enc = encode_chunked(opts(m), &data, 4096, None);
            let dec = decode(m.read_format(), &enc).unwrap();
            assert!(dec == data, "{m:?} len {len}");
        }
    }
}

#[test]
fn output_independent_of_chunking_and_flush() {
    let data = walish(700_000, 3);
    for m in ALL_METHODS {
        let a = encode_chunked(opts(m), &data, 1 << 20, None);
        let b = encode_chunked(opts(m), &data, 777, None);
        let mut e = Encoder::new(opts(m), Vec::new(), None).unwrap();
        for c in data.chunks(10_000) {
            e.write_all(c).unwrap();
            e.flush().unwrap();
        }
        let c = e.finish().unwrap();
        assert!(a == b && a == c, "{m:?}");
    }
}

#[test]
fn two_encodes_of_16_mib_are_identical() {
    // The uploader compresses twice (length + SHA-256, then the upload)
    // and the two passes must agree byte for byte; the second pass also
    // feeds the data in differently sized pieces.
    let mut data = walish(16 << 20, 21);
    data[12 << 20..].fill(0);
    let hint = Some(data.len() as u64);
    for m in ALL_METHODS {
        for level in [ZstdLevel::Default, ZstdLevel::Fastest] {
            if m != Method::Zstd && level != ZstdLevel::Default {
                continue;
            }
            let o = EncodeOptions {
                method: m,
                zstd_level: level,
            };
            let a = encode_chunked(o, &data, 64 << 10, hint);
            let b = encode_chunked(o, &data, 100_003, hint);
            assert!(a == b, "{m:?} {level:?}: two encodes differ");
        }
    }
}

#[test]
fn encoders_and_decoders_are_send() {
    fn send<T: Send>() {}
    send::<Encoder<std::fs::File>>();
    send::<Decoder<std::fs::File>>();
}

#[test]
fn every_zstd_level_round_trips() {
    let data = walish(400_000, 9);
    for level in [
        ZstdLevel::Fastest,
        ZstdLevel::Default,
        ZstdLevel::Better,
        ZstdLevel::Best,
    ] {
        let o = EncodeOptions {
            method: Method::Zstd,
            zstd_level: level,
        };
        let enc = encode_chunked(o, &data, 65536, Some(data.len() as u64));
        assert_eq!(decode(ReadFormat::Zstd, &enc).unwrap(), data);
    }
}

#[test]
fn truncation_is_always_an_error() {
    let data = walish(20_000, 5);
    for m in [Method::Lz4, Method::Lzma, Method::Zstd, Method::Brotli] {
        let enc = encode_chunked(opts(m), &data, 4096, None);
        // A 0-byte zstd object is empty content (WAL-G writes those).
        let first = if m == Method::Zstd { 1 } else { 0 };
        for cut in first..enc.len() {
            let r = decode(m.read_format(), &enc[..cut]);
            assert!(
                r.is_err(),
                "{m:?} cut at {cut} of {} decoded silently",
                enc.len()
            );
        }
    }
}

#[test]
fn errors_name_their_format() {
    let data = noise(1000, 1);
    for m in [Method::Lz4, Method::Lzma, Method::Zstd, Method::Brotli] {
        let enc = encode_chunked(opts(m), &data, 4096, None);
        let err = decode(m.read_format(), &enc[..enc.len() / 2]).err_of();
        let name = m.setting_name();
        assert!(
            err.to_string().starts_with(&format!("{name}: ")),
            "{m:?}: {err}"
        );
    }
}

#[test]
fn inner_reader_errors_pass_through() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "net down"));
            }
            let n = buf.len().min(self.0.len()).min(100);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let data = noise(5000, 2);
    for m in [Method::Lz4, Method::Lzma, Method::Zstd, Method::Brotli] {
        let enc = encode_chunked(opts(m), &data, 4096, None);
        let mut d = Decoder::new(m.read_format(), Failing(&enc[..enc.len() / 2])).unwrap();
        let err = io::copy(&mut d, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{m:?}: {err}");
        assert_eq!(err.to_string(), "net down", "{m:?}");
    }
    let gz = gzip::tests::gzip_bytes(&data);
    let mut d = Decoder::new(ReadFormat::Gzip, Failing(&gz[..gz.len() / 2])).unwrap();
    let err = io::copy(&mut d, &mut io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "gzip: {err}");
}

#[test]
fn encoder_errors_poison() {
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // Brotli holds up to a 2 MiB metablock of noise before writing.
    let data = noise(4 << 20, 3);
    for m in [Method::Lz4, Method::Lzma, Method::Zstd, Method::Brotli] {
        let mut e = Encoder::new(opts(m), Full(100_000), None).unwrap();
        let r = data.chunks(1 << 16).try_for_each(|c| e.write_all(c));
        assert!(r.is_err(), "{m:?}");
        assert!(e.write_all(b"x").is_err());
        assert!(e.finish().is_err());
    }
}

#[test]
fn bursts_stay_within_reported_bound() {
    /// Counts what reaches the sink; the test reads it between calls.
    struct Count(std::rc::Rc<std::cell::Cell<u64>>);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.set(self.0.get() + buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let inputs = [noise(6 << 20, 31), walish(6 << 20, 32), vec![0u8; 6 << 20]];
    for m in ALL_METHODS {
        for data in &inputs {
            for step in [1usize, 1000, 64 << 10, 1 << 20] {
                let data = if step == 1 {
                    &data[..200_000]
                } else {
                    &data[..]
                };
                let counter = std::rc::Rc::new(std::cell::Cell::new(0));
                let mut e = Encoder::new(opts(m), Count(counter.clone()), None).unwrap();
                let bound = encoder_burst_bytes(opts(m), step);
                let mut worst = 0;
                for c in data.chunks(step) {
                    let before = counter.get();
                    e.write_all(c).unwrap();
                    worst = worst.max(counter.get() - before);
                }
                assert!(worst <= bound, "{m:?} step {step}: {worst} > {bound}");
                let before = counter.get();
                e.finish().unwrap();
                let last = counter.get() - before;
                let bound = encoder_burst_bytes(opts(m), 0);
                assert!(last <= bound, "{m:?} finish: {last} > {bound}");
            }
        }
    }
}

#[test]
fn state_sizes_are_ordered_sensibly() {
    for m in ALL_METHODS {
        let o = opts(m);
        let f = m.read_format();
        assert!(
            decoder_state_bytes_own(o) <= decoder_state_bytes(f),
            "{m:?}"
        );
        assert!(
            decoder_state_bytes(f) <= decoder_state_bytes_max(f),
            "{m:?}"
        );
    }
    // The default path must stay tiny: wal-push/wal-fetch of a 16 MiB
    // segment has to fit the whole process in 8 MiB.
    assert!(encoder_state_bytes(EncodeOptions::default()) < 300 << 10);
    assert!(decoder_state_bytes(ReadFormat::Lz4) < 300 << 10);
}

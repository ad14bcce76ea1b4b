//! The compress stage as a pull stream: read a local file, compress it, hand out the bytes.
//!
//! Uploads pull their body (S3 wants to read it twice: once to learn its length and digest,
//! once to send it), so compression runs inside `Read::read`, one arena buffer of input at a
//! time, into a second arena buffer that the reader drains. Nothing grows with the file.

use super::arena::{Arena, Lease};
use crate::codec::{EncodeOptions, Encoder};
use crate::storage::BodySource;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;

/// Where the encoder's output waits to be read; shared by the encoder (writer) and the
/// stream (reader) on one thread.
#[derive(Clone)]
struct Staging(Rc<RefCell<Staged>>);

/// The staged bytes: `buf[..len]`. The vector keeps its full length and is written in
/// place, so only the pages an encoder call really fills become resident (a 64 KiB block of
/// WAL compresses to ~4 KiB); clearing and regrowing it would zero-fill the whole buffer on
/// every return to the arena.
struct Staged {
    buf: Lease,
    len: usize,
}

impl Write for Staging {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut staged = self.0.borrow_mut();
        let end = staged.len + data.len();
        if end > staged.buf.len() {
            // Grow to exactly what this encoder call has produced: Vec's doubling would take
            // up to twice the encoder burst the memory plan counts (Brotli's 2.1 MiB would
            // become 4 MiB).
            let grow = end - staged.buf.len();
            staged.buf.reserve_exact(grow);
            staged.buf.resize(end, 0);
        }
        let at = staged.len;
        staged.buf[at..end].copy_from_slice(data);
        staged.len = end;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compressed bytes of `input`, produced as they are read.
pub struct CompressingReader<R: Read> {
    input: R,
    in_buf: Lease,
    staging: Staging,
    encoder: Option<Encoder<Staging>>,
    pos: usize,
}

impl<R: Read> CompressingReader<R> {
    /// A stream over the compressed form of `input`, using two buffers from `arena`.
    pub fn new(
        input: R,
        opts: EncodeOptions,
        arena: &Arena,
        size_hint: Option<u64>,
    ) -> io::Result<Self> {
        let in_buf = arena.lease();
        let staging = Staging(Rc::new(RefCell::new(Staged {
            buf: arena.lease(),
            len: 0,
        })));
        let encoder = Encoder::new(opts, staging.clone(), size_hint)?;
        Ok(CompressingReader {
            input,
            in_buf,
            staging,
            encoder: Some(encoder),
            pos: 0,
        })
    }
}

impl<R: Read> Read for CompressingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let staged = self.staging.0.borrow();
                if self.pos < staged.len {
                    let n = buf.len().min(staged.len - self.pos);
                    buf[..n].copy_from_slice(&staged.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(0);
            };
            self.staging.0.borrow_mut().len = 0;
            self.pos = 0;
            // A full buffer per encoder call: LZ4 makes one block of each call, and a
            // tar stream's reads stop at every header.
            let n = crate::storage::read_full(&mut self.input, &mut self.in_buf[..])?;
            if n == 0 {
                let encoder = self.encoder.take().expect("checked above");
                encoder.finish()?;
            } else {
                encoder.write_all(&self.in_buf[..n])?;
            }
        }
    }
}

/// A local file, compressed on the fly, as an upload body.
pub struct CompressedFile<'a> {
    /// The file.
    pub path: PathBuf,
    /// How to compress it.
    pub opts: EncodeOptions,
    /// Where the stream's buffers come from.
    pub arena: &'a Arena,
}

impl BodySource for CompressedFile<'_> {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let file = File::open(&self.path)?;
        let size = file.metadata()?.len();
        Ok(Box::new(CompressingReader::new(
            file,
            self.opts,
            self.arena,
            Some(size),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, Method, ReadFormat, ZstdLevel};

    #[test]
    fn round_trip_every_method() {
        let arena = Arena::new(2, 64 * 1024);
        let data: Vec<u8> = (0..(3u32 << 20))
            .map(|i| {
                if i % 3 == 0 {
                    (i >> 5) as u8
                } else {
                    (i.wrapping_mul(2_654_435_761) >> 24) as u8
                }
            })
            .collect();
        for method in [
            Method::Lz4,
            Method::Zstd,
            Method::Lzma,
            Method::Brotli,
            Method::None,
        ] {
            let opts = EncodeOptions {
                method,
                zstd_level: ZstdLevel::Default,
            };
            let mut r =
                CompressingReader::new(&data[..], opts, &arena, Some(data.len() as u64)).unwrap();
            let mut packed = Vec::new();
            r.read_to_end(&mut packed).unwrap();
            drop(r);
            assert_eq!(arena.free(), 2, "buffers returned");
            let fmt = ReadFormat::from_extension(method.extension()).unwrap();
            let mut back = Vec::new();
            Decoder::new(fmt, &packed[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{method:?}");
        }
    }
}

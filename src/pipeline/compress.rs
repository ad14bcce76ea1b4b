//! The compress stage as a pull stream: read a local file, compress it, hand out the bytes.
//!
//! Uploads pull their body (S3 wants to read it twice: once to learn its length and digest,
//! once to send it), so compression runs inside `Read::read`, one arena buffer of input at a
//! time, into a second arena buffer that the reader drains; LZ4 blocks are drained straight
//! from the block compressor instead. Nothing grows with the file.

use super::arena::{Arena, Lease};
use crate::codec::{EncodeOptions, Encoder, Lz4Block, Lz4Blocks, Method, Seal};
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
    stage: Stage,
}

/// How the compressed bytes wait to be read.
enum Stage {
    /// Any method: the encoder writes into a staging buffer that reads drain.
    Staged {
        staging: Staging,
        encoder: Option<Encoder<Staging>>,
        pos: usize,
    },
    /// LZ4, the default: each block is read straight out of the block compressor's buffer
    /// (or, stored, out of the input buffer), behind its few bytes of framing in `head`.
    Lz4 {
        blocks: Box<Lz4Blocks>,
        head: [u8; 8],
        head_len: usize,
        head_pos: usize,
        body: Lz4Body,
        body_pos: usize,
        finished: bool,
    },
}

/// Where the current LZ4 block's bytes are, and how many.
#[derive(Clone, Copy)]
enum Lz4Body {
    None,
    Compressed(usize),
    Stored(usize),
}

impl<R: Read> CompressingReader<R> {
    /// A stream over the compressed form of `input`, using two buffers from `arena` (one for
    /// LZ4).
    pub fn new(
        input: R,
        opts: EncodeOptions,
        arena: &Arena,
        size_hint: Option<u64>,
    ) -> io::Result<Self> {
        let in_buf = arena.lease()?;
        let stage = if opts.method == Method::Lz4 {
            let mut head = [0u8; 8];
            head[..7].copy_from_slice(&Lz4Blocks::header());
            Stage::Lz4 {
                blocks: Box::default(),
                head,
                head_len: 7,
                head_pos: 0,
                body: Lz4Body::None,
                body_pos: 0,
                finished: false,
            }
        } else {
            let staging = Staging(Rc::new(RefCell::new(Staged {
                buf: arena.lease()?,
                len: 0,
            })));
            let encoder = Encoder::new(opts, staging.clone(), size_hint)?;
            Stage::Staged {
                staging,
                encoder: Some(encoder),
                pos: 0,
            }
        };
        Ok(CompressingReader {
            input,
            in_buf,
            stage,
        })
    }
}

/// Copies what is left of `from` after `*pos` into `buf`; returns how much.
fn hand_out(from: &[u8], pos: &mut usize, buf: &mut [u8]) -> usize {
    let n = buf.len().min(from.len() - *pos);
    buf[..n].copy_from_slice(&from[*pos..*pos + n]);
    *pos += n;
    n
}

impl<R: Read> Read for CompressingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stage {
            Stage::Staged {
                staging,
                encoder,
                pos,
            } => loop {
                {
                    let staged = staging.0.borrow();
                    if *pos < staged.len {
                        return Ok(hand_out(&staged.buf[..staged.len], pos, buf));
                    }
                }
                let Some(enc) = encoder.as_mut() else {
                    return Ok(0);
                };
                staging.0.borrow_mut().len = 0;
                *pos = 0;
                // A full buffer per encoder call: a tar stream's reads stop at every header.
                let n = crate::storage::read_full(&mut self.input, &mut self.in_buf[..])?;
                if n == 0 {
                    encoder.take().expect("checked above").finish()?;
                } else {
                    enc.write_all(&self.in_buf[..n])?;
                }
            },
            Stage::Lz4 {
                blocks,
                head,
                head_len,
                head_pos,
                body,
                body_pos,
                finished,
            } => loop {
                if *head_pos < *head_len {
                    return Ok(hand_out(&head[..*head_len], head_pos, buf));
                }
                match *body {
                    Lz4Body::Compressed(n) if *body_pos < n => {
                        return Ok(hand_out(blocks.compressed(n), body_pos, buf));
                    }
                    Lz4Body::Stored(n) if *body_pos < n => {
                        return Ok(hand_out(&self.in_buf[..n], body_pos, buf));
                    }
                    _ => {}
                }
                if *finished {
                    return Ok(0);
                }
                // Blocks cut at exactly Lz4Blocks::BLOCK, as the encoder cuts them, so this
                // stream and `Encoder` make the same bytes.
                let cap = self.in_buf.len().min(Lz4Blocks::BLOCK);
                let n = crate::storage::read_full(&mut self.input, &mut self.in_buf[..cap])?;
                *head_pos = 0;
                *body_pos = 0;
                if n == 0 {
                    *head = blocks.trailer();
                    *head_len = 8;
                    *body = Lz4Body::None;
                    *finished = true;
                    continue;
                }
                *head_len = 4;
                match blocks.block(&self.in_buf[..n])? {
                    Lz4Block::Compressed(size, m) => {
                        head[..4].copy_from_slice(&size);
                        *body = Lz4Body::Compressed(m);
                    }
                    Lz4Block::Stored(size) => {
                        head[..4].copy_from_slice(&size);
                        *body = Lz4Body::Stored(n);
                    }
                }
            },
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
    /// The object's encryption after compression, if any (one header for both passes).
    pub seal: Option<Seal>,
}

impl BodySource for CompressedFile<'_> {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let file = File::open(&self.path)?;
        let size = file.metadata()?.len();
        let compressed = CompressingReader::new(file, self.opts, self.arena, Some(size))?;
        sealed(compressed, self.seal.as_ref())
    }

    /// The encoder writes straight into `each`: no staging buffer, no copy. The input is cut
    /// exactly as [`CompressingReader`] cuts it (full arena buffers), so both passes produce
    /// the same bytes. OpenPGP encrypts only as a reader: then this pass reads
    /// [`open`](Self::open) as the send pass does.
    fn for_each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        digest_pass(
            self,
            self.seal.as_ref(),
            self.opts,
            self.arena,
            each,
            || {
                let file = File::open(&self.path)?;
                let size = file.metadata()?.len();
                Ok((Box::new(file), size))
            },
        )
    }
}

/// Bytes in memory (a WAL segment wal-receive assembled), compressed on the fly, as an
/// upload body: [`CompressedFile`] without the file.
pub struct CompressedBytes<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// How to compress them.
    pub opts: EncodeOptions,
    /// Where the stream's buffers come from.
    pub arena: &'a Arena,
    /// The object's encryption after compression, if any (one header for both passes).
    pub seal: Option<Seal>,
}

impl BodySource for CompressedBytes<'_> {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let size = Some(self.data.len() as u64);
        let compressed = CompressingReader::new(self.data, self.opts, self.arena, size)?;
        sealed(compressed, self.seal.as_ref())
    }

    /// As [`CompressedFile::for_each_chunk`]: the same cuts, so both passes agree.
    fn for_each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        digest_pass(
            self,
            self.seal.as_ref(),
            self.opts,
            self.arena,
            each,
            || Ok((Box::new(self.data), self.data.len() as u64)),
        )
    }
}

/// The send pass's stream: the compressed bytes, encrypted when there is a seal.
fn sealed<'a>(compressed: impl Read + 'a, seal: Option<&Seal>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match seal {
        None => Box::new(compressed),
        Some(seal) => Box::new(seal.reader(compressed)?),
    })
}

/// The digest pass of `body`: the encoder (and the sealer) write straight into `each`, fed
/// one arena buffer of the plain input at a time. OpenPGP encrypts only as a reader: then
/// this pass reads `body` as the send pass does.
fn digest_pass<'a>(
    body: &'a dyn BodySource,
    seal: Option<&Seal>,
    opts: EncodeOptions,
    arena: &Arena,
    each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    plain: impl FnOnce() -> io::Result<(Box<dyn Read + 'a>, u64)>,
) -> io::Result<()> {
    if seal.is_some_and(|s| !s.has_writer()) {
        return crate::readers::for_each_chunk(
            &mut body.open()?,
            crate::storage::CHUNK_BUFFER,
            each,
        );
    }
    let (mut input, size) = plain()?;
    encode_each(&mut input, size, opts, arena, seal, each)
}

/// The digest pass of a compressed body: the encoder (and the sealer, when there is one)
/// writes straight into `each`, fed one arena buffer of `input` at a time.
fn encode_each(
    input: &mut dyn Read,
    size: u64,
    opts: EncodeOptions,
    arena: &Arena,
    seal: Option<&Seal>,
    each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut in_buf = arena.lease()?;
    match seal {
        None => {
            let encoder = Encoder::new(opts, EachChunk(each), Some(size))?;
            pump(input, &mut in_buf, encoder).map(drop)
        }
        Some(seal) => {
            let sealed = seal
                .writer(EachChunk(each))?
                .ok_or_else(|| io::Error::other("this encryption has no writer"))?;
            let encoder = Encoder::new(opts, sealed, Some(size))?;
            pump(input, &mut in_buf, encoder)?.finish().map(drop)
        }
    }
}

/// Feeds `input` through `encoder` one buffer at a time; returns the finished sink.
fn pump<W: Write>(input: &mut dyn Read, buf: &mut [u8], mut encoder: Encoder<W>) -> io::Result<W> {
    loop {
        let n = crate::storage::read_full(input, buf)?;
        if n == 0 {
            return encoder.finish();
        }
        encoder.write_all(&buf[..n])?;
    }
}

/// An encoder's sink that hands each write to a callback.
struct EachChunk<'a>(&'a mut dyn FnMut(&[u8]) -> io::Result<()>);

impl Write for EachChunk<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        (self.0)(data)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, ReadFormat, ZstdLevel};

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

    #[test]
    fn bytes_in_memory_compress_as_the_same_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let arena = Arena::new(2, 64 * 1024);
        let data: Vec<u8> = (0..(1u32 << 20) + 777)
            .map(|i| if i % 7 == 0 { (i >> 9) as u8 } else { 0 })
            .collect();
        std::fs::write(&path, &data).unwrap();
        for method in [Method::Lz4, Method::Zstd, Method::Brotli, Method::None] {
            let opts = EncodeOptions {
                method,
                zstd_level: ZstdLevel::Default,
            };
            let bytes = CompressedBytes {
                data: &data,
                opts,
                arena: &arena,
                seal: None,
            };
            let file = CompressedFile {
                path: path.clone(),
                opts,
                arena: &arena,
                seal: None,
            };
            let (mut streamed, mut from_file, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
            bytes.open().unwrap().read_to_end(&mut streamed).unwrap();
            file.open().unwrap().read_to_end(&mut from_file).unwrap();
            bytes
                .for_each_chunk(&mut |c| {
                    pushed.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
            assert!(streamed == from_file && pushed == streamed, "{method:?}");
            assert_eq!(arena.free(), 2, "buffers returned");
        }
    }

    #[test]
    fn both_passes_of_a_compressed_file_agree() {
        // The digest pass (for_each_chunk) and the send pass (open) must give the same bytes,
        // or S3 refuses the upload for its content hash.
        let dir = std::env::temp_dir().join(format!("walrus-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("segment");
        let arena = Arena::new(2, 64 * 1024);
        for (len, method) in [0u32, 1 << 16, (1 << 20) + 12_345]
            .into_iter()
            .flat_map(|len| {
                [
                    Method::Lz4,
                    Method::Zstd,
                    Method::Lzma,
                    Method::Brotli,
                    Method::None,
                ]
                .map(|m| (len, m))
            })
        {
            let data: Vec<u8> = (0..len)
                .map(|i| if i % 5 == 0 { (i >> 7) as u8 } else { 0 })
                .collect();
            std::fs::write(&path, &data).unwrap();
            let body = CompressedFile {
                path: path.clone(),
                opts: EncodeOptions {
                    method,
                    zstd_level: ZstdLevel::Default,
                },
                arena: &arena,
                seal: None,
            };
            let mut streamed = Vec::new();
            body.open().unwrap().read_to_end(&mut streamed).unwrap();
            let mut pushed = Vec::new();
            let mut calls = 0;
            body.for_each_chunk(&mut |c| {
                calls += 1;
                pushed.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert!(pushed == streamed, "{method:?} {len}");
            if method == Method::Lz4 && len > 1 << 16 {
                // One call per block: the pass really streams.
                assert!(calls > 16, "{calls}");
            }
            assert_eq!(arena.free(), 2, "buffers returned");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

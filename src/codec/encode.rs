//! The writing half of the room: one [`Encoder`] over every method, which keeps the
//! codec states boxed and refuses to go on after a failed write, and the bounds the memory
//! plan needs from it.

use std::io::{self, Write};

use super::{EncodeOptions, Method, brotli, lz4, lzma, zstd};

/// A streaming compressor that writes one complete object (exactly one frame
/// or stream) into `W`.
///
/// Call [`Encoder::finish`] to write the trailer; dropping an unfinished
/// encoder leaves a truncated object behind (which every reader rejects).
/// `flush` pushes already-compressed bytes on to `W` but never ends a block
/// early, so the output is the same however `write` and `flush` are called.
pub struct Encoder<W: Write> {
    inner: EncoderInner<W>,
    /// Set after a failed write: the codec state may have consumed part of
    /// the input, so anything written afterwards would be a corrupt object.
    poisoned: bool,
}

/// Codec states are boxed: they are large, and on the heap they are counted
/// in the reported state sizes like the rest of the codec's memory.
enum EncoderInner<W: Write> {
    Lz4(Box<lz4::Lz4Encoder<W>>),
    Zstd(zstd::ZstdEncoder<W>),
    Lzma(Box<lzma::LzmaEncoder<W>>),
    Brotli(Box<brotli::BrotliEncoder<W>>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// Starts an object. `size_hint`, when given, must be the exact number of
    /// bytes that will be written: zstd records it in the frame header (like
    /// WAL-G does for small inputs) and fails at `finish` if it is wrong; the
    /// other methods ignore it. Give the same hint on both passes of a
    /// two-pass upload, or the outputs differ.
    pub fn new(opts: EncodeOptions, inner: W, size_hint: Option<u64>) -> io::Result<Self> {
        let inner = match opts.method {
            Method::Lz4 => EncoderInner::Lz4(Box::new(lz4::Lz4Encoder::new(inner))),
            Method::Zstd => {
                EncoderInner::Zstd(zstd::ZstdEncoder::new(inner, opts.zstd_level, size_hint)?)
            }
            Method::Lzma => EncoderInner::Lzma(Box::new(lzma::LzmaEncoder::new(inner)?)),
            Method::Brotli => EncoderInner::Brotli(Box::new(brotli::BrotliEncoder::new(inner))),
            Method::None => EncoderInner::None(inner),
        };
        Ok(Encoder {
            inner,
            poisoned: false,
        })
    }

    /// Writes the end of the frame/stream (end marks, checksums), flushes `W`
    /// and returns it.
    pub fn finish(self) -> io::Result<W> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let mut w = match self.inner {
            EncoderInner::Lz4(e) => e.finish()?,
            EncoderInner::Zstd(e) => e.finish()?,
            EncoderInner::Lzma(e) => e.finish()?,
            EncoderInner::Brotli(e) => e.finish()?,
            EncoderInner::None(w) => w,
        };
        w.flush()?;
        Ok(w)
    }

    /// Heap held by C code (libzstd) that Rust's global allocator cannot see;
    /// 0 for the pure-Rust codecs. Lets tests and diagnostics check the
    /// reported state sizes against reality.
    pub fn native_heap_bytes(&self) -> u64 {
        match &self.inner {
            EncoderInner::Zstd(e) => e.native_heap_bytes(),
            _ => 0,
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        let r = match &mut self.inner {
            EncoderInner::Lz4(e) => e.write_all(buf),
            EncoderInner::Zstd(e) => e.write_all(buf),
            EncoderInner::Lzma(e) => e.write_all(buf),
            EncoderInner::Brotli(e) => e.write_all(buf),
            EncoderInner::None(w) => return w.write(buf),
        };
        match r {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderInner::Lz4(e) => e.flush_output(),
            EncoderInner::Zstd(e) => e.flush_output(),
            EncoderInner::Lzma(e) => e.flush_output(),
            EncoderInner::Brotli(e) => e.flush_output(),
            EncoderInner::None(w) => w.flush(),
        }
    }
}

fn poisoned_error() -> io::Error {
    io::Error::other("compression stream is unusable after an earlier write error")
}

/// Heap bytes an [`Encoder`] with these options holds at most, computed from
/// the parameters the encoder really uses (window, tables, buffers). Includes
/// libzstd's C-side allocation for zstd.
pub fn encoder_state_bytes(opts: EncodeOptions) -> u64 {
    match opts.method {
        Method::Lz4 => lz4::encoder_state_bytes(),
        Method::Zstd => zstd::encoder_state_bytes(opts.zstd_level),
        Method::Lzma => lzma::encoder_state_bytes(),
        Method::Brotli => brotli::encoder_state_bytes(),
        Method::None => 0,
    }
}

/// Most bytes an [`Encoder`] with these options hands to its writer during
/// one `write` of `write_len` bytes, or during `finish` (pass 0). A sink that
/// stages the encoder's output per call (e.g. to hash it before upload) must
/// take this much. Brotli is the outlier: a metablock of up to 2 MiB comes
/// out in the one call that completes it.
pub fn encoder_burst_bytes(opts: EncodeOptions, write_len: usize) -> u64 {
    let len = write_len as u64;
    match opts.method {
        Method::Lz4 => lz4::burst_bytes(len),
        Method::Zstd => zstd::burst_bytes(len),
        Method::Lzma => lzma::burst_bytes(len),
        Method::Brotli => brotli::burst_bytes(len),
        Method::None => len,
    }
}

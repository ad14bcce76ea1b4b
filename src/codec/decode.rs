//! The reading half of the room: one [`Decoder`] over every format, which tells "not this
//! format at all" (most likely an encrypted object) from a damaged object, and the bounds
//! the memory plan needs from it.

use std::io::{self, Read};

use super::{EncodeOptions, Method, ReadFormat, brotli, gzip, lz4, lzma, openpgp, sodium, zstd};

/// A streaming decompressor for one object.
///
/// A truncated object (or a corrupt one, where the format can tell) produces
/// an `io::Error` (`UnexpectedEof` or `InvalidData`) before `read` returns
/// `Ok(0)`, and every later `read` fails the same way; the data returned
/// before that error is not trustworthy and must be discarded. Errors of the
/// underlying reader are passed through unchanged.
pub struct Decoder<R: Read> {
    inner: DecoderInner<R>,
    /// Whether any byte came out yet: a stream refused at its very start is most likely
    /// not of this format at all.
    started: bool,
}

/// What an object that no decoder recognises at its first bytes most likely is: WAL-G
/// encrypts after compressing, so an encrypted object starts with a cipher header, never
/// with a codec's magic.
#[derive(Debug)]
pub struct NotThisFormat {
    /// The decoder's own complaint.
    pub cause: io::Error,
}

impl std::fmt::Display for NotThisFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; the object may be encrypted with a key this configuration does not have \
             (WALG_PGP_KEY or WALG_PGP_KEY_PATH for OpenPGP, WALG_LIBSODIUM_KEY for libsodium)",
            self.cause
        )
    }
}

impl std::error::Error for NotThisFormat {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

enum DecoderInner<R: Read> {
    Lz4(Box<lz4::Lz4Decoder<R>>),
    Zstd(zstd::ZstdDecoder<R>),
    Lzma(Box<lzma::LzmaDecoder<R>>),
    Brotli(Box<brotli::BrotliDecoder<R>>),
    Gzip(Box<gzip::GzipDecoder<R>>),
    Plain(R),
}

impl<R: Read> Decoder<R> {
    /// Prepares to decode `inner` as `format`. Nothing is read yet; header
    /// errors surface on the first `read`.
    pub fn new(format: ReadFormat, inner: R) -> io::Result<Self> {
        let inner = match format {
            ReadFormat::Lz4 => DecoderInner::Lz4(Box::new(lz4::Lz4Decoder::new(inner))),
            ReadFormat::Zstd => DecoderInner::Zstd(zstd::ZstdDecoder::new(inner)?),
            ReadFormat::Lzma => DecoderInner::Lzma(Box::new(lzma::LzmaDecoder::new(inner))),
            ReadFormat::Brotli => DecoderInner::Brotli(Box::new(brotli::BrotliDecoder::new(inner))),
            ReadFormat::Gzip => DecoderInner::Gzip(Box::new(gzip::GzipDecoder::new(inner))),
            ReadFormat::Plain => DecoderInner::Plain(inner),
        };
        Ok(Decoder {
            inner,
            started: false,
        })
    }

    /// Heap held by C code (libzstd) that Rust's global allocator cannot see;
    /// 0 for the pure-Rust codecs.
    pub fn native_heap_bytes(&self) -> u64 {
        match &self.inner {
            DecoderInner::Zstd(d) => d.native_heap_bytes(),
            _ => 0,
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match &mut self.inner {
            DecoderInner::Lz4(d) => d.read(buf),
            DecoderInner::Zstd(d) => d.read(buf),
            DecoderInner::Lzma(d) => d.read(buf),
            DecoderInner::Brotli(d) => d.read(buf),
            DecoderInner::Gzip(d) => d.read(buf),
            DecoderInner::Plain(r) => r.read(buf),
        };
        match result {
            Ok(n) => {
                self.started |= n > 0;
                Ok(n)
            }
            Err(e)
                if !self.started
                    && e.kind() == io::ErrorKind::InvalidData
                    && !e.get_ref().is_some_and(|i| {
                        i.is::<sodium::DecryptError>() || i.is::<openpgp::DecryptError>()
                    })
                    && !matches!(self.inner, DecoderInner::Plain(_)) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    NotThisFormat { cause: e },
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// Heap bytes a [`Decoder`] holds at most for any object that WAL-G or
/// wal-rus may have written in this format: zstd with WAL-G's 8 MiB window,
/// LZMA with WAL-G's 8 MiB dictionary, Brotli with WAL-G's 4 MiB window
/// (lgwin 22), LZ4 with any block size.
///
/// Foreign objects with larger windows are still decoded up to
/// [`decoder_state_bytes_max`].
pub fn decoder_state_bytes(format: ReadFormat) -> u64 {
    match format {
        ReadFormat::Lz4 => lz4::decoder_state_bytes(),
        ReadFormat::Zstd => zstd::decoder_state_bytes(zstd::WALG_WINDOW_LOG),
        ReadFormat::Lzma => lzma::decoder_state_bytes(lzma::WALG_DICT_SIZE),
        ReadFormat::Brotli => brotli::decoder_state_bytes(brotli::WALG_LGWIN),
        ReadFormat::Gzip => gzip::decoder_state_bytes(),
        ReadFormat::Plain => 0,
    }
}

/// Heap bytes a [`Decoder`] holds at most for objects wal-rus itself wrote
/// with these options (smaller windows than WAL-G's).
pub fn decoder_state_bytes_own(opts: EncodeOptions) -> u64 {
    match opts.method {
        Method::Lz4 => lz4::decoder_state_bytes(),
        Method::Zstd => zstd::decoder_state_bytes(zstd::own_read_window_log(opts.zstd_level)),
        Method::Lzma => lzma::decoder_state_bytes(lzma::OWN_DICT_SIZE),
        Method::Brotli => brotli::decoder_state_bytes(brotli::OWN_LGWIN),
        Method::None => 0,
    }
}

/// The hard ceiling a [`Decoder`] enforces on any input, however it was
/// written: objects that would need more are refused with `InvalidData`
/// instead of allocating (zstd window > 8 MiB, LZMA dictionary > 64 MiB).
/// For Brotli this is the format's own maximum window (16 MiB, lgwin 24;
/// large-window streams are refused).
pub fn decoder_state_bytes_max(format: ReadFormat) -> u64 {
    match format {
        ReadFormat::Lz4 => lz4::decoder_state_bytes(),
        ReadFormat::Zstd => zstd::decoder_state_bytes(zstd::MAX_WINDOW_LOG),
        ReadFormat::Lzma => lzma::decoder_state_bytes(lzma::MAX_DICT_SIZE),
        ReadFormat::Brotli => brotli::decoder_state_bytes(brotli::MAX_LGWIN),
        ReadFormat::Gzip => gzip::decoder_state_bytes(),
        ReadFormat::Plain => 0,
    }
}

//! The compression room: every stream format WAL-G writes or reads, behind one
//! streaming [`Encoder`] and one streaming [`Decoder`].
//!
//! Why it looks the way it does:
//!
//! * **Byte compatibility with WAL-G** (walg-compat §4). Objects written here
//!   must be readable by WAL-G and vice versa, so each method emits exactly the
//!   framing WAL-G's readers understand: one LZ4 frame, one zstd frame, an
//!   LZMA-"alone" stream with the 13-byte header, a raw Brotli stream, or the
//!   bytes unchanged. Gzip is only ever read (WAL-G never writes it).
//! * **Memory is small, flat and known before the run.** Every codec's state
//!   is bounded by the parameters chosen here, and [`encoder_state_bytes`],
//!   [`decoder_state_bytes`], [`decoder_state_bytes_own`] and
//!   [`decoder_state_bytes_max`] report that bound so `memory-plan` can add
//!   it up. That is why the LZ4 decoder is our own (a 4 MiB-block WAL-G frame
//!   would otherwise cost ~8 MiB of buffers) and why windows are capped.
//! * **Determinism.** The uploader compresses the same input twice (once to
//!   learn length and SHA-256, once to stream it), so an encoder's output
//!   depends only on the input bytes and [`EncodeOptions`] — not on how the
//!   input was chunked into `write` calls, and not on `flush` calls, which
//!   never end a block early.
//! * **No silent short reads.** A truncated object always ends in an
//!   `io::Error` (`UnexpectedEof` or `InvalidData`, message prefixed with the
//!   format name) before the decoder would report end of stream, and so does
//!   corruption in the formats that carry a checksum (LZ4 and zstd as we and
//!   WAL-G write them, gzip). LZMA and Brotli have none, so a flipped bit
//!   there is caught only when it breaks the stream's structure. Bytes
//!   returned before an error must be discarded by the caller.

use std::io::{self, Read, Write};

mod brotli;
mod gzip;
mod lz4;
pub use lz4::{Lz4Block, Lz4Blocks};
mod crypter;
mod lzma;
pub mod openpgp;
pub mod sodium;
mod zstd;
pub use crypter::{Crypter, Seal, SealReader};

/// A compression method that can be configured with `WALG_COMPRESSION_METHOD`
/// and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One LZ4 frame per object (WAL-G's default).
    Lz4,
    /// LZMA "alone" (`.lzma`) stream with the classic 13-byte header.
    Lzma,
    /// One Zstandard frame per object.
    Zstd,
    /// A raw Brotli stream.
    Brotli,
    /// Uncompressed bytes.
    None,
}

impl Method {
    /// Parses a `WALG_COMPRESSION_METHOD` value. Matching is exact and
    /// case-sensitive, as in WAL-G, so `"LZ4"` is rejected rather than
    /// silently accepted by us and refused by WAL-G.
    pub fn from_setting(s: &str) -> Option<Method> {
        match s {
            "lz4" => Some(Method::Lz4),
            "lzma" => Some(Method::Lzma),
            "zstd" => Some(Method::Zstd),
            "brotli" => Some(Method::Brotli),
            "none" => Some(Method::None),
            _ => None,
        }
    }

    /// The setting value that selects this method (inverse of
    /// [`Method::from_setting`]).
    pub fn setting_name(self) -> &'static str {
        match self {
            Method::Lz4 => "lz4",
            Method::Lzma => "lzma",
            Method::Zstd => "zstd",
            Method::Brotli => "brotli",
            Method::None => "none",
        }
    }

    /// The object-name extension WAL-G uses for this method, without the dot;
    /// empty for [`Method::None`]. Note `zstd` → `zst` and `brotli` → `br`.
    pub fn extension(self) -> &'static str {
        self.read_format().extension()
    }

    /// The format a reader needs for objects written with this method.
    pub fn read_format(self) -> ReadFormat {
        match self {
            Method::Lz4 => ReadFormat::Lz4,
            Method::Lzma => ReadFormat::Lzma,
            Method::Zstd => ReadFormat::Zstd,
            Method::Brotli => ReadFormat::Brotli,
            Method::None => ReadFormat::Plain,
        }
    }
}

/// A stream format that can be read: every [`Method`] plus gzip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFormat {
    /// LZ4 frame format (also legacy LZ4 and several concatenated frames).
    Lz4,
    /// LZMA "alone" stream.
    Lzma,
    /// Zstandard frames.
    Zstd,
    /// Raw Brotli stream.
    Brotli,
    /// Gzip (RFC 1952), possibly several members; never written.
    Gzip,
    /// Uncompressed bytes.
    Plain,
}

impl ReadFormat {
    /// The format for an object-name extension (the text after the last dot,
    /// without the dot). An empty extension means uncompressed, which is how
    /// WAL-G treats v3.0.8's trailing-dot names such as `part_001.tar.`.
    pub fn from_extension(ext: &str) -> Option<ReadFormat> {
        match ext {
            "lz4" => Some(ReadFormat::Lz4),
            "lzma" => Some(ReadFormat::Lzma),
            "zst" => Some(ReadFormat::Zstd),
            "br" => Some(ReadFormat::Brotli),
            "gz" => Some(ReadFormat::Gzip),
            "" => Some(ReadFormat::Plain),
            _ => None,
        }
    }

    /// The object-name extension for this format, without the dot; empty for
    /// [`ReadFormat::Plain`].
    pub fn extension(self) -> &'static str {
        match self {
            ReadFormat::Lz4 => "lz4",
            ReadFormat::Lzma => "lzma",
            ReadFormat::Zstd => "zst",
            ReadFormat::Brotli => "br",
            ReadFormat::Gzip => "gz",
            ReadFormat::Plain => "",
        }
    }
}

/// WAL-G's probe order for WAL-archive objects (walg-compat §4.4): `lz4`,
/// `lzma`, `gz`, the empty extension (the key `<name>.` with a trailing dot),
/// `br`, `zst`. If several variants of one WAL file exist, WAL-G takes the
/// first in this order, so we must too. The bare `<name>` without any dot is
/// probed last by the caller, not listed here.
pub const WAL_PROBE_ORDER: [ReadFormat; 6] = [
    ReadFormat::Lz4,
    ReadFormat::Lzma,
    ReadFormat::Gzip,
    ReadFormat::Plain,
    ReadFormat::Brotli,
    ReadFormat::Zstd,
];

/// Zstandard level, named as WAL-G master's `WALG_ZSTD_LEVEL` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZstdLevel {
    /// `fastest`: libzstd level 1.
    Fastest,
    /// `default` (or unset): libzstd level 3.
    #[default]
    Default,
    /// `better`: libzstd level 7.
    Better,
    /// `best`: libzstd level 11.
    Best,
}

impl ZstdLevel {
    /// Parses a `WALG_ZSTD_LEVEL` value; case-insensitive like WAL-G master.
    pub fn from_setting(s: &str) -> Option<ZstdLevel> {
        match s.to_ascii_lowercase().as_str() {
            "fastest" => Some(ZstdLevel::Fastest),
            "default" => Some(ZstdLevel::Default),
            "better" => Some(ZstdLevel::Better),
            "best" => Some(ZstdLevel::Best),
            _ => None,
        }
    }

    /// The libzstd compression level this name stands for (klauspost's own
    /// approximation of its levels, walg-compat §4.1.3).
    pub fn libzstd_level(self) -> i32 {
        match self {
            ZstdLevel::Fastest => 1,
            ZstdLevel::Default => 3,
            ZstdLevel::Better => 7,
            ZstdLevel::Best => 11,
        }
    }
}

/// Encoder options taken from the settings.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    /// `WALG_COMPRESSION_METHOD`.
    pub method: Method,
    /// `WALG_ZSTD_LEVEL`; ignored unless `method` is [`Method::Zstd`].
    pub zstd_level: ZstdLevel,
}

impl Default for EncodeOptions {
    /// WAL-G's defaults: LZ4, and zstd level `default` should zstd be chosen.
    fn default() -> Self {
        EncodeOptions {
            method: Method::Lz4,
            zstd_level: ZstdLevel::Default,
        }
    }
}

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

/// Capacity of the small output buffers in front of `W`: codecs that emit many
/// tiny writes (4-byte LZ4 block headers, LZMA's byte-at-a-time range coder)
/// would otherwise turn each into a call on the sink.
const OUT_BUF_BYTES: usize = 16 * 1024;

/// Capacity of the compressed-input buffers of our own decoders.
const IN_BUF_BYTES: usize = 32 * 1024;

/// A minimal buffered writer. Unlike `std::io::BufWriter` it does not write
/// anything when dropped: an abandoned object should not get a partial tail.
struct OutBuf<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> OutBuf<W> {
    fn new(inner: W) -> Self {
        OutBuf {
            inner,
            buf: Vec::with_capacity(OUT_BUF_BYTES),
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn into_inner(mut self) -> io::Result<W> {
        self.flush_buf()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for OutBuf<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > OUT_BUF_BYTES {
            self.flush_buf()?;
        }
        if data.len() >= OUT_BUF_BYTES {
            self.inner.write_all(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.inner.flush()
    }
}

/// Where a [`Source`] leaves the original error of the underlying reader.
/// Shared (not owned by the `Source`) because a decoder library may drop the
/// reader together with the error, e.g. when its constructor fails.
#[derive(Clone, Default)]
struct ErrorSlot(std::sync::Arc<std::sync::Mutex<Option<io::Error>>>);

impl ErrorSlot {
    fn put(&self, e: io::Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// The original error if the last failure came from the underlying
    /// reader; `None` if it was a format error of the decoder.
    fn take(&self) -> Option<io::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Wraps the underlying reader of a third-party decoder so that an error of
/// the storage/decryption layer reaches our caller unchanged instead of being
/// reworded (or swallowed) by the decoder library.
struct Source<R> {
    inner: R,
    slot: ErrorSlot,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match read_retry(&mut self.inner, buf) {
            Err(e) => {
                let kind = e.kind();
                self.slot.put(e);
                Err(io::Error::new(kind, "error of the underlying reader"))
            }
            ok => ok,
        }
    }
}

/// Reads into `buf` from `r`, retrying on `Interrupted`.
fn read_retry<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A decoder failure, kept so that every later `read` fails the same way:
/// a caller that retries must never see `Ok(0)` (a clean end) after an error.
#[derive(Clone, Debug)]
struct Sticky {
    kind: io::ErrorKind,
    msg: String,
}

impl Sticky {
    fn error(&self) -> io::Error {
        io::Error::new(self.kind, self.msg.clone())
    }
}

/// Records a format error (not an inner I/O error, which may be transient)
/// so it is reported again on every later call.
fn remember(slot: &mut Option<Sticky>, err: io::Error) -> io::Error {
    if matches!(
        err.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    ) {
        *slot = Some(Sticky {
            kind: err.kind(),
            msg: err.to_string(),
        });
    }
    err
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn truncated(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.into())
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Inputs shared by the codec tests.

    /// Deterministic data that looks a little like a WAL segment: runs of
    /// zeros, repeated records with varying fields, and incompressible noise.
    pub fn walish(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        while out.len() < len {
            let r = next();
            let n = (64 + (r >> 8) % 4096) as usize;
            match r % 4 {
                0 => out.extend(std::iter::repeat_n(0u8, n)),
                1 => {
                    for _ in 0..n {
                        out.push((next() >> 24) as u8);
                    }
                }
                _ => {
                    let rec = format!("INSERT INTO t VALUES ({}, 'row-{}');", r % 1000, r % 77);
                    let start = out.len();
                    while out.len() - start < n {
                        out.extend_from_slice(rec.as_bytes());
                    }
                }
            }
        }
        out.truncate(len);
        out
    }

    /// `unwrap_err` for decode results that prints the length, not the
    /// (possibly megabytes of) output, when decoding unexpectedly succeeded.
    pub trait ErrOf {
        fn err_of(self) -> std::io::Error;
    }

    impl ErrOf for std::io::Result<Vec<u8>> {
        fn err_of(self) -> std::io::Error {
            match self {
                Ok(v) => panic!("decoded {} bytes instead of failing", v.len()),
                Err(e) => e,
            }
        }
    }

    /// Incompressible bytes.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::{ErrOf, noise, walish};
    use super::*;

    const ALL_METHODS: [Method; 5] = [
        Method::Lz4,
        Method::Lzma,
        Method::Zstd,
        Method::Brotli,
        Method::None,
    ];

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
    fn settings_and_extensions() {
        for m in ALL_METHODS {
            assert_eq!(Method::from_setting(m.setting_name()), Some(m));
            assert_eq!(
                ReadFormat::from_extension(m.extension()),
                Some(m.read_format())
            );
        }
        assert_eq!(Method::from_setting("LZ4"), None);
        assert_eq!(Method::from_setting("zst"), None);
        assert_eq!(Method::Zstd.extension(), "zst");
        assert_eq!(Method::Brotli.extension(), "br");
        assert_eq!(Method::None.extension(), "");
        assert_eq!(ReadFormat::from_extension("gz"), Some(ReadFormat::Gzip));
        assert_eq!(ReadFormat::from_extension("lzo"), None);
        assert_eq!(ZstdLevel::from_setting("BeSt"), Some(ZstdLevel::Best));
        assert_eq!(ZstdLevel::from_setting("11"), None);
        let exts: Vec<_> = WAL_PROBE_ORDER.iter().map(|f| f.extension()).collect();
        assert_eq!(exts, ["lz4", "lzma", "gz", "", "br", "zst"]);
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
}

//! What the codecs share below the [`Encoder`](super::Encoder) and
//! [`Decoder`](super::Decoder): buffer sizes, a buffered writer that leaves no tail behind,
//! a reader wrapper that keeps the underlying reader's own error, and format errors that
//! stay, so that no codec has its own copy of them.

use std::io::{self, Read, Write};

/// Capacity of the small output buffers in front of `W`: codecs that emit many
/// tiny writes (4-byte LZ4 block headers, LZMA's byte-at-a-time range coder)
/// would otherwise turn each into a call on the sink.
pub(super) const OUT_BUF_BYTES: usize = 16 * 1024;

/// Capacity of the compressed-input buffers of our own decoders.
pub(super) const IN_BUF_BYTES: usize = 32 * 1024;

/// A minimal buffered writer. Unlike `std::io::BufWriter` it does not write
/// anything when dropped: an abandoned object should not get a partial tail.
pub(super) struct OutBuf<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> OutBuf<W> {
    pub(super) fn new(inner: W) -> Self {
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

    pub(super) fn into_inner(mut self) -> io::Result<W> {
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
pub(super) struct ErrorSlot(std::sync::Arc<std::sync::Mutex<Option<io::Error>>>);

impl ErrorSlot {
    pub(super) fn put(&self, e: io::Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// The original error if the last failure came from the underlying
    /// reader; `None` if it was a format error of the decoder.
    pub(super) fn take(&self) -> Option<io::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Wraps the underlying reader of a third-party decoder so that an error of
/// the storage/decryption layer reaches our caller unchanged instead of being
/// reworded (or swallowed) by the decoder library.
pub(super) struct Source<R> {
    pub(super) inner: R,
    pub(super) slot: ErrorSlot,
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
pub(super) fn read_retry<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) struct Sticky {
    kind: io::ErrorKind,
    msg: String,
}

impl Sticky {
    pub(super) fn error(&self) -> io::Error {
        io::Error::new(self.kind, self.msg.clone())
    }
}

/// Records a format error (not an inner I/O error, which may be transient)
/// so it is reported again on every later call.
pub(super) fn remember(slot: &mut Option<Sticky>, err: io::Error) -> io::Error {
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

pub(super) fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub(super) fn truncated(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.into())
}

//! Streaming an object's body, resuming a broken one instead of failing the command, and
//! checking it against the MD5 the store keeps for it: the same for every cloud.
//!
//! The reader knows the object's length and version (ETag) from the first answer. If the
//! connection breaks, or ends before `Content-Length` bytes arrived, it asks again for the
//! remaining range of the same version (`If-Match`), so a replaced object is never spliced
//! onto the old one, within the same retry budget as any other request.
//!
//! Not every compression has a checksum of its own (`none`, LZMA-alone, brotli): a byte
//! changed on the way would reach the restore unseen. Where the store says what the whole
//! object's MD5 is (S3's ETag of a single PUT, Azure's `Content-MD5`), the reader hashes
//! the body as it passes and fails at its end when the two differ.

use crate::storage::StorageError;
use md5::Digest;
use std::io::{self, Read};
use std::time::Duration;

/// How a reader asks the store again.
pub trait Refetch: Send + Sync {
    /// The answer to a GET of the object from byte `from` on, of version `etag` when given.
    fn get_from(&self, from: u64, etag: Option<&str>) -> Result<ureq::Response, StorageError>;
    /// Most resumes of one body.
    fn max_resumes(&self) -> u32;
    /// The pause before resume `attempt`.
    fn backoff(&self, attempt: u32) -> Duration;
}

/// What the first answer said about the object.
pub struct FirstAnswer {
    /// Its version, for `If-Match` on a resume.
    pub etag: Option<String>,
    /// Its length.
    pub len: Option<u64>,
    /// The MD5 the store keeps for the whole object, and what the store calls it (`ETag`,
    /// `Content-MD5`) for the message.
    pub md5: Option<([u8; 16], &'static str)>,
}

/// A body that resumes and verifies itself.
pub struct ResumingReader<F: Refetch> {
    fetch: F,
    /// The operation and key, for messages (`GetObject wal_005/...`).
    what: String,
    first: FirstAnswer,
    offset: u64,
    body: Box<dyn Read + Send + Sync>,
    resumes: u32,
    hasher: Option<md5::Md5>,
}

impl<F: Refetch> ResumingReader<F> {
    /// The reader of the answer `resp` to the first GET; `what` names operation and key.
    pub fn new(fetch: F, what: String, resp: ureq::Response, first: FirstAnswer) -> Self {
        let hasher = first.md5.map(|_| md5::Md5::new());
        ResumingReader {
            fetch,
            what,
            first,
            offset: 0,
            body: resp.into_reader(),
            resumes: 0,
            hasher,
        }
    }

    /// At the end of the body: the MD5 of what arrived must be the stored one.
    fn check_md5(&mut self) -> io::Result<()> {
        let (Some(hasher), Some((want, label))) = (self.hasher.take(), self.first.md5) else {
            return Ok(());
        };
        let got: [u8; 16] = hasher.finalize().into();
        if got != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the body received has MD5 {}, not its {label} {}: changed in transit",
                    self.what,
                    hex(&got),
                    hex(&want)
                ),
            ));
        }
        Ok(())
    }

    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        if self.resumes >= self.fetch.max_resumes()
            || !crate::storage::error::is_retryable_io(&cause)
        {
            return Err(cause);
        }
        let delay = self.fetch.backoff(self.resumes);
        crate::warn!(
            "{}: {cause} at byte {}; resuming in {} ms",
            self.what,
            self.offset,
            delay.as_millis()
        );
        std::thread::sleep(delay);
        self.resumes += 1;
        let resp = self
            .fetch
            .get_from(self.offset, self.first.etag.as_deref())
            .map_err(|e| io::Error::other(format!("resuming {}: {e}", self.what)))?;
        self.body = resp.into_reader();
        Ok(())
    }
}

/// The headers of a GET from byte `from` on of version `etag`: none from the start.
pub fn range_headers(from: u64, etag: Option<&str>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if from > 0 {
        headers.push(("range".into(), format!("bytes={from}-")));
        if let Some(tag) = etag {
            headers.push(("if-match".into(), tag.to_string()));
        }
    }
    headers
}

/// Reads the whole object's MD5 from a first answer, and what the store calls it.
pub type StoredMd5 = fn(&ureq::Response) -> Option<([u8; 16], &'static str)>;

/// Sends the first GET through `fetch` and returns the reader of its body; `md5` reads
/// the whole object's MD5 from the answer, where the store gives one.
pub fn open<F: Refetch + 'static>(
    fetch: F,
    what: String,
    md5: StoredMd5,
) -> Result<crate::storage::ObjectReader, StorageError> {
    let resp = fetch.get_from(0, None)?;
    let first = FirstAnswer {
        etag: resp.header("etag").map(str::to_string),
        len: resp.header("content-length").and_then(|v| v.parse().ok()),
        md5: md5(&resp),
    };
    Ok(Box::new(ResumingReader::new(fetch, what, resp, first)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<F: Refetch> Read for ResumingReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.body.read(buf) {
                Ok(0) => match self.first.len {
                    Some(len) if self.offset < len => {
                        let short = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("body ended at byte {} of {len}", self.offset),
                        );
                        self.resume(short)?;
                    }
                    _ => {
                        self.check_md5()?;
                        return Ok(0);
                    }
                },
                Ok(n) => {
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&buf[..n]);
                    }
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
        }
    }
}

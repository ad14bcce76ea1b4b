//! The S3 and Azure way of resuming a download, over the one resuming reader
//! ([`super::reopen`]): the rest of the same version is asked for with `Range` and
//! `If-Match` on the first answer's ETag, so a replaced object is never spliced onto the old
//! one; and where the store says what the whole object's MD5 is (S3's ETag of a single PUT,
//! Azure's `Content-MD5`), the body is checked against it at its end, since not every
//! compression has a checksum of its own (`none`, LZMA-alone, brotli).

use super::reopen::{BodyReader, Check, Reopen, ResumingReader};
use crate::storage::{Op, StorageError};
use md5::Digest;
use std::io;
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

/// A [`Refetch`] held to the first answer's version.
struct SameEtag<F: Refetch> {
    fetch: F,
    etag: Option<String>,
}

impl<F: Refetch> Reopen for SameEtag<F> {
    fn reopen(&mut self, offset: u64) -> Result<BodyReader, StorageError> {
        Ok(self
            .fetch
            .get_from(offset, self.etag.as_deref())?
            .into_reader())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.fetch.backoff(attempt)
    }
}

/// The MD5 of the body, which must be the one the store keeps (`label` names it).
struct StoredMd5Check {
    op: Op,
    hasher: md5::Md5,
    want: [u8; 16],
    label: &'static str,
}

impl Check for StoredMd5Check {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    fn verify(&mut self, key: &str, _len: u64) -> io::Result<()> {
        let got: [u8; 16] = std::mem::take(&mut self.hasher).finalize().into();
        if got != self.want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} {key}: the body received has MD5 {}, not its {} {}: changed in transit",
                    self.op,
                    hex(&got),
                    self.label,
                    hex(&self.want)
                ),
            ));
        }
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

/// Sends the first GET through `fetch` and returns the reader of its body (`op` on `key`,
/// for messages); `md5` reads the whole object's MD5 from the answer, where the store
/// gives one.
pub fn open<F: Refetch + 'static>(
    fetch: F,
    (op, key): (Op, String),
    md5: StoredMd5,
) -> Result<crate::storage::ObjectReader, StorageError> {
    let first = fetch.get_from(0, None)?;
    let check = md5(&first).map(|(want, label)| -> Box<dyn Check> {
        Box::new(StoredMd5Check {
            op,
            hasher: md5::Md5::new(),
            want,
            label,
        })
    });
    let max_resumes = fetch.max_resumes();
    let same = SameEtag {
        etag: first.header("etag").map(str::to_string),
        fetch,
    };
    Ok(Box::new(ResumingReader::new(
        (op, key),
        first,
        max_resumes,
        Box::new(same),
        check,
    )))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

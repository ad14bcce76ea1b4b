//! Streaming an object out of S3, resuming a broken body instead of failing the command.
//!
//! The reader knows the object's length and ETag from the first answer. If the connection
//! breaks, or ends before `Content-Length` bytes arrived, it asks again for the remaining
//! range with `If-Match` on the ETag (so a replaced object is never spliced onto the old
//! one), within the same retry budget as any other request.
//!
//! GetObject carries no checksum of its own, and not every compression has one (`none`,
//! LZMA-alone, brotli): a byte changed on the way would reach the restore unseen. Where S3
//! defines the ETag as the MD5 of the object (a single PUT without KMS or customer keys),
//! the reader hashes the body as it passes and fails at its end when the two differ.

use super::http::{Body, Call, Client};
use crate::storage::{ObjectReader, Op, StorageError};
use md5::Digest;
use std::io::{self, Read};
use std::sync::Arc;

struct ResumingReader {
    client: Arc<Client>,
    key: String,
    etag: Option<String>,
    len: Option<u64>,
    offset: u64,
    body: Box<dyn Read + Send + Sync>,
    resumes: u32,
    /// MD5 of the bytes so far, when the ETag is the body's MD5.
    md5: Option<md5::Md5>,
}

/// The MD5 an answer's ETag stands for, when S3 defines it so: 32 hex digits (a multipart
/// ETag has `-N`), and the object not encrypted with a KMS or customer key (their ETags are
/// not MD5s).
fn etag_md5(resp: &ureq::Response) -> Option<[u8; 16]> {
    if resp
        .header("x-amz-server-side-encryption")
        .is_some_and(|v| v.starts_with("aws:kms"))
        || resp
            .header("x-amz-server-side-encryption-customer-algorithm")
            .is_some()
    {
        return None;
    }
    let tag = resp.header("etag")?.trim().trim_matches('"');
    if tag.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Sends a GetObject (optionally ranged) and returns the answer.
fn get(
    client: &Client,
    key: &str,
    from: u64,
    etag: Option<&str>,
) -> Result<ureq::Response, StorageError> {
    let mut call = Call::new("GET", Op::GetObject, Some(key));
    if from > 0 {
        call.headers
            .push(("range".into(), format!("bytes={from}-")));
        if let Some(tag) = etag {
            call.headers.push(("if-match".into(), tag.to_string()));
        }
    }
    client.send_with_retries(&call, &mut || Body::Empty)
}

/// Opens `key` (the full key inside the bucket) for streaming.
pub fn open(client: Arc<Client>, key: String) -> Result<ObjectReader, StorageError> {
    let resp = get(&client, &key, 0, None)?;
    let etag = resp.header("etag").map(str::to_string);
    let len = resp.header("content-length").and_then(|v| v.parse().ok());
    let md5 = etag_md5(&resp).map(|_| md5::Md5::new());
    let body = resp.into_reader();
    Ok(Box::new(ResumingReader {
        client,
        key,
        etag,
        len,
        offset: 0,
        body,
        resumes: 0,
        md5,
    }))
}

impl ResumingReader {
    /// At the end of the body: the MD5 of what arrived must be the ETag's.
    fn check_md5(&mut self) -> io::Result<()> {
        let Some(hasher) = self.md5.take() else {
            return Ok(());
        };
        let got: [u8; 16] = hasher.finalize().into();
        let want = self
            .etag
            .as_deref()
            .map(|t| t.trim().trim_matches('"').to_ascii_lowercase());
        let got_hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        if want.as_deref() != Some(got_hex.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the body received has MD5 {got_hex}, not its ETag {}: changed in transit",
                    self.key,
                    self.etag.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(())
    }
}

impl ResumingReader {
    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        if self.resumes >= self.client.cfg.max_retries
            || !crate::storage::error::is_retryable_io(&cause)
        {
            return Err(cause);
        }
        let delay = self.client.backoff(self.resumes, false);
        crate::warn!(
            "GetObject {}: {cause} at byte {}; resuming in {} ms",
            self.key,
            self.offset,
            delay.as_millis()
        );
        std::thread::sleep(delay);
        self.resumes += 1;
        let resp = get(&self.client, &self.key, self.offset, self.etag.as_deref())
            .map_err(|e| io::Error::other(format!("resuming {}: {e}", self.key)))?;
        self.body = resp.into_reader();
        Ok(())
    }
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.body.read(buf) {
                Ok(0) => match self.len {
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
                    if let Some(h) = self.md5.as_mut() {
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

//! Streaming an object out of S3, resuming a broken body instead of failing the command.
//!
//! The reader knows the object's length and ETag from the first answer. If the connection
//! breaks, or ends before `Content-Length` bytes arrived, it asks again for the remaining
//! range with `If-Match` on the ETag (so a replaced object is never spliced onto the old
//! one), within the same retry budget as any other request.

use super::http::{Body, Call, Client};
use crate::storage::{ObjectReader, StorageError};
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
}

/// Sends a GetObject (optionally ranged) and returns the answer.
fn get(
    client: &Client,
    key: &str,
    from: u64,
    etag: Option<&str>,
) -> Result<ureq::Response, StorageError> {
    let mut call = Call::new("GET", "GetObject", Some(key));
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
    let body = resp.into_reader();
    Ok(Box::new(ResumingReader {
        client,
        key,
        etag,
        len,
        offset: 0,
        body,
        resumes: 0,
    }))
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
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
        }
    }
}

//! A download that survives a broken connection: when the body breaks off, or ends before
//! the length announced, the rest is asked for again from the byte reached (each cloud pins
//! the same version of the object its own way), within the client's retry budget; and at
//! the end what arrived is checked against the checksum the cloud announced, where it
//! announced one, since not every compression has a checksum of its own.

use crate::storage::{Op, StorageError};
use std::io::{self, Read};
use std::time::Duration;

/// A response body.
pub type BodyReader = Box<dyn Read + Send + Sync>;

/// How a cloud asks for the rest of an object.
pub trait Reopen: Send {
    /// The object's bytes from `offset` on, of the same version as the first answer's.
    fn reopen(&mut self, offset: u64) -> Result<BodyReader, StorageError>;
    /// The pause before resume number `attempt` (from 0).
    fn backoff(&self, attempt: u32) -> Duration;
}

/// A checksum computed over the body as it passes.
pub trait Check: Send {
    /// Adds bytes read.
    fn update(&mut self, bytes: &[u8]);
    /// At the end of `len` bytes of `key`: an `InvalidData` error when they are not what
    /// the cloud announced.
    fn verify(&mut self, key: &str, len: u64) -> io::Result<()>;
}

/// The object's bytes, resumed where they broke off and checked at their end.
pub struct ResumingReader {
    op: Op,
    key: String,
    len: Option<u64>,
    offset: u64,
    body: BodyReader,
    resumes: u32,
    max_resumes: u32,
    reopen: Box<dyn Reopen>,
    check: Option<Box<dyn Check>>,
}

impl ResumingReader {
    /// A reader of `answer`'s body, the first answer of `op` on `key`, resumed at most
    /// `max_resumes` times.
    pub fn new(
        (op, key): (Op, String),
        answer: ureq::Response,
        max_resumes: u32,
        reopen: Box<dyn Reopen>,
        check: Option<Box<dyn Check>>,
    ) -> ResumingReader {
        ResumingReader {
            op,
            key,
            len: answer.header("content-length").and_then(|v| v.parse().ok()),
            offset: 0,
            body: answer.into_reader(),
            resumes: 0,
            max_resumes,
            reopen,
            check,
        }
    }

    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        if self.resumes >= self.max_resumes || !crate::storage::error::is_retryable_io(&cause) {
            return Err(cause);
        }
        let delay = self.reopen.backoff(self.resumes);
        crate::warn!(
            "{} {}: {cause} at byte {}; resuming in {} ms",
            self.op,
            self.key,
            self.offset,
            delay.as_millis()
        );
        std::thread::sleep(delay);
        self.resumes += 1;
        self.body = self
            .reopen
            .reopen(self.offset)
            .map_err(|e| io::Error::other(format!("resuming {}: {e}", self.key)))?;
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
                        if let Some(mut check) = self.check.take() {
                            check.verify(&self.key, self.offset)?;
                        }
                        return Ok(0);
                    }
                },
                Ok(n) => {
                    if let Some(check) = self.check.as_mut() {
                        check.update(&buf[..n]);
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

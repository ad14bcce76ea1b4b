//! A cap on the memory one JSON member may take while a document from storage is parsed.
//!
//! Documents are read as streams (a legacy sentinel or a `files_metadata.json` can list a
//! million files), so their total size is no limit; what costs memory is the member being
//! parsed: a file name, `UserData`, a `Spec`. Whoever writes to the bucket writes these, and
//! a 200 MB `UserData` must be a clear error, not 400 MB of RSS. The parser's reader is
//! wrapped in [`Budgeted`]; visitors call [`Budget::allow`] before a member they keep and
//! [`Budget::unlimited`] before one they skip without holding it. The count is of bytes read
//! from the stream, so it runs ahead of the parser by at most its read buffer (8 KiB).

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Most bytes one member a reader keeps may span: far above anything WAL-G writes (a file
/// name, a few hundred bytes of `UserData`) and small beside the memory plan's term for it.
pub const MEMBER_CAP: u64 = 256 * 1024;

/// The error a [`Budgeted`] reader gives when a member is over its allowance.
#[derive(Debug)]
pub struct TooLarge(pub u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a member of the document is larger than {} KiB, more than any document wal-rus or WAL-G writes",
            self.0 / 1024
        )
    }
}

impl std::error::Error for TooLarge {}

/// Bytes read so far and how far the current member may go.
#[derive(Debug)]
pub struct Budget {
    used: Cell<u64>,
    limit: Cell<u64>,
    cap: Cell<u64>,
}

impl Budget {
    /// A budget that allows `cap` bytes to the first member.
    pub fn new(cap: u64) -> Budget {
        Budget {
            used: Cell::new(0),
            limit: Cell::new(cap),
            cap: Cell::new(cap),
        }
    }

    /// The next member (or key) may span up to the cap from here.
    pub fn allow(&self) {
        self.limit
            .set(self.used.get().saturating_add(self.cap.get()));
    }

    /// The next member is skipped without being held: no limit.
    pub fn unlimited(&self) {
        self.limit.set(u64::MAX);
    }
}

/// A reader that fails once more bytes were read than the budget allows.
pub struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Budgeted<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, budget: Rc<Budget>) -> Self {
        Budgeted { inner, budget }
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.budget;
        if b.used.get() > b.limit.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TooLarge(b.cap.get()),
            ));
        }
        let n = self.inner.read(buf)?;
        b.used.set(b.used.get() + n as u64);
        Ok(n)
    }
}

/// Whether `e` (or the error it carries) is a [`TooLarge`].
pub fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_a_long_member_and_lets_skipped_ones_pass() {
        let budget = Rc::new(Budget::new(100));
        let data = vec![b'x'; 1000];
        let mut r = Budgeted::new(&data[..], budget.clone());
        let mut buf = [0u8; 64];
        let mut read = 0;
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert!(is_too_large(&err), "{err}");
        assert!(read <= 100 + 64, "{read}");
        budget.unlimited();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(read + rest.len(), 1000);
    }
}

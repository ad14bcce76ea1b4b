//! A fixed set of equal buffers allocated once, lent out and returned.
//!
//! Every large buffer a command moves is a loan from here, so the memory a command can hold
//! is `count × size`, decided before the first byte is read. A borrower that finds the arena
//! empty waits for a buffer to come back instead of allocating another, but not for ever:
//! every holder is doing I/O bounded by timeouts and retries, so a wait longer than that
//! (the command's `wait_limit`) means a stage holds more buffers than the plan gave it, and
//! the command fails instead of hanging the archiver.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

/// The pool. Cloning shares the same buffers.
#[derive(Clone)]
pub struct Arena {
    give: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
    size: usize,
    count: usize,
    wait: Duration,
}

/// How long a borrower waits for a buffer unless the command says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15 * 60);

impl Arena {
    /// Allocates `count` buffers of `size` bytes. Pages are touched only when used, so an
    /// idle buffer costs address space, not resident memory.
    pub fn new(count: usize, size: usize) -> Arena {
        let (give, take) = bounded(count.max(1));
        for _ in 0..count {
            let _ = give.send(vec![0u8; size]);
        }
        Arena {
            give,
            take,
            size,
            count,
            wait: DEFAULT_WAIT,
        }
    }

    /// The longest a borrower waits for a buffer: the most any holder's I/O can take.
    pub fn with_wait_limit(mut self, wait: Duration) -> Arena {
        self.wait = wait;
        self
    }

    /// Borrows a buffer, waiting until one is free, at most the wait limit.
    pub fn lease(&self) -> io::Result<Lease> {
        let buf = self.take.recv_timeout(self.wait).map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no buffer of the arena's {} came free within {} s: a stage holds more \
                     buffers than the memory plan gave it, or every holder is stuck",
                    self.count,
                    self.wait.as_secs()
                ),
            )
        })?;
        Ok(Lease {
            buf: Some(buf),
            home: self.give.clone(),
            size: self.size,
        })
    }

    /// Buffer size in bytes.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Buffers currently free.
    pub fn free(&self) -> usize {
        self.take.len()
    }
}

/// A borrowed buffer; returned to the arena when dropped. Its length may be changed by the
/// borrower up to the buffer size; it is reset to full size on return.
pub struct Lease {
    buf: Option<Vec<u8>>,
    home: Sender<Vec<u8>>,
    size: usize,
}

impl Lease {
    /// Capacity of the buffer.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Deref for Lease {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        self.buf.as_ref().expect("present until drop")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.buf.as_mut().expect("present until drop")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut buf) = self.buf.take() {
            // A borrower that grew the vector past the planned size gives the excess back,
            // so the arena's footprint stays what the plan says.
            buf.truncate(self.size);
            buf.shrink_to(self.size);
            buf.resize(self.size, 0);
            // A returned buffer's pages go back to the kernel; they cost nothing until the
            // next borrower touches them. Without this, every buffer that ever served a
            // borrower stays resident: a pool rotates its buffers, so a wal-push with 15
            // background uploads ended up with all 32 of its 64 KiB buffers resident, where
            // at most 16 are ever full at once. Part buffers (megabytes, always filled
            // whole) keep their pages.
            if self.size <= RELEASE_MAX {
                crate::sys::release_pages(&mut buf);
            }
            let _ = self.home.send(buf);
        }
    }
}

/// Largest buffer whose pages are given back on return: I/O buffers, which a borrower may
/// fill only in part.
const RELEASE_MAX: usize = 1 << 20;

impl crate::storage::PartBuffers for Arena {
    fn lease_part(&self) -> io::Result<crate::storage::PartBuffer<'_>> {
        Ok(Box::new(self.lease()?))
    }

    fn part_size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lend_and_return() {
        let arena = Arena::new(2, 1024);
        let a = arena.lease().unwrap();
        let mut b = arena.lease().unwrap();
        assert_eq!(arena.free(), 0);
        b.clear();
        b.extend_from_slice(&[1, 2, 3]);
        drop(b);
        assert_eq!(arena.free(), 1);
        let c = arena.lease().unwrap();
        assert_eq!(c.len(), 1024);
        drop((a, c));
        assert_eq!(arena.free(), 2);
    }

    #[test]
    fn waits_for_a_buffer() {
        let arena = Arena::new(1, 16);
        let held = arena.lease().unwrap();
        let other = arena.clone();
        let t = std::thread::spawn(move || other.lease().unwrap().len());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished());
        drop(held);
        assert_eq!(t.join().unwrap(), 16);
    }

    #[test]
    fn a_wait_has_an_end() {
        let arena = Arena::new(1, 16).with_wait_limit(Duration::from_millis(50));
        let _held = arena.lease().unwrap();
        let Err(e) = arena.lease() else {
            panic!("a second lease of a one-buffer arena must not succeed");
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("memory plan"), "{e}");
    }
}

//! A fixed set of equal buffers allocated once, lent out and returned.
//!
//! Every large buffer a command moves is a loan from here, so the memory a command can hold
//! is `count × size`, decided before the first byte is read. A borrower that finds the arena
//! empty waits for a buffer to come back instead of allocating another.

use crossbeam_channel::{Receiver, Sender, bounded};
use std::ops::{Deref, DerefMut};

/// The pool. Cloning shares the same buffers.
#[derive(Clone)]
pub struct Arena {
    give: Sender<Vec<u8>>,
    take: Receiver<Vec<u8>>,
    size: usize,
    count: usize,
}

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
        }
    }

    /// Borrows a buffer, waiting until one is free.
    pub fn lease(&self) -> Lease {
        let buf = self.take.recv().expect("arena sender lives in self");
        Lease {
            buf: Some(buf),
            home: self.give.clone(),
            size: self.size,
        }
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
            // Part buffers (megabytes, always filled whole) keep their pages.
            if self.size <= RELEASE_MAX {
                release_pages(&mut buf);
            }
            let _ = self.home.send(buf);
        }
    }
}

/// Largest buffer whose pages are given back on return: I/O buffers, which a borrower may
/// fill only in part.
const RELEASE_MAX: usize = 1 << 20;

/// Gives a returned buffer's whole pages back to the kernel; they read as zeros and cost
/// nothing until the next borrower touches them. Without this, every buffer that ever served
/// a borrower stays resident: a pool rotates its buffers, so a wal-push with 15 background
/// uploads ended up with all 32 of its 64 KiB buffers resident, where at most 16 are ever
/// full at once (the other half hold a few KiB of compressed output).
fn release_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let end = (start + buf.len()) / PAGE * PAGE;
        if end > first {
            // MADV_DONTNEED on private anonymous memory: the range reads back as zeros, which
            // are valid bytes for the u8 buffer we own here. Advice only; failure is harmless.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

impl crate::storage::PartBuffers for Arena {
    fn lease_part(&self) -> crate::storage::PartBuffer<'_> {
        Box::new(self.lease())
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
        let a = arena.lease();
        let mut b = arena.lease();
        assert_eq!(arena.free(), 0);
        b.clear();
        b.extend_from_slice(&[1, 2, 3]);
        drop(b);
        assert_eq!(arena.free(), 1);
        let c = arena.lease();
        assert_eq!(c.len(), 1024);
        drop((a, c));
        assert_eq!(arena.free(), 2);
    }

    #[test]
    fn waits_for_a_buffer() {
        let arena = Arena::new(1, 16);
        let held = arena.lease();
        let other = arena.clone();
        let t = std::thread::spawn(move || other.lease().len());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished());
        drop(held);
        assert_eq!(t.join().unwrap(), 16);
    }
}

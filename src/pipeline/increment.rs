//! Increments of relation files (walg-compat §3.6), made while a delta backup reads the data
//! directory and applied while a delta chain is restored.
//!
//! Taking one reads the file twice, as WAL-G does: a scan of every page header picks the
//! pages written since the base backup started, then the increment streams the header, the
//! block numbers and those pages, read again by offset. Between the two, which pages changed
//! is a bitmap of one bit per page (16 KiB for a 1 GiB segment), never a list that grows with
//! the number of changed pages, and the pages themselves are read straight into the
//! caller's buffer. A page rewritten between the scan and the read is taken as it is then:
//! it was written after the backup started, so WAL replay restores it either way.
//!
//! Applying one sets the file to its recorded size and writes each page at its offset; the
//! block numbers, which precede the pages, are kept in the same kind of bitmap, so they must
//! ascend and lie inside the file, as every writer's do.

use crate::format::increment::{self, HEADER_LEN};
use crate::format::page::{self, BLCKSZ};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Files larger than this are not taken apart into increments on restore: their bitmap
/// would pass 1 MiB. PostgreSQL's relation segments are 1 GiB unless built otherwise.
pub const MAX_INCREMENTED_FILE: u64 = 64 << 30;

/// Pages of a 1 GiB relation segment file, the most PostgreSQL's default build writes.
const SEGMENT_PAGES: u64 = (1 << 30) / BLCKSZ as u64;

/// Which pages of one file go into its increment: one bit per page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangedBlocks {
    words: Vec<u64>,
    count: u32,
}

impl ChangedBlocks {
    fn for_pages(pages: u64) -> ChangedBlocks {
        ChangedBlocks {
            words: vec![0; pages.div_ceil(64) as usize],
            count: 0,
        }
    }

    fn set(&mut self, block: u32) {
        let (w, b) = ((block / 64) as usize, block % 64);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.count += 1;
        }
    }

    /// Number of pages taken.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The first block at or after `from`.
    fn next_from(&self, from: u32) -> Option<u32> {
        let mut w = (from / 64) as usize;
        let mut bits = *self.words.get(w)? & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(w as u32 * 64 + bits.trailing_zeros());
            }
            w += 1;
            bits = *self.words.get(w)?;
        }
    }
}

/// Scans the pages of `file` (`size` bytes at walk time) against the base backup's start
/// LSN. `None` when a page is neither valid nor new: WAL-G then stores the whole file.
/// `on_data` sees every byte read (page verification, the disk rate limit).
pub fn scan(
    file: &mut File,
    size: u64,
    base_lsn: u64,
    buf: &mut [u8],
    on_data: &mut dyn FnMut(&[u8]),
) -> io::Result<Option<ChangedBlocks>> {
    let pages = size / BLCKSZ as u64;
    let mut changed = ChangedBlocks::for_pages(pages);
    let chunk = (buf.len() / BLCKSZ).max(1) * BLCKSZ;
    let mut block = 0u64;
    while block < pages {
        let want = chunk.min(((pages - block) * BLCKSZ as u64) as usize);
        let got = read_full(file, &mut buf[..want])?;
        on_data(&buf[..got]);
        for p in buf[..got].chunks_exact(BLCKSZ) {
            match page::delta_takes(p, base_lsn) {
                None => return Ok(None),
                Some(true) => changed.set(block as u32),
                Some(false) => {}
            }
            block += 1;
        }
        if got < want {
            // Shrunk since the walk: WAL-G stops at the end, as here.
            break;
        }
    }
    Ok(Some(changed))
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The increment stream of one file, read from the file by offset.
pub struct IncrementReader {
    file: File,
    changed: ChangedBlocks,
    /// Header and block numbers not yet read.
    pending: Vec<u8>,
    pending_pos: usize,
    /// Next block number to list, then next page to send.
    cursor: u32,
    listing: bool,
    /// Bytes of the current page already sent.
    page_offset: usize,
}

impl IncrementReader {
    /// The increment of `file` (`size` bytes at walk time) with the pages `changed`.
    pub fn new(file: File, size: u64, changed: ChangedBlocks) -> IncrementReader {
        let mut pending = Vec::with_capacity(HEADER_LEN + 4096);
        pending.extend_from_slice(&increment::header(size, changed.count()));
        IncrementReader {
            file,
            changed,
            pending,
            pending_pos: 0,
            cursor: 0,
            listing: true,
            page_offset: 0,
        }
    }

    /// Length of the whole stream (the tar entry's size).
    pub fn len(&self) -> u64 {
        increment::stream_len(self.changed.count(), BLCKSZ)
    }

    /// Whether no page changed (the stream is only its header).
    pub fn is_empty(&self) -> bool {
        self.changed.count() == 0
    }

    /// Refills `pending` with the next block numbers; false when all are listed.
    fn list_more(&mut self) -> bool {
        self.pending.clear();
        self.pending_pos = 0;
        while self.pending.len() < 4096 {
            match self.changed.next_from(self.cursor) {
                Some(b) => {
                    self.pending.extend_from_slice(&b.to_le_bytes());
                    self.cursor = b.saturating_add(1);
                    if b == u32::MAX {
                        break;
                    }
                }
                None => break,
            }
        }
        !self.pending.is_empty()
    }
}

impl Read for IncrementReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pending_pos < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pending_pos);
                buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                return Ok(n);
            }
            if self.listing {
                if self.list_more() {
                    continue;
                }
                self.listing = false;
                self.cursor = 0;
            }
            let Some(block) = self.changed.next_from(self.cursor) else {
                return Ok(0);
            };
            let want = buf.len().min(BLCKSZ - self.page_offset);
            let at = u64::from(block) * BLCKSZ as u64 + self.page_offset as u64;
            let n = match self.file.read_at(&mut buf[..want], at) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Truncated since the scan: the rest of the page is zeros (WAL replay rewrites it).
            let n = if n == 0 {
                buf[..want].fill(0);
                want
            } else {
                n
            };
            self.page_offset += n;
            if self.page_offset == BLCKSZ {
                self.page_offset = 0;
                self.cursor = block.saturating_add(1);
                if block == u32::MAX {
                    self.changed = ChangedBlocks::default();
                }
            }
            return Ok(n);
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Applies the increment `stream` (`len` bytes, the tar entry's size) to `file`, an earlier
/// backup's restored copy; `buf` holds at least one page. Returns the bytes written.
pub fn apply(stream: &mut dyn Read, len: u64, file: &File, buf: &mut [u8]) -> io::Result<u64> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head)?;
    let (size, n) = increment::parse_header(&head).map_err(|e| invalid(e.to_string()))?;
    if increment::stream_len(n, BLCKSZ) != len {
        return Err(invalid(format!(
            "increment of {n} pages should be {} bytes, the entry has {len}",
            increment::stream_len(n, BLCKSZ)
        )));
    }
    if size > MAX_INCREMENTED_FILE {
        return Err(invalid(format!(
            "increment of a {size}-byte file: over the {MAX_INCREMENTED_FILE}-byte limit"
        )));
    }
    // WAL-G's writer takes a file's size before it scans the file, so a file that grows
    // meanwhile has blocks past that size in its increment; WAL-G's restore writes them,
    // extending the file, and so does this, up to a relation segment's pages (or the
    // size, when larger): the bitmap stays within the plan's page-bitmap term.
    let pages = size.div_ceil(BLCKSZ as u64).max(SEGMENT_PAGES);
    let mut blocks = ChangedBlocks::for_pages(pages);
    let mut last: Option<u32> = None;
    let mut number = [0u8; 4];
    for _ in 0..n {
        stream.read_exact(&mut number)?;
        let b = u32::from_le_bytes(number);
        if u64::from(b) >= pages || last.is_some_and(|l| b <= l) {
            return Err(invalid(format!(
                "increment block {b} out of order or outside a {size}-byte file \
                 (and a relation segment)"
            )));
        }
        blocks.set(b);
        last = Some(b);
    }
    file.set_len(size)?;
    let page = &mut buf[..BLCKSZ];
    let mut cursor = 0u32;
    while let Some(b) = blocks.next_from(cursor) {
        stream.read_exact(page)?;
        file.write_all_at(page, u64::from(b) * BLCKSZ as u64)?;
        cursor = b + 1;
    }
    Ok(u64::from(n) * BLCKSZ as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::page::tests::heap_page;
    use std::io::Write;

    fn file_of(pages: &[Vec<u8>]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for p in pages {
            f.write_all(p).unwrap();
        }
        f.flush().unwrap();
        (f, (pages.len() * BLCKSZ) as u64)
    }

    #[test]
    fn increment_round_trip_takes_only_newer_pages() {
        let base_lsn = 0x5000;
        let new: Vec<Vec<u8>> = vec![
            heap_page(0x4000),
            heap_page(0x6000),
            vec![0u8; BLCKSZ],
            heap_page(0x1000),
            heap_page(0x5000),
        ];
        let (src, size) = file_of(&new);
        let mut f = src.reopen().unwrap();
        let mut seen = 0usize;
        let changed = scan(&mut f, size, base_lsn, &mut [0u8; 3 * BLCKSZ], &mut |d| {
            seen += d.len()
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen as u64, size, "every byte read once by the scan");
        assert_eq!(changed.count(), 3);
        let mut r = IncrementReader::new(src.reopen().unwrap(), size, changed);
        let mut stream = Vec::new();
        // Small reads cross every boundary.
        let mut chunk = [0u8; 1000];
        loop {
            let n = r.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            stream.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(stream.len() as u64, r.len());
        assert_eq!(&stream[..16], &increment::header(size, 3));
        let numbers: Vec<u32> = stream[16..28]
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(numbers, [1, 2, 4]);

        // Applied to the old file (shorter, older pages), the result is the new file.
        let old: Vec<Vec<u8>> = (0..4).map(|i| heap_page(0x100 + i)).collect();
        let old_first = old[0].clone();
        let (target, _) = file_of(&old);
        let out = target.reopen().unwrap();
        let written = apply(
            &mut &stream[..],
            stream.len() as u64,
            &out,
            &mut [0u8; BLCKSZ],
        )
        .unwrap();
        assert_eq!(written, 3 * BLCKSZ as u64);
        let result = std::fs::read(target.path()).unwrap();
        let mut expect = old_first;
        for p in &new[1..] {
            expect.extend_from_slice(p);
        }
        // Block 3 is the old file's, not the new one's: it did not change since the base.
        expect[3 * BLCKSZ..4 * BLCKSZ].copy_from_slice(&old[3]);
        assert_eq!(result, expect);
    }

    #[test]
    fn an_invalid_page_means_the_whole_file() {
        let mut bad = heap_page(0x9000);
        bad[10] = 0xF0;
        let (src, size) = file_of(&[heap_page(0x9000), bad]);
        let mut f = src.reopen().unwrap();
        let got = scan(&mut f, size, 0x100, &mut [0u8; BLCKSZ], &mut |_| {}).unwrap();
        assert_eq!(got, None);
    }

    /// A block past the size the writer saw (the file grew while WAL-G scanned it) extends
    /// the file, as WAL-G's restore does.
    #[test]
    fn blocks_past_the_recorded_size_extend_the_file() {
        let (target, _) = file_of(&[heap_page(1)]);
        let out = target.reopen().unwrap();
        let mut s = increment::header(8192, 2).to_vec();
        for b in [0u32, 1] {
            s.extend_from_slice(&b.to_le_bytes());
        }
        for lsn in [7, 8] {
            s.extend_from_slice(&heap_page(lsn));
        }
        apply(&mut &s[..], s.len() as u64, &out, &mut [0u8; BLCKSZ]).unwrap();
        let got = std::fs::read(target.path()).unwrap();
        assert_eq!(got.len(), 2 * BLCKSZ);
        assert!(got[BLCKSZ..] == heap_page(8)[..]);
    }

    #[test]
    fn apply_refuses_what_no_writer_makes() {
        let (target, _) = file_of(&[heap_page(1)]);
        let out = target.reopen().unwrap();
        let stream = |size: u64, blocks: &[u32]| {
            let mut s = increment::header(size, blocks.len() as u32).to_vec();
            for b in blocks {
                s.extend_from_slice(&b.to_le_bytes());
            }
            for _ in blocks {
                s.extend_from_slice(&heap_page(9));
            }
            s
        };
        let try_apply = |s: Vec<u8>| apply(&mut &s[..], s.len() as u64, &out, &mut [0u8; BLCKSZ]);
        let e = try_apply(stream(16384, &[1, 0])).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
        let e = try_apply(stream(8192, &[SEGMENT_PAGES as u32])).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let mut s = stream(8192, &[0]);
        s[0] = b'x';
        let e = try_apply(s).unwrap_err();
        assert_eq!(e.to_string(), "invalid increment file header");
        let s = stream(8192, &[0]);
        let e = apply(&mut &s[..], s.len() as u64 + 1, &out, &mut [0u8; BLCKSZ]).unwrap_err();
        assert!(e.to_string().contains("should be"), "{e}");
        // Nothing was changed by the refusals.
        assert_eq!(std::fs::read(target.path()).unwrap(), heap_page(1));
    }
}

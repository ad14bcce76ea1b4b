//! The page headers of a WAL segment, checked as the segment is restored.
//!
//! Not every compression carries a checksum (`none`, LZMA-alone and brotli have none), and
//! a segment with a flipped byte is worse than a missing one: PostgreSQL takes the first bad
//! record for the end of WAL and ends recovery early, silently. Every WAL page begins with a
//! header that says where it belongs (`XLogPageHeaderData`: magic, flags, timeline, page
//! address), and the first page's long header gives the segment and page sizes, so a
//! restore can check each page before the segment is linked into `pg_wal`. A complete
//! segment has a valid header on every page, except that after a WAL switch (a backup's
//! stop, `archive_timeout`) PostgreSQL zero-fills the rest of the segment: so once a page
//! starts with a zero header, every page after it must too (seen on PostgreSQL 15 with
//! recycled segments: the tails are all zeros, never the recycled file's old pages).

use super::wal_name::Segment;
use std::io::{self, Write};

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Every flag PostgreSQL defines (`XLP_ALL_FLAGS`).
const XLP_ALL_FLAGS: u16 = 0x000F;
/// The lowest page magic of any PostgreSQL version WAL-G supports (9.x); WAL-G's own rule.
pub const MIN_PAGE_MAGIC: u16 = 0xD061;
/// Bytes of the long header: `XLogLongPageHeaderData`.
const LONG_HEADER: usize = 40;
/// Bytes of the short header: `XLogPageHeaderData`, padded.
const SHORT_HEADER: usize = 24;

/// Checks the page headers of one segment as its bytes go by, and passes them on.
pub struct PageCheck<W> {
    out: W,
    segment: Segment,
    segment_size: u64,
    /// Bytes seen so far.
    pos: u64,
    /// The current page's header, as far as it has arrived.
    head: [u8; LONG_HEADER],
    /// From the first page: the page size and the magic every page must repeat.
    page_size: u64,
    magic: u16,
    /// A zeroed page was seen: the switched-out tail.
    zero_tail: bool,
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<W: Write> PageCheck<W> {
    /// Checks `segment` (of `segment_size` bytes) on its way to `out`.
    pub fn new(out: W, segment: Segment, segment_size: u64) -> Self {
        PageCheck {
            out,
            segment,
            segment_size,
            pos: 0,
            head: [0; LONG_HEADER],
            page_size: 0,
            magic: 0,
            zero_tail: false,
        }
    }

    /// The byte at which the current page starts, and how much of its header is needed.
    fn page_start(&self) -> (u64, usize) {
        match self.pos.checked_div(self.page_size) {
            None => (0, LONG_HEADER),
            Some(pages) => {
                let start = pages * self.page_size;
                (
                    start,
                    if start == 0 {
                        LONG_HEADER
                    } else {
                        SHORT_HEADER
                    },
                )
            }
        }
    }

    fn check_header(&mut self, page: u64, len: usize) -> io::Result<()> {
        let h = &self.head[..len];
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let name = self.segment.name(self.segment_size);
        let what = |msg: String| corrupt(format!("WAL segment {name}, page at byte {page}: {msg}"));
        let (magic, info, tli, addr) = (u16_at(0), u16_at(2), u32_at(4), u64_at(8));
        if page == 0 {
            if magic < MIN_PAGE_MAGIC {
                return Err(what(format!("magic {magic:#06x} is not a WAL page's")));
            }
            if info & XLP_LONG_HEADER == 0 {
                return Err(what("the first page has no long header".into()));
            }
            let (seg_size, blcksz) = (u64::from(u32_at(32)), u64::from(u32_at(36)));
            if seg_size != self.segment_size {
                return Err(what(format!(
                    "the header says {seg_size}-byte segments, not {} (WALG_PG_WAL_SIZE)",
                    self.segment_size
                )));
            }
            if !blcksz.is_power_of_two() || !(1024..=65536).contains(&blcksz) {
                return Err(what(format!("page size {blcksz} is not PostgreSQL's")));
            }
            self.page_size = blcksz;
            self.magic = magic;
        } else if h.iter().all(|&b| b == 0) {
            self.zero_tail = true;
            return Ok(());
        } else if self.zero_tail {
            return Err(what(
                "a page header after the zero-filled tail of a WAL switch".into(),
            ));
        } else {
            if magic != self.magic {
                return Err(what(format!(
                    "magic {magic:#06x} differs from the first page's {:#06x}",
                    self.magic
                )));
            }
            if info & XLP_LONG_HEADER != 0 {
                return Err(what("a long header past the first page".into()));
            }
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(what(format!("unknown flags {info:#06x}")));
        }
        if tli == 0 || tli > self.segment.timeline {
            return Err(what(format!(
                "timeline {tli}, not one up to the segment's {}",
                self.segment.timeline
            )));
        }
        let expected = self.segment.segno * self.segment_size + page;
        if addr != expected {
            return Err(what(format!(
                "page address {addr:X}, expected {expected:X}"
            )));
        }
        Ok(())
    }

    /// Called once every byte has been written: the segment must have ended on a page.
    pub fn finish(self) -> io::Result<W> {
        if self.pos == 0 || (self.page_size > 0 && !self.pos.is_multiple_of(self.page_size)) {
            return Err(corrupt(format!(
                "WAL segment {} ends inside a page, after {} bytes",
                self.segment.name(self.segment_size),
                self.pos
            )));
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for PageCheck<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        let mut rest = &data[..n];
        while !rest.is_empty() {
            let (start, need) = self.page_start();
            let into = (self.pos - start) as usize;
            let take = if into < need {
                let take = (need - into).min(rest.len());
                self.head[into..into + take].copy_from_slice(&rest[..take]);
                if into + take == need {
                    self.check_header(start, need)?;
                }
                take
            } else {
                // The rest of the page is record data: skip to the next page's header.
                let page = if self.page_size == 0 {
                    u64::MAX
                } else {
                    self.page_size
                };
                ((start + page - self.pos) as usize).min(rest.len())
            };
            self.pos += take as u64;
            rest = &rest[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const PAGE: usize = 8192;

    /// A 1 MiB segment whose every page has a valid header; the commands' tests fill the
    /// rest of each page.
    pub(crate) fn segment(seg: Segment, tli_of_page: impl Fn(usize) -> u32) -> Vec<u8> {
        let mut out = vec![0u8; SEG as usize];
        for (i, page) in out.chunks_mut(PAGE).enumerate() {
            page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            let info: u16 = if i == 0 { XLP_LONG_HEADER } else { 1 };
            page[2..4].copy_from_slice(&info.to_le_bytes());
            page[4..8].copy_from_slice(&tli_of_page(i).to_le_bytes());
            let addr = seg.segno * SEG + (i * PAGE) as u64;
            page[8..16].copy_from_slice(&addr.to_le_bytes());
            if i == 0 {
                page[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            }
            page[100] = i as u8;
        }
        out
    }

    fn check(seg: Segment, data: &[u8], step: usize) -> io::Result<()> {
        let mut c = PageCheck::new(Vec::new(), seg, SEG);
        for piece in data.chunks(step) {
            c.write_all(piece)?;
        }
        let out = c.finish()?;
        assert!(out == data);
        Ok(())
    }

    #[test]
    fn good_segments_pass_in_any_pieces() {
        let seg = Segment {
            timeline: 2,
            segno: 77,
        };
        let data = segment(seg, |i| if i < 3 { 1 } else { 2 });
        for step in [1, 7, 24, 40, 4096, 8192, 65536, SEG as usize] {
            check(seg, &data, step).unwrap();
        }
    }

    #[test]
    fn corruption_in_any_header_is_caught() {
        let seg = Segment {
            timeline: 1,
            segno: 5,
        };
        let good = segment(seg, |_| 1);
        for (at, why) in [
            (0, "magic"),
            (8192 * 9 + 1, "magic"),
            (8192 * 3 + 3, "flags"),
            (8192 * 4 + 5, "timeline"),
            (8192 * 100 + 9, "page address"),
            (33, "segments"),
            (37, "page size"),
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let e = check(seg, &bad, 65536).unwrap_err();
            assert!(e.to_string().contains(why), "{at}: {e}");
        }
        // A zero-filled tail after a WAL switch is fine; a header after it is not.
        let mut switched = good.clone();
        switched[8192 * 50..].fill(0);
        check(seg, &switched, 65536).unwrap();
        switched[8192 * 80] = 0x10;
        let e = check(seg, &switched, 65536).unwrap_err();
        assert!(e.to_string().contains("zero-filled tail"), "{e}");
        // A segment of another place, or timeline, or cut short.
        let other = Segment {
            timeline: 1,
            segno: 6,
        };
        assert!(check(other, &good, 65536).is_err());
        let older = Segment {
            timeline: 2,
            segno: 5,
        };
        check(older, &good, 65536).unwrap();
        assert!(check(seg, &good[..SEG as usize - 100], 65536).is_err());
        assert!(check(seg, &[], 65536).is_err());
    }
}

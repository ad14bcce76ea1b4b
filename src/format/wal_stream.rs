//! Streamed WAL cut back into segment files: where each piece of a replication stream lands
//! in which segment, and which timeline an LSN belongs to.
//!
//! A WAL sender streams bytes by position, in messages that ignore segment boundaries: one
//! message may end one segment and begin the next. [`SegmentCursor`] follows the segment
//! being filled and says, for each message, which bytes go where; the caller owns the buffer.

use super::lsn::Lsn;
use super::timeline_history::HistoryRecord;
use super::wal_name::Segment;
use std::fmt;

/// The segment being filled from a stream, and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentCursor {
    timeline: u32,
    /// First byte of the segment.
    start: Lsn,
    /// Bytes of it received.
    filled: u64,
    segment_size: u64,
}

/// Where the next bytes of a message go: skip `skip` bytes of it (already received), copy the
/// following `len` to `offset` in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bytes at the message's front that this segment already holds.
    pub skip: usize,
    /// Bytes to copy.
    pub len: usize,
    /// Where in the segment they go.
    pub offset: usize,
}

/// A message that starts beyond what was received: bytes in between are missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamGap {
    /// Where the stream should have continued.
    pub expected: Lsn,
    /// Where the message starts.
    pub got: Lsn,
}

impl fmt::Display for StreamGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL stream has a gap: expected data at {}, got data from {}",
            self.expected, self.got
        )
    }
}

impl std::error::Error for StreamGap {}

impl SegmentCursor {
    /// The segment of `timeline` holding `lsn`, empty (its start is where streaming begins).
    pub fn at(timeline: u32, lsn: Lsn, segment_size: u64) -> SegmentCursor {
        SegmentCursor {
            timeline,
            start: segment_start(lsn, segment_size),
            filled: 0,
            segment_size,
        }
    }

    /// The timeline.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// First byte of the segment.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// First byte after the segment.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.segment_size)
    }

    /// Bytes received so far.
    pub fn filled(&self) -> usize {
        self.filled as usize
    }

    /// Where the stream goes on: the first byte not yet received.
    pub fn position(&self) -> Lsn {
        Lsn(self.start.0 + self.filled)
    }

    /// Whether every byte of the segment is in.
    pub fn is_complete(&self) -> bool {
        self.filled == self.segment_size
    }

    /// The segment's file name.
    pub fn name(&self) -> String {
        Segment {
            timeline: self.timeline,
            segno: self.start.0 / self.segment_size,
        }
        .name(self.segment_size)
    }

    /// The next segment of the same timeline, empty.
    pub fn next(&self) -> SegmentCursor {
        SegmentCursor {
            start: self.end(),
            filled: 0,
            ..*self
        }
    }

    /// Places (part of) the message of `len` bytes streamed from `from`: what of it this
    /// segment takes, and where. Bytes before [`position`](Self::position) are passed over
    /// (the stream repeated them); the rest is taken up to the segment's end, and what is
    /// left belongs to the next segment. A message that starts after the position is a gap.
    pub fn place(&mut self, from: Lsn, len: usize) -> Result<Placement, StreamGap> {
        let at = self.position();
        if from > at {
            return Err(StreamGap {
                expected: at,
                got: from,
            });
        }
        let msg_end = from.0 + len as u64;
        if msg_end <= at.0 {
            return Ok(Placement {
                skip: len,
                len: 0,
                offset: self.filled as usize,
            });
        }
        let skip = (at.0 - from.0) as usize;
        let take = (msg_end.min(self.end().0) - at.0) as usize;
        let offset = self.filled as usize;
        self.filled += take as u64;
        Ok(Placement {
            skip,
            len: take,
            offset,
        })
    }
}

/// The first byte of the segment holding `lsn`.
pub fn segment_start(lsn: Lsn, segment_size: u64) -> Lsn {
    Lsn(lsn.0 / segment_size * segment_size)
}

/// The name PostgreSQL gives timeline `tli`'s history file.
pub fn history_file_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// The timeline `lsn` belongs to in a cluster whose history (its current timeline's
/// `.history` records, oldest first) is `records` and whose timeline is now `current`, as
/// PostgreSQL's `tliOfPointInHistory` finds it: the first ancestor whose WAL ends after `lsn`.
pub fn timeline_of(lsn: Lsn, records: &[HistoryRecord], current: u32) -> u32 {
    records
        .iter()
        .find(|r| lsn < r.switch_lsn)
        .map_or(current, |r| r.timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    /// Feeds a message as the receiver does; returns the (segment name, offset, bytes)
    /// writes and the cursor after it.
    fn feed(
        mut cur: SegmentCursor,
        from: u64,
        len: usize,
    ) -> (Vec<(String, usize, usize)>, SegmentCursor) {
        let mut writes = Vec::new();
        let (mut from, mut left) = (Lsn(from), len);
        while left > 0 {
            let p = cur.place(from, left).unwrap();
            if p.len > 0 {
                writes.push((cur.name(), p.offset, p.len));
            }
            from = Lsn(from.0 + (p.skip + p.len) as u64);
            left -= p.skip + p.len;
            if cur.is_complete() {
                cur = cur.next();
            }
        }
        (writes, cur)
    }

    #[test]
    fn starts_at_the_segment_start() {
        let c = SegmentCursor::at(1, Lsn(0x0300_0028), SEG);
        assert_eq!(c.start(), Lsn(0x0300_0000));
        assert_eq!(c.end(), Lsn(0x0400_0000));
        assert_eq!(c.name(), "000000010000000000000003");
        assert_eq!(c.position(), c.start());
        let c = SegmentCursor::at(2, Lsn(0x1_2A00_0000), SEG);
        assert_eq!(c.name(), "00000002000000010000002A");
        assert_eq!(c.next().name(), "00000002000000010000002B");
        assert_eq!(
            SegmentCursor::at(1, Lsn(0xFF00_0000), SEG).next().name(),
            "000000010000000100000000"
        );
    }

    #[test]
    fn messages_split_at_segment_ends() {
        let c = SegmentCursor::at(1, Lsn(0x0300_0000), SEG);
        let (w, c) = feed(c, 0x0300_0000, 128 << 10);
        assert_eq!(w, [("000000010000000000000003".into(), 0, 128 << 10)]);
        assert_eq!(c.filled(), 128 << 10);
        // Up to 64 KiB before the end, then a message across the boundary.
        let (_, c) = feed(c, 0x0302_0000, (SEG as usize) - (192 << 10));
        assert_eq!(c.position(), Lsn(0x03FF_0000));
        let (w, c) = feed(c, 0x03FF_0000, 128 << 10);
        assert_eq!(
            w,
            [
                (
                    "000000010000000000000003".into(),
                    SEG as usize - (64 << 10),
                    64 << 10
                ),
                ("000000010000000000000004".into(), 0, 64 << 10),
            ]
        );
        assert_eq!(c.name(), "000000010000000000000004");
        assert_eq!(c.filled(), 64 << 10);
    }

    #[test]
    fn repeated_bytes_are_passed_over_and_gaps_refused() {
        let mut c = SegmentCursor::at(1, Lsn(0x0300_0000), SEG);
        c.place(Lsn(0x0300_0000), 1000).unwrap();
        // Entirely old.
        let p = c.place(Lsn(0x0300_0000), 600).unwrap();
        assert_eq!((p.skip, p.len), (600, 0));
        // Partly old.
        let p = c.place(Lsn(0x0300_0000 + 900), 300).unwrap();
        assert_eq!((p.skip, p.len, p.offset), (100, 200, 1000));
        assert_eq!(c.position(), Lsn(0x0300_0000 + 1200));
        let gap = c.place(Lsn(0x0300_0000 + 1201), 10).unwrap_err();
        assert_eq!(gap.expected, Lsn(0x0300_0000 + 1200));
        assert!(gap.to_string().contains("0/30004B0"), "{gap}");
        assert_eq!(
            c.position(),
            Lsn(0x0300_0000 + 1200),
            "a gap changes nothing"
        );
    }

    #[test]
    fn a_whole_segment_in_one_message_and_an_empty_message() {
        let c = SegmentCursor::at(3, Lsn(0), 1 << 20);
        let (w, c) = feed(c, 0, 2 << 20);
        assert_eq!(w.len(), 2);
        assert_eq!(c.name(), "000000030000000000000002");
        let mut c2 = c;
        let p = c2.place(c.position(), 0).unwrap();
        assert_eq!((p.skip, p.len), (0, 0));
    }

    #[test]
    fn timelines_of_positions() {
        let records = [
            HistoryRecord {
                timeline: 1,
                switch_lsn: Lsn(0x0300_00A0),
            },
            HistoryRecord {
                timeline: 2,
                switch_lsn: Lsn(0x0500_0000),
            },
        ];
        assert_eq!(timeline_of(Lsn(0), &records, 3), 1);
        assert_eq!(timeline_of(Lsn(0x0300_0000), &records, 3), 1);
        assert_eq!(timeline_of(Lsn(0x0300_00A0), &records, 3), 2);
        assert_eq!(timeline_of(Lsn(0x04FF_FFFF), &records, 3), 2);
        assert_eq!(timeline_of(Lsn(0x0500_0000), &records, 3), 3);
        assert_eq!(timeline_of(Lsn(0x0900_0000), &[], 1), 1);
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(history_file_name(0x1A), "0000001A.history");
        assert_eq!(segment_start(Lsn(0x0500_0001), SEG), Lsn(0x0500_0000));
    }
}

//! WAL file names as PostgreSQL writes them and WAL-G stores them (walg-compat §1.3.1).
//!
//! A segment name is `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number split
//! into "log" and "seg" fields by the number of segments per 4 GiB. Only upper-case hex is a
//! segment name, as in WAL-G's recogniser.

/// Bytes in one MiB.
const MIB: u64 = 1 << 20;

/// A WAL segment on a timeline, for a given segment size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// Timeline id.
    pub timeline: u32,
    /// Segment number (`LSN / segment size`).
    pub segno: u64,
}

/// Number of segments in one 4 GiB "log id" for this segment size.
pub fn segments_per_xlogid(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// Segment size in bytes from WAL-G's `WALG_PG_WAL_SIZE` (MiB).
pub fn segment_size_from_mib(mib: u64) -> u64 {
    mib * MIB
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl Segment {
    /// Parses a 24-character segment name; `None` for anything else, including lower case and
    /// a last field out of range for `segment_size`.
    pub fn parse(name: &str, segment_size: u64) -> Option<Segment> {
        // ASCII first: the slices below are byte offsets (a listing can hold any name).
        if name.len() != 24 || !name.is_ascii() {
            return None;
        }
        let timeline = hex8(&name[0..8])?;
        let log = u64::from(hex8(&name[8..16])?);
        let seg = u64::from(hex8(&name[16..24])?);
        let per = segments_per_xlogid(segment_size);
        if seg >= per {
            return None;
        }
        Some(Segment {
            timeline,
            segno: log * per + seg,
        })
    }

    /// The segment's file name.
    pub fn name(&self, segment_size: u64) -> String {
        let per = segments_per_xlogid(segment_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.segno / per,
            self.segno % per
        )
    }

    /// The following segment on the same timeline (WAL-G never switches timelines here).
    pub fn next(&self) -> Segment {
        Segment {
            timeline: self.timeline,
            segno: self.segno + 1,
        }
    }
}

/// What kind of file PostgreSQL handed us, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFileKind {
    /// A full WAL segment.
    Segment,
    /// `NNNNNNNN.history`.
    History,
    /// `<segment>.partial`.
    Partial,
    /// `<segment>.<offset>.backup`.
    BackupHistory,
    /// Anything else; archived under its own name all the same.
    Other,
}

/// Classifies a WAL file name.
pub fn kind_of(name: &str, segment_size: u64) -> WalFileKind {
    if Segment::parse(name, segment_size).is_some() {
        WalFileKind::Segment
    } else if name.len() == 16 && name.ends_with(".history") && hex8(&name[..8]).is_some() {
        WalFileKind::History
    } else if name.ends_with(".partial")
        && Segment::parse(&name[..name.len() - 8], segment_size).is_some()
    {
        WalFileKind::Partial
    } else if name.ends_with(".backup")
        && name.len() > 24
        && Segment::parse(&name[..24], segment_size).is_some()
    {
        WalFileKind::BackupHistory
    } else {
        WalFileKind::Other
    }
}

/// A name is safe to use as a storage key component and a local file name: no separators, no
/// parent references, nothing but what PostgreSQL's WAL names use.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    const SEG16: u64 = 16 * MIB;

    #[test]
    fn names_round_trip() {
        let s = Segment::parse("00000001000000010000002A", SEG16).unwrap();
        assert_eq!(
            s,
            Segment {
                timeline: 1,
                segno: 0x12A
            }
        );
        assert_eq!(s.name(SEG16), "00000001000000010000002A");
        assert_eq!(
            Segment {
                timeline: 1,
                segno: 0xFF
            }
            .next()
            .name(SEG16),
            "000000010000000100000000"
        );
        assert_eq!(segments_per_xlogid(64 * MIB), 0x40);
        let s64 = Segment::parse("00000002000000000000003F", 64 * MIB).unwrap();
        assert_eq!(s64.next().name(64 * MIB), "000000020000000100000000");
    }

    #[test]
    fn rejects_non_segments() {
        assert!(Segment::parse("00000001000000000000000a", SEG16).is_none());
        assert!(Segment::parse("000000010000000000000100", SEG16).is_none());
        assert!(Segment::parse("0000000100000000000000", SEG16).is_none());
        assert!(Segment::parse("000000010000000000000040", 64 * MIB).is_none());
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("000000010000000000000003", SEG16),
            WalFileKind::Segment
        );
        assert_eq!(kind_of("00000002.history", SEG16), WalFileKind::History);
        assert_eq!(
            kind_of("000000010000000000000005.partial", SEG16),
            WalFileKind::Partial
        );
        assert_eq!(
            kind_of("000000010000000000000003.00000028.backup", SEG16),
            WalFileKind::BackupHistory
        );
        assert_eq!(kind_of("RECOVERYXLOG", SEG16), WalFileKind::Other);
        assert!(is_safe_file_name(
            "000000010000000000000003.00000028.backup"
        ));
        assert!(!is_safe_file_name("../etc/passwd"));
        assert!(!is_safe_file_name("a/b"));
    }
}

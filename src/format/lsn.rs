//! PostgreSQL log sequence numbers (walg-compat §2.1.2).
//!
//! JSON documents carry an LSN as one unsigned 64-bit number; people and PostgreSQL's
//! functions use the `X/Y` text (high and low 32 bits in hex). Both forms meet here so no
//! other module splits or joins the halves.

use std::fmt;

/// A position in the WAL stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` text (1–8 hex digits each side, either case).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let half = |s: &str| -> Option<u64> {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(s, 16).ok()
        };
        Some(Lsn((half(hi)? << 32) | half(lo)?))
    }

    /// Parses `X/Y` as WAL-G's LSN parser (pglogrepl, Go's `Sscanf("%X/%X")` into two
    /// 64-bit halves) takes it, for the places where WAL-G's tolerance decides what is
    /// read: `wal-verify --lsn` and timeline history records. Spaces before each half are
    /// skipped, text after the second half is ignored, a half may be longer than 8 digits
    /// (the high half then wraps, as in Go); `None` where Go reports an error.
    pub fn parse_go_scan(text: &str) -> Option<Lsn> {
        fn half(s: &str) -> Option<(u64, &str)> {
            let s = s.trim_start_matches(|c: char| c.is_whitespace() && c != '\n');
            let digits = s.bytes().take_while(u8::is_ascii_hexdigit).count();
            let value = u64::from_str_radix(&s[..digits], 16).ok()?;
            Some((value, &s[digits..]))
        }
        let (hi, rest) = half(text)?;
        let (lo, _) = half(rest.strip_prefix('/')?)?;
        Some(Lsn((hi << 32).wrapping_add(lo)))
    }

    /// The segment number holding this position.
    pub fn segno(self, segment_size: u64) -> u64 {
        segno(self, segment_size)
    }
}

/// `lsn / segment_size`: the number of the segment that holds byte `lsn`.
pub fn segno(lsn: Lsn, segment_size: u64) -> u64 {
    lsn.0 / segment_size
}

impl fmt::Display for Lsn {
    /// `X/Y` in upper-case hex, as `backup-list --detail` and PostgreSQL print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_number() {
        // walg-compat Appendix A.
        assert_eq!(Lsn::parse("0/3000028"), Some(Lsn(50_331_688)));
        assert_eq!(Lsn::parse("1/2A33FF50"), Some(Lsn(5_003_018_064)));
        assert_eq!(Lsn::parse("1/2a33ff50"), Some(Lsn(5_003_018_064)));
        assert_eq!(Lsn(5_003_018_064).to_string(), "1/2A33FF50");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        for bad in ["", "0", "/1", "1/", "123456789/0", "0/g", "0/1/2"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_scan_tolerance() {
        assert_eq!(Lsn::parse_go_scan("0/3000028"), Some(Lsn(50_331_688)));
        assert_eq!(
            Lsn::parse_go_scan(" 1/ 2a33ff50\tx"),
            Some(Lsn(5_003_018_064))
        );
        assert_eq!(
            Lsn::parse_go_scan("0/9000000 trailing"),
            Some(Lsn(0x900_0000))
        );
        assert_eq!(
            Lsn::parse_go_scan("1FFFFFFFF/0"),
            Some(Lsn(0xFFFF_FFFF << 32))
        );
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "0 /1",
            "0/g",
            "x/1",
            "1/10000000000000000",
        ] {
            assert_eq!(Lsn::parse_go_scan(bad), None, "{bad}");
        }
    }

    #[test]
    fn segments() {
        let seg16 = 16 << 20;
        assert_eq!(Lsn(50_331_688).segno(seg16), 3);
        assert_eq!(segno(Lsn(5_003_018_064), seg16), 0x12A);
        assert_eq!(segno(Lsn(268_435_455), seg16), 15);
        assert_eq!(segno(Lsn(0x400_0000), 64 << 20), 1);
    }
}

//! Timeline history files (`NNNNNNNN.history`) as WAL-G's `wal-verify` and `wal-show` read
//! them (walg-compat §10.3, §10.4).
//!
//! PostgreSQL writes one record per ancestor timeline, `<parent tli>\t<switch LSN>\t<reason>`:
//! the parent's WAL ends at the switch LSN, where the next timeline begins. WAL-G follows a
//! cluster's history backwards through these records and shows the last one as a
//! timeline's parent, so what counts as a record must be exactly what WAL-G accepts: a line
//! of decimal digits, a tab, at least one character, a tab, at least one character. Lines that
//! are not records (comments, blank lines) are passed over; a record whose timeline or LSN
//! does not parse makes the whole file unreadable, as in WAL-G.

use super::lsn::Lsn;
use std::fmt;

/// One record of a history file: `timeline`'s WAL ends at `switch_lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The ancestor timeline.
    pub timeline: u32,
    /// Where it ends (and the next timeline begins).
    pub switch_lsn: Lsn,
}

/// A record WAL-G would refuse, with the offending line.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryError(pub String);

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid timeline history record: {}", self.0)
    }
}

impl std::error::Error for HistoryError {}

/// The records of a history file, in file order.
pub fn parse(text: &[u8]) -> Result<Vec<HistoryRecord>, HistoryError> {
    let text = String::from_utf8_lossy(text);
    let mut records = Vec::new();
    for line in text.split('\n') {
        // Go's line scanner drops one carriage return at a line's end.
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((timeline, lsn)) = record_fields(line) {
            let timeline: u32 = timeline
                .parse()
                .map_err(|_| HistoryError(line.to_string()))?;
            let switch_lsn =
                Lsn::parse_go_scan(lsn).ok_or_else(|| HistoryError(line.to_string()))?;
            records.push(HistoryRecord {
                timeline,
                switch_lsn,
            });
        }
    }
    Ok(records)
}

/// The timeline and LSN fields of a record line, split as WAL-G's pattern
/// `^(\d+)\t(.+)\t(.+)$` splits it (the LSN field runs to the last tab that still leaves a
/// reason behind it); `None` for a line that is not a record.
fn record_fields(line: &str) -> Option<(&str, &str)> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = line[digits..].strip_prefix('\t')?;
    let split = rest
        .char_indices()
        .filter(|&(i, c)| c == '\t' && i > 0 && i + 1 < rest.len())
        .map(|(i, _)| i)
        .next_back()?;
    Some((&line[..digits], &rest[..split]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(timeline: u32, lsn: u64) -> HistoryRecord {
        HistoryRecord {
            timeline,
            switch_lsn: Lsn(lsn),
        }
    }

    #[test]
    fn records_as_postgresql_writes_them() {
        let text = b"1\t0/9000000\tno recovery target specified\n\n2\t0/A0000D8\tbefore 2024-05-01 10:00:00+00\n";
        assert_eq!(
            parse(text).unwrap(),
            [rec(1, 0x900_0000), rec(2, 0xA00_00D8)]
        );
        assert_eq!(parse(b"").unwrap(), []);
    }

    #[test]
    fn what_walg_passes_over() {
        let text = b"# comment\n1\t0/9000000\n 1\t0/1\tx\n1 0/1 x\n1\t0/9000000\t\n\t0/1\tx\r\n";
        assert_eq!(parse(text).unwrap(), []);
        // A carriage return at the end is not part of the reason; a tab inside the reason
        // moves the split, and the LSN parser ignores what follows the LSN.
        assert_eq!(parse(b"3\t1/0\tA\tB\r\n").unwrap(), [rec(3, 1 << 32)]);
    }

    #[test]
    fn what_walg_refuses() {
        assert!(parse(b"1\tnot-an-lsn\treason\n").is_err());
        assert!(parse(b"99999999999\t0/1\treason\n").is_err());
    }
}

//! What is in `wal_005/` as WAL-G's inspecting commands (`wal-verify`, `wal-show`) see it:
//! which objects count as a present segment, which name a timeline, and each timeline's
//! history file (walg-compat §1.3.2, §10.3, §10.4).
//!
//! These commands report on the archive, and scripts compare their answers with WAL-G's, so
//! the rules are WAL-G's to the letter, quirks included: one extension is cut off whatever it
//! is (an individual WAL metadata object `<segment>.json` counts as the segment), names are
//! parsed with either case of hex, and a 24-character name that is not a segment counts as
//! segment 0 of timeline 0 (WAL-G's parser hands back an empty description with an error
//! its caller does not check). wal-fetch's stricter reading of names is not used here.

use super::{WAL_FOLDER, wal};
use crate::codec::{Crypter, Method};
use crate::error::Error;
use crate::format::timeline_history::{self, HistoryRecord};
use crate::format::wal_name::{Segment, segments_per_xlogid};
use crate::storage::Storage;
use std::collections::BTreeSet;
use std::io::{self, Write};

/// A history file larger than this is not one PostgreSQL wrote (a record is a line per
/// timeline switch).
const HISTORY_CAP: usize = 16 << 20;

/// The names (relative to `wal_005/`) of the objects directly in `wal_005/`, in listing
/// order.
pub fn list_names(storage: &dyn Storage) -> Result<Vec<String>, Error> {
    let prefix = format!("{WAL_FOLDER}/");
    let mut names = Vec::new();
    storage.list(&prefix, false, &mut |m| {
        if let Some(name) = m.key.strip_prefix(&prefix) {
            names.push(name.to_string());
        }
    })?;
    Ok(names)
}

/// `name` without its last extension (the text from its last `.`), as Go's
/// `strings.TrimSuffix(name, "."+path.Ext(name)[1:])` leaves it.
fn trim_extension(name: &str) -> &str {
    name.rfind('.').map_or(name, |dot| &name[..dot])
}

/// Eight hex digits of either case, as Go's `strconv.ParseUint(s, 16, 32)` reads them.
fn hex8(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// WAL-G's `ParseWALFilename`: 24 bytes, three hex fields, the last below the segments per
/// log id. `Err(())` for a 24-byte name that fails; `Ok(None)` for another length.
fn parse_wal_name(name: &str, segment_size: u64) -> Result<Option<Segment>, ()> {
    let b = name.as_bytes();
    if b.len() != 24 {
        return Ok(None);
    }
    let (timeline, log, seg) = match (hex8(&b[..8]), hex8(&b[8..16]), hex8(&b[16..])) {
        (Some(t), Some(l), Some(s)) => (t, l, s),
        _ => return Err(()),
    };
    let per = segments_per_xlogid(segment_size);
    if seg >= per {
        return Err(());
    }
    Ok(Some(Segment {
        timeline: timeline as u32,
        segno: log * per + seg,
    }))
}

/// A segment name as WAL-G's `ParseWALFilename` reads it (either case of hex).
pub fn parse_name(name: &str, segment_size: u64) -> Option<Segment> {
    parse_wal_name(name, segment_size).ok().flatten()
}

/// The segment an object of `wal_005/` makes present, if any.
pub fn segment_of(name: &str, segment_size: u64) -> Option<Segment> {
    match parse_wal_name(trim_extension(name), segment_size) {
        Ok(found) => found,
        Err(()) => Some(Segment {
            timeline: 0,
            segno: 0,
        }),
    }
}

/// Every segment the names make present.
pub fn present_segments(names: &[String], segment_size: u64) -> BTreeSet<Segment> {
    names
        .iter()
        .filter_map(|n| segment_of(n, segment_size))
        .collect()
}

/// The timeline an object of `wal_005/` belongs to for `wal-verify timeline`: a segment's
/// (with one extension cut off), or a history file's. A history file needs an extension to
/// count (`00000002.history.lz4`, `00000002.history.`): WAL-G cuts one off before matching
/// `^([0-9a-fA-F]+)\.history(\.\w+)?$`, so a bare `00000002.history` is passed over.
pub fn timeline_of(name: &str, segment_size: u64) -> Option<u32> {
    let base = trim_extension(name);
    if let Ok(Some(segment)) = parse_wal_name(base, segment_size) {
        return Some(segment.timeline);
    }
    let (id, rest) = base.split_once(".history")?;
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let extension_ok = rest.is_empty() || rest.strip_prefix('.').is_some_and(word);
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) || !extension_ok {
        return None;
    }
    u32::from_str_radix(id, 16).ok()
}

/// The name of timeline `tli`'s history file.
pub fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// Collects a decoded object, up to a cap.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > HISTORY_CAP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {} MiB", HISTORY_CAP >> 20),
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The records of timeline `tli`'s history file, found among the names WAL-G may have
/// stored it under; `None` when there is none.
pub fn read_history(
    storage: &dyn Storage,
    crypter: &Crypter,
    preferred: Method,
    tli: u32,
) -> Result<Option<Vec<HistoryRecord>>, Error> {
    let name = history_name(tli);
    let Some(found) = wal::open(storage, &name, preferred)? else {
        return Ok(None);
    };
    let key = found.key.clone();
    let mut text = Capped(Vec::new());
    wal::decode_into(found, crypter, &mut text, &mut [0u8; 8192])?;
    timeline_history::parse(&text.0).map(Some).map_err(|e| {
        Error::io(
            format!("reading {key}"),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BytesBody;
    use crate::storage::memory::MemStorage;

    const SEG16: u64 = 16 << 20;

    fn seg(timeline: u32, segno: u64) -> Option<Segment> {
        Some(Segment { timeline, segno })
    }

    #[test]
    fn present_segments_as_walg_counts_them() {
        for (name, want) in [
            ("000000010000000000000003.lz4", seg(1, 3)),
            ("000000010000000000000003.zst", seg(1, 3)),
            ("000000010000000000000003.", seg(1, 3)),
            ("000000010000000000000003", seg(1, 3)),
            // Individual WAL metadata counts as the segment (WAL-G's quirk).
            ("000000010000000000000003.json", seg(1, 3)),
            ("00000001000000010000000a.br", seg(1, 0x10A)),
            ("000000010000000000000005.partial.lz4", None),
            // An uncompressed partial segment stored dot-less loses `.partial` as its
            // extension and counts as the segment (WAL-G does the same).
            ("000000010000000000000005.partial", seg(1, 5)),
            ("000000010000000000000005.partial.", None),
            ("000000010000000000000003.00000028.backup.lz4", None),
            ("000000010000000000000010_delta.lz4", None),
            ("00000002.history.lz4", None),
            ("00000002.history", None),
            ("00000001000000000000000.json", None),
            // 24 characters that are no segment: WAL-G's empty description.
            ("0000000100000000000001FF.lz4", seg(0, 0)),
            ("RECOVERYXLOGRECOVERYXLOG.lz4", seg(0, 0)),
        ] {
            assert_eq!(segment_of(name, SEG16), want, "{name}");
        }
        assert_eq!(segment_of("000000010000000000000040", 64 << 20), seg(0, 0));
    }

    #[test]
    fn timelines_as_walg_reads_them() {
        for (name, want) in [
            ("000000030000000000000003.lz4", Some(3)),
            ("00000002.history.lz4", Some(2)),
            ("0000000a.history.", Some(10)),
            ("0000000A.history.br.x", Some(10)),
            ("00000002.history", None),
            ("000000010000000000000005.partial.lz4", None),
            ("0000000100000000000001FF.lz4", None),
            ("x.history.lz4", None),
            ("100000000.history.lz4", None),
            ("00000002.history-x.lz4", None),
        ] {
            assert_eq!(timeline_of(name, SEG16), want, "{name}");
        }
    }

    #[test]
    fn history_found_under_any_spelling() {
        let st = MemStorage::new();
        assert_eq!(
            read_history(&st, &Crypter::None, Method::Lz4, 2).unwrap(),
            None
        );
        st.put(
            "wal_005/00000002.history.",
            &BytesBody(b"1\t0/9000000\tno recovery target specified\n"),
        )
        .unwrap();
        let records = read_history(&st, &Crypter::None, Method::Lz4, 2)
            .unwrap()
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].timeline, 1);
        st.put("wal_005/00000003.history", &BytesBody(b"1\tzz\tx\n"))
            .unwrap();
        let err = read_history(&st, &Crypter::None, Method::Lz4, 3).unwrap_err();
        assert!(err.to_string().contains("00000003.history"), "{err}");
        st.put("wal_005/x.lz4", &BytesBody(b"")).unwrap();
        st.put("wal_005/sub/y.lz4", &BytesBody(b"")).unwrap();
        let names = list_names(&st).unwrap();
        assert!(names.contains(&"x.lz4".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains('/')), "{names:?}");
    }
}

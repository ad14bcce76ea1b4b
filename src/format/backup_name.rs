//! Backup names and the storage keys derived from them (walg-compat §1.4.1, §1.6, App. B).
//!
//! WAL-G finds backups, their order and their WAL ranges by pattern-matching names rather
//! than by reading documents: the backup-name recogniser, the first 24-hex-digit run of a
//! key, and "cut at the first `_backup`". wal-rus must match those rules exactly, including
//! their corner cases (leftmost match, upper-case hex only), or the two tools would disagree
//! about which objects belong to which backup. The patterns are simple enough to match by
//! hand, which avoids a regex engine in a small binary.

use crate::format::wal_name::Segment;

/// Every backup name starts with this.
pub const BACKUP_PREFIX: &str = "base_";

/// What follows the backup name in its sentinel's file name.
pub const SENTINEL_SUFFIX: &str = "_backup_stop_sentinel.json";

/// Separates a delta's own start segment from its base's.
const DELTA_MARK: &str = "_D_";

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn hex_run(bytes: &[u8], at: usize, len: usize) -> bool {
    bytes.len() >= at + len && bytes[at..at + len].iter().all(|&b| is_upper_hex(b))
}

/// The name of a full backup starting in `start`: `base_<segment name>`.
pub fn full_name(start: Segment, segment_size: u64) -> String {
    format!("{BACKUP_PREFIX}{}", start.name(segment_size))
}

/// The name of a delta starting in `start` on top of `base_name`:
/// `base_<start>_D_<first 24-hex run of base_name>`; `None` when the base name has no run.
pub fn delta_name(start: Segment, segment_size: u64, base_name: &str) -> Option<String> {
    Some(format!(
        "{}{DELTA_MARK}{}",
        full_name(start, segment_size),
        first_hex24(base_name)?
    ))
}

/// The leftmost match of WAL-G's backup-name pattern
/// `base_[0-9A-F]{24}(_D_[0-9A-F]{24})?(_[0-9A-F]{8})?` anywhere in `s` (Go's
/// `Regexp.FindString`: leftmost-first, optional groups taken greedily).
pub fn find_backup_name(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(pos) = s[from..].find(BACKUP_PREFIX) {
        let start = from + pos;
        let mut end = start + BACKUP_PREFIX.len();
        if hex_run(bytes, end, 24) {
            end += 24;
            if bytes[end..].starts_with(DELTA_MARK.as_bytes()) && hex_run(bytes, end + 3, 24) {
                end += 3 + 24;
            }
            if bytes.get(end) == Some(&b'_') && hex_run(bytes, end + 1, 8) {
                end += 9;
            }
            return Some(&s[start..end]);
        }
        from = start + 1;
    }
    None
}

/// Whether `name` is exactly a name WAL-G's pattern recognises.
pub fn is_walg_name(name: &str) -> bool {
    find_backup_name(name) == Some(name)
}

/// The first run of 24 upper-case hex digits in `s` (Go's first `[0-9A-F]{24}` match).
pub fn first_hex24(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut run = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if is_upper_hex(b) {
            run += 1;
            if run == 24 {
                return Some(&s[i + 1 - 24..=i]);
            }
        } else {
            run = 0;
        }
    }
    None
}

/// Timeline and segment number of the first 24-hex run of `s`, or `None` when there is no
/// run or it is not a valid segment name for `segment_size` (WAL-G's
/// `TryFetchTimelineAndLogSegNo`).
pub fn first_segment(s: &str, segment_size: u64) -> Option<Segment> {
    Segment::parse(first_hex24(s)?, segment_size)
}

/// `s` up to its first `_backup` (WAL-G's rule for a backup name from a key or file name).
pub fn strip_backup_suffix(s: &str) -> &str {
    s.find("_backup").map_or(s, |i| &s[..i])
}

/// The sentinel's file name for backup `name` (relative to `basebackups_005/`).
pub fn sentinel_file_name(name: &str) -> String {
    format!("{name}{SENTINEL_SUFFIX}")
}

/// The backup name of a sentinel file name or key (the last path component is used); `None`
/// when it is not a sentinel.
pub fn name_from_sentinel(key: &str) -> Option<&str> {
    let file = key.rsplit('/').next().unwrap_or(key);
    if !file.ends_with(SENTINEL_SUFFIX) {
        return None;
    }
    Some(strip_backup_suffix(file))
}

/// The backup that owns an object below `basebackups_005/`, given its path relative to that
/// folder: the first path component cut at `_backup` (WAL-G's `StripLeftmostBackupName`).
pub fn owner_of(path_in_backup_folder: &str) -> &str {
    let trimmed = path_in_backup_folder.trim_matches('/');
    let first = trimmed.split('/').next().unwrap_or(trimmed);
    strip_backup_suffix(first)
}

/// Whether `name` can name a backup: non-empty, no `/`, no `_backup` (which would make the
/// sentinel key ambiguous), no `.`/`..`.
pub fn is_usable_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains("_backup")
        && !name.bytes().any(|b| b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    const SEG16: u64 = 16 << 20;

    #[test]
    fn names_from_segments() {
        let s = Segment {
            timeline: 1,
            segno: 3,
        };
        assert_eq!(full_name(s, SEG16), "base_000000010000000000000003");
        let d = delta_name(
            Segment {
                timeline: 1,
                segno: 9,
            },
            SEG16,
            "base_000000010000000000000007_D_000000010000000000000003",
        );
        assert_eq!(
            d.as_deref(),
            Some("base_000000010000000000000009_D_000000010000000000000007")
        );
        assert_eq!(delta_name(s, SEG16, "base_nothing"), None);
    }

    #[test]
    fn recogniser_like_go_regexp() {
        let full = "base_000000010000000000000003";
        let delta = "base_000000010000000000000007_D_000000010000000000000003";
        let wale = "base_000000010000000000000003_00000028";
        assert_eq!(find_backup_name(full), Some(full));
        assert_eq!(
            find_backup_name(&format!("{delta}_backup_stop_sentinel.json")),
            Some(delta)
        );
        assert_eq!(
            find_backup_name(&format!(
                "basebackups_005/{wale}/tar_partitions/part_1.tar.lz4"
            )),
            Some(wale)
        );
        // Leftmost start wins; lower case is not hex here.
        assert_eq!(
            find_backup_name("database_base_00000001000000000000000A"),
            Some("base_00000001000000000000000A")
        );
        assert_eq!(find_backup_name("base_00000001000000000000000a"), None);
        // An incomplete delta part is left out, the 8-hex suffix may still match.
        assert_eq!(
            find_backup_name("base_000000010000000000000003_D_0000"),
            Some(full)
        );
        assert_eq!(
            find_backup_name("base_000000010000000000000003_DEADBEEF"),
            Some("base_000000010000000000000003_DEADBEEF")
        );
        assert_eq!(
            find_backup_name("wal_005/000000010000000000000003.lz4"),
            None
        );
        assert!(is_walg_name(delta));
        assert!(!is_walg_name("base_000000010000000000000003x"));
    }

    #[test]
    fn first_run() {
        assert_eq!(
            first_hex24("wal_005/000000010000000000000003.lz4"),
            Some("000000010000000000000003")
        );
        // A longer run yields its first 24 digits.
        assert_eq!(
            first_hex24("x0000000100000000000000031"),
            Some("000000010000000000000003")
        );
        assert_eq!(first_hex24("wal_005/00000002.history.lz4"), None);
        assert_eq!(
            first_segment(
                "basebackups_005/base_000000020000000100000005/metadata.json",
                SEG16
            ),
            Some(Segment {
                timeline: 2,
                segno: 0x105
            })
        );
        // Out of range last field: not a segment, so not "older" than anything.
        assert_eq!(
            first_segment("wal_005/000000010000000000000100.lz4", SEG16),
            None
        );
    }

    #[test]
    fn sentinel_keys() {
        assert_eq!(
            sentinel_file_name("base_000000010000000000000003"),
            "base_000000010000000000000003_backup_stop_sentinel.json"
        );
        assert_eq!(
            name_from_sentinel(
                "basebackups_005/base_000000010000000000000003_backup_stop_sentinel.json"
            ),
            Some("base_000000010000000000000003")
        );
        assert_eq!(
            name_from_sentinel("basebackups_005/base_000000010000000000000003/metadata.json"),
            None
        );
        assert_eq!(
            owner_of("base_000000010000000000000003_backup_stop_sentinel.json"),
            "base_000000010000000000000003"
        );
        assert_eq!(
            owner_of("/base_000000010000000000000003/tar_partitions/part_001.tar.lz4"),
            "base_000000010000000000000003"
        );
        assert!(is_usable_name("base_000000010000000000000003"));
        assert!(!is_usable_name("my_backup_1"));
        assert!(!is_usable_name("a/b"));
    }
}

//! Pieces of WAL-G's reports that more than one command prints: the box table WAL-G draws
//! with go-pretty (v4.3.0 in WAL-G v3.0.8) and a backup as `backup-list --detail --json`
//! shows it, which `wal-show --detailed-json` embeds. One copy each, so the commands cannot
//! drift apart from WAL-G separately.

use crate::format::backup_name;
use crate::format::go_json::ObjectWriter;
use crate::format::metadata::ExtendedMetadata;
use crate::repo::backups::BackupRef;

/// WAL-G's name for the only storage wal-rus has (it names failover storages otherwise).
pub const STORAGE_NAME: &str = "default";

/// What WAL-G shows as the WAL file name of a sentinel key without a 24-hex run.
const NO_WAL_FILE: &str = "ZZZZZZZZZZZZZZZZZZZZZZZZ";

/// A backup's "WAL file name": the first 24-hex run of its sentinel's file name.
pub fn wal_file_name(b: &BackupRef) -> &str {
    let file = b.sentinel_key.rsplit('/').next().unwrap_or(&b.sentinel_key);
    backup_name::first_hex24(file).unwrap_or(NO_WAL_FILE)
}

/// The members every backup listing starts with: name, sentinel time, WAL file name and
/// storage.
pub fn backup_members(o: &mut ObjectWriter, b: &BackupRef) {
    o.str("backup_name", &b.name)
        .str("time", &b.modified.to_rfc3339_utc())
        .str("wal_file_name", wal_file_name(b))
        .str("storage_name", STORAGE_NAME);
}

/// A backup with its `metadata.json`, as one JSON object.
pub fn backup_detail_json(b: &BackupRef, m: &ExtendedMetadata) -> String {
    let mut o = ObjectWriter::new();
    backup_members(&mut o, b);
    m.write_members(&mut o);
    o.finish()
}

/// Width of a cell as go-pretty counts it (runes).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// A table as go-pretty v4.3.0 renders it in its default style, with a newline after the
/// last line. Headers are upper-cased. A column is right-aligned, header included, when
/// every value in it was a Go number (`numeric` lists those columns); otherwise cells are
/// left-aligned. Cells lose the padding spaces on the side they are aligned to, as
/// go-pretty trims them.
pub fn box_table(header: &[&str], rows: &[Vec<String>], numeric: &[usize]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let mut rule = String::from("+");
    for w in &widths {
        rule.push_str(&"-".repeat(w + 2));
        rule.push('+');
    }
    rule.push('\n');
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let (cell, right) = if numeric.contains(&i) {
                (cell.trim_start_matches(' '), true)
            } else {
                (cell.trim_end_matches(' '), false)
            };
            let pad = " ".repeat(widths[i].saturating_sub(width(cell)));
            if right {
                s.push_str(&format!(" {pad}{cell} |"));
            } else {
                s.push_str(&format!(" {cell}{pad} |"));
            }
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(&header));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_pretty_default_style() {
        let rows = vec![
            vec!["1".to_string(), "abc".to_string(), "FOUND".to_string()],
            vec![
                "12".to_string(),
                "a".to_string(),
                "MISSING_LOST".to_string(),
            ],
        ];
        // Numeric columns right-align their header too (WAL-G's status enums are numbers).
        assert_eq!(
            box_table(&["tli", "Start", "S"], &rows, &[0, 2]),
            "+-----+-------+--------------+\n\
             | TLI | START |            S |\n\
             +-----+-------+--------------+\n\
             |   1 | abc   |        FOUND |\n\
             |  12 | a     | MISSING_LOST |\n\
             +-----+-------+--------------+\n"
        );
        let ten: Vec<Vec<String>> = (0..11).map(|i| vec![i.to_string()]).collect();
        assert!(box_table(&["#"], &ten, &[0]).contains("\n|  # |\n"));
        assert_eq!(
            box_table(&["A", "B"], &[], &[]),
            "+---+---+\n| A | B |\n+---+---+\n+---+---+\n"
        );
    }
}

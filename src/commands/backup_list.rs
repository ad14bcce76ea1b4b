//! `backup-list [--json] [--pretty] [--detail]` (walg-compat §10.1).
//!
//! Scripts written for WAL-G parse this output, so the plain table, the JSON members and
//! their order follow WAL-G: tabwriter-style padding, machine column names, sentinel times
//! as RFC 3339, and with `--detail` the members of each backup's `metadata.json`. The
//! `--pretty` table is go-pretty's default box style as WAL-G v3.0.8 draws it (master's
//! newer go-pretty may differ in cosmetic details; scripts should use `--json`).
//!
//! Memory: one record per backup (plus its metadata with `--detail`); output is written as it
//! is formatted.

use super::report::{
    STORAGE_NAME, backup_detail_json, backup_members, box_table, wal_file_name, width,
};
use crate::config::Settings;
use crate::error::Error;
use crate::format::go_json::{self, ObjectWriter, PreciseTime};
use crate::format::metadata::ExtendedMetadata;
use crate::repo::backups::{self, BackupRef};
use crate::time::UtcTime;

/// What `backup-list` is asked to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// JSON instead of the table.
    pub json: bool,
    /// Also read each backup's metadata.json.
    pub detail: bool,
    /// A table for people (with `json`: indented).
    pub pretty: bool,
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let storage = settings.open_storage()?;
    let list = backups::list_backups(storage.as_ref())?;
    if list.is_empty() {
        crate::info!("No backups found");
    }
    let text = if args.detail {
        let mut rows = Vec::with_capacity(list.len());
        for b in list {
            let meta = backups::read_metadata(storage.as_ref(), &b.name)?.ok_or_else(|| {
                Error::backup_missing(format!(
                    "metadata.json of backup '{}' does not exist; backup-list --detail needs it",
                    b.name
                ))
            })?;
            rows.push((b, meta));
        }
        sort_by_start_time(&mut rows);
        render_detail(&rows, args.json, args.pretty)
    } else {
        render(&list, args.json, args.pretty)
    };
    super::write_stdout(&text).map_err(|e| Error::io("writing the backup list to stdout", e))
}

/// Orders detailed rows by `start_time`, unless any backup lacks one; then the listing's
/// (sentinel time) order stays, as in WAL-G.
fn sort_by_start_time(rows: &mut [(BackupRef, ExtendedMetadata)]) {
    if rows.iter().all(|(_, m)| m.start_time_parsed().is_some()) {
        rows.sort_by_key(|(_, m)| m.start_time_parsed());
    }
}

/// Go's `time.RFC850` layout in UTC: `Monday, 02-Jan-06 15:04:05 UTC`.
pub fn rfc850(t: UtcTime) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // The date fields come from the RFC 3339 text so the calendar arithmetic lives in one place.
    let iso = t.rfc3339();
    let year = &iso[2..4];
    let month: usize = iso[5..7].parse().unwrap_or(1);
    let day = &iso[8..10];
    let clock = &iso[11..19];
    let weekday = DAYS[t.0.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {day}-{}-{year} {clock} UTC",
        MONTHS[month.clamp(1, 12) - 1]
    )
}

/// A stored time as RFC 3339 without fraction; unparseable text is shown as stored.
fn whole_seconds(text: &str) -> String {
    PreciseTime::parse(text).map_or_else(|| text.to_string(), |t| t.utc_seconds().rfc3339())
}

/// A stored time in RFC 850 (pretty tables).
fn pretty_time(text: &str) -> String {
    PreciseTime::parse(text).map_or_else(|| text.to_string(), |t| rfc850(t.utc_seconds()))
}

fn json_array(items: impl Iterator<Item = String>, pretty: bool) -> String {
    let items: Vec<String> = items.collect();
    let compact = format!("[{}]", items.join(","));
    let mut text = if pretty {
        go_json::indent(&compact, "    ")
    } else {
        compact
    };
    text.push('\n');
    text
}

/// The pretty table's columns of every listing.
const PRETTY_COLUMNS: [&str; 5] = [
    "#",
    "BACKUP NAME",
    "MODIFIED",
    "WAL FILE NAME",
    "STORAGE NAME",
];

/// The plain table's columns of every listing.
const PLAIN_COLUMNS: [&str; 4] = ["backup_name", "modified", "wal_file_name", "storage_name"];

/// The pretty table's further columns with `--detail`.
const PRETTY_DETAIL_COLUMNS: [&str; 8] = [
    "START TIME",
    "FINISH TIME",
    "HOSTNAME",
    "DATADIR",
    "PG VERSION",
    "START LSN",
    "FINISH LSN",
    "PERMANENT",
];

/// The plain table's further columns with `--detail`.
const PLAIN_DETAIL_COLUMNS: [&str; 8] = [
    "start_time",
    "finish_time",
    "hostname",
    "data_dir",
    "pg_version",
    "start_lsn",
    "finish_lsn",
    "is_permanent",
];

/// The pretty table's cells of row `i` for the columns of every listing.
fn pretty_cells(i: usize, b: &BackupRef) -> Vec<String> {
    vec![
        i.to_string(),
        b.name.clone(),
        rfc850(b.modified.utc_seconds()),
        wal_file_name(b).to_string(),
        STORAGE_NAME.into(),
    ]
}

/// The plain table's cells for the columns of every listing.
fn plain_cells(b: &BackupRef) -> Vec<String> {
    vec![
        b.name.clone(),
        // Go's time.RFC3339: whole seconds.
        b.modified.utc_seconds().rfc3339(),
        wal_file_name(b).to_string(),
        STORAGE_NAME.into(),
    ]
}

/// The `--detail` cells from `metadata.json`, its stored times shown by `time`.
fn detail_cells(m: &ExtendedMetadata, time: fn(&str) -> String) -> [String; 8] {
    [
        time(&m.start_time),
        time(&m.finish_time),
        m.hostname.clone(),
        m.data_dir.clone(),
        m.pg_version.to_string(),
        m.start_lsn.to_string(),
        m.finish_lsn.to_string(),
        m.is_permanent.to_string(),
    ]
}

/// A table's header row of `columns`.
fn header_row<'a>(columns: impl IntoIterator<Item = &'a &'a str>) -> Vec<String> {
    columns.into_iter().map(|c| c.to_string()).collect()
}

/// The output without `--detail`.
pub fn render(list: &[BackupRef], json: bool, pretty: bool) -> String {
    if json {
        return json_array(
            list.iter().map(|b| {
                let mut o = ObjectWriter::new();
                backup_members(&mut o, b);
                o.finish()
            }),
            pretty,
        );
    }
    if list.is_empty() {
        return String::new();
    }
    if pretty {
        let rows: Vec<Vec<String>> = list
            .iter()
            .enumerate()
            .map(|(i, b)| pretty_cells(i, b))
            .collect();
        return box_table(&PRETTY_COLUMNS, &rows, &[0]);
    }
    let mut rows = vec![header_row(&PLAIN_COLUMNS)];
    rows.extend(list.iter().map(plain_cells));
    tab_table(&rows)
}

/// The output with `--detail`.
pub fn render_detail(rows: &[(BackupRef, ExtendedMetadata)], json: bool, pretty: bool) -> String {
    if json {
        return json_array(rows.iter().map(|(b, m)| backup_detail_json(b, m)), pretty);
    }
    if rows.is_empty() {
        return String::new();
    }
    if pretty {
        let header: Vec<&str> = PRETTY_COLUMNS
            .iter()
            .chain(&PRETTY_DETAIL_COLUMNS)
            .copied()
            .collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .enumerate()
            .map(|(i, (b, m))| {
                let mut row = pretty_cells(i, b);
                row.extend(detail_cells(m, pretty_time));
                row
            })
            .collect();
        // Only `#` is a number to go-pretty: WAL-G hands it every other cell as text.
        return box_table(&header, &cells, &[0]);
    }
    let mut table = vec![header_row(
        PLAIN_COLUMNS.iter().chain(&PLAIN_DETAIL_COLUMNS),
    )];
    table.extend(rows.iter().map(|(b, m)| {
        let mut row = plain_cells(b);
        row.extend(detail_cells(m, whole_seconds));
        row
    }));
    tab_table(&table)
}

/// Go's `tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)`: every cell but the last of a line is
/// padded with spaces to the column's widest cell plus one.
pub fn tab_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] - width(cell) + 1));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::lsn::Lsn;

    fn refs() -> Vec<BackupRef> {
        [
            "base_000000010000000000000003",
            "base_000000010000000000000007_D_000000010000000000000003",
        ]
        .iter()
        .zip([1_714_557_608i64, 1_714_644_004])
        .map(|(n, t)| BackupRef {
            name: n.to_string(),
            sentinel_key: format!("basebackups_005/{n}_backup_stop_sentinel.json"),
            modified: crate::time::PreciseTime::from_utc(UtcTime(t)),
        })
        .collect()
    }

    #[test]
    fn plain_like_walg() {
        assert_eq!(
            render(&refs(), false, false),
            "backup_name                                              modified             wal_file_name            storage_name\n\
             base_000000010000000000000003                            2024-05-01T10:00:08Z 000000010000000000000003 default\n\
             base_000000010000000000000007_D_000000010000000000000003 2024-05-02T10:00:04Z 000000010000000000000007 default\n"
        );
        assert_eq!(render(&[], false, false), "");
        assert_eq!(render(&[], true, false), "[]\n");
    }

    #[test]
    fn json_forms() {
        let one = &refs()[..1];
        assert_eq!(
            render(one, true, false),
            "[{\"backup_name\":\"base_000000010000000000000003\",\"time\":\"2024-05-01T10:00:08Z\",\"wal_file_name\":\"000000010000000000000003\",\"storage_name\":\"default\"}]\n"
        );
        assert!(render(one, true, true).starts_with(
            "[\n    {\n        \"backup_name\": \"base_000000010000000000000003\",\n"
        ));
        let meta = ExtendedMetadata {
            start_lsn: Lsn(50_331_688),
            hostname: "db1".into(),
            ..Default::default()
        };
        let detail = render_detail(&[(one[0].clone(), meta)], true, false);
        assert!(
            detail.contains(r#""storage_name":"default","start_time":"0001-01-01T00:00:00Z","#),
            "{detail}"
        );
        assert!(detail.contains(r#""start_lsn":50331688,"#), "{detail}");
    }

    #[test]
    fn detail_and_pretty() {
        let meta = |start: &str, perm: bool| ExtendedMetadata {
            start_time: start.into(),
            finish_time: "2024-05-01T10:00:07.654321Z".into(),
            hostname: "db1".into(),
            data_dir: "/d".into(),
            pg_version: 160_002,
            start_lsn: Lsn(50_331_688),
            finish_lsn: Lsn(50_331_904),
            is_permanent: perm,
            ..Default::default()
        };
        let r = refs();
        let mut rows = vec![
            (r[0].clone(), meta("2024-05-02T10:00:00.5Z", false)),
            (r[1].clone(), meta("2024-05-01T10:00:00.123456Z", true)),
        ];
        sort_by_start_time(&mut rows);
        assert_eq!(rows[0].0.name, r[1].name);
        let text = render_detail(&rows, false, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("backup_name "), "{text}");
        assert!(
            lines[0].ends_with(" start_lsn finish_lsn is_permanent"),
            "{text}"
        );
        assert!(lines[1].ends_with(" 2024-05-01T10:00:00Z 2024-05-01T10:00:07Z db1      /d       160002     0/3000028 0/3000100  true"), "{text}");
        // A backup without a start time keeps the sentinel order.
        let mut unsorted = vec![
            (r[0].clone(), meta("", false)),
            (r[1].clone(), meta("2024-01-01T00:00:00Z", false)),
        ];
        sort_by_start_time(&mut unsorted);
        assert_eq!(unsorted[0].0.name, r[0].name);

        let pretty = render(&r, false, true);
        let plines: Vec<&str> = pretty.lines().collect();
        assert_eq!(plines.len(), 6);
        assert_eq!(
            plines[1],
            "| # | BACKUP NAME                                              | MODIFIED                          | WAL FILE NAME            | STORAGE NAME |"
        );
        assert_eq!(
            plines[3],
            "| 0 | base_000000010000000000000003                            | Wednesday, 01-May-24 10:00:08 UTC | 000000010000000000000003 | default      |"
        );
        assert!(plines[0].starts_with("+---+---") && plines[5] == plines[0]);
        assert!(render_detail(&rows, false, true).contains("| PERMANENT |"));
    }

    #[test]
    fn rfc850_days() {
        assert_eq!(rfc850(UtcTime(0)), "Thursday, 01-Jan-70 00:00:00 UTC");
        assert_eq!(
            rfc850(UtcTime(951_782_400)),
            "Tuesday, 29-Feb-00 00:00:00 UTC"
        );
    }
}

//! `wal-show [--detailed-json] [--without-backups]` (walg-compat §10.4): the archive's WAL
//! by timeline: the range of segments stored, the gaps in it, where each timeline branched
//! off its parent, and which backups lie within it.
//!
//! The report is WAL-G's: the JSON byte for byte (with each backup as `backup-list --detail
//! --json` shows it, no newline after the array) and the plain form as WAL-G's go-pretty
//! table. Reading every backup's `metadata.json` is required unless `--without-backups`, as
//! in WAL-G.
//!
//! Memory: one entry per stored segment and per missing segment inside a timeline's range
//! (the report lists each of those), and one record per backup.

use super::report::{backup_detail_json, box_table, wal_file_name};
use crate::config::Settings;
use crate::error::Error;
use crate::format::go_json::{ObjectWriter, push_str};
use crate::format::lsn::Lsn;
use crate::format::metadata::ExtendedMetadata;
use crate::format::wal_name::Segment;
use crate::repo::backups::{self, BackupRef};
use crate::repo::wal_inventory;
use crate::storage::Storage;
use std::collections::BTreeMap;

/// What `wal-show` is asked to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// JSON instead of the table.
    pub detailed_json: bool,
    /// Leave the backups out (and do not read them).
    pub without_backups: bool,
}

/// One timeline of the archive.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Its id.
    pub id: u32,
    /// The timeline it branched from (0 without a history file).
    pub parent: u32,
    /// Where it branched (0 without a history file).
    pub switch_lsn: Lsn,
    /// Its lowest stored segment number.
    pub first: u64,
    /// Its highest stored segment number.
    pub last: u64,
    /// How many of its segments are stored.
    pub count: u64,
    /// The segment numbers missing between `first` and `last`, highest first.
    pub missing: Vec<u64>,
    /// The backups that start and end within its range.
    pub backups: Vec<(BackupRef, ExtendedMetadata)>,
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let storage = settings.open_storage()?;
    let mut timelines = timelines(settings, storage.as_ref())?;
    if !args.without_backups {
        add_backups(storage.as_ref(), &mut timelines, settings.wal_segment_size)?;
    }
    let size = settings.wal_segment_size;
    let text = if args.detailed_json {
        render_json(&timelines, size)
    } else {
        render_table(&timelines, !args.without_backups, size)
    };
    super::write_stdout(&text).map_err(|e| Error::io("writing the report to stdout", e))
}

/// The archive's timelines, by id, without their backups.
pub fn timelines(settings: &Settings, storage: &dyn Storage) -> Result<Vec<Timeline>, Error> {
    let size = settings.wal_segment_size;
    let names = wal_inventory::list_names(storage)?;
    let mut by_timeline: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for seg in wal_inventory::present_segments(&names, size) {
        by_timeline.entry(seg.timeline).or_default().push(seg.segno);
    }
    let mut out = Vec::with_capacity(by_timeline.len());
    for (id, segnos) in by_timeline {
        let method = settings.encode.method;
        let history = wal_inventory::read_history(storage, &settings.crypter, method, id)?;
        let last_record = history.unwrap_or_default().last().copied();
        // Sorted, as they come from the set.
        let (first, last) = (segnos[0], segnos[segnos.len() - 1]);
        let mut missing = Vec::new();
        let mut stored = segnos.iter().rev().peekable();
        for segno in (first..=last).rev() {
            if stored.next_if_eq(&&segno).is_none() {
                missing.push(segno);
            }
        }
        out.push(Timeline {
            id,
            parent: last_record.map_or(0, |r| r.timeline),
            switch_lsn: last_record.map_or(Lsn(0), |r| r.switch_lsn),
            first,
            last,
            count: segnos.len() as u64,
            missing,
            backups: Vec::new(),
        });
    }
    Ok(out)
}

/// Puts each backup into the timelines whose range holds its start and end segment. Every
/// backup's `metadata.json` must be readable.
pub fn add_backups(
    storage: &dyn Storage,
    timelines: &mut [Timeline],
    segment_size: u64,
) -> Result<(), Error> {
    let mut list = backups::list_backups(storage)?;
    if list.is_empty() {
        crate::info!("there are no backups in storage");
        return Ok(());
    }
    // WAL-G reads them in the reverse of its listing's (key) order, and keeps that order.
    list.sort_by(|a, b| b.sentinel_key.cmp(&a.sentinel_key));
    let mut detailed = Vec::with_capacity(list.len());
    for b in list {
        let meta = backups::read_metadata(storage, &b.name)?.ok_or_else(|| {
            Error::backup_missing(format!(
                "metadata.json of backup '{}' does not exist; wal-show needs it (or --without-backups)",
                b.name
            ))
        })?;
        detailed.push((b, meta));
    }
    for t in timelines.iter_mut() {
        let first = name(t.id, t.first, segment_size);
        let last = name(t.id, t.last, segment_size);
        for (b, m) in &detailed {
            let file = wal_file_name(b);
            let tli = wal_inventory::parse_name(file, segment_size)
                .ok_or_else(|| {
                    Error::Precondition(format!(
                        "backup '{}': '{file}' is not a WAL file name",
                        b.name
                    ))
                })?
                .timeline;
            // WAL-G compares the names, as text.
            let start = name(tli, m.start_lsn.segno(segment_size), segment_size);
            let end = name(tli, m.finish_lsn.segno(segment_size), segment_size);
            if tli == t.id && start >= first && end <= last {
                t.backups.push((b.clone(), m.clone()));
            }
        }
    }
    Ok(())
}

fn name(timeline: u32, segno: u64, segment_size: u64) -> String {
    Segment { timeline, segno }.name(segment_size)
}

/// WAL-G's status of a timeline.
fn status(t: &Timeline) -> &'static str {
    if t.missing.is_empty() {
        "OK"
    } else {
        "LOST_SEGMENTS"
    }
}

/// The JSON array, compact, without a newline after it.
pub fn render_json(timelines: &[Timeline], segment_size: u64) -> String {
    let items: Vec<String> = timelines
        .iter()
        .map(|t| {
            let mut missing = String::from("[");
            for (i, segno) in t.missing.iter().enumerate() {
                if i > 0 {
                    missing.push(',');
                }
                push_str(&mut missing, &name(t.id, *segno, segment_size));
            }
            missing.push(']');
            let mut o = ObjectWriter::new();
            o.u64("id", u64::from(t.id))
                .u64("parent_id", u64::from(t.parent))
                .u64("switch_point_lsn", t.switch_lsn.0)
                .str("start_segment", &name(t.id, t.first, segment_size))
                .str("end_segment", &name(t.id, t.last, segment_size))
                .u64("segments_count", t.count)
                .raw("missing_segments", &missing);
            if !t.backups.is_empty() {
                let backups: Vec<String> = t
                    .backups
                    .iter()
                    .map(|(b, m)| backup_detail_json(b, m))
                    .collect();
                o.raw("backups", &format!("[{}]", backups.join(",")));
            }
            o.u64("segment_range_size", t.last - t.first + 1)
                .str("status", status(t));
            o.finish()
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The go-pretty table, with a backup count column when backups were looked up.
pub fn render_table(timelines: &[Timeline], with_backups: bool, segment_size: u64) -> String {
    let mut header = vec![
        "TLI",
        "Parent TLI",
        "Switchpoint LSN",
        "Start segment",
        "End segment",
        "Segment range",
        "Segments count",
        "Status",
    ];
    if with_backups {
        header.push("Backups count");
    }
    let rows: Vec<Vec<String>> = timelines
        .iter()
        .map(|t| {
            let mut row = vec![
                t.id.to_string(),
                t.parent.to_string(),
                t.switch_lsn.to_string(),
                name(t.id, t.first, segment_size),
                name(t.id, t.last, segment_size),
                (t.last - t.first + 1).to_string(),
                t.count.to_string(),
                status(t).to_string(),
            ];
            if with_backups {
                row.push(t.backups.len().to_string());
            }
            row
        })
        .collect();
    // Numbers to go-pretty (the LSN too: WAL-G passes its integer type, printed as X/Y).
    box_table(&header, &rows, &[0, 1, 2, 5, 6, 8])
}

//! `wal-restore TARGET SOURCE`: WAL-G's wal-restore (`wal_restore_handler.go`), the WAL
//! pg_rewind will need, fetched before it runs.
//!
//! TARGET is the cluster to be rewound (an old primary), SOURCE the one it is rewound to (the
//! promoted standby); both are local data directories of stopped clusters. From their
//! control files (same system, different timelines) and their timeline histories, the point
//! where they part is found, as WAL-G finds it; then, walking SOURCE's timelines back from
//! the newest segment its `pg_wal` holds to that point, every segment `pg_wal` lacks (recycled
//! after a checkpoint) is fetched from the archive into SOURCE's `pg_wal`. pg_rewind copies
//! SOURCE's `pg_wal` to TARGET, whose recovery then finds there all the WAL from the parting
//! on. No server needs to run.
//!
//! Where WAL-G stops at nothing: a segment that cannot be fetched is named and the others are
//! still fetched, but the command then exits 1 (WAL-G logs it and exits 0, and pg_rewind would
//! go on without it). A SOURCE history that skips a timeline number is followed through its
//! records (WAL-G assumes consecutive numbers and crashes there).

use crate::config::Settings;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::format::pg_control::{self, PgControl};
use crate::format::timeline_history::{self, HistoryRecord};
use crate::format::wal_name::Segment;
use crate::pipeline::arena::Arena;
use crate::pipeline::plan;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Runs `wal-restore`.
pub fn run(settings: &Settings, target: &Path, source: &Path) -> Result<(), Error> {
    let size = settings.wal_segment_size;
    let tgt = read_control(target, "target")?;
    let src = read_control(source, "source")?;
    if tgt.system_identifier != src.system_identifier {
        return Err(Error::Precondition(
            "System identifiers of target and source clusters are not equal".into(),
        ));
    }
    if tgt.timeline == src.timeline {
        return Err(Error::Precondition(
            "Latest checkpoint timelines of target and source clusters are equal".into(),
        ));
    }
    let target_wal = wal_dir(target)?;
    let source_wal = wal_dir(source)?;
    let tgt_history = history(tgt.timeline, &target_wal, "target")?;
    let src_history = history(src.timeline, &source_wal, "source")?;
    let (lsn, timeline) = last_common_point(&tgt_history, &src_history)?;
    let last = Segment {
        timeline,
        segno: lsn.segno(size),
    };
    let chain = timeline_starts(&src_history, src.timeline, size);
    let present = local_segments(&source_wal, size)?;
    let missing = missing_segments(last, &chain, &present, size)?;
    if missing.is_empty() {
        crate::info!("No WAL files to restore");
        return Ok(());
    }
    crate::info!("WAL files to restore: {}", missing.join(" "));
    fetch_all(settings, &source_wal, &missing)
}

/// Fetches every file of `names` into `wal_dir`, one after another; fails at the end if any
/// could not be fetched, naming them.
fn fetch_all(settings: &Settings, wal_dir: &Path, names: &[String]) -> Result<(), Error> {
    let p = plan::wal_fetch(&settings.plan_input());
    let arena =
        Arena::new(p.arena_buffers, p.arena_buffer_bytes).with_wait_limit(settings.wait_limit());
    let storage = settings.open_storage()?;
    let mut failed = Vec::new();
    for name in names {
        let dest = wal_dir.join(name);
        let fetched = super::wal_fetch::prepare(name, &dest).and_then(|dest| {
            super::wal_fetch::download_to(settings, storage.as_ref(), &arena, name, &dest)
        });
        match fetched {
            Ok(()) => crate::info!("Successfully download WAL file {name}"),
            Err(e) => {
                crate::error!("Failed to download WAL file {name}: {e}");
                failed.push(name.as_str());
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Precondition(format!(
        "{} of {} WAL files pg_rewind needs could not be restored: {}",
        failed.len(),
        names.len(),
        failed.join(" ")
    )))
}

/// The control file of the cluster in `pgdata`.
fn read_control(pgdata: &Path, which: &str) -> Result<PgControl, Error> {
    let path = pgdata.join(pg_control::PATH);
    let context = || {
        format!(
            "Failed to get pg data on {which} cluster: {}",
            path.display()
        )
    };
    let bytes = fs::read(&path).map_err(|e| Error::io(context(), e))?;
    pg_control::parse(&bytes).ok_or_else(|| {
        Error::Precondition(format!(
            "{}: {} bytes, a control file has {}",
            context(),
            bytes.len(),
            pg_control::SIZE
        ))
    })
}

/// `pg_wal` (or `pg_xlog` before PostgreSQL 10) of `pgdata`.
fn wal_dir(pgdata: &Path) -> Result<PathBuf, Error> {
    ["pg_wal", "pg_xlog"]
        .iter()
        .map(|d| pgdata.join(d))
        .find(|d| d.exists())
        .ok_or_else(|| {
            Error::Precondition(format!(
                "directory for WAL files doesn't exist in {}",
                pgdata.display()
            ))
        })
}

/// The history of `timeline` from its `.history` file in `wal_dir` (none for timeline 1).
fn history(timeline: u32, wal_dir: &Path, which: &str) -> Result<Vec<HistoryRecord>, Error> {
    if timeline == 1 {
        return Ok(Vec::new());
    }
    let path = wal_dir.join(format!("{timeline:08X}.history"));
    let context = format!("Failed to get history data on {which} cluster");
    let text =
        fs::read(&path).map_err(|e| Error::io(format!("{context}: {}", path.display()), e))?;
    timeline_history::parse(&text)
        .map_err(|e| Error::Precondition(format!("{context}: {}: {e}", path.display())))
}

/// WAL-G's `FindLastCommonPoint`: where the two histories part, comparing their records
/// in order. The LSN of the first record where they differ (the smaller one) on the target's
/// timeline, else the last equal record's; with no record on one side, the other's first.
pub fn last_common_point(
    target: &[HistoryRecord],
    source: &[HistoryRecord],
) -> Result<(Lsn, u32), Error> {
    if target.len() == source.len() {
        return Err(Error::Precondition(
            "Failed to find last common point: two clusters on the same timeline".into(),
        ));
    }
    let (mut lsn, mut timeline) = (Lsn(1), 1);
    if let Some(first) = source.first().filter(|_| target.is_empty()) {
        (lsn, timeline) = (first.switch_lsn, first.timeline);
    }
    if let Some(first) = target.first().filter(|_| source.is_empty()) {
        (lsn, timeline) = (first.switch_lsn, first.timeline);
    }
    for (t, s) in target.iter().zip(source) {
        if t.switch_lsn == s.switch_lsn {
            (lsn, timeline) = (t.switch_lsn, t.timeline);
        } else {
            (lsn, timeline) = (t.switch_lsn.min(s.switch_lsn), t.timeline);
            break;
        }
    }
    Ok((lsn, timeline))
}

/// SOURCE's timelines, newest first, each with the number of its first segment: a timeline
/// begins in the segment where its parent's record says the parent ends; the first one at
/// segment 1, as WAL-G counts it.
pub fn timeline_starts(history: &[HistoryRecord], current: u32, size: u64) -> Vec<(u32, u64)> {
    let mut chain = Vec::with_capacity(history.len() + 1);
    let mut start_of_next = current;
    for r in history.iter().rev() {
        chain.push((start_of_next, r.switch_lsn.segno(size)));
        start_of_next = r.timeline;
    }
    chain.push((start_of_next, 1));
    chain
}

/// The segments in `wal_dir`, by the names of its files without their last extension (as
/// WAL-G counts them: a `.partial` file stands for its segment).
fn local_segments(wal_dir: &Path, size: u64) -> Result<BTreeSet<Segment>, Error> {
    let entries = fs::read_dir(wal_dir).map_err(|e| {
        Error::io(
            format!("Failed to get WAL filenames: {}", wal_dir.display()),
            e,
        )
    })?;
    let mut out = BTreeSet::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let base = name.rsplit_once('.').map_or(name.as_str(), |(b, _)| b);
        if let Some(seg) = Segment::parse(base, size) {
            out.insert(seg);
        }
    }
    Ok(out)
}

/// WAL-G's `GetMissingWals`: from the newest segment of the current timeline in `present`
/// back to `last`, timeline by timeline down `chain` (newest first, each with its first
/// segment), the names of the segments `present` lacks, newest first.
pub fn missing_segments(
    last: Segment,
    chain: &[(u32, u64)],
    present: &BTreeSet<Segment>,
    size: u64,
) -> Result<Vec<String>, Error> {
    let Some(&(current, _)) = chain.first() else {
        return Ok(Vec::new());
    };
    let mut segno = present
        .iter()
        .filter(|s| s.timeline == current)
        .map(|s| s.segno)
        .max()
        .ok_or_else(|| {
            Error::Precondition(format!(
                "the source's pg_wal holds no segment of its timeline {current}"
            ))
        })?;
    let mut missing = Vec::new();
    for &(timeline, first) in chain {
        if timeline < last.timeline {
            break;
        }
        while segno >= first {
            let seg = Segment { timeline, segno };
            if !present.contains(&seg) {
                missing.push(seg.name(size));
            }
            if segno == last.segno || segno == 0 {
                return Ok(missing);
            }
            segno -= 1;
        }
    }
    Ok(missing)
}

#[cfg(test)]
#[path = "wal_restore_tests.rs"]
mod tests;

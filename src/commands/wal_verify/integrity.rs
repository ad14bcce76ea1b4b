//! `wal-verify integrity` (walg-compat §10.3): walk back from the cluster's current segment
//! to the start of the earliest usable backup, across the timeline switches of the current
//! timeline's history file, and say which segments are stored and which are missing.
//!
//! Missing segments are judged by where they are met, as WAL-G judges them: before the
//! newest stored segment up to `WALG_INTEGRITY_MAX_DELAYED_WALS` are probably delayed, the
//! next `WALG_UPLOAD_CONCURRENCY` probably still uploading, everything older lost. WAL-G
//! keeps every segment it passes in memory; here runs of one status are kept instead, and a
//! gap with nothing stored in it is crossed in one step, so a scan from segment 1 to a
//! distant current segment costs neither memory nor time.

use crate::error::Error;
use crate::format::timeline_history::HistoryRecord;
use crate::format::wal_name::Segment;
use crate::repo::backups::{self, BackupRef};
use crate::repo::wal_inventory;
use crate::storage::Storage;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What one scanned segment turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Missing where it should long be stored.
    Lost,
    /// Missing, but within the window uploads may still be running in.
    Uploading,
    /// Missing, newer than the newest stored segment.
    Delayed,
    /// Stored.
    Found,
}

impl SegmentStatus {
    /// WAL-G's word for it.
    pub fn word(self) -> &'static str {
        match self {
            SegmentStatus::Lost => "MISSING_LOST",
            SegmentStatus::Uploading => "MISSING_UPLOADING",
            SegmentStatus::Delayed => "MISSING_DELAYED",
            SegmentStatus::Found => "FOUND",
        }
    }
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Nothing wrong.
    Ok,
    /// Something may be wrong, or may yet right itself.
    Warning,
    /// Something is wrong.
    Failure,
}

impl Status {
    /// WAL-G's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Failure => "FAILURE",
        }
    }
}

/// Consecutive segments of one timeline with one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// Their timeline.
    pub timeline: u32,
    /// The lowest segment number.
    pub first: u64,
    /// The highest segment number.
    pub last: u64,
    /// Their status.
    pub status: SegmentStatus,
}

/// The check's result: its verdict and the sequences, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The verdict.
    pub status: Status,
    /// What the scan met, oldest first.
    pub sequences: Vec<Sequence>,
}

/// Where the scan begins and ends, and what it needs to know on the way.
pub struct Plan<'a> {
    /// The cluster's current segment (not itself checked: it is still being written).
    pub current: Segment,
    /// The last segment checked.
    pub stop: u64,
    /// Whether `stop` is segment 1 for want of a usable backup.
    pub no_backups: bool,
    /// The segments stored.
    pub present: &'a BTreeSet<Segment>,
    /// Segment numbers where the scan moves to another timeline, and to which.
    pub switches: &'a BTreeMap<u64, u32>,
    /// `WALG_INTEGRITY_MAX_DELAYED_WALS`.
    pub delayed_window: u64,
    /// `WALG_UPLOAD_CONCURRENCY`.
    pub uploading_window: u64,
}

/// The walk backwards, keeping runs of one status (newest first).
struct Walk<'a> {
    plan: &'a Plan<'a>,
    at: Segment,
    runs: Vec<Sequence>,
}

impl Walk<'_> {
    /// Steps to the previous segment, switching timeline where the history says the current
    /// one began; `None` at the stop segment.
    fn step(&mut self) -> Option<(Segment, bool)> {
        if self.at.segno <= self.plan.stop {
            return None;
        }
        let timeline = match self.plan.switches.get(&self.at.segno) {
            Some(&parent) => parent,
            None => self.at.timeline,
        };
        self.at = Segment {
            timeline,
            segno: self.at.segno - 1,
        };
        Some((self.at, self.plan.present.contains(&self.at)))
    }

    fn record(&mut self, seg: Segment, status: SegmentStatus, count: u64) {
        if let Some(run) = self.runs.last_mut()
            && run.timeline == seg.timeline
            && run.status == status
        {
            run.first = seg.segno;
            return;
        }
        self.runs.push(Sequence {
            timeline: seg.timeline,
            first: seg.segno,
            last: seg.segno + count - 1,
            status,
        });
    }

    /// How many segments below the current one are certainly missing and on its timeline:
    /// down to the stop segment, the segment above the next stored one, or the next switch.
    fn missing_below(&self) -> u64 {
        let Segment { timeline, segno } = self.at;
        let stored = self
            .plan
            .present
            .range(Segment { timeline, segno: 0 }..Segment { timeline, segno })
            .next_back()
            .map_or(0, |s| s.segno + 1);
        let switch = self
            .plan
            .switches
            .range(..=segno)
            .next_back()
            .map_or(0, |(&k, _)| k);
        segno - self.plan.stop.max(stored).max(switch)
    }

    /// Scans up to `limit` segments (all to the stop segment without one), calling the missing
    /// ones `missing`; with `until_found`, ends after the first stored segment.
    fn scan(&mut self, limit: Option<u64>, until_found: bool, missing: SegmentStatus) {
        let mut done = 0u64;
        while limit.is_none_or(|l| done < l) {
            let Some((seg, found)) = self.step() else {
                return;
            };
            done += 1;
            if found {
                self.record(seg, SegmentStatus::Found, 1);
                if until_found {
                    return;
                }
                continue;
            }
            let skip = self
                .missing_below()
                .min(limit.map_or(u64::MAX, |l| l - done));
            self.at.segno -= skip;
            done += skip;
            self.record(self.at, missing, skip + 1);
        }
    }
}

/// Runs the scan of `plan`.
pub fn scan(plan: &Plan) -> Report {
    let mut walk = Walk {
        plan,
        at: plan.current,
        runs: Vec::new(),
    };
    walk.scan(Some(plan.delayed_window), true, SegmentStatus::Delayed);
    walk.scan(Some(plan.uploading_window), false, SegmentStatus::Uploading);
    walk.scan(None, false, SegmentStatus::Lost);
    let mut sequences = walk.runs;
    sequences.reverse();
    Report {
        status: verdict(&sequences, plan.no_backups),
        sequences,
    }
}

/// WAL-G's verdict over the sequences, oldest first: lost segments fail the check, unless
/// there is no backup to start from and nothing stored came before them.
fn verdict(sequences: &[Sequence], no_backups: bool) -> Status {
    let mut status = Status::Ok;
    let mut found = false;
    for s in sequences {
        match s.status {
            SegmentStatus::Found => found = true,
            SegmentStatus::Lost if no_backups && !found => status = Status::Warning,
            SegmentStatus::Lost => return Status::Failure,
            SegmentStatus::Delayed | SegmentStatus::Uploading => status = Status::Warning,
        }
    }
    status
}

/// Where the scan moves to another timeline: at the segment of each switch LSN, to the
/// record's timeline (a later record of the same segment wins, as in WAL-G's map).
pub fn switch_map(records: &[HistoryRecord], segment_size: u64) -> BTreeMap<u64, u32> {
    records
        .iter()
        .map(|r| (r.switch_lsn.segno(segment_size), r.timeline))
        .collect()
}

/// Which backup the scan may stop at.
pub enum StopAt<'a> {
    /// The earliest usable one.
    Earliest,
    /// This one, permanent or not.
    Named(&'a str),
}

/// A backup's start segment, from the WAL file name in its sentinel's name.
fn start_segment(b: &BackupRef, segment_size: u64) -> Result<Segment, Error> {
    let name = crate::commands::report::wal_file_name(b);
    wal_inventory::parse_name(name, segment_size).ok_or_else(|| {
        Error::Precondition(format!(
            "backup '{}': '{name}' is not a WAL file name",
            b.name
        ))
    })
}

/// Whether WAL from the current timeline back to `start` can reach the backup: its start
/// must lie on its timeline's stretch of the history (checked only when there is history).
/// A permanent backup is not a usable left border unless named.
fn usable(
    current: u32,
    b: &BackupRef,
    permanent: bool,
    start: Segment,
    ends: &HashMap<u32, u64>,
) -> bool {
    if permanent {
        crate::warn!(
            "backup {}: permanent, so not a border for wal-verify",
            b.name
        );
        return false;
    }
    if ends.is_empty() {
        return true;
    }
    let begins = start.timeline.checked_sub(1).and_then(|p| ends.get(&p));
    if let Some(&begin) = begins.filter(|&&begin| start.timeline > 1 && start.segno < begin) {
        crate::warn!(
            "backup {}: starts in segment {}, before its timeline {} begins in segment {begin}",
            b.name,
            start.segno,
            start.timeline
        );
        return false;
    }
    if start.timeline == current {
        return true;
    }
    match ends.get(&start.timeline) {
        None => {
            crate::warn!(
                "backup {}: timeline {} is neither the cluster's nor in its history",
                b.name,
                start.timeline
            );
            false
        }
        Some(&end) if start.segno >= end => {
            crate::warn!(
                "backup {}: starts in segment {}, after its timeline {} ended in segment {end}",
                b.name,
                start.segno,
                start.timeline
            );
            false
        }
        Some(_) => true,
    }
}

/// The segment the scan stops at. `Ok(None)` when WAL-G would scan to segment 1 instead
/// (no usable backup, or a backup it could not read), with its warning logged; a named
/// backup that cannot be used is an error.
pub fn stop_segment(
    storage: &dyn Storage,
    switches: &BTreeMap<u64, u32>,
    current: u32,
    at: StopAt,
    segment_size: u64,
) -> Result<Option<u64>, Error> {
    let ends: HashMap<u32, u64> = switches.iter().map(|(&segno, &tli)| (tli, segno)).collect();
    // WAL-G reads the backups in the reverse of its listing's (key) order.
    let mut list = backups::list_backups(storage)?;
    list.sort_by(|a, b| b.sentinel_key.cmp(&a.sentinel_key));
    if let StopAt::Named(name) = at {
        let b = list
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| backups::missing_backup(name))?;
        required_metadata(storage, b)?;
        let start = start_segment(b, segment_size)?;
        if !usable(current, b, false, start, &ends) {
            return Err(Error::Precondition(format!(
                "backup '{name}' cannot be reached from timeline {current} (see the warning above)"
            )));
        }
        crate::info!("checking back to backup {name}");
        return Ok(Some(start.segno));
    }
    match earliest(storage, &list, current, &ends, segment_size) {
        Ok(Some((name, segno))) => {
            crate::info!("checking back to backup {name}, the earliest usable");
            Ok(Some(segno))
        }
        Ok(None) => {
            fall_back("none is usable");
            Ok(None)
        }
        Err(e) => {
            fall_back(&e.to_string());
            Ok(None)
        }
    }
}

/// WAL-G goes on without a backup as the border: to segment 1, lost segments before the
/// first stored one only warned about.
fn fall_back(why: &str) {
    crate::warn!("no backup to check back to ({why}): checking back to segment 1");
}

fn required_metadata(
    storage: &dyn Storage,
    b: &BackupRef,
) -> Result<crate::format::metadata::ExtendedMetadata, Error> {
    backups::read_metadata(storage, &b.name)?.ok_or_else(|| {
        Error::backup_missing(format!(
            "metadata.json of backup '{}' does not exist",
            b.name
        ))
    })
}

/// The earliest usable backup of `list` and its start segment number.
fn earliest(
    storage: &dyn Storage,
    list: &[BackupRef],
    current: u32,
    ends: &HashMap<u32, u64>,
    segment_size: u64,
) -> Result<Option<(String, u64)>, Error> {
    if list.is_empty() {
        return Err(Error::backup_missing("there are no backups"));
    }
    let mut metas = Vec::with_capacity(list.len());
    for b in list {
        metas.push(required_metadata(storage, b)?.is_permanent);
    }
    let mut best: Option<(String, u64)> = None;
    for (b, permanent) in list.iter().zip(metas) {
        let start = start_segment(b, segment_size)?;
        if !usable(current, b, permanent, start, ends) {
            continue;
        }
        if best.as_ref().is_none_or(|(_, segno)| *segno > start.segno) {
            best = Some((b.name.clone(), start.segno));
        }
    }
    Ok(best)
}

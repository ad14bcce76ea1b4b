//! The backup catalogue as WAL-G's retention (`delete`, walg-compat §10.2) sees it: every
//! backup with its sentinel and `metadata.json` facts, in the order retention counts them,
//! what permanent backups protect, and which backup each form of `delete` picks as its target.
//!
//! WAL-G and wal-rus may run retention against the same storage, so the order and the
//! "older than" rule are WAL-G's, not a model of backups and timelines: a key is older than a
//! backup when its first 24-hex-digit run, read as a WAL name, is (timeline first), or with
//! `--use-sentinel-time` when its backup started earlier. Keys without such a run are never
//! older, so `.history` files and objects of unknown shape always stay.
//!
//! Memory: one small record per backup and the permanent WAL ranges.

use super::backups::{self, BackupRef};
use super::{BACKUP_FOLDER, WAL_FOLDER};
use crate::error::Error;
use crate::format::backup_name;
use crate::format::go_json::PreciseTime;
use crate::format::lsn::Lsn;
use crate::format::wal_name::Segment;
use crate::storage::Storage;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// `FULL` / `FIND_FULL` of `retain` and `before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    /// Count or match every backup.
    None,
    /// Count only full backups.
    Full,
    /// Count every backup, then take the next full one.
    FindFull,
}

/// A backup name prefix or a point in time, as `before` and `--after` take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Point {
    /// Sentinel names starting with this.
    Name(String),
    /// RFC 3339 time.
    Time(PreciseTime),
}

/// One backup as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupInfo {
    /// Backup name.
    pub name: String,
    /// Sentinel file name relative to `basebackups_005/` (WAL-G compares and matches these).
    pub sentinel_file: String,
    /// Sentinel modification time.
    pub modified: PreciseTime,
    /// `DeltaFrom`, for deltas.
    pub delta_from: Option<String>,
    /// `DeltaFullName`, for deltas.
    pub delta_full_name: Option<String>,
    /// `metadata.json` `is_permanent` (false without metadata).
    pub permanent: bool,
    /// `metadata.json` `start_time`, when present and well-formed.
    pub start_time: Option<PreciseTime>,
    /// `metadata.json` `start_lsn` / `finish_lsn`, when metadata exists.
    pub lsns: Option<(Lsn, Lsn)>,
    /// Whether `metadata.json` exists.
    pub has_metadata: bool,
}

impl BackupInfo {
    /// Whether this is a full backup.
    pub fn is_full(&self) -> bool {
        self.delta_from.is_none()
    }
}

/// The backups, their order and what permanence protects.
pub struct Catalogue {
    /// Oldest first, in the order retention uses.
    backups: Vec<BackupInfo>,
    /// With `--use-sentinel-time` (and every backup's start time known): start time by name.
    start_times: Option<HashMap<String, PreciseTime>>,
    permanent_backups: BTreeSet<String>,
    /// (timeline, first segno, last segno) of WAL a permanent backup needs.
    permanent_wal: Vec<(u32, u64, u64)>,
    segment_size: u64,
}

fn timeline_of_name(name: &str) -> Option<u32> {
    // WAL-G's ParseTimelineFromBackupName: the 8 characters after `base_`.
    let hex = name.strip_prefix(backup_name::BACKUP_PREFIX)?.get(..8)?;
    u32::from_str_radix(hex, 16).ok()
}

impl Catalogue {
    /// Reads every sentinel and `metadata.json`. A missing `metadata.json` means "not
    /// permanent"; an unreadable one is an error, as in WAL-G.
    pub fn load(
        storage: &dyn Storage,
        segment_size: u64,
        use_sentinel_time: bool,
    ) -> Result<Catalogue, Error> {
        let refs: Vec<BackupRef> = backups::list_backups(storage)?;
        let mut infos = Vec::with_capacity(refs.len());
        for r in refs {
            let sentinel = backups::read_sentinel(storage, &r.name)?;
            let meta = backups::read_metadata(storage, &r.name)?;
            let file = r
                .sentinel_key
                .rsplit('/')
                .next()
                .unwrap_or(&r.sentinel_key)
                .to_string();
            infos.push(BackupInfo {
                delta_from: sentinel.delta.as_ref().map(|d| d.from.clone()),
                delta_full_name: sentinel.delta.map(|d| d.full_name),
                permanent: meta.as_ref().is_some_and(|m| m.is_permanent),
                start_time: meta
                    .as_ref()
                    .and_then(|m| PreciseTime::parse(&m.start_time)),
                lsns: meta.as_ref().map(|m| (m.start_lsn, m.finish_lsn)),
                has_metadata: meta.is_some(),
                name: r.name,
                sentinel_file: file,
                modified: r.modified,
            });
        }
        Ok(Catalogue::new(infos, segment_size, use_sentinel_time))
    }

    /// A catalogue over `infos` (in listing order).
    pub fn new(
        mut infos: Vec<BackupInfo>,
        segment_size: u64,
        use_sentinel_time: bool,
    ) -> Catalogue {
        let start_times: Option<HashMap<String, PreciseTime>> = if use_sentinel_time {
            match infos.iter().find(|b| b.start_time.is_none()) {
                None => Some(
                    infos
                        .iter()
                        .map(|b| (b.name.clone(), b.start_time.unwrap_or(b.modified)))
                        .collect(),
                ),
                Some(b) => {
                    crate::warn!(
                        "Failed to get sentinel backup start times: backup {} has no readable start_time, \
                         will fall back to timeline and segment number for ordering...",
                        b.name
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut permanent_backups = BTreeSet::new();
        let mut permanent_wal = Vec::new();
        for b in infos.iter().filter(|b| b.permanent) {
            permanent_backups.insert(b.name.clone());
            match (timeline_of_name(&b.name), b.lsns) {
                (Some(tli), Some((start, finish))) => {
                    let first = Lsn(start.0.saturating_sub(1)).segno(segment_size);
                    let last = Lsn(finish.0.saturating_sub(1)).segno(segment_size);
                    permanent_wal.push((tli, first, last));
                }
                _ => crate::error!(
                    "failed to parse backup timeline for backup {}, ignoring...",
                    b.name
                ),
            }
        }
        // A total order (Rust's sort needs one): WAL-G compares names by their first 24-hex
        // run, and names without one (never WAL-G's) go first.
        let key = |b: &BackupInfo| {
            backup_name::first_segment(&b.sentinel_file, segment_size)
                .map(|s| (s.timeline, s.segno))
        };
        match &start_times {
            Some(times) => infos.sort_by_key(|b| times.get(&b.name).copied()),
            None => infos.sort_by_key(key),
        }
        Catalogue {
            backups: infos,
            start_times,
            permanent_backups,
            permanent_wal,
            segment_size,
        }
    }

    /// Backups, oldest first.
    pub fn backups(&self) -> &[BackupInfo] {
        &self.backups
    }

    /// Names of the permanent backups.
    pub fn permanent_backups(&self) -> &BTreeSet<String> {
        &self.permanent_backups
    }

    /// The backup named `name`, if it is in the catalogue.
    pub fn by_name(&self, name: &str) -> Option<&BackupInfo> {
        self.backups.iter().find(|b| b.name == name)
    }

    /// The time `before TIME` and `--after TIME` compare with: the sentinel's modification
    /// time, or the start time with `--use-sentinel-time`.
    fn backup_time(&self, b: &BackupInfo) -> PreciseTime {
        self.start_times
            .as_ref()
            .and_then(|t| t.get(&b.name).copied())
            .unwrap_or(b.modified)
    }

    /// WAL-G's "is `a` older than `b`" for two names relative to the root or to
    /// `basebackups_005/` (objects and sentinels alike).
    pub fn older(&self, a: &str, b: &str) -> bool {
        let seg = |s: &str| backup_name::first_segment(s, self.segment_size);
        match &self.start_times {
            None => match (seg(a), seg(b)) {
                (Some(x), Some(y)) => (x.timeline, x.segno) < (y.timeline, y.segno),
                _ => false,
            },
            Some(times) => match (
                backup_name::find_backup_name(a),
                backup_name::find_backup_name(b),
            ) {
                (Some(na), Some(nb)) => match (times.get(na), times.get(nb)) {
                    (Some(x), Some(y)) => x < y,
                    _ => false,
                },
                // Objects outside backups (WAL) are compared by segment number alone.
                _ => match (seg(a), seg(b)) {
                    (Some(x), Some(y)) => x.segno < y.segno,
                    _ => false,
                },
            },
        }
    }

    /// Whether a permanent backup protects the object at `key` (relative to the root).
    pub fn is_permanent(&self, key: &str) -> bool {
        if let Some(rest) = key.strip_prefix(&format!("{WAL_FOLDER}/"))
            && let Some(name) = rest.get(..24)
        {
            return Segment::parse(name, self.segment_size).is_some_and(|s| {
                self.permanent_wal
                    .iter()
                    .any(|&(tli, lo, hi)| tli == s.timeline && (lo..=hi).contains(&s.segno))
            });
        }
        if let Some(rest) = key.strip_prefix(&format!("{BACKUP_FOLDER}/")) {
            return self.permanent_backups.contains(backup_name::owner_of(rest));
        }
        false
    }

    /// `retain`: the target, or `None` when fewer backups exist than are to be kept.
    pub fn find_retain(&self, modifier: Modifier, count: usize) -> Option<&BackupInfo> {
        let mut seen = 0usize;
        self.backups.iter().rev().find(|b| match modifier {
            Modifier::None => {
                seen += 1;
                seen == count
            }
            Modifier::Full => {
                seen += usize::from(b.is_full());
                seen == count
            }
            Modifier::FindFull => {
                seen += 1;
                seen >= count && b.is_full()
            }
        })
    }

    /// `retain ... --after X`: the older of the `retain` target and the oldest backup from
    /// `X` on (full only with a modifier).
    pub fn find_retain_after(
        &self,
        modifier: Modifier,
        count: usize,
        after: &Point,
    ) -> Option<&BackupInfo> {
        let by_count = self.find_retain(modifier, count);
        let mut met = false;
        let by_point = self.backups.iter().find(|b| {
            let at_point = match after {
                Point::Name(n) => {
                    met = met || b.sentinel_file.starts_with(n.as_str());
                    met
                }
                Point::Time(t) => self.backup_time(b) >= *t,
            };
            at_point && (modifier == Modifier::None || b.is_full())
        });
        match (by_count, by_point) {
            (Some(a), Some(b)) => Some(if self.older(&b.sentinel_file, &a.sentinel_file) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    /// `before NAME`: the newest backup whose sentinel name starts with `prefix` (with
    /// `FIND_FULL`: from there, the first full backup towards older ones).
    pub fn find_before_name(&self, prefix: &str, find_full: bool) -> Option<&BackupInfo> {
        let mut met = false;
        self.backups.iter().rev().find(|b| {
            met = met || b.sentinel_file.starts_with(prefix);
            met && (!find_full || b.is_full())
        })
    }

    /// `before TIME`: the oldest backup at or after `t`, then as `before NAME` with its name.
    /// `Ok(None)` when no backup is that new.
    pub fn find_before_time(&self, t: PreciseTime, find_full: bool) -> Option<&BackupInfo> {
        let potential = self.backups.iter().find(|b| self.backup_time(b) >= t)?;
        self.find_before_name(&potential.sentinel_file, find_full)
    }

    /// `garbage`: the oldest backup that is not permanent (by start time; by the retention
    /// order when a candidate has no start time), moved to the root of its delta chain.
    pub fn find_garbage_target(&self) -> Result<Option<&BackupInfo>, Error> {
        let candidates: Vec<&BackupInfo> = self
            .backups
            .iter()
            .filter(|b| {
                if b.permanent {
                    crate::info!("Backup {} is permanent, it is not eligible to be selected as the oldest backup", b.name);
                }
                !b.permanent
            })
            .collect();
        let oldest = if candidates.iter().all(|b| b.start_time.is_some()) {
            // Ties keep the retention order, which is already oldest first.
            candidates.into_iter().min_by_key(|b| b.start_time)
        } else {
            candidates.into_iter().next()
        };
        let Some(mut target) = oldest else {
            return Ok(None);
        };
        // WAL-G stops here with "incremental" when the target is a delta. Everything older
        // than that delta is permanent, so its base chain survives either way; using the
        // chain's full backup as the target keeps `garbage` usable without deleting more.
        let mut hops = 0;
        while let Some(from) = &target.delta_from {
            hops += 1;
            target = match self.by_name(from) {
                Some(base) if hops <= self.backups.len() => base,
                _ => {
                    return Err(Error::backup_missing(format!(
                        "{} is incremental and its base backup {from} is missing",
                        target.name
                    )));
                }
            };
        }
        Ok(Some(target))
    }

    /// Backups older than `target` that a backup kept by a delete before `target` needs: the
    /// base chains of `target` and of every newer backup. A delta taken with
    /// `--delta-from-name` on a full backup older than a newer full one crosses that full
    /// backup; deleting before it would leave the delta without its base.
    pub fn bases_kept_with(&self, target: &BackupInfo) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        let newer = self
            .backups
            .iter()
            .filter(|b| !self.older(&b.sentinel_file, &target.sentinel_file));
        for b in newer {
            let mut current = b;
            let mut hops = 0;
            while let Some(from) = &current.delta_from {
                hops += 1;
                let Some(base) = self.by_name(from).filter(|_| hops <= self.backups.len()) else {
                    break;
                };
                if self.older(&base.sentinel_file, &target.sentinel_file) {
                    kept.insert(base.name.clone());
                }
                current = base;
            }
        }
        kept
    }

    /// `target`: the backups to delete with `name`: every delta depending on it (directly or
    /// not), or with `FIND_FULL` everything sharing its full backup.
    pub fn target_set(&self, name: &str, find_full: bool) -> Vec<&BackupInfo> {
        let Some(target) = self.by_name(name) else {
            return Vec::new();
        };
        if find_full {
            let root = if target.is_full() {
                target.name.as_str()
            } else {
                target.delta_full_name.as_deref().unwrap_or("")
            };
            return self
                .backups
                .iter()
                .filter(|b| {
                    let base = b.delta_full_name.as_deref();
                    if target.is_full() {
                        b.name == root || base == Some(root)
                    } else {
                        b.name == root || base == target.delta_full_name.as_deref()
                    }
                })
                .collect();
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([target]);
        while let Some(b) = queue.pop_front() {
            if !seen.insert(b.name.as_str()) {
                continue;
            }
            out.push(b);
            queue.extend(
                self.backups
                    .iter()
                    .filter(|d| d.delta_from.as_deref() == Some(b.name.as_str())),
            );
        }
        out
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;

//! `delete` (walg-compat §10.2): retention of backups and WAL.
//!
//! Forms: `retain [FULL|FIND_FULL] N [--after NAME|TIME]`, `before [FIND_FULL] NAME|TIME`,
//! `everything [FORCE]`, `target [FIND_FULL] NAME`, `garbage [ARCHIVES|BACKUPS]`; a dry run
//! unless `--confirm`.
//!
//! WAL-G and wal-rus may run retention against the same storage, so which objects go is
//! decided by WAL-G's rules, not by a model of backups and timelines: after a target backup T
//! is chosen, every object below the root whose first 24-hex-digit run, read as a WAL name,
//! is older than T's start segment (timeline first) goes, unless a permanent backup protects
//! it. `.history` files and objects of unknown shape have no such run and always stay.
//!
//! Where WAL-G is unsafe, wal-rus refuses or stays on the safe side (each noted where it
//! happens): `delete target` refuses permanent backups, a `garbage` target that is a delta
//! is replaced by the full backup at the root of its chain, backups without
//! `metadata.json` can be the `garbage` target, and sentinels are deleted before anything
//! else so that an interrupted delete leaves garbage rather than a backup that looks complete.
//!
//! Memory: one small record per backup, the permanent WAL ranges, and the keys to delete,
//! which are collected during the listing before anything is deleted (so proportional to
//! the number of objects deleted, not to the number stored).

use crate::config::Settings;
use crate::error::Error;
use crate::format::backup_name;
use crate::format::go_json::PreciseTime;
use crate::format::lsn::Lsn;
use crate::format::wal_name::Segment;
use crate::repo::backups::{self, BackupRef};
use crate::repo::{BACKUP_FOLDER, WAL_FOLDER};
use crate::storage::Storage;
use crate::time::UtcTime;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Keys per `delete_many` call (S3's `DeleteObjects` limit; the S3 back-end may split further
/// by `S3_DELETE_BATCH_SIZE`).
const DELETE_BATCH: usize = 1000;

/// WAL-G's name for the only storage wal-rus has.
const STORAGE_NAME: &str = "default";

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

/// Which folders `garbage` cleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarbageScope {
    /// `wal_005/` and `basebackups_005/`.
    Both,
    /// `ARCHIVES`: `wal_005/` only.
    Archives,
    /// `BACKUPS`: `basebackups_005/` only.
    Backups,
}

/// A parsed `delete` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `retain [FULL|FIND_FULL] N [--after X]`.
    Retain {
        /// Counting rule.
        modifier: Modifier,
        /// N.
        count: usize,
        /// `--after`.
        after: Option<Point>,
    },
    /// `before [FIND_FULL] X`.
    Before {
        /// `FIND_FULL` given.
        find_full: bool,
        /// X.
        point: Point,
    },
    /// `everything [FORCE]`.
    Everything {
        /// `FORCE` given.
        force: bool,
    },
    /// `target [FIND_FULL] NAME`.
    Target {
        /// `FIND_FULL` given.
        find_full: bool,
        /// NAME.
        name: String,
    },
    /// `garbage [ARCHIVES|BACKUPS]`.
    Garbage(GarbageScope),
}

const USAGE: &str = "usage: delete retain [FULL|FIND_FULL] N [--after NAME|TIME] | before [FIND_FULL] NAME|TIME | \
                     everything [FORCE] | target [FIND_FULL] NAME | garbage [ARCHIVES|BACKUPS]";

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}; {USAGE}", msg.into()))
}

/// `NAME|TIME`: RFC 3339 text is a time (which must not lie in the future), anything else a
/// name prefix.
fn parse_point(text: &str, now: PreciseTime, future_msg: &str) -> Result<Point, Error> {
    match PreciseTime::parse(text) {
        Some(t) if t > now => Err(Error::Usage(future_msg.into())),
        Some(t) => Ok(Point::Time(t)),
        None => Ok(Point::Name(text.to_string())),
    }
}

/// Parses the mode words, checking them as WAL-G's argument validators do, before anything
/// touches storage.
pub fn parse_mode(args: &[String], after: Option<&str>, now: PreciseTime) -> Result<Mode, Error> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(usage("no mode given"));
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if after.is_some() && mode != "retain" {
        return Err(usage("--after is only valid with retain"));
    }
    match mode.as_str() {
        "retain" => {
            let (modifier, n) = match rest.as_slice() {
                [n] => (Modifier::None, *n),
                ["FULL", n] => (Modifier::Full, *n),
                ["FIND_FULL", n] => (Modifier::FindFull, *n),
                [_, _] => {
                    return Err(usage(
                        "expected to get one of modifiers: [FULL FIND_FULL] as first argument",
                    ));
                }
                _ => return Err(usage("retain takes one or two arguments")),
            };
            let count: i64 = n.parse().map_err(|_| {
                usage(format!(
                    "expected to get a number as retention count, but got: '{n}'"
                ))
            })?;
            if count <= 0 {
                return Err(Error::Usage(
                    "cannot retain less than one backup. Check out delete everything".into(),
                ));
            }
            let after = after
                .map(|a| parse_point(a, now, "cannot delete retain future date"))
                .transpose()?;
            Ok(Mode::Retain {
                modifier,
                count: count as usize,
                after,
            })
        }
        "before" => {
            let (find_full, x) = match rest.as_slice() {
                [x] => (false, *x),
                ["FIND_FULL", x] => (true, *x),
                ["FULL", _] => {
                    return Err(Error::Usage(
                        "unsupported modifier for delete before command".into(),
                    ));
                }
                [_, _] => {
                    return Err(usage(
                        "expected to get one of modifiers: [FIND_FULL] as first argument",
                    ));
                }
                _ => return Err(usage("before takes one or two arguments")),
            };
            Ok(Mode::Before {
                find_full,
                point: parse_point(x, now, "cannot delete before future date")?,
            })
        }
        "everything" => match rest.as_slice() {
            [] => Ok(Mode::Everything { force: false }),
            ["FORCE"] => Ok(Mode::Everything { force: true }),
            _ => Err(usage("everything takes no argument or FORCE")),
        },
        "target" => match rest.as_slice() {
            [name] if *name != "FIND_FULL" => Ok(Mode::Target {
                find_full: false,
                name: name.to_string(),
            }),
            ["FIND_FULL", name] => Ok(Mode::Target {
                find_full: true,
                name: name.to_string(),
            }),
            _ => Err(usage(
                "target takes a backup name, optionally after FIND_FULL",
            )),
        },
        "garbage" => match rest.as_slice() {
            [] => Ok(Mode::Garbage(GarbageScope::Both)),
            ["ARCHIVES"] => Ok(Mode::Garbage(GarbageScope::Archives)),
            ["BACKUPS"] => Ok(Mode::Garbage(GarbageScope::Backups)),
            _ => Err(usage("garbage takes no argument, ARCHIVES or BACKUPS")),
        },
        other => Err(usage(format!("unknown mode '{other}'"))),
    }
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

    fn by_name(&self, name: &str) -> Option<&BackupInfo> {
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

/// What `delete` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The mode and its arguments, e.g. `retain FULL 3`.
    pub args: Vec<String>,
    /// Really delete (without it, only list what would be deleted).
    pub confirm: bool,
    /// Order backups by metadata.json `start_time` instead of by start segment.
    pub use_sentinel_time: bool,
    /// With retain: also keep every backup from this backup name or RFC 3339 time on.
    pub after: Option<String>,
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let now = PreciseTime::from_system(std::time::SystemTime::now());
    let mode = parse_mode(&args.args, args.after.as_deref(), now)?;
    let storage = settings.open_storage()?;
    let storage = storage.as_ref();
    let catalogue = Catalogue::load(storage, settings.wal_segment_size, args.use_sentinel_time)?;
    if !catalogue.permanent_backups.is_empty() {
        crate::info!(
            "Found permanent objects: backups={}",
            go_map(&catalogue.permanent_backups)
        );
    }
    match mode {
        Mode::Retain {
            modifier,
            count,
            after,
        } => {
            let target = match &after {
                None => catalogue.find_retain(modifier, count),
                Some(point) => catalogue.find_retain_after(modifier, count, point),
            };
            match target {
                None => no_target(),
                Some(t) => delete_before(storage, &catalogue, t, GarbageScope::Both, args.confirm),
            }
        }
        Mode::Before { find_full, point } => {
            let target = match &point {
                Point::Name(n) => {
                    Some(catalogue.find_before_name(n, find_full).ok_or_else(|| {
                        Error::backup_missing(format!(
                            "No backup found whose name starts with '{n}'"
                        ))
                    })?)
                }
                Point::Time(t) => catalogue.find_before_time(*t, find_full),
            };
            match target {
                None => no_target(),
                Some(t) => delete_before(storage, &catalogue, t, GarbageScope::Both, args.confirm),
            }
        }
        Mode::Everything { force } => {
            if !catalogue.permanent_backups.is_empty() {
                let found = format!(
                    "Found permanent backups={}",
                    go_map(&catalogue.permanent_backups)
                );
                if !force {
                    return Err(Error::Precondition(format!(
                        "{found}; use 'delete everything FORCE' to delete them too"
                    )));
                }
                crate::info!("{found}");
            }
            let keys = collect(storage, "", |_| true)?;
            execute(storage, keys, args.confirm)
        }
        Mode::Target { find_full, name } => {
            let backup = backups::resolve(storage, &name)?;
            if catalogue.by_name(&backup.name).is_none() {
                return Err(Error::backup_missing("Requested backup was not found"));
            }
            let set = catalogue.target_set(&backup.name, find_full);
            // WAL-G means to refuse here but its check never matches (§10.2 quirk); wal-rus
            // refuses for real.
            if let Some(p) = set.iter().find(|b| b.permanent) {
                return Err(Error::Precondition(format!(
                    "Unable to delete permanent backup {}",
                    p.name
                )));
            }
            let names: HashSet<&str> = set.iter().map(|b| b.name.as_str()).collect();
            let folder = format!("{BACKUP_FOLDER}/");
            let keys = collect(storage, &folder, |key| {
                let rel = key.strip_prefix(&folder).unwrap_or(key);
                names.contains(backup_name::owner_of(rel)) && !catalogue.is_permanent(key)
            })?;
            execute(storage, keys, args.confirm)
        }
        Mode::Garbage(scope) => {
            match scope {
                GarbageScope::Archives => {
                    crate::info!("Archive-only mode selected. Will remove only outdated WAL files.")
                }
                GarbageScope::Backups => crate::info!(
                    "Backups-only mode selected. Will remove only leftover backup files."
                ),
                GarbageScope::Both => {
                    crate::info!(
                        "Running in default mode. Will remove outdated WAL files and leftover backup files."
                    )
                }
            }
            match catalogue.find_garbage_target()? {
                None => crate::info!(
                    "Couldn't find any non-permanent backups in storage. Not doing anything."
                ),
                Some(t) => delete_before(storage, &catalogue, t, scope, args.confirm)?,
            }
            sweep_interrupted(storage, scope, args.confirm)
        }
    }
}

fn no_target() -> Result<(), Error> {
    crate::info!("No backup found for deletion");
    Ok(())
}

/// Go's `%v` of a `map[string]bool` of names: `map[a:true b:true]`.
fn go_map(names: &BTreeSet<String>) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("{n}:true")).collect();
    format!("map[{}]", items.join(" "))
}

/// Deletes, within `scope`, every object older than `target` that no permanent backup
/// protects (the "older than target" rule).
fn delete_before(
    storage: &dyn Storage,
    catalogue: &Catalogue,
    target: &BackupInfo,
    scope: GarbageScope,
    confirm: bool,
) -> Result<(), Error> {
    if !target.is_full() {
        return Err(Error::Precondition(format!(
            "{} is incremental and it's predecessors cannot be deleted. Consider FIND_FULL option.",
            target.name
        )));
    }
    crate::info!("Start delete (target: {})", target.name);
    let wal = format!("{WAL_FOLDER}/");
    let base = format!("{BACKUP_FOLDER}/");
    let keys = collect(storage, "", |key| {
        let in_scope = match scope {
            GarbageScope::Both => true,
            GarbageScope::Archives => key.starts_with(&wal),
            GarbageScope::Backups => key.starts_with(&base),
        };
        in_scope && catalogue.older(key, &target.sentinel_file) && !catalogue.is_permanent(key)
    })?;
    execute(storage, keys, confirm)
}

/// How old a leftover of an interrupted write must be before `delete garbage` removes it:
/// far beyond the longest upload of a partition or segment, so no running write is hit.
pub const INTERRUPTED_AGE_SECS: i64 = 24 * 3600;

/// `delete garbage`: removes what killed writers left (temporary files, unfinished
/// multipart uploads) older than [`INTERRUPTED_AGE_SECS`], within `scope`.
fn sweep_interrupted(
    storage: &dyn Storage,
    scope: GarbageScope,
    confirm: bool,
) -> Result<(), Error> {
    let before = UtcTime(UtcTime::now().0 - INTERRUPTED_AGE_SECS);
    let folders: &[&str] = match scope {
        GarbageScope::Both => &[WAL_FOLDER, BACKUP_FOLDER],
        GarbageScope::Archives => &[WAL_FOLDER],
        GarbageScope::Backups => &[BACKUP_FOLDER],
    };
    let mut found = Vec::new();
    for folder in folders {
        found.extend(storage.interrupted_writes(&format!("{folder}/"), before)?);
    }
    for w in &found {
        crate::info!(
            "Interrupted write marked for removal: {} ({}) started {}",
            w.key,
            w.id,
            w.started.amz_date()
        );
    }
    if found.is_empty() {
        return Ok(());
    }
    if !confirm {
        crate::info!(
            "Dry run: interrupted writes would be removed count={}, Run with --confirm to execute",
            found.len()
        );
        return Ok(());
    }
    storage.discard_interrupted(&found)?;
    crate::info!("Interrupted writes removed: count={}", found.len());
    Ok(())
}

/// Lists everything below `prefix` and keeps the keys `select` picks. The result is as long
/// as the number of objects to delete.
fn collect(
    storage: &dyn Storage,
    prefix: &str,
    mut select: impl FnMut(&str) -> bool,
) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    storage.list(prefix, true, &mut |m| {
        if select(&m.key) {
            keys.push(m.key);
        }
    })?;
    Ok(keys)
}

/// Logs the keys and, with `confirm`, deletes them in batches, sentinels first.
fn execute(storage: &dyn Storage, mut keys: Vec<String>, confirm: bool) -> Result<(), Error> {
    for key in &keys {
        crate::info!("Object marked for deletion: {key} storage={STORAGE_NAME}");
    }
    let count = keys.len();
    if count == 0 {
        crate::info!("No objects to delete");
        return Ok(());
    }
    if !confirm {
        crate::info!(
            "Dry run: objects would be deleted count={count}, Run with --confirm to execute"
        );
        return Ok(());
    }
    // Without its sentinel a half-deleted backup is garbage that every tool ignores; the
    // other way round it would look complete and fail to restore.
    keys.sort_by_key(|k| !k.ends_with(backup_name::SENTINEL_SUFFIX));
    for batch in keys.chunks(DELETE_BATCH) {
        storage.delete_many(batch)?;
    }
    crate::info!("Objects deleted successfully: count={count}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn now() -> PreciseTime {
        PreciseTime::parse("2030-01-01T00:00:00Z").unwrap()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn modes_parse_like_walg_validators() {
        assert_eq!(
            parse_mode(&args("retain 3"), None, now()).unwrap(),
            Mode::Retain {
                modifier: Modifier::None,
                count: 3,
                after: None
            }
        );
        assert_eq!(
            parse_mode(&args("retain FIND_FULL 2"), Some("base_0000"), now()).unwrap(),
            Mode::Retain {
                modifier: Modifier::FindFull,
                count: 2,
                after: Some(Point::Name("base_0000".into()))
            }
        );
        assert!(matches!(
            parse_mode(&args("retain FULL 1"), Some("2024-01-01T00:00:00Z"), now()).unwrap(),
            Mode::Retain {
                after: Some(Point::Time(_)),
                ..
            }
        ));
        assert_eq!(
            parse_mode(&args("before FIND_FULL base_1"), None, now()).unwrap(),
            Mode::Before {
                find_full: true,
                point: Point::Name("base_1".into())
            }
        );
        assert_eq!(
            parse_mode(&args("everything FORCE"), None, now()).unwrap(),
            Mode::Everything { force: true }
        );
        assert_eq!(
            parse_mode(&args("target FIND_FULL b"), None, now()).unwrap(),
            Mode::Target {
                find_full: true,
                name: "b".into()
            }
        );
        assert_eq!(
            parse_mode(&args("garbage ARCHIVES"), None, now()).unwrap(),
            Mode::Garbage(GarbageScope::Archives)
        );
        for (bad, why) in [
            ("", "no mode"),
            ("retain 0", "less than one"),
            ("retain x", "number"),
            ("retain FOO 2", "modifiers"),
            ("before FULL b", "unsupported modifier"),
            ("before 2031-01-01T00:00:00Z", "future"),
            ("everything NOW", "FORCE"),
            ("target", "target takes"),
            ("garbage ALL", "garbage takes"),
            ("purge", "unknown mode"),
        ] {
            let err = parse_mode(&args(bad), None, now()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(parse_mode(&args("before b"), Some("x"), now()).is_err());
        assert!(
            parse_mode(&args("retain 1"), Some("2031-01-01T00:00:00Z"), now())
                .unwrap_err()
                .to_string()
                .contains("future")
        );
    }

    fn info(seg: u64, from: Option<u64>, modified: i64, permanent: bool) -> BackupInfo {
        let name = match from {
            None => format!(
                "base_{}",
                Segment {
                    timeline: 1,
                    segno: seg
                }
                .name(SEG)
            ),
            Some(f) => format!(
                "base_{}_D_{}",
                Segment {
                    timeline: 1,
                    segno: seg
                }
                .name(SEG),
                Segment {
                    timeline: 1,
                    segno: f
                }
                .name(SEG)
            ),
        };
        let base = |s: u64| {
            format!(
                "base_{}",
                Segment {
                    timeline: 1,
                    segno: s
                }
                .name(SEG)
            )
        };
        BackupInfo {
            sentinel_file: format!("{name}_backup_stop_sentinel.json"),
            name,
            modified: PreciseTime {
                secs: modified,
                nanos: 0,
            },
            delta_from: from.map(|f| {
                if f == 3 || f == 10 {
                    base(f)
                } else {
                    format!(
                        "base_{}_D_{}",
                        Segment {
                            timeline: 1,
                            segno: f
                        }
                        .name(SEG),
                        Segment {
                            timeline: 1,
                            segno: 3
                        }
                        .name(SEG)
                    )
                }
            }),
            delta_full_name: from.map(|f| base(if f >= 10 { 10 } else { 3 })),
            permanent,
            start_time: Some(PreciseTime {
                secs: modified - 10,
                nanos: 0,
            }),
            lsns: Some((Lsn(seg * SEG + 40), Lsn(seg * SEG + 4000))),
            has_metadata: true,
        }
    }

    /// F3 <- D5 (on F3), F10 <- D12 (on F10), F14.
    fn sample(permanent3: bool) -> Catalogue {
        let list = vec![
            info(10, None, 300, false),
            info(3, None, 100, permanent3),
            info(5, Some(3), 200, false),
            info(12, Some(10), 400, false),
            info(14, None, 500, false),
        ];
        Catalogue::new(list, SEG, false)
    }

    fn seg_name(n: u64) -> String {
        Segment {
            timeline: 1,
            segno: n,
        }
        .name(SEG)
    }

    #[test]
    fn retention_targets() {
        let c = sample(false);
        let names: Vec<&str> = c.backups().iter().map(|b| &b.name[5..29]).collect();
        assert_eq!(
            names,
            [
                seg_name(3),
                seg_name(5),
                seg_name(10),
                seg_name(12),
                seg_name(14)
            ]
        );
        let t = |b: Option<&BackupInfo>| b.map(|b| b.name.clone());
        assert_eq!(
            t(c.find_retain(Modifier::None, 3)),
            Some(format!("base_{}", seg_name(10)))
        );
        assert!(!c.find_retain(Modifier::None, 2).unwrap().is_full());
        assert_eq!(
            t(c.find_retain(Modifier::Full, 2)),
            Some(format!("base_{}", seg_name(10)))
        );
        assert_eq!(
            t(c.find_retain(Modifier::FindFull, 2)),
            Some(format!("base_{}", seg_name(10)))
        );
        assert_eq!(c.find_retain(Modifier::None, 6), None);
        assert_eq!(
            t(c.find_retain(Modifier::Full, 3)),
            Some(format!("base_{}", seg_name(3)))
        );
        // --after: the older of the two candidates.
        let after = Point::Name(format!("base_{}", seg_name(5)));
        assert_eq!(
            t(c.find_retain_after(Modifier::None, 1, &after)).unwrap(),
            format!("base_{}_D_{}", seg_name(5), seg_name(3))
        );
        assert_eq!(
            t(c.find_retain_after(Modifier::Full, 1, &after)),
            Some(format!("base_{}", seg_name(10)))
        );
        let after_time = Point::Time(PreciseTime {
            secs: 250,
            nanos: 0,
        });
        assert_eq!(
            t(c.find_retain_after(Modifier::None, 1, &after_time)),
            Some(format!("base_{}", seg_name(10)))
        );
        // before.
        assert_eq!(
            t(c.find_before_name(&format!("base_{}", seg_name(12)), false)).unwrap(),
            format!("base_{}_D_{}", seg_name(12), seg_name(10))
        );
        assert_eq!(
            t(c.find_before_name(&format!("base_{}", seg_name(12)), true)),
            Some(format!("base_{}", seg_name(10)))
        );
        assert_eq!(c.find_before_name("base_X", false), None);
        assert_eq!(
            t(c.find_before_time(
                PreciseTime {
                    secs: 150,
                    nanos: 0
                },
                true
            )),
            Some(format!("base_{}", seg_name(3)))
        );
        assert_eq!(
            c.find_before_time(
                PreciseTime {
                    secs: 501,
                    nanos: 0
                },
                false
            ),
            None
        );
    }

    #[test]
    fn older_and_permanent() {
        let c = sample(true);
        let t = format!("base_{}_backup_stop_sentinel.json", seg_name(10));
        assert!(c.older(&format!("wal_005/{}.lz4", seg_name(9)), &t));
        assert!(!c.older(&format!("wal_005/{}.lz4", seg_name(10)), &t));
        assert!(!c.older("wal_005/00000001.history.lz4", &t));
        // Lower timelines are always older.
        assert!(c.older("wal_005/000000000000000000000020.lz4", &t));
        assert!(!c.older("wal_005/000000020000000000000001.lz4", &t));
        // F3's range: segno(start-1)..=segno(finish-1) = 3..=3 on timeline 1.
        assert!(c.is_permanent(&format!("wal_005/{}.lz4", seg_name(3))));
        assert!(c.is_permanent(&format!("wal_005/{}.00000028.backup.lz4", seg_name(3))));
        assert!(!c.is_permanent(&format!("wal_005/{}.lz4", seg_name(2))));
        assert!(!c.is_permanent("wal_005/000000020000000000000003.lz4"));
        assert!(c.is_permanent(&format!(
            "basebackups_005/base_{}/metadata.json",
            seg_name(3)
        )));
        assert!(c.is_permanent(&format!(
            "basebackups_005/base_{}_backup_stop_sentinel.json",
            seg_name(3)
        )));
        assert!(!c.is_permanent(&format!(
            "basebackups_005/base_{}_D_{}/metadata.json",
            seg_name(5),
            seg_name(3)
        )));
        assert_eq!(
            go_map(&c.permanent_backups),
            format!("map[base_{}:true]", seg_name(3))
        );
    }

    #[test]
    fn garbage_and_target_sets() {
        let c = sample(false);
        assert_eq!(
            c.find_garbage_target().unwrap().unwrap().name,
            format!("base_{}", seg_name(3))
        );
        // With F3 permanent the oldest non-permanent is D5 (a delta): its full base is used.
        let c = sample(true);
        assert_eq!(
            c.find_garbage_target().unwrap().unwrap().name,
            format!("base_{}", seg_name(3))
        );

        let names = |v: Vec<&BackupInfo>| {
            v.into_iter()
                .map(|b| b.name[5..29].to_string())
                .collect::<Vec<_>>()
        };
        let c = sample(false);
        assert_eq!(
            names(c.target_set(&format!("base_{}", seg_name(3)), false)),
            [seg_name(3), seg_name(5)]
        );
        assert_eq!(
            names(c.target_set(&format!("base_{}_D_{}", seg_name(12), seg_name(10)), false)),
            [seg_name(12)]
        );
        assert_eq!(
            names(c.target_set(&format!("base_{}_D_{}", seg_name(12), seg_name(10)), true)),
            [seg_name(10), seg_name(12)]
        );
        assert_eq!(
            names(c.target_set(&format!("base_{}", seg_name(14)), true)),
            [seg_name(14)]
        );
    }

    #[test]
    fn sentinel_time_order() {
        // Timelines restart: start times order the backups, WAL compares by segment alone.
        let mut a = info(3, None, 100, false);
        a.name = "base_000000020000000000000003".into();
        a.sentinel_file = format!("{}_backup_stop_sentinel.json", a.name);
        let b = info(5, None, 200, false);
        let c = Catalogue::new(vec![b.clone(), a.clone()], SEG, true);
        assert_eq!(c.backups()[0].name, a.name);
        assert!(c.older(&format!("basebackups_005/{}/x", a.name), &b.sentinel_file));
        assert!(c.older("wal_005/000000030000000000000004.lz4", &b.sentinel_file));
        // A backup folder without a sentinel has no start time: never older.
        assert!(!c.older(
            "basebackups_005/base_000000010000000000000001/x",
            &b.sentinel_file
        ));
        // Missing start time: fall back to segment order.
        let mut no_time = a.clone();
        no_time.start_time = None;
        let c = Catalogue::new(vec![b, no_time], SEG, true);
        assert!(c.start_times.is_none());
    }
}

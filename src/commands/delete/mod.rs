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

mod execute;
mod mode;

pub use execute::INTERRUPTED_AGE_SECS;
pub use mode::{GarbageScope, Mode, Modifier, Point, parse_mode};

use crate::config::Settings;
use crate::error::Error;
use crate::format::backup_name;
use crate::format::go_json::PreciseTime;
use crate::repo::BACKUP_FOLDER;
use crate::repo::backups;
use crate::repo::retention::{BackupInfo, Catalogue};
use crate::storage::Storage;
use execute::{collect, delete_before, execute, sweep_interrupted};
use std::collections::{BTreeSet, HashSet};

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
    if !catalogue.permanent_backups().is_empty() {
        crate::info!(
            "Found permanent objects: backups={}",
            go_map(catalogue.permanent_backups())
        );
    }
    let confirm = args.confirm;
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
            delete_older_than(storage, &catalogue, target, confirm)
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
            delete_older_than(storage, &catalogue, target, confirm)
        }
        Mode::Everything { force } => everything(storage, &catalogue, force, confirm),
        Mode::Target { find_full, name } => target(storage, &catalogue, &name, find_full, confirm),
        Mode::Garbage(scope) => garbage(storage, &catalogue, scope, confirm),
    }
}

/// `retain` and `before`: everything older than `target`, or nothing without one.
fn delete_older_than(
    storage: &dyn Storage,
    catalogue: &Catalogue,
    target: Option<&BackupInfo>,
    confirm: bool,
) -> Result<(), Error> {
    match target {
        None => {
            crate::info!("No backup found for deletion");
            Ok(())
        }
        Some(t) => delete_before(storage, catalogue, t, GarbageScope::Both, confirm),
    }
}

/// `everything [FORCE]`: every object, permanent backups only with `FORCE`.
fn everything(
    storage: &dyn Storage,
    catalogue: &Catalogue,
    force: bool,
    confirm: bool,
) -> Result<(), Error> {
    if !catalogue.permanent_backups().is_empty() {
        let found = format!(
            "Found permanent backups={}",
            go_map(catalogue.permanent_backups())
        );
        if !force {
            return Err(Error::Precondition(format!(
                "{found}; use 'delete everything FORCE' to delete them too"
            )));
        }
        crate::info!("{found}");
    }
    let keys = collect(storage, "", |_| true)?;
    execute(storage, keys, confirm)
}

/// `target [FIND_FULL] NAME`: the backup and what depends on it, never a permanent one.
fn target(
    storage: &dyn Storage,
    catalogue: &Catalogue,
    name: &str,
    find_full: bool,
    confirm: bool,
) -> Result<(), Error> {
    let backup = backups::resolve(storage, name)?;
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
    execute(storage, keys, confirm)
}

/// `garbage [ARCHIVES|BACKUPS]`: what is older than the oldest non-permanent backup, then
/// the leftovers of interrupted writes.
fn garbage(
    storage: &dyn Storage,
    catalogue: &Catalogue,
    scope: GarbageScope,
    confirm: bool,
) -> Result<(), Error> {
    match scope {
        GarbageScope::Archives => {
            crate::info!("Archive-only mode selected. Will remove only outdated WAL files.")
        }
        GarbageScope::Backups => {
            crate::info!("Backups-only mode selected. Will remove only leftover backup files.")
        }
        GarbageScope::Both => {
            crate::info!(
                "Running in default mode. Will remove outdated WAL files and leftover backup files."
            )
        }
    }
    match catalogue.find_garbage_target()? {
        None => {
            crate::info!("Couldn't find any non-permanent backups in storage. Not doing anything.")
        }
        Some(t) => delete_before(storage, catalogue, t, scope, confirm)?,
    }
    sweep_interrupted(storage, scope, confirm)
}

/// Go's `%v` of a `map[string]bool` of names: `map[a:true b:true]`.
fn go_map(names: &BTreeSet<String>) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("{n}:true")).collect();
    format!("map[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_backups_print_as_a_go_map() {
        let names: BTreeSet<String> = ["base_b", "base_a"].map(String::from).into();
        assert_eq!(go_map(&names), "map[base_a:true base_b:true]");
        assert_eq!(go_map(&BTreeSet::new()), "map[]");
    }
}

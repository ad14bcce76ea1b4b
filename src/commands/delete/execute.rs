//! What `delete` removes once its target is known: the keys are collected during one
//! listing, logged, and (with `--confirm`) deleted in batches, sentinels first; `garbage`
//! also discards what killed writers left behind.

use super::mode::GarbageScope;
use crate::error::Error;
use crate::format::backup_name;
use crate::repo::retention::{BackupInfo, Catalogue};
use crate::repo::{BACKUP_FOLDER, WAL_FOLDER};
use crate::storage::Storage;
use crate::time::UtcTime;

/// Keys per `delete_many` call (S3's `DeleteObjects` limit; the S3 back-end may split further
/// by `S3_DELETE_BATCH_SIZE`).
const DELETE_BATCH: usize = 1000;

/// WAL-G's name for the only storage wal-rus has.
const STORAGE_NAME: &str = "default";

/// Deletes, within `scope`, every object older than `target` that no permanent backup
/// protects (the "older than target" rule).
pub(super) fn delete_before(
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
    let needed = catalogue.bases_kept_with(target);
    for name in &needed {
        crate::info!("Keeping {name}: a kept delta is built on it");
    }
    let wal = format!("{WAL_FOLDER}/");
    let base = format!("{BACKUP_FOLDER}/");
    let keys = collect(storage, "", |key| {
        let in_scope = match scope {
            GarbageScope::Both => true,
            GarbageScope::Archives => key.starts_with(&wal),
            GarbageScope::Backups => key.starts_with(&base),
        };
        let needed_base = key
            .strip_prefix(&base)
            .is_some_and(|rest| needed.contains(backup_name::owner_of(rest)));
        in_scope
            && catalogue.older(key, &target.sentinel_file)
            && !catalogue.is_permanent(key)
            && !needed_base
    })?;
    execute(storage, keys, confirm)
}

/// How old a leftover of an interrupted write must be before `delete garbage` removes it:
/// far beyond the longest upload of a partition or segment, so no running write is hit.
pub const INTERRUPTED_AGE_SECS: i64 = 24 * 3600;

/// `delete garbage`: removes what killed writers left (temporary files, unfinished
/// multipart uploads) older than [`INTERRUPTED_AGE_SECS`], within `scope`.
pub(super) fn sweep_interrupted(
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
pub(super) fn collect(
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
pub(super) fn execute(
    storage: &dyn Storage,
    mut keys: Vec<String>,
    confirm: bool,
) -> Result<(), Error> {
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

//! Restoring a delta backup (walg-compat §9.5): the full backup at the bottom of its chain
//! first, then each delta in turn, its increments applied to the files the backups below it
//! restored.
//!
//! WAL-G restricts each backup below the newest to the files the one above it skipped or
//! incremented; wal-rus restricts every backup of the chain to the files the newest one
//! lists, which ends in the same directory (a file sent whole later is overwritten then) and
//! needs one question per entry instead of one set per level. The newest backup's `Files`
//! and the current backup's `Files` answer it from disk ([`FileIndex`]), so memory does not
//! grow with the number of files or the length of the chain; the chain itself is a list of
//! names and sentinels.

use crate::error::Error;
use crate::pipeline::extract::{Action, EntryPlan};
use crate::pipeline::file_index::FileIndex;
use crate::repo::backups::{self, files_metadata_key};
use crate::storage::Storage;
use std::io;

pub(super) use crate::repo::backups::{Link, chain_of};

/// A backup's `Files` index, for a backup of a chain: without the document its increments
/// cannot be told from whole files.
pub(super) fn required_index(storage: &dyn Storage, name: &str) -> Result<FileIndex, Error> {
    backups::files_index(storage, name)?.ok_or_else(|| {
        Error::Precondition(format!(
            "{} is missing: the delta chain cannot be restored without it",
            files_metadata_key(name)
        ))
    })
}

/// The entries of one backup of a chain: only the newest backup's files, increments applied.
pub(super) struct ChainPlan<'a> {
    /// The newest backup's `Files`: what the restored directory holds.
    pub newest: &'a FileIndex,
    /// The `Files` of the backup being unpacked: which entries are increments.
    pub own: &'a FileIndex,
}

impl EntryPlan for ChainPlan<'_> {
    fn action(&self, name: &str) -> io::Result<Action> {
        if matches!(
            name.trim_start_matches('/'),
            "backup_label" | "tablespace_map" | "global/pg_control"
        ) {
            return Ok(Action::Write);
        }
        if self.newest.get(name)?.is_none() {
            return Ok(Action::Skip);
        }
        Ok(match self.own.get(name)? {
            Some(r) if r.is_incremented() => Action::Increment,
            _ => Action::Write,
        })
    }
}

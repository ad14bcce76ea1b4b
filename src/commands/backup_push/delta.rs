//! Whether backup-push takes a delta, and on which base (walg-compat §8.4), decided as
//! WAL-G decides: `WALG_DELTA_MAX_STEPS`, then the base by name, by user data or the latest,
//! then the reasons to fall back to a full backup, each logged in WAL-G's words.

use crate::error::Error;
use crate::format::sentinel::{DeltaInfo, Sentinel};
use crate::pipeline::delta::{DeltaBase, DeltaStats};
use crate::repo::backups;
use crate::storage::Storage;

/// What the user asked about deltas (command line over settings).
#[derive(Clone, Debug, Default)]
pub(super) struct DeltaRequest {
    /// `WALG_DELTA_MAX_STEPS`; 0, or `--full`, means a full backup.
    pub max_steps: u32,
    /// `WALG_DELTA_ORIGIN=LATEST_FULL`: every delta on the chain's full backup.
    pub from_full: bool,
    /// `--delta-from-name` / `WALG_DELTA_FROM_NAME`.
    pub from_name: Option<String>,
    /// `--delta-from-user-data` / `WALG_DELTA_FROM_USER_DATA`, parsed.
    pub from_user_data: Option<serde_json::Value>,
    /// The new backup is to be permanent.
    pub permanent: bool,
}

/// `WALG_DELTA_ORIGIN`: `LATEST` (or unset) chains deltas, `LATEST_FULL` bases every delta
/// on the full backup; any other word stops backup-push, as in WAL-G.
pub(super) fn parse_origin(origin: Option<&str>) -> Result<bool, Error> {
    match origin {
        None | Some("LATEST") => Ok(false),
        Some("LATEST_FULL") => Ok(true),
        Some(other) => Err(Error::Usage(format!(
            "Unknown delta origin '{other}' (WALG_DELTA_ORIGIN): expected LATEST or LATEST_FULL"
        ))),
    }
}

/// The base a delta is taken on.
pub(super) struct Base {
    pub name: String,
    pub sentinel: Sentinel,
    /// `DeltaCount` of the new backup.
    pub count: u64,
}

impl Base {
    /// The sentinel's delta members of a backup taken on this base.
    pub fn delta_info(&self) -> DeltaInfo {
        DeltaInfo {
            lsn: self.sentinel.lsn.unwrap_or_default(),
            from: self.name.clone(),
            full_name: self
                .sentinel
                .delta
                .as_ref()
                .map(|d| d.full_name.clone())
                .unwrap_or_else(|| self.name.clone()),
            count: self.count,
        }
    }

    /// The base's `Files`, indexed, for the walk; without `files_metadata.json` every file
    /// is sent whole, as WAL-G does.
    pub fn open(&self, storage: &dyn Storage) -> Result<DeltaBase, Error> {
        let files = match backups::files_index(storage, &self.name)? {
            Some(f) => f,
            None => {
                crate::warn!(
                    "{} has no files_metadata.json: every file of the delta is sent whole",
                    self.name
                );
                crate::pipeline::file_index::FileIndexBuilder::new()
                    .and_then(|b| b.finish())
                    .map_err(|e| Error::io("creating the files index", e))?
            }
        };
        let lsn = self.sentinel.lsn.unwrap_or_default().0;
        Ok(DeltaBase::new(files, lsn))
    }
}

/// The backup the user's settings point at, before WAL-G's fallbacks.
fn chosen(storage: &dyn Storage, req: &DeltaRequest) -> Result<Option<String>, Error> {
    if let Some(name) = &req.from_name {
        // Must exist: a name that does not is an error, not a full backup.
        return backups::resolve(storage, name).map(|b| Some(b.name));
    }
    if let Some(wanted) = &req.from_user_data {
        return backups::find_by_user_data(storage, wanted);
    }
    Ok(backups::latest(storage)?.map(|b| b.name))
}

/// The base of the delta to take, or `None` for a full backup.
pub(super) fn choose(storage: &dyn Storage, req: &DeltaRequest) -> Result<Option<Base>, Error> {
    if req.max_steps == 0 {
        return Ok(None);
    }
    let Some(name) = chosen(storage, req)? else {
        crate::info!("Couldn't find previous backup. Doing full backup.");
        return Ok(None);
    };
    let sentinel = backups::read_sentinel(storage, &name)?;
    let count = sentinel.delta.as_ref().map_or(1, |d| d.count + 1);
    if count > u64::from(req.max_steps) {
        crate::info!("Reached max delta steps. Doing full backup.");
        return Ok(None);
    }
    if sentinel.lsn.is_none() {
        crate::info!(
            "LATEST backup was made without support for delta feature. Fallback to full backup with LSN marker for future deltas."
        );
        return Ok(None);
    }
    let permanent = match backups::read_metadata(storage, &name) {
        Ok(Some(m)) => m.is_permanent,
        Ok(None) => {
            crate::info!(
                "Failed to get previous backup metadata: metadata.json of {name} does not exist. Doing full backup."
            );
            return Ok(None);
        }
        Err(e) => {
            crate::info!("Failed to get previous backup metadata: {e}. Doing full backup.");
            return Ok(None);
        }
    };
    if !req.permanent && !req.from_full && permanent {
        crate::info!("Can't do a delta backup from permanent backup. Doing full backup.");
        return Ok(None);
    }
    let (name, sentinel) = match (&sentinel.delta, req.from_full) {
        (Some(d), true) => {
            crate::info!("Delta will be made from full backup.");
            let full = d.full_name.clone();
            let s = backups::read_sentinel(storage, &full)?;
            (full, s)
        }
        _ => (name, sentinel),
    };
    crate::info!(
        "Delta backup from {name} with LSN {}.",
        sentinel.lsn.unwrap_or_default()
    );
    Ok(Some(Base {
        name,
        sentinel,
        count,
    }))
}

/// Refuses a base the new backup cannot follow: one of another cluster (checked first: it
/// is the cause whenever both hold), or one that ends after this backup starts.
pub(super) fn check(
    base: &Base,
    start_lsn: crate::format::lsn::Lsn,
    system_identifier: Option<u64>,
) -> Result<(), Error> {
    if let (Some(ours), Some(theirs)) = (system_identifier, base.sentinel.system_identifier)
        && ours != theirs
    {
        return Err(Error::Precondition(format!(
            "cannot take a delta of backup {}: it is of another cluster (system identifier {theirs}, this one {ours})",
            base.name
        )));
    }
    if let Some(finish) = base.sentinel.finish_lsn
        && finish > start_lsn
    {
        return Err(Error::Precondition(format!(
            "backup {} finished at LSN {finish}, after this backup's start at {start_lsn}: backup from future",
            base.name
        )));
    }
    Ok(())
}

/// The closing line of a delta: what it left out, incremented and sent whole.
pub(super) fn report(base: &Base, s: &DeltaStats) {
    crate::info!(
        "delta of {}: {} files unchanged, {} incremented ({} pages), {} stored whole after their scan",
        base.name,
        s.skipped,
        s.incremented,
        s.pages,
        s.whole_after_scan
    );
}

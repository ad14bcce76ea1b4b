//! `backup-mark NAME` / `backup-mark -i NAME` (walg-compat §10.5): make a backup permanent,
//! so retention never deletes it, or ordinary again.
//!
//! A delta is only restorable with every backup below it, so marking one permanent also marks
//! its whole base chain, oldest first (an interrupted run then never leaves a permanent
//! delta on an impermanent base). For the same reason a backup cannot become impermanent
//! while a delta built directly on it is permanent. Only `metadata.json` is rewritten: it is
//! the single source of truth for permanence, and rewriting the sentinel would change its
//! modification time and with it `LATEST`.

use crate::config::Settings;
use crate::error::Error;
use crate::repo::backups;
use crate::repo::permanence::{self, required_metadata};
use crate::storage::Storage;

/// What `backup-mark` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The backup name.
    pub name: String,
    /// Remove the permanent mark instead of setting it.
    pub impermanent: bool,
}

/// Runs the command.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    let storage = settings.open_storage()?;
    let backup = backups::resolve(storage.as_ref(), &args.name)?;
    if args.impermanent {
        mark_impermanent(storage.as_ref(), &backup.name)
    } else {
        permanence::mark_permanent(storage.as_ref(), &backup.name)
    }
}

/// Removes the permanent mark of `name` alone; refused while a delta built directly on it is
/// permanent.
pub fn mark_impermanent(storage: &dyn Storage, name: &str) -> Result<(), Error> {
    crate::info!("Retrieving previous related backups to be marked: toPermanent=false");
    let mut meta = required_metadata(storage, name)?;
    for other in backups::list_backups(storage)? {
        if other.name == name {
            continue;
        }
        let sentinel = backups::read_sentinel(storage, &other.name)?;
        if sentinel.delta.as_ref().is_some_and(|d| d.from == name)
            && backups::read_metadata(storage, &other.name)?.is_some_and(|m| m.is_permanent)
        {
            return Err(Error::Precondition(format!(
                "Can't mark backup '{name}' as impermanent. There is permanent increment backup that depends on this backup."
            )));
        }
    }
    if !meta.is_permanent {
        crate::warn!("Backup {name} is already marked as impermanent, ignoring...");
        return Ok(());
    }
    crate::info!("Retrieved backups to be marked, marking: [{name}]");
    meta.is_permanent = false;
    backups::write_metadata(storage, name, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::lsn::Lsn;
    use crate::format::metadata::ExtendedMetadata;
    use crate::format::sentinel::{DeltaInfo, Sentinel};
    use crate::repo::permanence::{backups_to_mark_permanent, mark_permanent};
    use crate::storage::BytesBody;
    use crate::storage::fs::FsStorage;

    const FULL: &str = "base_000000010000000000000003";
    const D1: &str = "base_000000010000000000000005_D_000000010000000000000003";
    const D2: &str = "base_000000010000000000000007_D_000000010000000000000005";

    fn catalogue() -> (tempfile::TempDir, FsStorage) {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        for (name, from) in [(FULL, None), (D1, Some(FULL)), (D2, Some(D1))] {
            let s = Sentinel {
                lsn: Some(Lsn(1)),
                delta: from.map(|f: &str| DeltaInfo {
                    lsn: Lsn(1),
                    from: f.into(),
                    full_name: FULL.into(),
                    count: 1,
                }),
                ..Default::default()
            };
            st.put(
                &backups::sentinel_key(name),
                &BytesBody(s.to_json().as_bytes()),
            )
            .unwrap();
            let m = ExtendedMetadata {
                start_time: "2024-05-01T10:00:00Z".into(),
                finish_time: "2024-05-01T10:00:00Z".into(),
                ..Default::default()
            };
            backups::write_metadata(&st, name, &m).unwrap();
        }
        (dir, st)
    }

    fn permanent(st: &FsStorage, name: &str) -> bool {
        backups::read_metadata(st, name)
            .unwrap()
            .unwrap()
            .is_permanent
    }

    #[test]
    fn permanent_marks_chain_and_impermanent_respects_it() {
        let (_d, st) = catalogue();
        let plan: Vec<String> = backups_to_mark_permanent(&st, D1)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(plan, [FULL, D1]);
        mark_permanent(&st, D1).unwrap();
        assert!(permanent(&st, FULL) && permanent(&st, D1) && !permanent(&st, D2));
        // Only what is not permanent yet is rewritten.
        assert_eq!(backups_to_mark_permanent(&st, D2).unwrap().len(), 1);

        let err = mark_impermanent(&st, FULL).unwrap_err().to_string();
        assert!(err.contains("There is permanent increment backup"), "{err}");
        mark_impermanent(&st, D1).unwrap();
        assert!(!permanent(&st, D1));
        mark_impermanent(&st, FULL).unwrap();
        assert!(!permanent(&st, FULL));
        // Already impermanent: only a warning.
        mark_impermanent(&st, FULL).unwrap();
    }

    #[test]
    fn missing_pieces_are_errors() {
        let (_d, st) = catalogue();
        std::fs::remove_file(std::path::Path::new(&_d.path()).join(backups::metadata_key(FULL)))
            .unwrap();
        assert!(
            mark_permanent(&st, D2)
                .unwrap_err()
                .to_string()
                .contains("metadata.json of backup 'base_000000010000000000000003'")
        );
        // Nothing was written before the whole chain was known.
        assert!(!permanent(&st, D2));
        st.delete_many(&[backups::sentinel_key(D1)]).unwrap();
        assert!(
            mark_permanent(&st, D2)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}

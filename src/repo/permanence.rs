//! Permanence (walg-compat §10.5): `metadata.json`'s `is_permanent` is its single source of
//! truth, and a delta is only restorable with every backup below it, so marking one
//! permanent marks its whole base chain, oldest first (an interrupted run then never leaves
//! a permanent delta on an impermanent base). Used by `backup-mark` and by `backup-push
//! --permanent` of a delta.

use super::backups;
use crate::error::Error;
use crate::format::metadata::ExtendedMetadata;
use crate::storage::Storage;
use std::collections::HashSet;

/// `metadata.json` of `name`, which marking needs.
pub fn required_metadata(storage: &dyn Storage, name: &str) -> Result<ExtendedMetadata, Error> {
    backups::read_metadata(storage, name)?.ok_or_else(|| {
        Error::backup_missing(format!(
            "metadata.json of backup '{name}' does not exist; cannot change its permanence"
        ))
    })
}

/// The backups `mark_permanent` would change: `name` and its base chain (following
/// `DeltaFrom`), oldest first, leaving out those already permanent.
pub fn backups_to_mark_permanent(
    storage: &dyn Storage,
    name: &str,
) -> Result<Vec<(String, ExtendedMetadata)>, Error> {
    let mut chain = Vec::new();
    let mut seen = HashSet::new();
    let mut current = name.to_string();
    loop {
        if !seen.insert(current.clone()) {
            return Err(Error::Precondition(format!(
                "the delta chain of backup '{name}' loops back to '{current}'"
            )));
        }
        let meta = required_metadata(storage, &current)?;
        let sentinel = backups::read_sentinel(storage, &current)?;
        if current == name && meta.is_permanent {
            crate::warn!("Backup {name} is already marked as permanent, ignoring...");
        }
        let next = sentinel.delta.map(|d| d.from);
        if !meta.is_permanent {
            chain.push((current, meta));
        }
        match next {
            Some(base) => current = base,
            None => break,
        }
    }
    chain.reverse();
    Ok(chain)
}

/// Marks `name` and its base chain permanent.
pub fn mark_permanent(storage: &dyn Storage, name: &str) -> Result<(), Error> {
    crate::info!("Retrieving previous related backups to be marked: toPermanent=true");
    let to_mark = backups_to_mark_permanent(storage, name)?;
    let names: Vec<&str> = to_mark.iter().map(|(n, _)| n.as_str()).collect();
    crate::info!(
        "Retrieved backups to be marked, marking: [{}]",
        names.join(" ")
    );
    for (backup, mut meta) in to_mark {
        meta.is_permanent = true;
        backups::write_metadata(storage, &backup, &meta)?;
    }
    Ok(())
}

//! The backup catalogue as WAL-G sees it (walg-compat §1.6), shared by every backup command.
//!
//! A backup exists exactly when its sentinel does, directly in `basebackups_005/`; its name
//! is the sentinel's file name cut at the first `_backup`; `LATEST` is the sentinel with the
//! newest last-modified time. Nothing here derives existence or order from folders, names or
//! `metadata.json`, because WAL-G does not, and the two tools must agree on what exists.
//!
//! Listings keep one small record per backup; documents are read one at a time and are small
//! (a legacy sentinel with embedded file maps is streamed past, see `format::sentinel`).

use super::BACKUP_FOLDER;
use crate::error::Error;
use crate::format::backup_name::{self, SENTINEL_SUFFIX};
use crate::format::files_metadata::{self, FileDescription};
use crate::format::metadata::ExtendedMetadata;
use crate::format::sentinel::Sentinel;
use crate::pipeline::file_index::{self, FileIndex, FileIndexBuilder, FileRecord};
use crate::storage::{BytesBody, Storage, StorageError};
use crate::time::PreciseTime;
use std::collections::HashSet;
use std::io::{self, Read};

/// The word that selects the newest backup.
pub const LATEST: &str = "LATEST";

/// One backup as the listing of `basebackups_005/` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRef {
    /// Backup name (`base_...`).
    pub name: String,
    /// Key of its sentinel, relative to the storage root.
    pub sentinel_key: String,
    /// Last modification of the sentinel, as the storage reports it (fractions included:
    /// `delete before TIME` compares them as WAL-G does).
    pub modified: PreciseTime,
}

/// Key of backup `name`'s sentinel.
pub fn sentinel_key(name: &str) -> String {
    format!("{BACKUP_FOLDER}/{}", backup_name::sentinel_file_name(name))
}

/// Prefix of every object inside backup `name`'s folder (ends with `/`).
pub fn folder_prefix(name: &str) -> String {
    format!("{BACKUP_FOLDER}/{name}/")
}

/// Key of backup `name`'s `metadata.json`.
pub fn metadata_key(name: &str) -> String {
    format!("{BACKUP_FOLDER}/{name}/metadata.json")
}

/// Key of backup `name`'s `files_metadata.json`.
pub fn files_metadata_key(name: &str) -> String {
    format!("{BACKUP_FOLDER}/{name}/files_metadata.json")
}

/// Prefix of backup `name`'s tar partitions (ends with `/`).
pub fn partitions_prefix(name: &str) -> String {
    format!("{BACKUP_FOLDER}/{name}/tar_partitions/")
}

/// Key of the tar `tar_file` (see `tar_file_name`) of backup `name`.
pub fn partition_key(name: &str, tar_file: &str) -> String {
    format!("{}{tar_file}", partitions_prefix(name))
}

/// The object name of a tar for a method's extension: `part_001.tar.lz4`, or WAL-G
/// master's dot-less `part_001.tar` without compression.
pub fn tar_file_name(stem: &str, ext: &str) -> String {
    if ext.is_empty() {
        format!("{stem}.tar")
    } else {
        format!("{stem}.tar.{ext}")
    }
}

/// Every backup, oldest sentinel first. Ties keep the listing's (key) order, so the one
/// listed last counts as newer, as in WAL-G master's stable sort.
pub fn list_backups(storage: &dyn Storage) -> Result<Vec<BackupRef>, Error> {
    let mut out = Vec::new();
    storage.list(&format!("{BACKUP_FOLDER}/"), false, &mut |m| {
        if !m.key.ends_with(SENTINEL_SUFFIX) {
            return;
        }
        if let Some(name) = backup_name::name_from_sentinel(&m.key) {
            out.push(BackupRef {
                name: name.to_string(),
                sentinel_key: m.key.clone(),
                modified: m.last_modified,
            });
        }
    })?;
    out.sort_by_key(|b| b.modified);
    Ok(out)
}

/// The newest backup, or `None` when there is none.
pub fn latest(storage: &dyn Storage) -> Result<Option<BackupRef>, Error> {
    Ok(list_backups(storage)?.pop())
}

/// The error WAL-G gives for a backup that is not there.
pub fn missing_backup(name: &str) -> Error {
    Error::backup_missing(format!("Backup '{name}' does not exist."))
}

/// Finds `LATEST` or a named backup (a HEAD of its sentinel, as WAL-G does).
pub fn resolve(storage: &dyn Storage, name: &str) -> Result<BackupRef, Error> {
    if name == LATEST {
        return latest(storage)?.ok_or_else(|| Error::backup_missing("No backups found"));
    }
    if !backup_name::is_usable_name(name) {
        return Err(missing_backup(name));
    }
    let key = sentinel_key(name);
    match storage.head(&key)? {
        Some(meta) => Ok(BackupRef {
            name: name.to_string(),
            sentinel_key: key,
            modified: meta.last_modified,
        }),
        None => Err(missing_backup(name)),
    }
}

fn invalid(key: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!("reading {key}"),
        io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    )
}

/// Whole reads of a document from storage before a parse error is believed.
const DOCUMENT_ATTEMPTS: u32 = 3;

/// Reads the document `key` and parses it with `parse`, from the start again when the
/// parse fails: GetObject has no checksum of its own, and a byte changed on the way breaks
/// the parse before the body's end, where its MD5 would be checked. A document that is
/// really broken fails the same way every time. `Ok(None)` when it does not exist.
pub fn read_document<T>(
    storage: &dyn Storage,
    key: &str,
    parse: &mut dyn FnMut(crate::storage::ObjectReader) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let mut attempt = 1;
    loop {
        let reader = match storage.get(key) {
            Ok(r) => r,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match parse(reader) {
            Ok(v) => return Ok(Some(v)),
            // A document over its cap costs only the cap to read again.
            Err(e) if attempt < DOCUMENT_ATTEMPTS => {
                crate::warn!(
                    "{e}; reading {key} again ({attempt} of {})",
                    DOCUMENT_ATTEMPTS - 1
                );
                std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads backup `name`'s sentinel; a missing sentinel means the backup does not exist.
pub fn read_sentinel(storage: &dyn Storage, name: &str) -> Result<Sentinel, Error> {
    let key = sentinel_key(name);
    read_document(storage, &key, &mut |reader| {
        Sentinel::from_reader(reader).map_err(|e| invalid(&key, e))
    })?
    .ok_or_else(|| missing_backup(name))
}

fn record_of(d: &FileDescription) -> FileRecord {
    let mut flags = 0;
    if d.is_incremented {
        flags |= file_index::INCREMENTED;
    }
    if d.is_skipped {
        flags |= file_index::SKIPPED;
    }
    FileRecord {
        mtime: PreciseTime::parse(&d.mtime),
        flags,
    }
}

/// Backup `name`'s `Files`, indexed on disk; `None` when it has no `files_metadata.json`.
pub fn files_index(storage: &dyn Storage, name: &str) -> Result<Option<FileIndex>, Error> {
    let key = files_metadata_key(name);
    read_document(storage, &key, &mut |reader| {
        let mut builder =
            FileIndexBuilder::new().map_err(|e| Error::io("creating the files index", e))?;
        files_metadata::for_each_file(reader, |entry, desc| builder.add(&entry, record_of(&desc)))
            .map_err(|e| Error::io(format!("reading {key}"), e))?;
        builder
            .finish()
            .map_err(|e| Error::io(format!("indexing {key}"), e))
    })
}

/// The one backup whose `metadata.json` user data equals `wanted` (WAL-G's structural
/// equality, numbers compared as the doubles Go decodes them to); `None` when no backup
/// has it, an error when several do.
pub fn find_by_user_data(
    storage: &dyn Storage,
    wanted: &serde_json::Value,
) -> Result<Option<String>, Error> {
    let mut found = Vec::new();
    for b in list_backups(storage)? {
        if let Some(m) = read_metadata(storage, &b.name)?
            && m.user_data.as_ref().is_some_and(|u| same_json(u, wanted))
        {
            found.push(b.name);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Error::Precondition(format!(
            "too many backups ({n}) found with specified user data: {}",
            found.join(" ")
        ))),
    }
}

/// JSON equality as Go's `reflect.DeepEqual` sees two decoded documents.
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Longest chain followed; a longer one is taken for a loop in the sentinels.
const MAX_CHAIN: usize = 10_000;

/// One backup of a delta chain, with its sentinel.
pub struct Link {
    pub name: String,
    pub sentinel: Sentinel,
}

/// The delta chain of backup `name` (whose sentinel is `sentinel`), newest first, down to
/// its full backup; a missing base is an error, a loop too.
pub fn chain_of(storage: &dyn Storage, name: &str, sentinel: Sentinel) -> Result<Vec<Link>, Error> {
    let mut seen = HashSet::from([name.to_string()]);
    let mut chain = vec![Link {
        name: name.to_string(),
        sentinel,
    }];
    while let Some(from) = chain
        .last()
        .and_then(|l| l.sentinel.delta.as_ref())
        .map(|d| d.from.clone())
    {
        if !seen.insert(from.clone()) || chain.len() >= MAX_CHAIN {
            return Err(Error::Precondition(format!(
                "the delta chain of backup '{name}' loops back to '{from}'"
            )));
        }
        let sentinel = read_sentinel(storage, &from)?;
        chain.push(Link {
            name: from,
            sentinel,
        });
    }
    Ok(chain)
}

/// Reads backup `name`'s `metadata.json`; `Ok(None)` when it does not exist.
pub fn read_metadata(storage: &dyn Storage, name: &str) -> Result<Option<ExtendedMetadata>, Error> {
    let key = metadata_key(name);
    read_document(storage, &key, &mut |mut reader| {
        // Read whole (it is small), so capped: the budget of its members, four times over.
        let cap = 4 * crate::format::budget::MEMBER_CAP;
        let mut bytes = Vec::new();
        (&mut reader)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("reading {key}"), e))?;
        if bytes.len() as u64 > cap {
            return Err(invalid(
                &key,
                format!(
                    "larger than {} KiB, more than WAL-G ever writes",
                    cap / 1024
                ),
            ));
        }
        ExtendedMetadata::from_slice(&bytes).map_err(|e| invalid(&key, e))
    })
}

/// Writes backup `name`'s `metadata.json` (raw JSON, never compressed or encrypted).
pub fn write_metadata(
    storage: &dyn Storage,
    name: &str,
    meta: &ExtendedMetadata,
) -> Result<(), Error> {
    let json = meta.to_json();
    storage.put(&metadata_key(name), &BytesBody(json.as_bytes()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;
    use std::time::{Duration, SystemTime};

    fn put_at(root: &std::path::Path, st: &FsStorage, key: &str, body: &[u8], secs: u64) {
        st.put(key, &BytesBody(body)).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(key))
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        let a = "base_000000010000000000000003";
        let b = "base_000000010000000000000007_D_000000010000000000000003";
        put_at(dir.path(), &st, &sentinel_key(b), br#"{"LSN":117440552,"DeltaFrom":"base_000000010000000000000003","DeltaLSN":1,"DeltaFullName":"x","DeltaCount":1}"#, 2_000);
        put_at(
            dir.path(),
            &st,
            &sentinel_key(a),
            br#"{"LSN":50331688}"#,
            1_000,
        );
        // Neither a sibling folder without sentinel nor objects inside folders count.
        put_at(
            dir.path(),
            &st,
            "basebackups_005/base_000000010000000000000009/metadata.json",
            b"{}",
            3_000,
        );
        put_at(
            dir.path(),
            &st,
            "basebackups_005/junk_backup_stop_sentinel.json.tmp",
            b"{}",
            3_000,
        );
        let list = list_backups(&st).unwrap();
        assert_eq!(
            list.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(
            list[0].modified,
            PreciseTime::from_utc(crate::time::UtcTime(1_000))
        );
        assert_eq!(latest(&st).unwrap().unwrap().name, b);
        assert_eq!(resolve(&st, LATEST).unwrap().name, b);
        assert_eq!(
            resolve(&st, a).unwrap().sentinel_key,
            "basebackups_005/base_000000010000000000000003_backup_stop_sentinel.json"
        );
        let err = resolve(&st, "base_000000010000000000000009").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Backup 'base_000000010000000000000009' does not exist."
        );
        assert!(resolve(&st, "../x").is_err());
        assert!(read_sentinel(&st, b).unwrap().is_delta());
        assert!(read_sentinel(&st, "base_000000010000000000000009").is_err());

        assert_eq!(read_metadata(&st, a).unwrap(), None);
        let meta = ExtendedMetadata {
            start_time: "2024-05-01T10:00:00Z".into(),
            finish_time: "2024-05-01T10:00:01Z".into(),
            is_permanent: true,
            ..Default::default()
        };
        write_metadata(&st, a, &meta).unwrap();
        assert_eq!(read_metadata(&st, a).unwrap().unwrap(), meta);
        put_at(dir.path(), &st, &metadata_key(b), b"{not json", 1);
        assert!(
            read_metadata(&st, b)
                .unwrap_err()
                .to_string()
                .contains("metadata.json")
        );
    }

    #[test]
    fn empty_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        assert!(list_backups(&st).unwrap().is_empty());
        assert!(latest(&st).unwrap().is_none());
        assert!(resolve(&st, LATEST).is_err());
    }
}

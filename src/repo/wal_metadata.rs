//! WAL-G's optional WAL metadata objects (`WALG_UPLOAD_WAL_METADATA`, walg-compat §2.6):
//! after wal-push stores a WAL file, `INDIVIDUAL` writes `wal_005/<name>.json` with the
//! file's modification time; `BULK` collects the same document in the local status folder
//! and, when a segment whose name ends in `F` is pushed, merges those of its 16 siblings
//! into one `wal_005/<first 23 characters>.json`. Nothing restores from them; monitoring
//! reads them, so a DBA who set the variable gets them from wal-rus too.

use super::WAL_FOLDER;
pub use crate::config::WalMetadata;
use crate::error::Error;
use crate::format::go_json;
use crate::format::sentinel::DATE_FMT;
use crate::storage::{BytesBody, Storage, join_key};
use crate::time::PreciseTime;
use std::fs;
use std::path::Path;

/// `{"<name>":{"created_time":"<RFC 3339, UTC>","date_fmt":"%Y-%m-%dT%H:%M:%S.%fZ"}}`, as
/// Go's encoder writes WAL-G's map.
fn document(entries: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, created)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_json::push_str(&mut out, name);
        out.push_str(":{\"created_time\":");
        go_json::push_str(&mut out, created);
        out.push_str(",\"date_fmt\":");
        go_json::push_str(&mut out, DATE_FMT);
        out.push('}');
    }
    out.push('}');
    out
}

/// Writes the metadata WAL-G writes after pushing the WAL file at `path`; `status_dir` is
/// the local folder WAL-G keeps its markers in (for `BULK`).
pub fn upload(
    mode: WalMetadata,
    storage: &dyn Storage,
    path: &Path,
    name: &str,
    status_dir: &Path,
) -> Result<(), Error> {
    if mode == WalMetadata::None {
        return Ok(());
    }
    let created = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| PreciseTime::from_system(t).to_rfc3339_utc())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    upload_created(mode, storage, name, created, status_dir)
}

/// As [`upload`], for a WAL file created at `created` (RFC 3339, UTC) that is not a local
/// file: wal-receive's segments, stamped with the time they were stored, as WAL-G does.
pub fn upload_created(
    mode: WalMetadata,
    storage: &dyn Storage,
    name: &str,
    created: String,
    status_dir: &Path,
) -> Result<(), Error> {
    if mode == WalMetadata::None {
        return Ok(());
    }
    let doc = document(&[(name.to_string(), created)]);
    if mode == WalMetadata::Individual {
        storage.put(
            &join_key(WAL_FOLDER, &format!("{name}.json")),
            &BytesBody(doc.as_bytes()),
        )?;
        return Ok(());
    }
    fs::create_dir_all(status_dir)
        .and_then(|()| fs::write(status_dir.join(format!("{name}.json")), &doc))
        .map_err(|e| {
            Error::io(
                format!("writing WAL metadata in {}", status_dir.display()),
                e,
            )
        })?;
    if !name.ends_with('F') {
        return Ok(());
    }
    let group = &name[..name.len() - 1];
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(status_dir)
        .map_err(|e| Error::io(format!("reading {}", status_dir.display()), e))?
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !(file.starts_with(group) && file.ends_with(".json")) {
            continue;
        }
        // A broken local file must not fail the push of the segment (WAL-G skips it too).
        match fs::read(entry.path()).ok().and_then(|b| parse_entries(&b)) {
            Some(mut found) => entries.append(&mut found),
            None => crate::warn!("skipping unreadable WAL metadata file {file}"),
        }
        files.push(entry.path());
    }
    entries.sort();
    entries.dedup_by(|a, b| a.0 == b.0);
    storage.put(
        &join_key(WAL_FOLDER, &format!("{group}.json")),
        &BytesBody(document(&entries).as_bytes()),
    )?;
    for f in files {
        let _ = fs::remove_file(f);
    }
    Ok(())
}

/// The `(name, created_time)` pairs of one local metadata document.
fn parse_entries(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut out = Vec::new();
    for (name, desc) in v.as_object()? {
        out.push((
            name.clone(),
            desc.get("created_time")?.as_str()?.to_string(),
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStorage;

    #[test]
    fn individual_and_bulk_as_walg_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let st = FsStorage::new(store.to_str().unwrap());
        let status = dir.path().join("status");
        let seg = dir.path().join("00000001000000000000000E");
        fs::write(&seg, b"x").unwrap();
        upload(
            WalMetadata::Individual,
            &st,
            &seg,
            "00000001000000000000000E",
            &status,
        )
        .unwrap();
        let doc = fs::read_to_string(store.join("wal_005/00000001000000000000000E.json")).unwrap();
        assert!(
            doc.starts_with("{\"00000001000000000000000E\":{\"created_time\":\""),
            "{doc}"
        );
        assert!(
            doc.ends_with("Z\",\"date_fmt\":\"%Y-%m-%dT%H:%M:%S.%fZ\"}}"),
            "{doc}"
        );
        // BULK: nothing uploaded until the F segment, then one merged document.
        upload(
            WalMetadata::Bulk,
            &st,
            &seg,
            "00000001000000000000000E",
            &status,
        )
        .unwrap();
        assert!(!store.join("wal_005/00000001000000000000000.json").exists());
        let last = dir.path().join("00000001000000000000000F");
        fs::write(&last, b"y").unwrap();
        upload(
            WalMetadata::Bulk,
            &st,
            &last,
            "00000001000000000000000F",
            &status,
        )
        .unwrap();
        let bulk = fs::read_to_string(store.join("wal_005/00000001000000000000000.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&bulk).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2, "{bulk}");
        assert_eq!(
            fs::read_dir(&status).unwrap().count(),
            0,
            "local files removed"
        );
    }
}

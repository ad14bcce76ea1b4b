//! `backup-fetch DEST NAME|LATEST`: restore a base backup into an empty directory
//! (walg-compat §9), leaving recovery settings to the operator as WAL-G does.
//!
//! Data partitions are unpacked by `WALG_DOWNLOAD_CONCURRENCY` worker threads fed from a
//! bounded queue, each streaming download → decompress → tar → files through one arena
//! buffer; then `backup_label.tar`, then `pg_control.tar`. A failed partition is tried again
//! from its start. Afterwards every entry `files_metadata.json` lists is checked to exist.
//! If anything fails, `global/pg_control` is removed so the half-restored directory cannot
//! be started as if it were complete.
//!
//! A delta backup is restored with its chain ([`chain`]): the full backup first, then each
//! delta, its increments applied in place, every step limited to the files the newest
//! backup lists.

mod chain;

use crate::codec::{Crypter, Decoder, ReadFormat};
use crate::config::Settings;
use crate::error::Error;
use crate::format::files_metadata;
use crate::format::spec::TablespaceSpec;
use crate::pipeline::arena::Arena;
use crate::pipeline::dest::{self, Destination};
use crate::pipeline::extract::{self, EntryPlan, Extracted, WriteAll};
use crate::pipeline::rate::{Limited, RateLimit};
use crate::pipeline::sync::{self, FileSync, NoSync, SyncNow};
use crate::pipeline::{plan, workers};
use crate::repo::backups::{self, files_metadata_key};
use crate::storage::{Storage, StorageError};
use crossbeam_channel::bounded;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;

/// Attempts per partition before the restore fails.
const ATTEMPTS: u32 = 3;

/// Which of the special partitions a `tar_partitions/` object is (walg-compat §9.4), with
/// v3.0.8's trailing-dot names (`pg_control.tar.`) treated as the special ones too.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Role {
    Data,
    Label,
    Control,
}

fn role_of(object: &str) -> Role {
    let base = object.rsplit('/').next().unwrap_or(object);
    let is = |stem: &str| {
        base.find(stem).is_some_and(|i| {
            base[i + stem.len()..].is_empty() || base[i + stem.len()..].starts_with('.')
        })
    };
    if is("pg_control.tar") {
        Role::Control
    } else if is("backup_label.tar") {
        Role::Label
    } else {
        Role::Data
    }
}

/// The decompressor named by an object's last extension; `tar` or nothing means plain.
fn format_of(object: &str) -> Result<ReadFormat, Error> {
    let base = object.rsplit('/').next().unwrap_or(object);
    let ext = base.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if ext == "tar" {
        return Ok(ReadFormat::Plain);
    }
    ReadFormat::from_extension(ext).ok_or_else(|| {
        Error::io(
            object.to_string(),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unsupported file type .{ext}"),
            ),
        )
    })
}

/// Where partitions come from: the storage, the crypter, the network rate limit.
#[derive(Clone, Copy)]
struct Source<'a> {
    storage: &'a dyn Storage,
    crypter: &'a Crypter,
    limit: Option<&'a RateLimit>,
}

/// Downloads, decodes and unpacks one partition; after a failure a new attempt may cure, the
/// partition is re-extracted from its start.
fn unpack_partition(
    source: Source<'_>,
    key: &str,
    dest: &Destination,
    buf: &mut [u8],
    sync: &dyn FileSync,
    plan: &dyn EntryPlan,
) -> Result<Extracted, Error> {
    let format = format_of(key)?;
    let is_final = |e: &Error| {
        matches!(e, Error::Storage(StorageError::NotFound { .. }))
            || is_disk_full(e)
            || is_refusal(e)
    };
    let attempt = || {
        let raw = source.storage.get(key)?;
        let limited = Box::new(Limited::new(raw, source.limit));
        let mut decoded = Decoder::new(format, source.crypter.decrypting(limited))
            .map_err(|e| Error::io(format!("decompressing {key}"), e))?;
        extract::unpack(&mut decoded, dest, &mut *buf, sync, plan)
            .map_err(|e| Error::io(format!("restoring {key}"), e))
    };
    let pause = std::time::Duration::from_millis(500);
    super::retry(
        ATTEMPTS,
        pause,
        &format!("trying {key} again"),
        is_final,
        attempt,
    )
}

/// The archive asked for something unsafe: the same bytes would be refused again.
fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if dest::is_refusal(source))
}

fn is_disk_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) || source.kind() == io::ErrorKind::StorageFull)
}

/// Creates `<dest>/pg_tblspc/<name>` links to each tablespace's directory; returns the
/// tablespaces, for [`Destination`] to follow.
fn link_tablespaces(
    dest: &Path,
    spec: &TablespaceSpec,
) -> Result<Vec<(String, std::path::PathBuf)>, Error> {
    let mut linked = Vec::new();
    if spec.tablespaces.is_empty() {
        return Ok(linked);
    }
    let dir = dest.join("pg_tblspc");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for name in &spec.tablespaces {
        let loc = spec.location(name).ok_or_else(|| {
            Error::Precondition(format!("tablespace spec has no location for {name}"))
        })?;
        fs::create_dir_all(&loc.loc)
            .map_err(|e| Error::io(format!("creating tablespace directory {}", loc.loc), e))?;
        let link = dir.join(name);
        match fs::read_link(&link) {
            Ok(target) if target == Path::new(&loc.loc) => {}
            Ok(target) => {
                return Err(Error::Precondition(format!(
                    "{} points to {}, not {}",
                    link.display(),
                    target.display(),
                    loc.loc
                )));
            }
            Err(_) => std::os::unix::fs::symlink(&loc.loc, &link)
                .map_err(|e| Error::io(format!("linking {}", link.display()), e))?,
        }
        linked.push((name.clone(), std::path::PathBuf::from(&loc.loc)));
    }
    Ok(linked)
}

/// Checks that every entry `files_metadata.json` lists is in `dest`: the skipped ones too
/// when a chain was restored (they come from the backups below), not in a full backup.
fn verify(storage: &dyn Storage, name: &str, dest: &Path, chain: bool) -> Result<u64, Error> {
    let key = files_metadata_key(name);
    let mut checked = 0u64;
    let mut missing: Vec<String> = Vec::new();
    let found = backups::read_document(storage, &key, &mut |reader| {
        checked = 0;
        missing.clear();
        files_metadata::for_each_file(reader, |entry, desc| {
            if desc.is_skipped && !chain {
                return Ok(());
            }
            checked += 1;
            let present =
                extract::target_path(dest, &entry).is_some_and(|p| fs::symlink_metadata(p).is_ok());
            if !present && missing.len() < 10 {
                missing.push(entry);
            }
            Ok(())
        })
        .map_err(|e| Error::io(format!("reading {key}"), e))
    })?;
    if found.is_none() {
        crate::warn!("{key} is missing; the restored files cannot be checked against it");
        return Ok(0);
    }
    if !missing.is_empty() {
        return Err(Error::io(
            format!("restore of {name} is incomplete"),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not restored: {}", missing.join(", ")),
            ),
        ));
    }
    Ok(checked)
}

/// What `backup-fetch` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Destination directory (created if missing; must be empty).
    pub dest: std::path::PathBuf,
    /// Backup name, or `LATEST`.
    pub name: String,
    /// A JSON tablespace specification relocating tablespaces.
    pub restore_spec: Option<std::path::PathBuf>,
    /// `--reverse-unpack`: warned, the chain is applied base first.
    pub reverse_unpack: bool,
    /// `--skip-redundant-tars`: warned, as `reverse_unpack`.
    pub skip_redundant_tars: bool,
}

/// Runs `backup-fetch`.
pub fn run(settings: &Settings, args: &Options) -> Result<(), Error> {
    for (given, flag) in [
        (args.reverse_unpack, "--reverse-unpack"),
        (args.skip_redundant_tars, "--skip-redundant-tars"),
    ] {
        if given {
            crate::warn!(
                "{flag} has no effect in wal-rus: a delta chain is applied base first (WAL-G's default order); the restored directory is the same"
            );
        }
    }
    let storage = settings.open_storage()?;
    let backup = backups::resolve(storage.as_ref(), &args.name)?;
    let sentinel = backups::read_sentinel(storage.as_ref(), &backup.name)?;
    let chain = chain::chain_of(storage.as_ref(), &backup.name, sentinel)?;
    let dest = &args.dest;
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Precondition(format!(
                    "destination {} is not empty",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // 0700, as PostgreSQL wants its data directory: a backup need not carry an entry
            // for the directory itself (remote backups, WAL-G's or wal-rus's, have none).
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest)
                .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
        }
        Err(e) => return Err(Error::io(format!("reading {}", dest.display()), e)),
    }
    let result = restore(
        settings,
        storage.as_ref(),
        &chain,
        dest,
        args.restore_spec.as_deref(),
    );
    if result.is_err() {
        // Never leave something that starts as if it were a complete restore.
        let _ = fs::remove_file(dest.join("global/pg_control"));
    }
    result
}

/// Restores the backup at the head of `chain` (newest first) into the empty directory
/// `dest`: a full backup alone, or a delta chain base first.
fn restore(
    settings: &Settings,
    storage: &dyn Storage,
    chain: &[chain::Link],
    dest: &Path,
    restore_spec: Option<&Path>,
) -> Result<(), Error> {
    let newest = &chain[0];
    let name = newest.name.as_str();
    let spec = match restore_spec {
        Some(path) => Some(read_restore_spec(path)?),
        None => newest.sentinel.spec.clone(),
    };
    let tablespaces = match &spec {
        Some(spec) => link_tablespaces(dest, spec)?,
        None => Vec::new(),
    };
    let dest_path = dest;
    let dest = &Destination::open(dest_path, &tablespaces)
        .map_err(|e| Error::io(format!("opening {}", dest_path.display()), e))?;

    let plan = plan::backup_fetch(&settings.plan_input());
    let arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let fsync = !settings.tar_disable_fsync;
    let limit = settings.network_rate_limit.map(RateLimit::new);
    let source = Source {
        storage,
        crypter: &settings.crypter,
        limit: limit.as_ref(),
    };
    let workers = Workers {
        source,
        dest,
        arena: &arena,
        threads: plan.transfers as usize,
        fsync,
    };
    let (t, partitions) = if chain.len() == 1 {
        let partitions = list_partitions(storage, name)?;
        crate::info!(
            "restoring {name}: {} data partitions into {}",
            partitions.data.len(),
            dest_path.display()
        );
        let data = partitions.data.clone();
        (unpack_data(&workers, name, data, &WriteAll)?, partitions)
    } else {
        unpack_chain(&workers, storage, chain, dest_path)?
    };
    // The label, then pg_control: the cluster becomes startable only at the very end.
    let last_sync: &dyn FileSync = if fsync { &SyncNow } else { &NoSync };
    let mut buf = arena.lease().map_err(|e| Error::io("restore", e))?;
    for key in [partitions.label, partitions.control].into_iter().flatten() {
        unpack_partition(source, &key, dest, &mut buf, last_sync, &WriteAll)?;
    }
    if restore_spec.is_some() {
        // The links were made from the spec; a stored map would point elsewhere.
        let _ = fs::remove_file(dest_path.join("tablespace_map"));
    }
    let checked = verify(storage, name, dest_path, chain.len() > 1)?;
    crate::info!(
        "restored {name}: {} files, {} directories, {:.1} MiB; {checked} entries checked against files_metadata.json",
        t.files,
        t.dirs,
        t.bytes as f64 / 1048576.0
    );
    Ok(())
}

/// Unpacks the data partitions of every backup of `chain`, the full backup first; returns
/// the totals and the newest backup's partitions (its label and pg_control come last).
fn unpack_chain(
    w: &Workers<'_>,
    storage: &dyn Storage,
    chain: &[chain::Link],
    dest: &Path,
) -> Result<(Extracted, Partitions), Error> {
    let newest = &chain[0].name;
    let newest_files = chain::required_index(storage, newest)?;
    crate::info!(
        "restoring {newest}: a delta chain of {} backups into {}, base first",
        chain.len(),
        dest.display()
    );
    let mut total = Extracted::default();
    let mut top = None;
    for (step, link) in chain.iter().rev().enumerate() {
        let partitions = list_partitions(storage, &link.name)?;
        let own_files;
        let own = if step + 1 == chain.len() {
            &newest_files
        } else {
            own_files = chain::required_index(storage, &link.name)?;
            &own_files
        };
        crate::info!(
            "applying {} ({}/{}): {} data partitions",
            link.name,
            step + 1,
            chain.len(),
            partitions.data.len()
        );
        let plan = chain::ChainPlan {
            newest: &newest_files,
            own,
        };
        let t = unpack_data(w, &link.name, partitions.data.clone(), &plan)?;
        total.files += t.files;
        total.dirs += t.dirs;
        total.bytes += t.bytes;
        top = Some(partitions);
    }
    let top = top.ok_or_else(|| Error::Precondition("an empty delta chain".into()))?;
    Ok((total, top))
}

/// A backup's `tar_partitions/`, by role.
#[derive(Clone)]
struct Partitions {
    /// The data partitions, in name order.
    data: Vec<String>,
    /// `backup_label.tar`, when there is one.
    label: Option<String>,
    /// `pg_control.tar`, when there is one.
    control: Option<String>,
}

/// Lists backup `name`'s partitions; a WAL-G backup without `pg_control.tar` is refused.
fn list_partitions(storage: &dyn Storage, name: &str) -> Result<Partitions, Error> {
    let folder = backups::partitions_prefix(name);
    let mut partitions: Vec<String> = Vec::new();
    storage.list(&folder, false, &mut |m| partitions.push(m.key))?;
    let (mut data, special): (Vec<String>, Vec<String>) = partitions
        .into_iter()
        .partition(|k| role_of(k) == Role::Data);
    let control = special
        .iter()
        .find(|k| role_of(k) == Role::Control)
        .cloned();
    let label = special.iter().find(|k| role_of(k) == Role::Label).cloned();
    if control.is_none() && crate::format::backup_name::is_walg_name(name) {
        return Err(Error::io(
            format!("restoring {name}"),
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("Expect pg_control archive, but not found in {folder}"),
            ),
        ));
    }
    data.sort();
    Ok(Partitions {
        data,
        label,
        control,
    })
}

/// What the data partitions' workers share.
struct Workers<'a> {
    source: Source<'a>,
    dest: &'a Destination,
    arena: &'a Arena,
    threads: usize,
    /// Whether files are fsynced (not with `WALG_TAR_DISABLE_FSYNC`).
    fsync: bool,
}

/// Unpacks the data partitions of backup `name` on `w.threads` workers, every file durable
/// (unless fsync is off) when it returns; the first failure stops the rest.
fn unpack_data(
    w: &Workers<'_>,
    name: &str,
    data: Vec<String>,
    plan: &dyn EntryPlan,
) -> Result<Extracted, Error> {
    let (sync_tx, sync_rx) = bounded(sync::SYNC_QUEUE);
    let queue = sync::SyncQueue::new(sync_tx);
    let data_sync: &dyn FileSync = if w.fsync { &queue } else { &NoSync };
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let totals = Mutex::new(Extracted::default());
    let work = |key: String| {
        if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
            return;
        }
        let result = w
            .arena
            .lease()
            .map_err(|e| Error::io("restore worker", e))
            .and_then(|mut buf| {
                unpack_partition(w.source, &key, w.dest, &mut buf, data_sync, plan)
            });
        match result {
            Ok(x) => {
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                t.files += x.files;
                t.dirs += x.dirs;
                t.bytes += x.bytes;
            }
            Err(e) => {
                let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
            }
        }
    };
    std::thread::scope(|s| -> Result<(), Error> {
        let mut syncers = Vec::new();
        for i in 0..sync::SYNC_THREADS {
            let rx = sync_rx.clone();
            syncers.push(
                workers::spawn_named(s, format!("backup-fetch-sync-{i}"), || sync::run(rx))
                    .map_err(|e| Error::io("starting the fsync stage", e))?,
            );
        }
        drop(sync_rx);
        let (tx, rx) = bounded::<String>(w.threads);
        let handles = workers::spawn_workers(s, "backup-fetch", w.threads, rx, &work)
            .map_err(|e| Error::io("starting restore workers", e))?;
        for key in data {
            if tx.send(key).is_err() {
                break;
            }
        }
        drop(tx);
        for h in handles {
            let _ = h.join();
        }
        // Every data file durable before the label and pg_control are written.
        queue.close();
        for syncer in syncers {
            match syncer.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(Error::io(format!("restoring {name}"), e));
                }
                Err(_) => return Err(Error::io("fsync stage", io::Error::other("panicked"))),
            }
        }
        Ok(())
    })?;
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(totals.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Reads a `backup-fetch --restore-spec` file.
fn read_restore_spec(path: &std::path::Path) -> Result<TablespaceSpec, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("reading restore spec {}", path.display()), e))?;
    TablespaceSpec::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("restore spec {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_roles_and_formats() {
        assert_eq!(
            role_of("b/tar_partitions/pg_control.tar.lz4"),
            Role::Control
        );
        assert_eq!(role_of("b/tar_partitions/pg_control.tar."), Role::Control);
        assert_eq!(role_of("b/tar_partitions/pg_control.tar"), Role::Control);
        assert_eq!(
            role_of("b/tar_partitions/backup_label.tar.zst"),
            Role::Label
        );
        assert_eq!(role_of("b/tar_partitions/part_001.tar.lz4"), Role::Data);
        assert_eq!(role_of("b/tar_partitions/copy_0.tar.br"), Role::Data);
        assert_eq!(format_of("part_001.tar.lz4").unwrap(), ReadFormat::Lz4);
        assert_eq!(format_of("part_001.tar").unwrap(), ReadFormat::Plain);
        assert_eq!(format_of("part_001.tar.").unwrap(), ReadFormat::Plain);
        assert_eq!(format_of("part_001.tar.zst").unwrap(), ReadFormat::Zstd);
        assert!(format_of("part_001.tar.lzo").is_err());
    }
}

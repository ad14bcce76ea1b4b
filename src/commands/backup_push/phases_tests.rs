//! backup-push's phases without PostgreSQL: the data, `pg_control` and label phases and the
//! documents, run over a data directory made here into the in-memory storage, then restored
//! by backup-fetch. The session's start and stop are what the server would have answered.
//! [`store_backup`] also gives the catalogue's tests real backups to list, mark and delete.

use super::data::{self, Sender};
use super::facts::{self, BackupFacts};
use super::{delta, delta_name, name_for, start_segment, write_documents};
use crate::commands::backup_fetch;
use crate::commands::command_tests::{Fixture, SEG};
use crate::config::Cmd;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::pg::{BackupStart, BackupStop};
use crate::repo::backups;
use crate::storage::Op;
use crate::storage::memory::Fault;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Files of a small data directory, relative to it, with their contents.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let relation: Vec<u8> = (0..3 * 8192u32).map(|i| (i % 251) as u8).collect();
    vec![
        ("PG_VERSION", b"15\n".to_vec()),
        ("global/pg_control", vec![7u8; 8192]),
        ("global/1262", vec![1u8; 8192]),
        ("base/1/PG_VERSION", b"15\n".to_vec()),
        ("base/1/1259", relation),
        ("postgresql.conf", b"port = 5432\n".to_vec()),
    ]
}

/// What a backup leaves out: the server's pid file and the WAL.
const LEFT_OUT: &[(&str, &[u8])] = &[
    ("postmaster.pid", b"4242\n"),
    ("pg_wal/000000010000000000000001", b"wal"),
];

/// The data directory under the fixture's scratch directory.
pub fn data_dir(f: &Fixture) -> PathBuf {
    let root = f.dir.path().join("data");
    for (rel, body) in files()
        .iter()
        .map(|(r, b)| (*r, b.as_slice()))
        .chain(LEFT_OUT.iter().copied())
    {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    root
}

/// Runs every phase after the session's start as `run` does, for a backup whose start the
/// server placed at `start_lsn`; returns the backup's name.
pub fn store_backup(f: &Fixture, start_lsn: u64, permanent: bool) -> Result<String, Error> {
    store_from(f, &data_dir(f), start_lsn, permanent, 0)
}

/// Like [`store_backup`], of directory `dir`, as a delta while `max_steps` allows one.
pub fn store_from(
    f: &Fixture,
    dir: &Path,
    start_lsn: u64,
    permanent: bool,
    max_steps: u32,
) -> Result<String, Error> {
    let request = delta::DeltaRequest {
        max_steps,
        permanent,
        ..Default::default()
    };
    store_with(f, dir, start_lsn, &request)
}

/// Like [`store_from`], with the delta chosen as `request` says.
pub(super) fn store_with(
    f: &Fixture,
    dir: &Path,
    start_lsn: u64,
    request: &delta::DeltaRequest,
) -> Result<String, Error> {
    let permanent = request.permanent;
    let settings = f.settings(Cmd::BackupPush { full: false });
    let storage = settings.open_storage()?;
    let base = delta::choose(storage.as_ref(), request)?;
    let started = BackupStart {
        lsn: Lsn(start_lsn),
        timeline: 1,
    };
    let seg = settings.wal_segment_size;
    let name = match &base {
        None => name_for(&started, false, seg),
        Some(b) => {
            delta::check(b, started.lsn, Some(7))?;
            delta_name(start_segment(&started, false, seg), seg, &b.name)?
        }
    };
    let mut delta_base = base
        .as_ref()
        .map(|b| b.open(storage.as_ref()))
        .transpose()?;
    let sender = Sender::new(&settings, storage.as_ref(), name.clone());
    let mut stored = data::send_partitions(
        &sender,
        dir,
        None,
        delta_base.as_mut(),
        &super::watch::AliveCheck::off(),
    )?;
    data::send_control(&sender, dir, &mut stored)?;
    let stop = BackupStop {
        label_file: format!("START WAL LOCATION: {}\n", Lsn(start_lsn)),
        tablespace_map: String::new(),
        lsn: Lsn(start_lsn + 0x100),
    };
    data::send_label(&sender, &stop, &mut stored)?;
    let data_dir = dir.to_string_lossy().into_owned();
    let facts = BackupFacts {
        start_time: SystemTime::now(),
        finish_time: SystemTime::now(),
        hostname: "unit".into(),
        spec: facts::tablespace_spec(&data_dir, &stored.walker.tablespaces),
        data_dir,
        pg_version: 150004,
        system_identifier: Some(7),
        start_lsn: started.lsn,
        finish_lsn: stop.lsn,
        permanent,
        uncompressed_size: stored.uncompressed,
        compressed_size: stored.compressed,
        data_catalog_size: stored.walker.catalog_size,
        user_data: None,
        delta: base.as_ref().map(delta::Base::delta_info),
    };
    write_documents(storage.as_ref(), &name, &facts, stored.spool)?;
    Ok(name)
}

pub fn restore(f: &Fixture, name: &str, dest: &Path) -> Result<(), Error> {
    let args = backup_fetch::Options {
        dest: dest.to_path_buf(),
        name: name.into(),
        restore_spec: None,
        ..Default::default()
    };
    backup_fetch::run(&f.settings(Cmd::BackupFetch), &args)
}

#[test]
fn the_phases_store_walg_layout_with_the_sentinel_last() {
    let f = Fixture::new(&[]);
    let name = store_backup(&f, 3 * SEG + 0x28, false).unwrap();
    assert_eq!(name, "base_000000010000000000000003");
    let folder = backups::folder_prefix(&name);
    let mut keys = f.mem.keys();
    keys.retain(|k| k.starts_with(&folder) || k == &backups::sentinel_key(&name));
    let want: Vec<String> = [
        format!("{folder}files_metadata.json"),
        format!("{folder}metadata.json"),
        format!("{folder}tar_partitions/backup_label.tar.lz4"),
        format!("{folder}tar_partitions/part_001.tar.lz4"),
        format!("{folder}tar_partitions/pg_control.tar.lz4"),
        backups::sentinel_key(&name),
    ]
    .into();
    let mut sorted = keys.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted);
    let last_put = f.mem.calls().into_iter().rfind(|(op, _)| *op == Op::Put);
    assert_eq!(last_put.map(|(_, k)| k), Some(backups::sentinel_key(&name)));
    let sentinel = backups::read_sentinel(&f.mem, &name).unwrap();
    assert!(!sentinel.is_delta());
    let meta = backups::read_metadata(&f.mem, &name).unwrap().unwrap();
    assert_eq!(
        (meta.start_lsn, meta.finish_lsn),
        (Lsn(3 * SEG + 0x28), Lsn(3 * SEG + 0x128))
    );
}

#[test]
fn backup_fetch_restores_what_the_phases_stored() {
    let f = Fixture::new(&[("WALG_COMPRESSION_METHOD", "zstd")]);
    store_backup(&f, 2 * SEG, false).unwrap();
    let dest = f.dir.path().join("restored");
    restore(&f, "LATEST", &dest).unwrap();
    for (rel, body) in files() {
        assert!(fs::read(dest.join(rel)).unwrap() == body, "{rel}");
    }
    for (rel, _) in LEFT_OUT {
        assert!(!dest.join(rel).exists(), "{rel} was restored");
    }
    assert!(dest.join("pg_wal").is_dir(), "pg_wal itself is kept");
    let label = fs::read_to_string(dest.join("backup_label")).unwrap();
    assert_eq!(label, format!("START WAL LOCATION: {}\n", Lsn(2 * SEG)));
    // A second restore into a directory that is not empty is refused, untouched.
    let e = restore(&f, "LATEST", &dest).unwrap_err();
    assert!(matches!(e, Error::Precondition(_)), "{e}");
}

#[test]
fn a_failed_partition_leaves_no_backup() {
    let f = Fixture::new(&[]);
    f.mem.fail_next(Op::Put, 1, Fault::Denied);
    let e = store_backup(&f, 4 * SEG, false).unwrap_err();
    assert!(matches!(e, Error::Storage(_)), "{e}");
    assert!(backups::list_backups(&f.mem).unwrap().is_empty());
    let e = restore(&f, "LATEST", &f.dir.path().join("r")).unwrap_err();
    assert_eq!(
        (e.to_string().as_str(), e.exit_code()),
        ("No backups found", 1)
    );
}

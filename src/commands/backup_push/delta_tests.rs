//! Delta chains without PostgreSQL: a data directory whose relation pages carry LSNs is
//! stored full, changed, stored as deltas, and the chain restored by backup-fetch must equal
//! the directory; the sentinels and files metadata must say what WAL-G's would.

use super::delta;
use super::phases_tests::{restore, store_from, store_with};
use crate::commands::command_tests::{Fixture, SEG};
use crate::error::Error;
use crate::format::files_metadata;
use crate::format::lsn::Lsn;
use crate::format::page::tests::heap_page;
use crate::repo::backups;
use crate::storage::{BytesBody, Storage};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

fn relation(lsns: &[u64]) -> Vec<u8> {
    lsns.iter().flat_map(|&l| heap_page(l)).collect()
}

fn write(dir: &Path, rel: &str, body: &[u8]) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

/// A data directory whose relation 1259 has three pages written before the first backup.
fn cluster(f: &Fixture) -> std::path::PathBuf {
    let dir = f.dir.path().join("cluster");
    write(&dir, "PG_VERSION", b"15\n");
    write(&dir, "global/pg_control", &[7u8; 8192]);
    write(&dir, "global/1262", &relation(&[0x50]));
    write(&dir, "base/1/1259", &relation(&[0x100, 0x200, 0x300]));
    write(&dir, "base/1/2000", &relation(&[0x100]));
    write(&dir, "pg_wal/000000010000000000000001", b"wal");
    dir
}

/// Every regular file below `dir` but WAL, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if !rel.starts_with("pg_wal/")
                && rel != "backup_label"
                && rel != "tablespace_map"
            {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn files_of(f: &Fixture, name: &str) -> BTreeMap<String, files_metadata::FileDescription> {
    let mut out = BTreeMap::new();
    let body = f.mem.contents(&backups::files_metadata_key(name)).unwrap();
    files_metadata::for_each_file(&body[..], |n, d| {
        out.insert(n, d);
        Ok(())
    })
    .unwrap();
    out
}

fn stored_bytes(f: &Fixture, name: &str) -> u64 {
    backups::read_sentinel(&f.mem, name)
        .unwrap()
        .compressed_size
}

#[test]
fn a_chain_of_two_deltas_restores_the_directory_and_says_what_walg_says() {
    let f = Fixture::new(&[]);
    let dir = cluster(&f);
    let full = store_from(&f, &dir, 3 * SEG + 0x28, false, 3).unwrap();
    assert_eq!(full, "base_000000010000000000000003");

    // Page 1 rewritten and a page added; one relation dropped, another created.
    let mut r = relation(&[0x100, 5 * SEG, 0x300, 5 * SEG + 8]);
    write(&dir, "base/1/1259", &r);
    fs::remove_file(dir.join("base/1/2000")).unwrap();
    write(&dir, "base/1/3000", &relation(&[5 * SEG]));
    let d1 = store_from(&f, &dir, 5 * SEG + 0x28, false, 3).unwrap();
    assert_eq!(
        d1,
        "base_000000010000000000000005_D_000000010000000000000003"
    );

    // Page 0 rewritten after the first delta started.
    r[..8192].copy_from_slice(&heap_page(7 * SEG));
    write(&dir, "base/1/1259", &r);
    let d2 = store_from(&f, &dir, 7 * SEG + 0x28, false, 3).unwrap();
    assert_eq!(
        d2,
        "base_000000010000000000000007_D_000000010000000000000005"
    );

    let s2 = backups::read_sentinel(&f.mem, &d2).unwrap();
    let info = s2.delta.unwrap();
    assert_eq!(
        (
            info.from.as_str(),
            info.full_name.as_str(),
            info.count,
            info.lsn
        ),
        (d1.as_str(), full.as_str(), 2, Lsn(5 * SEG + 0x28))
    );
    let files = files_of(&f, &d2);
    assert!(files["/base/1/1259"].is_incremented);
    assert!(files["/PG_VERSION"].is_skipped && files["/global/1262"].is_skipped);
    assert!(
        files["/base/1/3000"].is_skipped,
        "unchanged since the first delta"
    );
    assert!(!files.contains_key("/base/1/2000"));
    let files1 = files_of(&f, &d1);
    assert!(files1["/base/1/1259"].is_incremented);
    assert!(!files1["/base/1/3000"].is_incremented && !files1["/base/1/3000"].is_skipped);
    // Increments carry 2 and 1 pages, not the files.
    assert!(
        stored_bytes(&f, &d2) < stored_bytes(&f, &full),
        "delta smaller"
    );

    let dest = f.dir.path().join("restored");
    restore(&f, "LATEST", &dest).unwrap();
    assert_eq!(snapshot(&dest), snapshot(&dir));
    assert!(
        !dest.join("base/1/2000").exists(),
        "dropped relation not restored"
    );
    // And an older point of the chain restores as it was then.
    let dest1 = f.dir.path().join("restored1");
    restore(&f, &d1, &dest1).unwrap();
    let mut want = snapshot(&dir);
    let mut r1 = r.clone();
    r1[..8192].copy_from_slice(&heap_page(0x100));
    want.insert("base/1/1259".into(), r1);
    assert_eq!(snapshot(&dest1), want);
}

#[test]
fn max_steps_origin_and_invalid_pages_follow_walg() {
    let f = Fixture::new(&[]);
    let dir = cluster(&f);
    let full = store_from(&f, &dir, 3 * SEG + 0x28, false, 1).unwrap();
    write(&dir, "base/1/1259", &relation(&[0x100, 5 * SEG, 0x300]));
    // A page that is neither valid nor new: the whole file is stored, not an increment.
    let mut garbage = relation(&[5 * SEG]);
    garbage[10] = 0xF0;
    write(&dir, "base/1/2000", &garbage);
    let d1 = store_from(&f, &dir, 5 * SEG + 0x28, false, 1).unwrap();
    assert!(d1.contains("_D_"));
    let files = files_of(&f, &d1);
    assert!(files["/base/1/1259"].is_incremented);
    assert!(!files["/base/1/2000"].is_incremented && !files["/base/1/2000"].is_skipped);
    // The chain is at WALG_DELTA_MAX_STEPS=1: the next backup is full.
    write(&dir, "PG_VERSION", b"15\n");
    let next = store_from(&f, &dir, 7 * SEG + 0x28, false, 1).unwrap();
    assert_eq!(next, "base_000000010000000000000007");
    let dest = f.dir.path().join("restored");
    restore(&f, &d1, &dest).unwrap();
    assert_eq!(snapshot(&dest)["base/1/2000"], garbage);
    let _ = full;
}

#[test]
fn bases_that_cannot_carry_a_delta() {
    let f = Fixture::new(&[]);
    let dir = cluster(&f);
    let full = store_from(&f, &dir, 3 * SEG + 0x28, true, 3).unwrap();
    // A permanent base and an ordinary delta: WAL-G takes a full backup.
    let next = store_from(&f, &dir, 5 * SEG + 0x28, false, 3).unwrap();
    assert_eq!(next, "base_000000010000000000000005");
    // A permanent delta on it is taken, and keeps its chain permanent.
    let d = store_from(&f, &dir, 7 * SEG + 0x28, true, 3).unwrap();
    assert!(d.ends_with("_D_000000010000000000000005"), "{d}");
    let storage = f.settings(crate::config::Cmd::BackupPush { full: false });
    let storage = storage.open_storage().unwrap();
    let req = delta::DeltaRequest {
        max_steps: 3,
        from_name: Some(full.clone()),
        ..Default::default()
    };
    let base = delta::choose(storage.as_ref(), &req).unwrap();
    assert!(base.is_none(), "a permanent base needs a permanent delta");
    let req = delta::DeltaRequest {
        permanent: true,
        ..req
    };
    let base = delta::choose(storage.as_ref(), &req).unwrap().unwrap();
    // Another cluster, or a base that ends after the new start, is refused.
    let e = delta::check(&base, Lsn(9 * SEG), Some(8)).unwrap_err();
    assert!(matches!(e, Error::Precondition(_)) && e.to_string().contains("another cluster"));
    let e = delta::check(&base, Lsn(3 * SEG), Some(7)).unwrap_err();
    assert!(e.to_string().contains("backup from future"), "{e}");
    assert!(delta::check(&base, Lsn(9 * SEG), Some(7)).is_ok());
    // A name that does not exist is an error, not a full backup.
    let req = delta::DeltaRequest {
        max_steps: 3,
        from_name: Some("base_0000000100000000000000AA".into()),
        ..Default::default()
    };
    assert!(delta::choose(storage.as_ref(), &req).is_err());
    assert!(delta::parse_origin(Some("LATEST_FULL")).unwrap());
    assert!(delta::parse_origin(Some("OLDEST")).is_err());
}

#[test]
fn delete_before_a_full_backup_keeps_the_base_of_a_delta_across_it() {
    let f = Fixture::new(&[]);
    let dir = cluster(&f);
    let f3 = store_from(&f, &dir, 3 * SEG + 0x28, false, 0).unwrap();
    write(&dir, "base/1/1259", &relation(&[0x100, 5 * SEG, 0x300]));
    let f5 = store_from(&f, &dir, 5 * SEG + 0x28, false, 0).unwrap();
    // A delta of F3 by name, across F5.
    let request = delta::DeltaRequest {
        max_steps: 3,
        from_name: Some(f3.clone()),
        ..Default::default()
    };
    let d7 = store_with(&f, &dir, 7 * SEG + 0x28, &request).unwrap();
    assert!(d7.ends_with(&f3[5..]), "{d7}");
    let settings = f.settings(crate::config::Cmd::Delete);
    let args = crate::commands::delete::Options {
        args: vec!["before".into(), f5.clone()],
        confirm: true,
        use_sentinel_time: false,
        after: None,
    };
    crate::commands::delete::run(&settings, &args).unwrap();
    let left: Vec<String> = backups::list_backups(&f.mem)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert!(
        left.contains(&f3) && left.contains(&f5) && left.contains(&d7),
        "{left:?}"
    );
    let dest = f.dir.path().join("restored");
    restore(&f, &d7, &dest).unwrap();
    assert_eq!(snapshot(&dest), snapshot(&dir));
}

#[test]
fn a_chain_with_a_missing_or_broken_base_is_refused_and_leaves_nothing_startable() {
    let f = Fixture::new(&[]);
    let dir = cluster(&f);
    let full = store_from(&f, &dir, 3 * SEG + 0x28, false, 3).unwrap();
    write(&dir, "base/1/1259", &relation(&[0x100, 5 * SEG, 0x300]));
    let d1 = store_from(&f, &dir, 5 * SEG + 0x28, false, 3).unwrap();
    // The delta's increment corrupted in storage: the restore fails, pg_control is gone.
    let dest = f.dir.path().join("broken");
    let part = format!(
        "{}tar_partitions/part_001.tar.lz4",
        backups::folder_prefix(&d1)
    );
    let good = f.mem.contents(&part).unwrap();
    let mut plain = Vec::new();
    lz4_flex::frame::FrameDecoder::new(&good[..])
        .read_to_end(&mut plain)
        .unwrap();
    let at = plain
        .windows(4)
        .position(|w| w == crate::format::increment::SIGNATURE)
        .expect("an increment in the delta");
    plain[at + 1] = b'X';
    let mut bad = Vec::new();
    {
        let mut enc = lz4_flex::frame::FrameEncoder::new(&mut bad);
        enc.write_all(&plain).unwrap();
        enc.finish().unwrap();
    }
    Storage::put(&f.mem, &part, &BytesBody(&bad)).unwrap();
    let e = restore(&f, &d1, &dest).unwrap_err();
    assert!(
        e.to_string().contains("invalid increment file header"),
        "{e}"
    );
    assert!(!dest.join("global/pg_control").exists());
    Storage::put(&f.mem, &part, &BytesBody(&good)).unwrap();
    // The full backup gone: the delta cannot be restored, and says which backup is missing.
    Storage::delete_many(&f.mem, &[backups::sentinel_key(&full)]).unwrap();
    let dest = f.dir.path().join("orphan");
    let e = restore(&f, &d1, &dest).unwrap_err();
    assert!(e.to_string().contains(&full), "{e}");
    assert!(!dest.join("global/pg_control").exists());
}

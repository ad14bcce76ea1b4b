//! Unit tests of backup-list, backup-mark and delete run whole against the in-memory
//! storage, over backups stored by backup-push's own phases and WAL stored by wal-push.

use super::backup_push::phases_tests::store_backup;
use super::command_tests::{Fixture, SEG, segment_name};
use super::{backup_list, backup_mark, delete, wal_push};
use crate::config::Cmd;
use crate::error::Error;
use crate::repo::backups;
use crate::storage::Storage;
use crate::time::PreciseTime;

/// Three backups starting in segments 2, 4 and 6 (stored in that order, a second apart) and
/// WAL segments 1 to 7.
fn archive() -> (Fixture, Vec<String>) {
    let f = Fixture::new(&[]);
    let names: Vec<String> = [2, 4, 6]
        .iter()
        .map(|&seg| store_backup(&f, seg * SEG + 0x28, false).unwrap())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let at = PreciseTime {
            secs: 1_700_000_000 + i as i64,
            nanos: 0,
        };
        assert!(f.mem.set_modified(&backups::sentinel_key(name), at));
    }
    let push = f.settings(Cmd::WalPush);
    for segno in 1..=7 {
        wal_push::run(&push, &f.segment(segno, 0)).unwrap();
    }
    (f, names)
}

fn wal_kept(f: &Fixture) -> Vec<u64> {
    (1..=7)
        .filter(|&s| {
            let key = format!("wal_005/{}.lz4", segment_name(1, s));
            f.mem.contents(&key).is_some()
        })
        .collect()
}

fn listed(f: &Fixture) -> Vec<String> {
    let list = backups::list_backups(&f.mem).unwrap();
    list.into_iter().map(|b| b.name).collect()
}

fn delete(f: &Fixture, args: &[&str], confirm: bool) -> Result<(), Error> {
    let opts = delete::Options {
        args: args.iter().map(|a| a.to_string()).collect(),
        confirm,
        use_sentinel_time: false,
        after: None,
    };
    delete::run(&f.settings(Cmd::Delete), &opts)
}

fn mark(f: &Fixture, name: &str, impermanent: bool) -> Result<(), Error> {
    let opts = backup_mark::Options {
        name: name.into(),
        impermanent,
    };
    backup_mark::run(&f.settings(Cmd::BackupMark), &opts)
}

fn permanent(f: &Fixture, name: &str) -> bool {
    let meta = backups::read_metadata(&f.mem, name).unwrap().unwrap();
    meta.is_permanent
}

#[test]
fn backup_list_reads_every_backup_and_names_a_missing_metadata() {
    let (f, names) = archive();
    assert_eq!(listed(&f), names);
    let s = f.settings(Cmd::BackupList);
    for (json, detail) in [(false, false), (true, false), (false, true), (true, true)] {
        let opts = backup_list::Options {
            json,
            detail,
            pretty: false,
        };
        backup_list::run(&s, &opts).unwrap();
    }
    f.mem
        .delete_many(&[backups::metadata_key(&names[1])])
        .unwrap();
    let opts = backup_list::Options {
        json: true,
        detail: true,
        pretty: false,
    };
    let e = backup_list::run(&s, &opts).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&names[1]), "{e}");
}

#[test]
fn retain_without_confirm_deletes_nothing() {
    let (f, _) = archive();
    let before = f.mem.keys();
    delete(&f, &["retain", "1"], false).unwrap();
    assert_eq!(f.mem.keys(), before);
}

#[test]
fn retain_keeps_the_newest_and_the_wal_they_need() {
    let (f, names) = archive();
    delete(&f, &["retain", "2"], true).unwrap();
    assert_eq!(listed(&f), names[1..]);
    assert_eq!(wal_kept(&f), [4, 5, 6, 7]);
    let gone = backups::folder_prefix(&names[0]);
    assert!(f.mem.keys().iter().all(|k| !k.starts_with(&gone)));
}

#[test]
fn a_permanent_backup_and_its_wal_survive_retention_until_unmarked() {
    let (f, names) = archive();
    mark(&f, &names[1], false).unwrap();
    assert!(permanent(&f, &names[1]));
    delete(&f, &["retain", "1"], true).unwrap();
    assert_eq!(listed(&f), names[1..]);
    // WAL-G keeps the segments from a permanent backup's start to its finish.
    assert_eq!(wal_kept(&f), [4, 6, 7]);

    let e = delete(&f, &["target", &names[1]], true).unwrap_err();
    assert!(matches!(e, Error::Precondition(_)), "{e}");
    let e = delete(&f, &["everything"], true).unwrap_err();
    assert!(matches!(e, Error::Precondition(_)), "{e}");
    assert_eq!(listed(&f), names[1..]);

    mark(&f, &names[1], true).unwrap();
    assert!(!permanent(&f, &names[1]));
    delete(&f, &["retain", "1"], true).unwrap();
    assert_eq!(listed(&f), names[2..]);
    assert_eq!(wal_kept(&f), [6, 7]);
}

#[test]
fn everything_force_empties_the_archive() {
    let (f, names) = archive();
    mark(&f, &names[0], false).unwrap();
    delete(&f, &["everything", "FORCE"], true).unwrap();
    assert!(f.mem.keys().is_empty(), "{:?}", f.mem.keys());
}

#[test]
fn before_and_target_name_what_they_delete() {
    let (f, names) = archive();
    delete(&f, &["before", &names[1]], true).unwrap();
    assert_eq!(listed(&f), names[1..]);
    delete(&f, &["target", &names[2]], true).unwrap();
    assert_eq!(listed(&f), names[1..2]);

    let e = delete(&f, &["before", "base_0000000900"], true).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert_eq!(e.exit_code(), 1);
    let e = mark(&f, "base_000000010000000000000009", false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Backup 'base_000000010000000000000009' does not exist."
    );
    let e = delete(&f, &["retain", "0"], true).unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e}");
}

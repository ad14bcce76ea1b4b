//! Delta backups across WAL-G v3.0.8 and wal-rus, on real PostgreSQL 15 clusters under
//! pgbench, with the restore lanes of `walg_backup_interop`:
//!
//! 1. Mixed chains: a WAL-G full backup with wal-rus deltas on it, restored by WAL-G; a
//!    wal-rus full backup with WAL-G deltas on it, restored by wal-rus. Each delta names its
//!    base, its chain's full backup and its position as WAL-G does, holds increments and
//!    skipped files (it is a real delta, not a full backup under a delta's name), and the
//!    restore, recovered to the end of the archive, dumps equal to the source.
//! 2. A chain of four wal-rus deltas, each taken while pgbench writes, restored by wal-rus
//!    and by WAL-G: both dumps equal the source's.
//! 3. Size: on a cluster where about one page in a hundred changed since the full backup,
//!    wal-rus's delta stores at most 5% of what the full backup stored (WAL-G's delta of the
//!    same base is printed beside it).
//! 4. A delta whose base is another cluster's backup is refused (exit 1, the message names
//!    the base and says why) before anything of the backup is stored.

use crate::common::output_text;
use crate::support::Kind;
use crate::walg_backup_interop::{
    LONG, Maker, SCALE, Source, Store, assert_replayed_archive, assert_same_dump,
    restore_with_walg, restore_with_walrus, sentinel_key, setup,
};
use serde_json::Value;
use std::path::Path;

/// The settings both tools get: storage, compression, and deltas up to `steps`.
fn delta_env(store: &Store, sub: &str, method: &str, steps: u32) -> Vec<(String, String)> {
    let mut env = store.env(sub, method);
    env.push(("WALG_DELTA_MAX_STEPS".into(), steps.to_string()));
    env
}

fn sentinel(store: &Store, sub: &str, name: &str) -> Value {
    serde_json::from_slice(&store.read(sub, &sentinel_key(name))).unwrap()
}

/// Increments and skipped files in backup `name`'s files metadata.
fn delta_counts(store: &Store, sub: &str, name: &str) -> (usize, usize) {
    let key = format!("basebackups_005/{name}/files_metadata.json");
    let doc: Value = serde_json::from_slice(&store.read(sub, &key)).unwrap();
    let files = doc["Files"].as_object().cloned().unwrap_or_default();
    let count = |member: &str| files.values().filter(|d| d[member] == true).count();
    (count("IsIncremented"), count("IsSkipped"))
}

/// `name` is the delta number `count` of the chain rooted at `full`, on `base`, and holds
/// increments and skipped files.
fn assert_delta(store: &Store, sub: &str, name: &str, base: &str, full: &str, count: u64) {
    let s = sentinel(store, sub, name);
    assert!(
        name.contains("_D_")
            && s["DeltaFrom"] == base
            && s["DeltaFullName"] == full
            && s["DeltaCount"] == count
            && s["DeltaLSN"] == sentinel(store, sub, base)["LSN"],
        "{name} should be delta {count} of {full} on {base}: sentinel {s}"
    );
    let (incremented, skipped) = delta_counts(store, sub, name);
    assert!(
        incremented > 0 && skipped > 0,
        "{name}: {incremented} increments and {skipped} skipped files: not a real delta"
    );
}

/// Backups by `makers` in turn (the first full, the rest deltas of the one before), each
/// taken while pgbench writes and followed by more writes; the cluster archives through
/// `archiver`. Returns the source's dump and the backups, oldest first; the cluster is
/// stopped.
fn chain(
    walg_bin: &Path,
    store: &Store,
    env: &[(String, String)],
    archiver: Maker,
    makers: &[Maker],
) -> (String, Vec<String>) {
    let sub = "chain";
    let mut src = Source::start(walg_bin, env, archiver);
    src.pg.pgbench_init(SCALE);
    let mut names: Vec<String> = Vec::new();
    for (i, maker) in makers.iter().enumerate() {
        let mut load = src.load(3);
        let name = src.push(*maker, store, sub);
        let _ = load.wait();
        if i > 0 {
            assert_delta(store, sub, &name, &names[i - 1], &names[0], i as u64);
        } else {
            assert!(!name.contains("_D_"), "{name}: the first backup is full");
        }
        names.push(name);
        src.pg.pgbench(&["-t", "150", "-c", "2"]);
    }
    src.more_writes();
    src.wait_archived();
    let source = src.pg.dumpall();
    src.pg.stop();
    (source, names)
}

/// WAL-G's full backup, wal-rus's deltas on it; WAL-G restores the chain.
fn walg_full_walrus_deltas(test: &str, kind: Kind, method: &str) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let env = delta_env(&store, "chain", method, 3);
    let makers = [Maker::Walg, Maker::Walrus, Maker::Walrus];
    let (source, names) = chain(&walg_bin, &store, &env, Maker::Walrus, &makers);
    let restored = restore_with_walg(&walg_bin, &env);
    let what =
        format!("[{kind:?}/{method}] WAL-G full + wal-rus deltas {names:?} restored by WAL-G");
    assert_replayed_archive(&restored, &what);
    assert_same_dump(&restored, &source, &what);
}

/// wal-rus's full backup, WAL-G's deltas on it; wal-rus restores the chain.
fn walrus_full_walg_deltas(test: &str, kind: Kind, method: &str) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let env = delta_env(&store, "chain", method, 3);
    let makers = [Maker::Walrus, Maker::Walg, Maker::Walg];
    let (source, names) = chain(&walg_bin, &store, &env, Maker::Walg, &makers);
    let restored = restore_with_walrus(&env);
    let what =
        format!("[{kind:?}/{method}] wal-rus full + WAL-G deltas {names:?} restored by wal-rus");
    assert_replayed_archive(&restored, &what);
    assert_same_dump(&restored, &source, &what);
}

#[test]
fn walg_full_walrus_deltas_restored_by_walg_file() {
    walg_full_walrus_deltas(
        "walg_full_walrus_deltas_restored_by_walg_file",
        Kind::File,
        "lz4",
    );
}

#[test]
fn walrus_full_walg_deltas_restored_by_walrus_s3() {
    walrus_full_walg_deltas(
        "walrus_full_walg_deltas_restored_by_walrus_s3",
        Kind::S3,
        "zstd",
    );
}

#[test]
fn four_walrus_deltas_under_load_restore_with_both_tools() {
    let test = "four_walrus_deltas_under_load_restore_with_both_tools";
    let Some((walg_bin, store)) = setup(test, Kind::File) else {
        return;
    };
    let env = delta_env(&store, "chain", "lz4", 4);
    let makers = [Maker::Walrus; 5];
    let (source, names) = chain(&walg_bin, &store, &env, Maker::Walrus, &makers);
    let restored = restore_with_walrus(&env);
    let what = format!("4-step wal-rus chain {names:?} restored by wal-rus");
    assert_replayed_archive(&restored, &what);
    assert_same_dump(&restored, &source, &what);
    drop(restored);
    let restored = restore_with_walg(&walg_bin, &env);
    let what = format!("4-step wal-rus chain {names:?} restored by WAL-G");
    assert_same_dump(&restored, &source, &what);
}

#[test]
fn delta_of_one_percent_of_pages_is_small() {
    let test = "delta_of_one_percent_of_pages_is_small";
    let Some((walg_bin, store)) = setup(test, Kind::File) else {
        return;
    };
    let sub = "size";
    let env = delta_env(&store, sub, "lz4", 1);
    let mut src = Source::start(&walg_bin, &env, Maker::Walrus);
    src.pg.pgbench_init(10);
    src.pg.psql("vacuum analyze");
    src.pg.psql("checkpoint");
    let full = src.push(Maker::Walrus, &store, sub);
    let pages: u64 = src
        .pg
        .psql("select (sum(pg_relation_size(oid)) / 8192)::bigint from pg_class where relkind in ('r','i','t','m')")
        .parse()
        .unwrap();
    // 0.5% of the accounts: their old pages, the pages of their new versions and index
    // entries make about one page in a hundred.
    src.pg
        .psql("update pgbench_accounts set abalance = abalance + 1 where aid <= 5000");
    src.pg.psql("checkpoint");
    let delta = src.push(Maker::Walrus, &store, sub);
    let out = src
        .walg
        .run(&["backup-push", "--delta-from-name", &full, src.data()]);
    assert!(
        out.status.success(),
        "WAL-G delta failed\n{}",
        output_text(&out)
    );
    let walg_delta = store
        .backups(sub)
        .into_iter()
        .find(|b| b != &full && b != &delta)
        .expect("WAL-G's delta");
    src.pg.stop();
    let size = |name: &str| {
        sentinel(&store, sub, name)["CompressedSize"]
            .as_u64()
            .unwrap()
    };
    let (f, d, w) = (size(&full), size(&delta), size(&walg_delta));
    let ratio = d as f64 / f as f64;
    eprintln!(
        "{test}: {pages} relation pages; full {f} bytes; wal-rus delta {d} bytes ({:.2}%); WAL-G delta of the same base {w} bytes ({:.2}%)",
        100.0 * ratio,
        100.0 * w as f64 / f as f64
    );
    assert_delta(&store, sub, &delta, &full, &full, 1);
    assert!(
        ratio <= 0.05,
        "delta {delta} stores {d} bytes, {:.1}% of the full backup's {f}",
        100.0 * ratio
    );
}

#[test]
fn delta_on_another_clusters_backup_is_refused() {
    let test = "delta_on_another_clusters_backup_is_refused";
    let Some((walg_bin, store)) = setup(test, Kind::File) else {
        return;
    };
    let sub = "two-clusters";
    let env = delta_env(&store, sub, "lz4", 3);
    let mut a = Source::start(&walg_bin, &env, Maker::Walrus);
    let full = a.push(Maker::Walrus, &store, sub);
    a.pg.stop();
    let mut b = Source::start(&walg_bin, &env, Maker::Walrus);
    let before = store.keys(sub);
    let out =
        b.pg.run_walrus_as_postgres(&["backup-push", b.data()], LONG);
    b.pg.stop();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("another cluster") && text.contains(&full),
        "{text}"
    );
    let added: Vec<String> = store
        .keys(sub)
        .difference(&before)
        .filter(|k| k.starts_with("basebackups_005/"))
        .cloned()
        .collect();
    assert!(added.is_empty(), "a refused delta stored {added:?}");
}

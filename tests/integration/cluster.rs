//! Real-cluster tests: PostgreSQL 15 archives through `wal-rus wal-push` and a
//! standby restores through `wal-rus wal-fetch`.
//!
//! This is the end-to-end proof that wal-rus works as archive_command /
//! restore_command: PostgreSQL decides what to archive and when, checks exit
//! codes, and replays whatever comes back. The scenario, run once against
//! file storage and once against S3 (s3s-fs):
//!
//! 1. initdb a primary with archive_mode=on and
//!    archive_command = '<wrapper> wal-push %p', small max_wal_size so that
//!    pgbench produces many segments;
//! 2. pgbench -i plus a timed pgbench run, then pg_switch_wal();
//! 3. wait (bounded) until pg_stat_archiver reports that segment archived,
//!    failing at once if any archive attempt failed;
//! 4. assert every segment from the first to the last one archived exists in
//!    storage as wal_005/<segment>.lz4;
//! 5. pg_basebackup -X none (the backup holds no WAL, so the standby can only
//!    get WAL from the archive), more pgbench on the primary, switch and
//!    archive the final segment;
//! 6. start the standby with restore_command = '<wrapper> wal-fetch %f %p' and
//!    standby.signal, wait until it replayed past the primary's final switch,
//!    and require pg_dumpall of both to be identical.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    PgCluster, S3Server, Tool, free_port, postgres_owned_tempdir, require_or_fail,
    wait_for_or_explain, wal_segment_range,
};

/// Primary settings: archive via wal-rus, and make WAL segments come quickly.
const PRIMARY_CONF: &str = "\
wal_level = replica
archive_mode = on
archive_command = '{walrus} wal-push %p'
archive_timeout = 10s
max_wal_size = 48MB
min_wal_size = 32MB
checkpoint_timeout = 30s
max_wal_senders = 4
wal_keep_size = 0
";

/// Standby settings: all WAL from the archive via wal-rus.
const STANDBY_CONF: &str = "\
archive_mode = off
hot_standby = on
restore_command = '{walrus} wal-fetch %f %p'
wal_retrieve_retry_interval = 1s
";

const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(120);
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn archive_and_standby_restore_file_storage() {
    let test = "archive_and_standby_restore_file_storage";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    // Written by archive_command (postgres user), read back by the test.
    let store = postgres_owned_tempdir("walrus-store-");
    let env = vec![
        (
            "WALG_FILE_PREFIX".to_string(),
            store.path().display().to_string(),
        ),
        ("WALG_COMPRESSION_METHOD".to_string(), "lz4".to_string()),
    ];
    let wal_dir = store.path().join("wal_005");
    run_scenario(
        &env,
        |segment| wal_dir.join(format!("{segment}.lz4")),
        &|| String::new(),
    );
}

#[test]
fn archive_and_standby_restore_s3() {
    let test = "archive_and_standby_restore_s3";
    if require_or_fail(Tool::Postgres, test).is_none() || require_or_fail(Tool::S3s, test).is_none()
    {
        return;
    }
    let s3 = S3Server::start();
    let mut env = s3.env("cluster/pg15");
    env.push(("WALG_COMPRESSION_METHOD".to_string(), "lz4".to_string()));
    run_scenario(
        &env,
        |segment| s3.object_path(&format!("cluster/pg15/wal_005/{segment}.lz4")),
        &|| {
            format!(
                "--- objects under cluster/pg15/ ---\n{}\n--- s3s-fs log ---\n{}",
                s3.list_keys("cluster/pg15/").join("\n"),
                s3.log()
            )
        },
    );
}

/// The whole primary → archive → standby scenario for one storage backend.
/// `object_for(segment)` is where that segment must be stored on disk;
/// `storage_debug()` adds backend state to failure messages.
fn run_scenario(
    env: &[(String, String)],
    object_for: impl Fn(&str) -> PathBuf,
    storage_debug: &dyn Fn() -> String,
) {
    let mut primary = PgCluster::init_with_env(free_port(), PRIMARY_CONF, env);
    primary.start();
    let first = primary.psql("select pg_walfile_name(pg_current_wal_lsn())");

    // Load: enough WAL for several 16 MiB segments (max_wal_size also forces
    // checkpoints along the way).
    primary.pgbench_init(5);
    primary.pgbench(&["-c", "2", "-j", "2", "-T", "10", "-n"]);
    let last = switch_wal(&primary);
    wait_archived(&primary, &last, storage_debug);

    // Every segment from the first to the last must be in storage, non-empty.
    let segments = wal_segment_range(&first, &last);
    assert!(
        segments.len() >= 4,
        "expected several segments, got {first}..{last}"
    );
    eprintln!(
        "primary archived {} segments ({first}..{last})",
        segments.len()
    );
    let missing: Vec<String> = segments
        .iter()
        .filter(|s| !std::fs::metadata(object_for(s)).is_ok_and(|m| m.is_file() && m.len() > 0))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} archived segments missing from storage (e.g. {}): {missing:?}\n{}",
        missing.len(),
        segments.len(),
        object_for(&missing[0]).display(),
        storage_debug()
    );

    // A standby from a WAL-less base backup, so it must use the archive.
    let mut standby = PgCluster::from_basebackup(&primary, free_port(), STANDBY_CONF, env);
    standby.create_signal_file("standby.signal");

    // More changes after the backup, so replay has real work to do.
    primary.pgbench(&["-c", "2", "-j", "2", "-t", "1000", "-n"]);
    primary.psql("create table after_backup as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    let final_lsn = primary.psql("select pg_switch_wal()");
    let final_segment = primary.psql(&format!("select pg_walfile_name('{final_lsn}')"));
    wait_archived(&primary, &final_segment, storage_debug);

    standby.start();
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");
    wait_for_or_explain(
        &format!("standby replay to reach {final_lsn}"),
        REPLAY_TIMEOUT,
        || {
            let reached = standby
                .try_psql(&format!(
                    "select pg_last_wal_replay_lsn() >= '{final_lsn}'::pg_lsn"
                ))
                .ok()?;
            (reached == "t").then_some(())
        },
        || {
            format!(
                "standby replayed up to {:?}\n--- standby log ---\n{}\n{}",
                standby.try_psql("select pg_last_wal_replay_lsn()"),
                standby.server_log_tail(60),
                storage_debug()
            )
        },
    );

    let primary_dump = primary.dumpall();
    let standby_dump = standby.dumpall();
    assert!(
        primary_dump.contains("after_backup"),
        "primary dump lacks the after_backup table"
    );
    if primary_dump != standby_dump {
        let (n, (p, s)) = primary_dump
            .lines()
            .zip(standby_dump.lines())
            .enumerate()
            .find(|(_, (p, s))| p != s)
            .unwrap_or((0, ("<length differs>", "<length differs>")));
        panic!(
            "pg_dumpall differs between primary and standby (first difference at line {}):\n  primary: {p}\n  standby: {s}\n\
             --- standby log ---\n{}",
            n + 1,
            standby.server_log_tail(60)
        );
    }

    // wal-fetch must have been used for real: the standby restored segments.
    let log = standby.server_log();
    assert!(
        log.contains("restored log file"),
        "standby log shows no restored WAL:\n{}",
        standby.server_log_tail(60)
    );

    standby.stop();
    primary.stop();
}

/// Forces a segment switch and returns the name of the segment it completed.
fn switch_wal(pg: &PgCluster) -> String {
    pg.psql("select pg_walfile_name(pg_switch_wal())")
}

/// Waits until pg_stat_archiver reports `segment` (or a later one) archived.
/// Any failed archive attempt fails the test immediately, with the log.
fn wait_archived(pg: &PgCluster, segment: &str, storage_debug: &dyn Fn() -> String) {
    let explain = || {
        format!(
            "pg_stat_archiver: {:?}\n--- server log ---\n{}",
            pg.try_psql("select * from pg_stat_archiver"),
            pg.server_log_tail(40)
        )
    };
    wait_for_or_explain(
        &format!("{segment} to be archived"),
        ARCHIVE_TIMEOUT,
        || {
            let row = pg.psql("select coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') from pg_stat_archiver");
            let fields: Vec<&str> = row.split('|').collect();
            let (archived, failed, failed_wal) = (fields[0], fields[1], fields[2]);
            if failed != "0" {
                panic!(
                    "archive_command failed {failed} time(s) (last failed: {failed_wal}).\n--- server log ---\n{}\n{}",
                    pg.server_log_tail(60),
                    storage_debug()
                );
            }
            // Same timeline, fixed-width upper-case hex: string order is WAL order.
            // .backup files (from pg_basebackup) sort right after their segment.
            archived
                .get(..24)
                .is_some_and(|a| a >= segment)
                .then_some(())
        },
        explain,
    );
}

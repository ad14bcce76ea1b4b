//! Base backups on a real PostgreSQL 15 cluster: backup-push under a pgbench load, more
//! writes, backup-fetch LATEST, recovery through `wal-rus wal-fetch` to the end of the
//! archive and to a named restore point; memory against the plan and flat in database size;
//! and bad input (missing or corrupt objects, unknown names, a full disk, PostgreSQL
//! stopping mid-backup) failing clearly with nothing half-restored presented as complete.

use crate::common;

use common::{
    PgCluster, Plan, S3Server, Tool, output_text, peak_rss_kib, require_or_fail, within_plan,
};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(600);

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

fn storage_env(files: &Path) -> Vec<(String, String)> {
    vec![("WALG_FILE_PREFIX".into(), files.display().to_string())]
}

/// The wrapper's settings: storage plus how to reach the primary.
pub(crate) fn with_pg(mut env: Vec<(String, String)>, port: u16) -> Vec<(String, String)> {
    env.extend([
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), port.to_string()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGDATABASE".to_string(), "postgres".to_string()),
    ]);
    env
}

fn archiving_primary(env: &[(String, String)]) -> PgCluster {
    let port = common::free_port();
    let env = with_pg(env.to_vec(), port);
    let mut pg = PgCluster::init_with_env(
        port,
        "wal_level = replica\narchive_mode = on\narchive_command = '{walrus} wal-push %p'\narchive_timeout = 5\nmax_wal_size = 256MB\n",
        &env,
    );
    pg.start();
    pg
}

/// Waits until the segment holding the current LSN is archived.
fn wait_archived(pg: &PgCluster) {
    let current = pg.psql("select pg_walfile_name(pg_current_wal_lsn())");
    pg.psql("select pg_switch_wal()");
    common::wait_for("archiving", Duration::from_secs(120), || {
        let row =
            pg.psql("select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver");
        let (last, failed) = row.split_once('|').unwrap();
        assert_eq!(
            failed,
            "0",
            "archive_command failed:\n{}",
            pg.server_log_tail(40)
        );
        (last >= current.as_str()).then_some(())
    });
}

/// Restores LATEST into a new cluster recovering through wal-fetch, with `target` settings.
pub(crate) fn restore(primary_env: &[(String, String)], target: &str) -> PgCluster {
    let port = common::free_port();
    let conf =
        format!("archive_mode = off\nrestore_command = '{{walrus}} wal-fetch %f %p'\n{target}\n");
    let (mut restored, out) = PgCluster::from_restore(port, &conf, primary_env, |c| {
        c.run_walrus_as_postgres(
            &["backup-fetch", c.data_dir().to_str().unwrap(), "LATEST"],
            LONG,
        )
    });
    ok(&out, "backup-fetch");
    restored.create_signal_file("recovery.signal");
    restored.start();
    common::wait_for("end of recovery", Duration::from_secs(300), || {
        (restored.try_psql("select pg_is_in_recovery()").ok()? == "f").then_some(())
    });
    restored
}

/// A base backup under a pgbench load, restored to the end of the archive and to a named
/// restore point, on the storage `env` names (also run on Azure and GCS by `azure_storage` and `gcs_storage`).
pub(crate) fn pitr(env: Vec<(String, String)>) {
    let mut primary = archiving_primary(&env);
    primary.pgbench_init(10);
    // A pgbench load runs while the backup is taken.
    let mut load = primary.client("pgbench");
    load.args(["-T", "8", "-c", "4", "postgres"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut load = load.spawn().expect("pgbench");
    std::thread::sleep(Duration::from_millis(500));
    let push = primary
        .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG);
    ok(&push, "backup-push");
    assert!(
        output_text(&push).contains("Wrote backup with name base_"),
        "{}",
        output_text(&push)
    );
    let _ = load.wait();
    // Writes after the backup: some before the restore point, some after it.
    primary.psql("create table before_rp as select g from generate_series(1, 1000) g");
    primary.psql("select pg_create_restore_point('walrus_rp')");
    primary.psql("create table after_rp as select g from generate_series(1, 500) g");
    primary.pgbench(&["-t", "200"]);
    wait_archived(&primary);
    let source = primary.dumpall();
    primary.stop();

    let restored_env = with_pg(env.clone(), 0);
    let end = restore(&restored_env, "recovery_target_action = promote");
    assert!(
        end.dumpall() == source,
        "restored cluster differs from the source"
    );
    drop(end);

    let at_rp = restore(
        &restored_env,
        "recovery_target_name = 'walrus_rp'\nrecovery_target_action = promote",
    );
    assert_eq!(at_rp.psql("select count(*) from before_rp"), "1000");
    assert_eq!(
        at_rp.try_psql("select count(*) from after_rp").ok(),
        None,
        "after_rp must not exist at the restore point"
    );
}

#[test]
fn pitr_under_load_file_storage() {
    let Some(_) = require_or_fail(Tool::Postgres, "pitr_under_load_file_storage") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-archive-");
    pitr(storage_env(files.path()));
}

#[test]
fn pitr_under_load_s3() {
    let Some(_) = require_or_fail(Tool::Postgres, "pitr_under_load_s3") else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, "pitr_under_load_s3") else {
        return;
    };
    let s3 = S3Server::start();
    pitr(s3.env("pitr"));
}

/// backup-push's peak RSS under 64 MiB and under its plan, flat (within 15%) between pgbench
/// scale 10 and 100, on S3 at default settings.
#[test]
fn backup_push_memory_is_flat_and_within_plan() {
    let Some(_) = require_or_fail(Tool::Postgres, "backup_push_memory_is_flat_and_within_plan")
    else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, "backup_push_memory_is_flat_and_within_plan") else {
        return;
    };
    let s3 = S3Server::start();
    let env = s3.env("mem");
    let primary = archiving_primary(&env);
    let plan = Plan::read(&env);
    let (planned_push, planned_fetch) = (plan.rss("backup-push"), plan.rss("backup-fetch"));
    let mut peaks = Vec::new();
    for scale in [10u32, 100] {
        primary.pgbench_init(scale);
        let mut cmd = Command::new(common::walrus_bin());
        common::hermetic(&mut cmd)
            .args(["backup-push", primary.data_dir().to_str().unwrap()])
            .envs(with_pg(env.clone(), primary.port()));
        let started = Instant::now();
        let (out, kib) = peak_rss_kib(&mut cmd);
        ok(&out, "backup-push");
        let size: u64 = primary
            .psql("select pg_database_size('postgres')")
            .parse()
            .unwrap();
        eprintln!(
            "backup-push scale {scale}: database {} MiB, peak RSS {kib} KiB (plan {} KiB), {:.1} s",
            size >> 20,
            planned_push / 1024,
            started.elapsed().as_secs_f64()
        );
        assert!(
            kib < 64 * 1024,
            "backup-push peak RSS {kib} KiB is not under 64 MiB"
        );
        assert!(
            within_plan(kib, planned_push),
            "backup-push {kib} KiB above its plan {} KiB",
            planned_push / 1024
        );
        peaks.push(kib);
    }
    let (small, large) = (peaks[0] as f64, peaks[1] as f64);
    assert!(
        large <= small * 1.15,
        "peak RSS grew from {small} KiB to {large} KiB with the database"
    );

    // Restoring the large backup stays within its plan too.
    let dest = common::postgres_owned_tempdir("walrus-fetch-");
    let mut fetch = Command::new(common::walrus_bin());
    common::hermetic(&mut fetch)
        .args([
            "backup-fetch",
            dest.path().join("d").to_str().unwrap(),
            "LATEST",
        ])
        .envs(env.clone());
    let (out, kib) = peak_rss_kib(&mut fetch);
    ok(&out, "backup-fetch");
    eprintln!(
        "backup-fetch scale 100: peak RSS {kib} KiB (plan {} KiB)",
        planned_fetch / 1024
    );
    assert!(
        within_plan(kib, planned_fetch),
        "backup-fetch {kib} KiB above its plan"
    );
}

#[test]
fn bad_input_fails_clearly() {
    let Some(_) = require_or_fail(Tool::Postgres, "bad_input_fails_clearly") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-archive-");
    let env = storage_env(files.path());
    let mut primary = archiving_primary(&env);
    primary.pgbench_init(5);
    ok(
        &primary
            .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG),
        "backup-push",
    );
    let root = files.path().join("basebackups_005");
    let sentinel = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_backup_stop_sentinel.json"))
        .unwrap();
    let name = sentinel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("_backup_stop_sentinel.json", "");
    let parts = root.join(&name).join("tar_partitions");
    let fetch = |dest: &Path, what: &str| -> Output {
        common::run_walrus(["backup-fetch", dest.to_str().unwrap(), what], &env)
    };
    let expect_fail = |out: Output, words: &[&str], dest: &Path, what: &str| {
        let text = output_text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: expected exit 1:\n{text}"
        );
        for w in words {
            assert!(text.contains(w), "{what}: message lacks '{w}':\n{text}");
        }
        assert!(
            !dest.join("global/pg_control").exists(),
            "{what}: a startable half-restore was left"
        );
    };
    let scratch = tempfile::tempdir().unwrap();

    // A name that does not exist.
    let d = scratch.path().join("nobackup");
    expect_fail(
        fetch(&d, "base_000000010000000000000099"),
        &["does not exist"],
        &d,
        "unknown name",
    );
    // A destination that is not empty.
    let d = scratch.path().join("full");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("x"), "x").unwrap();
    expect_fail(
        fetch(&d, "LATEST"),
        &["not empty"],
        &d,
        "non-empty destination",
    );

    // A corrupt data partition.
    let part = parts.join("part_001.tar.lz4");
    let original = fs::read(&part).unwrap();
    let mut corrupt = original.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 32].iter_mut().for_each(|b| *b ^= 0xA5);
    fs::write(&part, &corrupt).unwrap();
    let d = scratch.path().join("corrupt");
    expect_fail(fetch(&d, "LATEST"), &["part_001"], &d, "corrupt partition");
    // A truncated one.
    fs::write(&part, &original[..original.len() / 3]).unwrap();
    let d = scratch.path().join("truncated");
    expect_fail(
        fetch(&d, "LATEST"),
        &["part_001"],
        &d,
        "truncated partition",
    );
    // A missing one: the check against files_metadata.json notices.
    fs::remove_file(&part).unwrap();
    let d = scratch.path().join("missing-part");
    expect_fail(
        fetch(&d, "LATEST"),
        &["incomplete"],
        &d,
        "missing partition",
    );
    fs::write(&part, &original).unwrap();
    // A missing pg_control partition.
    let control = parts.join("pg_control.tar.lz4");
    let control_bytes = fs::read(&control).unwrap();
    fs::remove_file(&control).unwrap();
    let d = scratch.path().join("no-control");
    expect_fail(
        fetch(&d, "LATEST"),
        &["pg_control"],
        &d,
        "missing pg_control",
    );
    fs::write(&control, &control_bytes).unwrap();
    // A corrupt sentinel.
    let sentinel_bytes = fs::read(&sentinel).unwrap();
    fs::write(&sentinel, b"{\"LSN\": not json").unwrap();
    let d = scratch.path().join("bad-sentinel");
    expect_fail(fetch(&d, &name), &["sentinel"], &d, "corrupt sentinel");
    // A missing sentinel: the backup does not exist.
    fs::remove_file(&sentinel).unwrap();
    let d = scratch.path().join("no-sentinel");
    expect_fail(
        fetch(&d, &name),
        &["does not exist"],
        &d,
        "missing sentinel",
    );
    fs::write(&sentinel, &sentinel_bytes).unwrap();

    // A full destination disk (a 24 MiB tmpfs; needs root to mount).
    let small = scratch.path().join("small-disk");
    fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let d = small.join("pgdata");
        expect_fail(fetch(&d, "LATEST"), &["No space left"], &d, "full disk");
        let _ = Command::new("umount").arg(&small).status();
    } else {
        assert!(
            !common::tools_required(),
            "could not mount a tmpfs for the full-disk case (CI runs as root)"
        );
        common::skip("full-disk case", "could not mount a tmpfs (not root?)");
    }

    // The intact backup still restores.
    let d = scratch.path().join("good");
    ok(&fetch(&d, "LATEST"), "restore after repairs");

    // PostgreSQL stopping in the middle of a backup: no sentinel for it.
    primary.pgbench_init(20);
    let before: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut push = primary.walrus_command(&["backup-push", primary.data_dir().to_str().unwrap()]);
    push.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = push.spawn().unwrap();
    common::wait_until_copying(&root, &before, "part_001.tar.lz4.tmp.", &mut child);
    primary.stop_mode("immediate");
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "backup-push succeeded although PostgreSQL stopped:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_backup_stop_sentinel.json"))
        .collect();
    assert_eq!(
        after.len(),
        before
            .iter()
            .filter(|n| n.ends_with("_backup_stop_sentinel.json"))
            .count(),
        "a sentinel was written for a failed backup"
    );
}

/// `backup-push --verify` checks page checksums: every page of a healthy cluster passes, and
/// a page damaged on disk is reported in the log and in files_metadata.json's CorruptBlocks.
#[test]
fn verify_reports_corrupt_pages() {
    let Some(_) = require_or_fail(Tool::Postgres, "verify_reports_corrupt_pages") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-archive-");
    let env = storage_env(files.path());
    let primary = archiving_primary(&env);
    primary.pgbench_init(2);
    primary.psql("create table verify_me as select g, repeat('x', 200) as pad from generate_series(1, 5000) g");
    primary.psql("checkpoint");
    let push = primary.run_walrus_as_postgres(
        &[
            "backup-push",
            "--verify",
            primary.data_dir().to_str().unwrap(),
        ],
        LONG,
    );
    ok(&push, "backup-push --verify");
    assert!(
        output_text(&push).contains("found no corrupt blocks"),
        "{}",
        output_text(&push)
    );

    // Damage block 1 of the table's file in the middle of the page, not its header.
    let rel = primary.psql("select pg_relation_filepath('verify_me')");
    let path = primary.data_dir().join(&rel);
    let mut bytes = fs::read(&path).unwrap();
    for b in &mut bytes[8192 + 4000..8192 + 4016] {
        *b ^= 0xFF;
    }
    fs::write(&path, &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let push = primary.run_walrus_as_postgres(
        &[
            "backup-push",
            "--verify",
            primary.data_dir().to_str().unwrap(),
        ],
        LONG,
    );
    ok(&push, "backup-push --verify of a damaged cluster");
    let text = output_text(&push);
    assert!(text.contains("1 corrupt block"), "{text}");
    let latest = common::run_walrus(["backup-list", "--json"], &env);
    let list: serde_json::Value = serde_json::from_slice(&latest.stdout).unwrap();
    let name = list.as_array().unwrap().last().unwrap()["backup_name"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = fs::read_to_string(
        files
            .path()
            .join(format!("basebackups_005/{name}/files_metadata.json")),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let entry = &doc["Files"][format!("/{rel}")];
    assert_eq!(entry["CorruptBlocks"]["CorruptBlocksCount"], 1, "{entry}");
    assert_eq!(entry["CorruptBlocks"]["SomeCorruptBlocks"][0], 1, "{entry}");
}

/// A cluster with a tablespace: backup-push records it in the sentinel's Spec and stores its
/// files under /pg_tblspc/<oid>/; backup-fetch --restore-spec puts them in a new location
/// and links pg_tblspc/<oid> there; the restored cluster reads the table.
#[test]
fn tablespace_relocated_with_restore_spec() {
    let Some(_) = require_or_fail(Tool::Postgres, "tablespace_relocated_with_restore_spec") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-archive-");
    let env = storage_env(files.path());
    let mut primary = archiving_primary(&env);
    let ts_dir = common::postgres_owned_tempdir("walrus-ts-");
    primary.psql(&format!(
        "create tablespace ts1 location '{}'",
        ts_dir.path().display()
    ));
    primary.psql("create table in_ts tablespace ts1 as select g from generate_series(1, 12345) g");
    let oid = primary.psql("select oid from pg_tablespace where spcname = 'ts1'");
    ok(
        &primary
            .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG),
        "backup-push",
    );
    wait_archived(&primary);
    primary.stop();

    let new_ts = common::postgres_owned_tempdir("walrus-ts-new-");
    let spec_path = new_ts.path().join("spec.json");
    let target = new_ts.path().join("ts1");
    fs::write(
        &spec_path,
        format!(r#"{{"base_prefix":"/ignored","tablespaces":["{oid}"],"{oid}":{{"loc":"{}","link":"pg_tblspc/{oid}"}}}}"#, target.display()),
    )
    .unwrap();
    common::chown_postgres(&spec_path);
    let port = common::free_port();
    let env = with_pg(env, 0);
    let conf = "archive_mode = off\nrestore_command = '{walrus} wal-fetch %f %p'\nrecovery_target_action = promote\n";
    let (mut restored, out) = PgCluster::from_restore(port, conf, &env, |c| {
        c.run_walrus_as_postgres(
            &[
                "backup-fetch",
                "--restore-spec",
                spec_path.to_str().unwrap(),
                c.data_dir().to_str().unwrap(),
                "LATEST",
            ],
            LONG,
        )
    });
    ok(&out, "backup-fetch --restore-spec");
    let link = restored.data_dir().join(format!("pg_tblspc/{oid}"));
    assert_eq!(fs::read_link(&link).unwrap(), target);
    assert!(
        !restored.data_dir().join("tablespace_map").exists(),
        "the map would point at the old location"
    );
    restored.create_signal_file("recovery.signal");
    restored.start();
    common::wait_for("end of recovery", Duration::from_secs(120), || {
        (restored.try_psql("select pg_is_in_recovery()").ok()? == "f").then_some(())
    });
    assert_eq!(restored.psql("select count(*) from in_ts"), "12345");
    assert_eq!(
        restored
            .psql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts1'"),
        target.display().to_string()
    );
}

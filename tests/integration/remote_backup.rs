//! Remote and standby base backups on real PostgreSQL 15 clusters, and the liveness bounds:
//!
//! 1. A remote `backup-push` (no data directory: `BASE_BACKUP` over a replication session)
//!    run by a separate process that has no PGDATA and cannot read the data directory (as the
//!    `nobody` OS user when the tests run as root), to s3s-fs, under a pgbench load; stored
//!    as WAL-G's remote mode stores it (relative names, no `backup_label.tar`, a `Spec`, no
//!    `DataCatalogSize`); its peak RSS within `memory-plan`'s `backup-push-remote`. Restored
//!    by wal-rus (end of archive and a named restore point) and by WAL-G v3.0.8
//!    (`backup-fetch` and `wal-fetch`, when WAL-G is available): `pg_dumpall` equal to the
//!    source's. WAL-G v3.0.8's own remote `backup-push` of the same server is run too, and
//!    fails (its BASE_BACKUP reader predates PostgreSQL 15's framing).
//! 2. Two PostgreSQL 15 clusters on loopback, a primary and a streaming standby: a local and
//!    a remote backup taken on the standby while pgbench writes on the primary, each restored
//!    equal to the primary; then a standby promoted in the middle of a backup: the backup
//!    fails, naming the promotion, and writes no sentinel.
//! 3. `WALG_ALIVE_CHECK_INTERVAL`: the postmaster killed (SIGKILL) in the middle of a local
//!    and of a remote backup: backup-push fails within the interval (plus slack), saying so,
//!    with no sentinel. `WALG_STOP_BACKUP_TIMEOUT`: the backup's backend frozen (SIGSTOP)
//!    before the stop: backup-push fails within the timeout, naming the setting.

use crate::common;
use crate::support::Kind;
use crate::walg_backup_interop::{self as interop, Store, Walg};

use common::{
    PgCluster, Plan, Tool, chown_postgres, output_text, require_or_fail, run_with_timeout,
    within_plan,
};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(600);

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

/// A primary archiving through wal-rus to `env`'s storage.
fn primary(env: &[(String, String)], extra: &str) -> PgCluster {
    let port = common::free_port();
    let mut pg = PgCluster::init_with_env(
        port,
        &format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{{walrus}} wal-push %p'\narchive_timeout = 5\nmax_wal_size = 256MB\n{extra}"
        ),
        &interop::with_pg(env, port),
    );
    pg.start();
    pg
}

/// `wal-rus backup-push` with no data directory, as a process of its own: working directory
/// a fresh empty one, no PGDATA, and (as root, with `as_nobody`) run by `nobody`, who cannot
/// enter the data directory (nor write file storage: S3 only). `env` is storage plus the
/// PG* settings.
fn remote_push_command(env: &[(String, String)], as_nobody: bool) -> (Command, tempfile::TempDir) {
    let cwd = tempfile::Builder::new()
        .prefix("walrus-remote-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cmd = if as_nobody && common::is_root() {
        // nobody must reach the binary and write its spool: a copy in a world-readable place.
        let bin = cwd.path().join("wal-rus");
        fs::copy(common::walrus_bin(), &bin).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(cwd.path(), fs::Permissions::from_mode(0o777)).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin);
        c
    } else {
        Command::new(common::walrus_bin())
    };
    common::hermetic(&mut cmd)
        .arg("backup-push")
        .current_dir(cwd.path())
        .env_remove("PGDATA")
        .env("HOME", cwd.path())
        .env("TMPDIR", cwd.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    (cmd, cwd)
}

/// Names of the backups (sentinels) in `store` under `sub`, in storage order.
fn backups(store: &Store, sub: &str) -> Vec<String> {
    store.backups(sub).into_iter().collect()
}

/// The one new backup since `before`.
fn new_backup(store: &Store, sub: &str, before: &[String]) -> String {
    let new: Vec<String> = backups(store, sub)
        .into_iter()
        .filter(|b| !before.contains(b))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "expected one new backup, got {new:?}; stored under {}: {:?}",
        store.root(sub).display(),
        store.keys(sub)
    );
    new[0].clone()
}

/// Checks that backup `name` is stored as WAL-G's remote mode stores one.
fn assert_remote_layout(store: &Store, sub: &str, name: &str, data_dir: &Path) {
    let keys = store.keys(sub);
    let parts: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("basebackups_005/{name}/tar_partitions/")))
        .collect();
    assert!(
        parts.iter().any(|k| k.ends_with("/pg_control.tar.lz4")),
        "{parts:?}"
    );
    assert!(
        parts.iter().any(|k| k.ends_with("/part_001.tar.lz4")),
        "{parts:?}"
    );
    assert!(
        !parts.iter().any(|k| k.contains("backup_label.tar")),
        "a remote backup has no backup_label.tar: {parts:?}"
    );
    let sentinel: Value = serde_json::from_slice(&store.read(
        sub,
        &format!("basebackups_005/{name}_backup_stop_sentinel.json"),
    ))
    .unwrap();
    assert!(sentinel.get("DataCatalogSize").is_none(), "{sentinel}");
    assert_eq!(
        sentinel["Spec"]["tablespaces"],
        serde_json::json!([]),
        "{sentinel}"
    );
    let real = fs::canonicalize(data_dir).unwrap();
    assert_eq!(
        sentinel["DataDir"].as_str().unwrap(),
        real.to_str().unwrap(),
        "{sentinel}"
    );
    assert!(sentinel["FinishLSN"].as_u64().unwrap() > sentinel["LSN"].as_u64().unwrap());
    let files: Value = serde_json::from_slice(
        &store.read(sub, &format!("basebackups_005/{name}/files_metadata.json")),
    )
    .unwrap();
    let files = files["Files"].as_object().unwrap();
    for key in ["backup_label", "global/pg_control", "PG_VERSION"] {
        assert!(files.contains_key(key), "Files lacks {key}");
    }
    assert!(
        files
            .keys()
            .all(|k| !k.starts_with('/') && !k.ends_with('/')),
        "remote Files keys are relative names of files"
    );
}

/// Restores backup `name` (or LATEST) with wal-rus and recovers through wal-fetch, with
/// `target` recovery settings.
fn restore_walrus(env: &[(String, String)], name: &str, target: &str) -> PgCluster {
    let conf =
        format!("archive_mode = off\nrestore_command = '{{walrus}} wal-fetch %f %p'\n{target}\n");
    let (mut restored, out) = PgCluster::from_restore(common::free_port(), &conf, env, |c| {
        c.run_walrus_as_postgres(
            &["backup-fetch", c.data_dir().to_str().unwrap(), name],
            LONG,
        )
    });
    ok(&out, &format!("wal-rus backup-fetch {name}"));
    interop::recover(&mut restored);
    restored
}

/// Writes after the backup, then everything archived: the source to compare with.
fn finish_source(pg: &PgCluster) -> String {
    pg.psql(
        "create table after_backup as select g, md5(g::text) as h from generate_series(1, 2000) g",
    );
    pg.psql("select pg_create_restore_point('walrus_remote_rp')");
    pg.psql("create table after_rp as select g from generate_series(1, 100) g");
    pg.pgbench(&["-t", "200", "-c", "2"]);
    wait_archived(pg);
    pg.dumpall()
}

fn wait_archived(pg: &PgCluster) {
    let current = pg.switch_wal();
    pg.wait_archived_past(&current, Duration::from_secs(180), String::new);
}

fn load(pg: &PgCluster, secs: u32) -> Child {
    let mut cmd = pg.client("pgbench");
    cmd.args(["-T", &secs.to_string(), "-c", "2", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("pgbench")
}

/// A remote backup-push from a process that cannot see the data directory, restored by
/// wal-rus and WAL-G v3.0.8 equal to the source; its memory within the plan.
#[test]
fn remote_backup_restored_by_walrus_and_walg() {
    let test = "remote_backup_restored_by_walrus_and_walg";
    if require_or_fail(Tool::Postgres, test).is_none() || require_or_fail(Tool::S3s, test).is_none()
    {
        return;
    }
    // WAL-G is optional (its half is skipped loudly without it).
    let walg_bin = require_or_fail(Tool::Walg, test);
    let store = Store::new(Kind::S3);
    let sub = "remote";
    let env = store.env(sub, "lz4");
    let mut pg = primary(&env, "");
    pg.pgbench_init(10);
    let pg_env = interop::with_pg(&env, pg.port());

    // WAL-G v3.0.8's own remote backup of this PostgreSQL 15 server, for the record.
    if let Some(walg_bin) = &walg_bin {
        let dir = common::postgres_owned_tempdir("walrus-walg-remote-");
        let walg = Walg::install(walg_bin, dir.path(), &pg_env);
        let out = walg.run(&["backup-push"]);
        let text = output_text(&out);
        eprintln!(
            "WAL-G v3.0.8 remote backup-push on PostgreSQL 15: exit {:?}; {}",
            out.status.code(),
            text.lines()
                .filter(|l| l.contains("ERROR") || l.contains("invalid"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(
            !out.status.success() || text.contains("invalid tar header"),
            "WAL-G v3.0.8's remote backup was expected to fail on PostgreSQL 15:\n{text}"
        );
        assert!(backups(&store, sub).is_empty(), "WAL-G left a sentinel");
    }

    let plan = Plan::read(&pg_env);
    let planned = plan.rss("backup-push-remote");
    let mut pgbench = load(&pg, 6);
    std::thread::sleep(Duration::from_millis(500));
    let (mut push, _cwd) = remote_push_command(&pg_env, true);
    let started = Instant::now();
    let (out, kib) = common::peak_rss_kib(&mut push);
    ok(&out, "remote backup-push");
    let _ = pgbench.wait();
    eprintln!(
        "remote backup-push: {:.1} s, peak RSS {kib} KiB (plan {} KiB)\n{}",
        started.elapsed().as_secs_f64(),
        planned / 1024,
        output_text(&out)
    );
    assert!(
        within_plan(kib, planned),
        "remote backup-push {kib} KiB above its plan {} KiB",
        planned / 1024
    );
    let name = new_backup(&store, sub, &[]);
    assert_remote_layout(&store, sub, &name, pg.data_dir());

    let source = finish_source(&pg);
    pg.stop();

    let restored_env = interop::with_pg(&env, 0);
    let end = restore_walrus(&restored_env, &name, "recovery_target_action = promote");
    interop::assert_replayed_archive(&end, "remote backup restored by wal-rus");
    interop::assert_same_dump(&end, &source, "remote backup restored by wal-rus");
    drop(end);
    let at_rp = restore_walrus(
        &restored_env,
        &name,
        "recovery_target_name = 'walrus_remote_rp'\nrecovery_target_action = promote",
    );
    assert_eq!(at_rp.psql("select count(*) from after_backup"), "2000");
    assert!(
        at_rp.try_psql("select count(*) from after_rp").is_err(),
        "after_rp must not exist at the restore point"
    );
    drop(at_rp);
    if let Some(walg_bin) = &walg_bin {
        let walg_restored = interop::restore_with_walg(walg_bin, &env);
        interop::assert_replayed_archive(&walg_restored, "remote backup restored by WAL-G");
        interop::assert_same_dump(
            &walg_restored,
            &source,
            "wal-rus remote backup restored by WAL-G v3.0.8",
        );
    }
}

/// A streaming standby of `primary` on loopback, restoring what streaming lacks from the
/// archive, with wal-rus's settings pointing at itself.
fn standby_of(primary: &PgCluster, env: &[(String, String)]) -> PgCluster {
    let port = common::free_port();
    let conf = format!(
        "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby1'\nhot_standby = on\nrestore_command = '{{walrus}} wal-fetch %f %p'\narchive_mode = on\n",
        primary.port()
    );
    let mut standby =
        PgCluster::from_basebackup(primary, port, &conf, &interop::with_pg(env, port));
    standby.create_signal_file("standby.signal");
    standby.start();
    wait_replayed(primary, &standby);
    standby
}

/// Waits until `standby` has replayed everything `primary` wrote so far.
fn wait_replayed(primary: &PgCluster, standby: &PgCluster) {
    let lsn = primary.psql("select pg_current_wal_lsn()");
    common::wait_for_or_explain(
        "the standby's replay",
        Duration::from_secs(120),
        || {
            let done = standby
                .try_psql(&format!(
                    "select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
                ))
                .ok()?;
            (done == "t").then_some(())
        },
        || standby.server_log_tail(30),
    );
}

fn sentinels(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_backup_stop_sentinel.json"))
        .collect();
    names.sort();
    names
}

/// Backups on a streaming standby (local and remote) restore equal to the primary; a
/// standby promoted during a backup fails it.
#[test]
fn standby_backups_restore_equal_to_the_primary() {
    let test = "standby_backups_restore_equal_to_the_primary";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let store = Store::new(Kind::File);
    let sub = "standby";
    let env = store.env(sub, "lz4");
    let primary = primary(&env, "");
    primary.pgbench_init(10);
    let mut standby = standby_of(&primary, &env);
    let standby_env = interop::with_pg(&env, standby.port());

    // Under load on the primary: a local backup on the standby, then a remote one. Each
    // starts at a new restartpoint in a new segment (a backup is named after its start
    // segment: two in one segment would share a name).
    let new_restartpoint = |primary: &PgCluster, standby: &PgCluster| {
        primary.psql("select pg_switch_wal()");
        primary.psql("checkpoint");
        wait_replayed(primary, standby);
    };
    let mut pgbench = load(&primary, 20);
    new_restartpoint(&primary, &standby);
    let local = standby
        .run_walrus_as_postgres(&["backup-push", standby.data_dir().to_str().unwrap()], LONG);
    ok(&local, "backup-push on the standby");
    assert!(
        output_text(&local).contains("on a standby"),
        "{}",
        output_text(&local)
    );
    let local_name = new_backup(&store, sub, &[]);
    new_restartpoint(&primary, &standby);
    let (mut remote, _cwd) = remote_push_command(&standby_env, false);
    let remote_out = run_with_timeout(&mut remote, LONG);
    ok(&remote_out, "remote backup-push from the standby");
    let remote_name = new_backup(&store, sub, std::slice::from_ref(&local_name));
    let _ = pgbench.wait();

    let source = finish_source(&primary);
    wait_replayed(&primary, &standby);
    for name in [&local_name, &remote_name] {
        let restored = restore_walrus(
            &interop::with_pg(&env, 0),
            name,
            "recovery_target_action = promote",
        );
        interop::assert_same_dump(
            &restored,
            &source,
            &format!("standby backup {name} restored by wal-rus"),
        );
    }

    // A standby promoted in the middle of a backup: no sentinel, and the reason said.
    primary.pgbench_init(20);
    wait_replayed(&primary, &standby);
    primary.psql("checkpoint");
    let root = store.root(sub).join("basebackups_005");
    let before: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let sentinels_before = sentinels(&root);
    // The wrapper exports the settings: the rate limit that makes the copy last goes there.
    let mut slow_env = standby_env.clone();
    slow_env.push(("WALG_DISK_RATE_LIMIT".into(), "20000000".into()));
    standby.set_walrus_env(&slow_env);
    let mut push = standby.walrus_command(&["backup-push", standby.data_dir().to_str().unwrap()]);
    push.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = push.spawn().unwrap();
    common::wait_until_copying(&root, &before, "part_001.tar", &mut child);
    run_with_timeout(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(standby.bin("pg_ctl"))
            .arg("-D")
            .arg(standby.data_dir())
            .args(["-w", "promote"]),
        Duration::from_secs(60),
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a backup across a promotion succeeded:\n{text}"
    );
    assert!(
        text.contains("promoted"),
        "the failure does not name the promotion:\n{text}"
    );
    assert_eq!(sentinels(&root), sentinels_before, "a sentinel was written");
    standby.stop();
}

fn postmaster_pid(pg: &PgCluster) -> u32 {
    fs::read_to_string(pg.data_dir().join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: &str, sig: &str) {
    let st = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Runs `push` (stderr piped), kills the postmaster (SIGKILL) once it copies, and checks it
/// fails within `bound` of the kill, with a message naming PostgreSQL, and no sentinel.
fn killed_mid_backup(
    pg: &mut PgCluster,
    root: &Path,
    mut push: Command,
    what: &str,
    bound: Duration,
) {
    let before: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let sentinels_before = sentinels(root);
    push.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = push.spawn().unwrap();
    common::wait_until_copying(root, &before, "part_001.tar", &mut child);
    let pid = postmaster_pid(pg);
    signal(&pid.to_string(), "-KILL");
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "{what}: backup-push still runs 120 s after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = killed.elapsed();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{what}: failed {:.2} s after the postmaster was killed:\n{text}",
        took.as_secs_f64()
    );
    assert!(
        !out.status.success(),
        "{what}: succeeded without a server:\n{text}"
    );
    assert!(
        took <= bound,
        "{what}: failed {took:?} after the kill, more than {bound:?}"
    );
    assert!(
        text.contains("alive check") || text.contains("PostgreSQL") || text.contains("server"),
        "{what}: the failure does not say the server went away:\n{text}"
    );
    assert_eq!(
        sentinels(root),
        sentinels_before,
        "{what}: a sentinel was written"
    );
    // Children of the killed postmaster exit on their own; the harness stops nothing more.
    let _ = pg;
}

/// WALG_ALIVE_CHECK_INTERVAL and WALG_STOP_BACKUP_TIMEOUT bound how long a backup waits for
/// a server that is gone or frozen.
#[test]
fn dead_or_frozen_servers_fail_backups_within_the_bounds() {
    let test = "dead_or_frozen_servers_fail_backups_within_the_bounds";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let store = Store::new(Kind::File);
    let interval = Duration::from_secs(2);
    let bound = interval + Duration::from_secs(4);

    // A local backup, slowed to last well beyond the interval; then a remote one (the
    // server's MAX_RATE slows it).
    for remote in [false, true] {
        let sub = if remote {
            "alive-remote"
        } else {
            "alive-local"
        };
        let mut env = store.env(sub, "lz4");
        env.extend([
            ("WALG_ALIVE_CHECK_INTERVAL".to_string(), "2s".to_string()),
            ("WALG_DISK_RATE_LIMIT".to_string(), "8000000".to_string()),
        ]);
        let mut pg = primary(&env, "");
        pg.pgbench_init(10);
        let root = store.root(sub).join("basebackups_005");
        fs::create_dir_all(&root).unwrap();
        chown_postgres(&store.root(sub));
        let (push, _cwd, what) = if remote {
            let pg_env = interop::with_pg(&env, pg.port());
            let (push, cwd) = remote_push_command(&pg_env, false);
            (push, Some(cwd), "remote backup")
        } else {
            let push = pg.walrus_command(&["backup-push", pg.data_dir().to_str().unwrap()]);
            (push, None, "local backup")
        };
        killed_mid_backup(&mut pg, &root, push, what, bound);
        drop(pg);
    }

    // A backend frozen before the stop: the stop fails within WALG_STOP_BACKUP_TIMEOUT.
    let sub = "stop-timeout";
    let mut env = store.env(sub, "lz4");
    env.extend([
        ("WALG_STOP_BACKUP_TIMEOUT".to_string(), "3s".to_string()),
        ("WALG_DISK_RATE_LIMIT".to_string(), "20000000".to_string()),
    ]);
    let pg = primary(&env, "");
    pg.pgbench_init(5);
    let root = store.root(sub).join("basebackups_005");
    let mut push = pg.walrus_command(&["backup-push", pg.data_dir().to_str().unwrap()]);
    push.stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = push.spawn().unwrap();
    let backend = common::wait_for("the backup's session", Duration::from_secs(60), || {
        // The backup's session: the last it ran is the timeline query after pg_backup_start.
        let pid = pg.psql(
            "select pid from pg_stat_activity where query like '%timeline_id%pg_control_checkpoint%' and pid <> pg_backend_pid() and state = 'idle'",
        );
        (!pid.is_empty()).then_some(pid)
    });
    signal(&backend, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            signal(&backend, "-CONT");
            panic!("backup-push still waits for a frozen backend after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    signal(&backend, "-CONT");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "frozen backend: backup-push failed after {:.1} s:\n{text}",
        took.as_secs_f64()
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("WALG_STOP_BACKUP_TIMEOUT"), "{text}");
    assert!(sentinels(&root).is_empty(), "a sentinel was written");
    // The copy takes about 4 s at 20 MB/s; the stop at most 3 s and the grace.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

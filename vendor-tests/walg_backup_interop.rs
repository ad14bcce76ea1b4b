//! Base-backup interop with WAL-G v3.0.8 itself (its `pg` binary, WALRUS_WALG_BIN), on file
//! storage and on S3 (s3s-fs), with real PostgreSQL 15 clusters under pgbench:
//!
//! 1. WAL-G `backup-push` (PostgreSQL archiving through WAL-G `wal-push`, a pgbench load
//!    during the backup), more writes; wal-rus `backup-fetch LATEST` and recovery with
//!    `restore_command = wal-rus wal-fetch`: `pg_dumpall` equals the source's.
//! 2. The reverse: wal-rus `backup-push` (archiving through wal-rus); WAL-G `backup-fetch
//!    DEST LATEST` and recovery with WAL-G `wal-fetch`: dumps equal.
//! 3. On a prefix with three backups made by both tools, `backup-list --json` of each tool
//!    lists all of them, in the same order, with the same names; `--detail --json` of each
//!    reads the other's `metadata.json` to the same LSNs.
//! 4. On two identical copies of such a prefix, `delete retain 1 --confirm` by WAL-G and by
//!    wal-rus leave exactly the same set of objects (and a dry run deletes nothing).
//!
//! WAL-G runs as the `postgres` OS user, like wal-rus, through a wrapper script beside the
//! cluster (`walg-env.sh`, like the harness's `walrus-env.sh`) that exports the test's settings
//! (storage, `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE`, `PGDATA`, and a `HOME` with no
//! `.walg.json`) and execs a copy of the binary the postgres user can reach. WAL-G v3.0.8 on
//! PostgreSQL ≥ 15 does not wait for archiving at backup stop (walg-compat §8.2), so every
//! source switches WAL and waits until the archiver has stored everything before it is dumped
//! and stopped.
//!
//! When WAL-G is unavailable every test prints a loud SKIPPED notice and passes (a peer's
//! outage must not turn CI red); with WAL-G present any difference fails.
//!
//! Self-check of the test logic: pointing WALRUS_WALG_BIN at the wal-rus binary itself, which
//! accepts the same commands and settings,
//!
//! ```text
//! WALRUS_WALG_BIN=$(pwd)/target/release/wal-rus cargo test --release --test walg_backup_interop
//! ```
//!
//! runs every step with wal-rus standing in for WAL-G, and must pass. That proves only that the
//! tests themselves work (clusters, wrappers, waits, comparisons), not that wal-rus and WAL-G
//! agree: for that WAL-G v3.0.8 itself must be present.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    COMMAND_TIMEOUT, PgCluster, S3Server, Tool, chown_postgres, hermetic, output_text,
    require_or_fail, run_with_timeout,
};
use serde_json::Value;
use support::Kind;
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(600);
/// pgbench scale of every source cluster (about 30 MiB).
const SCALE: u32 = 2;

// ------------------------------------------------------------------ storage

/// One storage backend per test; each use has its own prefix (`sub`) below it.
enum Store {
    /// Owned by postgres (both tools write it as postgres).
    File(TempDir),
    S3(S3Server),
}

impl Store {
    fn new(kind: Kind) -> Store {
        match kind {
            Kind::File => Store::File(common::postgres_owned_tempdir("walrus-bkinterop-")),
            Kind::S3 => Store::S3(S3Server::start()),
        }
    }

    /// Settings both tools read for prefix `sub`. On S3 the bucket-versioning probe of WAL-G
    /// is settled (s3s-fs has no GetBucketVersioning; wal-rus ignores the setting); each kind
    /// also uses its own compression method, so tar partitions cross between the tools in
    /// more than one framing (file: the default lz4, S3: zstd).
    fn env(&self, sub: &str) -> Vec<(String, String)> {
        match self {
            Store::File(dir) => {
                let prefix = dir.path().join(sub);
                fs::create_dir_all(&prefix).unwrap();
                chown_postgres(&prefix);
                vec![("WALG_FILE_PREFIX".into(), prefix.display().to_string())]
            }
            Store::S3(s3) => {
                let mut env = s3.env(sub);
                env.push(("S3_ENABLE_VERSIONING".into(), "disabled".into()));
                env.push(("WALG_COMPRESSION_METHOD".into(), "zstd".into()));
                env
            }
        }
    }

    /// The directory holding prefix `sub`'s objects (s3s-fs keeps an object as a plain file).
    fn root(&self, sub: &str) -> PathBuf {
        match self {
            Store::File(dir) => dir.path().join(sub),
            Store::S3(s3) => s3.object_path(sub),
        }
    }

    /// Keys of every object under prefix `sub`, relative to it.
    fn keys(&self, sub: &str) -> BTreeSet<String> {
        fn walk(dir: &Path, rel: &str, out: &mut BTreeSet<String>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), &key, out);
                } else {
                    out.insert(key);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root(sub), "", &mut out);
        out
    }

    /// Names of the backups (sentinels) under prefix `sub`.
    fn backups(&self, sub: &str) -> BTreeSet<String> {
        self.keys(sub)
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix("basebackups_005/")
                    .filter(|rest| !rest.contains('/'))
                    .and_then(|rest| rest.strip_suffix("_backup_stop_sentinel.json"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// Copies prefix `from` to prefix `to`, objects and modification times alike.
    fn copy_prefix(&self, from: &str, to: &str) {
        let (src, dst) = (self.root(from), self.root(to));
        assert!(!dst.exists(), "{} exists already", dst.display());
        common::run_ok(
            Command::new("cp").arg("-a").arg(&src).arg(&dst),
            COMMAND_TIMEOUT,
        );
    }
}

// ------------------------------------------------------------------ WAL-G

/// WAL-G installed beside a cluster: a copy of the binary in `<base>/bin/wal-g` and the
/// wrapper `<base>/walg-env.sh` exporting `env` (plus `HOME=<base>/walg-home`, empty), both
/// usable by the postgres user.
struct Walg {
    wrapper: PathBuf,
    base: PathBuf,
}

impl Walg {
    fn install(walg_bin: &Path, base: &Path, env: &[(String, String)]) -> Walg {
        let bin_dir = base.join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        let bin = bin_dir.join("wal-g");
        if !bin.exists() {
            fs::copy(walg_bin, &bin).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", walg_bin.display(), bin.display())
            });
        }
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let home = base.join("walg-home");
        fs::create_dir_all(&home).unwrap();
        let mut script = String::from(
            "#!/bin/sh\n# Generated by walg_backup_interop: settings for WAL-G run by PostgreSQL and the tests.\n",
        );
        let _ = writeln!(
            script,
            "export HOME={}",
            shell_quote(&home.display().to_string())
        );
        for (k, v) in env {
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "bad variable name {k:?}"
            );
            let _ = writeln!(script, "export {k}={}", shell_quote(v));
        }
        let _ = writeln!(
            script,
            "exec {} \"$@\"",
            shell_quote(&bin.display().to_string())
        );
        let wrapper = base.join("walg-env.sh");
        fs::write(&wrapper, script).unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o700)).unwrap();
        for p in [&bin_dir, &home, &wrapper] {
            chown_postgres(p);
        }
        Walg {
            wrapper,
            base: base.to_path_buf(),
        }
    }

    /// Runs WAL-G with `args` as the postgres user (from the cluster's base directory).
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = if common::is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&self.wrapper);
            c
        } else {
            Command::new(&self.wrapper)
        };
        hermetic(&mut cmd)
            .args(args)
            .current_dir(&self.base)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        run_with_timeout(&mut cmd, LONG)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs WAL-G (`walg_bin`) or wal-rus as the current user with exactly `env` and an empty
/// HOME: for the catalogue commands (backup-list, delete), which need no PostgreSQL.
fn run_tool(tool: Maker, walg_bin: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let home = TempDir::new().unwrap();
    let mut env = env.to_vec();
    env.push(("HOME".into(), home.path().display().to_string()));
    match tool {
        Maker::Walrus => common::run_walrus(args, &env),
        Maker::Walg => {
            let mut cmd = Command::new(walg_bin);
            hermetic(&mut cmd)
                .args(args)
                .envs(env)
                .env_remove("PGDATA")
                .current_dir(home.path());
            run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
        }
    }
}

/// Which tool did something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Maker {
    Walg,
    Walrus,
}

impl Maker {
    fn label(self) -> &'static str {
        match self {
            Maker::Walg => "WAL-G",
            Maker::Walrus => "wal-rus",
        }
    }
}

// --------------------------------------------------------------- clusters

/// `env` plus how to reach the cluster on `port`.
fn with_pg(env: &[(String, String)], port: u16) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend([
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), port.to_string()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGDATABASE".to_string(), "postgres".to_string()),
    ]);
    env
}

fn with_pgdata(env: &[(String, String)], data: &Path) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("PGDATA".to_string(), data.display().to_string()));
    env
}

/// A running source cluster archiving to `env`'s storage through `archiver`, with WAL-G
/// installed beside it.
struct Source {
    pg: PgCluster,
    walg: Walg,
}

impl Source {
    fn start(walg_bin: &Path, env: &[(String, String)], archiver: Maker) -> Source {
        let port = common::free_port();
        let env = with_pg(env, port);
        let mut pg = PgCluster::init_with_env(
            port,
            "wal_level = replica\narchive_mode = on\nmax_wal_size = 256MB\n",
            &env,
        );
        let walg = Walg::install(walg_bin, pg.base_dir(), &with_pgdata(&env, pg.data_dir()));
        let command = match archiver {
            Maker::Walg => walg.wrapper.clone(),
            Maker::Walrus => pg.walrus_wrapper(),
        };
        pg.append_conf(&format!(
            "archive_command = '{} wal-push %p'\n",
            command.display()
        ));
        pg.start();
        Source { pg, walg }
    }

    fn data(&self) -> &str {
        self.pg.data_dir().to_str().unwrap()
    }

    /// `backup-push <PGDATA>` by `maker` (as postgres); returns the new backup's name, found
    /// in storage.
    fn push(&self, maker: Maker, store: &Store, sub: &str) -> String {
        let before = store.backups(sub);
        let out = match maker {
            Maker::Walg => self.walg.run(&["backup-push", self.data()]),
            Maker::Walrus => self
                .pg
                .run_walrus_as_postgres(&["backup-push", self.data()], LONG),
        };
        assert!(
            out.status.success(),
            "{} backup-push failed\n{}\n--- server log ---\n{}",
            maker.label(),
            output_text(&out),
            self.pg.server_log_tail(30)
        );
        let new: Vec<String> = store.backups(sub).difference(&before).cloned().collect();
        assert_eq!(
            new.len(),
            1,
            "{} backup-push should add exactly one sentinel, added {new:?}",
            maker.label()
        );
        new[0].clone()
    }

    /// A pgbench load running (in the background) for `secs` seconds.
    fn load(&self, secs: u32) -> std::process::Child {
        let mut cmd = self.pg.client("pgbench");
        cmd.args(["-T", &secs.to_string(), "-c", "2", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().expect("start pgbench")
    }

    /// Writes after the backup: a new table and more pgbench transactions.
    fn more_writes(&self) {
        self.pg.psql("create table after_backup as select g, md5(g::text) as h from generate_series(1, 2000) g");
        self.pg.pgbench(&["-t", "200", "-c", "2"]);
    }

    /// Switches to a new WAL segment and waits until everything up to it is archived (WAL-G
    /// v3.0.8 does not wait for the backup's last segment, §8.2; the dump must be covered too).
    fn wait_archived(&self) {
        let pg = &self.pg;
        let current = pg.psql("select pg_walfile_name(pg_current_wal_lsn())");
        pg.psql("select pg_switch_wal()");
        common::wait_for_or_explain(
            "archiving of the last WAL segment",
            Duration::from_secs(180),
            || {
                let row = pg.psql(
                    "select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver",
                );
                let (last, failed) = row.split_once('|').unwrap();
                assert_eq!(
                    failed,
                    "0",
                    "archive_command failed:\n{}",
                    pg.server_log_tail(40)
                );
                (last >= current.as_str()).then_some(())
            },
            || pg.server_log_tail(40),
        );
    }
}

/// Starts `cluster` (restored, with recovery settings) in archive recovery and waits until it
/// has replayed the archive and been promoted.
fn recover(cluster: &mut PgCluster) {
    cluster.create_signal_file("recovery.signal");
    cluster.start();
    common::wait_for_or_explain(
        "the end of archive recovery",
        Duration::from_secs(300),
        || (cluster.try_psql("select pg_is_in_recovery()").ok()? == "f").then_some(()),
        || cluster.server_log_tail(60),
    );
}

/// Restores LATEST with wal-rus and recovers with `wal-rus wal-fetch`.
fn restore_with_walrus(env: &[(String, String)]) -> PgCluster {
    let conf = "archive_mode = off\nrestore_command = '{walrus} wal-fetch %f %p'\nrecovery_target_action = promote\n";
    let (mut restored, out) = PgCluster::from_restore(common::free_port(), conf, env, |c| {
        c.run_walrus_as_postgres(
            &["backup-fetch", c.data_dir().to_str().unwrap(), "LATEST"],
            LONG,
        )
    });
    assert!(
        out.status.success(),
        "wal-rus backup-fetch LATEST failed\n{}",
        output_text(&out)
    );
    recover(&mut restored);
    restored
}

/// Restores LATEST with WAL-G and recovers with `WAL-G wal-fetch`.
fn restore_with_walg(walg_bin: &Path, env: &[(String, String)]) -> PgCluster {
    let (mut restored, out) = PgCluster::from_restore(
        common::free_port(),
        "archive_mode = off\nrecovery_target_action = promote\n",
        env,
        |c| {
            let walg = Walg::install(
                walg_bin,
                c.base_dir(),
                &with_pgdata(&with_pg(env, c.port()), c.data_dir()),
            );
            walg.run(&["backup-fetch", c.data_dir().to_str().unwrap(), "LATEST"])
        },
    );
    assert!(
        out.status.success(),
        "WAL-G backup-fetch LATEST failed\n{}",
        output_text(&out)
    );
    // Appended after the harness settings, so it is the one in effect.
    let wrapper = restored.base_dir().join("walg-env.sh");
    restored.append_conf(&format!(
        "restore_command = '{} wal-fetch %f %p'\n",
        wrapper.display()
    ));
    recover(&mut restored);
    restored
}

fn assert_same_dump(restored: &PgCluster, source: &str, what: &str) {
    let got = restored.dumpall();
    if got != source {
        let line = got
            .lines()
            .zip(source.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(source.lines().count()));
        panic!(
            "{what}: pg_dumpall of the restored cluster differs from the source (first at line {}: restored {:?}, source {:?}; {} vs {} lines)\n--- restored server log ---\n{}",
            line + 1,
            got.lines().nth(line),
            source.lines().nth(line),
            got.lines().count(),
            source.lines().count(),
            restored.server_log_tail(40)
        );
    }
    assert!(
        got.contains("after_backup"),
        "{what}: the dump lacks the table written after the backup"
    );
}

/// WAL-G present (else skip), PostgreSQL (and s3s-fs for S3) present (else skip, or fail under
/// CI/WALRUS_REQUIRE_TOOLS).
fn setup(test: &str, kind: Kind) -> Option<(PathBuf, Store)> {
    let walg = require_or_fail(Tool::Walg, test)?;
    require_or_fail(Tool::Postgres, test)?;
    if kind == Kind::S3 {
        require_or_fail(Tool::S3s, test)?;
    }
    Some((walg, Store::new(kind)))
}

// ------------------------------------------------------------------ cases

/// 1. WAL-G backs up (and archives); wal-rus restores and recovers.
fn walg_backup_walrus_restore(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let env = store.env("walg-backup");
    let mut src = Source::start(&walg_bin, &env, Maker::Walg);
    src.pg.pgbench_init(SCALE);
    let mut load = src.load(4);
    let name = src.push(Maker::Walg, &store, "walg-backup");
    let _ = load.wait();
    src.more_writes();
    src.wait_archived();
    let source = src.pg.dumpall();
    src.pg.stop();
    assert!(
        store
            .keys("walg-backup")
            .iter()
            .any(|k| k.starts_with("wal_005/")),
        "WAL-G archived nothing\n{:?}",
        store.keys("walg-backup")
    );

    let restored = restore_with_walrus(&env);
    assert_same_dump(
        &restored,
        &source,
        &format!("[{kind:?}] WAL-G backup {name} restored by wal-rus"),
    );
}

/// 2. wal-rus backs up (and archives); WAL-G restores and recovers.
fn walrus_backup_walg_restore(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let env = store.env("walrus-backup");
    let mut src = Source::start(&walg_bin, &env, Maker::Walrus);
    src.pg.pgbench_init(SCALE);
    let mut load = src.load(4);
    let name = src.push(Maker::Walrus, &store, "walrus-backup");
    let _ = load.wait();
    src.more_writes();
    src.wait_archived();
    let source = src.pg.dumpall();
    src.pg.stop();

    let restored = restore_with_walg(&walg_bin, &env);
    assert_same_dump(
        &restored,
        &source,
        &format!("[{kind:?}] wal-rus backup {name} restored by WAL-G"),
    );
}

/// Three full backups under prefix "mixed", made by `makers` in turn (one second apart, so
/// their sentinels' times order them), with writes and WAL switches between them; archiving
/// through `archiver`. Returns the names, oldest first. The cluster is stopped at the end.
fn mixed_archive(
    walg_bin: &Path,
    store: &Store,
    archiver: Maker,
    makers: [Maker; 3],
) -> Vec<String> {
    let env = store.env("mixed");
    let mut src = Source::start(walg_bin, &env, archiver);
    src.pg.pgbench_init(SCALE);
    let mut names = Vec::new();
    for maker in makers {
        src.pg.pgbench(&["-t", "100", "-c", "2"]);
        src.pg.psql("select pg_switch_wal()");
        names.push(src.push(maker, store, "mixed"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    src.pg.pgbench(&["-t", "50"]);
    src.wait_archived();
    src.pg.stop();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 3, "backup names should differ: {names:?}");
    names
}

/// The mix for a storage kind: on file storage WAL-G archives and makes the oldest and newest
/// backup, on S3 wal-rus does; so `delete retain 1` keeps a backup of each tool once.
fn mix(kind: Kind) -> (Maker, [Maker; 3]) {
    match kind {
        Kind::File => (Maker::Walg, [Maker::Walg, Maker::Walrus, Maker::Walg]),
        Kind::S3 => (Maker::Walrus, [Maker::Walrus, Maker::Walg, Maker::Walrus]),
    }
}

fn list_json(tool: Maker, walg_bin: &Path, args: &[&str], env: &[(String, String)]) -> Vec<Value> {
    let out = run_tool(tool, walg_bin, args, env);
    assert!(
        out.status.success(),
        "{} {} failed\n{}",
        tool.label(),
        args.join(" "),
        output_text(&out)
    );
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} {} printed no JSON ({e})\n{}",
            tool.label(),
            args.join(" "),
            output_text(&out)
        )
    });
    value
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "{} {}: not a JSON array: {value}",
                tool.label(),
                args.join(" ")
            )
        })
        .clone()
}

/// 3. Each tool lists the other's backups.
fn backup_list_both_ways(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (archiver, makers) = mix(kind);
    let names = mixed_archive(&walg_bin, &store, archiver, makers);
    let env = store.env("mixed");

    let mut plain = BTreeMap::new();
    let mut detail = BTreeMap::new();
    for tool in [Maker::Walg, Maker::Walrus] {
        let list = list_json(tool, &walg_bin, &["backup-list", "--json"], &env);
        let listed: Vec<(String, String, String)> = list
            .iter()
            .map(|b| {
                let s = |k: &str| {
                    b[k].as_str()
                        .unwrap_or_else(|| {
                            panic!("{} backup-list --json: no {k} in {b}", tool.label())
                        })
                        .to_string()
                };
                (s("backup_name"), s("wal_file_name"), s("storage_name"))
            })
            .collect();
        let expected: Vec<(String, String, String)> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    n["base_".len()..].to_string(),
                    "default".to_string(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            expected,
            "[{kind:?}] {} backup-list --json should list all three backups (made by {makers:?}), oldest first",
            tool.label()
        );
        plain.insert(tool.label(), listed);

        // --detail reads every backup's metadata.json (fatal when one is unreadable).
        let list = list_json(
            tool,
            &walg_bin,
            &["backup-list", "--detail", "--json"],
            &env,
        );
        let rows: BTreeMap<String, Vec<Value>> = list
            .iter()
            .map(|b| {
                let fields = [
                    "start_lsn",
                    "finish_lsn",
                    "pg_version",
                    "is_permanent",
                    "system_identifier",
                    "wal_file_name",
                ];
                (
                    b["backup_name"].as_str().unwrap().to_string(),
                    fields.iter().map(|f| b[*f].clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows.len(),
            3,
            "[{kind:?}] {} backup-list --detail --json: {list:?}",
            tool.label()
        );
        for row in rows.values() {
            assert!(
                row[0].as_u64().is_some_and(|v| v > 0) && row[1].as_u64() >= row[0].as_u64(),
                "LSNs {row:?}"
            );
        }
        detail.insert(tool.label(), rows);
    }
    assert_eq!(plain["WAL-G"], plain["wal-rus"]);
    assert_eq!(
        detail["WAL-G"], detail["wal-rus"],
        "[{kind:?}] the tools read different metadata for the same backups"
    );
}

/// 4. `delete retain 1 --confirm` leaves the same objects whichever tool runs it.
fn delete_retain_same_result(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (archiver, makers) = mix(kind);
    let names = mixed_archive(&walg_bin, &store, archiver, makers);
    let before = store.keys("mixed");
    let mut remaining = BTreeMap::new();
    for tool in [Maker::Walg, Maker::Walrus] {
        let sub = format!("by-{}", tool.label());
        store.copy_prefix("mixed", &sub);
        assert_eq!(
            store.keys(&sub),
            before,
            "copy of the prefix for {}",
            tool.label()
        );
        let env = store.env(&sub);

        let out = run_tool(tool, &walg_bin, &["delete", "retain", "1"], &env);
        assert!(
            out.status.success(),
            "[{kind:?}] {} delete retain 1 (dry run) failed\n{}",
            tool.label(),
            output_text(&out)
        );
        assert_eq!(
            store.keys(&sub),
            before,
            "[{kind:?}] {} delete without --confirm deleted something",
            tool.label()
        );

        let out = run_tool(
            tool,
            &walg_bin,
            &["delete", "retain", "1", "--confirm"],
            &env,
        );
        assert!(
            out.status.success(),
            "[{kind:?}] {} delete retain 1 --confirm failed\n{}",
            tool.label(),
            output_text(&out)
        );
        remaining.insert(tool.label(), store.keys(&sub));
    }
    let (walg_left, walrus_left) = (&remaining["WAL-G"], &remaining["wal-rus"]);
    assert!(
        walg_left == walrus_left,
        "[{kind:?}] delete retain 1 --confirm left different objects (backups {names:?} made by {makers:?})\n\
         left only by WAL-G's delete (wal-rus deleted them): {:?}\n\
         left only by wal-rus's delete (WAL-G deleted them): {:?}",
        walg_left.difference(walrus_left).collect::<Vec<_>>(),
        walrus_left.difference(walg_left).collect::<Vec<_>>()
    );
    // The comparison means something: the newest backup survives whole, the older ones and
    // the WAL before the newest backup are gone.
    let newest = &names[2];
    let sentinel = |n: &String| format!("basebackups_005/{n}_backup_stop_sentinel.json");
    assert!(
        walg_left.contains(&sentinel(newest)),
        "the newest backup's sentinel must survive: {walg_left:?}"
    );
    let newest_objects: BTreeSet<&String> = before
        .iter()
        .filter(|k| k.starts_with(&format!("basebackups_005/{newest}")))
        .collect();
    assert!(
        newest_objects.iter().all(|k| walg_left.contains(*k)),
        "every object of {newest} must survive"
    );
    for old in &names[..2] {
        assert!(
            !walg_left.iter().any(|k| k.contains(old.as_str())),
            "objects of {old} should be deleted: {walg_left:?}"
        );
    }
    let first_kept_wal = format!("wal_005/{}", &newest["base_".len()..]);
    assert!(
        walg_left
            .iter()
            .filter(|k| k.starts_with("wal_005/"))
            .all(|k| k.as_str() >= first_kept_wal.as_str()),
        "WAL older than {newest} should be deleted: {walg_left:?}"
    );
    assert!(walg_left.len() < before.len(), "nothing was deleted");
}

// ------------------------------------------------------------------ tests

#[test]
fn walg_backup_walrus_restore_file() {
    walg_backup_walrus_restore("walg_backup_walrus_restore_file", Kind::File);
}

#[test]
fn walg_backup_walrus_restore_s3() {
    walg_backup_walrus_restore("walg_backup_walrus_restore_s3", Kind::S3);
}

#[test]
fn walrus_backup_walg_restore_file() {
    walrus_backup_walg_restore("walrus_backup_walg_restore_file", Kind::File);
}

#[test]
fn walrus_backup_walg_restore_s3() {
    walrus_backup_walg_restore("walrus_backup_walg_restore_s3", Kind::S3);
}

#[test]
fn backup_list_both_ways_file() {
    backup_list_both_ways("backup_list_both_ways_file", Kind::File);
}

#[test]
fn backup_list_both_ways_s3() {
    backup_list_both_ways("backup_list_both_ways_s3", Kind::S3);
}

#[test]
fn delete_retain_same_result_file() {
    delete_retain_same_result("delete_retain_same_result_file", Kind::File);
}

#[test]
fn delete_retain_same_result_s3() {
    delete_retain_same_result("delete_retain_same_result_s3", Kind::S3);
}

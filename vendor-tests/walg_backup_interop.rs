//! Base-backup interop with WAL-G v3.0.8 itself (its `pg` binary, WALRUS_WALG_BIN), on file
//! storage and on S3 (s3s-fs), with real PostgreSQL 15 clusters under pgbench:
//!
//! 1. Restore lanes, for lz4 (file), zstd (S3) and brotli (file one way, S3 the other):
//!    WAL-G `backup-push` (PostgreSQL archiving through WAL-G `wal-push`, a pgbench load
//!    during the backup), more writes; wal-rus `backup-fetch LATEST` and point-in-time
//!    recovery to the end of the archive with `restore_command = wal-rus wal-fetch`:
//!    `pg_dumpall` equals the source's, and the server did restore WAL from the archive. The
//!    reverse: wal-rus `backup-push` (archiving through wal-rus); WAL-G `backup-fetch DEST
//!    LATEST` and recovery with WAL-G `wal-fetch`: dumps equal. Every partition and WAL object
//!    carries the method's extension, so the lane crossed the tools in that framing.
//! 2. Catalogue lanes, on a prefix with three backups made by both tools (per storage kind):
//!    `backup-list` (`--json`, `--detail --json`, plain, plain `--detail`) prints the same
//!    whichever tool runs it; `delete retain` (1, 2, more than there are, and 1 with the
//!    middle backup marked permanent), `delete before` (a name, a time as listed and cut to
//!    seconds, a name that matches nothing) and `delete everything` (plain, refused with a
//!    permanent backup, `FORCE`) run by each tool on its own copy of the prefix: the dry run
//!    deletes nothing and announces exactly what `--confirm` then deletes, and both tools exit
//!    alike and leave the same survivors.
//! 3. Encrypted restore lanes, both ways as in 1: libsodium (`WALG_LIBSODIUM_KEY`, raw and
//!    hex) and OpenPGP (`WALG_PGP_KEY_PATH`: an RSA key; a passphrase-protected Curve25519 key
//!    with `WALG_PGP_KEY_PASSPHRASE`); every partition and WAL object is checked to be
//!    encrypted.
//! 4. Refusals (exit 1, a message that names the reason, nothing written at the destination):
//!    a WAL-G encrypted backup (libsodium, OpenPGP) with wal-rus configured without the key,
//!    with another key or with a public key only, the message naming the setting.
//!
//! Delta chains across the tools are `walg_delta_interop`'s, on these lanes' helpers.
//!
//! WAL-G runs as the `postgres` OS user, like wal-rus, through a wrapper script beside the
//! cluster (`walg-env.sh`, like the harness's `walrus-env.sh`) that exports the test's settings
//! (storage, `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE`, `PGDATA`, and a `HOME` with no
//! `.walg.json`) and execs a copy of the binary the postgres user can reach. WAL-G v3.0.8 on
//! PostgreSQL ≥ 15 does not wait for archiving at backup stop (walg-compat §8.2), so every
//! source switches WAL and waits until the archiver has stored everything before it is dumped
//! and stopped. The catalogue commands run as the current user with `TZ=UTC` (WAL-G prints
//! file-storage times in the local zone, wal-rus in UTC).
//!
//! When WAL-G is unavailable every test prints a `SKIP:` line and passes (a peer's outage must
//! not turn CI red; a WAL-G that scripts/ensure-tools built and that does not run fails, see
//! `common::require_or_fail`); with WAL-G present any difference fails.
//!
//! Self-check of the test logic: pointing WALRUS_WALG_BIN at the wal-rus binary itself, which
//! accepts the same commands and settings,
//!
//! ```text
//! WALRUS_WALG_BIN=$(pwd)/target/release/wal-rus cargo test --release --test walg_backup_interop \
//!     -- restore list delete_
//! ```
//!
//! runs the restore and catalogue lanes with wal-rus standing in for WAL-G, and must pass.
//! That proves only that the tests
//! themselves work (clusters, wrappers, waits, comparisons), not that wal-rus and WAL-G agree:
//! for that WAL-G v3.0.8 itself must be present. (The encryption lanes need WAL-G.)

use crate::{common, support};

use std::collections::{BTreeMap, BTreeSet};
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

pub(crate) const LONG: Duration = Duration::from_secs(600);
/// pgbench scale of every source cluster (about 30 MiB).
pub(crate) const SCALE: u32 = 2;

// ------------------------------------------------------------------ storage

/// One storage backend per test; each use has its own prefix (`sub`) below it.
pub(crate) enum Store {
    /// Owned by postgres (both tools write it as postgres).
    File(TempDir),
    S3(S3Server),
}

impl Store {
    pub(crate) fn new(kind: Kind) -> Store {
        match kind {
            Kind::File => Store::File(common::postgres_owned_tempdir("walrus-bkinterop-")),
            Kind::S3 => Store::S3(S3Server::start()),
        }
    }

    /// Settings both tools read for prefix `sub`, compression `method`. On S3 the
    /// bucket-versioning probe of WAL-G is settled (s3s-fs has no GetBucketVersioning; wal-rus
    /// ignores the setting).
    pub(crate) fn env(&self, sub: &str, method: &str) -> Vec<(String, String)> {
        let mut env = match self {
            Store::File(dir) => {
                let prefix = dir.path().join(sub);
                fs::create_dir_all(&prefix).unwrap();
                chown_postgres(&prefix);
                vec![("WALG_FILE_PREFIX".into(), prefix.display().to_string())]
            }
            Store::S3(s3) => {
                let mut env = s3.env(sub);
                env.push(("S3_ENABLE_VERSIONING".into(), "disabled".into()));
                env
            }
        };
        env.push(("WALG_COMPRESSION_METHOD".into(), method.into()));
        env
    }

    /// The stored bytes of object `key` under prefix `sub`.
    pub(crate) fn read(&self, sub: &str, key: &str) -> Vec<u8> {
        let path = self.root(sub).join(key);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The directory holding prefix `sub`'s objects (s3s-fs keeps an object as a plain file).
    pub(crate) fn root(&self, sub: &str) -> PathBuf {
        match self {
            Store::File(dir) => dir.path().join(sub),
            Store::S3(s3) => s3.object_path(sub),
        }
    }

    /// Keys of every object under prefix `sub`, relative to it.
    pub(crate) fn keys(&self, sub: &str) -> BTreeSet<String> {
        common::files_below(&self.root(sub)).into_iter().collect()
    }

    /// Names of the backups (sentinels) under prefix `sub`.
    pub(crate) fn backups(&self, sub: &str) -> BTreeSet<String> {
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
    pub(crate) fn copy_prefix(&self, from: &str, to: &str) {
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
pub(crate) struct Walg {
    wrapper: PathBuf,
    base: PathBuf,
}

impl Walg {
    pub(crate) fn install(walg_bin: &Path, base: &Path, env: &[(String, String)]) -> Walg {
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
        let mut exports = vec![("HOME".to_string(), home.display().to_string())];
        exports.extend_from_slice(env);
        let script = common::exec_script(
            "Generated by walg_backup_interop: settings for WAL-G run by PostgreSQL and the tests.",
            &exports,
            &bin,
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
    pub(crate) fn run(&self, args: &[&str]) -> Output {
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

/// Runs WAL-G (`walg_bin`) or wal-rus as the current user with exactly `env` and an empty
/// HOME: for the catalogue commands (backup-list, delete), which need no PostgreSQL.
pub(crate) fn run_tool(
    tool: Maker,
    walg_bin: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Output {
    let home = TempDir::new().unwrap();
    let mut env = env.to_vec();
    env.push(("HOME".into(), home.path().display().to_string()));
    // WAL-G prints file-storage times in the local zone, wal-rus in UTC: make them one zone.
    env.push(("TZ".into(), "UTC".into()));
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
pub(crate) enum Maker {
    Walg,
    Walrus,
}

impl Maker {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Maker::Walg => "WAL-G",
            Maker::Walrus => "wal-rus",
        }
    }
}

// --------------------------------------------------------------- clusters

/// `env` plus how to reach the cluster on `port`.
pub(crate) fn with_pg(env: &[(String, String)], port: u16) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend([
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), port.to_string()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGDATABASE".to_string(), "postgres".to_string()),
    ]);
    env
}

pub(crate) fn with_pgdata(env: &[(String, String)], data: &Path) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("PGDATA".to_string(), data.display().to_string()));
    env
}

/// A running source cluster archiving to `env`'s storage through `archiver`, with WAL-G
/// installed beside it.
pub(crate) struct Source {
    pub(crate) pg: PgCluster,
    pub(crate) walg: Walg,
}

impl Source {
    pub(crate) fn start(walg_bin: &Path, env: &[(String, String)], archiver: Maker) -> Source {
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

    pub(crate) fn data(&self) -> &str {
        self.pg.data_dir().to_str().unwrap()
    }

    /// `backup-push <PGDATA>` by `maker` (as postgres); returns the new backup's name, found
    /// in storage.
    pub(crate) fn push(&self, maker: Maker, store: &Store, sub: &str) -> String {
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
    pub(crate) fn load(&self, secs: u32) -> std::process::Child {
        let mut cmd = self.pg.client("pgbench");
        cmd.args(["-T", &secs.to_string(), "-c", "2", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().expect("start pgbench")
    }

    /// Writes after the backup: a new table and more pgbench transactions.
    pub(crate) fn more_writes(&self) {
        self.pg.psql("create table after_backup as select g, md5(g::text) as h from generate_series(1, 2000) g");
        self.pg.pgbench(&["-t", "200", "-c", "2"]);
    }

    /// Switches to a new WAL segment and waits until everything up to it is archived (WAL-G
    /// v3.0.8 does not wait for the backup's last segment, §8.2; the dump must be covered too).
    pub(crate) fn wait_archived(&self) {
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
pub(crate) fn recover(cluster: &mut PgCluster) {
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
pub(crate) fn restore_with_walrus(env: &[(String, String)]) -> PgCluster {
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
pub(crate) fn restore_with_walg(walg_bin: &Path, env: &[(String, String)]) -> PgCluster {
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

pub(crate) fn assert_same_dump(restored: &PgCluster, source: &str, what: &str) {
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
pub(crate) fn setup(test: &str, kind: Kind) -> Option<(PathBuf, Store)> {
    let walg = require_or_fail(Tool::Walg, test)?;
    require_or_fail(Tool::Postgres, test)?;
    if kind == Kind::S3 {
        require_or_fail(Tool::S3s, test)?;
    }
    Some((walg, Store::new(kind)))
}

// --------------------------------------------------------- restore lanes

/// File-name extension of `method` (the methods of these lanes).
fn extension(method: &str) -> &'static str {
    match method {
        "lz4" => "lz4",
        "zstd" => "zst",
        "brotli" => "br",
        "lzma" => "lzma",
        other => panic!("no backup lane for compression method {other}"),
    }
}

/// Every tar partition of backup `name` and every WAL object under prefix `sub` carries
/// `method`'s extension: the lane really crossed the tools in that framing.
fn assert_stored_with(store: &Store, sub: &str, name: &str, method: &str, maker: Maker) {
    let ext = extension(method);
    let keys = store.keys(sub);
    let parts_prefix = format!("basebackups_005/{name}/tar_partitions/");
    let parts: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&parts_prefix))
        .collect();
    assert!(
        parts.len() >= 3,
        "{} backup {name}: expected data, pg_control and backup_label partitions: {parts:?}",
        maker.label()
    );
    let suffix = format!(".tar.{ext}");
    let wrong: Vec<&&String> = parts.iter().filter(|k| !k.ends_with(&suffix)).collect();
    assert!(
        wrong.is_empty(),
        "{} backup {name} with {method}: partitions without {suffix}: {wrong:?}",
        maker.label()
    );
    let wal: Vec<&String> = keys.iter().filter(|k| k.starts_with("wal_005/")).collect();
    assert!(!wal.is_empty(), "nothing archived under {sub}: {keys:?}");
    let wrong: Vec<&&String> = wal
        .iter()
        .filter(|k| !k.ends_with(&format!(".{ext}")))
        .collect();
    assert!(
        wrong.is_empty(),
        "WAL archived with {method} without .{ext}: {wrong:?}"
    );
}

/// With encryption settings in `extra`, every tar partition of backup `name` and every WAL
/// object under `sub` is encrypted: an OpenPGP message (a session key packet first) for the
/// `WALG_PGP_KEY*` settings, else no compressed stream at its start (libsodium's header).
/// Without, nothing to check.
fn assert_encrypted(store: &Store, sub: &str, name: &str, extra: &[(&str, &str)]) {
    if extra.is_empty() {
        return;
    }
    let pgp = extra.iter().any(|(k, _)| k.starts_with("WALG_PGP_KEY"));
    let parts_prefix = format!("basebackups_005/{name}/tar_partitions/");
    let objects: Vec<String> = store
        .keys(sub)
        .into_iter()
        .filter(|k| k.starts_with(&parts_prefix) || k.starts_with("wal_005/"))
        .collect();
    assert!(objects.len() > 3, "{objects:?}");
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    for key in &objects {
        let bytes = store.read(sub, key);
        let ok = if pgp {
            bytes.first() == Some(&0xC1)
        } else {
            bytes.len() > 24 && bytes[..4] != support::LZ4_MAGIC && bytes[..4] != ZSTD_MAGIC
        };
        assert!(ok, "{key} is not encrypted as {extra:?} says");
    }
}

/// The restored server replayed archived WAL through its restore_command (point-in-time
/// recovery from the archive, not just crash recovery from the backup's own files).
pub(crate) fn assert_replayed_archive(restored: &PgCluster, what: &str) {
    let log = restored.server_log();
    let restored_files = log
        .lines()
        .filter(|l| l.contains("restored log file"))
        .count();
    assert!(
        restored_files > 0,
        "{what}: the server restored no WAL file from the archive\n--- server log ---\n{}",
        restored.server_log_tail(60)
    );
}

/// WAL-G backs up with `method` (and archives); wal-rus restores (`backup-fetch LATEST`) and
/// recovers to the end of the archive through `wal-rus wal-fetch`; the dumps are equal.
fn walg_backup_walrus_restore(test: &str, kind: Kind, method: &str) {
    walg_backup_walrus_restore_with(test, kind, method, &[]);
}

/// [`walg_backup_walrus_restore`] with `extra` settings for both tools (encryption).
fn walg_backup_walrus_restore_with(test: &str, kind: Kind, method: &str, extra: &[(&str, &str)]) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let sub = "walg-backup";
    let mut env = store.env(sub, method);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut src = Source::start(&walg_bin, &env, Maker::Walg);
    src.pg.pgbench_init(SCALE);
    let mut load = src.load(4);
    let name = src.push(Maker::Walg, &store, sub);
    let _ = load.wait();
    src.more_writes();
    src.wait_archived();
    let source = src.pg.dumpall();
    src.pg.stop();
    assert_stored_with(&store, sub, &name, method, Maker::Walg);
    assert_encrypted(&store, sub, &name, extra);

    let restored = restore_with_walrus(&env);
    let what = format!("[{kind:?}/{method}] WAL-G backup {name} restored by wal-rus");
    assert_replayed_archive(&restored, &what);
    assert_same_dump(&restored, &source, &what);
}

/// wal-rus backs up with `method` (and archives); WAL-G restores and recovers through `WAL-G
/// wal-fetch`; the dumps are equal.
fn walrus_backup_walg_restore(test: &str, kind: Kind, method: &str) {
    walrus_backup_walg_restore_with(test, kind, method, &[]);
}

/// [`walrus_backup_walg_restore`] with `extra` settings for both tools (encryption).
fn walrus_backup_walg_restore_with(test: &str, kind: Kind, method: &str, extra: &[(&str, &str)]) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let sub = "walrus-backup";
    let mut env = store.env(sub, method);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut src = Source::start(&walg_bin, &env, Maker::Walrus);
    src.pg.pgbench_init(SCALE);
    let mut load = src.load(4);
    let name = src.push(Maker::Walrus, &store, sub);
    let _ = load.wait();
    src.more_writes();
    src.wait_archived();
    let source = src.pg.dumpall();
    src.pg.stop();
    assert_stored_with(&store, sub, &name, method, Maker::Walrus);
    assert_encrypted(&store, sub, &name, extra);

    let restored = restore_with_walg(&walg_bin, &env);
    let what = format!("[{kind:?}/{method}] wal-rus backup {name} restored by WAL-G");
    assert_replayed_archive(&restored, &what);
    assert_same_dump(&restored, &source, &what);
}

// ------------------------------------------------------- catalogue lanes

/// Three full backups under prefix "mixed", made by `makers` in turn (one second apart, so
/// their sentinels' times order them), with writes and WAL switches between them; archiving
/// through `archiver`, compression `method`. Returns the names, oldest first. The cluster is
/// stopped at the end.
fn mixed_archive(
    walg_bin: &Path,
    store: &Store,
    method: &str,
    archiver: Maker,
    makers: [Maker; 3],
) -> Vec<String> {
    let env = store.env("mixed", method);
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

/// The mix for a storage kind: on file storage WAL-G archives (lz4) and makes the oldest and
/// newest backup, on S3 wal-rus does (zstd); so a backup of each tool is the one kept, and
/// the one deleted, in one kind or the other.
fn mix(kind: Kind) -> (&'static str, Maker, [Maker; 3]) {
    match kind {
        Kind::File => (
            "lz4",
            Maker::Walg,
            [Maker::Walg, Maker::Walrus, Maker::Walg],
        ),
        Kind::S3 => (
            "zstd",
            Maker::Walrus,
            [Maker::Walrus, Maker::Walg, Maker::Walrus],
        ),
    }
}

/// The mixed archive of `kind` under prefix "mixed" (see [`mixed_archive`]): its settings,
/// the backup names (oldest first) and which tool made each.
fn mixed(
    walg_bin: &Path,
    store: &Store,
    kind: Kind,
) -> (Vec<(String, String)>, Vec<String>, [Maker; 3]) {
    let (method, archiver, makers) = mix(kind);
    let names = mixed_archive(walg_bin, store, method, archiver, makers);
    (store.env("mixed", method), names, makers)
}

fn run_ok_tool(tool: Maker, walg_bin: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let out = run_tool(tool, walg_bin, args, env);
    assert!(
        out.status.success(),
        "{} {} failed\n{}",
        tool.label(),
        args.join(" "),
        output_text(&out)
    );
    out
}

fn list_json(tool: Maker, walg_bin: &Path, args: &[&str], env: &[(String, String)]) -> Vec<Value> {
    let out = run_ok_tool(tool, walg_bin, args, env);
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

/// A plain listing as rows of whitespace-separated cells (column padding ignored).
fn list_rows(
    tool: Maker,
    walg_bin: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> Vec<Vec<String>> {
    let out = run_ok_tool(tool, walg_bin, args, env);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Both tools' answers to the same listing, as "same" or a description of the difference.
fn assert_same_listing<T: PartialEq + std::fmt::Debug>(what: &str, walg: &T, walrus: &T) {
    assert!(
        walg == walrus,
        "{what}: the tools list the same backups differently\n--- WAL-G ---\n{walg:#?}\n--- wal-rus ---\n{walrus:#?}"
    );
}

/// On a prefix with three backups made by both tools, `backup-list --json`, `--detail
/// --json`, plain and plain `--detail` print the same thing whichever tool runs them (cells
/// compared, column padding ignored), all three backups oldest first.
fn backup_list_parity(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (env, names, makers) = mixed(&walg_bin, &store, kind);
    let walg_bin = walg_bin.as_path();
    let env = &env;
    let names = &names;
    let mut cases: Vec<(String, Box<dyn FnOnce() + '_>)> = Vec::new();
    cases.push((
        "backup-list --json".into(),
        Box::new(move || {
            let args = ["backup-list", "--json"];
            let walg = list_json(Maker::Walg, walg_bin, &args, env);
            let walrus = list_json(Maker::Walrus, walg_bin, &args, env);
            let listed: Vec<(String, String, String)> = walg
                .iter()
                .map(|b| {
                    let s = |k: &str| {
                        b[k].as_str()
                            .unwrap_or_else(|| panic!("WAL-G backup-list --json: no {k} in {b}"))
                            .to_string()
                    };
                    (s("backup_name"), s("wal_file_name"), s("storage_name"))
                })
                .collect();
            let expected: Vec<(String, String, String)> = names
                .iter()
                .map(|n| (n.clone(), n["base_".len()..].to_string(), "default".to_string()))
                .collect();
            assert_eq!(
                listed, expected,
                "[{kind:?}] WAL-G backup-list --json should list all three backups (made by {makers:?}), oldest first"
            );
            assert_same_listing(&format!("[{kind:?}] backup-list --json"), &walg, &walrus);
        }),
    ));
    cases.push((
        "backup-list --detail --json".into(),
        Box::new(move || {
            let args = ["backup-list", "--detail", "--json"];
            let walg = list_json(Maker::Walg, walg_bin, &args, env);
            let walrus = list_json(Maker::Walrus, walg_bin, &args, env);
            assert_eq!(walg.len(), 3, "[{kind:?}] WAL-G {args:?}: {walg:?}");
            for row in &walg {
                let (start, finish) = (row["start_lsn"].as_u64(), row["finish_lsn"].as_u64());
                assert!(
                    start.is_some_and(|v| v > 0) && finish >= start,
                    "[{kind:?}] WAL-G --detail --json: LSNs of {row}"
                );
            }
            assert_same_listing(
                &format!("[{kind:?}] backup-list --detail --json"),
                &walg,
                &walrus,
            );
        }),
    ));
    for args in [&["backup-list"][..], &["backup-list", "--detail"][..]] {
        cases.push((
            args.join(" "),
            Box::new(move || {
                let walg = list_rows(Maker::Walg, walg_bin, args, env);
                let walrus = list_rows(Maker::Walrus, walg_bin, args, env);
                assert_eq!(
                    walg.len(),
                    4,
                    "[{kind:?}] WAL-G {args:?}: header and three rows: {walg:?}"
                );
                assert_same_listing(&format!("[{kind:?}] {}", args.join(" ")), &walg, &walrus);
            }),
        ));
    }
    support::run_all(&format!("[{kind:?}] backup-list parity"), cases);
}

/// The objects a delete run announces: WAL-G v3.0.8 logs `\twill be deleted: <key>, from
/// storage: <name>` (master and wal-rus: `Object marked for deletion: <key> storage=<name>`).
fn announced(out: &Output) -> BTreeSet<String> {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| {
            if let Some((_, rest)) = l.split_once("will be deleted: ") {
                Some(rest.rsplit_once(", from storage:").map_or(rest, |(k, _)| k))
            } else if let Some((_, rest)) = l.split_once("Object marked for deletion: ") {
                Some(rest.rsplit_once(" storage=").map_or(rest, |(k, _)| k))
            } else {
                None
            }
        })
        .map(|k| k.trim().trim_start_matches('/').to_string())
        .collect()
}

/// What one tool's delete did on its own copy of the prefix.
#[derive(Debug, PartialEq, Eq)]
struct DeleteRun {
    dry_exit: Option<i32>,
    announced: BTreeSet<String>,
    exit: Option<i32>,
    deleted: BTreeSet<String>,
}

/// Copies prefix `from` to `<from>-<case>-<tool>` for each tool, runs `delete ARGS` there
/// (dry run, then `--confirm`) and checks: the dry run deletes nothing and announces exactly
/// what `--confirm` then deletes; both tools exit alike, announce alike and delete the same
/// objects (so leave the same survivors). Returns the objects deleted (by either) and the
/// objects there before, for the caller's expectations.
fn delete_parity(
    store: &Store,
    walg_bin: &Path,
    kind: Kind,
    from: &str,
    method: &str,
    case: &str,
    args: &[&str],
) -> (BTreeSet<String>, BTreeSet<String>, Option<i32>) {
    let before = store.keys(from);
    let mut runs = BTreeMap::new();
    for tool in [Maker::Walg, Maker::Walrus] {
        let sub = format!("{from}-{case}-{}", tool.label());
        store.copy_prefix(from, &sub);
        assert_eq!(
            store.keys(&sub),
            before,
            "copy of the prefix for {}",
            tool.label()
        );
        let env = store.env(&sub, method);
        let what = format!("[{kind:?}] {} {}", tool.label(), args.join(" "));

        let dry = run_tool(tool, walg_bin, args, &env);
        assert_eq!(
            store.keys(&sub),
            before,
            "{what} (dry run, no --confirm) deleted something\n{}",
            output_text(&dry)
        );
        let mut confirm_args = args.to_vec();
        confirm_args.push("--confirm");
        let out = run_tool(tool, walg_bin, &confirm_args, &env);
        let after = store.keys(&sub);
        assert!(
            after.is_subset(&before),
            "{what} --confirm created objects: {:?}",
            after.difference(&before).collect::<Vec<_>>()
        );
        let run = DeleteRun {
            dry_exit: dry.status.code(),
            announced: announced(&dry),
            exit: out.status.code(),
            deleted: before.difference(&after).cloned().collect(),
        };
        assert_eq!(
            run.announced,
            run.deleted,
            "{what}: the dry run announced other objects than --confirm deleted\n--- dry run ---\n{}\n--- --confirm ---\n{}",
            output_text(&dry),
            output_text(&out)
        );
        if run.exit != Some(0) {
            assert!(
                run.deleted.is_empty(),
                "{what} --confirm failed but deleted {:?}\n{}",
                run.deleted,
                output_text(&out)
            );
        }
        eprintln!(
            "{what}: dry run exit {:?}, --confirm exit {:?}, deleted {} of {} objects\n{}",
            run.dry_exit,
            run.exit,
            run.deleted.len(),
            before.len(),
            output_text(&out)
        );
        runs.insert(tool.label(), run);
    }
    let (walg, walrus) = (&runs["WAL-G"], &runs["wal-rus"]);
    assert_eq!(
        (walg.dry_exit, walg.exit),
        (walrus.dry_exit, walrus.exit),
        "[{kind:?}] {}: exit codes (dry run, --confirm) differ: WAL-G {:?} vs wal-rus {:?}",
        args.join(" "),
        (walg.dry_exit, walg.exit),
        (walrus.dry_exit, walrus.exit)
    );
    assert!(
        walg.deleted == walrus.deleted,
        "[{kind:?}] {} --confirm left different objects\n\
         left only by WAL-G's delete (wal-rus deleted them): {:?}\n\
         left only by wal-rus's delete (WAL-G deleted them): {:?}",
        args.join(" "),
        walrus.deleted.difference(&walg.deleted).collect::<Vec<_>>(),
        walg.deleted.difference(&walrus.deleted).collect::<Vec<_>>()
    );
    (before, walg.deleted.clone(), walg.exit)
}

/// Keys of backup `name` (its folder and its sentinel) in `keys`.
fn backup_keys<'a>(keys: &'a BTreeSet<String>, name: &str) -> BTreeSet<&'a String> {
    keys.iter()
        .filter(|k| k.starts_with(&format!("basebackups_005/{name}/")) || **k == sentinel_key(name))
        .collect()
}

pub(crate) fn sentinel_key(name: &str) -> String {
    format!("basebackups_005/{name}_backup_stop_sentinel.json")
}

/// After a delete that deleted `deleted` of `before`: the backups `kept` are whole, those in
/// `gone` have no object left, and WAL older than the oldest kept backup is gone except
/// the segments `also_kept_wal` (a permanent backup's range).
fn expect_outcome(
    what: &str,
    before: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
    kept: &[&String],
    gone: &[&String],
) {
    let left: BTreeSet<String> = before.difference(deleted).cloned().collect();
    for name in kept {
        let objects = backup_keys(before, name);
        assert!(
            objects.len() >= 5 && objects.iter().all(|k| left.contains(*k)),
            "{what}: backup {name} should survive whole; deleted: {:?}",
            objects
                .iter()
                .filter(|k| !left.contains(**k))
                .collect::<Vec<_>>()
        );
    }
    for name in gone {
        let objects = backup_keys(&left, name);
        assert!(
            objects.is_empty(),
            "{what}: backup {name} should be deleted, left: {objects:?}"
        );
    }
}

/// The oldest WAL segment (24 hex digits) under `wal_005/` in `keys`.
fn wal_segments(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .filter_map(|k| k.strip_prefix("wal_005/"))
        .filter(|k| k.len() >= 24 && k[..24].bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|k| k[..24].to_string())
        .collect()
}

/// Marks backup `name` under prefix `sub` permanent with `tool` (backup-mark).
fn mark_permanent(tool: Maker, walg_bin: &Path, env: &[(String, String)], name: &str) {
    run_ok_tool(tool, walg_bin, &["backup-mark", name], env);
    let detail = list_json(tool, walg_bin, &["backup-list", "--detail", "--json"], env);
    assert!(
        detail
            .iter()
            .any(|b| b["backup_name"] == name && b["is_permanent"] == true),
        "{} backup-mark {name} did not make it permanent: {detail:?}",
        tool.label()
    );
}

/// `delete retain` on the mixed archive: `retain 1`, `retain 2`, `retain 5` (more than there
/// are: nothing deleted), `retain 1` with the middle backup marked permanent (it and its WAL
/// survive) and `retain 1 --after` the middle backup (by name, and by its time as WAL-G lists
/// it). Same outcome whichever tool deletes, dry run and --confirm.
fn delete_retain_parity(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (env, names, _) = mixed(&walg_bin, &store, kind);
    let (method, ..) = mix(kind);
    let (middle_time, _) = listed_time(&walg_bin, &env, &names[1]);
    // The middle backup made permanent, by the other tool than the one that made it.
    store.copy_prefix("mixed", "perm");
    let marker = match kind {
        Kind::File => Maker::Walg,
        Kind::S3 => Maker::Walrus,
    };
    mark_permanent(marker, &walg_bin, &store.env("perm", method), &names[1]);
    let (store, walg_bin, names) = (&store, walg_bin.as_path(), &names);
    let n = |i: usize| &names[i];
    let mut cases: Vec<(String, Box<dyn FnOnce() + '_>)> = vec![
        (
            "retain 1".into(),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    "r1",
                    &["delete", "retain", "1"],
                );
                let what = format!("[{kind:?}] delete retain 1");
                assert_eq!(exit, Some(0), "{what}");
                expect_outcome(&what, &before, &deleted, &[n(2)], &[n(0), n(1)]);
                let left: BTreeSet<String> = before.difference(&deleted).cloned().collect();
                let first_kept = &n(2)["base_".len()..];
                let old_wal: Vec<String> = wal_segments(&left)
                    .into_iter()
                    .filter(|s| s.as_str() < first_kept)
                    .collect();
                assert!(
                    old_wal.is_empty(),
                    "{what}: WAL older than {} left: {old_wal:?}",
                    n(2)
                );
            }),
        ),
        (
            "retain 2".into(),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    "r2",
                    &["delete", "retain", "2"],
                );
                let what = format!("[{kind:?}] delete retain 2");
                assert_eq!(exit, Some(0), "{what}");
                expect_outcome(&what, &before, &deleted, &[n(1), n(2)], &[n(0)]);
            }),
        ),
        (
            "retain 5".into(),
            Box::new(move || {
                let (_, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    "r5",
                    &["delete", "retain", "5"],
                );
                let what = format!("[{kind:?}] delete retain 5 (of three backups)");
                assert_eq!(exit, Some(0), "{what}");
                assert!(deleted.is_empty(), "{what}: deleted {deleted:?}");
            }),
        ),
        (
            "retain 1, middle backup permanent".into(),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "perm",
                    method,
                    "r1p",
                    &["delete", "retain", "1"],
                );
                let what = format!("[{kind:?}] delete retain 1 with {} permanent", n(1));
                assert_eq!(exit, Some(0), "{what}");
                expect_outcome(&what, &before, &deleted, &[n(1), n(2)], &[n(0)]);
                let left: BTreeSet<String> = before.difference(&deleted).cloned().collect();
                assert!(
                    wal_segments(&left).contains(&n(1)["base_".len()..]),
                    "{what}: the permanent backup's first WAL segment should survive: {left:?}"
                );
            }),
        ),
    ];
    for (slug, after) in [("ran", names[1].clone()), ("rat", middle_time.clone())] {
        cases.push((
            format!("retain 1 --after {after}"),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    slug,
                    &["delete", "retain", "1", "--after", &after],
                );
                let what = format!("[{kind:?}] delete retain 1 --after {after}");
                assert_eq!(exit, Some(0), "{what}");
                expect_outcome(&what, &before, &deleted, &[n(1), n(2)], &[n(0)]);
            }),
        ));
    }
    support::run_all(&format!("[{kind:?}] delete retain parity"), cases);
}

/// The sentinel time of backup `name` as WAL-G's `backup-list --json` prints it (RFC 3339,
/// with the storage's fraction of a second), and the same cut to whole seconds (still after
/// the backup before it, which is more than a second older).
fn listed_time(walg_bin: &Path, env: &[(String, String)], name: &str) -> (String, String) {
    let listed = list_json(Maker::Walg, walg_bin, &["backup-list", "--json"], env);
    let time = listed
        .iter()
        .find(|b| b["backup_name"] == name)
        .and_then(|b| b["time"].as_str())
        .unwrap_or_else(|| panic!("no time for {name} in {listed:?}"))
        .to_string();
    let seconds = match time.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => time.clone(),
    };
    (time, seconds)
}

/// `delete before` on the mixed archive: by the middle backup's name, by its sentinel time
/// (as WAL-G's backup-list --json prints it, and cut to whole seconds), and by a name that
/// matches no backup (an error for both). Same outcome whichever tool deletes.
fn delete_before_parity(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (env, names, _) = mixed(&walg_bin, &store, kind);
    let (method, ..) = mix(kind);
    let (middle_time, middle_second) = listed_time(&walg_bin, &env, &names[1]);
    let (store, walg_bin, names) = (&store, walg_bin.as_path(), &names);
    let n = |i: usize| &names[i];
    let mut cases: Vec<(String, Box<dyn FnOnce() + '_>)> = Vec::new();
    for (slug, target) in [
        ("bn", n(1).clone()),
        ("bt", middle_time.clone()),
        ("bs", middle_second.clone()),
    ] {
        cases.push((
            format!("before {target}"),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    slug,
                    &["delete", "before", &target],
                );
                let what = format!("[{kind:?}] delete before {target}");
                assert_eq!(exit, Some(0), "{what}");
                expect_outcome(&what, &before, &deleted, &[n(1), n(2)], &[n(0)]);
            }),
        ));
    }
    cases.push((
        "before a name that matches no backup".into(),
        Box::new(move || {
            let target = "base_0000000100000000000000FF";
            let (_, deleted, exit) = delete_parity(
                store,
                walg_bin,
                kind,
                "mixed",
                method,
                "bx",
                &["delete", "before", target],
            );
            let what = format!("[{kind:?}] delete before {target} (no such backup)");
            assert_ne!(exit, Some(0), "{what} should fail");
            assert!(deleted.is_empty(), "{what}: deleted {deleted:?}");
        }),
    ));
    support::run_all(&format!("[{kind:?}] delete before parity"), cases);
}

/// `delete everything` on the mixed archive: everything goes; with the middle backup
/// permanent both tools refuse (nothing deleted), and `everything FORCE` deletes it all.
fn delete_everything_parity(test: &str, kind: Kind) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let (_, names, _) = mixed(&walg_bin, &store, kind);
    let (method, ..) = mix(kind);
    store.copy_prefix("mixed", "perm");
    let marker = match kind {
        Kind::File => Maker::Walrus,
        Kind::S3 => Maker::Walg,
    };
    mark_permanent(marker, &walg_bin, &store.env("perm", method), &names[1]);
    let (store, walg_bin) = (&store, walg_bin.as_path());
    let cases: Vec<(String, Box<dyn FnOnce() + '_>)> = vec![
        (
            "everything".into(),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "mixed",
                    method,
                    "e",
                    &["delete", "everything"],
                );
                let what = format!("[{kind:?}] delete everything");
                assert_eq!(exit, Some(0), "{what}");
                assert_eq!(deleted, before, "{what}: objects left");
            }),
        ),
        (
            "everything, a backup permanent".into(),
            Box::new(move || {
                let (_, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "perm",
                    method,
                    "ep",
                    &["delete", "everything"],
                );
                let what = format!("[{kind:?}] delete everything with a permanent backup");
                assert_eq!(exit, Some(1), "{what} should refuse with exit 1");
                assert!(deleted.is_empty(), "{what}: deleted {deleted:?}");
            }),
        ),
        (
            "everything FORCE, a backup permanent".into(),
            Box::new(move || {
                let (before, deleted, exit) = delete_parity(
                    store,
                    walg_bin,
                    kind,
                    "perm",
                    method,
                    "ef",
                    &["delete", "everything", "FORCE"],
                );
                let what = format!("[{kind:?}] delete everything FORCE with a permanent backup");
                assert_eq!(exit, Some(0), "{what}");
                assert_eq!(deleted, before, "{what}: objects left");
            }),
        ),
    ];
    support::run_all(&format!("[{kind:?}] delete everything parity"), cases);
}

// ------------------------------------------------- WAL-G features wal-rus lacks

/// Runs wal-rus `backup-fetch DEST TARGET` with `env` for each destination form (absent, an
/// empty directory) and checks that it fails with exit 1, that its message satisfies
/// `names_reason` (described by `reason`), and that nothing was written at DEST (no file, so
/// nothing PostgreSQL could start).
fn assert_fetch_refused(
    what: &str,
    env: &[(String, String)],
    target: &str,
    reason: &str,
    names_reason: impl Fn(&str) -> bool,
) {
    let scratch = TempDir::new().unwrap();
    for (form, dest) in [
        ("absent destination", scratch.path().join("absent")),
        ("empty destination", scratch.path().join("empty")),
    ] {
        if form == "empty destination" {
            fs::create_dir(&dest).unwrap();
        }
        let out = run_tool(
            Maker::Walrus,
            Path::new("/nonexistent"),
            &["backup-fetch", dest.to_str().unwrap(), target],
            env,
        );
        let text = output_text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: wal-rus backup-fetch {target} ({form}) should fail with exit 1\n{text}"
        );
        assert!(
            names_reason(&text),
            "{what}: wal-rus backup-fetch {target} ({form}) fails without saying {reason}\n{text}"
        );
        assert!(
            !dest.join("global/pg_control").exists(),
            "{what}: wal-rus backup-fetch {target} ({form}) left a startable data directory"
        );
        let left = common::files_below(&dest);
        assert!(
            left.is_empty(),
            "{what}: wal-rus backup-fetch {target} ({form}) wrote {left:?} in {}",
            dest.display()
        );
    }
}

/// Settings of a tool's environment.
type Env = Vec<(String, String)>;
/// A way wal-rus must refuse a backup: what it is, the settings added, what the message says.
type Refusal<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// A WAL-G backup encrypted with `key` (libsodium or OpenPGP settings; every tar partition is
/// encrypted, the sentinel and metadata are not), fetched by wal-rus configured as each of
/// `refusals` says (without a key, with another key, ...): exit 1, a message that names
/// encryption and the setting given with the refusal, nothing written. (With the key, the
/// round trips above restore it.)
fn walg_encrypted_backup_refused(
    test: &str,
    kind: Kind,
    key: &[(&str, &str)],
    refusals: &[Refusal],
) {
    let Some((walg_bin, store)) = setup(test, kind) else {
        return;
    };
    let sub = "encrypted";
    let plain_env = store.env(sub, "lz4");
    let with = |pairs: &[(&str, &str)]| {
        let mut env = plain_env.clone();
        env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let key_env = with(key);
    let mut src = Source::start(&walg_bin, &key_env, Maker::Walg);
    src.pg
        .psql("create table t as select g, md5(g::text) as h from generate_series(1, 20000) g");
    let name = src.push(Maker::Walg, &store, sub);
    src.pg.stop();
    let parts_prefix = format!("basebackups_005/{name}/tar_partitions/");
    let parts: Vec<String> = store
        .keys(sub)
        .into_iter()
        .filter(|k| k.starts_with(&parts_prefix))
        .collect();
    assert!(parts.len() >= 3, "partitions of {name}: {parts:?}");
    for part in &parts {
        let bytes = store.read(sub, part);
        assert!(
            bytes.len() > 24 && bytes[..4] != support::LZ4_MAGIC,
            "{part} does not look encrypted (it starts with an LZ4 frame)"
        );
    }
    let control = TempDir::new().unwrap();
    let control = control.path().join("data");
    let out = run_tool(
        Maker::Walg,
        &walg_bin,
        &["backup-fetch", control.to_str().unwrap(), &name],
        &key_env,
    );
    assert!(
        out.status.success() && control.join("global/pg_control").is_file(),
        "[{kind:?}] WAL-G cannot restore its own encrypted backup {name}\n{}",
        output_text(&out)
    );

    let envs: Vec<(String, Env, &str)> = refusals
        .iter()
        .map(|(label, pairs, says)| (format!("wal-rus {label}"), with(pairs), *says))
        .collect();
    let name = &name;
    let cases: Vec<(String, Box<dyn FnOnce() + '_>)> = envs
        .iter()
        .map(|(label, env, says)| {
            let case = move || {
                for target in [name.as_str(), "LATEST"] {
                    assert_fetch_refused(
                        &format!("[{kind:?}] {label}: WAL-G encrypted backup {name}"),
                        env,
                        target,
                        &format!("that the backup is encrypted, naming {says}"),
                        |t| support::names_encryption(t) && t.contains(says),
                    );
                }
            };
            (label.clone(), Box::new(case) as Box<dyn FnOnce() + '_>)
        })
        .collect();
    support::run_all(&format!("[{kind:?}] WAL-G encrypted backup"), cases);
}

// ------------------------------------------------------------------ tests

#[test]
fn walg_backup_walrus_restore_lz4_file() {
    walg_backup_walrus_restore("walg_backup_walrus_restore_lz4_file", Kind::File, "lz4");
}

#[test]
fn walg_backup_walrus_restore_zstd_s3() {
    walg_backup_walrus_restore("walg_backup_walrus_restore_zstd_s3", Kind::S3, "zstd");
}

#[test]
fn walg_backup_walrus_restore_brotli_file() {
    walg_backup_walrus_restore(
        "walg_backup_walrus_restore_brotli_file",
        Kind::File,
        "brotli",
    );
}

#[test]
fn walrus_backup_walg_restore_lz4_file() {
    walrus_backup_walg_restore("walrus_backup_walg_restore_lz4_file", Kind::File, "lz4");
}

#[test]
fn walrus_backup_walg_restore_zstd_s3() {
    walrus_backup_walg_restore("walrus_backup_walg_restore_zstd_s3", Kind::S3, "zstd");
}

#[test]
fn walrus_backup_walg_restore_brotli_s3() {
    walrus_backup_walg_restore("walrus_backup_walg_restore_brotli_s3", Kind::S3, "brotli");
}

#[test]
fn backup_list_parity_file() {
    backup_list_parity("backup_list_parity_file", Kind::File);
}

#[test]
fn backup_list_parity_s3() {
    backup_list_parity("backup_list_parity_s3", Kind::S3);
}

#[test]
fn delete_retain_parity_file() {
    delete_retain_parity("delete_retain_parity_file", Kind::File);
}

#[test]
fn delete_retain_parity_s3() {
    delete_retain_parity("delete_retain_parity_s3", Kind::S3);
}

#[test]
fn delete_before_parity_file() {
    delete_before_parity("delete_before_parity_file", Kind::File);
}

#[test]
fn delete_before_parity_s3() {
    delete_before_parity("delete_before_parity_s3", Kind::S3);
}

#[test]
fn delete_everything_parity_file() {
    delete_everything_parity("delete_everything_parity_file", Kind::File);
}

#[test]
fn delete_everything_parity_s3() {
    delete_everything_parity("delete_everything_parity_s3", Kind::S3);
}

#[test]
fn walg_encrypted_backup_without_its_key_refused_s3() {
    walg_encrypted_backup_refused(
        "walg_encrypted_backup_without_its_key_refused_s3",
        Kind::S3,
        &[("WALG_LIBSODIUM_KEY", support::LIBSODIUM_KEY)],
        &[
            (
                "with another key",
                &[("WALG_LIBSODIUM_KEY", "another-key-of-thirty-two-bytes!")],
                "WALG_LIBSODIUM_KEY",
            ),
            ("without a key", &[], "WALG_LIBSODIUM_KEY"),
        ],
    );
}

#[test]
fn walg_pgp_encrypted_backup_without_its_key_refused_file() {
    let keys = support::pgp_keys_for_postgres();
    let key = |name: &str| keys.path().join(name).display().to_string();
    let (rsa, rsa_pub, other) = (key("rsa.asc"), key("rsa.pub.asc"), key("other.asc"));
    walg_encrypted_backup_refused(
        "walg_pgp_encrypted_backup_without_its_key_refused_file",
        Kind::File,
        &[("WALG_PGP_KEY_PATH", &rsa)],
        &[
            (
                "with another key",
                &[("WALG_PGP_KEY_PATH", &other)],
                "WALG_PGP_KEY_PATH",
            ),
            (
                "with the public key only",
                &[("WALG_PGP_KEY_PATH", &rsa_pub)],
                "WALG_PGP_KEY_PATH holds only public keys",
            ),
            ("without a key", &[], "WALG_PGP_KEY"),
        ],
    );
}

/// A libsodium key as hex (WAL-G's `hex` transform) for the encrypted round trips.
const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[test]
fn encrypted_walg_backup_walrus_restore_s3() {
    walg_backup_walrus_restore_with(
        "encrypted_walg_backup_walrus_restore_s3",
        Kind::S3,
        "lz4",
        &[
            ("WALG_LIBSODIUM_KEY", HEX_KEY),
            ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex"),
        ],
    );
}

#[test]
fn encrypted_walrus_backup_walg_restore_file() {
    walrus_backup_walg_restore_with(
        "encrypted_walrus_backup_walg_restore_file",
        Kind::File,
        "zstd",
        &[("WALG_LIBSODIUM_KEY", support::LIBSODIUM_KEY)],
    );
}

#[test]
fn encrypted_pgp_walg_backup_walrus_restore_file() {
    let keys = support::pgp_keys_for_postgres();
    let rsa = keys.path().join("rsa.asc").display().to_string();
    walg_backup_walrus_restore_with(
        "encrypted_pgp_walg_backup_walrus_restore_file",
        Kind::File,
        "lz4",
        &[("WALG_PGP_KEY_PATH", &rsa)],
    );
}

#[test]
fn encrypted_pgp_walrus_backup_walg_restore_s3() {
    let keys = support::pgp_keys_for_postgres();
    let locked = keys
        .path()
        .join("x25519-passphrase.asc")
        .display()
        .to_string();
    walrus_backup_walg_restore_with(
        "encrypted_pgp_walrus_backup_walg_restore_s3",
        Kind::S3,
        "zstd",
        &[
            ("WALG_PGP_KEY_PATH", &locked),
            ("WALG_PGP_KEY_PASSPHRASE", support::PGP_PASSPHRASE),
        ],
    );
}

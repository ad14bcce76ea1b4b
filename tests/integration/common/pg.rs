//! A throwaway PostgreSQL 15 cluster for the tests, run by the `postgres` OS user when the
//! tests run as root (PostgreSQL refuses to run as root), in a temp dir that user owns.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::{Tool, exec_script, hermetic, output_text, run_ok, run_with_timeout, walrus_bin};

/// Whether this process runs as root (then PostgreSQL runs as `postgres`).
pub fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// uid/gid of the `postgres` OS user, from /etc/passwd.
pub fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// Gives `path` (recursively) to the `postgres` user when running as root.
pub fn chown_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let (uid, gid) = postgres_ids().expect("postgres OS user");
    fn walk(p: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            for entry in fs::read_dir(p).unwrap().flatten() {
                walk(&entry.path(), uid, gid);
            }
        }
    }
    walk(path, uid, gid);
}

/// A temp dir under /tmp (not $TMPDIR, which may be private) that the
/// `postgres` user owns and everyone can traverse (mode 0755): for data
/// directories, WAL storage written by archive_command, and scripts.
pub fn postgres_owned_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir in /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    chown_postgres(dir.path());
    dir
}

/// A command that runs as the `postgres` OS user (via runuser when root),
/// with a cwd postgres can enter and no inherited WALG_*/AWS_* settings.
fn as_postgres(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    hermetic(&mut cmd)
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .env_remove("PGDATA");
    cmd
}

/// A throwaway PostgreSQL 15 cluster run by the `postgres` OS user.
///
/// Layout of its temp dir (/tmp/walrus-test-XXXX, mode 0755, owned by
/// postgres):
/// * `data/`: the data directory
/// * `server.log`: the server log (wal-rus's stderr from archive_command and
///   restore_command ends up here too)
/// * `bin/wal-rus`: a copy of the wal-rus binary (the build tree may not be
///   reachable by postgres, e.g. under /root)
/// * `walrus-env.sh`: wrapper that exports the test's settings and execs
///   wal-rus; use it in archive/restore commands via the `{walrus}`
///   placeholder in `extra_conf`
///
/// The server is stopped (immediate mode) on drop.
pub struct PgCluster {
    base: TempDir,
    data: PathBuf,
    port: u16,
    bindir: PathBuf,
    running: bool,
}

/// Bound for pg_ctl start/stop waits.
const PG_CTL_TIMEOUT_SECS: u64 = 120;

impl PgCluster {
    /// `init_with_env` with no wal-rus settings.
    pub fn init(port: u16, extra_conf: &str) -> PgCluster {
        Self::init_with_env(port, extra_conf, &[])
    }

    /// Runs initdb (data checksums on, trust auth, superuser `postgres`) and
    /// appends the harness settings (listen on 127.0.0.1:`port`, socket in the
    /// temp dir, small memory) and then `extra_conf` to postgresql.conf.
    /// `{walrus}` in `extra_conf` is replaced by the wrapper script path,
    /// e.g. `archive_command = '{walrus} wal-push %p'`; `env` is what the
    /// wrapper exports to wal-rus. Does not start the server.
    pub fn init_with_env(port: u16, extra_conf: &str, env: &[(String, String)]) -> PgCluster {
        let cluster = Self::prepare(port, env);
        let out = run_with_timeout(
            as_postgres(&cluster.bin("initdb"), cluster.base_dir())
                .arg("-D")
                .arg(&cluster.data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
                .args(["--data-checksums", "--no-sync", "--no-instructions"]),
            Duration::from_secs(180),
        );
        assert!(out.status.success(), "initdb failed\n{}", output_text(&out));
        cluster.append_conf(&cluster.harness_conf(extra_conf));
        cluster
    }

    /// A new cluster made by `pg_basebackup -X none` from the running
    /// `primary`: it contains no WAL, so everything it needs to become
    /// consistent must come from restore_command. `extra_conf` (with the
    /// `{walrus}` placeholder) and `env` as in `init_with_env`; write a signal
    /// file (`create_signal_file`) before starting it.
    pub fn from_basebackup(
        primary: &PgCluster,
        port: u16,
        extra_conf: &str,
        env: &[(String, String)],
    ) -> PgCluster {
        let cluster = Self::prepare(port, env);
        let out = run_with_timeout(
            as_postgres(&cluster.bin("pg_basebackup"), cluster.base_dir())
                .arg("-D")
                .arg(&cluster.data)
                .args(["-X", "none", "-c", "fast", "--no-sync", "-h", "127.0.0.1"])
                .args(["-p", &primary.port.to_string(), "-U", "postgres"]),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "pg_basebackup failed\n{}\n--- primary log ---\n{}",
            output_text(&out),
            primary.server_log_tail(60)
        );
        // The copied postgresql.conf still has the primary's port and socket
        // dir; settings appended later win.
        cluster.append_conf(&cluster.harness_conf(extra_conf));
        cluster
    }

    /// A cluster whose data directory is made by `fill` (e.g. `wal-rus backup-fetch` run
    /// through `run_walrus_as_postgres`) instead of initdb. `extra_conf` and `env` as in
    /// `init_with_env`; the harness settings are appended only when `fill` succeeded.
    pub fn from_restore(
        port: u16,
        extra_conf: &str,
        env: &[(String, String)],
        fill: impl FnOnce(&PgCluster) -> Output,
    ) -> (PgCluster, Output) {
        let cluster = Self::prepare(port, env);
        let out = fill(&cluster);
        if out.status.success() {
            cluster.append_conf(&cluster.harness_conf(extra_conf));
        }
        (cluster, out)
    }

    /// Runs wal-rus as the postgres user through this cluster's wrapper (so with its
    /// settings), from the cluster's base directory.
    pub fn run_walrus_as_postgres(&self, args: &[&str], timeout: Duration) -> Output {
        run_with_timeout(
            as_postgres(&self.walrus_wrapper(), self.base_dir()).args(args),
            timeout,
        )
    }

    /// A command running wal-rus as postgres through the wrapper, to spawn or time.
    pub fn walrus_command(&self, args: &[&str]) -> Command {
        let mut cmd = as_postgres(&self.walrus_wrapper(), self.base_dir());
        cmd.args(args);
        cmd
    }

    fn prepare(port: u16, env: &[(String, String)]) -> PgCluster {
        let bindir = Tool::Postgres
            .locate()
            .unwrap_or_else(|e| panic!("PostgreSQL unavailable: {e}"));
        let base = postgres_owned_tempdir("walrus-test-");
        let cluster = PgCluster {
            data: base.path().join("data"),
            base,
            port,
            bindir,
            running: false,
        };
        let bin_dir = cluster.base_dir().join("bin");
        fs::create_dir(&bin_dir).expect("mkdir bin");
        fs::copy(walrus_bin(), bin_dir.join("wal-rus")).expect("copy wal-rus binary");
        fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        chown_postgres(&bin_dir);
        cluster.set_walrus_env(env);
        cluster
    }

    fn harness_conf(&self, extra_conf: &str) -> String {
        format!(
            "\n# --- added by the wal-rus test harness ---\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             max_connections = 30\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] '\n\
             log_min_messages = log\n\
             # --- test-specific settings ---\n{extra}\n",
            port = self.port,
            sock = self.base_dir().display(),
            extra = extra_conf.replace("{walrus}", &self.walrus_wrapper().display().to_string()),
        )
    }

    /// (Re)writes the wrapper script with `env` exported. Takes effect for the
    /// next archive/restore command the server runs.
    pub fn set_walrus_env(&self, env: &[(String, String)]) {
        let script = exec_script(
            "Generated by the wal-rus test harness: settings for wal-rus run by PostgreSQL.",
            env,
            &self.base_dir().join("bin/wal-rus"),
        );
        let path = self.walrus_wrapper();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, script).expect("write wrapper");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
        chown_postgres(&tmp);
        fs::rename(&tmp, &path).expect("install wrapper");
    }

    /// Path of the `walrus-env.sh` wrapper.
    pub fn walrus_wrapper(&self) -> PathBuf {
        self.base_dir().join("walrus-env.sh")
    }

    /// Appends `text` to postgresql.conf.
    pub fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        f.write_all(text.as_bytes())
            .expect("append postgresql.conf");
    }

    /// Creates an empty file in the data dir, e.g. `standby.signal`.
    pub fn create_signal_file(&self, name: &str) {
        let p = self.data.join(name);
        fs::write(&p, b"").expect("write signal file");
        chown_postgres(&p);
    }

    /// `pg_ctl start -w`; panics with the server log if it does not come up.
    pub fn start(&mut self) {
        let out = run_with_timeout(
            as_postgres(&self.bin("pg_ctl"), self.base_dir())
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", &PG_CTL_TIMEOUT_SECS.to_string(), "start"]),
            Duration::from_secs(PG_CTL_TIMEOUT_SECS + 30),
        );
        // Even a failed start may leave a postmaster behind: let Drop look.
        self.running = true;
        assert!(
            out.status.success(),
            "pg_ctl start failed\n{}\n--- server log ---\n{}",
            output_text(&out),
            self.server_log_tail(80)
        );
    }

    /// `pg_ctl stop -m fast -w` (a clean shutdown also archives the last
    /// completed segments first).
    pub fn stop(&mut self) {
        self.stop_mode("fast");
    }

    /// `pg_ctl stop` with the given mode (smart, fast, immediate).
    pub fn stop_mode(&mut self, mode: &str) {
        let out = run_with_timeout(
            as_postgres(&self.bin("pg_ctl"), self.base_dir())
                .arg("-D")
                .arg(&self.data)
                .args([
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    &PG_CTL_TIMEOUT_SECS.to_string(),
                    "stop",
                ]),
            Duration::from_secs(PG_CTL_TIMEOUT_SECS + 30),
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed\n{}\n--- server log ---\n{}",
            output_text(&out),
            self.server_log_tail(40)
        );
        self.running = false;
    }

    /// Runs `sql` with `psql -At` as superuser `postgres` on 127.0.0.1:port and
    /// returns trimmed stdout; panics on error.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql failed on port {}: {sql}\n{e}", self.port))
    }

    /// Like `psql`, but returns the error text instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = run_with_timeout(
            self.client("psql").args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                sql,
            ]),
            Duration::from_secs(300),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(output_text(&out))
        }
    }

    /// Waits until this (standby) cluster has replayed up to `lsn`; `explain` adds to the
    /// failure message.
    pub fn wait_replayed(&self, lsn: &str, timeout: Duration, explain: impl FnOnce() -> String) {
        super::wait_for_or_explain(
            &format!("replay to reach {lsn} on port {}", self.port),
            timeout,
            || {
                let sql = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
                (self.try_psql(&sql).ok()? == "t").then_some(())
            },
            || format!("{}\n{}", self.server_log_tail(40), explain()),
        );
    }

    /// Waits until pg_stat_archiver reports `segment` (or a later one) archived, whatever
    /// attempts failed on the way.
    pub fn wait_archived_past(
        &self,
        segment: &str,
        timeout: Duration,
        explain: impl FnOnce() -> String,
    ) {
        super::wait_for_or_explain(
            &format!("{segment} to be archived"),
            timeout,
            || {
                let last =
                    self.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
                last.get(..24).is_some_and(|a| a >= segment).then_some(())
            },
            || {
                format!(
                    "pg_stat_archiver: {:?}\n--- server log ---\n{}\n{}",
                    self.try_psql("select * from pg_stat_archiver"),
                    self.server_log_tail(40),
                    explain()
                )
            },
        );
    }

    /// The current segment switched out: the name of the segment it completed.
    pub fn switch_wal(&self) -> String {
        self.psql("select pg_walfile_name(pg_switch_wal())")
    }

    /// `pgbench -i -s scale` on database postgres.
    pub fn pgbench_init(&self, scale: u32) {
        run_ok(
            self.client("pgbench")
                .args(["-i", "-q", "-s", &scale.to_string(), "postgres"]),
            Duration::from_secs(600),
        );
    }

    /// `pgbench <args> postgres`; returns its stdout (panics on failure).
    pub fn pgbench(&self, args: &[&str]) -> String {
        let out = run_ok(
            self.client("pgbench").args(args).arg("postgres"),
            Duration::from_secs(600),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_dumpall` of the whole cluster, minus the `\restrict KEY` /
    /// `\unrestrict KEY` lines (PostgreSQL 15.14+ writes a random key there on
    /// every run, so two dumps of identical data would otherwise differ).
    pub fn dumpall(&self) -> String {
        let out = run_ok(&mut self.client("pg_dumpall"), Duration::from_secs(300));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A client program (psql, pgbench, ...) preset to connect to this
    /// cluster over TCP as `postgres`. Runs as the current user: auth is trust.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin(program));
        hermetic(&mut cmd)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGDATABASE")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE");
        cmd
    }

    /// A PostgreSQL binary from the configured bin dir.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn base_dir(&self) -> &Path {
        self.base.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.base_dir().join("server.log")
    }

    /// The server log so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn server_log_tail(&self, lines: usize) -> String {
        let log = self.server_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.running && self.postmaster_pid().is_none() {
            return;
        }
        let mut cmd = as_postgres(&self.bin("pg_ctl"), self.base_dir());
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        // Never panic in drop (it may run while unwinding from a failure).
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_with_timeout(&mut cmd, Duration::from_secs(60))
                .status
                .success()
        }))
        .unwrap_or(false);
        if !stopped
            && let Some(pid) = self.postmaster_pid()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

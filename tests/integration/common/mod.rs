//! Shared harness for the wal-rus integration tests.
//!
//! wal-rus only matters if it works when PostgreSQL itself runs it as
//! `archive_command`/`restore_command`, against the same storage layouts WAL-G
//! uses. So the integration tests drive real programs: a PostgreSQL 15 cluster
//! (initdb/pg_ctl/pgbench/pg_basebackup, run as the `postgres` OS user), the
//! s3s-fs S3 server, and optionally WAL-G itself. This module starts and tears
//! those down and gives tests a few small helpers.
//!
//! Rules it follows:
//! * Every wait is bounded (`run_with_timeout`, `wait_for`): a broken wal-rus
//!   makes a test fail, never hang.
//! * Every external process started here is stopped in `Drop`, so a failing
//!   test leaves no stray postgres or s3s-fs behind.
//! * Tool locations come from `scripts/ensure-tools` through the environment
//!   (WALRUS_PG_BINDIR, WALRUS_S3S_BIN, WALRUS_WALG_BIN), with fallbacks for
//!   plain `cargo test`.
//! * A missing PostgreSQL or s3s-fs fails the test under CI=true or
//!   WALRUS_REQUIRE_TOOLS=1 (as `scripts/test` sets) and skips otherwise with
//!   a line starting `SKIP:`; a missing WAL-G skips the same way unless it was
//!   configured and is broken (see `require_or_fail`).
//! * Inherited WALG_* / AWS_* variables are removed from every child process,
//!   so a developer's own configuration cannot leak into a test.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod fault_proxy;

/// Default bound for a single wal-rus or WAL-G invocation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------ binaries

/// The wal-rus binary under test: `$WALRUS_BIN_UNDER_TEST` when set (e.g. the static musl
/// build from `scripts/build-static`), else the one cargo built for this test run.
pub fn walrus_bin() -> PathBuf {
    match non_empty_env("WALRUS_BIN_UNDER_TEST") {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(
                is_executable(&bin),
                "WALRUS_BIN_UNDER_TEST={} is not an executable file",
                bin.display()
            );
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                loud(&format!(
                    "[tests] wal-rus under test: {} (WALRUS_BIN_UNDER_TEST)",
                    bin.display()
                ))
            });
            bin
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_wal-rus")),
    }
}

/// Default PostgreSQL 15 binary directory on Debian.
const DEFAULT_PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// The tool cache used by `scripts/ensure-tools`.
fn tools_cache() -> Option<PathBuf> {
    if let Some(dir) = non_empty_env("WALRUS_TOOLS") {
        return Some(PathBuf::from(dir));
    }
    non_empty_env("HOME").map(|home| Path::new(&home).join(".cache/wal-rus-tools"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Location of an external tool, by the variable `scripts/ensure-tools` writes:
///
/// * `WALRUS_PG_BINDIR`: directory with initdb, pg_ctl, psql, ...; falls back
///   to /usr/lib/postgresql/15/bin.
/// * `WALRUS_S3S_BIN`: the s3s-fs binary; falls back to `s3s-fs` on PATH, then
///   the tool cache (`$WALRUS_TOOLS` or ~/.cache/wal-rus-tools)/bin/s3s-fs.
/// * `WALRUS_WALG_BIN`: WAL-G's `pg` binary; falls back to the tool cache's
///   bin/pg only.
///
/// Returns `None` when the tool is not there (an explicit but broken setting
/// counts as not there).
pub fn tool_env(name: &str) -> Option<PathBuf> {
    let explicit = non_empty_env(name).map(PathBuf::from);
    match name {
        "WALRUS_PG_BINDIR" => explicit
            .into_iter()
            .chain(std::iter::once(PathBuf::from(DEFAULT_PG_BINDIR)))
            .find(|d| is_executable(&d.join("initdb")) && is_executable(&d.join("pg_ctl"))),
        "WALRUS_S3S_BIN" => match explicit {
            Some(p) => is_executable(&p).then_some(p),
            None => find_on_path("s3s-fs").or_else(|| {
                tools_cache()
                    .map(|c| c.join("bin/s3s-fs"))
                    .filter(|p| is_executable(p))
            }),
        },
        "WALRUS_WALG_BIN" => match explicit {
            Some(p) => is_executable(&p).then_some(p),
            None => tools_cache()
                .map(|c| c.join("bin/pg"))
                .filter(|p| is_executable(p)),
        },
        other => non_empty_env(other).map(PathBuf::from),
    }
}

/// The external tools integration tests may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// PostgreSQL 15 server binaries (plus `runuser` when running as root).
    Postgres,
    /// The s3s-fs S3 server.
    S3s,
    /// WAL-G v3.0.8 (`pg` binary): the interop oracle.
    Walg,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Postgres => "PostgreSQL 15",
            Tool::S3s => "s3s-fs",
            Tool::Walg => "WAL-G v3.0.8",
        }
    }

    /// Path of the tool (bin dir for PostgreSQL) or why it is unusable.
    fn locate(self) -> Result<PathBuf, String> {
        match self {
            Tool::Postgres => {
                let dir = tool_env("WALRUS_PG_BINDIR").ok_or_else(|| {
                    format!("no initdb/pg_ctl in $WALRUS_PG_BINDIR or {DEFAULT_PG_BINDIR}")
                })?;
                if is_root()
                    && find_on_path("runuser").is_none()
                    && !Path::new("/usr/sbin/runuser").exists()
                {
                    return Err("running as root but `runuser` (util-linux) is missing".into());
                }
                if is_root() && postgres_ids().is_none() {
                    return Err("running as root but there is no `postgres` OS user".into());
                }
                Ok(dir)
            }
            Tool::S3s => tool_env("WALRUS_S3S_BIN")
                .ok_or_else(|| "s3s-fs not found ($WALRUS_S3S_BIN, PATH, tool cache)".to_string()),
            Tool::Walg => {
                static WALG: OnceLock<Result<PathBuf, String>> = OnceLock::new();
                WALG.get_or_init(|| {
                    let bin = tool_env("WALRUS_WALG_BIN").ok_or_else(|| {
                        "WALRUS_WALG_BIN is not set or not executable (scripts/ensure-tools could not build it)"
                            .to_string()
                    })?;
                    let out = run_with_timeout(Command::new(&bin).arg("--version"), Duration::from_secs(30));
                    if out.status.success() {
                        Ok(bin)
                    } else {
                        Err(format!("{} --version failed: {}", bin.display(), output_text(&out)))
                    }
                })
                .clone()
            }
        }
    }
}

/// True when a missing PostgreSQL/s3s-fs must fail the test rather than skip.
pub fn tools_required() -> bool {
    let ci = std::env::var("CI").unwrap_or_default();
    let required = std::env::var("WALRUS_REQUIRE_TOOLS").unwrap_or_default();
    (!ci.is_empty() && ci != "false" && ci != "0") || required == "1"
}

/// Checks that `tool` is usable for `test`.
///
/// Returns the tool's path (bin dir for PostgreSQL). When it is missing:
/// * PostgreSQL / s3s-fs: panics (test FAILS) under CI=true or
///   WALRUS_REQUIRE_TOOLS=1, otherwise prints a `SKIP:` line (see [`skip`]) and returns
///   `None` — the caller should return early.
/// * WAL-G: panics under CI/WALRUS_REQUIRE_TOOLS when it was configured
///   (`WALRUS_WALG_BIN` non-empty, as scripts/ensure-tools writes it when WAL-G built) but
///   does not run, and under `WALRUS_REQUIRE_WALG=1` whenever it is missing; otherwise
///   prints a `SKIP:` line and returns `None`. WAL-G is a peer we test against, not something
///   we ship; its absence where it cannot be built (e.g. the module proxy refusing to serve
///   it) must not turn CI red, but a WAL-G that was built and then fails must.
pub fn require_or_fail(tool: Tool, test: &str) -> Option<PathBuf> {
    match tool.locate() {
        Ok(path) => Some(path),
        Err(why) => {
            let required = match tool {
                Tool::Walg => {
                    non_empty_env("WALRUS_REQUIRE_WALG").as_deref() == Some("1")
                        || (tools_required() && non_empty_env("WALRUS_WALG_BIN").is_some())
                }
                _ => tools_required(),
            };
            if required {
                panic!(
                    "{test}: required tool {} is missing: {why}. \
                     Run scripts/ensure-tools (CI/WALRUS_REQUIRE_TOOLS forbid skipping).",
                    tool.label()
                );
            }
            skip(test, &format!("{} unavailable: {why}", tool.label()));
            None
        }
    }
}

/// Reports that `test` (or a part of it) did not run because of `why`: one line on the real
/// stderr starting with `SKIP:`, which scripts/test counts.
pub fn skip(test: &str, why: &str) {
    let why = why.replace('\n', " ");
    loud(&format!("SKIP: {test}: {why}"));
}

/// Prints `msg` on the real stderr. Unlike `eprintln!`, this is not captured
/// by the test harness, so skip notices show up in `cargo test` output even
/// for tests that pass.
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n{msg}\n");
}

// ------------------------------------------------------- running processes

/// Removes inherited WALG_* and AWS_* variables from `cmd`'s environment so
/// only what the test sets explicitly reaches wal-rus/WAL-G/PostgreSQL.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("WALG_") || k.starts_with("AWS_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Runs `cmd` to completion with stdin closed, capturing stdout/stderr, and
/// panics if it does not finish within `timeout` (its process group is
/// killed first).
///
/// Output goes to anonymous temp files rather than pipes: daemons started by
/// the child (pg_ctl starting postgres) may keep inherited descriptors open,
/// and reading a pipe to EOF would then hang.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"))
        .process_group(0);
    let desc = describe(cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status: ExitStatus = match rx.recv_timeout(timeout) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
        Err(_) => {
            kill_group(pid);
            let _ = rx.recv_timeout(Duration::from_secs(10));
            panic!(
                "{desc} did not finish within {timeout:?}; it was killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&read_all(&mut out)),
                String::from_utf8_lossy(&read_all(&mut err))
            );
        }
    };
    Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

fn read_all(f: &mut fs::File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    buf
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn describe(cmd: &Command) -> String {
    let mut s = format!("`{}", cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s.push('`');
    s
}

/// Human-readable exit status + stdout + stderr, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `run_with_timeout`, panicking with the full output unless it succeeded.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = describe(cmd);
    let out = run_with_timeout(cmd, timeout);
    assert!(out.status.success(), "{desc} failed\n{}", output_text(&out));
    out
}

/// Runs the wal-rus binary with `args` and exactly the WALG_*/AWS_* settings
/// in `env` (plus the rest of the inherited environment).
pub fn run_walrus<I, S, K, V>(args: I, env: &[(K, V)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(walrus_bin());
    hermetic(&mut cmd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
}

/// Runs `cmd` under `/usr/bin/time -v` and returns its output together with
/// its peak resident set size in KiB ("Maximum resident set size (kbytes)").
/// The time report goes to a separate file, so `Output` is the command's own.
pub fn peak_rss_kib(cmd: &mut Command) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().expect("temp file for time report");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-v")
        .arg("-o")
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = run_with_timeout(&mut timed, COMMAND_TIMEOUT);
    let text = fs::read_to_string(report.path()).unwrap_or_default();
    let kib = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no peak RSS in /usr/bin/time report:\n{text}\n{}",
                output_text(&out)
            )
        });
    (out, kib)
}

/// Polls `probe` (every 200 ms) until it returns `Some`, panicking after
/// `timeout` with `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_or_explain(what, timeout, probe, String::new)
}

/// `wait_for`, adding `explain()` (e.g. a server log tail) to the timeout
/// message.
pub fn wait_for_or_explain<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A loopback TCP port that was free a moment ago. Ports already handed out
/// in this process are never returned twice, so parallel tests do not clash.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral loopback port")
            .port();
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// Random-enough hex string (std's hasher keys are randomly seeded per process).
pub fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(nanos.as_nanos() ^ u128::from(std::process::id()));
        let _ = write!(s, "{:016x}", h.finish());
    }
    s.truncate(len);
    s
}

// --------------------------------------------------------- users and dirs

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

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------- WAL segments

/// Name of WAL segment number `segno` (16 MiB segments) on timeline `tli`.
pub fn wal_segment_name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 0x100, segno % 0x100)
}

/// Writes a PostgreSQL 15 page header (8 KiB pages) at the start of every page of `data`, a
/// segment numbered `segno` on timeline `tli` whose length is the segment size: what
/// wal-fetch checks before it restores a segment.
pub fn stamp_wal_pages(data: &mut [u8], tli: u32, segno: u64) {
    const PAGE: usize = 8192;
    let size = data.len() as u64;
    for (i, page) in data.chunks_mut(PAGE).enumerate() {
        page[..24].fill(0);
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&(if i == 0 { 2u16 } else { 0 }).to_le_bytes());
        page[4..8].copy_from_slice(&tli.to_le_bytes());
        page[8..16].copy_from_slice(&(segno * size + (i * PAGE) as u64).to_le_bytes());
        if i == 0 {
            page[24..32].copy_from_slice(&0x7300_1234_5678_9abcu64.to_le_bytes());
            page[32..36].copy_from_slice(&(size as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
        }
    }
}

/// (timeline, segment number) of a 24-hex-digit WAL segment name.
pub fn parse_wal_segment_name(name: &str) -> (u32, u64) {
    assert!(
        name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a WAL segment name: {name:?}"
    );
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (tli, log * 0x100 + seg)
}

/// All segment names from `first` to `last` inclusive (same timeline).
pub fn wal_segment_range(first: &str, last: &str) -> Vec<String> {
    let (tli, a) = parse_wal_segment_name(first);
    let (tli2, b) = parse_wal_segment_name(last);
    assert_eq!(tli, tli2, "segment range spans timelines: {first}..{last}");
    (a..=b).map(|n| wal_segment_name(tli, n)).collect()
}

// ----------------------------------------------------------------- s3s-fs

/// An s3s-fs S3 server on a free loopback port, with SigV4 auth enabled and
/// one bucket. Killed on drop.
///
/// On-disk layout of s3s-fs 0.14.1 (see its `FileSystem`): an object `key` in
/// `bucket` is the plain file `<data root>/<bucket>/<key>` ('/' in keys become
/// directories); metadata lives beside the buckets as
/// `<data root>/.bucket-<b64>.object-<b64>.{metadata,internal}.json`, and
/// in-flight uploads as `<data root>/.tmp.*.internal.part` /
/// `.upload_id-*.part-*`, so a bucket directory holds only objects.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// Holds `data/` (the s3s-fs root) and `s3s-fs.log`.
    pub root: TempDir,
    pub port: u16,
    child: Child,
}

impl S3Server {
    /// Starts s3s-fs (panics if it is unavailable: check `require_or_fail`
    /// first) and waits, at most ~10 s, until it accepts connections.
    pub fn start() -> S3Server {
        let bin = Tool::S3s
            .locate()
            .unwrap_or_else(|e| panic!("cannot start s3s-fs: {e}"));
        let root = tempfile::Builder::new()
            .prefix("walrus-s3-")
            .tempdir()
            .expect("s3 temp dir");
        let data = root.path().join("data");
        let bucket = "wal-rus-test".to_string();
        fs::create_dir_all(data.join(&bucket)).expect("create bucket dir");
        let access_key = format!("AK{}", random_hex(18).to_uppercase());
        let secret_key = random_hex(40);

        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log_path = root.path().join("s3s-fs.log");
            let log = fs::File::create(&log_path).expect("s3s-fs log");
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .env("RUST_LOG", "warn");
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "s3s-fs exited with {status}: {}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return S3Server {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        access_key,
                        secret_key,
                        bucket,
                        root,
                        port,
                        child,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!("s3s-fs did not accept connections on {addr} within 10 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start s3s-fs: {last_err}");
    }

    /// The s3s-fs root directory (buckets are its subdirectories).
    pub fn data_root(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Settings that point wal-rus (or WAL-G) at `s3://<bucket>/<prefix_path>`.
    pub fn env(&self, prefix_path: &str) -> Vec<(String, String)> {
        let prefix = prefix_path.trim_matches('/');
        let url = if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        };
        [
            ("WALG_S3_PREFIX", url),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Where s3s-fs keeps object `key` of the test bucket on disk (for tests
    /// that inspect or corrupt stored objects).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.data_root()
            .join(&self.bucket)
            .join(key.trim_start_matches('/'))
    }

    /// Keys of all objects in the bucket starting with `prefix`, sorted.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), &key, out);
                } else {
                    out.push(key);
                }
            }
        }
        let mut keys = Vec::new();
        walk(&self.data_root().join(&self.bucket), "", &mut keys);
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        keys
    }

    /// A storage configuration for this server with `root` as the key prefix, for tests that
    /// use the storage room directly (short retries and timeouts).
    pub fn storage_config(&self, root: &str) -> wal_rus::storage::s3::S3Config {
        wal_rus::storage::s3::S3Config {
            bucket: self.bucket.clone(),
            root: root.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials: wal_rus::storage::s3::sign::Credentials {
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret_key.clone(),
                session_token: None,
            },
            ca_cert_file: None,
            storage_class: "STANDARD".into(),
            sse: None,
            sse_kms_id: None,
            part_size: 5 << 20,
            max_retries: 2,
            min_throttle_delay: Duration::from_millis(10),
            max_throttle_delay: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            delete_batch: 1000,
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------- PostgreSQL

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
        let mut script = String::from(
            "#!/bin/sh\n# Generated by the wal-rus test harness: settings for wal-rus run by PostgreSQL.\n",
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
            shell_quote(&self.base_dir().join("bin/wal-rus").display().to_string())
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

// ------------------------------------------------------------ memory cages

/// Peak address space and peak resident set of one process, from the kernel's own high-water
/// marks (`VmPeak`, `VmHWM` in /proc/PID/status) read at its exit.
#[derive(Clone, Copy, Debug)]
pub struct MemoryPeaks {
    pub vm_peak_kib: u64,
    pub vm_hwm_kib: u64,
}

/// A copy of `cmd` (program, arguments, environment, working directory) run as
/// `program prefix... cmd-program cmd-args...`, for wrappers like `sh -c '...; exec "$@"'`.
pub fn wrapped(cmd: &Command, program: &OsStr, prefix: &[&OsStr]) -> Command {
    let mut out = Command::new(program);
    out.args(prefix).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// Runs `cmd` (stdin closed, output captured, at most `COMMAND_TIMEOUT`) under ptrace and
/// reads its `VmPeak` and `VmHWM` when it exits: the exact peaks, with no sampling. Only
/// the process itself is traced, not its children.
pub fn memory_peaks(cmd: &mut Command) -> (Output, MemoryPeaks) {
    use std::os::unix::process::ExitStatusExt;
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let desc = describe(cmd);
    // Spawned, waited for and traced from this thread: the tracer is the forking thread.
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let mut peaks = None;
    let mut first_stop = true;
    let status = loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("waitpid for {desc}: {e}");
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            break status;
        }
        let mut signal = libc::WSTOPSIG(status);
        if first_stop && signal == libc::SIGTRAP {
            // Stopped right after exec: ask for a stop at exit, and kill it with us.
            first_stop = false;
            let opts = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    opts as usize as *mut libc::c_void,
                )
            };
            signal = 0;
        } else if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
            // About to exit, address space still there: the high-water marks are final.
            let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
            };
            peaks = Some(MemoryPeaks {
                vm_peak_kib: field("VmPeak:"),
                vm_hwm_kib: field("VmHWM:"),
            });
            signal = 0;
        } else if signal == libc::SIGTRAP {
            signal = 0;
        }
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            )
        };
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let timed_out = watchdog.join().unwrap_or(false);
    drop(child); // already reaped above
    let output = Output {
        status: ExitStatus::from_raw(status),
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    };
    assert!(
        !timed_out,
        "{desc} did not finish within {COMMAND_TIMEOUT:?}; it was killed.\n{}",
        output_text(&output)
    );
    let peaks =
        peaks.unwrap_or_else(|| panic!("no exit stop seen for {desc}\n{}", output_text(&output)));
    (output, peaks)
}

/// Runs `cmd` with its address space limited to `bytes` (`RLIMIT_AS`, as `prlimit --as` or
/// `ulimit -v` set it), with `run_with_timeout`.
pub fn run_with_address_space_limit(cmd: &mut Command, bytes: u64) -> Output {
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// A cgroup v1 memory cgroup with a limit (`memory.limit_in_bytes`, and the same for
/// memory+swap where the kernel has it, so the limit cannot be dodged by swapping), removed
/// on drop. Needs root and the v1 memory controller at /sys/fs/cgroup/memory.
pub struct MemoryCgroup {
    dir: PathBuf,
}

/// Where the cgroup v1 memory controller is mounted.
const CGROUP_V1_MEMORY: &str = "/sys/fs/cgroup/memory";

impl MemoryCgroup {
    /// Creates `walrus-test-<pid>-<n>` with `limit` bytes, or says why it cannot.
    pub fn new(limit: u64) -> Result<MemoryCgroup, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = Path::new(CGROUP_V1_MEMORY);
        if !root.join("memory.limit_in_bytes").exists() {
            let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            return Err(format!(
                "no cgroup v1 memory controller at {CGROUP_V1_MEMORY}{}",
                if v2 {
                    " (this host has cgroup v2 only)"
                } else {
                    ""
                }
            ));
        }
        if !is_root() {
            return Err("not running as root: cannot create memory cgroups".into());
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("walrus-test-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cgroup = MemoryCgroup { dir };
        fs::write(cgroup.dir.join("memory.limit_in_bytes"), limit.to_string()).map_err(|e| {
            format!(
                "cannot set {}/memory.limit_in_bytes: {e}",
                cgroup.dir.display()
            )
        })?;
        let memsw = cgroup.dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            let _ = fs::write(&memsw, limit.to_string());
        }
        let set = cgroup.read_u64("memory.limit_in_bytes");
        if set.is_none_or(|v| v > limit) {
            return Err(format!(
                "the kernel did not take limit {limit} (reads {set:?})"
            ));
        }
        Ok(cgroup)
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit as the kernel applies it (rounded down to pages).
    pub fn limit(&self) -> u64 {
        self.read_u64("memory.limit_in_bytes").unwrap_or(0)
    }

    /// Times an allocation hit the limit (and reclaim had to make room).
    pub fn failcnt(&self) -> u64 {
        self.read_u64("memory.failcnt").unwrap_or(0)
    }

    /// Peak charge (resident memory, page cache and kernel memory together).
    pub fn max_usage(&self) -> u64 {
        self.read_u64("memory.max_usage_in_bytes").unwrap_or(0)
    }

    /// Whether the OOM killer killed something in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// What is charged now, from memory.stat: resident (anonymous) memory, page cache
    /// (dirty and under writeback) and, where the kernel reports it, kernel memory.
    pub fn charge_summary(&self) -> String {
        let stat = fs::read_to_string(self.dir.join("memory.stat")).unwrap_or_default();
        let get = |name: &str| {
            stat.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        format!(
            "now: rss {} KiB, cache {} KiB (dirty {} KiB, writeback {} KiB), kmem {} KiB",
            get("total_rss") / 1024,
            get("total_cache") / 1024,
            get("total_dirty") / 1024,
            get("total_writeback") / 1024,
            self.read_u64("memory.kmem.usage_in_bytes").unwrap_or(0) / 1024
        )
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `cmd` run inside this cgroup: a shell joins it and then execs the command, so every
    /// page the command touches is charged here.
    pub fn command(&self, cmd: &Command) -> Command {
        let script = format!(
            "echo $$ > {} && exec \"$@\"",
            shell_quote(&self.dir.join("cgroup.procs").display().to_string())
        );
        wrapped(
            cmd,
            OsStr::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(&script), OsStr::new("sh")],
        )
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Anything left (a detached helper) goes back to the root cgroup first.
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(Path::new(CGROUP_V1_MEMORY).join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        loud(&format!(
            "could not remove memory cgroup {}",
            self.dir.display()
        ));
    }
}

// ------------------------------------------------------------------ TLS front

/// socat terminating TLS in front of a plain server (s3s-fs speaks no TLS), with a CA and a
/// `localhost` certificate made by the openssl CLI in `dir` (`dir/ca.pem` is the CA).
/// Stopped on drop.
pub struct TlsFront {
    child: Child,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsFront {
    /// Starts it in front of `backend_port`; `None` when openssl or socat is missing.
    pub fn start(dir: &Path, backend_port: u16) -> Option<TlsFront> {
        let socat = ["/usr/bin/socat", "/bin/socat"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let openssl = |args: &[&str]| {
            run_with_timeout(
                Command::new("openssl").current_dir(dir).args(args),
                Duration::from_secs(60),
            )
            .status
            .success()
        };
        let made = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wal-rus test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]) && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]) && fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .is_ok()
            && openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ]);
        if !made {
            return None;
        }
        let mut both = fs::read(dir.join("server.pem")).ok()?;
        both.extend(fs::read(dir.join("server.key")).ok()?);
        fs::write(dir.join("server-with-key.pem"), both).ok()?;
        let port = free_port();
        let child = Command::new(socat)
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
                dir.join("server-with-key.pem").display()
            ))
            .arg(format!("TCP:127.0.0.1:{backend_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let front = TlsFront { child, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(front)
    }
}

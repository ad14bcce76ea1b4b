//! Running processes for the tests: bounded in time, with captured output and without the
//! developer's WALG_*/AWS_* settings, so a broken wal-rus fails a test instead of hanging it
//! and a test sees only the settings it chose.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{COMMAND_TIMEOUT, walrus_bin};

/// Removes inherited WALG_* and AWS_* variables from `cmd`'s environment so
/// only what the test sets explicitly reaches wal-rus/WAL-G/PostgreSQL.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        // Google's client libraries' variables too: a developer's key file or emulator
        // must not reach a test's GCS.
        let google = [
            "GOOGLE_APPLICATION_CREDENTIALS",
            "STORAGE_EMULATOR_HOST",
            "GCE_METADATA_HOST",
        ];
        if k.starts_with("WALG_")
            || k.starts_with("AWS_")
            || k.starts_with("GCS_")
            || google.contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Runs `cmd` to completion with stdin closed, capturing stdout/stderr, and
/// panics if it does not finish within `timeout` (its process group is
/// killed first).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = describe(cmd);
    let (out, timed_out) = run_bounded(cmd, timeout);
    assert!(
        !timed_out,
        "{desc} did not finish within {timeout:?}; it was killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run_with_timeout`] for callers that must go on after a timeout (the bench harness
/// reports it): the output so far and whether the process group had to be killed.
///
/// Output goes to anonymous temp files rather than pipes: daemons started by
/// the child (pg_ctl starting postgres) may keep inherited descriptors open,
/// and reading a pipe to EOF would then hang.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> (Output, bool) {
    use std::os::unix::process::ExitStatusExt;
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
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (
            status.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
            false,
        ),
        Err(_) => {
            kill_group(pid);
            let status = rx.recv_timeout(Duration::from_secs(10)).ok();
            let killed = ExitStatus::from_raw(libc::SIGKILL);
            (status.and_then(Result::ok).unwrap_or(killed), true)
        }
    };
    let output = Output {
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    };
    (output, timed_out)
}

pub(super) fn read_all(f: &mut fs::File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    buf
}

pub(super) fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

pub(super) fn describe(cmd: &Command) -> String {
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

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A `/bin/sh` script that exports `env` and execs `program` with its own arguments: how
/// PostgreSQL's archive and restore commands get a test's settings. `why` is the comment on
/// its second line.
pub fn exec_script(why: &str, env: &[(String, String)], program: &Path) -> String {
    let mut script = format!("#!/bin/sh\n# {why}\n");
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
        shell_quote(&program.display().to_string())
    );
    script
}

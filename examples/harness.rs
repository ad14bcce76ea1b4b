//! The integration tests' harness as a program, for scripts/bench.
//!
//! The bench compares wal-rus with its peers and holds wal-rus to its memory plan; the tests
//! hold it to the same plan. So that both measure, cage and judge the same way, the bench
//! calls this program, built from the tests' own harness (`tests/integration/common`), instead
//! of keeping copies in Python:
//!
//! ```text
//! harness measure [--plan-bytes N] [--timeout S] [--out FILE] -- CMD ARGS...
//! harness cage (cgroup|as) LIMIT_BYTES [--timeout S] -- CMD ARGS...
//! harness s3 DIR
//! ```
//!
//! * `measure` runs CMD under ptrace (`common::trace_memory`: VmHWM and VmPeak read at its
//!   exit) and prints one JSON line `{"rc", "timed_out", "peak_rss_kib", "vm_peak_kib",
//!   "wall_s"}`, plus `"within_plan"` (`common::within_plan`) with `--plan-bytes`; with
//!   `--out` the line is appended to FILE instead (for archive_command, whose stdout is the
//!   server log).
//! * `cage` runs CMD under `RLIMIT_AS` (`as`) or in a cgroup v1 memory cgroup (`cgroup`), as
//!   tests/integration/memory_cage.rs does, and prints `{"rc", "timed_out", "oom_kills",
//!   "wall_s"}`, or `{"error"}` when the cage cannot be made here.
//! * `s3` starts the tests' s3s-fs (`common::S3Server`) with DIR holding its data and log,
//!   prints `{"endpoint", "port", "bucket", "data_root", "env"}` (`env`: the settings that
//!   point WAL-G or wal-rus at the bucket, `S3Server::env`) and serves until its stdin
//!   closes or it gets SIGTERM, SIGINT or SIGHUP.
//!
//! `rc` is CMD's exit code, minus the signal number when a signal ended it (as Python's
//! subprocess says it), `null` when the timeout (default 300 s) killed it. `measure` and
//! `cage` exit as CMD did (2 for a usage error), so either can stand in for CMD; CMD's
//! output goes to stderr after it ends.

// The bench needs a part of the tests' harness; the rest is compiled but not used here.
#[allow(unused_imports)]
#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("measure") => measure(&args[1..]),
        Some("cage") => cage(&args[1..]),
        Some("s3") if args.len() == 2 => s3(Path::new(&args[1])),
        _ => usage("expected measure, cage or s3 (see examples/harness.rs)"),
    };
    std::process::exit(code);
}

fn usage(why: &str) -> i32 {
    eprintln!("harness: {why}");
    2
}

/// The options before `--` and the command after it.
struct Invocation {
    options: Vec<(String, String)>,
    positional: Vec<String>,
    command: Vec<String>,
}

impl Invocation {
    fn parse(args: &[String]) -> Result<Invocation, String> {
        let split = args
            .iter()
            .position(|a| a == "--")
            .ok_or("no `--` before the command")?;
        let (mut options, mut positional) = (Vec::new(), Vec::new());
        let mut it = args[..split].iter();
        while let Some(a) = it.next() {
            match a.strip_prefix("--") {
                Some(name) => {
                    let value = it.next().ok_or(format!("--{name} needs a value"))?;
                    options.push((name.to_string(), value.clone()));
                }
                None => positional.push(a.clone()),
            }
        }
        let command = args[split + 1..].to_vec();
        if command.is_empty() {
            return Err("no command after `--`".into());
        }
        Ok(Invocation {
            options,
            positional,
            command,
        })
    }

    fn option(&self, name: &str, known: &[&str]) -> Result<Option<&str>, String> {
        if let Some((bad, _)) = self
            .options
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            return Err(format!("unknown option --{bad}"));
        }
        Ok(self
            .options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()))
    }

    fn number(&self, name: &str, known: &[&str]) -> Result<Option<u64>, String> {
        self.option(name, known)?
            .map(|v| v.parse().map_err(|_| format!("--{name} {v}: not a number")))
            .transpose()
    }

    fn timeout(&self, known: &[&str]) -> Result<Duration, String> {
        Ok(self
            .number("timeout", known)?
            .map_or(common::COMMAND_TIMEOUT, Duration::from_secs))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]);
        cmd
    }
}

fn measure(args: &[String]) -> i32 {
    const KNOWN: &[&str] = &["plan-bytes", "timeout", "out"];
    let parsed = Invocation::parse(args).and_then(|inv| {
        let plan = inv.number("plan-bytes", KNOWN)?;
        let timeout = inv.timeout(KNOWN)?;
        let out = inv.option("out", KNOWN)?.map(str::to_string);
        if !inv.positional.is_empty() {
            return Err(format!("unexpected {:?}", inv.positional));
        }
        Ok((inv, plan, timeout, out))
    });
    let (inv, plan, timeout, out) = match parsed {
        Ok(p) => p,
        Err(why) => return usage(&format!("measure: {why}")),
    };
    let traced = common::trace_memory(&mut inv.command(), timeout);
    let peaks = traced.peaks;
    let mut report = json!({
        "rc": rc(traced.output.status, traced.timed_out),
        "timed_out": traced.timed_out,
        "peak_rss_kib": peaks.map(|p| p.vm_hwm_kib),
        "vm_peak_kib": peaks.map(|p| p.vm_peak_kib),
        "wall_s": traced.wall.as_secs_f64(),
    });
    if let Some(plan) = plan {
        report["within_plan"] = json!(peaks.map(|p| common::within_plan(p.vm_hwm_kib, plan)));
    }
    finish(&traced.output, traced.timed_out, &report, out.as_deref())
}

fn cage(args: &[String]) -> i32 {
    const KNOWN: &[&str] = &["timeout"];
    let parsed = Invocation::parse(args).and_then(|inv| {
        let timeout = inv.timeout(KNOWN)?;
        let [kind, limit] = inv.positional.as_slice() else {
            return Err("expected KIND LIMIT_BYTES before `--`".into());
        };
        let limit: u64 = limit
            .parse()
            .map_err(|_| format!("{limit}: not a number"))?;
        Ok((kind.clone(), limit, timeout, inv.command()))
    });
    let (kind, limit, timeout, mut cmd) = match parsed {
        Ok(p) => p,
        Err(why) => return usage(&format!("cage: {why}")),
    };
    let started = Instant::now();
    let (output, timed_out, oom_kills) = match kind.as_str() {
        "as" => {
            let (output, timed_out) =
                common::run_bounded(common::limit_address_space(&mut cmd, limit), timeout);
            (output, timed_out, 0)
        }
        "cgroup" => {
            let cgroup = match common::MemoryCgroup::new(limit) {
                Ok(cgroup) => cgroup,
                Err(why) => return finish_report(&json!({ "error": why }), None, 2),
            };
            let (output, timed_out) = common::run_bounded(&mut cgroup.command(&cmd), timeout);
            (output, timed_out, cgroup.oom_kills())
        }
        other => return usage(&format!("cage: unknown kind {other} (cgroup or as)")),
    };
    let report = json!({
        "rc": rc(output.status, timed_out),
        "timed_out": timed_out,
        "oom_kills": oom_kills,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    finish(&output, timed_out, &report, None)
}

/// The command's exit code, minus the signal that ended it, or `None` after a timeout.
fn rc(status: ExitStatus, timed_out: bool) -> Option<i32> {
    if timed_out {
        return None;
    }
    status.code().or(status.signal().map(|s| -s))
}

/// Passes the command's output on to stderr, reports, and returns the exit code the harness
/// ends with: the command's (128 + signal when a signal ended it, 124 after a timeout).
fn finish(output: &Output, timed_out: bool, report: &Value, out: Option<&str>) -> i32 {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(&output.stdout);
    let _ = stderr.write_all(&output.stderr);
    let code = match (timed_out, output.status.code(), output.status.signal()) {
        (true, _, _) => 124,
        (false, Some(code), _) => code,
        (false, None, signal) => 128 + signal.unwrap_or(0),
    };
    finish_report(report, out, code)
}

fn finish_report(report: &Value, out: Option<&str>, code: i32) -> i32 {
    let line = format!("{report}\n");
    let written = match out {
        // One write to an O_APPEND file: lines from successive runs never interleave.
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes())),
        None => std::io::stdout().lock().write_all(line.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("harness: cannot write the report: {e}");
        return 2;
    }
    code
}

fn s3(dir: &Path) -> i32 {
    let server = common::S3Server::start_in(dir);
    // Blocked before any thread starts, so every thread inherits the mask and sigwait below
    // is the only place these signals go (s3s-fs was started before: it keeps the defaults).
    let mut stop: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut stop);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut stop, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &stop, std::ptr::null_mut());
    }
    let env: serde_json::Map<String, Value> = server
        .env("")
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let report = json!({
        "endpoint": server.endpoint,
        "port": server.port,
        "bucket": server.bucket,
        "data_root": server.data_root(),
        "env": env,
    });
    if finish_report(&report, None, 0) != 0 {
        return 2;
    }
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        // stdin closed: the same way out as a SIGTERM.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    let mut got = 0;
    unsafe { libc::sigwait(&stop, &mut got) };
    drop(server);
    0
}

//! Memory as the tests measure and limit it: a process's peaks, the memory plan and the one
//! rule that holds a peak to it, and the cages a command must fit in (an address-space limit,
//! a cgroup v1 memory limit). examples/harness.rs gives scripts/bench the same functions, so
//! the bench and the tests cannot drift apart on what "within plan" means.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::{
    COMMAND_TIMEOUT, describe, is_root, loud, output_text, read_all, run_walrus, run_with_timeout,
    shell_quote, wrapped,
};

/// Runs `cmd` under `/usr/bin/time -v` and returns its output together with
/// its peak resident set size in KiB ("Maximum resident set size (kbytes)").
/// The time report goes to a separate file, so `Output` is the command's own.
///
/// Unlike [`memory_peaks`], this counts the command's children too (the largest of them),
/// so it measures wal-rus behind `runuser` or a wrapper script.
pub fn peak_rss_kib(cmd: &mut Command) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().expect("temp file for time report");
    let mut timed = wrapped(
        cmd,
        OsStr::new("/usr/bin/time"),
        &[
            OsStr::new("-v"),
            OsStr::new("-o"),
            report.path().as_os_str(),
        ],
    );
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

/// Peak address space and peak resident set of one process, from the kernel's own high-water
/// marks (`VmPeak`, `VmHWM` in /proc/PID/status) read at its exit.
#[derive(Clone, Copy, Debug)]
pub struct MemoryPeaks {
    pub vm_peak_kib: u64,
    pub vm_hwm_kib: u64,
}

/// Runs `cmd` (stdin closed, output captured, at most `COMMAND_TIMEOUT`) under ptrace and
/// reads its `VmPeak` and `VmHWM` when it exits: the exact peaks, with no sampling. Only
/// the process itself is traced, not its children.
pub fn memory_peaks(cmd: &mut Command) -> (Output, MemoryPeaks) {
    let desc = describe(cmd);
    let traced = trace_memory(cmd, COMMAND_TIMEOUT);
    assert!(
        !traced.timed_out,
        "{desc} did not finish within {COMMAND_TIMEOUT:?}; it was killed.\n{}",
        output_text(&traced.output)
    );
    let peaks = traced.peaks.unwrap_or_else(|| {
        panic!(
            "no exit stop seen for {desc}\n{}",
            output_text(&traced.output)
        )
    });
    (traced.output, peaks)
}

/// What [`trace_memory`] saw of one run.
pub struct Traced {
    pub output: Output,
    /// `None` when the process vanished without the exit stop (killed by the watchdog).
    pub peaks: Option<MemoryPeaks>,
    pub timed_out: bool,
    /// From the start to the reaping of the process.
    pub wall: Duration,
}

/// [`memory_peaks`] for callers that must go on after a failure (the bench harness reports
/// it): the process is killed after `timeout`.
pub fn trace_memory(cmd: &mut Command, timeout: Duration) -> Traced {
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
    let started = Instant::now();
    // Spawned, waited for and traced from this thread: the tracer is the forking thread.
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
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
    let wall = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let timed_out = watchdog.join().unwrap_or(false);
    drop(child); // already reaped above
    let output = Output {
        status: ExitStatus::from_raw(status),
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    };
    Traced {
        output,
        peaks,
        timed_out,
        wall,
    }
}

/// The memory rule: a measured peak (KiB, as the kernel counts it) is within a `memory-plan`
/// figure (bytes, as the plan prints it) when it does not exceed it. Every test that holds a
/// command to its plan, and the bench (through examples/harness.rs), judges with this.
pub fn within_plan(peak_kib: u64, plan_bytes: u64) -> bool {
    peak_kib.saturating_mul(1024) <= plan_bytes
}

/// `memory-plan --json`: per command, the `peak_rss_bytes` and `peak_virtual_bytes` it is
/// held to.
pub struct Plan(pub serde_json::Value);

impl Plan {
    /// The plan of the binary under test for the settings `env`.
    pub fn read<K: AsRef<OsStr>, V: AsRef<OsStr>>(env: &[(K, V)]) -> Plan {
        Plan::from_output(&run_walrus(["memory-plan", "--json"], env))
    }

    /// The plan a `memory-plan --json` run printed (it must have succeeded).
    pub fn from_output(out: &Output) -> Plan {
        assert!(
            out.status.success(),
            "memory-plan failed\n{}",
            output_text(out)
        );
        Plan(serde_json::from_slice(&out.stdout).expect("memory-plan prints JSON"))
    }

    pub fn field(&self, command: &str, field: &str) -> u64 {
        self.0["commands"][command][field]
            .as_u64()
            .unwrap_or_else(|| panic!("memory-plan has no {command}.{field}:\n{:#}", self.0))
    }

    /// The peak RSS `command` is planned to stay within, in bytes.
    pub fn rss(&self, command: &str) -> u64 {
        self.field(command, "peak_rss_bytes")
    }

    /// The peak address space `command` is planned to stay within, in bytes.
    pub fn virt(&self, command: &str) -> u64 {
        self.field(command, "peak_virtual_bytes")
    }
}

/// Runs `cmd` with its address space limited to `bytes` (see [`limit_address_space`]), with
/// `run_with_timeout`.
pub fn run_with_address_space_limit(cmd: &mut Command, bytes: u64) -> Output {
    run_with_timeout(limit_address_space(cmd, bytes), COMMAND_TIMEOUT)
}

/// `cmd`, set to run with its address space limited to `bytes` (`RLIMIT_AS`, as
/// `prlimit --as` or `ulimit -v` set it): any mapping beyond it fails.
pub fn limit_address_space(cmd: &mut Command, bytes: u64) -> &mut Command {
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
    cmd
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

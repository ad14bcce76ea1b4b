//! Shared harness for the wal-rus integration tests, and through examples/harness.rs for
//! scripts/bench.
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
//!   (WALRUS_PG_BINDIR, WALRUS_S3S_BIN, WALRUS_WALG_BIN, WALRUS_FAKE_GCS_BIN,
//!   WALRUS_AZURITE_BIN, WALRUS_MOTO_BIN), with fallbacks for plain `cargo test`.
//! * A missing PostgreSQL, s3s-fs or emulator fails the test under CI=true or
//!   WALRUS_REQUIRE_TOOLS=1 (as `scripts/test` sets) and skips otherwise with
//!   a line starting `SKIP:`; a missing WAL-G skips the same way unless it was
//!   configured and is broken (see `require_or_fail`).
//! * Inherited WALG_* / AWS_* variables are removed from every child process,
//!   so a developer's own configuration cannot leak into a test.
//!
//! By concern: this file finds the tools and decides between skipping and failing; `run`
//! runs processes within bounds; `pg` is a throwaway PostgreSQL cluster, `s3` the s3s-fs
//! server (and a TLS front for it), `memory` measures peaks and cages commands, `wal` names
//! and stamps WAL segments, `files` lists what a directory holds, `fault_proxy` breaks S3
//! traffic on purpose; `gcs`, `azure` and `moto` are the GCS, Azure Blob and AWS STS/IMDS
//! emulators (started through `emulator`). Everything public is re-exported here, so tests say
//! `common::S3Server`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

mod azure;
mod emulator;
pub mod fault_proxy;
mod files;
mod gcs;
mod memory;
mod moto;
mod pg;
mod run;
mod s3;
mod wal;

pub use azure::*;
pub use files::*;
pub use gcs::*;
pub use memory::*;
pub use moto::*;
pub use pg::*;
pub use run::*;
pub use s3::*;
pub use wal::*;

/// Default bound for a single wal-rus or WAL-G invocation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------ binaries

/// The wal-rus binary under test: `$WALRUS_BIN_UNDER_TEST` when set (e.g. the static musl
/// build from `scripts/build-static`), else the one cargo built for this test run (only
/// integration tests are told where that is; examples/harness.rs runs no wal-rus of its own).
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
        // Cargo names the binary to integration tests only; the bench's harness example
        // is always told which binary to run.
        None => match option_env!("CARGO_BIN_EXE_wal-rus") {
            Some(path) => PathBuf::from(path),
            None => panic!("no wal-rus binary: set WALRUS_BIN_UNDER_TEST"),
        },
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
/// * `WALRUS_FAKE_GCS_BIN`, `WALRUS_AZURITE_BIN`, `WALRUS_MOTO_BIN`: the emulators; no
///   fallback (their place in the tool cache is keyed by version: only the env file knows it).
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
        "WALRUS_FAKE_GCS_BIN" | "WALRUS_AZURITE_BIN" | "WALRUS_MOTO_BIN" => {
            explicit.filter(|p| is_executable(p))
        }
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
    /// WAL-G v3.0.8's `walg-daemon-client`, the client of the daemon protocol.
    DaemonClient,
    /// fake-gcs-server: Google Cloud Storage's JSON API.
    FakeGcs,
    /// Azurite's blob service (`azurite-blob`): Azure Blob Storage.
    Azurite,
    /// moto's server (`moto_server`): AWS STS and the EC2 instance metadata service.
    Moto,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Postgres => "PostgreSQL 15",
            Tool::S3s => "s3s-fs",
            Tool::Walg => "WAL-G v3.0.8",
            Tool::DaemonClient => "walg-daemon-client (WAL-G v3.0.8)",
            Tool::FakeGcs => "fake-gcs-server",
            Tool::Azurite => "azurite-blob",
            Tool::Moto => "moto_server",
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
            Tool::DaemonClient => tool_env("WALRUS_WALG_DAEMON_CLIENT_BIN")
                .filter(|p| is_executable(p))
                .ok_or_else(|| {
                    "WALRUS_WALG_DAEMON_CLIENT_BIN is not set or not executable \
                     (scripts/ensure-tools builds it from the WAL-G bundle)"
                        .to_string()
                }),
            Tool::S3s => tool_env("WALRUS_S3S_BIN")
                .ok_or_else(|| "s3s-fs not found ($WALRUS_S3S_BIN, PATH, tool cache)".to_string()),
            Tool::FakeGcs | Tool::Azurite | Tool::Moto => {
                let var = match self {
                    Tool::FakeGcs => "WALRUS_FAKE_GCS_BIN",
                    Tool::Azurite => "WALRUS_AZURITE_BIN",
                    _ => "WALRUS_MOTO_BIN",
                };
                tool_env(var).ok_or_else(|| {
                    format!("${var} is not set or not executable (scripts/ensure-tools)")
                })
            }
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

/// True when a missing PostgreSQL/s3s-fs/emulator must fail the test rather than skip.
pub fn tools_required() -> bool {
    let ci = std::env::var("CI").unwrap_or_default();
    let required = std::env::var("WALRUS_REQUIRE_TOOLS").unwrap_or_default();
    (!ci.is_empty() && ci != "false" && ci != "0") || required == "1"
}

/// Checks that `tool` is usable for `test`.
///
/// Returns the tool's path (bin dir for PostgreSQL). When it is missing:
/// * PostgreSQL / s3s-fs / the emulators: panics (test FAILS) under CI=true or
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
                // Built from WAL-G's bundle like WAL-G: the same rule.
                Tool::DaemonClient => {
                    non_empty_env("WALRUS_REQUIRE_WALG").as_deref() == Some("1")
                        || (tools_required()
                            && non_empty_env("WALRUS_WALG_DAEMON_CLIENT_BIN").is_some())
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

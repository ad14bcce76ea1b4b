//! The memory plan as a cage. Every command is run three ways with the figures
//! `memory-plan --json` prints for the same settings and the same binary:
//!
//! 1. measured: the kernel's own high-water marks at exit (`VmPeak`, `VmHWM`, read under
//!    ptrace), which must be within `peak_virtual_bytes` and `peak_rss_bytes`;
//! 2. under an address-space limit of `peak_virtual_bytes` (`RLIMIT_AS`, as
//!    `prlimit --as` sets it), where any mapping beyond the plan fails;
//! 3. in a cgroup v1 memory cgroup limited to `peak_rss_bytes` (skipped loudly when this
//!    host has none or the test is not root);
//!
//! and must succeed each time with the right result. Covered: wal-push of a 16 MiB segment
//! with 15 more `.ready` (every background uploader busy), wal-fetch, wal-prefetch of 10
//! segments, all to S3 (s3s-fs, over HTTP and over HTTPS through socat) and to file
//! storage (also encrypted: OpenPGP and libsodium); backup-push and backup-fetch of a
//! small pgbench cluster, to S3 and to files. wal-push and wal-fetch must also keep the
//! issue's promise at default settings: at most 32 MiB of address space, plan and measured.
//!
//! `WALRUS_BIN_UNDER_TEST` points the test at another build (the static musl one).

use crate::common;

use common::{
    MemoryCgroup, MemoryPeaks, PgCluster, Plan, S3Server, Tool, hermetic, loud, memory_peaks,
    output_text, require_or_fail, run_with_address_space_limit, run_with_timeout, walrus_bin,
    within_plan,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEG: usize = 16 << 20;
const MIB: u64 = 1 << 20;

/// Runs in a memory cgroup before an OOM kill counts as a failure (see `caged`).
const CGROUP_ATTEMPTS: u32 = 3;

/// The address-space promise for wal-push and wal-fetch at default settings.
const WAL_VIRTUAL_TARGET: u64 = 32 * MIB;

fn walrus(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(walrus_bin());
    hermetic(&mut cmd).args(args).envs(env.iter().cloned());
    cmd
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

/// Runs `command` three ways (measured, under RLIMIT_AS, in a memory cgroup), calling
/// `prepare` before and `check` after each run. Returns the measured peaks.
fn caged(
    label: &str,
    plan: &Plan,
    plan_name: &str,
    command: &dyn Fn() -> Command,
    prepare: &dyn Fn(),
    check: &dyn Fn(&Output, &str),
) -> MemoryPeaks {
    let (rss, virt) = (plan.rss(plan_name), plan.virt(plan_name));

    prepare();
    let (out, peaks) = memory_peaks(&mut command());
    check(&out, &format!("{label} (measured)"));
    loud(&format!(
        "[memory_cage] {label}: VmPeak {} KiB (plan {} KiB), VmHWM {} KiB (plan {} KiB)",
        peaks.vm_peak_kib,
        kib(virt),
        peaks.vm_hwm_kib,
        kib(rss)
    ));
    assert!(
        within_plan(peaks.vm_peak_kib, virt),
        "{label}: peak address space {} KiB above the plan's {} KiB",
        peaks.vm_peak_kib,
        kib(virt)
    );
    assert!(
        within_plan(peaks.vm_hwm_kib, rss),
        "{label}: peak RSS {} KiB above the plan's {} KiB",
        peaks.vm_hwm_kib,
        kib(rss)
    );

    prepare();
    let out = run_with_address_space_limit(&mut command(), virt);
    check(
        &out,
        &format!("{label} under RLIMIT_AS = {} KiB", kib(virt)),
    );

    // A memory cgroup charges more than the process's resident memory: also the page cache
    // of the files it writes and kernel memory (inodes, buffer heads). Page cache is
    // reclaimed at the limit, but ext4 allocates some of that kernel memory with GFP_NOFS,
    // and such a charge cannot always reclaim pages that are still under writeback or held
    // by the journal: the OOM killer then fires with megabytes of page cache and only
    // ~3 MiB of the process's own memory charged (seen for wal-prefetch, 10 files written at
    // once, in about 1 run of 30, and for backup-push to file storage). Such a kill is
    // retried, loudly, up to twice; a process that really outgrows the limit fails every run.
    for attempt in 1..=CGROUP_ATTEMPTS {
        let cgroup = match MemoryCgroup::new(rss) {
            Ok(cgroup) => cgroup,
            Err(why) => {
                common::skip(&format!("the cgroup part of {label}"), &why.to_string());
                break;
            }
        };
        prepare();
        let out = run_with_timeout(&mut cgroup.command(&command()), common::COMMAND_TIMEOUT);
        let what = format!(
            "{label} in memory cgroup {} (limit {} KiB; failcnt {}, max usage {} KiB, OOM kills {}; {})",
            cgroup.dir().display(),
            kib(cgroup.limit()),
            cgroup.failcnt(),
            kib(cgroup.max_usage()),
            cgroup.oom_kills(),
            cgroup.charge_summary()
        );
        if attempt < CGROUP_ATTEMPTS && !out.status.success() && cgroup.oom_kills() > 0 {
            loud(&format!(
                "########## [memory_cage] {what}: OOM-killed (attempt {attempt} of {CGROUP_ATTEMPTS}); retrying (see the comment in memory_cage.rs) ##########"
            ));
            continue;
        }
        check(&out, &what);
        assert_eq!(cgroup.oom_kills(), 0, "{what}");
        loud(&format!("[memory_cage] {what}: ok"));
        break;
    }
    peaks
}

fn succeeded(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

/// A 16 MiB segment: first half compressible text, second half random; starts with a WAL
/// page magic so prefetch accepts it.
fn segment() -> Vec<u8> {
    let mut out = Vec::with_capacity(SEG);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while out.len() < SEG {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if out.len() >= SEG / 2 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(format!("row {:08} value {:04}\n", out.len(), x % 97).as_bytes());
        }
    }
    out.truncate(SEG);
    out
}

fn seg_name(n: u64) -> String {
    format!("00000001{:08X}{:08X}", n / 256, n % 256)
}

/// The wal commands at default settings against `env`'s storage.
fn wal_commands(env: &[(String, String)], storage: &str) {
    let plan = Plan::read(env);
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    let status = wal.join("archive_status");
    fs::create_dir_all(&status).unwrap();
    let mut content = segment();
    // 16 segments, so every background uploader has work and every prefetched segment is
    // one wal-fetch would restore (pages that say where they belong).
    for n in 1..=16 {
        common::stamp_wal_pages(&mut content, 1, n);
        fs::write(wal.join(seg_name(n)), &content).unwrap();
    }
    common::stamp_wal_pages(&mut content, 1, 1);
    let others: Vec<String> = (2..=16).map(seg_name).collect();
    let first = wal.join(seg_name(1));

    // wal-push leaves WAL-G's marker for each background upload here (PostgreSQL renames
    // `.ready` to `.done` only when it calls archive_command itself).
    let markers = wal.join("walg_data/walg_archive_status");
    let ready = || {
        let _ = fs::remove_dir_all(wal.join("walg_data"));
        for name in &others {
            fs::write(status.join(format!("{name}.ready")), b"").unwrap();
        }
    };
    let push = || walrus(&["wal-push", first.to_str().unwrap()], env);
    let all_archived = |out: &Output, what: &str| {
        succeeded(out, what);
        for name in &others {
            assert!(
                markers.join(name).exists(),
                "{what}: background upload of {name} did not happen\n{}",
                output_text(out)
            );
        }
    };
    let push_peaks = caged(
        &format!("wal-push ({storage})"),
        &plan,
        "wal-push",
        &push,
        &ready,
        &all_archived,
    );

    let restore = dir.path().join("restore");
    fs::create_dir_all(&restore).unwrap();
    let dest = restore.join("RECOVERYXLOG");
    let fetch = || {
        let mut cmd = walrus(&["wal-fetch", &seg_name(1), dest.to_str().unwrap()], env);
        // One process: prefetch (a detached second process with its own plan) is caged below.
        cmd.env("WALG_DOWNLOAD_CONCURRENCY", "1");
        cmd
    };
    let no_dest = || {
        let _ = fs::remove_file(&dest);
    };
    let restored = |out: &Output, what: &str| {
        succeeded(out, what);
        assert!(
            fs::read(&dest).unwrap() == content,
            "{what}: restored segment differs"
        );
    };
    let fetch_peaks = caged(
        &format!("wal-fetch ({storage})"),
        &plan,
        "wal-fetch",
        &fetch,
        &no_dest,
        &restored,
    );

    let prefetch_dir = restore.join(".wal-g");
    let prefetch = || walrus(&["wal-prefetch", &seg_name(1), dest.to_str().unwrap()], env);
    let clean = || {
        let _ = fs::remove_dir_all(&prefetch_dir);
    };
    let prefetched = |out: &Output, what: &str| {
        succeeded(out, what);
        for n in 2..=11 {
            let file = prefetch_dir.join("prefetch").join(seg_name(n));
            assert!(
                fs::metadata(&file).is_ok_and(|m| m.len() == SEG as u64),
                "{what}: {} was not prefetched\n{}",
                file.display(),
                output_text(out)
            );
        }
    };
    caged(
        &format!("wal-prefetch ({storage})"),
        &plan,
        "wal-prefetch",
        &prefetch,
        &clean,
        &prefetched,
    );

    for (command, peaks) in [("wal-push", push_peaks), ("wal-fetch", fetch_peaks)] {
        assert!(
            plan.virt(command) <= WAL_VIRTUAL_TARGET,
            "{command} ({storage}): planned address space {} KiB is over 32 MiB",
            kib(plan.virt(command))
        );
        assert!(
            peaks.vm_peak_kib * 1024 <= WAL_VIRTUAL_TARGET,
            "{command} ({storage}): peak address space {} KiB is over 32 MiB",
            peaks.vm_peak_kib
        );
    }
}

#[test]
fn wal_commands_within_plan_limits_s3() {
    let Some(_) = require_or_fail(Tool::S3s, "wal_commands_within_plan_limits_s3") else {
        return;
    };
    let s3 = S3Server::start();
    wal_commands(&s3.env("cage"), "s3");
}

#[test]
fn wal_commands_within_plan_limits_file() {
    let files = tempfile::tempdir().unwrap();
    let env = vec![(
        "WALG_FILE_PREFIX".to_string(),
        files.path().display().to_string(),
    )];
    wal_commands(&env, "file");
}

/// Encrypted, to files: OpenPGP (an RSA-3072 secret key, which also decrypts; its code
/// pages are a term of the plan) and libsodium. Same checks, the 32 MiB promise included.
#[test]
fn wal_commands_within_plan_limits_encrypted_file() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pgp");
    for (name, key, value) in [
        ("pgp", "WALG_PGP_KEY_PATH", format!("{keys}/rsa.asc")),
        (
            "libsodium",
            "WALG_LIBSODIUM_KEY",
            "0123456789abcdef0123456789abcdef".to_string(),
        ),
    ] {
        let files = tempfile::tempdir().unwrap();
        let env = vec![
            (
                "WALG_FILE_PREFIX".to_string(),
                files.path().display().to_string(),
            ),
            (key.to_string(), value),
        ];
        wal_commands(&env, &format!("file, {name}"));
    }
}

/// HTTPS is what AWS itself needs, and the plan's largest wal-push: TLS sessions and the CA
/// roots come on top.
#[test]
fn wal_commands_within_plan_limits_https() {
    let Some(_) = require_or_fail(Tool::S3s, "wal_commands_within_plan_limits_https") else {
        return;
    };
    let s3 = S3Server::start();
    let certs = tempfile::tempdir().unwrap();
    let Some(front) = common::TlsFront::start(certs.path(), s3.port) else {
        if common::tools_required() {
            panic!("socat or openssl is missing: run scripts/ensure-tools");
        }
        common::skip(
            "wal_commands_within_plan_limits_https",
            "socat or openssl unavailable",
        );
        return;
    };
    let mut env = s3.env("cage-tls");
    env.retain(|(k, _)| k != "AWS_ENDPOINT");
    env.push((
        "AWS_ENDPOINT".into(),
        format!("https://localhost:{}", front.port),
    ));
    env.push((
        "WALG_S3_CA_CERT_FILE".into(),
        certs.path().join("ca.pem").display().to_string(),
    ));
    wal_commands(&env, "https");
}

fn with_pg(env: &[(String, String)], port: u16) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend(
        [
            ("PGHOST", "127.0.0.1".to_string()),
            ("PGPORT", port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGDATABASE", "postgres".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// backup-push and backup-fetch of a small pgbench cluster against `env`'s storage.
fn backups(env: &[(String, String)], storage: &str) {
    let port = common::free_port();
    let pg_env = with_pg(env, port);
    let mut pg = PgCluster::init_with_env(
        port,
        "wal_level = replica\narchive_mode = on\narchive_command = '{walrus} wal-push %p'\nmax_wal_size = 256MB\n",
        &pg_env,
    );
    pg.start();
    pg.pgbench_init(5);
    let plan = Plan::read(env);

    let data = pg.data_dir().to_path_buf();
    let push = || walrus(&["backup-push", data.to_str().unwrap()], &pg_env);
    let pushed = |out: &Output, what: &str| {
        succeeded(out, what);
        assert!(
            output_text(out).contains("Wrote backup with name base_"),
            "{what}:\n{}",
            output_text(out)
        );
    };
    caged(
        &format!("backup-push ({storage})"),
        &plan,
        "backup-push",
        &push,
        &|| {},
        &pushed,
    );

    let restore = common::postgres_owned_tempdir("walrus-cage-");
    let dest: PathBuf = restore.path().join("data");
    let fetch = || walrus(&["backup-fetch", dest.to_str().unwrap(), "LATEST"], env);
    let empty = || {
        let _ = fs::remove_dir_all(&dest);
    };
    let fetched = |out: &Output, what: &str| {
        succeeded(out, what);
        let version = fs::read_to_string(dest.join("PG_VERSION")).unwrap_or_default();
        assert_eq!(
            version.trim(),
            "15",
            "{what}: no PG_VERSION in the restored directory"
        );
        assert!(
            Path::new(&dest.join("global/pg_control")).exists(),
            "{what}: no pg_control"
        );
    };
    caged(
        &format!("backup-fetch ({storage})"),
        &plan,
        "backup-fetch",
        &fetch,
        &empty,
        &fetched,
    );
    pg.stop();
}

#[test]
fn backups_within_plan_limits_s3() {
    let Some(_) = require_or_fail(Tool::Postgres, "backups_within_plan_limits_s3") else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, "backups_within_plan_limits_s3") else {
        return;
    };
    let s3 = S3Server::start();
    backups(&s3.env("cage"), "s3");
}

#[test]
fn backups_within_plan_limits_file() {
    let Some(_) = require_or_fail(Tool::Postgres, "backups_within_plan_limits_file") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-cage-archive-");
    let env = vec![(
        "WALG_FILE_PREFIX".to_string(),
        files.path().display().to_string(),
    )];
    backups(&env, "file");
}

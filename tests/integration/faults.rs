//! Faults between wal-rus and a signature-checking S3 server (s3s-fs behind
//! `common::fault_proxy`), and around it: every fault the proxy knows, once (the command
//! must recover and store or restore exactly the right bytes) and on every request (it
//! must fail clearly, within its timeouts and retries, with nothing under a final name and
//! nothing at the destination). Each matrix prints its table of outcomes and times.
//!
//! Also here: wal-push at every upload concurrency 1..3 × method × single/multipart upload
//! (it once deadlocked), a restore through the faulty proxy equal to its source, and
//! `kill -9` at random points of wal-push, backup-push and backup-fetch.

use crate::common;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::{S3Server, Tool, output_text, require_or_fail, run_walrus};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const SEG: usize = 16 << 20;

/// Settings that make a persistent fault fail in seconds: 2 s I/O timeout, 3 retries.
fn quick(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    for (k, v) in [
        ("WALRUS_IO_TIMEOUT", "2"),
        ("WALRUS_CONNECT_TIMEOUT", "2"),
        ("WALG_S3_MAX_RETRIES", "3"),
        ("WALG_DOWNLOAD_CONCURRENCY", "1"),
    ] {
        env.retain(|(ek, _)| ek != k);
        env.push((k.into(), v.into()));
    }
    env
}

fn with(env: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// A segment numbered `n` with valid page headers; `noise` makes it incompressible, so a
/// compressed upload of it is larger than a 5 MiB part.
fn segment(n: u64, noise: bool) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(SEG);
    while out.len() < SEG {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if noise {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(format!("tuple {:09} {:05}\n", out.len(), x % 1000).as_bytes());
        }
    }
    out.truncate(SEG);
    common::stamp_wal_pages(&mut out, 1, n);
    out
}

fn seg_name(n: u64) -> String {
    common::wal_segment_name(1, n)
}

/// One row of a matrix.
struct Row {
    command: String,
    fault: Fault,
    mode: &'static str,
    outcome: String,
    secs: f64,
}

fn print_table(title: &str, rows: &[Row]) {
    let mut t = format!(
        "\n{title}\n| command | fault | applied | outcome | seconds |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {:?} | {} | {} | {:.1} |\n",
            r.command, r.fault, r.mode, r.outcome, r.secs
        ));
    }
    common::loud(&t);
}

/// Runs wal-rus and times it.
fn timed(args: &[&str], env: &[(String, String)]) -> (Output, f64) {
    let start = Instant::now();
    let out = run_walrus(args, env);
    (out, start.elapsed().as_secs_f64())
}

/// The upper bound of a command's time under a persistent fault: every attempt waits for
/// its I/O timeout (2 s), times the retries, the whole-object attempts of a fetch, and
/// the back-off between them; generous for a loaded 2-core machine.
const FAULT_BUDGET_SECS: f64 = 90.0;

/// Files a failed wal-fetch must not leave: the destination and any temporary beside it.
fn assert_nothing_at(dest: &Path) {
    assert!(!dest.exists(), "{} must not exist", dest.display());
    let dir = dest.parent().unwrap();
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wal-rus-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn wal_commands_under_every_fault() {
    let Some(_) = require_or_fail(Tool::S3s, "wal_commands_under_every_fault") else {
        return;
    };
    let s3 = S3Server::start();
    let upstream = format!("127.0.0.1:{}", s3.port).parse().unwrap();
    let proxy = FaultProxy::start(upstream, FaultPlan::none());
    let direct = quick(s3.env("faults"));
    let faulty = proxy.env(&direct);
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let restore_dir = dir.path().join("restore");
    fs::create_dir_all(&restore_dir).unwrap();
    let mut rows = Vec::new();
    let mut n = 0u64;
    let mut next = |noise: bool| {
        n += 1;
        let name = seg_name(n);
        let data = segment(n, noise);
        fs::write(wal.join(&name), &data).unwrap();
        (name, data)
    };
    // Single PUT (lz4, compressible) and multipart (zstd of noise, 5 MiB parts, one
    // uploader: the case that once deadlocked).
    let single = with(&faulty, &[("WALG_COMPRESSION_METHOD", "lz4")]);
    let multi = with(
        &faulty,
        &[
            ("WALG_COMPRESSION_METHOD", "zstd"),
            ("WALG_S3_MAX_PART_SIZE", "5242880"),
            ("WALG_UPLOAD_CONCURRENCY", "1"),
        ],
    );
    let stored = |name: &str, ext: &str| {
        s3.list_keys("faults/wal_005/")
            .contains(&format!("faults/wal_005/{name}.{ext}"))
    };
    for fault in Fault::ALL {
        for (mode, limit) in [("once", Some(1)), ("twice", Some(2)), ("always", None)] {
            if mode == "twice" && fault == Fault::Stall {
                continue; // two stalls cost 2 × the I/O timeout and show nothing new
            }
            for (label, env, noise, ext) in [
                ("wal-push (PUT)", &single, false, "lz4"),
                ("wal-push (multipart)", &multi, true, "zst"),
            ] {
                let (name, data) = next(noise);
                proxy.set_plan(FaultPlan {
                    stall: Duration::from_secs(20),
                    ..FaultPlan::always(fault, limit)
                });
                let (out, secs) = timed(&["wal-push", wal.join(&name).to_str().unwrap()], env);
                let applied = proxy.take_record().count(fault) > 0;
                let outcome = if out.status.success() {
                    assert!(
                        stored(&name, ext),
                        "{label} {fault:?} {mode}: exit 0 but nothing stored"
                    );
                    // What is stored is exactly the segment: fetch it without faults.
                    let dest = restore_dir.join(format!("{name}-check"));
                    let back = run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &direct);
                    assert!(back.status.success(), "{}", output_text(&back));
                    assert!(
                        fs::read(&dest).unwrap() == data,
                        "{label} {fault:?}: stored bytes differ"
                    );
                    fs::remove_file(&dest).unwrap();
                    assert!(
                        mode != "always" || !applied,
                        "{label}: {fault:?} on every request, yet exit 0"
                    );
                    "stored, verified".to_string()
                } else {
                    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
                    assert!(
                        mode == "always",
                        "{label} {fault:?} {mode}: a fault that goes away must be retried:\n{}",
                        output_text(&out)
                    );
                    assert!(!stored(&name, ext), "{label}: failed, but {name} is stored");
                    "exit 1, nothing stored".to_string()
                };
                assert!(
                    secs < FAULT_BUDGET_SECS,
                    "{label} {fault:?} took {secs:.1} s"
                );
                rows.push(Row {
                    command: label.into(),
                    fault,
                    mode: if applied { mode } else { "not applicable" },
                    outcome,
                    secs,
                });
            }
            // wal-fetch of a segment stored without faults.
            let (name, data) = next(false);
            proxy.set_plan(FaultPlan::none());
            let put = run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &single);
            assert!(put.status.success(), "{}", output_text(&put));
            proxy.take_record();
            proxy.set_plan(FaultPlan {
                stall: Duration::from_secs(20),
                ..FaultPlan::always(fault, limit)
            });
            let dest = restore_dir.join(&name);
            let (out, secs) = timed(&["wal-fetch", &name, dest.to_str().unwrap()], &single);
            let applied = proxy.take_record().count(fault) > 0;
            let outcome = if out.status.success() {
                assert!(
                    fs::read(&dest).unwrap() == data,
                    "wal-fetch {fault:?} {mode}: restored bytes differ"
                );
                fs::remove_file(&dest).unwrap();
                "restored, equal".to_string()
            } else {
                assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
                assert!(
                    mode == "always",
                    "wal-fetch {fault:?} {mode}: a fault that goes away must be retried:\n{}",
                    output_text(&out)
                );
                assert_nothing_at(&dest);
                "exit 1, nothing written".to_string()
            };
            assert!(
                secs < FAULT_BUDGET_SECS,
                "wal-fetch {fault:?} took {secs:.1} s"
            );
            rows.push(Row {
                command: "wal-fetch".into(),
                fault,
                mode: if applied { mode } else { "not applicable" },
                outcome,
                secs,
            });
        }
    }
    print_table("WAL commands through the fault proxy", &rows);
}

/// wal-push at every upload concurrency × method × single or multipart upload: each run
/// must end, store the segment and restore it equal. (With one uploader, a multipart
/// upload by any method but lz4 used to wait for ever on its own arena.)
#[test]
fn wal_push_never_deadlocks() {
    let Some(_) = require_or_fail(Tool::S3s, "wal_push_never_deadlocks") else {
        return;
    };
    let s3 = S3Server::start();
    let base = quick(s3.env("deadlock"));
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let mut n = 0;
    for concurrency in ["1", "2", "3"] {
        for method in ["lz4", "zstd", "lzma", "brotli", "none"] {
            for (upload, part) in [("single", "20971520"), ("multipart", "5242880")] {
                n += 1;
                let name = seg_name(n);
                // Noise compresses to more than 5 MiB with any method.
                let data = segment(n, upload == "multipart");
                fs::write(wal.join(&name), &data).unwrap();
                let env = with(
                    &base,
                    &[
                        ("WALG_UPLOAD_CONCURRENCY", concurrency),
                        ("WALG_COMPRESSION_METHOD", method),
                        ("WALG_S3_MAX_PART_SIZE", part),
                    ],
                );
                let mut cmd = std::process::Command::new(common::walrus_bin());
                cmd.args(["wal-push", wal.join(&name).to_str().unwrap()]);
                common::hermetic(&mut cmd);
                for (k, v) in &env {
                    cmd.env(k, v);
                }
                // A deadlock waits forever; the bound only has to outlast the slowest honest
                // push: lzma of 16 MiB of noise on a busy 2-core machine takes minutes.
                let bound = if method == "lzma" { 400 } else { 120 };
                // Shown with a failure: which combination hung.
                println!("wal-push: concurrency {concurrency}, {method}, {upload}");
                let out = common::run_with_timeout(&mut cmd, Duration::from_secs(bound));
                assert!(
                    out.status.success(),
                    "concurrency {concurrency}, {method}, {upload}:\n{}",
                    output_text(&out)
                );
                let dest = dir.path().join(format!("back-{name}"));
                let back = run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env);
                assert!(back.status.success(), "{}", output_text(&back));
                assert!(
                    fs::read(&dest).unwrap() == data,
                    "{concurrency} {method} {upload}"
                );
                fs::remove_file(&dest).unwrap();
            }
        }
    }
}

/// `kill -9` at random points of wal-push, over many seeds: what is stored under the
/// final name is always the whole segment, and the retry that PostgreSQL would make
/// succeeds and leaves no temporary file behind.
#[test]
fn wal_push_killed_at_random_points() {
    let Some(_) = require_or_fail(Tool::S3s, "wal_push_killed_at_random_points") else {
        return;
    };
    let s3 = S3Server::start();
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let storages = [
        ("s3", quick(s3.env("kill"))),
        (
            "file",
            vec![(
                "WALG_FILE_PREFIX".to_string(),
                files.path().display().to_string(),
            )],
        ),
    ];
    let mut seed = 0x5EED_u64;
    let mut killed = 0;
    for round in 0..24u64 {
        let (storage, env) = &storages[(round % 2) as usize];
        let method = ["lz4", "zstd", "brotli"][(round % 3) as usize];
        let env = with(
            env,
            &[
                ("WALG_COMPRESSION_METHOD", method),
                ("WALG_S3_MAX_PART_SIZE", "5242880"),
            ],
        );
        let name = seg_name(100 + round);
        let data = segment(100 + round, round % 4 == 0);
        fs::write(wal.join(&name), &data).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 250);
        let mut cmd = std::process::Command::new(common::walrus_bin());
        cmd.args(["wal-push", wal.join(&name).to_str().unwrap()]);
        common::hermetic(&mut cmd);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is under the final name now must be the whole segment.
        let dest = dir.path().join(format!("after-kill-{name}"));
        let out = run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env);
        match out.status.code() {
            Some(0) => assert!(
                fs::read(&dest).unwrap() == data,
                "{storage}: partial object stored"
            ),
            Some(74) => assert!(!dest.exists()),
            _ => panic!("{storage}: {}", output_text(&out)),
        }
        let _ = fs::remove_file(&dest);
        // PostgreSQL's retry.
        let out = run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &env);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env);
        assert!(out.status.success(), "{}", output_text(&out));
        assert!(fs::read(&dest).unwrap() == data);
        fs::remove_file(&dest).unwrap();
    }
    assert!(
        killed >= 6,
        "only {killed} runs were killed mid-way: the delays are too long"
    );
    // File storage: no temporary file survives the retries.
    let mut temps = Vec::new();
    for e in walk(files.path()) {
        if e.to_string_lossy().contains(".tmp.") {
            temps.push(e);
        }
    }
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ------------------------------------------------------------------ base backups

use common::PgCluster;
use std::collections::BTreeMap;

const LONG: Duration = Duration::from_secs(600);

/// The settings a cluster's wrapper passes to wal-rus: storage, then how to reach it.
fn with_pg(env: &[(String, String)], port: u16) -> Vec<(String, String)> {
    with(
        env,
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port.to_string()),
            ("PGUSER", "postgres"),
            ("PGDATABASE", "postgres"),
        ],
    )
}

/// Every file below `dir`, by relative path, with an FNV-1a hash of its bytes (and of a
/// symlink's target): two restores of one backup must be equal file for file.
fn tree(dir: &Path) -> BTreeMap<String, u64> {
    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    fnv(fs::read_link(&p).unwrap().to_string_lossy().as_bytes()),
                );
            } else if ft.is_dir() {
                out.insert(format!("{rel}/"), 0);
                go(root, &p, out);
            } else {
                out.insert(rel, fnv(&fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(dir, dir, &mut out);
    out
}

fn sentinels(s3: &S3Server, prefix: &str) -> Vec<String> {
    s3.list_keys(&format!("{prefix}/basebackups_005/"))
        .into_iter()
        .filter(|k| k.ends_with("_backup_stop_sentinel.json"))
        .collect()
}

fn backup_name(out: &Output) -> String {
    let text = output_text(out);
    let at = text
        .find("Wrote backup with name ")
        .unwrap_or_else(|| panic!("no backup name in:\n{text}"));
    text[at + 23..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

/// Runs wal-rus as postgres with `env` (through a wrapper of its own, so the cluster's
/// archive_command keeps its settings).
fn as_postgres(pg: &PgCluster, env: &[(String, String)], args: &[&str]) -> (Output, f64) {
    let wrapper = pg.base_dir().join("faults-env.sh");
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in env {
        script.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
    }
    script.push_str(&format!(
        "exec '{}' \"$@\"\n",
        common::walrus_bin().display()
    ));
    fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(&wrapper).args(args);
    cmd.current_dir(pg.base_dir());
    common::hermetic(&mut cmd);
    let start = Instant::now();
    let out = common::run_with_timeout(&mut cmd, LONG);
    (out, start.elapsed().as_secs_f64())
}

#[test]
fn backup_commands_under_every_fault() {
    let Some(_) = require_or_fail(Tool::Postgres, "backup_commands_under_every_fault") else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, "backup_commands_under_every_fault") else {
        return;
    };
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        FaultPlan::none(),
    );
    let port = common::free_port();
    // Parts of 5 MiB, so a partition is a multipart upload.
    let direct = with_pg(
        &with(
            &quick(s3.env("bf")),
            &[("WALG_S3_MAX_PART_SIZE", "5242880")],
        ),
        port,
    );
    let faulty = proxy.env(&direct);
    let mut pg = PgCluster::init_with_env(port, "wal_level = replica\n", &direct);
    pg.start();
    pg.pgbench_init(2);
    let scratch = common::postgres_owned_tempdir("walrus-faults-");
    // The reference: a backup pushed and restored without faults.
    let (out, _) = as_postgres(
        &pg,
        &direct,
        &["backup-push", pg.data_dir().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let reference = backup_name(&out);
    let clean = scratch.path().join("clean");
    let (out, _) = as_postgres(
        &pg,
        &direct,
        &["backup-fetch", clean.to_str().unwrap(), &reference],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let expected = tree(&clean);
    let (list_clean, _) = as_postgres(&pg, &direct, &["backup-list", "--json"]);
    let mut rows = Vec::new();
    let mut case = 0;
    for fault in Fault::ALL {
        for (mode, limit) in [("once", Some(1)), ("always", None)] {
            case += 1;
            let plan = FaultPlan {
                stall: Duration::from_secs(20),
                seed: case,
                ..FaultPlan::always(fault, limit)
            };
            // backup-push.
            let before = sentinels(&s3, "bf");
            proxy.set_plan(plan.clone());
            let (out, secs) = as_postgres(
                &pg,
                &faulty,
                &["backup-push", pg.data_dir().to_str().unwrap()],
            );
            let applied = proxy.take_record().count(fault) > 0;
            let after = sentinels(&s3, "bf");
            let outcome = if out.status.success() {
                assert!(
                    mode != "always" || !applied,
                    "backup-push: {fault:?} always, yet exit 0"
                );
                assert_eq!(after.len(), before.len() + 1);
                // It restores (every partition decodes, every file is there).
                let d = scratch.path().join(format!("pushed-{case}"));
                let name = backup_name(&out);
                let (f, _) =
                    as_postgres(&pg, &direct, &["backup-fetch", d.to_str().unwrap(), &name]);
                assert!(f.status.success(), "{}", output_text(&f));
                fs::remove_dir_all(&d).unwrap();
                "stored, restores".to_string()
            } else {
                assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
                assert!(
                    mode == "always",
                    "backup-push {fault:?} once must recover:\n{}",
                    output_text(&out)
                );
                assert_eq!(after, before, "a failed backup-push left a sentinel");
                "exit 1, no sentinel".to_string()
            };
            assert!(
                secs < 2.0 * FAULT_BUDGET_SECS,
                "backup-push {fault:?} took {secs:.1} s"
            );
            rows.push(Row {
                command: "backup-push".into(),
                fault,
                mode: if applied { mode } else { "not applicable" },
                outcome,
                secs,
            });
            // backup-fetch of the reference backup.
            let d = scratch.path().join(format!("fetched-{case}"));
            proxy.set_plan(plan.clone());
            let (out, secs) = as_postgres(
                &pg,
                &faulty,
                &["backup-fetch", d.to_str().unwrap(), &reference],
            );
            let applied = proxy.take_record().count(fault) > 0;
            let outcome = if out.status.success() {
                assert!(
                    tree(&d) == expected,
                    "backup-fetch {fault:?} {mode}: restore differs"
                );
                "restored, equal".to_string()
            } else {
                assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
                assert!(
                    mode == "always",
                    "backup-fetch {fault:?} once must recover:\n{}",
                    output_text(&out)
                );
                assert!(
                    !d.join("global/pg_control").exists(),
                    "a failed restore left a startable directory"
                );
                "exit 1, no pg_control".to_string()
            };
            let _ = fs::remove_dir_all(&d);
            assert!(
                secs < 2.0 * FAULT_BUDGET_SECS,
                "backup-fetch {fault:?} took {secs:.1} s"
            );
            rows.push(Row {
                command: "backup-fetch".into(),
                fault,
                mode: if applied { mode } else { "not applicable" },
                outcome,
                secs,
            });
            // backup-list.
            proxy.set_plan(plan);
            let (out, secs) = as_postgres(&pg, &faulty, &["backup-list", "--json"]);
            let applied = proxy.take_record().count(fault) > 0;
            let outcome = if out.status.success() {
                // The same backups as without faults (newer ones may have been added since
                // the clean listing: compare the reference's entry).
                assert!(String::from_utf8_lossy(&out.stdout).contains(&reference));
                assert!(String::from_utf8_lossy(&list_clean.stdout).contains(&reference));
                "listed".to_string()
            } else {
                assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
                assert!(
                    mode == "always",
                    "backup-list {fault:?} once must recover:\n{}",
                    output_text(&out)
                );
                "exit 1".to_string()
            };
            rows.push(Row {
                command: "backup-list".into(),
                fault,
                mode: if applied { mode } else { "not applicable" },
                outcome,
                secs,
            });
        }
    }
    pg.stop();
    print_table("Backup commands through the fault proxy", &rows);
}

/// A cluster archived through a faulty network (10 % errors, resets, a truncation, a
/// flipped byte, one stall), backed up through it under pgbench, and restored through it
/// by backup-fetch and recovery with wal-fetch: the restore equals the source.
#[test]
fn pitr_through_a_faulty_network() {
    let Some(_) = require_or_fail(Tool::Postgres, "pitr_through_a_faulty_network") else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, "pitr_through_a_faulty_network") else {
        return;
    };
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        FaultPlan {
            faults: vec![
                (Fault::Error503, 50, None),
                (Fault::Error500, 50, None),
                (Fault::ResetUpload, 40, None),
                (Fault::ResetDownload, 40, None),
                (Fault::Truncate, 20, None),
                (Fault::Flip, 20, None),
                (Fault::Ok200ErrorBody, 20, None),
                (Fault::Stall, 1000, Some(1)),
            ],
            seed: 2026,
            stall: Duration::from_secs(20),
        },
    );
    let port = common::free_port();
    let env = with_pg(&proxy.env(&quick(s3.env("pitr"))), port);
    let mut primary = PgCluster::init_with_env(
        port,
        "wal_level = replica\narchive_mode = on\narchive_command = '{walrus} wal-push %p'\narchive_timeout = 5\nmax_wal_size = 256MB\n",
        &env,
    );
    primary.start();
    primary.pgbench_init(5);
    let mut load = primary.client("pgbench");
    load.args(["-T", "10", "-c", "4", "postgres"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut load = load.spawn().expect("pgbench");
    std::thread::sleep(Duration::from_millis(500));
    let push = primary
        .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG);
    assert!(push.status.success(), "{}", output_text(&push));
    let _ = load.wait();
    primary.pgbench(&["-t", "300"]);
    primary.psql("create table after_backup as select g from generate_series(1, 5000) g");
    let current = primary.psql("select pg_walfile_name(pg_current_wal_lsn())");
    primary.psql("select pg_switch_wal()");
    common::wait_for(
        "archiving through the faulty proxy",
        Duration::from_secs(300),
        || {
            let last = primary.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
            (last >= current).then_some(())
        },
    );
    let source = primary.dumpall();
    primary.stop();

    let rport = common::free_port();
    let renv = with_pg(&env, rport);
    let (mut restored, out) = PgCluster::from_restore(
        rport,
        "archive_mode = off\nrestore_command = '{walrus} wal-fetch %f %p'\nrecovery_target_action = promote\n",
        &renv,
        |c| {
            c.run_walrus_as_postgres(
                &["backup-fetch", c.data_dir().to_str().unwrap(), "LATEST"],
                LONG,
            )
        },
    );
    assert!(out.status.success(), "{}", output_text(&out));
    restored.create_signal_file("recovery.signal");
    restored.start();
    common::wait_for("end of recovery", Duration::from_secs(300), || {
        (restored.try_psql("select pg_is_in_recovery()").ok()? == "f").then_some(())
    });
    assert!(
        restored.dumpall() == source,
        "the restore differs from the source"
    );
    let record = proxy.take_record();
    let mut summary = String::from("\nfaults injected during the PITR run:");
    for f in Fault::ALL {
        summary.push_str(&format!(" {f:?}={}", record.count(f)));
    }
    summary.push_str(&format!(" of {} requests", record.requests.len()));
    common::loud(&summary);
    for f in [
        Fault::Error503,
        Fault::Error500,
        Fault::ResetUpload,
        Fault::ResetDownload,
        Fault::Stall,
    ] {
        assert!(
            record.count(f) > 0,
            "no {f:?} was injected: the test shows nothing"
        );
    }
}

/// `kill -9` at random points of backup-push and of backup-fetch. A killed backup-push
/// leaves no sentinel (the backup does not exist for either tool) and the next one works;
/// a killed backup-fetch leaves a directory that cannot start (no `global/pg_control`)
/// unless it had already finished, and a new restore works.
#[test]
fn backups_killed_at_random_points() {
    let Some(_) = require_or_fail(Tool::Postgres, "backups_killed_at_random_points") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-kill-");
    let port = common::free_port();
    let env = with_pg(
        &[(
            "WALG_FILE_PREFIX".to_string(),
            files.path().display().to_string(),
        )],
        port,
    );
    let mut pg = PgCluster::init_with_env(port, "wal_level = replica\n", &env);
    pg.start();
    pg.pgbench_init(10);
    let count_sentinels = || {
        fs::read_dir(files.path().join("basebackups_005"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with("_backup_stop_sentinel.json")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let spawn = |args: &[&str]| {
        let mut cmd = pg.walrus_command(args);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    // runuser's child is wal-rus: kill the whole process group of runuser's session.
    let kill_tree = |child: &mut std::process::Child| {
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-P", &child.id().to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut seed = 0xBAD5_EED5u64;
    let mut rnd = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    // Kill points spread over a whole backup-push's time.
    let start = Instant::now();
    let out = pg.run_walrus_as_postgres(&["backup-push", pg.data_dir().to_str().unwrap()], LONG);
    assert!(out.status.success(), "{}", output_text(&out));
    let push_ms = start.elapsed().as_millis() as u64;
    let mut killed_push = 0;
    for _ in 0..6 {
        let before = count_sentinels();
        let mut child = spawn(&["backup-push", pg.data_dir().to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(rnd(push_ms)));
        let done = child.try_wait().unwrap().is_some();
        kill_tree(&mut child);
        let after = count_sentinels();
        if done {
            assert_eq!(after, before + 1);
        } else {
            killed_push += 1;
            assert!(after <= before + 1);
        }
        // Whatever is listed restores: a sentinel is only ever written last.
        let d = tempfile::Builder::new()
            .prefix("walrus-kill-check-")
            .tempdir()
            .unwrap();
        let target = d.path().join("data");
        common::chown_postgres(d.path());
        if count_sentinels() > 0 {
            let out = pg.run_walrus_as_postgres(
                &["backup-fetch", target.to_str().unwrap(), "LATEST"],
                LONG,
            );
            assert!(out.status.success(), "{}", output_text(&out));
        }
    }
    assert!(
        killed_push >= 2,
        "only {killed_push} backup-pushes were killed mid-way"
    );
    // PostgreSQL is not left in backup mode: a new backup works.
    let out = pg.run_walrus_as_postgres(&["backup-push", pg.data_dir().to_str().unwrap()], LONG);
    assert!(out.status.success(), "{}", output_text(&out));
    let (clean_dir, _) = (files.path().join("clean-restore"), ());
    let out = pg.run_walrus_as_postgres(
        &["backup-fetch", clean_dir.to_str().unwrap(), "LATEST"],
        LONG,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let expected = tree(&clean_dir);
    let fetch_ms = {
        let target = files.path().join("timed-restore");
        let start = Instant::now();
        let out =
            pg.run_walrus_as_postgres(&["backup-fetch", target.to_str().unwrap(), "LATEST"], LONG);
        assert!(out.status.success(), "{}", output_text(&out));
        fs::remove_dir_all(&target).unwrap();
        start.elapsed().as_millis() as u64
    };
    let mut killed_fetch = 0;
    for i in 0..6 {
        let target = files.path().join(format!("killed-restore-{i}"));
        let mut child = spawn(&["backup-fetch", target.to_str().unwrap(), "LATEST"]);
        std::thread::sleep(Duration::from_millis(rnd(fetch_ms)));
        let done = child.try_wait().unwrap().is_some();
        kill_tree(&mut child);
        if !done {
            killed_fetch += 1;
        }
        if target.join("global/pg_control").exists() {
            // pg_control comes last: everything else is in place.
            let got = tree(&target);
            for (path, hash) in &expected {
                assert_eq!(
                    got.get(path),
                    Some(hash),
                    "{path} differs after a restore that wrote pg_control"
                );
            }
        }
        fs::remove_dir_all(&target).ok();
    }
    assert!(
        killed_fetch >= 2,
        "only {killed_fetch} backup-fetches were killed mid-way"
    );
    pg.stop();
}

/// A `200 OK` that is not a stored object (an S3 `<Error>` document, a proxy's HTML page,
/// no ETag) is not a success: wal-push exits 1 and PostgreSQL keeps the segment.
#[test]
fn a_200_without_an_object_is_no_success() {
    let Some(_) = require_or_fail(Tool::S3s, "a_200_without_an_object_is_no_success") else {
        return;
    };
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        FaultPlan::none(),
    );
    let env = proxy.env(&quick(s3.env("false200")));
    let dir = tempfile::tempdir().unwrap();
    for (i, fault) in [Fault::Ok200ErrorBody, Fault::Ok200Html]
        .into_iter()
        .enumerate()
    {
        let name = seg_name(500 + i as u64);
        fs::write(dir.path().join(&name), segment(500 + i as u64, false)).unwrap();
        proxy.set_plan(FaultPlan::always(fault, None));
        let out = run_walrus(["wal-push", dir.path().join(&name).to_str().unwrap()], &env);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{fault:?}: {}",
            output_text(&out)
        );
        assert!(
            !output_text(&out).contains("archived"),
            "{fault:?}: claims the segment was archived:\n{}",
            output_text(&out)
        );
        assert!(s3.list_keys("false200/").is_empty());
    }
}

/// A refusal answered while the body is still being sent (S3 checks the signature on the
/// headers, answers 403 and closes; the client sees a broken pipe) fails at once with S3's
/// own code, not after 15 retries of a broken pipe.
#[test]
fn a_refusal_during_the_body_fails_at_once() {
    let Some(_) = require_or_fail(Tool::S3s, "a_refusal_during_the_body_fails_at_once") else {
        return;
    };
    let s3 = S3Server::start();
    let env = with(
        &s3.env("refused"),
        &[
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ("WALG_COMPRESSION_METHOD", "none"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let name = seg_name(900);
    fs::write(dir.path().join(&name), segment(900, true)).unwrap();
    let (out, secs) = timed(
        &["wal-push", dir.path().join(&name).to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(
        !text.contains("not-the-secret"),
        "the secret must never be printed"
    );
    assert!(secs < 5.0, "took {secs:.1} s");
}

//! Interop tests against WAL-G v3.0.8 itself (the `pg` binary built by
//! scripts/ensure-tools and passed in WALRUS_WALG_BIN).
//!
//! wal-rus promises to read and write exactly WAL-G's storage layout, so the
//! only convincing oracle is WAL-G: for every compression method and for both
//! file storage and S3 (s3s-fs),
//! * WAL-G pushes a 16 MiB segment and wal-rus fetches it byte-identical;
//! * wal-rus pushes a segment and WAL-G fetches it byte-identical;
//! * the same both ways for a timeline .history file;
//! * both tools agree on the exit code for a missing segment.
//!
//! brotli is only tested when this WAL-G build supports it (it needs the
//! `brotli` build tag): a probe push that answers "Unknown compression method"
//! means unsupported.
//!
//! When WAL-G is unavailable (e.g. the Go module proxy refuses to serve it)
//! every test prints a loud SKIPPED notice and passes: a peer's outage must not
//! turn CI red. With WAL-G present, any mismatch fails.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{
    COMMAND_TIMEOUT, S3Server, Tool, hermetic, output_text, require_or_fail, run_walrus,
    run_with_timeout,
};
use tempfile::TempDir;

const SEGMENT_SIZE: usize = 16 << 20;
const HISTORY_NAME: &str = "00000002.history";
const HISTORY_BODY: &str = "1\t0/3000028\tno recovery target specified\n";

/// File-name extension each method adds to stored objects (WAL-G's names).
fn extension(method: &str) -> &'static str {
    match method {
        "lz4" => ".lz4",
        "lzma" => ".lzma",
        "zstd" => ".zst",
        "brotli" => ".br",
        "none" => "",
        other => panic!("unknown compression method {other}"),
    }
}

// ------------------------------------------------------------------ storage

#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    S3,
}

/// One storage backend shared by the sub-cases of a test; each sub-case uses
/// its own prefix below it.
enum Storage {
    File(TempDir),
    S3(S3Server),
}

impl Storage {
    fn new(kind: Kind) -> Storage {
        match kind {
            Kind::File => Storage::File(
                tempfile::Builder::new()
                    .prefix("walrus-interop-")
                    .tempdir()
                    .unwrap(),
            ),
            Kind::S3 => Storage::S3(S3Server::start()),
        }
    }

    /// Settings for storage prefix `sub` (both tools read the same ones).
    fn env(&self, sub: &str) -> Vec<(String, String)> {
        match self {
            Storage::File(dir) => {
                let prefix = dir.path().join(sub);
                fs::create_dir_all(&prefix).unwrap();
                vec![("WALG_FILE_PREFIX".into(), prefix.display().to_string())]
            }
            Storage::S3(s3) => s3.env(sub),
        }
    }

    /// Where the object `key` under prefix `sub` lives on disk.
    fn object(&self, sub: &str, key: &str) -> PathBuf {
        match self {
            Storage::File(dir) => dir.path().join(sub).join(key),
            Storage::S3(s3) => s3.object_path(&format!("{sub}/{key}")),
        }
    }

    /// Everything stored under prefix `sub`, for failure messages.
    fn listing(&self, sub: &str) -> String {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push(format!("{} ({len} bytes)", e.path().display()));
                }
            }
        }
        let root = match self {
            Storage::File(dir) => dir.path().join(sub),
            Storage::S3(s3) => s3.object_path(sub),
        };
        let mut out = Vec::new();
        walk(&root, &mut out);
        format!("stored under {}:\n  {}", root.display(), out.join("\n  "))
    }
}

// --------------------------------------------------------------- workspace

/// A fake PostgreSQL layout for one sub-case: `pgdata/` (PGDATA; WAL-G keeps
/// its archive-status bookkeeping there), `pg_wal/` with `archive_status/`
/// (what wal-push reads and WAL-G scans for .ready files), `restore/` (fetch
/// destinations) and `home/` (so no ~/.walg.json of the developer is read).
struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("walrus-interop-ws-")
            .tempdir()
            .unwrap();
        for sub in ["pgdata", "pg_wal/archive_status", "restore", "home"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Workspace { dir }
    }

    fn wal_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join("pg_wal").join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    fn restore_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("restore").join(name)
    }

    /// Runs WAL-G with `args` and `env`. Download concurrency 1 also stops
    /// WAL-G from forking a background `wal-prefetch` that would outlive us.
    fn walg(&self, walg: &Path, args: &[&str], env: &[(String, String)]) -> Output {
        let mut cmd = Command::new(walg);
        hermetic(&mut cmd)
            .args(args)
            .current_dir(self.dir.path())
            .env("PGDATA", self.dir.path().join("pgdata"))
            .env("HOME", self.dir.path().join("home"))
            .env("WALG_DOWNLOAD_CONCURRENCY", "1")
            .env("WALG_UPLOAD_CONCURRENCY", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Runs wal-rus with the same surroundings as `walg`.
    fn walrus(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let mut env = env.to_vec();
        env.push((
            "PGDATA".into(),
            self.dir.path().join("pgdata").display().to_string(),
        ));
        run_walrus(args, &env)
    }
}

fn with_method(env: &[(String, String)], method: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("WALG_COMPRESSION_METHOD".into(), method.into()));
    env
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// ------------------------------------------------------------- test data

/// A plausible 16 MiB WAL segment: every 8 KiB page starts with a PostgreSQL
/// 15 page header (long header on the first page), the first half of the
/// payload is pseudo-random (incompressible) and the second half is
/// repetitive text (compressible), so compressors see both kinds of data.
fn fake_segment(segno: u64, seed: u64) -> Vec<u8> {
    const PAGE: usize = 8192;
    let mut buf = vec![0u8; SEGMENT_SIZE];
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let text = b"INSERT INTO pgbench_history VALUES (42, 7, 1234, -5000, now()); ";
    for (i, page) in buf.chunks_mut(PAGE).enumerate() {
        let long = i == 0;
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes()); // xlp_magic (PG 15)
        page[2..4].copy_from_slice(&(if long { 0x0002u16 } else { 0 }).to_le_bytes()); // xlp_info
        page[4..8].copy_from_slice(&1u32.to_le_bytes()); // xlp_tli
        let pageaddr = segno * SEGMENT_SIZE as u64 + (i * PAGE) as u64;
        page[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        let header = if long {
            page[24..32].copy_from_slice(&0x7300_1234_5678_9abcu64.to_le_bytes()); // xlp_sysid
            page[32..36].copy_from_slice(&(SEGMENT_SIZE as u32).to_le_bytes()); // xlp_seg_size
            page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes()); // xlp_xlog_blcksz
            40
        } else {
            24
        };
        let random_half = i * PAGE < SEGMENT_SIZE / 2;
        for (j, b) in page[header..].iter_mut().enumerate() {
            *b = if random_half {
                next() as u8
            } else {
                text[j % text.len()]
            };
        }
    }
    buf
}

/// Segment name for test case `n` on timeline 1.
fn segment_name(n: u64) -> String {
    common::wal_segment_name(1, n)
}

// -------------------------------------------------------------- methods

/// Compression methods to test: lz4, lzma, zstd, none, plus brotli when this
/// WAL-G build accepts it.
fn methods(walg: &Path) -> Vec<&'static str> {
    let mut m = vec!["lz4", "lzma", "zstd", "none"];
    if walg_supports_brotli(walg) {
        m.push("brotli");
    }
    m
}

fn walg_supports_brotli(walg: &Path) -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let ws = Workspace::new();
        let store = TempDir::new().unwrap();
        let seg = ws.wal_file(&segment_name(1), &fake_segment(1, 7));
        let env = vec![
            ("WALG_FILE_PREFIX".to_string(), store.path().display().to_string()),
            ("WALG_COMPRESSION_METHOD".to_string(), "brotli".to_string()),
        ];
        let out = ws.walg(walg, &["wal-push", path_str(&seg)], &env);
        let text = output_text(&out).to_lowercase();
        if out.status.success() {
            true
        } else {
            if !text.contains("unknown compression method") {
                common::loud(&format!("WARNING: WAL-G brotli probe failed for another reason; brotli not tested:\n{text}"));
            } else {
                common::loud("note: this WAL-G build has no brotli support; brotli interop not tested");
            }
            false
        }
    })
}

/// Runs `case(index, method)` for every method, all of them even when one
/// fails, then fails listing every method that did (each failure's own
/// message is printed by the panic hook as it happens).
fn for_each_method(walg: &Path, case: impl Fn(usize, &'static str)) {
    let failed: Vec<&str> = methods(walg)
        .into_iter()
        .enumerate()
        .filter(|&(i, method)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(i, method))).is_err()
        })
        .map(|(_, method)| method)
        .collect();
    assert!(
        failed.is_empty(),
        "failed for compression method(s) {failed:?} (details above)"
    );
}

/// Common setup: WAL-G (and s3s-fs for S3) present, else skip/fail per
/// `require_or_fail`.
fn setup(test: &str, kind: Kind) -> Option<(PathBuf, Storage)> {
    let walg = require_or_fail(Tool::Walg, test)?;
    if matches!(kind, Kind::S3) {
        require_or_fail(Tool::S3s, test)?;
    }
    Some((walg, Storage::new(kind)))
}

// ------------------------------------------------------------------ cases

/// WAL-G wal-push → wal-rus wal-fetch, every method.
fn walg_push_walrus_fetch(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(&walg, |i, method| {
        let sub = format!("walg-push/{method}");
        let env = with_method(&storage.env(&sub), method);
        let ws = Workspace::new();
        let name = segment_name(3 + i as u64);
        let original = fake_segment(3 + i as u64, 0x9E37_79B9 + i as u64);
        let seg = ws.wal_file(&name, &original);

        let out = ws.walg(&walg, &["wal-push", path_str(&seg)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] WAL-G wal-push failed\n{}",
            output_text(&out)
        );
        let object = storage.object(&sub, &format!("wal_005/{name}{}", extension(method)));
        assert!(
            object.is_file(),
            "[{kind:?}/{method}] WAL-G did not store {}\n{}",
            object.display(),
            storage.listing(&sub)
        );

        let dest = ws.restore_path("RECOVERYXLOG");
        let out = ws.walrus(&["wal-fetch", &name, path_str(&dest)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] wal-rus wal-fetch of WAL-G's {name} failed\n{}",
            output_text(&out)
        );
        assert_same(
            &original,
            &dest,
            &format!("[{kind:?}/{method}] wal-rus fetch of WAL-G push"),
        );
    });
}

/// wal-rus wal-push → WAL-G wal-fetch, every method.
fn walrus_push_walg_fetch(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(&walg, |i, method| {
        let sub = format!("walrus-push/{method}");
        let env = with_method(&storage.env(&sub), method);
        let ws = Workspace::new();
        let name = segment_name(0x10 + i as u64);
        let original = fake_segment(0x10 + i as u64, 0x5851_F42D + i as u64);
        let seg = ws.wal_file(&name, &original);

        let out = ws.walrus(&["wal-push", path_str(&seg)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] wal-rus wal-push failed\n{}",
            output_text(&out)
        );
        let object = storage.object(&sub, &format!("wal_005/{name}{}", extension(method)));
        assert!(
            object.is_file(),
            "[{kind:?}/{method}] wal-rus did not store {}\n{}",
            object.display(),
            storage.listing(&sub)
        );

        let dest = ws.restore_path("RECOVERYXLOG");
        let out = ws.walg(&walg, &["wal-fetch", &name, path_str(&dest)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] WAL-G wal-fetch of wal-rus's {name} failed\n{}",
            output_text(&out)
        );
        assert_same(
            &original,
            &dest,
            &format!("[{kind:?}/{method}] WAL-G fetch of wal-rus push"),
        );
    });
}

/// A timeline history file both ways, every method.
fn history_both_ways(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(&walg, |_, method| {
        for (pusher, fetcher) in [("WAL-G", "wal-rus"), ("wal-rus", "WAL-G")] {
            let sub = format!("history/{method}/{pusher}");
            let env = with_method(&storage.env(&sub), method);
            let ws = Workspace::new();
            let file = ws.wal_file(HISTORY_NAME, HISTORY_BODY.as_bytes());
            let push: &[&str] = &["wal-push", path_str(&file)];
            let out = if pusher == "WAL-G" {
                ws.walg(&walg, push, &env)
            } else {
                ws.walrus(push, &env)
            };
            assert!(
                out.status.success(),
                "[{kind:?}/{method}] {pusher} wal-push {HISTORY_NAME} failed\n{}",
                output_text(&out)
            );

            let dest = ws.restore_path(HISTORY_NAME);
            let fetch: &[&str] = &["wal-fetch", HISTORY_NAME, path_str(&dest)];
            let out = if fetcher == "WAL-G" {
                ws.walg(&walg, fetch, &env)
            } else {
                ws.walrus(fetch, &env)
            };
            assert!(
                out.status.success(),
                "[{kind:?}/{method}] {fetcher} wal-fetch of {pusher}'s {HISTORY_NAME} failed\n{}\n{}",
                output_text(&out),
                storage.listing(&sub)
            );
            assert_same(
                HISTORY_BODY.as_bytes(),
                &dest,
                &format!("[{kind:?}/{method}] {HISTORY_NAME} {pusher} → {fetcher}"),
            );
        }
    });
}

/// Both tools report a missing segment with the same exit code (PostgreSQL
/// only cares that it is non-zero; scripts may care about 74).
fn missing_segment_exit_code(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    let env = storage.env("missing");
    let ws = Workspace::new();
    let name = segment_name(0x42);
    let dest = ws.restore_path("RECOVERYXLOG");
    let walg_out = ws.walg(&walg, &["wal-fetch", &name, path_str(&dest)], &env);
    let walg_left_file = dest.exists();
    let _ = fs::remove_file(&dest);
    let walrus_out = ws.walrus(&["wal-fetch", &name, path_str(&dest)], &env);
    assert!(
        !walg_out.status.success(),
        "WAL-G found a segment that was never pushed?\n{}",
        output_text(&walg_out)
    );
    assert_eq!(
        walrus_out.status.code(),
        walg_out.status.code(),
        "[{kind:?}] exit codes for a missing segment differ\n--- wal-rus ---\n{}\n--- WAL-G ---\n{}",
        output_text(&walrus_out),
        output_text(&walg_out)
    );
    if !walg_left_file {
        assert!(
            !dest.exists(),
            "[{kind:?}] wal-rus left {} behind after a failed fetch",
            dest.display()
        );
    }
}

fn assert_same(expected: &[u8], actual: &Path, what: &str) {
    let got = fs::read(actual)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", actual.display()));
    if got != expected {
        let at = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: content differs (got {} bytes, expected {}; first difference at byte {at})",
            got.len(),
            expected.len()
        );
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn walg_push_walrus_fetch_file() {
    walg_push_walrus_fetch("walg_push_walrus_fetch_file", Kind::File);
}

#[test]
fn walg_push_walrus_fetch_s3() {
    walg_push_walrus_fetch("walg_push_walrus_fetch_s3", Kind::S3);
}

#[test]
fn walrus_push_walg_fetch_file() {
    walrus_push_walg_fetch("walrus_push_walg_fetch_file", Kind::File);
}

#[test]
fn walrus_push_walg_fetch_s3() {
    walrus_push_walg_fetch("walrus_push_walg_fetch_s3", Kind::S3);
}

#[test]
fn history_both_ways_file() {
    history_both_ways("history_both_ways_file", Kind::File);
}

#[test]
fn history_both_ways_s3() {
    history_both_ways("history_both_ways_s3", Kind::S3);
}

#[test]
fn missing_segment_exit_code_file() {
    missing_segment_exit_code("missing_segment_exit_code_file", Kind::File);
}

#[test]
fn missing_segment_exit_code_s3() {
    missing_segment_exit_code("missing_segment_exit_code_s3", Kind::S3);
}

//! wal-push, wal-fetch and wal-prefetch as PostgreSQL calls them, against a real S3 server
//! (s3s-fs, verifying signatures) and file storage: round trips for every compression,
//! memory against the plan, and bad input (wrong key, unreachable endpoint, missing bucket,
//! corrupt and truncated objects, unknown method) that must fail clearly and write nothing.

use crate::common;

use common::{
    Plan, S3Server, Tool, output_text, peak_rss_kib, require_or_fail, run_walrus, within_plan,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SEG: usize = 16 << 20;

/// A 16 MiB segment numbered `n` on timeline 1: first half real-looking (compressible),
/// second half incompressible, or all incompressible; every page has a valid header, as
/// wal-fetch checks.
pub fn segment(n: u64, incompressible: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEG);
    let mut x = n | 1;
    while out.len() < SEG {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if incompressible || out.len() >= SEG / 2 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(format!("row {:08} value {:04}\n", out.len(), x % 97).as_bytes());
        }
    }
    out.truncate(SEG);
    common::stamp_wal_pages(&mut out, 1, n);
    out
}

pub fn seg_name(n: u64) -> String {
    format!("00000001{:08X}{:08X}", n / 256, n % 256)
}

/// A fake `pg_wal` with `archive_status/`, as PostgreSQL lays it out.
pub fn pg_wal(dir: &Path) -> PathBuf {
    let wal = dir.join("pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    wal
}

pub fn env_with(base: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

fn s3_or_skip(test: &str) -> Option<S3Server> {
    require_or_fail(Tool::S3s, test).map(|_| S3Server::start())
}

#[test]
fn round_trip_every_method_s3_and_file() {
    let Some(s3) = s3_or_skip("round_trip_every_method_s3_and_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let files = tempfile::tempdir().unwrap();
    for (storage, base) in [
        ("s3", s3.env("rt")),
        (
            "file",
            vec![(
                "WALG_FILE_PREFIX".to_string(),
                files.path().display().to_string(),
            )],
        ),
    ] {
        for (i, (method, ext)) in [
            ("lz4", ".lz4"),
            ("zstd", ".zst"),
            ("lzma", ".lzma"),
            ("brotli", ".br"),
            ("none", ""),
        ]
        .iter()
        .enumerate()
        {
            let name = seg_name(i as u64 + 1);
            let data = segment(i as u64 + 1, false);
            fs::write(wal.join(&name), &data).unwrap();
            let env = env_with(
                &base,
                &[
                    ("WALG_COMPRESSION_METHOD", method),
                    ("WALG_DOWNLOAD_CONCURRENCY", "1"),
                ],
            );
            ok(
                &run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &env),
                "wal-push",
            );
            let key = format!("wal_005/{name}{ext}");
            let stored = match storage {
                "s3" => fs::read(s3.object_path(&format!("rt/{key}"))).unwrap(),
                _ => fs::read(files.path().join(&key)).unwrap(),
            };
            if *method == "lz4" {
                assert_eq!(&stored[..4], &[0x04, 0x22, 0x4D, 0x18], "LZ4 frame magic");
            }
            if *method == "none" {
                assert_eq!(stored, data);
            } else {
                assert!(
                    stored.len() < data.len(),
                    "{method} compressed the compressible half"
                );
            }
            // Fetch with a different configured method: the probe must still find it.
            let dest = dir.path().join(format!("restored-{storage}-{method}"));
            let fetch_env = env_with(
                &env,
                &[(
                    "WALG_COMPRESSION_METHOD",
                    if *method == "lz4" { "zstd" } else { "lz4" },
                )],
            );
            ok(
                &run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &fetch_env),
                "wal-fetch",
            );
            assert!(
                fs::read(&dest).unwrap() == data,
                "{storage}/{method}: restored bytes differ"
            );
        }
    }
}

#[test]
fn missing_segment_exits_74_and_writes_nothing() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let env = [("WALG_FILE_PREFIX", files.path().to_str().unwrap())];
    let out = run_walrus(
        [
            "wal-fetch",
            "000000010000000000000042",
            dest.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(74), "{}", output_text(&out));
    assert!(output_text(&out).contains("000000010000000000000042"));
    assert!(!dest.exists());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left in the destination folder"
    );
}

#[test]
fn history_files_are_protected_against_overwrite() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let h = wal.join("00000002.history");
    let env = [("WALG_FILE_PREFIX", files.path().to_str().unwrap())];
    fs::write(&h, "1\t0/3000000\tno recovery target specified\n").unwrap();
    ok(
        &run_walrus(["wal-push", h.to_str().unwrap()], &env),
        "first push",
    );
    ok(
        &run_walrus(["wal-push", h.to_str().unwrap()], &env),
        "identical push",
    );
    fs::write(&h, "1\t0/5000000\tanother cluster\n").unwrap();
    let out = run_walrus(["wal-push", h.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("contents differ"),
        "{}",
        output_text(&out)
    );
    // The archived copy is still the first one.
    let dest = dir.path().join("h");
    ok(
        &run_walrus(
            ["wal-fetch", "00000002.history", dest.to_str().unwrap()],
            &env,
        ),
        "fetch history",
    );
    assert_eq!(
        fs::read_to_string(dest).unwrap(),
        "1\t0/3000000\tno recovery target specified\n"
    );
    // WALG_PREVENT_WAL_OVERWRITE applies the same rule to segments.
    let seg = wal.join(seg_name(3));
    fs::write(&seg, segment(1, false)).unwrap();
    let protect = [
        ("WALG_FILE_PREFIX", files.path().to_str().unwrap()),
        ("WALG_PREVENT_WAL_OVERWRITE", "true"),
    ];
    ok(
        &run_walrus(["wal-push", seg.to_str().unwrap()], &protect),
        "segment push",
    );
    fs::write(&seg, segment(2, false)).unwrap();
    assert_eq!(
        run_walrus(["wal-push", seg.to_str().unwrap()], &protect)
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn read_ahead_uploads_ready_files_and_leaves_markers() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    for n in 1..=6u64 {
        fs::write(wal.join(seg_name(n)), segment(n, false)).unwrap();
        fs::write(
            wal.join("archive_status")
                .join(format!("{}.ready", seg_name(n))),
            "",
        )
        .unwrap();
    }
    let env = [
        ("WALG_FILE_PREFIX", files.path().to_str().unwrap()),
        ("WALG_COMPRESSION_METHOD", "lzma"),
    ];
    // lzma is slow enough that the background workers get work done meanwhile.
    ok(
        &run_walrus(["wal-push", wal.join(seg_name(1)).to_str().unwrap()], &env),
        "wal-push",
    );
    let markers = wal.join("walg_data/walg_archive_status");
    let marked: Vec<String> = fs::read_dir(&markers)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(!marked.is_empty(), "no background upload happened");
    for m in &marked {
        assert!(
            files.path().join(format!("wal_005/{m}.lzma")).is_file(),
            "{m} marked but not stored"
        );
        // PostgreSQL's later call returns at once and removes the marker.
        let out = run_walrus(["wal-push", wal.join(m).to_str().unwrap()], &env);
        ok(&out, "wal-push of a marked file");
        assert!(
            output_text(&out).contains("earlier background upload"),
            "{}",
            output_text(&out)
        );
        assert!(!markers.join(m).exists());
    }
}

#[test]
fn prefetch_fills_the_next_segments() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let base = [
        ("WALG_FILE_PREFIX", files.path().to_str().unwrap()),
        ("WALG_DOWNLOAD_CONCURRENCY", "1"),
    ];
    for n in 1..=4u64 {
        fs::write(wal.join(seg_name(n)), segment(n, false)).unwrap();
        ok(
            &run_walrus(["wal-push", wal.join(seg_name(n)).to_str().unwrap()], &base),
            "push",
        );
    }
    let restore = dir.path().join("restore");
    fs::create_dir_all(&restore).unwrap();
    let env = [
        ("WALG_FILE_PREFIX", files.path().to_str().unwrap()),
        ("WALG_DOWNLOAD_CONCURRENCY", "3"),
    ];
    ok(
        &run_walrus(
            [
                "wal-fetch",
                &seg_name(1),
                restore.join("RECOVERYXLOG").to_str().unwrap(),
            ],
            &env,
        ),
        "fetch 1",
    );
    let prefetched = restore.join(".wal-g/prefetch").join(seg_name(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !restore.join(".wal-g/prefetch").join(seg_name(4)).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(prefetched.exists(), "segment 2 was not prefetched");
    fs::remove_file(restore.join("RECOVERYXLOG")).unwrap();
    let out = run_walrus(
        [
            "wal-fetch",
            &seg_name(2),
            restore.join("RECOVERYXLOG").to_str().unwrap(),
        ],
        &env,
    );
    ok(&out, "fetch 2");
    assert!(
        output_text(&out).contains("from prefetch"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        fs::read(restore.join("RECOVERYXLOG")).unwrap(),
        segment(2, false)
    );
    // Nothing partial is ever left under prefetch/running/.
    let running: Vec<_> = fs::read_dir(restore.join(".wal-g/prefetch/running"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        running.iter().all(|n| !n.to_string_lossy().contains("tmp")),
        "{running:?}"
    );
}

/// Peak RSS of one wal-push and one wal-fetch of a 16 MiB segment to S3 at default settings,
/// against the 8 MiB promise and against memory-plan's figure for the same settings.
#[test]
fn wal_push_and_fetch_memory_within_plan() {
    let Some(s3) = s3_or_skip("wal_push_and_fetch_memory_within_plan") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let env = s3.env("mem");
    let plan = Plan::read(&env);
    for (n, incompressible) in [(1u64, true), (2, false)] {
        let name = seg_name(n);
        fs::write(wal.join(&name), segment(n, incompressible)).unwrap();
        let mut push = Command::new(common::walrus_bin());
        common::hermetic(&mut push)
            .args(["wal-push", wal.join(&name).to_str().unwrap()])
            .envs(env.iter().cloned());
        let (out, push_kib) = peak_rss_kib(&mut push);
        ok(&out, "wal-push");
        let dest = dir.path().join(format!("fetched-{n}"));
        let mut fetch = Command::new(common::walrus_bin());
        common::hermetic(&mut fetch)
            .args(["wal-fetch", &name, dest.to_str().unwrap()])
            .envs(env.iter().cloned())
            .env("WALG_DOWNLOAD_CONCURRENCY", "1");
        let (out, fetch_kib) = peak_rss_kib(&mut fetch);
        ok(&out, "wal-fetch");
        assert!(fs::read(&dest).unwrap() == segment(n, incompressible));
        eprintln!(
            "peak RSS ({}): wal-push {push_kib} KiB (plan {} KiB), wal-fetch {fetch_kib} KiB (plan {} KiB)",
            if incompressible {
                "incompressible"
            } else {
                "mixed"
            },
            plan.rss("wal-push") / 1024,
            plan.rss("wal-fetch") / 1024
        );
        assert!(
            push_kib < 8 * 1024,
            "wal-push peak RSS {push_kib} KiB is not under 8 MiB"
        );
        assert!(
            fetch_kib < 8 * 1024,
            "wal-fetch peak RSS {fetch_kib} KiB is not under 8 MiB"
        );
        assert!(
            within_plan(push_kib, plan.rss("wal-push")),
            "wal-push {push_kib} KiB above its plan"
        );
        assert!(
            within_plan(fetch_kib, plan.rss("wal-fetch")),
            "wal-fetch {fetch_kib} KiB above its plan"
        );
    }
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let Some(s3) = s3_or_skip("bad_input_fails_clearly_and_writes_nothing") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let name = seg_name(9);
    fs::write(wal.join(&name), segment(9, false)).unwrap();
    let good = env_with(&s3.env("bad"), &[("WALG_DOWNLOAD_CONCURRENCY", "1")]);
    ok(
        &run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &good),
        "setup push",
    );
    let dest = dir.path().join("RECOVERYXLOG");
    let fetch =
        |env: &[(String, String)]| run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], env);
    let expect_fail = |out: std::process::Output, words: &[&str], what: &str| {
        let text = output_text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: expected exit 1:\n{text}"
        );
        for w in words {
            assert!(text.contains(w), "{what}: message lacks '{w}':\n{text}");
        }
        assert!(!dest.exists(), "{what}: destination was written");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "pg_wal")
            .collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
    };
    let secret = s3.secret_key.clone();

    // A wrong secret: S3's own code, the secret never printed.
    let wrong = env_with(&good, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let out = fetch(&wrong);
    assert!(!output_text(&out).contains("not-the-secret") && !output_text(&out).contains(&secret));
    expect_fail(out, &["SignatureDoesNotMatch"], "wrong secret");
    let out = run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &wrong);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    // An endpoint nobody listens on: fails within the retry budget, no hang.
    let port = common::free_port();
    let unreachable = env_with(
        &good,
        &[
            ("AWS_ENDPOINT", &format!("http://127.0.0.1:{port}")),
            ("WALG_S3_MAX_RETRIES", "2"),
        ],
    );
    let start = Instant::now();
    expect_fail(
        fetch(&unreachable),
        &["127.0.0.1", "onnect"],
        "unreachable endpoint",
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );

    // A bucket that does not exist.
    let nobucket = env_with(&good, &[("WALG_S3_PREFIX", "s3://no-such-bucket/x")]);
    expect_fail(fetch(&nobucket), &["NoSuchBucket"], "missing bucket");

    // A corrupt object: bytes flipped in the middle of the LZ4 frame.
    let object = s3.object_path(&format!("bad/wal_005/{name}.lz4"));
    let original = fs::read(&object).unwrap();
    let mut corrupt = original.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5A;
    }
    fs::write(&object, &corrupt).unwrap();
    expect_fail(fetch(&good), &[&name], "corrupt object");

    // A truncated object.
    fs::write(&object, &original[..original.len() * 2 / 3]).unwrap();
    expect_fail(fetch(&good), &[&name], "truncated object");

    // A stored object that decodes to the wrong length for a segment.
    let short = s3.object_path(&format!("bad/wal_005/{}", seg_name(10)));
    fs::write(&short, b"only a few bytes").unwrap();
    let out = run_walrus(["wal-fetch", &seg_name(10), dest.to_str().unwrap()], &good);
    expect_fail(out, &["16777216"], "short segment");
    fs::write(&object, &original).unwrap();

    // An unknown compression method: refused before anything is uploaded.
    let name2 = seg_name(11);
    fs::write(wal.join(&name2), segment(11, false)).unwrap();
    let out = run_walrus(
        ["wal-push", wal.join(&name2).to_str().unwrap()],
        &env_with(&good, &[("WALG_COMPRESSION_METHOD", "snappy")]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("WALG_COMPRESSION_METHOD"),
        "{}",
        output_text(&out)
    );
    assert!(s3.list_keys(&format!("bad/wal_005/{name2}")).is_empty());

    // A missing local file.
    let out = run_walrus(
        [
            "wal-push",
            wal.join("000000010000000000000099").to_str().unwrap(),
        ],
        &good,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(output_text(&out).contains("000000010000000000000099"));

    // Still fine afterwards with the right settings.
    ok(&fetch(&good), "fetch after repairs");
}

/// Invoked through a link named `wal-g`, the binary behaves the same; every command has help.
#[test]
fn drop_in_as_wal_g_and_help_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("wal-g");
    std::os::unix::fs::symlink(common::walrus_bin(), &link).unwrap();
    let files = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let name = seg_name(5);
    fs::write(wal.join(&name), segment(5, false)).unwrap();
    let mut cmd = Command::new(&link);
    common::hermetic(&mut cmd)
        .args(["wal-push", wal.join(&name).to_str().unwrap()])
        .env("WALG_FILE_PREFIX", files.path());
    let out = common::run_with_timeout(&mut cmd, Duration::from_secs(60));
    ok(&out, "wal-g wal-push");
    assert!(files.path().join(format!("wal_005/{name}.lz4")).is_file());

    let help = run_walrus(["--help"], &[("X", "Y")]);
    let text = output_text(&help);
    for command in ["wal-push", "wal-fetch", "wal-prefetch", "memory-plan"] {
        assert!(text.contains(command), "--help lacks {command}:\n{text}");
        let sub = run_walrus([command, "--help"], &[("X", "Y")]);
        assert!(
            sub.status.success(),
            "{command} --help: {}",
            output_text(&sub)
        );
        assert!(output_text(&sub).contains("Usage"), "{}", output_text(&sub));
    }
}

/// A JSON config file is honoured, and the environment wins over it.
#[test]
fn config_file_and_environment_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = tempfile::tempdir().unwrap();
    let from_env = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("walg.json");
    fs::write(
        &cfg,
        format!(
            r#"{{"WALG_FILE_PREFIX": "{}", "WALG_COMPRESSION_METHOD": "zstd"}}"#,
            from_file.path().display()
        ),
    )
    .unwrap();
    let wal = pg_wal(dir.path());
    let name = seg_name(6);
    fs::write(wal.join(&name), segment(6, false)).unwrap();
    let out = run_walrus(
        [
            "--config",
            cfg.to_str().unwrap(),
            "wal-push",
            wal.join(&name).to_str().unwrap(),
        ],
        &[("X", "Y")],
    );
    ok(&out, "push with config file");
    assert!(
        from_file
            .path()
            .join(format!("wal_005/{name}.zst"))
            .is_file()
    );
    let out = run_walrus(
        [
            "--config",
            cfg.to_str().unwrap(),
            "wal-push",
            wal.join(&name).to_str().unwrap(),
        ],
        &[("WALG_FILE_PREFIX", from_env.path().to_str().unwrap())],
    );
    ok(&out, "push with env override");
    assert!(
        from_env
            .path()
            .join(format!("wal_005/{name}.zst"))
            .is_file()
    );
    // A malformed value in the file names the setting.
    fs::write(
        &cfg,
        format!(
            r#"{{"WALG_FILE_PREFIX": "{}", "WALG_UPLOAD_CONCURRENCY": "lots"}}"#,
            from_file.path().display()
        ),
    )
    .unwrap();
    let out = run_walrus(
        [
            "--config",
            cfg.to_str().unwrap(),
            "wal-push",
            wal.join(&name).to_str().unwrap(),
        ],
        &[("X", "Y")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("WALG_UPLOAD_CONCURRENCY"),
        "{}",
        output_text(&out)
    );
}

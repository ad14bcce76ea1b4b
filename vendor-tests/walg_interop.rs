//! Interop tests against WAL-G v3.0.8 itself (the `pg` binary built by
//! scripts/ensure-tools and passed in WALRUS_WALG_BIN).
//!
//! wal-rus promises to read and write exactly WAL-G's storage layout, so the
//! only convincing oracle is WAL-G: for every compression method (lz4, lzma,
//! zstd, brotli, none) and for both file storage and S3 (s3s-fs),
//! * WAL-G pushes a 16 MiB segment and wal-rus fetches it byte-identical;
//! * wal-rus pushes a segment and WAL-G fetches it byte-identical;
//! * the same both ways for a timeline .history file;
//! * both tools agree on the exit code for a missing segment;
//! * encrypted segments both ways, libsodium (every key transform) and OpenPGP (segments and
//!   .history files; an RSA key file, a passphrase-protected Curve25519 key file and the same
//!   key in WALG_PGP_KEY), and wal-rus's refusals without the key, with another key, with a
//!   public key only or a wrong passphrase: exit 1, a message that names the setting, and
//!   nothing written.
//!
//! brotli needs a WAL-G built with the `brotli` tag (a probe push that answers
//! "Unknown compression method" means unsupported): without it the brotli lane
//! fails under CI/WALRUS_REQUIRE_TOOLS and is skipped (a `SKIP:` line) otherwise.
//!
//! When WAL-G is unavailable (e.g. the Go module proxy refuses to serve it)
//! every test prints a `SKIP:` line and passes: a peer's outage must not turn
//! CI red (but a WAL-G that scripts/ensure-tools built and that does not run
//! fails, see `common::require_or_fail`). With WAL-G present, any mismatch fails.

use crate::{common, support};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{COMMAND_TIMEOUT, Tool, hermetic, output_text, require_or_fail, run_with_timeout};
use support::{
    Kind, LIBSODIUM_KEY, LZ4_MAGIC, Storage, WalrusEnv, Workspace, assert_same_file, fake_segment,
    names_encryption, path_str, segment_name, with_method,
};
use tempfile::TempDir;

const HISTORY_NAME: &str = "00000002.history";
const HISTORY_BODY: &str = "1\t0/3000028\tno recovery target specified\n";

/// File-name extension each method adds to stored objects. `none` differs between the
/// tools: WAL-G v3.0.8 appends a bare dot (`<name>.`, walg-compat §1.3), wal-rus writes
/// master's dot-less `<name>`.
fn extension(method: &str, pusher: &str) -> &'static str {
    match method {
        "lz4" => ".lz4",
        "lzma" => ".lzma",
        "zstd" => ".zst",
        "brotli" => ".br",
        "none" if pusher == "WAL-G" => ".",
        "none" => "",
        other => panic!("unknown compression method {other}"),
    }
}

// --------------------------------------------------------------- workspace

/// A fresh workspace (see `support::Workspace`); wal-rus runs get only PGDATA
/// from it.
fn workspace() -> Workspace {
    Workspace::new("walrus-interop-ws-", WalrusEnv::Pgdata)
}

impl Workspace {
    /// Runs WAL-G with `args` and `env`, with PGDATA and HOME in the workspace.
    /// Download concurrency 1 also stops WAL-G from forking a background
    /// `wal-prefetch` that would outlive us.
    fn walg(&self, walg: &Path, args: &[&str], env: &[(String, String)]) -> Output {
        let mut cmd = Command::new(walg);
        hermetic(&mut cmd)
            .args(args)
            .current_dir(self.path())
            .env("PGDATA", self.path().join("pgdata"))
            .env("HOME", self.path().join("home"))
            .env("WALG_DOWNLOAD_CONCURRENCY", "1")
            .env("WALG_UPLOAD_CONCURRENCY", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
    }
}

// -------------------------------------------------------------- methods

/// Compression methods to test: lz4, lzma, zstd, none and brotli. brotli needs WAL-G built
/// with the `brotli` tag (scripts/ensure-tools builds it so): a WAL-G that refuses it fails
/// the test under CI/WALRUS_REQUIRE_TOOLS and otherwise leaves brotli out with a `SKIP:` line.
fn methods(walg: &Path, test: &str) -> Vec<&'static str> {
    let mut m = vec!["lz4", "lzma", "zstd", "none"];
    match walg_supports_brotli(walg) {
        Ok(()) => m.push("brotli"),
        Err(why) if common::tools_required() => panic!(
            "{test}: WAL-G cannot write brotli, so the brotli lane cannot run \
             (CI/WALRUS_REQUIRE_TOOLS forbid skipping it): {why}"
        ),
        Err(why) => common::skip(&format!("{test} [brotli]"), &why),
    }
    m
}

/// Whether this WAL-G build writes brotli (a probe push); `Err` says why not.
fn walg_supports_brotli(walg: &Path) -> Result<(), String> {
    static SUPPORTED: OnceLock<Result<(), String>> = OnceLock::new();
    SUPPORTED
        .get_or_init(|| {
            let ws = workspace();
            let store = TempDir::new().unwrap();
            let seg = ws.wal_file(&segment_name(1), &fake_segment(1, 7));
            let env = vec![
                (
                    "WALG_FILE_PREFIX".to_string(),
                    store.path().display().to_string(),
                ),
                ("WALG_COMPRESSION_METHOD".to_string(), "brotli".to_string()),
            ];
            let out = ws.walg(walg, &["wal-push", path_str(&seg)], &env);
            if out.status.success() {
                return Ok(());
            }
            let text = output_text(&out);
            if text.to_lowercase().contains("unknown compression method") {
                Err("this WAL-G build has no brotli support (built without the brotli tag)".into())
            } else {
                Err(format!("WAL-G's brotli probe push failed: {text}"))
            }
        })
        .clone()
}

/// Runs `case(index, method)` for every method, all of them even when one
/// fails, then fails listing every method that did (each failure's own
/// message is printed by the panic hook as it happens).
fn for_each_method(walg: &Path, test: &str, case: impl Fn(usize, &'static str)) {
    let failed: Vec<&str> = methods(walg, test)
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
    Some((walg, Storage::new(kind, "walrus-interop-")))
}

// ------------------------------------------------------------------ cases

/// WAL-G wal-push → wal-rus wal-fetch, every method.
fn walg_push_walrus_fetch(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(&walg, test, |i, method| {
        let sub = format!("walg-push/{method}");
        let env = with_method(&storage.env(&sub), method);
        let ws = workspace();
        let name = segment_name(3 + i as u64);
        let original = fake_segment(3 + i as u64, 0x9E37_79B9 + i as u64);
        let seg = ws.wal_file(&name, &original);

        let out = ws.walg(&walg, &["wal-push", path_str(&seg)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] WAL-G wal-push failed\n{}",
            output_text(&out)
        );
        let object = storage.object(
            &sub,
            &format!("wal_005/{name}{}", extension(method, "WAL-G")),
        );
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
        assert_same_file(
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
    for_each_method(&walg, test, |i, method| {
        let sub = format!("walrus-push/{method}");
        let env = with_method(&storage.env(&sub), method);
        let ws = workspace();
        let name = segment_name(0x10 + i as u64);
        let original = fake_segment(0x10 + i as u64, 0x5851_F42D + i as u64);
        let what = format!("[{kind:?}/{method}] wal-rus wal-push");
        ws.walrus_push(&name, &original, &env, &what);
        let object = storage.object(
            &sub,
            &format!("wal_005/{name}{}", extension(method, "wal-rus")),
        );
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
        assert_same_file(
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
    for_each_method(&walg, test, |_, method| {
        for (pusher, fetcher) in [("WAL-G", "wal-rus"), ("wal-rus", "WAL-G")] {
            let sub = format!("history/{method}/{pusher}");
            let env = with_method(&storage.env(&sub), method);
            let ws = workspace();
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
            assert_same_file(
                HISTORY_BODY.as_bytes(),
                &dest,
                &format!("[{kind:?}/{method}] {HISTORY_NAME} {pusher} → {fetcher}"),
            );
        }
    });
}

/// A way wal-rus must fail to fetch: what it is, the settings, what the message must say.
type Refusal<'a> = (&'a str, Vec<(String, String)>, &'a str);

/// Runs `args` with `tool` ("WAL-G" or wal-rus) in `ws`.
fn by(ws: &Workspace, walg: &Path, tool: &str, args: &[&str], env: &[(String, String)]) -> Output {
    if tool == "WAL-G" {
        ws.walg(walg, args, env)
    } else {
        ws.walrus(args, env)
    }
}

/// Both tools report a missing segment with the same exit code (PostgreSQL
/// only cares that it is non-zero; scripts may care about 74).
fn missing_segment_exit_code(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    let env = storage.env("missing");
    let ws = workspace();
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

/// libsodium encryption both ways, with each of WAL-G's key transforms (`none`, `hex`,
/// `base64`): a segment WAL-G pushed encrypted is fetched by wal-rus byte for byte, and one
/// wal-rus pushed is fetched by WAL-G. Without the key, or with another key, wal-rus fails
/// with exit 1, names the reason, and writes nothing where the segment was to go.
fn encrypted_wal_both_ways(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    let ws = workspace();
    let raw = LIBSODIUM_KEY.as_bytes();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let mut segno = 0x20;
    for (transform, key) in [
        ("none", LIBSODIUM_KEY.to_string()),
        ("hex", hex),
        ("base64", b64),
    ] {
        let sub = format!("encrypted-{transform}");
        let plain_env = storage.env(&sub);
        let mut key_env = plain_env.clone();
        key_env.push(("WALG_LIBSODIUM_KEY".into(), key.clone()));
        key_env.push(("WALG_LIBSODIUM_KEY_TRANSFORM".into(), transform.into()));
        for (writer, reader) in [("WAL-G", "wal-rus"), ("wal-rus", "WAL-G")] {
            segno += 1;
            let name = segment_name(segno);
            let original = fake_segment(segno, 0xC0FF_EE11 + segno);
            let seg = ws.wal_file(&name, &original);
            let out = by(&ws, &walg, writer, &["wal-push", path_str(&seg)], &key_env);
            assert!(
                out.status.success(),
                "[{kind:?}/{transform}] {writer} wal-push\n{}",
                output_text(&out)
            );
            let stored = fs::read(storage.object(&sub, &format!("wal_005/{name}.lz4"))).unwrap();
            assert!(
                stored.len() > 24 && stored[..4] != LZ4_MAGIC,
                "[{kind:?}/{transform}] {writer}'s object is not encrypted"
            );
            let dest = ws.restore_path(&format!("{transform}-{writer}"));
            let out = by(
                &ws,
                &walg,
                reader,
                &["wal-fetch", &name, path_str(&dest)],
                &key_env,
            );
            assert!(
                out.status.success(),
                "[{kind:?}/{transform}] {reader} wal-fetch of {writer}'s segment\n{}",
                output_text(&out)
            );
            assert_same_file(
                &original,
                &dest,
                &format!("[{kind:?}/{transform}] {writer} -> {reader}"),
            );
            // Without the key, and with another one: a clear failure, nothing written.
            let mut wrong_env = plain_env.clone();
            wrong_env.push((
                "WALG_LIBSODIUM_KEY".into(),
                "another-key-of-thirty-two-bytes!".into(),
            ));
            for (label, env) in [
                ("without a key", &plain_env),
                ("with another key", &wrong_env),
            ] {
                let pg_wal = ws
                    .path()
                    .join(format!("pg_wal-{transform}-{writer}-{}", label.len()));
                fs::create_dir_all(&pg_wal).unwrap();
                let dest = pg_wal.join("RECOVERYXLOG");
                let out = ws.walrus(&["wal-fetch", &name, path_str(&dest)], env);
                let text = output_text(&out);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "[{kind:?}/{transform}] {label}\n{text}"
                );
                assert!(
                    names_encryption(&text),
                    "[{kind:?}/{transform}] {label}: the reason is not named\n{text}"
                );
                let left = common::files_below(&pg_wal);
                assert!(
                    left.is_empty(),
                    "[{kind:?}/{transform}] {label}: left {left:?}"
                );
            }
        }
    }
}

/// OpenPGP both ways, as WAL-G configures it, in three lanes: (1) an RSA key file
/// (WALG_PGP_KEY_PATH), the writer holding only the public key; (2) a passphrase-protected
/// Curve25519 secret key file with WALG_PGP_KEY_PASSPHRASE, for both tools; (3) the same key
/// on one line in WALG_PGP_KEY (`\n` for newlines). In each, a segment and a timeline history
/// file WAL-G pushed are fetched by wal-rus byte for byte, and ones wal-rus pushed are fetched
/// by WAL-G. Then wal-rus fails with exit 1, names the setting to fix and writes nothing where
/// the file was to go: without a key, with another key, with the public key only, and (for
/// the protected key) without the passphrase or with a wrong one.
fn encrypted_wal_both_ways_pgp(test: &str, kind: Kind) {
    let Some((walg, storage)) = setup(test, kind) else {
        return;
    };
    let ws = workspace();
    let env_of = |base: &[(String, String)], pairs: &[(&str, String)]| {
        let mut env = base.to_vec();
        env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let path = |name: &str| support::pgp_key(name);
    let pass = || support::PGP_PASSPHRASE.to_string();
    let mut segno = 0x40;
    let mut timeline = 0x10;
    for lane in [
        "rsa-path",
        "x25519-path-passphrase",
        "x25519-key-passphrase",
    ] {
        let sub = format!("pgp-{lane}");
        let plain_env = storage.env(&sub);
        // The secret key as the lane gives it: (setting, value).
        let secret = match lane {
            "rsa-path" => ("WALG_PGP_KEY_PATH", path("rsa.asc")),
            "x25519-path-passphrase" => ("WALG_PGP_KEY_PATH", path("x25519-passphrase.asc")),
            _ => (
                "WALG_PGP_KEY",
                support::pgp_key_one_line("x25519-passphrase.asc"),
            ),
        };
        let (write_env, read_env, public_env, more_refusals) = if lane == "rsa-path" {
            (
                env_of(&plain_env, &[("WALG_PGP_KEY_PATH", path("rsa.pub.asc"))]),
                env_of(&plain_env, std::slice::from_ref(&secret)),
                env_of(&plain_env, &[("WALG_PGP_KEY_PATH", path("rsa.pub.asc"))]),
                vec![],
            )
        } else {
            let both = env_of(
                &plain_env,
                &[secret.clone(), ("WALG_PGP_KEY_PASSPHRASE", pass())],
            );
            (
                both.clone(),
                both,
                env_of(&plain_env, &[("WALG_PGP_KEY_PATH", path("x25519.pub.asc"))]),
                vec![
                    (
                        "without the passphrase",
                        env_of(&plain_env, std::slice::from_ref(&secret)),
                        "WALG_PGP_KEY_PASSPHRASE",
                    ),
                    (
                        "with a wrong passphrase",
                        env_of(
                            &plain_env,
                            &[
                                secret.clone(),
                                ("WALG_PGP_KEY_PASSPHRASE", "not it".to_string()),
                            ],
                        ),
                        "WALG_PGP_KEY_PASSPHRASE",
                    ),
                ],
            )
        };
        for (writer, reader) in [("WAL-G", "wal-rus"), ("wal-rus", "WAL-G")] {
            segno += 1;
            timeline += 1;
            let name = segment_name(segno);
            let history = format!("{timeline:08X}.history");
            let files = [
                (name.clone(), fake_segment(segno, 0x00DD_BA11 + segno)),
                (history, HISTORY_BODY.as_bytes().to_vec()),
            ];
            for (file, original) in &files {
                let what = format!("[{kind:?}/{lane}] {file}");
                let src = ws.wal_file(file, original);
                let out = by(
                    &ws,
                    &walg,
                    writer,
                    &["wal-push", path_str(&src)],
                    &write_env,
                );
                assert!(
                    out.status.success(),
                    "{what}: {writer} wal-push\n{}",
                    output_text(&out)
                );
                let stored =
                    fs::read(storage.object(&sub, &format!("wal_005/{file}.lz4"))).unwrap();
                assert!(
                    stored.len() > 100 && stored[0] == 0xC1,
                    "{what}: {writer}'s object does not start with a session key packet"
                );
                let dest = ws.restore_path(&format!("{lane}-{writer}-{file}"));
                let out = by(
                    &ws,
                    &walg,
                    reader,
                    &["wal-fetch", file, path_str(&dest)],
                    &read_env,
                );
                assert!(
                    out.status.success(),
                    "{what}: {reader} wal-fetch of {writer}'s file\n{}",
                    output_text(&out)
                );
                assert_same_file(original, &dest, &format!("{what}: {writer} -> {reader}"));
                let other = env_of(&plain_env, &[("WALG_PGP_KEY_PATH", path("other.asc"))]);
                let mut refusals: Vec<Refusal> = vec![
                    ("without a key", plain_env.clone(), "WALG_PGP_KEY"),
                    ("with another key", other, "WALG_PGP_KEY_PATH"),
                    (
                        "with the public key only",
                        public_env.clone(),
                        "WALG_PGP_KEY_PATH holds only public keys",
                    ),
                ];
                refusals.extend(more_refusals.iter().cloned());
                for (label, env, says) in &refusals {
                    let pg_wal = ws.path().join(format!(
                        "pg_wal-{lane}-{writer}-{file}-{}",
                        label.replace(' ', "-")
                    ));
                    fs::create_dir_all(&pg_wal).unwrap();
                    let dest = pg_wal.join("RECOVERYXLOG");
                    let out = ws.walrus(&["wal-fetch", file, path_str(&dest)], env);
                    let text = output_text(&out);
                    assert_eq!(out.status.code(), Some(1), "{what}: {label}\n{text}");
                    assert!(
                        names_encryption(&text) && text.contains(says),
                        "{what}: {label}: the reason ({says}) is not named\n{text}"
                    );
                    let left = common::files_below(&pg_wal);
                    assert!(left.is_empty(), "{what}: {label}: left {left:?}");
                }
            }
        }
    }
}

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

#[test]
fn encrypted_wal_both_ways_file() {
    encrypted_wal_both_ways("encrypted_wal_both_ways_file", Kind::File);
}

#[test]
fn encrypted_wal_both_ways_s3() {
    encrypted_wal_both_ways("encrypted_wal_both_ways_s3", Kind::S3);
}

#[test]
fn encrypted_wal_both_ways_pgp_file() {
    encrypted_wal_both_ways_pgp("encrypted_wal_both_ways_pgp_file", Kind::File);
}

#[test]
fn encrypted_wal_both_ways_pgp_s3() {
    encrypted_wal_both_ways_pgp("encrypted_wal_both_ways_pgp_s3", Kind::S3);
}

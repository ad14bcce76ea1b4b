//! Helpers shared by the WAL-G vendor tests (walg_codecs, walg_interop, walg_formats,
//! walg_backup_interop).
//!
//! These tests used to carry their own copies of the same storage and workspace helpers, fake
//! WAL segments and the lookup of the walg-codecs oracle; this module keeps one copy, so a fix
//! to any of them reaches every test. It sits beside the vendor tests rather than in
//! `tests/integration/common` because only they need it; `tests/integration/main.rs` compiles
//! it as `crate::support`, and it reaches the harness through `crate::common`. Not every test
//! uses every helper.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::common::{self, COMMAND_TIMEOUT, S3Server, output_text, run_walrus, run_with_timeout};

/// Size of a WAL segment (PostgreSQL's default, 16 MiB).
pub const SEGMENT_SIZE: usize = 16 << 20;

// ------------------------------------------------------------------ oracle

/// Path of the walg-codecs oracle (vendor-tests/walg-codecs): WALRUS_WALG_CODECS_BIN, else the
/// tool cache's bin/walg-codecs, accepted when `smoke` passes on it (`Err` says why not).
/// Missing or failing: panics under CI/WALRUS_REQUIRE_TOOLS (calling it the WAL-G `role`
/// oracle, e.g. "codec"), otherwise prints a `SKIP:` line for `test` and returns `None`.
pub fn oracle_bin(
    test: &str,
    role: &str,
    smoke: impl FnOnce(&Path) -> Result<(), String>,
) -> Option<PathBuf> {
    let explicit = std::env::var("WALRUS_WALG_CODECS_BIN")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let candidate = match explicit {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var("WALRUS_TOOLS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var("HOME")
                    .ok()
                    .map(|h| Path::new(&h).join(".cache/wal-rus-tools"))
            })
            .map(|dir| dir.join("bin/walg-codecs")),
    };
    let why = match &candidate {
        Some(p) if p.is_file() => match smoke(p) {
            Ok(()) => return candidate,
            Err(why) => why,
        },
        Some(p) => format!("{} does not exist", p.display()),
        None => "WALRUS_WALG_CODECS_BIN is not set".to_string(),
    };
    if common::tools_required() {
        panic!(
            "{test}: the WAL-G {role} oracle (walg-codecs) is missing: {why}. \
             Run scripts/ensure-tools and source its env file (CI/WALRUS_REQUIRE_TOOLS forbid skipping)."
        );
    }
    common::skip(test, &format!("walg-codecs unavailable: {why}"));
    None
}

/// Runs `walg-codecs ARGS < input` and returns its stdout, or its output when it fails.
pub fn run_oracle(bin: &Path, args: &[&str], input: &Path) -> Result<Vec<u8>, Output> {
    let dir = TempDir::new().unwrap();
    let out_path = dir.path().join("out");
    // run_with_timeout closes stdin, so redirect inside a shell that execs.
    let out = run_with_timeout(
        Command::new("sh")
            .arg("-c")
            .arg(r#"bin=$1; in=$2; out=$3; shift 3; exec "$bin" "$@" <"$in" >"$out""#)
            .arg("sh")
            .arg(bin)
            .arg(input)
            .arg(&out_path)
            .args(args),
        COMMAND_TIMEOUT,
    );
    if out.status.success() {
        Ok(fs::read(&out_path).unwrap())
    } else {
        Err(out)
    }
}

// ----------------------------------------------------------------- storage

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    S3,
}

/// One storage backend shared by the sub-cases of a test; each sub-case uses its own prefix
/// (`sub`) below it.
pub enum Storage {
    File(TempDir),
    S3(S3Server),
}

impl Storage {
    /// A new backend of `kind`; file storage lives in a temp dir named `<prefix>*`.
    pub fn new(kind: Kind, prefix: &str) -> Storage {
        match kind {
            Kind::File => Storage::File(tempfile::Builder::new().prefix(prefix).tempdir().unwrap()),
            Kind::S3 => Storage::S3(S3Server::start()),
        }
    }

    /// Settings for storage prefix `sub` (WAL-G and wal-rus read the same ones).
    pub fn env(&self, sub: &str) -> Vec<(String, String)> {
        match self {
            Storage::File(dir) => {
                let prefix = dir.path().join(sub);
                fs::create_dir_all(&prefix).unwrap();
                vec![("WALG_FILE_PREFIX".into(), prefix.display().to_string())]
            }
            Storage::S3(s3) => s3.env(sub),
        }
    }

    /// Where object `key` under prefix `sub` lives on disk (s3s-fs keeps an object as a plain
    /// file; its metadata json is optional for GET).
    pub fn object(&self, sub: &str, key: &str) -> PathBuf {
        match self {
            Storage::File(dir) => dir.path().join(sub).join(key),
            Storage::S3(s3) => s3.object_path(&format!("{sub}/{key}")),
        }
    }

    /// Everything stored under prefix `sub`, for failure messages.
    pub fn listing(&self, sub: &str) -> String {
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

/// What [`Workspace::walrus`] adds to the caller's settings.
#[derive(Clone, Copy, Debug)]
pub enum WalrusEnv {
    /// PGDATA only.
    Pgdata,
    /// PGDATA, HOME (the workspace's `home/`) and WALG_DOWNLOAD_CONCURRENCY=1.
    Private,
}

/// A fake PostgreSQL layout for one sub-case: `pgdata/` (PGDATA; WAL-G keeps its
/// archive-status bookkeeping there), `pg_wal/` with `archive_status/` (what wal-push reads and
/// WAL-G scans for .ready files), `restore/` (fetch destinations) and `home/` (a private HOME:
/// no ~/.walg.json of the developer, no stale decompressor cache).
pub struct Workspace {
    dir: TempDir,
    walrus_env: WalrusEnv,
}

impl Workspace {
    /// A new workspace in a temp dir named `<prefix>*`, whose wal-rus runs get `walrus_env`.
    pub fn new(prefix: &str, walrus_env: WalrusEnv) -> Workspace {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        for sub in ["pgdata", "pg_wal/archive_status", "restore", "home"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Workspace { dir, walrus_env }
    }

    /// The workspace's root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` as `pg_wal/<name>` and returns its path.
    pub fn wal_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path().join("pg_wal").join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// Where a fetch of `name` should go.
    pub fn restore_path(&self, name: &str) -> PathBuf {
        self.path().join("restore").join(name)
    }

    /// `env` plus what wal-rus runs in this workspace get (see [`WalrusEnv`]).
    pub fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = env.to_vec();
        env.push((
            "PGDATA".into(),
            self.path().join("pgdata").display().to_string(),
        ));
        if let WalrusEnv::Private = self.walrus_env {
            env.push((
                "HOME".into(),
                self.path().join("home").display().to_string(),
            ));
            env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "1".into()));
        }
        env
    }

    /// Runs wal-rus with `args` and [`Workspace::env`]`(env)`.
    pub fn walrus(&self, args: &[&str], env: &[(String, String)]) -> Output {
        run_walrus(args, &self.env(env))
    }

    /// Writes `contents` as `pg_wal/<name>` and has wal-rus `wal-push` it with `env`; panics
    /// with "`what` failed" and wal-rus's output when the push fails.
    pub fn walrus_push(&self, name: &str, contents: &[u8], env: &[(String, String)], what: &str) {
        let file = self.wal_file(name, contents);
        let out = self.walrus(&["wal-push", path_str(&file)], env);
        assert!(out.status.success(), "{what} failed\n{}", output_text(&out));
    }
}

/// `env` plus WALG_COMPRESSION_METHOD=`method`.
pub fn with_method(env: &[(String, String)], method: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("WALG_COMPRESSION_METHOD".into(), method.into()));
    env
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// --------------------------------------------------------------- test data

/// A plausible 16 MiB WAL segment: every 8 KiB page starts with a PostgreSQL 15 page header
/// (magic 0xD110 LE, long header on the first page), the first half of the payload is
/// pseudo-random (incompressible: LZ4 stores those 4 MiB blocks raw) and the second half is
/// repetitive text (compressible), so compressors see both kinds of data.
pub fn fake_segment(segno: u64, seed: u64) -> Vec<u8> {
    segment_data(segno, seed, false)
}

/// [`fake_segment`] with zero runs in the text half: the second half of every third page's
/// payload is zeros.
pub fn fake_segment_with_zero_runs(segno: u64, seed: u64) -> Vec<u8> {
    segment_data(segno, seed, true)
}

fn segment_data(segno: u64, seed: u64, zero_runs: bool) -> Vec<u8> {
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
        let zero_tail = zero_runs && i % 3 == 0;
        for (j, b) in page[header..].iter_mut().enumerate() {
            *b = if random_half {
                next() as u8
            } else if zero_tail && j >= PAGE / 2 {
                0
            } else {
                text[j % text.len()]
            };
        }
    }
    buf
}

/// Segment name for test case `n` on timeline 1.
pub fn segment_name(n: u64) -> String {
    common::wal_segment_name(1, n)
}

// -------------------------------------------------------------- assertions

/// Fails with the first difference (position and the 16 bytes from there) when `got` is not
/// `expected`.
pub fn assert_same(expected: &[u8], got: &[u8], what: &str) {
    if got != expected {
        let at = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: content differs (got {} bytes, expected {}; first difference at byte {at}: got {:02X?}, expected {:02X?})",
            got.len(),
            expected.len(),
            &got[at.min(got.len())..(at + 16).min(got.len())],
            &expected[at.min(expected.len())..(at + 16).min(expected.len())],
        );
    }
}

/// [`assert_same`] on the contents of the file `actual`.
pub fn assert_same_file(expected: &[u8], actual: &Path, what: &str) {
    let got = fs::read(actual)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", actual.display()));
    assert_same(expected, &got, what);
}

// ------------------------------------------------------------ sub-cases

/// Runs every `(label, case)` even when some fail (each failure's message is printed by the
/// panic hook as it happens), then fails naming those that did.
pub fn run_all<'a>(what: &str, cases: Vec<(String, Box<dyn FnOnce() + 'a>)>) {
    let failed: Vec<String> = cases
        .into_iter()
        .filter_map(|(label, case)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(case))
                .is_err()
                .then_some(label)
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: failed case(s) {failed:?} (details above)"
    );
}

// ------------------------------------------------------------ encryption

/// A libsodium key for WAL-G (`WALG_LIBSODIUM_KEY`, default transform `none`: the raw bytes,
/// exactly 32 of them here).
pub const LIBSODIUM_KEY: &str = "wal-rus-interop-libsodium-key-32";

/// `env` plus WALG_LIBSODIUM_KEY.
pub fn with_libsodium_key(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("WALG_LIBSODIUM_KEY".into(), LIBSODIUM_KEY.into()));
    env
}

/// A test key file under `tests/data/pgp` (see its README): `rsa.asc`, `rsa.pub.asc`,
/// `x25519-passphrase.asc`, `x25519.pub.asc`, `other.asc`.
pub fn pgp_key(name: &str) -> String {
    format!("{}/tests/data/pgp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The test keys copied where the `postgres` OS user (archive_command, restore_command) can
/// read them whatever the checkout's permissions; keep the directory alive while they are used.
pub fn pgp_keys_for_postgres() -> TempDir {
    let dir = common::postgres_owned_tempdir("walrus-pgp-keys-");
    for e in fs::read_dir(pgp_key("")).unwrap().flatten() {
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    common::chown_postgres(dir.path());
    dir
}

/// The passphrase of `x25519-passphrase.asc`.
pub const PGP_PASSPHRASE: &str = "wal-rus test passphrase";

/// A key file's armored text on one line, the two characters `\n` standing for each newline
/// (how WALG_PGP_KEY is usually set in an environment).
pub fn pgp_key_one_line(name: &str) -> String {
    fs::read_to_string(pgp_key(name))
        .unwrap()
        .replace('\n', "\\n")
}

/// The magic number every LZ4 frame starts with (0x184D2204, little-endian).
pub const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// Whether wal-rus's failure output says why it cannot read an encrypted object: it names
/// encryption (or libsodium / the WALG_LIBSODIUM_KEY setting), rather than only reporting a
/// corrupt compressed stream.
pub fn names_encryption(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("encrypt") || t.contains("libsodium") || t.contains("openpgp")
}

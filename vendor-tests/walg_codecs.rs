//! Interop tests against WAL-G v3.0.8's compression codecs.
//!
//! WAL-G itself cannot always be built (the Go module proxy may refuse to
//! serve it), but the compression libraries it pins can: `walg-codecs`
//! (vendor-tests/walg-codecs, built by scripts/ensure-tools and passed in
//! WALRUS_WALG_CODECS_BIN) compresses and decompresses with exactly the calls
//! and options WAL-G v3.0.8 uses (pierrec/lz4/v4 v4.1.21, ulikunitz/xz
//! v0.5.15, klauspost/compress v1.18.2 zstd at SpeedDefault). With it, for
//! lz4, lzma and zstd:
//!
//! * objects framed by WAL-G's writers are fetched by wal-rus byte-identical,
//!   while wal-rus is configured with a *different* method (so the extension
//!   probing is what finds them);
//! * objects wal-rus pushes are decoded byte-identical by WAL-G's readers (for
//!   lz4 also: exactly one frame, since WAL-G's reader stops after the first);
//! * empty and tiny `.history` files, both ways (a 0-byte `.zst` object, which
//!   is what WAL-G writes for empty input, must read as empty content);
//! * peak memory of wal-rus fetching a WAL-G lz4 segment (4 MiB blocks).
//!
//! File storage covers every case; S3 (s3s-fs) repeats the segment cases for
//! lz4 and zstd.
//!
//! The oracle is built from the module proxy, which serves it, so a missing
//! oracle FAILS under CI=true or WALRUS_REQUIRE_TOOLS=1 and skips loudly
//! otherwise.

use crate::{common, support};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Tool, hermetic, output_text, require_or_fail};
use support::{
    Kind, Storage, WalrusEnv, Workspace, assert_same, assert_same_file,
    fake_segment_with_zero_runs, path_str, segment_name, with_method,
};
use tempfile::TempDir;

const HISTORY_NAME: &str = "00000002.history";
const HISTORY_BODY: &[u8] = b"1\t0/3000028\tno recovery target specified\n";
/// Peak RSS allowed for wal-rus fetching a 16 MiB lz4 segment.
const LZ4_FETCH_RSS_LIMIT_KIB: u64 = 8 * 1024;

/// The methods under test: (WALG_COMPRESSION_METHOD value, object extension).
const METHODS: [(&str, &str); 3] = [("lz4", "lz4"), ("lzma", "lzma"), ("zstd", "zst")];

// ------------------------------------------------------------------ oracle

/// Path of the walg-codecs binary (see `support::oracle_bin`), checked to
/// round-trip a few bytes through lz4. Missing: panics under
/// CI/WALRUS_REQUIRE_TOOLS, otherwise prints a loud skip notice and returns
/// `None`.
fn oracle_bin(test: &str) -> Option<PathBuf> {
    support::oracle_bin(test, "codec", |p| {
        // Smoke test: the oracle must round-trip a few bytes.
        let data = b"walg-codecs smoke test";
        let packed = try_oracle(p, "compress", "lz4", data);
        match packed.and_then(|c| try_oracle(p, "decompress", "lz4", &c)) {
            Ok(back) if back == data => Ok(()),
            Ok(_) => Err(format!("{} does not round-trip lz4", p.display())),
            Err(e) => Err(format!("{} does not work: {e}", p.display())),
        }
    })
}

/// Runs `walg-codecs <op> <arg>` with `input` on stdin; returns stdout or the
/// failure text.
fn try_oracle(bin: &Path, op: &str, arg: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let dir = TempDir::new().unwrap();
    let inp = dir.path().join("in");
    fs::write(&inp, input).unwrap();
    support::run_oracle(bin, &[op, arg], &inp)
        .map_err(|out| format!("walg-codecs {op} {arg} failed\n{}", output_text(&out)))
}

fn oracle(bin: &Path, op: &str, arg: &str, input: &[u8]) -> Vec<u8> {
    try_oracle(bin, op, arg, input).unwrap_or_else(|e| panic!("{e}"))
}

// ----------------------------------------------------------------- storage

/// Temp dirs of this test start with this.
const TMP_PREFIX: &str = "walrus-codecs-";

impl Storage {
    /// Stores `bytes` as object `key` under prefix `sub`, as WAL-G would have.
    fn put(&self, sub: &str, key: &str, bytes: &[u8]) {
        let path = self.object(sub, key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
    }
}

/// A fresh workspace (see `support::Workspace`) whose wal-rus runs get a
/// private HOME and download concurrency 1.
fn workspace() -> Workspace {
    Workspace::new("walrus-codecs-ws-", WalrusEnv::Private)
}

/// A configured method different from `method`, so that finding the object
/// needs extension probing rather than the configured extension.
fn other_method(method: &str) -> &'static str {
    match method {
        "lz4" => "zstd",
        "lzma" => "lz4",
        "zstd" => "lzma",
        other => panic!("unknown method {other}"),
    }
}

/// The frame header WAL-G's lz4 writer (pierrec/lz4/v4 defaults) emits: magic,
/// FLG 0x64 (independent blocks, content checksum), BD 0x70 (4 MiB blocks),
/// header checksum 0xB9.
const WALG_LZ4_HEADER: [u8; 7] = [0x04, 0x22, 0x4D, 0x18, 0x64, 0x70, 0xB9];

/// Walks an LZ4 object's frame structure (any valid descriptor: WAL-G's reader
/// accepts every block size and flag combination) and checks that it holds
/// exactly one frame with nothing after it: WAL-G's reader stops after the
/// first frame and would silently drop the rest. Returns the number of data
/// blocks. Checksums are left to the decoder.
fn assert_single_lz4_frame(obj: &[u8], what: &str) -> usize {
    assert!(
        obj.len() >= 7 && obj[..4] == WALG_LZ4_HEADER[..4],
        "{what}: not an LZ4 frame (starts {:02X?})",
        &obj[..obj.len().min(7)]
    );
    let flg = obj[4];
    let bd = obj[5];
    assert_eq!(
        flg >> 6,
        0b01,
        "{what}: LZ4 frame version bits of FLG {flg:#04X} are not 01"
    );
    let block_checksum = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dict_id = flg & 0x01 != 0;
    let max_block = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        other => panic!("{what}: invalid LZ4 block size index {other} in BD {bd:#04X}"),
    };
    let mut pos = 6 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
    let mut blocks = 0;
    loop {
        assert!(
            pos + 4 <= obj.len(),
            "{what}: LZ4 frame truncated at byte {pos} (block {blocks})"
        );
        let word = u32::from_le_bytes(obj[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if word == 0 {
            break;
        }
        let size = (word & 0x7FFF_FFFF) as usize;
        assert!(
            size <= max_block,
            "{what}: LZ4 block {blocks} holds {size} bytes, more than BD allows ({max_block})"
        );
        pos += size + if block_checksum { 4 } else { 0 };
        blocks += 1;
    }
    if content_checksum {
        pos += 4;
    }
    assert_eq!(
        pos,
        obj.len(),
        "{what}: {} bytes follow the first LZ4 frame (which ends at byte {pos}); WAL-G's reader would ignore them",
        obj.len() as i64 - pos as i64
    );
    blocks
}

/// `assert_single_lz4_frame` plus WAL-G's exact header (for the oracle's own
/// output: proves it writes what WAL-G v3.0.8 writes).
fn assert_walg_lz4_frame(obj: &[u8], what: &str) -> usize {
    assert!(
        obj.len() >= 15 && obj[..7] == WALG_LZ4_HEADER,
        "{what}: LZ4 object does not begin with WAL-G's frame header {WALG_LZ4_HEADER:02X?}: {:02X?}",
        &obj[..obj.len().min(7)]
    );
    assert_single_lz4_frame(obj, what)
}

/// Runs `case(index, method, ext)` for each method in `methods`, all of them
/// even when one fails, then fails naming every method that did.
fn for_each_method(methods: &[&'static str], case: impl Fn(usize, &'static str, &'static str)) {
    let failed: Vec<&str> = METHODS
        .iter()
        .filter(|(m, _)| methods.contains(m))
        .enumerate()
        .filter(|&(i, &(m, e))| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(i, m, e))).is_err()
        })
        .map(|(_, (m, _))| *m)
        .collect();
    assert!(
        failed.is_empty(),
        "failed for compression method(s) {failed:?} (details above)"
    );
}

fn setup(test: &str, kind: Kind) -> Option<(PathBuf, Storage)> {
    let bin = oracle_bin(test)?;
    if matches!(kind, Kind::S3) {
        require_or_fail(Tool::S3s, test)?;
    }
    Some((bin, Storage::new(kind, TMP_PREFIX)))
}

const ALL: &[&str] = &["lz4", "lzma", "zstd"];
const S3_METHODS: &[&str] = &["lz4", "zstd"];

// ------------------------------------------------------------------- cases

/// (a) WAL-G-framed segment → wal-rus wal-fetch (configured method differs).
fn walg_object_walrus_fetch(test: &str, kind: Kind, methods: &[&'static str]) {
    let Some((bin, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(methods, |i, method, ext| {
        let sub = format!("walg-objects/{method}");
        let name = segment_name(0x20 + i as u64);
        let original = fake_segment_with_zero_runs(0x20 + i as u64, 0xC0DE_C0DE + i as u64);
        let object = oracle(&bin, "compress", method, &original);
        if method == "lz4" {
            assert_walg_lz4_frame(&object, &format!("[{kind:?}/lz4] oracle output"));
        }
        storage.put(&sub, &format!("wal_005/{name}.{ext}"), &object);

        let configured = other_method(method);
        let env = with_method(&storage.env(&sub), configured);
        let ws = workspace();
        let dest = ws.restore_path("RECOVERYXLOG");
        let out = ws.walrus(&["wal-fetch", &name, path_str(&dest)], &env);
        assert!(
            out.status.success(),
            "[{kind:?}/{method}] wal-rus (configured {configured}) could not fetch WAL-G's {name}.{ext} \
             ({} bytes)\n{}\n{}",
            object.len(),
            output_text(&out),
            storage.listing(&sub)
        );
        assert_same_file(
            &original,
            &dest,
            &format!("[{kind:?}/{method}] wal-rus fetch of a WAL-G-compressed segment"),
        );
    });
}

/// (b) wal-rus wal-push → WAL-G's decompressor.
fn walrus_push_walg_read(test: &str, kind: Kind, methods: &[&'static str]) {
    let Some((bin, storage)) = setup(test, kind) else {
        return;
    };
    for_each_method(methods, |i, method, ext| {
        let sub = format!("walrus-push/{method}");
        let env = with_method(&storage.env(&sub), method);
        let ws = workspace();
        let name = segment_name(0x30 + i as u64);
        let original = fake_segment_with_zero_runs(0x30 + i as u64, 0x5EED_0000 + i as u64);
        let what = format!("[{kind:?}/{method}] wal-rus wal-push");
        ws.walrus_push(&name, &original, &env, &what);
        let path = storage.object(&sub, &format!("wal_005/{name}.{ext}"));
        let object = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "[{kind:?}/{method}] no object {}: {e}\n{}",
                path.display(),
                storage.listing(&sub)
            )
        });
        if method == "lz4" {
            let blocks =
                assert_single_lz4_frame(&object, &format!("[{kind:?}/lz4] wal-rus object"));
            assert!(
                blocks >= 1,
                "[{kind:?}/lz4] wal-rus object has no data block"
            );
        }
        // WAL-G's lz4 reader stops after the first frame: decoding the whole
        // 16 MiB (half of it incompressible) proves there is only one.
        let decoded = try_oracle(&bin, "decompress", ext, &object).unwrap_or_else(|e| {
            panic!(
                "[{kind:?}/{method}] WAL-G's reader rejects wal-rus's object ({} bytes, starts {:02X?}): {e}",
                object.len(),
                &object[..object.len().min(16)]
            )
        });
        assert_same(
            &original,
            &decoded,
            &format!("[{kind:?}/{method}] WAL-G's reader on wal-rus's push"),
        );
    });
}

/// (c) Empty and small `.history` files, both directions.
fn history_edge_cases(test: &str) {
    let Some((bin, storage)) = setup(test, Kind::File) else {
        return;
    };
    for_each_method(ALL, |_, method, ext| {
        for (label, body) in [("empty", &b""[..]), ("small", HISTORY_BODY)] {
            // WAL-G's writer → wal-rus.
            let sub = format!("history/{method}/{label}/walg");
            let object = oracle(&bin, "compress", method, body);
            if body.is_empty() {
                match method {
                    "zstd" => assert!(
                        object.is_empty(),
                        "WAL-G's zstd writes {} bytes for empty input, expected 0",
                        object.len()
                    ),
                    "lz4" => assert_eq!(
                        object,
                        [
                            0x04, 0x22, 0x4D, 0x18, 0x64, 0x70, 0xB9, 0, 0, 0, 0, 0x05, 0x5D, 0xCC,
                            0x02
                        ],
                        "WAL-G's lz4 frame for empty input"
                    ),
                    _ => {}
                }
            }
            if method == "lz4" {
                assert_walg_lz4_frame(&object, &format!("[lz4/{label}] oracle {HISTORY_NAME}"));
            }
            if method == "lzma" {
                let mut header = vec![0x5D, 0x00, 0x00, 0x80, 0x00];
                header.extend([0xFF; 8]);
                assert_eq!(object[..13], header[..], "WAL-G's lzma header");
            }
            storage.put(&sub, &format!("wal_005/{HISTORY_NAME}.{ext}"), &object);
            let env = with_method(&storage.env(&sub), other_method(method));
            let ws = workspace();
            let dest = ws.restore_path(HISTORY_NAME);
            let out = ws.walrus(&["wal-fetch", HISTORY_NAME, path_str(&dest)], &env);
            assert!(
                out.status.success(),
                "[{method}/{label}] wal-rus could not fetch WAL-G's {HISTORY_NAME}.{ext} ({} bytes: {:02X?})\n{}",
                object.len(),
                &object[..object.len().min(32)],
                output_text(&out)
            );
            assert_same_file(
                body,
                &dest,
                &format!("[{method}/{label}] {HISTORY_NAME} WAL-G → wal-rus"),
            );

            // wal-rus → WAL-G's reader.
            let sub = format!("history/{method}/{label}/walrus");
            let env = with_method(&storage.env(&sub), method);
            let ws = workspace();
            let what = format!("[{method}/{label}] wal-rus wal-push {HISTORY_NAME}");
            ws.walrus_push(HISTORY_NAME, body, &env, &what);
            let path = storage.object(&sub, &format!("wal_005/{HISTORY_NAME}.{ext}"));
            let object = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "[{method}/{label}] no object {}: {e}\n{}",
                    path.display(),
                    storage.listing(&sub)
                )
            });
            if method == "lz4" {
                assert_single_lz4_frame(
                    &object,
                    &format!("[{method}/{label}] wal-rus {HISTORY_NAME}"),
                );
            }
            let decoded = try_oracle(&bin, "decompress", ext, &object).unwrap_or_else(|e| {
                panic!(
                    "[{method}/{label}] WAL-G's reader rejects wal-rus's {HISTORY_NAME}.{ext} ({} bytes: {:02X?}): {e}",
                    object.len(),
                    &object[..object.len().min(32)]
                )
            });
            assert_same(
                body,
                &decoded,
                &format!("[{method}/{label}] {HISTORY_NAME} wal-rus → WAL-G"),
            );
        }
    });
}

// ------------------------------------------------------------------- tests

#[test]
fn walg_objects_walrus_fetch_file() {
    walg_object_walrus_fetch("walg_objects_walrus_fetch_file", Kind::File, ALL);
}

#[test]
fn walg_objects_walrus_fetch_s3() {
    walg_object_walrus_fetch("walg_objects_walrus_fetch_s3", Kind::S3, S3_METHODS);
}

#[test]
fn walrus_push_walg_read_file() {
    walrus_push_walg_read("walrus_push_walg_read_file", Kind::File, ALL);
}

#[test]
fn walrus_push_walg_read_s3() {
    walrus_push_walg_read("walrus_push_walg_read_s3", Kind::S3, S3_METHODS);
}

#[test]
fn history_empty_and_small_both_ways_file() {
    history_edge_cases("history_empty_and_small_both_ways_file");
}

/// (d) wal-rus's peak RSS fetching a WAL-G lz4 segment (4 MiB blocks): the
/// streaming decoder keeps only a 64 KiB window, so well under 8 MiB.
#[test]
fn lz4_fetch_peak_rss_file() {
    let test = "lz4_fetch_peak_rss_file";
    let Some((bin, storage)) = setup(test, Kind::File) else {
        return;
    };
    let sub = "rss";
    let name = segment_name(0x40);
    let original = fake_segment_with_zero_runs(0x40, 0xFEED_BEEF);
    let object = oracle(&bin, "compress", "lz4", &original);
    let blocks = assert_walg_lz4_frame(&object, "oracle lz4 segment");
    assert_eq!(blocks, 4, "a 16 MiB WAL-G lz4 object has four 4 MiB blocks");
    storage.put(sub, &format!("wal_005/{name}.lz4"), &object);

    let ws = workspace();
    let dest = ws.restore_path("RECOVERYXLOG");
    let mut cmd = Command::new(common::walrus_bin());
    hermetic(&mut cmd).args(["wal-fetch", &name, path_str(&dest)]);
    for (k, v) in ws.env(&with_method(&storage.env(sub), "lz4")) {
        cmd.env(k, v);
    }
    let (out, kib) = common::peak_rss_kib(&mut cmd);
    assert!(
        out.status.success(),
        "wal-rus wal-fetch failed\n{}",
        output_text(&out)
    );
    assert_same_file(&original, &dest, "wal-rus fetch of a WAL-G lz4 segment");
    eprintln!("{test}: wal-rus wal-fetch of a 16 MiB WAL-G lz4 segment: peak RSS {kib} KiB");
    common::loud(&format!(
        "{test}: peak RSS {kib} KiB (limit {LZ4_FETCH_RSS_LIMIT_KIB} KiB)"
    ));
    assert!(
        kib < LZ4_FETCH_RSS_LIMIT_KIB,
        "wal-rus used {kib} KiB peak RSS fetching a 16 MiB lz4 segment (limit {LZ4_FETCH_RSS_LIMIT_KIB} KiB)"
    );
}

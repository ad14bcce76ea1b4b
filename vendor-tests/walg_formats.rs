//! wal-rus's backup objects against Go's own readers and writers: the standard-library
//! `archive/tar` and `encoding/json` that WAL-G v3.0.8 reads and writes them with, through the
//! `walg-codecs` oracle (vendor-tests/walg-codecs: `decompress`, `compress`, `tar-list`,
//! `tar-write`, `sentinel-check`, `metadata-check`, `files-metadata-check`).
//!
//! A real backup: a PostgreSQL 15 cluster with a tablespace (a table in it) and pgbench
//! scale 1, pushed by wal-rus to file storage. Then:
//!
//! * every object in `tar_partitions/` decompresses with WAL-G's decompressor and reads with
//!   Go's tar reader the way WAL-G reads it (nothing but zero bytes after the end-of-archive
//!   marker, walg-compat §3.2);
//! * the entry names follow WAL-G's rules (§1.4.2, §2.4, §3.3): the `Files` keys of
//!   `files_metadata.json` are exactly the entries of the data partitions, `TarFileSets` says
//!   which partition holds which, `pg_control.tar` holds exactly `/global/pg_control`,
//!   `backup_label.tar` exactly `backup_label` and `tablespace_map`;
//! * entry data, sizes and modes match the files on disk for every file PostgreSQL has not
//!   touched since before the backup started (PG_VERSION and many more);
//! * `UncompressedSize` is the sum of the entries' data and `CompressedSize` the sum of the
//!   stored tar objects (§2.2);
//! * the sentinel, `metadata.json` and `files_metadata.json` decode into WAL-G v3.0.8's
//!   structs with Go's encoding/json, say the same things, and re-encode to the same JSON.
//!
//! And the reverse: the data partition is replaced by a tar that Go's writer made from the same
//! entries (leading-slash names, as WAL-G writes them), plus one more Go-written partition with
//! nested directories, a file whose name needs a PAX header and a non-ASCII name; wal-rus
//! `backup-fetch` restores exactly the same tree as from its own partition, and the extra files.
//!
//! The oracle is built from Go's standard library and modules the proxy serves, so a missing
//! oracle FAILS under CI=true or WALRUS_REQUIRE_TOOLS=1 and skips loudly otherwise (as in
//! walg_codecs.rs); PostgreSQL likewise.

use crate::{common, support};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use common::{PgCluster, Tool, output_text, require_or_fail};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(600);

// ------------------------------------------------------------------ oracle

/// Path of the walg-codecs binary (see `support::oracle_bin`), checked to have the format
/// subcommands. Missing: panics under CI/WALRUS_REQUIRE_TOOLS, otherwise a loud skip notice and
/// `None`.
fn oracle_bin(test: &str) -> Option<PathBuf> {
    support::oracle_bin(test, "format", |p| {
        // Smoke test: an empty archive (two zero blocks) lists as nothing. A binary built
        // before the format subcommands existed fails here (usage error).
        let dir = TempDir::new().unwrap();
        let empty = dir.path().join("empty.tar");
        fs::write(&empty, [0u8; 1024]).unwrap();
        match try_oracle(p, &["tar-list"], &empty) {
            Ok(out) if out.is_empty() => Ok(()),
            Ok(out) => Err(format!(
                "{} tar-list of an empty tar printed {:?}",
                p.display(),
                String::from_utf8_lossy(&out)
            )),
            Err(e) => Err(format!(
                "{} has no working tar-list (rebuild with scripts/ensure-tools): {e}",
                p.display()
            )),
        }
    })
}

/// Runs `walg-codecs ARGS < input` and returns stdout, or the failure text.
fn try_oracle(bin: &Path, args: &[&str], input: &Path) -> Result<Vec<u8>, String> {
    support::run_oracle(bin, args, input).map_err(|out| {
        format!(
            "walg-codecs {} < {} failed\n{}",
            args.join(" "),
            input.display(),
            output_text(&out)
        )
    })
}

fn oracle(bin: &Path, args: &[&str], input: &Path) -> Vec<u8> {
    try_oracle(bin, args, input).unwrap_or_else(|e| panic!("{e}"))
}

fn oracle_json(bin: &Path, check: &str, input: &Path) -> Value {
    let out = oracle(bin, &[check], input);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "{check} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// One entry as Go's tar reader saw it (a `tar-list` line).
#[derive(Clone, Debug)]
struct TarEntry {
    typeflag: char,
    mode: u32,
    size: u64,
    sha256: String,
    name: String,
    link: Option<String>,
}

fn parse_tar_list(text: &[u8]) -> Vec<TarEntry> {
    String::from_utf8(text.to_vec())
        .expect("tar-list output is UTF-8")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(6, '\t').collect();
            assert!(f.len() >= 5, "bad tar-list line {line:?}");
            TarEntry {
                typeflag: f[0].chars().next().unwrap(),
                mode: u32::from_str_radix(f[1], 8).unwrap(),
                size: f[2].parse().unwrap(),
                sha256: f[3].to_string(),
                name: f[4].to_string(),
                link: f.get(5).map(|s| s.to_string()),
            }
        })
        .collect()
}

/// Decompresses a stored tar object with WAL-G's decompressor for its extension and lists
/// it with Go's tar reader. Panics with the oracle's message when either step fails.
fn go_list_object(bin: &Path, object: &Path, scratch: &Path) -> Vec<TarEntry> {
    let file = object.file_name().unwrap().to_string_lossy().into_owned();
    let ext = file
        .rsplit_once(".tar")
        .map(|(_, e)| e.trim_start_matches('.'))
        .unwrap_or("");
    let tar = if ext.is_empty() {
        object.to_path_buf()
    } else {
        let plain = scratch.join(format!("{file}.plain"));
        fs::write(&plain, oracle(bin, &["decompress", ext], object)).unwrap();
        plain
    };
    parse_tar_list(&oracle(bin, &["tar-list"], &tar))
}

// ---------------------------------------------------------------- fixture

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> String {
    hex(&Sha256::digest(
        fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    ))
}

/// A cluster with a tablespace, pgbench scale 1, and one wal-rus backup in file storage.
struct Fixture {
    pg: PgCluster,
    /// The tablespace's directory (`CREATE TABLESPACE ... LOCATION`).
    ts: TempDir,
    /// The tablespace's OID (its pg_tblspc link name).
    ts_oid: String,
    archive: TempDir,
    name: String,
    /// When backup-push was started.
    started: SystemTime,
}

impl Fixture {
    fn new() -> Fixture {
        let archive = common::postgres_owned_tempdir("walrus-formats-archive-");
        let port = common::free_port();
        let env = vec![
            (
                "WALG_FILE_PREFIX".to_string(),
                archive.path().display().to_string(),
            ),
            ("PGHOST".to_string(), "127.0.0.1".to_string()),
            ("PGPORT".to_string(), port.to_string()),
            ("PGUSER".to_string(), "postgres".to_string()),
            ("PGDATABASE".to_string(), "postgres".to_string()),
        ];
        let mut pg = PgCluster::init_with_env(
            port,
            "wal_level = replica\narchive_mode = on\narchive_command = '{walrus} wal-push %p'\nmax_wal_size = 256MB\n",
            &env,
        );
        pg.start();
        let ts = common::postgres_owned_tempdir("walrus-formats-ts-");
        pg.psql(&format!(
            "create tablespace walrus_ts location '{}'",
            ts.path().display()
        ));
        pg.psql("create table in_ts (id int primary key, payload text) tablespace walrus_ts");
        pg.psql(
            "insert into in_ts select g, repeat(md5(g::text), 4) from generate_series(1, 5000) g",
        );
        pg.pgbench_init(1);
        pg.psql("checkpoint");
        let ts_oid = pg.psql("select oid from pg_tablespace where spcname = 'walrus_ts'");
        // Files PostgreSQL has not written since before this instant are compared with the
        // tar entries; mtimes have at least 1 s granularity on some file systems.
        std::thread::sleep(Duration::from_millis(1100));
        let started = SystemTime::now();
        let out =
            pg.run_walrus_as_postgres(&["backup-push", pg.data_dir().to_str().unwrap()], LONG);
        assert!(
            out.status.success(),
            "wal-rus backup-push failed\n{}\n{}",
            output_text(&out),
            pg.server_log_tail(30)
        );
        let root = archive.path().join("basebackups_005");
        let sentinels: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter_map(|n| {
                n.strip_suffix("_backup_stop_sentinel.json")
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(
            sentinels.len(),
            1,
            "expected exactly one backup in {}: {sentinels:?}",
            root.display()
        );
        let name = sentinels[0].clone();
        Fixture {
            pg,
            ts,
            ts_oid,
            archive,
            name,
            started,
        }
    }

    fn backup_dir(&self) -> PathBuf {
        self.archive.path().join("basebackups_005").join(&self.name)
    }

    fn sentinel_path(&self) -> PathBuf {
        self.archive
            .path()
            .join("basebackups_005")
            .join(format!("{}_backup_stop_sentinel.json", self.name))
    }

    fn partitions(&self) -> Vec<PathBuf> {
        let mut parts: Vec<PathBuf> = fs::read_dir(self.backup_dir().join("tar_partitions"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        parts.sort();
        parts
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(
            "WALG_FILE_PREFIX".to_string(),
            self.archive.path().display().to_string(),
        )]
    }

    /// Where tar entry `name` lives on the source: `/pg_tblspc/<oid>/...` in the tablespace
    /// directory, everything else in the data directory.
    fn source_path(&self, name: &str) -> PathBuf {
        let rel = name.trim_start_matches('/');
        let ts_prefix = format!("pg_tblspc/{}/", self.ts_oid);
        match rel.strip_prefix(&ts_prefix) {
            Some(inner) => self.ts.path().join(inner),
            None if rel.is_empty() => self.pg.data_dir().to_path_buf(),
            None => self.pg.data_dir().join(rel),
        }
    }
}

fn object_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn is_data_partition(name: &str) -> bool {
    name.starts_with("part_")
}

// ------------------------------------------------------------------ tests

/// wal-rus's backup objects read with WAL-G's readers (Go's archive/tar and encoding/json).
#[test]
fn walrus_backup_reads_with_go() {
    let test = "walrus_backup_reads_with_go";
    let Some(_) = require_or_fail(Tool::Postgres, test) else {
        return;
    };
    let Some(bin) = oracle_bin(test) else { return };
    let fx = Fixture::new();
    let scratch = TempDir::new().unwrap();

    // --- every tar object, through WAL-G's decompressor and Go's tar reader
    let mut listings: BTreeMap<String, Vec<TarEntry>> = BTreeMap::new();
    let mut stored_bytes = 0u64;
    for part in fx.partitions() {
        stored_bytes += fs::metadata(&part).unwrap().len();
        listings.insert(
            object_name(&part),
            go_list_object(&bin, &part, scratch.path()),
        );
    }
    let objects: Vec<&String> = listings.keys().collect();
    let pg_control = objects
        .iter()
        .filter(|n| n.starts_with("pg_control.tar"))
        .count();
    let label = objects
        .iter()
        .filter(|n| n.starts_with("backup_label.tar"))
        .count();
    let parts = objects.iter().filter(|n| is_data_partition(n)).count();
    assert!(
        pg_control == 1 && label == 1 && parts >= 1 && parts + 2 == objects.len(),
        "tar_partitions/ should hold part_NNN objects, one pg_control.tar and one backup_label.tar: {objects:?}"
    );

    // pg_control.tar: exactly /global/pg_control (8192 bytes, as on disk).
    let control = listings
        .iter()
        .find(|(n, _)| n.starts_with("pg_control.tar"))
        .unwrap()
        .1;
    assert_eq!(
        control.len(),
        1,
        "pg_control.tar must hold exactly one entry: {control:?}"
    );
    assert_eq!(
        (control[0].name.as_str(), control[0].typeflag),
        ("/global/pg_control", '0'),
        "{control:?}"
    );
    assert_eq!(
        control[0].size,
        fs::metadata(fx.pg.data_dir().join("global/pg_control"))
            .unwrap()
            .len()
    );

    // backup_label.tar: backup_label and tablespace_map, bare names, regular files, 0600.
    let (label_object, label_entries) = listings
        .iter()
        .find(|(n, _)| n.starts_with("backup_label.tar"))
        .unwrap();
    let label_names: BTreeSet<&str> = label_entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        label_names,
        BTreeSet::from(["backup_label", "tablespace_map"]),
        "{label_entries:?}"
    );
    assert_eq!(label_entries.len(), 2, "{label_entries:?}");
    for e in label_entries {
        assert_eq!((e.typeflag, e.mode), ('0', 0o600), "label entry {e:?}");
    }

    // Data partitions: no name twice, no utility names, nothing from inside pg_wal.
    let mut seen = BTreeMap::new();
    for (object, entries) in listings.iter().filter(|(n, _)| is_data_partition(n)) {
        for e in entries {
            if let Some(other) = seen.insert(e.name.clone(), object.clone()) {
                panic!("entry {} is in both {other} and {object}", e.name);
            }
            assert!(
                e.name.starts_with('/'),
                "local-backup entry names start with '/' (§3.3): {e:?}"
            );
            assert!(
                ![
                    "/global/pg_control",
                    "backup_label",
                    "tablespace_map",
                    "/backup_label",
                    "/tablespace_map"
                ]
                .contains(&e.name.as_str()),
                "{} must not be in a data partition ({object})",
                e.name
            );
            assert!(
                !e.name.starts_with("/pg_wal/"),
                "pg_wal content must not be backed up: {}",
                e.name
            );
            assert!(
                matches!(e.typeflag, '0' | '5' | '2'),
                "unexpected entry type {e:?}"
            );
        }
    }
    let entry = |name: &str| -> &TarEntry {
        listings
            .iter()
            .filter(|(n, _)| is_data_partition(n))
            .flat_map(|(_, es)| es)
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name} in the data partitions"))
    };
    for dir in ["/", "/base", "/global", "/pg_wal", "/pg_tblspc"] {
        assert_eq!(entry(dir).typeflag, '5', "{dir} must be a directory entry");
    }
    assert_eq!(
        entry("/").mode,
        fs::metadata(fx.pg.data_dir()).unwrap().permissions().mode() & 0o7777
    );
    // The tablespace: walked through its link, as /pg_tblspc/<oid>/<version dir>/...; the link
    // itself and the real directory's root are not entries.
    let ts_prefix = format!("/pg_tblspc/{}/", fx.ts_oid);
    let ts_entries: Vec<&str> = seen
        .keys()
        .filter(|n| n.starts_with(&ts_prefix))
        .map(String::as_str)
        .collect();
    assert!(
        ts_entries.iter().any(|n| n.matches('/').count() == 5),
        "no relation files under {ts_prefix}: {ts_entries:?}"
    );
    assert!(
        !seen.contains_key(ts_prefix.trim_end_matches('/')),
        "the tablespace link itself must not be an entry"
    );

    // --- files_metadata.json with Go's decoder: Files == data-partition entries
    let files_meta = oracle_json(
        &bin,
        "files-metadata-check",
        &fx.backup_dir().join("files_metadata.json"),
    );
    let files: BTreeSet<String> = files_meta["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let data_names: BTreeSet<String> = seen.keys().cloned().collect();
    let missing: Vec<_> = data_names.difference(&files).collect();
    let extra: Vec<_> = files.difference(&data_names).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "files_metadata.json Files must be exactly the data-partition entries (§2.4)\n\
         entries missing from Files (WAL-G would silently skip them on restore): {missing:?}\n\
         Files without an entry: {extra:?}"
    );
    assert_eq!(files_meta["IncrementedCount"], 0);
    assert_eq!(files_meta["SkippedCount"], 0);
    // TarFileSets: each data partition's entries, the label tar's two names, no pg_control.
    let sets: BTreeMap<String, BTreeSet<String>> = files_meta["TarFileSets"]
        .as_object()
        .expect("TarFileSets present")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    let mut expected_sets: BTreeMap<String, BTreeSet<String>> = listings
        .iter()
        .filter(|(n, _)| is_data_partition(n))
        .map(|(n, es)| (n.clone(), es.iter().map(|e| e.name.clone()).collect()))
        .collect();
    expected_sets.insert(
        label_object.clone(),
        label_names.iter().map(|s| s.to_string()).collect(),
    );
    assert_eq!(
        sets, expected_sets,
        "TarFileSets must name each partition's entries (pg_control.tar not listed, §2.4)"
    );

    // --- entry data, sizes and modes against the files on disk, for files PostgreSQL has
    // not modified since before the backup started (so they cannot have changed since).
    let mut compared = BTreeSet::new();
    for e in listings
        .iter()
        .filter(|(n, _)| is_data_partition(n))
        .flat_map(|(_, es)| es)
    {
        let path = fx.source_path(&e.name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let mtime = meta.modified().unwrap();
        match e.typeflag {
            '5' => {
                assert!(
                    meta.is_dir(),
                    "{} is a directory entry but {} is not a directory",
                    e.name,
                    path.display()
                );
                assert_eq!(
                    e.mode,
                    meta.permissions().mode() & 0o7777,
                    "mode of directory {}",
                    e.name
                );
            }
            '0' if mtime < fx.started && meta.is_file() => {
                assert_eq!(e.size, meta.len(), "size of {}", e.name);
                assert_eq!(
                    e.sha256,
                    sha256_file(&path),
                    "data of {} differs from {}",
                    e.name,
                    path.display()
                );
                assert_eq!(
                    e.mode,
                    meta.permissions().mode() & 0o7777,
                    "mode of {}",
                    e.name
                );
                compared.insert(e.name.clone());
            }
            _ => {}
        }
    }
    for must in [
        "/PG_VERSION",
        "/base/1/PG_VERSION",
        "/pg_hba.conf",
        "/pg_ident.conf",
        "/postgresql.conf",
    ] {
        assert!(
            compared.contains(must),
            "{must} was not compared with the file on disk (entries compared: {})",
            compared.len()
        );
    }
    assert!(
        compared.len() >= 100,
        "only {} unchanged files compared",
        compared.len()
    );
    eprintln!(
        "{} tar objects, {} data-partition entries ({} in the tablespace), {} unchanged files compared with disk",
        listings.len(),
        seen.len(),
        ts_entries.len(),
        compared.len()
    );

    // --- the sentinel and metadata.json with Go's decoder
    let sentinel_raw: Value =
        serde_json::from_slice(&fs::read(fx.sentinel_path()).unwrap()).unwrap();
    let sentinel = oracle_json(&bin, "sentinel-check", &fx.sentinel_path());
    // Key order and whitespace do not matter to WAL-G (§2.1.1); note when they differ.
    for (doc, check) in [
        (fx.sentinel_path(), "sentinel-check"),
        (fx.backup_dir().join("metadata.json"), "metadata-check"),
    ] {
        let go = oracle(&bin, &[check], &doc);
        if fs::read(&doc).unwrap() != go.strip_suffix(b"\n").unwrap_or(&go) {
            eprintln!(
                "note: {} is not byte-identical to Go's encoding of the same values",
                doc.display()
            );
        }
    }
    assert_eq!(
        sentinel, sentinel_raw,
        "Go's decode + re-encode of the sentinel (WAL-G v3.0.8's struct) differs from what wal-rus wrote: \
         a member WAL-G does not know, a wrong JSON type, or a member WAL-G always writes that is missing"
    );
    let meta_raw: Value =
        serde_json::from_slice(&fs::read(fx.backup_dir().join("metadata.json")).unwrap()).unwrap();
    let meta = oracle_json(
        &bin,
        "metadata-check",
        &fx.backup_dir().join("metadata.json"),
    );
    assert_eq!(
        meta, meta_raw,
        "Go's decode + re-encode of metadata.json (WAL-G v3.0.8's struct) differs from what wal-rus wrote"
    );

    let lsn = sentinel["LSN"].as_u64().expect("LSN is a number");
    let finish = sentinel["FinishLSN"]
        .as_u64()
        .expect("FinishLSN is a number");
    assert!(lsn > 0 && lsn <= finish, "LSN {lsn} FinishLSN {finish}");
    assert_eq!(
        fx.name,
        format!("base_{}", common::wal_segment_name(1, lsn / (16 << 20))),
        "name from the start LSN's segment (§1.4.1)"
    );
    assert_eq!(sentinel["Version"], 2);
    assert_eq!(sentinel["DateFmt"], "%Y-%m-%dT%H:%M:%S.%fZ");
    assert_eq!(
        sentinel["PgVersion"].as_u64().unwrap().to_string(),
        fx.pg.psql("show server_version_num")
    );
    assert_eq!(sentinel["DataDir"], fx.pg.data_dir().to_str().unwrap());
    let sysid = fx
        .pg
        .psql("select system_identifier from pg_control_system()");
    assert_eq!(
        sentinel["SystemIdentifier"]
            .as_u64()
            .map(|v| v as i64)
            .map(|v| v.to_string()),
        Some(sysid)
    );
    assert!(sentinel["ChkpNum"].is_null());
    assert_eq!(sentinel["IsPermanent"], false);
    // Spec: the tablespace, as WAL-G records it (§2.5).
    let spec = &sentinel["Spec"];
    assert_eq!(
        spec["base_prefix"],
        fx.pg.data_dir().to_str().unwrap(),
        "Spec {spec}"
    );
    assert_eq!(
        spec["tablespaces"],
        serde_json::json!([fx.ts_oid]),
        "Spec {spec}"
    );
    assert_eq!(
        spec[&fx.ts_oid]["loc"],
        fx.ts.path().to_str().unwrap(),
        "Spec {spec}"
    );
    assert_eq!(
        spec[&fx.ts_oid]["link"],
        format!("pg_tblspc/{}", fx.ts_oid),
        "Spec {spec}"
    );
    // Sizes (§2.2): payload bytes of every tar, and the stored tar objects' bytes.
    let payload: u64 = listings
        .values()
        .flatten()
        .filter(|e| e.typeflag == '0')
        .map(|e| e.size)
        .sum();
    assert_eq!(
        sentinel["UncompressedSize"].as_u64(),
        Some(payload),
        "UncompressedSize = sum of entry data sizes"
    );
    assert_eq!(
        sentinel["CompressedSize"].as_u64(),
        Some(stored_bytes),
        "CompressedSize = sum of stored tar objects"
    );
    assert!(
        sentinel["DataCatalogSize"].as_u64().unwrap_or(0) >= payload - control[0].size,
        "DataCatalogSize {}",
        sentinel["DataCatalogSize"]
    );
    // metadata.json says the same as the sentinel.
    for (m, s) in [
        ("start_time", "StartTime"),
        ("finish_time", "FinishTime"),
        ("date_fmt", "DateFmt"),
        ("hostname", "Hostname"),
        ("data_dir", "DataDir"),
        ("pg_version", "PgVersion"),
        ("start_lsn", "LSN"),
        ("finish_lsn", "FinishLSN"),
        ("is_permanent", "IsPermanent"),
        ("system_identifier", "SystemIdentifier"),
        ("uncompressed_size", "UncompressedSize"),
        ("compressed_size", "CompressedSize"),
    ] {
        assert_eq!(meta[m], sentinel[s], "metadata.json {m} vs sentinel {s}");
    }
    let start_time = meta["start_time"].as_str().unwrap();
    assert!(start_time.ends_with('Z'), "start_time is UTC: {start_time}");
    let frac = start_time
        .trim_end_matches('Z')
        .rsplit_once('.')
        .map(|(_, f)| f.len())
        .unwrap_or(0);
    assert!(
        frac <= 6,
        "start_time has at most microseconds: {start_time}"
    );

    // The label text: what pg_backup_stop returned.
    let label_plain = scratch.path().join(format!("{label_object}.plain"));
    let label_text = extract_entry(&label_plain, "backup_label");
    assert!(
        label_text.starts_with("START WAL LOCATION: "),
        "backup_label: {label_text}"
    );
    assert!(
        label_text.contains(&format!("(file {})", &fx.name["base_".len()..])),
        "backup_label names the start segment: {label_text}"
    );
    let map_text = extract_entry(&label_plain, "tablespace_map");
    assert_eq!(
        map_text.trim_end(),
        format!("{} {}", fx.ts_oid, fx.ts.path().display()),
        "tablespace_map"
    );
}

/// The data of entry `name` in an uncompressed tar, read with the tar crate (used only for the
/// two small label entries, whose hashes Go's reader has already vouched for).
fn extract_entry(tar_path: &Path, name: &str) -> String {
    let mut archive = tar::Archive::new(fs::File::open(tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            return s;
        }
    }
    panic!("no entry {name} in {}", tar_path.display());
}

/// A file tree: relative path → (kind, mode, sha256 of data or link target).
fn tree(root: &Path) -> BTreeMap<String, (char, u32, String)> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, (char, u32, String)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(key.clone(), ('5', mode, String::new()));
                walk(&e.path(), &key, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    key,
                    (
                        '2',
                        0,
                        fs::read_link(e.path()).unwrap().display().to_string(),
                    ),
                );
            } else {
                out.insert(key, ('0', mode, sha256_file(&e.path())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn restore_spec(dir: &Path, data: &Path, ts_oid: &str, ts: &Path) -> PathBuf {
    let path = dir.join(format!("spec-{}.json", object_name(data)));
    let spec = serde_json::json!({
        "base_prefix": data.to_str().unwrap(),
        "tablespaces": [ts_oid],
        ts_oid: {"loc": ts.to_str().unwrap(), "link": format!("pg_tblspc/{ts_oid}")},
    });
    fs::write(&path, spec.to_string()).unwrap();
    path
}

fn fetch(fx: &Fixture, dest: &Path, spec: &Path) -> Output {
    common::run_walrus(
        [
            "backup-fetch",
            dest.to_str().unwrap(),
            "LATEST",
            "--restore-spec",
            spec.to_str().unwrap(),
        ],
        &fx.env(),
    )
}

/// Partitions written by Go's tar writer (WAL-G's writer) restore with wal-rus.
#[test]
fn go_written_partitions_restore_with_walrus() {
    let test = "go_written_partitions_restore_with_walrus";
    let Some(_) = require_or_fail(Tool::Postgres, test) else {
        return;
    };
    let Some(bin) = oracle_bin(test) else { return };
    let fx = Fixture::new();
    let work = TempDir::new().unwrap();
    let w = work.path();

    // A: wal-rus restores its own backup (tablespace relocated beside it).
    let (a_data, a_ts) = (w.join("a/data"), w.join("a/ts"));
    let out = fetch(&fx, &a_data, &restore_spec(w, &a_data, &fx.ts_oid, &a_ts));
    assert!(
        out.status.success(),
        "backup-fetch of wal-rus's own backup failed\n{}",
        output_text(&out)
    );

    // Every stored tar is replaced by one Go's tar writer made from the same entries, in the
    // same order, with the same modes and data (leading-slash names, as WAL-G writes them).
    // The data partitions' files as wal-rus restored them in A match Go's reading of the
    // original entries, hash by hash.
    for part in fx.partitions() {
        let entries = go_list_object(&bin, &part, w);
        if is_data_partition(&object_name(&part)) {
            for e in entries.iter().filter(|e| e.typeflag == '0') {
                let restored = a_data.join(e.name.trim_start_matches('/'));
                assert_eq!(
                    sha256_file(&restored),
                    e.sha256,
                    "wal-rus restored {} differently from its tar entry",
                    e.name
                );
            }
        }
        go_rewrite(&bin, &part, &entries, w);
    }

    // One more Go-written partition: nested directories, a name that needs PAX (a 120-byte
    // component), a non-ASCII name (PAX), a plain file. Recorded in files_metadata.json as
    // WAL-G would (WAL-G and wal-rus only restore regular files that are listed there).
    let payload_dir = w.join("payload");
    fs::create_dir_all(&payload_dir).unwrap();
    let long = format!("long_{}", "n".repeat(115));
    let extra: Vec<(String, char, u32, Option<Vec<u8>>)> = vec![
        ("/walrus_go".into(), '5', 0o700, None),
        ("/walrus_go/nested".into(), '5', 0o750, None),
        (
            format!("/walrus_go/nested/{long}"),
            '0',
            0o600,
            Some(b"long name via PAX\n".to_vec()),
        ),
        (
            "/walrus_go/nested/\u{fc}nïcødé".into(),
            '0',
            0o640,
            Some((0..70_000u32).map(|i| (i % 251) as u8).collect()),
        ),
        ("/walrus_go/plain".into(), '0', 0o600, Some(Vec::new())),
    ];
    let mut list = String::new();
    for (i, (name, typ, mode, data)) in extra.iter().enumerate() {
        match data {
            Some(bytes) => {
                let src = payload_dir.join(format!("f{i}"));
                fs::write(&src, bytes).unwrap();
                list += &format!("{name}\t{typ}\t{mode:o}\t{}\n", src.display());
            }
            None => list += &format!("{name}\t{typ}\t{mode:o}\t-\n"),
        }
    }
    let list_path = w.join("part_900.list");
    fs::write(&list_path, list).unwrap();
    let go_tar = w.join("part_900.go.tar");
    fs::write(&go_tar, oracle(&bin, &["tar-write"], &list_path)).unwrap();
    let extra_object = fx.backup_dir().join("tar_partitions/part_900.tar.lz4");
    fs::write(&extra_object, oracle(&bin, &["compress", "lz4"], &go_tar)).unwrap();
    let fm_path = fx.backup_dir().join("files_metadata.json");
    let mut fm: Value = serde_json::from_slice(&fs::read(&fm_path).unwrap()).unwrap();
    for (name, ..) in &extra {
        fm["Files"][name] = serde_json::json!({"IsIncremented": false, "IsSkipped": false, "MTime": "2025-01-02T03:04:05.123456789Z", "UpdatesCount": 0});
    }
    fm["TarFileSets"]["part_900.tar.lz4"] = extra
        .iter()
        .map(|(n, ..)| Value::from(n.as_str()))
        .collect();
    fs::write(&fm_path, serde_json::to_vec(&fm).unwrap()).unwrap();
    oracle_json(&bin, "files-metadata-check", &fm_path); // still valid for WAL-G's decoder

    // B: wal-rus restores the backup with the Go-written partitions.
    let (b_data, b_ts) = (w.join("b/data"), w.join("b/ts"));
    let out = fetch(&fx, &b_data, &restore_spec(w, &b_data, &fx.ts_oid, &b_ts));
    assert!(
        out.status.success(),
        "backup-fetch of Go-written partitions failed\n{}",
        output_text(&out)
    );

    let mut a_tree = tree(&a_data);
    let mut b_tree = tree(&b_data);
    // The tablespace links point at each restore's own location; compare what is behind them.
    let link = format!("pg_tblspc/{}", fx.ts_oid);
    assert_eq!(
        a_tree.remove(&link).map(|v| v.2),
        Some(a_ts.display().to_string())
    );
    assert_eq!(
        b_tree.remove(&link).map(|v| v.2),
        Some(b_ts.display().to_string())
    );
    // The extra partition's entries, as written.
    for (name, typ, mode, data) in &extra {
        let rel = name.trim_start_matches('/');
        let got = b_tree
            .remove(rel)
            .unwrap_or_else(|| panic!("{name} from the Go-written part_900 was not restored"));
        let want_hash = data
            .as_ref()
            .map(|d| hex(&Sha256::digest(d)))
            .unwrap_or_default();
        assert_eq!(
            got,
            (*typ, *mode, want_hash),
            "{name} restored wrongly from the Go-written partition"
        );
    }
    assert_eq!(
        tree_diff(&a_tree, &b_tree),
        "",
        "data directory restored from Go-written partitions differs (A: wal-rus's own tar, B: Go's)"
    );
    assert_eq!(
        tree_diff(&tree(&a_ts), &tree(&b_ts)),
        "",
        "tablespace restored from Go-written partitions differs"
    );
    assert!(b_data.join("global/pg_control").is_file() && b_data.join("backup_label").is_file());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&b_data),
        mode(&a_data),
        "mode of the data directory itself"
    );
}

/// Replaces the stored tar `object` (listed by Go as `entries`) with a tar Go's writer made
/// from the same entries: data taken from the decompressed original, then compressed with
/// WAL-G's compressor for the object's extension.
fn go_rewrite(bin: &Path, object: &Path, entries: &[TarEntry], scratch: &Path) {
    let file = object_name(object);
    let (_, ext) = file
        .rsplit_once(".tar.")
        .unwrap_or_else(|| panic!("compressed tar object expected: {file}"));
    let method = if ext == "zst" { "zstd" } else { ext };
    let plain = scratch.join(format!("{file}.plain"));
    fs::write(&plain, oracle(bin, &["decompress", ext], object)).unwrap();
    let data_dir = scratch.join(format!("{file}.data"));
    fs::create_dir_all(&data_dir).unwrap();
    let mut archive = tar::Archive::new(fs::File::open(&plain).unwrap());
    let mut list = String::new();
    for (i, entry) in archive.entries().unwrap().enumerate() {
        let mut entry = entry.unwrap();
        let e = entries
            .get(i)
            .unwrap_or_else(|| panic!("{file}: more entries than Go listed"));
        assert_eq!(
            entry.path_bytes().as_ref(),
            e.name.as_bytes(),
            "{file}: entry {i} differs from Go's listing"
        );
        match e.typeflag {
            '0' => {
                let src = data_dir.join(format!("e{i}"));
                let mut out = fs::File::create(&src).unwrap();
                std::io::copy(&mut entry, &mut out).unwrap();
                list += &format!("{}\t0\t{:o}\t{}\n", e.name, e.mode, src.display());
            }
            '5' => list += &format!("{}\t5\t{:o}\t-\n", e.name, e.mode),
            '2' => {
                list += &format!(
                    "{}\t2\t{:o}\t{}\n",
                    e.name,
                    e.mode,
                    e.link.as_deref().unwrap_or("")
                )
            }
            other => panic!("unexpected entry type {other} in {file}"),
        }
    }
    let list_path = scratch.join(format!("{file}.list"));
    fs::write(&list_path, list).unwrap();
    let go_tar = scratch.join(format!("{file}.go.tar"));
    fs::write(&go_tar, oracle(bin, &["tar-write"], &list_path)).unwrap();
    // Go's reader agrees that the new tar has the same entries, modes and data.
    let relisted = parse_tar_list(&oracle(bin, &["tar-list"], &go_tar));
    let key = |es: &[TarEntry]| {
        es.iter()
            .map(|e| (e.name.clone(), e.typeflag, e.mode, e.size, e.sha256.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        key(&relisted),
        key(entries),
        "Go-written copy of {file} lists differently"
    );
    fs::write(object, oracle(bin, &["compress", method], &go_tar)).unwrap();
}

fn tree_diff(
    a: &BTreeMap<String, (char, u32, String)>,
    b: &BTreeMap<String, (char, u32, String)>,
) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out += &format!("only in A: {k}\n"),
            Some(w) if w != v => out += &format!("differs: {k}: A {v:?} B {w:?}\n"),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out += &format!("only in B: {k}\n");
    }
    out
}

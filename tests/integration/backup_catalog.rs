//! backup-list, backup-mark and delete against hand-built WAL-G catalogues.
//!
//! The catalogues are written straight into file storage (and once into s3s-fs) the way
//! WAL-G lays them out: sentinels beside the backup folders, `metadata.json`, tar partitions,
//! WAL segments, a backup history file, a timeline history file and a sentinel-less folder
//! left by a failed push. Sentinel modification times decide `LATEST` and the listing order,
//! so they are set explicitly. Each test runs the real binary and then checks exactly which
//! keys remain, which is what retention promises.

use crate::common;

use common::{S3Server, Tool, require_or_fail, run_walrus};
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};
use wal_rus::format::go_json::PreciseTime;
use wal_rus::format::lsn::Lsn;
use wal_rus::format::metadata::ExtendedMetadata;
use wal_rus::format::sentinel::{DATE_FMT, DeltaInfo, Sentinel};

const SEG: u64 = 16 << 20;
/// 2024-05-01T10:00:08Z, the first sentinel's time.
const T0: i64 = 1_714_557_608;

const B1: &str = "base_000000010000000000000002";
const B2: &str = "base_000000010000000000000004";
const D3: &str = "base_000000010000000000000006_D_000000010000000000000004";
const B4: &str = "base_000000010000000000000008";
/// A folder a failed push left behind: no sentinel.
const ORPHAN: &str = "base_000000010000000000000001";

fn seg_name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 0x100, segno % 0x100)
}

fn iso(secs: i64) -> String {
    PreciseTime { secs, nanos: 0 }.to_rfc3339_utc()
}

/// One backup to lay out.
struct Spec {
    name: &'static str,
    start_seg: u64,
    /// Segments the backup spans (finish LSN lies in start_seg + span - 1).
    span: u64,
    delta_from: Option<&'static str>,
    modified: i64,
}

fn catalogue_specs() -> Vec<Spec> {
    vec![
        Spec {
            name: B1,
            start_seg: 2,
            span: 1,
            delta_from: None,
            modified: T0,
        },
        Spec {
            name: B2,
            start_seg: 4,
            span: 2,
            delta_from: None,
            modified: T0 + 86_396,
        },
        Spec {
            name: D3,
            start_seg: 6,
            span: 1,
            delta_from: Some(B2),
            modified: T0 + 2 * 86_400,
        },
        Spec {
            name: B4,
            start_seg: 8,
            span: 1,
            delta_from: None,
            modified: T0 + 3 * 86_400,
        },
    ]
}

/// A file storage root holding a WAL-G catalogue.
struct Store {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Store {
    fn empty() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        fs::create_dir_all(&root).unwrap();
        Store { _dir: dir, root }
    }

    /// B1 (full), B2 (full), D3 (delta on B2), B4 (full), WAL 1..=9 on timeline 1, a backup
    /// history file, `00000002.history` and an orphan backup folder.
    fn standard() -> Store {
        let s = Store::empty();
        for spec in catalogue_specs() {
            s.backup(&spec, false);
        }
        for segno in 1..=9 {
            s.put(&format!("wal_005/{}.lz4", seg_name(1, segno)), b"wal", T0);
        }
        s.put(
            &format!("wal_005/{}.00000028.backup.lz4", seg_name(1, 2)),
            b"label",
            T0,
        );
        s.put(
            "wal_005/00000002.history.lz4",
            b"1\t0/A000000\tno recovery target\n",
            T0,
        );
        s.put(
            &format!("basebackups_005/{ORPHAN}/tar_partitions/part_001.tar.lz4"),
            b"tar",
            T0,
        );
        s
    }

    fn put(&self, key: &str, body: &[u8], mtime: i64) {
        let path = self.root.join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
        let f = fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime as u64))
            .unwrap();
    }

    fn backup(&self, spec: &Spec, permanent: bool) {
        let (sentinel, meta) = documents(spec, permanent);
        let folder = format!("basebackups_005/{}", spec.name);
        self.put(
            &format!("{folder}/tar_partitions/part_001.tar.lz4"),
            b"tar",
            spec.modified - 2,
        );
        self.put(
            &format!("{folder}/tar_partitions/pg_control.tar.lz4"),
            b"tar",
            spec.modified - 2,
        );
        self.put(
            &format!("{folder}/metadata.json"),
            meta.to_json().as_bytes(),
            spec.modified - 1,
        );
        self.put(
            &format!("{folder}/files_metadata.json"),
            b"{}",
            spec.modified - 1,
        );
        self.put(
            &format!("basebackups_005/{}_backup_stop_sentinel.json", spec.name),
            sentinel.to_json().as_bytes(),
            spec.modified,
        );
    }

    fn set_permanent(&self, name: &str, permanent: bool) {
        let path = self
            .root
            .join(format!("basebackups_005/{name}/metadata.json"));
        let mut meta = ExtendedMetadata::from_slice(&fs::read(&path).unwrap()).unwrap();
        meta.is_permanent = permanent;
        fs::write(&path, meta.to_json()).unwrap();
    }

    fn metadata(&self, name: &str) -> ExtendedMetadata {
        ExtendedMetadata::from_slice(
            &fs::read(
                self.root
                    .join(format!("basebackups_005/{name}/metadata.json")),
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn keys(&self) -> Vec<String> {
        assert!(self.root.is_dir(), "{} is gone", self.root.display());
        common::files_below(&self.root)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "WALG_FILE_PREFIX".to_string(),
                self.root.display().to_string(),
            ),
            ("WALG_LOG_LEVEL".to_string(), "NORMAL".to_string()),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        run_walrus(args, &self.env())
    }
}

fn documents(spec: &Spec, permanent: bool) -> (Sentinel, ExtendedMetadata) {
    let start = Lsn(spec.start_seg * SEG + 0x28);
    let finish = Lsn((spec.start_seg + spec.span - 1) * SEG + 0x100);
    let sentinel = Sentinel {
        lsn: Some(start),
        delta: spec.delta_from.map(|from| DeltaInfo {
            lsn: Lsn(4 * SEG + 0x28),
            from: from.to_string(),
            full_name: from.to_string(),
            count: 1,
        }),
        pg_version: 150_004,
        finish_lsn: Some(finish),
        system_identifier: Some(7_358_945_610_532_415_487),
        uncompressed_size: 1000,
        compressed_size: 100,
        version: 2,
        start_time: iso(spec.modified - 8),
        finish_time: iso(spec.modified - 1),
        date_fmt: DATE_FMT.to_string(),
        hostname: "db1".into(),
        data_dir: "/var/lib/postgresql/15/main".into(),
        is_permanent: permanent,
        ..Default::default()
    };
    let meta = ExtendedMetadata {
        start_time: iso(spec.modified - 8),
        finish_time: iso(spec.modified - 1),
        date_fmt: DATE_FMT.to_string(),
        hostname: "db1".into(),
        data_dir: "/var/lib/postgresql/15/main".into(),
        pg_version: 150_004,
        start_lsn: start,
        finish_lsn: finish,
        is_permanent: permanent,
        system_identifier: Some(7_358_945_610_532_415_487),
        uncompressed_size: 1000,
        compressed_size: 100,
        ..Default::default()
    };
    (sentinel, meta)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", common::output_text(&out));
    out
}

#[track_caller]
fn fails(out: Output, why: &str) -> Output {
    assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
    assert!(
        stderr(&out).contains(why),
        "expected {why:?}\n{}",
        common::output_text(&out)
    );
    out
}

/// Every key of a backup (sentinel and folder contents).
fn backup_keys(name: &str) -> Vec<String> {
    let mut k: Vec<String> = [
        "files_metadata.json",
        "metadata.json",
        "tar_partitions/part_001.tar.lz4",
        "tar_partitions/pg_control.tar.lz4",
    ]
    .iter()
    .map(|f| format!("basebackups_005/{name}/{f}"))
    .collect();
    k.push(format!("basebackups_005/{name}_backup_stop_sentinel.json"));
    k
}

fn wal_keys(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range
        .map(|s| format!("wal_005/{}.lz4", seg_name(1, s)))
        .collect()
}

const HISTORY: &str = "wal_005/00000002.history.lz4";

fn backup_history_key() -> String {
    format!("wal_005/{}.00000028.backup.lz4", seg_name(1, 2))
}

fn orphan_key() -> String {
    format!("basebackups_005/{ORPHAN}/tar_partitions/part_001.tar.lz4")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn backup_list_plain_json_pretty_detail() {
    let s = Store::standard();
    let out = ok(s.run(&["backup-list"]));
    assert_eq!(
        stdout(&out),
        "backup_name                                              modified             wal_file_name            storage_name\n\
         base_000000010000000000000002                            2024-05-01T10:00:08Z 000000010000000000000002 default\n\
         base_000000010000000000000004                            2024-05-02T10:00:04Z 000000010000000000000004 default\n\
         base_000000010000000000000006_D_000000010000000000000004 2024-05-03T10:00:08Z 000000010000000000000006 default\n\
         base_000000010000000000000008                            2024-05-04T10:00:08Z 000000010000000000000008 default\n"
    );

    let out = ok(s.run(&["backup-list", "--json"]));
    let text = stdout(&out);
    assert!(text.ends_with("]\n") && text.lines().count() == 1, "{text}");
    assert!(text.starts_with(
        "[{\"backup_name\":\"base_000000010000000000000002\",\"time\":\"2024-05-01T10:00:08Z\",\"wal_file_name\":\"000000010000000000000002\",\"storage_name\":\"default\"},"
    ), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[3]["backup_name"], B4);

    let out = ok(s.run(&["backup-list", "--json", "--pretty"]));
    let text = stdout(&out);
    assert!(text.starts_with("[\n    {\n        \"backup_name\": \"base_000000010000000000000002\",\n        \"time\": \"2024-05-01T10:00:08Z\",\n"), "{text}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);

    let out = ok(s.run(&["backup-list", "--pretty"]));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(lines[1].starts_with("| # | BACKUP NAME "), "{lines:?}");
    assert!(
        lines[3].starts_with("| 0 | base_000000010000000000000002 "),
        "{lines:?}"
    );
    assert!(
        lines[3].contains("| Wednesday, 01-May-24 10:00:08 UTC |"),
        "{lines:?}"
    );

    // --detail: metadata columns; rows by start time.
    let out = ok(s.run(&["backup-list", "--detail"]));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "backup_name",
            "modified",
            "wal_file_name",
            "storage_name",
            "start_time",
            "finish_time",
            "hostname",
            "data_dir",
            "pg_version",
            "start_lsn",
            "finish_lsn",
            "is_permanent"
        ]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            B2,
            "2024-05-02T10:00:04Z",
            "000000010000000000000004",
            "default",
            "2024-05-02T09:59:56Z",
            "2024-05-02T10:00:03Z",
            "db1",
            "/var/lib/postgresql/15/main",
            "150004",
            "0/4000028",
            "0/5000100",
            "false"
        ]
    );
    let out = ok(s.run(&["backup-list", "--detail", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[1]["start_lsn"], 4 * SEG + 0x28);
    assert_eq!(
        v[1]["system_identifier"].as_u64(),
        Some(7_358_945_610_532_415_487)
    );
    assert!(
        stdout(&out)
            .contains("\"storage_name\":\"default\",\"start_time\":\"2024-05-02T09:59:56Z\"")
    );
    let out = ok(s.run(&["backup-list", "--detail", "--pretty"]));
    assert!(stdout(&out).contains("| PERMANENT |"));

    // --detail needs every metadata.json.
    fs::remove_file(s.root.join(format!("basebackups_005/{B1}/metadata.json"))).unwrap();
    fails(s.run(&["backup-list", "--detail"]), "metadata.json");
    ok(s.run(&["backup-list"]));

    // No backups: nothing on stdout, a note on stderr, exit 0; JSON is an empty array.
    let empty = Store::empty();
    let out = ok(empty.run(&["backup-list"]));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("No backups found"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&ok(empty.run(&["backup-list", "--json"]))), "[]\n");
}

#[test]
fn backup_mark_both_ways_follows_the_chain() {
    let s = Store::standard();
    let sentinel_path = s
        .root
        .join(format!("basebackups_005/{D3}_backup_stop_sentinel.json"));
    let sentinel_before = fs::read(&sentinel_path).unwrap();
    let mtime_before = fs::metadata(&sentinel_path).unwrap().modified().unwrap();

    ok(s.run(&["backup-mark", D3]));
    assert!(s.metadata(D3).is_permanent && s.metadata(B2).is_permanent);
    assert!(!s.metadata(B1).is_permanent && !s.metadata(B4).is_permanent);
    // Only metadata.json changes: the sentinel keeps its bytes and its time (LATEST).
    assert_eq!(fs::read(&sentinel_path).unwrap(), sentinel_before);
    assert_eq!(
        fs::metadata(&sentinel_path).unwrap().modified().unwrap(),
        mtime_before
    );
    assert_eq!(
        s.metadata(D3).start_lsn,
        Lsn(6 * SEG + 0x28),
        "other members survive"
    );

    let out = ok(s.run(&["backup-mark", B2]));
    assert!(
        stderr(&out).contains("already marked as permanent"),
        "{}",
        stderr(&out)
    );

    fails(
        s.run(&["backup-mark", "-i", B2]),
        "There is permanent increment backup that depends on this backup.",
    );
    assert!(s.metadata(B2).is_permanent);
    ok(s.run(&["backup-mark", "-i", D3]));
    assert!(!s.metadata(D3).is_permanent && s.metadata(B2).is_permanent);
    ok(s.run(&["backup-mark", "--impermanent", B2]));
    assert!(!s.metadata(B2).is_permanent);

    fails(
        s.run(&["backup-mark", "base_00000001000000000000000F"]),
        "Backup 'base_00000001000000000000000F' does not exist.",
    );
}

#[test]
fn delete_retain_dry_run_then_confirm() {
    let s = Store::standard();
    let all = s.keys();

    // The 2nd newest backup is a delta: refused, as WAL-G does.
    fails(
        s.run(&["delete", "retain", "2", "--confirm"]),
        "is incremental and it's predecessors cannot be deleted",
    );
    assert_eq!(s.keys(), all);

    // Dry run: everything is listed, nothing goes.
    let doomed = sorted(
        [
            backup_keys(B1),
            wal_keys(1..=3),
            vec![backup_history_key(), orphan_key()],
        ]
        .concat(),
    );
    let out = ok(s.run(&["delete", "retain", "FULL", "2"]));
    assert_eq!(s.keys(), all);
    let err = stderr(&out);
    for k in &doomed {
        assert!(
            err.contains(&format!("Object marked for deletion: {k} storage=default")),
            "{k}\n{err}"
        );
    }
    assert!(
        err.contains(&format!(
            "Dry run: objects would be deleted count={}, Run with --confirm to execute",
            doomed.len()
        )),
        "{err}"
    );

    // FIND_FULL 2 lands on the same full backup; --confirm deletes.
    let out = ok(s.run(&["delete", "retain", "FIND_FULL", "2", "--confirm"]));
    assert!(
        stderr(&out).contains(&format!(
            "Objects deleted successfully: count={}",
            doomed.len()
        )),
        "{}",
        stderr(&out)
    );
    let kept: Vec<String> = all
        .iter()
        .filter(|k| !doomed.contains(k))
        .cloned()
        .collect();
    assert_eq!(s.keys(), kept);
    assert!(kept.contains(&HISTORY.to_string()));
    assert!(kept.contains(&format!("wal_005/{}.lz4", seg_name(1, 4))));

    // Fewer backups than asked for: nothing to do, exit 0.
    let out = ok(s.run(&["delete", "retain", "5", "--confirm"]));
    assert!(stderr(&out).contains("No backup found for deletion"));
    assert_eq!(s.keys(), kept);

    // retain 1: only the newest backup and WAL from its start on.
    ok(s.run(&["delete", "retain", "1", "--confirm"]));
    assert_eq!(
        s.keys(),
        sorted([backup_keys(B4), wal_keys(8..=9), vec![HISTORY.to_string()]].concat())
    );
}

#[test]
fn delete_retain_keeps_permanent_backups_and_their_wal() {
    let s = Store::standard();
    s.set_permanent(B1, true);
    ok(s.run(&["delete", "retain", "1", "--confirm"]));
    // B1 spans segment 2 only: segno(start-1)..=segno(finish-1).
    assert_eq!(
        s.keys(),
        sorted(
            [
                backup_keys(B1),
                backup_keys(B4),
                wal_keys(2..=2),
                wal_keys(8..=9),
                vec![backup_history_key(), HISTORY.to_string()]
            ]
            .concat()
        )
    );

    // A permanent backup spanning two segments keeps both.
    let s = Store::standard();
    s.set_permanent(B2, true);
    ok(s.run(&["delete", "retain", "1", "--confirm"]));
    let keys = s.keys();
    assert!(
        keys.contains(&format!("wal_005/{}.lz4", seg_name(1, 4)))
            && keys.contains(&format!("wal_005/{}.lz4", seg_name(1, 5)))
    );
    assert!(!keys.contains(&format!("wal_005/{}.lz4", seg_name(1, 6))));
    assert!(keys.contains(&format!("basebackups_005/{B2}_backup_stop_sentinel.json")));
    assert!(!keys.contains(&format!("basebackups_005/{D3}_backup_stop_sentinel.json")));
}

#[test]
fn delete_retain_after() {
    // retain 1 alone would keep only B4; --after B2 keeps B2 on (B2 is older, so it wins).
    let s = Store::standard();
    ok(s.run(&["delete", "retain", "1", "--after", B2, "--confirm"]));
    let keys = s.keys();
    assert!(keys.contains(&format!("basebackups_005/{D3}_backup_stop_sentinel.json")));
    assert!(keys.contains(&format!("basebackups_005/{B2}_backup_stop_sentinel.json")));
    assert!(!keys.contains(&format!("basebackups_005/{B1}_backup_stop_sentinel.json")));

    // By time: the oldest backup at or after the time is B2.
    let s = Store::standard();
    ok(s.run(&[
        "delete",
        "retain",
        "FULL",
        "1",
        "--after",
        "2024-05-02T00:00:00Z",
        "--confirm",
    ]));
    assert!(
        s.keys()
            .contains(&format!("basebackups_005/{B2}_backup_stop_sentinel.json"))
    );
    assert!(
        !s.keys()
            .contains(&format!("basebackups_005/{B1}_backup_stop_sentinel.json"))
    );
    fails(
        s.run(&["delete", "retain", "1", "--after", "2999-01-01T00:00:00Z"]),
        "future",
    );
}

#[test]
fn delete_before_by_name_and_time() {
    let s = Store::standard();
    fails(
        s.run(&["delete", "before", D3, "--confirm"]),
        "is incremental",
    );
    fails(
        s.run(&["delete", "before", "base_00000009"]),
        "No backup found",
    );
    fails(
        s.run(&["delete", "before", "FULL", B2]),
        "unsupported modifier",
    );
    fails(
        s.run(&["delete", "before", "2999-01-01T00:00:00Z"]),
        "cannot delete before future date",
    );

    // Between B2's and D3's sentinel times: the oldest backup from then on is D3, a delta.
    let between = "2024-05-03T00:00:00Z";
    fails(
        s.run(&["delete", "before", between, "--confirm"]),
        "is incremental",
    );
    ok(s.run(&["delete", "before", "FIND_FULL", between, "--confirm"]));
    let after_b2 = s.keys();
    assert!(after_b2.contains(&format!("basebackups_005/{B2}_backup_stop_sentinel.json")));
    assert!(!after_b2.contains(&format!("basebackups_005/{B1}_backup_stop_sentinel.json")));
    assert!(!after_b2.contains(&orphan_key()) && after_b2.contains(&HISTORY.to_string()));

    let s = Store::standard();
    ok(s.run(&["delete", "before", "FIND_FULL", D3, "--confirm"]));
    assert_eq!(s.keys(), after_b2);

    // Before the oldest backup: only what is older than B1 (the orphan folder and WAL 1).
    let s = Store::standard();
    let all = s.keys();
    ok(s.run(&["delete", "before", "2000-01-01T00:00:00Z", "--confirm"]));
    let gone: Vec<String> = all
        .iter()
        .filter(|k| !s.keys().contains(k))
        .cloned()
        .collect();
    assert_eq!(
        gone,
        sorted(vec![
            orphan_key(),
            format!("wal_005/{}.lz4", seg_name(1, 1))
        ])
    );

    // --use-sentinel-time orders by metadata start_time: same answer here.
    let s = Store::standard();
    ok(s.run(&["delete", "before", B2, "--use-sentinel-time", "--confirm"]));
    let keys = s.keys();
    assert!(!keys.contains(&format!("basebackups_005/{B1}_backup_stop_sentinel.json")));
    assert!(!keys.contains(&format!("wal_005/{}.lz4", seg_name(1, 3))));
    assert!(keys.contains(&format!("wal_005/{}.lz4", seg_name(1, 4))));
}

#[test]
fn delete_everything() {
    let s = Store::standard();
    s.set_permanent(B2, true);
    let all = s.keys();
    fails(
        s.run(&["delete", "everything", "--confirm"]),
        "Found permanent backups=map[base_000000010000000000000004:true]",
    );
    assert_eq!(s.keys(), all);
    let out = ok(s.run(&["delete", "everything", "FORCE"]));
    assert!(stderr(&out).contains(&format!("count={}", all.len())));
    assert_eq!(s.keys(), all);
    ok(s.run(&["delete", "everything", "FORCE", "--confirm"]));
    assert!(s.keys().is_empty(), "{:?}", s.keys());

    let s = Store::standard();
    ok(s.run(&["delete", "everything", "--confirm"]));
    assert!(s.keys().is_empty());
}

#[test]
fn delete_target() {
    let s = Store::standard();
    let all = s.keys();
    // The full backup and its delta; no WAL.
    ok(s.run(&["delete", "target", B2]));
    assert_eq!(s.keys(), all);
    ok(s.run(&["delete", "target", B2, "--confirm"]));
    let expected: Vec<String> = all
        .iter()
        .filter(|k| !backup_keys(B2).contains(k) && !backup_keys(D3).contains(k))
        .cloned()
        .collect();
    assert_eq!(s.keys(), expected);

    // FIND_FULL from the delta removes the whole chain too.
    let s = Store::standard();
    ok(s.run(&["delete", "target", "FIND_FULL", D3, "--confirm"]));
    assert_eq!(s.keys(), expected);

    // The delta alone.
    let s = Store::standard();
    ok(s.run(&["delete", "target", D3, "--confirm"]));
    let expected_d3: Vec<String> = all
        .iter()
        .filter(|k| !backup_keys(D3).contains(k))
        .cloned()
        .collect();
    assert_eq!(s.keys(), expected_d3);

    // Permanent backups are refused (WAL-G's check never fires; wal-rus's does).
    let s = Store::standard();
    s.set_permanent(D3, true);
    fails(
        s.run(&["delete", "target", B2, "--confirm"]),
        &format!("Unable to delete permanent backup {D3}"),
    );
    assert_eq!(s.keys(), all);
    fails(
        s.run(&["delete", "target", "base_00000001000000000000000F"]),
        "does not exist",
    );
}

#[test]
fn delete_garbage() {
    // No permanent backup: the target is B1, so only the orphan folder and WAL 1 go.
    let s = Store::standard();
    let all = s.keys();
    ok(s.run(&["delete", "garbage", "--confirm"]));
    let gone: Vec<String> = all
        .iter()
        .filter(|k| !s.keys().contains(k))
        .cloned()
        .collect();
    assert_eq!(
        gone,
        sorted(vec![
            orphan_key(),
            format!("wal_005/{}.lz4", seg_name(1, 1))
        ])
    );

    // B1 permanent: the oldest non-permanent is B2. B1 and its WAL stay.
    let with_permanent = || {
        let s = Store::standard();
        s.set_permanent(B1, true);
        s
    };
    let s = with_permanent();
    ok(s.run(&["delete", "garbage", "ARCHIVES", "--confirm"]));
    let gone: Vec<String> = all
        .iter()
        .filter(|k| !s.keys().contains(k))
        .cloned()
        .collect();
    assert_eq!(
        gone,
        sorted(vec![
            format!("wal_005/{}.lz4", seg_name(1, 1)),
            format!("wal_005/{}.lz4", seg_name(1, 3))
        ])
    );

    let s = with_permanent();
    ok(s.run(&["delete", "garbage", "BACKUPS", "--confirm"]));
    let gone: Vec<String> = all
        .iter()
        .filter(|k| !s.keys().contains(k))
        .cloned()
        .collect();
    assert_eq!(gone, vec![orphan_key()]);

    let s = with_permanent();
    ok(s.run(&["delete", "garbage", "--confirm"]));
    let gone: Vec<String> = all
        .iter()
        .filter(|k| !s.keys().contains(k))
        .cloned()
        .collect();
    assert_eq!(
        gone,
        sorted(vec![
            orphan_key(),
            format!("wal_005/{}.lz4", seg_name(1, 1)),
            format!("wal_005/{}.lz4", seg_name(1, 3))
        ])
    );

    // Only permanent backups: nothing to do.
    let s = Store::standard();
    for b in [B1, B2, D3, B4] {
        s.set_permanent(b, true);
    }
    let out = ok(s.run(&["delete", "garbage", "--confirm"]));
    assert!(stderr(&out).contains("Couldn't find any non-permanent backups"));
    assert_eq!(s.keys(), all);
}

#[test]
fn delete_bad_arguments_touch_nothing() {
    let s = Store::standard();
    let all = s.keys();
    for args in [
        vec!["delete"],
        vec!["delete", "retain", "0"],
        vec!["delete", "retain", "many"],
        vec!["delete", "everything", "NOW"],
        vec!["delete", "garbage", "EVERYTHING"],
        vec!["delete", "before", B2, "--after", B1],
    ] {
        let out = s.run(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}\n{}",
            common::output_text(&out)
        );
    }
    assert_eq!(s.keys(), all);
}

#[test]
fn delete_on_s3_uses_batch_delete() {
    let Some(_) = require_or_fail(Tool::S3s, "delete_on_s3_uses_batch_delete") else {
        return;
    };
    use wal_rus::storage::s3::{S3Config, S3Storage};
    use wal_rus::storage::{BytesBody, Storage};
    let s3 = S3Server::start();
    let storage = S3Storage::new(S3Config {
        delete_batch: 3,
        ..s3.storage_config("pg/")
    })
    .unwrap();
    let put = |key: &str, body: &[u8]| {
        storage.put(key, &BytesBody(body)).unwrap();
    };
    for segno in 1..=9 {
        put(&format!("wal_005/{}.lz4", seg_name(1, segno)), b"wal");
    }
    put(HISTORY, b"history");
    // S3 times have one-second resolution: keep sentinels apart so the order is certain.
    let specs = catalogue_specs();
    for (i, spec) in [&specs[1], &specs[3]].into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (sentinel, meta) = documents(spec, false);
        put(
            &format!(
                "basebackups_005/{}/tar_partitions/part_001.tar.lz4",
                spec.name
            ),
            b"tar",
        );
        put(
            &format!("basebackups_005/{}/metadata.json", spec.name),
            meta.to_json().as_bytes(),
        );
        put(
            &format!("basebackups_005/{}_backup_stop_sentinel.json", spec.name),
            sentinel.to_json().as_bytes(),
        );
    }
    let mut env = s3.env("pg");
    // Several DeleteObjects requests for the ten keys.
    env.push(("S3_DELETE_BATCH_SIZE".to_string(), "4".to_string()));
    let listed = ok(run_walrus(["backup-list"], &env));
    let names: Vec<String> = stdout(&listed)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names, [B2, B4]);

    let before = s3.list_keys("pg/");
    ok(run_walrus(["delete", "retain", "1"], &env));
    assert_eq!(s3.list_keys("pg/"), before);
    let out = ok(run_walrus(["delete", "retain", "1", "--confirm"], &env));
    assert!(
        stderr(&out).contains("Objects deleted successfully: count=10"),
        "{}",
        common::output_text(&out)
    );
    let mut expected = vec![
        format!("pg/basebackups_005/{B4}/metadata.json"),
        format!("pg/basebackups_005/{B4}/tar_partitions/part_001.tar.lz4"),
        format!("pg/basebackups_005/{B4}_backup_stop_sentinel.json"),
        format!("pg/{HISTORY}"),
    ];
    expected.extend(wal_keys(8..=9).into_iter().map(|k| format!("pg/{k}")));
    assert_eq!(s3.list_keys("pg/"), sorted(expected));
}

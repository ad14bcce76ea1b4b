//! Unit tests of the WAL commands run whole against the in-memory storage: what wal-push
//! stores, what wal-fetch writes into `pg_wal`, and what each does when storage fails,
//! without PostgreSQL or an S3 server. The fixture is shared with the catalogue's and
//! backup-push's tests.

use super::{wal_fetch, wal_push};
use crate::config::{Cmd, Settings, Sources};
use crate::error::{EXIT_NOT_FOUND, Error};
use crate::format::wal_name::Segment;
use crate::storage::Op;
use crate::storage::memory::{Fault, MemStorage};
use std::fs;
use std::path::{Path, PathBuf};

/// 1 MiB segments (`WALG_PG_WAL_SIZE=1`) keep every test small.
pub const SEG: u64 = 1 << 20;
const PAGE: usize = 8192;

/// A scratch directory, an in-memory storage, and the settings that point at it.
pub struct Fixture {
    pub mem: MemStorage,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Fixture {
    /// Settings from `env` over the defaults below; no process environment, no file.
    pub fn new(env: &[(&str, &str)]) -> Fixture {
        let mut all: Vec<(String, String)> = [
            ("WALG_FILE_PREFIX", "/nonexistent/walrus-unit"),
            ("WALG_PG_WAL_SIZE", "1"),
            // More than one would start wal-prefetch: the test binary itself.
            ("WALG_DOWNLOAD_CONCURRENCY", "1"),
            ("WALG_UPLOAD_CONCURRENCY", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        Fixture {
            mem: MemStorage::new(),
            dir: tempfile::tempdir().expect("scratch directory"),
            env: all,
        }
    }

    /// The settings `cmd` would run with, its storage the fixture's.
    pub fn settings(&self, cmd: Cmd) -> Settings {
        let env = self.env.clone();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut s = Settings::load(&Sources::from_entries(lookup, Vec::new()), cmd)
            .expect("test settings load");
        s.memory = Some(self.mem.clone());
        s
    }

    /// `pg_wal` below the scratch directory, with its `archive_status`.
    pub fn wal_dir(&self) -> PathBuf {
        let d = self.dir.path().join("pg_wal");
        fs::create_dir_all(d.join("archive_status")).expect("pg_wal");
        d
    }

    /// Writes segment `segno` of timeline 1 into `pg_wal`: valid page headers, a body
    /// that compresses but differs per segment (`salt` makes a second version).
    pub fn segment(&self, segno: u64, salt: u8) -> PathBuf {
        let path = self.wal_dir().join(segment_name(1, segno));
        fs::write(&path, segment_bytes(1, segno, salt)).expect("write segment");
        path
    }
}

/// WAL-G's name of a segment.
pub fn segment_name(tli: u32, segno: u64) -> String {
    Segment {
        timeline: tli,
        segno,
    }
    .name(SEG)
}

/// A segment PostgreSQL 15 could have written, as far as wal-fetch checks: the page headers
/// of the format's own tests, and half of each page varying so every codec has work to do.
pub fn segment_bytes(tli: u32, segno: u64, salt: u8) -> Vec<u8> {
    let seg = Segment {
        timeline: tli,
        segno,
    };
    let mut data = crate::format::wal_page::tests::segment(seg, |_| tli);
    let mut x = segno.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(salt);
    for page in data.chunks_mut(PAGE) {
        for b in page[40..PAGE / 2].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x % 16) as u8 + salt;
        }
    }
    data
}

fn fetch(f: &Fixture, name: &str, dest: &Path) -> Result<(), Error> {
    wal_fetch::run(&f.settings(Cmd::WalFetch), name, dest)
}

fn puts(mem: &MemStorage) -> usize {
    mem.calls().iter().filter(|(op, _)| *op == Op::Put).count()
}

#[test]
fn every_method_round_trips_under_walg_keys() {
    for (method, ext) in [
        ("lz4", ".lz4"),
        ("zstd", ".zst"),
        ("lzma", ".lzma"),
        ("brotli", ".br"),
    ] {
        let f = Fixture::new(&[("WALG_COMPRESSION_METHOD", method)]);
        let seg = f.segment(3, 0);
        let pushed = wal_push::run(&f.settings(Cmd::WalPush), &seg).unwrap();
        assert!(matches!(pushed, wal_push::Pushed::Uploaded));
        let name = segment_name(1, 3);
        assert_eq!(f.mem.keys(), [format!("wal_005/{name}{ext}")], "{method}");
        let stored = f.mem.contents(&f.mem.keys()[0]).unwrap();
        assert!(
            stored.len() < SEG as usize,
            "{method} stored {}",
            stored.len()
        );
        let dest = f.dir.path().join("restored");
        fetch(&f, &name, &dest).unwrap();
        assert!(
            fs::read(&dest).unwrap() == segment_bytes(1, 3, 0),
            "{method}"
        );
    }
}

#[test]
fn a_second_push_of_the_same_segment_is_no_conflict() {
    let f = Fixture::new(&[("WALG_PREVENT_WAL_OVERWRITE", "true")]);
    let seg = f.segment(5, 0);
    let s = f.settings(Cmd::WalPush);
    wal_push::run(&s, &seg).unwrap();
    let before = puts(&f.mem);
    let again = wal_push::run(&s, &seg).unwrap();
    assert!(matches!(again, wal_push::Pushed::AlreadyArchived));
    assert_eq!(puts(&f.mem), before, "an equal copy is not stored again");
    // Other bytes under the same name are refused, and the archived copy stays.
    let stored = f.mem.contents(&f.mem.keys()[0]).unwrap();
    f.segment(5, 1);
    let e = wal_push::run(&s, &seg).unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert_eq!(e.exit_code(), 1);
    assert_eq!(f.mem.contents(&f.mem.keys()[0]).unwrap(), stored);
}

#[test]
fn a_refused_upload_fails_the_push_and_stores_nothing() {
    let f = Fixture::new(&[]);
    let seg = f.segment(7, 0);
    f.mem.fail_next(Op::Put, 1, Fault::Denied);
    let e = wal_push::run(&f.settings(Cmd::WalPush), &seg).unwrap_err();
    assert!(matches!(e, Error::Storage(_)), "{e}");
    assert!(f.mem.keys().is_empty());
    // PostgreSQL retries; the retry stores it.
    wal_push::run(&f.settings(Cmd::WalPush), &seg).unwrap();
    assert_eq!(f.mem.keys().len(), 1);
}

#[test]
fn background_uploads_are_not_repeated() {
    let f = Fixture::new(&[("WALG_UPLOAD_CONCURRENCY", "3")]);
    let s = f.settings(Cmd::WalPush);
    let first = f.segment(10, 0);
    let status = f.wal_dir().join("archive_status");
    for segno in 11..15 {
        f.segment(segno, 0);
        fs::write(status.join(format!("{}.ready", segment_name(1, segno))), "").unwrap();
    }
    wal_push::run(&s, &first).unwrap();
    // How many the workers took before the foreground finished depends on timing; what
    // may not vary is that each is stored once, and its later push costs no upload.
    for segno in 11..15 {
        let name = segment_name(1, segno);
        let key = format!("wal_005/{name}.lz4");
        let in_background = f.mem.contents(&key).is_some();
        let before = puts(&f.mem);
        let pushed = wal_push::run(&s, &f.wal_dir().join(&name)).unwrap();
        if in_background {
            assert!(
                matches!(pushed, wal_push::Pushed::DoneInBackground),
                "{name}"
            );
            assert_eq!(puts(&f.mem), before, "{name} uploaded twice");
        } else {
            assert!(matches!(pushed, wal_push::Pushed::Uploaded), "{name}");
        }
        assert!(f.mem.contents(&key).is_some(), "{name}");
    }
}

#[test]
fn a_missing_segment_exits_74_and_writes_nothing() {
    let f = Fixture::new(&[]);
    let dest = f.wal_dir().join("RECOVERYXLOG");
    let e = fetch(&f, &segment_name(1, 9), &dest).unwrap_err();
    assert_eq!(e.exit_code(), EXIT_NOT_FOUND, "{e}");
    assert_eq!(
        e.to_string(),
        format!("Archive '{}' does not exist.", segment_name(1, 9))
    );
    assert_eq!(
        fs::read_dir(f.wal_dir()).unwrap().count(),
        1,
        "only archive_status"
    );
}

#[test]
fn a_broken_download_is_retried_and_a_corrupt_object_never_lands() {
    let f = Fixture::new(&[]);
    let seg = f.segment(4, 0);
    wal_push::run(&f.settings(Cmd::WalPush), &seg).unwrap();
    let name = segment_name(1, 4);
    let key = f.mem.keys()[0].clone();
    let restored = f.dir.path().join("once");
    f.mem.fail_next(Op::Get, 1, Fault::BrokenBody);
    fetch(&f, &name, &restored).unwrap();
    assert!(fs::read(&restored).unwrap() == segment_bytes(1, 4, 0));

    // The same object with one byte flipped in its middle: an error, and no file at all.
    let mut bad = f.mem.contents(&key).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    use crate::storage::{BytesBody, Storage};
    f.mem.put(&key, &BytesBody(&bad)).unwrap();
    let dir = f.dir.path().join("restore-dir");
    fs::create_dir(&dir).unwrap();
    let e = fetch(&f, &name, &dir.join(&name)).unwrap_err();
    assert_ne!(e.exit_code(), EXIT_NOT_FOUND, "{e}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "left behind: {e}");
}

#[test]
fn history_files_round_trip_and_are_never_overwritten() {
    let f = Fixture::new(&[]);
    let path = f.wal_dir().join("00000002.history");
    fs::write(&path, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let s = f.settings(Cmd::WalPush);
    wal_push::run(&s, &path).unwrap();
    // A timeline history is protected even without WALG_PREVENT_WAL_OVERWRITE.
    fs::write(&path, "1\t0/4000000\tother\n").unwrap();
    assert!(matches!(wal_push::run(&s, &path), Err(Error::Conflict(_))));
    let dest = f.dir.path().join("h");
    fetch(&f, "00000002.history", &dest).unwrap();
    assert_eq!(
        fs::read_to_string(dest).unwrap(),
        "1\t0/3000000\tno recovery target specified\n"
    );
}

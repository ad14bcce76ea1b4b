//! The promises of the `Storage` trait, checked on file storage and on `MemStorage` alike
//! (so the stand-in behaves as the real thing where callers rely on it), and the faults
//! `MemStorage` injects.

use super::*;
use crate::storage::BytesBody;
use crate::storage::fs::FsStorage;

/// A storage under test, with a way to leave a killed writer's leftover in it.
struct Subject {
    storage: Arc<dyn Storage>,
    kill_writer: Box<dyn Fn(&str)>,
    _dir: Option<tempfile::TempDir>,
}

fn subjects() -> Vec<(&'static str, Subject)> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let fs = Subject {
        storage: Arc::new(FsStorage::new(root.to_str().unwrap())),
        kill_writer: Box::new(move |key: &str| {
            // What a writer killed between create and rename leaves: its temporary file.
            let tmp = root.join(format!("{key}.tmp.20261124T031027Z-0123456789abcdef"));
            std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
            std::fs::write(tmp, b"half").unwrap();
        }),
        _dir: Some(dir),
    };
    let mem = Arc::new(MemStorage::new());
    let leaver = mem.clone();
    let mem = Subject {
        storage: mem,
        kill_writer: Box::new(move |key: &str| leaver.leave_interrupted(key, UtcTime(1))),
        _dir: None,
    };
    vec![("fs", fs), ("memory", mem)]
}

fn read_all(st: &dyn Storage, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    st.get(key).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn keys(st: &dyn Storage, prefix: &str, recursive: bool) -> Vec<String> {
    let mut out = Vec::new();
    st.list(prefix, recursive, &mut |m| out.push(m.key))
        .unwrap();
    out
}

/// A body that gives four bytes and then fails.
struct Failing;

impl BodySource for Failing {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(io::Read::chain(&b"half"[..], FailingReader)))
    }
}

struct FailingReader;

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("source broke"))
    }
}

/// File and memory storage take streams whole: lending them a buffer is a mistake.
struct NoParts;

impl PartBuffers for NoParts {
    fn lease_part(&self) -> io::Result<crate::storage::PartBuffer<'_>> {
        panic!("this storage needs no part buffers")
    }
    fn part_size(&self) -> usize {
        5 << 20
    }
}

#[test]
fn stores_reads_lists_and_deletes_alike() {
    for (name, s) in subjects() {
        let st = s.storage.as_ref();
        assert_eq!(st.put("wal_005/a.lz4", &BytesBody(b"hello")).unwrap(), 5);
        st.put("wal_005/b.lz4", &BytesBody(b"x")).unwrap();
        st.put("wal_005/sub/c", &BytesBody(b"yz")).unwrap();
        st.put("basebackups_005/d", &BytesBody(b"")).unwrap();
        assert_eq!(read_all(st, "wal_005/a.lz4"), b"hello", "{name}");
        st.put("wal_005/a.lz4", &BytesBody(b"again")).unwrap();
        assert_eq!(read_all(st, "wal_005/a.lz4"), b"again", "{name}: replaced");
        assert!(
            matches!(st.get("wal_005/none"), Err(StorageError::NotFound { .. })),
            "{name}"
        );
        let meta = st.head("wal_005/sub/c").unwrap().unwrap();
        assert_eq!(
            (meta.key.as_str(), meta.size),
            ("wal_005/sub/c", 2),
            "{name}"
        );
        assert!(st.head("wal_005/zz").unwrap().is_none(), "{name}");

        assert_eq!(
            keys(st, "wal_005/", false),
            ["wal_005/a.lz4", "wal_005/b.lz4"]
        );
        assert_eq!(
            keys(st, "wal_005/", true),
            ["wal_005/a.lz4", "wal_005/b.lz4", "wal_005/sub/c"],
            "{name}"
        );
        assert_eq!(keys(st, "wal_005/a", false), ["wal_005/a.lz4"], "{name}");
        assert_eq!(keys(st, "wal_005/s", true), ["wal_005/sub/c"], "{name}");
        assert!(keys(st, "nothing/", true).is_empty(), "{name}");

        st.delete_many(&["wal_005/a.lz4".into(), "wal_005/missing".into()])
            .unwrap();
        assert!(st.head("wal_005/a.lz4").unwrap().is_none(), "{name}");
        assert_eq!(keys(st, "", true).len(), 3, "{name}");
    }
}

#[test]
fn failed_writes_leave_nothing() {
    for (name, s) in subjects() {
        let st = s.storage.as_ref();
        let err = st.put("wal_005/f", &Failing).unwrap_err();
        assert!(err.to_string().contains("source broke"), "{name}: {err}");
        let mut stream = io::Read::chain(&b"half"[..], FailingReader);
        let err = st
            .put_stream("basebackups_005/p", &mut stream, &NoParts, 2)
            .unwrap_err();
        assert!(err.to_string().contains("source broke"), "{name}: {err}");
        assert!(keys(st, "", true).is_empty(), "{name}");
        assert!(st.head("wal_005/f").unwrap().is_none(), "{name}");
        assert!(
            st.interrupted_writes("", UtcTime(i64::MAX))
                .unwrap()
                .is_empty(),
            "{name}: a write that failed cleans up after itself"
        );
        let mut whole = &b"streamed"[..];
        assert_eq!(st.put_stream("p", &mut whole, &NoParts, 2).unwrap(), 8);
        assert_eq!(read_all(st, "p"), b"streamed", "{name}");
    }
}

#[test]
fn killed_writes_are_listed_until_discarded() {
    for (name, s) in subjects() {
        let st = s.storage.as_ref();
        st.put("wal_005/kept", &BytesBody(b"k")).unwrap();
        (s.kill_writer)("wal_005/000000010000000000000003.lz4");
        assert_eq!(keys(st, "wal_005/", true), ["wal_005/kept"], "{name}");
        let found = st.interrupted_writes("wal_005", UtcTime(i64::MAX)).unwrap();
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].key, "wal_005/000000010000000000000003.lz4");
        let started_after = UtcTime(found[0].started.0 + 1);
        assert_eq!(
            st.interrupted_writes("wal_005", found[0].started)
                .unwrap()
                .len(),
            0,
            "{name}: only writes started before the cut-off"
        );
        assert!(
            st.interrupted_writes("basebackups_005", started_after)
                .unwrap()
                .is_empty(),
            "{name}: only under the prefix"
        );
        st.discard_interrupted(&found).unwrap();
        assert!(
            st.interrupted_writes("wal_005", UtcTime(i64::MAX))
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(keys(st, "wal_005/", true), ["wal_005/kept"], "{name}");
    }
}

#[test]
fn injected_faults_hit_the_next_calls_only() {
    let st = MemStorage::new();
    st.fail_next(Op::Put, 2, Fault::Retryable);
    for _ in 0..2 {
        let err = st.put("k", &BytesBody(b"v")).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(st.contents("k").is_none());
    }
    st.put("k", &BytesBody(b"v")).unwrap();
    assert_eq!(st.contents("k").unwrap(), b"v");
    assert_eq!(
        st.calls(),
        [
            (Op::Put, "k".to_string()),
            (Op::Put, "k".to_string()),
            (Op::Put, "k".to_string())
        ]
    );

    st.fail_next(Op::Get, 1, Fault::Denied);
    let err = st.get("k").err().unwrap();
    assert!(
        matches!(&err, StorageError::Remote { status: 403, .. }) && !err.is_retryable(),
        "{err}"
    );
    assert_eq!(read_all(&st, "k"), b"v");
}

#[test]
fn injected_faults_can_aim_at_one_key() {
    let st = MemStorage::new();
    st.put("a", &BytesBody(b"1")).unwrap();
    st.put("b", &BytesBody(b"2")).unwrap();
    st.fail_next_on(Op::Get, "b", 1, Fault::Missing);
    st.fail_next_on(Op::Head, "b", 1, Fault::Missing);
    assert_eq!(read_all(&st, "a"), b"1");
    assert!(matches!(st.get("b"), Err(StorageError::NotFound { .. })));
    assert!(st.head("b").unwrap().is_none());
    assert_eq!(read_all(&st, "b"), b"2", "only the next call");
    assert_eq!(st.head("b").unwrap().unwrap().size, 1);

    st.fail_next_on(Op::List, "a", 1, Fault::Retryable);
    assert!(keys(&st, "b", true) == ["b"]);
    assert!(st.list("a", true, &mut |_| {}).unwrap_err().is_retryable());

    st.fail_next_on(Op::Delete, "b", 1, Fault::Denied);
    assert!(st.delete_many(&["a".into(), "b".into()]).is_err());
    assert!(
        st.contents("a").is_none(),
        "keys before the failure are gone"
    );
    assert!(st.contents("b").is_some(), "the refused one is kept");
}

#[test]
fn a_broken_body_fails_half_way() {
    let st = MemStorage::new();
    st.put("obj", &BytesBody(b"0123456789")).unwrap();
    st.fail_next(Op::Get, 1, Fault::BrokenBody);
    let mut reader = st.get("obj").unwrap();
    let mut got = Vec::new();
    let err = reader.read_to_end(&mut got).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(got, b"01234", "the first half arrived, and no more");
    assert!(crate::storage::error::is_retryable_io(&err));
}

#[test]
fn times_can_be_set() {
    let st = MemStorage::new();
    st.put("x", &BytesBody(b"")).unwrap();
    let t = PreciseTime::from_utc(UtcTime(1_700_000_000));
    assert!(st.set_modified("x", t));
    assert!(!st.set_modified("y", t));
    assert_eq!(st.head("x").unwrap().unwrap().last_modified, t);
    let mut listed = Vec::new();
    st.list("", true, &mut |m| listed.push(m.last_modified))
        .unwrap();
    assert_eq!(listed, [t]);
}

#[test]
fn keys_ignore_a_leading_slash() {
    let st = MemStorage::new();
    st.put("/wal_005/a", &BytesBody(b"1")).unwrap();
    assert_eq!(keys(&st, "/wal_005/", false), ["wal_005/a"]);
    assert_eq!(read_all(&st, "wal_005/a"), b"1");
}

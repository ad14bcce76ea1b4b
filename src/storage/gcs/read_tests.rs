//! Downloads against the loopback fake: a body cut short is resumed from where it broke,
//! pinned to the generation first read; damage is caught by the CRC-32C; a missing object
//! is `NotFound`.

use super::fake_tests::{FakeGcs, Fault};
use super::http::Client;
use super::{GcsStorage, Storage, StorageError};
use crate::storage::BytesBody;
use std::io::Read;
use std::sync::Arc;

fn storage(fake: &FakeGcs) -> GcsStorage {
    GcsStorage(Arc::new(
        Client::new(super::upload::tests::config(&fake.endpoint)).unwrap(),
    ))
}

fn read_all(s: &GcsStorage, key: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.get(key).unwrap().read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn a_cut_body_is_resumed_from_where_it_broke() {
    let fake = FakeGcs::start();
    let s = storage(&fake);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    s.put("wal_005/a", &BytesBody(&body)).unwrap();
    fake.fault(super::fake_tests::Fault::CutAt(30_000));
    assert!(read_all(&s, "wal_005/a").unwrap() == body);
    let gets: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2);
    assert!(
        gets[0].target.ends_with("/o/pg%2Fwal_005%2Fa?alt=media"),
        "{}",
        gets[0].target
    );
    assert!(
        gets[1].target.contains("generation=1"),
        "{}",
        gets[1].target
    );
    assert_eq!(gets[1].header("range"), Some("bytes=30000-"));
}

#[test]
fn damage_in_transit_fails_the_read() {
    let fake = FakeGcs::start();
    let s = storage(&fake);
    s.put("wal_005/b", &BytesBody(b"some wal bytes")).unwrap();
    fake.fault(Fault::Damage);
    let e = read_all(&s, "wal_005/b").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("CRC-32C"), "{e}");
    assert!(e.to_string().contains("pg/wal_005/b"), "{e}");
}

#[test]
fn a_missing_object_is_not_found() {
    let fake = FakeGcs::start();
    let s = storage(&fake);
    match s.get("wal_005/none") {
        Err(StorageError::NotFound { key }) => assert_eq!(key, "pg/wal_005/none"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("found"),
    }
}

#[test]
fn hashes_are_read_from_one_header_or_several() {
    assert_eq!(super::read::decode_crc32c("AAAAAA=="), Some(0));
    assert_eq!(super::read::decode_crc32c("4waSgw=="), Some(0xE306_9283));
    assert_eq!(super::read::decode_crc32c("AAA="), None);
}

#[test]
fn customer_keys_go_with_every_read() {
    let fake = FakeGcs::start();
    let mut cfg = super::upload::tests::config(&fake.endpoint);
    cfg.encryption_key = Some(super::CustomerKey::new(&[7u8; 32]));
    let s = GcsStorage(Arc::new(Client::new(cfg).unwrap()));
    let body = vec![5u8; 50_000];
    s.put("wal_005/e", &BytesBody(&body)).unwrap();
    fake.fault(Fault::CutAt(10_000));
    assert!(read_all(&s, "wal_005/e").unwrap() == body);
    let gets: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2, "the first read and its resumption");
    for g in gets {
        assert_eq!(g.header("x-goog-encryption-algorithm"), Some("AES256"));
        assert_eq!(
            g.header("x-goog-encryption-key-sha256"),
            Some("S7Bvjk46dxXSAdVz0KpCN2LlXavWGiwCJ4+lbMbSlOA=")
        );
        assert!(g.header("x-goog-encryption-key").is_some());
    }
}

#[test]
fn listings_follow_page_tokens_and_keep_to_the_folder() {
    let fake = FakeGcs::start();
    let s = storage(&fake);
    for key in [
        "wal_005/1",
        "wal_005/2",
        "wal_005/3",
        "wal_005/4",
        "wal_005/5",
        "wal_005/sub/6",
    ] {
        s.put(key, &BytesBody(key.as_bytes())).unwrap();
    }
    fake.state
        .lock()
        .unwrap()
        .objects
        .insert("pg/wal_005/".into(), Vec::new());
    fake.state
        .lock()
        .unwrap()
        .objects
        .insert("other/wal_005/7".into(), Vec::new());
    let listed = |recursive| {
        let mut keys = Vec::new();
        s.list("wal_005/", recursive, &mut |m| keys.push((m.key, m.size)))
            .unwrap();
        keys
    };
    let flat: Vec<_> = (1..=5).map(|i| (format!("wal_005/{i}"), 9)).collect();
    assert_eq!(listed(false), flat);
    let mut deep = flat.clone();
    deep.push(("wal_005/sub/6".to_string(), 13));
    assert_eq!(listed(true), deep);
    let pages: Vec<String> = fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.target)
        .collect();
    assert!(
        pages[0].contains("prefix=pg%2Fwal_005%2F&delimiter=%2F"),
        "{pages:?}"
    );
    assert!(
        pages[1].ends_with("&pageToken=pg%2Fwal_005%2F2"),
        "{pages:?}"
    );
    assert_eq!(pages.len(), 3 + 4, "three pages flat, four deep");
    let meta = s.head("wal_005/sub/6").unwrap().unwrap();
    assert_eq!(meta.size, 13);
    assert_eq!(
        Some(meta.last_modified),
        crate::time::PreciseTime::parse("2026-01-02T03:04:05.678Z")
    );
    assert!(s.head("wal_005/none").unwrap().is_none());
    s.delete_many(&["wal_005/1".into(), "wal_005/none".into()])
        .unwrap();
    assert!(fake.object("pg/wal_005/1").is_none());
}

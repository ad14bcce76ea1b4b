//! The upload protocol against the loopback fake (`fake_tests`): one request or a resumable
//! session, chunks only partly kept (308 with `Range`), a connection cut mid-chunk (the
//! session is asked where it stands and the chunk restarted there), failures cancelling
//! the session, and damage caught by the CRC-32C.

use super::super::fake_tests::{FakeGcs, Fault};
use super::super::{GcsConfig, auth::Auth};
use super::*;
use crate::storage::BytesBody;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

pub fn config(endpoint: &str) -> GcsConfig {
    GcsConfig {
        bucket: "bkt".into(),
        root: "pg/".into(),
        endpoint: endpoint.to_string(),
        auth: Auth::Anonymous,
        encryption_key: None,
        chunk_size: CHUNK_UNIT,
        max_retries: 3,
        context_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Part buffers for the tests, counting how many are out at once.
struct Parts {
    size: usize,
    out: AtomicUsize,
    most: AtomicUsize,
    limit: usize,
}

struct Lent<'a>(Vec<u8>, &'a Parts);

impl Deref for Lent<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}
impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}
impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.1.out.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Parts {
    fn new(size: usize, limit: usize) -> Parts {
        Parts {
            size,
            out: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            limit,
        }
    }
}

impl PartBuffers for Parts {
    fn lease_part(&self) -> io::Result<PartBuffer<'_>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.out.load(Ordering::SeqCst);
            if now < self.limit
                && self
                    .out
                    .compare_exchange(now, now + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.most.fetch_max(now + 1, Ordering::SeqCst);
                return Ok(Box::new(Lent(vec![0; self.size], self)));
            }
            if std::time::Instant::now() > deadline {
                return Err(io::Error::other("no part buffer came free"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn part_size(&self) -> usize {
        self.size
    }
}

fn chunk_ranges(fake: &FakeGcs) -> Vec<String> {
    fake.seen()
        .iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.header("content-range").unwrap().to_string())
        .collect()
}

#[test]
fn small_bodies_go_in_one_request_larger_ones_in_chunks() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let small = data(1000);
    assert_eq!(put(&client, "pg/small", &BytesBody(&small)).unwrap(), 1000);
    assert_eq!(fake.object("pg/small").unwrap(), small);
    let first = &fake.seen()[0];
    assert!(
        first.target.contains("uploadType=media"),
        "{}",
        first.target
    );
    assert!(first.target.contains("name=pg%2Fsmall"), "{}", first.target);

    let big = data(2 * CHUNK_UNIT as usize + 5);
    assert_eq!(
        put(&client, "pg/big", &BytesBody(&big)).unwrap(),
        big.len() as u64
    );
    assert_eq!(fake.object("pg/big").unwrap(), big);
    let t = big.len();
    assert_eq!(
        chunk_ranges(&fake),
        [
            format!("bytes 0-262143/{t}"),
            format!("bytes 262144-524287/{t}"),
            format!("bytes 524288-524292/{t}")
        ]
    );
    // The session declared the body's CRC-32C, so GCS checks it before storing.
    let start = fake
        .seen()
        .into_iter()
        .find(|s| s.target.contains("uploadType=resumable"))
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&start.body).unwrap();
    let mut crc = Crc32c::new();
    crc.update(&big);
    assert_eq!(meta["crc32c"], crc.to_base64());
    assert_eq!(
        start.header("x-upload-content-length"),
        Some(&*t.to_string())
    );
}

#[test]
fn a_chunk_kept_in_part_is_sent_again_from_where_gcs_stopped() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let body = data(2 * CHUNK_UNIT as usize);
    fake.fault(Fault::KeepOnly(100_000));
    put(&client, "pg/k", &BytesBody(&body)).unwrap();
    assert_eq!(fake.object("pg/k").unwrap(), body);
    let t = body.len();
    assert_eq!(
        chunk_ranges(&fake),
        [
            format!("bytes 0-262143/{t}"),
            format!("bytes 100000-262143/{t}"),
            format!("bytes 262144-524287/{t}")
        ]
    );
}

#[test]
fn a_broken_connection_asks_where_the_session_stands_and_restarts_the_chunk_there() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let body = data(2 * CHUNK_UNIT as usize + 10);
    fake.fault(Fault::Pass);
    fake.fault(Fault::BreakAfter(70_000));
    put(&client, "pg/b", &BytesBody(&body)).unwrap();
    assert_eq!(fake.object("pg/b").unwrap(), body);
    let t = body.len();
    assert_eq!(
        chunk_ranges(&fake),
        [
            format!("bytes 0-262143/{t}"),
            format!("bytes 262144-524287/{t}"),
            // The status query of a chunk that is not the last names no total.
            "bytes */*".to_string(),
            format!("bytes 332144-524287/{t}"),
            format!("bytes 524288-524297/{t}"),
        ]
    );
}

#[test]
fn a_failed_upload_cancels_its_session_and_leaves_no_object() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let body = data(3 * CHUNK_UNIT as usize);
    fake.fault(Fault::Pass);
    fake.fault(Fault::Status(403));
    let e = put(&client, "pg/denied", &BytesBody(&body)).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::Remote {
                status: 403,
                op: Op::GcsUploadChunk,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("pg/denied"), "{e}");
    assert_eq!(fake.state.lock().unwrap().cancelled, 1);
    assert!(fake.object("pg/denied").is_none());
    // The session URI authorizes the upload: it appears in no message.
    assert!(!e.to_string().contains("SECRET-SESSION"), "{e}");
}

#[test]
fn streams_use_the_part_buffers_as_chunks_in_order() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let parts = Parts::new(CHUNK_UNIT as usize, 3);
    for len in [
        0,
        10,
        CHUNK_UNIT as usize - 1,
        CHUNK_UNIT as usize,
        3 * CHUNK_UNIT as usize,
        3 * CHUNK_UNIT as usize + 77,
    ] {
        let body = data(len);
        let key = format!("pg/s{len}");
        let n = put_stream(&client, &key, &mut &body[..], &parts).unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(fake.object(&key).unwrap(), body, "{len}");
    }
    assert!(parts.most.load(Ordering::SeqCst) <= 3);
    assert_eq!(parts.out.load(Ordering::SeqCst), 0);
    // A stream of exactly one buffer is resumable (a full buffer may be followed by more):
    // its only chunk names the total once the reader found the end.
    let ranges = chunk_ranges(&fake);
    assert!(
        ranges.contains(&"bytes 0-262143/262144".to_string()),
        "{ranges:?}"
    );
    assert!(
        ranges.contains(&"bytes 524288-786431/*".to_string()),
        "{ranges:?}"
    );
    assert!(
        ranges.contains(&"bytes 786432-786508/786509".to_string()),
        "{ranges:?}"
    );
}

#[test]
fn a_stream_with_a_chunk_kept_in_part_resends_the_rest_from_its_buffer() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let parts = Parts::new(CHUNK_UNIT as usize, 2);
    let body = data(2 * CHUNK_UNIT as usize + 3);
    fake.fault(Fault::KeepOnly(5));
    fake.fault(Fault::BreakAfter(262_144 - 5));
    put_stream(&client, "pg/sk", &mut &body[..], &parts).unwrap();
    assert_eq!(fake.object("pg/sk").unwrap(), body);
}

#[test]
fn a_stream_stored_damaged_is_deleted_and_reported() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    let parts = Parts::new(CHUNK_UNIT as usize, 2);
    let body = data(CHUNK_UNIT as usize + 3);
    fake.fault(Fault::Pass);
    fake.fault(Fault::Damage);
    let e = put_stream(&client, "pg/dmg", &mut &body[..], &parts).unwrap_err();
    assert!(matches!(e, StorageError::Unverified { .. }), "{e}");
    let deletes: Vec<String> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.target)
        .collect();
    assert!(
        deletes
            .iter()
            .any(|t| t.contains("/o/pg%2Fdmg?generation=")),
        "{deletes:?}"
    );
    assert!(fake.object("pg/dmg").is_none());
}

#[test]
fn a_single_request_stored_damaged_is_sent_again() {
    let fake = FakeGcs::start();
    let client = Client::new(config(&fake.endpoint)).unwrap();
    fake.fault(Fault::Damage);
    let body = data(500);
    put(&client, "pg/d1", &BytesBody(&body)).unwrap();
    assert_eq!(fake.object("pg/d1").unwrap(), body);
    assert_eq!(fake.seen().len(), 2);
}

#[test]
fn customer_keys_go_with_every_upload_request() {
    let fake = FakeGcs::start();
    let mut cfg = config(&fake.endpoint);
    cfg.encryption_key = Some(super::super::CustomerKey::new(&[7u8; 32]));
    let client = Client::new(cfg).unwrap();
    put(&client, "pg/e1", &BytesBody(&data(10))).unwrap();
    put(&client, "pg/e2", &BytesBody(&data(CHUNK_UNIT as usize + 1))).unwrap();
    let parts = Parts::new(CHUNK_UNIT as usize, 2);
    put_stream(
        &client,
        "pg/e3",
        &mut &data(CHUNK_UNIT as usize + 1)[..],
        &parts,
    )
    .unwrap();
    let seen = fake.seen();
    assert!(seen.len() >= 7);
    for s in &seen {
        assert_eq!(
            s.header("x-goog-encryption-algorithm"),
            Some("AES256"),
            "{}",
            s.target
        );
        // base64 of 32 bytes of 7, and of their SHA-256.
        assert_eq!(
            s.header("x-goog-encryption-key"),
            Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
        );
        assert_eq!(
            s.header("x-goog-encryption-key-sha256"),
            Some("S7Bvjk46dxXSAdVz0KpCN2LlXavWGiwCJ4+lbMbSlOA=")
        );
    }
}

#[test]
fn chunk_sizes_are_whole_units() {
    assert_eq!(chunk_size(50 << 20), 50 << 20);
    assert_eq!(chunk_size((8 << 20) + 1000), 8 << 20);
    assert_eq!(chunk_size(1), CHUNK_UNIT);
    assert_eq!(parse_kept("bytes=0-99"), Some(100));
    assert_eq!(parse_kept("bytes=5-99"), None);
}

//! The S3 storage room against a real, signature-verifying S3 server (s3s-fs): multipart
//! uploads, listings that span pages, batch deletes, HEAD, and missing objects.

use crate::common;

use common::{S3Server, Tool, require_or_fail};
use std::io::Read;
use std::time::Duration;
use wal_rus::storage::s3::{S3Config, S3Storage, sign::Credentials};
use wal_rus::storage::{BytesBody, Storage, StorageError};

fn storage(s3: &S3Server, root: &str, part_size: u64) -> S3Storage {
    S3Storage::new(S3Config {
        root: root.to_string(),
        part_size,
        delete_batch: 7,
        ..s3.storage_config("")
    })
    .unwrap()
}

#[test]
fn multipart_list_pages_delete_head() {
    let Some(_) = require_or_fail(Tool::S3s, "multipart_list_pages_delete_head") else {
        return;
    };
    let s3 = S3Server::start();
    let st = storage(&s3, "pg/main/", 5 << 20);

    // 12 MiB + 3 bytes: three parts of a multipart upload (5, 5, 2 MiB + 3).
    let big: Vec<u8> = (0..(12u32 << 20) + 3)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(
        st.put("basebackups_005/big", &BytesBody(&big)).unwrap(),
        big.len() as u64
    );
    let mut back = Vec::new();
    st.get("basebackups_005/big")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "multipart object differs");
    assert_eq!(
        std::fs::read(s3.object_path("pg/main/basebackups_005/big"))
            .unwrap()
            .len(),
        big.len()
    );
    // No multipart upload is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(s3.data_root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("upload_id"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A listing longer than one page (S3 pages at 1000 keys).
    for i in 0..1005 {
        st.put(&format!("wal_005/{i:024X}.lz4"), &BytesBody(b"x"))
            .unwrap();
    }
    st.put("wal_005/sub/inner", &BytesBody(b"y")).unwrap();
    let mut flat = Vec::new();
    st.list("wal_005/", false, &mut |m| flat.push(m)).unwrap();
    assert_eq!(flat.len(), 1005, "non-recursive listing");
    assert!(
        flat.iter()
            .all(|m| m.size == 1 && m.last_modified.secs > 1_700_000_000)
    );
    assert_eq!(flat[0].key, format!("wal_005/{:024X}.lz4", 0));
    let mut deep = 0;
    st.list("wal_005/", true, &mut |_| deep += 1).unwrap();
    assert_eq!(deep, 1006);
    let mut narrow = Vec::new();
    st.list(&format!("wal_005/{:024X}", 7), false, &mut |m| {
        narrow.push(m.key)
    })
    .unwrap();
    assert_eq!(narrow, [format!("wal_005/{:024X}.lz4", 7)]);

    // HEAD and missing objects.
    let meta = st.head("basebackups_005/big").unwrap().unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert!(st.head("nothing/here").unwrap().is_none());
    assert!(matches!(
        st.get("nothing/here"),
        Err(StorageError::NotFound { .. })
    ));

    // Batch delete (batches of 7), absent keys included.
    let keys: Vec<String> = (0..20)
        .map(|i| format!("wal_005/{i:024X}.lz4"))
        .chain(["wal_005/absent".to_string()])
        .collect();
    st.delete_many(&keys).unwrap();
    let mut after = 0;
    st.list("wal_005/", false, &mut |_| after += 1).unwrap();
    assert_eq!(after, 985);
}

#[test]
fn wrong_credentials_are_permanent_errors() {
    let Some(_) = require_or_fail(Tool::S3s, "wrong_credentials_are_permanent_errors") else {
        return;
    };
    let s3 = S3Server::start();
    let bad = S3Storage::new(S3Config {
        credentials: std::sync::Arc::new(wal_rus::storage::aws::CredentialProvider::fixed(
            Credentials {
                access_key_id: s3.access_key.clone(),
                secret_access_key: "wrong".into(),
                session_token: None,
            },
        )),
        ..s3.storage_config("")
    })
    .unwrap();
    let start = std::time::Instant::now();
    let err = bad.put("k", &BytesBody(b"v")).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a 403 must not be retried"
    );
    assert!(storage(&s3, "", 5 << 20).head("k").unwrap().is_none());
}

/// A stream that cannot be replayed goes up in parts from the caller's buffers; a stream that
/// breaks half-way leaves no object and no unfinished upload behind.
#[test]
fn streamed_multipart_uploads() {
    let Some(_) = require_or_fail(Tool::S3s, "streamed_multipart_uploads") else {
        return;
    };
    let s3 = S3Server::start();
    let st = storage(&s3, "", 5 << 20);
    let arena = wal_rus::pipeline::arena::Arena::new(3, 5 << 20);
    let data: Vec<u8> = (0..(17u32 << 20) + 11)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let n = st
        .put_stream("tar_partitions/part_001.tar.lz4", &mut &data[..], &arena, 2)
        .unwrap();
    assert_eq!(n, data.len() as u64);
    let mut back = Vec::new();
    st.get("tar_partitions/part_001.tar.lz4")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data);
    assert_eq!(arena.free(), 3, "every part buffer came back");
    // Small streams are one PutObject.
    assert_eq!(
        st.put_stream("small", &mut &b"tiny"[..], &arena, 2)
            .unwrap(),
        4
    );

    struct Breaks(usize);
    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk went away"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = st
        .put_stream("broken", &mut Breaks(12 << 20), &arena, 2)
        .unwrap_err();
    assert!(err.to_string().contains("disk went away"), "{err}");
    assert!(st.head("broken").unwrap().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(s3.data_root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("upload_id"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "unfinished upload left: {leftovers:?}"
    );
}

//! The Azure client against a scripted server on loopback: listing pages, retries, Azure's
//! error codes read from the header or the document, unverified writes, a body that does
//! not match its Content-MD5, and the SAS kept out of messages.

use super::*;
use crate::storage::BytesBody;
use crate::storage::net::fake_server::{answer, fake};
use std::io::Read;

fn storage(endpoint: String, auth: AzureAuth, retries: u32) -> AzureStorage {
    AzureStorage::new(AzureConfig {
        account: "acct".into(),
        container: "cont".into(),
        root: "pg/".into(),
        endpoint: format!("{endpoint}/acct"),
        auth,
        block_size: 8 << 20,
        max_buffers: 2,
        try_timeout: Duration::from_secs(5),
        max_retries: retries,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn key() -> AzureAuth {
    AzureAuth::SharedKey(sign::SharedKey::new("acct", "a2V5").unwrap())
}

fn az_error(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m\nRequestId:1</Message></Error>"
    )
}

fn with_headers(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn page(names: &[&str], marker: &str) -> String {
    let blobs: String = names
        .iter()
        .map(|n| format!("<Blob><Name>{n}</Name><Properties><Last-Modified>Fri, 04 Dec 2026 03:25:05 GMT</Last-Modified><Content-Length>3</Content-Length></Properties></Blob>"))
        .collect();
    format!(
        "<EnumerationResults><Blobs>{blobs}</Blobs><NextMarker>{marker}</NextMarker></EnumerationResults>"
    )
}

#[test]
fn listings_follow_next_marker_and_retry_a_busy_server() {
    let (url, seen) = fake(vec![
        answer("503 Service Unavailable", &az_error("ServerBusy")),
        answer("200 OK", &page(&["pg/wal_005/a", "pg/wal_005/"], "M2")),
        answer("200 OK", &page(&["pg/wal_005/b"], "")),
    ]);
    let st = storage(url, key(), 2);
    let mut keys = Vec::new();
    st.list("wal_005/", true, &mut |m| keys.push((m.key, m.size)))
        .unwrap();
    assert_eq!(
        keys,
        vec![("wal_005/a".to_string(), 3), ("wal_005/b".to_string(), 3)]
    );
    let heads = seen.lock().unwrap();
    assert_eq!(heads.len(), 3);
    assert!(
        heads[1].starts_with(
            "GET /acct/cont?restype=container&comp=list&prefix=pg%2Fwal_005%2F HTTP/1.1"
        ),
        "{}",
        heads[1]
    );
    assert!(heads[2].contains("&marker=M2 "), "{}", heads[2]);
    let head = heads[1].to_ascii_lowercase();
    assert!(head.contains("authorization: sharedkey acct:"), "{head}");
    assert!(head.contains("x-ms-version: 2021-08-06"), "{head}");
}

#[test]
fn missing_blobs_and_containers_are_told_apart() {
    let (url, _) = fake(vec![
        answer(
            "404 The specified blob does not exist.",
            &az_error("BlobNotFound"),
        ),
        with_headers("404 Not Found", "x-ms-error-code: BlobNotFound\r\n", b""),
        // A HEAD's answer has no body: the code is in the header.
        with_headers(
            "404 Not Found",
            "x-ms-error-code: ContainerNotFound\r\n",
            b"",
        ),
        answer("403 Forbidden", &az_error("AuthenticationFailed")),
    ]);
    let st = storage(url, key(), 0);
    assert!(matches!(st.get("x"), Err(StorageError::NotFound { key }) if key == "pg/x"));
    assert_eq!(st.head("x").unwrap(), None);
    let e = st.head("y").unwrap_err().to_string();
    assert!(
        e.contains("ContainerNotFound") && e.contains("container cont does not exist"),
        "{e}"
    );
    let e = st.list("", false, &mut |_| {}).unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("check AZURE_STORAGE_ACCESS_KEY"),
        "{e}"
    );
    assert!(
        e.to_string().ends_with(")"),
        "only the message's first line: {e}"
    );
}

#[test]
fn a_write_is_stored_only_with_proof() {
    let (url, seen) = fake(vec![
        // Azure saw another MD5, a proxy's 200 with no ETag, Azure's 201 echoing another
        // MD5, then the real one.
        answer("400 Bad Request", &az_error("Md5Mismatch")),
        answer("200 OK", "<html>ok</html>"),
        with_headers(
            "201 Created",
            "ETag: \"0x1\"\r\nContent-MD5: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
            b"",
        ),
        with_headers(
            "201 Created",
            "ETag: \"0x2\"\r\nContent-MD5: XUFAKrxLKna5cZ2REBfFkg==\r\n",
            b"",
        ),
    ]);
    let st = storage(url, key(), 3);
    assert_eq!(st.put("k", &BytesBody(b"hello")).unwrap(), 5);
    let heads = seen.lock().unwrap();
    assert_eq!(heads.len(), 4);
    for h in heads.iter() {
        let h = h.to_ascii_lowercase();
        assert!(h.starts_with("put /acct/cont/pg/k http/1.1"), "{h}");
        assert!(h.contains("content-md5: xufakrxlkna5cz2rebffkg=="), "{h}");
        assert!(h.contains("x-ms-blob-type: blockblob"), "{h}");
    }
}

#[test]
fn a_body_that_does_not_match_its_md5_is_an_error() {
    let (url, _) = fake(vec![with_headers(
        "200 OK",
        "ETag: \"0x1\"\r\nContent-MD5: XUFAKrxLKna5cZ2REBfFkg==\r\n",
        b"jello",
    )]);
    let st = storage(url, key(), 0);
    let mut body = Vec::new();
    let e = st.get("k").unwrap().read_to_end(&mut body).unwrap_err();
    assert!(e.to_string().contains("changed in transit"), "{e}");
}

#[test]
fn the_sas_goes_on_the_wire_but_never_into_a_message() {
    let (url, seen) = fake(vec![answer(
        "403 Forbidden",
        &az_error("AuthorizationFailure"),
    )]);
    let st = storage(url, AzureAuth::Sas("sv=2021-08-06&sig=SECRET%3D".into()), 0);
    let e = st.get("k").err().unwrap().to_string();
    assert!(e.contains("check AZURE_STORAGE_SAS_TOKEN"), "{e}");
    assert!(!e.contains("SECRET") && !e.contains("sig="), "{e}");
    assert!(!st.describe().contains("SECRET"));
    let heads = seen.lock().unwrap();
    assert!(
        heads[0].starts_with("GET /acct/cont/pg/k?sv=2021-08-06&sig=SECRET%3D HTTP/1.1"),
        "{}",
        heads[0]
    );
    assert!(!heads[0].to_ascii_lowercase().contains("authorization:"));
}

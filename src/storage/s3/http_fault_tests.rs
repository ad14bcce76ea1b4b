//! Retry and error behaviour of the S3 client against a scripted fake server on loopback:
//! no real S3 needed.

use super::*;
use crate::storage::s3::S3Config;
use crate::storage::s3::sign::Credentials;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Serves one scripted raw response per connection and records each request head.
fn fake(script: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for answer in script {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(head);
            let mut s = stream;
            let _ = s.write_all(&answer);
        }
    });
    (format!("http://{addr}"), seen)
}

fn client(endpoint: String, retries: u32) -> Client {
    Client::new(S3Config {
        bucket: "bkt".into(),
        root: String::new(),
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        force_path_style: true,
        credentials: std::sync::Arc::new(crate::storage::aws::CredentialProvider::fixed(
            Credentials {
                access_key_id: "AK".into(),
                secret_access_key: "SECRET".into(),
                session_token: None,
            },
        )),
        ca_cert_file: None,
        storage_class: "STANDARD".into(),
        sse: None,
        sse_kms_id: None,
        sse_customer_key: None,
        object_lock: None,
        part_size: 5 << 20,
        max_retries: retries,
        min_throttle_delay: Duration::from_millis(5),
        max_throttle_delay: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        delete_batch: 1000,
    })
    .unwrap()
}

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn s3_error(code: &str) -> String {
    format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
}

#[test]
fn retries_throttling_and_5xx_then_succeeds() {
    let (url, seen) = fake(vec![
        answer("503 Slow Down", &s3_error("SlowDown")),
        answer("500 Internal Server Error", &s3_error("InternalError")),
        answer("200 OK", "hello"),
    ]);
    let c = client(url, 3);
    let call = Call::new("GET", Op::GetObject, Some("k"));
    let resp = c.send_with_retries(&call, &mut || Body::Empty).unwrap();
    assert_eq!(resp.into_string().unwrap(), "hello");
    let heads = seen.lock().unwrap();
    assert_eq!(heads.len(), 3);
    assert!(heads[0].starts_with("GET /bkt/k HTTP/1.1"), "{}", heads[0]);
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: aws4-hmac-sha256 credential=ak/")
    );
    assert!(
        !heads.iter().any(|h| h.contains("SECRET")),
        "the secret never goes on the wire"
    );
}

#[test]
fn permanent_errors_fail_at_once() {
    let (url, seen) = fake(vec![
        answer("403 Forbidden", &s3_error("AccessDenied")),
        answer("200 OK", ""),
    ]);
    let c = client(url, 5);
    let err = c
        .send_with_retries(&Call::new("GET", Op::GetObject, Some("k")), &mut || {
            Body::Empty
        })
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Remote { status: 403, code, .. } if code == "AccessDenied"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn retries_run_out() {
    let (url, seen) = fake(vec![answer("500 Internal Server Error", ""); 3]);
    let err = client(url, 2)
        .send_with_retries(&Call::new("GET", Op::GetObject, Some("k")), &mut || {
            Body::Empty
        })
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Remote { status: 500, .. }),
        "{err}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "one attempt plus two retries"
    );
}

#[test]
fn html_error_pages_are_described_not_dumped() {
    let page = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>";
    let (url, _) = fake(vec![answer("502 Bad Gateway", page)]);
    let err = client(url, 0)
        .send_with_retries(&Call::new("GET", Op::GetObject, Some("k")), &mut || {
            Body::Empty
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 502") && text.contains("non-S3 error page"),
        "{text}"
    );
    assert!(err.is_retryable());
}

#[test]
fn missing_key_is_not_found() {
    let (url, _) = fake(vec![answer("404 Not Found", &s3_error("NoSuchKey"))]);
    let err = client(url, 3)
        .send_with_retries(&Call::new("GET", Op::GetObject, Some("k")), &mut || {
            Body::Empty
        })
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
}

#[test]
fn a_broken_body_is_resumed_with_a_range() {
    let whole = "0123456789abcdefghij";
    let first = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 20\r\nETag: \"e1\"\r\nConnection: close\r\n\r\n{}",
        &whole[..8]
    )
    .into_bytes();
    let rest = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: 12\r\nETag: \"e1\"\r\nConnection: close\r\n\r\n{}", &whole[8..]).into_bytes();
    let (url, seen) = fake(vec![first, rest]);
    let c = Arc::new(client(url, 3));
    let mut reader = crate::storage::s3::read::open(c, "obj".into()).unwrap();
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, whole);
    let heads = seen.lock().unwrap();
    assert!(
        heads[1].to_ascii_lowercase().contains("range: bytes=8-"),
        "{}",
        heads[1]
    );
    assert!(
        heads[1].to_ascii_lowercase().contains("if-match: \"e1\""),
        "{}",
        heads[1]
    );
}

#[test]
fn a_short_body_without_retries_is_an_error() {
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\n01234".to_vec();
    let (url, _) = fake(vec![first]);
    let c = Arc::new(client(url, 0));
    let mut reader = crate::storage::s3::read::open(c, "obj".into()).unwrap();
    let mut got = Vec::new();
    assert!(
        reader.read_to_end(&mut got).is_err(),
        "a truncated body must not look complete"
    );
}

#[test]
fn unreachable_endpoint_fails_within_the_budget() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client(format!("http://127.0.0.1:{port}"), 2);
    let start = std::time::Instant::now();
    let err = c
        .send_with_retries(&Call::new("GET", Op::GetObject, Some("k")), &mut || {
            Body::Empty
        })
        .unwrap_err();
    assert!(matches!(err, StorageError::Transport { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn virtual_host_and_path_style_addressing() {
    let mut cfg = client("https://s3.eu-west-1.amazonaws.com".into(), 0)
        .cfg
        .clone();
    cfg.force_path_style = false;
    let c = Client::new(cfg.clone()).unwrap();
    assert_eq!(c.host(), "bkt.s3.eu-west-1.amazonaws.com");
    assert_eq!(c.path(Some("pg/wal_005/a b.lz4")), "/pg/wal_005/a%20b.lz4");
    cfg.bucket = "my.bucket".into();
    let dotted = Client::new(cfg.clone()).unwrap();
    assert_eq!(
        dotted.host(),
        "s3.eu-west-1.amazonaws.com",
        "dotted bucket over https is path style"
    );
    assert_eq!(dotted.path(Some("k")), "/my.bucket/k");
    cfg.endpoint = None;
    cfg.bucket = "bkt".into();
    cfg.region = "ap-south-1".into();
    assert_eq!(
        Client::new(cfg).unwrap().host(),
        "bkt.s3.ap-south-1.amazonaws.com"
    );
    let forced = client("http://127.0.0.1:9000".into(), 0);
    assert_eq!(
        (forced.host().as_str(), forced.path(None).as_str()),
        ("127.0.0.1:9000", "/bkt")
    );
}

#[test]
fn uploads_carry_storage_class_and_sse() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\nConnection: close\r\n\r\n"
        .to_vec();
    let (url, seen) = fake(vec![ok]);
    let mut cfg = client(url, 0).cfg.clone();
    cfg.storage_class = "STANDARD_IA".into();
    cfg.sse = Some("aws:kms".into());
    cfg.sse_kms_id = Some("key-1".into());
    let c = Client::new(cfg).unwrap();
    crate::storage::s3::upload::put(&c, "wal_005/x.lz4", &crate::storage::BytesBody(b"data"))
        .unwrap();
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("put /bkt/wal_005/x.lz4 "), "{head}");
    assert!(head.contains("x-amz-storage-class: standard_ia"), "{head}");
    assert!(
        head.contains("x-amz-server-side-encryption: aws:kms"),
        "{head}"
    );
    assert!(
        head.contains("x-amz-server-side-encryption-aws-kms-key-id: key-1"),
        "{head}"
    );
    assert!(head.contains("content-length: 4"), "{head}");
    // The signed payload hash is the body's.
    assert!(
        head.contains(
            "x-amz-content-sha256: 3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
        ),
        "{head}"
    );
}

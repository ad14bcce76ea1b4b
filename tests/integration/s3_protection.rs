//! SSE-C and Object Lock as WAL-G sends them: the same WAL pushed by WAL-G v3.0.8 and by
//! wal-rus through a recording proxy, and the protection headers of the two uploads compared
//! (the customer key and its MD5, the lock mode, a retain-until date one period ahead). The
//! key must also reach every read, or S3 refuses to return the object.

use crate::common;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::{
    S3Server, Tool, hermetic, output_text, require_or_fail, run_walrus, run_with_timeout,
};
use std::process::Command;
use std::time::Duration;
use wal_rus::time::UtcTime;

const SEG: usize = 16 << 20;

fn segment(n: u64) -> Vec<u8> {
    let mut out: Vec<u8> = (0..SEG).map(|i| (i / 4096 + n as usize) as u8).collect();
    common::stamp_wal_pages(&mut out, 1, n);
    out
}

/// The values of `name` (case-insensitive) in the heads of requests whose line starts with
/// `start` and contains `path_part`.
fn header(
    heads: &[(String, Vec<String>)],
    start: &str,
    path_part: &str,
    name: &str,
) -> Vec<String> {
    heads
        .iter()
        .filter(|(line, _)| line.starts_with(start) && line.contains(path_part))
        .flat_map(|(_, lines)| {
            lines.iter().filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        })
        .collect()
}

#[test]
fn sse_c_and_object_lock_headers_are_walgs() {
    let Some(walg) = require_or_fail(Tool::Walg, "sse_c_and_object_lock_headers_are_walgs") else {
        return;
    };
    if require_or_fail(Tool::S3s, "sse_c_and_object_lock_headers_are_walgs").is_none() {
        return;
    }
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        FaultPlan::none(),
    );
    // The customer key only travels over TLS: socat's TLS in front of the recording proxy.
    let certs = tempfile::tempdir().unwrap();
    let proxy_port: u16 = proxy.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let Some(front) = common::TlsFront::start(certs.path(), proxy_port) else {
        assert!(!common::tools_required(), "socat or openssl is missing");
        return common::skip(
            "sse_c_and_object_lock_headers_are_walgs",
            "no socat/openssl",
        );
    };
    let key = "0123456789abcdefghijklmnopqrstuv";
    let mut env = s3.env("protected");
    env.retain(|(k, _)| k != "AWS_ENDPOINT");
    let https = format!("https://localhost:{}", front.port);
    let ca = certs.path().join("ca.pem").display().to_string();
    for (k, v) in [
        ("AWS_ENDPOINT", https.as_str()),
        ("WALG_S3_CA_CERT_FILE", ca.as_str()),
        ("WALG_S3_SSE", "AES256"),
        ("WALG_S3_SSE_C", key),
        ("S3_RETENTION_PERIOD", "86400"),
        ("S3_RETENTION_MODE", "COMPLIANCE"),
        ("WALG_COMPRESSION_METHOD", "lz4"),
        ("WALG_DOWNLOAD_CONCURRENCY", "1"),
    ] {
        env.push((k.to_string(), v.to_string()));
    }
    let dir = tempfile::tempdir().unwrap();
    let (walg_seg, ours) = ("000000010000000000000001", "000000010000000000000002");
    std::fs::write(dir.path().join(walg_seg), segment(1)).unwrap();
    std::fs::write(dir.path().join(ours), segment(2)).unwrap();

    let mut cmd = Command::new(&walg);
    hermetic(&mut cmd)
        .arg("wal-push")
        .arg(dir.path().join(walg_seg))
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "WAL-G wal-push:\n{}",
        output_text(&out)
    );
    let before = UtcTime::now().0;
    let walg_heads = proxy.take_record().heads;

    let push = run_walrus(
        ["wal-push".as_ref(), dir.path().join(ours).as_os_str()],
        &env,
    );
    assert!(push.status.success(), "{}", output_text(&push));
    let our_heads = proxy.take_record().heads;

    for name in [
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-server-side-encryption-customer-key",
        "x-amz-server-side-encryption-customer-key-md5",
        "x-amz-object-lock-mode",
        "x-amz-storage-class",
        "x-amz-server-side-encryption",
    ] {
        let theirs = header(&walg_heads, "PUT", walg_seg, name);
        let mine = header(&our_heads, "PUT", ours, name);
        assert_eq!(mine, theirs, "{name}: wal-rus {mine:?}, WAL-G {theirs:?}");
    }
    assert_eq!(
        header(&our_heads, "PUT", ours, "x-amz-object-lock-mode"),
        ["COMPLIANCE"]
    );
    assert_eq!(
        header(
            &our_heads,
            "PUT",
            ours,
            "x-amz-server-side-encryption-customer-algorithm"
        ),
        ["AES256"]
    );
    for heads in [&walg_heads, &our_heads] {
        let until = header(
            heads,
            "PUT",
            "wal_005",
            "x-amz-object-lock-retain-until-date",
        );
        assert_eq!(until.len(), 1, "{heads:?}");
        let t = UtcTime::parse_rfc3339(&until[0]).expect("ISO 8601 retain-until date");
        assert!(
            (t.0 - (before + 86_400)).abs() < 120,
            "retain-until {} is not a day ahead",
            until[0]
        );
    }

    // Each tool reads what the other stored, sending the key on the GET.
    let dest = dir.path().join("fetched");
    let fetch = run_walrus(
        ["wal-fetch".as_ref(), walg_seg.as_ref(), dest.as_os_str()],
        &env,
    );
    assert!(fetch.status.success(), "{}", output_text(&fetch));
    assert!(std::fs::read(&dest).unwrap() == segment(1));
    let heads = proxy.take_record().heads;
    assert_eq!(
        header(
            &heads,
            "GET",
            walg_seg,
            "x-amz-server-side-encryption-customer-key-md5"
        ),
        header(
            &walg_heads,
            "PUT",
            walg_seg,
            "x-amz-server-side-encryption-customer-key-md5"
        ),
    );
    let dest = dir.path().join("fetched-by-walg");
    let mut cmd = Command::new(&walg);
    hermetic(&mut cmd)
        .args(["wal-fetch", ours])
        .arg(&dest)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "WAL-G wal-fetch:\n{}",
        output_text(&out)
    );
    assert!(std::fs::read(&dest).unwrap() == segment(2));
    assert!(
        !output_text(&push).contains(key),
        "the customer key was logged"
    );
}

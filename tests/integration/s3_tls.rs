//! S3 over HTTPS: a real TLS endpoint (socat with an openssl-made certificate) in front of
//! s3s-fs. With the CA in `WALG_S3_CA_CERT_FILE` wal-push and wal-fetch work; without it the
//! certificate is refused with a clear error, quickly, and nothing is written.

use crate::common;

use common::{S3Server, Tool, output_text, require_or_fail, run_walrus};
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn https_with_extra_ca_file() {
    let Some(_) = require_or_fail(Tool::S3s, "https_with_extra_ca_file") else {
        return;
    };
    let s3 = S3Server::start();
    let certs = tempfile::tempdir().unwrap();
    let Some(front) = common::TlsFront::start(certs.path(), s3.port) else {
        if common::tools_required() {
            panic!("socat or openssl is missing: run scripts/ensure-tools");
        }
        common::skip("https_with_extra_ca_file", "socat or openssl unavailable");
        return;
    };
    let mut env = s3.env("tls");
    env.retain(|(k, _)| k != "AWS_ENDPOINT");
    env.push((
        "AWS_ENDPOINT".into(),
        format!("https://localhost:{}", front.port),
    ));
    env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "1".into()));
    env.push(("WALG_S3_MAX_RETRIES".into(), "1".into()));

    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let name = "000000010000000000000001";
    let mut data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 20) as u8)
        .collect();
    common::stamp_wal_pages(&mut data, 1, 1);
    fs::write(wal.join(name), &data).unwrap();

    // Without our CA the server's certificate is refused, quickly and clearly.
    let started = Instant::now();
    let out = run_walrus(["wal-push", wal.join(name).to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let text = output_text(&out).to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(s3.list_keys("tls/").is_empty(), "nothing may be stored");

    // With it, archiving and restoring work over TLS.
    env.push((
        "WALG_S3_CA_CERT_FILE".into(),
        certs.path().join("ca.pem").display().to_string(),
    ));
    let out = run_walrus(["wal-push", wal.join(name).to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", output_text(&out));
    let dest = dir.path().join("restored");
    let out = run_walrus(["wal-fetch", name, dest.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(fs::read(&dest).unwrap() == data);
    assert_eq!(s3.list_keys("tls/"), [format!("tls/wal_005/{name}.lz4")]);

    // A CA file that is not PEM is a configuration error naming the setting.
    fs::write(certs.path().join("junk.pem"), "not a certificate").unwrap();
    env.retain(|(k, _)| k != "WALG_S3_CA_CERT_FILE");
    env.push((
        "WALG_S3_CA_CERT_FILE".into(),
        certs.path().join("junk.pem").display().to_string(),
    ));
    let out = run_walrus(
        ["wal-fetch", name, dir.path().join("x").to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("WALG_S3_CA_CERT_FILE"),
        "{}",
        output_text(&out)
    );
}

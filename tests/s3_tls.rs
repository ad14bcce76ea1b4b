//! S3 over HTTPS: a real TLS endpoint (socat with an openssl-made certificate) in front of
//! s3s-fs. With the CA in `WALG_S3_CA_CERT_FILE` wal-push and wal-fetch work; without it the
//! certificate is refused with a clear error, quickly, and nothing is written.

mod common;

use common::{S3Server, Tool, output_text, require_or_fail, run_walrus};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = common::run_with_timeout(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", output_text(&out));
}

/// A CA and a server certificate for `localhost`, made with the openssl CLI.
fn certificates(dir: &Path) {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wal-rus test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]));
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]));
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]));
    let mut both = fs::read(dir.join("server.pem")).unwrap();
    both.extend(fs::read(dir.join("server.key")).unwrap());
    fs::write(dir.join("server-with-key.pem"), both).unwrap();
}

fn tls_proxy(dir: &Path, backend_port: u16) -> Option<(Proxy, u16)> {
    let socat = ["/usr/bin/socat", "/bin/socat"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = common::free_port();
    let child = Command::new(socat)
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
            dir.join("server-with-key.pem").display()
        ))
        .arg(format!("TCP:127.0.0.1:{backend_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(Instant::now() < deadline, "socat did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((proxy, port))
}

#[test]
fn https_with_extra_ca_file() {
    let Some(_) = require_or_fail(Tool::S3s, "https_with_extra_ca_file") else {
        return;
    };
    let s3 = S3Server::start();
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let Some((_proxy, port)) = tls_proxy(certs.path(), s3.port) else {
        if common::tools_required() {
            panic!("socat is missing: run scripts/ensure-tools");
        }
        eprintln!("\n########## SKIPPED https_with_extra_ca_file: socat unavailable ##########\n");
        return;
    };
    let mut env = s3.env("tls");
    env.retain(|(k, _)| k != "AWS_ENDPOINT");
    env.push(("AWS_ENDPOINT".into(), format!("https://localhost:{port}")));
    env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "1".into()));
    env.push(("WALG_S3_MAX_RETRIES".into(), "1".into()));

    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let name = "000000010000000000000001";
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 20) as u8)
        .collect();
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

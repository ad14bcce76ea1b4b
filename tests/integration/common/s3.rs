//! S3 for the tests: the s3s-fs server with SigV4 checking on a loopback port, and a TLS
//! front for it (s3s-fs speaks plain HTTP), both stopped on drop.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Tool, files_below, free_port, random_hex, run_with_timeout};

/// An s3s-fs S3 server on a free loopback port, with SigV4 auth enabled and
/// one bucket. Killed on drop.
///
/// On-disk layout of s3s-fs 0.14.1 (see its `FileSystem`): an object `key` in
/// `bucket` is the plain file `<data root>/<bucket>/<key>` ('/' in keys become
/// directories); metadata lives beside the buckets as
/// `<data root>/.bucket-<b64>.object-<b64>.{metadata,internal}.json`, and
/// in-flight uploads as `<data root>/.tmp.*.internal.part` /
/// `.upload_id-*.part-*`, so a bucket directory holds only objects.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    /// Holds `data/` (the s3s-fs root) and `s3s-fs.log`.
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
    /// The temp dir `dir` is, removed on drop; `None` when the caller chose `dir`.
    _temp: Option<TempDir>,
}

impl S3Server {
    /// Starts s3s-fs in a temp dir of its own (panics if it is unavailable: check
    /// `require_or_fail` first) and waits, at most ~10 s, until it accepts connections.
    pub fn start() -> S3Server {
        let temp = tempfile::Builder::new()
            .prefix("walrus-s3-")
            .tempdir()
            .expect("s3 temp dir");
        Self::launch(temp.path().to_path_buf(), Some(temp))
    }

    /// `start` with `dir` (made if missing, left in place) holding the data and the log,
    /// for a caller that cleans up itself (scripts/bench through examples/harness.rs).
    pub fn start_in(dir: &Path) -> S3Server {
        Self::launch(dir.to_path_buf(), None)
    }

    /// `start` with the given key pair: what an instance role or a container endpoint
    /// under test hands out.
    pub fn start_with_keys(access_key: &str, secret_key: &str) -> S3Server {
        let temp = tempfile::Builder::new()
            .prefix("walrus-s3-")
            .tempdir()
            .expect("s3 temp dir");
        Self::launch_with(
            temp.path().to_path_buf(),
            Some(temp),
            access_key.to_string(),
            secret_key.to_string(),
        )
    }

    fn launch(dir: PathBuf, temp: Option<TempDir>) -> S3Server {
        let access_key = format!("AK{}", random_hex(18).to_uppercase());
        Self::launch_with(dir, temp, access_key, random_hex(40))
    }

    fn launch_with(
        dir: PathBuf,
        temp: Option<TempDir>,
        access_key: String,
        secret_key: String,
    ) -> S3Server {
        let bin = Tool::S3s
            .locate()
            .unwrap_or_else(|e| panic!("cannot start s3s-fs: {e}"));
        let data = dir.join("data");
        let bucket = "wal-rus-test".to_string();
        fs::create_dir_all(data.join(&bucket)).expect("create bucket dir");
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log_path = dir.join("s3s-fs.log");
            let log = fs::File::create(&log_path).expect("s3s-fs log");
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .env("RUST_LOG", "warn");
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "s3s-fs exited with {status}: {}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return S3Server {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        access_key,
                        secret_key,
                        bucket,
                        dir,
                        port,
                        child,
                        _temp: temp,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!("s3s-fs did not accept connections on {addr} within 10 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start s3s-fs: {last_err}");
    }

    /// The s3s-fs root directory (buckets are its subdirectories).
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Settings that point wal-rus (or WAL-G) at `s3://<bucket>/<prefix_path>`.
    pub fn env(&self, prefix_path: &str) -> Vec<(String, String)> {
        let prefix = prefix_path.trim_matches('/');
        let url = if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        };
        [
            ("WALG_S3_PREFIX", url),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Where s3s-fs keeps object `key` of the test bucket on disk (for tests
    /// that inspect or corrupt stored objects).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.data_root()
            .join(&self.bucket)
            .join(key.trim_start_matches('/'))
    }

    /// Keys of all objects in the bucket starting with `prefix`, sorted.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = files_below(&self.data_root().join(&self.bucket));
        keys.retain(|k| k.starts_with(prefix));
        keys
    }

    /// A storage configuration for this server with `root` as the key prefix, for tests that
    /// use the storage room directly (short retries and timeouts).
    pub fn storage_config(&self, root: &str) -> wal_rus::storage::s3::S3Config {
        wal_rus::storage::s3::S3Config {
            bucket: self.bucket.clone(),
            root: root.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials: std::sync::Arc::new(wal_rus::storage::aws::CredentialProvider::fixed(
                wal_rus::storage::s3::sign::Credentials {
                    access_key_id: self.access_key.clone(),
                    secret_access_key: self.secret_key.clone(),
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
            max_retries: 2,
            min_throttle_delay: Duration::from_millis(10),
            max_throttle_delay: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            delete_batch: 1000,
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// socat terminating TLS in front of a plain server (s3s-fs speaks no TLS), with a CA and a
/// `localhost` certificate made by the openssl CLI in `dir` (`dir/ca.pem` is the CA).
/// Stopped on drop.
pub struct TlsFront {
    child: Child,
    /// The TLS port on 127.0.0.1.
    pub port: u16,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsFront {
    /// Starts it in front of `backend_port`; `None` when openssl or socat is missing.
    pub fn start(dir: &Path, backend_port: u16) -> Option<TlsFront> {
        let socat = ["/usr/bin/socat", "/bin/socat"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let openssl = |args: &[&str]| {
            run_with_timeout(
                Command::new("openssl").current_dir(dir).args(args),
                Duration::from_secs(60),
            )
            .status
            .success()
        };
        let made = openssl(&[
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
        ]) && openssl(&[
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
        ]) && fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .is_ok()
            && openssl(&[
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
            ]);
        if !made {
            return None;
        }
        let mut both = fs::read(dir.join("server.pem")).ok()?;
        both.extend(fs::read(dir.join("server.key")).ok()?);
        fs::write(dir.join("server-with-key.pem"), both).ok()?;
        let port = free_port();
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
        let front = TlsFront { child, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(front)
    }
}

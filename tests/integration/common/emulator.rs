//! The part `gcs`, `azure` and `moto` share: an emulator started as a child process on a
//! free loopback port, in a temp dir of its own, waited for and killed on drop.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// How long an emulator may take to listen. They start in 0.5-2 s on an idle machine (azurite,
/// a Node program, is the slowest), but the tests run beside compilers on two cores.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One running emulator. Killed (and its temp dir removed) on drop.
pub struct Emulator {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    /// Its temp dir: `data/` (what it stores, where it stores anything) and `log`.
    pub dir: PathBuf,
    name: &'static str,
    _temp: TempDir,
}

impl Emulator {
    /// Starts `bin` with `args(port, data_dir)` plus `env`, and waits until it accepts
    /// connections on the port.
    ///
    /// The environment is cleared first (only PATH stays, for azurite's `#!/usr/bin/env node`;
    /// HOME is the temp dir): each emulator also reads settings from variables
    /// (FAKE_GCS_*, AZURITE_ACCOUNTS, AZURITE_DB, MOTO_*, INITIAL_NO_AUTH_ACTION_COUNT, AWS_*)
    /// and a developer's own must not change what a test sees. A port taken by someone else
    /// between `free_port` and the emulator's bind makes it exit; it is then tried again on
    /// another port.
    pub fn start(
        name: &'static str,
        bin: &Path,
        env: &[(&str, &str)],
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Emulator {
        let temp = tempfile::Builder::new()
            .prefix(&format!("walrus-{name}-"))
            .tempdir()
            .expect("emulator temp dir");
        let dir = temp.path().to_path_buf();
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("emulator data dir");
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log = fs::File::create(dir.join("log")).expect("emulator log");
            let mut cmd = Command::new(bin);
            cmd.args(args(port, &data))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", &dir)
                .envs(env.iter().copied())
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup emulator log"))
                .stderr(log);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {name} ({}): {e}", bin.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = fs::read_to_string(dir.join("log")).unwrap_or_default();
                    last_err = format!("{name} exited with {status}: {log}");
                    break;
                }
                // Connecting is only proof once the child is still alive afterwards: a port
                // taken by another process also accepts, while our emulator exits.
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && matches!(child.try_wait(), Ok(None))
                {
                    return Emulator {
                        child,
                        port,
                        dir,
                        name,
                        _temp: temp,
                    };
                }
                if Instant::now() >= deadline {
                    // Slow, not clashing: another port would not help.
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(dir.join("log")).unwrap_or_default();
                    panic!("{name} did not listen on {addr} within {READY_WITHIN:?}: {log}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start {name}: {last_err}");
    }

    /// The emulator's output so far (for failure messages).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        format!("--- {} log ---\n{text}", self.name)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `wal-rus daemon` behind WAL-G's own `walg-daemon-client` (built from the WAL-G bundle by
//! scripts/ensure-tools).
//!
//! - `archiving_and_restoring_through_walg_daemon_client`: PostgreSQL 15 archives through
//!   `walg-daemon-client SOCKET wal-push %f` into the daemon under pgbench; the daemon's RSS,
//!   sampled every second, stays within `memory-plan`'s `daemon` figure and does not grow
//!   (first third against last third); the daemon is killed with SIGKILL in the middle of the
//!   load and started again, and not one segment is missing from storage afterwards; a
//!   standby made without WAL restores everything through `walg-daemon-client SOCKET
//!   wal-fetch %f %p` and a second daemon, and ends with the primary's data; SIGTERM stops a
//!   daemon with exit 0 and removes its socket.
//! - `protocol_answers_as_walg`: the answers to what PostgreSQL never sends (an unknown
//!   message type, a request cut short, a file that is not there, a path outside PGDATA),
//!   the client's exit codes (0, 1, 74), and idle connections that cannot hold the workers.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    PgCluster, Plan, Tool, chown_postgres, free_port, hermetic, output_text,
    postgres_owned_tempdir, require_or_fail, run_with_timeout, wait_for_or_explain,
    wal_segment_range, walrus_bin, within_plan,
};

/// A daemon process, killed on drop.
struct Daemon {
    child: Child,
    /// The wal-rus process itself (below `runuser` and the wrapper's `exec` when root).
    pid: u32,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` (a `daemon SOCKET` command) and waits until the socket answers.
    fn start(mut cmd: Command, socket: &Path, log: &Path) -> Daemon {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().expect("start the daemon");
        let mut d = Daemon {
            pid: child.id(),
            child,
            log: log.to_path_buf(),
        };
        wait_for_or_explain(
            "the daemon to listen",
            Duration::from_secs(30),
            || {
                let live = fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket())
                    && UnixStream::connect(socket).is_ok();
                live.then_some(())
            },
            || d.log_text(),
        );
        d.pid = wal_rus_below(d.child.id());
        d
    }

    /// VmRSS of the daemon, KiB.
    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no VmRSS for the daemon ({})\n{}",
                    self.pid,
                    self.log_text()
                )
            })
    }

    fn threads(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status();
    }

    /// Waits for the process (after a signal); its exit status as the shell reports it.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM: the daemon must exit 0 and take its socket away.
    fn terminate(&mut self, socket: &Path) {
        self.signal("-TERM");
        let code = self.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{}", self.log_text());
        assert!(!socket.exists(), "SIGTERM leaves the socket behind");
    }

    fn log_text(&self) -> String {
        format!(
            "--- daemon log ---\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The wal-rus process started as `pid`: `pid` itself, or (through `runuser`) its child.
fn wal_rus_below(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "wal-rus") {
            return pid;
        }
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                let child: u32 = entry.file_name().to_string_lossy().parse().unwrap_or(0);
                let exe = fs::read_link(format!("/proc/{child}/exe")).unwrap_or_default();
                if exe.file_name().is_some_and(|n| n == "wal-rus") {
                    return child;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no wal-rus process below {pid}");
}

/// Copies walg-daemon-client where the postgres user can run it.
fn install_client(client: &Path, dir: &Path) -> PathBuf {
    let dest = dir.join("bin/walg-daemon-client");
    fs::copy(client, &dest).expect("copy walg-daemon-client");
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
    chown_postgres(&dest);
    dest
}

/// The cluster's wrapper environment with PGDATA, which the daemon needs.
fn with_pgdata(env: &[(String, String)], pg: &PgCluster) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("PGDATA".into(), pg.data_dir().display().to_string()));
    env
}

/// pgbench's TPC-B-like load for `seconds`, in the background.
fn spawn_pgbench(pg: &PgCluster, seconds: u32) -> Child {
    pg.client("pgbench")
        .args([
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgbench")
}

/// Samples the daemon's RSS every second while `load` runs; returns the samples (KiB).
fn sample_rss(daemon: &Daemon, load: &mut Child, limit: Duration) -> Vec<u64> {
    let mut samples = Vec::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        samples.push(daemon.rss_kib());
        if let Ok(Some(_)) = load.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    samples
}

const PRIMARY_CONF: &str = "\
wal_level = replica
archive_mode = on
archive_timeout = 5s
max_wal_size = 48MB
min_wal_size = 32MB
checkpoint_timeout = 30s
max_wal_senders = 4
";

#[test]
fn archiving_and_restoring_through_walg_daemon_client() {
    let test = "archiving_and_restoring_through_walg_daemon_client";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let Some(client) = require_or_fail(Tool::DaemonClient, test) else {
        return;
    };
    let store = postgres_owned_tempdir("walrus-daemon-store-");
    let env = vec![
        (
            "WALG_FILE_PREFIX".to_string(),
            store.path().display().to_string(),
        ),
        ("WALG_COMPRESSION_METHOD".to_string(), "lz4".to_string()),
    ];
    let plan_bytes = Plan::read(&env).rss("daemon");

    let mut primary = PgCluster::init_with_env(free_port(), PRIMARY_CONF, &env);
    primary.set_walrus_env(&with_pgdata(&env, &primary));
    let client = install_client(&client, primary.base_dir());
    let socket = primary.base_dir().join("daemon.sock");
    let log = primary.base_dir().join("daemon.log");
    primary.append_conf(&format!(
        "archive_command = '{} {} wal-push %f'\n",
        client.display(),
        socket.display()
    ));
    let start = |primary: &PgCluster| {
        let cmd = primary.walrus_command(&["daemon", &socket.display().to_string()]);
        Daemon::start(cmd, &socket, &log)
    };
    let mut daemon = start(&primary);
    primary.start();
    let first = primary.psql("select pg_walfile_name(pg_current_wal_lsn())");

    // Phase 1: archiving under load, the daemon's RSS sampled every second.
    primary.pgbench_init(10);
    let mut load = spawn_pgbench(&primary, 45);
    let samples = sample_rss(&daemon, &mut load, Duration::from_secs(120));
    let _ = load.wait();
    assert!(samples.len() >= 30, "only {} RSS samples", samples.len());
    let peak = *samples.iter().max().unwrap();
    let third = samples.len() / 3;
    let first_third = *samples[..third].iter().max().unwrap();
    let last_third = *samples[samples.len() - third..].iter().max().unwrap();
    eprintln!(
        "daemon RSS over {} s: first third peak {first_third} KiB, last third peak {last_third} KiB, \
         peak {peak} KiB, plan {} KiB; {} threads",
        samples.len(),
        plan_bytes / 1024,
        daemon.threads()
    );
    assert!(
        within_plan(peak, plan_bytes),
        "daemon RSS {peak} KiB above its plan {plan_bytes} bytes: {samples:?}"
    );
    assert!(
        last_third <= first_third + first_third / 10,
        "daemon RSS grew: first third peak {first_third} KiB, last third peak {last_third} KiB: {samples:?}"
    );

    // Phase 2: SIGKILL in the middle of the load, a new daemon on the same socket.
    let mut load = spawn_pgbench(&primary, 20);
    std::thread::sleep(Duration::from_secs(5));
    daemon.signal("-KILL");
    // Killed: no exit status of its own (runuser reports 128 + 9 for it).
    let killed = daemon.wait(Duration::from_secs(10));
    assert!(matches!(killed, None | Some(137)), "{killed:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(socket.exists(), "a killed daemon leaves its socket behind");
    let mut daemon = start(&primary);
    let _ = load.wait();
    let last = primary.switch_wal();
    primary.wait_archived_past(&last, Duration::from_secs(180), || daemon.log_text());

    let segments = wal_segment_range(&first, &last);
    let missing: Vec<&String> = segments
        .iter()
        .filter(|s| !store.path().join(format!("wal_005/{s}.lz4")).is_file())
        .collect();
    eprintln!(
        "{} segments archived through the daemon ({first}..{last})",
        segments.len()
    );
    assert!(
        segments.len() >= 8,
        "expected many segments, got {first}..{last}"
    );
    assert!(
        missing.is_empty(),
        "{} of {} segments missing after the daemon was killed: {missing:?}\n{}",
        missing.len(),
        segments.len(),
        daemon.log_text()
    );
    let failed = primary.psql("select failed_count from pg_stat_archiver");
    eprintln!("archive_command failures while the daemon was down: {failed}");

    // Phase 3: a standby without WAL restores everything through the client and a daemon.
    let standby_conf = "archive_mode = off\nhot_standby = on\nwal_retrieve_retry_interval = 1s\n";
    let mut standby = PgCluster::from_basebackup(&primary, free_port(), standby_conf, &env);
    standby.set_walrus_env(&with_pgdata(&env, &standby));
    let standby_socket = standby.base_dir().join("daemon.sock");
    standby.append_conf(&format!(
        "restore_command = '{} {} wal-fetch %f %p'\n",
        client.display(),
        standby_socket.display()
    ));
    standby.create_signal_file("standby.signal");
    let standby_log = standby.base_dir().join("daemon.log");
    let standby_daemon = Daemon::start(
        standby.walrus_command(&["daemon", &standby_socket.display().to_string()]),
        &standby_socket,
        &standby_log,
    );
    primary.psql("create table after_backup as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    let final_lsn = primary.psql("select pg_switch_wal()");
    let final_segment = primary.psql(&format!("select pg_walfile_name('{final_lsn}')"));
    primary.wait_archived_past(&final_segment, Duration::from_secs(120), || {
        daemon.log_text()
    });
    standby.start();
    standby.wait_replayed(&final_lsn, Duration::from_secs(180), || {
        standby_daemon.log_text()
    });
    assert_eq!(
        primary.dumpall(),
        standby.dumpall(),
        "standby differs from primary"
    );
    assert!(standby.server_log().contains("restored log file"));
    let served = fs::read_to_string(&standby_log).unwrap_or_default();
    assert!(
        served.contains(" restored"),
        "{}",
        standby_daemon.log_text()
    );

    // SIGTERM: exit 0, socket removed.
    standby.stop();
    primary.stop();
    let mut standby_daemon = standby_daemon;
    standby_daemon.terminate(&standby_socket);
    daemon.signal("-TERM");
    assert_eq!(
        daemon.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log_text()
    );
}

/// One request on a new connection; the answer byte (`None`: closed without one).
fn ask(socket: &Path, request: &[u8]) -> Option<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    wal_rus::commands::daemon::message(kind, body)
}

#[test]
fn protocol_answers_as_walg() {
    let test = "protocol_answers_as_walg";
    let Some(client) = require_or_fail(Tool::DaemonClient, test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pgdata = dir.path().join("pgdata");
    fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    let seg = "000000010000000000000007";
    let mut data = vec![0u8; 16 << 20];
    common::stamp_wal_pages(&mut data, 1, 7);
    fs::write(pgdata.join("pg_wal").join(seg), &data).unwrap();
    let socket = dir.path().join("d.sock");
    let log = dir.path().join("daemon.log");
    let env = [
        (
            "WALG_FILE_PREFIX",
            dir.path().join("store").display().to_string(),
        ),
        ("PGDATA", pgdata.display().to_string()),
    ];
    let daemon_cmd = || {
        let mut cmd = Command::new(walrus_bin());
        hermetic(&mut cmd).arg("daemon").arg(&socket);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd
    };
    // A stale socket file is taken over; a live daemon's is not.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut daemon = Daemon::start(daemon_cmd(), &socket, &log);
    let second = run_with_timeout(&mut daemon_cmd(), Duration::from_secs(30));
    assert_eq!(second.status.code(), Some(1), "{}", output_text(&second));
    assert!(output_text(&second).contains("another daemon is listening"));

    // Three idle connections, more than there are connection workers: each is cut after
    // the read timeout, and a request behind them is still answered.
    let idle: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let t0 = Instant::now();
    let mut check = msg(b'C', b"CHECK");
    check.extend(msg(b'F', seg.as_bytes()));
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    s.write_all(&check).unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"OO", "check, then wal-push on the same connection");
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(60),
        "idle clients held the workers for {waited:?}"
    );
    drop(idle);
    assert!(
        dir.path()
            .join(format!("store/wal_005/{seg}.lz4"))
            .is_file()
    );

    // Answers to what the client never sends.
    assert_eq!(ask(&socket, &msg(b'X', b"")), Some(b'E'), "unknown type");
    assert_eq!(
        ask(&socket, b"F\x00\x02"),
        Some(b'E'),
        "length shorter than the header"
    );
    assert_eq!(
        ask(&socket, &msg(b'F', b"../../etc/passwd")),
        Some(b'E'),
        "not a WAL name"
    );
    assert_eq!(
        ask(&socket, &msg(b'f', b"\x01\x00\x09")),
        Some(b'E'),
        "arguments cut short"
    );
    let outside = wal_rus::commands::daemon::args_body(&[seg, "/tmp/outside"]);
    assert_eq!(
        ask(&socket, &msg(b'f', &outside)),
        Some(b'E'),
        "destination outside PGDATA"
    );

    // The client's exit codes, as PostgreSQL sees them.
    let run_client = |args: &[&str]| {
        let mut cmd = Command::new(&client);
        cmd.arg(&socket).args(args).current_dir(&pgdata);
        run_with_timeout(&mut cmd, Duration::from_secs(90))
    };
    let pushed = run_client(&["wal-push", seg]);
    assert_eq!(pushed.status.code(), Some(0), "{}", output_text(&pushed));
    let absent = run_client(&["wal-push", "000000010000000000000008"]);
    assert_eq!(
        absent.status.code(),
        Some(1),
        "missing local file: {}",
        output_text(&absent)
    );
    let fetched = run_client(&["wal-fetch", seg, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(fetched.status.code(), Some(0), "{}", output_text(&fetched));
    assert_eq!(fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap(), data);
    let again = run_client(&["wal-fetch", seg, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "destination exists: {}",
        output_text(&again)
    );
    let missing = run_client(&["wal-fetch", "00000001000000000000009A", "pg_wal/X"]);
    assert_eq!(missing.status.code(), Some(74), "{}", output_text(&missing));
    assert!(!pgdata.join("pg_wal/X").exists());

    daemon.terminate(&socket);
}

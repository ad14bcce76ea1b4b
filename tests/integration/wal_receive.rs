//! `wal-receive` against a real PostgreSQL 15: archiving by streaming replication.
//!
//! - Under a 2-minute pgbench load, killed with -9 at the midpoint and restarted: every
//!   segment from the slot's start to the end is in storage, and a cluster restored from a
//!   base backup taken at the start replays to the end with `wal-rus wal-fetch` and equals
//!   the source. Both processes' peak RSS stay within the memory plan; SIGTERM ends the
//!   second one with exit 0. WAL-G v3.0.8's wal-fetch reads what wal-receive stored (the
//!   first and last segments), byte for byte what the server wrote.
//! - A lost session is opened again from the slot, with no segment missed: across a server
//!   restart, and after 60 s of a silent WAL sender.
//! - Following a standby that is promoted, across a stop and a restart: the segment the old
//!   timeline ends in is stored as `.partial`, the new timeline's `.history` is stored, a
//!   restart whose slot lies before the switch streams the rest of the old timeline first,
//!   and a restore follows the new timeline to the end.

use crate::backup_restore::with_pg;
use crate::common;
use crate::walg_backup_interop::{Maker, run_tool};

use common::{PgCluster, Plan, S3Server, Tool, output_text, require_or_fail, within_plan};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(600);
const SEG: u64 = 16 << 20;

/// The length of the pgbench load (the issue asks for 2 minutes; wal-receive is killed at
/// the midpoint).
const LOAD: Duration = Duration::from_secs(120);

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

const REPLICATION_CONF: &str = "wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\nmax_wal_size = 256MB\nhot_standby = on\n";

/// A running `wal-rus wal-receive`, its log in a file; killed if still running on drop.
struct WalReceive {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WalReceive {
    fn start(env: &[(String, String)]) -> WalReceive {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("wal-receive.log");
        let file = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(common::walrus_bin());
        common::hermetic(&mut cmd)
            .arg("wal-receive")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        WalReceive {
            child: cmd.spawn().expect("start wal-receive"),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the process has ended.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("wal-receive ended ({status}):\n{}", self.log());
        }
    }

    /// The kernel's high-water marks of the process's resident set and address space
    /// (`VmHWM`, `VmPeak`), in KiB.
    fn peaks_kib(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        };
        (field("VmHWM:"), field("VmPeak:"))
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "wal-receive did not exit within 120 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for WalReceive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slot's restart LSN (as a number), once it is in use by a WAL sender.
fn active_slot(pg: &PgCluster, recv: &mut WalReceive) -> u64 {
    let log = recv.log.clone();
    common::wait_for_or_explain(
        "the slot in use",
        Duration::from_secs(60),
        || {
            recv.assert_running();
            let row = pg.psql("select coalesce(restart_lsn::text, ''), active from pg_replication_slots where slot_name = 'walg'");
            let (lsn, active) = row.split_once('|')?;
            (active == "t" && !lsn.is_empty()).then(|| lsn_value(lsn))
        },
        || fs::read_to_string(&log).unwrap_or_default(),
    )
}

fn lsn_value(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Switches the server to a new segment and waits until wal-receive has stored the one
/// just completed; returns that segment's number and timeline.
fn switch_and_wait_stored(pg: &PgCluster, s3: &S3Server, recv: &mut WalReceive) -> (u32, u64) {
    // pg_switch_wal answers the end of the switch record: the segment holding the byte
    // before it is complete.
    let name = pg.psql("select pg_walfile_name(pg_switch_wal() - 1)");
    let (tli, segno) = common::parse_wal_segment_name(&name);
    let log = recv.log.clone();
    common::wait_for_or_explain(
        &format!("{name} in storage"),
        Duration::from_secs(120),
        || {
            recv.assert_running();
            stored(s3).contains(&name).then_some(())
        },
        || fs::read_to_string(&log).unwrap_or_default(),
    );
    (tli, segno)
}

/// The WAL file names in `wal_005/`, extension stripped.
fn stored(s3: &S3Server) -> Vec<String> {
    s3.list_keys("walrecv/wal_005/")
        .iter()
        .map(|k| {
            let name = k.trim_start_matches("walrecv/wal_005/");
            name.strip_suffix(".lz4").unwrap_or(name).to_string()
        })
        .collect()
}

fn assert_segments_stored(s3: &S3Server, tli: u32, first: u64, last: u64) {
    let have = stored(s3);
    let missing: Vec<String> = (first..=last)
        .map(|n| common::wal_segment_name(tli, n))
        .filter(|n| !have.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "segments missing from storage: {missing:?}\nstored: {have:?}"
    );
}

/// Restores LATEST from storage into a new cluster that recovers through wal-fetch to the
/// end of the archive, following the latest timeline, and is then promoted.
fn restore(env: &[(String, String)]) -> PgCluster {
    crate::backup_restore::restore(
        &with_pg(env.to_vec(), 0),
        "recovery_target_timeline = 'latest'\nrecovery_target_action = promote",
    )
}

/// WAL-G v3.0.8's wal-fetch of segments `segnos` (timeline 1) that wal-receive stored:
/// each equals wal-rus's fetch of it and, while the server still has it, its `pg_wal` copy.
fn walg_reads(s3: &S3Server, pg: &PgCluster, segnos: &[u64]) {
    let Some(walg_bin) = require_or_fail(Tool::Walg, "kill_9_under_load_loses_nothing") else {
        return;
    };
    let env = s3.env("walrecv");
    let dir = tempfile::tempdir().unwrap();
    for &segno in segnos {
        let name = common::wal_segment_name(1, segno);
        let mut got = Vec::new();
        for maker in [Maker::Walg, Maker::Walrus] {
            let dest = dir.path().join(format!("{name}.{maker:?}"));
            let out = run_tool(
                maker,
                &walg_bin,
                &["wal-fetch", &name, dest.to_str().unwrap()],
                &env,
            );
            ok(&out, &format!("{maker:?} wal-fetch {name}"));
            got.push(fs::read(&dest).unwrap());
        }
        assert_eq!(got[0].len() as u64, SEG, "WAL-G's fetch of {name}");
        assert!(
            got[0] == got[1],
            "WAL-G and wal-rus fetch different bytes for {name}"
        );
        if let Ok(source) = fs::read(pg.data_dir().join("pg_wal").join(&name)) {
            assert!(
                source == got[0],
                "{name} from storage differs from the server's"
            );
            eprintln!("WAL-G's wal-fetch of {name}: equal to the server's pg_wal copy");
        }
    }
}

/// Settings as the tests pass them to a process.
type Env = Vec<(String, String)>;

/// S3 and a PostgreSQL 15 primary that allows replication, with wal-rus's settings for
/// both; `None` when a tool is missing (and not required).
fn primary_with_s3(test: &str) -> Option<(S3Server, Env, PgCluster)> {
    require_or_fail(Tool::Postgres, test)?;
    require_or_fail(Tool::S3s, test)?;
    let s3 = S3Server::start();
    let port = common::free_port();
    let env = with_pg(s3.env("walrecv"), port);
    let mut pg = PgCluster::init_with_env(port, REPLICATION_CONF, &env);
    pg.start();
    Some((s3, env, pg))
}

/// The test: 2 minutes of pgbench, wal-receive killed with -9 at the midpoint and
/// restarted at once; nothing lost, the replay equals the source, memory within the plan.
#[test]
fn kill_9_under_load_loses_nothing() {
    let Some((s3, env, mut pg)) = primary_with_s3("kill_9_under_load_loses_nothing") else {
        return;
    };
    pg.pgbench_init(10);
    let plan = Plan::read(&env);
    let (planned, planned_virt) = (plan.rss("wal-receive"), plan.virt("wal-receive"));

    let mut first = WalReceive::start(&env);
    let slot_start = active_slot(&pg, &mut first);
    // The base backup the restore starts from, taken once the slot holds its WAL.
    ok(
        &pg.run_walrus_as_postgres(&["backup-push", pg.data_dir().to_str().unwrap()], LONG),
        "backup-push",
    );
    let mut load = pg.client("pgbench");
    load.args(["-T", &LOAD.as_secs().to_string(), "-c", "4", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let load_started = Instant::now();
    let load = load.spawn().expect("pgbench");

    std::thread::sleep(LOAD / 2);
    first.assert_running();
    let first_peak = first.peaks_kib();
    let first_log = first.log();
    first.kill_9();
    let mut second = WalReceive::start(&env);
    eprintln!(
        "wal-receive killed with -9 after {:.0} s of load (peak RSS, VmPeak {first_peak:?} KiB; \
         plan {} KiB, {} KiB)",
        load_started.elapsed().as_secs_f64(),
        planned / 1024,
        planned_virt / 1024
    );

    let out = load.wait_with_output().unwrap();
    ok(&out, "pgbench");
    second.assert_running();
    let source = pg.dumpall();
    let (tli, last) = switch_and_wait_stored(&pg, &s3, &mut second);
    let second_peak = second.peaks_kib();
    let (status, second_log) = second.terminate();
    assert!(
        status.success(),
        "wal-receive exited with {status} after SIGTERM:\n{second_log}"
    );
    let head: Vec<&str> = second_log.lines().take(6).collect();
    eprintln!(
        "wal-receive after the restart: peak RSS, VmPeak {second_peak:?} KiB; its log began\n{}",
        head.join("\n")
    );
    for ((rss, virt), log) in [(first_peak, &first_log), (second_peak, &second_log)] {
        assert!(
            within_plan(rss, planned),
            "wal-receive peak RSS {rss} KiB above its plan {} KiB:\n{log}",
            planned / 1024
        );
        assert!(
            within_plan(virt, planned_virt),
            "wal-receive VmPeak {virt} KiB above its plan {} KiB:\n{log}",
            planned_virt / 1024
        );
    }

    // Every segment from the slot's start to the last switch, on timeline 1.
    assert_eq!(tli, 1);
    let first_seg = slot_start / SEG;
    assert!(
        last > first_seg + 10,
        "only {} segments: the load wrote too little WAL",
        last - first_seg
    );
    assert_segments_stored(&s3, 1, first_seg, last);
    eprintln!("segments {first_seg:X}..={last:X} stored");
    walg_reads(&s3, &pg, &[first_seg, last]);
    pg.stop();

    let restored = restore(&s3.env("walrecv"));
    assert!(
        restored.dumpall() == source,
        "the restored cluster differs from the source"
    );
}

/// A promoted standby: the timeline switch while streaming is handled by the live session;
/// a restart whose slot lies before the switch first streams the rest of the old timeline.
#[test]
fn follows_a_promoted_standby_across_a_restart() {
    let test = "follows_a_promoted_standby_across_a_restart";
    let Some(_) = require_or_fail(Tool::Postgres, test) else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, test) else {
        return;
    };
    let s3 = S3Server::start();
    let port = common::free_port();
    let env = with_pg(s3.env("walrecv"), port);
    let mut primary = PgCluster::init_with_env(
        port,
        &format!("{REPLICATION_CONF}wal_keep_size = 512MB\n"),
        &env,
    );
    primary.start();
    primary.pgbench_init(2);
    let standby_port = common::free_port();
    let standby_env = with_pg(s3.env("walrecv"), standby_port);
    let mut standby = PgCluster::from_basebackup(
        &primary,
        standby_port,
        &format!("primary_conninfo = 'host=127.0.0.1 port={port} user=postgres'\n"),
        &standby_env,
    );
    standby.create_signal_file("standby.signal");
    standby.start();

    // wal-receive follows the standby; the base backup is taken on the primary.
    let mut recv = WalReceive::start(&standby_env);
    let slot_start = active_slot(&standby, &mut recv);
    ok(
        &primary
            .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG),
        "backup-push",
    );
    primary.pgbench(&["-t", "300", "-c", "2"]);
    let (_, seg) = switch_and_wait_stored(&primary, &s3, &mut recv);
    assert_segments_stored(&s3, 1, slot_start / SEG, seg);

    // Stopped with SIGTERM: later WAL waits in the standby's slot.
    let (status, log) = recv.terminate();
    assert!(status.success(), "{status}:\n{log}");
    primary.psql("create table after_stop as select g from generate_series(1, 100000) g");
    primary.stop();
    assert_eq!(standby.psql("select pg_promote(true, 120)"), "t");
    standby.psql("create table on_tli2 as select g from generate_series(1, 50000) g");

    // The restart: timeline 1 from the slot to the switch, then timeline 2.
    let mut recv = WalReceive::start(&standby_env);
    standby.pgbench(&["-t", "300", "-c", "2"]);
    let source = standby.dumpall();
    let (tli, last) = switch_and_wait_stored(&standby, &s3, &mut recv);
    assert_eq!(tli, 2);
    let (status, log) = recv.terminate();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("timeline 1 ended at"), "{log}");
    let have = stored(&s3);
    assert!(have.contains(&"00000002.history".to_string()), "{have:?}");
    let partial = have
        .iter()
        .find(|n| n.ends_with(".partial"))
        .unwrap_or_else(|| panic!("no .partial in {have:?}"));
    let switch_seg = common::parse_wal_segment_name(&partial[..24]).1;
    assert_segments_stored(&s3, 1, slot_start / SEG, switch_seg - 1);
    assert_segments_stored(&s3, 2, switch_seg, last);

    let restored = restore(&s3.env("walrecv"));
    assert_eq!(restored.psql("select count(*) from after_stop"), "100000");
    assert_eq!(restored.psql("select count(*) from on_tli2"), "50000");
    assert!(
        restored.dumpall() == source,
        "the restored cluster differs from the promoted standby"
    );
}

/// Sends `sig` to process `pid`.
fn signal(pid: &str, sig: &str) {
    let st = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Waits until wal-receive's log says it lost its session and will connect again, the
/// `count`th time.
fn wait_reconnecting(recv: &mut WalReceive, count: usize, within: Duration) -> String {
    let log = recv.log.clone();
    common::wait_for_or_explain(
        "wal-receive connecting again",
        within,
        || {
            recv.assert_running();
            let text = recv.log();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("connecting again"))
                .collect();
            (lines.len() >= count).then(|| lines[count - 1].to_string())
        },
        || fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// A lost session is opened again, from the slot, with no segment missed: across a restart
/// of the server, and when the WAL sender says nothing for longer than the receive timeout
/// (60 s; the sender is stopped with SIGSTOP and let go once wal-receive gave it up).
#[test]
fn reconnects_after_a_restart_and_a_silent_server() {
    let Some((s3, env, mut pg)) = primary_with_s3("reconnects_after_a_restart_and_a_silent_server")
    else {
        return;
    };
    let mut recv = WalReceive::start(&env);
    let slot_start = active_slot(&pg, &mut recv);
    pg.psql("create table t (x int)");
    pg.psql("insert into t select generate_series(1, 100000)");
    switch_and_wait_stored(&pg, &s3, &mut recv);

    // The server restarts under it.
    pg.stop();
    let lost = wait_reconnecting(&mut recv, 1, Duration::from_secs(60));
    eprintln!("after the server stopped: {lost}");
    pg.start();
    pg.psql("insert into t select generate_series(1, 100000)");
    switch_and_wait_stored(&pg, &s3, &mut recv);
    active_slot(&pg, &mut recv);

    // The WAL sender goes silent.
    let sender = pg.psql("select active_pid from pg_replication_slots where slot_name = 'walg'");
    signal(&sender, "-STOP");
    let stopped = Instant::now();
    let silent = wait_reconnecting(&mut recv, 2, Duration::from_secs(120));
    let waited = stopped.elapsed();
    signal(&sender, "-CONT");
    eprintln!(
        "after {:.0} s of a silent WAL sender: {silent}",
        waited.as_secs_f64()
    );
    assert!(
        waited >= Duration::from_secs(55),
        "gave the session up after {waited:?}, before the 60 s receive timeout"
    );
    pg.psql("insert into t select generate_series(1, 100000)");
    let (tli, last) = switch_and_wait_stored(&pg, &s3, &mut recv);
    assert_eq!(tli, 1);
    assert_segments_stored(&s3, 1, slot_start / SEG, last);
    let (status, log) = recv.terminate();
    assert!(status.success(), "wal-receive exited with {status}:\n{log}");
}

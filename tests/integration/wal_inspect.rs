//! `wal-verify` and `wal-show` against WAL-G v3.0.8 itself (WALRUS_WALG_BIN), on a file
//! storage and on S3 (s3s-fs) that a real PostgreSQL 15 cluster archives into through wal-rus:
//!
//! 1. WAL of timeline 1 and two backups (one by wal-rus, one by WAL-G when the tests run as
//!    root, which WAL-G needs to read the postgres-owned data directory): every form of both
//!    commands prints byte for byte what WAL-G prints (`wal-verify integrity timeline --json`
//!    at a given `--timeline`/`--lsn`, with `--backup-name`, asking the running cluster over
//!    PG* settings, the plain reports per check; `wal-show --detailed-json` and the table,
//!    with and without backups), with WAL-G's default windows and with
//!    `WALG_UPLOAD_CONCURRENCY=2`, `WALG_INTEGRITY_MAX_DELAYED_WALS=1`.
//! 2. A timeline switch: the backup restored by wal-rus and recovered to the end of the
//!    archive, promoted to timeline 2, archiving `00000002.history`, its `.partial` and new
//!    segments: the same comparisons, asking the promoted cluster too.
//! 3. One segment deleted in the middle of the archive: the same comparisons, and the
//!    integrity check reports `FAILURE` with `MISSING_LOST`, wal-show `LOST_SEGMENTS`.
//!
//! WAL-G prints the checks of a plain `wal-verify` in random order, so a plain report of two
//! checks is compared check by check. Both tools run as the current user with `TZ=UTC`
//! (WAL-G prints file-storage times in the local zone). Without WAL-G the test prints a
//! `SKIP:` line and passes (see `common::require_or_fail`).

use crate::common;

use common::{COMMAND_TIMEOUT, PgCluster, S3Server, Tool, hermetic, output_text, require_or_fail};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(600);

/// Runs `args` with `env` by WAL-G (`walg` given) or wal-rus, as the current user.
fn run(walg: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Output {
    let home = TempDir::new().unwrap();
    let mut cmd = Command::new(walg.map_or_else(common::walrus_bin, Path::to_path_buf));
    hermetic(&mut cmd)
        .args(args)
        .envs(env.iter().cloned())
        .env("HOME", home.path())
        .env("TZ", "UTC")
        .env_remove("PGDATA")
        .current_dir(home.path());
    common::run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
}

/// Both tools' stdout for `args`, asserted identical (and the same exit code); returns it.
fn same(walg: &Path, args: &[&str], env: &[(String, String)], what: &str) -> String {
    let g = run(Some(walg), args, env);
    let r = run(None, args, env);
    assert_eq!(
        (g.status.code(), String::from_utf8_lossy(&g.stdout)),
        (r.status.code(), String::from_utf8_lossy(&r.stdout)),
        "[{what}] {} differs (left WAL-G, right wal-rus)\n--- WAL-G ---\n{}\n--- wal-rus ---\n{}",
        args.join(" "),
        output_text(&g),
        output_text(&r)
    );
    eprintln!(
        "[{what}] {}: identical, exit {:?}, {} bytes",
        args.join(" "),
        r.status.code(),
        r.stdout.len()
    );
    String::from_utf8(r.stdout).unwrap()
}

/// A plain wal-verify report cut into its checks (WAL-G's order is random).
fn blocks(text: &str) -> BTreeSet<String> {
    let mut out: Vec<String> = Vec::new();
    for part in text.split("[wal-verify] ").filter(|p| !p.is_empty()) {
        match out.last_mut() {
            Some(last) if !part.contains(" check status: ") => {
                last.push_str("[wal-verify] ");
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out.into_iter().collect()
}

/// A cluster's position for `--timeline`/`--lsn`: the last checkpoint's timeline (what WAL-G
/// asks) and the current LSN.
fn position(pg: &PgCluster) -> (String, String) {
    pg.psql("checkpoint");
    let row = pg.psql("select timeline_id, pg_current_wal_lsn() from pg_control_checkpoint()");
    let (tli, lsn) = row.split_once('|').unwrap();
    (tli.to_string(), lsn.to_string())
}

/// `env` plus how to reach the cluster on `port`.
fn with_pg(env: &[(String, String)], port: u16) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    for (k, v) in [
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", port.to_string()),
        ("PGUSER", "postgres".to_string()),
        ("PGDATABASE", "postgres".to_string()),
    ] {
        env.push((k.to_string(), v));
    }
    env
}

/// Every comparison, on the archive as it is, for the cluster `pg` (running); returns the
/// integrity JSON and the wal-show JSON of the tuned settings.
fn compare_all(
    walg: &Path,
    env: &[(String, String)],
    pg: &PgCluster,
    backup: &str,
    stage: &str,
) -> (String, String) {
    let (tli, lsn) = position(pg);
    let tuned: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain([
            ("WALG_UPLOAD_CONCURRENCY".to_string(), "2".to_string()),
            (
                "WALG_INTEGRITY_MAX_DELAYED_WALS".to_string(),
                "1".to_string(),
            ),
        ])
        .collect();
    let mut results = (String::new(), String::new());
    for (label, env) in [("defaults", env.to_vec()), ("tuned", tuned)] {
        let what = format!("{stage}, {label}");
        let at = ["--timeline", &tli, "--lsn", &lsn];
        let verify = |extra: &[&str]| {
            let mut args = vec!["wal-verify"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&at);
            same(walg, &args, &env, &what)
        };
        let integrity = verify(&["integrity", "timeline", "--json"]);
        verify(&["timeline", "integrity", "--json", "--backup-name", backup]);
        let one = verify(&["integrity"]) + &verify(&["timeline"]);
        eprintln!("[{what}] plain:\n{one}");
        let both = run(
            None,
            &[&["wal-verify", "integrity", "timeline"][..], &at[..]].concat(),
            &env,
        );
        let walg_both = run(
            Some(walg),
            &[&["wal-verify", "timeline", "integrity"][..], &at[..]].concat(),
            &env,
        );
        assert_eq!(
            blocks(&String::from_utf8_lossy(&walg_both.stdout)),
            blocks(&one),
            "[{what}] WAL-G's plain checks"
        );
        assert_eq!(
            blocks(&String::from_utf8_lossy(&both.stdout)),
            blocks(&one),
            "[{what}] wal-rus's plain checks"
        );
        let show = same(walg, &["wal-show", "--detailed-json"], &env, &what);
        same(
            walg,
            &["wal-show", "--detailed-json", "--without-backups"],
            &env,
            &what,
        );
        eprintln!(
            "[{what}] table:\n{}",
            same(walg, &["wal-show"], &env, &what)
        );
        same(walg, &["wal-show", "--without-backups"], &env, &what);
        results = (integrity, show);
    }
    // Asking the cluster: both tools must see it at the same place, so retry while it moves.
    let live = with_pg(env, pg.port());
    let args = ["wal-verify", "integrity", "timeline", "--json"];
    let agreed = (0..3).any(|_| {
        let g = run(Some(walg), &args, &live);
        let r = run(None, &args, &live);
        assert!(
            r.status.success(),
            "[{stage}] wal-rus asking the cluster\n{}",
            output_text(&r)
        );
        g.stdout == r.stdout && g.status.code() == r.status.code()
    });
    assert!(
        agreed,
        "[{stage}] asking the cluster, the tools disagree three times"
    );
    results
}

/// Writes a little and switches to a new segment, `n` times, then waits until the archiver
/// has stored everything up to the last switch.
fn fill(pg: &PgCluster, n: usize) {
    pg.psql("create table if not exists filler(x int)");
    let mut last = String::new();
    for _ in 0..n {
        pg.psql("insert into filler select generate_series(1, 1000)");
        last = pg.psql("select pg_walfile_name(pg_current_wal_lsn())");
        pg.psql("select pg_switch_wal()");
    }
    common::wait_for_or_explain(
        "archiving",
        Duration::from_secs(180),
        || {
            let row = pg
                .psql("select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver");
            let (archived, failed) = row.split_once('|').unwrap();
            assert_eq!(
                failed,
                "0",
                "archive_command failed:\n{}",
                pg.server_log_tail(40)
            );
            (archived >= last.as_str()).then_some(())
        },
        || pg.server_log_tail(40),
    );
    // A write of its own, so the current LSN is inside a segment and stays in it.
    pg.psql("insert into filler values (0)");
}

/// The archive's WAL objects of timeline `tli` (segments only), by segment name.
fn segments(root: &Path, tli: u32) -> Vec<String> {
    let prefix = format!("{tli:08X}");
    let mut out: Vec<String> = fs::read_dir(root.join("wal_005"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.len() == 28 && n.ends_with(".lz4"))
        .collect();
    out.sort();
    out
}

/// Where the archive is.
enum Store {
    /// A directory owned by postgres (the cluster's wal-rus writes it).
    File(TempDir),
    /// s3s-fs, prefix `inspect`.
    S3(S3Server),
}

impl Store {
    /// Both tools' storage settings.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = match self {
            Store::File(dir) => vec![(
                "WALG_FILE_PREFIX".to_string(),
                dir.path().display().to_string(),
            )],
            // WAL-G asks for bucket versioning, which s3s-fs does not answer.
            Store::S3(s3) => [
                s3.env("inspect"),
                vec![("S3_ENABLE_VERSIONING".into(), "disabled".into())],
            ]
            .concat(),
        };
        env.push(("WALG_COMPRESSION_METHOD".to_string(), "lz4".to_string()));
        env
    }

    /// The directory holding the archive's objects (s3s-fs keeps each as a plain file).
    fn path(&self) -> PathBuf {
        match self {
            Store::File(dir) => dir.path().to_path_buf(),
            Store::S3(s3) => s3.object_path("inspect"),
        }
    }
}

#[test]
fn wal_verify_and_wal_show_match_walg_file() {
    lane(
        "wal_inspect::wal_verify_and_wal_show_match_walg_file",
        false,
    );
}

#[test]
fn wal_verify_and_wal_show_match_walg_s3() {
    lane("wal_inspect::wal_verify_and_wal_show_match_walg_s3", true);
}

/// The three stages of the module's documentation, on file storage or on S3.
fn lane(test: &str, s3: bool) {
    let Some(walg) = require_or_fail(Tool::Walg, test) else {
        return;
    };
    require_or_fail(Tool::Postgres, test).unwrap();
    let store = if s3 {
        require_or_fail(Tool::S3s, test).unwrap();
        Store::S3(S3Server::start())
    } else {
        Store::File(common::postgres_owned_tempdir("walrus-inspect-"))
    };
    let env = store.env();
    let port = common::free_port();
    let conf = "wal_level = replica\narchive_mode = on\narchive_command = '{walrus} wal-push %p'\n";
    let mut primary = PgCluster::init_with_env(port, conf, &with_pg(&env, port));
    primary.start();
    primary.pgbench_init(1);
    fill(&primary, 2);
    let out = primary
        .run_walrus_as_postgres(&["backup-push", primary.data_dir().to_str().unwrap()], LONG);
    assert!(
        out.status.success(),
        "wal-rus backup-push\n{}",
        output_text(&out)
    );
    let backup = first_backup(&store.path());
    fill(&primary, 3);
    if common::is_root() {
        let data = primary.data_dir().to_str().unwrap().to_string();
        let out = run(Some(&walg), &["backup-push", &data], &with_pg(&env, port));
        assert!(
            out.status.success(),
            "WAL-G backup-push\n{}",
            output_text(&out)
        );
    } else {
        common::skip(
            test,
            "not root: WAL-G cannot read the data directory for its backup",
        );
    }
    fill(&primary, 6);
    compare_all(&walg, &env, &primary, &backup, "timeline 1");
    primary.stop();

    // Timeline 2: restore the first backup, recover to the end of the archive, promote.
    let conf = "archive_mode = on\narchive_command = '{walrus} wal-push %p'\nrestore_command = '{walrus} wal-fetch %f %p'\n";
    let (mut promoted, out) = PgCluster::from_restore(common::free_port(), conf, &env, |c| {
        c.run_walrus_as_postgres(
            &["backup-fetch", c.data_dir().to_str().unwrap(), &backup],
            LONG,
        )
    });
    assert!(
        out.status.success(),
        "wal-rus backup-fetch\n{}",
        output_text(&out)
    );
    promoted.create_signal_file("recovery.signal");
    promoted.start();
    common::wait_for_or_explain(
        "promotion",
        Duration::from_secs(300),
        || (promoted.try_psql("select pg_is_in_recovery()").ok()? == "f").then_some(()),
        || promoted.server_log_tail(60),
    );
    fill(&promoted, 5);
    let history = store.path().join("wal_005/00000002.history.lz4");
    assert!(
        history.is_file(),
        "the promoted cluster archived no history file"
    );
    compare_all(&walg, &env, &promoted, &backup, "timeline 2");

    // A hole in the middle of timeline 2's WAL.
    let tl2 = segments(&store.path(), 2);
    assert!(tl2.len() >= 5, "{tl2:?}");
    let gone = &tl2[1];
    fs::remove_file(store.path().join("wal_005").join(gone)).unwrap();
    let (integrity, show) = compare_all(&walg, &env, &promoted, &backup, "a segment deleted");
    assert!(
        integrity.contains(r#""integrity":{"status":"FAILURE""#),
        "{integrity}"
    );
    let lost = format!(
        r#""start_segment":"{}","end_segment":"{}","segments_count":1,"status":"MISSING_LOST""#,
        &gone[..24],
        &gone[..24]
    );
    assert!(integrity.contains(&lost), "{integrity}");
    assert!(
        show.contains(&format!(r#""missing_segments":["{}"]"#, &gone[..24])),
        "{show}"
    );
    assert!(show.contains(r#""status":"LOST_SEGMENTS""#), "{show}");
    promoted.stop();
}

/// The name of the only backup in the archive at `root`.
fn first_backup(root: &Path) -> String {
    let names: Vec<String> = fs::read_dir(root.join("basebackups_005"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix("_backup_stop_sentinel.json")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

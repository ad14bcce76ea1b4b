//! `wal-rus wal-restore TARGET SOURCE` before pg_rewind, in the scenario of WAL-G's own test
//! (`docker/pg_tests/scripts/tests/wal_restore_test.sh`): a primary (alpha) archiving through
//! wal-rus, a streaming standby (beta, small max_wal_size so that it recycles segments) that
//! archives too; alpha stops, beta is promoted and loaded (timeline 2), alpha starts again
//! and diverges. wal-restore must put every timeline-2 segment from the parting point to the
//! newest one back into beta's pg_wal, each equal to the archived segment; pg_rewind then
//! rewinds alpha onto beta (its own recycled WAL through `-c`, alpha's restore_command), and
//! alpha, started as beta's standby, ends with beta's data.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    PgCluster, Tool, free_port, is_root, output_text, postgres_owned_tempdir, require_or_fail,
    run_with_timeout,
};

/// A PostgreSQL program run as the postgres user.
fn as_postgres(pg: &PgCluster, program: &str) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg.bin(program));
        c
    } else {
        Command::new(pg.bin(program))
    };
    cmd.current_dir(pg.base_dir());
    cmd
}

/// Timeline-`tl` segment numbers in `wal_dir`.
fn segments_on(wal_dir: &Path, tl: u32) -> Vec<u64> {
    let mut out: Vec<u64> = fs::read_dir(wal_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| common::parse_wal_segment_name(&n))
                .filter(|(t, _)| *t == tl)
                .map(|(_, s)| s)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn wal_restore_fills_the_source_pg_wal_for_pg_rewind() {
    let test = "wal_restore_fills_the_source_pg_wal_for_pg_rewind";
    if require_or_fail(Tool::Postgres, test).is_none() {
        return;
    }
    let store = postgres_owned_tempdir("walrus-rewind-store-");
    let env = vec![
        (
            "WALG_FILE_PREFIX".to_string(),
            store.path().display().to_string(),
        ),
        ("WALG_COMPRESSION_METHOD".to_string(), "lz4".to_string()),
    ];
    let alpha_conf = "wal_level = replica\nmax_wal_senders = 4\nwal_log_hints = on\n\
                      archive_mode = on\narchive_command = '{walrus} wal-push %p'\n";
    let mut alpha = PgCluster::init_with_env(free_port(), alpha_conf, &env);
    alpha.start();
    let beta_conf = format!(
        "wal_log_hints = on\nmax_wal_size = 32MB\nmin_wal_size = 32MB\nhot_standby = on\n\
         archive_mode = on\narchive_command = '{{walrus}} wal-push %p'\n\
         restore_command = '{{walrus}} wal-fetch %f %p'\n\
         primary_conninfo = 'host=127.0.0.1 port={} user=postgres'\n",
        alpha.port()
    );
    alpha.psql("select pg_switch_wal()");
    let mut beta = PgCluster::from_basebackup(&alpha, free_port(), &beta_conf, &env);
    beta.create_signal_file("standby.signal");
    beta.start();

    alpha.pgbench_init(4);
    let lsn = alpha.psql("select pg_current_wal_lsn()");
    beta.wait_replayed(&lsn, Duration::from_secs(180), String::new);
    alpha.stop();

    // Beta becomes timeline 2 and writes enough to recycle segments of it.
    assert_eq!(beta.psql("select pg_promote()"), "t");
    beta.pgbench_init(8);
    beta.psql("checkpoint");
    beta.pgbench(&["-n", "-c", "2", "-t", "500"]);
    beta.psql("checkpoint");
    let last = beta.switch_wal();
    beta.wait_archived_past(&last, Duration::from_secs(120), String::new);
    beta.psql("checkpoint");
    beta.stop();

    // Alpha diverges on timeline 1.
    alpha.start();
    alpha.pgbench_init(4);
    alpha.stop();

    let beta_wal = beta.data_dir().join("pg_wal");
    let history = fs::read_to_string(beta_wal.join("00000002.history")).expect("beta's history");
    let switch = history
        .lines()
        .find_map(|l| l.split('\t').nth(1))
        .and_then(|lsn| {
            let (hi, lo) = lsn.split_once('/')?;
            Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
        })
        .expect("a record in 00000002.history");
    let first = switch / (16 << 20);
    let before = segments_on(&beta_wal, 2);
    let newest = *before.last().expect("timeline-2 segments in beta's pg_wal");
    let lacking: Vec<u64> = (first..=newest).filter(|s| !before.contains(s)).collect();
    assert!(
        !lacking.is_empty(),
        "beta recycled no timeline-2 segment ({first}..={newest} all present): nothing to test"
    );

    let (alpha_data, beta_data) = (alpha.data_dir().display(), beta.data_dir().display());
    let wal_restore = || {
        let args = [
            "wal-restore".to_string(),
            alpha_data.to_string(),
            beta_data.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        beta.run_walrus_as_postgres(&args, Duration::from_secs(300))
    };
    let out = wal_restore();
    assert!(
        out.status.success(),
        "wal-restore failed\n{}",
        output_text(&out)
    );
    let after = segments_on(&beta_wal, 2);
    for s in first..=newest {
        assert!(
            after.contains(&s),
            "segment {s} of timeline 2 still missing\n{}",
            output_text(&out)
        );
    }
    eprintln!(
        "wal-restore fetched {} segments ({lacking:?}) of timeline 2 from {first} to {newest}",
        lacking.len()
    );
    // Each fetched segment is the archived one, byte for byte.
    let check = tempfile::tempdir().unwrap();
    for s in &lacking {
        let name = common::wal_segment_name(2, *s);
        let copy = check.path().join(&name);
        let fetched = common::run_walrus(["wal-fetch", &name, &copy.display().to_string()], &env);
        assert!(fetched.status.success(), "{}", output_text(&fetched));
        assert!(
            fs::read(&copy).unwrap() == fs::read(beta_wal.join(&name)).unwrap(),
            "{name} differs"
        );
    }
    // Run again: nothing left to fetch.
    let again = wal_restore();
    assert!(again.status.success(), "{}", output_text(&again));
    assert!(
        output_text(&again).contains("No WAL files to restore"),
        "{}",
        output_text(&again)
    );

    // Alpha's own WAL back to the last common checkpoint may be recycled too: pg_rewind
    // fetches that through alpha's restore_command (-c), beta's through what wal-restore put
    // into beta's pg_wal. Without prefetch: pg_rewind walks pg_wal while it runs, and a
    // prefetcher's files coming and going under pg_wal/.wal-g would fail that walk.
    alpha.append_conf(&format!(
        "restore_command = 'WALG_DOWNLOAD_CONCURRENCY=1 {} wal-fetch %f %p'\n",
        alpha.walrus_wrapper().display()
    ));
    let rewind = run_with_timeout(
        as_postgres(&alpha, "pg_rewind")
            .arg("-c")
            .arg("-D")
            .arg(alpha.data_dir())
            .arg(format!("--source-pgdata={}", beta.data_dir().display())),
        Duration::from_secs(300),
    );
    assert!(
        rewind.status.success(),
        "pg_rewind failed\n{}",
        output_text(&rewind)
    );

    // Alpha follows beta now (pg_rewind copied beta's postgresql.conf: alpha's own port and
    // socket directory go back in).
    beta.start();
    alpha.append_conf(&format!(
        "port = {}\nunix_socket_directories = '{}'\n",
        alpha.port(),
        alpha.base_dir().display()
    ));
    alpha.append_conf(&format!(
        "primary_conninfo = 'host=127.0.0.1 port={} user=postgres'\n\
         restore_command = '{} wal-fetch %f %p'\narchive_mode = off\n",
        beta.port(),
        alpha.walrus_wrapper().display()
    ));
    alpha.create_signal_file("standby.signal");
    alpha.start();
    let target = beta.psql("select pg_current_wal_lsn()");
    alpha.wait_replayed(&target, Duration::from_secs(180), String::new);
    assert_eq!(
        alpha.dumpall(),
        beta.dumpall(),
        "rewound alpha differs from beta"
    );
    alpha.stop();
    beta.stop();
}

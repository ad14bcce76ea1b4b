//! WAL-G's rate limits on a real cluster: `WALG_DISK_RATE_LIMIT` holds backup-push's reading
//! of the data directory to its rate, `WALG_NETWORK_RATE_LIMIT` holds backup-fetch's
//! download to its own, and `--turbo` lifts both, as in WAL-G.

use crate::common;

use common::{PgCluster, Tool, output_text, require_or_fail};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(600);
const RATE: u64 = 8 << 20;

fn mib_read(out: &std::process::Output) -> f64 {
    let text = output_text(out);
    let at = text
        .find(" MiB read")
        .unwrap_or_else(|| panic!("no size in:\n{text}"));
    let start = text[..at].rfind(' ').unwrap() + 1;
    text[start..at].parse().unwrap()
}

#[test]
fn rate_limits_hold_and_turbo_lifts_them() {
    let Some(_) = require_or_fail(Tool::Postgres, "rate_limits_hold_and_turbo_lifts_them") else {
        return;
    };
    let files = common::postgres_owned_tempdir("walrus-rate-");
    let port = common::free_port();
    let env: Vec<(String, String)> = [
        ("WALG_FILE_PREFIX", files.path().display().to_string()),
        ("PGHOST", "127.0.0.1".into()),
        ("PGPORT", port.to_string()),
        ("PGUSER", "postgres".into()),
        ("PGDATABASE", "postgres".into()),
        ("WALG_DISK_RATE_LIMIT", RATE.to_string()),
        ("WALG_NETWORK_RATE_LIMIT", RATE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut pg = PgCluster::init_with_env(port, "wal_level = replica\n", &env);
    pg.start();
    // About 64 MiB of data directory in all, little of it compressible, so that the download
    // is about as large as what was read.
    pg.psql(
        "create table filler as select g, md5(random()::text) || md5(random()::text) || md5(random()::text) \
         || md5(random()::text) as pad from generate_series(1, 260000) g",
    );
    pg.psql("checkpoint");
    let data = pg.data_dir().to_str().unwrap().to_string();

    let start = Instant::now();
    let out = pg.run_walrus_as_postgres(&["backup-push", &data], LONG);
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", output_text(&out));
    let mib = mib_read(&out);
    // The bucket starts full (one second of the rate): the rest takes its time.
    let expected = (mib - 8.0 - 1.0 / 16.0).max(0.0) / 8.0;
    assert!(mib > 48.0, "the data directory is only {mib} MiB");
    assert!(
        secs > expected * 0.85 && secs < expected * 1.15 + 1.0,
        "backup-push of {mib:.1} MiB at 8 MiB/s took {secs:.1} s, expected {expected:.1} s"
    );
    common::loud(&format!(
        "WALG_DISK_RATE_LIMIT=8 MiB/s: backup-push of {mib:.1} MiB took {secs:.1} s (expected {expected:.1} s)"
    ));

    let start = Instant::now();
    let out = pg.run_walrus_as_postgres(&["--turbo", "backup-push", &data], LONG);
    let turbo = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(turbo < expected / 2.0, "--turbo took {turbo:.1} s");

    // backup-fetch: the download is held to the network limit.
    let dest = files.path().join("restore");
    let start = Instant::now();
    let out = pg.run_walrus_as_postgres(&["backup-fetch", dest.to_str().unwrap(), "LATEST"], LONG);
    let fetch = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", output_text(&out));
    let stored_mib = walk_size(&files.path().join("basebackups_005")) as f64 / (1 << 20) as f64;
    // Two backups are stored; one is fetched.
    let fetched = stored_mib / 2.0;
    let expected_fetch = (fetched - 8.0).max(0.0) / 8.0;
    assert!(
        fetch > expected_fetch * 0.8,
        "backup-fetch of about {fetched:.1} MiB at 8 MiB/s took only {fetch:.1} s"
    );
    common::loud(&format!(
        "WALG_NETWORK_RATE_LIMIT=8 MiB/s: backup-fetch of about {fetched:.1} MiB took {fetch:.1} s; --turbo backup-push {turbo:.1} s"
    ));
    pg.stop();
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += walk_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

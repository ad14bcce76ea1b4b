//! `backup-push [PGDATA]`: a full base backup of the local data directory, stored exactly as
//! WAL-G stores one (walg-compat §1.4–1.5, §2, §3, §8). Without a data directory (no
//! argument, no PGDATA) the backup is remote: streamed by the server over a replication
//! session and re-packed as WAL-G's remote mode stores it ([`remote`], walg-compat §3.7).
//!
//! The pipeline is three stages joined by bounded hand-offs: the walker reads the data
//! directory into tar partitions (`pipeline::tar_stream`), the compressor turns each into one
//! compressed stream (`pipeline::compress`), and the storage's part uploaders send it in
//! part-sized arena buffers (`Storage::put_stream`). Per-file metadata goes to a spool on disk
//! and is rendered into `files_metadata.json` at the end. Memory is the plan's, whatever the
//! size of the database or its number of files.
//!
//! The phases, in [`run`]: connect and check the server ([`server`]), start the backup
//! session (`pg::BackupSession`), send the data partitions and `pg_control` ([`data`]), stop
//! the session and send `backup_label.tar`, then write `metadata.json`,
//! `files_metadata.json` and the sentinel from one set of [`facts`]. The sentinel goes last:
//! a backup that fails anywhere before it is invisible to every reader, and a failure before
//! the stop aborts the backup on the server.
//!
//! Both modes run a [`watch::AliveCheck`] (`WALG_ALIVE_CHECK_INTERVAL`) beside the copy and
//! bound the stop by `WALG_STOP_BACKUP_TIMEOUT`. On a standby (local or remote) the backup is
//! named as WAL-G names it there, and one during which the standby was promoted fails: the
//! stop refuses it, and the timeline is compared at start and stop as WAL-G does.

mod data;
mod delta;
mod facts;
mod remote;
mod server;
mod watch;

use crate::config::Settings;
use crate::error::Error;
use crate::format::backup_name;
use crate::format::wal_name::Segment;
use crate::pg::{BackupSession, BackupStart};
use crate::repo::backups;
use crate::storage::{BytesBody, Storage};
use data::Sender;
use facts::BackupFacts;
use server::Server;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// What the user asked of this backup (the command line; settings fill the gaps).
#[derive(Clone, Debug, Default)]
pub struct BackupPushOptions {
    /// The data directory; `None` for PGDATA.
    pub data_dir: Option<PathBuf>,
    /// Never deleted by retention.
    pub permanent: bool,
    /// JSON stored as the backup's user data; `None` for WALG_SENTINEL_USER_DATA.
    pub add_user_data: Option<String>,
    /// Verify page checksums while reading (also on with WALG_VERIFY_PAGE_CHECKSUMS).
    pub verify: bool,
    /// `--full`: never a delta.
    pub full: bool,
    /// `--delta-from-name`: the delta's base, over WALG_DELTA_FROM_NAME.
    pub delta_from_name: Option<String>,
    /// `--delta-from-user-data`: the delta's base by its user data, over
    /// WALG_DELTA_FROM_USER_DATA.
    pub delta_from_user_data: Option<String>,
}

/// The options with the settings' defaults applied and the user data parsed.
struct Request {
    /// `None`: a remote backup.
    data_dir: Option<PathBuf>,
    user_data: Option<serde_json::Value>,
    verify: bool,
    permanent: bool,
    delta: delta::DeltaRequest,
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| Error::Usage(format!("{what} is not valid JSON: {e}")))
}

impl Request {
    fn resolve(settings: &Settings, opts: &BackupPushOptions) -> Result<Request, Error> {
        let data_dir = opts.data_dir.clone().or_else(|| settings.pgdata.clone());
        let user_data = match opts
            .add_user_data
            .as_ref()
            .or(settings.sentinel_user_data.as_ref())
        {
            None => None,
            Some(text) => Some(parse_json(text, "--add-user-data")?),
        };
        let d = &settings.delta;
        let from_user_data = match opts
            .delta_from_user_data
            .as_ref()
            .or(d.from_user_data.as_ref())
        {
            None => None,
            Some(text) => Some(parse_json(text, "--delta-from-user-data")?),
        };
        let delta = delta::DeltaRequest {
            max_steps: if opts.full { 0 } else { d.max_steps },
            from_full: delta::parse_origin(d.origin.as_deref())?,
            from_name: opts.delta_from_name.clone().or_else(|| d.from_name.clone()),
            from_user_data,
            permanent: opts.permanent,
        };
        Ok(Request {
            data_dir,
            user_data,
            verify: opts.verify || settings.verify_page_checksums,
            permanent: opts.permanent,
            delta,
        })
    }
}

/// Runs `backup-push`.
pub fn run(settings: &Settings, opts: &BackupPushOptions) -> Result<(), Error> {
    let start_time = SystemTime::now();
    let request = Request::resolve(settings, opts)?;
    match request.data_dir.clone() {
        Some(data_dir) => run_local(settings, &request, &data_dir, start_time),
        None => remote::run(settings, &request, start_time),
    }
}

/// A backup of the data directory `data_dir`, read here.
fn run_local(
    settings: &Settings,
    request: &Request,
    data_dir: &std::path::Path,
    start_time: SystemTime,
) -> Result<(), Error> {
    let mut conn = super::connect_pg(settings)?;
    let server = server::inspect(&mut conn, settings, data_dir, request.verify)?;
    let storage = settings.open_storage()?;
    let base = delta::choose(storage.as_ref(), &request.delta)?;
    let check = watch::AliveCheck::start(
        settings,
        settings.alive_check_interval,
        Some(conn.backend_pid()),
    )?;
    check.guard(&conn)?;
    let result = local_backup(
        settings,
        request,
        &mut conn,
        &server,
        storage.as_ref(),
        base,
        start_time,
        &check,
    );
    let result = check.explain(result);
    check.finish();
    result
}

/// The stop, bounded by `WALG_STOP_BACKUP_TIMEOUT`, its failure said with the setting.
fn stop_backup(
    session: BackupSession<'_>,
    timeout: Option<std::time::Duration>,
) -> Result<crate::pg::BackupStop, Error> {
    session
        .stop_within(timeout)
        .map_err(|e| match (timeout, e) {
            (Some(t), crate::pg::BackupError::Query { source, .. }) => Error::Pg {
                context: format!(
                    "stopping the backup (bounded by WALG_STOP_BACKUP_TIMEOUT={})",
                    crate::time::duration_text(t)
                ),
                source,
            },
            (_, e) => e.into(),
        })
}

/// On a standby, the timeline must be the one the backup started on (as WAL-G checks): a
/// standby promoted during the backup has left it, and the copy may mix both histories.
fn check_timeline(conn: &mut crate::pg::Connection, started: u32) -> Result<(), Error> {
    let row = conn
        .query_one("select timeline_id::text from pg_control_checkpoint()")
        .map_err(|e| Error::pg("reading the timeline after the stop", e))?;
    let now: u32 = row
        .first()
        .cloned()
        .flatten()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if now != started {
        return Err(Error::Precondition(format!(
            "the timeline changed from {started} to {now} during the backup (the standby was promoted): the copy is not a consistent backup, no sentinel was written"
        )));
    }
    Ok(())
}

fn announce(name: &str, server: &Server, started: &BackupStart) {
    let standby = if server.in_recovery {
        " on a standby"
    } else {
        ""
    };
    crate::info!(
        "starting backup {name} of {}{standby} (PostgreSQL {}, start LSN {}, timeline {})",
        server.data_dir.display(),
        server.version,
        started.lsn,
        started.timeline
    );
}

#[allow(clippy::too_many_arguments)]
fn local_backup(
    settings: &Settings,
    request: &Request,
    conn: &mut crate::pg::Connection,
    server: &Server,
    storage: &dyn Storage,
    base: Option<delta::Base>,
    start_time: SystemTime,
    check: &watch::AliveCheck,
) -> Result<(), Error> {
    // Non-exclusive: the backup lives as long as this session, which aborts it if dropped
    // before the stop.
    let label = crate::time::UtcTime::now().rfc3339();
    let (session, started) = BackupSession::start(conn, &label)?;
    let name = name_of(base.as_ref(), &started, server, settings.wal_segment_size)?;
    announce(&name, server, &started);
    let mut delta_base = base.as_ref().map(|b| b.open(storage)).transpose()?;
    let sender = Sender::new(settings, storage, name.clone());
    let began = Instant::now();
    let verify_from = server.verify.then_some(started.lsn.0);
    let mut stored = data::send_partitions(
        &sender,
        &server.data_dir,
        verify_from,
        delta_base.as_mut(),
        check,
    )?;
    data::send_control(&sender, &server.data_dir, &mut stored)?;
    let stop = stop_backup(session, settings.stop_backup_timeout)?;
    if server.in_recovery {
        check_timeline(conn, started.timeline)?;
    }
    data::send_label(&sender, &stop, &mut stored)?;

    let data_dir = server.data_dir.to_string_lossy().into_owned();
    let facts = BackupFacts {
        start_time,
        finish_time: SystemTime::now(),
        hostname: crate::sys::hostname(),
        spec: facts::tablespace_spec(&data_dir, &stored.walker.tablespaces),
        data_dir,
        pg_version: server.version,
        system_identifier: server.system_identifier,
        start_lsn: started.lsn,
        finish_lsn: stop.lsn,
        permanent: request.permanent,
        uncompressed_size: stored.uncompressed,
        compressed_size: stored.compressed,
        data_catalog_size: stored.walker.catalog_size,
        user_data: request.user_data.clone(),
        delta: base.as_ref().map(delta::Base::delta_info),
    };
    if let (true, Some(b)) = (request.permanent, &base) {
        // A permanent delta is only restorable with its whole base chain: marked first, so
        // an interrupted run never leaves a permanent delta on an impermanent base.
        crate::repo::permanence::mark_permanent(storage, &b.name)?;
    }
    if let Some(why) = check.failure() {
        return Err(Error::Precondition(why));
    }
    let file_count = write_documents(storage, &name, &facts, stored.spool)?;
    if let (Some(b), Some(d)) = (&base, &delta_base) {
        delta::report(b, &d.stats);
    }
    report(
        &name,
        file_count,
        &facts,
        began,
        server,
        stored.corrupt_blocks,
    );
    Ok(())
}

/// The segment a backup is named after: on a standby WAL-G takes the one holding the byte
/// before the start LSN (walg-compat §1.4.1); on a primary the one holding the start LSN.
fn start_segment(started: &BackupStart, in_recovery: bool, seg_size: u64) -> Segment {
    let segno = if in_recovery {
        started.lsn.0.saturating_sub(1) / seg_size
    } else {
        started.lsn.0 / seg_size
    };
    Segment {
        timeline: started.timeline,
        segno,
    }
}

/// The new backup's name, once a delta's base was checked against the server's answers.
fn name_of(
    base: Option<&delta::Base>,
    started: &BackupStart,
    server: &Server,
    seg_size: u64,
) -> Result<String, Error> {
    let start = start_segment(started, server.in_recovery, seg_size);
    match base {
        None => Ok(backup_name::full_name(start, seg_size)),
        Some(b) => {
            delta::check(b, started.lsn, server.system_identifier)?;
            delta_name(start, seg_size, &b.name)
        }
    }
}

/// A full backup's name.
#[cfg(test)]
fn name_for(started: &BackupStart, in_recovery: bool, seg_size: u64) -> String {
    backup_name::full_name(start_segment(started, in_recovery, seg_size), seg_size)
}

/// A delta's name: `base_<start>_D_<the base's first 24-hex run>`.
fn delta_name(start: Segment, seg_size: u64, base: &str) -> Result<String, Error> {
    backup_name::delta_name(start, seg_size, base).ok_or_else(|| {
        Error::Precondition(format!(
            "backup {base} has no WAL segment in its name to name a delta after"
        ))
    })
}

/// Writes `metadata.json`, `files_metadata.json` and, last, the sentinel that makes the
/// backup exist; returns the number of entries in the files metadata.
fn write_documents(
    storage: &dyn Storage,
    name: &str,
    facts: &BackupFacts,
    spool: crate::pipeline::files_spool::FilesSpool,
) -> Result<u64, Error> {
    let files = spool
        .finish()
        .map_err(|e| Error::io("closing the files-metadata spool", e))?;
    let file_count = files.file_count();
    storage.put(
        &backups::metadata_key(name),
        &BytesBody(facts.metadata().to_json().as_bytes()),
    )?;
    storage.put(&backups::files_metadata_key(name), &files)?;
    storage.put(
        &backups::sentinel_key(name),
        &BytesBody(facts.sentinel().to_json().as_bytes()),
    )?;
    Ok(file_count)
}

/// The closing log lines.
fn report(
    name: &str,
    file_count: u64,
    facts: &BackupFacts,
    began: Instant,
    server: &Server,
    corrupt_blocks: u64,
) {
    let secs = began.elapsed().as_secs_f64().max(0.001);
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    crate::info!(
        "Wrote backup with name {name}: {file_count} entries, {:.1} MiB read, {:.1} MiB stored, {:.1} MiB/s, finish LSN {}",
        mib(facts.uncompressed_size),
        mib(facts.compressed_size),
        mib(facts.uncompressed_size) / secs,
        facts.finish_lsn
    );
    if server.verify {
        match corrupt_blocks {
            0 => crate::info!("page verification found no corrupt blocks"),
            n => crate::warn!(
                "page verification found {n} corrupt block(s); see CorruptBlocks in files_metadata.json"
            ),
        }
    }
}

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
pub(crate) mod phases_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cmd, Sources};
    use crate::format::lsn::Lsn;

    fn settings(env: &'static [(&'static str, &'static str)]) -> Settings {
        let lookup = |k: &str| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        let sources = Sources::from_entries(lookup, Vec::new());
        Settings::load(&sources, Cmd::BackupPush { full: false }).unwrap()
    }

    #[test]
    fn options_take_the_settings_defaults() {
        let s = settings(&[
            ("WALG_FILE_PREFIX", "/archive"),
            ("PGDATA", "/pgdata"),
            ("WALG_SENTINEL_USER_DATA", "{\"from\": \"settings\"}"),
        ]);
        let r = Request::resolve(&s, &BackupPushOptions::default()).unwrap();
        assert_eq!(r.data_dir, Some(PathBuf::from("/pgdata")));
        assert_eq!(r.user_data, Some(serde_json::json!({"from": "settings"})));
        assert!(!r.verify && !r.permanent);
        let opts = BackupPushOptions {
            data_dir: Some("/other".into()),
            permanent: true,
            add_user_data: Some("[1]".into()),
            verify: true,
            ..Default::default()
        };
        let r = Request::resolve(&s, &opts).unwrap();
        assert_eq!(r.data_dir, Some(PathBuf::from("/other")));
        assert_eq!(r.user_data, Some(serde_json::json!([1])));
        assert!(r.verify && r.permanent);
    }

    #[test]
    fn options_refused_before_connecting() {
        let s = settings(&[("WALG_FILE_PREFIX", "/archive")]);
        // Without a data directory the backup is remote.
        let r = Request::resolve(&s, &BackupPushOptions::default()).unwrap();
        assert_eq!(r.data_dir, None);
        let opts = BackupPushOptions {
            data_dir: Some("/d".into()),
            add_user_data: Some("{nope".into()),
            ..BackupPushOptions::default()
        };
        let e = Request::resolve(&s, &opts).err().unwrap();
        assert!(matches!(e, Error::Usage(_)));
        assert!(
            e.to_string()
                .starts_with("--add-user-data is not valid JSON: "),
            "{e}"
        );
        let s = settings(&[
            ("WALG_FILE_PREFIX", "/archive"),
            ("WALG_VERIFY_PAGE_CHECKSUMS", "true"),
        ]);
        let r = Request::resolve(
            &s,
            &BackupPushOptions {
                data_dir: Some("/d".into()),
                ..Default::default()
            },
        );
        assert!(r.unwrap().verify);
    }

    #[test]
    fn standby_backups_are_named_after_the_byte_before_the_start() {
        let seg = 16 << 20;
        // Exactly at a segment boundary, as a standby's start LSN often is.
        let started = BackupStart {
            lsn: Lsn(3 * seg),
            timeline: 2,
        };
        assert_eq!(
            name_for(&started, false, seg),
            "base_000000020000000000000003"
        );
        assert_eq!(
            name_for(&started, true, seg),
            "base_000000020000000000000002"
        );
        let inside = BackupStart {
            lsn: Lsn(3 * seg + 0x28),
            timeline: 1,
        };
        assert_eq!(
            name_for(&inside, true, seg),
            "base_000000010000000000000003"
        );
    }
}

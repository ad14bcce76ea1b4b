//! `backup-push` without a data directory: the server streams the backup over a replication
//! session (`BASE_BACKUP`) and wal-rus stores it as WAL-G's remote mode does (walg-compat
//! §3.7, §8.1), from a host that cannot see the data directory at all.
//!
//! What is stored, as WAL-G stores it:
//! - data partitions `part_NNN.tar.<ext>` holding the server's entries under their relative
//!   names (`base/5/1259`; a tablespace's under `pg_tblspc/<oid>/`), `backup_label` and
//!   `tablespace_map` among them as the server wrote them; no `backup_label.tar`; the links
//!   in `pg_tblspc/` and a standby's `standby.signal` left out (see `pipeline::tar_repack`);
//! - `pg_control.tar.<ext>` with `global/pg_control` (also in a data partition);
//! - `files_metadata.json` whose `Files` are the entries that are not directories, with
//!   their `MTime` (whole seconds, as the tar carries it); wal-rus also fills `TarFileSets`,
//!   which WAL-G leaves empty here (readers only use it to skip partitions);
//! - a sentinel with `Spec` always (tablespaces from the server's list, `base_prefix` its
//!   `data_directory`), `DataCatalogSize` absent, `LSN`/`FinishLSN` from `BASE_BACKUP`'s
//!   start and end, named after the segment holding the start LSN on its timeline.
//!
//! Not WAL-G's: the server is asked not to wait for the archiving of the backup's last
//! segment (`WAIT false`), as wal-rus's local backups stop with `pg_backup_stop(false)` on
//! PostgreSQL 15; servers before 15 are refused (WAL-G v3.0.8 has only their framing, and
//! fails on 15's with "archive/tar: invalid tar header"). A remote backup is always full:
//! `--delta-from-*` are refused, and `WALG_DELTA_MAX_STEPS` is ignored with a warning, as
//! WAL-G ignores it.

use super::data::{Sender, small_tar, spool_error};
use super::facts::BackupFacts;
use super::server::{self, Server};
use super::watch::AliveCheck;
use super::{Request, report, write_documents};
use crate::config::Settings;
use crate::error::Error;
use crate::format::backup_name;
use crate::format::files_metadata::FileDescription;
use crate::format::go_json::PreciseTime;
use crate::format::spec::TablespaceSpec;
use crate::format::tar::{Header, Kind};
use crate::format::wal_name::Segment;
use crate::pg::base_backup::{
    BaseBackupOptions, BaseBackupStream, Piece, StreamStart, TablespaceInfo,
};
use crate::pg::{BackupError, BackupStart, ConnParams, Connection, PgError, Replication};
use crate::pipeline::files_spool::FilesSpool;
use crate::pipeline::tar_repack::{
    CONTROL_NAME, Chunk, ChunkSource, RemotePartition, RepackSink, Repacker,
};
use crate::storage::{Storage, StorageError};
use std::io;
use std::time::{Duration, Instant, SystemTime};

/// Runs a remote backup.
pub(super) fn run(
    settings: &Settings,
    request: &Request,
    start_time: SystemTime,
) -> Result<(), Error> {
    let d = &request.delta;
    if d.max_steps > 0 && (d.from_name.is_some() || d.from_user_data.is_some()) {
        return Err(Error::Usage(
            "a remote backup (no data directory) cannot be a delta: give the data directory to take one".into(),
        ));
    }
    if d.max_steps > 0 {
        crate::warn!(
            "WALG_DELTA_MAX_STEPS is ignored: a remote backup (no data directory) is always full, as in WAL-G"
        );
    }
    let mut sql = super::super::connect_pg(settings)?;
    let server = server::inspect_remote(&mut sql, settings, request.verify)?;
    sql.close();
    let params = ConnParams::from_lookup(&|k| settings.pg_setting(k))
        .map_err(|e| Error::pg("PostgreSQL connection settings", e))?;
    let mut repl = Connection::connect_replication(&params, Replication::Physical)
        .map_err(|e| Error::pg("connecting to PostgreSQL for replication", e))?;
    let storage = settings.open_storage()?;
    let check = AliveCheck::start(
        settings,
        settings.alive_check_interval,
        Some(repl.backend_pid()),
    )?;
    check.guard(&repl)?;
    let result = stream_backup(
        settings,
        request,
        &mut repl,
        &server,
        storage.as_ref(),
        start_time,
        &check,
    );
    let result = check.explain(result);
    check.finish();
    result
}

/// The pieces of the server's stream, for the re-packer; keeps the first error and the end.
struct StreamSource<'s, 'c> {
    stream: &'s mut BaseBackupStream<'c>,
    tablespaces: Vec<TablespaceInfo>,
    stop_timeout: Option<Duration>,
    /// The wait for the stop is bounded from here on.
    stopping: bool,
    failure: Option<BackupError>,
    end: Option<BackupStart>,
}

impl StreamSource<'_, '_> {
    /// The tablespace an archive is of: by its path in the server's list, else by its name
    /// (`<oid>.tar`).
    fn oid_of(&self, name: &str, path: &str) -> Option<u32> {
        self.tablespaces
            .iter()
            .find(|t| t.location == path)
            .map(|t| t.oid)
            .or_else(|| name.strip_suffix(".tar")?.parse().ok())
    }

    fn fail(&mut self, e: BackupError) -> io::Error {
        let text = e.to_string();
        self.failure.get_or_insert(e);
        io::Error::other(text)
    }
}

impl ChunkSource for StreamSource<'_, '_> {
    fn next_chunk(&mut self) -> io::Result<Chunk> {
        match self.stream.next_piece() {
            Ok(Piece::Archive {
                tablespace: None, ..
            }) => Ok(Chunk::MainArchive),
            Ok(Piece::Archive {
                name,
                tablespace: Some(path),
            }) => match self.oid_of(&name, &path) {
                Some(oid) => Ok(Chunk::Tablespace(oid)),
                None => Err(self.fail(BackupError::Answer {
                    what: "base backup stream",
                    problem: format!(
                        "archive {name} of {path} is of no tablespace the server listed"
                    ),
                })),
            },
            Ok(Piece::Data(b)) => Ok(Chunk::Data(b)),
            Ok(Piece::End(end)) => {
                self.end = Some(end);
                Ok(Chunk::End)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn control_read(&mut self) {
        // pg_control is the main archive's last entry and the main archive the last one:
        // the server now stops the backup.
        if let Some(t) = self.stop_timeout
            && !self.stopping
        {
            self.stopping = true;
            if let Err(e) = self
                .stream
                .set_read_timeout(Some(t + crate::pg::STOP_TIMEOUT_GRACE))
            {
                self.failure.get_or_insert(e);
            }
        }
    }
}

/// Records each stored entry in the files-metadata spool: every one that is not a
/// directory, with its tar mtime, as WAL-G's remote mode does.
struct Recorder<'a> {
    spool: &'a mut FilesSpool,
    partition: String,
    error: Option<io::Error>,
}

impl RepackSink for Recorder<'_> {
    fn stored(&mut self, h: &Header) {
        if h.kind == Kind::Dir || self.error.is_some() {
            return;
        }
        let desc = FileDescription {
            mtime: PreciseTime {
                secs: h.mtime,
                nanos: 0,
            }
            .to_rfc3339_utc(),
            ..FileDescription::default()
        };
        if let Err(e) = self.spool.add_file(&h.name, &desc, Some(&self.partition)) {
            self.error = Some(e);
        }
    }
}

/// What the stream's failure was, said by its first cause: the server's error, a stop that
/// took too long, or a storage failure.
fn stream_error(source: &mut StreamSource, e: StorageError) -> Error {
    match (source.failure.take(), e) {
        (Some(BackupError::Query { source: pg, .. }), _)
            if source.stopping && matches!(*pg, PgError::Io { .. }) =>
        {
            Error::Pg {
                context: format!(
                    "the server did not finish the backup (its stop) within WALG_STOP_BACKUP_TIMEOUT={}",
                    crate::time::duration_text(source.stop_timeout.unwrap_or_default())
                ),
                source: pg,
            }
        }
        (Some(f), _) => f.into(),
        (None, StorageError::BodyRead { source, .. }) => {
            Error::io("re-packing the server's archives", source)
        }
        (None, other) => Error::Storage(other),
    }
}

/// The tablespace spec of the sentinel: always present for a remote backup.
fn spec_of(data_dir: &str, start: &StreamStart) -> TablespaceSpec {
    let mut spec = TablespaceSpec::new(data_dir);
    for t in &start.tablespaces {
        spec.add(&t.oid.to_string(), &t.location);
    }
    spec
}

/// Stores the server's archives as data partitions; returns the payload and stored bytes.
fn send_partitions(
    settings: &Settings,
    sender: &Sender,
    repacker: &mut Repacker<&mut StreamSource<'_, '_>>,
    spool: &mut FilesSpool,
    check: &AliveCheck,
) -> Result<(u64, u64), Error> {
    let (mut uncompressed, mut compressed) = (0u64, 0u64);
    let mut recorder = Recorder {
        spool,
        partition: String::new(),
        error: None,
    };
    for number in 1u32.. {
        let more = repacker.has_more().map_err(|e| {
            let e = StorageError::BodyRead {
                key: String::new(),
                source: e,
            };
            stream_error(repacker.source(), e)
        })?;
        if !more {
            break;
        }
        let pname = sender.tar_name(&format!("part_{number:03}"));
        recorder.partition = pname.clone();
        let mut part = RemotePartition::new(repacker, &mut recorder, settings.tar_size_threshold);
        let sent = sender.send(&pname, &mut check.watched(&mut part));
        let payload = part.payload;
        let stored = sent.map_err(|e| stream_error(repacker.source(), e))?;
        uncompressed += payload;
        compressed += stored;
        crate::devel!("stored {}: {stored} bytes", sender.key(&pname));
        if let Some(e) = recorder.error.take() {
            return Err(spool_error(e));
        }
        recorder
            .spool
            .finish_partition(&pname)
            .map_err(spool_error)?;
    }
    Ok((uncompressed, compressed))
}

fn options_of(settings: &Settings, server: &Server) -> BaseBackupOptions {
    BaseBackupOptions {
        label: format!("wal-rus {}", crate::time::UtcTime::now().rfc3339()),
        verify_checksums: server.verify,
        max_rate_kib: settings
            .disk_rate_limit
            .map(|r| (r / 1024).min(u64::from(u32::MAX)) as u32),
    }
}

/// As WAL-G names a remote backup: the segment holding the start LSN, on or off a standby.
fn name_of(start: &StreamStart, seg_size: u64) -> String {
    let segment = Segment {
        timeline: start.start.timeline,
        segno: start.start.lsn.0 / seg_size,
    };
    backup_name::full_name(segment, seg_size)
}

/// A standby promoted during the backup moves to a new timeline: the copy is not usable.
fn timeline_kept(start: &StreamStart, end: &BackupStart) -> Result<(), Error> {
    if end.timeline != start.start.timeline {
        return Err(Error::Precondition(format!(
            "the timeline changed from {} to {} during the backup (the standby was promoted): the copy is not a consistent backup, no sentinel was written",
            start.start.timeline, end.timeline
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn stream_backup(
    settings: &Settings,
    request: &Request,
    repl: &mut Connection,
    server: &Server,
    storage: &dyn Storage,
    start_time: SystemTime,
    check: &AliveCheck,
) -> Result<(), Error> {
    let (mut stream, start) = BaseBackupStream::start(repl, &options_of(settings, server))?;
    let name = name_of(&start, settings.wal_segment_size);
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    crate::info!(
        "starting remote backup {name} of {data_dir}{} (PostgreSQL {}, start LSN {}, timeline {}, {} tablespace(s) besides the data directory)",
        if server.in_recovery {
            " on a standby"
        } else {
            ""
        },
        server.version,
        start.start.lsn,
        start.start.timeline,
        start.tablespaces.len()
    );
    let sender = Sender::new(settings, storage, name.clone());
    let began = Instant::now();
    let mut spool =
        FilesSpool::new().map_err(|e| Error::io("creating the files-metadata spool", e))?;
    let mut source = StreamSource {
        stream: &mut stream,
        tablespaces: start.tablespaces.clone(),
        stop_timeout: settings.stop_backup_timeout,
        stopping: false,
        failure: None,
        end: None,
    };
    let mut repacker = Repacker::new(&mut source);
    let (mut uncompressed, mut compressed) =
        send_partitions(settings, &sender, &mut repacker, &mut spool, check)?;
    let control = repacker.control.take().ok_or_else(|| {
        Error::Precondition(format!(
            "the server's archive held no {CONTROL_NAME}: not a data directory's backup"
        ))
    })?;
    drop(repacker);
    let end = source.end.take().ok_or_else(|| {
        Error::Precondition("the server ended the backup without its end position".into())
    })?;
    timeline_kept(&start, &end)?;
    let now = crate::time::UtcTime::now().0;
    let control_tar = small_tar(&[(CONTROL_NAME, &control, 0o600, now)]);
    compressed += sender.send(&sender.tar_name("pg_control"), &mut &control_tar[..])?;
    uncompressed += control.len() as u64;

    let facts = BackupFacts {
        start_time,
        finish_time: SystemTime::now(),
        hostname: crate::sys::hostname(),
        spec: Some(spec_of(&data_dir, &start)),
        data_dir,
        pg_version: server.version,
        system_identifier: server.system_identifier,
        start_lsn: start.start.lsn,
        finish_lsn: end.lsn,
        permanent: request.permanent,
        uncompressed_size: uncompressed,
        compressed_size: compressed,
        data_catalog_size: 0,
        user_data: request.user_data.clone(),
        delta: None,
    };
    if let Some(why) = check.failure() {
        return Err(Error::Precondition(why));
    }
    let file_count = write_documents(storage, &name, &facts, spool)?;
    report(&name, file_count, &facts, began, server, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::lsn::Lsn;

    #[test]
    fn the_spec_is_always_there() {
        let start = StreamStart {
            start: BackupStart {
                lsn: Lsn(0x3000028),
                timeline: 1,
            },
            tablespaces: vec![],
        };
        let spec = spec_of("/data", &start);
        assert_eq!(spec, TablespaceSpec::new("/data"));
        let with = StreamStart {
            tablespaces: vec![TablespaceInfo {
                oid: 16384,
                location: "/mnt/ts".into(),
            }],
            ..start
        };
        let mut want = TablespaceSpec::new("/data");
        want.add("16384", "/mnt/ts");
        assert_eq!(spec_of("/data", &with), want);
    }
}

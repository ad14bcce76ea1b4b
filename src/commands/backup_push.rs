//! `backup-push [PGDATA]`: a full base backup of the local data directory, stored exactly as
//! WAL-G stores one (walg-compat §1.4–1.5, §2, §3, §8).
//!
//! The pipeline is three stages joined by bounded hand-offs: the walker reads the data
//! directory into tar partitions (`pipeline::tar_stream`), the compressor turns each into one
//! compressed stream (`pipeline::compress`), and the storage's part uploaders send it in
//! part-sized arena buffers (`Storage::put_stream`). Per-file metadata goes to a spool on disk
//! and is rendered into `files_metadata.json` at the end. Memory is the plan's, whatever the
//! size of the database or its number of files.
//!
//! Order on storage: data partitions, `pg_control.tar`, then (after `pg_backup_stop`)
//! `backup_label.tar`, `metadata.json`, `files_metadata.json`, and the sentinel last. A backup
//! that fails anywhere before the sentinel is invisible to every reader.

use super::BACKUP_FOLDER;
use crate::cli::BackupPush;
use crate::config::Settings;
use crate::error::Error;
use crate::format::backup_name;
use crate::format::files_metadata::{CorruptBlocks, FileDescription, FilesSpool};
use crate::format::go_json::{PreciseTime, backup_time_string};
use crate::format::lsn::Lsn;
use crate::format::metadata::ExtendedMetadata;
use crate::format::sentinel::{CURRENT_VERSION, DATE_FMT, Sentinel};
use crate::format::spec::TablespaceSpec;
use crate::format::tar::{self, Header, Kind};
use crate::format::wal_name::Segment;
use crate::pg::{ConnParams, Connection};
use crate::pipeline::arena::Arena;
use crate::pipeline::compress::CompressingReader;
use crate::pipeline::plan;
use crate::pipeline::rate::{Limited, RateLimit};
use crate::pipeline::tar_stream::{Entry, EntrySink, Partition, Walker};
use crate::storage::{BytesBody, Storage, StorageError};
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Records every stored entry in the files-metadata spool and shows progress on a terminal.
struct Recorder<'a> {
    spool: &'a mut FilesSpool,
    partition: String,
    error: Option<io::Error>,
    progress: Option<Progress>,
    /// Blocks that failed page verification, over the whole backup.
    corrupt_blocks: u64,
    /// `WALG_STORE_ALL_CORRUPT_BLOCKS`: record every corrupt block of a file, not the first 10.
    store_all_corrupt: bool,
}

/// What the user asked of this backup.
struct PushOptions {
    permanent: bool,
    user_data: Option<serde_json::Value>,
    /// Verify page checksums of relation files.
    verify: bool,
}

/// Progress on stderr when it is a terminal: files and bytes read, rate.
struct Progress {
    started: Instant,
    last: Instant,
    files: u64,
    bytes: u64,
}

impl Progress {
    fn tick(&mut self, entry: &Entry) {
        self.files += 1;
        if entry.kind == Kind::File {
            self.bytes += entry.meta.len();
        }
        if self.last.elapsed().as_millis() >= 500 {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\rbackup-push: {} files, {:.1} MiB read, {:.1} MiB/s   ",
                self.files,
                self.bytes as f64 / 1048576.0,
                self.bytes as f64 / 1048576.0 / secs
            );
        }
    }
}

impl EntrySink for Recorder<'_> {
    fn stored(&mut self, entry: &Entry, corrupt: &[u32]) {
        if let Some(p) = self.progress.as_mut() {
            p.tick(entry);
        }
        if self.error.is_some() {
            return;
        }
        let mtime = entry
            .meta
            .modified()
            .map(PreciseTime::from_system)
            .unwrap_or(PreciseTime { secs: 0, nanos: 0 });
        let corrupt_blocks = (!corrupt.is_empty()).then(|| {
            crate::warn!(
                "{}: {} corrupt block(s), first {:?}",
                entry.name,
                corrupt.len(),
                &corrupt[..corrupt.len().min(10)]
            );
            self.corrupt_blocks += corrupt.len() as u64;
            let kept = if self.store_all_corrupt {
                corrupt.len()
            } else {
                corrupt.len().min(10)
            };
            CorruptBlocks {
                count: corrupt.len() as u64,
                some: corrupt[..kept].to_vec(),
            }
        });
        let desc = FileDescription {
            is_incremented: false,
            is_skipped: false,
            mtime: mtime.to_rfc3339_utc(),
            corrupt_blocks,
            updates_count: 0,
        };
        if let Err(e) = self
            .spool
            .add_file(&entry.name, &desc, Some(&self.partition))
        {
            self.error = Some(e);
        }
    }
}

/// Quotes a string as an SQL literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn pg_err(context: &str) -> impl Fn(crate::pg::PgError) -> Error + '_ {
    move |e| Error::io(context.to_string(), io::Error::other(e.to_string()))
}

fn text(row: &[Option<String>], i: usize, what: &str) -> Result<String, Error> {
    row.get(i).cloned().flatten().ok_or_else(|| {
        Error::io(
            what.to_string(),
            io::Error::other("the server returned NULL"),
        )
    })
}

fn parse_lsn(text: &str) -> Result<Lsn, Error> {
    Lsn::parse(text).ok_or_else(|| {
        Error::io(
            "reading an LSN",
            io::Error::other(format!("'{text}' is not an LSN")),
        )
    })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    if !ok {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The object name of a tar partition for this method: `part_001.tar.lz4`, or WAL-G master's
/// dot-less `part_001.tar` without compression.
fn tar_name(stem: &str, ext: &str) -> String {
    if ext.is_empty() {
        format!("{stem}.tar")
    } else {
        format!("{stem}.tar.{ext}")
    }
}

/// A small tar held in memory (pg_control, backup_label): its entries and their data.
fn small_tar(entries: &[(&str, &[u8], u32, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, mode, mtime) in entries {
        let h = Header {
            name: name.to_string(),
            kind: Kind::File,
            mode: *mode,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: *mtime,
            size: data.len() as u64,
            link: String::new(),
        };
        tar::encode(&h, &mut out);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, tar::padding(data.len() as u64)));
    }
    out.extend_from_slice(&tar::END_OF_ARCHIVE);
    out
}

/// The server facts a backup needs.
struct Server {
    version: u32,
    system_identifier: Option<u64>,
    in_recovery: bool,
}

fn inspect(
    conn: &mut Connection,
    settings: &Settings,
    data_dir: &Path,
) -> Result<(Server, PathBuf), Error> {
    let version = conn.server_version_num();
    if version < 100000 {
        return Err(Error::Usage(format!(
            "PostgreSQL {version} is not supported by wal-rus backup-push (10 or later is)"
        )));
    }
    let row = conn
        .query_one("select current_setting('data_directory'), (select system_identifier::text from pg_control_system()), pg_is_in_recovery()::text, current_setting('wal_segment_size')")
        .map_err(pg_err("inspecting the server"))?;
    let server_dir = PathBuf::from(text(&row, 0, "data_directory")?);
    let real_server = std::fs::canonicalize(&server_dir).unwrap_or(server_dir.clone());
    let real_local = std::fs::canonicalize(data_dir)
        .map_err(|e| Error::io(format!("data directory {}", data_dir.display()), e))?;
    if real_server != real_local {
        return Err(Error::Usage(format!(
            "data directory {} is not the server's data_directory {}",
            real_local.display(),
            real_server.display()
        )));
    }
    for needed in ["PG_VERSION", "global/pg_control"] {
        if !real_local.join(needed).is_file() {
            return Err(Error::Usage(format!(
                "{} has no {needed}: not a data directory",
                real_local.display()
            )));
        }
    }
    // wal_segment_size reads like "16MB".
    let seg = text(&row, 3, "wal_segment_size")?;
    let seg_bytes = seg
        .strip_suffix("MB")
        .and_then(|n| n.parse::<u64>().ok())
        .map(|m| m << 20)
        .or_else(|| {
            seg.strip_suffix("GB")
                .and_then(|n| n.parse::<u64>().ok())
                .map(|g| g << 30)
        });
    if seg_bytes.is_some_and(|b| b != settings.wal_segment_size) {
        return Err(Error::Config(crate::config::ConfigError {
            setting: "WALG_PG_WAL_SIZE".into(),
            message: format!(
                "the server's wal_segment_size is {seg}, WALG_PG_WAL_SIZE says {} MiB",
                settings.wal_segment_size >> 20
            ),
        }));
    }
    let system_identifier = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v as u64);
    let in_recovery = text(&row, 2, "pg_is_in_recovery")? == "true";
    Ok((
        Server {
            version,
            system_identifier,
            in_recovery,
        },
        real_local,
    ))
}

/// Runs `backup-push`.
pub fn run(settings: &Settings, args: &BackupPush) -> Result<(), Error> {
    let start_time = SystemTime::now();
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| settings.pgdata.clone())
        .ok_or_else(|| {
            Error::Usage("backup-push needs the data directory (argument or PGDATA)".into())
        })?;
    let user_data = match args
        .add_user_data
        .as_ref()
        .or(settings.sentinel_user_data.as_ref())
    {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| Error::Usage(format!("--add-user-data is not valid JSON: {e}")))?,
        ),
    };
    let params = ConnParams::from_lookup(&|k| settings.pg_setting(k))
        .map_err(pg_err("PostgreSQL connection settings"))?;
    let mut conn = Connection::connect(&params).map_err(pg_err("connecting to PostgreSQL"))?;
    let (server, data_dir) = inspect(&mut conn, settings, &data_dir)?;
    let storage = settings.open_storage()?;

    // Start a non-exclusive backup on this session; it must stay open until the stop.
    let label = crate::format::time::UtcTime::now().rfc3339();
    let start_sql = if server.version >= 150000 {
        format!(
            "select lsn::text from pg_backup_start({}, true) as lsn",
            sql_literal(&label)
        )
    } else {
        format!(
            "select lsn::text from pg_start_backup({}, true, false) as lsn",
            sql_literal(&label)
        )
    };
    let row = conn
        .query_one(&start_sql)
        .map_err(pg_err("starting the backup"))?;
    let start_lsn = parse_lsn(&text(&row, 0, "backup start LSN")?)?;
    let timeline: u32 = {
        let row = conn
            .query_one("select timeline_id::text from pg_control_checkpoint()")
            .map_err(pg_err("reading the timeline"))?;
        text(&row, 0, "timeline")?
            .parse()
            .map_err(|_| Error::io("timeline", io::Error::other("not a number")))?
    };
    let seg_size = settings.wal_segment_size;
    // On a standby WAL-G names the backup after the segment holding the byte before the
    // start LSN (walg-compat §1.4.1); on a primary after the one holding the start LSN.
    let segno = if server.in_recovery {
        start_lsn.0.saturating_sub(1) / seg_size
    } else {
        start_lsn.0 / seg_size
    };
    let name = backup_name::full_name(Segment { timeline, segno }, seg_size);
    let mut verify = args.verify || settings.verify_page_checksums;
    if verify {
        let on = conn
            .query_one("show data_checksums")
            .map_err(pg_err("reading data_checksums"))?;
        if on.first().cloned().flatten().as_deref() != Some("on") {
            crate::warn!("data checksums are off in this cluster; page verification is disabled");
            verify = false;
        }
    }
    crate::info!(
        "starting backup {name} of {} (PostgreSQL {}, start LSN {start_lsn})",
        data_dir.display(),
        server.version
    );

    let result = push(
        settings,
        storage.as_ref(),
        &mut conn,
        &server,
        &data_dir,
        &name,
        start_lsn,
        start_time,
        PushOptions {
            permanent: args.permanent,
            user_data,
            verify,
        },
    );
    if result.is_err() {
        // End the backup on the server; a failed stop changes nothing for storage.
        let stop = if server.version >= 150000 {
            "select pg_backup_stop(false)"
        } else {
            "select pg_stop_backup(false, false)"
        };
        let _ = conn.query(stop);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn push(
    settings: &Settings,
    storage: &dyn Storage,
    conn: &mut Connection,
    server: &Server,
    data_dir: &Path,
    name: &str,
    start_lsn: Lsn,
    start_time: SystemTime,
    opts: PushOptions,
) -> Result<(), Error> {
    let PushOptions {
        permanent,
        user_data,
        verify,
    } = opts;
    let folder = format!("{BACKUP_FOLDER}/{name}");
    let ext = settings.encode.method.extension();
    let input = settings.plan_input();
    let plan = plan::backup_push(&input);
    let io_arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let (uploaders, part_size) = plan::stream_parts(&input);
    let part_arena = Arena::new(if input.remote { uploaders + 1 } else { 0 }, part_size)
        .with_wait_limit(settings.wait_limit());
    let disk_limit = settings.disk_rate_limit.map(RateLimit::new);
    let sender = Sender {
        storage,
        settings,
        io_arena: &io_arena,
        part_arena: &part_arena,
        uploaders,
        limit: settings.network_rate_limit.map(RateLimit::new),
    };
    let mut spool =
        FilesSpool::new().map_err(|e| Error::io("creating the files-metadata spool", e))?;
    let mut walker = Walker::new(data_dir);
    let mut uncompressed = 0u64;
    let mut compressed = 0u64;
    let mut number = 0u32;
    let progress = io::stderr().is_terminal().then(|| Progress {
        started: Instant::now(),
        last: Instant::now(),
        files: 0,
        bytes: 0,
    });
    let mut recorder = Recorder {
        spool: &mut spool,
        partition: String::new(),
        error: None,
        progress,
        corrupt_blocks: 0,
        store_all_corrupt: settings.store_all_corrupt_blocks,
    };
    let started = Instant::now();

    loop {
        number += 1;
        let pname = tar_name(&format!("part_{number:03}"), ext);
        recorder.partition = pname.clone();
        let key = format!("{folder}/tar_partitions/{pname}");
        let mut partition = Partition::new(&mut walker, &mut recorder, settings.tar_size_threshold)
            .verify_pages(opts.verify.then_some(start_lsn.0))
            .rate_limited(disk_limit.as_ref());
        let stored = sender.send(&key, &mut partition).map_err(|e| match e {
            crate::storage::StorageError::Io {
                op: "read body",
                source,
                ..
            } => Error::io(format!("reading {}", data_dir.display()), source),
            other => Error::Storage(other),
        })?;
        uncompressed += partition.payload;
        compressed += stored;
        let done = partition.walk_done;
        crate::devel!("stored {key}: {stored} bytes");
        if let Some(e) = recorder.error.take() {
            return Err(Error::io("writing the files-metadata spool", e));
        }
        recorder
            .spool
            .finish_partition(&pname)
            .map_err(|e| Error::io("writing the files-metadata spool", e))?;
        if done {
            break;
        }
    }
    let corrupt_blocks = recorder.corrupt_blocks;
    if recorder.progress.is_some() {
        eprintln!();
    }

    // pg_control goes last among the data, read while the backup is still running.
    let control_path = walker
        .pg_control
        .clone()
        .unwrap_or_else(|| data_dir.join("global/pg_control"));
    let control = std::fs::read(&control_path)
        .map_err(|e| Error::io(format!("reading {}", control_path.display()), e))?;
    let now = crate::format::time::UtcTime::now().0;
    let control_tar = small_tar(&[("/global/pg_control", &control, 0o600, now)]);
    compressed += sender.send(
        &format!("{folder}/tar_partitions/{}", tar_name("pg_control", ext)),
        &mut &control_tar[..],
    )?;
    uncompressed += control.len() as u64;

    // Stop the backup; the server returns the label and tablespace map to store.
    // As WAL-G: from PostgreSQL 15 the stop does not wait for the last segment to be
    // archived (`wait_for_archive => false`; waiting costs a whole second of PostgreSQL's
    // polling sleep on every backup), before 15 `pg_stop_backup(false, true)` waits, as
    // WAL-G's `pg_stop_backup(false)` does by default. Recovery fetches that segment
    // through restore_command once the archiver has stored it.
    let stop_sql = if server.version >= 150000 {
        "select labelfile, spcmapfile, lsn::text from pg_backup_stop(false)"
    } else {
        "select labelfile, spcmapfile, lsn::text from pg_stop_backup(false, true)"
    };
    let row = conn
        .query_one(stop_sql)
        .map_err(pg_err("stopping the backup"))?;
    let label = text(&row, 0, "backup label")?;
    let spcmap = row.get(1).cloned().flatten().unwrap_or_default();
    let finish_lsn = parse_lsn(&text(&row, 2, "backup stop LSN")?)?;
    let now = crate::format::time::UtcTime::now().0;
    let label_name = tar_name("backup_label", ext);
    let label_tar = small_tar(&[
        ("backup_label", label.as_bytes(), 0o600, now),
        ("tablespace_map", spcmap.as_bytes(), 0o600, now),
    ]);
    compressed += sender.send(
        &format!("{folder}/tar_partitions/{label_name}"),
        &mut &label_tar[..],
    )?;
    uncompressed += (label.len() + spcmap.len()) as u64;
    for member in ["tablespace_map", "backup_label"] {
        recorder
            .spool
            .add_tar_member(&label_name, member)
            .map_err(|e| Error::io("writing the files-metadata spool", e))?;
    }
    let finish_time = SystemTime::now();

    let spec = (!walker.tablespaces.is_empty()).then(|| {
        let mut spec = TablespaceSpec::new(&data_dir.to_string_lossy());
        for t in &walker.tablespaces {
            spec.add(&t.name, &t.location);
        }
        spec
    });
    let data_dir_text = data_dir.to_string_lossy().into_owned();
    let host = hostname();
    let meta = ExtendedMetadata {
        start_time: backup_time_string(start_time),
        finish_time: backup_time_string(finish_time),
        date_fmt: DATE_FMT.into(),
        hostname: host.clone(),
        data_dir: data_dir_text.clone(),
        pg_version: server.version,
        start_lsn,
        finish_lsn,
        is_permanent: permanent,
        system_identifier: server.system_identifier,
        uncompressed_size: uncompressed,
        compressed_size: compressed,
        user_data: user_data.clone(),
        unknown: Vec::new(),
    };
    let sentinel = Sentinel {
        lsn: Some(start_lsn),
        delta: None,
        pg_version: server.version,
        finish_lsn: Some(finish_lsn),
        system_identifier: server.system_identifier,
        uncompressed_size: uncompressed,
        compressed_size: compressed,
        data_catalog_size: walker.catalog_size,
        spec,
        user_data,
        files_metadata_disabled: false,
        chkp_num: None,
        delta_chkp_num: None,
        version: CURRENT_VERSION,
        start_time: meta.start_time.clone(),
        finish_time: meta.finish_time.clone(),
        date_fmt: DATE_FMT.into(),
        hostname: host,
        data_dir: data_dir_text,
        is_permanent: permanent,
        has_embedded_files: false,
        has_embedded_tar_file_sets: false,
    };
    let files = spool
        .finish()
        .map_err(|e| Error::io("closing the files-metadata spool", e))?;
    let file_count = files.file_count();
    storage.put(
        &format!("{folder}/metadata.json"),
        &BytesBody(meta.to_json().as_bytes()),
    )?;
    storage.put(&format!("{folder}/files_metadata.json"), &files)?;
    // Last: the sentinel is what makes the backup exist.
    storage.put(
        &format!("{BACKUP_FOLDER}/{}", backup_name::sentinel_file_name(name)),
        &BytesBody(sentinel.to_json().as_bytes()),
    )?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    crate::info!(
        "Wrote backup with name {name}: {file_count} entries, {:.1} MiB read, {:.1} MiB stored, {:.1} MiB/s, finish LSN {finish_lsn}",
        uncompressed as f64 / 1048576.0,
        compressed as f64 / 1048576.0,
        uncompressed as f64 / 1048576.0 / secs
    );
    if verify {
        match corrupt_blocks {
            0 => crate::info!("page verification found no corrupt blocks"),
            n => crate::warn!(
                "page verification found {n} corrupt block(s); see CorruptBlocks in files_metadata.json"
            ),
        }
    }
    Ok(())
}

/// What a tar goes through on its way to storage: compression, encryption, the network
/// rate limit, and the part uploaders.
struct Sender<'a> {
    storage: &'a dyn Storage,
    settings: &'a Settings,
    io_arena: &'a Arena,
    part_arena: &'a Arena,
    uploaders: usize,
    /// `WALG_NETWORK_RATE_LIMIT`.
    limit: Option<RateLimit>,
}

impl Sender<'_> {
    /// Stores the tar `tar` under `key`; returns the bytes stored.
    fn send(&self, key: &str, tar: &mut dyn Read) -> Result<u64, StorageError> {
        let packed = CompressingReader::new(tar, self.settings.encode, self.io_arena, None)
            .map_err(|e| read_error(key, e))?;
        let sealed = self
            .settings
            .crypter
            .encrypting(packed)
            .map_err(|e| read_error(key, e))?;
        let mut stream = Limited::new(sealed, self.limit.as_ref());
        self.storage
            .put_stream(key, &mut stream, self.part_arena, self.uploaders)
    }
}

fn read_error(key: &str, source: io::Error) -> StorageError {
    StorageError::Io {
        op: "read body",
        key: key.to_string(),
        source,
    }
}

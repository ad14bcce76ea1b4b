//! The phases that store tars: the data directory's partitions, then `pg_control`, then
//! (after the stop) `backup_label` with the tablespace map.
//!
//! Each tar goes through the same [`Sender`], and every stored file is recorded in the
//! files-metadata spool as it is written, so memory stays the plan's whatever the size of
//! the database.

use crate::config::Settings;
use crate::error::Error;
use crate::format::files_metadata::{CorruptBlocks, FileDescription};
use crate::format::go_json::PreciseTime;
use crate::format::tar::{self, Header, Kind};
use crate::pg::BackupStop;
use crate::pipeline::arena::Arena;
use crate::pipeline::compress::CompressingReader;
use crate::pipeline::delta::DeltaBase;
use crate::pipeline::files_spool::FilesSpool;
use crate::pipeline::plan;
use crate::pipeline::rate::{Limited, RateLimit};
use crate::pipeline::tar_stream::{Entry, EntrySink, Partition, Walker};
use crate::repo::backups;
use crate::storage::{Storage, StorageError};
use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::time::Instant;

/// What a tar goes through on its way to storage: compression, encryption, the network
/// rate limit, and the part uploaders.
pub(super) struct Sender<'a> {
    storage: &'a dyn Storage,
    settings: &'a Settings,
    io_arena: Arena,
    part_arena: Arena,
    uploaders: usize,
    /// `WALG_NETWORK_RATE_LIMIT`.
    limit: Option<RateLimit>,
    /// `backup-push/<name>`: where this backup's objects go.
    backup: String,
}

impl<'a> Sender<'a> {
    /// Buffers as the memory plan says, for the backup named `backup`.
    pub fn new(settings: &'a Settings, storage: &'a dyn Storage, backup: String) -> Sender<'a> {
        let input = settings.plan_input();
        let plan = plan::backup_push(&input);
        let io_arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
            .with_wait_limit(settings.wait_limit());
        let (uploaders, part_size) = plan::stream_parts(&input);
        let part_arena = Arena::new(if input.remote() { uploaders + 1 } else { 0 }, part_size)
            .with_wait_limit(settings.wait_limit());
        Sender {
            storage,
            settings,
            io_arena,
            part_arena,
            uploaders,
            limit: settings.network_rate_limit.map(RateLimit::new),
            backup,
        }
    }

    /// The object name of a tar partition for this method: `part_001.tar.lz4`, or WAL-G
    /// master's dot-less `part_001.tar` without compression.
    pub fn tar_name(&self, stem: &str) -> String {
        backups::tar_file_name(stem, self.settings.encode.method.extension())
    }

    /// Stores the tar `tar` as `tar_partitions/<tar_name>`; returns the bytes stored.
    pub fn send(&self, tar_name: &str, tar: &mut dyn Read) -> Result<u64, StorageError> {
        let key = backups::partition_key(&self.backup, tar_name);
        let packed = CompressingReader::new(tar, self.settings.encode, &self.io_arena, None)
            .map_err(|e| read_error(&key, e))?;
        let sealed = self
            .settings
            .crypter
            .encrypting(packed)
            .map_err(|e| read_error(&key, e))?;
        let mut stream = Limited::new(sealed, self.limit.as_ref());
        self.storage
            .put_stream(&key, &mut stream, &self.part_arena, self.uploaders)
    }

    /// The object key of tar `tar_name` of this backup.
    pub fn key(&self, tar_name: &str) -> String {
        backups::partition_key(&self.backup, tar_name)
    }
}

fn read_error(key: &str, source: io::Error) -> StorageError {
    StorageError::BodyRead {
        key: key.to_string(),
        source,
    }
}

/// What the tars stored so far add up to, and the record of their files.
pub(super) struct Stored {
    pub spool: FilesSpool,
    /// Bytes read into tars.
    pub uncompressed: u64,
    /// Bytes stored.
    pub compressed: u64,
    /// Blocks that failed page verification.
    pub corrupt_blocks: u64,
    /// Where the walk found pg_control, its tablespaces and the catalog's size.
    pub walker: Walker,
}

pub(super) fn spool_error(e: io::Error) -> Error {
    Error::io("writing the files-metadata spool", e)
}

/// Stores the data directory as partitions of `WALG_TAR_SIZE_THRESHOLD` bytes; `verify_from`
/// is the start LSN when page checksums are to be verified.
pub(super) fn send_partitions(
    sender: &Sender,
    data_dir: &Path,
    verify_from: Option<u64>,
    mut delta: Option<&mut DeltaBase>,
    check: &super::watch::AliveCheck,
) -> Result<Stored, Error> {
    let settings = sender.settings;
    let disk_limit = settings.disk_rate_limit.map(RateLimit::new);
    let mut spool =
        FilesSpool::new().map_err(|e| Error::io("creating the files-metadata spool", e))?;
    let mut walker = Walker::new(data_dir);
    let (mut uncompressed, mut compressed) = (0u64, 0u64);
    let mut recorder = Recorder::new(&mut spool, settings.store_all_corrupt_blocks);
    for number in 1u32.. {
        let pname = sender.tar_name(&format!("part_{number:03}"));
        recorder.partition = pname.clone();
        let mut partition = Partition::new(&mut walker, &mut recorder, settings.tar_size_threshold)
            .verify_pages(verify_from)
            .rate_limited(disk_limit.as_ref())
            .delta(delta.as_deref_mut());
        let stored = sender
            .send(&pname, &mut check.watched(&mut partition))
            .map_err(|e| match e {
                StorageError::BodyRead { source, .. } => {
                    Error::io(format!("reading {}", data_dir.display()), source)
                }
                other => Error::Storage(other),
            })?;
        uncompressed += partition.payload;
        compressed += stored;
        let done = partition.walk_done;
        crate::devel!(
            "stored {}: {stored} bytes",
            backups::partition_key(&sender.backup, &pname)
        );
        if let Some(e) = recorder.error.take() {
            return Err(spool_error(e));
        }
        recorder
            .spool
            .finish_partition(&pname)
            .map_err(spool_error)?;
        if done {
            break;
        }
    }
    if recorder.progress.is_some() {
        eprintln!();
    }
    let corrupt_blocks = recorder.corrupt_blocks;
    Ok(Stored {
        spool,
        uncompressed,
        compressed,
        corrupt_blocks,
        walker,
    })
}

/// Stores `pg_control` last among the data, read while the backup is still running.
pub(super) fn send_control(
    sender: &Sender,
    data_dir: &Path,
    stored: &mut Stored,
) -> Result<(), Error> {
    let control_path = stored
        .walker
        .pg_control
        .clone()
        .unwrap_or_else(|| data_dir.join("global/pg_control"));
    let control = std::fs::read(&control_path)
        .map_err(|e| Error::io(format!("reading {}", control_path.display()), e))?;
    let now = crate::time::UtcTime::now().0;
    let control_tar = small_tar(&[("/global/pg_control", &control, 0o600, now)]);
    stored.compressed += sender.send(&sender.tar_name("pg_control"), &mut &control_tar[..])?;
    stored.uncompressed += control.len() as u64;
    Ok(())
}

/// Stores the label and tablespace map the stop returned, as `backup_label.tar`.
pub(super) fn send_label(
    sender: &Sender,
    stop: &BackupStop,
    stored: &mut Stored,
) -> Result<(), Error> {
    let (label, spcmap) = (&stop.label_file, &stop.tablespace_map);
    let now = crate::time::UtcTime::now().0;
    let label_name = sender.tar_name("backup_label");
    let label_tar = small_tar(&[
        ("backup_label", label.as_bytes(), 0o600, now),
        ("tablespace_map", spcmap.as_bytes(), 0o600, now),
    ]);
    stored.compressed += sender.send(&label_name, &mut &label_tar[..])?;
    stored.uncompressed += (label.len() + spcmap.len()) as u64;
    for member in ["tablespace_map", "backup_label"] {
        stored
            .spool
            .add_tar_member(&label_name, member)
            .map_err(spool_error)?;
    }
    Ok(())
}

/// A small tar held in memory (pg_control, backup_label): its entries and their data.
pub(super) fn small_tar(entries: &[(&str, &[u8], u32, i64)]) -> Vec<u8> {
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

impl<'a> Recorder<'a> {
    fn new(spool: &'a mut FilesSpool, store_all_corrupt: bool) -> Recorder<'a> {
        Recorder {
            spool,
            partition: String::new(),
            error: None,
            progress: io::stderr().is_terminal().then(Progress::new),
            corrupt_blocks: 0,
            store_all_corrupt,
        }
    }

    /// The CorruptBlocks record of a file, warning about it.
    fn corrupt(&mut self, entry: &Entry, corrupt: &[u32]) -> CorruptBlocks {
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
    }
}

impl Recorder<'_> {
    fn record(&mut self, name: &str, desc: &FileDescription, partition: Option<&str>) {
        if self.error.is_none()
            && let Err(e) = self.spool.add_file(name, desc, partition)
        {
            self.error = Some(e);
        }
    }
}

fn mtime_of(entry: &Entry) -> String {
    entry
        .meta
        .modified()
        .map(PreciseTime::from_system)
        .unwrap_or(PreciseTime { secs: 0, nanos: 0 })
        .to_rfc3339_utc()
}

impl EntrySink for Recorder<'_> {
    fn stored(&mut self, entry: &Entry, corrupt: &[u32], incremented: bool) {
        if let Some(p) = self.progress.as_mut() {
            p.tick(entry);
        }
        let corrupt_blocks = (!corrupt.is_empty()).then(|| self.corrupt(entry, corrupt));
        let desc = FileDescription {
            is_incremented: incremented,
            is_skipped: false,
            mtime: mtime_of(entry),
            corrupt_blocks,
            updates_count: 0,
        };
        let partition = std::mem::take(&mut self.partition);
        self.record(&entry.name, &desc, Some(&partition));
        self.partition = partition;
    }

    fn skipped(&mut self, entry: &Entry) {
        let desc = FileDescription {
            is_skipped: true,
            mtime: mtime_of(entry),
            ..FileDescription::default()
        };
        self.record(&entry.name, &desc, None);
    }
}

/// Progress on stderr when it is a terminal: files and bytes read, rate.
struct Progress {
    started: Instant,
    last: Instant,
    files: u64,
    bytes: u64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last: Instant::now(),
            files: 0,
            bytes: 0,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_names_per_method() {
        assert_eq!(
            backups::tar_file_name("part_001", "lz4"),
            "part_001.tar.lz4"
        );
        assert_eq!(
            backups::tar_file_name("backup_label", "br"),
            "backup_label.tar.br"
        );
        assert_eq!(backups::tar_file_name("pg_control", ""), "pg_control.tar");
    }

    #[test]
    fn small_tar_holds_its_entries() {
        let label = b"START WAL LOCATION: 0/2000028\n";
        let bytes = small_tar(&[
            ("backup_label", label, 0o600, 1_700_000_000),
            ("tablespace_map", b"", 0o600, 1_700_000_000),
        ]);
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = ::tar::Archive::new(&bytes[..]);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            let meta = (h.mode().unwrap(), h.mtime().unwrap());
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((name, data, meta));
        }
        let meta = (0o600, 1_700_000_000);
        assert_eq!(
            found,
            vec![
                ("backup_label".to_string(), label.to_vec(), meta),
                ("tablespace_map".to_string(), Vec::new(), meta),
            ]
        );
    }
}

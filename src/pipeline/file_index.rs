//! A backup's `Files` map (walg-compat §2.4) on disk, for lookups by name with memory that
//! does not grow with the number of files.
//!
//! A delta backup asks, for every file it walks, whether its base had that file and with
//! which modification time; a delta restore asks, for every tar entry, whether the newest
//! backup still lists it and whether the entry is an increment. Both documents hold one
//! entry per file of the cluster, so neither is kept in memory: the entries are reduced to
//! fixed 32-byte records (a 128-bit digest of the name, the mtime, the flags), sorted on disk
//! in runs of [`RUN_RECORDS`] merged [`FAN_IN`] at a time, and looked up by binary search
//! over a sparse in-memory index of every [`BLOCK_RECORDS`]th digest plus one block read.
//! Memory: one run while building (1 MiB), `FAN_IN` read buffers while merging, and 16
//! bytes per 256 files afterwards (62 KiB for a million files).
//!
//! Two names share a record only if SHA-256 collides in its first 128 bits.

use super::files_spool::SpoolDir;
use crate::time::PreciseTime;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Records sorted in memory before a run is written: 1 MiB.
pub const RUN_RECORDS: usize = 32 * 1024;

/// Runs merged at once.
pub const FAN_IN: usize = 16;

/// Records between two keys of the sparse index: one 8 KiB read per lookup.
pub const BLOCK_RECORDS: usize = 256;

/// Read buffer of each run while merging.
const MERGE_BUFFER: usize = 16 * 1024;

/// Memory the index needs while it is built (one run) and merged (the runs' buffers).
pub const BUILD_BYTES: u64 = (RUN_RECORDS * RECORD) as u64 + (FAN_IN * MERGE_BUFFER) as u64;

const RECORD: usize = 32;
type Key = [u8; 16];

/// The entry was stored as an increment stream (`IsIncremented`).
pub const INCREMENTED: u8 = 1;
/// The entry was not stored: unchanged since the base (`IsSkipped`).
pub const SKIPPED: u8 = 2;

/// What the index keeps of one `Files` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// `MTime`, when it parsed.
    pub mtime: Option<PreciseTime>,
    /// [`INCREMENTED`], [`SKIPPED`].
    pub flags: u8,
}

impl FileRecord {
    /// `IsIncremented`.
    pub fn is_incremented(&self) -> bool {
        self.flags & INCREMENTED != 0
    }

    /// `IsSkipped`.
    pub fn is_skipped(&self) -> bool {
        self.flags & SKIPPED != 0
    }
}

/// Local backups name entries `/base/1/2`, remote ones `base/1/2`: one key for both.
fn key_of(name: &str) -> Key {
    let mut h = Sha256::new();
    if !name.starts_with('/') {
        h.update(b"/");
    }
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn encode(key: &Key, r: &FileRecord) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    out[..16].copy_from_slice(key);
    let (secs, nanos, known) = match r.mtime {
        Some(t) => (t.secs, t.nanos, 1u8),
        None => (0, 0, 0),
    };
    out[16..24].copy_from_slice(&secs.to_le_bytes());
    out[24..28].copy_from_slice(&nanos.to_le_bytes());
    out[28] = r.flags;
    out[29] = known;
    out
}

fn decode(rec: &[u8]) -> FileRecord {
    let secs = i64::from_le_bytes(rec[16..24].try_into().unwrap_or_default());
    let nanos = u32::from_le_bytes(rec[24..28].try_into().unwrap_or_default());
    FileRecord {
        mtime: (rec[29] == 1).then_some(PreciseTime { secs, nanos }),
        flags: rec[28],
    }
}

fn key_at(rec: &[u8]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&rec[..16]);
    k
}

/// Collects records, spilling sorted runs to disk.
pub struct FileIndexBuilder {
    dir: SpoolDir,
    pending: Vec<[u8; RECORD]>,
    runs: Vec<PathBuf>,
    next_run: usize,
}

impl FileIndexBuilder {
    /// A builder whose scratch files go below the system temporary directory.
    pub fn new() -> io::Result<FileIndexBuilder> {
        Self::new_in(&std::env::temp_dir())
    }

    /// A builder whose scratch files go below `parent`.
    pub fn new_in(parent: &Path) -> io::Result<FileIndexBuilder> {
        Ok(FileIndexBuilder {
            dir: SpoolDir::create(parent)?,
            pending: Vec::new(),
            runs: Vec::new(),
            next_run: 0,
        })
    }

    /// Adds the entry `name`.
    pub fn add(&mut self, name: &str, record: FileRecord) -> io::Result<()> {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(RUN_RECORDS);
        }
        self.pending.push(encode(&key_of(name), &record));
        if self.pending.len() >= RUN_RECORDS {
            self.spill()?;
        }
        Ok(())
    }

    fn run_path(&mut self) -> PathBuf {
        self.next_run += 1;
        self.dir.path().join(format!("run_{}", self.next_run))
    }

    fn spill(&mut self) -> io::Result<()> {
        self.pending.sort_unstable_by(|a, b| a[..16].cmp(&b[..16]));
        let path = self.run_path();
        let mut w = BufWriter::with_capacity(MERGE_BUFFER, File::create(&path)?);
        for r in &self.pending {
            w.write_all(r)?;
        }
        w.flush()?;
        self.pending.clear();
        self.runs.push(path);
        Ok(())
    }

    /// Sorts what was added into the index.
    pub fn finish(mut self) -> io::Result<FileIndex> {
        if !self.pending.is_empty() || self.runs.is_empty() {
            self.spill()?;
        }
        self.pending = Vec::new();
        while self.runs.len() > 1 {
            let runs = std::mem::take(&mut self.runs);
            for group in runs.chunks(FAN_IN) {
                let out = self.run_path();
                merge(group, &out)?;
                for p in group {
                    let _ = std::fs::remove_file(p);
                }
                self.runs.push(out);
            }
        }
        FileIndex::open(self.dir, &self.runs[0])
    }
}

/// Merges sorted runs into one sorted file.
fn merge(runs: &[PathBuf], out: &Path) -> io::Result<()> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heads: Vec<Option<[u8; RECORD]>> = Vec::with_capacity(runs.len());
    for p in runs {
        let mut r = BufReader::with_capacity(MERGE_BUFFER, File::open(p)?);
        heads.push(next_record(&mut r)?);
        readers.push(r);
    }
    let mut w = BufWriter::with_capacity(MERGE_BUFFER, File::create(out)?);
    loop {
        // FAN_IN is small: a linear pick beats a heap's bookkeeping.
        let best = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|r| (i, key_at(r))))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        if let Some(rec) = heads[i].take() {
            w.write_all(&rec)?;
        }
        heads[i] = next_record(&mut readers[i])?;
    }
    w.flush()
}

fn next_record(r: &mut impl Read) -> io::Result<Option<[u8; RECORD]>> {
    let mut rec = [0u8; RECORD];
    match r.read_exact(&mut rec) {
        Ok(()) => Ok(Some(rec)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sorted index of a backup's `Files`, on disk; lookups may run from several threads.
pub struct FileIndex {
    _dir: SpoolDir,
    file: File,
    count: u64,
    /// The first key of every block of `BLOCK_RECORDS` records.
    sparse: Vec<Key>,
}

impl FileIndex {
    fn open(dir: SpoolDir, path: &Path) -> io::Result<FileIndex> {
        let file = File::open(path)?;
        let count = file.metadata()?.len() / RECORD as u64;
        let mut sparse = Vec::new();
        let mut rec = [0u8; RECORD];
        for block in 0..count.div_ceil(BLOCK_RECORDS as u64) {
            file.read_exact_at(&mut rec, block * (BLOCK_RECORDS * RECORD) as u64)?;
            sparse.push(key_at(&rec));
        }
        Ok(FileIndex {
            _dir: dir,
            file,
            count,
            sparse,
        })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The record of entry `name`, if the map has it.
    pub fn get(&self, name: &str) -> io::Result<Option<FileRecord>> {
        let key = key_of(name);
        // The last block whose first key is <= key.
        let block = match self.sparse.partition_point(|k| k <= &key) {
            0 => return Ok(None),
            n => n - 1,
        };
        let first = (block * BLOCK_RECORDS) as u64;
        let n = (self.count - first).min(BLOCK_RECORDS as u64) as usize;
        let mut buf = [0u8; BLOCK_RECORDS * RECORD];
        self.file
            .read_exact_at(&mut buf[..n * RECORD], first * RECORD as u64)?;
        let recs = &buf[..n * RECORD];
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let rec = &recs[mid * RECORD..(mid + 1) * RECORD];
            match key_at(rec).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(decode(rec))),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> FileRecord {
        FileRecord {
            mtime: Some(PreciseTime {
                secs: i as i64,
                nanos: (i % 1_000_000_000) as u32,
            }),
            flags: (i % 4) as u8,
        }
    }

    #[test]
    fn finds_every_name_across_merged_runs_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = FileIndexBuilder::new_in(dir.path()).unwrap();
        // More than FAN_IN runs: two merge passes.
        let n = (RUN_RECORDS * (FAN_IN + 2) + 17) as u64;
        for i in 0..n {
            b.add(&format!("/base/{}/{i}", i % 7), rec(i)).unwrap();
        }
        let idx = b.finish().unwrap();
        assert_eq!(idx.len(), n);
        for i in (0..n).step_by(997).chain([0, n - 1]) {
            assert_eq!(
                idx.get(&format!("/base/{}/{i}", i % 7)).unwrap(),
                Some(rec(i))
            );
            // Remote-style names find the same entry.
            assert_eq!(
                idx.get(&format!("base/{}/{i}", i % 7)).unwrap(),
                Some(rec(i))
            );
            assert_eq!(
                idx.get(&format!("/base/{}/{i}", (i + 1) % 7)).unwrap(),
                None
            );
        }
        // Only the last run remains in the scratch directory.
        let scratch: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(scratch.len(), 1);
        let files = std::fs::read_dir(scratch[0].as_ref().unwrap().path())
            .unwrap()
            .count();
        assert_eq!(files, 1);
        drop(idx);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_and_empty_maps() {
        let dir = tempfile::tempdir().unwrap();
        let idx = FileIndexBuilder::new_in(dir.path())
            .unwrap()
            .finish()
            .unwrap();
        assert!(idx.is_empty());
        assert_eq!(idx.get("/x").unwrap(), None);
        let mut b = FileIndexBuilder::new_in(dir.path()).unwrap();
        let unknown = FileRecord {
            mtime: None,
            flags: SKIPPED,
        };
        b.add("/PG_VERSION", unknown).unwrap();
        let idx = b.finish().unwrap();
        let got = idx.get("/PG_VERSION").unwrap().unwrap();
        assert_eq!(got, unknown);
        assert!(got.is_skipped() && !got.is_incremented());
    }
}

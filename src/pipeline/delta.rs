//! What a delta backup stores of each file (walg-compat §3.6, §8.4), decided as the walk
//! reaches it: nothing when its modification time is the one the base recorded (the file
//! is recorded as skipped), an increment when it is a relation file the base had, the whole
//! file otherwise.
//!
//! The base's `Files` map is a [`FileIndex`] on disk and the page scan streams through one
//! buffer, so a delta holds no more memory for a large or busy cluster than for a small one.

use super::file_index::FileIndex;
use super::increment::{self, IncrementReader};
use super::tar_stream::Entry;
use crate::format::page;
use crate::time::PreciseTime;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};

/// Buffer the page scan reads through.
pub const SCAN_BUFFER: usize = 64 * 1024;

/// What goes into the tar for one regular file of a delta.
pub enum Stored {
    /// The file as it is.
    Whole(File),
    /// Only the pages written since the base started.
    Increment(Box<IncrementReader>),
}

/// What a delta counts, for its closing report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeltaStats {
    /// Files unchanged since the base: recorded, not stored.
    pub skipped: u64,
    /// Relation files stored as increments.
    pub incremented: u64,
    /// Pages in those increments.
    pub pages: u64,
    /// Relation files stored whole because a page was neither valid nor new.
    pub whole_after_scan: u64,
}

/// The base backup a delta is taken against.
pub struct DeltaBase {
    files: FileIndex,
    /// The base's start LSN: pages at or after it changed.
    lsn: u64,
    buf: Vec<u8>,
    /// What was decided so far.
    pub stats: DeltaStats,
}

impl DeltaBase {
    /// The base whose `Files` are `files` and whose start LSN is `lsn`.
    pub fn new(files: FileIndex, lsn: u64) -> DeltaBase {
        DeltaBase {
            files,
            lsn,
            buf: Vec::new(),
            stats: DeltaStats::default(),
        }
    }

    /// Whether regular file `e` is unchanged since the base: same name, same modification
    /// time to the nanosecond (WAL-G compares instants).
    pub fn unchanged(&mut self, e: &Entry) -> io::Result<bool> {
        let Some(base) = self.files.get(&e.name)? else {
            return Ok(false);
        };
        let now = e.meta.modified().ok().map(PreciseTime::from_system);
        let same = now.is_some() && base.mtime == now;
        if same {
            self.stats.skipped += 1;
        }
        Ok(same)
    }

    /// What to store of regular file `e`, opened as `file` (`size` bytes at walk time);
    /// `on_data` sees every byte the page scan reads.
    pub fn choose(
        &mut self,
        e: &Entry,
        mut file: File,
        size: u64,
        on_data: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Stored> {
        if page::paged_segment(&e.name, size).is_none() || self.files.get(&e.name)?.is_none() {
            return Ok(Stored::Whole(file));
        }
        if self.buf.is_empty() {
            self.buf = vec![0; SCAN_BUFFER];
        }
        match increment::scan(&mut file, size, self.lsn, &mut self.buf, on_data)? {
            Some(changed) => {
                self.stats.incremented += 1;
                self.stats.pages += u64::from(changed.count());
                Ok(Stored::Increment(Box::new(IncrementReader::new(
                    file, size, changed,
                ))))
            }
            None => {
                crate::warn!(
                    "failed to read file '{}' as incremented: a page is neither valid nor new; stored whole",
                    e.name
                );
                self.stats.whole_after_scan += 1;
                file.seek(SeekFrom::Start(0))?;
                Ok(Stored::Whole(file))
            }
        }
    }
}

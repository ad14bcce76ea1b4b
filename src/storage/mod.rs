//! Where objects live: one trait, implemented by the file system, S3 and Azure Blob Storage
//! (and, for unit tests of the code above storage, in memory).
//!
//! Keys are relative to the configured root (WAL-G's prefix plus `WALG_STORAGE_PREFIX`), with
//! `/` between folders, e.g. `wal_005/000000010000000000000003.lz4`. Retryable versus permanent
//! failure is decided here, once, from the HTTP status or the I/O error kind; commands only see
//! `StorageError`.

pub mod aws;
pub mod azure;
pub mod error;
pub mod fs;
pub mod gcs;
pub mod memory;
pub mod net;
pub mod s3;

pub use error::{Op, StorageError};

use std::io::{self, Read};
use std::ops::DerefMut;

/// One stored object as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the storage root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, as precisely as the storage reports it (S3 listings: ms; files:
    /// ns). WAL-G orders and deletes backups by it, fractions included.
    pub last_modified: crate::time::PreciseTime,
}

/// A write that started and never finished: a killed writer's temporary file (file storage)
/// or a multipart upload neither completed nor aborted (S3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupted {
    /// The key the write would have made.
    pub key: String,
    /// What identifies the leftover: the temporary file's key, or the upload id.
    pub id: String,
    /// When it was started or last written.
    pub started: crate::time::UtcTime,
}

/// A body that can be read from the start as often as needed.
///
/// S3 must know an object's length (and, signed, its SHA-256) before the first byte is sent,
/// and a compressed WAL segment's length is unknown until it is compressed. Rather than hold
/// the object in memory, an upload reads the source once to learn length and digests and
/// again to send it; retries read it again.
pub trait BodySource: Sync {
    /// A fresh stream over the whole body.
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;

    /// Hands the whole body to `each`, in order, in pieces of any size: the pass that only
    /// learns length and digests. The default reads [`open`](Self::open) through a
    /// [`CHUNK_BUFFER`]; a source that makes its bytes in memory (a compressor) overrides it
    /// to pass them on where they are, with no buffer of the pass's own.
    fn for_each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        crate::readers::for_each_chunk(&mut self.open()?, CHUNK_BUFFER, each)
    }

    /// A fresh stream from byte `offset` on (a retried part or chunk starts mid-body).
    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + '_>> {
        let mut r = self.open()?;
        let skipped = io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
        if skipped != offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body shorter on second read",
            ));
        }
        Ok(r)
    }
}

/// `key` under the key prefix `root` (empty, or ending in `/`).
pub fn rooted(root: &str, key: &str) -> String {
    format!("{root}{}", key.trim_start_matches('/'))
}

/// Buffer of [`BodySource::for_each_chunk`]'s default.
pub const CHUNK_BUFFER: usize = 16 * 1024;

/// A stream of an object's bytes, owned by the caller.
pub type ObjectReader = Box<dyn Read + Send>;

/// One part-sized buffer lent by the caller; returned when dropped.
pub type PartBuffer<'a> = Box<dyn DerefMut<Target = Vec<u8>> + Send + 'a>;

/// Part-sized buffers lent by the caller (the command's arena), so a streamed upload holds
/// only the memory the plan gave it. Leasing blocks while every buffer is out, which is what
/// makes the reader wait for the uploads.
pub trait PartBuffers: Sync {
    /// Borrows one buffer of `part_size()` bytes; fails when none comes free in time.
    fn lease_part(&self) -> io::Result<PartBuffer<'_>>;
    /// Size of every buffer, at least S3's 5 MiB minimum part size.
    fn part_size(&self) -> usize;
}

/// The operations wal-rus needs from an object store.
pub trait Storage: Send + Sync {
    /// Stores `body` under `key`, replacing any object of that name; no reader ever sees a
    /// partial object under `key`. Returns the number of bytes stored.
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError>;

    /// Stores a stream that cannot be read twice (a tar of files that change while read),
    /// under `key`, with up to `concurrency` parts in flight, each in a buffer from `parts`.
    /// Nothing appears under `key` unless the whole stream was stored. Returns its length.
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        parts: &dyn PartBuffers,
        concurrency: usize,
    ) -> Result<u64, StorageError>;

    /// Opens `key` for reading; `StorageError::NotFound` when absent. A reader that fails
    /// half-way returns an `io::Error` rather than a short body.
    fn get(&self, key: &str) -> Result<ObjectReader, StorageError>;

    /// The object's metadata, or `None` when absent.
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// Calls `each` for every object whose key starts with `prefix`, in key order per page.
    /// With `recursive == false` only objects directly in the folder named by `prefix` up to
    /// its last `/` are listed.
    fn list(
        &self,
        prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> Result<(), StorageError>;

    /// Deletes the keys; absent keys are not an error.
    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError>;

    /// Where this storage points, for messages (never contains secrets).
    fn describe(&self) -> String;

    /// Writes under `prefix` that were interrupted before `before` (see [`Interrupted`]).
    /// Storage without such leftovers has none.
    fn interrupted_writes(
        &self,
        _prefix: &str,
        _before: crate::time::UtcTime,
    ) -> Result<Vec<Interrupted>, StorageError> {
        Ok(Vec::new())
    }

    /// Removes the leftovers of interrupted writes.
    fn discard_interrupted(&self, _writes: &[Interrupted]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A `BodySource` over bytes in memory, for small documents and tests.
pub struct BytesBody<'a>(pub &'a [u8]);

impl BodySource for BytesBody<'_> {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0))
    }
}

/// Joins root-relative folder and name with exactly one `/` (walg-compat §1.1 rule 3).
pub fn join_key(folder: &str, name: &str) -> String {
    let folder = folder.trim_matches('/');
    let name = name.trim_start_matches('/');
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

pub use crate::readers::read_full;

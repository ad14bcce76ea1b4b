//! File-system storage (`WALG_FILE_PREFIX`): objects are files below a root directory.
//!
//! Writes follow WAL-G master's atomic scheme (walg-compat §1.1): the body goes to
//! `<final>.tmp.<YYYYMMDDTHHMMSSZ>-<16 hex>` in the same directory, is fsynced, renamed to the
//! final name, and the directory is fsynced. A crash therefore never leaves a partial object
//! under a final name, and listings skip the temporary names. The first name tried is one
//! per object, taken over by the next writer once its writer is gone (see
//! [`open_temporary`]), so a killed writer's leftover does not outlive the retry.

use super::{BodySource, Interrupted, ObjectMeta, ObjectReader, Op, Storage, StorageError};
use crate::time::{PreciseTime, UtcTime};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Storage rooted at a local directory.
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage at `root` (a leading `file://localhost` is stripped, as WAL-G does for WAL-E
    /// compatibility). The directory is created when first written to.
    pub fn new(root: &str) -> FsStorage {
        let root = root.strip_prefix("file://localhost").unwrap_or(root);
        FsStorage {
            root: PathBuf::from(root),
        }
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key.trim_start_matches('/'))
    }
}

/// Whether `name` is one of the temporary names a writer uses before its rename.
pub fn is_temp_name(name: &str) -> bool {
    // `.tmp.` + 8 digits + `T` + 6 digits + `Z-` + 16 lower hex, at the end of the name.
    let Some(pos) = name.rfind(".tmp.") else {
        return false;
    };
    let tail = &name.as_bytes()[pos + 5..];
    tail.len() == 33
        && tail[..8].iter().all(u8::is_ascii_digit)
        && tail[8] == b'T'
        && tail[9..15].iter().all(u8::is_ascii_digit)
        && tail[15] == b'Z'
        && tail[16] == b'-'
        && tail[17..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// 16 lower-case hex digits that differ between concurrent writers.
fn unique_hex() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = (u64::from(std::process::id()) << 40) ^ (u64::from(nanos) << 8) ^ n;
    format!("{:016x}", mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn io_err(op: Op, key: &str, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::NotFound && op != Op::Put {
        StorageError::NotFound {
            key: key.to_string(),
        }
    } else {
        StorageError::Io {
            op,
            key: key.to_string(),
            source,
        }
    }
}

/// The temporary name of the object `file_name` that every writer tries first. A writer
/// killed half-way leaves its temporary file behind; the next writer of the same object
/// (PostgreSQL retries a failed archive_command) takes that file over instead of leaving a
/// second one. Its zero timestamp keeps it within the pattern every reader skips.
fn shared_temporary(file_name: &str) -> String {
    format!("{file_name}.tmp.00000000T000000Z-0000000000000000")
}

/// Opens the file a write goes to before its rename: the object's shared temporary name,
/// locked (`flock`, which dies with its holder, so a lock that can be taken means the last
/// writer is gone), or a name of its own when another live writer holds it.
fn open_temporary(dir: &Path, file_name: &str) -> io::Result<(PathBuf, File)> {
    use rustix::fs::{FlockOperation, flock};
    let shared = dir.join(shared_temporary(file_name));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&shared)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
        // The lock is on the file we opened; the name may have been renamed away (to the
        // final object!) by the writer that held it until just now. Only the same file
        // still under the shared name is ours to truncate.
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata()?;
        if fs::symlink_metadata(&shared)
            .is_ok_and(|now| now.ino() == ours.ino() && now.dev() == ours.dev())
        {
            file.set_len(0)?;
            return Ok((shared, file));
        }
    }
    drop(file);
    let own = dir.join(format!(
        "{file_name}.tmp.{}-{}",
        UtcTime::now().amz_date(),
        unique_hex()
    ));
    let file = OpenOptions::new().write(true).create_new(true).open(&own)?;
    Ok((own, file))
}

/// fsync of a directory, so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsStorage {
    fn write_atomically(&self, key: &str, body: &dyn BodySource) -> io::Result<u64> {
        let mut reader = body.open()?;
        self.write_stream_atomically(key, &mut reader)
    }

    fn write_stream_atomically(
        &self,
        key: &str,
        reader: &mut dyn std::io::Read,
    ) -> io::Result<u64> {
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let (tmp, mut out) = open_temporary(&dir, file_name)?;
        let result = (|| {
            let written = io::copy(reader, &mut out)?;
            out.flush()?;
            out.sync_all()?;
            // Nobody reads an archived copy back soon: leave the page cache to PostgreSQL
            // (and out of a memory cgroup's charge).
            crate::sys::drop_cached(&out);
            drop(out);
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)?;
            Ok(written)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl Storage for FsStorage {
    fn put(&self, key: &str, body: &dyn BodySource) -> Result<u64, StorageError> {
        self.write_atomically(key, body)
            .map_err(|e| io_err(Op::Put, key, e))
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        _parts: &dyn super::PartBuffers,
        _concurrency: usize,
    ) -> Result<u64, StorageError> {
        // A local file needs no parts: the stream goes straight to the temporary file.
        self.write_stream_atomically(key, body)
            .map_err(|e| io_err(Op::Put, key, e))
    }

    fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let file = File::open(self.path_of(key)).map_err(|e| io_err(Op::Get, key, e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        }
        Ok(Box::new(file))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        match fs::metadata(self.path_of(key)) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                last_modified: m
                    .modified()
                    .map(PreciseTime::from_system)
                    .unwrap_or(PreciseTime::EPOCH),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(Op::Head, key, e)),
        }
    }

    fn list(
        &self,
        prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> Result<(), StorageError> {
        let prefix = prefix.trim_start_matches('/');
        let (folder, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        self.walk(folder, name_prefix, recursive, each)
            .map_err(|e| StorageError::Io {
                op: Op::List,
                key: prefix.to_string(),
                source: e,
            })
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            match fs::remove_file(self.path_of(key)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(Op::Delete, key, e)),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file storage at {}", self.root.display())
    }

    fn interrupted_writes(
        &self,
        prefix: &str,
        before: UtcTime,
    ) -> Result<Vec<Interrupted>, StorageError> {
        let mut found = Vec::new();
        self.walk_temporaries(prefix.trim_matches('/'), before, &mut found)
            .map_err(|e| StorageError::Io {
                op: Op::List,
                key: prefix.to_string(),
                source: e,
            })?;
        Ok(found)
    }

    fn discard_interrupted(&self, writes: &[Interrupted]) -> Result<(), StorageError> {
        let keys: Vec<String> = writes.iter().map(|w| w.id.clone()).collect();
        self.delete_many(&keys)
    }
}

impl FsStorage {
    /// Collects the temporary files below `folder` last written before `before`.
    fn walk_temporaries(
        &self,
        folder: &str,
        before: UtcTime,
        found: &mut Vec<Interrupted>,
    ) -> io::Result<()> {
        let entries = match fs::read_dir(self.path_of(folder)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let key = super::join_key(folder, &name);
            if meta.is_dir() {
                self.walk_temporaries(&key, before, found)?;
            } else if is_temp_name(&name) {
                let started = meta
                    .modified()
                    .map(UtcTime::from_system)
                    .unwrap_or(UtcTime(0));
                if started < before {
                    found.push(Interrupted {
                        key: super::join_key(folder, &name[..name.rfind(".tmp.").unwrap_or(0)]),
                        id: key,
                        started,
                    });
                }
            }
        }
        Ok(())
    }

    /// Lists `folder` (sorted, so listings are stable), filtering names by `name_prefix`, and
    /// descends into sub-folders when `recursive`.
    fn walk(
        &self,
        folder: &str,
        name_prefix: &str,
        recursive: bool,
        each: &mut dyn FnMut(ObjectMeta),
    ) -> io::Result<()> {
        let dir = self.path_of(folder);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<(String, fs::Metadata)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(name_prefix) || is_temp_name(&name) {
                continue;
            }
            // A file removed between readdir and stat is simply no longer listed.
            let Ok(meta) = entry.metadata() else { continue };
            names.push((name, meta));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in names {
            let key = super::join_key(folder, &name);
            if meta.is_dir() {
                if recursive {
                    self.walk(&key, "", true, each)?;
                }
            } else {
                each(ObjectMeta {
                    key,
                    size: meta.len(),
                    last_modified: meta
                        .modified()
                        .map(PreciseTime::from_system)
                        .unwrap_or(PreciseTime::EPOCH),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BytesBody;
    use std::io::Read;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        assert_eq!(st.put("wal_005/a.lz4", &BytesBody(b"hello")).unwrap(), 5);
        st.put("wal_005/b.lz4", &BytesBody(b"x")).unwrap();
        st.put("wal_005/sub/c", &BytesBody(b"yz")).unwrap();
        let mut s = String::new();
        st.get("wal_005/a.lz4")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        assert!(matches!(
            st.get("wal_005/none"),
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(st.head("wal_005/b.lz4").unwrap().unwrap().size, 1);
        assert!(st.head("wal_005/zz").unwrap().is_none());

        let mut flat = vec![];
        st.list("wal_005/", false, &mut |m| flat.push(m.key))
            .unwrap();
        assert_eq!(flat, ["wal_005/a.lz4", "wal_005/b.lz4"]);
        let mut deep = vec![];
        st.list("wal_005/", true, &mut |m| deep.push(m.key))
            .unwrap();
        assert_eq!(deep, ["wal_005/a.lz4", "wal_005/b.lz4", "wal_005/sub/c"]);
        let mut pre = vec![];
        st.list("wal_005/a", false, &mut |m| pre.push(m.key))
            .unwrap();
        assert_eq!(pre, ["wal_005/a.lz4"]);

        st.delete_many(&["wal_005/a.lz4".into(), "wal_005/missing".into()])
            .unwrap();
        assert!(st.head("wal_005/a.lz4").unwrap().is_none());
        // Listing a folder that does not exist is empty, not an error.
        st.list("nothing/", true, &mut |_| panic!("unexpected"))
            .unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        struct Failing;
        impl BodySource for Failing {
            fn open(&self) -> io::Result<Box<dyn Read + '_>> {
                struct R(usize);
                impl Read for R {
                    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                        if self.0 > 3 {
                            return Err(io::Error::other("source broke"));
                        }
                        self.0 += 1;
                        buf[0] = b'x';
                        Ok(1)
                    }
                }
                Ok(Box::new(R(0)))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::new(dir.path().to_str().unwrap());
        let err = st.put("wal_005/f", &Failing).unwrap_err();
        assert!(err.to_string().contains("source broke"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path().join("wal_005")).unwrap().collect();
        assert!(left.is_empty(), "partial files left: {left:?}");
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_name(
            "000000010000000000000003.lz4.tmp.20261124T031027Z-0123456789abcdef"
        ));
        assert!(!is_temp_name("000000010000000000000003.lz4"));
        assert!(!is_temp_name("x.tmp.20261124T031027Z-0123456789ABCDEF"));
    }
}

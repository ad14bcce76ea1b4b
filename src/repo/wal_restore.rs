//! A WAL file on its way from the archive to the local disk, shared by wal-fetch and
//! wal-prefetch: found and decoded (see [`super::wal`]) into a temporary file beside its
//! destination, a segment's pages checked on the way, synced, and only then handed over;
//! and WAL-G's prefetch folders, which both tools read and write.

use super::wal as wal_archive;
use crate::config::Settings;
use crate::error::Error;
use crate::format::wal_name::{self, Segment, WalFileKind};
use crate::format::wal_page::PageCheck;
use crate::pipeline::arena::Arena;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The prefetch folders for a destination: `<P>/.wal-g/prefetch` and its `running/`.
pub fn prefetch_dirs(settings: &Settings, dest: &Path) -> (PathBuf, PathBuf) {
    let base = match &settings.prefetch_dir {
        Some(p) => p.clone(),
        None => dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let prefetch = base.join(".wal-g").join("prefetch");
    let running = prefetch.join("running");
    (prefetch, running)
}

/// Removes `path` on drop unless disarmed: no half-written file outlives a failure.
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a new, empty file at a unique name beside `target`.
    pub fn beside(target: &Path) -> io::Result<(TempFile, File)> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = target.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
        // Unique within the process too: the daemon's threads may restore side by side.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".{base}.wal-rus-tmp.{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok((TempFile { path, armed: true }, file))
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the file (it was renamed or linked away).
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Downloads `name` into a complete, synced temporary file beside `target`; `None` when the
/// archive has no such file.
pub fn download(
    settings: &Settings,
    storage: &dyn crate::storage::Storage,
    arena: &Arena,
    name: &str,
    target: &Path,
) -> Result<Option<TempFile>, Error> {
    let Some(found) = wal_archive::open(storage, name, settings.encode.method)? else {
        return Ok(None);
    };
    let key = found.key.clone();
    let (tmp, file) = TempFile::beside(target)
        .map_err(|e| Error::io(format!("creating a file beside {}", target.display()), e))?;
    let mut file = file;
    let mut buf = arena.lease().map_err(|e| Error::io("wal-fetch", e))?;
    let writing = |e: Error| match e {
        Error::Io { context, source } if context == "writing" => {
            Error::io(format!("writing {}", tmp.path().display()), source)
        }
        other => other,
    };
    let segment = (wal_name::kind_of(name, settings.wal_segment_size) == WalFileKind::Segment)
        .then(|| Segment::parse(name, settings.wal_segment_size))
        .flatten();
    match segment {
        // A segment's every page header is checked on its way to the file.
        Some(seg) => {
            let mut check = PageCheck::new(&mut file, seg, settings.wal_segment_size);
            let len = wal_archive::decode_into(found, &settings.crypter, &mut check, &mut buf)
                .map_err(|e| match e {
                    Error::Io { context, source }
                        if context == "writing" && source.kind() == io::ErrorKind::InvalidData =>
                    {
                        Error::io(format!("{key}: not restored"), source)
                    }
                    other => writing(other),
                })?;
            if len != settings.wal_segment_size {
                return Err(Error::io(
                    key.to_string(),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "holds {len} bytes, a WAL segment has {} (WALG_PG_WAL_SIZE); not restored",
                            settings.wal_segment_size
                        ),
                    ),
                ));
            }
            check
                .finish()
                .map_err(|e| Error::io(format!("{key}: not restored"), e))?;
        }
        None => {
            wal_archive::decode_into(found, &settings.crypter, &mut file, &mut buf)
                .map_err(writing)?;
        }
    }
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", tmp.path().display()), e))?;
    Ok(Some(tmp))
}

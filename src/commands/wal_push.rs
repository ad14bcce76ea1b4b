//! `wal-push FILE`: PostgreSQL's archive_command (walg-compat §6).
//!
//! The named file is compressed and uploaded to `wal_005/<name>.<ext>` in the foreground.
//! Beside it, up to `WALG_UPLOAD_CONCURRENCY − 1` background workers upload other files that
//! PostgreSQL has already marked `.ready`, and leave WAL-G's marker
//! `walg_data/walg_archive_status/<name>` so that the later archive_command for that file
//! returns at once. Background failures are only logged: PostgreSQL will ask again.

use crate::config::Settings;
use crate::error::Error;
use crate::format::wal_name::{self, Segment};
use crate::pipeline::arena::Arena;
use crate::pipeline::compress::CompressedFile;
use crate::pipeline::{plan, workers};
use crate::repo::wal as wal_archive;
use crate::repo::wal_metadata;
use crate::storage::Storage;
use crossbeam_channel::bounded;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the background scanner looks at `archive_status/` again (WAL-G: 100 ms).
const RESCAN: Duration = Duration::from_millis(100);

/// What happened to one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Compressed and stored.
    Uploaded,
    /// An identical copy was already archived.
    AlreadyArchived,
    /// A background upload of an earlier wal-push had already stored it.
    DoneInBackground,
}

/// Everything one upload needs, shared by the foreground and the background workers (and
/// by the daemon's, which keep one for their whole life).
pub(crate) struct Pusher<'a> {
    pub(crate) storage: &'a dyn Storage,
    pub(crate) settings: &'a Settings,
    pub(crate) arena: &'a Arena,
}

impl Pusher<'_> {
    /// Uploads one local WAL file, honouring overwrite protection.
    pub(crate) fn push(&self, path: &Path, name: &str) -> Result<Pushed, Error> {
        let s = self.settings;
        let mut local = || -> Result<Box<dyn std::io::Read>, Error> {
            let file = fs::File::open(path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            Ok(Box::new(file))
        };
        if wal_archive::archived_equal(self.storage, s, name, self.arena, &mut local)? {
            return Ok(Pushed::AlreadyArchived);
        }
        let key = wal_archive::key_for(name, s.encode.method);
        let body = CompressedFile {
            path: path.to_path_buf(),
            opts: s.encode,
            arena: self.arena,
            seal: s
                .crypter
                .seal()
                .map_err(|e| Error::io(format!("encrypting {name}"), e))?,
        };
        let stored = self.storage.put(&key, &body).map_err(|e| match e {
            crate::storage::StorageError::BodyRead { source, .. } => {
                Error::io(format!("reading {}", path.display()), source)
            }
            other => Error::Storage(other),
        })?;
        crate::info!("archived {name} as {key} ({stored} bytes)");
        Ok(Pushed::Uploaded)
    }
}

/// WAL-G's local state folder for background-upload markers. WAL-G uses `$PGDATA/pg_wal`
/// (or `pg_xlog`) when `PGDATA` is set; without it, wal-rus uses the folder of the WAL file
/// when that is a `pg_wal`, so two clusters on one host never share markers, and only then
/// falls back to the temporary directory as WAL-G does.
pub fn marker_dir(settings: &Settings, wal_dir: &Path) -> PathBuf {
    let base = match &settings.pgdata {
        Some(pgdata) if pgdata.join("pg_wal").is_dir() => pgdata.join("pg_wal").join("walg_data"),
        Some(pgdata) if pgdata.join("pg_xlog").is_dir() => pgdata.join("pg_xlog").join("walg_data"),
        _ if wal_dir
            .file_name()
            .is_some_and(|n| n == "pg_wal" || n == "pg_xlog") =>
        {
            wal_dir.join("walg_data")
        }
        _ => std::env::temp_dir().join("walg_data"),
    };
    base.join("walg_archive_status")
}

/// The marker name: the file name without its last extension, as WAL-G makes it.
pub(crate) fn marker_name(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// Runs `wal-push` for `path`.
pub fn run(settings: &Settings, path: &Path) -> Result<Pushed, Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| wal_name::is_safe_file_name(n))
        .ok_or_else(|| Error::Usage(format!("{} is not a WAL file name", path.display())))?
        .to_string();
    let wal_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let wal_dir = if wal_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        wal_dir
    };
    let markers = marker_dir(settings, &wal_dir);
    let marker = markers.join(marker_name(&name));
    if marker.exists() {
        return done_in_background(settings, None, path, &name, &marker, &markers);
    }
    // Refuse early, with the file's name, rather than after connecting to storage.
    fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;

    let plan = plan::wal_push(&settings.plan_input());
    let arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let storage = settings.open_storage()?;
    let pusher = Pusher {
        storage: storage.as_ref(),
        settings,
        arena: &arena,
    };
    let background = Background {
        workers: plan::wal_push_background_workers(&settings.plan_input()),
        status_dir: wal_dir.join("archive_status"),
        wal_dir: &wal_dir,
        markers: &markers,
    };
    let foreground = || upload_foreground(&pusher, path, &name, &markers);
    if background.workers == 0 || !background.status_dir.is_dir() {
        return foreground();
    }
    push_with_background(&pusher, &background, &name, foreground)
}

/// The foreground upload of `path`: the file, then its metadata (`WALG_UPLOAD_WAL_METADATA`).
pub(crate) fn upload_foreground(
    pusher: &Pusher<'_>,
    path: &Path,
    name: &str,
    markers: &Path,
) -> Result<Pushed, Error> {
    let pushed = pusher.push(path, name)?;
    let s = pusher.settings;
    wal_metadata::upload(s.wal_metadata, pusher.storage, path, name, markers)?;
    Ok(pushed)
}

/// The file was uploaded by an earlier wal-push in the background: its marker goes, and
/// only the metadata is left to write (to `storage`, else to storage opened only for it).
pub(crate) fn done_in_background(
    settings: &Settings,
    storage: Option<&dyn Storage>,
    path: &Path,
    name: &str,
    marker: &Path,
    markers: &Path,
) -> Result<Pushed, Error> {
    fs::remove_file(marker)
        .map_err(|e| Error::io(format!("removing marker {}", marker.display()), e))?;
    crate::info!("{name} was archived by an earlier background upload");
    if settings.wal_metadata != wal_metadata::WalMetadata::None {
        let opened;
        let storage = match storage {
            Some(s) => s,
            None => {
                opened = settings.open_storage()?;
                opened.as_ref()
            }
        };
        wal_metadata::upload(settings.wal_metadata, storage, path, name, markers)?;
    }
    Ok(Pushed::DoneInBackground)
}

/// Where the background uploads find their files and leave their traces.
struct Background<'a> {
    /// How many background workers.
    workers: usize,
    /// PostgreSQL's `archive_status/`, with the `.ready` files.
    status_dir: PathBuf,
    /// The folder of the WAL files.
    wal_dir: &'a Path,
    /// WAL-G's marker folder.
    markers: &'a Path,
}

/// Runs `foreground` (the upload of `fg_name`) while background workers upload what else
/// is `.ready`, fed by a scanner until the foreground upload is done.
fn push_with_background(
    pusher: &Pusher<'_>,
    bg: &Background<'_>,
    fg_name: &str,
    foreground: impl FnOnce() -> Result<Pushed, Error>,
) -> Result<Pushed, Error> {
    let settings = pusher.settings;
    let done = AtomicBool::new(false);
    let uploaded = AtomicUsize::new(0);
    let limit = settings.bg_uploaded_limit.saturating_sub(1);
    // A segment handed to a worker is uploaded even when the foreground upload ends first,
    // as WAL-G finishes the uploads it has started; the scanner stops handing out more.
    let work = |bg_name: String| {
        if uploaded.load(Ordering::Relaxed) >= limit {
            return;
        }
        match pusher.push(&bg.wal_dir.join(&bg_name), &bg_name) {
            Ok(_) => {
                uploaded.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = mark_done(settings, bg.markers, &bg.status_dir, &bg_name) {
                    crate::warn!("background upload of {bg_name}: {e}");
                }
            }
            Err(e) => crate::warn!(
                "background upload of {bg_name} failed (PostgreSQL will retry it): {e}"
            ),
        }
    };
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<String>(bg.workers);
        let handles = workers::spawn_workers(s, "wal-push-bg", bg.workers, rx, &work)
            .map_err(|e| Error::io("starting background workers", e))?;
        let scanner = workers::spawn_named(s, "wal-push-scan".into(), || {
            scan_ready(
                settings,
                &bg.status_dir,
                bg.markers,
                fg_name,
                &tx,
                &done,
                &uploaded,
                limit,
            );
            drop(tx);
        })
        .map_err(|e| Error::io("starting scanner", e))?;
        let result = foreground();
        done.store(true, Ordering::Relaxed);
        let _ = scanner.join();
        for h in handles {
            let _ = h.join();
        }
        result
    })
}

/// After a background upload: WAL-G's marker, and `.ready` → `.done` with `PG_READY_RENAME`.
pub(crate) fn mark_done(
    settings: &Settings,
    markers: &Path,
    status_dir: &Path,
    name: &str,
) -> std::io::Result<()> {
    if settings.pg_ready_rename {
        fs::rename(
            status_dir.join(format!("{name}.ready")),
            status_dir.join(format!("{name}.done")),
        )?;
        return Ok(());
    }
    fs::create_dir_all(markers)?;
    fs::File::create(markers.join(marker_name(name)))?;
    Ok(())
}

/// Feeds `.ready` files to the workers: first the segments right after `fg_name`, then
/// whatever else is ready, until the foreground upload is done or the limit is reached.
#[allow(clippy::too_many_arguments)]
fn scan_ready(
    settings: &Settings,
    status_dir: &Path,
    markers: &Path,
    fg_name: &str,
    tx: &crossbeam_channel::Sender<String>,
    done: &AtomicBool,
    uploaded: &AtomicUsize,
    limit: usize,
) {
    let mut sent: HashSet<String> = HashSet::new();
    sent.insert(fg_name.to_string());
    let offer = |name: String, sent: &mut HashSet<String>| -> bool {
        if sent.contains(&name)
            || markers.join(marker_name(&name)).exists()
            || !wal_name::is_safe_file_name(&name)
        {
            return true;
        }
        let mut job = name.clone();
        loop {
            // `sent` holds the foreground file too: background jobs = sent.len() - 1.
            if done.load(Ordering::Relaxed) || sent.len() > limit {
                return false;
            }
            match tx.send_timeout(job, Duration::from_millis(20)) {
                Ok(()) => {
                    sent.insert(name);
                    return true;
                }
                Err(crossbeam_channel::SendTimeoutError::Timeout(j)) => job = j,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    };
    // The consecutive segments first: they are what PostgreSQL will ask for next.
    if let Some(seg) = Segment::parse(fg_name, settings.wal_segment_size) {
        let mut next = seg.next();
        loop {
            let n = next.name(settings.wal_segment_size);
            if !status_dir.join(format!("{n}.ready")).exists() || !offer(n, &mut sent) {
                break;
            }
            next = next.next();
        }
    }
    while !done.load(Ordering::Relaxed) && uploaded.load(Ordering::Relaxed) < limit {
        let mut ready: Vec<String> = match fs::read_dir(status_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
                .collect(),
            Err(_) => return,
        };
        ready.sort();
        for n in ready {
            if !offer(n, &mut sent) {
                return;
            }
        }
        std::thread::sleep(RESCAN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names() {
        assert_eq!(marker_name("00000002.history"), "00000002");
        assert_eq!(
            marker_name("000000010000000000000003"),
            "000000010000000000000003"
        );
        assert_eq!(
            marker_name("000000010000000000000003.00000028.backup"),
            "000000010000000000000003.00000028"
        );
    }
}

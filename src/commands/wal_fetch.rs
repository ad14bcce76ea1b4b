//! `wal-fetch NAME DEST`: PostgreSQL's restore_command (walg-compat §7).
//!
//! Exit 0 when restored, 74 when the archive has no such file, 1 on any other error. Unlike
//! WAL-G, a failed download never leaves anything at DEST: the file is decoded into a
//! temporary name beside it, checked (a segment must be exactly one segment long), fsynced,
//! and only then linked to DEST. After a segment is restored, the next
//! `WALG_DOWNLOAD_CONCURRENCY` segments are prefetched by a detached `wal-prefetch` process.

use crate::config::Settings;
use crate::error::Error;
use crate::format::wal_name::{self, WalFileKind};
use crate::pipeline::arena::Arena;
use crate::pipeline::plan;
use crate::repo::wal_restore::{TempFile, download, prefetch_dirs};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whole-object attempts of a wal-fetch. A failed restore_command is not "try again" to
/// PostgreSQL but "the archive ends here": archive recovery then stops early, at whatever
/// point it reached. So a download that failed half-way (a reset, a body changed in
/// transit, a server's bad moment) is tried again from the start before wal-fetch gives up.
const FETCH_ATTEMPTS: u32 = 3;

/// Failures no new attempt can change: a refusal of the command line or settings, a full
/// or read-only disk, an object that is not there.
fn is_final(e: &Error) -> bool {
    match e {
        Error::NotFound { .. }
        | Error::Usage(_)
        | Error::Config(_)
        | Error::Conflict(_)
        | Error::Precondition(_)
        | Error::Unsupported(_) => true,
        // The storage layer has already retried what a retry can cure.
        Error::Storage(s) => !s.is_retryable(),
        Error::Io { source, .. } => {
            source.raw_os_error() == Some(libc::ENOSPC)
                || source.raw_os_error() == Some(libc::EROFS)
                || source.raw_os_error() == Some(libc::EACCES)
        }
        // wal-fetch does not talk to PostgreSQL; retried as any other unknown failure.
        Error::Pg { .. } => false,
    }
}

/// Moves a finished temporary file to `dest`, failing if `dest` exists (WAL-G opens DEST
/// with `O_EXCL`).
fn publish(tmp: TempFile, dest: &Path) -> Result<(), Error> {
    fs::hard_link(tmp.path(), dest)
        .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    let _ = fs::remove_file(tmp.path());
    tmp.disarm();
    if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = crate::storage::fs::sync_dir(dir);
    }
    Ok(())
}

/// Uses a prefetched copy when one is ready (or about to be); true when `dest` was filled.
pub(crate) fn take_prefetched(settings: &Settings, name: &str, dest: &Path) -> bool {
    let (prefetch, running) = prefetch_dirs(settings, dest);
    let ready = prefetch.join(name);
    let in_progress = running.join(name);
    if !ready.exists() && in_progress.exists() {
        // A prefetcher is writing it: wait while it grows, give up after 100 polls without
        // growth (WAL-G's rule), and never longer than a minute.
        let start = Instant::now();
        let mut last = 0u64;
        let mut idle = 0;
        while !ready.exists() && idle < 100 && start.elapsed() < Duration::from_secs(60) {
            match fs::metadata(&in_progress) {
                Ok(m) if m.len() != last => {
                    last = m.len();
                    idle = 0;
                }
                Ok(_) => idle += 1,
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ready.exists() {
            let _ = fs::remove_file(&in_progress);
            return false;
        }
    }
    match fs::metadata(&ready) {
        Ok(m) if m.len() == settings.wal_segment_size => {}
        Ok(_) => return false,
        Err(_) => return false,
    }
    if dest.exists() || fs::rename(&ready, dest).is_err() {
        return false;
    }
    let mut magic = [0u8; 4];
    let ok = File::open(dest)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        // WAL-G's own check on a prefetched file (its pages were checked when it was made).
        && u32::from_le_bytes(magic) >= u32::from(crate::format::wal_page::MIN_PAGE_MAGIC);
    if !ok {
        let _ = fs::remove_file(dest);
        return false;
    }
    crate::info!("{name} restored from prefetch");
    true
}

/// Starts `wal-prefetch` for the segments after `name`, detached, through this very binary
/// (never through `PATH`) and with the same config file.
fn launch_prefetch(settings: &Settings, name: &str, dest: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(cfg) = &settings.config_file {
        cmd.arg("--config").arg(cfg);
    }
    cmd.arg("wal-prefetch").arg(name).arg(dest);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if settings.log_level != crate::log::LogLevel::Devel {
        cmd.stderr(std::process::Stdio::null());
    }
    if let Err(e) = crate::sys::spawn_detached(&mut cmd) {
        crate::warn!("could not start wal-prefetch: {e}");
    }
}

/// The checks before any restore: a WAL file name, and a destination that does not exist
/// yet. Returns the destination with its symbolic links resolved, as WAL-G resolves it.
pub(crate) fn prepare(name: &str, dest: &Path) -> Result<std::path::PathBuf, Error> {
    if !wal_name::is_safe_file_name(name) {
        return Err(Error::Usage(format!("'{name}' is not a WAL file name")));
    }
    let dest = match fs::canonicalize(dest) {
        Ok(real) => real,
        Err(_) => dest.to_path_buf(),
    };
    if dest.exists() {
        return Err(Error::io(
            format!("creating {}", dest.display()),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    Ok(dest)
}

/// Downloads `name` to `dest` (prepared) from `storage`, a failed attempt tried again from
/// the start; [`Error::NotFound`] (exit 74) when the archive has no such file.
pub(crate) fn download_to(
    settings: &Settings,
    storage: &dyn crate::storage::Storage,
    arena: &Arena,
    name: &str,
    dest: &Path,
) -> Result<(), Error> {
    // A download that failed half-way is tried again from the start (see FETCH_ATTEMPTS).
    let fetched = super::retry(
        FETCH_ATTEMPTS,
        Duration::from_millis(300),
        &format!("fetching {name} again"),
        is_final,
        || download(settings, storage, arena, name, dest),
    )?;
    match fetched {
        None => Err(Error::wal_missing(format!(
            "Archive '{name}' does not exist."
        ))),
        Some(tmp) => {
            publish(tmp, dest)?;
            crate::info!("{name} restored");
            Ok(())
        }
    }
}

/// Runs `wal-fetch`.
pub fn run(settings: &Settings, name: &str, dest: &Path) -> Result<(), Error> {
    let dest = prepare(name, dest)?;
    let kind = wal_name::kind_of(name, settings.wal_segment_size);
    if kind == WalFileKind::Segment && take_prefetched(settings, name, &dest) {
        return Ok(());
    }
    let plan = plan::wal_fetch(&settings.plan_input());
    let arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let storage = settings.open_storage()?;
    download_to(settings, storage.as_ref(), &arena, name, &dest)?;
    if kind == WalFileKind::Segment && settings.download_concurrency > 1 {
        launch_prefetch(settings, name, &dest);
    }
    Ok(())
}

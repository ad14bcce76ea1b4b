//! `wal-prefetch NAME DEST`: downloads the segments after NAME into WAL-G's prefetch folder
//! so the next restore_command calls find them locally (walg-compat §7.2).
//!
//! Started detached by wal-fetch. Each of the next `WALG_DOWNLOAD_CONCURRENCY` segments is
//! decoded into `running/<seg>` by a fixed set of worker threads and renamed to
//! `prefetch/<seg>` only when complete, so WAL-G and wal-rus alike can move it straight into
//! `pg_wal`. Older prefetched files are removed. Failures are ignored: wal-fetch downloads
//! whatever is not here.

use crate::config::Settings;
use crate::error::Error;
use crate::format::wal_name::Segment;
use crate::pipeline::arena::Arena;
use crate::pipeline::{plan, workers};
use crate::repo::wal_restore::{download, prefetch_dirs};
use crossbeam_channel::bounded;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Deletes prefetched files of segments before `current` (older timeline, or same timeline
/// and smaller number).
fn clean_older(dir: &Path, current: Segment, segment_size: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(seg) = Segment::parse(&name, segment_size)
            && (seg.timeline < current.timeline
                || (seg.timeline == current.timeline && seg.segno < current.segno))
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Removes the prefetched files (ready or in progress) of segments before `current`.
pub(crate) fn clean_prefetched(prefetch: &Path, running: &Path, current: Segment, size: u64) {
    clean_older(prefetch, current, size);
    clean_older(running, current, size);
}

/// Downloads segment `name` into `running/`, then moves it to `prefetch/` when complete,
/// unless either already holds it. False when the archive does not have it.
pub(crate) fn prefetch_one(
    settings: &Settings,
    storage: &dyn crate::storage::Storage,
    arena: &Arena,
    name: &str,
    prefetch: &Path,
    running: &Path,
) -> Result<bool, Error> {
    let in_progress = running.join(name);
    let ready = prefetch.join(name);
    if in_progress.exists() || ready.exists() {
        return Ok(true);
    }
    let Some(tmp) = download(settings, storage, arena, name, &in_progress)? else {
        return Ok(false);
    };
    // Visible under running/ only once complete, then moved to prefetch/ unless someone else
    // got there first.
    if fs::hard_link(tmp.path(), &in_progress).is_ok()
        && (ready.exists() || fs::rename(&in_progress, &ready).is_err())
    {
        let _ = fs::remove_file(&in_progress);
    }
    Ok(true)
}

/// Runs `wal-prefetch`.
pub fn run(settings: &Settings, name: &str, dest: &Path) -> Result<(), Error> {
    let size = settings.wal_segment_size;
    let current = Segment::parse(name, size)
        .ok_or_else(|| Error::Usage(format!("'{name}' is not a WAL segment name")))?;
    let (prefetch, running) = prefetch_dirs(settings, dest);
    fs::create_dir_all(&running)
        .map_err(|e| Error::io(format!("creating {}", running.display()), e))?;
    clean_prefetched(&prefetch, &running, current, size);

    let plan = plan::wal_prefetch(&settings.plan_input());
    let arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let storage = settings.open_storage()?;
    let end_of_archive = AtomicBool::new(false);
    let work = |seg: Segment| {
        if end_of_archive.load(Ordering::Relaxed) {
            return;
        }
        let seg_name = seg.name(size);
        match prefetch_one(
            settings,
            storage.as_ref(),
            &arena,
            &seg_name,
            &prefetch,
            &running,
        ) {
            Ok(false) => end_of_archive.store(true, Ordering::Relaxed),
            Ok(true) => {}
            Err(e) => crate::devel!("prefetch of {seg_name} failed: {e}"),
        }
    };
    let threads = plan.transfers as usize;
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<Segment>(threads);
        let handles = workers::spawn_workers(s, "wal-prefetch", threads, rx, &work)
            .map_err(|e| Error::io("starting prefetch workers", e))?;
        let mut next = current;
        for _ in 0..settings.download_concurrency {
            next = next.next();
            if end_of_archive.load(Ordering::Relaxed) || tx.send(next).is_err() {
                break;
            }
            // WAL-G staggers its starts by 10 ms; keeps the first request ahead of the rest.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(tx);
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    })
}

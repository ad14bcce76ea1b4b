//! The daemon's background work on its fixed pool of workers: wal-push's read-ahead (the
//! `.ready` files after the one PostgreSQL asked for, uploaded before it asks, WAL-G's
//! `walg_archive_status` marker left for each) and wal-fetch's prefetch (the segments after
//! the one restored, into WAL-G's prefetch folder).
//!
//! Everything here is bounded, whatever the uptime: the job queue holds at most one job per
//! worker; at most `WALG_UPLOAD_CONCURRENCY − 1` uploads are queued or running, as in
//! wal-push; and the files uploaded ahead whose `.ready` is still there (PostgreSQL has not
//! asked for them yet) plus those in flight stay below `TOTAL_BG_UPLOADED_LIMIT`, so the
//! daemon never runs further ahead of PostgreSQL than one wal-push would. Background
//! failures are only logged: PostgreSQL asks for the file again and the foreground uploads it.

use super::Daemon;
use crate::commands::wal_prefetch::{clean_prefetched, prefetch_one};
use crate::commands::wal_push::{mark_done, marker_name};
use crate::format::wal_name::{self, Segment, WalFileKind};
use crate::repo::wal_restore::prefetch_dirs;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use std::collections::{BinaryHeap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often idle workers and the scanner look whether the daemon is stopping.
const POLL: Duration = Duration::from_millis(250);

/// Foreground names remembered after their answer: PostgreSQL renames a `.ready` file to
/// `.done` only after the answer, and the scanner must not upload such a file again.
const RECENT: usize = 8;

/// One piece of background work.
pub(super) enum Job {
    /// Upload a file of `pg_wal` that is `.ready`, and leave its marker.
    Upload(String),
    /// Download a segment into the prefetch folder.
    Prefetch {
        name: String,
        prefetch: PathBuf,
        running: PathBuf,
    },
}

/// The names of the files being worked on, each list bounded by the workers and limits.
struct Names {
    /// Uploads queued or running in the background.
    background: Vec<String>,
    /// Files whose request is being served.
    foreground: Vec<String>,
    /// The last files served in the foreground.
    recent: VecDeque<String>,
    /// Uploaded in the background, not yet asked for by PostgreSQL.
    ahead: Vec<String>,
    /// Prefetches queued or running.
    prefetching: Vec<String>,
}

/// The queues and the shared state of the background work.
pub(super) struct ReadAhead {
    jobs_tx: Sender<Job>,
    jobs_rx: Receiver<Job>,
    wake_tx: Sender<String>,
    wake_rx: Receiver<String>,
    names: Mutex<Names>,
    changed: Condvar,
    /// Set once the connection workers are done: background work ends.
    pub(super) stop: AtomicBool,
    /// Most uploads queued or running at once (`WALG_UPLOAD_CONCURRENCY − 1`).
    upload_workers: usize,
    /// Most files ahead of PostgreSQL, in flight or uploaded (`TOTAL_BG_UPLOADED_LIMIT − 1`).
    ahead_limit: usize,
}

impl ReadAhead {
    /// The queues for `workers` background workers, `upload_workers` of which may upload.
    pub(super) fn new(workers: usize, upload_workers: usize, ahead_limit: usize) -> ReadAhead {
        let (jobs_tx, jobs_rx) = bounded(workers.max(1));
        let (wake_tx, wake_rx) = bounded(1);
        let names = Names {
            background: Vec::with_capacity(upload_workers + 1),
            foreground: Vec::with_capacity(crate::pipeline::plan::DAEMON_CONNECTIONS + 1),
            recent: VecDeque::with_capacity(RECENT + 1),
            ahead: Vec::with_capacity(ahead_limit + 1),
            prefetching: Vec::with_capacity(workers + 1),
        };
        ReadAhead {
            jobs_tx,
            jobs_rx,
            wake_tx,
            wake_rx,
            names: Mutex::new(names),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            upload_workers,
            ahead_limit,
        }
    }

    fn names(&self) -> MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the scanner to look at `archive_status/` again, first after `hint`; a wake
    /// already waiting stands for this one too.
    pub(super) fn wake(&self, hint: &str) {
        let _ = self.wake_tx.try_send(hint.to_string());
    }
}

/// A file being served in the foreground; the scanner leaves it alone until dropped.
pub(super) struct Claim<'a> {
    ra: &'a ReadAhead,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut n = self.ra.names();
        if let Some(i) = n.foreground.iter().position(|f| *f == self.name) {
            let name = n.foreground.swap_remove(i);
            if n.recent.len() == RECENT {
                n.recent.pop_front();
            }
            n.recent.push_back(name);
        }
    }
}

/// What became of a file offered to the workers.
enum Offer {
    Sent,
    Skipped,
    Full,
}

impl Daemon<'_> {
    /// Claims `name` for a foreground request: waits while a background upload of it runs
    /// (then its marker answers the request), at most as long as any storage wait may last.
    pub(super) fn claim(&self, name: &str) -> Claim<'_> {
        let ra = &self.readahead;
        let deadline = Instant::now() + self.settings.wait_limit();
        let mut n = ra.names();
        while n.background.iter().any(|b| b == name) && Instant::now() < deadline {
            n = ra
                .changed
                .wait_timeout(n, POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        n.foreground.push(name.to_string());
        n.ahead.retain(|a| a != name);
        Claim {
            ra,
            name: name.to_string(),
        }
    }

    /// The scanner: after every wake, offers the workers what is `.ready`.
    pub(super) fn scan_loop(&self) {
        let ra = &self.readahead;
        while !ra.stop.load(Ordering::Relaxed) {
            match ra.wake_rx.recv_timeout(POLL) {
                Ok(hint) => self.offer_ready(&hint),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Offers `.ready` files within the budget: the segments right after `hint` first (what
    /// PostgreSQL will ask for next), then the oldest others.
    fn offer_ready(&self, hint: &str) {
        let ra = &self.readahead;
        let size = self.settings.wal_segment_size;
        let (mut budget, others) = {
            let mut n = ra.names();
            n.ahead
                .retain(|a| self.status_dir.join(format!("{a}.ready")).exists());
            let busy = n.ahead.len() + n.background.len();
            let others = busy + n.foreground.len() + n.recent.len();
            (ra.ahead_limit.saturating_sub(busy), others)
        };
        if let Some(seg) = Segment::parse(hint, size) {
            let mut next = seg.next();
            for _ in 0..budget + others {
                let name = next.name(size);
                if budget == 0 || !self.status_dir.join(format!("{name}.ready")).exists() {
                    break;
                }
                match self.offer(&name) {
                    Offer::Sent => budget -= 1,
                    Offer::Skipped => {}
                    Offer::Full => return,
                }
                next = next.next();
            }
        }
        if budget == 0 {
            return;
        }
        for name in oldest_ready(&self.status_dir, budget + others) {
            if budget == 0 {
                return;
            }
            match self.offer(&name) {
                Offer::Sent => budget -= 1,
                Offer::Skipped => {}
                Offer::Full => return,
            }
        }
    }

    /// Queues the upload of `name` unless it is done, taken or the queue is full.
    fn offer(&self, name: &str) -> Offer {
        let ra = &self.readahead;
        if !wal_name::is_safe_file_name(name) || self.markers.join(marker_name(name)).exists() {
            return Offer::Skipped;
        }
        let mut n = ra.names();
        let taken = |list: &[String]| list.iter().any(|x| x == name);
        if taken(&n.background)
            || taken(&n.foreground)
            || taken(&n.ahead)
            || n.recent.iter().any(|x| x == name)
        {
            return Offer::Skipped;
        }
        if n.background.len() >= ra.upload_workers {
            return Offer::Full;
        }
        match ra.jobs_tx.try_send(Job::Upload(name.to_string())) {
            Ok(()) => {
                n.background.push(name.to_string());
                Offer::Sent
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Offer::Full,
        }
    }

    /// A background worker: runs jobs until the daemon stops.
    pub(super) fn background_worker(&self) {
        let ra = &self.readahead;
        loop {
            match ra.jobs_rx.recv_timeout(POLL) {
                Ok(job) => self.run_job(job),
                Err(RecvTimeoutError::Timeout) if ra.stop.load(Ordering::Relaxed) => return,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn run_job(&self, job: Job) {
        let ra = &self.readahead;
        let stopping = ra.stop.load(Ordering::Relaxed);
        match job {
            Job::Upload(name) => {
                if !stopping {
                    self.upload_ahead(&name);
                }
                ra.names().background.retain(|b| *b != name);
                ra.changed.notify_all();
                ra.wake("");
            }
            Job::Prefetch {
                name,
                prefetch,
                running,
            } => {
                if !stopping {
                    let (s, storage, arena) =
                        (self.settings, self.pusher.storage, self.pusher.arena);
                    if let Err(e) = prefetch_one(s, storage, arena, &name, &prefetch, &running) {
                        crate::devel!("prefetch of {name} failed: {e}");
                    }
                }
                ra.names().prefetching.retain(|p| *p != name);
            }
        }
    }

    /// Uploads `name` ahead of PostgreSQL's request and leaves its marker.
    fn upload_ahead(&self, name: &str) {
        let s = self.settings;
        match self.pusher.push(&self.wal_dir.join(name), name) {
            Ok(_) => match mark_done(s, &self.markers, &self.status_dir, name) {
                Ok(()) if !s.pg_ready_rename => self.readahead.names().ahead.push(name.to_string()),
                Ok(()) => {}
                Err(e) => crate::warn!("background upload of {name}: {e}"),
            },
            Err(e) => {
                crate::warn!("background upload of {name} failed (PostgreSQL will retry it): {e}")
            }
        }
    }

    /// After segment `name` was restored to `dest`: the next `WALG_DOWNLOAD_CONCURRENCY`
    /// segments are queued for prefetch (as many as the queue takes), older prefetched
    /// files removed, as WAL-G's daemon prefetches.
    pub(super) fn prefetch_after(&self, name: &str, dest: &Path) {
        let s = self.settings;
        let size = s.wal_segment_size;
        if s.download_concurrency <= 1 || wal_name::kind_of(name, size) != WalFileKind::Segment {
            return;
        }
        let Some(seg) = Segment::parse(name, size) else {
            return;
        };
        let (prefetch, running) = prefetch_dirs(s, dest);
        if fs::create_dir_all(&running).is_err() {
            return;
        }
        clean_prefetched(&prefetch, &running, seg, size);
        let mut next = seg;
        for _ in 0..s.download_concurrency {
            next = next.next();
            let n = next.name(size);
            if running.join(&n).exists() || prefetch.join(&n).exists() {
                continue;
            }
            let mut names = self.readahead.names();
            if names.prefetching.contains(&n) {
                continue;
            }
            let job = Job::Prefetch {
                name: n.clone(),
                prefetch: prefetch.clone(),
                running: running.clone(),
            };
            if self.readahead.jobs_tx.try_send(job).is_err() {
                return;
            }
            names.prefetching.push(n);
        }
    }
}

/// The `limit` smallest names of `.ready` files in `status_dir`, oldest first, whatever the
/// backlog: a bounded heap keeps only the smallest seen so far.
fn oldest_ready(status_dir: &Path, limit: usize) -> Vec<String> {
    let Ok(entries) = fs::read_dir(status_dir) else {
        return Vec::new();
    };
    let mut heap = BinaryHeap::with_capacity(limit + 1);
    for entry in entries.flatten() {
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let Some(name) = file.strip_suffix(".ready") else {
            continue;
        };
        if heap.len() < limit {
            heap.push(name.to_string());
        } else if heap.peek().is_some_and(|top: &String| name < top.as_str()) {
            heap.pop();
            heap.push(name.to_string());
        }
    }
    heap.into_sorted_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_ready_keeps_the_smallest_names() {
        let dir = tempfile::tempdir().unwrap();
        for n in [5, 3, 9, 1, 7, 2] {
            fs::write(
                dir.path().join(format!("00000001000000000000000{n}.ready")),
                b"",
            )
            .unwrap();
        }
        fs::write(dir.path().join("000000010000000000000004.done"), b"").unwrap();
        let got = oldest_ready(dir.path(), 3);
        assert_eq!(
            got,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003"
            ]
        );
        assert!(oldest_ready(dir.path(), 0).is_empty());
        assert_eq!(oldest_ready(dir.path(), 100).len(), 6);
    }
}

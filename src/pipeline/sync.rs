//! The sync stage of a restore: restored files are fsynced on a thread of their own.
//!
//! WAL-G fsyncs each restored file before it writes the next. Each fsync waits for a journal
//! commit and for the file's last dirty pages, so a restore of a thousand small files spent
//! half its time waiting with the decoder idle. Workers here hand each finished file to this
//! stage through a bounded queue and go on decoding; the restore drains the stage before it
//! writes `backup_label` and `pg_control`, so the cluster becomes startable only once every
//! data file is durable, as with WAL-G.

use crossbeam_channel::{Receiver, Sender};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files waiting for their fsync at most: open descriptors, no buffers.
pub const SYNC_QUEUE: usize = 64;

/// Threads of the stage. Each fsync waits for a journal commit; concurrent fsyncs share one
/// (ext4's jbd2 commits them as a group), so a few threads sync many small files per commit.
pub const SYNC_THREADS: usize = 2;

/// What becomes of a restored file once all of it is written.
pub trait FileSync: Sync {
    /// Takes the finished file; may make it durable now or later.
    fn finished(&self, file: File, path: &Path) -> io::Result<()>;
    /// Whether the file is going to be fsynced (then writeback is started while it is
    /// written, so the fsync finds little left to do).
    fn durable(&self) -> bool;
}

/// `WALG_TAR_DISABLE_FSYNC=true`: nothing.
pub struct NoSync;

impl FileSync for NoSync {
    fn finished(&self, _file: File, _path: &Path) -> io::Result<()> {
        Ok(())
    }
    fn durable(&self) -> bool {
        false
    }
}

/// fsync before returning; for the files whose order matters (`backup_label`, `pg_control`).
pub struct SyncNow;

impl FileSync for SyncNow {
    fn finished(&self, file: File, path: &Path) -> io::Result<()> {
        sync_and_forget(&file, path)
    }
    fn durable(&self) -> bool {
        true
    }
}

/// Hands files to a [`run`] thread through a bounded queue, until [`SyncQueue::close`].
pub struct SyncQueue(Mutex<Option<Sender<(File, PathBuf)>>>);

impl SyncQueue {
    /// A queue feeding `tx`.
    pub fn new(tx: Sender<(File, PathBuf)>) -> SyncQueue {
        SyncQueue(Mutex::new(Some(tx)))
    }

    /// Closes the queue: the stage's [`run`] returns once it has synced what it was given.
    pub fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl FileSync for SyncQueue {
    fn finished(&self, file: File, path: &Path) -> io::Result<()> {
        // Cloned out of the lock: a full queue blocks this worker, not the others.
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tx.ok_or_else(|| io::Error::other("the fsync stage is closed"))?
            .send((file, path.to_path_buf()))
            .map_err(|_| io::Error::other("the fsync stage stopped"))
    }
    fn durable(&self) -> bool {
        true
    }
}

/// fsync, then drop the file's pages from the page cache: nothing reads it before the
/// cluster starts, and the memory is better left to PostgreSQL.
fn sync_and_forget(file: &File, path: &Path) -> io::Result<()> {
    file.sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("fsync of {}: {e}", path.display())))?;
    crate::sys::drop_cached(file);
    Ok(())
}

/// The stage's loop: fsyncs every file from `files` until the queue closes. Returns the
/// first error; later files are still synced, so one failure does not leave others
/// unsynced behind it.
pub fn run(files: Receiver<(File, PathBuf)>) -> io::Result<()> {
    let mut first = Ok(());
    for (file, path) in files {
        if let Err(e) = sync_and_forget(&file, &path)
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn queue_syncs_every_file_and_reports_the_first_error() {
        let dir = std::env::temp_dir().join(format!("walrus-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, rx) = bounded(SYNC_QUEUE);
        let stage = std::thread::spawn(move || run(rx));
        let queue = SyncQueue::new(tx);
        for i in 0..10 {
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, b"x").unwrap();
            queue.finished(File::open(&path).unwrap(), &path).unwrap();
        }
        queue.close();
        assert!(
            queue
                .finished(File::open(dir.join("f0")).unwrap(), &dir)
                .is_err()
        );
        stage.join().unwrap().unwrap();

        // A descriptor that cannot be synced (a pipe's read end) is reported, by path.
        let (tx, rx) = bounded(SYNC_QUEUE);
        let stage = std::thread::spawn(move || run(rx));
        let queue = SyncQueue::new(tx);
        let (r, _w) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(r));
        queue.finished(pipe, Path::new("the-pipe")).unwrap();
        queue.close();
        let err = stage.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("fsync of the-pipe"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The upload side of wal-receive: what the receiver hands over (a whole segment, a
//! `.partial` or a `.history`), how an upload thread stores it (as wal-push stores a file:
//! compressed, encrypted, overwrite-protected), and the in-order account of what is stored
//! for good, which is all the slot may forget.

use crate::config::Settings;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::pipeline::arena::{Arena, Lease};
use crate::pipeline::compress::CompressedBytes;
use crate::repo::wal as wal_archive;
use crate::repo::wal_metadata;
use crate::storage::Storage;
use crate::time::PreciseTime;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Whole-object attempts of one upload, above the storage client's own retries.
const UPLOAD_ATTEMPTS: u32 = 3;

/// Pause before the next whole-object attempt (times the attempt's number).
const UPLOAD_PAUSE: Duration = Duration::from_secs(5);

/// The bytes of one WAL file to store.
pub(super) enum Payload {
    /// A segment buffer, all of it (a `.partial`'s tail is zeroed).
    Segment(Lease),
    /// A small file (a timeline history).
    Small(Vec<u8>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Segment(lease) => lease,
            Payload::Small(v) => v,
        }
    }
}

/// One WAL file for the upload threads.
pub(super) struct Job {
    /// Its place in the order of hand-over ([`InFlight`]).
    pub seq: u64,
    /// Its file name (`wal_005/<name>.<ext>` is its key).
    pub name: String,
    /// Its content.
    pub payload: Payload,
}

/// An upload thread's answer for one job.
pub(super) struct Done {
    /// The job's [`Job::seq`].
    pub seq: u64,
    /// Its name, for the log.
    pub name: String,
    /// Stored, or why not.
    pub result: Result<(), Error>,
}

/// What an upload thread needs: the storage and the settings, and the I/O buffers that
/// compression and the overwrite check borrow.
pub(super) struct Uploader<'a> {
    pub storage: &'a dyn Storage,
    pub settings: &'a Settings,
    pub arena: &'a Arena,
    /// WAL-G's local folder for `BULK` WAL metadata.
    pub status_dir: PathBuf,
}

impl Uploader<'_> {
    /// Stores `job`, trying again after a failure storage may get over.
    pub fn upload(&self, job: &Job) -> Result<(), Error> {
        super::super::retry(
            UPLOAD_ATTEMPTS,
            UPLOAD_PAUSE,
            &format!("storing {} again", job.name),
            |e| !matches!(e, Error::Storage(s) if s.is_retryable()),
            || self.push(&job.name, job.payload.bytes()),
        )?;
        wal_metadata::upload_created(
            self.settings.wal_metadata,
            self.storage,
            &job.name,
            PreciseTime::from_system(SystemTime::now()).to_rfc3339_utc(),
            &self.status_dir,
        )
    }

    /// wal-push's procedure for bytes in memory: the archive's overwrite rule, then the
    /// bytes compressed and stored.
    fn push(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        let s = self.settings;
        let mut local = || -> Result<Box<dyn std::io::Read + '_>, Error> { Ok(Box::new(data)) };
        if wal_archive::archived_equal(self.storage, s, name, self.arena, &mut local)? {
            return Ok(());
        }
        let key = wal_archive::key_for(name, s.encode.method);
        let body = CompressedBytes {
            data,
            opts: s.encode,
            arena: self.arena,
            seal: s
                .crypter
                .seal()
                .map_err(|e| Error::io(format!("encrypting {name}"), e))?,
        };
        let stored = self.storage.put(&key, &body)?;
        crate::info!("archived {name} as {key} ({stored} bytes)");
        Ok(())
    }
}

/// Where a handed-over job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Uploading,
    Stored,
    /// A hole for good: nothing after it counts as stored.
    Failed,
}

/// The jobs handed over and not yet accounted for, in hand-over order, and how far the
/// stream is stored without a hole: upload threads finish in any order, but the slot may
/// only move past a segment when it and everything before it is stored.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// (seq, the stream position the job completes, state).
    queue: VecDeque<(u64, Option<Lsn>, State)>,
    next_seq: u64,
    stored: Option<Lsn>,
}

impl InFlight {
    /// Records a job handed over; `end` is where the stream is complete once it is stored
    /// (`None` for files that complete no stretch of it: history files, `.partial`s).
    pub fn add(&mut self, end: Option<Lsn>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((seq, end, State::Uploading));
        seq
    }

    /// Records job `seq` as stored; true when that moved [`stored`](Self::stored).
    pub fn finish(&mut self, seq: u64) -> bool {
        self.set(seq, State::Stored);
        let before = self.stored;
        while let Some(&(_, end, State::Stored)) = self.queue.front() {
            if let Some(end) = end {
                self.stored = Some(end);
            }
            self.queue.pop_front();
        }
        self.stored != before
    }

    /// Records job `seq` as failed: [`stored`](Self::stored) never moves past it.
    pub fn fail(&mut self, seq: u64) {
        self.set(seq, State::Failed);
    }

    fn set(&mut self, seq: u64, state: State) {
        if let Some(entry) = self.queue.iter_mut().find(|e| e.0 == seq) {
            entry.2 = state;
        }
    }

    /// The end of the stored stream: everything before it is in storage. `None` until the
    /// first segment of this run is stored.
    pub fn stored(&self) -> Option<Lsn> {
        self.stored
    }

    /// Whether every job handed over is stored (none uploading, none failed).
    pub fn all_stored(&self) -> bool {
        self.queue.is_empty()
    }

    /// Jobs still uploading.
    pub fn uploading(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| e.2 == State::Uploading)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::command_tests::Fixture;
    use crate::config::Cmd;
    use crate::storage::BodySource;

    fn job(name: &str, data: &[u8]) -> Job {
        Job {
            seq: 0,
            name: name.into(),
            payload: Payload::Small(data.to_vec()),
        }
    }

    fn stored(f: &Fixture, key: &str) -> Vec<u8> {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut f.mem.get(key).unwrap(), &mut raw).unwrap();
        raw
    }

    #[test]
    fn files_are_stored_as_wal_push_stores_them() {
        let f = Fixture::new(&[("WALG_UPLOAD_WAL_METADATA", "INDIVIDUAL")]);
        let settings = f.settings(Cmd::WalReceive);
        let arena = Arena::new(2, 64 << 10);
        let up = Uploader {
            storage: &f.mem,
            settings: &settings,
            arena: &arena,
            status_dir: f.dir.path().join("status"),
        };
        let segment = vec![7u8; 1 << 20];
        up.upload(&job("000000010000000000000003", &segment))
            .unwrap();
        let raw = stored(&f, "wal_005/000000010000000000000003.lz4");
        let mut plain = Vec::new();
        let mut dec = crate::codec::Decoder::new(crate::codec::ReadFormat::Lz4, &raw[..]).unwrap();
        std::io::Read::read_to_end(&mut dec, &mut plain).unwrap();
        assert!(plain == segment);
        let meta = stored(&f, "wal_005/000000010000000000000003.json");
        assert!(meta.starts_with(b"{\"000000010000000000000003\":{\"created_time\":"));

        // A history file is compared with what is archived: equal passes, different stops.
        up.upload(&job(
            "00000002.history",
            b"1\t0/3000000\tno recovery target\n",
        ))
        .unwrap();
        up.upload(&job(
            "00000002.history",
            b"1\t0/3000000\tno recovery target\n",
        ))
        .unwrap();
        let err = up
            .upload(&job("00000002.history", b"1\t0/4000000\tother\n"))
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        // A body compresses the same in both of S3's passes.
        let body = CompressedBytes {
            data: &segment,
            opts: settings.encode,
            arena: &arena,
            seal: None,
        };
        let mut n = 0;
        body.for_each_chunk(&mut |c| {
            n += c.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(n, raw.len());
    }

    #[test]
    fn stored_moves_only_over_a_prefix_without_holes() {
        let mut f = InFlight::default();
        let a = f.add(Some(Lsn(0x0400_0000)));
        let h = f.add(None);
        let b = f.add(Some(Lsn(0x0500_0000)));
        let c = f.add(Some(Lsn(0x0600_0000)));
        assert_eq!(f.stored(), None);
        assert!(!f.finish(c), "c is stored, but a and b are not");
        assert!(!f.finish(h));
        assert_eq!(f.stored(), None);
        assert!(f.finish(a));
        assert_eq!(f.stored(), Some(Lsn(0x0400_0000)));
        assert_eq!(f.uploading(), 1);
        assert!(f.finish(b));
        assert_eq!(
            f.stored(),
            Some(Lsn(0x0600_0000)),
            "b closes the hole before c"
        );
        assert_eq!(f.uploading(), 0);
        // A history file alone moves nothing.
        let h2 = f.add(None);
        assert!(!f.finish(h2));
        assert_eq!(f.stored(), Some(Lsn(0x0600_0000)));
        // An unknown seq changes nothing.
        assert!(!f.finish(99));
    }

    #[test]
    fn a_failed_upload_is_a_hole_for_good() {
        let mut f = InFlight::default();
        let a = f.add(Some(Lsn(0x0400_0000)));
        let b = f.add(Some(Lsn(0x0500_0000)));
        let c = f.add(Some(Lsn(0x0600_0000)));
        assert!(f.finish(a));
        f.fail(b);
        assert!(!f.finish(c));
        assert_eq!(f.stored(), Some(Lsn(0x0400_0000)));
        assert_eq!(f.uploading(), 0, "every job has answered");
        assert!(!f.all_stored(), "a failed job is never stored");
    }

    #[test]
    fn all_stored_only_when_every_job_answered_stored() {
        let mut f = InFlight::default();
        assert!(f.all_stored());
        let a = f.add(Some(Lsn(0x0400_0000)));
        let h = f.add(None);
        assert!(!f.all_stored());
        f.finish(h);
        assert!(
            !f.all_stored(),
            "the segment before the history file is still uploading"
        );
        f.finish(a);
        assert!(f.all_stored());
    }
}

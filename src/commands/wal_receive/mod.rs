//! `wal-receive`: archiving by streaming replication instead of archive_command.
//!
//! The command logs in as a WAL sender client (`PG*` settings), makes sure the physical slot
//! `WALG_SLOTNAME` exists (creating it reserves WAL at once) and streams from the slot's
//! restart LSN, rounded down to its segment's start. The main thread copies the stream into
//! segment buffers; each complete segment goes through a bounded channel to a fixed set of
//! upload threads that store it as wal-push stores a file (`wal_005/<name>.<ext>`,
//! compressed, encrypted, overwrite-protected). Status updates report as flushed only the
//! end of what is stored without a hole, so the slot keeps every byte not yet in storage:
//! a killed wal-receive loses nothing, its successor streams it again.
//!
//! At the end of a timeline the segment it ends in is stored as `<segment>.partial`, the
//! next timeline's `.history` is fetched (`TIMELINE_HISTORY`) and stored, and streaming
//! goes on there. A lost session is opened again (a few times, with pauses) from the start
//! of the segment being received. SIGTERM or SIGINT: the uploads under way finish, a last
//! status update is sent, exit 0. Threads and buffers are fixed at start from the memory
//! plan; nothing grows with uptime.

mod slot;
mod stream;
mod uploads;

use crate::config::Settings;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::pg::{ConnParams, PgError};
use crate::pipeline::arena::Arena;
use crate::pipeline::{plan, workers};
use crate::sys::TermSignals;
use crossbeam_channel::{RecvTimeoutError, bounded};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stream::{POLL, STATUS_INTERVAL, Stream};
use uploads::{Done, InFlight, Job, Uploader};

/// Sessions opened again in a row after losing one, before wal-receive gives up (a
/// supervisor restarts it, as it would WAL-G's, which gives up at once).
const RECONNECTS: u32 = 5;

/// Pause before opening a session again, times the attempt's number.
const RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// Runs until SIGTERM or SIGINT (exit 0) or a failure that another session cannot mend.
pub fn run(settings: &Settings) -> Result<(), Error> {
    let input = settings.plan_input();
    let plan = plan::wal_receive(&input);
    let uploaders = plan::wal_receive_uploaders(&input);
    let segment_count = plan::wal_receive_segments(&input);
    let params = ConnParams::from_lookup(&|k| settings.pg_setting(k))
        .map_err(|e| Error::pg("PostgreSQL connection settings", e))?;
    let storage = settings.open_storage()?;
    let arena = Arena::new(plan.arena_buffers, plan.arena_buffer_bytes)
        .with_wait_limit(settings.wait_limit());
    let segments =
        Arena::new(segment_count, settings.wal_segment_size as usize).with_wait_limit(POLL);
    // Before any thread starts, so that every thread inherits the blocked mask.
    let signals = TermSignals::block().map_err(|e| Error::io("blocking SIGTERM", e))?;
    let uploader = Uploader {
        storage: storage.as_ref(),
        settings,
        arena: &arena,
        status_dir: bulk_status_dir(settings),
    };
    let (stop, finished) = (AtomicBool::new(false), AtomicBool::new(false));
    crate::info!(
        "wal-receive: slot {}, {uploaders} upload threads, {segment_count} segment buffers of {} MiB",
        settings.slot_name,
        settings.wal_segment_size >> 20
    );
    let (done_tx, done_rx) = bounded::<Done>(64);
    let work = |job: Job| {
        let result = uploader.upload(&job);
        let _ = done_tx.send(Done {
            seq: job.seq,
            name: job.name,
            result,
        });
    };
    std::thread::scope(|s| {
        let start_err = |e| Error::io("starting threads", e);
        let watcher = workers::spawn_named(s, "wal-receive-signals".into(), || {
            watch(signals, &stop, &finished)
        })
        .map_err(start_err)?;
        let (jobs_tx, jobs_rx) = bounded::<Job>(segment_count + 4);
        let handles = workers::spawn_workers(s, "wal-receive-upload", uploaders, jobs_rx, &work)
            .map_err(start_err)?;
        let mut st = Stream {
            settings,
            params,
            segments: &segments,
            jobs: Some(jobs_tx),
            done: done_rx,
            stop: &stop,
            flight: InFlight::default(),
            conn: None,
            cursor: None,
            buffer: None,
            received: Lsn(0),
            system_id: None,
            last_status: Instant::now(),
            last_heard: Instant::now(),
            pinged: false,
        };
        let result = receive(&mut st);
        let result = finish(&mut st, result);
        finished.store(true, Ordering::Relaxed);
        drop(st);
        for h in handles {
            let _ = h.join();
        }
        let _ = watcher.join();
        result
    })
}

/// Sessions one after the other: a lost one (connection, server restart, silence) is
/// opened again up to [`RECONNECTS`] times in a row; a session that received WAL resets
/// the count.
fn receive(st: &mut Stream<'_>) -> Result<(), Error> {
    let mut failures = 0u32;
    loop {
        let before = st.received;
        let err = match st.session() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        st.conn = None;
        if st.received > before {
            failures = 0;
        }
        if !is_transient(&err) || failures >= RECONNECTS || st.stop.load(Ordering::Relaxed) {
            return Err(err);
        }
        failures += 1;
        let pause = RECONNECT_PAUSE * failures;
        crate::warn!(
            "{err}; connecting again in {} s ({failures} of {RECONNECTS})",
            pause.as_secs()
        );
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if st.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Ok(done) = st.done.recv_timeout(POLL) {
                st.account(done)?;
            }
        }
    }
}

/// Whether another session may get over `e`: the connection was lost, the server is
/// restarting or still holds the slot for a session that just died, or it said nothing.
fn is_transient(e: &Error) -> bool {
    let Error::Pg { source, .. } = e else {
        return false;
    };
    match source.as_ref() {
        PgError::Io { .. } | PgError::Connect { .. } | PgError::Broken { .. } => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, object_in_use (the slot),
        // too_many_connections.
        PgError::Server { code, .. } => {
            matches!(
                code.as_str(),
                "57P01" | "57P02" | "57P03" | "55006" | "53300"
            )
        }
        _ => false,
    }
}

/// The end, whatever ended it: no more jobs, the uploads under way finish (their answers
/// still move the slot), a last status update, goodbye to the server.
fn finish(st: &mut Stream<'_>, mut result: Result<(), Error>) -> Result<(), Error> {
    st.jobs = None;
    st.buffer = None;
    if st.flight.uploading() > 0 {
        crate::info!("waiting for {} uploads to finish", st.flight.uploading());
    }
    while st.flight.uploading() > 0 {
        match st.done.recv_timeout(POLL) {
            Ok(done) => {
                if let Err(e) = st.account(done)
                    && result.is_ok()
                {
                    result = Err(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if st.last_status.elapsed() >= STATUS_INTERVAL {
            let _ = st.send_status(false);
        }
    }
    let stored = st.flight.stored().unwrap_or_default();
    if st.conn.is_some()
        && let Err(e) = st.send_status(false)
    {
        crate::warn!("the last status update failed (the slot stays where it was): {e}");
    }
    st.conn = None;
    crate::info!(
        "wal-receive ends; WAL stored up to {stored} in this run, the slot keeps the rest"
    );
    result
}

/// Takes SIGTERM and SIGINT (blocked in every thread) until the command is done.
fn watch(signals: TermSignals, stop: &AtomicBool, finished: &AtomicBool) {
    while !finished.load(Ordering::Relaxed) {
        if let Some(sig) = signals.wait(POLL)
            && !stop.swap(true, Ordering::Relaxed)
        {
            crate::info!("signal {sig}: finishing the uploads under way, then exiting");
        }
    }
}

/// WAL-G's local folder for `BULK` WAL metadata: `$PGDATA/pg_wal/walg_data/...` when that
/// exists (wal-receive on the database host), else the temporary directory's.
fn bulk_status_dir(settings: &Settings) -> PathBuf {
    let base = match &settings.pgdata {
        Some(pgdata) if pgdata.join("pg_wal").is_dir() => pgdata.join("pg_wal"),
        _ => std::env::temp_dir(),
    };
    base.join("walg_data").join("walg_archive_status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_sessions_are_transient_refusals_are_not() {
        let io = Error::pg(
            "x",
            PgError::Io {
                context: "c".into(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            },
        );
        assert!(is_transient(&io));
        let server = |code: &str| {
            Error::pg(
                "x",
                PgError::Server {
                    severity: "FATAL".into(),
                    code: code.into(),
                    message: "m".into(),
                    detail: None,
                    hint: None,
                },
            )
        };
        assert!(is_transient(&server("57P01")));
        assert!(
            is_transient(&server("55006")),
            "the slot of a session that just died"
        );
        assert!(!is_transient(&server("58P01")), "WAL already removed");
        assert!(!is_transient(&server("42704")));
        assert!(!is_transient(&Error::Conflict("c".into())));
    }
}

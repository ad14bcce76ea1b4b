//! `WALG_ALIVE_CHECK_INTERVAL`: a backup whose server died must fail within the interval,
//! not when the copy of a large data directory is over hours later.
//!
//! WAL-G pings the backup's own session every interval (`select 1`), from a goroutine that
//! shares it under a lock, and on failure stops the backup and exits. wal-rus's backup
//! session is busy only at its start and stop, but the thread that owns it is busy copying,
//! so the check runs on a second session of its own, in its own thread: every interval it
//! asks whether the backup's session is still there (its backend in `pg_stat_activity`),
//! which fails too when the server is gone or does not answer within the interval. On
//! failure it records why, raises a flag that the copy's reader checks on every read, and
//! cuts the sockets of the backup's sessions, so that a wait for the server (a replication
//! stream, the stop) ends at once. The backup then fails with the check's message and no
//! sentinel.

use crate::config::Settings;
use crate::error::Error;
use crate::pg::{Connection, Interrupter};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Shortest wait for the check's answer: a fast interval on a loaded machine must not fail
/// a healthy server.
const MIN_ANSWER_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shared {
    tripped: AtomicBool,
    why: Mutex<Option<String>>,
    interrupters: Mutex<Vec<Interrupter>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The running check; [`AliveCheck::finish`] ends it.
pub(super) struct AliveCheck {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the check asks: whether the backup's backend is there (or just `select 1`).
fn probe_sql(backend_pid: Option<i32>) -> String {
    match backend_pid {
        Some(pid) => format!("select count(*) from pg_stat_activity where pid = {pid}"),
        None => "select 1".into(),
    }
}

impl AliveCheck {
    /// Starts checking every `interval` (none when `None`, `WALG_ALIVE_CHECK_INTERVAL=0`)
    /// that the server answers and that the session with `backend_pid` is still on it.
    pub fn start(
        settings: &Settings,
        interval: Option<Duration>,
        backend_pid: Option<i32>,
    ) -> Result<AliveCheck, Error> {
        let Some(interval) = interval else {
            return Ok(AliveCheck::off());
        };
        let shared = Arc::new(Shared::default());
        let mut conn = super::super::connect_pg(settings)?;
        conn.set_read_timeout(Some(interval.max(MIN_ANSWER_WAIT)))
            .map_err(|e| Error::pg("setting up the alive check", e))?;
        crate::devel!("checking every {interval:?} that PostgreSQL is alive");
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("alive-check".into())
            .stack_size(crate::pipeline::workers::WORKER_STACK)
            .spawn(move || watch(conn, &s, interval, backend_pid))
            .map_err(|e| Error::io("starting the alive check", e))?;
        Ok(AliveCheck {
            shared,
            thread: Some(thread),
        })
    }

    /// No check at all.
    pub fn off() -> AliveCheck {
        AliveCheck {
            shared: Arc::new(Shared::default()),
            thread: None,
        }
    }

    /// Cuts `conn`'s socket too when the check fails.
    pub fn guard(&self, conn: &Connection) -> Result<(), Error> {
        if self.thread.is_none() {
            return Ok(());
        }
        let i = conn
            .interrupter()
            .map_err(|e| Error::pg("setting up the alive check", e))?;
        if self.shared.tripped.load(Ordering::SeqCst) {
            i.interrupt();
        }
        self.shared
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(i);
        Ok(())
    }

    /// Why the check failed, if it did.
    pub fn failure(&self) -> Option<String> {
        if !self.shared.tripped.load(Ordering::SeqCst) {
            return None;
        }
        self.shared
            .why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `result`, or the check's failure in place of its error: the first cause, said plainly.
    pub fn explain<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match (result, self.failure()) {
            (Err(_), Some(why)) => Err(Error::Precondition(why)),
            (other, _) => other,
        }
    }

    /// A reader that fails as soon as the check does.
    pub fn watched<R: Read>(&self, inner: R) -> Watched<R> {
        Watched {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops checking (the backup is over, or failed) and waits for the thread.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AliveCheck {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The check's loop: one probe per interval until stopped or failed.
fn watch(mut conn: Connection, s: &Shared, interval: Duration, backend_pid: Option<i32>) {
    let sql = probe_sql(backend_pid);
    loop {
        {
            let stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
            let (stop, _) = s
                .wake
                .wait_timeout_while(stop, interval, |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            if *stop {
                return;
            }
        }
        let why = match conn.query_one(&sql) {
            Ok(row) if backend_pid.is_none() => {
                let _ = row;
                continue;
            }
            Ok(row) if row.first().cloned().flatten().as_deref() == Some("1") => continue,
            Ok(_) => format!(
                "PostgreSQL alive check failed: the backup's session (backend {}) is gone from the server",
                backend_pid.unwrap_or_default()
            ),
            Err(e) => format!("PostgreSQL alive check failed: {e}"),
        };
        *s.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        s.tripped.store(true, Ordering::SeqCst);
        for i in s
            .interrupters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            i.interrupt();
        }
        return;
    }
}

/// A reader of the backup's data that fails once the alive check has.
pub(super) struct Watched<R> {
    inner: R,
    shared: Arc<Shared>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.shared.tripped.load(Ordering::Relaxed) {
            return Err(io::Error::other("PostgreSQL alive check failed"));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert_eq!(
            probe_sql(Some(4242)),
            "select count(*) from pg_stat_activity where pid = 4242"
        );
        assert_eq!(probe_sql(None), "select 1");
    }

    #[test]
    fn a_tripped_check_fails_reads_and_explains_errors() {
        let shared = Arc::new(Shared::default());
        let check = AliveCheck {
            shared: Arc::clone(&shared),
            thread: None,
        };
        let mut r = check.watched(&b"data"[..]);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        let e: Result<(), Error> = Err(Error::Usage("x".into()));
        assert!(matches!(check.explain(e), Err(Error::Usage(_))));
        *shared.why.lock().unwrap() = Some("PostgreSQL alive check failed: gone".into());
        shared.tripped.store(true, Ordering::SeqCst);
        assert!(r.read(&mut buf).is_err());
        let e: Result<(), Error> = Err(Error::Usage("x".into()));
        assert_eq!(
            check.explain(e).unwrap_err().to_string(),
            "PostgreSQL alive check failed: gone"
        );
        assert!(check.explain(Ok(1)).is_ok());
    }
}

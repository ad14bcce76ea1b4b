//! `daemon SOCKET`: WAL-G's daemon (walg-compat: `wal-g daemon`), serving wal-push and
//! wal-fetch to `walg-daemon-client` over a Unix socket, so that PostgreSQL's
//! archive_command and restore_command start no storage client, no TLS session and no
//! compressor of their own.
//!
//! ```text
//! archive_command = 'walg-daemon-client /run/wal-rus.sock wal-push %f'
//! restore_command = 'walg-daemon-client /run/wal-rus.sock wal-fetch %f %p'
//! ```
//!
//! The protocol is in [`protocol`]. Unlike WAL-G's daemon, which starts a goroutine per
//! connection and per prefetch, this one runs a fixed set of threads for its whole life:
//! the accept loop (the main thread), a signal watcher, [`plan::DAEMON_CONNECTIONS`]
//! connection workers fed by a bounded queue of accepted connections, and the background
//! workers and `.ready` scanner of wal-push's read-ahead and wal-fetch's prefetch
//! ([`readahead`]). Every buffer comes from one arena sized by `memory-plan`'s `daemon`
//! entry and made at start; nothing grows with uptime.
//!
//! Differences from WAL-G's daemon, each on the safe side: PGDATA is required at start
//! (WAL-G fails every request without it); the socket path is taken over only from a dead
//! daemon (a live one keeps it, and a file that is not a socket is never removed); wal-fetch
//! writes only inside PGDATA; SIGTERM and SIGINT stop it cleanly (no new connections, the
//! accepted ones answered, the socket removed), where WAL-G's dies at once and leaves its
//! socket behind.

mod protocol;
mod readahead;
mod serve;

pub use protocol::{args_body, message};
pub use serve::READ_TIMEOUT;

use crate::commands::wal_push::{Pusher, marker_dir};
use crate::config::{ConfigError, Settings};
use crate::error::Error;
use crate::pipeline::arena::Arena;
use crate::pipeline::{plan, workers};
use crate::sys::TermSignals;
use crossbeam_channel::{Sender, bounded};
use readahead::ReadAhead;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Accepted connections waiting for a connection worker; more wait in the socket's backlog.
const QUEUE: usize = 16;

/// How often systemd's watchdog is told the daemon lives (WAL-G: 30 s).
const WATCHDOG_EVERY: Duration = Duration::from_secs(30);

/// What every thread of the daemon shares.
pub(crate) struct Daemon<'a> {
    settings: &'a Settings,
    pusher: Pusher<'a>,
    pgdata: PathBuf,
    pgdata_real: Option<PathBuf>,
    wal_dir: PathBuf,
    status_dir: PathBuf,
    markers: PathBuf,
    readahead: ReadAhead,
}

impl Daemon<'_> {
    /// PGDATA as set and with its links resolved.
    fn pgdata_spellings(&self) -> Vec<&Path> {
        std::iter::once(self.pgdata.as_path())
            .chain(self.pgdata_real.as_deref())
            .collect()
    }
}

/// Runs the daemon on `socket` until SIGTERM or SIGINT.
pub fn run(settings: &Settings, socket: &Path) -> Result<(), Error> {
    // Before any thread starts, so that every thread inherits the blocked mask.
    let signals = TermSignals::block().map_err(|e| Error::io("blocking SIGTERM and SIGINT", e))?;
    let pgdata = settings.pgdata.clone().ok_or_else(|| {
        Error::Config(ConfigError {
            setting: "PGDATA".into(),
            message: "must be set: the daemon archives from and restores to $PGDATA/pg_wal, \
                      as WAL-G's does"
                .into(),
        })
    })?;
    let wal_dir = pgdata.join("pg_wal");
    if !wal_dir.is_dir() {
        return Err(Error::Precondition(format!(
            "{} is not a directory: PGDATA must be the cluster's data directory",
            wal_dir.display()
        )));
    }
    let input = settings.plan_input();
    let p = plan::daemon(&input);
    let arena =
        Arena::new(p.arena_buffers, p.arena_buffer_bytes).with_wait_limit(settings.wait_limit());
    let storage = settings.open_storage()?;
    let listener = bind(socket)?;
    let ours = fs::metadata(socket).map(|m| (m.dev(), m.ino())).ok();
    let background = plan::daemon_background_workers(&input);
    let uploaders = plan::wal_push_background_workers(&input);
    let daemon = Daemon {
        settings,
        pusher: Pusher {
            storage: storage.as_ref(),
            settings,
            arena: &arena,
        },
        pgdata_real: fs::canonicalize(&pgdata).ok(),
        markers: marker_dir(settings, &wal_dir),
        status_dir: wal_dir.join("archive_status"),
        wal_dir,
        pgdata,
        readahead: ReadAhead::new(
            background,
            uploaders,
            settings.bg_uploaded_limit.saturating_sub(1),
        ),
    };
    crate::info!(
        "daemon: listening on {} for {} (PGDATA {}): {} connection workers, {} background \
         workers, peak RSS planned {:.1} MiB",
        socket.display(),
        "walg-daemon-client",
        daemon.pgdata.display(),
        plan::DAEMON_CONNECTIONS,
        background,
        p.peak_rss_bytes as f64 / 1048576.0
    );
    let result = daemon.serve(listener, signals, background, uploaders > 0);
    // The socket goes, unless another daemon has bound the path since.
    if fs::metadata(socket).map(|m| (m.dev(), m.ino())).ok() == ours {
        let _ = fs::remove_file(socket);
    }
    crate::info!("daemon: stopped");
    result
}

/// Binds `path`, taking it over from a daemon that died (WAL-G removes any file there).
fn bind(path: &Path) -> Result<UnixListener, Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::Precondition(format!(
                    "another daemon is listening on {}",
                    path.display()
                )));
            }
            fs::remove_file(path).map_err(|e| {
                Error::io(format!("removing the stale socket {}", path.display()), e)
            })?;
        }
        Ok(_) => {
            return Err(Error::Precondition(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("looking at {}", path.display()), e)),
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("listening on {}", path.display()), e))
}

/// Sets the background work's stop flag when dropped, however the threads' scope ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Daemon<'_> {
    /// Starts the threads and accepts connections until a termination signal; then lets
    /// the accepted connections be answered and the background work end.
    fn serve(
        &self,
        listener: UnixListener,
        signals: TermSignals,
        background: usize,
        scanner: bool,
    ) -> Result<(), Error> {
        let stopping = Arc::new(AtomicBool::new(false));
        watch_signals(
            signals,
            &listener,
            &stopping,
            self.settings.notify_socket.clone(),
        )?;
        let starting = |e| Error::io("starting the daemon's threads", e);
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&self.readahead.stop);
            let (tx, rx) = bounded::<UnixStream>(QUEUE);
            let mut conns = Vec::new();
            for i in 0..plan::DAEMON_CONNECTIONS {
                let rx = rx.clone();
                conns.push(
                    workers::spawn_named(s, format!("daemon-conn-{i}"), move || {
                        let mut buf = vec![0u8; protocol::MAX_BODY];
                        for stream in rx.iter() {
                            self.serve_connection(stream, &mut buf);
                        }
                    })
                    .map_err(starting)?,
                );
            }
            for i in 0..background {
                workers::spawn_named(s, format!("daemon-bg-{i}"), || self.background_worker())
                    .map_err(starting)?;
            }
            if scanner {
                workers::spawn_named(s, "daemon-scan".into(), || self.scan_loop())
                    .map_err(starting)?;
            }
            accept_loop(&listener, &tx, &stopping);
            drop(tx);
            for h in conns {
                let _ = h.join();
            }
            Ok(())
        })
    }
}

/// Hands accepted connections to the workers until the daemon is stopping.
fn accept_loop(listener: &UnixListener, queue: &Sender<UnixStream>, stopping: &AtomicBool) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if queue.send(stream).is_err() || stopping.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) if stopping.load(Ordering::Relaxed) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: the backlog waits, try again soon.
                crate::warn!("daemon: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Starts the thread that waits for SIGTERM or SIGINT (then stops the accept loop by
/// shutting the listening socket down) and pings systemd's watchdog meanwhile.
fn watch_signals(
    signals: TermSignals,
    listener: &UnixListener,
    stopping: &Arc<AtomicBool>,
    notify_socket: Option<String>,
) -> Result<(), Error> {
    let waker = listener
        .try_clone()
        .map_err(|e| Error::io("duplicating the listening socket", e))?;
    let stopping = stopping.clone();
    std::thread::Builder::new()
        .name("daemon-signals".into())
        .stack_size(crate::sys::THREAD_STACK)
        .spawn(move || {
            loop {
                match signals.wait(WATCHDOG_EVERY) {
                    Some(sig) => {
                        let name = if sig == libc::SIGINT {
                            "SIGINT"
                        } else {
                            "SIGTERM"
                        };
                        crate::info!(
                            "daemon: {name}: no new connections; answering the accepted ones"
                        );
                        stopping.store(true, Ordering::Relaxed);
                        let _ = rustix::net::shutdown(&waker, rustix::net::Shutdown::Both);
                        return;
                    }
                    None => {
                        if let Some(socket) = &notify_socket {
                            notify_watchdog(socket);
                        }
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting the signal watcher", e))?;
    Ok(())
}

/// Sends `WATCHDOG=1` to systemd's notification socket (`@name` is an abstract address).
fn notify_watchdog(socket: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sent = UnixDatagram::unbound().and_then(|d| match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| d.send_to_addr(b"WATCHDOG=1", &addr))
        }
        None => d.send_to(b"WATCHDOG=1", socket),
    });
    if let Err(e) = sent {
        crate::warn!("daemon: notifying systemd at {socket}: {e}");
    }
}

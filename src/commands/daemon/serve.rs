//! One connection: requests read with a timeout, each wal-push or wal-fetch run by the very
//! code of the `wal-push` and `wal-fetch` commands, and one byte answered. `O` is written
//! only once the file is stored (wal-push) or restored and synced (wal-fetch): a daemon that
//! dies before it answers leaves PostgreSQL to ask again, and nothing is lost.

use super::Daemon;
use super::protocol::{self, ReadError};
use crate::commands::{wal_fetch, wal_push};
use crate::error::Error;
use crate::format::wal_name::{self, WalFileKind};
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// How long a client may take to send a request once connected (walg-daemon-client sends
/// it at once), so that a stuck or idle client cannot hold a connection worker.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon<'_> {
    /// Serves one connection until its wal-push or wal-fetch is answered, an error is
    /// answered, or the client goes away; `buf` holds each request's body.
    pub(super) fn serve_connection(&self, mut stream: UnixStream, buf: &mut [u8]) {
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        loop {
            let (kind, len) = match protocol::read_message(&mut stream, buf) {
                Ok(m) => m,
                Err(ReadError::Closed) => return,
                Err(e) => {
                    crate::error!("daemon: reading a request: {e}");
                    answer(&mut stream, protocol::ERROR);
                    return;
                }
            };
            let body = &buf[..len];
            let reply = match kind {
                protocol::CHECK => {
                    answer(&mut stream, protocol::OK);
                    continue;
                }
                protocol::WAL_PUSH => self.push_request(body),
                protocol::WAL_FETCH => self.fetch_request(body),
                other => {
                    crate::error!("daemon: unexpected message type {:?}", char::from(other));
                    protocol::ERROR
                }
            };
            answer(&mut stream, reply);
            return;
        }
    }

    /// `F`: the body names a file of `$PGDATA/pg_wal`, as `%f` does.
    fn push_request(&self, body: &[u8]) -> u8 {
        let Some(name) = std::str::from_utf8(body)
            .ok()
            .filter(|n| wal_name::is_safe_file_name(n))
        else {
            crate::error!(
                "daemon: wal-push of {:?}: not a WAL file name (archive_command must pass %f)",
                String::from_utf8_lossy(body)
            );
            return protocol::ERROR;
        };
        match self.archive(name) {
            Ok(_) => protocol::OK,
            Err(e) => {
                crate::error!("daemon: wal-push of {name} failed: {e}");
                protocol::ERROR
            }
        }
    }

    /// wal-push of `name`: done already when a background upload left its marker, else
    /// uploaded here while the background workers upload what is `.ready` after it.
    pub(super) fn archive(&self, name: &str) -> Result<wal_push::Pushed, Error> {
        let claim = self.claim(name);
        self.readahead.wake(name);
        let path = self.wal_dir.join(name);
        let marker = self.markers.join(wal_push::marker_name(name));
        let s = self.settings;
        let storage = Some(self.pusher.storage);
        let result = if marker.exists() {
            wal_push::done_in_background(s, storage, &path, name, &marker, &self.markers)
        } else {
            fs::metadata(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))
                .and_then(|_| wal_push::upload_foreground(&self.pusher, &path, name, &self.markers))
        };
        drop(claim);
        result
    }

    /// `f`: two arguments, the file's name and its destination (`%f %p`; a relative
    /// destination is taken from `$PGDATA`, as PostgreSQL gives it).
    fn fetch_request(&self, body: &[u8]) -> u8 {
        let args = protocol::parse_args(body).unwrap_or_default();
        let args: Vec<&str> = args
            .iter()
            .filter_map(|a| std::str::from_utf8(a).ok())
            .collect();
        let [name, location] = args[..] else {
            crate::error!(
                "daemon: wal-fetch needs two arguments (the file's name and its destination)"
            );
            return protocol::ERROR;
        };
        let Some(dest) = self.destination(location) else {
            crate::error!(
                "daemon: wal-fetch of {name}: {location} is not a path inside PGDATA ({})",
                self.pgdata.display()
            );
            return protocol::ERROR;
        };
        match self.restore(name, &dest) {
            Ok(()) => protocol::OK,
            Err(e) if e.exit_code() == crate::error::EXIT_NOT_FOUND => {
                crate::warn!("daemon: {e}");
                protocol::NOT_FOUND
            }
            Err(e) => {
                crate::error!("daemon: wal-fetch of {name} failed: {e}");
                protocol::ERROR
            }
        }
    }

    /// wal-fetch of `name` to `dest`, from the prefetch folder when a copy is there; then
    /// the segments after it are prefetched.
    pub(super) fn restore(&self, name: &str, dest: &Path) -> Result<(), Error> {
        let s = self.settings;
        let dest = wal_fetch::prepare(name, dest)?;
        let segment = wal_name::kind_of(name, s.wal_segment_size) == WalFileKind::Segment;
        if !(segment && wal_fetch::take_prefetched(s, name, &dest)) {
            let (storage, arena) = (self.pusher.storage, self.pusher.arena);
            wal_fetch::download_to(s, storage, arena, name, &dest)?;
        }
        self.prefetch_after(name, &dest);
        Ok(())
    }

    /// Where a wal-fetch destination is: relative ones inside PGDATA, absolute ones only if
    /// they are inside it; none may climb out with `..`.
    fn destination(&self, location: &str) -> Option<PathBuf> {
        let path = Path::new(location);
        if location.is_empty() || path.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        if !path.is_absolute() {
            return Some(self.pgdata.join(path));
        }
        self.pgdata_spellings()
            .iter()
            .any(|p| path.starts_with(p))
            .then(|| path.to_path_buf())
    }
}

/// Writes the one-byte answer; a client that went away is only noted.
fn answer(stream: &mut UnixStream, reply: u8) {
    if let Err(e) = stream.write_all(&[reply]) {
        crate::devel!("daemon: answering {:?}: {e}", char::from(reply));
    }
}

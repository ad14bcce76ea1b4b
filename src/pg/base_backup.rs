//! A base backup streamed by the server over a replication session (`BASE_BACKUP`), in
//! PostgreSQL 15's framing: two result sets (where the backup starts; the tablespaces),
//! one COPY OUT stream whose CopyData payloads are tagged (`n` a new archive, `d` archive
//! data, `p` progress, `m` the manifest), and a last result set (where it ends).
//!
//! Before 15 the server sent one CopyOut stream per tablespace with untagged tar data; that
//! framing is refused here rather than guessed at ([`OLDEST_FRAMING`]).
//!
//! The caller pulls [`Piece`]s one at a time; the session holds at most one message, and
//! messages longer than [`MAX_COPY_MESSAGE`] are refused. The server writes each archive in
//! CopyData messages of its sink buffer (32 KiB, `Max(32768, BLCKSZ)` plus the tag byte)
//! when, as here, it compresses nothing itself.

use super::backup::{BackupError, BackupStart};
use super::conn::{Connection, Event};
use crate::format::lsn::Lsn;
use bytes::Bytes;

/// The first version with the tagged single-stream framing.
pub const OLDEST_FRAMING: u32 = 150000;

/// Largest message accepted during a base backup: eight times the server's CopyData size, so
/// a server built with the largest block size (32 KiB pages) and its error messages fit.
pub const MAX_COPY_MESSAGE: usize = 256 * 1024;

/// Memory-plan term of a remote backup's session: the receive buffer holds one message of at
/// most [`MAX_COPY_MESSAGE`] bytes, and the payload being re-packed may still hold the
/// previous buffer while the next message is read.
pub const REPLICATION_MESSAGES: u64 = 2 * MAX_COPY_MESSAGE as u64;

/// What the backup is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// Written into `backup_label`.
    pub label: String,
    /// The server verifies page checksums as it reads (`VERIFY_CHECKSUMS`).
    pub verify_checksums: bool,
    /// `MAX_RATE` in KiB/s (the server accepts 32..=1048576).
    pub max_rate_kib: Option<u32>,
}

impl BaseBackupOptions {
    /// The command: an immediate checkpoint, the tablespace map in the main archive, no
    /// manifest, no WAL and, as `pg_backup_stop(false)` in a local backup, no wait for the
    /// archiving of the last segment.
    pub fn command(&self) -> String {
        let mut cmd = format!(
            "BASE_BACKUP (LABEL '{}', PROGRESS false, CHECKPOINT 'fast', WAIT false, MANIFEST 'no', TABLESPACE_MAP true, VERIFY_CHECKSUMS {}",
            self.label.replace('\'', "''"),
            self.verify_checksums
        );
        if let Some(rate) = self.max_rate_kib {
            cmd.push_str(&format!(", MAX_RATE {}", rate.clamp(32, 1_048_576)));
        }
        cmd.push(')');
        cmd
    }
}

/// A tablespace other than the data directory, as the server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// Its OID (the link's name in `pg_tblspc/`).
    pub oid: u32,
    /// Its directory on the server.
    pub location: String,
}

/// Where the backup starts and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// The backup's start LSN and timeline.
    pub start: BackupStart,
    /// The tablespaces besides the data directory, in the server's order.
    pub tablespaces: Vec<TablespaceInfo>,
}

/// One step of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A new archive begins: `base.tar` for the data directory (`tablespace` `None`), or
    /// `<oid>.tar` for the tablespace at that path.
    Archive {
        /// The server's name for it.
        name: String,
        /// The tablespace's directory; `None` for the data directory.
        tablespace: Option<String>,
    },
    /// Bytes of the current archive's tar stream.
    Data(Bytes),
    /// The stream is over and the backup stopped: where it ends.
    End(BackupStart),
}

/// A running `BASE_BACKUP`. Dropping it before the end leaves the session broken (the server
/// aborts the backup when the session goes).
pub struct BaseBackupStream<'c> {
    conn: &'c mut Connection,
    copying: bool,
    ended: bool,
}

fn failed(step: &'static str) -> impl Fn(super::PgError) -> BackupError {
    move |source| BackupError::Query {
        step,
        source: Box::new(source),
    }
}

fn answer(what: &'static str, problem: impl Into<String>) -> BackupError {
    BackupError::Answer {
        what,
        problem: problem.into(),
    }
}

/// A `(LSN, timeline)` row as the server sends the start and the end.
fn position(row: &[Option<String>], what: &'static str) -> Result<BackupStart, BackupError> {
    let lsn = row
        .first()
        .cloned()
        .flatten()
        .ok_or_else(|| answer(what, "no LSN"))?;
    let lsn = Lsn::parse(&lsn).ok_or_else(|| answer(what, format!("'{lsn}' is not an LSN")))?;
    let timeline = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(|| answer(what, "no timeline"))?;
    Ok(BackupStart { lsn, timeline })
}

/// A tablespace row: `spcoid`, `spclocation`, `size`; both NULL for the data directory.
fn tablespace(row: &[Option<String>]) -> Result<Option<TablespaceInfo>, BackupError> {
    match (
        row.first().cloned().flatten(),
        row.get(1).cloned().flatten(),
    ) {
        (None, _) => Ok(None),
        (Some(oid), location) => Ok(Some(TablespaceInfo {
            oid: oid
                .parse()
                .map_err(|_| answer("tablespace list", format!("'{oid}' is not an OID")))?,
            location: location.unwrap_or_default(),
        })),
    }
}

/// Splits a CopyData payload after its tag into the NUL-terminated strings of a new-archive
/// message.
fn two_strings(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.splitn(3, |&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let path = std::str::from_utf8(parts.next()?).ok()?.to_string();
    Some((name, path))
}

/// What one CopyData payload of the stream says; `None` for a progress report.
pub fn parse_payload(payload: &Bytes) -> Result<Option<Piece>, BackupError> {
    let Some(&tag) = payload.first() else {
        return Err(answer("base backup stream", "an empty CopyData message"));
    };
    match tag {
        b'n' => {
            let (name, path) = two_strings(&payload[1..])
                .ok_or_else(|| answer("base backup stream", "a malformed new-archive message"))?;
            Ok(Some(Piece::Archive {
                name,
                tablespace: (!path.is_empty()).then_some(path),
            }))
        }
        b'd' => Ok(Some(Piece::Data(payload.slice(1..)))),
        b'p' => Ok(None),
        b'm' => Err(answer(
            "base backup stream",
            "the server sent a manifest, which was not asked for",
        )),
        other => Err(answer(
            "base backup stream",
            format!(
                "unknown message type '{}' (a server before PostgreSQL 15 does not tag its archives)",
                char::from(other).escape_default()
            ),
        )),
    }
}

impl<'c> BaseBackupStream<'c> {
    /// Sends `BASE_BACKUP` on replication session `conn` and reads up to the start of the
    /// archives. The session is limited to [`MAX_COPY_MESSAGE`]-byte messages from now on.
    pub fn start(
        conn: &'c mut Connection,
        options: &BaseBackupOptions,
    ) -> Result<(BaseBackupStream<'c>, StreamStart), BackupError> {
        let version = conn.server_version_num();
        if version < OLDEST_FRAMING {
            return Err(answer(
                "remote backup",
                format!(
                    "PostgreSQL {version} streams base backups in the framing before 15, which wal-rus does not read; back up with the data directory instead"
                ),
            ));
        }
        conn.set_max_message_len(MAX_COPY_MESSAGE);
        conn.start_query(&options.command())
            .map_err(failed("starting BASE_BACKUP"))?;
        let mut result_sets = 0;
        let mut start = None;
        let mut tablespaces = Vec::new();
        loop {
            match conn.next_event().map_err(failed("starting BASE_BACKUP"))? {
                Event::Columns(_) => result_sets += 1,
                Event::Row(row) if result_sets == 1 => {
                    start = Some(position(&row, "backup start")?);
                }
                Event::Row(row) if result_sets == 2 => {
                    tablespaces.extend(tablespace(&row)?);
                }
                Event::Complete(_) => {}
                Event::CopyOut => break,
                other => {
                    return Err(answer(
                        "base backup stream",
                        format!("unexpected {other:?} before the archives"),
                    ));
                }
            }
        }
        let start = start.ok_or_else(|| answer("backup start", "the server sent no start"))?;
        Ok((
            BaseBackupStream {
                conn,
                copying: true,
                ended: false,
            },
            StreamStart { start, tablespaces },
        ))
    }

    /// The next piece of the stream; after [`Piece::End`] the session takes new commands.
    pub fn next_piece(&mut self) -> Result<Piece, BackupError> {
        if self.ended {
            return Err(answer("base backup stream", "read past its end"));
        }
        while self.copying {
            match self
                .conn
                .next_event()
                .map_err(failed("streaming the base backup"))?
            {
                Event::CopyData(payload) => {
                    if let Some(piece) = parse_payload(&payload)? {
                        return Ok(piece);
                    }
                }
                Event::CopyDone => self.copying = false,
                other => {
                    return Err(answer(
                        "base backup stream",
                        format!("unexpected {other:?} in the archives"),
                    ));
                }
            }
        }
        let mut end = None;
        loop {
            match self
                .conn
                .next_event()
                .map_err(failed("finishing the base backup"))?
            {
                Event::Columns(_) | Event::Complete(_) => {}
                Event::Row(row) if end.is_none() => end = Some(position(&row, "backup end")?),
                Event::Ready => break,
                other => {
                    return Err(answer(
                        "base backup stream",
                        format!("unexpected {other:?} after the archives"),
                    ));
                }
            }
        }
        self.ended = true;
        end.map(Piece::End)
            .ok_or_else(|| answer("backup end", "the server sent no end position"))
    }

    /// The session, for the handle that interrupts it.
    pub fn connection(&self) -> &Connection {
        self.conn
    }

    /// Bounds the waits for the server from now on (the stop at the end of the stream).
    pub fn set_read_timeout(
        &mut self,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), BackupError> {
        self.conn
            .set_read_timeout(timeout)
            .map_err(failed("bounding the wait for the backup's stop"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_asks_what_walg_asks_without_waiting() {
        let mut o = BaseBackupOptions {
            label: "it's".into(),
            verify_checksums: false,
            max_rate_kib: None,
        };
        assert_eq!(
            o.command(),
            "BASE_BACKUP (LABEL 'it''s', PROGRESS false, CHECKPOINT 'fast', WAIT false, MANIFEST 'no', TABLESPACE_MAP true, VERIFY_CHECKSUMS false)"
        );
        o.verify_checksums = true;
        o.max_rate_kib = Some(10);
        assert!(o.command().ends_with("VERIFY_CHECKSUMS true, MAX_RATE 32)"));
        o.max_rate_kib = Some(u32::MAX);
        assert!(o.command().ends_with("MAX_RATE 1048576)"));
    }

    #[test]
    fn payloads_by_tag() {
        let p = |b: &[u8]| parse_payload(&Bytes::copy_from_slice(b));
        assert_eq!(
            p(b"nbase.tar\0\0").unwrap(),
            Some(Piece::Archive {
                name: "base.tar".into(),
                tablespace: None
            })
        );
        assert_eq!(
            p(b"n16384.tar\0/mnt/ts\0").unwrap(),
            Some(Piece::Archive {
                name: "16384.tar".into(),
                tablespace: Some("/mnt/ts".into())
            })
        );
        assert_eq!(
            p(b"dxyz").unwrap(),
            Some(Piece::Data(Bytes::from_static(b"xyz")))
        );
        assert_eq!(p(b"p\0\0\0\0\0\0\0\x01").unwrap(), None);
        assert!(p(b"m").unwrap_err().to_string().contains("manifest"));
        assert!(p(b"nbase.tar").is_err());
        assert!(p(b"").is_err());
        let e = p(&[0, 0, 0]).unwrap_err().to_string();
        assert!(e.contains("before PostgreSQL 15"), "{e}");
    }

    #[test]
    fn positions_and_tablespace_rows() {
        let row = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(
            position(&row(&[Some("0/2000028"), Some("3")]), "x").unwrap(),
            BackupStart {
                lsn: Lsn(0x2000028),
                timeline: 3
            }
        );
        assert!(position(&row(&[Some("nope"), Some("1")]), "x").is_err());
        assert!(position(&row(&[Some("0/1"), None]), "x").is_err());
        assert_eq!(tablespace(&row(&[None, None, None])).unwrap(), None);
        assert_eq!(
            tablespace(&row(&[Some("16384"), Some("/mnt/ts"), None])).unwrap(),
            Some(TablespaceInfo {
                oid: 16384,
                location: "/mnt/ts".into()
            })
        );
    }
}

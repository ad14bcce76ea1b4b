//! Physical streaming replication as a client: the replication commands wal-receive needs
//! (`IDENTIFY_SYSTEM`, `SHOW`, `READ_REPLICATION_SLOT`, `CREATE_REPLICATION_SLOT`,
//! `TIMELINE_HISTORY`, `START_REPLICATION`) and the COPY BOTH messages of the stream: the
//! server's XLogData (`w`) and keepalive (`k`), the client's standby status update (`r`).
//!
//! The message formats are PostgreSQL's "Streaming Replication Protocol"; every integer is
//! big-endian, every clock microseconds since 2000-01-01 00:00 UTC.

use super::conn::{Connection, Event, Replication};
use super::error::PgError;
use super::params::ConnParams;
use crate::format::lsn::Lsn;
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest slot name PostgreSQL takes (`NAMEDATALEN − 1`).
pub const MAX_SLOT_NAME: usize = 63;

/// Checks a replication slot name as PostgreSQL does (`ReplicationSlotValidateName`): 1–63
/// of lower-case letters, digits and underscores. (WAL-G also lets upper case through, which
/// the server then refuses.)
pub fn validate_slot_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SLOT_NAME {
        return Err(format!(
            "slot name {name:?} must be 1 to {MAX_SLOT_NAME} characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "slot name {name:?} may contain only lower-case letters, digits and underscores"
        ));
    }
    Ok(())
}

/// What `IDENTIFY_SYSTEM` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (decimal text).
    pub system_id: String,
    /// The server's current timeline.
    pub timeline: u32,
    /// Its current WAL flush position.
    pub xlogpos: Lsn,
}

/// A replication slot as `READ_REPLICATION_SLOT` or `pg_replication_slots` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// The oldest WAL it keeps; `None` for a slot that has never reserved WAL.
    pub restart_lsn: Option<Lsn>,
}

/// The end of a timeline while streaming it: the server's next timeline and where it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineEnd {
    /// The next timeline.
    pub next_tli: u32,
    /// Where the next timeline begins (the switch point).
    pub start: Lsn,
}

/// One message of the server's side of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalMessage {
    /// XLogData: WAL bytes from `start` on.
    Data {
        /// Position of the first byte.
        start: Lsn,
        /// The bytes.
        data: Bytes,
    },
    /// Primary keepalive; `reply` asks for a status update at once.
    Keepalive {
        /// The server's current end of WAL.
        end: Lsn,
        /// Whether the server wants an answer now.
        reply: bool,
    },
}

/// Parses one CopyData payload of a physical stream.
pub fn parse_copy_data(payload: Bytes) -> Result<WalMessage, PgError> {
    let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    match payload.first() {
        Some(b'w') if payload.len() >= 25 => Ok(WalMessage::Data {
            start: Lsn(u64_at(1)),
            data: payload.slice(25..),
        }),
        Some(b'k') if payload.len() >= 18 => Ok(WalMessage::Keepalive {
            end: Lsn(u64_at(1)),
            reply: payload[17] != 0,
        }),
        Some(&kind) => Err(PgError::Protocol(format!(
            "unexpected replication message {:?} of {} bytes",
            kind as char,
            payload.len()
        ))),
        None => Err(PgError::Protocol("empty replication message".into())),
    }
}

/// The client's standby status update: how far WAL was received (`write`), stored for good
/// (`flush`, which moves the slot) and applied. `Lsn(0)` means "unknown", which the server
/// ignores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyStatus {
    /// Received.
    pub write: Lsn,
    /// Durable: the slot keeps everything after it.
    pub flush: Lsn,
    /// Applied.
    pub apply: Lsn,
    /// Ask the server to answer at once (a keepalive).
    pub reply: bool,
}

impl StandbyStatus {
    /// The message's payload, stamped with `clock` (see [`pg_clock`]).
    pub fn encode(&self, clock: i64) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0] = b'r';
        out[1..9].copy_from_slice(&self.write.0.to_be_bytes());
        out[9..17].copy_from_slice(&self.flush.0.to_be_bytes());
        out[17..25].copy_from_slice(&self.apply.0.to_be_bytes());
        out[25..33].copy_from_slice(&clock.to_be_bytes());
        out[33] = u8::from(self.reply);
        out
    }
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// `t` as PostgreSQL's protocol clocks count: microseconds since 2000-01-01 00:00 UTC.
pub fn pg_clock(t: SystemTime) -> i64 {
    let unix_micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    unix_micros - PG_EPOCH_UNIX_SECS * 1_000_000
}

/// A size setting as `SHOW` prints it (`16MB`, `1GB`, `8192`, `64kB`), in bytes.
pub fn parse_size_setting(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = text[..digits].parse().ok()?;
    let unit = match &text[digits..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The query that reads a slot on a server older than PostgreSQL 15, which has no
/// `READ_REPLICATION_SLOT` (the name must have passed [`validate_slot_name`]).
pub fn slot_state_sql(name: &str) -> String {
    format!("select slot_type, restart_lsn from pg_replication_slots where slot_name = '{name}'")
}

/// A slot's row (`slot_type`, `restart_lsn`, ...): `None` when it has no type (the slot
/// does not exist; `READ_REPLICATION_SLOT` then answers with NULLs).
pub fn parse_slot_row(row: &[Option<String>]) -> Result<Option<SlotState>, PgError> {
    let Some(slot_type) = row.first().cloned().flatten() else {
        return Ok(None);
    };
    let restart_lsn = match row.get(1).cloned().flatten() {
        None => None,
        Some(t) => Some(
            Lsn::parse(&t).ok_or_else(|| PgError::Protocol(format!("bad restart_lsn {t:?}")))?,
        ),
    };
    Ok(Some(SlotState {
        slot_type,
        restart_lsn,
    }))
}

/// How `START_REPLICATION` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// The stream runs.
    Streaming,
    /// The requested timeline ends exactly where streaming was to begin: nothing to stream.
    TimelineEnded(TimelineEnd),
}

/// One step of a running stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Nothing arrived within the wait.
    Idle,
    /// A message.
    Wal(WalMessage),
    /// The server ended the stream: at the end of a historic timeline, with the next one; or
    /// without one (it is shutting down). The session takes commands again.
    Ended(Option<TimelineEnd>),
}

/// A physical replication session (`replication=true`).
pub struct PhysicalReplication {
    conn: Connection,
}

fn text(row: &[Option<String>], i: usize, what: &str) -> Result<String, PgError> {
    row.get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| PgError::Protocol(format!("no {what} in the server's answer")))
}

fn timeline_end(row: &[Option<String>]) -> Result<TimelineEnd, PgError> {
    let tli = text(row, 0, "next timeline")?;
    let pos = text(row, 1, "next timeline's start")?;
    Ok(TimelineEnd {
        next_tli: tli
            .trim()
            .parse()
            .map_err(|_| PgError::Protocol(format!("bad next timeline {tli:?}")))?,
        start: Lsn::parse(&pos)
            .ok_or_else(|| PgError::Protocol(format!("bad next timeline start {pos:?}")))?,
    })
}

impl PhysicalReplication {
    /// Logs in as a WAL sender client.
    pub fn connect(params: &ConnParams) -> Result<PhysicalReplication, PgError> {
        Ok(PhysicalReplication {
            conn: Connection::connect_replication(params, Replication::Physical)?,
        })
    }

    /// The server's version (`server_version_num` form).
    pub fn server_version_num(&self) -> u32 {
        self.conn.server_version_num()
    }

    fn one_row(&mut self, command: &str) -> Result<Vec<Option<String>>, PgError> {
        self.conn.query_one(command)
    }

    /// `IDENTIFY_SYSTEM`.
    pub fn identify_system(&mut self) -> Result<SystemIdentity, PgError> {
        let row = self.one_row("IDENTIFY_SYSTEM")?;
        let tli = text(&row, 1, "timeline")?;
        let pos = text(&row, 2, "xlogpos")?;
        Ok(SystemIdentity {
            system_id: text(&row, 0, "systemid")?,
            timeline: tli
                .parse()
                .map_err(|_| PgError::Protocol(format!("bad timeline {tli:?}")))?,
            xlogpos: Lsn::parse(&pos)
                .ok_or_else(|| PgError::Protocol(format!("bad xlogpos {pos:?}")))?,
        })
    }

    /// The server's WAL segment size in bytes (`SHOW wal_segment_size`).
    pub fn wal_segment_size(&mut self) -> Result<u64, PgError> {
        let value = text(
            &self.one_row("SHOW wal_segment_size")?,
            0,
            "wal_segment_size",
        )?;
        parse_size_setting(&value)
            .ok_or_else(|| PgError::Protocol(format!("bad wal_segment_size {value:?}")))
    }

    /// `READ_REPLICATION_SLOT` (PostgreSQL 15 and later): `None` when the slot does not exist.
    pub fn read_slot(&mut self, name: &str) -> Result<Option<SlotState>, PgError> {
        parse_slot_row(&self.one_row(&format!("READ_REPLICATION_SLOT \"{name}\""))?)
    }

    /// Creates a physical slot that reserves WAL at once (from the last checkpoint's redo
    /// point). An existing slot is the server's error `42710`.
    pub fn create_slot(&mut self, name: &str) -> Result<(), PgError> {
        self.conn
            .execute(&format!(
                "CREATE_REPLICATION_SLOT \"{name}\" PHYSICAL RESERVE_WAL"
            ))
            .map(drop)
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and content.
    pub fn timeline_history(&mut self, tli: u32) -> Result<(String, Vec<u8>), PgError> {
        let row = self.one_row(&format!("TIMELINE_HISTORY {tli}"))?;
        Ok((
            text(&row, 0, "history file name")?,
            text(&row, 1, "history file content")?.into_bytes(),
        ))
    }

    /// `START_REPLICATION SLOT slot PHYSICAL lsn TIMELINE tli`.
    pub fn start(&mut self, slot: &str, lsn: Lsn, tli: u32) -> Result<Started, PgError> {
        self.conn.start_query(&format!(
            "START_REPLICATION SLOT \"{slot}\" PHYSICAL {lsn} TIMELINE {tli}"
        ))?;
        match self.conn.next_event()? {
            Event::CopyBoth => Ok(Started::Streaming),
            Event::Columns(_) => match self.rest_of_answer()? {
                Some(end) => Ok(Started::TimelineEnded(end)),
                None => Err(PgError::Protocol(
                    "START_REPLICATION answered with neither a stream nor a next timeline".into(),
                )),
            },
            other => Err(PgError::Protocol(format!(
                "unexpected answer to START_REPLICATION: {other:?}"
            ))),
        }
    }

    /// Reads to ReadyForQuery; the next timeline when a row said it.
    fn rest_of_answer(&mut self) -> Result<Option<TimelineEnd>, PgError> {
        let mut end = None;
        loop {
            match self.conn.next_event()? {
                Event::Row(row) => end = Some(timeline_end(&row)?),
                Event::Ready => return Ok(end),
                Event::CopyData(_) | Event::CopyDone => {
                    return Err(PgError::Protocol(
                        "replication data after the end of the stream".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// The next step of the stream, waiting at most `idle`. When the server ends its side,
    /// ends ours too and reads the rest of the answer.
    pub fn next(&mut self, idle: Duration) -> Result<StreamEvent, PgError> {
        match self.conn.next_event_within(idle)? {
            None => Ok(StreamEvent::Idle),
            Some(Event::CopyData(payload)) => Ok(StreamEvent::Wal(parse_copy_data(payload)?)),
            Some(Event::CopyDone) => {
                self.conn.send_copy_done()?;
                Ok(StreamEvent::Ended(self.rest_of_answer()?))
            }
            // A WAL sender done at the server's shutdown completes the command without
            // ending the copy first, and closes the connection.
            Some(Event::Complete(_)) => Ok(StreamEvent::Ended(None)),
            Some(other) => Err(PgError::Protocol(format!(
                "unexpected message in the replication stream: {other:?}"
            ))),
        }
    }

    /// Sends a standby status update stamped with the current time.
    pub fn send_status(&mut self, status: &StandbyStatus) -> Result<(), PgError> {
        self.conn
            .send_copy_data(&status.encode(pg_clock(SystemTime::now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_as_postgres_takes_them() {
        for good in ["walg", "a", "slot_1", "1slot", &"x".repeat(63)] {
            assert_eq!(validate_slot_name(good), Ok(()), "{good}");
        }
        for bad in ["", "Walg", "wal-g", "wal g", "sl\"ot", "ß", &"x".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x0000_0001_2A00_0000u64.to_be_bytes());
        w.extend_from_slice(&0x0000_0001_2B00_0000u64.to_be_bytes());
        w.extend_from_slice(&7i64.to_be_bytes());
        w.extend_from_slice(b"WALBYTES");
        assert_eq!(
            parse_copy_data(Bytes::from(w)).unwrap(),
            WalMessage::Data {
                start: Lsn(0x1_2A00_0000),
                data: Bytes::from_static(b"WALBYTES"),
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&0x0300_0060u64.to_be_bytes());
        k.extend_from_slice(&9i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(k.clone())).unwrap(),
            WalMessage::Keepalive {
                end: Lsn(0x0300_0060),
                reply: true
            }
        );
        k[17] = 0;
        assert!(matches!(
            parse_copy_data(Bytes::from(k)).unwrap(),
            WalMessage::Keepalive { reply: false, .. }
        ));
        // An XLogData header alone is an empty message, not an error.
        let mut empty = vec![b'w'];
        empty.extend_from_slice(&[0u8; 24]);
        assert!(matches!(
            parse_copy_data(Bytes::from(empty)).unwrap(),
            WalMessage::Data { data, .. } if data.is_empty()
        ));
        for bad in [&b""[..], b"w1234", b"k", b"x123456789012345678901234567890"] {
            assert!(
                parse_copy_data(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn status_update_layout() {
        let s = StandbyStatus {
            write: Lsn(0x0102_0304_0506_0708),
            flush: Lsn(0x0300_0000),
            apply: Lsn(0),
            reply: true,
        };
        let m = s.encode(-2);
        assert_eq!(m[0], b'r');
        assert_eq!(&m[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&m[9..17], &[0, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&m[17..25], &[0; 8]);
        assert_eq!(&m[25..33], &(-2i64).to_be_bytes());
        assert_eq!(m[33], 1);
        assert_eq!(StandbyStatus { reply: false, ..s }.encode(0)[33], 0);
    }

    #[test]
    fn clocks_count_from_2000() {
        let y2k = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(pg_clock(y2k), 0);
        assert_eq!(pg_clock(y2k + Duration::from_micros(1_500_000)), 1_500_000);
        assert_eq!(pg_clock(UNIX_EPOCH), -946_684_800_000_000);
    }

    #[test]
    fn size_settings() {
        assert_eq!(parse_size_setting("16MB"), Some(16 << 20));
        assert_eq!(parse_size_setting("1GB"), Some(1 << 30));
        assert_eq!(parse_size_setting("64kB"), Some(64 << 10));
        assert_eq!(parse_size_setting("8192"), Some(8192));
        for bad in ["", "MB", "16 MB", "16mb", "x"] {
            assert_eq!(parse_size_setting(bad), None, "{bad}");
        }
    }

    #[test]
    fn slot_rows_and_timeline_ends() {
        assert_eq!(parse_slot_row(&[None, None, None]).unwrap(), None);
        assert_eq!(
            parse_slot_row(&[
                Some("physical".into()),
                Some("0/3000028".into()),
                Some("1".into())
            ])
            .unwrap(),
            Some(SlotState {
                slot_type: "physical".into(),
                restart_lsn: Some(Lsn(0x0300_0028)),
            })
        );
        assert_eq!(
            parse_slot_row(&[Some("physical".into()), None])
                .unwrap()
                .unwrap()
                .restart_lsn,
            None
        );
        assert!(parse_slot_row(&[Some("physical".into()), Some("x".into())]).is_err());
        assert_eq!(
            timeline_end(&[Some("2".into()), Some("0/5000060".into())]).unwrap(),
            TimelineEnd {
                next_tli: 2,
                start: Lsn(0x0500_0060)
            }
        );
        assert!(timeline_end(&[Some("2".into())]).is_err());
        assert_eq!(
            slot_state_sql("walg"),
            "select slot_type, restart_lsn from pg_replication_slots where slot_name = 'walg'"
        );
    }
}

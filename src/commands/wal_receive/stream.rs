//! The receiving side of wal-receive: one replication session at a time, from the slot's
//! position (or where the last session stopped) on, segment by segment, timeline by
//! timeline; status updates that move the slot only over what is stored.

use super::uploads::{Done, InFlight, Job, Payload};
use crate::config::Settings;
use crate::error::Error;
use crate::format::lsn::Lsn;
use crate::format::timeline_history;
use crate::format::wal_stream::{SegmentCursor, history_file_name, segment_start, timeline_of};
use crate::pg::replication::{
    PhysicalReplication, StandbyStatus, Started, StreamEvent, SystemIdentity, TimelineEnd,
    WalMessage,
};
use crate::pg::{ConnParams, PgError};
use crate::pipeline::arena::{Arena, Lease};
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A standby status update at least this often (WAL-G's `StandbyStatusTimeout`, PostgreSQL's
/// `wal_receiver_status_interval`), and at once whenever the stored stream grows.
pub(super) const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Silence from the server after which the session counts as lost (PostgreSQL's
/// `wal_receiver_timeout`); at half of it the server is asked for a keepalive.
pub(super) const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest any wait lasts before the stop flag, the uploads and the timers are looked at.
pub(super) const POLL: Duration = Duration::from_secs(1);

/// How a session ended without an error.
enum Flow {
    /// SIGTERM or SIGINT.
    Stopped,
    /// The server ended the stream: with the next timeline, or (shutting down) without.
    Ended(Option<TimelineEnd>),
}

/// The receiver's state across sessions.
pub(super) struct Stream<'a> {
    pub settings: &'a Settings,
    pub params: ConnParams,
    /// Segment buffers.
    pub segments: &'a Arena,
    pub jobs: Option<Sender<Job>>,
    pub done: Receiver<Done>,
    pub stop: &'a AtomicBool,
    pub flight: InFlight,
    /// The session, while there is one.
    pub conn: Option<PhysicalReplication>,
    /// The segment being filled: where streaming resumes.
    pub cursor: Option<SegmentCursor>,
    /// Its buffer, once data for it came.
    pub buffer: Option<Lease>,
    /// How far WAL was received (the status update's write position).
    pub received: Lsn,
    /// The cluster's identifier, from the first session: every later one must match.
    pub system_id: Option<String>,
    pub last_status: Instant,
    pub last_heard: Instant,
    pub pinged: bool,
}

fn pg(context: &str) -> impl FnOnce(PgError) -> Error + '_ {
    move |e| Error::pg(context, e)
}

impl Stream<'_> {
    fn size(&self) -> u64 {
        self.settings.wal_segment_size
    }

    fn slot(&self) -> &str {
        &self.settings.slot_name
    }

    fn conn(&mut self) -> &mut PhysicalReplication {
        self.conn.as_mut().expect("a session is open")
    }

    /// One session: connect, check the server, find where to stream from, and stream until
    /// stopped (`Ok`) or until something fails.
    pub fn session(&mut self) -> Result<(), Error> {
        self.conn = None;
        let mut conn = PhysicalReplication::connect(&self.params)
            .map_err(pg("connecting to PostgreSQL for replication"))?;
        let ident = conn.identify_system().map_err(pg("IDENTIFY_SYSTEM"))?;
        let size = conn
            .wal_segment_size()
            .map_err(pg("reading wal_segment_size"))?;
        self.conn = Some(conn);
        self.check_server(&ident, size)?;
        let restart_lsn = super::slot::ensure(self)?;
        let cursor = match self.cursor {
            // A segment half-received by a lost session is received again from its start.
            Some(c) => SegmentCursor::at(c.timeline(), c.start(), self.size()),
            None => self.first_cursor(&ident, restart_lsn)?,
        };
        self.cursor = Some(cursor);
        loop {
            match self.stream_timeline()? {
                Flow::Stopped => return Ok(()),
                Flow::Ended(Some(end)) => self.switch_timeline(end)?,
                Flow::Ended(None) => {
                    return Err(Error::pg(
                        "streaming WAL",
                        PgError::Io {
                            context: "the server ended the stream (shutting down?)".into(),
                            source: std::io::ErrorKind::ConnectionAborted.into(),
                        },
                    ));
                }
            }
        }
    }

    /// The same cluster as before, with the segment size the settings name.
    fn check_server(&mut self, ident: &SystemIdentity, size: u64) -> Result<(), Error> {
        if size != self.size() {
            return Err(Error::Precondition(format!(
                "the server's wal_segment_size is {size} bytes, WALG_PG_WAL_SIZE says {}: set \
                 WALG_PG_WAL_SIZE to {} (MiB)",
                self.size(),
                size >> 20
            )));
        }
        match &self.system_id {
            Some(id) if *id != ident.system_id => Err(Error::Precondition(format!(
                "the server is another cluster now (system identifier {}, was {id})",
                ident.system_id
            ))),
            Some(_) => Ok(()),
            None => {
                crate::info!(
                    "cluster {} on timeline {} at {}",
                    ident.system_id,
                    ident.timeline,
                    ident.xlogpos
                );
                self.system_id = Some(ident.system_id.clone());
                Ok(())
            }
        }
    }

    /// Where the first session starts: the slot's restart LSN (the server's position for a
    /// slot that never reserved WAL), from the start of its segment, on the timeline that
    /// segment start belongs to. The current timeline's history file is stored first.
    fn first_cursor(
        &mut self,
        ident: &SystemIdentity,
        restart_lsn: Option<Lsn>,
    ) -> Result<SegmentCursor, Error> {
        let lsn = restart_lsn.unwrap_or_else(|| {
            crate::warn!(
                "slot {} has reserved no WAL yet: starting at the server's position {}",
                self.slot(),
                ident.xlogpos
            );
            ident.xlogpos
        });
        let start = segment_start(lsn, self.size());
        let tli = if ident.timeline < 2 {
            1
        } else {
            match self.conn().timeline_history(ident.timeline) {
                Ok((_, content)) => {
                    let records = timeline_history::parse(&content).map_err(|e| {
                        Error::Precondition(format!("the server's history file: {e}"))
                    })?;
                    self.hand_over(
                        history_file_name(ident.timeline),
                        Payload::Small(content),
                        None,
                    )?;
                    timeline_of(start, &records, ident.timeline)
                }
                Err(e) if e.sqlstate() == Some("58P01") => {
                    crate::warn!("timeline {} has no history file: {e}", ident.timeline);
                    ident.timeline
                }
                Err(e) => return Err(Error::pg("TIMELINE_HISTORY", e)),
            }
        };
        Ok(SegmentCursor::at(tli, start, self.size()))
    }

    /// Starts streaming at the cursor and receives until the timeline ends or a stop.
    fn stream_timeline(&mut self) -> Result<Flow, Error> {
        let cursor = self.cursor.expect("set by the session");
        let slot = self.settings.slot_name.clone();
        crate::info!(
            "streaming WAL from {} on timeline {} through slot {slot}",
            cursor.start(),
            cursor.timeline()
        );
        let started = self
            .conn()
            .start(&slot, cursor.start(), cursor.timeline())
            .map_err(pg("START_REPLICATION"))?;
        if let Started::TimelineEnded(end) = started {
            return Ok(Flow::Ended(Some(end)));
        }
        self.last_heard = Instant::now();
        self.pinged = false;
        self.send_status(false)?;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Flow::Stopped);
            }
            self.service()?;
            match self.conn().next(POLL).map_err(pg("streaming WAL"))? {
                StreamEvent::Idle => self.check_alive()?,
                StreamEvent::Wal(WalMessage::Keepalive { reply, .. }) => {
                    self.heard();
                    if reply {
                        self.send_status(false)?;
                    }
                }
                StreamEvent::Wal(WalMessage::Data { start, data }) => {
                    self.heard();
                    if !self.take(start, &data)? {
                        return Ok(Flow::Stopped);
                    }
                }
                StreamEvent::Ended(end) => return Ok(Flow::Ended(end)),
            }
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = false;
    }

    /// After a silent wait: a keepalive asked for at half the timeout, the session given up
    /// at the whole of it.
    fn check_alive(&mut self) -> Result<(), Error> {
        let silent = self.last_heard.elapsed();
        if silent >= RECEIVE_TIMEOUT {
            return Err(Error::pg(
                "streaming WAL",
                PgError::Io {
                    context: format!("no message from the server for {} s", silent.as_secs()),
                    source: std::io::ErrorKind::TimedOut.into(),
                },
            ));
        }
        if silent >= RECEIVE_TIMEOUT / 2 && !self.pinged {
            self.pinged = true;
            self.send_status(true)?;
        }
        Ok(())
    }

    /// Copies one XLogData message into the segment buffers, handing each segment it
    /// completes to the upload threads. False when stopped while waiting for a buffer.
    fn take(&mut self, start: Lsn, data: &[u8]) -> Result<bool, Error> {
        let (mut from, mut rest) = (start, data);
        while !rest.is_empty() {
            if self.buffer.is_none() {
                match self.lease_segment()? {
                    Some(b) => self.buffer = Some(b),
                    None => return Ok(false),
                }
            }
            let cursor = self.cursor.as_mut().expect("set by the session");
            let p = cursor
                .place(from, rest.len())
                .map_err(|gap| Error::pg("streaming WAL", PgError::Protocol(gap.to_string())))?;
            let buf = self.buffer.as_mut().expect("leased above");
            buf[p.offset..p.offset + p.len].copy_from_slice(&rest[p.skip..p.skip + p.len]);
            from = Lsn(from.0 + (p.skip + p.len) as u64);
            rest = &rest[p.skip + p.len..];
            self.received = self.received.max(cursor.position());
            if cursor.is_complete() {
                let (name, end, next) = (cursor.name(), cursor.end(), cursor.next());
                let buf = self.buffer.take().expect("leased above");
                self.hand_over(name, Payload::Segment(buf), Some(end))?;
                self.cursor = Some(next);
            }
        }
        Ok(true)
    }

    /// A free segment buffer; while every one is being uploaded, keeps the session alive
    /// and the account of uploads current. `None` when stopped meanwhile.
    fn lease_segment(&mut self) -> Result<Option<Lease>, Error> {
        loop {
            match self.segments.lease() {
                Ok(b) => {
                    // The socket was not read meanwhile: the server's silence is ours.
                    self.last_heard = Instant::now();
                    return Ok(Some(b));
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    self.service()?;
                }
                Err(e) => return Err(Error::io("waiting for a segment buffer", e)),
            }
        }
    }

    /// Hands a file to the upload threads; `end` is where the stream is complete once it
    /// is stored.
    pub(super) fn hand_over(
        &mut self,
        name: String,
        payload: Payload,
        end: Option<Lsn>,
    ) -> Result<(), Error> {
        let seq = self.flight.add(end);
        let jobs = self.jobs.as_ref().expect("open until the end");
        jobs.send(Job { seq, name, payload })
            .map_err(|_| Error::io("wal-receive", std::io::Error::other("upload threads gone")))
    }

    /// The end of a timeline: the segment it ends in is stored as `<segment>.partial`, the
    /// next timeline's history file is fetched and stored, and streaming goes on on the
    /// next timeline from the start of that segment (as PostgreSQL's own WAL receiver does).
    fn switch_timeline(&mut self, end: TimelineEnd) -> Result<(), Error> {
        let cursor = self.cursor.expect("set by the session");
        crate::info!(
            "timeline {} ended at {}; timeline {} follows",
            cursor.timeline(),
            end.start,
            end.next_tli
        );
        if end.start < cursor.start() || end.next_tli <= cursor.timeline() {
            return Err(Error::pg(
                "streaming WAL",
                PgError::Protocol(format!(
                    "timeline {} cannot follow timeline {} at {} (received up to {})",
                    end.next_tli,
                    cursor.timeline(),
                    end.start,
                    cursor.position()
                )),
            ));
        }
        if cursor.filled() > 0
            && let Some(mut buf) = self.buffer.take()
        {
            buf[cursor.filled()..].fill(0);
            self.hand_over(
                format!("{}.partial", cursor.name()),
                Payload::Segment(buf),
                None,
            )?;
        }
        let (name, content) = self
            .conn()
            .timeline_history(end.next_tli)
            .map_err(pg("TIMELINE_HISTORY"))?;
        if name != history_file_name(end.next_tli) {
            return Err(Error::pg(
                "TIMELINE_HISTORY",
                PgError::Protocol(format!("unexpected history file name {name:?}")),
            ));
        }
        self.hand_over(name, Payload::Small(content), None)?;
        self.cursor = Some(SegmentCursor::at(end.next_tli, end.start, self.size()));
        Ok(())
    }

    /// Takes the upload threads' answers: a failure ends wal-receive; a stored stretch is
    /// reported at once. Sends the periodic status update when due.
    pub(super) fn service(&mut self) -> Result<(), Error> {
        let mut advanced = false;
        while let Ok(done) = self.done.try_recv() {
            advanced |= self.account(done)?;
        }
        if advanced || self.last_status.elapsed() >= STATUS_INTERVAL {
            self.send_status(false)?;
        }
        Ok(())
    }

    /// One answer of the upload threads; true when the stored stream grew.
    pub(super) fn account(&mut self, done: Done) -> Result<bool, Error> {
        match done.result {
            Ok(()) => Ok(self.flight.finish(done.seq)),
            Err(e) => {
                crate::error!("storing {} failed; wal-receive stops", done.name);
                self.flight.fail(done.seq);
                Err(e)
            }
        }
    }

    /// A standby status update: received up to `received`; flushed up to what the uploads
    /// stored without a hole, or, once every complete segment is stored, up to `received`
    /// inside the segment being filled. The slot keeps the whole segment its position is
    /// in, and a restart receives that segment again from its start, so nothing unstored is
    /// given up; and a server shutting down waits for its WAL sender until the flush
    /// position reaches the end it sent, which would otherwise never come.
    pub(super) fn send_status(&mut self, reply: bool) -> Result<(), Error> {
        let flush = if self.flight.all_stored() {
            self.received
        } else {
            self.flight.stored().unwrap_or_default()
        };
        let status = StandbyStatus {
            write: self.received,
            flush,
            apply: Lsn(0),
            reply,
        };
        self.last_status = Instant::now();
        match self.conn.as_mut() {
            Some(conn) => conn
                .send_status(&status)
                .map_err(pg("sending a status update")),
            None => Ok(()),
        }
    }
}

//! Streamed answers: result rows, COPY OUT and COPY BOTH, read one event at a time.
//!
//! A remote base backup (`BASE_BACKUP`) answers with result sets and then a COPY stream of
//! the cluster's archives, and WAL streaming (`START_REPLICATION`) is a COPY BOTH exchange
//! that lasts as long as the session. Neither fits [`Connection::query`], which gathers a
//! whole answer in memory, so here the caller pulls [`Event`]s and copies each CopyData
//! payload where it belongs; the connection holds at most one message at a time.

use super::server_message::ServerMessage;
use super::{Connection, Frame};
use crate::pg::error::PgError;
use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::time::Duration;

/// The kind of replication session asked for at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `replication=true`: physical replication commands only.
    Physical,
    /// `replication=database`: replication commands and SQL.
    Database,
}

impl Replication {
    pub(super) fn startup_value(self) -> &'static str {
        match self {
            Replication::Physical => "true",
            Replication::Database => "database",
        }
    }
}

/// One step of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A result set begins, with these column names.
    Columns(Vec<String>),
    /// A row of the current result set, as text (`None` is SQL NULL).
    Row(Vec<Option<String>>),
    /// A COPY OUT stream begins.
    CopyOut,
    /// A COPY BOTH stream begins (the client may now send CopyData too).
    CopyBoth,
    /// One CopyData payload.
    CopyData(Bytes),
    /// The server ended its COPY stream.
    CopyDone,
    /// A command finished, with its tag.
    Complete(String),
    /// The whole answer is over; the session takes the next command.
    Ready,
}

impl Connection {
    /// Sends `sql` (or a replication command) with the simple-query protocol; read its
    /// answer with [`Connection::next_event`].
    pub fn start_query(&mut self, sql: &str) -> Result<(), PgError> {
        if let Some(reason) = &self.broken {
            return Err(PgError::Broken {
                reason: reason.clone(),
            });
        }
        self.out.clear();
        if frontend::query(sql, &mut self.out).is_err() {
            self.out.clear();
            return Err(PgError::Protocol("query text contains a NUL byte".into()));
        }
        self.send()
    }

    /// The next event of the answer, waiting as long as the read timeout allows.
    ///
    /// A server error is returned after the rest of its answer is read, so a session that
    /// survives the error takes the next command.
    pub fn next_event(&mut self) -> Result<Event, PgError> {
        loop {
            if let Some(event) = self.poll_event(None)? {
                return Ok(event);
            }
        }
    }

    /// As [`Connection::next_event`], but gives up after `idle` without a message and
    /// returns `None` (the session stays usable): a streaming client that must send status
    /// reports on time waits with this.
    pub fn next_event_within(&mut self, idle: Duration) -> Result<Option<Event>, PgError> {
        self.poll_event(Some(idle))
    }

    fn poll_event(&mut self, idle: Option<Duration>) -> Result<Option<Event>, PgError> {
        loop {
            let message = match self.recv_frame(idle)? {
                None => return Ok(None),
                Some(Frame::CopyBoth) => return Ok(Some(Event::CopyBoth)),
                Some(Frame::Message(m)) => m,
            };
            let event = match message {
                Message::RowDescription(body) => Event::Columns(self.column_names(&body)?),
                Message::DataRow(body) => {
                    let mut error = None;
                    let row = self.data_row(&body, &Default::default(), &mut error)?;
                    if let Some(e) = error {
                        return Err(self.fail_answer(e));
                    }
                    Event::Row(row)
                }
                Message::CopyOutResponse(_) => Event::CopyOut,
                Message::CopyData(body) => Event::CopyData(body.into_bytes()),
                Message::CopyDone => Event::CopyDone,
                Message::CommandComplete(body) => Event::Complete(
                    body.tag()
                        .map_err(|e| self.protocol(format!("bad CommandComplete: {e}")))?
                        .to_string(),
                ),
                Message::ReadyForQuery(body) => {
                    self.transaction_status = body.status();
                    Event::Ready
                }
                Message::ErrorResponse(body) => {
                    let e = ServerMessage::parse(body.fields())
                        .map_err(|e| self.mark(e))?
                        .into_error();
                    return Err(self.fail_answer(e));
                }
                Message::NoticeResponse(body) => {
                    if let Ok(n) = ServerMessage::parse(body.fields()) {
                        crate::devel!("server notice: {} {}: {}", n.severity, n.code, n.message);
                    }
                    continue;
                }
                Message::ParameterStatus(body) => {
                    self.store_parameter(&body)?;
                    continue;
                }
                Message::EmptyQueryResponse | Message::NotificationResponse(_) => continue,
                _ => return Err(self.protocol("unexpected message in a streamed answer".into())),
            };
            return Ok(Some(event));
        }
    }

    /// After an error in a streamed answer: reads on to ReadyForQuery so the session stays
    /// usable, and returns `e`. A server that hangs up instead (a FATAL error) leaves the
    /// connection broken, which later calls report.
    fn fail_answer(&mut self, e: PgError) -> PgError {
        loop {
            match self.recv_frame(None) {
                Ok(Some(Frame::Message(Message::ReadyForQuery(body)))) => {
                    self.transaction_status = body.status();
                    return e;
                }
                Ok(_) => {}
                Err(broken) => {
                    self.mark(broken);
                    return e;
                }
            }
        }
    }

    /// Sends one CopyData message (in a COPY BOTH stream: a status report or feedback).
    pub fn send_copy_data(&mut self, data: &[u8]) -> Result<(), PgError> {
        self.out.clear();
        frontend::CopyData::new(data)
            .map_err(|e| self.protocol(format!("encoding CopyData: {e}")))?
            .write(&mut self.out);
        self.send()
    }

    /// Ends the client's side of a COPY BOTH stream.
    pub fn send_copy_done(&mut self) -> Result<(), PgError> {
        self.out.clear();
        frontend::copy_done(&mut self.out);
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_values_are_the_protocol_words() {
        assert_eq!(Replication::Physical.startup_value(), "true");
        assert_eq!(Replication::Database.startup_value(), "database");
    }
}

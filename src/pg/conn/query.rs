//! Simple queries with text results, gathered whole: what the backup commands' SQL needs.
//!
//! COPY is refused here (the server is told so and the session stays usable); streamed
//! answers (`BASE_BACKUP`, `START_REPLICATION`) are read event by event through `copy`.

use super::Connection;
use super::server_message::ServerMessage;
use crate::pg::error::PgError;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, Message, RowDescriptionBody};
use postgres_protocol::message::frontend;

/// The rows a simple query returned, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names of the last result set that had columns.
    pub columns: Vec<String>,
    /// Every row of every result set, in order; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Connection {
    /// Runs `sql` with the simple-query protocol (it may hold several statements) and
    /// returns every row of every result as text.
    ///
    /// On an SQL error the rest of the server's answer is still read, so the connection
    /// stays usable for the next query; the first error is returned.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, PgError> {
        self.start_query(sql)?;

        let mut result = QueryResult::default();
        let mut error: Option<PgError> = None;
        loop {
            let message = match self.recv() {
                Ok(m) => m,
                // A FATAL error is followed by the server hanging up; report the error, not the hang-up.
                Err(e) => return Err(error.unwrap_or(e)),
            };
            match message {
                Message::RowDescription(body) => result.columns = self.column_names(&body)?,
                Message::DataRow(body) => {
                    let row = self.data_row(&body, &result, &mut error)?;
                    result.rows.push(row);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::ErrorResponse(body) => {
                    let e = ServerMessage::parse(body.fields())
                        .map_err(|e| self.mark(e))?
                        .into_error();
                    error.get_or_insert(e);
                }
                Message::NoticeResponse(body) => {
                    if let Ok(n) = ServerMessage::parse(body.fields()) {
                        crate::devel!("server notice: {} {}: {}", n.severity, n.code, n.message);
                    }
                }
                Message::ParameterStatus(body) => self.store_parameter(&body)?,
                Message::NotificationResponse(_) => {}
                Message::CopyInResponse(_) => {
                    // The server waits for data; refusing ends the COPY with an error and keeps the session.
                    frontend::copy_fail(
                        "COPY FROM STDIN is not supported by wal-rus",
                        &mut self.out,
                    )
                    .map_err(|e| self.protocol(format!("encoding CopyFail: {e}")))?;
                    self.send()?;
                    error.get_or_insert(PgError::Protocol(
                        "COPY FROM STDIN is not supported".into(),
                    ));
                }
                Message::CopyOutResponse(_) => {
                    error
                        .get_or_insert(PgError::Protocol("COPY TO STDOUT is not supported".into()));
                }
                Message::CopyData(_) | Message::CopyDone => {}
                Message::ReadyForQuery(body) => {
                    self.transaction_status = body.status();
                    break;
                }
                _ => return Err(self.protocol("unexpected message in reply to a query".into())),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    pub(super) fn column_names(
        &mut self,
        body: &RowDescriptionBody,
    ) -> Result<Vec<String>, PgError> {
        let mut columns = Vec::new();
        let mut fields = body.fields();
        while let Some(f) = fields
            .next()
            .map_err(|e| self.protocol(format!("bad RowDescription: {e}")))?
        {
            columns.push(f.name().to_string());
        }
        Ok(columns)
    }

    /// One row as text. A value that is not UTF-8 becomes NULL and the query's error, while
    /// the rest of the answer is still read.
    pub(super) fn data_row(
        &mut self,
        body: &DataRowBody,
        result: &QueryResult,
        error: &mut Option<PgError>,
    ) -> Result<Vec<Option<String>>, PgError> {
        let mut row = Vec::with_capacity(result.columns.len());
        let mut ranges = body.ranges();
        while let Some(range) = ranges
            .next()
            .map_err(|e| self.protocol(format!("bad DataRow: {e}")))?
        {
            row.push(match range {
                None => None,
                Some(r) => match std::str::from_utf8(&body.buffer()[r]) {
                    Ok(s) => Some(s.to_string()),
                    Err(_) => {
                        let column = result.columns.get(row.len()).cloned().unwrap_or_default();
                        error.get_or_insert(PgError::Protocol(format!(
                            "column {column:?} of row {} is not valid UTF-8",
                            result.rows.len() + 1
                        )));
                        None
                    }
                },
            });
        }
        Ok(row)
    }

    /// Runs `sql`, which must return exactly one row, and returns that row.
    pub fn query_one(&mut self, sql: &str) -> Result<Vec<Option<String>>, PgError> {
        let mut result = self.query(sql)?;
        if result.rows.len() != 1 {
            return Err(PgError::Protocol(format!(
                "expected exactly one row, got {}",
                result.rows.len()
            )));
        }
        Ok(result.rows.pop().unwrap_or_default())
    }

    /// Runs `sql` and discards any rows.
    pub fn execute(&mut self, sql: &str) -> Result<(), PgError> {
        self.query(sql).map(|_| ())
    }
}

//! A non-exclusive base backup on one session: start, stop, or abort.
//!
//! PostgreSQL 15 renamed the functions (`pg_start_backup`/`pg_stop_backup` became
//! `pg_backup_start`/`pg_backup_stop`) and dropped the `exclusive` argument; this module is
//! the one place that knows, so `backup-push` deals only in LSNs, the timeline and the label
//! and tablespace-map texts. A non-exclusive backup lives as long as its session, so the
//! session borrows the connection until the backup is stopped or aborted.

use super::conn::Connection;
use super::error::PgError;
use crate::format::lsn::Lsn;
use std::fmt;
use std::time::Duration;

/// How long past `WALG_STOP_BACKUP_TIMEOUT` the client waits for the server's own
/// cancellation before it gives up on the session itself (a server that no longer answers).
pub const STOP_TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// The first version with `pg_backup_start`/`pg_backup_stop`.
const RENAMED_IN: u32 = 150000;

/// Which set of backup functions the server has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackupApi {
    /// `pg_backup_start(label, fast)` / `pg_backup_stop(wait_for_archive)` (15 and later).
    Current,
    /// `pg_start_backup(label, fast, exclusive)` / `pg_stop_backup(exclusive, wait_for_archive)`.
    Legacy,
}

impl BackupApi {
    fn for_version(server_version_num: u32) -> BackupApi {
        if server_version_num >= RENAMED_IN {
            BackupApi::Current
        } else {
            BackupApi::Legacy
        }
    }

    /// Starts at once (`fast`: an immediate checkpoint), non-exclusive.
    fn start_sql(self, label: &str) -> String {
        let label = sql_literal(label);
        match self {
            BackupApi::Current => {
                format!("select lsn::text from pg_backup_start({label}, true) as lsn")
            }
            BackupApi::Legacy => {
                format!("select lsn::text from pg_start_backup({label}, true, false) as lsn")
            }
        }
    }

    /// As WAL-G: from PostgreSQL 15 the stop does not wait for the last segment to be
    /// archived (waiting costs a whole second of PostgreSQL's polling sleep on every
    /// backup); before 15 it waits, as WAL-G's `pg_stop_backup(false)` does by default.
    /// Recovery fetches that segment through restore_command once the archiver has stored it.
    fn stop_sql(self) -> &'static str {
        match self {
            BackupApi::Current => {
                "select labelfile, spcmapfile, lsn::text from pg_backup_stop(false)"
            }
            BackupApi::Legacy => {
                "select labelfile, spcmapfile, lsn::text from pg_stop_backup(false, true)"
            }
        }
    }

    /// Ends a failed backup without waiting for anything.
    fn abort_sql(self) -> &'static str {
        match self {
            BackupApi::Current => "select pg_backup_stop(false)",
            BackupApi::Legacy => "select pg_stop_backup(false, false)",
        }
    }
}

/// Quotes a string as an SQL literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the server said when the backup started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupStart {
    /// Where recovery from this backup must begin.
    pub lsn: Lsn,
    /// The timeline of the checkpoint the start made.
    pub timeline: u32,
}

/// What the server returned when the backup stopped: the files a restore must write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupStop {
    /// The `backup_label` file's text.
    pub label_file: String,
    /// The `tablespace_map` file's text (empty without tablespaces).
    pub tablespace_map: String,
    /// Where recovery from this backup may end at the earliest.
    pub lsn: Lsn,
}

/// A failed step of a backup session.
#[derive(Debug)]
pub enum BackupError {
    /// A statement failed.
    Query {
        /// What was being done, e.g. `starting the backup`.
        step: &'static str,
        /// Cause (boxed to keep results small).
        source: Box<PgError>,
    },
    /// The server answered, but not with a value the backup can use.
    Answer {
        /// Which value, e.g. `backup start LSN`.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Query { step, source } => write!(f, "{step}: {source}"),
            BackupError::Answer { what, problem } => write!(f, "{what}: {problem}"),
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Query { source, .. } => Some(&**source),
            BackupError::Answer { .. } => None,
        }
    }
}

fn failed(step: &'static str) -> impl Fn(PgError) -> BackupError {
    move |source| BackupError::Query {
        step,
        source: Box::new(source),
    }
}

fn text(row: &[Option<String>], i: usize, what: &'static str) -> Result<String, BackupError> {
    row.get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| BackupError::Answer {
            what,
            problem: "the server returned NULL".into(),
        })
}

fn parse_lsn(text: &str) -> Result<Lsn, BackupError> {
    Lsn::parse(text).ok_or_else(|| BackupError::Answer {
        what: "reading an LSN",
        problem: format!("'{text}' is not an LSN"),
    })
}

/// A running base backup. Dropping it before [`BackupSession::stop`] aborts the backup on
/// the server, so a failure anywhere in between leaves no backup running.
pub struct BackupSession<'c> {
    conn: &'c mut Connection,
    api: BackupApi,
    /// Until the stop statement has succeeded.
    running: bool,
}

impl<'c> BackupSession<'c> {
    /// Starts a non-exclusive backup named `label`, with an immediate checkpoint.
    pub fn start(
        conn: &'c mut Connection,
        label: &str,
    ) -> Result<(BackupSession<'c>, BackupStart), BackupError> {
        let api = BackupApi::for_version(conn.server_version_num());
        let row = conn
            .query_one(&api.start_sql(label))
            .map_err(failed("starting the backup"))?;
        let mut session = BackupSession {
            conn,
            api,
            running: true,
        };
        let lsn = parse_lsn(&text(&row, 0, "backup start LSN")?)?;
        let timeline = session.timeline()?;
        Ok((session, BackupStart { lsn, timeline }))
    }

    fn timeline(&mut self) -> Result<u32, BackupError> {
        let row = self
            .conn
            .query_one("select timeline_id::text from pg_control_checkpoint()")
            .map_err(failed("reading the timeline"))?;
        text(&row, 0, "timeline")?
            .parse()
            .map_err(|_| BackupError::Answer {
                what: "timeline",
                problem: "not a number".into(),
            })
    }

    /// Stops the backup and returns the label and tablespace map to store with it.
    ///
    /// If the stop statement fails the backup counts as still running and is aborted.
    pub fn stop(self) -> Result<BackupStop, BackupError> {
        self.stop_within(None)
    }

    /// As [`BackupSession::stop`], bounded by `timeout` (`WALG_STOP_BACKUP_TIMEOUT`) as
    /// WAL-G bounds it, by the session's `statement_timeout`, and also on this side: a
    /// server that does not answer within the timeout and [`STOP_TIMEOUT_GRACE`] loses the
    /// session (and with it the backup).
    pub fn stop_within(mut self, timeout: Option<Duration>) -> Result<BackupStop, BackupError> {
        if let Some(t) = timeout {
            // The client's bound first: a server that no longer answers must not hold even
            // the `SET`.
            self.conn
                .set_read_timeout(Some(t + STOP_TIMEOUT_GRACE))
                .map_err(failed("stopping the backup"))?;
            self.conn
                .query(&format!(
                    "set statement_timeout = {}",
                    t.as_millis().clamp(1, i32::MAX as u128)
                ))
                .map_err(failed("setting statement_timeout for the stop"))?;
        }
        let row = self
            .conn
            .query_one(self.api.stop_sql())
            .map_err(failed("stopping the backup"))?;
        if timeout.is_some() {
            let _ = self.conn.set_read_timeout(None);
        }
        self.running = false;
        Ok(BackupStop {
            label_file: text(&row, 0, "backup label")?,
            tablespace_map: row.get(1).cloned().flatten().unwrap_or_default(),
            lsn: parse_lsn(&text(&row, 2, "backup stop LSN")?)?,
        })
    }

    /// Ends the backup on the server without a result, as dropping the session does.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for BackupSession<'_> {
    fn drop(&mut self) {
        if self.running {
            // A failed abort changes nothing for storage, and the server ends the backup
            // itself when the session closes.
            let _ = self.conn.query(self.api.abort_sql());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_picks_the_functions() {
        assert_eq!(BackupApi::for_version(150000), BackupApi::Current);
        assert_eq!(BackupApi::for_version(170002), BackupApi::Current);
        assert_eq!(BackupApi::for_version(140011), BackupApi::Legacy);
        assert_eq!(BackupApi::for_version(100000), BackupApi::Legacy);
    }

    #[test]
    fn statements_per_version() {
        let current = BackupApi::for_version(150004);
        assert_eq!(
            current.start_sql("2024-01-02T03:04:05Z"),
            "select lsn::text from pg_backup_start('2024-01-02T03:04:05Z', true) as lsn"
        );
        assert_eq!(
            current.stop_sql(),
            "select labelfile, spcmapfile, lsn::text from pg_backup_stop(false)"
        );
        assert_eq!(current.abort_sql(), "select pg_backup_stop(false)");
        let legacy = BackupApi::for_version(140000);
        assert_eq!(
            legacy.start_sql("x"),
            "select lsn::text from pg_start_backup('x', true, false) as lsn"
        );
        assert_eq!(
            legacy.stop_sql(),
            "select labelfile, spcmapfile, lsn::text from pg_stop_backup(false, true)"
        );
        assert_eq!(legacy.abort_sql(), "select pg_stop_backup(false, false)");
    }

    #[test]
    fn labels_are_quoted() {
        assert_eq!(
            BackupApi::Current.start_sql("it's"),
            "select lsn::text from pg_backup_start('it''s', true) as lsn"
        );
    }

    #[test]
    fn unusable_answers_say_what_and_why() {
        let e = text(&[None], 0, "backup start LSN").unwrap_err();
        assert_eq!(e.to_string(), "backup start LSN: the server returned NULL");
        let e = text(&[], 2, "backup stop LSN").unwrap_err();
        assert_eq!(e.to_string(), "backup stop LSN: the server returned NULL");
        assert_eq!(parse_lsn("0/3000028").unwrap(), Lsn(0x3000028));
        let e = parse_lsn("nope").unwrap_err();
        assert_eq!(e.to_string(), "reading an LSN: 'nope' is not an LSN");
    }
}

//! The command-level error: what failed, with context, and which exit code it means.

use crate::config::ConfigError;
use crate::pg::{BackupError, PgError};
use crate::storage::StorageError;
use std::fmt;
use std::io;

/// A failed command.
#[derive(Debug)]
pub enum Error {
    /// A setting is missing or malformed.
    Config(ConfigError),
    /// Storage failed.
    Storage(StorageError),
    /// Local I/O failed; `context` says on what.
    Io {
        /// What was being done, naming the file.
        context: String,
        /// Cause.
        source: io::Error,
    },
    /// PostgreSQL failed: connecting, or a statement of the backup.
    Pg {
        /// What was being done, e.g. `starting the backup`.
        context: String,
        /// Cause (boxed: it is large, and every result of a command carries this type).
        source: Box<PgError>,
    },
    /// What the command names is not in the archive.
    NotFound {
        /// What kind of thing is missing; it decides the exit status.
        missing: Missing,
        /// WAL-G's message, e.g. `Backup 'x' does not exist.`.
        message: String,
    },
    /// The archive holds a different file under the same name.
    Conflict(String),
    /// The archive, the server or the destination is not in a state the command may work
    /// from (a destination that is not empty, a permanent backup in the way, a data
    /// directory that is not the server's). Retrying does not help; someone must act.
    Precondition(String),
    /// Asked for something WAL-G does and wal-rus does not (yet), e.g. restoring a delta
    /// backup; refused rather than half done.
    Unsupported(String),
    /// The command line or its arguments make no sense.
    Usage(String),
}

/// What kind of thing a [`Error::NotFound`] is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// A WAL segment or history file: wal-fetch exits 74 so PostgreSQL ends recovery there.
    Wal,
    /// A backup, or one of its documents: exit 1, as WAL-G's.
    Backup,
}

/// WAL-G's exit status for "not found" in wal-fetch (`EX_IOERR`).
pub const EXIT_NOT_FOUND: i32 = 74;

impl Error {
    /// WAL-G's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound {
                missing: Missing::Wal,
                ..
            } => EXIT_NOT_FOUND,
            _ => 1,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A WAL file that is not in the archive.
    pub fn wal_missing(message: impl Into<String>) -> Error {
        Error::NotFound {
            missing: Missing::Wal,
            message: message.into(),
        }
    }

    /// A backup (or its sentinel or metadata) that is not in the archive.
    pub fn backup_missing(message: impl Into<String>) -> Error {
        Error::NotFound {
            missing: Missing::Backup,
            message: message.into(),
        }
    }

    /// Wraps a PostgreSQL error with what was being done.
    pub fn pg(context: impl Into<String>, source: PgError) -> Error {
        Error::Pg {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Storage(e) => write!(f, "storage: {e}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Pg { context, source } => write!(f, "{context}: {source}"),
            Error::NotFound { message, .. } => write!(f, "{message}"),
            Error::Conflict(what)
            | Error::Precondition(what)
            | Error::Unsupported(what)
            | Error::Usage(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Storage(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::Pg { source, .. } => Some(&**source),
            Error::NotFound { .. }
            | Error::Conflict(_)
            | Error::Precondition(_)
            | Error::Unsupported(_)
            | Error::Usage(_) => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        Error::Storage(e)
    }
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Error {
        match e {
            BackupError::Query { step, source } => Error::Pg {
                context: step.to_string(),
                source,
            },
            // Reported as before the session had its own error type.
            BackupError::Answer { what, problem } => Error::io(what, io::Error::other(problem)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn refused() -> PgError {
        PgError::Connect {
            host: "127.0.0.1".into(),
            port: 5999,
            source: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        }
    }

    #[test]
    fn pg_errors_keep_their_type_and_read_as_before() {
        let e = Error::pg("connecting to PostgreSQL", refused());
        // As when the error was flattened into an io::Error's text.
        let flat = Error::io(
            "connecting to PostgreSQL",
            io::Error::other(refused().to_string()),
        );
        assert_eq!(e.to_string(), flat.to_string());
        assert_eq!(e.exit_code(), flat.exit_code());
        let inner = e.source().and_then(|s| s.downcast_ref::<PgError>());
        assert!(matches!(inner, Some(PgError::Connect { port: 5999, .. })));
        // The chain goes on to the socket error.
        let os = inner
            .and_then(|p| p.source())
            .and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            os.and_then(io::Error::raw_os_error),
            Some(libc::ECONNREFUSED)
        );
    }

    #[test]
    fn backup_session_errors_read_as_before() {
        let e: Error = BackupError::Query {
            step: "stopping the backup",
            source: Box::new(PgError::Protocol("expected exactly one row, got 0".into())),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "stopping the backup: PostgreSQL protocol: expected exactly one row, got 0"
        );
        let e: Error = BackupError::Answer {
            what: "backup label",
            problem: "the server returned NULL".into(),
        }
        .into();
        assert!(matches!(e, Error::Io { .. }));
        assert_eq!(e.to_string(), "backup label: the server returned NULL");
    }

    #[test]
    fn sources_where_there_is_an_inner_error() {
        let e = Error::io("reading x", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(e.source().is_some());
        assert!(Error::Usage("no".into()).source().is_none());
        assert!(Error::wal_missing("x").source().is_none());
    }

    #[test]
    fn only_a_missing_wal_file_exits_74() {
        assert_eq!(Error::wal_missing("x").exit_code(), EXIT_NOT_FOUND);
        for e in [
            Error::backup_missing("Backup 'x' does not exist."),
            Error::Precondition("destination is not empty".into()),
            Error::Unsupported("delta".into()),
            Error::Conflict("differs".into()),
            Error::Usage("no".into()),
        ] {
            assert_eq!(e.exit_code(), 1, "{e:?}");
            assert!(e.source().is_none());
        }
        assert_eq!(
            Error::backup_missing("Backup 'x' does not exist.").to_string(),
            "Backup 'x' does not exist."
        );
    }
}

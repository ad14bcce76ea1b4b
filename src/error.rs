//! The command-level error: what failed, with context, and which exit code it means.

use crate::config::ConfigError;
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
    /// The requested WAL file is not in the archive (wal-fetch exits 74).
    NotFound(String),
    /// The archive holds a different file under the same name.
    Conflict(String),
    /// The command line or its arguments make no sense.
    Usage(String),
}

/// WAL-G's exit status for "not found" in wal-fetch (`EX_IOERR`).
pub const EXIT_NOT_FOUND: i32 = 74;

impl Error {
    /// WAL-G's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound(_) => EXIT_NOT_FOUND,
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Storage(e) => write!(f, "storage: {e}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::NotFound(what) => write!(f, "{what}"),
            Error::Conflict(what) => write!(f, "{what}"),
            Error::Usage(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for Error {}

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

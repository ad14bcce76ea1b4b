//! The one error type of the storage room, and the decision of what is worth retrying.

use std::fmt;
use std::io;

/// A failed storage operation. Messages name the operation and the key; they never contain
/// credentials.
#[derive(Debug)]
pub enum StorageError {
    /// The object does not exist.
    NotFound {
        /// Key relative to the storage root.
        key: String,
    },
    /// The server answered with an error status (S3 error code and message when it sent one).
    Remote {
        /// Operation, e.g. `PutObject`.
        op: &'static str,
        /// Key or bucket the operation addressed.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, `SignatureDoesNotMatch`, ...), or a description of a
        /// body that was not an S3 error document.
        code: String,
        /// S3 error message.
        message: String,
    },
    /// The request never got an answer: refused, reset, timed out, name not resolved, TLS.
    Transport {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// What happened.
        detail: String,
    },
    /// Local I/O failed (file storage, reading a body source).
    Io {
        /// Operation.
        op: &'static str,
        /// Key or path.
        key: String,
        /// Cause.
        source: io::Error,
    },
    /// An upload was answered "OK" without proof that the object was stored: no ETag, or an
    /// ETag that is not the MD5 of what was sent. Retried: a proxy's page or a server's bad
    /// moment, never a success.
    Unverified {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// What was missing or wrong.
        detail: String,
    },
    /// An answer that did not parse (an XML listing cut or changed on the way). Retried:
    /// S3's XML answers have no checksum, so a damaged one looks just like this.
    Garbled {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// What the parser said.
        detail: String,
    },
    /// The server's answer made no sense (missing header, an impossible value).
    Protocol {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl StorageError {
    /// Whether trying the same request again may succeed: 5xx, throttling, timeouts and
    /// resets are retried; other 4xx (wrong key, missing bucket, denied) are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::NotFound { .. } | StorageError::Protocol { .. } => false,
            StorageError::Transport { .. }
            | StorageError::Unverified { .. }
            | StorageError::Garbled { .. } => true,
            StorageError::Io { source, .. } => is_retryable_io(source),
            StorageError::Remote { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "RequestTimeTooSkewed"
                            | "InternalError"
                            | "ServiceUnavailable"
                    )
            }
        }
    }

    /// Whether the server asked us to slow down (longer back-off).
    pub fn is_throttle(&self) -> bool {
        matches!(self, StorageError::Remote { status, code, .. }
            if *status == 429 || *status == 503 || code == "SlowDown" || code.starts_with("Throttl"))
    }
}

/// I/O errors of a network stream that a new attempt may cure.
pub fn is_retryable_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Interrupted
    )
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::NotFound { key } => write!(f, "object {key} not found"),
            StorageError::Remote {
                op,
                key,
                status,
                code,
                message,
            } => {
                write!(f, "{op} {key}: HTTP {status} {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            StorageError::Transport { op, key, detail } => write!(f, "{op} {key}: {detail}"),
            StorageError::Io { op, key, source } => write!(f, "{op} {key}: {source}"),
            StorageError::Protocol { op, key, detail } => {
                write!(f, "{op} {key}: unexpected response: {detail}")
            }
            StorageError::Garbled { op, key, detail } => {
                write!(f, "{op} {key}: unreadable answer: {detail}")
            }
            StorageError::Unverified { op, key, detail } => {
                write!(f, "{op} {key}: not confirmed as stored: {detail}")
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

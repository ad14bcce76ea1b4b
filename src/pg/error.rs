//! The one error type of the PostgreSQL client.
//!
//! Backup commands report these errors straight to the operator (and into the server log
//! when run by PostgreSQL), so each variant says what failed and against which server,
//! and none of them ever carries a password.

use std::fmt;
use std::io;

/// A failed connection attempt, authentication, query or setting.
#[derive(Debug)]
pub enum PgError {
    /// Reading from or writing to an established connection failed (including time-outs
    /// and the server closing the connection).
    Io {
        /// What was being done, naming the server.
        context: String,
        /// Cause.
        source: io::Error,
    },
    /// The TCP or Unix-socket connection could not be opened.
    Connect {
        /// Host name, IP address or socket directory as configured.
        host: String,
        /// Port (also names the Unix socket file `.s.PGSQL.<port>`).
        port: u16,
        /// Cause (refused, timed out, no such socket, name lookup failure, ...).
        source: io::Error,
    },
    /// The server refused the login, or the client cannot answer its authentication request.
    Auth {
        /// The role we tried to log in as.
        user: String,
        /// The server's SQLSTATE (e.g. `28P01`) when the server refused the login;
        /// `None` when the client gave up (no password, unsupported method, bad SCRAM proof).
        code: Option<String>,
        /// Full text, e.g. `FATAL 28P01: password authentication failed for user "x"`.
        message: String,
    },
    /// The server answered with an ErrorResponse (outside authentication).
    Server {
        /// `ERROR`, `FATAL` or `PANIC` (the non-localized severity when the server sends it).
        severity: String,
        /// SQLSTATE, e.g. `42601` for a syntax error.
        code: String,
        /// Primary message.
        message: String,
        /// Optional DETAIL.
        detail: Option<String>,
        /// Optional HINT.
        hint: Option<String>,
    },
    /// The server sent something the protocol does not allow here, or the caller asked for
    /// something this client does not do (e.g. COPY).
    Protocol(String),
    /// TLS set-up or handshake failed, or TLS was required and the server does not offer it.
    Tls(String),
    /// A connection setting (environment variable or password file) is malformed.
    Config {
        /// The setting's name, e.g. `PGPORT`.
        setting: String,
        /// What is wrong with it (never the value of a password).
        message: String,
    },
    /// The connection was already unusable because of an earlier failure; `reason` repeats it.
    Broken {
        /// The earlier failure.
        reason: String,
    },
}

impl PgError {
    /// The SQLSTATE the server sent, if this error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Server { code, .. } => Some(code),
            PgError::Auth { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> PgError {
        PgError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn config(setting: &str, message: impl Into<String>) -> PgError {
        PgError::Config {
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

/// `host:port` for messages: IPv6 literals get brackets, socket directories name the socket file.
pub(crate) fn endpoint(host: &str, port: u16) -> String {
    if host.starts_with('/') {
        format!("socket {}/.s.PGSQL.{port}", host.trim_end_matches('/'))
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An I/O error's text without Rust's ` (os error N)` suffix, so messages read like libpq's
/// (`Connection refused`).
pub(crate) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" (os error ") {
        Some((head, tail)) if tail.ends_with(')') => head.to_string(),
        _ => text,
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Io { context, source } => write!(f, "{context}: {}", io_text(source)),
            PgError::Connect { host, port, source } => {
                write!(
                    f,
                    "connecting to {}: {}",
                    endpoint(host, *port),
                    io_text(source)
                )
            }
            PgError::Auth { message, .. } => f.write_str(message),
            PgError::Server {
                severity,
                code,
                message,
                detail,
                hint,
            } => {
                write!(f, "{severity} {code}: {message}")?;
                if let Some(d) = detail {
                    write!(f, "; DETAIL: {d}")?;
                }
                if let Some(h) = hint {
                    write!(f, "; HINT: {h}")?;
                }
                Ok(())
            }
            PgError::Protocol(m) => write!(f, "PostgreSQL protocol: {m}"),
            PgError::Tls(m) => write!(f, "TLS: {m}"),
            PgError::Config { setting, message } => write!(f, "{setting}: {message}"),
            PgError::Broken { reason } => {
                write!(f, "connection unusable after an earlier error: {reason}")
            }
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Io { source, .. } | PgError::Connect { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_reads_like_libpq() {
        let e = PgError::Connect {
            host: "127.0.0.1".into(),
            port: 5999,
            source: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            e.to_string(),
            "connecting to 127.0.0.1:5999: Connection refused"
        );
        let e = PgError::Connect {
            host: "/var/run/postgresql".into(),
            port: 5432,
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "connecting to socket /var/run/postgresql/.s.PGSQL.5432: No such file or directory"
        );
        let e = PgError::Connect {
            host: "::1".into(),
            port: 5432,
            source: io::ErrorKind::TimedOut.into(),
        };
        assert!(
            e.to_string().starts_with("connecting to [::1]:5432: "),
            "{e}"
        );
    }

    #[test]
    fn server_error_display_and_sqlstate() {
        let e = PgError::Server {
            severity: "ERROR".into(),
            code: "42601".into(),
            message: "syntax error at or near \"selec\"".into(),
            detail: None,
            hint: Some("fix it".into()),
        };
        assert_eq!(
            e.to_string(),
            "ERROR 42601: syntax error at or near \"selec\"; HINT: fix it"
        );
        assert_eq!(e.sqlstate(), Some("42601"));
    }
}

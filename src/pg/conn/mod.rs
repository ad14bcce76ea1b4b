//! A blocking PostgreSQL connection: socket, optional TLS, login, simple queries.
//!
//! Backups need only a handful of statements (`pg_backup_start`, `pg_backup_stop`,
//! settings and version queries), so the client speaks just the simple-query protocol and
//! returns text. Every wait has a bound: login is limited by `connect_timeout`, later
//! reads by `read_timeout` (none by default, since `pg_backup_stop` may wait a long time
//! for archiving) and writes by `write_timeout`; TCP keepalive notices a vanished host.
//!
//! This module owns the session and its framing (send, receive, the broken state); the
//! socket and TLS negotiation, the login and the query loop live in child modules so that
//! each can see the session's fields without making them public.

mod copy;
mod login;
mod query;
mod server_message;
mod transport;

pub use copy::{Event, Replication};
pub use query::QueryResult;

use super::error::{PgError, endpoint};
use super::params::{ConnParams, SslMode};
use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use transport::{TlsPlan, Transport, connect_tcp, is_timeout, negotiate_tls};

/// Largest message we accept by default; guards memory against a confused or hostile server
/// while leaving room for PostgreSQL's 1 GB field limit. Streams whose messages are known to
/// be small (a base backup's CopyData) lower it with [`Connection::set_max_message_len`].
const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// `None` for a zero duration: the std socket API's "no timeout".
fn bound(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Parses `server_version` (`"15.18 (Debian 15.18-1.pgdg120+1)"`, `"9.6.24"`, `"17beta1"`)
/// into `server_version_num` form (150018, 90624, 170000).
pub fn parse_server_version(text: &str) -> Option<u32> {
    let text = text.trim_start();
    let numeric_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let mut parts = text[..numeric_end]
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    let second = parts.next().flatten().unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + second)
    } else {
        let third = parts.next().flatten().unwrap_or(0);
        Some(major * 10000 + second * 100 + third)
    }
}

/// One message from the server as [`Connection::recv_frame`] sees it.
enum Frame {
    Message(Message),
    /// CopyBothResponse: a replication stream has begun.
    CopyBoth,
}

/// A logged-in session with one PostgreSQL server. Not thread-safe; one query at a time.
///
/// Dropping it (or calling [`Connection::close`]) says goodbye to the server.
pub struct Connection {
    stream: Transport,
    inbuf: BytesMut,
    out: BytesMut,
    /// `host:port` or the socket path, for messages.
    endpoint: String,
    user: String,
    parameters: HashMap<String, String>,
    server_version_num: u32,
    backend_pid: i32,
    transaction_status: u8,
    /// During login: when the whole attempt must be over.
    deadline: Option<Instant>,
    read_timeout: Option<Duration>,
    /// Set once the stream is out of step with the server; later calls fail fast with it.
    broken: Option<String>,
    /// Largest message accepted (its length field).
    max_message_len: usize,
}

impl Connection {
    /// Connects and logs in as `p` says: TCP or Unix socket, TLS per `p.sslmode` (TCP only,
    /// as in libpq), then trust, cleartext password, md5 or SCRAM-SHA-256 authentication.
    pub fn connect(p: &ConnParams) -> Result<Connection, PgError> {
        Self::connect_as(p, None)
    }

    /// Connects as [`Connection::connect`] does, but as a replication client (a WAL sender
    /// session), which takes `BASE_BACKUP`, `START_REPLICATION`, `IDENTIFY_SYSTEM` and the
    /// slot commands instead of SQL (`Database` mode also takes SQL).
    pub fn connect_replication(p: &ConnParams, mode: Replication) -> Result<Connection, PgError> {
        Self::connect_as(p, Some(mode))
    }

    fn connect_as(p: &ConnParams, repl: Option<Replication>) -> Result<Connection, PgError> {
        if p.user.is_empty() {
            return Err(PgError::config("PGUSER", "no user name to connect as"));
        }
        if p.is_unix_socket() {
            return Self::attempt(p, TlsPlan::Plain, repl);
        }
        match p.sslmode {
            SslMode::Disable => Self::attempt(p, TlsPlan::Plain, repl),
            SslMode::Allow => match Self::attempt(p, TlsPlan::Plain, repl) {
                // libpq's `allow`: the server may insist on TLS (a `hostssl`-only pg_hba).
                Err(plain_err @ (PgError::Auth { code: Some(_), .. } | PgError::Server { .. })) => {
                    match Self::attempt(p, TlsPlan::Required, repl) {
                        Err(PgError::Tls(_)) => Err(plain_err),
                        other => other,
                    }
                }
                other => other,
            },
            SslMode::Prefer => match Self::attempt(p, TlsPlan::IfOffered, repl) {
                // libpq's `prefer`: a failed handshake is retried without TLS.
                Err(PgError::Tls(why)) => {
                    crate::devel!(
                        "TLS to {} failed ({why}); retrying without TLS",
                        endpoint(&p.host, p.port)
                    );
                    Self::attempt(p, TlsPlan::Plain, repl)
                }
                other => other,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                Self::attempt(p, TlsPlan::Required, repl)
            }
        }
    }

    /// One connection attempt, bounded by `connect_timeout` from the moment the socket opens.
    fn attempt(
        p: &ConnParams,
        plan: TlsPlan,
        repl: Option<Replication>,
    ) -> Result<Connection, PgError> {
        let timeout = if p.connect_timeout.is_zero() {
            super::params::DEFAULT_CONNECT_TIMEOUT
        } else {
            p.connect_timeout
        };
        let where_ = endpoint(&p.host, p.port);
        let connect_err = |source| PgError::Connect {
            host: p.host.clone(),
            port: p.port,
            source,
        };
        let (stream, deadline) = if p.is_unix_socket() {
            let path = format!("{}/.s.PGSQL.{}", p.host.trim_end_matches('/'), p.port);
            let started = Instant::now();
            (
                Transport::Unix(UnixStream::connect(&path).map_err(connect_err)?),
                started + timeout,
            )
        } else {
            let (tcp, started) = connect_tcp(&p.host, p.port, timeout).map_err(connect_err)?;
            let deadline = started + timeout;
            let stream = match plan {
                TlsPlan::Plain => Transport::Tcp(tcp),
                TlsPlan::IfOffered | TlsPlan::Required => {
                    negotiate_tls(tcp, p, plan, deadline, &where_)?
                }
            };
            (stream, deadline)
        };
        let mut conn = Connection {
            stream,
            inbuf: BytesMut::with_capacity(8192),
            out: BytesMut::with_capacity(1024),
            endpoint: where_,
            user: p.user.clone(),
            parameters: HashMap::new(),
            server_version_num: 0,
            backend_pid: 0,
            transaction_status: b'I',
            deadline: Some(deadline),
            read_timeout: bound(p.read_timeout),
            broken: None,
            max_message_len: MAX_MESSAGE_LEN,
        };
        if let Err(e) = conn.login(p, repl) {
            // The server is mid-handshake: just hang up (a Terminate here only makes it log noise).
            return Err(conn.mark(e));
        }
        conn.deadline = None;
        conn.stream
            .set_read_timeout(conn.read_timeout)
            .and_then(|()| conn.stream.set_write_timeout(bound(p.write_timeout)))
            .map_err(|e| {
                PgError::io(format!("setting socket timeouts for {}", conn.endpoint), e)
            })?;
        if conn.server_version_num == 0 {
            let row = conn.query_one("show server_version_num")?;
            conn.server_version_num = row
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| PgError::Protocol("server did not report its version".into()))?;
        }
        Ok(conn)
    }
    /// The server's version as `server_version_num` (e.g. 150018 for 15.18).
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// A run-time parameter the server reported (ParameterStatus), e.g. `server_version`,
    /// `integer_datetimes`, `TimeZone`, `in_hot_standby` (PG14+).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The server process id serving this session.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Whether a transaction block is open (or failed) after the last query.
    pub fn in_transaction(&self) -> bool {
        self.transaction_status != b'I'
    }

    /// Whether the session runs over TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.stream, Transport::Tls(_))
    }

    /// Refuses (and breaks the connection on) any later message longer than `len` bytes:
    /// the memory a streamed answer may take is then bounded by it.
    pub fn set_max_message_len(&mut self, len: usize) {
        self.max_message_len = len.min(MAX_MESSAGE_LEN);
    }

    /// Bounds every later wait for the server's answer (`None`: wait as long as it takes);
    /// a wait that passes it breaks the connection.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), PgError> {
        self.read_timeout = timeout.and_then(bound);
        self.stream
            .set_read_timeout(self.read_timeout)
            .map_err(|e| PgError::io(format!("setting a read timeout for {}", self.endpoint), e))
    }

    /// A handle another thread can cut this session's socket with, so that a wait for the
    /// server ends at once (see [`Interrupter`]).
    pub fn interrupter(&self) -> Result<Interrupter, PgError> {
        self.stream
            .try_clone_socket()
            .map(|socket| Interrupter { socket })
            .map_err(|e| PgError::io(format!("duplicating the socket of {}", self.endpoint), e))
    }

    /// Whether the server still answers (runs `select 1`).
    pub fn is_alive(&mut self) -> bool {
        self.broken.is_none() && self.query("select 1").is_ok()
    }

    /// Ends the session politely (Terminate, TLS close_notify) and closes the socket.
    pub fn close(self) {
        drop(self);
    }

    /// Sends the buffered output.
    fn send(&mut self) -> Result<(), PgError> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io_failure("sending to", io::ErrorKind::TimedOut.into()));
            }
            let _ = self.stream.set_write_timeout(Some(left));
        }
        let result = self
            .stream
            .write_all(&self.out)
            .and_then(|()| self.stream.flush());
        self.out.clear();
        result.map_err(|e| self.io_failure("sending to", e))
    }

    /// The next complete message from the server.
    fn recv(&mut self) -> Result<Message, PgError> {
        loop {
            match self.recv_frame(None)? {
                Some(Frame::Message(m)) => return Ok(m),
                Some(Frame::CopyBoth) => {
                    return Err(self.protocol("unexpected CopyBothResponse".into()));
                }
                None => {}
            }
        }
    }

    /// The next complete message, or `None` when `idle` is given and passes first (the
    /// stream stays in step: a partial message waits in `inbuf`). CopyBothResponse, which
    /// the protocol crate does not parse, is recognised here.
    fn recv_frame(&mut self, idle: Option<Duration>) -> Result<Option<Frame>, PgError> {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if self.inbuf.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.inbuf[1],
                    self.inbuf[2],
                    self.inbuf[3],
                    self.inbuf[4],
                ]) as usize;
                if len > self.max_message_len {
                    return Err(self.protocol(format!(
                        "server sent a {len}-byte message (type '{}'), larger than the {} bytes this stream allows",
                        char::from(self.inbuf[0]).escape_default(),
                        self.max_message_len
                    )));
                }
                if self.inbuf[0] == b'W' && self.inbuf.len() > len {
                    let _ = self.inbuf.split_to(len + 1);
                    return Ok(Some(Frame::CopyBoth));
                }
            }
            match Message::parse(&mut self.inbuf) {
                Ok(Some(m)) => return Ok(Some(Frame::Message(m))),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(format!("malformed message from server: {e}"))),
            }
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.io_failure("waiting for", io::ErrorKind::TimedOut.into()));
                }
                let _ = self.stream.set_read_timeout(Some(left));
            } else if let Some(wait) = idle {
                let _ = self
                    .stream
                    .set_read_timeout(bound(wait).or(self.read_timeout));
            }
            let read = self.stream.read(&mut scratch);
            if idle.is_some() && self.deadline.is_none() {
                let _ = self.stream.set_read_timeout(self.read_timeout);
            }
            match read {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection unexpectedly",
                    );
                    return Err(self.io_failure("reading from", eof));
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if idle.is_some() && is_timeout(&e) => return Ok(None),
                Err(e) => return Err(self.io_failure("reading from", e)),
            }
        }
    }

    /// An I/O failure: the stream is now out of step, so the connection is done.
    fn io_failure(&mut self, doing: &str, e: io::Error) -> PgError {
        let e = if is_timeout(&e) {
            let limit = match self.deadline {
                Some(_) => "the connect timeout".to_string(),
                None => format!("{:?}", self.read_timeout.unwrap_or_default()),
            };
            io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {limit}"))
        } else {
            e
        };
        let err = PgError::io(format!("{doing} server {}", self.endpoint), e);
        self.mark(err)
    }

    fn protocol(&mut self, message: String) -> PgError {
        self.mark(PgError::Protocol(format!(
            "{message} (server {})",
            self.endpoint
        )))
    }

    /// Remembers `err` as the reason the connection is unusable and returns it.
    fn mark(&mut self, err: PgError) -> PgError {
        if self.broken.is_none() {
            self.broken = Some(err.to_string());
        }
        err
    }
}

/// Cuts a session's socket from another thread (a watchdog that found the server gone):
/// the session's pending and later reads and writes fail at once, and the session is done.
#[derive(Debug)]
pub struct Interrupter {
    socket: transport::Socket,
}

impl Interrupter {
    /// Shuts the socket down both ways.
    pub fn interrupt(&self) {
        self.socket.shutdown();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("backend_pid", &self.backend_pid)
            .field("tls", &self.uses_tls())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.broken.is_none() {
            // Best effort and bounded: a dead server must not stall the caller's exit.
            let _ = self.stream.set_write_timeout(Some(Duration::from_secs(1)));
            self.out.clear();
            frontend::terminate(&mut self.out);
            let _ = self.stream.write_all(&self.out);
            if let Transport::Tls(s) = &mut self.stream {
                s.conn.send_close_notify();
            }
            let _ = self.stream.flush();
        }
        self.stream.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-1.pgdg120+1)"),
            Some(150018)
        );
        assert_eq!(parse_server_version("15.4"), Some(150004));
        assert_eq!(parse_server_version("10.23"), Some(100023));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("9.4.1 on x86"), Some(90401));
        assert_eq!(parse_server_version("17beta1"), Some(170000));
        assert_eq!(parse_server_version("16devel"), Some(160000));
        assert_eq!(parse_server_version("16rc1 (Ubuntu)"), Some(160000));
        assert_eq!(parse_server_version(""), None);
        assert_eq!(parse_server_version("devel"), None);
    }

    #[test]
    fn closed_port_is_a_clear_connect_error_without_the_password() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = ConnParams {
            host: "127.0.0.1".into(),
            port,
            user: "u".into(),
            password: Some("very-secret-password".into()),
            database: "d".into(),
            sslmode: SslMode::Require,
            sslrootcert: None,
            application_name: "t".into(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::ZERO,
            write_timeout: Duration::ZERO,
        };
        let err = Connection::connect(&p).expect_err("nothing listens there");
        assert_eq!(
            err.to_string(),
            format!("connecting to 127.0.0.1:{port}: Connection refused")
        );
        assert!(!format!("{err} {err:?}").contains("very-secret-password"));
    }

    #[test]
    fn silent_server_times_out_during_login() {
        // Accepts (via the backlog) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for sslmode in [SslMode::Disable, SslMode::Require] {
            let p = ConnParams {
                host: "127.0.0.1".into(),
                port,
                user: "u".into(),
                password: Some("pw-not-shown".into()),
                database: "d".into(),
                sslmode,
                sslrootcert: None,
                application_name: "t".into(),
                connect_timeout: Duration::from_millis(500),
                read_timeout: Duration::ZERO,
                write_timeout: Duration::ZERO,
            };
            let started = Instant::now();
            let err = Connection::connect(&p).expect_err("no server");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "took {:?}",
                started.elapsed()
            );
            assert!(matches!(err, PgError::Io { .. }), "{err:?}");
            assert!(
                err.to_string().contains(&format!("127.0.0.1:{port}")),
                "{err}"
            );
            assert!(
                err.to_string()
                    .ends_with("no answer within the connect timeout"),
                "{err}"
            );
            assert!(!err.to_string().contains("pw-not-shown"));
        }
        drop(listener);
    }
}

//! A blocking PostgreSQL connection: socket, optional TLS, login, simple queries.
//!
//! Backups need only a handful of statements (`pg_backup_start`, `pg_backup_stop`,
//! settings and version queries), so the client speaks just the simple-query protocol and
//! returns text. Every wait has a bound: login is limited by `connect_timeout`, later
//! reads by `read_timeout` (none by default, since `pg_backup_stop` may wait a long time
//! for archiving) and writes by `write_timeout`; TCP keepalive notices a vanished host.

use super::error::{PgError, endpoint, io_text};
use super::params::{ConnParams, SslMode};
use super::tls;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{self, ErrorFields, Message};
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest message we accept; guards memory against a confused or hostile server while
/// leaving room for PostgreSQL's 1 GB field limit.
const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// The rows a simple query returned, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names of the last result set that had columns.
    pub columns: Vec<String>,
    /// Every row of every result set, in order; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// The byte stream under the protocol.
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(t),
            Transport::Unix(s) => s.set_read_timeout(t),
            Transport::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_write_timeout(t),
            Transport::Unix(s) => s.set_write_timeout(t),
            Transport::Tls(s) => s.sock.set_write_timeout(t),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Both),
            Transport::Unix(s) => s.shutdown(Shutdown::Both),
            Transport::Tls(s) => s.sock.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Unix(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Whether one connection attempt negotiates TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsPlan {
    /// No SSLRequest at all.
    Plain,
    /// SSLRequest; plain on the same socket if the server says no.
    IfOffered,
    /// SSLRequest; fail if the server says no.
    Required,
}

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

/// The fields of an ErrorResponse or NoticeResponse.
struct ServerMessage {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl ServerMessage {
    fn parse(mut fields: ErrorFields<'_>) -> Result<ServerMessage, PgError> {
        let mut m = ServerMessage {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut localized_severity = String::new();
        while let Some(field) = fields
            .next()
            .map_err(|e| PgError::Protocol(format!("malformed error message from server: {e}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => m.severity = value,
                b'S' => localized_severity = value,
                b'C' => m.code = value,
                b'M' => m.message = value,
                b'D' => m.detail = Some(value),
                b'H' => m.hint = Some(value),
                _ => {}
            }
        }
        if m.severity.is_empty() {
            // Servers before 9.6 send only the localized severity.
            m.severity = localized_severity;
        }
        Ok(m)
    }

    fn into_error(self) -> PgError {
        PgError::Server {
            severity: self.severity,
            code: self.code,
            message: self.message,
            detail: self.detail,
            hint: self.hint,
        }
    }

    /// During login, class 28 (invalid authorization) is an authentication failure.
    fn into_login_error(self, user: &str) -> PgError {
        if self.code.starts_with("28") {
            let code = self.code.clone();
            PgError::Auth {
                user: user.to_string(),
                code: Some(code),
                message: self.into_error().to_string(),
            }
        } else {
            self.into_error()
        }
    }
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
}

impl Connection {
    /// Connects and logs in as `p` says: TCP or Unix socket, TLS per `p.sslmode` (TCP only,
    /// as in libpq), then trust, cleartext password, md5 or SCRAM-SHA-256 authentication.
    pub fn connect(p: &ConnParams) -> Result<Connection, PgError> {
        if p.user.is_empty() {
            return Err(PgError::config("PGUSER", "no user name to connect as"));
        }
        if p.is_unix_socket() {
            return Self::attempt(p, TlsPlan::Plain);
        }
        match p.sslmode {
            SslMode::Disable => Self::attempt(p, TlsPlan::Plain),
            SslMode::Allow => match Self::attempt(p, TlsPlan::Plain) {
                // libpq's `allow`: the server may insist on TLS (a `hostssl`-only pg_hba).
                Err(plain_err @ (PgError::Auth { code: Some(_), .. } | PgError::Server { .. })) => {
                    match Self::attempt(p, TlsPlan::Required) {
                        Err(PgError::Tls(_)) => Err(plain_err),
                        other => other,
                    }
                }
                other => other,
            },
            SslMode::Prefer => match Self::attempt(p, TlsPlan::IfOffered) {
                // libpq's `prefer`: a failed handshake is retried without TLS.
                Err(PgError::Tls(why)) => {
                    crate::devel!(
                        "TLS to {} failed ({why}); retrying without TLS",
                        endpoint(&p.host, p.port)
                    );
                    Self::attempt(p, TlsPlan::Plain)
                }
                other => other,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                Self::attempt(p, TlsPlan::Required)
            }
        }
    }

    /// One connection attempt, bounded by `connect_timeout` from the moment the socket opens.
    fn attempt(p: &ConnParams, plan: TlsPlan) -> Result<Connection, PgError> {
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
        };
        if let Err(e) = conn.login(p) {
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

    /// StartupMessage, authentication, then the server's parameters up to ReadyForQuery.
    fn login(&mut self, p: &ConnParams) -> Result<(), PgError> {
        let startup = [
            ("user", p.user.as_str()),
            ("database", p.database.as_str()),
            ("application_name", p.application_name.as_str()),
            // Rows are returned as Rust strings, so ask for UTF-8 whatever the database uses.
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(startup, &mut self.out).map_err(|_| {
            PgError::config(
                "PGUSER",
                "user, database and application name must not contain NUL bytes",
            )
        })?;
        self.send()?;

        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv()? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    let password = self.password(p, "password")?;
                    frontend::password_message(password.as_bytes(), &mut self.out)
                        .map_err(|_| self.nul_in_password())?;
                    self.send()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = self.password(p, "md5")?;
                    let hash = md5_hash(p.user.as_bytes(), password.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)
                        .map_err(|_| self.nul_in_password())?;
                    self.send()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut it = body.mechanisms();
                    while let Some(m) = it
                        .next()
                        .map_err(|e| self.protocol(format!("bad SASL mechanism list: {e}")))?
                    {
                        mechanisms.push(m.to_string());
                    }
                    let password = self.password(p, "SCRAM-SHA-256")?;
                    let (mechanism, binding) = self.choose_scram(&mechanisms)?;
                    let state = sasl::ScramSha256::new(password.as_bytes(), binding);
                    frontend::sasl_initial_response(mechanism, state.message(), &mut self.out)
                        .map_err(|e| self.protocol(format!("encoding SASL response: {e}")))?;
                    self.send()?;
                    scram = Some(state);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        self.protocol("SASL continuation without a SASL start".into())
                    })?;
                    state
                        .update(body.data())
                        .map_err(|e| self.auth_failure(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(state.message(), &mut self.out)
                        .map_err(|e| self.protocol(format!("encoding SASL response: {e}")))?;
                    self.send()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol("SASL final without a SASL start".into()))?;
                    // This is where a server that does not know the password is caught.
                    state.finish(body.data()).map_err(|e| {
                        self.auth_failure(format!("the server's SCRAM signature is invalid ({e}); it may not be the real server"))
                    })?;
                }
                Message::ErrorResponse(body) => {
                    let user = self.user.clone();
                    return Err(
                        self.mark(ServerMessage::parse(body.fields())?.into_login_error(&user))
                    );
                }
                Message::NoticeResponse(_) => {}
                Message::AuthenticationKerberosV5 => {
                    return Err(self.unsupported_auth("Kerberos V5"));
                }
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(self.unsupported_auth("GSSAPI"));
                }
                Message::AuthenticationSspi => return Err(self.unsupported_auth("SSPI")),
                Message::AuthenticationScmCredential => {
                    return Err(self.unsupported_auth("SCM credential"));
                }
                _ => return Err(self.protocol("unexpected message during authentication".into())),
            }
        }

        loop {
            match self.recv()? {
                Message::ParameterStatus(body) => self.store_parameter(&body)?,
                Message::BackendKeyData(body) => self.backend_pid = body.process_id(),
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => {
                    let user = self.user.clone();
                    return Err(
                        self.mark(ServerMessage::parse(body.fields())?.into_login_error(&user))
                    );
                }
                Message::ReadyForQuery(body) => {
                    self.transaction_status = body.status();
                    break;
                }
                _ => return Err(self.protocol("unexpected message after authentication".into())),
            }
        }
        self.server_version_num = self
            .parameter("server_version")
            .and_then(parse_server_version)
            .unwrap_or(0);
        Ok(())
    }

    /// SCRAM mechanism and channel binding: bind to the TLS certificate when we can, so a
    /// man in the middle (possible under `require`, which checks no certificate) cannot
    /// relay the login.
    fn choose_scram(
        &self,
        offered: &[String],
    ) -> Result<(&'static str, sasl::ChannelBinding), PgError> {
        let cert_hash = match &self.stream {
            Transport::Tls(s) => s
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::end_point_hash(c)),
            _ => None,
        };
        let plus = offered.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
        let plain = offered.iter().any(|m| m == sasl::SCRAM_SHA_256);
        match cert_hash {
            Some(hash) if plus => Ok((
                sasl::SCRAM_SHA_256_PLUS,
                sasl::ChannelBinding::tls_server_end_point(hash),
            )),
            // "y": we could bind but the server did not offer it; it will refuse if it did.
            Some(_) if plain => Ok((sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested())),
            None if plain => Ok((sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported())),
            _ => Err(self.auth_failure(format!(
                "server offers only SASL mechanisms this client does not support: {}",
                offered.join(", ")
            ))),
        }
    }

    fn password(&self, p: &ConnParams, method: &str) -> Result<String, PgError> {
        match p.password.as_deref() {
            Some(pw) if !pw.is_empty() => Ok(pw.to_string()),
            _ => Err(PgError::Auth {
                user: self.user.clone(),
                code: None,
                message: format!(
                    "server at {} requires {method} authentication for user \"{}\" but no password is set (PGPASSWORD or PGPASSFILE)",
                    self.endpoint, self.user
                ),
            }),
        }
    }

    fn nul_in_password(&self) -> PgError {
        PgError::Auth {
            user: self.user.clone(),
            code: None,
            message: "the password contains a NUL byte".into(),
        }
    }

    fn auth_failure(&self, message: String) -> PgError {
        PgError::Auth {
            user: self.user.clone(),
            code: None,
            message: format!(
                "authenticating as \"{}\" at {}: {message}",
                self.user, self.endpoint
            ),
        }
    }

    fn unsupported_auth(&self, method: &str) -> PgError {
        self.auth_failure(format!(
            "server requested {method} authentication, which this client does not support"
        ))
    }

    fn store_parameter(&mut self, body: &backend::ParameterStatusBody) -> Result<(), PgError> {
        let name = body
            .name()
            .map_err(|e| self.protocol(format!("bad ParameterStatus: {e}")))?;
        let value = body
            .value()
            .map_err(|e| self.protocol(format!("bad ParameterStatus: {e}")))?;
        self.parameters.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Runs `sql` with the simple-query protocol (it may hold several statements) and
    /// returns every row of every result as text.
    ///
    /// On an SQL error the rest of the server's answer is still read, so the connection
    /// stays usable for the next query; the first error is returned.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, PgError> {
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
        self.send()?;

        let mut result = QueryResult::default();
        let mut error: Option<PgError> = None;
        loop {
            let message = match self.recv() {
                Ok(m) => m,
                // A FATAL error is followed by the server hanging up; report the error, not the hang-up.
                Err(e) => return Err(error.unwrap_or(e)),
            };
            match message {
                Message::RowDescription(body) => {
                    let mut columns = Vec::new();
                    let mut fields = body.fields();
                    while let Some(f) = fields
                        .next()
                        .map_err(|e| self.protocol(format!("bad RowDescription: {e}")))?
                    {
                        columns.push(f.name().to_string());
                    }
                    result.columns = columns;
                }
                Message::DataRow(body) => {
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
                                    let column =
                                        result.columns.get(row.len()).cloned().unwrap_or_default();
                                    error.get_or_insert(PgError::Protocol(format!(
                                        "column {column:?} of row {} is not valid UTF-8",
                                        result.rows.len() + 1
                                    )));
                                    None
                                }
                            },
                        });
                    }
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
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if self.inbuf.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.inbuf[1],
                    self.inbuf[2],
                    self.inbuf[3],
                    self.inbuf[4],
                ]) as usize;
                if len > MAX_MESSAGE_LEN {
                    return Err(self.protocol(format!(
                        "server sent a {len}-byte message, larger than any valid one"
                    )));
                }
            }
            match Message::parse(&mut self.inbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(format!("malformed message from server: {e}"))),
            }
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.io_failure("waiting for", io::ErrorKind::TimedOut.into()));
                }
                let _ = self.stream.set_read_timeout(Some(left));
            }
            match self.stream.read(&mut scratch) {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection unexpectedly",
                    );
                    return Err(self.io_failure("reading from", eof));
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

/// Opens a TCP connection to the first address of `host` that accepts within `timeout`.
/// Returns the socket and when its attempt started (the login deadline counts from there).
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<(TcpStream, Instant)> {
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                crate::sys::set_keepalive(&s);
                return Ok((s, started));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A socket time-out during login, said plainly (the OS calls it "Resource temporarily unavailable").
fn login_timeout(e: io::Error) -> io::Error {
    if is_timeout(&e) {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer within the connect timeout",
        )
    } else {
        e
    }
}

/// SSLRequest and, if the server agrees, the TLS handshake.
fn negotiate_tls(
    mut tcp: TcpStream,
    p: &ConnParams,
    plan: TlsPlan,
    deadline: Instant,
    where_: &str,
) -> Result<Transport, PgError> {
    let io_err = |doing: &str, e: io::Error| {
        PgError::io(format!("{doing} server {where_}"), login_timeout(e))
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(|e| io_err("configuring socket to", e))?;
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .map_err(|e| io_err("sending SSLRequest to", e))?;
    // Exactly one byte: anything the server sends after 'S' must go through TLS, not around it.
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .map_err(|e| io_err("waiting for SSLRequest answer from", e))?;
    match answer[0] {
        b'S' => {}
        b'N' if plan == TlsPlan::IfOffered => return Ok(Transport::Tcp(tcp)),
        b'N' => {
            return Err(PgError::Tls(format!(
                "server {where_} does not support SSL, but sslmode={} requires it",
                p.sslmode
            )));
        }
        other => {
            return Err(PgError::Tls(format!(
                "server {where_} answered SSLRequest with unexpected byte {other:#04x}"
            )));
        }
    }
    let config = tls::client_config(p.sslmode, p.sslrootcert.as_deref())?;
    let name = tls::server_name(&p.host, p.sslmode)?;
    let client = rustls::ClientConnection::new(config, name)
        .map_err(|e| PgError::Tls(format!("starting TLS: {e}")))?;
    let mut stream = rustls::StreamOwned::new(client, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| {
            if is_timeout(&e) {
                // Not a TLS problem, so `prefer` must not spend a second timeout retrying plain.
                io_err("TLS handshake with", e)
            } else {
                PgError::Tls(format!("handshake with {where_}: {}", io_text(&e)))
            }
        })?;
    }
    Ok(Transport::Tls(Box::new(stream)))
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

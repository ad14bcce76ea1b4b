//! The byte stream under the protocol: TCP or Unix socket, and TLS when negotiated.
//!
//! Kept apart from the message layer because everything here is about sockets (time-outs,
//! keepalive, the one-byte SSLRequest answer) and nothing about PostgreSQL messages.

use crate::pg::error::{PgError, io_text};
use crate::pg::params::ConnParams;
use crate::pg::tls;
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The byte stream under the protocol.
pub(super) enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(t),
            Transport::Unix(s) => s.set_read_timeout(t),
            Transport::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    pub(super) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_write_timeout(t),
            Transport::Unix(s) => s.set_write_timeout(t),
            Transport::Tls(s) => s.sock.set_write_timeout(t),
        }
    }

    pub(super) fn shutdown(&self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Both),
            Transport::Unix(s) => s.shutdown(Shutdown::Both),
            Transport::Tls(s) => s.sock.shutdown(Shutdown::Both),
        };
    }

    /// A second handle on the socket under the stream (TLS included), for shutting it down
    /// from another thread.
    pub(super) fn try_clone_socket(&self) -> io::Result<Socket> {
        Ok(match self {
            Transport::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Transport::Unix(s) => Socket::Unix(s.try_clone()?),
            Transport::Tls(s) => Socket::Tcp(s.sock.try_clone()?),
        })
    }
}

/// A duplicate of a session's socket.
#[derive(Debug)]
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
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
pub(super) enum TlsPlan {
    /// No SSLRequest at all.
    Plain,
    /// SSLRequest; plain on the same socket if the server says no.
    IfOffered,
    /// SSLRequest; fail if the server says no.
    Required,
}

/// Opens a TCP connection to the first address of `host` that accepts within `timeout`.
/// Returns the socket and when its attempt started (the login deadline counts from there).
pub(super) fn connect_tcp(
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<(TcpStream, Instant)> {
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

pub(super) fn is_timeout(e: &io::Error) -> bool {
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
pub(super) fn negotiate_tls(
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

//! The protocol of WAL-G's daemon, as `walg-daemon-client` speaks it (WAL-G v3.0.8,
//! `internal/daemon`, `internal/databases/postgres/daemon_handler.go`).
//!
//! A request is a header of three bytes, the message type and the whole message's length
//! including the header (big-endian u16), then the body:
//!
//! - `C` check, any body: answered `O`, and the connection stays open for the next request;
//! - `F` wal-push, the body is the WAL file's name (`%f`), read from `$PGDATA/pg_wal`;
//! - `f` wal-fetch, the body is a list of arguments, the file's name and its destination
//!   (`%f %p`): a count byte, then per argument its length (big-endian u16) and its bytes.
//!
//! The answer is one byte: `O` done, `N` (wal-fetch) the archive has no such file, `E` any
//! error. After a wal-push or wal-fetch, or after an error, the daemon closes the connection.
//! The client reads one answer, exits 0 on `O`, 74 on `N` (PostgreSQL's "no such file" for a
//! restore_command) and 1 on anything else, a refused connection or its own timeout included.

use std::fmt;
use std::io::{self, Read};

/// Check: answered `O`, the connection stays open.
pub const CHECK: u8 = b'C';
/// wal-push of a file of `pg_wal`.
pub const WAL_PUSH: u8 = b'F';
/// wal-fetch of a file to a destination.
pub const WAL_FETCH: u8 = b'f';
/// Answer: done.
pub const OK: u8 = b'O';
/// Answer: failed (the client exits 1).
pub const ERROR: u8 = b'E';
/// Answer to a wal-fetch: the archive has no such file (the client exits 74).
pub const NOT_FOUND: u8 = b'N';

/// Length of a message's header.
pub const HEADER: usize = 3;

/// Longest body a message can carry.
pub const MAX_BODY: usize = u16::MAX as usize - HEADER;

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between two requests (after a check).
    Closed,
    /// Reading failed, or timed out, or the client closed it inside a request.
    Io(io::Error),
    /// The header's length cannot be a message's (shorter than the header).
    Malformed(u16),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the client closed the connection"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Malformed(len) => {
                write!(f, "a message of {len} bytes is shorter than its header")
            }
        }
    }
}

/// Reads one message; its body goes into `buf` (at least [`MAX_BODY`] long). Returns the
/// message type and the body's length.
pub fn read_message(r: &mut impl Read, buf: &mut [u8]) -> Result<(u8, usize), ReadError> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    let len = u16::from_be_bytes([header[1], header[2]]);
    let body = (len as usize)
        .checked_sub(HEADER)
        .ok_or(ReadError::Malformed(len))?;
    r.read_exact(&mut buf[..body]).map_err(ReadError::Io)?;
    Ok((header[0], body))
}

/// The arguments of a body made by WAL-G's `ArgsToBytes`; `None` when the body is not one
/// (WAL-G's `BytesToArgs` refuses the same, and crashes on an empty body).
pub fn parse_args(body: &[u8]) -> Option<Vec<&[u8]>> {
    let (&count, mut rest) = body.split_first()?;
    let mut args = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if rest.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        if rest.len() < len {
            return None;
        }
        args.push(&rest[..len]);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(args)
}

/// A message as the client sends it (for tests and tools).
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = (body.len() + HEADER) as u16;
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A body of arguments as WAL-G's `ArgsToBytes` makes it.
pub fn args_body(args: &[&str]) -> Vec<u8> {
    let mut out = vec![args.len() as u8];
    for a in args {
        out.extend_from_slice(&(a.len() as u16).to_be_bytes());
        out.extend_from_slice(a.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut wire = message(CHECK, b"CHECK");
        wire.extend(message(WAL_PUSH, b"000000010000000000000003"));
        wire.extend(message(
            WAL_FETCH,
            &args_body(&["000000010000000000000003", "pg_wal/RECOVERYXLOG"]),
        ));
        let mut r = &wire[..];
        let mut buf = vec![0u8; MAX_BODY];
        assert_eq!(read_message(&mut r, &mut buf).unwrap(), (CHECK, 5));
        let (kind, n) = read_message(&mut r, &mut buf).unwrap();
        assert_eq!(
            (kind, &buf[..n]),
            (WAL_PUSH, &b"000000010000000000000003"[..])
        );
        let (kind, n) = read_message(&mut r, &mut buf).unwrap();
        assert_eq!(kind, WAL_FETCH);
        let args = parse_args(&buf[..n]).unwrap();
        assert_eq!(
            args,
            vec![
                &b"000000010000000000000003"[..],
                &b"pg_wal/RECOVERYXLOG"[..]
            ]
        );
        assert!(matches!(
            read_message(&mut r, &mut buf),
            Err(ReadError::Closed)
        ));
    }

    /// The bytes of WAL-G's own daemon test (`daemon_test.sh`): `C\0\x08CHECK`, then a
    /// wal-push whose length counts the header.
    #[test]
    fn walg_test_bytes() {
        let name = "000000010000000000000001";
        let mut wire = b"C\x00\x08CHECK".to_vec();
        wire.extend_from_slice(b"F\x00\x1B");
        wire.extend_from_slice(name.as_bytes());
        assert_eq!(
            wire,
            [message(CHECK, b"CHECK"), message(WAL_PUSH, name.as_bytes())].concat()
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut buf = vec![0u8; MAX_BODY];
        let mut short: &[u8] = b"F\x00\x02";
        assert!(matches!(
            read_message(&mut short, &mut buf),
            Err(ReadError::Malformed(2))
        ));
        let mut cut: &[u8] = b"F\x00\x10abc";
        assert!(matches!(
            read_message(&mut cut, &mut buf),
            Err(ReadError::Io(_))
        ));
        let mut half_header: &[u8] = b"F\x00";
        assert!(matches!(
            read_message(&mut half_header, &mut buf),
            Err(ReadError::Io(_))
        ));
        assert_eq!(parse_args(b""), None);
        assert_eq!(parse_args(b"\x01\x00"), None);
        assert_eq!(parse_args(b"\x01\x00\x05abc"), None);
        assert_eq!(parse_args(b"\x01\x00\x01ab"), None);
        assert_eq!(parse_args(b"\x00"), Some(vec![]));
        assert_eq!(parse_args(b"\x01\x00\x00"), Some(vec![&b""[..]]));
    }
}

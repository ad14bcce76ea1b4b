//! Reading what a server answers and describing what went wrong, the same way for every cloud.

use crate::storage::{Op, StorageError};
use crate::time::UtcTime;
use std::io::Read;

/// Largest error, listing or token document read into memory; the clouds' are far smaller.
pub const MAX_SMALL_BODY: u64 = 4 << 20;

/// Whether the connection broke while the request was being written: the server closed it
/// (a reset, a broken pipe) before taking the whole body.
pub fn closed_while_sending(t: &ureq::Transport) -> bool {
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        source = e.source();
    }
    false
}

/// A transport error in words. ureq's own message can carry the URL, whose query may hold a
/// SAS token or a signature, so only the kind, the message and the cause are used, and a
/// query string is cut from them.
pub fn transport_detail(t: &ureq::Transport) -> String {
    let kind = t.kind();
    let msg = t.message().map(strip_query).unwrap_or_default();
    let src = std::error::Error::source(t)
        .map(|s| strip_query(&s.to_string()))
        .unwrap_or_default();
    let mut out = format!("{kind}");
    for part in [msg, src] {
        if !part.is_empty() && !out.contains(&part) {
            out.push_str(": ");
            out.push_str(&part);
        }
    }
    out
}

/// `text` with everything from a URL's `?` to the next blank cut.
fn strip_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for c in text.chars() {
        if c == '?' && !skipping {
            skipping = true;
            out.push_str("?…");
        } else if skipping && c.is_whitespace() {
            skipping = false;
            out.push(c);
        } else if !skipping {
            out.push(c);
        }
    }
    out
}

/// What to report after the server closed the connection while a body was being sent
/// (`broken`): a server answers a request it refuses (a missing bucket, denied access) as soon
/// as it has the headers and closes, and the answer is lost with the connection. `probe` is a
/// small listing of the same bucket sent afterwards: when it was refused for good (a 4xx other
/// than 429), so was the upload, and that refusal is the call's error, not retried.
pub fn refused_like_probe<T>(
    probe: Result<T, StorageError>,
    op: Op,
    key: &str,
    broken: StorageError,
) -> StorageError {
    match probe {
        Err(StorageError::Remote {
            status,
            code,
            message,
            ..
        }) if (400..500).contains(&status) && status != 429 => StorageError::Remote {
            op,
            key: key.to_string(),
            status,
            code,
            message: format!(
                "{message} (the server closed the connection while the body was sent; a \
                 listing of the bucket was refused the same way)"
            ),
        },
        _ => broken,
    }
}

/// The first printable characters of a body that is not the server's error document (a
/// proxy's HTML page), for a message.
pub fn describe_body(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect()
}

/// A body reader that fills every buffer it is handed. ureq writes the body to the socket
/// one `read` at a time, and some bodies (the files-metadata spool renders one JSON member
/// per read) return ~100 bytes a call: unfilled, that became one small TCP segment per
/// member, 1000 segments and 0.3 s for a 1000-file `files_metadata.json`.
pub struct Coalesced<R>(pub R);

impl<R: Read> Read for Coalesced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::storage::read_full(&mut self.0, buf)
    }
}

/// Reads a small response body (listing, error, token, upload answer) into memory, bounded.
pub fn read_small_body(resp: ureq::Response, op: Op, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_SMALL_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| StorageError::Io {
            op,
            key: key.to_string(),
            source: e,
        })?;
    if body.len() as u64 > MAX_SMALL_BODY {
        return Err(StorageError::Protocol {
            op,
            key: key.to_string(),
            detail: format!(
                "answer larger than {} MiB, more than the server sends for this call",
                MAX_SMALL_BODY >> 20
            ),
        });
    }
    Ok(body)
}

/// One sent request's outcome, the same way for every cloud: the answer, the cloud's
/// refusal (`status_error` reads its error document), or a transport failure named by
/// operation, key and endpoint.
///
/// When the server closed the connection while a body was still being sent, the cloud
/// most likely refused the request as soon as it had its headers (a wrong key, a missing
/// bucket or container), and that answer was lost with the connection. `probe` then sends
/// a small listing of the same place: if it is refused for good, so was the upload, and
/// that refusal (with the cloud's code and message) is returned at once instead of a
/// retried broken pipe.
pub struct Sent<'a> {
    /// The operation.
    pub op: Op,
    /// The key or place, for messages.
    pub what: String,
    /// The endpoint, for messages (never with a query).
    pub endpoint: String,
    /// Whether the request had a body.
    pub has_body: bool,
    /// The error of an error answer.
    pub status_error: &'a dyn Fn(u16, ureq::Response) -> StorageError,
    /// A small listing of the same bucket or container.
    pub probe: &'a dyn Fn() -> Result<ureq::Response, StorageError>,
}

impl Sent<'_> {
    /// The outcome of `result`.
    pub fn settle(
        self,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, StorageError> {
        let t = match result {
            Ok(resp) => return Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                return Err((self.status_error)(status, resp));
            }
            Err(ureq::Error::Transport(t)) => t,
        };
        let broken = StorageError::Transport {
            op: self.op,
            key: self.what.clone(),
            detail: format!("{} ({})", transport_detail(&t), self.endpoint),
        };
        if !(self.has_body && closed_while_sending(&t)) {
            return Err(broken);
        }
        match (self.probe)() {
            Err(StorageError::Remote {
                status,
                code,
                message,
                ..
            }) if (400..500).contains(&status) && status != 429 => Err(StorageError::Remote {
                op: self.op,
                key: self.what,
                status,
                code,
                message: format!(
                    "{message} (the server closed the connection while the body was sent; a \
                     listing of the same place was refused the same way)"
                ),
            }),
            _ => Err(broken),
        }
    }
}

/// Reads a small answer and parses it; a document that does not parse is `Garbled` (and
/// so retried: the clouds' XML answers carry no checksum).
pub fn parse_small<T>(
    resp: ureq::Response,
    op: Op,
    what: &str,
    parse: &dyn Fn(&[u8]) -> Result<T, super::xml::XmlError>,
) -> Result<T, StorageError> {
    let bytes = read_small_body(resp, op, what)?;
    parse(&bytes).map_err(|e| StorageError::Garbled {
        op,
        key: what.to_string(),
        detail: e.to_string(),
    })
}

/// An object's metadata from the answer to a HEAD: `Content-Length` and `Last-Modified`.
pub fn head_meta(resp: &ureq::Response, key: &str) -> crate::storage::ObjectMeta {
    use crate::time::PreciseTime;
    crate::storage::ObjectMeta {
        key: key.to_string(),
        size: resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        last_modified: resp
            .header("last-modified")
            .and_then(parse_http_date)
            .map(PreciseTime::from_utc)
            .unwrap_or(PreciseTime::EPOCH),
    }
}

/// A listed object's metadata, keyed relative to `root`; `None` for a name outside it or a
/// "folder" object named like a folder (ending in `/`), which is not an object.
pub fn listed(
    root: &str,
    name: &str,
    size: u64,
    last_modified: crate::time::PreciseTime,
) -> Option<crate::storage::ObjectMeta> {
    let rel = name.strip_prefix(root).filter(|_| !name.ends_with('/'))?;
    Some(crate::storage::ObjectMeta {
        key: rel.to_string(),
        size,
        last_modified,
    })
}

/// Parses an RFC 7231 date (`Last-Modified`), e.g. `Tue, 24 Nov 2026 03:10:27 GMT`.
pub fn parse_http_date(s: &str) -> Option<UtcTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? + 1;
    let iso = format!(
        "{}-{:02}-{:02}T{}Z",
        parts[3],
        month,
        parts[1].parse::<u32>().ok()?,
        parts[4]
    );
    UtcTime::parse_rfc3339(&iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_a_full_buffer_at_a_time() {
        // A body that yields 3 bytes a read, as the files-metadata renderer yields one member.
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(3);
                self.0.read(&mut buf[..n])
            }
        }
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut body = Coalesced(Trickle(std::io::Cursor::new(data.clone())));
        let mut buf = vec![0u8; 8192];
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sizes.push(n);
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(sizes, [8192, 8192, 20_000 - 16_384]);
        assert!(out == data);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(UtcTime(1_440_938_160))
        );
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn queries_are_cut_from_transport_messages() {
        assert_eq!(
            strip_query("http://h/c/k?sig=SECRET&se=1 failed"),
            "http://h/c/k?… failed"
        );
        assert_eq!(strip_query("no query"), "no query");
    }
}

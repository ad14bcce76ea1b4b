//! Request bodies and how each is sent, the same for every cloud: an exact
//! `Content-Length` always (no chunked encoding, which not every S3-compatible server or
//! proxy takes), and streams written a full buffer at a time.

use super::Coalesced;
use std::io::Read;

/// A request body for one attempt.
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A stream of exactly `len` bytes.
    Stream(Box<dyn Read + 'a>, u64),
}

impl Body<'_> {
    /// Whether there are bytes to send (a server that closes early breaks their sending).
    pub fn is_some(&self) -> bool {
        !matches!(self, Body::Empty)
    }
}

/// Sends `request` (of `method`) with `body`. The error is ureq's own, as large as it is.
#[allow(clippy::result_large_err)]
pub fn send(
    request: ureq::Request,
    method: &str,
    body: Body,
) -> Result<ureq::Response, ureq::Error> {
    match body {
        Body::Empty if method == "PUT" || method == "POST" => {
            request.set("Content-Length", "0").send_bytes(&[])
        }
        Body::Empty => request.call(),
        Body::Bytes(b) => request.send_bytes(b),
        Body::Stream(reader, len) => request
            .set("Content-Length", &len.to_string())
            .send(Coalesced(reader)),
    }
}

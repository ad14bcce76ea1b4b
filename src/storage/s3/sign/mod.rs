//! AWS Signature Version 4 (SigV4), written by hand.
//!
//! wal-rus talks to S3 over plain HTTP(S) without an AWS SDK, so every request
//! has to carry a SigV4 signature that S3 recomputes bit for bit. The work is
//! split into the stages the specification names so that each stage can be
//! checked on its own against AWS's published test suite: `canonical` (the
//! canonical request), `signing` (string to sign, signing key, signature and the
//! `Authorization` header built from them) and `presign` (the same signature
//! carried in the query string). The clock is passed in so that every signature
//! is reproducible in tests.
//!
//! The signer never adds headers by itself: the caller decides what it sends
//! (`host`, `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token`) and
//! passes exactly those headers in, so what is signed and what goes on the wire
//! cannot drift apart.

mod canonical;
mod presign;
mod signing;

pub use canonical::{canonical_path, canonical_query, canonical_request, signed_headers};
pub use presign::{presign, presign_params};
pub use signing::{authorization, credential_scope, signature, signing_key, string_to_sign};

use std::fmt;

use sha2::{Digest, Sha256};

/// The algorithm name that opens every string to sign and `Authorization` value.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash to use when the body is not hashed (S3 accepts it over TLS
/// and for presigned URLs).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Hex SHA-256 of the empty string: the payload hash of every body-less request.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Static credentials.
///
/// `Debug` is written by hand so that logging a configuration can never leak
/// the secret key or the session token.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id (`AKIA...` or `ASIA...`); not secret, it appears in every request.
    pub access_key_id: String,
    /// The secret access key; only ever used to derive the signing key.
    pub secret_access_key: String,
    /// The session token of temporary credentials (STS, instance profiles).
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Signing time; shared with the rest of the crate so logs and signatures agree.
pub use crate::time::UtcTime;

/// How paths are canonicalised.
///
/// S3 signs the path exactly as sent: no removal of `.`/`..`/empty segments
/// (they are legal parts of object keys) and no second round of percent-encoding.
/// Every other AWS service normalises and encodes the already-encoded path again,
/// which is what the generic test suite expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRules {
    /// Remove `.` and `..` segments and collapse empty segments (`//`).
    pub normalize: bool,
    /// Percent-encode the path once more (so `%` becomes `%25`).
    pub double_encode: bool,
}

impl PathRules {
    /// S3: the path is signed verbatim.
    pub const S3: PathRules = PathRules {
        normalize: false,
        double_encode: false,
    };
    /// Every other service, and the generic SigV4 test suite.
    pub const GENERIC: PathRules = PathRules {
        normalize: true,
        double_encode: true,
    };
}

/// One request to sign.
///
/// Deliberately not `Debug`: its headers may hold the session token.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, upper case (`GET`, `PUT`, ...).
    pub method: &'a str,
    /// Path exactly as sent on the wire (already percent-encoded by the caller, e.g. with uri_encode(key, false)).
    pub path: &'a str,
    /// Query parameters, DECODED; the signer encodes and sorts them (by encoded name, then encoded value).
    pub query: &'a [(String, String)],
    /// Headers to sign (must include host, and x-amz-date / x-amz-content-sha256 / x-amz-security-token when the caller sends them). Any case, possibly repeated names.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or "UNSIGNED-PAYLOAD".
    pub payload_hash: &'a str,
}

/// Percent-encodes `s` the way SigV4 wants: every byte except the RFC 3986
/// unreserved characters (`A-Z a-z 0-9 - _ . ~`) becomes `%XX` with upper-case hex.
///
/// `/` is kept when `encode_slash` is false, which is how an S3 object key
/// becomes a request path; query names and values use `encode_slash = true`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash);
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod suite_tests;
#[cfg(test)]
mod tests;

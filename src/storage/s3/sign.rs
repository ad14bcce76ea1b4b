//! AWS Signature Version 4 (SigV4), written by hand.
//!
//! wal-rus talks to S3 over plain HTTP(S) without an AWS SDK, so every request
//! has to carry a SigV4 signature that S3 recomputes bit for bit. The work is
//! split into the stages the specification names (canonical request, string to
//! sign, signing key, signature) so that each stage can be checked on its own
//! against AWS's published test suite, and the clock is passed in so that every
//! signature is reproducible in tests.
//!
//! The signer never adds headers by itself: the caller decides what it sends
//! (`host`, `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token`) and
//! passes exactly those headers in, so what is signed and what goes on the wire
//! cannot drift apart.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
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

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The canonical form of `path` under `rules` (second line of the canonical request).
pub fn canonical_path(path: &str, rules: PathRules) -> String {
    let path = if rules.normalize {
        normalize_path(path)
    } else {
        path.to_string()
    };
    let path = if rules.double_encode {
        uri_encode(&path, false)
    } else {
        path
    };
    if path.is_empty() {
        "/".to_string()
    } else {
        path
    }
}

/// RFC 3986 dot-segment removal plus collapsing of empty segments, keeping a
/// trailing slash; what the generic (non-S3) services sign.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    // A path ending in `/`, `/.` or `/..` names a directory, so the slash survives.
    let last = path.rsplit('/').next().unwrap_or("");
    let dir = path.contains('/') && matches!(last, "" | "." | "..");
    if out.is_empty() || dir {
        out.push('/');
    }
    out
}

/// The canonical query string: each name and value encoded, pairs sorted by
/// encoded name then encoded value, joined with `&`; a parameter without a
/// value still gets its `=`.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Canonical headers: (lower-case name, canonical value) sorted by name, with
/// repeated names merged in order of appearance.
fn canonical_header_list(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), canonical_header_value(v)))
        .collect();
    // Stable, so repeated names keep the order they were given in.
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(lowered.len());
    for (name, value) in lowered {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    merged
}

/// Trims the value and collapses each run of spaces inside it to one space.
fn canonical_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut in_space = false;
    for c in v.trim_matches(|c| c == ' ' || c == '\t').chars() {
        if c == ' ' {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// The `SignedHeaders` list for `headers`: lower-case names, sorted, unique, `;`-joined.
pub fn signed_headers(headers: &[(String, String)]) -> String {
    let names: Vec<String> = canonical_header_list(headers)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.join(";")
}

/// The canonical request: method, canonical path, canonical query, canonical
/// headers, signed header list and payload hash, one per line.
pub fn canonical_request(req: &Request, rules: PathRules) -> String {
    debug_assert!(
        req.headers
            .iter()
            .any(|(k, _)| k.trim().eq_ignore_ascii_case("host")),
        "SigV4 requires the host header to be signed"
    );
    let headers = canonical_header_list(req.headers);
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_path(req.path, rules));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for (name, value) in &headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(req.payload_hash);
    out
}

/// The credential scope: `YYYYMMDD/region/service/aws4_request`.
pub fn credential_scope(time: UtcTime, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", time.date())
}

/// The string to sign: algorithm, timestamp, credential scope and the hex
/// SHA-256 of the canonical request.
pub fn string_to_sign(
    time: UtcTime,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        time.amz_date(),
        credential_scope(time, region, service),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key: the secret chained through HMACs of date, region, service
/// and `aws4_request`. It is valid for one day, region and service, so callers
/// may cache it.
pub fn signing_key(secret: &str, time: UtcTime, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), time.date().as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The hex signature of `string_to_sign` under `key`.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac_sha256(key, string_to_sign.as_bytes()))
}

/// Full Authorization header value: "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=..."
///
/// Only the headers in `req.headers` are signed: to sign with a session token,
/// send `x-amz-security-token` and include it there (S3 expects it signed).
pub fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    req: &Request,
    rules: PathRules,
) -> String {
    let creq = canonical_request(req, rules);
    let sts = string_to_sign(time, region, service, &creq);
    let key = signing_key(&creds.secret_access_key, time, region, service);
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
        creds.access_key_id,
        credential_scope(time, region, service),
        signed_headers(req.headers),
        signature(&key, &sts)
    )
}

/// The presign parameters that are themselves signed, in canonical order:
/// X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
/// X-Amz-SignedHeaders and, with a session token, X-Amz-Security-Token
/// (decoded values). [`presign`] adds X-Amz-Signature to these.
pub fn presign_params(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    expires_secs: u64,
    req: &Request,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("X-Amz-Algorithm".to_string(), ALGORITHM.to_string()),
        (
            "X-Amz-Credential".to_string(),
            format!(
                "{}/{}",
                creds.access_key_id,
                credential_scope(time, region, service)
            ),
        ),
        ("X-Amz-Date".to_string(), time.amz_date()),
        ("X-Amz-Expires".to_string(), expires_secs.to_string()),
        (
            "X-Amz-SignedHeaders".to_string(),
            signed_headers(req.headers),
        ),
    ];
    if let Some(token) = &creds.session_token {
        params.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    params
}

/// Presigned query form: returns the query parameters to append (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, [X-Amz-Security-Token], X-Amz-Signature), decoded values.
///
/// `req.query` holds the request's own parameters (signed together with these);
/// `req.headers` must not contain `x-amz-date`, which travels in the query.
/// For S3, use [`UNSIGNED_PAYLOAD`] as the payload hash; AWS caps
/// `expires_secs` at 604800 (seven days).
pub fn presign(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    expires_secs: u64,
    req: &Request,
    rules: PathRules,
) -> Vec<(String, String)> {
    let mut params = presign_params(creds, region, service, time, expires_secs, req);
    let mut query: Vec<(String, String)> = req.query.to_vec();
    query.extend(params.iter().cloned());
    let signed = Request {
        query: &query,
        ..*req
    };
    let creq = canonical_request(&signed, rules);
    let sts = string_to_sign(time, region, service, &creq);
    let key = signing_key(&creds.secret_access_key, time, region, service);
    params.push(("X-Amz-Signature".to_string(), signature(&key, &sts)));
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // ---------------------------------------------------------------------
    // The AWS SigV4 test suite (aws-c-auth v4 cases, as shipped in aws-sigv4).
    // ---------------------------------------------------------------------

    /// Cases of the suite that cannot be run in full, with the reason. The
    /// suite test asserts that the cases it had to leave out are exactly these.
    const SUITE_NOT_IN_FULL: &[(&str, &str)] = &[
        (
            "double-encode-path",
            "old-format case without context.json, string to sign or signature; its \
             canonical request's x-amz-date (20210511T154045Z) contradicts request.txt's \
             (20150830T123600Z) and the secret of ANOTREAL is unknown: only the \
             double-encoded canonical path is checked",
        ),
        (
            "get-space-normalized",
            "request.txt was rewritten upstream to the pre-encoded `/example%20space/` \
             (httparse cannot read a raw space) while every expected file was produced \
             from `/example space/` (see the request line of header-signed-request.txt), \
             so under double encoding the input and the outputs disagree; the case \
             passes in full under PathRules::S3 in the S3 test",
        ),
    ];

    /// Cases where S3 rules must give a different canonical path from the suite,
    /// with the reason; the S3 test asserts the differing cases are exactly these.
    const S3_DIFFERS: &[(&str, &str)] = &[
        (
            "double-encode-path",
            "S3 encodes once; the case expects `%3D` -> `%253D`",
        ),
        (
            "double-url-encode",
            "S3 encodes once; the case expects `%3A` -> `%253A`",
        ),
        (
            "get-relative-normalized",
            "S3 does not remove `..` segments",
        ),
        (
            "get-relative-relative-normalized",
            "S3 does not remove `..` segments",
        ),
        (
            "get-slash-dot-slash-normalized",
            "S3 does not remove `.` segments",
        ),
        ("get-slash-normalized", "S3 does not collapse `//`"),
        (
            "get-slash-pointless-dot-normalized",
            "S3 does not remove `.` segments",
        ),
        ("get-slashes-normalized", "S3 does not collapse `//`"),
    ];

    /// The old-format case double-url-encode has no context.json; its scope and
    /// time are read from its own string to sign and request, and the secret is
    /// the suite's usual example secret (the published signature confirms it).
    const DOUBLE_URL_ENCODE_CONTEXT: &str = r#"{
        "credentials": {"access_key_id": "AKIDEXAMPLE",
                        "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
        "expiration_in_seconds": 3600, "normalize": true, "region": "us-east-2",
        "service": "lambda", "sign_body": false, "timestamp": "2021-05-11T15:40:45Z"}"#;

    fn suite_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("WALRUS_SIGV4_VECTORS") {
            return PathBuf::from(dir);
        }
        // In the project the crate sits at /work/main beside /work/shared.
        let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/aws-sigv4");
        if beside.is_dir() {
            return beside;
        }
        PathBuf::from("/work/shared/vectors/aws-sigv4")
    }

    fn case_names() -> Vec<String> {
        let dir = suite_dir();
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("SigV4 suite missing at {}: {e}", dir.display()));
        let mut names: Vec<String> = entries
            .map(|e| e.expect("readable suite folder"))
            .filter(|e| e.path().join("request.txt").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.len() >= 40,
            "expected the 40 v4 cases in {}, found {}",
            dir.display(),
            names.len()
        );
        names
    }

    fn read_case(case: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(suite_dir().join(case).join(file)).ok()
    }

    fn expect_case(case: &str, file: &str) -> String {
        read_case(case, file).unwrap_or_else(|| panic!("{case}: {file} missing"))
    }

    /// Just enough JSON for context.json: the value of a uniquely named key,
    /// either a string (no escapes occur in the suite) or a bare literal.
    fn json_value(json: &str, key: &str) -> Option<String> {
        let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
        let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
        if let Some(s) = rest.strip_prefix('"') {
            Some(s[..s.find('"')?].to_string())
        } else {
            let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        }
    }

    struct Context {
        creds: Credentials,
        region: String,
        service: String,
        time: UtcTime,
        expires: u64,
        normalize: bool,
        sign_body: bool,
        omit_session_token: bool,
    }

    fn parse_rfc3339_utc(s: &str) -> UtcTime {
        // "2015-08-30T12:36:00Z": days from civil (inverse of civil_from_days).
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        UtcTime(days * 86_400 + hh * 3600 + mm * 60 + ss)
    }

    fn parse_context(json: &str) -> Context {
        let get = |k: &str| json_value(json, k).unwrap_or_else(|| panic!("context: no {k}"));
        Context {
            creds: Credentials {
                access_key_id: get("access_key_id"),
                secret_access_key: get("secret_access_key"),
                session_token: json_value(json, "token"),
            },
            region: get("region"),
            service: get("service"),
            time: parse_rfc3339_utc(&get("timestamp")),
            expires: get("expiration_in_seconds").parse().unwrap(),
            normalize: get("normalize") == "true",
            sign_body: get("sign_body") == "true",
            omit_session_token: json_value(json, "omit_session_token").as_deref() == Some("true"),
        }
    }

    struct RawRequest {
        method: String,
        path: String,
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex_at = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            if b[i] == b'%'
                && let (Some(hi), Some(lo)) = (hex_at(i + 1), hex_at(i + 2))
            {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).expect("UTF-8 after decoding")
    }

    fn parse_query(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(p), String::new()),
            })
            .collect()
    }

    /// Method and target of a request line; the target may contain raw spaces.
    fn split_request_line(line: &str) -> (String, String) {
        let (method, rest) = line.split_once(' ').expect("request line");
        let target = match rest.rsplit_once(' ') {
            Some((t, version)) if version.starts_with("HTTP/") => t,
            _ => rest,
        };
        (method.to_string(), target.to_string())
    }

    /// Parses request.txt: request line, headers (a line starting with white
    /// space continues the previous value, RFC 7230 obs-fold), blank line, body.
    fn parse_request(text: &str) -> RawRequest {
        let (head, body) = match text.split_once("\n\n") {
            Some((h, b)) => (h, b.as_bytes().to_vec()),
            None => (text, Vec::new()),
        };
        let mut lines = head.lines();
        let (method, target) = split_request_line(lines.next().expect("request line"));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("continuation after a header");
                last.1.push(' ');
                last.1.push_str(line);
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.to_string(), v.to_string()));
            }
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), parse_query(q)),
            None => (target.clone(), Vec::new()),
        };
        RawRequest {
            method,
            path,
            query,
            headers,
            body,
        }
    }

    /// Rules the suite's cases need. normalize=true is the generic rule set. The
    /// normalize=false cases still double-encode: get-space-unnormalized turns
    /// its raw `/example space/` into `/example%20space/`, which only encoding does;
    /// the other unnormalized cases contain nothing to encode.
    fn suite_rules(ctx: &Context) -> PathRules {
        PathRules {
            normalize: ctx.normalize,
            double_encode: true,
        }
    }

    fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// Every expected file of a new-format case; a missing one is a failure.
    const CASE_FILES: &[&str] = &[
        "header-canonical-request.txt",
        "header-string-to-sign.txt",
        "header-signature.txt",
        "header-signed-request.txt",
        "query-canonical-request.txt",
        "query-string-to-sign.txt",
        "query-signature.txt",
        "query-signed-request.txt",
    ];

    /// Which forms of a case were checked.
    #[derive(Debug, PartialEq)]
    enum Checked {
        HeaderAndQuery,
        /// The old-format double-url-encode has no query files.
        HeaderOnly,
    }

    /// Runs one case in both forms under `rules`, comparing with the files.
    /// `path` overrides the wire path of request.txt (the S3 test encodes raw
    /// bytes the way an S3 client would before sending).
    ///
    /// The payload hash is always the SHA-256 of the body: with sign_body=false
    /// the body is empty in every case, and with sign_body=true the body hash is
    /// also sent (and signed) as x-amz-content-sha256 in the header form only.
    ///
    /// Session tokens, as the suite wants them:
    /// - get-vanilla-with-session-token, post-sts-header-before: signed in both
    ///   forms (x-amz-security-token among the signed headers; X-Amz-Security-Token
    ///   in the canonical query), which is also what S3 wants;
    /// - post-sts-header-after (omit_session_token): signed in neither; the
    ///   header is sent but not passed to the signer, and the query parameter is
    ///   appended after X-Amz-Signature has been computed without it.
    fn run_case(
        case: &str,
        ctx: &Context,
        rules: PathRules,
        path: Option<&str>,
    ) -> Result<Checked, String> {
        let raw = parse_request(&expect_case(case, "request.txt"));
        let path = path.unwrap_or(&raw.path);
        let payload = sha256_hex(&raw.body);
        let token = ctx.creds.session_token.clone();
        let check = |what: &str, want: Option<String>, got: &str| -> Result<(), String> {
            match want {
                Some(w) if w.trim_end() == got => Ok(()),
                Some(w) => Err(format!("{case} {what}:\n--- want\n{w}\n--- got\n{got}")),
                None => Ok(()),
            }
        };

        // Header form: the signer adds x-amz-date (and the body hash when the body
        // is signed, and the session token unless the case omits it from signing).
        let mut headers = raw.headers.clone();
        if header_value(&headers, "x-amz-date").is_none() {
            headers.push(("X-Amz-Date".into(), ctx.time.amz_date()));
        }
        if ctx.sign_body {
            headers.push(("x-amz-content-sha256".into(), payload.clone()));
        }
        if let (Some(t), false) = (&token, ctx.omit_session_token) {
            headers.push(("X-Amz-Security-Token".into(), t.clone()));
        }
        let req = Request {
            method: &raw.method,
            path,
            query: &raw.query,
            headers: &headers,
            payload_hash: &payload,
        };
        let creq = canonical_request(&req, rules);
        check(
            "header canonical request",
            read_case(case, "header-canonical-request.txt"),
            &creq,
        )?;
        let sts = string_to_sign(ctx.time, &ctx.region, &ctx.service, &creq);
        check(
            "header string to sign",
            read_case(case, "header-string-to-sign.txt"),
            &sts,
        )?;
        let key = signing_key(
            &ctx.creds.secret_access_key,
            ctx.time,
            &ctx.region,
            &ctx.service,
        );
        check(
            "header signature",
            read_case(case, "header-signature.txt"),
            &signature(&key, &sts),
        )?;
        let auth = authorization(&ctx.creds, &ctx.region, &ctx.service, ctx.time, &req, rules);
        let signed = parse_request(&expect_case(case, "header-signed-request.txt"));
        check(
            "Authorization",
            header_value(&signed.headers, "authorization").map(String::from),
            &auth,
        )?;
        if let Some(t) = &token {
            // Sent even when it is not signed (post-sts-header-after).
            check(
                "token header",
                header_value(&signed.headers, "x-amz-security-token").map(String::from),
                t,
            )?;
        }

        // Query form: x-amz-date travels in the query; an omitted token is
        // appended after signing.
        let Some(want_creq) = read_case(case, "query-canonical-request.txt") else {
            return Ok(Checked::HeaderOnly);
        };
        let mut sign_creds = ctx.creds.clone();
        if ctx.omit_session_token {
            sign_creds.session_token = None;
        }
        let req = Request {
            headers: &raw.headers,
            ..req
        };
        let mut query = raw.query.clone();
        query.extend(presign_params(
            &sign_creds,
            &ctx.region,
            &ctx.service,
            ctx.time,
            ctx.expires,
            &req,
        ));
        let creq = canonical_request(
            &Request {
                query: &query,
                ..req
            },
            rules,
        );
        check("query canonical request", Some(want_creq), &creq)?;
        let sts = string_to_sign(ctx.time, &ctx.region, &ctx.service, &creq);
        check(
            "query string to sign",
            read_case(case, "query-string-to-sign.txt"),
            &sts,
        )?;
        let mut params = presign(
            &sign_creds,
            &ctx.region,
            &ctx.service,
            ctx.time,
            ctx.expires,
            &req,
            rules,
        );
        let sig = params.last().expect("signature").1.clone();
        check(
            "query signature",
            read_case(case, "query-signature.txt"),
            &sig,
        )?;
        if let (Some(t), true) = (&token, ctx.omit_session_token) {
            params.push(("X-Amz-Security-Token".into(), t.clone()));
        }
        let first = expect_case(case, "query-signed-request.txt");
        let (_, target) = split_request_line(first.lines().next().unwrap());
        let mut want: Vec<(String, String)> =
            parse_query(target.split_once('?').map_or("", |(_, q)| q));
        let mut got: Vec<(String, String)> = raw.query.clone();
        got.extend(params);
        want.sort();
        got.sort();
        if want != got {
            return Err(format!("{case} signed query: want {want:?}\n got {got:?}"));
        }
        Ok(Checked::HeaderAndQuery)
    }

    fn context_of(case: &str) -> Option<Context> {
        match read_case(case, "context.json") {
            Some(json) => Some(parse_context(&json)),
            None if case == "double-url-encode" => Some(parse_context(DOUBLE_URL_ENCODE_CONTEXT)),
            None => None,
        }
    }

    /// Method and target of a file's request line (the HTTP version is not
    /// always written in the old-format cases).
    fn request_target(case: &str, file: &str) -> (String, String) {
        split_request_line(expect_case(case, file).lines().next().unwrap_or_default())
    }

    #[test]
    fn aws_sigv4_suite() {
        let names = case_names();
        let mut both_forms = 0;
        let mut header_only = Vec::new();
        let mut not_in_full = BTreeSet::new();
        let mut failures = Vec::new();
        for case in &names {
            let ctx = context_of(case);
            let rewritten = request_target(case, "request.txt")
                != request_target(case, "header-signed-request.txt");
            let Some(ctx) = ctx.filter(|_| !rewritten) else {
                not_in_full.insert(case.as_str());
                continue;
            };
            if read_case(case, "context.json").is_some() {
                for file in CASE_FILES {
                    assert!(read_case(case, file).is_some(), "{case}: {file} missing");
                }
            }
            match run_case(case, &ctx, suite_rules(&ctx), None) {
                Ok(Checked::HeaderAndQuery) => both_forms += 1,
                Ok(Checked::HeaderOnly) => header_only.push(case.as_str()),
                Err(e) => failures.push(e),
            }
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );

        // What can still be checked of double-encode-path: its path line.
        let raw = parse_request(&expect_case("double-encode-path", "request.txt"));
        let want = expect_case("double-encode-path", "header-canonical-request.txt");
        assert_eq!(
            canonical_path(&raw.path, PathRules::GENERIC),
            want.lines().nth(1).unwrap()
        );

        let expected: BTreeSet<&str> = SUITE_NOT_IN_FULL.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            not_in_full, expected,
            "cases left out differ from SUITE_NOT_IN_FULL"
        );
        assert_eq!(header_only, ["double-url-encode"]);
        println!(
            "aws-sigv4 suite: {} of {} cases verified ({both_forms} in header and query form, \
             {header_only:?} in header form, the only one it has); not in full: {not_in_full:?}",
            both_forms + header_only.len(),
            names.len(),
        );
    }

    /// Every case under S3 rules: the canonical path must be the wire path
    /// verbatim. Where that equals the suite's canonical path, the whole case
    /// must pass; the cases where it cannot are exactly S3_DIFFERS.
    #[test]
    fn aws_sigv4_suite_under_s3_rules() {
        let mut full = 0;
        let mut differs = BTreeSet::new();
        for case in &case_names() {
            let raw = parse_request(&expect_case(case, "request.txt"));
            // A raw space or non-ASCII byte cannot go on the wire: an S3 client
            // sends uri_encode(key, false), so that is the path S3 signs.
            let wire = if raw.path.bytes().any(|b| b == b' ' || !b.is_ascii()) {
                uri_encode(&raw.path, false)
            } else {
                raw.path.clone()
            };
            let req = Request {
                method: &raw.method,
                path: &wire,
                query: &raw.query,
                headers: &raw.headers,
                payload_hash: UNSIGNED_PAYLOAD,
            };
            let s3_creq = canonical_request(&req, PathRules::S3);
            assert_eq!(
                s3_creq.lines().nth(1),
                Some(wire.as_str()),
                "{case}: S3 signs the path verbatim"
            );
            let want = expect_case(case, "header-canonical-request.txt");
            if want.lines().nth(1) != Some(wire.as_str()) {
                differs.insert(case.as_str().to_string());
                continue;
            }
            let ctx = context_of(case).expect("context for a case S3 agrees with");
            run_case(case, &ctx, PathRules::S3, Some(&wire)).unwrap_or_else(|e| panic!("{e}"));
            full += 1;
        }
        let expected: BTreeSet<String> = S3_DIFFERS.iter().map(|(c, _)| c.to_string()).collect();
        assert_eq!(differs, expected, "cases where S3 differs changed");
        println!(
            "aws-sigv4 suite under S3 rules: {full} cases verified in full, {} differ by design",
            differs.len()
        );
    }

    #[test]
    fn generic_path_normalisation() {
        let n = |p: &str| canonical_path(p, PathRules::GENERIC);
        assert_eq!(n(""), "/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a//b//"), "/a/b/");
        assert_eq!(n("/../a"), "/a");
        assert_eq!(n("/a%2Fb"), "/a%252Fb");
        assert_eq!(canonical_path("", PathRules::S3), "/");
        assert_eq!(canonical_path("/a/../b//c", PathRules::S3), "/a/../b//c");
    }

    // ---------------------------------------------------------------------
    // Amazon S3's worked examples (S3 API reference, "Signature Calculations for
    // the Authorization Header: Transferring Payload in a Single Chunk", and
    // "Authenticating Requests: Using Query Parameters"). The requests below are
    // transcribed from the documented example requests and canonical requests;
    // the documented signatures confirm the transcriptions.
    // ---------------------------------------------------------------------

    const EX_TIME: UtcTime = UtcTime(1_369_353_600); // 20130524T000000Z
    const EX_HOST: &str = "examplebucket.s3.amazonaws.com";

    fn ex_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn ex_signature(req: &Request) -> String {
        let auth = authorization(&ex_creds(), "us-east-1", "s3", EX_TIME, req, PathRules::S3);
        let prefix =
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ";
        assert!(auth.starts_with(prefix), "{auth}");
        auth.rsplit_once("Signature=").unwrap().1.to_string()
    }

    #[test]
    fn s3_example_time() {
        assert_eq!(EX_TIME.amz_date(), "20130524T000000Z");
    }

    #[test]
    fn s3_example_get_object() {
        let headers = h(&[
            ("Host", EX_HOST),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let creq = canonical_request(&req, PathRules::S3);
        assert_eq!(
            creq,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The documented string to sign carries this canonical request hash.
        assert_eq!(
            string_to_sign(EX_TIME, "us-east-1", "s3", &creq),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            ex_signature(&req),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_example_put_object() {
        let body = b"Welcome to Amazon S3.";
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = h(&[
            ("Host", EX_HOST),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", &hash),
        ]);
        // The documented key is `test$file.text`; the client encodes it for the wire.
        let path = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(path, "/test%24file.text");
        let req = Request {
            method: "PUT",
            path: &path,
            query: &[],
            headers: &headers,
            payload_hash: &hash,
        };
        assert_eq!(
            canonical_request(&req, PathRules::S3),
            "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n\
             host:examplebucket.s3.amazonaws.com\n\
             x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
             x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n\
             date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
             44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        assert_eq!(
            ex_signature(&req),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    fn ex_bucket_get(query: &[(String, String)]) -> (String, String) {
        let headers = h(&[
            ("Host", EX_HOST),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
        ]);
        let req = Request {
            method: "GET",
            path: "/",
            query,
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        (canonical_request(&req, PathRules::S3), ex_signature(&req))
    }

    #[test]
    fn s3_example_get_bucket_lifecycle() {
        let (creq, sig) = ex_bucket_get(&h(&[("lifecycle", "")]));
        assert!(creq.starts_with("GET\n/\nlifecycle=\nhost:"), "{creq}");
        assert_eq!(
            sig,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn s3_example_list_objects() {
        // Given out of order on purpose: the signer sorts.
        let (creq, sig) = ex_bucket_get(&h(&[("prefix", "J"), ("max-keys", "2")]));
        assert!(
            creq.starts_with("GET\n/\nmax-keys=2&prefix=J\nhost:"),
            "{creq}"
        );
        assert_eq!(
            sig,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn s3_example_presigned_url() {
        let headers = h(&[("Host", EX_HOST)]);
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let mut query = req.query.to_vec();
        query.extend(presign_params(
            &ex_creds(),
            "us-east-1",
            "s3",
            EX_TIME,
            86_400,
            &req,
        ));
        assert_eq!(
            canonical_request(
                &Request {
                    query: &query,
                    ..req
                },
                PathRules::S3
            ),
            "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&\
             X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&\
             X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
             host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        let params = presign(
            &ex_creds(),
            "us-east-1",
            "s3",
            EX_TIME,
            86_400,
            &req,
            PathRules::S3,
        );
        let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature"
            ]
        );
        assert_eq!(
            params[1].1,
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
        );
        assert_eq!(
            params[5].1,
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn presign_signs_the_session_token() {
        let mut creds = ex_creds();
        creds.session_token = Some("tok/en+=".into());
        let headers = h(&[("Host", EX_HOST)]);
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let params = presign(&creds, "us-east-1", "s3", EX_TIME, 60, &req, PathRules::S3);
        assert_eq!(
            params[5],
            ("X-Amz-Security-Token".to_string(), "tok/en+=".to_string())
        );
        assert_eq!(params[6].0, "X-Amz-Signature");
        let without = presign(
            &ex_creds(),
            "us-east-1",
            "s3",
            EX_TIME,
            60,
            &req,
            PathRules::S3,
        );
        assert_ne!(
            params[6].1, without[5].1,
            "the token must be covered by the signature"
        );
    }

    #[test]
    fn unsigned_payload_is_passed_through() {
        let headers = h(&[
            ("host", EX_HOST),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        ]);
        let req = Request {
            method: "PUT",
            path: "/k",
            query: &[],
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let creq = canonical_request(&req, PathRules::S3);
        assert!(
            creq.ends_with("\nhost;x-amz-content-sha256\nUNSIGNED-PAYLOAD"),
            "{creq}"
        );
        assert!(
            creq.contains("\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"),
            "{creq}"
        );
    }

    #[test]
    fn header_canonicalisation() {
        let headers = h(&[
            ("X-B", "  two   words  "),
            ("Host", "h"),
            ("x-b", "second"),
            ("X-A", "\tx"),
        ]);
        let req = Request {
            method: "GET",
            path: "/",
            query: &[],
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        assert_eq!(
            canonical_request(&req, PathRules::S3),
            "GET\n/\n\nhost:h\nx-a:x\nx-b:two words,second\n\nhost;x-a;x-b\nUNSIGNED-PAYLOAD"
        );
        assert_eq!(signed_headers(&headers), "host;x-a;x-b");
    }

    #[test]
    fn query_sorting_uses_encoded_forms() {
        let q = h(&[
            ("b", "2"),
            ("a", "z"),
            ("a", "y"),
            ("A", "1"),
            ("c d", "e/f"),
            ("~", ""),
        ]);
        assert_eq!(canonical_query(&q), "A=1&a=y&a=z&b=2&c%20d=e%2Ff&~=");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn uri_encode_edge_cases() {
        let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
        assert_eq!(uri_encode(unreserved, true), unreserved);
        assert_eq!(uri_encode("", true), "");
        assert_eq!(uri_encode("a/b", false), "a/b");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode(" ", true), "%20");
        assert_eq!(uri_encode("+", true), "%2B");
        assert_eq!(uri_encode("*", true), "%2A");
        assert_eq!(uri_encode("%", true), "%25");
        assert_eq!(uri_encode("=&?#", false), "%3D%26%3F%23");
        assert_eq!(uri_encode("ሴ", true), "%E1%88%B4");
        assert_eq!(uri_encode("\u{0}\u{7f}", true), "%00%7F");
        assert_eq!(
            uri_encode("wal_005/000000010000000000000001.br", false),
            "wal_005/000000010000000000000001.br"
        );
    }

    #[test]
    fn credentials_debug_redacts_secrets() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("SESSIONTOKENVALUE".into()),
        };
        let dbg = format!("{creds:?} {creds:#?}");
        assert!(dbg.contains("AKIDEXAMPLE"));
        assert!(!dbg.contains("wJalrXUtnFEMI"));
        assert!(!dbg.contains("EXAMPLEKEY"));
        assert!(!dbg.contains("SESSIONTOKENVALUE"));
        let none = Credentials {
            session_token: None,
            ..creds
        };
        assert!(format!("{none:?}").contains("session_token: None"));
    }

    #[test]
    fn utc_time_formatting() {
        let cases = [
            (0, "19700101T000000Z"),
            (1_440_938_160, "20150830T123600Z"),
            (951_782_400, "20000229T000000Z"), // 2000 is a leap year (divisible by 400)
            (951_868_800, "20000301T000000Z"),
            (1_709_164_800, "20240229T000000Z"),
            (1_709_251_199, "20240229T235959Z"),
            (4_107_542_400, "21000301T000000Z"), // 2100 is not: Feb 28 -> Mar 1
            (4_107_542_399, "21000228T235959Z"),
            (1_795_478_400, "20261124T000000Z"),
            (1_795_564_799, "20261124T235959Z"),
            (-1, "19691231T235959Z"),
        ];
        for (secs, want) in cases {
            let t = UtcTime(secs);
            assert_eq!(t.amz_date(), want, "{secs}");
            assert_eq!(t.date(), &want[..8], "{secs}");
            assert_eq!(
                parse_rfc3339_utc(&format!(
                    "{}-{}-{}T{}:{}:{}Z",
                    &want[0..4],
                    &want[4..6],
                    &want[6..8],
                    &want[9..11],
                    &want[11..13],
                    &want[13..15]
                )),
                t
            );
        }
        let now = UtcTime::now();
        assert!(now.0 > 1_700_000_000, "system clock before 2023?");
    }

    #[test]
    fn signing_key_matches_aws_documentation() {
        // AWS General Reference "Examples of how to derive a signing key":
        // 20120215, us-east-1, iam.
        let t = parse_rfc3339_utc("2012-02-15T00:00:00Z");
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            t,
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}

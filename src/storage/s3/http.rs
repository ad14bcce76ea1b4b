//! One S3 call = one signed HTTP request, with timeouts on every connection and bounded
//! retries with exponential back-off and jitter.
//!
//! Retryable versus permanent is decided by `StorageError::is_retryable`: 5xx, throttling,
//! resets and timeouts are tried again up to `max_retries` times; other 4xx answers (wrong key,
//! missing bucket, denied) fail at once with S3's own code and message.

use super::sign::{self, PathRules, UtcTime};
use super::{S3Config, xml};
use crate::storage::{Op, StorageError};
use std::io::Read;
use std::time::Duration;

use crate::storage::net::{Retrier, RetryPolicy, closed_while_sending, transport_detail};
pub use crate::storage::net::{describe_body, parse_http_date, read_small_body};

/// The hash S3 expects for an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub use crate::storage::net::Body;

/// One S3 operation, before signing.
pub struct Call<'a> {
    /// HTTP method.
    pub method: &'static str,
    /// The S3 operation, for messages and for telling a missing object from a missing upload.
    pub op: Op,
    /// Full object key inside the bucket, or `None` for bucket-level calls.
    pub key: Option<&'a str>,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// Extra headers (lower-case names); all of them are signed.
    pub headers: Vec<(String, String)>,
    /// Hex SHA-256 of the body.
    pub payload_hash: String,
}

impl<'a> Call<'a> {
    /// A call without body or parameters.
    pub fn new(method: &'static str, op: Op, key: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            op,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            payload_hash: EMPTY_SHA256.into(),
        }
    }

    fn what(&self, bucket: &str) -> String {
        self.key.unwrap_or(bucket).to_string()
    }
}

/// The HTTP side of S3: addressing, signing, sending, retrying.
pub struct Client {
    /// Resolved settings.
    pub cfg: S3Config,
    scheme: String,
    /// `host[:port]` as sent in the Host header.
    authority: String,
    virtual_host: bool,
    agent: ureq::Agent,
    retrier: Retrier,
}

/// S3's rule for bucket names usable as a DNS label (else path style is used).
fn dns_compatible(bucket: &str, https: bool) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0] != b'.'
        && b[0] != b'-'
        && b[b.len() - 1] != b'.'
        && b[b.len() - 1] != b'-'
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err()
        && !(https && bucket.contains('.'))
}

impl Client {
    /// Resolves addressing and builds the HTTP agent.
    pub fn new(cfg: S3Config) -> Result<Client, StorageError> {
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let (scheme, rest) = match endpoint.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            // An endpoint without a scheme is HTTPS, as in the AWS SDK.
            None => ("https".to_string(), endpoint.as_str()),
        };
        if scheme != "http" && scheme != "https" {
            return Err(StorageError::Transport {
                op: Op::Configure,
                key: String::new(),
                detail: format!("AWS_ENDPOINT scheme must be http or https, got {scheme}"),
            });
        }
        let authority = rest.split('/').next().unwrap_or("").to_string();
        let https = scheme == "https";
        let virtual_host = !cfg.force_path_style && dns_compatible(&cfg.bucket, https);
        let agent = crate::storage::net::build_agent(
            &crate::storage::net::AgentSettings {
                connect_timeout: cfg.connect_timeout,
                io_timeout: cfg.io_timeout,
                ca_cert_file: cfg.ca_cert_file.clone(),
                ca_setting: "WALG_S3_CA_CERT_FILE",
            },
            https,
        )?;
        let retrier = Retrier::new(RetryPolicy {
            max_retries: cfg.max_retries,
            min_throttle_delay: cfg.min_throttle_delay,
            max_throttle_delay: cfg.max_throttle_delay,
        });
        Ok(Client {
            cfg,
            scheme,
            authority,
            virtual_host,
            agent,
            retrier,
        })
    }

    /// `scheme://host` for messages.
    pub fn endpoint_display(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    fn host(&self) -> String {
        if self.virtual_host {
            format!("{}.{}", self.cfg.bucket, self.authority)
        } else {
            self.authority.clone()
        }
    }

    /// The wire path: `/key` (virtual host) or `/bucket/key` (path style), percent-encoded.
    fn path(&self, key: Option<&str>) -> String {
        let key = key.map(|k| sign::uri_encode(k, false)).unwrap_or_default();
        if self.virtual_host {
            format!("/{key}")
        } else if key.is_empty() {
            format!("/{}", sign::uri_encode(&self.cfg.bucket, true))
        } else {
            format!("/{}/{key}", sign::uri_encode(&self.cfg.bucket, true))
        }
    }

    /// The signed request for `call`, without its body. The Host header we sign is the one
    /// ureq sends: the URL's authority.
    fn signed_request(&self, call: &Call) -> Result<ureq::Request, StorageError> {
        let credentials = self.cfg.credentials.current()?;
        let host = self.host();
        let path = self.path(call.key);
        let now = UtcTime::now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.clone()),
            ("x-amz-content-sha256".into(), call.payload_hash.clone()),
            ("x-amz-date".into(), now.amz_date()),
        ];
        if let Some(token) = &credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        // Every extra header is signed: x-amz-*, content-md5 and range are all part of what
        // S3 must not let a middlebox change.
        headers.extend(call.headers.iter().cloned());
        headers.extend(self.customer_key_headers(call.op));
        let req = sign::Request {
            method: call.method,
            path: &path,
            query: &call.query,
            headers: &headers,
            payload_hash: &call.payload_hash,
        };
        let auth = sign::authorization(
            &credentials,
            &self.cfg.region,
            "s3",
            now,
            &req,
            PathRules::S3,
        );
        let mut url = format!("{}://{}{}", self.scheme, host, path);
        if !call.query.is_empty() {
            url.push('?');
            url.push_str(&query_string(&call.query));
        }
        let mut request = self
            .agent
            .request(call.method, &url)
            .set("Authorization", &auth);
        // ureq writes the Host header from the URL itself; everything else we set.
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            request = request.set(k, v);
        }
        Ok(request)
    }

    /// SSE-C's headers for the calls that write or read an object's bytes (S3 wants the key
    /// on each of them, parts included), as WAL-G's SDK sends them: the algorithm is
    /// `WALG_S3_SSE`'s value, the key base64 of the setting's bytes, with its MD5.
    fn customer_key_headers(&self, op: Op) -> Vec<(String, String)> {
        let Some(key) = &self.cfg.sse_customer_key else {
            return Vec::new();
        };
        let needs = matches!(
            op,
            Op::PutObject
                | Op::CreateMultipartUpload
                | Op::UploadPart
                | Op::GetObject
                | Op::HeadObject
        );
        if !needs {
            return Vec::new();
        }
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        vec![
            (
                "x-amz-server-side-encryption-customer-algorithm".into(),
                self.cfg.sse.clone().unwrap_or_else(|| "AES256".into()),
            ),
            (
                "x-amz-server-side-encryption-customer-key".into(),
                b64.encode(key.as_bytes()),
            ),
            (
                "x-amz-server-side-encryption-customer-key-md5".into(),
                content_md5(key.as_bytes()),
            ),
        ]
    }

    /// Sends `call` once.
    pub fn send_once(&self, call: &Call, body: Body) -> Result<ureq::Response, StorageError> {
        let request = self.signed_request(call)?;
        let what = call.what(&self.cfg.bucket);
        let has_body = body.is_some();
        match crate::storage::net::body::send(request, call.method, body) {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(status_error(call, &what, status, resp)),
            Err(ureq::Error::Transport(t)) => {
                let broken = StorageError::Transport {
                    op: call.op,
                    key: what,
                    detail: format!("{} ({})", transport_detail(&t), self.endpoint_display()),
                };
                if has_body && closed_while_sending(&t) {
                    return Err(self.why_closed(call, broken));
                }
                Err(broken)
            }
        }
    }

    /// After the server closed the connection while a body was still being sent: S3 answers
    /// a request it refuses (a wrong key, a missing bucket, a denied write) as soon as it
    /// has its headers and then closes, and the client only sees a broken pipe. The answer
    /// itself is lost with the connection, so a small signed listing of the same bucket
    /// asks again: if it is refused for good, so was the upload, and that refusal (with
    /// S3's code and message) is returned at once instead of a retried broken pipe.
    fn why_closed(&self, call: &Call, broken: StorageError) -> StorageError {
        let mut probe = Call::new("GET", Op::ListObjectsV2, None);
        probe.query.push(("list-type".into(), "2".into()));
        probe.query.push(("max-keys".into(), "0".into()));
        probe.query.push(("prefix".into(), self.cfg.root.clone()));
        let answer = self.send_once(&probe, Body::Empty);
        crate::storage::net::refused_like_probe(
            answer,
            call.op,
            &call.what(&self.cfg.bucket),
            broken,
        )
    }

    /// Sends `call`, retrying what is retryable; `body` makes a fresh body for each attempt.
    pub fn send_with_retries<'b>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Body<'b>,
    ) -> Result<ureq::Response, StorageError> {
        self.retry(call.op, &mut || self.send_once(call, body()))
    }

    /// Sends `call`, reads its small answer (a listing, an upload id) and parses it,
    /// retrying all three: an answer that breaks off half-way, or arrives garbled (S3's XML
    /// answers carry no checksum), is as worth another try as one that never came.
    pub fn send_and_parse<'b, T>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Body<'b>,
        parse: &dyn Fn(&[u8]) -> Result<T, xml::XmlError>,
    ) -> Result<T, StorageError> {
        let what = call.what(&self.cfg.bucket);
        self.retry(call.op, &mut || {
            let resp = self.send_once(call, body())?;
            let bytes = read_small_body(resp, call.op, &what)?;
            parse(&bytes).map_err(|e| StorageError::Garbled {
                op: call.op,
                key: what.clone(),
                detail: e.to_string(),
            })
        })
    }

    /// Runs `attempt` until it succeeds, fails permanently, or retries run out.
    pub fn retry<T>(
        &self,
        op: Op,
        attempt: &mut dyn FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.retrier.run(op, attempt)
    }

    /// The pause before retry `attempt` (see [`Retrier::backoff`]).
    pub fn backoff(&self, attempt: u32, throttled: bool) -> Duration {
        self.retrier.backoff(attempt, throttled)
    }
}

/// The query as sent: each name and value encoded as it is signed, in the caller's order.
pub fn query_string(query: &[(String, String)]) -> String {
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                sign::uri_encode(k, true),
                sign::uri_encode(v, true)
            )
        })
        .collect();
    pairs.join("&")
}

/// Turns an error answer into a `StorageError`, reading S3's `<Error>` document when there is
/// one and describing anything else (an HTML page from a proxy, say) without dumping it.
fn status_error(call: &Call, what: &str, status: u16, resp: ureq::Response) -> StorageError {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut body);
    let parsed = xml::parse_error(&body);
    let (code, message) = match parsed {
        Some(e) => (e.code, e.message),
        None if body.is_empty() => (
            match status {
                404 => "NotFound".to_string(),
                403 => "Forbidden".to_string(),
                _ => "(no error document)".to_string(),
            },
            String::new(),
        ),
        None => ("non-S3 error page".to_string(), describe_body(&body)),
    };
    let is_missing_object = status == 404
        && call.key.is_some()
        && (code == "NoSuchKey" || code == "NotFound")
        && call.op != Op::UploadPart;
    if is_missing_object {
        return StorageError::NotFound {
            key: what.to_string(),
        };
    }
    let message = match code.as_str() {
        "NoSuchBucket" => format!("bucket does not exist. {message}"),
        "SignatureDoesNotMatch" => format!("{message} (check AWS_SECRET_ACCESS_KEY)"),
        "InvalidAccessKeyId" => format!("{message} (check AWS_ACCESS_KEY_ID)"),
        _ => message,
    };
    StorageError::Remote {
        op: call.op,
        key: what.to_string(),
        status,
        code,
        message,
    }
}

/// Base64 of the MD5 digest, for `Content-MD5` (DeleteObjects requires it).
pub fn content_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "http_fault_tests.rs"]
mod fault_tests;

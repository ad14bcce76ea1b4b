//! One GCS call = one HTTP request to the JSON API, with a bearer token when credentials are
//! configured, timeouts on every connection and bounded retries (`storage::net`, shared with
//! the other clouds), plus WAL-G's `GCS_CONTEXT_TIMEOUT` as the longest one call may take with
//! its retries.
//!
//! Retryable versus permanent is `StorageError::is_retryable`'s decision: 5xx, 408, 429,
//! resets and timeouts are tried again; other 4xx (denied, missing bucket) fail at once with
//! GCS's reason and message. A 401 drops the kept token and tries once more with a new one.

use super::GcsConfig;
use super::json::{self, ObjectResource};
use super::token::Tokens;
use crate::storage::net::{
    AgentSettings, Retrier, RetryPolicy, build_agent, closed_while_sending, describe_body,
    read_small_body, transport_detail,
};
use crate::storage::{Op, StorageError};
use std::io::Read;
use std::time::{Duration, Instant};

pub use crate::storage::net::Body;

/// One request, before credentials are added.
pub struct Call<'a> {
    /// HTTP method.
    pub method: &'static str,
    /// The GCS operation, for messages and for telling a missing object from a missing bucket.
    pub op: Op,
    /// Full object name (or the listing's prefix), for messages.
    pub key: &'a str,
    /// The whole URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    /// A call of `op` on `key` at `url`.
    pub fn new(method: &'static str, op: Op, key: &'a str, url: String) -> Call<'a> {
        Call {
            method,
            op,
            key,
            url,
            headers: Vec::new(),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`/` too: an object name
/// is one path segment of the JSON API).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from decoded pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The HTTP side of GCS: addressing, credentials, sending, retrying.
pub struct Client {
    /// Resolved settings.
    pub cfg: GcsConfig,
    agent: ureq::Agent,
    retrier: Retrier,
    tokens: Tokens,
}

impl Client {
    /// Builds the agent (with the TLS trust list when the endpoint or the token endpoint is
    /// HTTPS).
    pub fn new(cfg: GcsConfig) -> Result<Client, StorageError> {
        let token_https = matches!(&cfg.auth, super::auth::Auth::ServiceAccount(sa)
            if sa.token_uri.starts_with("https://"));
        let agent = build_agent(
            &AgentSettings {
                connect_timeout: cfg.connect_timeout,
                io_timeout: cfg.io_timeout,
                ca_cert_file: None,
                ca_setting: "the system CA store",
            },
            cfg.endpoint.starts_with("https://") || token_https,
        )?;
        let retrier = Retrier::new(RetryPolicy {
            max_retries: cfg.max_retries,
            ..RetryPolicy::default()
        });
        Ok(Client {
            tokens: Tokens::new(cfg.auth.clone()),
            cfg,
            agent,
            retrier,
        })
    }

    /// The full object name of `key` (relative to the storage root).
    pub fn name(&self, key: &str) -> String {
        crate::storage::rooted(&self.cfg.root, key)
    }

    /// `scheme://host[:port]` and the credentials, for messages.
    pub fn describe(&self) -> String {
        format!("{} with {}", self.cfg.endpoint, self.tokens.describe())
    }

    /// The JSON API URL of object `key` (full name), with `query`.
    pub fn object_url(&self, key: &str, query_pairs: &[(&str, &str)]) -> String {
        let mut url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.cfg.endpoint,
            encode(&self.cfg.bucket),
            encode(key)
        );
        if !query_pairs.is_empty() {
            url.push('?');
            url.push_str(&query(query_pairs));
        }
        url
    }

    /// The JSON API URL of the bucket's object collection (listings).
    pub fn objects_url(&self, query_pairs: &[(&str, &str)]) -> String {
        format!(
            "{}/storage/v1/b/{}/o?{}",
            self.cfg.endpoint,
            encode(&self.cfg.bucket),
            query(query_pairs)
        )
    }

    /// The upload URL of the bucket's object collection.
    pub fn upload_url(&self, query_pairs: &[(&str, &str)]) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?{}",
            self.cfg.endpoint,
            encode(&self.cfg.bucket),
            query(query_pairs)
        )
    }

    /// Whether `url` is on the configured endpoint: only there does a token go.
    fn ours(&self, url: &str) -> bool {
        url.strip_prefix(&self.cfg.endpoint)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The customer-supplied encryption key's headers (`GCS_ENCRYPTION_KEY`), for the
    /// requests that write or read an object's data.
    pub fn csek_headers(&self) -> Vec<(&'static str, String)> {
        match &self.cfg.encryption_key {
            Some(k) => vec![
                ("x-goog-encryption-algorithm", "AES256".to_string()),
                ("x-goog-encryption-key", k.key_base64().to_string()),
                (
                    "x-goog-encryption-key-sha256",
                    k.sha256_base64().to_string(),
                ),
            ],
            None => Vec::new(),
        }
    }

    /// Sends `call` once.
    pub fn send_once(&self, call: &Call, body: Body) -> Result<ureq::Response, StorageError> {
        let mut request = self.agent.request(call.method, &call.url);
        if self.ours(&call.url)
            && let Some(bearer) = self.tokens.bearer(&self.agent)?
        {
            request = request.set("Authorization", &bearer);
        }
        for (k, v) in &call.headers {
            request = request.set(k, v);
        }
        let has_body = body.is_some();
        match crate::storage::net::body::send(request, call.method, body) {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(self.status_error(call, status, resp)),
            Err(ureq::Error::Transport(t)) => {
                let broken = StorageError::Transport {
                    op: call.op,
                    key: call.key.to_string(),
                    detail: format!("{} ({})", transport_detail(&t), self.cfg.endpoint),
                };
                if has_body && closed_while_sending(&t) {
                    return Err(self.why_closed(call, broken));
                }
                Err(broken)
            }
        }
    }

    /// After the server closed the connection while a body was still being sent: a
    /// one-item listing of the same bucket asks again why (see `refused_like_probe`).
    fn why_closed(&self, call: &Call, broken: StorageError) -> StorageError {
        let url = self.objects_url(&[("prefix", &self.cfg.root), ("maxResults", "1")]);
        let probe = Call::new("GET", Op::GcsList, call.key, url);
        let answer = self.send_once(&probe, Body::Empty);
        crate::storage::net::refused_like_probe(answer, call.op, call.key, broken)
    }

    /// Sends `call`, retrying what is retryable; `body` makes a fresh body for each attempt.
    pub fn send_with_retries<'b>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Result<Body<'b>, StorageError>,
    ) -> Result<ureq::Response, StorageError> {
        let mut reauthorized = false;
        self.retry(call.op, call.key, &mut || {
            self.send_authorized(call, body, &mut reauthorized)
        })
    }

    /// Sends `call` and parses its small JSON answer, retrying all of it: an answer cut
    /// off or garbled on the way is as worth another try as one that never came.
    pub fn send_and_parse<'b, T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Result<Body<'b>, StorageError>,
    ) -> Result<T, StorageError> {
        let mut reauthorized = false;
        self.retry(call.op, call.key, &mut || {
            let resp = self.send_authorized(call, body, &mut reauthorized)?;
            parse_answer(resp, call.op, call.key)
        })
    }

    /// Sends `call` once; when GCS refuses the token (401: revoked, rotated), drops it and
    /// sends once more with a new one, once per call.
    fn send_authorized<'b>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Result<Body<'b>, StorageError>,
        reauthorized: &mut bool,
    ) -> Result<ureq::Response, StorageError> {
        match self.send_once(call, body()?) {
            Err(StorageError::Remote { status: 401, .. })
                if self.tokens.active() && !*reauthorized =>
            {
                *reauthorized = true;
                self.tokens.invalidate();
                self.send_once(call, body()?)
            }
            other => other,
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, retries run out, or
    /// `GCS_CONTEXT_TIMEOUT` has passed since the first attempt.
    pub fn retry<T>(
        &self,
        op: Op,
        key: &str,
        attempt: &mut dyn FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let deadline = Instant::now() + self.cfg.context_timeout;
        let mut last: Option<String> = None;
        self.retrier.run(op, &mut || {
            if let Some(prev) = &last
                && Instant::now() >= deadline
            {
                return Err(StorageError::Io {
                    op,
                    key: key.to_string(),
                    source: std::io::Error::other(format!(
                        "gave up after GCS_CONTEXT_TIMEOUT ({} s); last error: {prev}",
                        self.cfg.context_timeout.as_secs()
                    )),
                });
            }
            attempt().inspect_err(|e| last = Some(e.to_string()))
        })
    }

    /// The pause before retry `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retrier.backoff(attempt, false)
    }

    /// Turns an error answer into a `StorageError`: a missing object is `NotFound`, a
    /// missing bucket says so, GCS's reason and message are kept.
    fn status_error(&self, call: &Call, status: u16, resp: ureq::Response) -> StorageError {
        let mut body = Vec::new();
        let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut body);
        let (reason, message) = match json::parse_error(&body) {
            Some(e) => (e.reason, e.message),
            None => (String::new(), describe_body(&body)),
        };
        let code = match (reason.is_empty(), status) {
            (false, _) => reason,
            (true, 408) => "RequestTimeout".to_string(),
            (true, _) => format!(
                "(no GCS error document{})",
                if body.is_empty() { "" } else { ": see message" }
            ),
        };
        let bucket_named = message.to_ascii_lowercase().contains("bucket");
        if status == 404 && matches!(call.op, Op::GcsGet | Op::GcsDelete) && !bucket_named {
            return StorageError::NotFound {
                key: call.key.to_string(),
            };
        }
        let message = match status {
            404 if matches!(call.op, Op::GcsList | Op::GcsInsert) || bucket_named => format!(
                "bucket {} does not exist (or is not visible to {}). {message}",
                self.cfg.bucket,
                self.tokens.describe()
            ),
            404 if call.op == Op::GcsUploadChunk => {
                format!("the resumable upload session is gone (expired or cancelled). {message}")
            }
            401 => format!(
                "{message} (credentials refused: {})",
                self.tokens.describe()
            ),
            403 => format!("{message} ({} lacks permission)", self.tokens.describe()),
            _ => message,
        };
        StorageError::Remote {
            op: call.op,
            key: call.key.to_string(),
            status,
            code,
            message,
        }
    }
}

/// Reads and parses a small JSON answer; an unreadable one is `Garbled` (retried).
pub fn parse_answer<T: serde::de::DeserializeOwned>(
    resp: ureq::Response,
    op: Op,
    key: &str,
) -> Result<T, StorageError> {
    let bytes = read_small_body(resp, op, key)?;
    serde_json::from_slice(&bytes).map_err(|e| StorageError::Garbled {
        op,
        key: key.to_string(),
        detail: format!("{e}; answer begins {}", describe_body(&bytes)),
    })
}

/// The object resource of an upload's final answer.
pub fn stored_object(
    resp: ureq::Response,
    op: Op,
    key: &str,
) -> Result<ObjectResource, StorageError> {
    parse_answer(resp, op, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(encode("pg/wal_005/0001.lz4"), "pg%2Fwal_005%2F0001.lz4");
        assert_eq!(encode("a b+c~d"), "a%20b%2Bc~d");
        assert_eq!(encode("ä"), "%C3%A4");
        assert_eq!(
            query(&[("prefix", "p/wal_005/"), ("delimiter", "/")]),
            "prefix=p%2Fwal_005%2F&delimiter=%2F"
        );
    }
}

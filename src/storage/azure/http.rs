//! One Blob service call = one authorized HTTP request (Shared Key header, the SAS token
//! appended to the query, or an Entra ID bearer token), with the shared agent's timeouts, a per-try deadline
//! (`AZURE_TRY_TIMEOUT`) and the shared bounded retries.
//!
//! Retryable versus permanent is decided by `StorageError::is_retryable`. Azure's error
//! code comes from the `x-ms-error-code` header (a HEAD has no body) or the `<Error>`
//! document, whose message's first line is kept; a missing blob is `NotFound`. URLs are
//! never put in a message: with a SAS their query is a credential.

use super::sign::{self, Request};
use super::{AzureAuth, AzureConfig, xml};
pub use crate::storage::net::Body;
use crate::storage::net::{Coalesced, Retrier, RetryPolicy, Sent, describe_body, parse_small};
use crate::storage::{Op, StorageError};
use crate::time::UtcTime;
use std::io::Read;
use std::time::Duration;

/// The Blob service version sent: one every Azure region and Azurite 3.37 accept, recent
/// enough for 4000 MiB blocks and the `x-ms-error-code` header.
pub const API_VERSION: &str = "2021-08-06";

/// One Blob service operation, before it is authorized.
pub struct Call<'a> {
    /// HTTP method.
    pub method: &'static str,
    /// The operation, for messages and for telling a missing blob from a missing container.
    pub op: Op,
    /// The blob's full name in the container, or `None` for container calls.
    pub blob: Option<&'a str>,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// Extra headers (lower-case names); with Shared Key all are signed.
    pub headers: Vec<(String, String)>,
}

impl<'a> Call<'a> {
    /// A call without parameters or extra headers.
    pub fn new(method: &'static str, op: Op, blob: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            op,
            blob,
            query: Vec::new(),
            headers: Vec::new(),
        }
    }
}

/// The HTTP side of the Blob service: addressing, authorization, sending, retrying.
pub struct Client {
    /// Resolved settings.
    pub cfg: AzureConfig,
    scheme: String,
    /// `host[:port]`.
    authority: String,
    /// The endpoint's own path: empty for `https://ACCOUNT.blob.core.windows.net`,
    /// `/devstoreaccount1` for an emulator's path-style endpoint.
    base_path: String,
    agent: ureq::Agent,
    retrier: Retrier,
}

impl Client {
    /// Splits the endpoint and builds the HTTP agent.
    pub fn new(cfg: AzureConfig) -> Result<Client, StorageError> {
        let bad = |detail: String| StorageError::Transport {
            op: Op::Configure,
            key: String::new(),
            detail,
        };
        let (scheme, rest) = cfg
            .endpoint
            .split_once("://")
            .ok_or_else(|| bad(format!("endpoint {} has no scheme", cfg.endpoint)))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad(format!(
                "endpoint scheme must be http or https, got {scheme}"
            )));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_matches('/');
        let base_path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        let agent = crate::storage::net::build_agent(
            &crate::storage::net::AgentSettings {
                connect_timeout: cfg.connect_timeout,
                io_timeout: cfg.io_timeout,
                ca_cert_file: None,
                ca_setting: "the system's CA store",
            },
            scheme == "https",
        )?;
        let retrier = Retrier::new(RetryPolicy {
            max_retries: cfg.max_retries,
            ..RetryPolicy::default()
        });
        Ok(Client {
            authority: authority.to_string(),
            base_path,
            scheme,
            cfg,
            agent,
            retrier,
        })
    }

    /// `scheme://host/path` of the endpoint, for messages.
    pub fn endpoint_display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }

    /// What a message names: the blob, or the container.
    fn what(&self, call: &Call) -> String {
        call.blob.unwrap_or(&self.cfg.container).to_string()
    }

    /// The authorized request for `call` carrying `content_length`, without its body;
    /// `bearer` is the token's `Authorization` when tokens authorize.
    fn request(
        &self,
        call: &Call,
        content_length: Option<u64>,
        bearer: Option<String>,
    ) -> ureq::Request {
        let mut path = format!(
            "{}/{}",
            self.base_path,
            sign::encode(&self.cfg.container, false)
        );
        if let Some(blob) = call.blob {
            path.push('/');
            path.push_str(&sign::encode(blob, true));
        }
        let mut headers = vec![
            ("x-ms-date".to_string(), UtcTime::now().http_date()),
            ("x-ms-version".to_string(), API_VERSION.to_string()),
        ];
        if let Some(len) = content_length {
            headers.push(("content-length".into(), len.to_string()));
        }
        headers.extend(call.headers.iter().cloned());
        let mut query: Vec<String> = call
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", sign::encode(k, false), sign::encode(v, false)))
            .collect();
        let mut auth = bearer;
        match &self.cfg.auth {
            AzureAuth::SharedKey(key) => {
                auth = Some(key.authorization(&Request {
                    method: call.method,
                    path: &path,
                    query: &call.query,
                    headers: &headers,
                }));
            }
            AzureAuth::Sas(token) => query.push(token.clone()),
            AzureAuth::Token(_) => {}
        }
        let mut url = format!("{}://{}{}", self.scheme, self.authority, path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let mut request = self.agent.request(call.method, &url);
        // One try of a call is bounded as a whole; a blob's body is not (a long download
        // is resumed by its reader, each read bounded by the agent's timeout).
        if call.op != Op::AzGetBlob && !self.cfg.try_timeout.is_zero() {
            request = request.timeout(self.cfg.try_timeout);
        }
        if let Some(auth) = auth {
            request = request.set("Authorization", &auth);
        }
        for (k, v) in &headers {
            request = request.set(k, v);
        }
        request
    }

    /// Sends `call` once.
    pub fn send_once(&self, call: &Call, body: Body) -> Result<ureq::Response, StorageError> {
        let what = self.what(call);
        let has_body = !matches!(body, Body::Empty);
        let bearer = match &self.cfg.auth {
            AzureAuth::Token(tokens) => Some(tokens.bearer(&self.agent)?),
            _ => None,
        };
        let result = match body {
            Body::Empty if call.method == "PUT" => {
                self.request(call, Some(0), bearer).send_bytes(&[])
            }
            Body::Empty => self.request(call, None, bearer).call(),
            Body::Bytes(b) => self
                .request(call, Some(b.len() as u64), bearer)
                .send_bytes(b),
            Body::Stream(reader, len) => self
                .request(call, Some(len), bearer)
                .send(Coalesced(reader)),
        };
        Sent {
            op: call.op,
            what: what.clone(),
            endpoint: self.endpoint_display(),
            has_body,
            status_error: &|status, resp| self.status_error(call, status, resp),
            probe: &|| {
                // Azure answers a refused request (a wrong key, a missing container) as
                // soon as it has the headers.
                let mut probe = Call::new("GET", Op::AzListBlobs, None);
                probe.query = list_query(&self.cfg.root, None, Some(1));
                self.send_once(&probe, Body::Empty)
            },
        }
        .settle(result)
    }

    /// Sends `call`, retrying what is retryable; `body` makes a fresh body for each attempt.
    pub fn send_with_retries<'b>(
        &self,
        call: &Call,
        body: &mut dyn FnMut() -> Body<'b>,
    ) -> Result<ureq::Response, StorageError> {
        self.retry(call.op, &mut || self.send_once(call, body()))
    }

    /// Sends `call`, reads its small answer and parses it, retrying all three.
    pub fn send_and_parse<T>(
        &self,
        call: &Call,
        parse: &dyn Fn(&[u8]) -> Result<T, crate::storage::net::xml::XmlError>,
    ) -> Result<T, StorageError> {
        let what = self.what(call);
        self.retry(call.op, &mut || {
            parse_small(self.send_once(call, Body::Empty)?, call.op, &what, parse)
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

    /// The pause before retry `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retrier.backoff(attempt, false)
    }

    /// Turns an error answer into a `StorageError` with Azure's code and message, and a
    /// hint for the codes a setting can cure.
    fn status_error(&self, call: &Call, status: u16, resp: ureq::Response) -> StorageError {
        if let (401, AzureAuth::Token(tokens)) = (status, &self.cfg.auth) {
            // Revoked or expired early: the next try fetches a new one.
            tokens.invalidate();
        }
        let header_code = resp.header("x-ms-error-code").map(str::to_string);
        let mut body = Vec::new();
        let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut body);
        let parsed = xml::parse_error(&body);
        let code = header_code
            .or_else(|| parsed.as_ref().map(|e| e.code.clone()))
            .filter(|c| !c.is_empty());
        let message = match &parsed {
            Some(e) => e.message.clone(),
            None if body.is_empty() => String::new(),
            None => describe_body(&body),
        };
        let code = code.unwrap_or_else(|| match (status, parsed.is_some() || body.is_empty()) {
            (404, true) => "NotFound".into(),
            (403, true) => "Forbidden".into(),
            (_, true) => "(no error code)".into(),
            (_, false) => "non-Azure error page".into(),
        });
        let blob_call = matches!(
            call.op,
            Op::AzGetBlob | Op::AzGetBlobProperties | Op::AzDeleteBlob
        );
        if status == 404 && blob_call && (code == "BlobNotFound" || code == "NotFound") {
            return StorageError::NotFound {
                key: self.what(call),
            };
        }
        let message = match code.as_str() {
            "ContainerNotFound" => format!(
                "container {} does not exist at {} (wal-rus does not create containers, nor \
                 does WAL-G). {message}",
                self.cfg.container,
                self.endpoint_display()
            ),
            "AuthenticationFailed" | "InvalidAuthenticationInfo" => {
                format!("{message} ({})", self.cfg.auth.hint())
            }
            _ if status == 401 => format!("{message} ({})", self.cfg.auth.hint()),
            // Azurite says this of a wrong signature too; Azure of a credential or a
            // network rule that does not allow the operation.
            "AuthorizationFailure" | "AuthorizationPermissionMismatch" => format!(
                "{message} ({}; or the {} is not allowed this operation)",
                self.cfg.auth.hint(),
                self.cfg.auth.label()
            ),
            _ => message,
        };
        StorageError::Remote {
            op: call.op,
            key: self.what(call),
            status,
            code,
            message,
        }
    }
}

/// The query of a List Blobs page.
pub fn list_query(
    prefix: &str,
    marker: Option<&str>,
    max_results: Option<u32>,
) -> Vec<(String, String)> {
    let mut q = vec![
        ("restype".to_string(), "container".to_string()),
        ("comp".to_string(), "list".to_string()),
        ("prefix".to_string(), prefix.to_string()),
    ];
    if let Some(m) = marker {
        q.push(("marker".into(), m.to_string()));
    }
    if let Some(n) = max_results {
        q.push(("maxresults".into(), n.to_string()));
    }
    q
}

/// Base64 of the MD5 digest, for `Content-MD5` and `x-ms-blob-content-md5`.
pub fn md5_base64(md5: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(md5)
}

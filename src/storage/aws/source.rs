//! Where credentials come from, as plain values decided by `config`, and the one call that
//! fetches from each.

use super::{Credentials, Expiring, ecs, imds, sts};
use crate::storage::net::{
    AgentSettings, Retrier, RetryPolicy, build_agent, describe_body, read_small_body,
    transport_detail,
};
use crate::storage::{Op, StorageError};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// How credential services are reached: timeouts, trust and retries, and the agents built
/// from them on first use (a refresh in a long backup reuses them).
#[derive(Debug)]
pub struct Http {
    /// Timeouts and trust.
    pub agent: AgentSettings,
    /// Retries of every credential call.
    pub retry: RetryPolicy,
    agents: [OnceLock<ureq::Agent>; 2],
    retrier: OnceLock<Retrier>,
}

impl Http {
    /// Connection settings for credential calls.
    pub fn new(agent: AgentSettings, retry: RetryPolicy) -> Http {
        Http {
            agent,
            retry,
            agents: [OnceLock::new(), OnceLock::new()],
            retrier: OnceLock::new(),
        }
    }

    /// The agent for `url` (HTTPS needs the trust list, HTTP does not).
    pub fn agent_for(&self, url: &str) -> Result<ureq::Agent, StorageError> {
        let https = url.to_ascii_lowercase().starts_with("https://");
        let slot = &self.agents[usize::from(https)];
        if let Some(a) = slot.get() {
            return Ok(a.clone());
        }
        let agent = build_agent(&self.agent, https)?;
        Ok(slot.get_or_init(|| agent).clone())
    }

    /// Runs one credential call with the retry policy.
    pub fn retry<T>(
        &self,
        attempt: &mut dyn FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.retrier
            .get_or_init(|| Retrier::new(self.retry.clone()))
            .run(Op::Credentials, attempt)
    }
}

/// Where STS is.
#[derive(Debug)]
pub struct Sts {
    /// Endpoint URL (`AWS_ENDPOINT_URL_STS`, else `https://sts.<region>.amazonaws.com`).
    pub url: String,
    /// Region requests are signed for.
    pub region: String,
    /// How it is reached.
    pub http: Http,
}

/// `AssumeRoleWithWebIdentity`: a token file (EKS/IRSA) exchanged at STS for a role's
/// credentials, without signing.
#[derive(Debug)]
pub struct WebIdentity {
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`: read again at every refresh (Kubernetes rotates it).
    pub token_file: PathBuf,
    /// `AWS_ROLE_ARN`.
    pub role_arn: String,
    /// `AWS_ROLE_SESSION_NAME`, or one made up.
    pub session_name: String,
    /// Where STS is.
    pub sts: Sts,
}

/// `AssumeRole`, signed with the credentials of `base`.
#[derive(Debug)]
pub struct AssumeRole {
    /// The credentials that assume the role.
    pub base: Source,
    /// The role.
    pub role_arn: String,
    /// `AWS_ROLE_SESSION_NAME` or the profile's `role_session_name`, or one made up.
    pub session_name: String,
    /// The profile's `external_id`.
    pub external_id: Option<String>,
    /// The profile's `duration_seconds`.
    pub duration_seconds: Option<u32>,
    /// Where STS is.
    pub sts: Sts,
}

/// One credential source.
#[derive(Debug)]
pub enum Source {
    /// Keys given in the settings, the environment or a profile.
    Static(Credentials),
    /// A web-identity token exchanged at STS.
    WebIdentity(Box<WebIdentity>),
    /// A role assumed with other credentials.
    AssumeRole(Box<AssumeRole>),
    /// The ECS (or EKS Pod Identity) container credential endpoint.
    Container(ecs::Container),
    /// EC2 instance metadata (IMDSv2, falling back to v1).
    InstanceMetadata(imds::Imds),
}

impl Source {
    /// What the source is, for messages: never a secret, a token or a signature.
    pub fn describe(&self) -> String {
        match self {
            Source::Static(c) => format!("static keys {}", c.access_key_id),
            Source::WebIdentity(w) => format!(
                "web identity {} for role {}",
                w.token_file.display(),
                w.role_arn
            ),
            Source::AssumeRole(a) => {
                format!("role {} assumed with {}", a.role_arn, a.base.describe())
            }
            Source::Container(c) => format!("container endpoint {}", c.url),
            Source::InstanceMetadata(i) => format!("instance metadata at {}", i.endpoint),
        }
    }

    /// Fetches credentials from the source.
    pub fn fetch(&self) -> Result<Expiring, StorageError> {
        match self {
            Source::Static(c) => Ok(Expiring {
                credentials: c.clone(),
                expires: None,
            }),
            Source::WebIdentity(w) => sts::assume_role_with_web_identity(w),
            Source::AssumeRole(a) => {
                let base = a.base.fetch()?;
                sts::assume_role(a, &base.credentials)
            }
            Source::Container(c) => c.fetch(),
            Source::InstanceMetadata(i) => i.fetch(),
        }
    }
}

/// A session name when none is configured, as the SDKs make one: unique per process.
pub fn default_session_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    format!("wal-rus-{nanos}")
}

/// Finds a service's error code and message in an error body.
pub type ErrorParser = dyn Fn(&[u8]) -> Option<(String, String)>;

/// A failed credential call as a `StorageError`: the service's refusal (its error code and
/// message when `parse` finds them in the body, else the status and the body's start) or
/// the transport's failure.
pub fn call_failed(what: &str, e: ureq::Error, parse: &ErrorParser) -> StorageError {
    match e {
        ureq::Error::Status(status, r) => {
            let body = read_small_body(r, Op::Credentials, what).unwrap_or_default();
            let (code, message) =
                parse(&body).unwrap_or_else(|| (format!("HTTP {status}"), describe_body(&body)));
            refused(what, status, code, message)
        }
        ureq::Error::Transport(t) => StorageError::Transport {
            op: Op::Credentials,
            key: what.to_string(),
            detail: transport_detail(&t),
        },
    }
}

/// A credential service's error, without the body's secrets (answers carry none, but the
/// request's URL may): operation, what was asked, status and a short description.
pub fn refused(what: &str, status: u16, code: String, message: String) -> StorageError {
    StorageError::Remote {
        op: Op::Credentials,
        key: what.to_string(),
        status,
        code,
        message,
    }
}

//! Microsoft Entra ID tokens for the Blob service, from the sources of Azure's default
//! credential chain that WAL-G's SDK tries when neither an account key nor a SAS is set:
//! a service principal's secret, a workload identity's federated token (AKS), and the
//! managed identity of the VM (IMDS) or of App Service (`IDENTITY_ENDPOINT`). Tokens are
//! kept and replaced before they expire (`storage::net::oauth`); none is ever logged.

use crate::storage::StorageError;
use crate::storage::net::oauth::{Fetched, TokenCache, fail, token_answer};
use std::fmt;
use std::path::PathBuf;

/// The resource (audience) of Blob service tokens.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com/";

/// The VM's managed-identity endpoint when `IDENTITY_ENDPOINT` is unset.
pub const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Microsoft Entra ID's public-cloud authority when `AZURE_AUTHORITY_HOST` is unset.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// `AZURE_CLIENT_SECRET` of application `client_id` in `tenant`.
    ClientSecret {
        /// `AZURE_AUTHORITY_HOST`, ending in `/`.
        authority: String,
        /// `AZURE_TENANT_ID`.
        tenant: String,
        /// `AZURE_CLIENT_ID`.
        client_id: String,
        /// The secret. Never printed.
        secret: String,
    },
    /// A federated token in `token_file` (re-read at each fetch: the kubelet rotates it)
    /// exchanged for application `client_id`'s token.
    Workload {
        /// `AZURE_AUTHORITY_HOST`, ending in `/`.
        authority: String,
        /// `AZURE_TENANT_ID`.
        tenant: String,
        /// `AZURE_CLIENT_ID`.
        client_id: String,
        /// `AZURE_FEDERATED_TOKEN_FILE`.
        token_file: PathBuf,
    },
    /// A managed identity: App Service's endpoint with its header, or the VM's IMDS.
    ManagedIdentity {
        /// `IDENTITY_ENDPOINT`, else [`IMDS_TOKEN_URL`].
        endpoint: String,
        /// `IDENTITY_HEADER` (App Service); `None` for IMDS. Never printed.
        identity_header: Option<String>,
        /// A user-assigned identity's `AZURE_CLIENT_ID`.
        client_id: Option<String>,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TokenSource {
    /// The source in words, for messages: no secret.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::ClientSecret {
                tenant, client_id, ..
            } => format!("service principal {client_id} of tenant {tenant} (client secret)"),
            TokenSource::Workload {
                tenant,
                client_id,
                token_file,
                ..
            } => format!(
                "workload identity {client_id} of tenant {tenant} ({})",
                token_file.display()
            ),
            TokenSource::ManagedIdentity {
                endpoint,
                client_id,
                ..
            } => match client_id {
                Some(id) => format!("managed identity {id} at {endpoint}"),
                None => format!("the managed identity at {endpoint}"),
            },
        }
    }

    fn fetch(&self, agent: &ureq::Agent, now: i64) -> Result<Fetched, StorageError> {
        let what = format!("token for {}", self.describe());
        match self {
            TokenSource::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                let body = grant(client_id, &[("client_secret", secret)]);
                post_grant(agent, &token_url(authority, tenant), &body, &what, now)
            }
            TokenSource::Workload {
                authority,
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = std::fs::read_to_string(token_file)
                    .map_err(|e| fail(&what, format!("reading the federated token: {e}")))?;
                let body = grant(
                    client_id,
                    &[
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", assertion.trim()),
                    ],
                );
                post_grant(agent, &token_url(authority, tenant), &body, &what, now)
            }
            TokenSource::ManagedIdentity {
                endpoint,
                identity_header,
                client_id,
            } => {
                let api = if identity_header.is_some() {
                    "2019-08-01"
                } else {
                    "2018-02-01"
                };
                let mut request = agent
                    .get(endpoint)
                    .query("api-version", api)
                    .query("resource", STORAGE_RESOURCE);
                if let Some(id) = client_id {
                    request = request.query("client_id", id);
                }
                request = match identity_header {
                    Some(h) => request.set("X-IDENTITY-HEADER", h),
                    None => request.set("Metadata", "true"),
                };
                let hint = "not on Azure? set AZURE_STORAGE_ACCESS_KEY, AZURE_STORAGE_SAS_TOKEN \
                            or a service principal (AZURE_TENANT_ID, AZURE_CLIENT_ID, \
                            AZURE_CLIENT_SECRET); the Azure CLI's login is not read";
                token_answer(request.call(), &what, Some(hint), now)
            }
        }
    }
}

/// Posts a client-credentials grant to the token endpoint `url`.
fn post_grant(
    agent: &ureq::Agent,
    url: &str,
    body: &str,
    what: &str,
    now: i64,
) -> Result<Fetched, StorageError> {
    let answer = agent
        .post(url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(body);
    token_answer(answer, what, None, now)
}

/// The tenant's v2.0 token endpoint.
fn token_url(authority: &str, tenant: &str) -> String {
    format!("{authority}{tenant}/oauth2/v2.0/token")
}

/// A client-credentials grant's form body for the Blob service's scope.
fn grant(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", "https://storage.azure.com/.default"),
    ];
    pairs.extend_from_slice(extra);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A token source and the cache in front of it, shared by every thread of a command.
pub struct Tokens {
    source: TokenSource,
    cache: TokenCache,
}

impl Tokens {
    /// Tokens from `source`.
    pub fn new(source: TokenSource) -> Tokens {
        Tokens {
            source,
            cache: TokenCache::default(),
        }
    }

    /// The source in words.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The `Authorization` value to send now.
    pub fn bearer(&self, agent: &ureq::Agent) -> Result<String, StorageError> {
        let now = crate::time::UtcTime::now().0;
        let token = self
            .cache
            .get(now, &mut |now| self.source.fetch(agent, now))?;
        Ok(format!("Bearer {token}"))
    }

    /// Forgets the kept token (the service refused it).
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({})", self.source.describe())
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;

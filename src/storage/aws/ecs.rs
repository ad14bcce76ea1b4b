//! The container credential endpoint of ECS tasks (and EKS Pod Identity): a local HTTP
//! endpoint named by `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, answered with
//! the task role's credentials.

use super::Expiring;
use super::imds::parse_credentials_json;
use super::source::{Http, call_failed};
use crate::storage::net::read_small_body;
use crate::storage::{Op, StorageError};
use std::path::PathBuf;

/// Where ECS serves a relative URI.
pub const ECS_HOST: &str = "http://169.254.170.2";

/// The container endpoint.
#[derive(Debug)]
pub struct Container {
    /// The full URL.
    pub url: String,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: read at every fetch (it is rotated).
    pub token_file: Option<PathBuf>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub token: Option<String>,
    /// How it is reached.
    pub http: Http,
}

/// Whether the SDKs allow a full URI: HTTPS, or HTTP to loopback or the ECS/EKS link-local
/// addresses, so credentials are never sent in clear text over a network.
pub fn full_uri_allowed(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return true;
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host == "169.254.170.2"
        || host == "169.254.170.23"
        || host == "fd00:ec2::23"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Container {
    /// The task role's credentials.
    pub fn fetch(&self) -> Result<Expiring, StorageError> {
        let what = format!("container credentials {}", self.url);
        let agent = self.http.agent_for(&self.url)?;
        self.http.retry(&mut || {
            let mut req = agent.get(&self.url);
            let token = match &self.token_file {
                Some(f) => Some(std::fs::read_to_string(f).map_err(|e| StorageError::Io {
                    op: Op::Credentials,
                    key: format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}", f.display()),
                    source: e,
                })?),
                None => self.token.clone(),
            };
            if let Some(t) = token {
                req = req.set("Authorization", t.trim());
            }
            let resp = req.call().map_err(|e| call_failed(&what, e, &|_| None))?;
            let doc = read_small_body(resp, Op::Credentials, &what)?;
            parse_credentials_json(&doc, &what)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uris_must_stay_local_or_use_tls() {
        assert!(full_uri_allowed("http://127.0.0.1:8080/creds"));
        assert!(full_uri_allowed("http://localhost/creds"));
        assert!(full_uri_allowed("http://169.254.170.23/v1/credentials"));
        assert!(full_uri_allowed("http://[::1]:9/x"));
        assert!(full_uri_allowed("https://creds.example/x"));
        assert!(!full_uri_allowed("http://10.0.0.5/creds"));
        assert!(!full_uri_allowed("ftp://127.0.0.1/x"));
    }
}

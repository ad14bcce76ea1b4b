//! EC2 instance metadata (IMDS): the instance profile's role credentials and the region.
//!
//! IMDSv2 first (a session token from `PUT /latest/api/token`), IMDSv1 when the token call
//! is refused as older or proxied metadata services do; never the other way round, so an
//! instance that requires v2 is never asked without a token.

use super::source::{Http, call_failed, refused};
use super::{Credentials, Expiring};
use crate::storage::net::read_small_body;
use crate::storage::{Op, StorageError};
use crate::time::UtcTime;

/// Lifetime asked for the IMDSv2 session token (the SDKs' default, 6 hours).
const TOKEN_TTL: &str = "21600";

/// The instance metadata service.
#[derive(Debug)]
pub struct Imds {
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, default `http://169.254.169.254`.
    pub endpoint: String,
    /// How it is reached (short timeouts: off EC2 nothing answers).
    pub http: Http,
}

impl Imds {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    /// The IMDSv2 token, or `None` when the service only speaks v1.
    fn token(&self, agent: &ureq::Agent) -> Result<Option<String>, StorageError> {
        let url = self.url("/latest/api/token");
        match agent
            .put(&url)
            .set("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)
            .send_bytes(&[])
        {
            Ok(r) => Ok(Some(
                String::from_utf8_lossy(&read_small_body(r, Op::Credentials, &url)?)
                    .trim()
                    .to_string(),
            )),
            // The SDKs fall back to v1 on these: a v1-only service, or a proxy in between.
            Err(ureq::Error::Status(403..=405, _)) => Ok(None),
            Err(e) => Err(self.failed("/latest/api/token", e)),
        }
    }

    fn failed(&self, path: &str, e: ureq::Error) -> StorageError {
        call_failed(&format!("instance metadata {}", self.url(path)), e, &|_| {
            None
        })
    }

    /// `GET path` with the token when there is one.
    fn get(
        &self,
        agent: &ureq::Agent,
        token: &Option<String>,
        path: &str,
    ) -> Result<Vec<u8>, StorageError> {
        let url = self.url(path);
        let mut req = agent.get(&url);
        if let Some(t) = token {
            req = req.set("X-aws-ec2-metadata-token", t);
        }
        let resp = req.call().map_err(|e| self.failed(path, e))?;
        read_small_body(resp, Op::Credentials, &url)
    }

    /// The instance profile's credentials.
    pub fn fetch(&self) -> Result<Expiring, StorageError> {
        let agent = self.http.agent_for(&self.endpoint)?;
        self.http.retry(&mut || {
            let token = self.token(&agent)?;
            let base = "/latest/meta-data/iam/security-credentials/";
            let roles = self.get(&agent, &token, base)?;
            let role = String::from_utf8_lossy(&roles)
                .lines()
                .next()
                .map(str::trim)
                .unwrap_or("")
                .to_string();
            if role.is_empty() {
                return Err(refused(
                    &self.url(base),
                    404,
                    "NoInstanceProfile".into(),
                    "the instance has no IAM role".into(),
                ));
            }
            let doc = self.get(&agent, &token, &format!("{base}{role}"))?;
            parse_credentials_json(&doc, &format!("instance profile {role}"))
        })
    }

    /// The instance's region (`placement/region`).
    pub fn region(&self) -> Result<String, StorageError> {
        let agent = self.http.agent_for(&self.endpoint)?;
        self.http.retry(&mut || {
            let token = self.token(&agent)?;
            let body = self.get(&agent, &token, "/latest/meta-data/placement/region")?;
            Ok(String::from_utf8_lossy(&body).trim().to_string())
        })
    }
}

/// The credentials document of IMDS and of the ECS endpoint (`AccessKeyId`,
/// `SecretAccessKey`, `Token`, `Expiration`; IMDS adds `Code`, which must be `Success`).
pub fn parse_credentials_json(doc: &[u8], what: &str) -> Result<Expiring, StorageError> {
    let garbled = |detail: String| StorageError::Garbled {
        op: Op::Credentials,
        key: what.to_string(),
        detail,
    };
    let v: serde_json::Value =
        serde_json::from_slice(doc).map_err(|e| garbled(format!("not JSON: {e}")))?;
    if let Some(code) = v
        .get("Code")
        .and_then(|c| c.as_str())
        .filter(|c| *c != "Success")
    {
        let message = v.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        return Err(refused(what, 200, code.to_string(), message.to_string()));
    }
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| garbled(format!("no {name}")))
    };
    Ok(Expiring {
        credentials: Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: v.get("Token").and_then(|t| t.as_str()).map(str::to_string),
        },
        expires: v
            .get("Expiration")
            .and_then(|e| e.as_str())
            .and_then(UtcTime::parse_rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_documents() {
        let doc = br#"{"Code":"Success","LastUpdated":"2026-12-04T03:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIA9","SecretAccessKey":"S","Token":"T","Expiration":"2026-12-04T09:00:00Z"}"#;
        let e = parse_credentials_json(doc, "x").unwrap();
        assert_eq!(e.credentials.access_key_id, "ASIA9");
        assert_eq!(e.credentials.session_token.as_deref(), Some("T"));
        assert_eq!(e.expires, UtcTime::parse_rfc3339("2026-12-04T09:00:00Z"));
        let failed = br#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"denied"}"#;
        let err = parse_credentials_json(failed, "x").unwrap_err().to_string();
        assert!(err.contains("AssumeRoleUnauthorizedAccess"), "{err}");
        assert!(parse_credentials_json(b"{\"AccessKeyId\":\"A\"}", "x").is_err());
    }
}

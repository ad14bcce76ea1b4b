//! Access tokens: fetched when first needed, kept, and fetched again before they expire, so
//! a backup that runs for hours never sends a stale one (Google's tokens live an hour).
//!
//! The cache takes the time as an argument, so tests can move it; a token is replaced once
//! less than [`REFRESH_MARGIN`] (or half its lifetime, for short ones) is left, and at once
//! when GCS answers 401 (a revoked or rotated token).

use super::auth::{Auth, METADATA_TOKEN_PATH, ServiceAccount, grant_body};
use crate::storage::StorageError;
pub use crate::storage::net::oauth::{Fetched, REFRESH_MARGIN, TokenCache};
use crate::storage::net::oauth::{fail, token_answer};

/// Where tokens come from and the cache in front of it.
pub struct Tokens {
    auth: Auth,
    cache: TokenCache,
}

impl Tokens {
    /// Tokens for `auth`.
    pub fn new(auth: Auth) -> Tokens {
        Tokens {
            auth,
            cache: TokenCache::default(),
        }
    }

    /// Whether requests carry a token at all.
    pub fn active(&self) -> bool {
        !matches!(self.auth, Auth::Anonymous)
    }

    /// Whose tokens these are, for messages.
    pub fn describe(&self) -> String {
        match &self.auth {
            Auth::Anonymous => "no credentials".into(),
            Auth::ServiceAccount(sa) => format!("service account {}", sa.email),
            Auth::Metadata { host } => format!("the metadata server at {host}"),
        }
    }

    /// The `Authorization` value to send now, if any.
    pub fn bearer(&self, agent: &ureq::Agent) -> Result<Option<String>, StorageError> {
        if !self.active() {
            return Ok(None);
        }
        let now = crate::time::UtcTime::now().0;
        let token = self.cache.get(now, &mut |now| self.fetch(agent, now))?;
        Ok(Some(format!("Bearer {token}")))
    }

    /// Forgets the kept token.
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    fn fetch(&self, agent: &ureq::Agent, now: i64) -> Result<Fetched, StorageError> {
        match &self.auth {
            Auth::Anonymous => Err(fail("", "no credentials configured".into())),
            Auth::ServiceAccount(sa) => fetch_for_account(agent, sa, now),
            Auth::Metadata { host } => fetch_from_metadata(agent, host, now),
        }
    }
}

/// The JWT bearer grant at the key file's token endpoint.
fn fetch_for_account(
    agent: &ureq::Agent,
    sa: &ServiceAccount,
    now: i64,
) -> Result<Fetched, StorageError> {
    let what = format!("token for {} from {}", sa.email, sa.token_uri);
    let assertion = sa.assertion(now).map_err(|e| fail(&what, e))?;
    let answer = agent
        .post(&sa.token_uri)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&grant_body(&assertion));
    token_answer(answer, &what, None, now)
}

/// The metadata server's token for the instance's (or the GKE workload's) account.
fn fetch_from_metadata(agent: &ureq::Agent, host: &str, now: i64) -> Result<Fetched, StorageError> {
    let what = format!("token from the metadata server at {host}");
    let answer = agent
        .get(&format!("http://{host}{METADATA_TOKEN_PATH}"))
        .set("Metadata-Flavor", "Google")
        .call();
    token_answer(
        answer,
        &what,
        Some(
            "not on Google Cloud? set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file",
        ),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::super::auth::METADATA_TOKEN_PATH;
    use super::*;
    use crate::storage::Op;

    /// Answers one request with `answer` and hands back the request as read.
    fn one_shot(
        status: &'static str,
        body: &'static str,
    ) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tx.send(String::from_utf8_lossy(&seen).to_string());
        });
        (addr, rx)
    }

    #[test]
    fn the_metadata_server_is_asked_as_google_asks_it() {
        let (addr, seen) = one_shot(
            "200 OK",
            r#"{"access_token":"md-token","expires_in":3599,"token_type":"Bearer"}"#,
        );
        let tokens = Tokens::new(Auth::Metadata { host: addr.clone() });
        let agent = ureq::AgentBuilder::new().build();
        assert_eq!(tokens.bearer(&agent).unwrap().unwrap(), "Bearer md-token");
        let request = seen.recv().unwrap();
        assert!(
            request.starts_with(&format!("GET {METADATA_TOKEN_PATH} HTTP/1.1")),
            "{request}"
        );
        assert!(request.contains("Metadata-Flavor: Google"), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("authorization"),
            "{request}"
        );
        // Kept: a second request needs no second fetch (the server is gone).
        assert_eq!(tokens.bearer(&agent).unwrap().unwrap(), "Bearer md-token");
    }

    #[test]
    fn a_refused_grant_names_the_account_and_endpoint_not_the_jwt() {
        let (addr, seen) = one_shot(
            "400 Bad Request",
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        let key = include_str!("../../../tests/data/gcs/test-service-account-key.pem");
        let file = serde_json::json!({
            "type": "service_account", "client_email": "a@p.iam.gserviceaccount.com",
            "private_key": key, "private_key_id": "k", "token_uri": format!("http://{addr}/token"),
        });
        let sa = ServiceAccount::from_json(file.to_string().as_bytes()).unwrap();
        let tokens = Tokens::new(Auth::ServiceAccount(sa));
        let e = tokens
            .bearer(&ureq::AgentBuilder::new().build())
            .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(
                e,
                StorageError::Remote {
                    status: 400,
                    op: Op::Credentials,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("invalid_grant") && text.contains("Invalid JWT Signature"),
            "{text}"
        );
        assert!(
            text.contains("a@p.iam.gserviceaccount.com") && text.contains("/token"),
            "{text}"
        );
        assert!(!e.is_retryable());
        let request = seen.recv().unwrap();
        let jwt = request.split("assertion=").nth(1).unwrap();
        assert!(jwt.starts_with("eyJ"), "{request}");
        assert!(!text.contains(&jwt[..20]), "{text}");
    }
}

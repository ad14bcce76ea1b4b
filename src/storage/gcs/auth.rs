//! Who wal-rus is to Google Cloud Storage, decided as Google's client libraries decide it:
//! a service-account key file (`GOOGLE_APPLICATION_CREDENTIALS`) signs its own token
//! requests; else the GCE/GKE metadata server hands out the attached account's tokens; an
//! emulator (`STORAGE_EMULATOR_HOST`) without a key file gets no credentials at all.
//!
//! The service-account grant is OAuth2's JWT bearer flow (RFC 7523): a JWT naming the
//! account, the storage scope and the token endpoint, signed RS256 (RSA PKCS#1 v1.5 with
//! SHA-256) with the account's PKCS#8 key through ring, is traded at the key file's
//! `token_uri` for an access token. Nothing here is ever printed: `Debug` is written by hand
//! and messages name the account, never the key.

use super::json::KeyFile;
use base64::Engine;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use std::fmt;

/// The scope asked for: read and write objects, nothing else.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// How long a signed assertion is valid (Google's maximum).
pub const ASSERTION_LIFETIME: i64 = 3600;

/// The metadata server's host when `GCE_METADATA_HOST` is unset.
pub const METADATA_HOST: &str = "metadata.google.internal";

/// The metadata server's path for the default service account's token.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// Where the credentials come from.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No `Authorization` header (an emulator).
    Anonymous,
    /// A service-account key.
    ServiceAccount(ServiceAccount),
    /// The metadata server at `host` (`host[:port]`, plain HTTP).
    Metadata {
        /// `GCE_METADATA_HOST`, else [`METADATA_HOST`].
        host: String,
    },
}

/// A service account's key, checked when read.
#[derive(Clone)]
pub struct ServiceAccount {
    /// The account's e-mail (the JWT's issuer).
    pub email: String,
    /// The key's id (the JWT's `kid`).
    pub key_id: String,
    /// Token endpoint (the JWT's audience).
    pub token_uri: String,
    /// The private key, PKCS#8 DER.
    pkcs8: Vec<u8>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Google's token endpoint, for key files that name none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

impl ServiceAccount {
    /// Reads a key file's JSON; the error says what is wrong without quoting the file.
    pub fn from_json(bytes: &[u8]) -> Result<ServiceAccount, String> {
        let file: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON key file ({e})"))?;
        if file.kind != "service_account" {
            return Err(format!(
                "holds credentials of type {:?}; wal-rus reads service-account keys \
                 (\"type\": \"service_account\") only",
                file.kind
            ));
        }
        if file.client_email.is_empty() {
            return Err("has no client_email".into());
        }
        let pkcs8 = pem_pkcs8(&file.private_key)?;
        RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| format!("private_key is not a usable RSA key ({e})"))?;
        let token_uri = if file.token_uri.is_empty() {
            DEFAULT_TOKEN_URI.to_string()
        } else {
            file.token_uri
        };
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(format!("token_uri {token_uri:?} is not an http(s) URL"));
        }
        Ok(ServiceAccount {
            email: file.client_email,
            key_id: file.private_key_id,
            token_uri,
            pkcs8,
        })
    }

    /// The signed JWT asking for a token at `now` (Unix seconds).
    pub fn assertion(&self, now: i64) -> Result<String, String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// RS256 over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let key = RsaKeyPair::from_pkcs8(&self.pkcs8)
            .map_err(|e| format!("private key rejected ({e})"))?;
        let mut signature = vec![0u8; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            message,
            &mut signature,
        )
        .map_err(|_| "signing the token request failed".to_string())?;
        Ok(signature)
    }

    /// The public half, DER `RSAPublicKey`, for checking signatures in tests.
    #[cfg(test)]
    pub fn public_key_der(&self) -> Vec<u8> {
        RsaKeyPair::from_pkcs8(&self.pkcs8)
            .unwrap()
            .public()
            .as_ref()
            .to_vec()
    }
}

/// The DER of the first `PRIVATE KEY` (PKCS#8) block of a PEM text.
fn pem_pkcs8(pem: &str) -> Result<Vec<u8>, String> {
    for item in rustls_pemfile::read_all(&mut pem.as_bytes()) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => return Ok(k.secret_pkcs8_der().to_vec()),
            Ok(rustls_pemfile::Item::Pkcs1Key(_)) => {
                return Err(
                    "private_key is a PKCS#1 RSA key; Google key files hold PKCS#8 \
                            (-----BEGIN PRIVATE KEY-----)"
                        .into(),
                );
            }
            Ok(_) => {}
            Err(_) => return Err("private_key is not valid PEM".into()),
        }
    }
    Err("private_key holds no PEM PRIVATE KEY block".into())
}

/// The form body of the JWT bearer grant.
pub fn grant_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;

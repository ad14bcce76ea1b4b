//! The JSON documents of the GCS JSON API and of Google's token endpoints that wal-rus
//! reads: an object's resource, a page of a listing, an error, a key file (token answers are
//! `storage::net::oauth`'s).
//!
//! Only the members used are declared; the rest are ignored, so a field Google adds
//! changes nothing. Numbers that the API sends as strings (`size`, `generation`) are read
//! from either form, as emulators are not always exact about it.

use serde::Deserialize;

use crate::storage::net::oauth::u64_loose;

/// An object's metadata (objects.get without `alt=media`, objects.insert's answer, an
/// item of a listing).
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResource {
    /// Full object name.
    pub name: String,
    /// Size in bytes.
    #[serde(deserialize_with = "u64_loose", default)]
    pub size: u64,
    /// Last modification, RFC 3339 (what WAL-G takes as the object's last-modified time).
    #[serde(default)]
    pub updated: String,
    /// The object's generation: which version of the name this is.
    #[serde(deserialize_with = "u64_loose", default)]
    pub generation: u64,
    /// Base64 MD5 of the content (absent for composed objects).
    #[serde(default)]
    pub md5_hash: Option<String>,
    /// Base64 big-endian CRC-32C of the content.
    #[serde(default)]
    pub crc32c: Option<String>,
}

/// One page of objects.list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage {
    /// Objects on this page.
    #[serde(default)]
    pub items: Vec<ObjectResource>,
    /// "Folders" (with a delimiter): prefixes up to the next delimiter.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Where the next page starts, if there is one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The error document GCS answers with: `{"error": {"code", "message", "errors": [...]}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorDoc {
    error: ErrorBody,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// What an error answer said: GCS's reason (`notFound`, `forbidden`, `rateLimitExceeded`)
/// and message.
#[derive(Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The first error's reason, or empty.
    pub reason: String,
    /// The message, or empty.
    pub message: String,
}

/// Reads a GCS error document; `None` when the body is not one (a proxy's page, plain text).
pub fn parse_error(body: &[u8]) -> Option<ApiError> {
    let doc: ErrorDoc = serde_json::from_slice(body).ok()?;
    Some(ApiError {
        reason: doc
            .error
            .errors
            .first()
            .map(|e| e.reason.clone())
            .unwrap_or_default(),
        message: doc.error.message,
    })
}

/// A service-account key file, as `gcloud iam service-accounts keys create` writes it.
#[derive(Deserialize)]
pub struct KeyFile {
    /// `service_account` (other kinds exist: `authorized_user`, `external_account`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The account's e-mail: the JWT's issuer.
    #[serde(default)]
    pub client_email: String,
    /// PEM of the PKCS#8 private key.
    #[serde(default)]
    pub private_key: String,
    /// Id of the key, sent as the JWT's `kid`.
    #[serde(default)]
    pub private_key_id: String,
    /// Where to trade the JWT for a token.
    #[serde(default)]
    pub token_uri: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_pages_with_items_prefixes_and_tokens() {
        let page: ListPage = serde_json::from_str(
            r#"{"kind":"storage#objects","nextPageToken":"CgR3YWxf",
                "prefixes":["p/basebackups_005/","p/wal_005/"],
                "items":[{"kind":"storage#object","name":"p/a","size":"42",
                  "updated":"2026-01-02T03:04:05.678Z","generation":"1712345678901234",
                  "md5Hash":"1B2M2Y8AsgTpgAmY7PhCfg==","crc32c":"AAAAAA==","etag":"x"},
                  {"name":"p/b","size":7,"updated":"2026-01-02T03:04:05Z"}]}"#,
        )
        .unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("CgR3YWxf"));
        assert_eq!(page.prefixes.len(), 2);
        assert_eq!(
            page.items[0],
            ObjectResource {
                name: "p/a".into(),
                size: 42,
                updated: "2026-01-02T03:04:05.678Z".into(),
                generation: 1_712_345_678_901_234,
                md5_hash: Some("1B2M2Y8AsgTpgAmY7PhCfg==".into()),
                crc32c: Some("AAAAAA==".into()),
            }
        );
        assert_eq!(page.items[1].size, 7);
        assert_eq!(page.items[1].md5_hash, None);
        let empty: ListPage = serde_json::from_str(r#"{"kind":"storage#objects"}"#).unwrap();
        assert!(empty.items.is_empty() && empty.next_page_token.is_none());
        assert!(
            serde_json::from_str::<ListPage>(r#"{"items":[{"name":"x","size":"-1"}]}"#).is_err()
        );
    }

    #[test]
    fn error_documents() {
        let e = parse_error(
            br#"{"error":{"code":404,"message":"No such object: b/k",
                 "errors":[{"message":"No such object: b/k","domain":"global","reason":"notFound"}]}}"#,
        )
        .unwrap();
        assert_eq!(e.reason, "notFound");
        assert_eq!(e.message, "No such object: b/k");
        let bare = parse_error(br#"{"error":{"code":500,"message":"boom"}}"#).unwrap();
        assert_eq!((bare.reason.as_str(), bare.message.as_str()), ("", "boom"));
        assert!(parse_error(b"<html>bad gateway</html>").is_none());
        assert!(parse_error(b"Not Found\n").is_none());
    }

    #[test]
    fn tokens_and_key_files() {
        let k: KeyFile = serde_json::from_str(
            r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com",
                "private_key":"-----BEGIN PRIVATE KEY-----\n...","private_key_id":"abc",
                "token_uri":"https://oauth2.googleapis.com/token","project_id":"p"}"#,
        )
        .unwrap();
        assert_eq!(k.kind, "service_account");
        assert_eq!(k.private_key_id, "abc");
    }
}

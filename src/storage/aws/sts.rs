//! The two STS calls credentials come from: `AssumeRole` (signed with the base credentials)
//! and `AssumeRoleWithWebIdentity` (unsigned: the token is the proof).

use super::source::{AssumeRole, Sts, WebIdentity, call_failed};
use super::{Credentials, Expiring};
use crate::storage::net::read_small_body;
use crate::storage::s3::sign::{self, PathRules, UtcTime};
use crate::storage::s3::xml;
use crate::storage::{Op, StorageError};

/// Query-protocol version of every STS action.
const VERSION: &str = "2011-06-15";

/// `application/x-www-form-urlencoded` text of the parameters, encoded as SigV4 encodes.
fn form(params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::storage::s3::http::query_string(&owned)
}

/// Assumes `a.role_arn` with `base`.
pub fn assume_role(a: &AssumeRole, base: &Credentials) -> Result<Expiring, StorageError> {
    let duration = a.duration_seconds.map(|d| d.to_string());
    let mut params = vec![
        ("Action", "AssumeRole"),
        ("Version", VERSION),
        ("RoleArn", a.role_arn.as_str()),
        ("RoleSessionName", a.session_name.as_str()),
    ];
    if let Some(id) = &a.external_id {
        params.push(("ExternalId", id));
    }
    if let Some(d) = &duration {
        params.push(("DurationSeconds", d));
    }
    let body = form(&params);
    call(&a.sts, "AssumeRole", &a.role_arn, &body, Some(base))
}

/// Exchanges the token in `w.token_file` for the role's credentials.
pub fn assume_role_with_web_identity(w: &WebIdentity) -> Result<Expiring, StorageError> {
    // Read at every refresh: Kubernetes replaces the projected token before it expires.
    let token = std::fs::read_to_string(&w.token_file).map_err(|e| StorageError::Io {
        op: Op::Credentials,
        key: format!("AWS_WEB_IDENTITY_TOKEN_FILE {}", w.token_file.display()),
        source: e,
    })?;
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", VERSION),
        ("RoleArn", &w.role_arn),
        ("RoleSessionName", &w.session_name),
        ("WebIdentityToken", token.trim()),
    ]);
    call(
        &w.sts,
        "AssumeRoleWithWebIdentity",
        &w.role_arn,
        &body,
        None,
    )
}

/// Posts one STS action and reads its credentials, retrying what is retryable.
fn call(
    sts: &Sts,
    action: &str,
    role: &str,
    body: &str,
    signer: Option<&Credentials>,
) -> Result<Expiring, StorageError> {
    let url = format!("{}/", sts.url.trim_end_matches('/'));
    let what = format!("STS {action} {role}");
    let agent = sts.http.agent_for(&url)?;
    sts.http.retry(&mut || {
        let mut req = agent.post(&url).set(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        if let Some(creds) = signer {
            for (k, v) in signed_headers(&sts.region, &url, body, creds) {
                req = req.set(&k, &v);
            }
        }
        let resp = req
            .send_string(body)
            .map_err(|e| call_failed(&what, e, &xml::parse_query_error))?;
        let answer = read_small_body(resp, Op::Credentials, &what)?;
        let c = xml::parse_sts_credentials(&answer, action).map_err(|e| StorageError::Garbled {
            op: Op::Credentials,
            key: what.clone(),
            detail: e.to_string(),
        })?;
        Ok(Expiring {
            expires: UtcTime::parse_rfc3339(c.expiration.trim()),
            credentials: Credentials {
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: Some(c.session_token),
            },
        })
    })
}

/// The SigV4 headers of an STS POST (service `sts`, the body hashed).
fn signed_headers(
    region: &str,
    url: &str,
    body: &str,
    creds: &Credentials,
) -> Vec<(String, String)> {
    let host = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let now = UtcTime::now();
    let payload_hash = sign::sha256_hex(body.as_bytes());
    let mut headers = vec![
        ("host".to_string(), host),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
        ("x-amz-date".to_string(), now.amz_date()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".to_string(), t.clone()));
    }
    let req = sign::Request {
        method: "POST",
        path: "/",
        query: &[],
        headers: &headers,
        payload_hash: &payload_hash,
    };
    let auth = sign::authorization(creds, region, "sts", now, &req, PathRules::GENERIC);
    headers.retain(|(k, _)| k != "host" && k != "content-type");
    headers.push(("Authorization".to_string(), auth));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_arns_and_tokens() {
        assert_eq!(
            form(&[("RoleArn", "arn:aws:iam::1:role/a b"), ("X", "a+b/c=")]),
            "RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b&X=a%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn sts_answers_and_errors_parse() {
        let ok = br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult><Credentials>
    <SessionToken>TOKEN</SessionToken><SecretAccessKey>SECRET</SecretAccessKey>
    <Expiration>2026-12-04T05:00:00Z</Expiration><AccessKeyId>ASIA1</AccessKeyId>
  </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#;
        let c = xml::parse_sts_credentials(ok, "AssumeRoleWithWebIdentity").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_str()),
            ("ASIA1", "TOKEN")
        );
        assert!(xml::parse_sts_credentials(ok, "AssumeRole").is_err());
        let err = br#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>
  <Message>Not authorized</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        assert_eq!(
            xml::parse_query_error(err),
            Some(("AccessDenied".into(), "Not authorized".into()))
        );
    }
}

//! Stages two to four of SigV4: the string to sign, the day's signing key and the
//! signature, and the `Authorization` header that carries them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{
    ALGORITHM, Credentials, PathRules, Request, UtcTime, canonical_request, hex, sha256_hex,
    signed_headers,
};

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The credential scope: `YYYYMMDD/region/service/aws4_request`.
pub fn credential_scope(time: UtcTime, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", time.date())
}

/// The string to sign: algorithm, timestamp, credential scope and the hex
/// SHA-256 of the canonical request.
pub fn string_to_sign(
    time: UtcTime,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        time.amz_date(),
        credential_scope(time, region, service),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key: the secret chained through HMACs of date, region, service
/// and `aws4_request`. It is valid for one day, region and service, so callers
/// may cache it.
pub fn signing_key(secret: &str, time: UtcTime, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), time.date().as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The hex signature of `string_to_sign` under `key`.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac_sha256(key, string_to_sign.as_bytes()))
}

/// Full Authorization header value: "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=..."
///
/// Only the headers in `req.headers` are signed: to sign with a session token,
/// send `x-amz-security-token` and include it there (S3 expects it signed).
pub fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    req: &Request,
    rules: PathRules,
) -> String {
    let creq = canonical_request(req, rules);
    let sts = string_to_sign(time, region, service, &creq);
    let key = signing_key(&creds.secret_access_key, time, region, service);
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
        creds.access_key_id,
        credential_scope(time, region, service),
        signed_headers(req.headers),
        signature(&key, &sts)
    )
}

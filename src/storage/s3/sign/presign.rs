//! The query-string form of SigV4 (presigned requests): the signature travels in
//! `X-Amz-*` parameters instead of headers, and the parameters are signed too.

use super::{
    ALGORITHM, Credentials, PathRules, Request, UtcTime, canonical_request, credential_scope,
    signature, signed_headers, signing_key, string_to_sign,
};

/// The presign parameters that are themselves signed, in canonical order:
/// X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
/// X-Amz-SignedHeaders and, with a session token, X-Amz-Security-Token
/// (decoded values). [`presign`] adds X-Amz-Signature to these.
pub fn presign_params(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    expires_secs: u64,
    req: &Request,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("X-Amz-Algorithm".to_string(), ALGORITHM.to_string()),
        (
            "X-Amz-Credential".to_string(),
            format!(
                "{}/{}",
                creds.access_key_id,
                credential_scope(time, region, service)
            ),
        ),
        ("X-Amz-Date".to_string(), time.amz_date()),
        ("X-Amz-Expires".to_string(), expires_secs.to_string()),
        (
            "X-Amz-SignedHeaders".to_string(),
            signed_headers(req.headers),
        ),
    ];
    if let Some(token) = &creds.session_token {
        params.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    params
}

/// Presigned query form: returns the query parameters to append (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, [X-Amz-Security-Token], X-Amz-Signature), decoded values.
///
/// `req.query` holds the request's own parameters (signed together with these);
/// `req.headers` must not contain `x-amz-date`, which travels in the query.
/// For S3, use [`UNSIGNED_PAYLOAD`] as the payload hash; AWS caps
/// `expires_secs` at 604800 (seven days).
pub fn presign(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: UtcTime,
    expires_secs: u64,
    req: &Request,
    rules: PathRules,
) -> Vec<(String, String)> {
    let mut params = presign_params(creds, region, service, time, expires_secs, req);
    let mut query: Vec<(String, String)> = req.query.to_vec();
    query.extend(params.iter().cloned());
    let signed = Request {
        query: &query,
        ..*req
    };
    let creq = canonical_request(&signed, rules);
    let sts = string_to_sign(time, region, service, &creq);
    let key = signing_key(&creds.secret_access_key, time, region, service);
    params.push(("X-Amz-Signature".to_string(), signature(&key, &sts)));
    params
}

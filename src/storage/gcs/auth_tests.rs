//! The service-account grant against a fixed key: the JWT's parts, its RS256 signature
//! checked with ring's public key, and key files refused for the right reasons.

use super::*;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

const KEY_PEM: &str = include_str!("../../../tests/data/gcs/test-service-account-key.pem");
const PKCS1_PEM: &str = include_str!("../../../tests/data/gcs/test-service-account-key.pkcs1.pem");

fn key_file(kind: &str, pem: &str, token_uri: &str) -> Vec<u8> {
    serde_json::json!({
        "type": kind,
        "project_id": "walrus-test",
        "private_key_id": "k-123",
        "private_key": pem,
        "client_email": "backup@walrus-test.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
    .to_string()
    .into_bytes()
}

fn account() -> ServiceAccount {
    ServiceAccount::from_json(&key_file(
        "service_account",
        KEY_PEM,
        "http://127.0.0.1:9/token",
    ))
    .unwrap()
}

fn decode(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap()
}

#[test]
fn the_assertion_is_a_jwt_signed_by_the_key() {
    let sa = account();
    let jwt = sa.assertion(1_700_000_000).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "k-123"})
    );
    let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({
            "iss": "backup@walrus-test.iam.gserviceaccount.com",
            "scope": "https://www.googleapis.com/auth/devstorage.read_write",
            "aud": "http://127.0.0.1:9/token",
            "iat": 1_700_000_000,
            "exp": 1_700_003_600,
        })
    );
    let signature = decode(parts[2]);
    assert_eq!(signature.len(), 256, "RSA-2048");
    let public = sa.public_key_der();
    let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public);
    let signed = format!("{}.{}", parts[0], parts[1]);
    verifier.verify(signed.as_bytes(), &signature).unwrap();
    // A changed claim no longer verifies: the signature covers what was sent.
    let forged = format!("{}.{}", parts[0], parts[1].replace('A', "B"));
    assert!(verifier.verify(forged.as_bytes(), &signature).is_err());
    // PKCS#1 v1.5 is deterministic: the same claims give the same signature.
    assert_eq!(sa.assertion(1_700_000_000).unwrap(), jwt);
}

#[test]
fn the_grant_body_is_rfc7523s() {
    assert_eq!(
        grant_body("a.b.c"),
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c"
    );
}

#[test]
fn key_files_that_cannot_sign_are_refused_without_quoting_them() {
    let refused = |bytes: Vec<u8>| ServiceAccount::from_json(&bytes).unwrap_err();
    let e = refused(key_file("authorized_user", KEY_PEM, ""));
    assert!(e.contains("authorized_user"), "{e}");
    let e = refused(key_file("service_account", PKCS1_PEM, ""));
    assert!(e.contains("PKCS#1"), "{e}");
    let e = refused(key_file("service_account", "not a pem", ""));
    assert!(e.contains("no PEM PRIVATE KEY"), "{e}");
    let e = refused(key_file("service_account", KEY_PEM, "ftp://x/token"));
    assert!(e.contains("token_uri"), "{e}");
    let e = refused(b"{not json".to_vec());
    assert!(e.contains("not a JSON key file"), "{e}");
    // A damaged key body: PEM framing intact, DER inside broken.
    let body_start = KEY_PEM.find('\n').unwrap() + 1;
    let mut broken = KEY_PEM.to_string();
    broken.replace_range(body_start..body_start + 8, "AAAAAAAA");
    let e = refused(key_file("service_account", &broken, ""));
    assert!(e.contains("not a usable RSA key"), "{e}");
    assert!(!e.contains("MII"), "quotes the key: {e}");
}

#[test]
fn defaults_and_debug_never_show_the_key() {
    let sa = ServiceAccount::from_json(&key_file("service_account", KEY_PEM, "")).unwrap();
    assert_eq!(sa.token_uri, DEFAULT_TOKEN_URI);
    let shown = format!("{:?}", Auth::ServiceAccount(sa));
    assert!(shown.contains("backup@walrus-test"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let body_line = KEY_PEM.lines().nth(1).unwrap();
    assert!(!shown.contains(&body_line[..16]), "{shown}");
}

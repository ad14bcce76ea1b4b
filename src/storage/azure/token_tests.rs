//! Each token source against a scripted server on loopback: what is asked and how, the
//! answers' forms of lifetime, refusals named without their secrets, and blob requests
//! carrying the token, a refused one replaced.

use super::*;
use crate::storage::azure::{AzureAuth, AzureConfig, AzureStorage};
use crate::storage::net::fake_server::{answer, fake};
use crate::storage::{Op, Storage};
use std::sync::Arc;
use std::time::Duration;

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build()
}

fn token_json(token: &str) -> String {
    format!(r#"{{"access_token":"{token}","expires_in":"3599","token_type":"Bearer"}}"#)
}

#[test]
fn the_vms_managed_identity_is_asked_as_imds_wants() {
    let (url, seen) = fake(vec![answer("200 OK", &token_json("imds-token"))]);
    let tokens = Tokens::new(TokenSource::ManagedIdentity {
        endpoint: format!("{url}/metadata/identity/oauth2/token"),
        identity_header: None,
        client_id: Some("uami".into()),
    });
    assert_eq!(tokens.bearer(&agent()).unwrap(), "Bearer imds-token");
    // Kept: the scripted server answers once only.
    assert_eq!(tokens.bearer(&agent()).unwrap(), "Bearer imds-token");
    let request = seen.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&client_id=uami HTTP/1.1"),
        "{request}"
    );
    assert!(request.contains("Metadata: true"), "{request}");
}

#[test]
fn app_services_identity_sends_its_header_and_may_give_only_an_expiry_time() {
    let now = crate::time::UtcTime::now().0;
    let body = format!(
        r#"{{"access_token":"app-token","expires_on":"{}","resource":"https://storage.azure.com/","token_type":"Bearer"}}"#,
        now + 600
    );
    let (url, seen) = fake(vec![answer("200 OK", &body)]);
    let source = TokenSource::ManagedIdentity {
        endpoint: format!("{url}/msi/token"),
        identity_header: Some("hdr-s3cr3t".into()),
        client_id: None,
    };
    assert!(!format!("{source:?}").contains("s3cr3t"));
    let (token, lifetime) = source.fetch(&agent(), now).unwrap();
    assert_eq!((token.as_str(), lifetime), ("app-token", 600));
    let request = seen.lock().unwrap()[0].clone();
    assert!(request.contains("api-version=2019-08-01"), "{request}");
    assert!(
        request.contains("X-IDENTITY-HEADER: hdr-s3cr3t"),
        "{request}"
    );
    assert!(!request.contains("Metadata: true"), "{request}");
}

#[test]
fn a_service_principal_posts_its_secret_and_a_refusal_does_not_repeat_it() {
    let (url, seen) = fake(vec![
        answer("200 OK", &token_json("sp-token")),
        answer(
            "401 Unauthorized",
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
        ),
    ]);
    let source = TokenSource::ClientSecret {
        authority: format!("{url}/"),
        tenant: "tn".into(),
        client_id: "app".into(),
        secret: "s3cr3t+/=".into(),
    };
    assert_eq!(source.fetch(&agent(), 0).unwrap().0, "sp-token");
    let request = seen.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("POST /tn/oauth2/v2.0/token HTTP/1.1"),
        "{request}"
    );
    let body = request.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        "grant_type=client_credentials&client_id=app&scope=https%3A%2F%2Fstorage.azure.com%2F.default&client_secret=s3cr3t%2B%2F%3D"
    );
    let e = source.fetch(&agent(), 0).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            StorageError::Remote {
                status: 401,
                op: Op::Credentials,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("AADSTS7000215") && text.contains("service principal app"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(!format!("{source:?}").contains("s3cr3t"));
}

#[test]
fn a_workload_identity_reads_its_token_file_at_every_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "first.jwt\n").unwrap();
    let (url, seen) = fake(vec![
        answer("200 OK", &token_json("w1")),
        answer("200 OK", &token_json("w2")),
    ]);
    let source = TokenSource::Workload {
        authority: format!("{url}/"),
        tenant: "tn".into(),
        client_id: "app".into(),
        token_file: file.clone(),
    };
    assert_eq!(source.fetch(&agent(), 0).unwrap().0, "w1");
    std::fs::write(&file, "second.jwt").unwrap();
    assert_eq!(source.fetch(&agent(), 0).unwrap().0, "w2");
    let seen = seen.lock().unwrap();
    for (request, jwt) in seen.iter().zip(["first.jwt", "second.jwt"]) {
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            body.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"),
            "{body}"
        );
        assert!(body.ends_with(&format!("client_assertion={jwt}")), "{body}");
    }
    std::fs::remove_file(&file).unwrap();
    let e = source.fetch(&agent(), 0).unwrap_err().to_string();
    assert!(e.contains("federated token"), "{e}");
}

#[test]
fn an_unreachable_managed_identity_says_what_to_set() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = TokenSource::ManagedIdentity {
        endpoint: format!("http://127.0.0.1:{port}/metadata/identity/oauth2/token"),
        identity_header: None,
        client_id: None,
    };
    let e = source.fetch(&agent(), 0).unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("AZURE_STORAGE_ACCESS_KEY"), "{e}");
}

#[test]
fn blob_requests_carry_the_token_and_a_refused_one_is_replaced() {
    let (token_url, token_seen) = fake(vec![
        answer("200 OK", &token_json("old")),
        answer("200 OK", &token_json("new")),
    ]);
    let tokens = Arc::new(Tokens::new(TokenSource::ManagedIdentity {
        endpoint: format!("{token_url}/token"),
        identity_header: None,
        client_id: None,
    }));
    let refused = "<?xml version=\"1.0\"?><Error><Code>InvalidAuthenticationInfo</Code><Message>expired</Message></Error>";
    let (blob_url, blob_seen) = fake(vec![
        answer("401 Unauthorized", refused),
        answer("404 Not Found", ""),
    ]);
    let storage = AzureStorage::new(AzureConfig {
        account: "acct".into(),
        container: "cont".into(),
        root: "pg/".into(),
        endpoint: format!("{blob_url}/acct"),
        auth: AzureAuth::Token(tokens),
        block_size: 8 << 20,
        max_buffers: 2,
        try_timeout: Duration::from_secs(5),
        max_retries: 0,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
    })
    .unwrap();
    let e = storage.head("k").unwrap_err().to_string();
    assert!(
        e.contains("Microsoft Entra ID") || e.contains("Storage Blob Data"),
        "{e}"
    );
    // The next request fetches a new token rather than sending the refused one again.
    let _ = storage.head("k");
    let blob_seen = blob_seen.lock().unwrap();
    assert!(
        blob_seen[0].contains("Authorization: Bearer old"),
        "{}",
        blob_seen[0]
    );
    assert!(
        blob_seen[1].contains("Authorization: Bearer new"),
        "{}",
        blob_seen[1]
    );
    assert_eq!(token_seen.lock().unwrap().len(), 2);
}

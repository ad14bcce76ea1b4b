//! The emulators the storage and credential tests use start, answer and behave as
//! `common::{gcs, azure, moto}` describe them: fake-gcs-server (GCS), Azurite (Azure Blob)
//! and moto (AWS STS and instance metadata). A failure here is about the test setup, not
//! about wal-rus.

use crate::common;

use common::{AzureServer, GcsServer, MotoServer, xml_text};
use wal_rus::storage::s3::sign::{self, Credentials, PathRules};

/// Status and body of any answer, 4xx/5xx included (ureq makes those errors).
fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("no HTTP answer: {e}"),
    }
}

#[test]
fn fake_gcs_serves_the_json_api() {
    let Some(gcs) = GcsServer::start("fake_gcs_serves_the_json_api") else {
        return;
    };
    gcs.create_bucket("walrus-test");
    let (status, body) =
        answer(ureq::get(&format!("{}/storage/v1/b?project=test", gcs.endpoint)).call());
    assert_eq!(status, 200, "{body}\n{}", gcs.log());
    assert!(body.contains(r#""name":"walrus-test""#), "{body}");

    // A media upload, read back with alt=media, and listed a page at a time.
    for name in ["a/1", "a/2"] {
        let url = format!(
            "{}/upload/storage/v1/b/walrus-test/o?uploadType=media&name={name}",
            gcs.endpoint
        );
        let (status, body) = answer(ureq::post(&url).send_bytes(name.as_bytes()));
        assert_eq!(status, 200, "{body}");
    }
    let url = format!(
        "{}/storage/v1/b/walrus-test/o/a%2F2?alt=media",
        gcs.endpoint
    );
    assert_eq!(answer(ureq::get(&url).call()), (200, "a/2".to_string()));
    assert!(gcs.data_root().join("walrus-test/a/2").is_file());
    let url = format!(
        "{}/storage/v1/b/walrus-test/o?prefix=a/&maxResults=1",
        gcs.endpoint
    );
    let (status, body) = answer(ureq::get(&url).call());
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"][0]["name"], "a/1", "{body}");
    assert_eq!(page["nextPageToken"], "a/2", "{body}");
}

#[test]
fn azurite_checks_shared_key() {
    let Some(azure) = AzureServer::start("azurite_checks_shared_key") else {
        return;
    };
    // Unauthenticated: an answer from Azurite, refusing.
    let url = format!("{}/walrus-test?restype=container&comp=list", azure.endpoint);
    let resp = ureq::get(&url).call();
    if let Err(ureq::Error::Status(_, r)) = &resp {
        assert!(r.header("server").unwrap_or("").starts_with("Azurite-Blob"));
    }
    let (status, body) = answer(resp);
    assert_eq!(status, 403, "{body}\n{}", azure.log());
    assert!(body.contains("AuthorizationFailure"), "{body}");

    assert!(azure.create_container("walrus-test"));
    // Signed the same way, a second creation gets through to find it there.
    assert!(!azure.create_container("walrus-test"));
    assert!(
        azure
            .connection_string()
            .contains(&format!("BlobEndpoint={};", azure.endpoint))
    );
}

#[test]
fn moto_serves_sts_and_instance_metadata() {
    let Some(moto) = MotoServer::start("moto_serves_sts_and_instance_metadata") else {
        return;
    };
    let (status, _) = answer(ureq::get(&format!("{}/moto-api/", moto.endpoint)).call());
    assert_eq!(status, 200, "{}", moto.log());

    // AssumeRole: any SigV4-shaped Authorization naming sts routes it; nothing is verified.
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDANY/20260101/us-east-1/sts/aws4_request, \
                SignedHeaders=host, Signature=0";
    let (status, body) = answer(
        ureq::post(&format!("{}/", moto.endpoint))
            .set("Authorization", auth)
            .send_form(&[
                ("Action", "AssumeRole"),
                ("Version", "2011-06-15"),
                ("RoleArn", "arn:aws:iam::123456789012:role/walrus"),
                ("RoleSessionName", "walrus-test"),
                ("DurationSeconds", "900"),
            ]),
    );
    assert_eq!(status, 200, "{body}\n{}", moto.log());
    assert!(xml_text(&body, "AccessKeyId").starts_with("ASIA"), "{body}");
    assert!(!xml_text(&body, "SessionToken").is_empty());

    // AssumeRoleWithWebIdentity needs no signature at all.
    let (status, body) = answer(ureq::post(&format!("{}/", moto.endpoint)).send_form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", "arn:aws:iam::123456789012:role/walrus"),
        ("RoleSessionName", "walrus-test"),
        ("WebIdentityToken", "header.payload.signature"),
    ]));
    assert_eq!(status, 200, "{body}");
    assert!(!xml_text(&body, "SecretAccessKey").is_empty(), "{body}");

    // IMDSv2: a token, the role name, the role's credentials.
    let (status, token) = answer(
        ureq::put(&format!("{}/latest/api/token", moto.endpoint))
            .set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .call(),
    );
    assert_eq!((status, token.as_str()), (200, "fake-imdsv2-token"));
    let creds_url = format!(
        "{}/latest/meta-data/iam/security-credentials/",
        moto.endpoint
    );
    let get = |url: &str| {
        answer(
            ureq::get(url)
                .set("X-aws-ec2-metadata-token", &token)
                .call(),
        )
    };
    assert_eq!(get(&creds_url), (200, "default-role".to_string()));
    let (status, body) = get(&format!("{creds_url}default-role"));
    assert_eq!(status, 200, "{body}");
    let creds: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(creds["AccessKeyId"], "test-key", "{body}");
    assert_eq!(creds["Token"], "test-session-token", "{body}");
}

#[test]
fn moto_checks_signatures_when_asked() {
    let Some((moto, key)) =
        MotoServer::start_checking_signatures("moto_checks_signatures_when_asked")
    else {
        return;
    };
    let assume_role = |access_key_id: &str, secret: &str| {
        let body = "Action=AssumeRole&Version=2011-06-15\
                    &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fwalrus\
                    &RoleSessionName=walrus-test";
        let time = wal_rus::time::UtcTime::now();
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", &format!("127.0.0.1:{}", moto.port)),
            ("x-amz-date", &time.amz_date()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let payload = sign::sha256_hex(body.as_bytes());
        let req = sign::Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &headers,
            payload_hash: &payload,
        };
        let creds = Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
            session_token: None,
        };
        let auth = sign::authorization(&creds, "us-east-1", "sts", time, &req, PathRules::GENERIC);
        let mut call = ureq::post(&format!("{}/", moto.endpoint)).set("Authorization", &auth);
        for (k, v) in &headers[..] {
            if k != "host" {
                call = call.set(k, v);
            }
        }
        answer(call.send_string(body))
    };
    let (status, body) = assume_role(&key.access_key_id, &key.secret_access_key);
    assert_eq!(status, 200, "{body}\n{}", moto.log());
    assert!(xml_text(&body, "AccessKeyId").starts_with("ASIA"), "{body}");

    let (status, body) = assume_role(&key.access_key_id, "not-the-secret");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    let (status, body) = assume_role("AKIAUNKNOWNUNKNOWN00", &key.secret_access_key);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("InvalidClientTokenId"), "{body}");
}

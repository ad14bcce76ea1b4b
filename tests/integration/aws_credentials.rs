//! Every AWS credential source end to end: the request reaches a server that verifies
//! signatures (s3s-fs with the keys the source hands out, or moto checking SigV4 against the
//! credentials its own STS issued), so a source that was not used, or used wrongly, fails.
//! Fixtures stand in for what only a cloud has: a profile file, a web-identity token file, a
//! container credential endpoint. moto serves STS and the instance metadata endpoint. No
//! secret, token or signature may appear in the output, at the most verbose log level.

use crate::common;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::{MotoServer, S3Server, Tool, output_text, require_or_fail, run_walrus};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wal_rus::storage::s3::sign::{self, Credentials, PathRules};
use wal_rus::time::UtcTime;

const SEG: usize = 16 << 20;

/// A segment with valid page headers, as wal-fetch checks.
fn segment(n: u64) -> Vec<u8> {
    let mut out: Vec<u8> = (0..SEG).map(|i| (i / 8192 + n as usize) as u8).collect();
    common::stamp_wal_pages(&mut out, 1, n);
    out
}

/// The settings that say where storage is, and nothing about credentials.
fn storage_env(endpoint: &str, bucket: &str, home: &Path) -> Vec<(String, String)> {
    [
        ("WALG_S3_PREFIX", format!("s3://{bucket}/creds")),
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("WALG_COMPRESSION_METHOD", "lz4".into()),
        ("WALG_LOG_LEVEL", "DEVEL".into()),
        // No profile of the machine's own may take part.
        ("HOME", home.display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn with(base: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Pushes segment `n` and fetches it back; returns both outputs' text. Panics unless both
/// succeed and the bytes match.
fn round_trip(env: &[(String, String)], dir: &Path, n: u64) -> String {
    let name = format!("00000001{:08X}{:08X}", n / 256, n % 256);
    let src = dir.join(&name);
    let data = segment(n);
    std::fs::write(&src, &data).unwrap();
    let push = run_walrus(["wal-push".as_ref(), src.as_os_str()], env);
    assert!(push.status.success(), "wal-push:\n{}", output_text(&push));
    let dest = dir.join(format!("{name}.fetched"));
    let fetch = run_walrus(["wal-fetch".as_ref(), name.as_ref(), dest.as_os_str()], env);
    assert!(
        fetch.status.success(),
        "wal-fetch:\n{}",
        output_text(&fetch)
    );
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "fetched bytes differ"
    );
    format!("{}{}", output_text(&push), output_text(&fetch))
}

/// Fails when any of `secrets` (or a SigV4 signature) is in `text`.
fn no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s), "a secret is in the output:\n{text}");
    }
    assert!(
        !text.contains("Signature="),
        "a signature is in the output:\n{text}"
    );
}

/// A container credential endpoint (ECS) on loopback: answers `GET /creds` with `keys` and a
/// numbered session token, valid for `lifetime`, when the Authorization header is `auth`.
struct ContainerEndpoint {
    url: String,
    fetches: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl ContainerEndpoint {
    fn start(keys: (&str, &str), lifetime: i64, auth: &str) -> ContainerEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/creds", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let (f, r, t) = (fetches.clone(), refused.clone(), tokens.clone());
        let (ak, sk, auth) = (keys.0.to_string(), keys.1.to_string(), auth.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut seen_auth = None;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    if let Some((_, v)) = line
                        .split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                    {
                        seen_auth = Some(v.trim().to_string());
                    }
                    line.clear();
                }
                let mut conn = conn;
                if seen_auth.as_deref() != Some(auth.as_str()) {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let n = f.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("container-token-{n}");
                t.lock().unwrap().push(token.clone());
                let expires = UtcTime(UtcTime::now().0 + lifetime).rfc3339();
                let body = format!(
                    r#"{{"AccessKeyId":"{ak}","SecretAccessKey":"{sk}","Token":"{token}","Expiration":"{expires}","RoleArn":"arn:aws:iam::123456789012:role/task"}}"#
                );
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        ContainerEndpoint {
            url,
            fetches,
            refused,
            tokens,
        }
    }
}

#[test]
fn profile_keys_sign_requests_and_a_wrong_profile_fails() {
    if require_or_fail(Tool::S3s, "profile_keys_sign_requests").is_none() {
        return;
    }
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let aws = dir.path().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = AKIDNOTTHISONE\naws_secret_access_key = nope\n\n[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[wrong]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
            s3.access_key, s3.secret_key, s3.access_key
        ),
    )
    .unwrap();
    std::fs::write(aws.join("config"), "[profile backup]\nregion = us-east-1\n").unwrap();
    let mut base = storage_env(&s3.endpoint, &s3.bucket, dir.path());
    base.retain(|(k, _)| k != "AWS_REGION");
    let files = [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            aws.join("credentials").display().to_string(),
        ),
        ("AWS_CONFIG_FILE", aws.join("config").display().to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = with(&with(&base, &files), &[("AWS_PROFILE", "backup")]);
    let text = round_trip(&env, dir.path(), 1);
    no_secrets(&text, &[&s3.secret_key]);

    // The same profile found through ~/.aws, the SDKs' default place.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::copy(aws.join("credentials"), home.join(".aws/credentials")).unwrap();
    let env = with(
        &base,
        &[
            ("AWS_PROFILE", "backup"),
            ("HOME", home.to_str().unwrap()),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    round_trip(&env, dir.path(), 2);

    let wrong = with(&with(&base, &files), &[("AWS_PROFILE", "wrong")]);
    let src = dir.path().join("000000010000000000000001");
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &wrong);
    let text = output_text(&out);
    assert!(!out.status.success(), "a wrong profile secret was accepted");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    no_secrets(&text, &["not-the-secret", &s3.secret_key]);

    let missing = with(&with(&base, &files), &[("AWS_PROFILE", "absent")]);
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &missing);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("AWS_PROFILE") && text.contains("absent"),
        "{text}"
    );
}

#[test]
fn container_endpoint_credentials_are_used_and_refreshed_before_they_expire() {
    if require_or_fail(Tool::S3s, "container_endpoint_credentials").is_none() {
        return;
    }
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let auth = "container-auth-secret";
    let endpoint = ContainerEndpoint::start((&s3.access_key, &s3.secret_key), 3600, auth);
    let base = storage_env(&s3.endpoint, &s3.bucket, dir.path());
    let env = with(
        &base,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &endpoint.url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", auth),
            // No prefetch helper: exactly one process per command asks for credentials.
            ("WALG_DOWNLOAD_CONCURRENCY", "1"),
        ],
    );
    let text = round_trip(&env, dir.path(), 1);
    // One fetch per process: the hour-long credentials serve every request.
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2, "{text}");
    assert_eq!(endpoint.refused.load(Ordering::SeqCst), 0);
    let tokens = endpoint.tokens.lock().unwrap().clone();
    no_secrets(&text, &[&s3.secret_key, auth, &tokens[0], &tokens[1]]);

    // The token file (EKS Pod Identity) wins over the token, and a wrong one is refused.
    let token_file = dir.path().join("pod-token");
    std::fs::write(&token_file, "not-it").unwrap();
    let wrong = with(
        &env,
        &[(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        )],
    );
    let src = dir.path().join("000000010000000000000001");
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &wrong);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("401"), "{}", output_text(&out));
    assert!(endpoint.refused.load(Ordering::SeqCst) >= 1);

    // Credentials that live 2 s, and a download that stalls 3 s half-way: the request that
    // resumes it is signed after they expired, so they must have been replaced.
    let short = ContainerEndpoint::start((&s3.access_key, &s3.secret_key), 2, auth);
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        FaultPlan {
            stall: Duration::from_secs(3),
            ..FaultPlan::always(Fault::Stall, Some(1))
        },
    );
    let env = with(
        &proxy.env(&env),
        &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &short.url)],
    );
    let dest = dir.path().join("refetched");
    let out = run_walrus(
        [
            "wal-fetch".as_ref(),
            "000000010000000000000001".as_ref(),
            dest.as_os_str(),
        ],
        &env,
    );
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(proxy.take_record().count(Fault::Stall), 1, "{text}");
    assert!(
        short.fetches.load(Ordering::SeqCst) >= 2,
        "credentials were not refreshed: {text}"
    );
    assert!(std::fs::read(&dest).unwrap() == segment(1));
}

#[test]
fn instance_metadata_credentials_sign_requests() {
    let Some(moto) = MotoServer::start("instance_metadata_credentials") else {
        return;
    };
    if require_or_fail(Tool::S3s, "instance_metadata_credentials").is_none() {
        return;
    }
    // moto's instance role hands out these keys; s3s-fs accepts only them.
    let s3 = S3Server::start_with_keys("test-key", "test-secret-key");
    let dir = tempfile::tempdir().unwrap();
    let base = storage_env(&s3.endpoint, &s3.bucket, dir.path());
    let env = with(
        &base,
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &moto.endpoint),
        ],
    );
    let text = round_trip(&env, dir.path(), 1);
    no_secrets(&text, &["test-secret-key", "test-session-token"]);
    assert!(
        moto.log().contains("/latest/api/token"),
        "IMDSv2 token not asked for"
    );

    // Disabled, there is nothing left to sign with.
    let src = dir.path().join("000000010000000000000001");
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &base);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no AWS credentials"), "{text}");
}

/// One SigV4-signed form POST or bucket PUT to moto, as `key`.
fn signed(
    endpoint: &str,
    service: &str,
    key: &Credentials,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, String> {
    let host = endpoint.trim_start_matches("http://");
    let now = UtcTime::now();
    let hash = sign::sha256_hex(body.as_bytes());
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-amz-content-sha256".to_string(), hash.clone()),
        ("x-amz-date".to_string(), now.amz_date()),
    ];
    if !body.is_empty() {
        headers.push((
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ));
    }
    let req = sign::Request {
        method,
        path,
        query: &[],
        headers: &headers,
        payload_hash: &hash,
    };
    let rules = if service == "s3" {
        PathRules::S3
    } else {
        PathRules::GENERIC
    };
    let auth = sign::authorization(key, "us-east-1", service, now, &req, rules);
    let mut r = ureq::request(method, &format!("{endpoint}{path}")).set("Authorization", &auth);
    for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
        r = r.set(k, v);
    }
    match r.send_string(body) {
        Ok(resp) => Ok(resp.into_string().unwrap_or_default()),
        Err(e) => Err(format!("{method} {path}: {e}")),
    }
}

#[test]
fn assumed_role_credentials_sign_requests_checked_by_moto() {
    let Some((moto, user)) = MotoServer::start_checking_signatures("assumed_role_credentials")
    else {
        return;
    };
    let user = Credentials {
        access_key_id: user.access_key_id,
        secret_access_key: user.secret_access_key,
        session_token: None,
    };
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    let allow =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let enc = |s: &str| sign::uri_encode(s, true);
    signed(&moto.endpoint, "iam", &user, "POST", "/", &format!(
        "Action=CreateRole&Version=2010-05-08&RoleName=walrus-backup&AssumeRolePolicyDocument={}",
        enc(trust)
    ))
    .unwrap();
    signed(&moto.endpoint, "iam", &user, "POST", "/", &format!(
        "Action=PutRolePolicy&Version=2010-05-08&RoleName=walrus-backup&PolicyName=all&PolicyDocument={}",
        enc(allow)
    ))
    .unwrap();
    signed(&moto.endpoint, "s3", &user, "PUT", "/role-bucket", "").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let base = storage_env(&moto.endpoint, "role-bucket", dir.path());
    let role = "arn:aws:iam::123456789012:role/walrus-backup";
    let env = with(
        &base,
        &[
            ("AWS_ACCESS_KEY_ID", &user.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &user.secret_access_key),
            ("AWS_ROLE_ARN", role),
            ("AWS_ROLE_SESSION_NAME", "nightly"),
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint),
        ],
    );
    let text = round_trip(&env, dir.path(), 1);
    no_secrets(&text, &[&user.secret_access_key]);
    assert!(
        text.contains("walrus-backup"),
        "the role is not named at DEVEL: {text}"
    );

    // A wrong secret for the base keys: STS refuses the AssumeRole, named as such.
    let wrong = with(&env, &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]);
    let src = dir.path().join("000000010000000000000001");
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &wrong);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("AssumeRole"), "{text}");
    no_secrets(&text, &["wrong-secret"]);
}

#[test]
fn web_identity_token_is_exchanged_at_sts() {
    let Some(moto) = MotoServer::start("web_identity_token") else {
        return;
    };
    // Unchecked moto: its S3 needs a bucket, made by any request.
    ureq::put(&format!("{}/irsa-bucket", moto.endpoint))
        .set(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        )
        .call()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGI6d2FsLXJ1cyJ9.c2ln";
    std::fs::write(&token_file, token).unwrap();
    let base = storage_env(&moto.endpoint, "irsa-bucket", dir.path());
    let env = with(
        &base,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint),
        ],
    );
    let text = round_trip(&env, dir.path(), 1);
    no_secrets(&text, &[token]);
    assert!(
        text.contains("web identity"),
        "the source is not named at DEVEL: {text}"
    );

    // No token file: the error names it and nothing is stored.
    std::fs::remove_file(&token_file).unwrap();
    let src = dir.path().join("000000010000000000000002");
    std::fs::write(&src, segment(2)).unwrap();
    let out = run_walrus(["wal-push".as_ref(), src.as_os_str()], &env);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{text}");
}

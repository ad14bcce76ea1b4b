//! Google Cloud Storage end to end, against fake-gcs-server on loopback (`common::gcs`):
//! WAL round trips with every compression, the objects byte for byte and name for name what
//! wal-rus stores on S3 (s3s-fs) for the same input, a base backup with point-in-time
//! recovery on PostgreSQL 15, backup-list and delete, a missing segment's exit 74, memory
//! against the plan, a service-account key file whose token endpoint runs in the test (the
//! JWT it receives is checked against the key, and the token it issues is the bearer GCS
//! gets), and DEVEL logs without any secret in them.

use crate::common;
use crate::wal_commands::{env_with as with, pg_wal, seg_name, segment};

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::{
    GcsServer, Plan, S3Server, Tool, output_text, peak_rss_kib, require_or_fail, run_walrus,
    within_plan,
};
use std::fs;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const BUCKET: &str = "walrus-gcs";

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

/// fake-gcs-server with the test bucket, or `None` after a SKIP line.
fn gcs_or_skip(test: &str) -> Option<GcsServer> {
    let gcs = GcsServer::start(test)?;
    gcs.create_bucket(BUCKET);
    Some(gcs)
}

/// The settings of storage `gs://BUCKET/<path>` on the emulator at `host`.
fn gcs_env(host: &str, path: &str) -> Vec<(String, String)> {
    vec![
        ("WALG_GS_PREFIX".into(), format!("gs://{BUCKET}/{path}")),
        ("STORAGE_EMULATOR_HOST".into(), host.to_string()),
    ]
}

/// Object names below `prefix` in the emulator's bucket (its files, one per object).
fn gcs_names(gcs: &GcsServer, prefix: &str) -> Vec<String> {
    let mut names = common::files_below(&gcs.data_root().join(BUCKET));
    names.retain(|k| k.starts_with(prefix) && !k.ends_with(".metadata"));
    names
}

#[test]
fn wal_round_trip_every_method_same_objects_as_s3() {
    let test = "wal_round_trip_every_method_same_objects_as_s3";
    let Some(gcs) = gcs_or_skip(test) else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, test) else {
        return;
    };
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let gcs_base = gcs_env(&gcs.endpoint, "pg/rt");
    let s3_base = s3.env("pg/rt");
    let methods = [
        ("lz4", ".lz4"),
        ("zstd", ".zst"),
        ("lzma", ".lzma"),
        ("brotli", ".br"),
        ("none", ""),
    ];
    for (i, (method, ext)) in methods.iter().enumerate() {
        let name = seg_name(i as u64 + 1);
        let data = segment(i as u64 + 1, false);
        fs::write(wal.join(&name), &data).unwrap();
        // `none` stores 16 MiB: with 1 MiB chunks it goes as a resumable upload.
        let chunk = if *method == "none" {
            "1048576"
        } else {
            "52428800"
        };
        let settings = [
            ("WALG_COMPRESSION_METHOD", *method),
            ("WALG_DOWNLOAD_CONCURRENCY", "1"),
            ("GCS_MAX_CHUNK_SIZE", chunk),
        ];
        let env = with(&gcs_base, &settings);
        let path = wal.join(&name);
        ok(
            &run_walrus(["wal-push", path.to_str().unwrap()], &env),
            "wal-push to GCS",
        );
        ok(
            &run_walrus(
                ["wal-push", path.to_str().unwrap()],
                &with(&s3_base, &settings[..2]),
            ),
            "wal-push to S3",
        );
        let key = format!("pg/rt/wal_005/{name}{ext}");
        let on_gcs = fs::read(gcs.data_root().join(BUCKET).join(&key))
            .unwrap_or_else(|e| panic!("{key} not on GCS: {e}\n{}", gcs.log()));
        let on_s3 = fs::read(s3.object_path(&key)).unwrap();
        assert!(on_gcs == on_s3, "{method}: GCS and S3 objects differ");
        if *method == "none" {
            assert!(on_gcs == data);
        }
        let dest = dir.path().join(format!("restored-{method}"));
        ok(
            &run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env),
            "wal-fetch from GCS",
        );
        assert!(
            fs::read(&dest).unwrap() == data,
            "{method}: restored bytes differ"
        );
    }
    assert_eq!(gcs_names(&gcs, "pg/"), s3.list_keys("pg/"));
    assert_eq!(gcs_names(&gcs, "pg/").len(), methods.len());
}

#[test]
fn missing_segment_exits_74_and_missing_bucket_says_so() {
    let Some(gcs) = gcs_or_skip("missing_segment_exits_74_and_missing_bucket_says_so") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let env = gcs_env(&gcs.endpoint, "pg");
    let out = run_walrus(["wal-fetch", &seg_name(0x42), dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(74), "{}", output_text(&out));
    assert!(output_text(&out).contains(&seg_name(0x42)));
    assert!(!dest.exists());

    let wal = pg_wal(dir.path());
    fs::write(wal.join(seg_name(1)), segment(1, false)).unwrap();
    let mut nowhere = env.clone();
    nowhere[0].1 = "gs://no-such-bucket/pg".into();
    let out = run_walrus(
        ["wal-push", wal.join(seg_name(1)).to_str().unwrap()],
        &nowhere,
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bucket no-such-bucket does not exist"),
        "{text}"
    );
    assert!(text.contains("objects.insert pg/wal_005/"), "{text}");
}

#[test]
fn pitr_under_load_gcs() {
    let Some(_) = require_or_fail(Tool::Postgres, "pitr_under_load_gcs") else {
        return;
    };
    let Some(gcs) = gcs_or_skip("pitr_under_load_gcs") else {
        return;
    };
    // Small chunks, so every tar partition is a resumable upload of many chunks.
    let env = with(
        &gcs_env(&gcs.endpoint, "pitr"),
        &[("GCS_MAX_CHUNK_SIZE", "5242880")],
    );
    crate::backup_restore::pitr(env.clone());

    // backup-list and delete on what the run left.
    let out = run_walrus(["backup-list", "--json"], &env);
    ok(&out, "backup-list");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    let name = list[0]["backup_name"].as_str().unwrap().to_string();
    assert!(gcs_names(&gcs, &format!("pitr/basebackups_005/{name}/")).len() > 2);
    assert!(!gcs_names(&gcs, "pitr/wal_005/").is_empty());
    ok(
        &run_walrus(["delete", "--confirm", "everything", "FORCE"], &env),
        "delete",
    );
    assert_eq!(gcs_names(&gcs, "pitr/"), Vec::<String>::new());
    let out = run_walrus(["backup-list"], &env);
    ok(&out, "backup-list after delete");
    assert!(
        output_text(&out).contains("No backups found"),
        "{}",
        output_text(&out)
    );
}

/// Peak RSS of wal-push and wal-fetch of a 16 MiB segment on GCS at default settings, against
/// memory-plan's figures for the same settings; the same on file storage, for the GCS
/// client's share.
#[test]
fn wal_push_and_fetch_memory_within_plan() {
    let Some(gcs) = gcs_or_skip("gcs wal_push_and_fetch_memory_within_plan") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let gcs_base = gcs_env(&gcs.endpoint, "mem");
    let file_base = vec![(
        "WALG_FILE_PREFIX".to_string(),
        files.path().display().to_string(),
    )];
    // A key file adds the token grant: parsing the key, signing, the token endpoint's answer.
    let (token_uri, _grants) = token_endpoint();
    let key = key_file(dir.path(), &token_uri);
    let sa_base = with(&gcs_base, &[("GOOGLE_APPLICATION_CREDENTIALS", &key)]);
    let plan = Plan::read(&gcs_base);
    assert_eq!(plan.0["settings"]["storage"], "gcs");
    let sa_plan = Plan::read(&sa_base);
    assert!(
        sa_plan.rss("wal-fetch") > plan.rss("wal-fetch"),
        "the key's signing is planned"
    );
    for (n, incompressible) in [(1u64, true), (2, false)] {
        let name = seg_name(n);
        fs::write(wal.join(&name), segment(n, incompressible)).unwrap();
        let mut peaks = Vec::new();
        for base in [&gcs_base, &sa_base, &file_base] {
            let mut push = Command::new(common::walrus_bin());
            common::hermetic(&mut push)
                .args(["wal-push", wal.join(&name).to_str().unwrap()])
                .envs(base.iter().cloned());
            let (out, push_kib) = peak_rss_kib(&mut push);
            ok(&out, "wal-push");
            let dest = dir.path().join(format!("fetched-{n}-{}", peaks.len()));
            let mut fetch = Command::new(common::walrus_bin());
            common::hermetic(&mut fetch)
                .args(["wal-fetch", &name, dest.to_str().unwrap()])
                .envs(base.iter().cloned())
                .env("WALG_DOWNLOAD_CONCURRENCY", "1");
            let (out, fetch_kib) = peak_rss_kib(&mut fetch);
            ok(&out, "wal-fetch");
            assert!(fs::read(&dest).unwrap() == segment(n, incompressible));
            peaks.push((push_kib, fetch_kib));
        }
        let [anonymous, keyed, (file_push, file_fetch)] = peaks[..] else {
            unreachable!()
        };
        let kind = if incompressible {
            "incompressible"
        } else {
            "mixed"
        };
        for (auth, plan, (push_kib, fetch_kib)) in [
            ("no credentials", &plan, anonymous),
            ("key file", &sa_plan, keyed),
        ] {
            eprintln!(
                "peak RSS on GCS ({kind}, {auth}): wal-push {push_kib} KiB (plan {} KiB, files \
                 {file_push} KiB), wal-fetch {fetch_kib} KiB (plan {} KiB, files {file_fetch} KiB)",
                plan.rss("wal-push") / 1024,
                plan.rss("wal-fetch") / 1024
            );
            assert!(
                within_plan(push_kib, plan.rss("wal-push")),
                "wal-push ({auth}) {push_kib} KiB above its plan"
            );
            assert!(
                within_plan(fetch_kib, plan.rss("wal-fetch")),
                "wal-fetch ({auth}) {fetch_kib} KiB above its plan"
            );
            // The promise is the static build's (scripts/test runs this test against it too).
            if std::env::var_os("WALRUS_BIN_UNDER_TEST").is_some() {
                assert!(
                    push_kib < 8 * 1024 && fetch_kib < 8 * 1024,
                    "static build on GCS ({auth}): wal-push {push_kib} KiB, wal-fetch {fetch_kib} KiB, not under 8 MiB"
                );
            }
        }
    }
}

/// What the test's token endpoint saw: each grant's JWT claims and whether its signature
/// verified with the key file's public key, and the tokens it issued.
#[derive(Default)]
struct Grants {
    claims: Vec<(serde_json::Value, bool)>,
    issued: Vec<String>,
}

const KEY_PEM: &str = include_str!("../data/gcs/test-service-account-key.pem");

/// An OAuth2 token endpoint on loopback that checks RS256 JWT grants against the test key.
fn token_endpoint() -> (String, Arc<Mutex<Grants>>) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let der = rustls_pemfile::private_key(&mut KEY_PEM.as_bytes())
        .unwrap()
        .unwrap();
    let public = ring::signature::RsaKeyPair::from_pkcs8(der.secret_der())
        .unwrap()
        .public()
        .as_ref()
        .to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let grants = Arc::new(Mutex::new(Grants::default()));
    let seen = grants.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Ok(Some((_, _, body))) = common::fault_proxy::read_request(&mut reader) else {
                continue;
            };
            let body = String::from_utf8_lossy(&body).to_string();
            let assertion = body
                .split('&')
                .find_map(|kv| kv.strip_prefix("assertion="))
                .unwrap_or_default();
            let parts: Vec<&str> = assertion.split('.').collect();
            let verified = parts.len() == 3
                && ring::signature::UnparsedPublicKey::new(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    &public,
                )
                .verify(
                    format!("{}.{}", parts[0], parts[1]).as_bytes(),
                    &b64.decode(parts[2]).unwrap_or_default(),
                )
                .is_ok();
            let claims = parts
                .get(1)
                .and_then(|c| b64.decode(c).ok())
                .and_then(|c| serde_json::from_slice(&c).ok())
                .unwrap_or_default();
            let mut g = seen.lock().unwrap();
            let token = format!("ya29.walrus-test-token-{}", g.issued.len());
            g.claims.push((claims, verified));
            g.issued.push(token.clone());
            let answer =
                format!(r#"{{"access_token":"{token}","expires_in":3599,"token_type":"Bearer"}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, grants)
}

/// A service-account key file naming `token_uri`.
fn key_file(dir: &Path, token_uri: &str) -> String {
    let path = dir.join("key.json");
    let doc = serde_json::json!({
        "type": "service_account",
        "project_id": "walrus-test",
        "private_key_id": "walrus-test-key",
        "private_key": KEY_PEM,
        "client_email": "backup@walrus-test.iam.gserviceaccount.com",
        "token_uri": token_uri,
    });
    fs::write(&path, doc.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn service_account_tokens_reach_gcs_and_no_secret_reaches_the_log() {
    let test = "service_account_tokens_reach_gcs_and_no_secret_reaches_the_log";
    let Some(gcs) = gcs_or_skip(test) else {
        return;
    };
    // Requests go through a recording proxy, which shows the bearer GCS receives.
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", gcs.port).parse().unwrap(),
        FaultPlan::none(),
    );
    let (token_uri, grants) = token_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &token_uri);
    let csek = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let env = with(
        &gcs_env(&proxy.endpoint, "sa"),
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", &key),
            ("GCS_ENCRYPTION_KEY", csek),
            ("WALG_LOG_LEVEL", "DEVEL"),
        ],
    );
    let wal = pg_wal(dir.path());
    let name = seg_name(7);
    fs::write(wal.join(&name), segment(7, false)).unwrap();
    let dest = dir.path().join("fetched");
    let mut outputs = vec![
        run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &env),
        run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env),
        run_walrus(["backup-list"], &env),
        run_walrus(["wal-show"], &env),
    ];
    for out in &outputs {
        ok(out, "command with a service-account key");
    }
    assert!(fs::read(&dest).unwrap() == segment(7, false));
    // A refused grant: the error names the endpoint, never the JWT.
    let broken = with(
        &env,
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &key_file(dir.path(), "http://127.0.0.1:9/token"),
        )],
    );
    let out = run_walrus(
        [
            "wal-fetch",
            &name,
            dir.path().join("never").to_str().unwrap(),
        ],
        &with(&broken, &[("GCS_MAX_RETRIES", "0")]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("127.0.0.1:9/token"),
        "{}",
        output_text(&out)
    );
    outputs.push(out);

    let g = grants.lock().unwrap();
    // One token per process: the four commands, and wal-fetch's prefetch helper.
    assert!(
        (4..=5).contains(&g.issued.len()),
        "{} tokens",
        g.issued.len()
    );
    for (claims, verified) in &g.claims {
        assert!(verified, "a JWT not signed by the key: {claims}");
        assert_eq!(claims["iss"], "backup@walrus-test.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], token_uri.as_str());
        assert_eq!(
            claims["scope"],
            "https://www.googleapis.com/auth/devstorage.read_write"
        );
    }
    // Every request GCS got carried a token the endpoint issued.
    let heads = proxy.take_record().heads;
    assert!(heads.len() >= 4, "{heads:?}");
    for (line, headers) in &heads {
        let bearer = headers
            .iter()
            .find_map(|h| {
                h.strip_prefix("Authorization: Bearer ")
                    .or(h.strip_prefix("authorization: Bearer "))
            })
            .unwrap_or_else(|| panic!("{line} without a bearer: {headers:?}"));
        assert!(
            g.issued.iter().any(|t| t == bearer.trim()),
            "{line}: {bearer}"
        );
    }
    // DEVEL logs: no token, no key, no bearer, no customer key.
    let key_lines: Vec<&str> = KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for out in &outputs {
        let text = output_text(out);
        for token in &g.issued {
            assert!(!text.contains(token.as_str()), "token in output: {text}");
        }
        assert!(!text.contains("ya29."), "{text}");
        assert!(!text.to_ascii_lowercase().contains("bearer"), "{text}");
        assert!(!text.contains(csek) && !text.contains("BwcHBwcH"), "{text}");
        assert!(!text.contains("eyJ"), "a JWT in output: {text}");
        for l in &key_lines {
            assert!(!text.contains(&l[..20]), "a key fragment in output: {text}");
        }
    }
}

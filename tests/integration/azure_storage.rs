//! Azure Blob Storage (`WALG_AZ_PREFIX`) against Azurite 3.37 on loopback, pointed at by the
//! Azure SDKs' `AZURE_STORAGE_CONNECTION_STRING`: WAL round trips for every compression with
//! the very objects wal-rus stores on S3 (s3s-fs) under the same keys, a base backup with
//! PITR on a real PostgreSQL 15, backup-list and delete, a missing segment's exit 74, Shared
//! Key and SAS authorization (the SAS signed here with the account key), a wrong credential
//! and a missing container failing clearly, no secret in DEVEL output, and wal-push and
//! wal-fetch held to their memory plan.
//!
//! The tests read what was stored through the REST API with a SAS of their own (Azurite
//! keeps blobs in its own database, not as files) and create their container with a signed
//! Create Container: wal-rus, like WAL-G, never creates one.

use crate::backup_restore::pitr;
use crate::common;
use crate::wal_commands::{env_with, pg_wal, seg_name, segment, wal_memory_within_plan};

use base64::Engine as _;
use common::{
    AZURITE_ACCOUNT, AZURITE_KEY, AzureServer, Plan, S3Server, Tool, output_text, require_or_fail,
    run_walrus,
};
use hmac::{Hmac, KeyInit, Mac};
use std::fs;
use std::process::Output;

const CONTAINER: &str = "walrus-test";

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

/// Azurite with the test container, or `None` (after a `SKIP:` line) without Azurite.
fn azurite(test: &str) -> Option<AzureServer> {
    let az = AzureServer::start(test)?;
    assert!(az.create_container(CONTAINER));
    Some(az)
}

/// Settings pointing wal-rus at `azure://walrus-test/<path>` with the account key.
fn key_env(az: &AzureServer, path: &str) -> Vec<(String, String)> {
    vec![
        (
            "WALG_AZ_PREFIX".into(),
            format!("azure://{CONTAINER}/{path}"),
        ),
        (
            "AZURE_STORAGE_CONNECTION_STRING".into(),
            az.connection_string(),
        ),
    ]
}

/// The same with a SAS token in WAL-G's own setting: the connection string only names the
/// account and the endpoint.
fn sas_env(az: &AzureServer, path: &str, sas: &str) -> Vec<(String, String)> {
    vec![
        (
            "WALG_AZ_PREFIX".into(),
            format!("azure://{CONTAINER}/{path}"),
        ),
        (
            "AZURE_STORAGE_CONNECTION_STRING".into(),
            format!(
                "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};BlobEndpoint={};",
                az.endpoint
            ),
        ),
        ("AZURE_STORAGE_SAS_TOKEN".into(), format!("?{sas}")),
    ]
}

/// A temp dir with segment 1 in its `pg_wal`: the dir, the segment's path, its name.
fn first_segment() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    let name = seg_name(1);
    fs::write(wal.join(&name), segment(1, false)).unwrap();
    let path = wal.join(&name).display().to_string();
    (dir, path, name)
}

/// Percent-encoding of a query value.
fn q(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An account SAS (blob service; service, container and object resources; read, write,
/// delete, list, add, create) signed with `key`, as Microsoft's "Create an account SAS"
/// defines its string to sign for version 2020-12-06 on.
fn account_sas(key: &str) -> String {
    let (sv, ss, srt, sp, se, spr) = (
        "2021-08-06",
        "b",
        "sco",
        "rwdlac",
        "2099-01-01T00:00:00Z",
        "https,http",
    );
    let to_sign = format!("{AZURITE_ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&b64.decode(key).unwrap())
        .expect("any key length");
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={}&sig={}",
        q(se),
        q(spr),
        q(&sig)
    )
}

/// A blob's bytes read with a SAS, `None` when absent.
fn blob(az: &AzureServer, name: &str) -> Option<Vec<u8>> {
    let url = format!(
        "{}/{CONTAINER}/{name}?{}",
        az.endpoint,
        account_sas(AZURITE_KEY)
    );
    match ureq::get(&url).call() {
        Ok(resp) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut resp.into_reader(), &mut out).unwrap();
            Some(out)
        }
        Err(ureq::Error::Status(404, _)) => None,
        Err(e) => panic!("GET {name}: {e}\n{}", az.log()),
    }
}

/// The names of the blobs under `prefix`, listed with a SAS.
fn blob_names(az: &AzureServer, prefix: &str) -> Vec<String> {
    let url = format!(
        "{}/{CONTAINER}?restype=container&comp=list&prefix={}&{}",
        az.endpoint,
        q(prefix),
        account_sas(AZURITE_KEY)
    );
    let body = ureq::get(&url).call().unwrap().into_string().unwrap();
    body.split("<Name>")
        .skip(1)
        .map(|s| s.split("</Name>").next().unwrap().to_string())
        .collect()
}

const METHODS: [(&str, &str); 5] = [
    ("lz4", ".lz4"),
    ("zstd", ".zst"),
    ("lzma", ".lzma"),
    ("brotli", ".br"),
    ("none", ""),
];

/// Every method through wal-push and wal-fetch on Azure, each object byte for byte the one
/// wal-rus stores on S3 for the same segment under the same key; a 16 MiB `none` segment
/// goes as staged blocks, the compressed ones as one Put Blob or blocks by their size.
#[test]
fn wal_round_trip_every_method_same_objects_as_s3() {
    let test = "wal_round_trip_every_method_same_objects_as_s3";
    let Some(az) = azurite(test) else {
        return;
    };
    let Some(_) = require_or_fail(Tool::S3s, test) else {
        return;
    };
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let wal = pg_wal(dir.path());
    for (i, (method, ext)) in METHODS.iter().enumerate() {
        let name = seg_name(i as u64 + 1);
        let data = segment(i as u64 + 1, false);
        fs::write(wal.join(&name), &data).unwrap();
        let settings = [("WALG_COMPRESSION_METHOD", *method)];
        for env in [
            env_with(&key_env(&az, "pg/main"), &settings),
            env_with(&s3.env("pg/main"), &settings),
        ] {
            ok(
                &run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &env),
                "wal-push",
            );
        }
        let key = format!("pg/main/wal_005/{name}{ext}");
        let on_azure = blob(&az, &key).unwrap_or_else(|| panic!("{key} not on Azure"));
        let on_s3 = fs::read(s3.object_path(&key)).unwrap();
        assert!(on_azure == on_s3, "{method}: Azure and S3 objects differ");
        // Fetched with another method configured: the probe finds it by its extension.
        let dest = dir.path().join(format!("restored-{method}"));
        let other = if *method == "lz4" { "zstd" } else { "lz4" };
        let env = env_with(
            &key_env(&az, "pg/main"),
            &[
                ("WALG_COMPRESSION_METHOD", other),
                ("WALG_DOWNLOAD_CONCURRENCY", "1"),
            ],
        );
        ok(
            &run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env),
            "wal-fetch",
        );
        assert!(
            fs::read(&dest).unwrap() == data,
            "{method}: restored bytes differ"
        );
    }
    // Small blocks: the 16 MiB segment as 1 MiB blocks, read back whole.
    let name = seg_name(9);
    let data = segment(9, true);
    fs::write(wal.join(&name), &data).unwrap();
    let env = env_with(
        &key_env(&az, "blocks"),
        &[
            ("WALG_COMPRESSION_METHOD", "none"),
            ("AZURE_BUFFER_SIZE", "1048576"),
        ],
    );
    ok(
        &run_walrus(["wal-push", wal.join(&name).to_str().unwrap()], &env),
        "wal-push",
    );
    assert!(blob(&az, &format!("blocks/wal_005/{name}")).unwrap() == data);
    let log = az.log();
    assert!(log.contains("comp=blocklist"), "no Put Block List:\n{log}");
}

#[test]
fn a_missing_segment_exits_74_and_writes_nothing() {
    let Some(az) = azurite("a_missing_segment_exits_74_and_writes_nothing") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let out = run_walrus(
        [
            "wal-fetch",
            "000000010000000000000042",
            dest.to_str().unwrap(),
        ],
        &key_env(&az, "pg"),
    );
    assert_eq!(out.status.code(), Some(74), "{}", output_text(&out));
    assert!(!dest.exists());
}

/// SAS authorization end to end; a wrong key, a wrong SAS and a missing container fail at
/// once (exit 1) with a message that says what to check.
#[test]
fn sas_tokens_work_and_wrong_credentials_fail_clearly() {
    let Some(az) = azurite("sas_tokens_work_and_wrong_credentials_fail_clearly") else {
        return;
    };
    let (dir, segment_path, name) = first_segment();
    let sas = account_sas(AZURITE_KEY);
    let env = sas_env(&az, "sas", &sas);
    ok(&run_walrus(["wal-push", &segment_path], &env), "wal-push");
    let dest = dir.path().join("back");
    ok(
        &run_walrus(["wal-fetch", &name, dest.to_str().unwrap()], &env),
        "wal-fetch",
    );
    assert!(fs::read(&dest).unwrap() == segment(1, false));
    assert_eq!(
        blob_names(&az, "sas/"),
        vec![format!("sas/wal_005/{name}.lz4")]
    );

    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let wrong_key = env_with(
        &key_env(&az, "sas"),
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &az.connection_string().replace(AZURITE_KEY, &other_key),
        )],
    );
    let wrong_sas = sas_env(&az, "sas", &account_sas(&other_key));
    let no_container = env_with(
        &key_env(&az, ""),
        &[("WALG_AZ_PREFIX", "azure://nowhere/pg")],
    );
    for (env, says) in [
        (&wrong_key, "check AZURE_STORAGE_ACCESS_KEY"),
        (&wrong_sas, "check AZURE_STORAGE_SAS_TOKEN"),
        (&no_container, "container nowhere does not exist"),
    ] {
        let started = std::time::Instant::now();
        let out = run_walrus(["wal-push", &segment_path], env);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(says), "expected {says:?} in:\n{text}");
        assert!(
            started.elapsed().as_secs() < 30,
            "not refused at once: {text}"
        );
    }
}

/// At DEVEL, nothing any command prints holds the account key, a SAS signature or an
/// Authorization value: neither on success nor on a refusal.
#[test]
fn no_secret_in_devel_output() {
    let Some(az) = azurite("no_secret_in_devel_output") else {
        return;
    };
    let (dir, segment_path, name) = first_segment();
    let sas = account_sas(AZURITE_KEY);
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let bad_sas = account_sas(&base64::engine::general_purpose::STANDARD.encode([9u8; 64]));
    let bad_sig = bad_sas.rsplit("sig=").next().unwrap().to_string();
    let dest = dir.path().join("back");
    let mut printed = String::new();
    for env in [
        key_env(&az, "devel"),
        sas_env(&az, "devel", &sas),
        sas_env(&az, "devel", &bad_sas),
        env_with(
            &key_env(&az, "devel"),
            &[("WALG_AZ_PREFIX", "azure://nowhere/x")],
        ),
    ] {
        let env = env_with(&env, &[("WALG_LOG_LEVEL", "DEVEL")]);
        for args in [
            vec!["wal-push", &segment_path],
            vec!["wal-fetch", &name, dest.to_str().unwrap()],
            vec![
                "wal-fetch",
                "000000010000000000000099",
                dest.to_str().unwrap(),
            ],
            vec!["backup-list", "--detail"],
            vec!["memory-plan"],
        ] {
            printed.push_str(&output_text(&run_walrus(&args, &env)));
        }
    }
    assert!(printed.contains("AuthorizationFailure"), "{printed}");
    for secret in [
        AZURITE_KEY,
        &sig,
        &bad_sig,
        "sig=",
        "SharedKey",
        "Authorization:",
    ] {
        assert!(!printed.contains(secret), "{secret:?} printed:\n{printed}");
    }
    // The key's halves too: a message must not quote part of it.
    assert!(!printed.contains(&AZURITE_KEY[..20]));
}

/// Peak RSS of wal-push and wal-fetch of a 16 MiB segment on Azure at default settings,
/// under 8 MiB and within memory-plan's figures (which count the Azure client).
#[test]
fn wal_push_and_fetch_memory_within_plan_on_azure() {
    let Some(az) = azurite("wal_push_and_fetch_memory_within_plan_on_azure") else {
        return;
    };
    let env = key_env(&az, "mem");
    let plan = Plan::read(&env);
    assert_eq!(plan.0["settings"]["storage"], "azure", "{:#}", plan.0);
    assert!(
        plan.0["commands"]["wal-fetch"]["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "azure_client"),
        "{:#}",
        plan.0
    );
    wal_memory_within_plan(&env, "Azure");
}

/// A base backup under load with PITR (as on S3 and files), then backup-list and delete
/// on the same archive.
#[test]
fn pitr_backup_list_and_delete_on_azure() {
    let test = "pitr_backup_list_and_delete_on_azure";
    let Some(_) = require_or_fail(Tool::Postgres, test) else {
        return;
    };
    let Some(az) = azurite(test) else {
        return;
    };
    let env = key_env(&az, "pitr");
    pitr(env.clone());
    let out = run_walrus(["backup-list", "--json"], &env);
    ok(&out, "backup-list");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backups = list.as_array().expect("a JSON array");
    assert_eq!(backups.len(), 1, "{list:#}");
    let backup = backups[0]["backup_name"].as_str().unwrap().to_string();
    let names = blob_names(&az, "pitr/");
    assert!(
        names
            .iter()
            .any(|n| n == &format!("pitr/basebackups_005/{backup}_backup_stop_sentinel.json")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with(&format!(
        "pitr/basebackups_005/{backup}/tar_partitions/part_"
    ))));
    assert!(names.iter().any(|n| n.starts_with("pitr/wal_005/")));
    // Retaining the only backup keeps it and deletes only the WAL before it; everything
    // FORCE deletes every object.
    ok(
        &run_walrus(["delete", "retain", "1", "--confirm"], &env),
        "delete retain",
    );
    let kept = blob_names(&az, "pitr/");
    let backup_objects = |names: &[String]| {
        names
            .iter()
            .filter(|n| n.contains("basebackups_005/"))
            .count()
    };
    assert_eq!(backup_objects(&kept), backup_objects(&names), "{kept:?}");
    assert!(kept.len() < names.len(), "no WAL before the backup deleted");
    ok(
        &run_walrus(["delete", "everything", "FORCE", "--confirm"], &env),
        "delete everything",
    );
    assert_eq!(blob_names(&az, "pitr/"), Vec::<String>::new());
    let out = run_walrus(["backup-list"], &env);
    ok(&out, "backup-list");
    assert!(
        output_text(&out).contains("No backups found"),
        "{}",
        output_text(&out)
    );
}

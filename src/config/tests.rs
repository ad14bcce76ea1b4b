//! Settings as a command sees them: defaults, precedence of the environment over the file,
//! the storage chosen, and a bad value stopped with the setting's name.

use super::*;
use crate::codec::Method;

fn load(pairs: &[(&str, &str)], file: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = file
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(
        &Sources::from_parts(move |k| env.get(k).cloned(), file),
        Cmd::WalPush,
    )
}

#[test]
fn s3_prefix_and_defaults() {
    let s = load(
        &[
            ("WALG_S3_PREFIX", "s3://bkt/pg/main/"),
            ("AWS_ACCESS_KEY_ID", " AK "),
            ("AWS_SECRET_ACCESS_KEY", "sk"),
            ("AWS_REGION", "eu-west-1"),
        ],
        &[],
    )
    .unwrap();
    let StorageSettings::S3(c) = &s.storage else {
        panic!()
    };
    assert_eq!((c.bucket.as_str(), c.root.as_str()), ("bkt", "pg/main/"));
    assert_eq!(c.credentials.current().unwrap().access_key_id, "AK");
    assert_eq!(c.part_size, 20_971_520);
    assert_eq!(s.encode.method, Method::Lz4);
    assert_eq!(
        (
            s.upload_concurrency,
            s.download_concurrency,
            s.bg_uploaded_limit
        ),
        (16, 10, 32)
    );
    assert_eq!(s.wal_segment_size, 16 << 20);
    assert_eq!(s.slot_name, "walg");
    assert_eq!(
        parse_s3_prefix("X", "s3://b").unwrap(),
        ("b".into(), "".into())
    );
    assert_eq!(
        parse_s3_prefix("X", "s3://b/a//c/").unwrap(),
        ("b".into(), "a//c/".into())
    );
}

#[test]
fn env_wins_over_file_and_empty_is_unset() {
    let s = load(
        &[
            ("WALG_FILE_PREFIX", "/env"),
            ("WALG_COMPRESSION_METHOD", ""),
        ],
        &[
            ("WALG_FILE_PREFIX", "/file"),
            ("WALG_COMPRESSION_METHOD", "zstd"),
        ],
    )
    .unwrap();
    assert!(matches!(&s.storage, StorageSettings::File { root } if root == "/env"));
    assert_eq!(s.encode.method, Method::Zstd);
}

#[test]
fn storage_prefix_and_order() {
    let s = load(
        &[
            ("WALG_FILE_PREFIX", "file://localhost/tmp/a/"),
            ("WALG_STORAGE_PREFIX", "/sub/"),
        ],
        &[],
    )
    .unwrap();
    assert!(matches!(&s.storage, StorageSettings::File { root } if root == "/tmp/a/sub"));
    // S3 comes before FILE in WAL-G's order.
    let s = load(
        &[
            ("WALG_FILE_PREFIX", "/x"),
            ("WALE_S3_PREFIX", "s3://b/p"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINT", "http://h:1"),
        ],
        &[],
    )
    .unwrap();
    assert!(matches!(&s.storage, StorageSettings::S3(c) if c.region == "us-east-1"));
}

#[test]
fn bad_values_name_the_setting() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("WALG_FILE_PREFIX", "/x"),
                ("WALG_COMPRESSION_METHOD", "LZ4"),
            ],
            "WALG_COMPRESSION_METHOD",
        ),
        (
            &[
                ("WALG_FILE_PREFIX", "/x"),
                ("WALG_UPLOAD_CONCURRENCY", "many"),
            ],
            "WALG_UPLOAD_CONCURRENCY",
        ),
        (
            &[("WALG_FILE_PREFIX", "/x"), ("WALG_UPLOAD_CONCURRENCY", "0")],
            "WALG_UPLOAD_CONCURRENCY",
        ),
        (
            &[
                ("WALG_FILE_PREFIX", "/x"),
                ("WALG_PREVENT_WAL_OVERWRITE", "yes"),
            ],
            "WALG_PREVENT_WAL_OVERWRITE",
        ),
        (
            &[("WALG_FILE_PREFIX", "/x"), ("WALG_PG_WAL_SIZE", "24")],
            "WALG_PG_WAL_SIZE",
        ),
        (
            &[("WALG_FILE_PREFIX", "/x"), ("WALG_SLOTNAME", "Wal-G")],
            "WALG_SLOTNAME",
        ),
        (
            &[("WALG_FILE_PREFIX", "/x"), ("WALG_ZSTD_LEVEL", "best")],
            "WALG_ZSTD_LEVEL",
        ),
        (&[("WALG_S3_PREFIX", "bucket/path")], "WALG_S3_PREFIX"),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_REGION", "r"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            "AWS_ACCESS_KEY_ID",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
            "AWS_REGION",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_REGION", "r"),
                ("AWS_PROFILE", "nowhere"),
                ("HOME", "/nonexistent"),
            ],
            "AWS_PROFILE",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_REGION", "r"),
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://10.1.2.3/creds",
                ),
            ],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
            ],
            "AWS_REGION",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
                ("AWS_ENDPOINT", "ftp://x"),
            ],
            "AWS_ENDPOINT",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
                ("AWS_REGION", "r"),
                ("WALG_S3_SSE", "aws:kms"),
            ],
            "WALG_S3_SSE_KMS_ID",
        ),
        (
            &[
                ("WALG_S3_PREFIX", "s3://b/p"),
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
                ("AWS_REGION", "r"),
                ("S3_MAX_PART_SIZE", "1000"),
            ],
            "S3_MAX_PART_SIZE",
        ),
        (&[("WALG_SWIFT_PREFIX", "swift://b/p")], "WALG_SWIFT_PREFIX"),
        (&[("WALG_GS_PREFIX", "b/p")], "WALG_GS_PREFIX"),
        (
            &[
                ("WALG_GS_PREFIX", "gs://b/p"),
                ("GCS_ENCRYPTION_KEY", "c2hvcnQ="),
            ],
            "GCS_ENCRYPTION_KEY",
        ),
        (
            &[
                ("WALG_GS_PREFIX", "gs://b/p"),
                ("GCS_NORMALIZE_PREFIX", "maybe"),
            ],
            "GCS_NORMALIZE_PREFIX",
        ),
        (
            &[
                ("WALG_GS_PREFIX", "gs://b/p"),
                ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
            ],
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (&[], "WALG_S3_PREFIX"),
    ];
    for (env, setting) in cases {
        let err = load(env, &[]).unwrap_err();
        assert_eq!(err.setting, *setting, "{env:?}: {err}");
    }
}

#[test]
fn log_level_takes_walgs_words_only() {
    let base = ("WALG_FILE_PREFIX", "/x");
    assert_eq!(load(&[base], &[]).unwrap().log_level, LogLevel::Normal);
    let s = load(&[base, ("WALG_LOG_LEVEL", "DEVEL")], &[]).unwrap();
    assert_eq!(s.log_level, LogLevel::Devel);
    let e = load(&[base, ("WALG_LOG_LEVEL", "devel")], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "WALG_LOG_LEVEL: 'devel' is not one of NORMAL, DEVEL, ERROR"
    );
}

/// OpenPGP as WAL-G reads it: WALG_PGP_KEY (one line with `\n` for newlines) before
/// WALG_PGP_KEY_PATH, both before libsodium; the other encryption settings still refused.
#[test]
fn pgp_settings() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pgp");
    let rsa = format!("{dir}/rsa.asc");
    let public = std::fs::read_to_string(format!("{dir}/rsa.pub.asc")).unwrap();
    let one_line = public.replace('\n', "\\n");
    let pgp = |s: &Settings| match &s.crypter {
        Crypter::Pgp(k) => k.has_secret(),
        other => panic!("not OpenPGP: {other:?}"),
    };
    let base = ("WALG_FILE_PREFIX", "/x");
    assert!(pgp(
        &load(&[base, ("WALG_PGP_KEY_PATH", &rsa)], &[]).unwrap()
    ));
    assert!(!pgp(
        &load(&[base, ("WALG_PGP_KEY", &one_line)], &[]).unwrap()
    ));
    // WALG_PGP_KEY first: the path is not even read.
    let s = load(
        &[
            base,
            ("WALG_PGP_KEY", &one_line),
            ("WALG_PGP_KEY_PATH", "/nonexistent"),
        ],
        &[],
    )
    .unwrap();
    assert!(!pgp(&s));
    // OpenPGP wins over libsodium, as in WAL-G.
    let s = load(
        &[
            base,
            ("WALG_LIBSODIUM_KEY", "0123456789abcdef0123456789abcdef"),
            ("WALG_PGP_KEY_PATH", &rsa),
        ],
        &[],
    )
    .unwrap();
    assert!(pgp(&s));
    // From the config file too.
    assert!(pgp(&load(&[base], &[("WALG_PGP_KEY_PATH", &rsa)]).unwrap()));
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("key.gpg");
    std::fs::write(&binary, [0x99u8, 1, 13, 4]).unwrap();
    let binary = binary.to_str().unwrap();
    for (env, setting, says) in [
        (("WALG_PGP_KEY", "not a key"), "WALG_PGP_KEY", "armored"),
        (
            ("WALG_PGP_KEY_PATH", "/nonexistent/key.asc"),
            "WALG_PGP_KEY_PATH",
            "cannot read",
        ),
        (("WALG_PGP_KEY_PATH", binary), "WALG_PGP_KEY_PATH", "binary"),
        (("WALG_CSE_KMS_ID", "k"), "WALG_CSE_KMS_ID", "not implement"),
        (
            ("WALG_ENVELOPE_PGP_KEY", "k"),
            "WALG_ENVELOPE_PGP_KEY",
            "not implement",
        ),
    ] {
        let e = load(&[base, env], &[]).unwrap_err();
        assert_eq!(e.setting, setting, "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn config_file_through_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("walg.yaml");
    let load_file = |body: &str| {
        std::fs::write(&p, body).unwrap();
        let entries = file::read(&p).unwrap();
        Settings::load(&Sources::from_entries(|_| None, entries), Cmd::WalPush)
    };
    let s = load_file(
        "walg_file_prefix: /data\nWALG_UPLOAD_CONCURRENCY: 4\nwalg_statsd_address: h:1\nfoo: 1\n",
    )
    .unwrap();
    assert_eq!(s.upload_concurrency, 4);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("WALG_STATSD_ADDRESS"));
    assert_eq!(s.warnings[1], "FOO is unknown");
    let err = load_file("WALG_FILE_PREFIX: /data\nwalg_envelope_pgp_key_path: /k\n").unwrap_err();
    assert_eq!(err.setting, "WALG_ENVELOPE_PGP_KEY_PATH");
    let err = load_file(
        "WALG_FILE_PREFIX: /data\nWALG_FAILOVER_STORAGES:\n  a:\n    WALG_FILE_PREFIX: /b\n",
    )
    .unwrap_err();
    assert_eq!(err.setting, "WALG_FAILOVER_STORAGES");
    let err = load_file("WALG_FILE_PREFIX: /data\nWALG_UPLOAD_CONCURRENCY: [4]\n").unwrap_err();
    assert_eq!(err.setting, "WALG_UPLOAD_CONCURRENCY");
    // The environment wins, and an empty value counts as unset.
    std::fs::write(&p, "WALG_FILE_PREFIX: /data\nWALG_DELTA_MAX_STEPS: 2\n").unwrap();
    let entries = file::read(&p).unwrap();
    let env = |k: &str| (k == "WALG_DELTA_MAX_STEPS").then(|| "0".to_string());
    let push = Cmd::BackupPush { full: false };
    let s = Settings::load(&Sources::from_entries(env, entries.clone()), push).unwrap();
    assert_eq!(s.delta.max_steps, 0);
    let env = |k: &str| (k == "WALG_DELTA_MAX_STEPS").then(String::new);
    let s = Settings::load(&Sources::from_entries(env, entries), push).unwrap();
    assert_eq!(s.delta.max_steps, 2);
}

#[test]
fn durations_as_walg_reads_them() {
    use super::sources::parse_go_duration;
    use std::time::Duration;
    assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("10"), None, "Go wants a unit");
    assert_eq!(parse_go_duration("-1s"), None);
    assert_eq!(parse_go_duration("1d"), None);
    assert_eq!(parse_go_duration(""), None);
    let load = |entries: &[(&str, &str)]| {
        let owned: Vec<(String, String)> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Settings::load(
            &Sources::from_entries(lookup, Vec::new()),
            Cmd::BackupPush { full: false },
        )
    };
    let s = load(&[("WALG_FILE_PREFIX", "/a")]).unwrap();
    assert_eq!(s.alive_check_interval, Some(Duration::from_secs(60)));
    assert_eq!(s.stop_backup_timeout, None);
    let s = load(&[
        ("WALG_FILE_PREFIX", "/a"),
        ("WALG_ALIVE_CHECK_INTERVAL", "0"),
        ("WALG_STOP_BACKUP_TIMEOUT", "30s"),
    ])
    .unwrap();
    assert_eq!(s.alive_check_interval, None);
    assert_eq!(s.stop_backup_timeout, Some(Duration::from_secs(30)));
    let e = load(&[
        ("WALG_FILE_PREFIX", "/a"),
        ("WALG_STOP_BACKUP_TIMEOUT", "5"),
    ])
    .err()
    .unwrap();
    assert!(e.to_string().contains("WALG_STOP_BACKUP_TIMEOUT"), "{e}");
}

//! The Azure settings: prefix, endpoint, credentials, connection strings, sizes, and the
//! refusals that name a setting without showing its value.

use super::*;
use crate::config::{Cmd, Settings, StorageSettings};
use crate::pipeline::plan::Client;
use std::collections::HashMap;

const KEY: &str = "a2V5LWZvci10ZXN0cy1vbmx5";

fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(
        &Sources::from_parts(move |k| env.get(k).cloned(), HashMap::new()),
        Cmd::WalPush,
    )
}

fn azure(pairs: &[(&str, &str)]) -> AzureConfig {
    match load(pairs).unwrap().storage {
        StorageSettings::Azure(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn prefixes_split_as_walg_splits_them() {
    let p = |u: &str| parse_az_prefix("WALG_AZ_PREFIX", u).unwrap();
    assert_eq!(p("azure://c/pg/main/"), ("c".into(), "pg/main/".into()));
    assert_eq!(p("azure://c"), ("c".into(), "".into()));
    assert_eq!(p("azure://c/"), ("c".into(), "".into()));
    assert_eq!(p("azure://c//a//b/"), ("c".into(), "a//b/".into()));
    for bad in ["c/pg", "azure:///pg", "://c/pg"] {
        let e = parse_az_prefix("WALG_AZ_PREFIX", bad).unwrap_err();
        assert_eq!(e.setting, "WALG_AZ_PREFIX");
    }
}

#[test]
fn defaults_build_walgs_endpoint_and_shared_key() {
    let c = azure(&[
        ("WALE_AZ_PREFIX", "azure://backups/pg/main"),
        ("WALG_STORAGE_PREFIX", "/sub/"),
        ("AZURE_STORAGE_ACCOUNT", "acct"),
        ("AZURE_STORAGE_ACCESS_KEY", KEY),
        ("AZURE_STORAGE_SAS_TOKEN", "sv=x&sig=y"),
    ]);
    assert_eq!(
        (c.container.as_str(), c.root.as_str()),
        ("backups", "pg/main/sub/")
    );
    assert_eq!(c.endpoint, "https://acct.blob.core.windows.net");
    // The key wins over the SAS token, as in WAL-G.
    assert!(matches!(&c.auth, AzureAuth::SharedKey(k) if k.account == "acct"));
    assert_eq!((c.block_size, c.max_buffers), (8 << 20, 4));
    assert_eq!(c.try_timeout, Duration::from_secs(300));
    assert!(!format!("{c:?}").contains(KEY));
}

#[test]
fn environment_suffix_sizes_and_sas() {
    let base = [
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("WALG_AZURE_STORAGE_ACCOUNT", "acct"),
        ("AZURE_STORAGE_SAS_TOKEN", "?sv=2021&sig=abc%3D"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        azure(&v)
    };
    let c = with(&[("AZURE_ENVIRONMENT_NAME", "AzureChinaCloud")]);
    assert_eq!(c.endpoint, "https://acct.blob.core.chinacloudapi.cn");
    assert!(matches!(&c.auth, AzureAuth::Sas(t) if t == "sv=2021&sig=abc%3D"));
    assert!(!format!("{c:?}").contains("sig="));
    let c = with(&[
        ("AZURE_ENVIRONMENT_NAME", "Mars"),
        ("WALG_AZURE_ENDPOINT_SUFFIX", "example.test"),
    ]);
    assert_eq!(c.endpoint, "https://acct.blob.example.test");
    assert_eq!(
        with(&[("AZURE_ENVIRONMENT_NAME", "Mars")]).endpoint,
        "https://acct.blob.core.windows.net"
    );
    let c = with(&[
        ("WALG_AZURE_BUFFER_SIZE", "100"),
        ("WALG_AZURE_MAX_BUFFERS", "0"),
        ("AZURE_TRY_TIMEOUT", "0"),
    ]);
    assert_eq!((c.block_size, c.max_buffers), (1024, 1));
    assert!(c.try_timeout.is_zero());
    let e = load(&[base[0], base[1], base[2], ("AZURE_BUFFER_SIZE", "8M")]).unwrap_err();
    assert_eq!(e.setting, "AZURE_BUFFER_SIZE");
}

#[test]
fn connection_strings_point_at_an_emulator() {
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
         BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;"
    );
    let parsed = parse_connection_string(&cs).unwrap();
    assert_eq!(parsed.key.as_deref(), Some(KEY));
    assert_eq!(parsed.protocol.as_deref(), Some("http"));
    let c = azure(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_CONNECTION_STRING", &cs),
    ]);
    assert_eq!(c.account, "devstoreaccount1");
    assert_eq!(c.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
    assert!(matches!(c.auth, AzureAuth::SharedKey(_)));
    // A SAS variant, and a string that builds the endpoint from its suffix.
    let c = azure(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=a;SharedAccessSignature=sv=1&sig=s;EndpointSuffix=core.usgovcloudapi.net",
        ),
    ]);
    assert_eq!(c.endpoint, "https://a.blob.core.usgovcloudapi.net");
    assert!(matches!(&c.auth, AzureAuth::Sas(t) if t == "sv=1&sig=s"));
    assert!(parse_connection_string("AccountName").is_err());
    let e = load(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=a;SharedAccessSignature=sv=1&sig=x;BlobEndpoint=https://a.example/?sv=1&sig=SECRET",
        ),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "AZURE_STORAGE_CONNECTION_STRING");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    let e = parse_connection_string("UseDevelopmentStorage=true").unwrap_err();
    assert!(e.contains("usedevelopmentstorage"), "{e}");
}

#[test]
fn a_connection_string_must_agree_with_walgs_settings() {
    let cs = format!("AccountName=one;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1/one");
    let base = [
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
    ];
    let refused = |extra: (&str, &str)| {
        let e = load(&[base[0], base[1], extra]).unwrap_err();
        assert!(!e.to_string().contains(KEY), "{e}");
        e.setting
    };
    assert_eq!(
        refused(("AZURE_STORAGE_ACCOUNT", "two")),
        "AZURE_STORAGE_ACCOUNT"
    );
    assert_eq!(
        refused(("AZURE_STORAGE_ACCESS_KEY", "b3RoZXI=")),
        "AZURE_STORAGE_ACCESS_KEY"
    );
    assert_eq!(
        refused(("AZURE_ENDPOINT_SUFFIX", "x.test")),
        "AZURE_ENDPOINT_SUFFIX"
    );
    // Agreeing settings are fine.
    let c = azure(&[base[0], base[1], ("AZURE_STORAGE_ACCOUNT", "one")]);
    assert_eq!(c.account, "one");
}

#[test]
fn missing_or_malformed_credentials_are_refused_by_name() {
    let e = load(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_ACCESS_KEY", KEY),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "AZURE_STORAGE_ACCOUNT");
    // A service principal needs its tenant and application; App Service its header; a
    // certificate is refused.
    let chain = [
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_ACCOUNT", "a"),
    ];
    let refused = |extra: &[(&str, &str)]| {
        let mut pairs = chain.to_vec();
        pairs.extend_from_slice(extra);
        let e = load(&pairs).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        e.setting
    };
    assert_eq!(
        refused(&[
            ("AZURE_CLIENT_SECRET", "s3cr3t"),
            ("AZURE_CLIENT_ID", "app")
        ]),
        "AZURE_TENANT_ID"
    );
    assert_eq!(
        refused(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("AZURE_TENANT_ID", "t")
        ]),
        "AZURE_CLIENT_ID"
    );
    assert_eq!(
        refused(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")]),
        "IDENTITY_HEADER"
    );
    assert_eq!(
        refused(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem")]),
        "AZURE_CLIENT_CERTIFICATE_PATH"
    );
    let e = load(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_ACCOUNT", "a"),
        ("WALG_AZURE_STORAGE_ACCESS_KEY", "not*base64*secret"),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "WALG_AZURE_STORAGE_ACCESS_KEY");
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[test]
fn the_plan_sees_azure_blocks_and_buffers() {
    let s = load(&[
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_ACCOUNT", "a"),
        ("AZURE_STORAGE_ACCESS_KEY", KEY),
        ("AZURE_BUFFER_SIZE", "6291456"),
        ("AZURE_MAX_BUFFERS", "1"),
    ])
    .unwrap();
    let input = s.plan_input();
    assert!(input.remote() && input.https);
    assert_eq!(input.client, Client::Azure);
    assert_eq!((input.part_size, input.part_uploaders), (6 << 20, 1));
    assert_eq!(crate::pipeline::plan::stream_parts(&input), (1, 6 << 20));
    let push = crate::pipeline::plan::wal_fetch(&input);
    assert!(push.components.iter().any(|t| t.name == "azure_client"));
    assert!(s.wait_limit() > Duration::from_secs(300));
    assert!(s.wait_limit() < Duration::from_secs(6 * 3600));
}

#[test]
fn without_a_key_or_sas_the_default_chain_is_followed_in_the_sdks_order() {
    let source = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("WALG_AZ_PREFIX", "azure://c/p"),
            ("AZURE_STORAGE_ACCOUNT", "a"),
        ];
        pairs.extend_from_slice(extra);
        match azure(&pairs).auth {
            AzureAuth::Token(t) => t.describe(),
            other => panic!("{other:?}"),
        }
    };
    let all = [
        ("AZURE_TENANT_ID", "tn"),
        ("AZURE_CLIENT_ID", "app"),
        ("AZURE_CLIENT_SECRET", "s3cr3t"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
    ];
    let d = source(&all);
    assert_eq!(d, "service principal app of tenant tn (client secret)");
    assert_eq!(
        source(
            &all[..2]
                .iter()
                .chain(&all[3..])
                .copied()
                .collect::<Vec<_>>()
        ),
        "workload identity app of tenant tn (/var/run/token)"
    );
    assert_eq!(
        source(&[]),
        "the managed identity at http://169.254.169.254/metadata/identity/oauth2/token"
    );
    assert_eq!(
        source(&[
            ("AZURE_CLIENT_ID", "uami"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41/msi/token"),
            ("IDENTITY_HEADER", "hdr-s3cr3t"),
        ]),
        "managed identity uami at http://127.0.0.1:41/msi/token"
    );
    // A key still wins, as in WAL-G.
    let mut with_key = all.to_vec();
    with_key.extend([
        ("WALG_AZ_PREFIX", "azure://c/p"),
        ("AZURE_STORAGE_ACCOUNT", "a"),
        ("AZURE_STORAGE_ACCESS_KEY", KEY),
    ]);
    assert!(matches!(azure(&with_key).auth, AzureAuth::SharedKey(_)));
    assert!(!format!("{:?}", azure(&with_key)).contains("s3cr3t"));
}

//! The Google Cloud Storage settings, looked up as WAL-G looks them up (bare name, then
//! `WALG_`, then `WALE_`) plus the variables Google's client library reads (which WAL-G
//! therefore obeys): `GOOGLE_APPLICATION_CREDENTIALS`, `STORAGE_EMULATOR_HOST`,
//! `GCE_METADATA_HOST`. Checked before the first request, so a bad key file or a malformed
//! prefix fails with the setting's name.
//!
//! Object names are WAL-G's (pkg/storages/gcs): the prefix is parsed as a URL whose host is
//! the bucket; with `GCS_NORMALIZE_PREFIX` (default true) the path loses its leading and
//! trailing slashes and gets one `/` appended, exactly as on S3, so an archive has the same
//! names on both; with `false` (WAL-E archives written with odd prefixes) only one leading
//! slash is dropped, so `gs://b//x/` keeps the names under `/x/`.

use super::sources::{Sources, parse_bool, uint_setting};
use super::{ConfigError, bad};
use crate::storage::gcs::auth::{Auth, METADATA_HOST, ServiceAccount};
use crate::storage::gcs::upload::chunk_size;
use crate::storage::gcs::{CustomerKey, GcsConfig};
use std::time::Duration;

/// Google's endpoint.
pub const ENDPOINT: &str = "https://storage.googleapis.com";

/// Bucket and object-name root of a `gs://bucket/path` prefix, by WAL-G's rules.
pub fn parse_gs_prefix(
    name: &str,
    url: &str,
    normalize: bool,
) -> Result<(String, String), ConfigError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad(name, format!("'{url}' must look like gs://bucket/path")))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (bucket, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if scheme.is_empty() || bucket.is_empty() {
        return Err(bad(name, format!("'{url}' has no bucket name")));
    }
    let path =
        percent_decode(path).ok_or_else(|| bad(name, format!("'{url}' is not a valid URL")))?;
    let path = if normalize {
        path.trim_matches('/').to_string()
    } else {
        path.strip_prefix('/').unwrap_or(&path).to_string()
    };
    let root = if path.is_empty() || path.ends_with('/') {
        path
    } else {
        format!("{path}/")
    };
    Ok((bucket.to_string(), root))
}

/// A URL path's `%XX` escapes decoded, as Go's `url.Parse` gives the path.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The GCS storage of the prefix setting `name` = `value`, below `storage_prefix`.
pub(super) fn config(
    src: &Sources,
    name: &str,
    value: &str,
    storage_prefix: Option<&str>,
) -> Result<GcsConfig, ConfigError> {
    let normalize = match src.storage_setting("GCS_NORMALIZE_PREFIX") {
        Some((n, v)) => parse_bool(&n, v.trim())?,
        None => true,
    };
    let (bucket, mut root) = parse_gs_prefix(name, value, normalize)?;
    if let Some(p) = storage_prefix.filter(|p| !p.is_empty()) {
        root = format!("{root}{p}/");
    }
    let emulator = src
        .get("STORAGE_EMULATOR_HOST")
        .map(|h| emulator_endpoint(&h));
    let (connect_timeout, io_timeout) = super::sources::net_timeouts(src)?;
    Ok(GcsConfig {
        bucket,
        root,
        auth: auth(src, emulator.is_some())?,
        endpoint: emulator.unwrap_or_else(|| ENDPOINT.to_string()),
        encryption_key: encryption_key(src)?,
        chunk_size: chunk_size(setting_u64(
            src,
            "GCS_MAX_CHUNK_SIZE",
            50 << 20,
            1,
            5 << 30,
        )?),
        max_retries: setting_u64(src, "GCS_MAX_RETRIES", 16, 0, u64::MAX)?.min(100) as u32,
        context_timeout: Duration::from_secs(setting_u64(
            src,
            "GCS_CONTEXT_TIMEOUT",
            3600,
            1,
            30 * 24 * 3600,
        )?),
        connect_timeout,
        io_timeout,
    })
}

/// A storage setting under whichever spelling is set.
fn setting_u64(
    src: &Sources,
    bare: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let name = src
        .storage_setting(bare)
        .map_or_else(|| bare.to_string(), |(n, _)| n);
    uint_setting(src, &name, default, min, max)
}

/// `STORAGE_EMULATOR_HOST` as Google's libraries take it: `host:port` means plain HTTP.
fn emulator_endpoint(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

/// Credentials: the key file, else none for an emulator, else the metadata server.
fn auth(src: &Sources, emulator: bool) -> Result<Auth, ConfigError> {
    const CREDS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
    if let Some(path) = src.get(CREDS) {
        let bytes =
            std::fs::read(&path).map_err(|e| bad(CREDS, format!("cannot read {path}: {e}")))?;
        let account =
            ServiceAccount::from_json(&bytes).map_err(|e| bad(CREDS, format!("{path} {e}")))?;
        return Ok(Auth::ServiceAccount(account));
    }
    if emulator {
        return Ok(Auth::Anonymous);
    }
    let host = src
        .get("GCE_METADATA_HOST")
        .map(|h| h.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| METADATA_HOST.to_string());
    Ok(Auth::Metadata { host })
}

/// `GCS_ENCRYPTION_KEY`: base64 of a 32-byte AES-256 key, as WAL-G requires.
fn encryption_key(src: &Sources) -> Result<Option<CustomerKey>, ConfigError> {
    use base64::Engine;
    let Some((name, value)) = src.storage_setting("GCS_ENCRYPTION_KEY") else {
        return Ok(None);
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| {
            bad(
                &name,
                "is not base64 (a customer-supplied key is base64 of 32 bytes)",
            )
        })?;
    let key: [u8; 32] = key.try_into().map_err(|k: Vec<u8>| {
        bad(
            &name,
            format!("decodes to {} bytes; an AES-256 key has 32", k.len()),
        )
    })?;
    Ok(Some(CustomerKey::new(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, normalize: bool) -> (String, String) {
        parse_gs_prefix("WALG_GS_PREFIX", url, normalize).unwrap()
    }

    #[test]
    fn prefixes_split_as_walg_splits_them() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(parse("gs://b/pg/c1", true), s("b", "pg/c1/"));
        assert_eq!(parse("gs://b/pg/c1/", true), s("b", "pg/c1/"));
        assert_eq!(parse("gs://b//pg//c1//", true), s("b", "pg//c1/"));
        assert_eq!(parse("gs://b", true), s("b", ""));
        assert_eq!(parse("gs://b/", true), s("b", ""));
        assert_eq!(parse("gs://b/a%20b?x=1#f", true), s("b", "a b/"));
        // WAL-E compatibility: only one leading slash goes.
        assert_eq!(parse("gs://b//pg/c1", false), s("b", "/pg/c1/"));
        assert_eq!(parse("gs://b/pg/c1//", false), s("b", "pg/c1//"));
        assert_eq!(parse("gs://b", false), s("b", ""));
        for bad_url in ["b/path", "gs:///path", "gs://b/%zz"] {
            assert!(
                parse_gs_prefix("WALG_GS_PREFIX", bad_url, true).is_err(),
                "{bad_url}"
            );
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<GcsConfig, ConfigError> {
        let env: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let src = Sources::from_parts(move |k| env.get(k).cloned(), Default::default());
        let prefix = src.get("WALG_GS_PREFIX").unwrap();
        config(&src, "WALG_GS_PREFIX", &prefix, Some("sub"))
    }

    #[test]
    fn settings_as_walg_reads_them() {
        let c = settings(&[("WALG_GS_PREFIX", "gs://bkt/pg/c1")]).unwrap();
        assert_eq!((c.bucket.as_str(), c.root.as_str()), ("bkt", "pg/c1/sub/"));
        assert_eq!(c.endpoint, ENDPOINT);
        assert!(matches!(&c.auth, Auth::Metadata { host } if host == METADATA_HOST));
        assert_eq!(c.chunk_size, 50 << 20);
        assert_eq!(c.max_retries, 16);
        assert_eq!(c.context_timeout, Duration::from_secs(3600));
        assert!(c.encryption_key.is_none());
        let c = settings(&[
            ("WALG_GS_PREFIX", "gs://bkt//pg/"),
            ("WALG_GCS_NORMALIZE_PREFIX", "false"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
            ("GCS_MAX_CHUNK_SIZE", "1000000"),
            ("WALE_GCS_MAX_RETRIES", "3"),
            ("GCS_CONTEXT_TIMEOUT", "7"),
            (
                "GCS_ENCRYPTION_KEY",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
        ])
        .unwrap();
        assert_eq!(c.root, "/pg/sub/");
        assert_eq!(c.endpoint, "http://127.0.0.1:4443");
        assert!(matches!(c.auth, Auth::Anonymous));
        assert_eq!(c.chunk_size, 3 * 256 * 1024);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.context_timeout, Duration::from_secs(7));
        let key = c.encryption_key.unwrap();
        assert_eq!(
            key.sha256_base64(),
            "S7Bvjk46dxXSAdVz0KpCN2LlXavWGiwCJ4+lbMbSlOA="
        );
        assert!(!format!("{key:?}").contains("BwcH"));
        let c = settings(&[
            ("WALG_GS_PREFIX", "gs://b"),
            ("GCE_METADATA_HOST", "127.0.0.1:9"),
        ])
        .unwrap();
        assert!(matches!(&c.auth, Auth::Metadata { host } if host == "127.0.0.1:9"));
        let e =
            settings(&[("WALG_GS_PREFIX", "gs://b"), ("GCS_ENCRYPTION_KEY", "!!")]).unwrap_err();
        assert_eq!(e.setting, "GCS_ENCRYPTION_KEY");
        let e = settings(&[("WALG_GS_PREFIX", "gs://b"), ("GCS_MAX_RETRIES", "x")]).unwrap_err();
        assert_eq!(e.setting, "GCS_MAX_RETRIES");
    }

    #[test]
    fn emulator_hosts_as_googles_libraries_read_them() {
        assert_eq!(emulator_endpoint("127.0.0.1:4443"), "http://127.0.0.1:4443");
        assert_eq!(
            emulator_endpoint("http://127.0.0.1:4443/"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(emulator_endpoint("https://gcs.local"), "https://gcs.local");
    }
}

//! The S3 storage's settings, looked up as WAL-G looks them up (bare name, then `WALG_`,
//! then `WALE_`) and checked before the first request, so that a missing credential or a
//! malformed endpoint fails with the setting's name instead of an HTTP error later.

use super::sources::{Sources, parse_bool, uint_setting};
use super::{ConfigError, bad};
use crate::storage::aws::CredentialProvider;
use crate::storage::net::AgentSettings;
use crate::storage::s3::{ObjectLock, S3Config};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Splits `s3://bucket/path` into bucket and root key prefix (empty or ending in `/`).
pub fn parse_s3_prefix(name: &str, url: &str) -> Result<(String, String), ConfigError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad(name, format!("'{url}' must look like s3://bucket/path")))?;
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(name, format!("'{url}' has no bucket name")));
    }
    Ok((bucket.to_string(), super::sources::folder_root(path)))
}

/// The value of a storage setting under any of its spellings.
fn value(src: &Sources, bare: &str) -> Option<String> {
    src.storage_setting(bare).map(|(_, v)| v)
}

/// The S3 storage in `bucket` under the key prefix `root`.
pub(super) fn config(src: &Sources, bucket: String, root: String) -> Result<S3Config, ConfigError> {
    let endpoint = endpoint(src)?;
    let (sse, sse_kms_id) = server_side_encryption(src)?;
    let sse_customer_key = sse_customer_key(src, sse.as_deref(), endpoint.as_deref())?;
    let part_size = part_size(src)?;
    let max_retries = max_retries(src)?;
    let (connect_timeout, io_timeout) = super::sources::net_timeouts(src)?;
    let ms = |bare: &str, default: u64| {
        let name = src
            .storage_setting(bare)
            .map_or_else(|| bare.to_string(), |(n, _)| n);
        uint_setting(src, &name, default, 0, 3_600_000).map(Duration::from_millis)
    };
    // The AWS SDK's AWS_CA_BUNDLE applies when WAL-G's own setting is unset.
    let ca_cert_file = value(src, "S3_CA_CERT_FILE")
        .or_else(|| src.get("AWS_CA_BUNDLE"))
        .map(PathBuf::from);
    let agent = AgentSettings {
        connect_timeout,
        io_timeout,
        ca_cert_file: ca_cert_file.clone(),
        ca_setting: "WALG_S3_CA_CERT_FILE",
    };
    let (source, region) = super::aws::resolve(
        src,
        &super::aws::Net {
            agent: &agent,
            endpoint: endpoint.as_deref(),
        },
    )?;
    Ok(S3Config {
        bucket,
        root,
        endpoint,
        region,
        force_path_style: match src.storage_setting("AWS_S3_FORCE_PATH_STYLE") {
            Some((name, v)) => parse_bool(&name, v.trim())?,
            None => false,
        },
        credentials: Arc::new(CredentialProvider::new(source)),
        ca_cert_file,
        storage_class: src
            .storage_setting("S3_STORAGE_CLASS")
            .map(|(_, v)| v)
            .unwrap_or_else(|| "STANDARD".into()),
        sse,
        sse_customer_key,
        object_lock: object_lock(src)?,
        sse_kms_id,
        part_size,
        max_retries,
        min_throttle_delay: ms("S3_MIN_THROTTLING_RETRY_DELAY", 500)?,
        max_throttle_delay: ms("S3_MAX_THROTTLING_RETRY_DELAY", 300_000)?,
        connect_timeout,
        io_timeout,
        delete_batch: {
            let name = src
                .storage_setting("S3_DELETE_BATCH_SIZE")
                .map_or_else(|| "S3_DELETE_BATCH_SIZE".to_string(), |(n, _)| n);
            uint_setting(src, &name, 1000, 1, 1000)? as usize
        },
    })
}

/// `AWS_ENDPOINT`: an S3-compatible server, over http or https.
fn endpoint(src: &Sources) -> Result<Option<String>, ConfigError> {
    let endpoint = value(src, "AWS_ENDPOINT").map(|e| e.trim_end_matches('/').to_string());
    if let Some(e) = &endpoint {
        let scheme = e.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some(s) if s != "http" && s != "https") {
            return Err(bad(
                "AWS_ENDPOINT",
                format!("'{e}' must start with http:// or https://"),
            ));
        }
    }
    Ok(endpoint)
}

/// `WALG_S3_SSE` and `WALG_S3_SSE_KMS_ID`, refused in the combinations S3 would refuse.
fn server_side_encryption(src: &Sources) -> Result<(Option<String>, Option<String>), ConfigError> {
    let sse = src.storage_setting("S3_SSE").map(|(_, v)| v);
    let sse_kms_id = src.storage_setting("S3_SSE_KMS_ID").map(|(_, v)| v);
    match (sse.as_deref(), &sse_kms_id) {
        (Some("aws:kms"), None) => {
            return Err(bad(
                "WALG_S3_SSE_KMS_ID",
                "must be set when WALG_S3_SSE=aws:kms",
            ));
        }
        (Some(s), Some(_)) if s != "aws:kms" => {
            return Err(bad(
                "WALG_S3_SSE_KMS_ID",
                "is only valid with WALG_S3_SSE=aws:kms",
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "WALG_S3_SSE_KMS_ID",
                "is only valid with WALG_S3_SSE=aws:kms",
            ));
        }
        (Some(s), _) if s != "AES256" && s != "aws:kms" => {
            return Err(bad(
                "WALG_S3_SSE",
                format!("'{s}' is not AES256 or aws:kms"),
            ));
        }
        _ => {}
    }
    Ok((sse, sse_kms_id))
}

/// `S3_SSE_C`: a customer key, used by WAL-G only with `S3_SSE` (as the algorithm). Without
/// it WAL-G stores the objects without the key; wal-rus stops instead, since the setting
/// says the archive is meant to be protected by it.
fn sse_customer_key(
    src: &Sources,
    sse: Option<&str>,
    endpoint: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let Some((name, key)) = src.storage_setting("S3_SSE_C") else {
        return Ok(None);
    };
    match sse {
        Some("AES256") => {}
        _ => {
            return Err(bad(
                &name,
                "needs WALG_S3_SSE=AES256 (WAL-G sends the customer key only then, and would store these objects without it)",
            ));
        }
    }
    // The key travels in a header: never in clear text (the AWS SDK refuses the same).
    if endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("http://")) {
        return Err(bad(
            &name,
            "cannot be sent over HTTP: AWS_ENDPOINT must be https:// with a customer key",
        ));
    }
    if key.len() != 32 {
        return Err(bad(
            &name,
            format!("must be a 32-byte AES-256 key, is {} bytes", key.len()),
        ));
    }
    Ok(Some(key))
}

/// `S3_RETENTION_PERIOD` (seconds; -1, the default, is off) and `S3_RETENTION_MODE`
/// (default `GOVERNANCE`): the Object Lock of every upload.
fn object_lock(src: &Sources) -> Result<Option<ObjectLock>, ConfigError> {
    let Some((name, v)) = src.storage_setting("S3_RETENTION_PERIOD") else {
        return Ok(None);
    };
    let period: i64 = v
        .trim()
        .parse()
        .map_err(|_| bad(&name, format!("{v:?} is not a number of seconds")))?;
    if period == -1 {
        return Ok(None);
    }
    if period < 0 {
        return Err(bad(&name, "must be -1 (off) or a number of seconds"));
    }
    let mode = match src.storage_setting("S3_RETENTION_MODE") {
        None => "GOVERNANCE".to_string(),
        Some((mode_name, m)) => match m.trim() {
            "GOVERNANCE" | "COMPLIANCE" => m.trim().to_string(),
            other => {
                return Err(bad(
                    &mode_name,
                    format!("{other:?} is not GOVERNANCE or COMPLIANCE"),
                ));
            }
        },
    };
    Ok(Some(ObjectLock {
        mode,
        period: Duration::from_secs(period as u64),
    }))
}

/// `S3_MAX_PART_SIZE` (default 20 MiB), within the part sizes S3 accepts.
fn part_size(src: &Sources) -> Result<u64, ConfigError> {
    Ok(match src.storage_setting("S3_MAX_PART_SIZE") {
        None => 20 * 1024 * 1024,
        Some((name, v)) => {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad(&name, format!("'{v}' is not a whole number")))?;
            if !(5 << 20..=5 << 30).contains(&n) {
                return Err(bad(
                    &name,
                    format!("{n} is outside S3's part size range 5 MiB..5 GiB"),
                ));
            }
            n
        }
    })
}

/// `S3_MAX_RETRIES` (default 15), capped at 100 so that a typo cannot retry for hours.
fn max_retries(src: &Sources) -> Result<u32, ConfigError> {
    Ok(match src.storage_setting("S3_MAX_RETRIES") {
        None => 15,
        Some((name, v)) => v
            .trim()
            .parse::<u32>()
            .map_err(|_| bad(&name, format!("'{v}' is not a whole number")))?
            .min(100),
    })
}

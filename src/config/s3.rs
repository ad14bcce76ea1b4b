//! The S3 storage's settings, looked up as WAL-G looks them up (bare name, then `WALG_`,
//! then `WALE_`) and checked before the first request, so that a missing credential or a
//! malformed endpoint fails with the setting's name instead of an HTTP error later.

use super::sources::{Sources, parse_bool, uint_setting};
use super::{ConfigError, bad};
use crate::storage::s3::{S3Config, sign::Credentials};
use std::path::PathBuf;
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
    let path = path.trim_matches('/');
    Ok((
        bucket.to_string(),
        if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        },
    ))
}

/// The value of a storage setting under any of its spellings.
fn value(src: &Sources, bare: &str) -> Option<String> {
    src.storage_setting(bare).map(|(_, v)| v)
}

/// The S3 storage in `bucket` under the key prefix `root`.
pub(super) fn config(src: &Sources, bucket: String, root: String) -> Result<S3Config, ConfigError> {
    let credentials = credentials(src)?;
    let (endpoint, region) = endpoint_and_region(src)?;
    let (sse, sse_kms_id) = server_side_encryption(src)?;
    let part_size = part_size(src)?;
    let max_retries = max_retries(src)?;
    let (connect_timeout, io_timeout) = super::sources::net_timeouts(src)?;
    let ms = |bare: &str, default: u64| {
        let name = src
            .storage_setting(bare)
            .map_or_else(|| bare.to_string(), |(n, _)| n);
        uint_setting(src, &name, default, 0, 3_600_000).map(Duration::from_millis)
    };
    Ok(S3Config {
        bucket,
        root,
        endpoint,
        region,
        force_path_style: match src.storage_setting("AWS_S3_FORCE_PATH_STYLE") {
            Some((name, v)) => parse_bool(&name, v.trim())?,
            None => false,
        },
        credentials,
        // The AWS SDK's AWS_CA_BUNDLE applies when WAL-G's own setting is unset.
        ca_cert_file: value(src, "S3_CA_CERT_FILE")
            .or_else(|| src.get("AWS_CA_BUNDLE"))
            .map(PathBuf::from),
        storage_class: src
            .storage_setting("S3_STORAGE_CLASS")
            .map(|(_, v)| v)
            .unwrap_or_else(|| "STANDARD".into()),
        sse,
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

/// Static credentials, the only kind wal-rus reads: when the settings of the AWS SDK's
/// credential chain are set instead, the error says that they are not read.
fn credentials(src: &Sources) -> Result<Credentials, ConfigError> {
    let chain = [
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ]
    .iter()
    .filter(|n| src.get(n).is_some())
    .copied()
    .collect::<Vec<_>>();
    let chain = if chain.is_empty() {
        String::new()
    } else {
        format!(
            "; {} is set, but wal-rus does not read the AWS SDK's credential chain",
            chain.join(", ")
        )
    };
    let key_id = value(src, "AWS_ACCESS_KEY_ID")
        .or_else(|| value(src, "AWS_ACCESS_KEY"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| bad("AWS_ACCESS_KEY_ID", format!("not set (wal-rus reads static credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY){chain}")))?;
    let secret = value(src, "AWS_SECRET_ACCESS_KEY")
        .or_else(|| value(src, "AWS_SECRET_KEY"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| bad("AWS_SECRET_ACCESS_KEY", format!("not set{chain}")))?;
    Ok(Credentials {
        access_key_id: key_id,
        secret_access_key: secret,
        session_token: value(src, "AWS_SESSION_TOKEN").map(|t| t.trim().to_string()),
    })
}

/// `AWS_ENDPOINT` (an S3-compatible server, over http or https) and `AWS_REGION`, which
/// only AWS itself needs.
fn endpoint_and_region(src: &Sources) -> Result<(Option<String>, String), ConfigError> {
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
    let region = match value(src, "AWS_REGION") {
        Some(r) => r,
        None if endpoint.is_some() => "us-east-1".to_string(),
        None => {
            return Err(bad(
                "AWS_REGION",
                "not set (required when AWS_ENDPOINT is not set)",
            ));
        }
    };
    Ok((endpoint, region))
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

//! The Azure storage's settings, looked up as WAL-G looks them up (bare name, then `WALG_`,
//! then `WALE_`), and the Azure SDKs' own `AZURE_STORAGE_CONNECTION_STRING`, which WAL-G
//! does not read but every Azure tool does (an emulator's or a private endpoint is given
//! that way). Both are checked before the first request: a missing account or credential,
//! a key that is not base64, or a connection string that disagrees with WAL-G's settings
//! fails with the setting's name, never with its value.

use super::sources::{Sources, uint_setting};
use super::{ConfigError, bad};
use crate::storage::azure::sign::SharedKey;
use crate::storage::azure::token::{DEFAULT_AUTHORITY, IMDS_TOKEN_URL, TokenSource, Tokens};
use crate::storage::azure::{AzureAuth, AzureConfig};
use std::sync::Arc;
use std::time::Duration;

const CONN: &str = "AZURE_STORAGE_CONNECTION_STRING";

/// Splits WAL-G's `azure://container/path` as WAL-G does (the URL's host is the
/// container, its path trimmed of `/` the folder) into container and name prefix (empty or
/// ending in `/`).
pub fn parse_az_prefix(name: &str, url: &str) -> Result<(String, String), ConfigError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad(
            name,
            format!("'{url}' must look like azure://container/path"),
        )
    })?;
    let (container, path) = rest.split_once('/').unwrap_or((rest, ""));
    if scheme.is_empty() || container.is_empty() {
        return Err(bad(name, format!("'{url}' has no container name")));
    }
    Ok((container.to_string(), super::sources::folder_root(path)))
}

/// What a connection string says (`Key=Value;...`, keys in any case).
#[derive(Debug, Default, PartialEq)]
pub struct ConnectionString {
    /// `AccountName`.
    pub account: Option<String>,
    /// `AccountKey`.
    pub key: Option<String>,
    /// `SharedAccessSignature`.
    pub sas: Option<String>,
    /// `BlobEndpoint`.
    pub blob_endpoint: Option<String>,
    /// `DefaultEndpointsProtocol` (`https` when absent).
    pub protocol: Option<String>,
    /// `EndpointSuffix`.
    pub suffix: Option<String>,
}

/// Parses a connection string; the error names the part that is wrong, never a value.
pub fn parse_connection_string(text: &str) -> Result<ConnectionString, String> {
    let mut cs = ConnectionString::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| "a part without '=' (expected Key=Value;...)".to_string())?;
        let v = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        match k.trim().to_ascii_lowercase().as_str() {
            "accountname" => cs.account = v,
            "accountkey" => cs.key = v,
            "sharedaccesssignature" => cs.sas = v,
            "blobendpoint" => cs.blob_endpoint = v,
            "defaultendpointsprotocol" => cs.protocol = v,
            "endpointsuffix" => cs.suffix = v,
            "queueendpoint" | "tableendpoint" | "fileendpoint" => {}
            other => {
                return Err(format!(
                    "{other} is not read by wal-rus (AccountName, AccountKey, \
                     SharedAccessSignature, BlobEndpoint, DefaultEndpointsProtocol, \
                     EndpointSuffix are)"
                ));
            }
        }
    }
    Ok(cs)
}

/// WAL-G's endpoint suffix of an `AZURE_ENVIRONMENT_NAME`: the public cloud's for any name
/// it does not know.
pub fn environment_suffix(name: &str) -> &'static str {
    match name {
        "AzureUSGovernmentCloud" => "core.usgovcloudapi.net",
        "AzureChinaCloud" => "core.chinacloudapi.cn",
        "AzureGermanCloud" => "core.cloudapi.de",
        _ => "core.windows.net",
    }
}

/// A storage setting under any of its spellings, with the spelling found.
fn setting(src: &Sources, bare: &str) -> Option<(String, String)> {
    src.storage_setting(bare)
}

/// One value from WAL-G's setting or the connection string; both set must agree.
fn agreed(
    ours: Option<(String, String)>,
    theirs: Option<String>,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    match (ours, theirs) {
        (Some((name, a)), Some(b)) if a.trim() != b.trim() => Err(bad(
            &name,
            format!("differs from the {what} of {CONN}; set one of them"),
        )),
        (Some((_, a)), _) => Ok(Some(a.trim().to_string())),
        (None, b) => Ok(b),
    }
}

/// The Azure storage of `container` under the name prefix `root`.
pub(super) fn config(
    src: &Sources,
    container: String,
    root: String,
) -> Result<AzureConfig, ConfigError> {
    let cs = match src.get(CONN) {
        Some(text) => parse_connection_string(&text).map_err(|e| bad(CONN, e))?,
        None => ConnectionString::default(),
    };
    let account = agreed(
        setting(src, "AZURE_STORAGE_ACCOUNT"),
        cs.account.clone(),
        "AccountName",
    )?
    .ok_or_else(|| {
        bad(
            "AZURE_STORAGE_ACCOUNT",
            "not set (the storage account is required)",
        )
    })?;
    let auth = auth(src, &cs, &account)?;
    let (connect_timeout, io_timeout) = super::sources::net_timeouts(src)?;
    Ok(AzureConfig {
        endpoint: endpoint(src, &cs, &account)?,
        account,
        container,
        root,
        auth,
        block_size: block_size(src)?,
        max_buffers: max_buffers(src)?,
        try_timeout: Duration::from_secs(60 * minutes(src, "AZURE_TRY_TIMEOUT", 5)?),
        max_retries: crate::storage::net::RetryPolicy::default().max_retries,
        connect_timeout,
        io_timeout,
    })
}

/// The credential: the account key wins over a SAS token, as in WAL-G, and either over
/// the default credential chain.
fn auth(src: &Sources, cs: &ConnectionString, account: &str) -> Result<AzureAuth, ConfigError> {
    let key = agreed(
        setting(src, "AZURE_STORAGE_ACCESS_KEY"),
        cs.key.clone(),
        "AccountKey",
    )?;
    if let Some(key) = key {
        let name = setting(src, "AZURE_STORAGE_ACCESS_KEY").map_or(CONN.to_string(), |(n, _)| n);
        return SharedKey::new(account, &key)
            .map(AzureAuth::SharedKey)
            .ok_or_else(|| bad(&name, "is not an account key (base64)"));
    }
    let sas = agreed(
        setting(src, "AZURE_STORAGE_SAS_TOKEN"),
        cs.sas.clone(),
        "SharedAccessSignature",
    )?;
    match sas.map(|t| t.trim().trim_start_matches('?').to_string()) {
        Some(t) if !t.is_empty() => Ok(AzureAuth::Sas(t)),
        _ => token_source(src).map(|t| AzureAuth::Token(Arc::new(Tokens::new(t)))),
    }
}

/// Without a key or a SAS, Azure's default credential chain in the SDK's order: a service
/// principal's secret from the environment, a workload identity, a managed identity (the
/// Azure CLI's login, last in WAL-G's chain, is not read).
fn token_source(src: &Sources) -> Result<TokenSource, ConfigError> {
    let env = |name: &str| {
        src.get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if env("AZURE_CLIENT_CERTIFICATE_PATH").is_some() && env("AZURE_CLIENT_SECRET").is_none() {
        return Err(bad(
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "is set: a service principal's certificate is not supported by wal-rus (use \
             AZURE_CLIENT_SECRET, a workload or managed identity, a key or a SAS)",
        ));
    }
    let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    let authority = format!("{}/", authority.trim_end_matches('/'));
    let principal = |what: &str| -> Result<(String, String), ConfigError> {
        match (env("AZURE_TENANT_ID"), env("AZURE_CLIENT_ID")) {
            (Some(t), Some(c)) => Ok((t, c)),
            (None, _) => Err(bad(
                "AZURE_TENANT_ID",
                format!("not set, and {what} needs it"),
            )),
            (_, None) => Err(bad(
                "AZURE_CLIENT_ID",
                format!("not set, and {what} needs it"),
            )),
        }
    };
    if let Some(secret) = env("AZURE_CLIENT_SECRET") {
        let (tenant, client_id) = principal("AZURE_CLIENT_SECRET")?;
        return Ok(TokenSource::ClientSecret {
            authority,
            tenant,
            client_id,
            secret,
        });
    }
    if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
        let (tenant, client_id) = principal("AZURE_FEDERATED_TOKEN_FILE")?;
        return Ok(TokenSource::Workload {
            authority,
            tenant,
            client_id,
            token_file: file.into(),
        });
    }
    let identity_header = env("IDENTITY_HEADER");
    let endpoint = match (env("IDENTITY_ENDPOINT"), &identity_header) {
        (Some(e), Some(_)) => e,
        (Some(_), None) => {
            return Err(bad(
                "IDENTITY_HEADER",
                "not set, and IDENTITY_ENDPOINT (App Service's managed identity) needs it",
            ));
        }
        (None, _) => IMDS_TOKEN_URL.to_string(),
    };
    Ok(TokenSource::ManagedIdentity {
        endpoint,
        identity_header,
        client_id: env("AZURE_CLIENT_ID"),
    })
}

/// The Blob service endpoint: the connection string's `BlobEndpoint`, else
/// `https://ACCOUNT.blob.SUFFIX` as WAL-G builds it.
fn endpoint(src: &Sources, cs: &ConnectionString, account: &str) -> Result<String, ConfigError> {
    let suffix_setting =
        setting(src, "AZURE_ENDPOINT_SUFFIX").or_else(|| setting(src, "AZURE_ENVIRONMENT_NAME"));
    if let Some(e) = &cs.blob_endpoint {
        if let Some((name, _)) = suffix_setting {
            return Err(bad(
                &name,
                format!("is set, but {CONN} names the endpoint (BlobEndpoint); set one of them"),
            ));
        }
        let scheme = e.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(bad(
                CONN,
                "its BlobEndpoint must start with http:// or https://",
            ));
        }
        if e.contains('?') || e.contains('#') {
            // A query there would be a SAS in the wrong place, and end up in messages.
            return Err(bad(
                CONN,
                "its BlobEndpoint must not hold a query (give a SAS as SharedAccessSignature)",
            ));
        }
        return Ok(e.trim_end_matches('/').to_string());
    }
    let suffix = agreed(
        setting(src, "AZURE_ENDPOINT_SUFFIX"),
        cs.suffix.clone(),
        "EndpointSuffix",
    )?;
    let suffix = suffix.unwrap_or_else(|| {
        let env = setting(src, "AZURE_ENVIRONMENT_NAME").map(|(_, v)| v);
        environment_suffix(env.as_deref().unwrap_or("AzurePublicCloud")).to_string()
    });
    let protocol = cs
        .protocol
        .as_deref()
        .unwrap_or("https")
        .to_ascii_lowercase();
    if protocol != "http" && protocol != "https" {
        return Err(bad(
            CONN,
            "its DefaultEndpointsProtocol must be http or https",
        ));
    }
    Ok(format!(
        "{protocol}://{account}.blob.{}",
        suffix.trim_matches('.')
    ))
}

/// `AZURE_BUFFER_SIZE` (default 8 MiB; at least 1024 bytes as in WAL-G, at most Azure's
/// largest block).
fn block_size(src: &Sources) -> Result<u64, ConfigError> {
    let Some((name, v)) = setting(src, "AZURE_BUFFER_SIZE") else {
        return Ok(8 << 20);
    };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| bad(&name, format!("'{v}' is not a whole number")))?;
    if n > 4000 << 20 {
        return Err(bad(
            &name,
            format!("{n} is more than Azure's largest block, 4000 MiB"),
        ));
    }
    Ok(n.max(1024))
}

/// A storage setting in whole minutes (0: none).
fn minutes(src: &Sources, bare: &str, default: u64) -> Result<u64, ConfigError> {
    let name = setting(src, bare).map_or_else(|| bare.to_string(), |(n, _)| n);
    uint_setting(src, &name, default, 0, 24 * 60)
}

/// `AZURE_MAX_BUFFERS` (default 4, at least 1): blocks a streamed upload stages at once.
fn max_buffers(src: &Sources) -> Result<usize, ConfigError> {
    let name =
        setting(src, "AZURE_MAX_BUFFERS").map_or_else(|| "AZURE_MAX_BUFFERS".into(), |(n, _)| n);
    Ok(uint_setting(src, &name, 4, 0, 1024)?.max(1) as usize)
}

#[cfg(test)]
#[path = "azure_tests.rs"]
mod tests;

//! Settings as WAL-G reads them (walg-compat §11): `WALG_*`, `WALE_*`, `AWS_*` and `PG*` from
//! the environment, over a config file (`--config FILE`, else WAL-G's `~/.walg.<ext>`; see
//! [`file`]), over defaults.
//!
//! An environment variable set to the empty string counts as unset. Every setting WAL-G
//! knows is in [`table`]: honoured, refused or warned ([`check`]). Values are validated
//! here, once: a bad value or a refused setting fails with a message that names the
//! setting, before any command touches storage.

mod check;
pub mod file;
pub mod table;

pub use check::{Cmd, active_storage, counts, markdown};

use crate::codec::openpgp::PgpKeys;
use crate::codec::sodium::{Key, Transform};
use crate::codec::{Crypter, EncodeOptions, Method, ZstdLevel};
use crate::log::LogLevel;
use crate::storage::Storage;
use crate::storage::fs::FsStorage;
use crate::storage::s3::{S3Config, S3Storage, sign::Credentials};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A setting that is missing, unknown or malformed.
#[derive(Debug)]
pub struct ConfigError {
    /// The setting's name (or the config file).
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn bad(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// Where storage is.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one value per process; boxing buys nothing
pub enum StorageSettings {
    /// `WALG_FILE_PREFIX`.
    File {
        /// Root directory (with `WALG_STORAGE_PREFIX` applied).
        root: String,
    },
    /// `WALG_S3_PREFIX` / `WALE_S3_PREFIX`.
    S3(S3Config),
}

/// Every setting wal-rus uses, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Storage location and access.
    pub storage: StorageSettings,
    /// `WALG_COMPRESSION_METHOD` (+ `WALG_ZSTD_LEVEL`).
    pub encode: EncodeOptions,
    /// Encryption after compression: `WALG_PGP_KEY` / `_KEY_PATH` (+ `_KEY_PASSPHRASE`), else
    /// `WALG_LIBSODIUM_KEY` / `_KEY_PATH` (+ `_KEY_TRANSFORM`).
    pub crypter: Crypter,
    /// `WALG_UPLOAD_CONCURRENCY` (default 16).
    pub upload_concurrency: usize,
    /// `WALG_DOWNLOAD_CONCURRENCY` (default 10).
    pub download_concurrency: usize,
    /// `TOTAL_BG_UPLOADED_LIMIT` (default 32).
    pub bg_uploaded_limit: usize,
    /// `WALG_PREVENT_WAL_OVERWRITE` (default false; always on for `.history`).
    pub prevent_wal_overwrite: bool,
    /// WAL segment size in bytes, from `WALG_PG_WAL_SIZE` in MiB (default 16).
    pub wal_segment_size: u64,
    /// `WALG_PREFETCH_DIR`.
    pub prefetch_dir: Option<PathBuf>,
    /// `PGDATA`.
    pub pgdata: Option<PathBuf>,
    /// `PG_READY_RENAME`.
    pub pg_ready_rename: bool,
    /// `WALG_LOG_LEVEL`.
    pub log_level: LogLevel,
    /// The `--config` file in effect, passed on to the prefetch helper.
    pub config_file: Option<PathBuf>,
    /// `WALG_TAR_SIZE_THRESHOLD`: payload bytes after which a tar partition is closed.
    pub tar_size_threshold: u64,
    /// `WALG_SENTINEL_USER_DATA`: JSON stored as the backup's user data.
    pub sentinel_user_data: Option<String>,
    /// `WALG_VERIFY_PAGE_CHECKSUMS`.
    pub verify_page_checksums: bool,
    /// `WALG_UPLOAD_WAL_METADATA`: WAL metadata objects written by wal-push.
    pub wal_metadata: WalMetadata,
    /// `WALG_DISK_RATE_LIMIT`: bytes per second read from the data directory by backup-push.
    pub disk_rate_limit: Option<u64>,
    /// `WALG_NETWORK_RATE_LIMIT`: bytes per second to or from storage in backup-push and
    /// backup-fetch.
    pub network_rate_limit: Option<u64>,
    /// `WALG_TAR_DISABLE_FSYNC`: restore without fsync per file.
    pub tar_disable_fsync: bool,
    /// `WALG_STORE_ALL_CORRUPT_BLOCKS`: record every corrupt block, not the first 10.
    pub store_all_corrupt_blocks: bool,
    /// One line for each setting that is set and has no effect in wal-rus (and each unknown
    /// key of the config file), to log once the log level is known.
    pub warnings: Vec<String>,
    /// The connection settings (`PG*`, and `USER`/`HOME` for libpq's defaults) as found in
    /// the environment or the config file.
    pub pg: HashMap<String, String>,
}

/// Connection settings handed to the PostgreSQL client.
const PG_SETTINGS: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "USER",
    "HOME",
];

/// Looks settings up in the environment, then in the config file.
pub struct Sources {
    env: Lookup,
    file: HashMap<String, file::Value>,
    /// The config file's keys, in file order.
    file_keys: Vec<String>,
    /// The config file read, if any.
    pub file_path: Option<PathBuf>,
}

/// A function from a setting's name to its value.
type Lookup = Box<dyn Fn(&str) -> Option<String>>;

impl Sources {
    /// The process environment and a config file: `config` (`--config`), else WAL-G's
    /// default `.walg.<ext>` in the home directory when there is one.
    pub fn from_process(config: Option<&Path>) -> Result<Sources, ConfigError> {
        let path = match config {
            Some(p) => Some(p.to_path_buf()),
            None => file::default_path(),
        };
        let entries = match &path {
            Some(p) => file::read(p)?,
            None => Vec::new(),
        };
        let mut src = Sources::from_entries(|k| std::env::var(k).ok(), entries);
        src.file_path = path;
        Ok(src)
    }

    /// Sources from a function and a map of a config file's text values, for tests.
    pub fn from_parts(
        env: impl Fn(&str) -> Option<String> + 'static,
        file: HashMap<String, String>,
    ) -> Sources {
        let entries = file
            .into_iter()
            .map(|(k, v)| (k, file::Value::Text(v)))
            .collect();
        Sources::from_entries(env, entries)
    }

    /// Sources from a function and a config file's entries.
    pub fn from_entries(
        env: impl Fn(&str) -> Option<String> + 'static,
        entries: file::Entries,
    ) -> Sources {
        let mut file_keys: Vec<String> = Vec::new();
        let mut file = HashMap::new();
        for (k, v) in entries {
            if !file_keys.contains(&k) {
                file_keys.push(k.clone());
            }
            file.insert(k, v);
        }
        Sources {
            env: Box::new(env),
            file,
            file_keys,
            file_path: None,
        }
    }

    /// A setting's value: environment (non-empty) first, then the file's text.
    pub fn get(&self, name: &str) -> Option<String> {
        match self.raw(name) {
            Some(Some(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether a setting is set, and its text: `Some(None)` for a structured value of the
    /// config file (a table or a list).
    pub fn raw(&self, name: &str) -> Option<Option<String>> {
        if let Some(v) = (self.env)(name).filter(|v| !v.is_empty()) {
            return Some(Some(v));
        }
        match self.file.get(name)? {
            file::Value::Text(t) if t.is_empty() => None,
            file::Value::Text(t) => Some(Some(t.clone())),
            file::Value::Structured => Some(None),
        }
    }

    /// The config file's keys (upper case), in file order.
    pub fn file_keys(&self) -> impl Iterator<Item = &str> {
        self.file_keys.iter().map(String::as_str)
    }

    /// The first of several spellings that is set, with the spelling found.
    fn first(&self, names: &[&str]) -> Option<(String, String)> {
        names
            .iter()
            .find_map(|n| self.get(n).map(|v| (n.to_string(), v)))
    }

    /// WAL-G's lookup for storage-specific settings: bare name, then `WALG_`, then `WALE_`.
    fn storage_setting(&self, bare: &str) -> Option<(String, String)> {
        self.first(&[bare, &format!("WALG_{bare}"), &format!("WALE_{bare}")])
    }
}

/// Go's `strconv.ParseBool`, which WAL-G uses.
fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(bad(
            name,
            format!("'{v}' is not a boolean (use true or false)"),
        )),
    }
}

fn bool_setting(src: &Sources, name: &str, default: bool) -> Result<bool, ConfigError> {
    src.get(name)
        .map_or(Ok(default), |v| parse_bool(name, v.trim()))
}

/// A rate in bytes per second; unset or 0 is no limit.
fn rate_setting(src: &Sources, name: &str) -> Result<Option<u64>, ConfigError> {
    let rate = uint_setting(src, name, 0, 0, u64::MAX)?;
    Ok((rate > 0).then_some(rate))
}

fn uint_setting(
    src: &Sources,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = src.get(name) else {
        return Ok(default);
    };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| bad(name, format!("'{v}' is not a whole number")))?;
    if n < min || n > max {
        return Err(bad(name, format!("{n} is out of range {min}..={max}")));
    }
    Ok(n)
}

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

/// The crypter WAL-G would pick (walg-compat §5.2; KMS and envelope OpenPGP are refused by
/// the table): OpenPGP when `WALG_PGP_KEY` or `WALG_PGP_KEY_PATH` is set, whatever else is;
/// else libsodium when `WALG_LIBSODIUM_KEY` or `WALG_LIBSODIUM_KEY_PATH` is set.
fn crypter(src: &Sources) -> Result<Crypter, ConfigError> {
    if let Some(keys) = pgp_keys(src)? {
        if let Some(name) = ["WALG_LIBSODIUM_KEY", "WALG_LIBSODIUM_KEY_PATH"]
            .into_iter()
            .find(|n| src.get(n).is_some())
        {
            crate::warn!("{name} is ignored: OpenPGP (WALG_PGP_KEY) is used, as WAL-G does");
        }
        return Ok(Crypter::Pgp(std::sync::Arc::new(keys)));
    }
    let transform_name = "WALG_LIBSODIUM_KEY_TRANSFORM";
    let transform = match src.get(transform_name) {
        None => Transform::None,
        Some(t) => Transform::from_setting(t.trim())
            .ok_or_else(|| bad(transform_name, format!("{t:?} is not none, hex or base64")))?,
    };
    let (name, text) = match (
        src.get("WALG_LIBSODIUM_KEY"),
        src.get("WALG_LIBSODIUM_KEY_PATH"),
    ) {
        (Some(k), _) => ("WALG_LIBSODIUM_KEY", k),
        (None, Some(path)) => {
            let name = "WALG_LIBSODIUM_KEY_PATH";
            let text = String::from_utf8(key_file(name, &path)?)
                .map_err(|_| bad(name, format!("{} is not text", path.trim())))?;
            (name, text.trim().to_string())
        }
        (None, None) => {
            if src.get(transform_name).is_some() {
                crate::warn!(
                    "{transform_name} is set without WALG_LIBSODIUM_KEY; nothing is encrypted"
                );
            }
            return Ok(Crypter::None);
        }
    };
    let key = Key::from_setting(&text, transform).map_err(|why| bad(name, why))?;
    Ok(Crypter::Sodium(key))
}

/// The contents of the key file `path` named by `setting`.
fn key_file(setting: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path.trim())
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.trim())))
}

/// The OpenPGP key material, as WAL-G reads it: `WALG_PGP_KEY` (armored text in which the
/// two characters `\n` stand for a newline) before `WALG_PGP_KEY_PATH` (an armored key file,
/// read as it is), with `WALG_PGP_KEY_PASSPHRASE` for protected secret keys.
fn pgp_keys(src: &Sources) -> Result<Option<PgpKeys>, ConfigError> {
    let passphrase = src.get("WALG_PGP_KEY_PASSPHRASE");
    let (name, text) = match (src.get("WALG_PGP_KEY"), src.get("WALG_PGP_KEY_PATH")) {
        (Some(k), _) => ("WALG_PGP_KEY", k.replace("\\n", "\n").into_bytes()),
        (None, Some(path)) => ("WALG_PGP_KEY_PATH", key_file("WALG_PGP_KEY_PATH", &path)?),
        (None, None) => {
            if passphrase.is_some() {
                crate::warn!(
                    "WALG_PGP_KEY_PASSPHRASE is set without WALG_PGP_KEY or WALG_PGP_KEY_PATH; \
                     it is not used"
                );
            }
            return Ok(None);
        }
    };
    PgpKeys::parse(&text, name, passphrase)
        .map(Some)
        .map_err(|why| bad(name, why))
}

impl Settings {
    /// Reads and validates every setting for `command`: refused settings stop it here
    /// (see [`table`]).
    pub fn load(src: &Sources, command: Cmd) -> Result<Settings, ConfigError> {
        let warnings = check::check(src, command)?;
        let storage_prefix = src
            .get("WALG_STORAGE_PREFIX")
            .map(|p| p.trim_matches('/').to_string());
        let storage = Self::storage(src, storage_prefix.as_deref())?;

        let method_name = src
            .get("WALG_COMPRESSION_METHOD")
            .unwrap_or_else(|| "lz4".into());
        let method = Method::from_setting(&method_name).ok_or_else(|| {
            bad("WALG_COMPRESSION_METHOD", format!("unknown compression method '{method_name}', supported methods are: [brotli lz4 lzma none zstd]"))
        })?;
        let zstd_level = match src.get("WALG_ZSTD_LEVEL") {
            None => ZstdLevel::Default,
            Some(_) if method != Method::Zstd => {
                return Err(bad(
                    "WALG_ZSTD_LEVEL",
                    "is only valid with WALG_COMPRESSION_METHOD=zstd",
                ));
            }
            Some(v) => ZstdLevel::from_setting(&v).ok_or_else(|| {
                bad(
                    "WALG_ZSTD_LEVEL",
                    format!("'{v}' is not one of fastest, default, better, best"),
                )
            })?,
        };

        let wal_mib = uint_setting(src, "WALG_PG_WAL_SIZE", 16, 1, 1024)?;
        if !wal_mib.is_power_of_two() {
            return Err(bad(
                "WALG_PG_WAL_SIZE",
                format!("{wal_mib} MiB is not a power of two"),
            ));
        }
        let word = src.get("WALG_LOG_LEVEL").unwrap_or_else(|| "NORMAL".into());
        let log_level = LogLevel::parse(&word).ok_or_else(|| {
            bad(
                "WALG_LOG_LEVEL",
                format!("'{word}' is not one of NORMAL, DEVEL, ERROR"),
            )
        })?;
        Ok(Settings {
            storage,
            encode: EncodeOptions { method, zstd_level },
            crypter: crypter(src)?,
            upload_concurrency: uint_setting(src, "WALG_UPLOAD_CONCURRENCY", 16, 1, 1024)? as usize,
            download_concurrency: uint_setting(src, "WALG_DOWNLOAD_CONCURRENCY", 10, 1, 1024)?
                as usize,
            bg_uploaded_limit: uint_setting(src, "TOTAL_BG_UPLOADED_LIMIT", 32, 0, 1_000_000)?
                as usize,
            prevent_wal_overwrite: bool_setting(src, "WALG_PREVENT_WAL_OVERWRITE", false)?,
            wal_segment_size: crate::format::wal_name::segment_size_from_mib(wal_mib),
            prefetch_dir: src.get("WALG_PREFETCH_DIR").map(PathBuf::from),
            pgdata: src.get("PGDATA").map(PathBuf::from),
            pg_ready_rename: bool_setting(src, "PG_READY_RENAME", false)?,
            log_level,
            config_file: src.file_path.clone(),
            tar_size_threshold: uint_setting(
                src,
                "WALG_TAR_SIZE_THRESHOLD",
                1_073_741_823,
                1,
                u64::MAX,
            )?,
            sentinel_user_data: match src.get("WALG_SENTINEL_USER_DATA") {
                Some(v) if serde_json::from_str::<serde_json::Value>(&v).is_err() => {
                    return Err(bad("WALG_SENTINEL_USER_DATA", "is not valid JSON"));
                }
                other => other,
            },
            verify_page_checksums: bool_setting(src, "WALG_VERIFY_PAGE_CHECKSUMS", false)?,
            tar_disable_fsync: bool_setting(src, "WALG_TAR_DISABLE_FSYNC", false)?,
            wal_metadata: match src.get("WALG_UPLOAD_WAL_METADATA") {
                None => Default::default(),
                Some(v) => WalMetadata::from_setting(v.trim()).ok_or_else(|| {
                    bad(
                        "WALG_UPLOAD_WAL_METADATA",
                        format!("{v:?} is not NOMETADATA, INDIVIDUAL or BULK"),
                    )
                })?,
            },
            disk_rate_limit: rate_setting(src, "WALG_DISK_RATE_LIMIT")?,
            network_rate_limit: rate_setting(src, "WALG_NETWORK_RATE_LIMIT")?,
            store_all_corrupt_blocks: bool_setting(src, "WALG_STORE_ALL_CORRUPT_BLOCKS", false)?,
            warnings,
            pg: PG_SETTINGS
                .iter()
                .filter_map(|k| src.get(k).map(|v| (k.to_string(), v)))
                .collect(),
        })
    }

    fn storage(
        src: &Sources,
        storage_prefix: Option<&str>,
    ) -> Result<StorageSettings, ConfigError> {
        let with_sub = |root: String| match storage_prefix {
            Some(p) if !p.is_empty() => format!("{root}{p}/"),
            _ => root,
        };
        // WAL-G's order: OSS, S3, FILE, GS, AZ, SWIFT, SSH; WALG_ before WALE_.
        if let Some((kind, name)) = active_storage(src) {
            let value = src.get(&name).unwrap_or_default();
            return match kind {
                table::Kind::S3 => {
                    let (bucket, root) = parse_s3_prefix(&name, &value)?;
                    Ok(StorageSettings::S3(Self::s3(src, bucket, with_sub(root))?))
                }
                table::Kind::File => {
                    let dir = value
                        .strip_prefix("file://localhost")
                        .unwrap_or(&value)
                        .trim_end_matches('/')
                        .to_string();
                    let root = match storage_prefix {
                        Some(p) if !p.is_empty() => format!("{dir}/{p}"),
                        _ => dir,
                    };
                    Ok(StorageSettings::File { root })
                }
                _ => Err(bad(
                    &name,
                    "this storage type is not supported by wal-rus (use WALG_S3_PREFIX or WALG_FILE_PREFIX)",
                )),
            };
        }
        Err(bad(
            "WALG_S3_PREFIX",
            "no storage configured: set WALG_S3_PREFIX (or WALE_S3_PREFIX) or WALG_FILE_PREFIX",
        ))
    }

    fn s3(src: &Sources, bucket: String, root: String) -> Result<S3Config, ConfigError> {
        let s = |bare: &str| src.storage_setting(bare).map(|(_, v)| v);
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
        let key_id = s("AWS_ACCESS_KEY_ID")
            .or_else(|| s("AWS_ACCESS_KEY"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| bad("AWS_ACCESS_KEY_ID", format!("not set (wal-rus reads static credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY){chain}")))?;
        let secret = s("AWS_SECRET_ACCESS_KEY")
            .or_else(|| s("AWS_SECRET_KEY"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| bad("AWS_SECRET_ACCESS_KEY", format!("not set{chain}")))?;
        let endpoint = s("AWS_ENDPOINT").map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            let scheme = e.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if matches!(scheme.as_deref(), Some(s) if s != "http" && s != "https") {
                return Err(bad(
                    "AWS_ENDPOINT",
                    format!("'{e}' must start with http:// or https://"),
                ));
            }
        }
        let region = match s("AWS_REGION") {
            Some(r) => r,
            None if endpoint.is_some() => "us-east-1".to_string(),
            None => {
                return Err(bad(
                    "AWS_REGION",
                    "not set (required when AWS_ENDPOINT is not set)",
                ));
            }
        };
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
        let part_size = match src.storage_setting("S3_MAX_PART_SIZE") {
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
        };
        let retries = match src.storage_setting("S3_MAX_RETRIES") {
            None => 15,
            Some((name, v)) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| bad(&name, format!("'{v}' is not a whole number")))?
                .min(100),
        };
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
            credentials: Credentials {
                access_key_id: key_id,
                secret_access_key: secret,
                session_token: s("AWS_SESSION_TOKEN").map(|t| t.trim().to_string()),
            },
            // The AWS SDK's AWS_CA_BUNDLE applies when WAL-G's own setting is unset.
            ca_cert_file: s("S3_CA_CERT_FILE")
                .or_else(|| src.get("AWS_CA_BUNDLE"))
                .map(PathBuf::from),
            storage_class: src
                .storage_setting("S3_STORAGE_CLASS")
                .map(|(_, v)| v)
                .unwrap_or_else(|| "STANDARD".into()),
            sse,
            sse_kms_id,
            part_size,
            max_retries: retries,
            min_throttle_delay: ms("S3_MIN_THROTTLING_RETRY_DELAY", 500)?,
            max_throttle_delay: ms("S3_MAX_THROTTLING_RETRY_DELAY", 300_000)?,
            connect_timeout: Duration::from_secs(uint_setting(
                src,
                "WALRUS_CONNECT_TIMEOUT",
                10,
                1,
                3600,
            )?),
            io_timeout: Duration::from_secs(uint_setting(src, "WALRUS_IO_TIMEOUT", 60, 1, 3600)?),
            delete_batch: {
                let name = src
                    .storage_setting("S3_DELETE_BATCH_SIZE")
                    .map_or_else(|| "S3_DELETE_BATCH_SIZE".to_string(), |(n, _)| n);
                uint_setting(src, &name, 1000, 1, 1000)? as usize
            },
        })
    }

    /// Opens the configured storage.
    pub fn open_storage(&self) -> Result<Box<dyn Storage>, crate::storage::StorageError> {
        Ok(match &self.storage {
            StorageSettings::File { root } => Box::new(FsStorage::new(root)),
            StorageSettings::S3(cfg) => Box::new(S3Storage::new(cfg.clone())?),
        })
    }

    /// Looks up a connection setting for the PostgreSQL client.
    pub fn pg_setting(&self, name: &str) -> Option<String> {
        self.pg.get(name).cloned()
    }

    /// The longest any wait inside a command may last (an arena lease): one request's
    /// every attempt with its timeouts and back-off. Longer means something is stuck.
    pub fn wait_limit(&self) -> Duration {
        match &self.storage {
            StorageSettings::S3(c) => {
                let attempt = c.connect_timeout + c.io_timeout + Duration::from_secs(5);
                attempt * (c.max_retries + 1) + c.io_timeout
            }
            StorageSettings::File { .. } => crate::pipeline::arena::DEFAULT_WAIT,
        }
    }

    /// The inputs of the memory plan.
    pub fn plan_input(&self) -> crate::pipeline::plan::PlanInput {
        let (remote, https) = match &self.storage {
            StorageSettings::File { .. } => (false, false),
            StorageSettings::S3(c) => (
                true,
                c.endpoint
                    .as_deref()
                    .is_none_or(|e| !e.to_ascii_lowercase().starts_with("http://")),
            ),
        };
        let part_size = match &self.storage {
            StorageSettings::File { .. } => 0,
            StorageSettings::S3(c) => c.part_size,
        };
        crate::pipeline::plan::PlanInput {
            part_size,
            crypto_state: self.crypter.state_bytes(),
            crypto_process: self.crypter.process_bytes(),
            encode: self.encode,
            upload_concurrency: self.upload_concurrency,
            download_concurrency: self.download_concurrency,
            bg_uploaded_limit: self.bg_uploaded_limit,
            https,
            remote,
        }
    }
}

/// `WALG_UPLOAD_WAL_METADATA`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WalMetadata {
    /// `NOMETADATA`, the default: nothing.
    #[default]
    None,
    /// `INDIVIDUAL`: one object per WAL file.
    Individual,
    /// `BULK`: one object per 16 segments.
    Bulk,
}

impl WalMetadata {
    /// From the setting's value, as WAL-G spells it.
    pub fn from_setting(s: &str) -> Option<WalMetadata> {
        match s {
            "NOMETADATA" => Some(WalMetadata::None),
            "INDIVIDUAL" => Some(WalMetadata::Individual),
            "BULK" => Some(WalMetadata::Bulk),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.credentials.access_key_id, "AK");
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
                &[("WALG_FILE_PREFIX", "/x"), ("WALG_ZSTD_LEVEL", "best")],
                "WALG_ZSTD_LEVEL",
            ),
            (&[("WALG_S3_PREFIX", "bucket/path")], "WALG_S3_PREFIX"),
            (&[("WALG_S3_PREFIX", "s3://b/p")], "AWS_ACCESS_KEY_ID"),
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
            (&[("WALG_GS_PREFIX", "gs://b/p")], "WALG_GS_PREFIX"),
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
        let s = load_file("walg_file_prefix: /data\nWALG_UPLOAD_CONCURRENCY: 4\nwalg_statsd_address: h:1\nfoo: 1\n")
            .unwrap();
        assert_eq!(s.upload_concurrency, 4);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("WALG_STATSD_ADDRESS"));
        assert_eq!(s.warnings[1], "FOO is unknown");
        let err =
            load_file("WALG_FILE_PREFIX: /data\nwalg_envelope_pgp_key_path: /k\n").unwrap_err();
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
        assert!(Settings::load(&Sources::from_entries(env, entries.clone()), push).is_ok());
        let env = |k: &str| (k == "WALG_DELTA_MAX_STEPS").then(String::new);
        let err = Settings::load(&Sources::from_entries(env, entries), push).unwrap_err();
        assert_eq!(err.setting, "WALG_DELTA_MAX_STEPS");
    }
}

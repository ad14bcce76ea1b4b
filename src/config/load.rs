//! Reading every setting a command uses into one validated [`Settings`], in WAL-G's order
//! of precedence, so that a bad value stops the command here, with the setting's name,
//! before anything touches storage.

use super::crypter::crypter;
use super::sources::{bool_setting, duration_setting, rate_setting, uint_setting};
use super::{
    Cmd, ConfigError, DeltaSettings, Settings, Sources, StorageSettings, WalMetadata,
    active_storage, azure, bad, check, gcs, parse_az_prefix, parse_s3_prefix, s3, table,
};
use crate::codec::{EncodeOptions, Method, ZstdLevel};
use crate::log::LogLevel;
use std::path::PathBuf;

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

impl Settings {
    /// Reads and validates every setting for `command`: refused settings stop it here
    /// (see [`table`]).
    pub fn load(src: &Sources, command: Cmd) -> Result<Settings, ConfigError> {
        let warnings = check::check(src, command)?;
        let storage_prefix = src
            .get("WALG_STORAGE_PREFIX")
            .map(|p| p.trim_matches('/').to_string());
        let storage = storage(src, storage_prefix.as_deref())?;
        let encode = encode_options(src)?;
        let wal_mib = wal_size_mib(src)?;
        let log_level = log_level(src)?;
        Ok(Settings {
            storage,
            encode,
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
            notify_socket: src.get("NOTIFY_SOCKET"),
            slot_name: slot_name(src)?,
            log_level,
            #[cfg(test)]
            memory: None,
            config_file: src.file_path.clone(),
            tar_size_threshold: uint_setting(
                src,
                "WALG_TAR_SIZE_THRESHOLD",
                1_073_741_823,
                1,
                u64::MAX,
            )?,
            sentinel_user_data: sentinel_user_data(src)?,
            verify_page_checksums: bool_setting(src, "WALG_VERIFY_PAGE_CHECKSUMS", false)?,
            tar_disable_fsync: bool_setting(src, "WALG_TAR_DISABLE_FSYNC", false)?,
            delta: DeltaSettings {
                max_steps: uint_setting(src, "WALG_DELTA_MAX_STEPS", 0, 0, 1_000_000)? as u32,
                origin: src.get("WALG_DELTA_ORIGIN"),
                from_name: src.get("WALG_DELTA_FROM_NAME"),
                from_user_data: src.get("WALG_DELTA_FROM_USER_DATA"),
            },
            wal_metadata: wal_metadata(src)?,
            disk_rate_limit: rate_setting(src, "WALG_DISK_RATE_LIMIT")?,
            network_rate_limit: rate_setting(src, "WALG_NETWORK_RATE_LIMIT")?,
            store_all_corrupt_blocks: bool_setting(src, "WALG_STORE_ALL_CORRUPT_BLOCKS", false)?,
            alive_check_interval: duration_setting(
                src,
                "WALG_ALIVE_CHECK_INTERVAL",
                Some(std::time::Duration::from_secs(60)),
            )?,
            stop_backup_timeout: duration_setting(src, "WALG_STOP_BACKUP_TIMEOUT", None)?,
            integrity_max_delayed_wals: uint_setting(
                src,
                "WALG_INTEGRITY_MAX_DELAYED_WALS",
                0,
                0,
                u64::from(u32::MAX),
            )?,
            warnings,
            pg: PG_SETTINGS
                .iter()
                .filter_map(|k| src.get(k).map(|v| (k.to_string(), v)))
                .collect(),
        })
    }
}

/// `WALG_COMPRESSION_METHOD` (default lz4), and `WALG_ZSTD_LEVEL`, which WAL-G refuses
/// with any other method.
fn encode_options(src: &Sources) -> Result<EncodeOptions, ConfigError> {
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
    Ok(EncodeOptions { method, zstd_level })
}

/// `WALG_PG_WAL_SIZE` in MiB: PostgreSQL's segment sizes are powers of two.
fn wal_size_mib(src: &Sources) -> Result<u64, ConfigError> {
    let wal_mib = uint_setting(src, "WALG_PG_WAL_SIZE", 16, 1, 1024)?;
    if !wal_mib.is_power_of_two() {
        return Err(bad(
            "WALG_PG_WAL_SIZE",
            format!("{wal_mib} MiB is not a power of two"),
        ));
    }
    Ok(wal_mib)
}

/// `WALG_SLOTNAME` (default `walg`, also when empty, as in WAL-G), checked as PostgreSQL
/// checks slot names.
fn slot_name(src: &Sources) -> Result<String, ConfigError> {
    let name = src
        .get("WALG_SLOTNAME")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "walg".into());
    crate::pg::replication::validate_slot_name(&name).map_err(|e| bad("WALG_SLOTNAME", e))?;
    Ok(name)
}

/// `WALG_LOG_LEVEL` (default `NORMAL`): one of WAL-G's words, or the command stops.
fn log_level(src: &Sources) -> Result<LogLevel, ConfigError> {
    let word = src.get("WALG_LOG_LEVEL").unwrap_or_else(|| "NORMAL".into());
    LogLevel::parse(&word).ok_or_else(|| {
        bad(
            "WALG_LOG_LEVEL",
            format!("'{word}' is not one of NORMAL, DEVEL, ERROR"),
        )
    })
}

/// `WALG_SENTINEL_USER_DATA`: refused unless it is JSON, which the sentinel embeds as it is.
fn sentinel_user_data(src: &Sources) -> Result<Option<String>, ConfigError> {
    match src.get("WALG_SENTINEL_USER_DATA") {
        Some(v) if serde_json::from_str::<serde_json::Value>(&v).is_err() => {
            Err(bad("WALG_SENTINEL_USER_DATA", "is not valid JSON"))
        }
        other => Ok(other),
    }
}

/// `WALG_UPLOAD_WAL_METADATA`.
fn wal_metadata(src: &Sources) -> Result<WalMetadata, ConfigError> {
    match src.get("WALG_UPLOAD_WAL_METADATA") {
        None => Ok(Default::default()),
        Some(v) => WalMetadata::from_setting(v.trim()).ok_or_else(|| {
            bad(
                "WALG_UPLOAD_WAL_METADATA",
                format!("{v:?} is not NOMETADATA, INDIVIDUAL or BULK"),
            )
        }),
    }
}

/// Where storage is: the first storage setting in WAL-G's order, under
/// `WALG_STORAGE_PREFIX`.
fn storage(src: &Sources, storage_prefix: Option<&str>) -> Result<StorageSettings, ConfigError> {
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
                Ok(StorageSettings::S3(s3::config(
                    src,
                    bucket,
                    with_sub(root),
                )?))
            }
            table::Kind::Az => {
                let (container, root) = parse_az_prefix(&name, &value)?;
                Ok(StorageSettings::Azure(azure::config(
                    src,
                    container,
                    with_sub(root),
                )?))
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
            table::Kind::Gs => Ok(StorageSettings::Gcs(gcs::config(
                src,
                &name,
                &value,
                storage_prefix,
            )?)),
            _ => Err(bad(
                &name,
                "this storage type is not supported by wal-rus (use WALG_S3_PREFIX, WALG_GS_PREFIX, WALG_AZ_PREFIX or WALG_FILE_PREFIX)",
            )),
        };
    }
    Err(bad(
        "WALG_S3_PREFIX",
        "no storage configured: set WALG_S3_PREFIX (or WALE_S3_PREFIX), WALG_GS_PREFIX, WALG_AZ_PREFIX or WALG_FILE_PREFIX",
    ))
}

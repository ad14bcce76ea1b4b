//! Settings as WAL-G reads them (walg-compat §11): `WALG_*`, `WALE_*`, `AWS_*` and `PG*` from
//! the environment, over a config file (`--config FILE`, else WAL-G's `~/.walg.<ext>`; see
//! [`file`]), over defaults.
//!
//! An environment variable set to the empty string counts as unset. Every setting WAL-G
//! knows is in [`table`]: honoured, refused or warned ([`check`]). Values are validated
//! here, once: a bad value or a refused setting fails with a message that names the
//! setting, before any command touches storage.

mod aws;
mod azure;
mod check;
mod crypter;
pub mod file;
mod gcs;
mod load;
mod s3;
mod sources;
pub mod table;

pub use azure::{parse_az_prefix, parse_connection_string};
pub use check::{Cmd, active_storage, counts, markdown};
pub use gcs::parse_gs_prefix;
pub use s3::parse_s3_prefix;
pub use sources::Sources;

use crate::codec::{Crypter, EncodeOptions};
use crate::log::LogLevel;
use crate::storage::Storage;
use crate::storage::azure::{AzureConfig, AzureStorage};
use crate::storage::fs::FsStorage;
use crate::storage::gcs::{GcsConfig, GcsStorage};
use crate::storage::s3::{S3Config, S3Storage};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
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
    /// `WALG_AZ_PREFIX` / `WALE_AZ_PREFIX`.
    Azure(AzureConfig),
    /// `WALG_GS_PREFIX` / `WALE_GS_PREFIX`.
    Gcs(GcsConfig),
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
    /// `NOTIFY_SOCKET`: systemd's notification socket, pinged by the daemon.
    pub notify_socket: Option<String>,
    /// `WALG_SLOTNAME` (default `walg`): wal-receive's replication slot.
    pub slot_name: String,
    /// `WALG_LOG_LEVEL`.
    pub log_level: LogLevel,
    /// Unit tests' in-memory storage: when set, `open_storage` hands out a view of it, so
    /// commands run whole without a server.
    #[cfg(test)]
    pub memory: Option<crate::storage::memory::MemStorage>,
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
    /// `WALG_DELTA_*`: whether and on what backup-push takes a delta.
    pub delta: DeltaSettings,
    /// `WALG_STORE_ALL_CORRUPT_BLOCKS`: record every corrupt block, not the first 10.
    pub store_all_corrupt_blocks: bool,
    /// `WALG_ALIVE_CHECK_INTERVAL` (default 1m; `0` turns it off): how often backup-push
    /// checks on a connection of its own that the server is still there.
    pub alive_check_interval: Option<std::time::Duration>,
    /// `WALG_STOP_BACKUP_TIMEOUT` (default none): bound on the backup's stop.
    pub stop_backup_timeout: Option<std::time::Duration>,
    /// `WALG_INTEGRITY_MAX_DELAYED_WALS` (default 0): how many missing segments newer than
    /// the newest stored one wal-verify calls delayed rather than lost.
    pub integrity_max_delayed_wals: u64,
    /// One line for each setting that is set and has no effect in wal-rus (and each unknown
    /// key of the config file), to log once the log level is known.
    pub warnings: Vec<String>,
    /// The connection settings (`PG*`, and `USER`/`HOME` for libpq's defaults) as found in
    /// the environment or the config file.
    pub pg: HashMap<String, String>,
}

impl Settings {
    /// Opens the configured storage.
    pub fn open_storage(&self) -> Result<Box<dyn Storage>, crate::storage::StorageError> {
        #[cfg(test)]
        if let Some(memory) = &self.memory {
            return Ok(Box::new(memory.clone()));
        }
        Ok(match &self.storage {
            StorageSettings::File { root } => Box::new(FsStorage::new(root)),
            StorageSettings::S3(cfg) => Box::new(S3Storage::new(cfg.clone())?),
            StorageSettings::Azure(cfg) => Box::new(AzureStorage::new(cfg.clone())?),
            StorageSettings::Gcs(cfg) => Box::new(GcsStorage::new(cfg.clone())?),
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
            StorageSettings::Azure(c) => {
                // A try is bounded by AZURE_TRY_TIMEOUT, or else by its I/O timeouts.
                let bounded = c.connect_timeout + c.io_timeout + Duration::from_secs(5);
                let attempt = if c.try_timeout.is_zero() {
                    bounded
                } else {
                    c.try_timeout + Duration::from_secs(5)
                };
                attempt * (c.max_retries + 1) + c.io_timeout
            }
            // A chunk's request, its status query and back-off, every retry; and GCS's
            // context timeout bounds each call with its retries anyway.
            StorageSettings::Gcs(c) => {
                let attempt = c.connect_timeout + c.io_timeout + Duration::from_secs(5);
                (attempt * 2 * (c.max_retries + 1) + c.io_timeout).min(c.context_timeout + attempt)
            }
            StorageSettings::File { .. } => crate::pipeline::arena::DEFAULT_WAIT,
        }
    }

    /// The inputs of the memory plan.
    pub fn plan_input(&self) -> crate::pipeline::plan::PlanInput {
        use crate::pipeline::plan::Client;
        let http = |e: &str| e.to_ascii_lowercase().starts_with("http://");
        // (client, https, part size, part uploaders)
        let (client, https, part_size, part_uploaders) = match &self.storage {
            StorageSettings::File { .. } => (Client::Local, false, 0, self.upload_concurrency),
            StorageSettings::S3(c) => (
                Client::S3,
                c.endpoint.as_deref().is_none_or(|e| !http(e)),
                c.part_size,
                self.upload_concurrency,
            ),
            StorageSettings::Azure(c) => (
                Client::Azure,
                !http(&c.endpoint),
                c.block_size,
                c.max_buffers,
            ),
            StorageSettings::Gcs(c) => (
                Client::Gcs {
                    key_file: matches!(c.auth, crate::storage::gcs::auth::Auth::ServiceAccount(_)),
                },
                c.endpoint.starts_with("https://")
                    || matches!(&c.auth, crate::storage::gcs::auth::Auth::ServiceAccount(sa)
                        if sa.token_uri.starts_with("https://")),
                c.chunk_size,
                self.upload_concurrency,
            ),
        };
        crate::pipeline::plan::PlanInput {
            part_size,
            part_uploaders,
            crypto_state: self.crypter.state_bytes(),
            crypto_process: self.crypter.process_bytes(),
            encode: self.encode,
            upload_concurrency: self.upload_concurrency,
            download_concurrency: self.download_concurrency,
            bg_uploaded_limit: self.bg_uploaded_limit,
            wal_segment_size: self.wal_segment_size,
            https,
            client,
            delta: self.delta.max_steps > 0,
            alive_check: self.alive_check_interval.is_some(),
        }
    }
}

/// The delta settings of backup-push, as given; backup-push checks the origin's word, as
/// WAL-G does (only when a delta is attempted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaSettings {
    /// `WALG_DELTA_MAX_STEPS`: 0 means every backup is full.
    pub max_steps: u32,
    /// `WALG_DELTA_ORIGIN`: `LATEST` (default) or `LATEST_FULL`.
    pub origin: Option<String>,
    /// `WALG_DELTA_FROM_NAME`.
    pub from_name: Option<String>,
    /// `WALG_DELTA_FROM_USER_DATA`.
    pub from_user_data: Option<String>,
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
mod tests;

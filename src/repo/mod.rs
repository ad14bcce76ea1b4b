//! WAL-G's storage layout, and nothing else: where WAL files and backups live, how their
//! keys are spelled, how the backup catalogue is listed, resolved and ordered for retention,
//! how a WAL file is found among the names WAL-G may have used, decoded and brought to the
//! local disk (with WAL-G's prefetch folders), the metadata objects WAL-G writes beside
//! it, and what the archive holds as WAL-G's inspecting commands count it. The commands
//! orchestrate on top; nothing below this layer knows WAL-G's folders.

pub mod backups;
pub mod permanence;
pub mod retention;
pub mod wal;
pub mod wal_inventory;
pub mod wal_metadata;
pub mod wal_restore;

/// WAL-G's folder for WAL files, below the storage root.
pub const WAL_FOLDER: &str = "wal_005";

/// WAL-G's folder for base backups, below the storage root.
pub const BACKUP_FOLDER: &str = "basebackups_005";

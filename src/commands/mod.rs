//! One module per WAL-G command. Each reads settings, asks the plan for its budget, builds
//! its pipeline and returns a typed error that `main` maps to WAL-G's exit code.

pub mod backup_fetch;
pub mod backup_list;
pub mod backup_mark;
pub mod backup_push;
pub mod backups;
pub mod delete;
pub mod memory_plan;
pub mod wal_archive;
pub mod wal_fetch;
pub mod wal_metadata;
pub mod wal_prefetch;
pub mod wal_push;

/// WAL-G's folder for WAL files, below the storage root.
pub const WAL_FOLDER: &str = "wal_005";

/// WAL-G's folder for base backups, below the storage root.
pub const BACKUP_FOLDER: &str = "basebackups_005";

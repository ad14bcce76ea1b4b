//! What WAL-G writes, as pure code with no I/O: WAL file names and segment arithmetic,
//! timestamps in the forms storage and logs use.

pub mod tar;
pub mod time;
pub mod wal_name;
pub mod backup_name;
pub mod files_metadata;
pub mod go_json;
pub mod lsn;
pub mod metadata;
pub mod sentinel;
pub mod spec;

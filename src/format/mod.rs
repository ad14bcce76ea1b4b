//! What WAL-G writes, apart from where it is stored: WAL file names and segment arithmetic,
//! LSNs, backup names, the sentinel, `metadata.json`, `files_metadata.json` (with its on-disk
//! spool, so the document never has to fit in memory), tablespace specs, tar headers,
//! timeline history records, time and JSON text in Go's forms, and streamed WAL cut back into
//! segments.

pub mod backup_name;
pub mod budget;
pub mod files_metadata;
pub mod go_json;
pub mod increment;
pub mod lsn;
pub mod metadata;
pub mod page;
pub mod pg_control;
pub mod sentinel;
pub mod spec;
pub mod tar;
pub mod timeline_history;
pub mod wal_name;
pub mod wal_page;
pub mod wal_stream;

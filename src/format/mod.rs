//! What WAL-G writes, as pure code with no I/O: WAL file names and segment arithmetic,
//! timestamps in the forms storage and logs use.

pub mod time;
pub mod wal_name;

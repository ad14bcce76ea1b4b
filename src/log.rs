//! Minimal logging to stderr in WAL-G's style (`INFO: ...`, `ERROR: ...`).
//!
//! PostgreSQL collects archive_command and restore_command stderr into its server log, so
//! lines are short, prefixed with the level and the UTC time, and never carry secrets.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much is printed: 0 = errors only, 1 = normal, 2 = devel.
static LEVEL: AtomicU8 = AtomicU8::new(1);

/// Sets the level from WAL-G's `WALG_LOG_LEVEL` words (`ERROR`, `NORMAL`, `DEVEL`).
pub fn set_level(word: &str) {
    let level = match word {
        "ERROR" => 0,
        "DEVEL" => 2,
        _ => 1,
    };
    LEVEL.store(level, Ordering::Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Writes one line; one `write_all` per line so lines of concurrent threads do not interleave.
pub fn emit(tag: &str, msg: std::fmt::Arguments<'_>) {
    let now = crate::time::UtcTime::now();
    let line = format!("{} {}: {}\n", now.log_stamp(), tag, msg);
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Informational message (hidden at `WALG_LOG_LEVEL=ERROR`).
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { if $crate::log::enabled(1) { $crate::log::emit("INFO", format_args!($($arg)*)) } };
}

/// Warning (hidden at `WALG_LOG_LEVEL=ERROR`).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { if $crate::log::enabled(1) { $crate::log::emit("WARNING", format_args!($($arg)*)) } };
}

/// Debug detail, shown only at `WALG_LOG_LEVEL=DEVEL`.
#[macro_export]
macro_rules! devel {
    ($($arg:tt)*) => { if $crate::log::enabled(2) { $crate::log::emit("DEBUG", format_args!($($arg)*)) } };
}

/// Error line; always printed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::emit("ERROR", format_args!($($arg)*)) };
}

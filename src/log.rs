//! Minimal logging to stderr in WAL-G's style (`INFO: ...`, `ERROR: ...`).
//!
//! PostgreSQL collects archive_command and restore_command stderr into its server log, so
//! lines are short, prefixed with the level and the UTC time, and never carry secrets.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much is printed, as WAL-G's `WALG_LOG_LEVEL` names it; each level prints what the
/// ones before it print, and more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `ERROR`: errors only.
    Error,
    /// `NORMAL`, the default: also information and warnings.
    #[default]
    Normal,
    /// `DEVEL`: also debug detail.
    Devel,
}

impl LogLevel {
    /// Parses one of WAL-G's words; matching is exact and case-sensitive, as in WAL-G.
    pub fn parse(word: &str) -> Option<LogLevel> {
        match word {
            "ERROR" => Some(LogLevel::Error),
            "NORMAL" => Some(LogLevel::Normal),
            "DEVEL" => Some(LogLevel::Devel),
            _ => None,
        }
    }
}

/// The level in effect, as a `LogLevel`'s discriminant: an atomic, so that every thread
/// reads it without a lock.
static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Normal as u8);

/// Sets the level in effect.
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: LogLevel) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
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
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::LogLevel::Normal) { $crate::log::emit("INFO", format_args!($($arg)*)) } };
}

/// Warning (hidden at `WALG_LOG_LEVEL=ERROR`).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::LogLevel::Normal) { $crate::log::emit("WARNING", format_args!($($arg)*)) } };
}

/// Debug detail, shown only at `WALG_LOG_LEVEL=DEVEL`.
#[macro_export]
macro_rules! devel {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::LogLevel::Devel) { $crate::log::emit("DEBUG", format_args!($($arg)*)) } };
}

/// Error line; always printed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::emit("ERROR", format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walg_words_parse_and_order() {
        assert_eq!(LogLevel::parse("ERROR"), Some(LogLevel::Error));
        assert_eq!(LogLevel::parse("NORMAL"), Some(LogLevel::Normal));
        assert_eq!(LogLevel::parse("DEVEL"), Some(LogLevel::Devel));
        // WAL-G compares the words exactly.
        for word in ["devel", "Normal", "", "INFO", " ERROR"] {
            assert_eq!(LogLevel::parse(word), None, "{word:?}");
        }
        assert_eq!(LogLevel::default(), LogLevel::Normal);
        assert!(LogLevel::Error < LogLevel::Normal && LogLevel::Normal < LogLevel::Devel);
    }
}

//! One module per WAL-G command. Each reads settings, asks the plan for its budget, builds
//! its pipeline and returns a typed error that `main` maps to WAL-G's exit code.

pub mod backup_fetch;
pub mod backup_list;
pub mod backup_mark;
pub mod backup_push;
pub mod backup_show;
pub mod daemon;
pub mod delete;
pub mod memory_plan;
pub mod report;
pub mod wal_fetch;
pub mod wal_prefetch;
pub mod wal_push;
pub mod wal_receive;
pub mod wal_restore;
pub mod wal_show;
pub mod wal_verify;

/// Opens a session with the PostgreSQL server the `PG*` settings name (backup-push runs the
/// whole backup on it; wal-verify asks where the server's WAL is).
pub fn connect_pg(
    settings: &crate::config::Settings,
) -> Result<crate::pg::Connection, crate::error::Error> {
    use crate::error::Error;
    let params = crate::pg::ConnParams::from_lookup(&|k| settings.pg_setting(k))
        .map_err(|e| Error::pg("PostgreSQL connection settings", e))?;
    crate::pg::Connection::connect(&params).map_err(|e| Error::pg("connecting to PostgreSQL", e))
}

/// Runs `attempt` up to `attempts` times, pausing `pause` × the attempt's number between
/// them, until it succeeds or fails in a way `is_final` says no new attempt can change;
/// each retry is logged as `<error>; <again> (n of attempts - 1)`. For the whole-object
/// retries of the restore commands, above the storage layer's own per-request retries.
pub fn retry<T>(
    attempts: u32,
    pause: std::time::Duration,
    again: &str,
    is_final: impl Fn(&crate::error::Error) -> bool,
    mut attempt: impl FnMut() -> Result<T, crate::error::Error>,
) -> Result<T, crate::error::Error> {
    let mut n = 1;
    loop {
        match attempt() {
            Err(e) if n < attempts && !is_final(&e) => {
                crate::warn!("{e}; {again} ({n} of {})", attempts - 1);
                std::thread::sleep(pause * n);
                n += 1;
            }
            other => return other,
        }
    }
}

/// Writes a command's report to stdout. A reader that went away (`| head`) is no failure:
/// the report was for it alone, and nothing stored depends on it.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod command_tests;

#[cfg(test)]
mod catalogue_tests;

#[cfg(test)]
mod inspect_tests;

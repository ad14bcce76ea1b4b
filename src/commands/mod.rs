//! One module per WAL-G command. Each reads settings, asks the plan for its budget, builds
//! its pipeline and returns a typed error that `main` maps to WAL-G's exit code.

pub mod backup_fetch;
pub mod backup_list;
pub mod backup_mark;
pub mod backup_push;
pub mod delete;
pub mod memory_plan;
pub mod wal_fetch;
pub mod wal_prefetch;
pub mod wal_push;

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

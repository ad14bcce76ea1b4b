//! The first phase of a backup: connect, and make sure the server and the data directory
//! are the ones the settings describe before the server is asked to start anything.

use crate::config::{ConfigError, Settings};
use crate::error::Error;
use crate::pg::Connection;
use std::io;
use std::path::{Path, PathBuf};

/// The oldest server `backup-push` supports.
const OLDEST_SUPPORTED: u32 = 100000;

/// The server facts a backup needs.
pub(super) struct Server {
    /// `server_version_num`.
    pub version: u32,
    pub system_identifier: Option<u64>,
    /// A standby: the backup is named after the segment before its start LSN.
    pub in_recovery: bool,
    /// The data directory, resolved as the server sees it.
    pub data_dir: PathBuf,
    /// Whether page checksums are to be verified: asked for, and the cluster has them.
    pub verify: bool,
}

/// Checks the server against `data_dir` and the settings; `verify` says whether page
/// verification was asked for.
pub(super) fn inspect(
    conn: &mut Connection,
    settings: &Settings,
    data_dir: &Path,
    verify: bool,
) -> Result<Server, Error> {
    let version = conn.server_version_num();
    if version < OLDEST_SUPPORTED {
        return Err(Error::Unsupported(format!(
            "PostgreSQL {version} is not supported by wal-rus backup-push (10 or later is)"
        )));
    }
    let mut server = describe(conn, settings, verify, version)?;
    server.data_dir = same_data_dir(&server.data_dir.to_string_lossy(), data_dir)?;
    Ok(server)
}

/// What both kinds of backup record of the server, `data_directory` as the server says it.
fn describe(
    conn: &mut Connection,
    settings: &Settings,
    verify: bool,
    version: u32,
) -> Result<Server, Error> {
    let row = conn
        .query_one("select current_setting('data_directory'), (select system_identifier::text from pg_control_system()), pg_is_in_recovery()::text, current_setting('wal_segment_size')")
        .map_err(|e| Error::pg("inspecting the server", e))?;
    check_segment_size(
        &text(&row, 3, "wal_segment_size")?,
        settings.wal_segment_size,
    )?;
    let system_identifier = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v as u64);
    let verify = verify && checksums_on(conn)?;
    Ok(Server {
        version,
        system_identifier,
        in_recovery: text(&row, 2, "pg_is_in_recovery")? == "true",
        data_dir: PathBuf::from(text(&row, 0, "data_directory")?),
        verify,
    })
}

/// Checks the server a remote backup (no data directory here) streams from: its
/// `data_directory` is taken as the server says it (it is only recorded).
pub(super) fn inspect_remote(
    conn: &mut Connection,
    settings: &Settings,
    verify: bool,
) -> Result<Server, Error> {
    let version = conn.server_version_num();
    if version < crate::pg::base_backup::OLDEST_FRAMING {
        return Err(Error::Unsupported(format!(
            "PostgreSQL {version} is not supported by wal-rus's remote backup-push (15 or later is: older servers frame BASE_BACKUP otherwise); give the data directory to back it up locally"
        )));
    }
    describe(conn, settings, verify, version)
}

/// The local data directory, if it is the server's `data_directory` and looks like one.
fn same_data_dir(server_dir: &str, local: &Path) -> Result<PathBuf, Error> {
    let server_dir = PathBuf::from(server_dir);
    let real_server = std::fs::canonicalize(&server_dir).unwrap_or(server_dir.clone());
    let real_local = std::fs::canonicalize(local)
        .map_err(|e| Error::io(format!("data directory {}", local.display()), e))?;
    if real_server != real_local {
        return Err(Error::Precondition(format!(
            "data directory {} is not the server's data_directory {}",
            real_local.display(),
            real_server.display()
        )));
    }
    for needed in ["PG_VERSION", "global/pg_control"] {
        if !real_local.join(needed).is_file() {
            return Err(Error::Precondition(format!(
                "{} has no {needed}: not a data directory",
                real_local.display()
            )));
        }
    }
    Ok(real_local)
}

/// `wal_segment_size` as the server shows it (`16MB`, `1GB`), in bytes; `None` for a form
/// it does not use, which is then not checked.
fn segment_bytes(shown: &str) -> Option<u64> {
    let scaled = |suffix: &str, shift: u32| {
        shown
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n << shift)
    };
    scaled("MB", 20).or_else(|| scaled("GB", 30))
}

/// Backup names and WAL names must agree with the server on the segment size.
fn check_segment_size(shown: &str, configured: u64) -> Result<(), Error> {
    if segment_bytes(shown).is_some_and(|b| b != configured) {
        return Err(Error::Config(ConfigError {
            setting: "WALG_PG_WAL_SIZE".into(),
            message: format!(
                "the server's wal_segment_size is {shown}, WALG_PG_WAL_SIZE says {} MiB",
                configured >> 20
            ),
        }));
    }
    Ok(())
}

/// Whether the cluster has data checksums; warns when verification cannot happen.
fn checksums_on(conn: &mut Connection) -> Result<bool, Error> {
    let on = conn
        .query_one("show data_checksums")
        .map_err(|e| Error::pg("reading data_checksums", e))?;
    let on = on.first().cloned().flatten().as_deref() == Some("on");
    if !on {
        crate::warn!("data checksums are off in this cluster; page verification is disabled");
    }
    Ok(on)
}

fn text(row: &[Option<String>], i: usize, what: &str) -> Result<String, Error> {
    row.get(i).cloned().flatten().ok_or_else(|| {
        Error::io(
            what.to_string(),
            io::Error::other("the server returned NULL"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_as_the_server_shows_them() {
        assert_eq!(segment_bytes("16MB"), Some(16 << 20));
        assert_eq!(segment_bytes("1GB"), Some(1 << 30));
        assert_eq!(segment_bytes("64MB"), Some(64 << 20));
        assert_eq!(segment_bytes("16777216"), None);
        assert_eq!(segment_bytes("MB"), None);
    }

    #[test]
    fn segment_size_mismatch_names_the_setting() {
        assert!(check_segment_size("16MB", 16 << 20).is_ok());
        assert!(check_segment_size("16777216", 64 << 20).is_ok());
        let e = check_segment_size("64MB", 16 << 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: WALG_PG_WAL_SIZE: the server's wal_segment_size is 64MB, WALG_PG_WAL_SIZE says 16 MiB"
        );
    }

    #[test]
    fn data_directory_must_match_and_be_one() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let server = dir.path().to_str().unwrap();
        let e = same_data_dir(server, other.path()).unwrap_err();
        assert!(
            e.to_string().contains("is not the server's data_directory"),
            "{e}"
        );
        let e = same_data_dir(server, dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("has no PG_VERSION: not a data directory"),
            "{e}"
        );
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), [0u8; 8]).unwrap();
        let real = same_data_dir(server, dir.path()).unwrap();
        assert_eq!(real, std::fs::canonicalize(dir.path()).unwrap());
        let e = same_data_dir(server, &dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }
}

//! The command line, as argh parses it. Every flag is documented where it is defined;
//! argh turns these doc comments into `--help`.

use argh::FromArgs;
use std::path::PathBuf;

/// wal-rus: WAL-G compatible archiving for PostgreSQL with memory fixed before the run.
/// Settings come from WAL-G's environment variables (WALG_*, WALE_*, AWS_*, PG*) and an
/// optional config file; the environment wins over the file.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// a WAL-G config file: .json, .yaml/.yml, .toml, .properties or .env, anywhere on the
    /// command line (default: ~/.walg.<ext>, the first found in WAL-G's order)
    #[argh(option)]
    pub config: Option<PathBuf>,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// ignore the rate limits (WALG_DISK_RATE_LIMIT, WALG_NETWORK_RATE_LIMIT), as WAL-G does
    #[argh(switch)]
    pub turbo: bool,

    /// the command to run
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// wal-push
    WalPush(WalPush),
    /// wal-fetch
    WalFetch(WalFetch),
    /// wal-prefetch
    WalPrefetch(WalPrefetch),
    /// memory-plan
    MemoryPlan(MemoryPlan),
    /// backup-push
    BackupPush(BackupPush),
    /// backup-fetch
    BackupFetch(BackupFetch),
    /// backup-list
    BackupList(BackupList),
    /// backup-show
    BackupShow(BackupShow),
    /// backup-mark
    BackupMark(BackupMark),
    /// delete
    Delete(Delete),
    /// wal-verify
    WalVerify(WalVerify),
    /// wal-show
    WalShow(WalShow),
    /// daemon
    Daemon(Daemon),
    /// wal-restore
    WalRestore(WalRestore),
    /// wal-receive
    WalReceive(WalReceive),
}

/// Archive one WAL file (archive_command = 'wal-rus wal-push %p'). Also uploads other files
/// PostgreSQL has marked ready, up to WALG_UPLOAD_CONCURRENCY-1 at a time. Exit 0 when
/// archived, 1 on any error.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-push")]
pub struct WalPush {
    /// path of the WAL file, as PostgreSQL passes it (%p)
    #[argh(positional)]
    pub path: PathBuf,
}

/// Restore one WAL file (restore_command = 'wal-rus wal-fetch %f %p'). Exit 0 when
/// restored, 74 when the archive does not have it, 1 on any other error; never leaves a
/// partial file at the destination.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-fetch")]
pub struct WalFetch {
    /// name of the WAL file (%f)
    #[argh(positional)]
    pub name: String,
    /// destination path (%p)
    #[argh(positional)]
    pub dest: PathBuf,
}

/// Download the segments after NAME into the prefetch folder (started by wal-fetch).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-prefetch")]
pub struct WalPrefetch {
    /// the segment just restored
    #[argh(positional)]
    pub name: String,
    /// where it was restored to; the prefetch folder is beside it unless WALG_PREFETCH_DIR
    #[argh(positional)]
    pub dest: PathBuf,
}

/// Print the memory each command may use at most with the current settings.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "memory-plan")]
pub struct MemoryPlan {
    /// print JSON (one object per command with peak_rss_bytes and its components)
    #[argh(switch)]
    pub json: bool,
}

/// Take a base backup of the local data directory (non-exclusive pg_backup_start /
/// pg_backup_stop over PG* connection settings) and store it as WAL-G does: a delta of the
/// last backup while WALG_DELTA_MAX_STEPS allows, a full backup otherwise.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup-push")]
pub struct BackupPush {
    /// the data directory (default: PGDATA); must be the server's data_directory. Without
    /// either the backup is remote: streamed by the server over a replication session
    #[argh(positional)]
    pub data_dir: Option<PathBuf>,
    /// mark the backup permanent (never deleted by retention)
    #[argh(switch, short = 'p')]
    pub permanent: bool,
    /// always a full backup, whatever WALG_DELTA_MAX_STEPS says
    #[argh(switch, short = 'f')]
    pub full: bool,
    /// take a delta of this backup (WALG_DELTA_FROM_NAME)
    #[argh(option)]
    pub delta_from_name: Option<String>,
    /// take a delta of the backup with this user data JSON (WALG_DELTA_FROM_USER_DATA)
    #[argh(option)]
    pub delta_from_user_data: Option<String>,
    /// JSON stored as the backup's user data (WALG_SENTINEL_USER_DATA)
    #[argh(option)]
    pub add_user_data: Option<String>,
    /// verify page checksums while reading (WALG_VERIFY_PAGE_CHECKSUMS)
    #[argh(switch, short = 'v')]
    pub verify: bool,
}

/// Restore a base backup into an empty directory. Recovery settings (restore_command,
/// recovery.signal) are left to you, as with WAL-G.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup-fetch")]
pub struct BackupFetch {
    /// destination directory (created if missing; must be empty)
    #[argh(positional)]
    pub dest: PathBuf,
    /// backup name, or LATEST
    #[argh(positional)]
    pub name: String,
    /// JSON tablespace specification relocating tablespaces
    #[argh(option)]
    pub restore_spec: Option<PathBuf>,
    /// WAL-G's newest-first chain order (WALG_USE_REVERSE_UNPACK): accepted with a warning;
    /// wal-rus applies a delta chain base first, with the same result
    #[argh(switch)]
    pub reverse_unpack: bool,
    /// with --reverse-unpack in WAL-G (WALG_SKIP_REDUNDANT_TARS): accepted with a warning,
    /// as --reverse-unpack
    #[argh(switch)]
    pub skip_redundant_tars: bool,
}

/// Show one backup: its documents, and for a delta its base, its chain down to the full
/// backup and how many files are increments or unchanged (backup-list prints what WAL-G
/// prints, which says nothing of deltas).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup-show")]
pub struct BackupShow {
    /// backup name, or LATEST
    #[argh(positional)]
    pub name: String,
    /// print JSON: the sentinel and metadata.json as stored, the chain, the file counts
    #[argh(switch)]
    pub json: bool,
}

/// List backups, oldest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup-list")]
pub struct BackupList {
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// also read each backup's metadata.json
    #[argh(switch)]
    pub detail: bool,
    /// a table for people (with --json: indented)
    #[argh(switch)]
    pub pretty: bool,
}

/// Mark a backup (and its base chain) permanent, or with -i impermanent.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup-mark")]
pub struct BackupMark {
    /// the backup name
    #[argh(positional)]
    pub name: String,
    /// remove the permanent mark instead
    #[argh(switch, short = 'i')]
    pub impermanent: bool,
}

/// Delete old backups and WAL. Dry run unless --confirm.
/// Forms: retain [FULL|FIND_FULL] N [--after X] | before [FIND_FULL] NAME|TIME |
/// everything [FORCE] | target [FIND_FULL] NAME | garbage [ARCHIVES|BACKUPS]
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
pub struct Delete {
    /// the mode and its arguments, e.g. `retain FULL 3`
    #[argh(positional)]
    pub args: Vec<String>,
    /// really delete (without it, only list what would be deleted)
    #[argh(switch)]
    pub confirm: bool,
    /// order backups by metadata.json start_time instead of by start segment
    #[argh(switch)]
    pub use_sentinel_time: bool,
    /// with retain: also keep every backup from this backup name or RFC 3339 time on
    #[argh(option)]
    pub after: Option<String>,
}

/// Check the WAL archive: `integrity` (every segment from the cluster's current one back to
/// the earliest backup is stored), `timeline` (the cluster's timeline is the archive's
/// highest). Asks PostgreSQL (PG* settings) where the cluster is, unless --timeline and
/// --lsn say. Exit 0 when the checks ran, whatever they found; 1 on errors.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-verify")]
pub struct WalVerify {
    /// the checks: integrity, timeline
    #[argh(positional)]
    pub checks: Vec<String>,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// the cluster's timeline (with --lsn), instead of asking PostgreSQL
    #[argh(option)]
    pub timeline: Option<u32>,
    /// the cluster's current LSN, X/Y (with --timeline), instead of asking PostgreSQL
    #[argh(option)]
    pub lsn: Option<String>,
    /// check back to this backup instead of the earliest one
    #[argh(option)]
    pub backup_name: Option<String>,
}

/// Show the archive's WAL by timeline: stored range, missing segments, parent timeline and
/// the backups within each.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-show")]
pub struct WalShow {
    /// print detailed JSON
    #[argh(switch)]
    pub detailed_json: bool,
    /// do not look up backups
    #[argh(switch)]
    pub without_backups: bool,
}

/// Serve wal-push and wal-fetch to WAL-G's walg-daemon-client over the Unix socket SOCKET
/// (archive_command = 'walg-daemon-client SOCKET wal-push %f', restore_command =
/// 'walg-daemon-client SOCKET wal-fetch %f %p'). Needs PGDATA. Runs until SIGTERM or SIGINT,
/// then answers the connections it accepted and removes the socket.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "daemon")]
pub struct Daemon {
    /// path of the Unix socket (a stale one left by a dead daemon is replaced)
    #[argh(positional)]
    pub socket: PathBuf,
}

/// Fetch the WAL segments pg_rewind needs: from the point where the two clusters' timelines
/// part, the segments of SOURCE's timelines its pg_wal lacks, into SOURCE's pg_wal (pg_rewind
/// copies them to TARGET). Both clusters must be local and stopped.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-restore")]
pub struct WalRestore {
    /// data directory of the cluster to be rewound
    #[argh(positional)]
    pub target_pgdata: PathBuf,
    /// data directory of the cluster it is rewound to
    #[argh(positional)]
    pub source_pgdata: PathBuf,
}
/// Archive by streaming replication from the physical slot WALG_SLOTNAME (created if
/// missing) over PG* connection settings: each complete segment is stored as wal-push stores
/// it, a segment cut by a timeline switch as <segment>.partial, with the new timeline's
/// .history. Restarts resume from the slot. Runs until SIGTERM or SIGINT: exit 0 after the
/// uploads under way; 1 on a failure another session cannot mend.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "wal-receive")]
pub struct WalReceive {}

/// WAL-G's global flags, which its command line (cobra) accepts before or after the command.
#[derive(Debug, Default, PartialEq)]
pub struct GlobalFlags {
    /// `--config FILE` / `--config=FILE`.
    pub config: Option<PathBuf>,
    /// `--turbo`.
    pub turbo: bool,
}

/// Takes WAL-G's global flags out of `args` (the program name first) wherever they stand
/// before a `--`, so that the rest parses as the command's own arguments.
pub fn take_global_flags(args: Vec<String>) -> Result<(GlobalFlags, Vec<String>), String> {
    let mut flags = GlobalFlags::default();
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    rest.extend(it.next());
    while let Some(arg) = it.next() {
        if arg == "--" {
            rest.push(arg);
            rest.extend(it.by_ref());
            break;
        }
        if arg == "--config" {
            let file = it.next().ok_or("--config needs a file name")?;
            flags.config = Some(PathBuf::from(file));
        } else if let Some(file) = arg.strip_prefix("--config=") {
            flags.config = Some(PathBuf::from(file));
        } else if arg == "--turbo" {
            flags.turbo = true;
        } else {
            rest.push(arg);
        }
    }
    Ok((flags, rest))
}

// The commands take plain option structs; argh's stay here.

impl From<BackupPush> for crate::commands::backup_push::BackupPushOptions {
    fn from(c: BackupPush) -> Self {
        Self {
            data_dir: c.data_dir,
            permanent: c.permanent,
            add_user_data: c.add_user_data,
            verify: c.verify,
            full: c.full,
            delta_from_name: c.delta_from_name,
            delta_from_user_data: c.delta_from_user_data,
        }
    }
}

impl From<BackupFetch> for crate::commands::backup_fetch::Options {
    fn from(a: BackupFetch) -> Self {
        Self {
            dest: a.dest,
            name: a.name,
            restore_spec: a.restore_spec,
            reverse_unpack: a.reverse_unpack,
            skip_redundant_tars: a.skip_redundant_tars,
        }
    }
}

impl From<BackupShow> for crate::commands::backup_show::Options {
    fn from(a: BackupShow) -> Self {
        Self {
            name: a.name,
            json: a.json,
        }
    }
}

impl From<BackupList> for crate::commands::backup_list::Options {
    fn from(a: BackupList) -> Self {
        Self {
            json: a.json,
            detail: a.detail,
            pretty: a.pretty,
        }
    }
}

impl From<BackupMark> for crate::commands::backup_mark::Options {
    fn from(a: BackupMark) -> Self {
        Self {
            name: a.name,
            impermanent: a.impermanent,
        }
    }
}

impl From<Delete> for crate::commands::delete::Options {
    fn from(a: Delete) -> Self {
        Self {
            args: a.args,
            confirm: a.confirm,
            use_sentinel_time: a.use_sentinel_time,
            after: a.after,
        }
    }
}

impl From<WalVerify> for crate::commands::wal_verify::Options {
    fn from(a: WalVerify) -> Self {
        Self {
            checks: a.checks,
            json: a.json,
            timeline: a.timeline,
            lsn: a.lsn,
            backup_name: a.backup_name,
        }
    }
}

impl From<WalShow> for crate::commands::wal_show::Options {
    fn from(a: WalShow) -> Self {
        Self {
            detailed_json: a.detailed_json,
            without_backups: a.without_backups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_flags_anywhere() {
        let (f, rest) = take_global_flags(v(&[
            "wal-g", "wal-push", "--config", "a.yaml", "p", "--turbo",
        ]))
        .unwrap();
        assert_eq!(f.config, Some(PathBuf::from("a.yaml")));
        assert!(f.turbo);
        assert_eq!(rest, v(&["wal-g", "wal-push", "p"]));
        let (f, rest) =
            take_global_flags(v(&["wal-g", "--config=b.json", "delete", "--", "--config"]))
                .unwrap();
        assert_eq!(f.config, Some(PathBuf::from("b.json")));
        assert_eq!(rest, v(&["wal-g", "delete", "--", "--config"]));
        assert!(take_global_flags(v(&["wal-g", "wal-push", "--config"])).is_err());
    }
}

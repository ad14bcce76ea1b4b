//! The command line, as argh parses it. Every flag is documented where it is defined;
//! argh turns these doc comments into `--help`.

use argh::FromArgs;
use std::path::PathBuf;

/// wal-rus: WAL-G compatible archiving for PostgreSQL with memory fixed before the run.
/// Settings come from WAL-G's environment variables (WALG_*, WALE_*, AWS_*, PG*) and an
/// optional JSON config file; the environment wins over the file.
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// path to a WAL-G JSON config file (default: ~/.walg.json when present)
    #[argh(option)]
    pub config: Option<PathBuf>,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

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

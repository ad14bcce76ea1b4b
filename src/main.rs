//! Parses the command line and dispatches; maps errors to WAL-G's exit codes. Nothing else.

use argh::FromArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use wal_rus::cli::{Cli, Command};
use wal_rus::commands;
use wal_rus::config::{Cmd, Settings, Sources};
use wal_rus::error::Error;

/// The command as the settings table sees it.
fn table_cmd(command: &Command) -> Cmd {
    match command {
        Command::WalPush(_) => Cmd::WalPush,
        Command::WalFetch(_) => Cmd::WalFetch,
        Command::WalPrefetch(_) => Cmd::WalPrefetch,
        Command::BackupPush(c) => Cmd::BackupPush { full: c.full },
        Command::BackupFetch(_) => Cmd::BackupFetch,
        Command::BackupList(_) | Command::BackupShow(_) => Cmd::BackupList,
        Command::BackupMark(_) => Cmd::BackupMark,
        Command::Delete(_) => Cmd::Delete,
        Command::MemoryPlan(_) => Cmd::MemoryPlan,
        Command::WalVerify(_) => Cmd::WalVerify,
        Command::WalShow(_) => Cmd::WalShow,
        Command::Daemon(_) => Cmd::Daemon,
        Command::WalRestore(_) => Cmd::WalRestore,
        Command::WalReceive(_) => Cmd::WalReceive,
    }
}

/// The command line of backup-push as the command takes it.
fn run(cli: Cli, config: Option<PathBuf>, turbo: bool) -> Result<(), Error> {
    let Some(command) = cli.command else {
        return Err(Error::Usage("no command given; see --help".into()));
    };
    let sources = Sources::from_process(config.as_deref())?;
    let mut settings = Settings::load(&sources, table_cmd(&command))?;
    if turbo {
        settings.disk_rate_limit = None;
        settings.network_rate_limit = None;
    }
    wal_rus::log::set_level(settings.log_level);
    for w in &settings.warnings {
        wal_rus::warn!("{w}");
    }
    match command {
        Command::WalPush(c) => commands::wal_push::run(&settings, &c.path).map(drop),
        Command::WalFetch(c) => commands::wal_fetch::run(&settings, &c.name, &c.dest),
        Command::WalPrefetch(c) => commands::wal_prefetch::run(&settings, &c.name, &c.dest),
        Command::BackupPush(c) => commands::backup_push::run(&settings, &c.into()),
        Command::BackupFetch(c) => commands::backup_fetch::run(&settings, &c.into()),
        Command::BackupList(c) => commands::backup_list::run(&settings, &c.into()),
        Command::BackupShow(c) => commands::backup_show::run(&settings, &c.into()),
        Command::BackupMark(c) => commands::backup_mark::run(&settings, &c.into()),
        Command::Delete(c) => commands::delete::run(&settings, &c.into()),
        Command::WalVerify(c) => commands::wal_verify::run(&settings, &c.into()),
        Command::WalShow(c) => commands::wal_show::run(&settings, &c.into()),
        Command::Daemon(c) => commands::daemon::run(&settings, &c.socket),
        Command::WalRestore(c) => {
            commands::wal_restore::run(&settings, &c.target_pgdata, &c.source_pgdata)
        }
        Command::WalReceive(_) => commands::wal_receive::run(&settings),
        Command::MemoryPlan(c) => {
            let text = if c.json {
                serde_json::to_string_pretty(&commands::memory_plan::json(&settings))
                    .unwrap_or_default()
                    + "\n"
            } else {
                commands::memory_plan::text(&settings)
            };
            commands::write_stdout(&text).map_err(|e| Error::io("writing the plan to stdout", e))
        }
    }
}

fn main() -> ExitCode {
    // Before anything allocates on another thread: the memory plan assumes this malloc set-up.
    wal_rus::pipeline::plan::configure_malloc();
    let mut args = Vec::new();
    for arg in std::env::args_os() {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("Invalid utf8: {}", a.to_string_lossy());
                return ExitCode::FAILURE;
            }
        }
    }
    // WAL-G's global flags may stand after the command too; argh wants them before it.
    let (flags, args) = match wal_rus::cli::take_global_flags(args) {
        Ok(x) => x,
        Err(e) => {
            wal_rus::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let program = args.first().map(String::as_str).unwrap_or("wal-rus");
    let program = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = match Cli::from_args(&[program], &rest) {
        Ok(cli) => cli,
        Err(exit) => {
            return match exit.status {
                Ok(()) => {
                    println!("{}", exit.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!(
                        "{}\nRun {program} --help for more information.",
                        exit.output
                    );
                    ExitCode::FAILURE
                }
            };
        }
    };
    if cli.version {
        println!("wal-rus {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = flags.config.or_else(|| cli.config.clone());
    let turbo = flags.turbo || cli.turbo;
    match run(cli, config, turbo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            wal_rus::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

//! Parses the command line and dispatches; maps errors to WAL-G's exit codes. Nothing else.

use std::process::ExitCode;
use wal_rus::cli::{Cli, Command};
use wal_rus::commands;
use wal_rus::config::{Settings, Sources};
use wal_rus::error::Error;

fn run(cli: Cli) -> Result<(), Error> {
    let Some(command) = cli.command else {
        return Err(Error::Usage("no command given; see --help".into()));
    };
    let sources = Sources::from_process(cli.config.as_deref())?;
    let mut settings = Settings::load(&sources)?;
    if cli.turbo {
        settings.disk_rate_limit = None;
        settings.network_rate_limit = None;
    }
    wal_rus::log::set_level(&settings.log_level);
    match command {
        Command::WalPush(c) => commands::wal_push::run(&settings, &c.path).map(drop),
        Command::WalFetch(c) => commands::wal_fetch::run(&settings, &c.name, &c.dest),
        Command::WalPrefetch(c) => commands::wal_prefetch::run(&settings, &c.name, &c.dest),
        Command::BackupPush(c) => commands::backup_push::run(&settings, &c),
        Command::BackupFetch(c) => commands::backup_fetch::run(&settings, &c),
        Command::BackupList(c) => commands::backup_list::run(&settings, &c),
        Command::BackupMark(c) => commands::backup_mark::run(&settings, &c),
        Command::Delete(c) => commands::delete::run(&settings, &c),
        Command::MemoryPlan(c) => {
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&commands::memory_plan::json(&settings))
                        .unwrap_or_default()
                );
            } else {
                print!("{}", commands::memory_plan::text(&settings));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Before anything allocates on another thread: the memory plan assumes this malloc set-up.
    wal_rus::pipeline::plan::configure_malloc();
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("wal-rus {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            wal_rus::error!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

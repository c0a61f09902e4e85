//! The `aerie` command: runs the daemon from a config file (or from the embedded default
//! when there is none), drives the running daemon (`backup ...`), and a few one-off tools
//! for operators. Each command is one variant here and one function in `cli`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A backup daemon for the Pterodactyl Panel that speaks the Wings backup API.
#[derive(Parser)]
#[command(version, after_help = cli::exit::EXIT_CODES_HELP)]
struct Cli {
    /// The config file (Wings' config.yml keys). Without it, ./config.yml if present, else
    /// the embedded default: 127.0.0.1:8080, data under ./aerie-data/, a generated token.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,

    /// How log lines are written on stderr.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: cli::logging::LogFormat,

    /// What to do; without one, run the daemon.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and load the adapters, then exit.
    Check,
    /// Back up, list, show, delete, restore and verify backups through the running daemon
    /// (at api.host/api.port, with the config's token).
    #[command(after_help = cli::exit::EXIT_CODES_HELP)]
    Backup(cli::backup::BackupArgs),
    /// List the configured adapters: library, kind, adapter-api version, and whether each
    /// loads and accepts its config (without starting the daemon).
    Adapters(cli::adapters::AdaptersArgs),
    /// Print a websocket token for a server, signed with the node token as the Panel signs
    /// them (all permissions, valid for 10 minutes).
    WsToken {
        /// The server's id.
        server: String,
    },
    /// Print a one-time download link for a backup, as the Panel makes them (valid for 15
    /// minutes).
    DownloadLink {
        /// The server's id.
        server: String,
        /// The backup's uuid.
        backup: String,
    },
    /// Run the adapter conformance suite against an adapter library and print one line per
    /// case; exits 0 only when every case passes. `--config` is the adapter's config (JSON)
    /// here, not a config file.
    AdapterTest(aerie::adapter_test::Args),
}

/// glibc malloc arenas the daemon may use (glibc's default is 8 per core). Each backup runs
/// a few threads (walk, compression, hashing, storing) that pass 1 MiB blocks between them;
/// with an arena for nearly every thread, freed blocks stay spread over many arenas: 205
/// backups at once (`tests/bench/load.py`, 2 cores) peaked at 99–234 MiB of RSS (median 130,
/// five runs) with the default, 60–155 MiB (median 75) with 4 arenas.
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: libc::c_int = 4;

fn main() -> ExitCode {
    // An operator's own MALLOC_ARENA_MAX, which glibc has read already, wins.
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; it runs first, before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aerie: {err:#}");
            ExitCode::from(cli::exit::code_of(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Some(Command::AdapterTest(args)) => {
            return aerie::adapter_test::run(&args, cli.config.as_deref())
        }
        command => command,
    };
    let serving = command.is_none();
    let config = cli::load_config(cli.config, serving)?;
    match command {
        None => tokio::runtime::Runtime::new()?.block_on(aerie::run(config)),
        Some(Command::AdapterTest(_)) => unreachable!("run before any config is read"),
        Some(Command::Check) => cli::tools::check(&config),
        Some(Command::Backup(args)) => cli::backup::run(&config, args),
        Some(Command::Adapters(args)) => cli::adapters::run(&config, args),
        Some(Command::WsToken { server }) => {
            cli::tools::ws_token(&config, &server);
            Ok(())
        }
        Some(Command::DownloadLink { server, backup }) => {
            cli::tools::download_link(&config, &server, &backup)
        }
    }
}

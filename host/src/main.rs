//! The `aerie` command: runs the daemon from a config file, or from the embedded default
//! when there is none.

use std::path::PathBuf;
use std::process::ExitCode;

use aerie::config::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A backup daemon for the Pterodactyl Panel that speaks the Wings backup API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The config file (Wings' config.yml keys). Without it, ./config.yml if present, else
    /// the embedded default: 127.0.0.1:8080, data under ./aerie-data/, a generated token.
    #[arg(long, short)]
    config: Option<PathBuf>,

    /// Check the config and load the adapters, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AERIE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aerie: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let default_file = PathBuf::from("config.yml");
    let config = match cli.config {
        Some(path) => Config::load(&path)?,
        None if default_file.exists() => Config::load(&default_file)?,
        None => {
            let config = Config::embedded()?;
            println!(
                "aerie: no config file; running on the embedded default (data in ./{}/)",
                aerie::config::DEFAULT_DATA_FOLDER
            );
            println!("aerie: API token: {}", config.token);
            config
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    if cli.check {
        runtime.block_on(async {
            let config = config.clone();
            tokio::task::spawn_blocking(move || aerie::plugins::Adapters::load(&config)).await?
        })?;
        println!("aerie: the config and its adapters are good");
        return Ok(());
    }
    runtime.block_on(aerie::run(config))
}

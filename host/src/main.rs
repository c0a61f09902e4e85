//! The `aerie` command: runs the daemon from a config file (or from the embedded default
//! when there is none), and a few one-off tools for operators.

use std::path::PathBuf;
use std::process::ExitCode;

use aerie::config::Config;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A backup daemon for the Pterodactyl Panel that speaks the Wings backup API.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The config file (Wings' config.yml keys). Without it, ./config.yml if present, else
    /// the embedded default: 127.0.0.1:8080, data under ./aerie-data/, a generated token.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,

    /// What to do; without one, run the daemon.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and load the adapters, then exit.
    Check,
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

fn load_config(path: Option<PathBuf>, announce: bool) -> anyhow::Result<Config> {
    let default_file = PathBuf::from("config.yml");
    Ok(match path {
        Some(path) => Config::load(&path)?,
        None if default_file.exists() => Config::load(&default_file)?,
        None => {
            let config = Config::embedded()?;
            if announce {
                println!(
                    "aerie: no config file; running on the embedded default (data in ./{}/)",
                    aerie::config::DEFAULT_DATA_FOLDER
                );
                println!("aerie: API token: {}", config.token);
            }
            config
        }
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let serving = cli.command.is_none();
    let config = load_config(cli.config, serving)?;
    let now = aerie::jwt::unix_now();
    match cli.command {
        None => tokio::runtime::Runtime::new()?.block_on(aerie::run(config)),
        Some(Command::Check) => {
            if config.api.ssl.enabled {
                aerie::tls::Tls::load(&config.api.ssl)?;
            }
            let panel = match &config.remote {
                Some(remote) => Some(aerie::events::panel::Panel::new(
                    remote,
                    &config.token_id,
                    &config.token,
                    std::time::Duration::from_secs(config.remote_query.timeout),
                )?),
                None => None,
            };
            aerie::plugins::Adapters::load(
                config.plugins.as_deref(),
                &config.system.backup_directory,
                std::sync::Arc::new(aerie::events::presign::PanelServices::new(panel)),
            )?;
            println!("aerie: the config and its adapters are good");
            check_upstream(&config)
        }
        Some(Command::WsToken { server }) => {
            let claims = serde_json::json!({
                "iat": now, "nbf": now, "exp": now + 600,
                "server_uuid": server, "permissions": ["*"],
            });
            println!("{}", aerie::jwt::sign(&claims, config.token.as_bytes()));
            Ok(())
        }
        Some(Command::DownloadLink { server, backup }) => {
            let claims = serde_json::json!({
                "iat": now, "nbf": now, "exp": now + 900,
                "server_uuid": server, "backup_uuid": backup,
                "unique_id": uuid::Uuid::new_v4().simple().to_string(),
            });
            let token = aerie::jwt::sign(&claims, config.token.as_bytes());
            let host = match config.api.host.as_str() {
                "0.0.0.0" | "::" => "127.0.0.1",
                host => host,
            };
            let scheme = if config.api.ssl.enabled {
                "https"
            } else {
                "http"
            };
            println!(
                "{scheme}://{host}:{}/download/backup?token={token}",
                config.api.port
            );
            Ok(())
        }
    }
}

/// `aerie check` in front of Wings: asks Wings' `/api/system` with the node token, prints
/// whether it answers, and fails the check when it does not (the Panel would see 502s).
fn check_upstream(config: &Config) -> anyhow::Result<()> {
    let Some(upstream) = &config.upstream else {
        return Ok(());
    };
    let wings = std::sync::Arc::new(aerie::upstream::Wings::new(&upstream.url, &config.token));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(aerie::upstream::proxy::Proxy::new(wings.clone()).probe());
    match answer {
        Ok(version) => {
            println!("aerie: upstream {} answers: {version}", wings.url);
            Ok(())
        }
        Err(cause) => anyhow::bail!(
            "upstream.url: Wings at {} does not answer GET /api/system: {cause}",
            wings.url
        ),
    }
}

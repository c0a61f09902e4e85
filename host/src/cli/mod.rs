//! The `aerie` command's parts besides running the daemon: the operator's tools, the backup
//! commands that drive the running daemon's API, the adapters listing, and the log format.

pub mod adapters;
pub mod backup;
mod daemon;
mod events;
pub mod exit;
pub mod logging;
mod output;
mod pin;
mod progress;
pub mod tools;

use std::path::PathBuf;

use aerie::config::Config;

/// The config at `path`, else `./config.yml` if present, else the embedded default (its
/// generated token printed when `announce`, as the daemon starts).
pub fn load_config(path: Option<PathBuf>, announce: bool) -> anyhow::Result<Config> {
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

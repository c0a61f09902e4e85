//! `aerie adapters`: the adapters the config names, each loaded and started as the daemon
//! would (without starting the daemon), with whether it works or why not.

use aerie::config::Config;
use clap::Args;

use super::exit::{Exit, Failure};

/// `aerie adapters`: its options.
#[derive(Args)]
pub struct AdaptersArgs {
    /// Print one JSON array for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lists the adapters of `config`; fails (exit 1) when any of them does not load or refuses
/// its config, after listing them all.
pub fn run(config: &Config, args: AdaptersArgs) -> anyhow::Result<()> {
    let reports = aerie::plugins::inspect(
        config.plugins.as_deref(),
        &config.system.backup_directory,
        std::sync::Arc::new(aerie::events::presign::PanelServices::from_config(config)?),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        for report in &reports {
            println!(
                "{}: {} (kind {}, adapter-api {}): {}",
                report.name,
                report.library.display(),
                report.kind.as_deref().unwrap_or("-"),
                report.abi_version.as_deref().unwrap_or("-"),
                report.error.as_deref().unwrap_or("ok"),
            );
        }
    }
    let broken: Vec<&str> = reports
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if !broken.is_empty() {
        return Err(Failure::new(
            Exit::Error,
            format!("these adapters do not work: {}", broken.join(", ")),
        )
        .into());
    }
    Ok(())
}

//! The daemon's and the CLI's log lines on stderr: text for people (the default), or one
//! JSON object a line for log shippers (`--log-format json`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    /// Text, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, fields, target, spans.
    Json,
}

/// Installs the global subscriber: the `AERIE_LOG` filter (default `info`), on stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("AERIE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

//! `aerie adapter-test`: runs the adapter conformance suite against a built adapter library,
//! loaded exactly as the daemon loads it, and prints one line per case. For adapter authors
//! and for operators checking a library before they deploy it.

use std::path::PathBuf;

use aerie_adapter_api::host::load_library;
use aerie_adapter_api::testkit::{self, Config};
use aerie_adapter_api::HostContext;
use anyhow::{bail, Context};

/// What `aerie adapter-test` takes besides `--config JSON`: for this command the global
/// `--config` is the adapter's config (as the `config` of its plugins-file entry, `null`
/// when not given), not a config file.
#[derive(clap::Args)]
pub struct Args {
    /// The adapter library (`.so`) to test.
    #[arg(long)]
    pub library: PathBuf,
    /// The backup directory the host tells the adapter about.
    #[arg(long)]
    pub backup_directory: Option<PathBuf>,
    /// Bytes of the large-stream case (1 GiB by default).
    #[arg(long, default_value_t = testkit::DEFAULT_STREAM_BYTES)]
    pub stream_bytes: u64,
    /// A folder where the adapter keeps everything it stores: after every abort it must
    /// hold no more files than before.
    #[arg(long)]
    pub storage_dir: Option<PathBuf>,
    /// The adapter panics on request (`"panic_on_request"` in its config; aerie's fixture
    /// adapter does): check that every panic becomes an error.
    #[arg(long)]
    pub panics: bool,
}

/// Runs the suite against `args.library` with the adapter config `config` (JSON text) and
/// prints its report; fails when a case failed.
pub fn run(args: &Args, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let adapter: serde_json::Value = match config {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(&text.to_string_lossy())
            .context("--config is not JSON (for adapter-test it is the adapter's config)")?,
    };
    let library = load_library(&args.library)
        .with_context(|| format!("cannot load {}", args.library.display()))?;
    let mut config = Config::new(adapter);
    config.host = HostContext {
        backup_directory: args.backup_directory.clone().unwrap_or_default(),
        aerie_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    config.stream_bytes = args.stream_bytes;
    config.panics = args.panics;
    if let Some(dir) = args.storage_dir.clone() {
        config.residue = Some(Box::new(move || files_under(&dir)));
    }
    let report = testkit::run_library(&library, config);
    println!("{report}");
    if !report.passed() {
        bail!(
            "{} failed {} of {} cases",
            args.library.display(),
            report.failed().len(),
            report.cases.len()
        );
    }
    Ok(())
}

/// Every file under `dir` (relative paths), for the residue checks; an unreadable folder
/// is listed as such, so that it shows up as a difference rather than passing unseen.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(err) => {
                files.push(format!("{}: unreadable: {err}", folder.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(path);
            } else {
                let shown = path.strip_prefix(dir).unwrap_or(&path);
                files.push(shown.display().to_string());
            }
        }
    }
    files
}

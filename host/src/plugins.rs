//! Adapter plugins: reading the plugins file, loading each library by its path, and the
//! async facade through which the rest of the daemon calls an adapter (every call runs on a
//! blocking thread, inside the caller's tracing span), with the bounded retry of a
//! retryable read-only call and the error that names which adapter failed how.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{
    load_library, AdapterLibrary, LoadedAdapter, Logger, ServicesProvider, SourceHandle,
};
use aerie_adapter_api::{AdapterError, BackupInfo, ErrorKind, HostContext};
use anyhow::{bail, Context};
use serde::Deserialize;

/// The file name of the bundled `wings` adapter, found beside the `aerie` binary.
pub const BUNDLED_WINGS_LIBRARY: &str = "libaerie_adapter_wings.so";

/// The plugins file: `adapters:`, a list of named libraries with their config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginsFile {
    adapters: Vec<PluginEntry>,
}

/// One adapter as the operator declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    /// What a request's `adapter` field selects.
    name: String,
    /// The `.so`; relative paths are from the plugins file's folder.
    library: PathBuf,
    /// Handed to the adapter as JSON.
    #[serde(default)]
    config: serde_json::Value,
}

/// One adapter instance, ready to use.
pub struct Adapter {
    /// The name requests select it by.
    pub name: String,
    /// Its kind, as the library reports it (`wings`, `s3`, ...).
    pub kind: String,
    /// The instance behind the boundary, shared with blocking tasks.
    instance: Arc<LoadedAdapter>,
}

impl Adapter {
    /// Runs `call` with the adapter on a blocking thread, inside the current tracing span;
    /// the async face of every adapter call.
    pub async fn run<T, F>(&self, call: F) -> T
    where
        F: FnOnce(&LoadedAdapter) -> T + Send + 'static,
        T: Send + 'static,
    {
        let instance = self.instance.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| call(&instance)))
            .await
            .expect("adapter calls are guarded against panics")
    }

    /// The instance itself, for code that already runs on a blocking thread.
    pub fn blocking(&self) -> &LoadedAdapter {
        &self.instance
    }

    /// `stat` of backup `backup` of `server`, retried while retryable (see [`retrying`]).
    pub async fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, StorageError> {
        let (name, s, b) = (self.name.clone(), server.to_string(), backup.to_string());
        self.run(move |a| retrying(&name, "stat", || a.stat(&s, &b)))
            .await
            .map_err(|e| StorageError::new(&self.name, e))
    }

    /// `open` of backup `backup` of `server` from byte `offset`, retried while retryable.
    pub async fn open(
        &self,
        server: &str,
        backup: &str,
        offset: u64,
    ) -> Result<SourceHandle, StorageError> {
        let (name, s, b) = (self.name.clone(), server.to_string(), backup.to_string());
        self.run(move |a| retrying(&name, "open", || a.open(&s, &b, offset)))
            .await
            .map_err(|e| StorageError::new(&self.name, e))
    }
}

/// How many times in all a retryable `begin_backup`, `stat` or `open` is tried: enough to
/// ride out a blip of a second or two (a throttled S3 request, a reconnect), few enough that
/// a request waiting on it answers within a few seconds.
pub const RETRY_ATTEMPTS: u32 = 4;

/// The pause before the first retry, doubled before each next one (0.25 s, 0.5 s, 1 s: under
/// 2 s of waiting in all, well inside any client's request timeout).
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// An adapter's error, with the adapter's name: what the host logs, reports and maps to an
/// HTTP status by its kind.
#[derive(Debug, Clone)]
pub struct StorageError {
    /// The name of the adapter that failed.
    pub adapter: String,
    /// What it said.
    pub error: AdapterError,
}

impl StorageError {
    /// `error` from the adapter named `adapter`.
    pub fn new(adapter: &str, error: AdapterError) -> Self {
        Self {
            adapter: adapter.to_string(),
            error,
        }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind
    }
}

impl std::fmt::Display for StorageError {
    /// `adapter "s3" (unavailable): <message>`; the kind is left out when it is OTHER.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "adapter {:?}", self.adapter)?;
        if self.error.kind != ErrorKind::OTHER {
            write!(f, " ({})", self.error.kind.name())?;
        }
        write!(f, ": {}", self.error.message)
    }
}

impl std::error::Error for StorageError {}

/// Runs `call` (a `begin_backup`, `stat` or `open` of adapter `adapter`: calls that change
/// nothing when they fail) until it succeeds, fails without `retryable`, or has been tried
/// [`RETRY_ATTEMPTS`] times, pausing longer before each retry. Blocks: run it on a blocking
/// thread. Writes are never retried this way: a sink's bytes cannot be sent twice.
pub fn retrying<T>(
    adapter: &str,
    what: &str,
    mut call: impl FnMut() -> Result<T, AdapterError>,
) -> Result<T, AdapterError> {
    let mut pause = RETRY_FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match call() {
            Err(err) if err.retryable && attempt < RETRY_ATTEMPTS => {
                tracing::warn!(
                    adapter,
                    kind = err.kind.name(),
                    attempt,
                    "{what} failed and may succeed if tried again; retrying in {} ms: {err}",
                    pause.as_millis()
                );
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Every configured adapter, by name and in the plugins file's order.
pub struct Adapters {
    by_name: HashMap<String, Arc<Adapter>>,
    /// The same adapters, in the order the plugins file lists them.
    in_order: Vec<Arc<Adapter>>,
}

impl Adapters {
    /// The adapter named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Adapter>> {
        self.by_name.get(name).cloned()
    }

    /// All adapters, in the plugins file's order (the order they are asked in when any may
    /// hold a backup).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Adapter>> {
        self.in_order.iter()
    }

    /// The adapters `in_order`, indexed by name too.
    fn from_ordered(in_order: Vec<Arc<Adapter>>) -> Self {
        let by_name = in_order
            .iter()
            .map(|adapter| (adapter.name.clone(), adapter.clone()))
            .collect();
        Self { by_name, in_order }
    }

    /// Loads the adapters of the `plugins` file, or the bundled `wings` adapter when there is
    /// none; `backup_directory` (`system.backup_directory`) is what adapters are told as the
    /// node's default place for backups, `services` what they may ask of the host (the
    /// Panel). Any problem is one line naming the file.
    pub fn load(
        plugins: Option<&Path>,
        backup_directory: &Path,
        services: Arc<dyn ServicesProvider>,
    ) -> anyhow::Result<Self> {
        let host = host_context(backup_directory);
        let entries = plugin_entries(plugins)?;
        let source = plugins.map_or_else(
            || "the bundled adapters".to_string(),
            |p| p.display().to_string(),
        );
        let mut libraries: HashMap<PathBuf, AdapterLibrary> = HashMap::new();
        let mut in_order: Vec<Arc<Adapter>> = Vec::new();
        for entry in entries {
            if in_order.iter().any(|a| a.name == entry.name) {
                bail!("{source}: the adapter name {:?} is used twice", entry.name);
            }
            let library = match libraries.get(&entry.library) {
                Some(library) => *library,
                None => {
                    let library = load_library(&entry.library).map_err(|e| {
                        anyhow::anyhow!(
                            "{source}: adapter {:?}: {}: {e}",
                            entry.name,
                            entry.library.display()
                        )
                    })?;
                    libraries.insert(entry.library.clone(), library);
                    library
                }
            };
            let logger = Arc::new(AdapterLog {
                name: entry.name.clone(),
            });
            let instance = library
                .instantiate_with_services(&entry.config, &host, logger, services.clone())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{source}: adapter {:?} ({}): {}: {e}",
                        entry.name,
                        entry.library.display(),
                        e.kind.name()
                    )
                })?;
            let kind = library.kind();
            tracing::info!(adapter = %entry.name, kind = %kind, library = %entry.library.display(), "loaded adapter");
            let adapter = Adapter {
                name: entry.name.clone(),
                kind,
                instance: Arc::new(instance),
            };
            in_order.push(Arc::new(adapter));
        }
        Ok(Self::from_ordered(in_order))
    }
}

/// One configured adapter as `aerie adapters` shows it: loaded and started, or why not.
#[derive(Debug, serde::Serialize)]
pub struct AdapterReport {
    /// The name requests select it by.
    pub name: String,
    /// Its library's path.
    pub library: PathBuf,
    /// Its kind, when the library loaded.
    pub kind: Option<String>,
    /// The aerie-adapter-api version the library was built against, when it loaded.
    pub abi_version: Option<String>,
    /// Why the library did not load or the adapter refused its config; `None` when good.
    pub error: Option<String>,
}

/// Loads each adapter of the `plugins` file (or the bundled `wings` adapter) as
/// [`Adapters::load`] does, and says for each whether it loads and accepts its config,
/// without stopping at the first that does not. A plugins file that cannot be read is
/// an error.
pub fn inspect(
    plugins: Option<&Path>,
    backup_directory: &Path,
    services: Arc<dyn ServicesProvider>,
) -> anyhow::Result<Vec<AdapterReport>> {
    let host = host_context(backup_directory);
    let reports = plugin_entries(plugins)?
        .into_iter()
        .map(|entry| {
            let mut report = AdapterReport {
                name: entry.name.clone(),
                library: entry.library.clone(),
                kind: None,
                abi_version: None,
                error: None,
            };
            let library = match load_library(&entry.library) {
                Ok(library) => library,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return report;
                }
            };
            report.kind = Some(library.kind());
            report.abi_version = Some(library.abi_version().to_string());
            let logger = Arc::new(AdapterLog { name: entry.name });
            let started =
                library.instantiate_with_services(&entry.config, &host, logger, services.clone());
            if let Err(e) = started {
                report.error = Some(format!("{}: {e}", e.kind.name()));
            }
            report
        })
        .collect();
    Ok(reports)
}

/// What adapters are told about the host; `backup_directory` is `system.backup_directory`.
fn host_context(backup_directory: &Path) -> HostContext {
    HostContext {
        backup_directory: absolute(backup_directory),
        aerie_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The adapters of the `plugins` file, or the bundled `wings` adapter when there is none.
fn plugin_entries(plugins: Option<&Path>) -> anyhow::Result<Vec<PluginEntry>> {
    Ok(match plugins {
        Some(path) => read_plugins_file(path)?,
        None => vec![PluginEntry {
            name: "wings".into(),
            library: bundled_library_dir()?.join(BUNDLED_WINGS_LIBRARY),
            config: serde_json::Value::Null,
        }],
    })
}

#[cfg(test)]
impl Adapters {
    /// Adapters linked into the test binary instead of loaded from files, as `(name,
    /// library, config)`, behind the same boundary code as loaded ones.
    pub(crate) fn linked(
        entries: Vec<(&str, AdapterLibrary, serde_json::Value)>,
        host: &HostContext,
    ) -> Self {
        let in_order = entries
            .into_iter()
            .map(|(name, library, config)| {
                let logger = Arc::new(AdapterLog { name: name.into() });
                let instance = library
                    .instantiate(&config, host, logger)
                    .expect("the linked adapter starts");
                let adapter = Adapter {
                    name: name.into(),
                    kind: library.kind(),
                    instance: Arc::new(instance),
                };
                Arc::new(adapter)
            })
            .collect();
        Self::from_ordered(in_order)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_plugins_file(path: &Path) -> anyhow::Result<Vec<PluginEntry>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: PluginsFile = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(
        &text,
    ))
    .map_err(|e| {
        let key = e.path().to_string();
        anyhow::anyhow!("{}: {key}: {}", path.display(), e.into_inner())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(file
        .adapters
        .into_iter()
        .map(|entry| PluginEntry {
            library: base.join(&entry.library),
            ..entry
        })
        .collect())
}

/// The folder of the running binary, where `cargo build` puts the bundled adapters
/// (`AERIE_ADAPTER_DIR` overrides it, for installs that keep libraries elsewhere).
fn bundled_library_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AERIE_ADAPTER_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the aerie binary's folder")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// Re-emits an adapter's log lines as the daemon's own, tagged with the adapter's name.
struct AdapterLog {
    name: String,
}

impl Logger for AdapterLog {
    fn max_level(&self) -> LogLevel {
        use tracing::level_filters::LevelFilter;
        match LevelFilter::current() {
            LevelFilter::OFF => LogLevel(0),
            LevelFilter::ERROR => LogLevel::ERROR,
            LevelFilter::WARN => LogLevel::WARN,
            LevelFilter::INFO => LogLevel::INFO,
            LevelFilter::DEBUG => LogLevel::DEBUG,
            _ => LogLevel::TRACE,
        }
    }

    fn log(&self, level: LogLevel, target: &str, message: &str) {
        let adapter = self.name.as_str();
        match level {
            LogLevel::ERROR => {
                tracing::error!(target: "adapter", adapter, from = target, "{message}")
            }
            LogLevel::WARN => {
                tracing::warn!(target: "adapter", adapter, from = target, "{message}")
            }
            LogLevel::INFO => {
                tracing::info!(target: "adapter", adapter, from = target, "{message}")
            }
            LogLevel::DEBUG => {
                tracing::debug!(target: "adapter", adapter, from = target, "{message}")
            }
            _ => tracing::trace!(target: "adapter", adapter, from = target, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_error_names_its_adapter_and_its_kind_but_not_other() {
        let unavailable =
            AdapterError::new(ErrorKind::UNAVAILABLE, "timed out").with_retryable(true);
        assert_eq!(
            StorageError::new("s3", unavailable).to_string(),
            "adapter \"s3\" (unavailable): timed out"
        );
        assert_eq!(
            StorageError::new("tape", AdapterError::other("jammed")).to_string(),
            "adapter \"tape\": jammed"
        );
    }
}

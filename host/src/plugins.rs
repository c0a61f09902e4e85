//! Adapter plugins: reading the plugins file, loading each library by its path, and the
//! async facade through which the rest of the daemon calls an adapter (every call runs on a
//! blocking thread, inside the caller's tracing span).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{
    load_library, AdapterLibrary, LoadedAdapter, Logger, ServicesProvider,
};
use aerie_adapter_api::HostContext;
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
}

/// Every configured adapter, by name.
pub struct Adapters {
    by_name: HashMap<String, Arc<Adapter>>,
}

impl Adapters {
    /// The adapter named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Adapter>> {
        self.by_name.get(name).cloned()
    }

    /// All adapters.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Adapter>> {
        self.by_name.values()
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
        let host = HostContext {
            backup_directory: absolute(backup_directory),
            aerie_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let entries = match plugins {
            Some(path) => read_plugins_file(path)?,
            None => vec![PluginEntry {
                name: "wings".into(),
                library: bundled_library_dir()?.join(BUNDLED_WINGS_LIBRARY),
                config: serde_json::Value::Null,
            }],
        };
        let source = plugins.map_or_else(
            || "the bundled adapters".to_string(),
            |p| p.display().to_string(),
        );
        let mut libraries: HashMap<PathBuf, AdapterLibrary> = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in entries {
            if by_name.contains_key(&entry.name) {
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
            by_name.insert(entry.name, Arc::new(adapter));
        }
        Ok(Self { by_name })
    }
}

#[cfg(test)]
impl Adapters {
    /// Adapters linked into the test binary instead of loaded from files, as `(name,
    /// library, config)`, behind the same boundary code as loaded ones.
    pub(crate) fn linked(
        entries: Vec<(&str, AdapterLibrary, serde_json::Value)>,
        host: &HostContext,
    ) -> Self {
        let by_name = entries
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
                (name.to_string(), Arc::new(adapter))
            })
            .collect();
        Self { by_name }
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

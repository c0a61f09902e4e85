//! The host's side: loading adapter libraries by path and calling them through plain Rust
//! types, so nothing from abi_stable leaks into the daemon.

use std::io;
use std::path::Path;
use std::sync::Arc;

use abi_stable::{
    abi_stability::abi_checking::check_layout_compatibility,
    library::{lib_header_from_path, LibraryError, RawLibrary, RootModule},
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RSlice, RSliceMut, RStr, RString},
    StableAbi,
};

use crate::abi::{
    AdapterExtensions_Ref, AdapterModule_Ref, BackupSinkBox, BackupSourceBox, ExtensionsExport,
    HostLogger, HostLogger_TO, HostServices, HostServices_TO, LogLevel, PresignedPartsAbi,
    StorageAdapterBox, EXTENSIONS_SYMBOL,
};
use crate::error::AdapterError;
use crate::hint_board::HintBoard;
pub use crate::hint_board::{HintsFiller, HintsPost};
use crate::services::PresignedParts;
use crate::types::{BackupInfo, HostContext, StoredBackup};

/// Where the host sends an adapter's log lines; the host implements this once.
pub trait Logger: Send + Sync + 'static {
    /// The most verbose level the host keeps.
    fn max_level(&self) -> LogLevel;
    /// One line from the adapter: level, target (its module path), formatted text.
    fn log(&self, level: LogLevel, target: &str, message: &str);
}

/// What the host does for adapters (added in 1.1); the host implements this once and hands
/// it to every adapter it creates with [`AdapterLibrary::instantiate_with_services`].
pub trait ServicesProvider: Send + Sync + 'static {
    /// True when the node has a Panel (`remote`) configured.
    fn panel_configured(&self) -> bool;
    /// Asks the Panel for presigned UploadPart URLs for `backup` (§1.5). Called on the
    /// blocking thread of a host call into the adapter.
    fn presigned_upload_parts(
        &self,
        backup: &str,
        size: u64,
    ) -> Result<PresignedParts, AdapterError>;
}

/// An adapter library that passed abi_stable's load-time checks (ABI, version, layout).
/// Libraries are never unloaded: a loaded library lives as long as the process.
#[derive(Clone, Copy)]
pub struct AdapterLibrary {
    module: AdapterModule_Ref,
    /// The extension module, from adapters built against aerie-adapter-api 1.1 or later.
    extensions: Option<AdapterExtensions_Ref>,
    /// The aerie-adapter-api version the library was built against.
    abi_version: &'static str,
}

/// Why a library could not be loaded, in one line fit for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Loads the adapter library at `path`. Each path is loaded on its own (not through
/// abi_stable's per-type cache), so several different adapters can be loaded side by side.
pub fn load_library(path: &Path) -> Result<AdapterLibrary, LoadError> {
    if !path.is_file() {
        return Err(LoadError(format!("no such file: {}", path.display())));
    }
    let header = lib_header_from_path(path).map_err(|e| LoadError(summarize(&e)))?;
    let module = header
        .init_root_module::<AdapterModule_Ref>()
        .map_err(|e| LoadError(summarize(&e)))?;
    Ok(AdapterLibrary {
        module,
        extensions: load_extensions(path)?,
        abi_version: header.version_strings().version.as_str(),
    })
}

/// The extension module of the library at `path`, checked as abi_stable checks a root
/// module; `None` for an adapter built before it existed (aerie-adapter-api 1.0).
fn load_extensions(path: &Path) -> Result<Option<AdapterExtensions_Ref>, LoadError> {
    // The same library again: the loader hands back the handle it already has.
    let library = RawLibrary::load_at(path).map_err(|e| LoadError(summarize(&e)))?;
    // SAFETY: the symbol is only ever defined by `export_adapter!`, as a function of exactly
    // this type; `ExtensionsExport` is two pointers, fixed forever.
    let exported =
        match unsafe { library.get::<extern "C" fn() -> ExtensionsExport>(EXTENSIONS_SYMBOL) } {
            Ok(function) => function(),
            Err(_) => return Ok(None),
        };
    let module = checked_extensions(exported)?;
    // Its functions are called for the life of the process: never unload it.
    std::mem::forget(library);
    Ok(Some(module))
}

/// The module of `exported`, once its layout is found compatible with this crate's.
fn checked_extensions(exported: ExtensionsExport) -> Result<AdapterExtensions_Ref, LoadError> {
    check_layout_compatibility(
        <AdapterExtensions_Ref as StableAbi>::LAYOUT,
        exported.layout,
    )
    .map_err(|e| {
        let details = e.to_string();
        let last = details
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        LoadError(format!(
            "its extension module does not match this aerie's (ABI mismatch: {}); \
             rebuild the adapter against a compatible aerie-adapter-api",
            last.trim()
        ))
    })?;
    Ok(exported.module)
}

/// One line for a `LibraryError`, whose `Display` can run to thousands of lines of layout.
fn summarize(err: &LibraryError) -> String {
    match err {
        LibraryError::OpenError { err, .. } => format!("cannot open the library: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not an aerie adapter: it exports no abi_stable root module \
             (build it with aerie_adapter_api::export_adapter!)"
                .to_string()
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "built against aerie-adapter-api {actual_version}, which this aerie \
             (aerie-adapter-api {expected_version}) cannot load; rebuild the adapter"
        ),
        LibraryError::AbiInstability(details) => {
            let details = details.to_string();
            let last = details
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            format!(
                "its adapter-api types do not match this aerie's (ABI mismatch: {last}); \
                 rebuild the adapter against a compatible aerie-adapter-api"
            )
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            "built with an incompatible abi_stable version; rebuild the adapter".to_string()
        }
        LibraryError::RootModule { err, .. } => {
            format!("the library failed while starting: {err}")
        }
        LibraryError::ParseVersionError(e) => format!("unreadable version string: {e}"),
        LibraryError::Many(errors) => errors
            .iter()
            .next()
            .map(summarize)
            .unwrap_or_else(|| "failed to load".to_string()),
    }
}

impl AdapterLibrary {
    /// An adapter linked into this process instead of loaded from a file; for tests of an
    /// adapter crate and for conformance checks, through exactly the same boundary code.
    pub fn linked<A: crate::Adapter>() -> Self {
        Self {
            module: crate::plugin::module::<A>(),
            extensions: Some(crate::plugin::extensions::<A>().module),
            abi_version: <AdapterModule_Ref as RootModule>::VERSION_STRINGS
                .version
                .as_str(),
        }
    }

    /// The aerie-adapter-api version the library was built against (e.g. `"1.0.0"`).
    pub fn abi_version(&self) -> &'static str {
        self.abi_version
    }

    /// The adapter's kind (e.g. `"wings"`).
    pub fn kind(&self) -> String {
        (self.module.kind())().as_str().to_string()
    }

    /// Creates an adapter instance from its `config` and the host's context.
    pub fn instantiate(
        &self,
        config: &serde_json::Value,
        host: &HostContext,
        logger: Arc<dyn Logger>,
    ) -> Result<LoadedAdapter, AdapterError> {
        let config = config.to_string();
        let host = serde_json::to_string(host).expect("the host context serializes");
        let logger = HostLogger_TO::from_ptr(RArc::new(LoggerShim(logger)), TD_Opaque);
        let inner =
            (self.module.new_adapter())(RStr::from_str(&config), RStr::from_str(&host), logger)
                .into_result()?;
        Ok(LoadedAdapter { inner, hints: None })
    }

    /// Like [`AdapterLibrary::instantiate`], also handing the adapter the host's `services`
    /// and the hints posted with [`LoadedAdapter::post_hints`]. An adapter built against
    /// aerie-adapter-api 1.0 cannot take them: it is created as `instantiate` would, and
    /// never asks.
    pub fn instantiate_with_services(
        &self,
        config: &serde_json::Value,
        host: &HostContext,
        logger: Arc<dyn Logger>,
        services: Arc<dyn ServicesProvider>,
    ) -> Result<LoadedAdapter, AdapterError> {
        let Some(new_adapter) = self
            .extensions
            .map(|extensions| extensions.new_adapter_with_services())
        else {
            return self.instantiate(config, host, logger);
        };
        let config = config.to_string();
        let host = serde_json::to_string(host).expect("the host context serializes");
        let logger = HostLogger_TO::from_ptr(RArc::new(LoggerShim(logger)), TD_Opaque);
        let hints = Arc::new(HintBoard::default());
        let shim = ServicesShim {
            provider: services,
            hints: hints.clone(),
        };
        let services = HostServices_TO::from_ptr(RArc::new(shim), TD_Opaque);
        let inner = new_adapter(
            RStr::from_str(&config),
            RStr::from_str(&host),
            logger,
            services,
        )
        .into_result()?;
        Ok(LoadedAdapter {
            inner,
            hints: Some(hints),
        })
    }
}

/// The host's [`ServicesProvider`] and hint board behind the FFI-safe [`HostServices`].
struct ServicesShim {
    provider: Arc<dyn ServicesProvider>,
    hints: Arc<HintBoard>,
}

impl HostServices for ServicesShim {
    fn panel_configured(&self) -> bool {
        self.provider.panel_configured()
    }

    fn backup_hints(&self, backup: RStr<'_>) -> RString {
        self.hints.hints_of(backup.as_str()).into()
    }

    fn presigned_upload_parts(
        &self,
        backup: RStr<'_>,
        size: u64,
    ) -> RResult<PresignedPartsAbi, AdapterError> {
        // A panic here would cross back into the adapter: contain it like an adapter's.
        crate::guard(|| {
            self.provider
                .presigned_upload_parts(backup.as_str(), size)
                .map(Into::into)
        })
    }
}

struct LoggerShim(Arc<dyn Logger>);

impl HostLogger for LoggerShim {
    fn max_level(&self) -> LogLevel {
        self.0.max_level()
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        self.0.log(level, target.as_str(), message.as_str())
    }
}

/// A live adapter instance. Every method blocks: call them from a blocking thread.
pub struct LoadedAdapter {
    inner: StorageAdapterBox,
    /// Where `post_hints` posts; `None` when the adapter took no services.
    hints: Option<Arc<HintBoard>>,
}

impl LoadedAdapter {
    /// Starts a backup; see [`crate::Adapter::begin_backup`].
    pub fn begin_backup(&self, server: &str, backup: &str) -> Result<SinkHandle, AdapterError> {
        let sink = self
            .inner
            .begin_backup(server.into(), backup.into())
            .into_result()?;
        Ok(SinkHandle { inner: sink })
    }

    /// Posts the hints of backup `backup` before its `begin_backup`: the adapter may ask
    /// for them ([`crate::Services::backup_hints`]) from then until the post is dropped, and
    /// waits until the filler fills them. Inert for an adapter that took no services.
    pub fn post_hints(&self, backup: &str) -> (HintsPost, HintsFiller) {
        match &self.hints {
            Some(board) => board.post(backup),
            None => HintsPost::inert(),
        }
    }

    /// Opens a stored backup from byte `offset`.
    pub fn open(
        &self,
        server: &str,
        backup: &str,
        offset: u64,
    ) -> Result<SourceHandle, AdapterError> {
        let source = self
            .inner
            .open(server.into(), backup.into(), offset)
            .into_result()?;
        Ok(SourceHandle { inner: source })
    }

    /// Describes a stored backup.
    pub fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        self.inner
            .stat(server.into(), backup.into())
            .into_result()
            .map(Into::into)
    }

    /// Lists stored backups of `server`.
    pub fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        let infos = self.inner.list(server.into()).into_result()?;
        Ok(infos.into_iter().map(Into::into).collect())
    }

    /// Deletes a stored backup.
    pub fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        self.inner
            .delete(server.into(), backup.into())
            .into_result()
    }

    /// Removes what an unfinished backup left behind.
    pub fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        self.inner
            .discard_incomplete(server.into(), backup.into())
            .into_result()
    }
}

/// The writer of one backup in progress. The host always ends it with `finish` or `abort`;
/// dropped without either, it runs the adapter's own `Drop` (guarded like every call),
/// which should discard what was written.
pub struct SinkHandle {
    inner: BackupSinkBox,
}

impl SinkHandle {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        self.inner.write(RSlice::from_slice(bytes)).into_result()
    }

    /// Completes the backup.
    pub fn finish(self, sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        self.inner
            .finish(RStr::from_str(sha1), size)
            .into_result()
            .map(Into::into)
    }

    /// Discards the backup.
    pub fn abort(self) -> Result<(), AdapterError> {
        self.inner.abort().into_result()
    }
}

/// The reader of one stored backup; an [`io::Read`].
pub struct SourceHandle {
    inner: BackupSourceBox,
}

impl io::Read for SourceHandle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(RSliceMut::from_mut_slice(buf))
            .into_result()
            .map_err(|e| {
                let kind = if e.kind == crate::ErrorKind::NOT_FOUND {
                    io::ErrorKind::NotFound
                } else {
                    io::ErrorKind::Other
                };
                io::Error::new(kind, e)
            })
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::prefix_type::PrefixTypeTrait;
    use abi_stable::std_types::RErr;

    use super::*;
    use crate::abi::{AdapterExtensions, HostLoggerBox, HostServicesBox};

    extern "C" fn refuses(
        _config: RStr<'_>,
        _host: RStr<'_>,
        _logger: HostLoggerBox,
        _services: HostServicesBox,
    ) -> RResult<StorageAdapterBox, AdapterError> {
        RErr(AdapterError::other("not used"))
    }

    fn export_with(layout: &'static abi_stable::type_layout::TypeLayout) -> ExtensionsExport {
        ExtensionsExport {
            layout,
            module: AdapterExtensions {
                new_adapter_with_services: refuses,
            }
            .leak_into_prefix(),
        }
    }

    #[test]
    fn an_extension_module_of_this_layout_is_taken() {
        let exported = export_with(<AdapterExtensions_Ref as StableAbi>::LAYOUT);
        assert!(checked_extensions(exported).is_ok());
    }

    #[test]
    fn an_extension_module_of_another_layout_is_refused_in_one_line() {
        // A library whose symbol describes some other type: never called, refused at load.
        let exported = export_with(<AdapterModule_Ref as StableAbi>::LAYOUT);
        let err = checked_extensions(exported).err().expect("refused");
        assert!(
            err.0
                .starts_with("its extension module does not match this aerie's (ABI mismatch"),
            "{err}"
        );
        assert!(!err.0.contains('\n'), "{err}");
    }
}

//! The adapter author's side: plain Rust traits to implement, and the glue that exports an
//! implementation through the stable ABI with every call guarded against panics and every
//! log line forwarded to the host.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RErr, RResult, RSlice, RSliceMut, RStr, RVec},
};
use tracing::{dispatcher, Dispatch};

use crate::abi::{
    AdapterExtensions, AdapterExtensions_Ref, AdapterModule, AdapterModule_Ref, BackupInfoAbi,
    BackupSink, BackupSinkBox, BackupSink_TO, BackupSource, BackupSourceBox, BackupSource_TO,
    ExtensionsExport, HostLoggerBox, HostServicesBox, StorageAdapter, StorageAdapterBox,
    StorageAdapter_TO, StoredBackupAbi,
};
use crate::error::AdapterError;
use crate::forward::forwarding_dispatch;
use crate::services::Services;
use crate::types::{BackupInfo, HostContext, StoredBackup};

/// A place where backups live. Implement this (plus [`Sink`] and [`Source`]) and export it
/// with [`export_adapter!`](crate::export_adapter). When the host calls each method and what
/// it does with the answer: the [guide](crate::guide#lifecycle-of-every-method).
///
/// The host calls every method from a blocking thread, never from inside an async runtime,
/// so methods may block; an adapter that needs async I/O runs its own runtime. Several calls
/// may run at once from different threads. `server` and `backup` always have the shapes the
/// [guide](crate::guide#identifiers-the-host-guarantees) gives: safe as path segments.
pub trait Adapter: Send + Sync + Sized + 'static {
    /// The adapter's kind, e.g. `"s3"`, shown in the host's logs.
    const KIND: &'static str;
    /// The writer of one new backup.
    type Sink: Sink;
    /// The reader of one stored backup.
    type Source: Source;

    /// Builds the adapter from the `config` mapping of its entry in the plugins file (`null`
    /// when the entry has none). A bad value is an [`AdapterError::invalid_config`] naming
    /// the key.
    fn new(config: serde_json::Value, host: &HostContext) -> Result<Self, AdapterError>;

    /// Added in 1.1: builds the adapter with the host's [`Services`] (asking the Panel for
    /// presigned URLs). A host built against 1.0 calls [`Adapter::new`] instead. The default
    /// ignores the services and calls `new`.
    fn new_with_services(
        config: serde_json::Value,
        host: &HostContext,
        services: Services,
    ) -> Result<Self, AdapterError> {
        let _ = services;
        Self::new(config, host)
    }

    /// Starts storing backup `backup` of server `server`. The backup must not become visible
    /// under its final name until [`Sink::finish`].
    fn begin_backup(&self, server: &str, backup: &str) -> Result<Self::Sink, AdapterError>;

    /// Opens a stored backup for reading from byte `offset`; `NOT_FOUND` if there is none.
    /// An `offset` at or past the end gives a source whose first read returns 0.
    fn open(&self, server: &str, backup: &str, offset: u64) -> Result<Self::Source, AdapterError>;

    /// Describes a stored backup; `NOT_FOUND` if there is none. Its `size` must equal the
    /// bytes `open` reads from offset 0.
    fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError>;

    /// The stored backups of `server` (or all, with `server: None`, if the storage does not
    /// record servers), in any order; the host merges them into its own list.
    fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError>;

    /// Deletes a stored backup; `NOT_FOUND` if there is none.
    fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError>;

    /// Removes what an unfinished backup left behind (after a crash); succeeds when there is
    /// nothing to remove. Never deletes a finished backup.
    fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError>;
}

/// Receives one archive's bytes, in order, then exactly one of `finish` or `abort`.
pub trait Sink: Send + 'static {
    /// Appends bytes (about 1 MiB at a time).
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError>;
    /// Makes the whole archive durable and visible; `sha1` (hex) and `size` describe it.
    /// The host does not call `abort` after a failed `finish`: clean up before returning.
    fn finish(self, sha1: &str, size: u64) -> Result<StoredBackup, AdapterError>;
    /// Discards everything written, leaving nothing behind.
    fn abort(self) -> Result<(), AdapterError>;
}

/// Reads a stored archive.
pub trait Source: Send + 'static {
    /// Fills `buf` with the next bytes; `Ok(0)` at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError>;
}

/// Runs `body`, turning a panic into an [`AdapterError`] instead of letting it reach the
/// library boundary (where abi_stable would end the whole daemon). The panic's message and
/// place go to the host's log as an ERROR line, not to stderr.
pub fn guard<T>(body: impl FnOnce() -> Result<T, AdapterError>) -> RResult<T, AdapterError> {
    match catch_unwind(AssertUnwindSafe(|| crate::panic::logged(body))) {
        Ok(result) => result.into(),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            RErr(AdapterError::other(format!("the adapter panicked: {what}")))
        }
    }
}

/// Runs `body` guarded, with `dispatch` as the `tracing` subscriber so its log lines reach
/// the host logger of the adapter instance that was called.
fn call<T>(
    dispatch: &Dispatch,
    body: impl FnOnce() -> Result<T, AdapterError>,
) -> RResult<T, AdapterError> {
    dispatcher::with_default(dispatch, || guard(body))
}

/// The root module for adapter `A`; what [`export_adapter!`](crate::export_adapter) exports.
pub fn module<A: Adapter>() -> AdapterModule_Ref {
    AdapterModule {
        kind: kind::<A>,
        new_adapter: new_adapter::<A>,
    }
    .leak_into_prefix()
}

extern "C" fn kind<A: Adapter>() -> RStr<'static> {
    RStr::from_str(A::KIND)
}

/// The extension module for adapter `A` and its layout; what
/// [`export_adapter!`](crate::export_adapter) exports under
/// [`EXTENSIONS_SYMBOL`](crate::abi::EXTENSIONS_SYMBOL).
pub fn extensions<A: Adapter>() -> ExtensionsExport {
    ExtensionsExport {
        layout: <AdapterExtensions_Ref as abi_stable::StableAbi>::LAYOUT,
        module: AdapterExtensions {
            new_adapter_with_services: new_adapter_with_services::<A>,
        }
        .leak_into_prefix(),
    }
}

extern "C" fn new_adapter<A: Adapter>(
    config_json: RStr<'_>,
    host_json: RStr<'_>,
    logger: HostLoggerBox,
) -> RResult<StorageAdapterBox, AdapterError> {
    build::<A>(config_json, host_json, logger, Services::default())
}

extern "C" fn new_adapter_with_services<A: Adapter>(
    config_json: RStr<'_>,
    host_json: RStr<'_>,
    logger: HostLoggerBox,
    services: HostServicesBox,
) -> RResult<StorageAdapterBox, AdapterError> {
    build::<A>(
        config_json,
        host_json,
        logger,
        Services::from_host(services),
    )
}

/// Builds adapter `A` behind its shim: its log lines go to `logger`, and `services` is what
/// the host offers (nothing, from a host built against 1.0).
fn build<A: Adapter>(
    config_json: RStr<'_>,
    host_json: RStr<'_>,
    logger: HostLoggerBox,
    services: Services,
) -> RResult<StorageAdapterBox, AdapterError> {
    // The adapter's crate, the first segment of its type's path: its events are its own.
    let own_crate = std::any::type_name::<A>()
        .split("::")
        .next()
        .unwrap_or_default()
        .to_string();
    let dispatch = forwarding_dispatch(logger, own_crate);
    // The first instance's logger also receives events from threads the adapter starts
    // itself (outside any call), since those see only the library's global default.
    static GLOBAL_SET: OnceLock<()> = OnceLock::new();
    GLOBAL_SET.get_or_init(|| {
        let _ = dispatcher::set_global_default(dispatch.clone());
    });
    call(&dispatch, || {
        let config: serde_json::Value = serde_json::from_str(config_json.as_str())
            .map_err(|e| AdapterError::invalid_config(format!("config is not JSON: {e}")))?;
        let host: HostContext = serde_json::from_str(host_json.as_str())
            .map_err(|e| AdapterError::other(format!("host context is not JSON: {e}")))?;
        let adapter = A::new_with_services(config, &host, services)?;
        let shim = AdapterShim {
            adapter,
            dispatch: dispatch.clone(),
        };
        Ok(StorageAdapter_TO::from_value(shim, TD_Opaque))
    })
}

/// Parses an adapter's config mapping into `T`, with errors that name the offending key
/// (e.g. `part_size: invalid type: string "x", expected u64`).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    config: serde_json::Value,
) -> Result<T, AdapterError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let err = e.into_inner();
        if path == "." {
            AdapterError::invalid_config(err.to_string())
        } else {
            AdapterError::invalid_config(format!("{path}: {err}"))
        }
    })
}

struct AdapterShim<A> {
    adapter: A,
    dispatch: Dispatch,
}

impl<A: Adapter> StorageAdapter for AdapterShim<A> {
    fn begin_backup(
        &self,
        server: RStr<'_>,
        backup: RStr<'_>,
    ) -> RResult<BackupSinkBox, AdapterError> {
        call(&self.dispatch, || {
            let sink = self
                .adapter
                .begin_backup(server.as_str(), backup.as_str())?;
            let shim = SinkShim {
                sink: Some(sink),
                dispatch: self.dispatch.clone(),
            };
            Ok(BackupSink_TO::from_value(shim, TD_Opaque))
        })
    }

    fn open(
        &self,
        server: RStr<'_>,
        backup: RStr<'_>,
        offset: u64,
    ) -> RResult<BackupSourceBox, AdapterError> {
        call(&self.dispatch, || {
            let source = self
                .adapter
                .open(server.as_str(), backup.as_str(), offset)?;
            let shim = SourceShim {
                source,
                dispatch: self.dispatch.clone(),
            };
            Ok(BackupSource_TO::from_value(shim, TD_Opaque))
        })
    }

    fn stat(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<BackupInfoAbi, AdapterError> {
        call(&self.dispatch, || {
            self.adapter
                .stat(server.as_str(), backup.as_str())
                .map(Into::into)
        })
    }

    fn list(&self, server: RStr<'_>) -> RResult<RVec<BackupInfoAbi>, AdapterError> {
        call(&self.dispatch, || {
            let infos = self.adapter.list(server.as_str())?;
            Ok(infos.into_iter().map(Into::into).collect())
        })
    }

    fn delete(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<(), AdapterError> {
        call(&self.dispatch, || {
            self.adapter.delete(server.as_str(), backup.as_str())
        })
    }

    fn discard_incomplete(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<(), AdapterError> {
        call(&self.dispatch, || {
            self.adapter
                .discard_incomplete(server.as_str(), backup.as_str())
        })
    }
}

struct SinkShim<S: Sink> {
    /// The adapter's sink; `None` once finished or aborted.
    sink: Option<S>,
    dispatch: Dispatch,
}

impl<S: Sink> SinkShim<S> {
    fn take(&mut self) -> S {
        self.sink
            .take()
            .expect("a sink is finished or aborted once")
    }
}

impl<S: Sink> BackupSink for SinkShim<S> {
    fn write(&mut self, bytes: RSlice<'_, u8>) -> RResult<(), AdapterError> {
        let Some(sink) = self.sink.as_mut() else {
            return RErr(AdapterError::other("write after finish or abort"));
        };
        call(&self.dispatch, || sink.write(bytes.as_slice()))
    }

    fn finish(mut self, sha1: RStr<'_>, size: u64) -> RResult<StoredBackupAbi, AdapterError> {
        let sink = self.take();
        call(&self.dispatch, || {
            sink.finish(sha1.as_str(), size).map(Into::into)
        })
    }

    fn abort(mut self) -> RResult<(), AdapterError> {
        let sink = self.take();
        call(&self.dispatch, || sink.abort())
    }
}

impl<S: Sink> Drop for SinkShim<S> {
    /// A sink dropped without `finish` or `abort` runs the adapter's own `Drop` guarded and
    /// with the right logger, like every other call.
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = call(&self.dispatch, || {
                drop(sink);
                Ok(())
            });
        }
    }
}

struct SourceShim<S> {
    source: S,
    dispatch: Dispatch,
}

impl<S: Source> BackupSource for SourceShim<S> {
    fn read(&mut self, mut buf: RSliceMut<'_, u8>) -> RResult<usize, AdapterError> {
        let source = &mut self.source;
        call(&self.dispatch, || source.read(buf.as_mut_slice()))
    }
}

/// Exports an [`Adapter`] implementation as this library's root module. Use it once, at the
/// crate root of a `cdylib`:
///
/// ```ignore
/// aerie_adapter_api::export_adapter!(MyAdapter);
/// ```
///
/// It defines the one symbol the host looks for (abi_stable's root-module loader), so an
/// adapter crate needs no dependency on abi_stable itself.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        #[doc(hidden)]
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn construct() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader($crate::module::<$adapter>)
            }
            // SAFETY: `construct` returns the root module of type `AdapterModule_Ref`, the
            // type named here, exactly as abi_stable's `#[export_root_module]` does.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::AdapterModule_Ref>(
                    construct,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };

        /// The extension module (aerie-adapter-api 1.1): looked up by its symbol, so a
        /// host finds it only in adapters that have it.
        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn aerie_adapter_extensions_v1() -> $crate::abi::ExtensionsExport {
            $crate::extensions::<$adapter>()
        }
    };
}

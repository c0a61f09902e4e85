//! The stable boundary between the aerie backup daemon and its storage adapters.
//!
//! An adapter is a shared library (`cdylib`) that stores backup archives somewhere: a local
//! directory, an S3 bucket, anything. The daemon loads it at start-up from the path an
//! operator gives in the plugins file, checks that it was built against a compatible version
//! of this crate (abi_stable verifies every type's layout), and then streams archives into it
//! and reads them back. Only this crate knows about the ABI; an adapter is ordinary Rust.
//!
//! # Writing an adapter
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! aerie-adapter-api = "1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! tracing = "0.1"
//! ```
//!
//! ```no_run
//! use aerie_adapter_api::{
//!     parse_config, Adapter, AdapterError, BackupInfo, HostContext, Sink, Source, StoredBackup,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     endpoint: String,
//! }
//!
//! pub struct Tape {
//!     endpoint: String,
//! }
//!
//! pub struct TapeWriter { /* a connection, a buffer... */ }
//! pub struct TapeReader { /* ... */ }
//!
//! impl Adapter for Tape {
//!     const KIND: &'static str = "tape";
//!     type Sink = TapeWriter;
//!     type Source = TapeReader;
//!
//!     fn new(config: serde_json::Value, _host: &HostContext) -> Result<Self, AdapterError> {
//!         // Errors name the key: "endpoint: invalid type: integer `3`, expected a string".
//!         let config: Config = parse_config(config)?;
//!         tracing::info!(endpoint = %config.endpoint, "tape adapter ready"); // reaches the host's log
//!         Ok(Tape { endpoint: config.endpoint })
//!     }
//!     fn begin_backup(&self, server: &str, backup: &str) -> Result<TapeWriter, AdapterError> {
//!         todo!("start writing {server}/{backup} to {}", self.endpoint)
//!     }
//!     fn open(&self, _server: &str, _backup: &str, _offset: u64) -> Result<TapeReader, AdapterError> {
//!         todo!()
//!     }
//!     fn stat(&self, _server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
//!         Err(AdapterError::not_found(format!("no backup {backup}")))
//!     }
//!     fn list(&self, _server: &str) -> Result<Vec<BackupInfo>, AdapterError> { Ok(vec![]) }
//!     fn delete(&self, _server: &str, _backup: &str) -> Result<(), AdapterError> { todo!() }
//!     fn discard_incomplete(&self, _server: &str, _backup: &str) -> Result<(), AdapterError> {
//!         Ok(())
//!     }
//! }
//!
//! impl Sink for TapeWriter {
//!     fn write(&mut self, _bytes: &[u8]) -> Result<(), AdapterError> { todo!() }
//!     fn finish(self, _sha1: &str, _size: u64) -> Result<StoredBackup, AdapterError> { todo!() }
//!     fn abort(self) -> Result<(), AdapterError> { todo!() }
//! }
//!
//! impl Source for TapeReader {
//!     fn read(&mut self, _buf: &mut [u8]) -> Result<usize, AdapterError> { todo!() }
//! }
//!
//! aerie_adapter_api::export_adapter!(Tape);
//! ```
//!
//! Then name it in the operator's `plugins.yml`:
//!
//! ```yaml
//! adapters:
//!   - name: tape            # what the Panel's `adapter` field selects
//!     library: /usr/lib/aerie/libmy_tape_adapter.so
//!     config: { endpoint: "tape0" }
//! ```
//!
//! # The contract
//!
//! - The host calls every method from a blocking thread, one sink per backup, and always
//!   ends a sink with exactly one of [`Sink::finish`] or [`Sink::abort`]. A backup must not
//!   be visible under its final name before `finish` returns, and `abort` must leave
//!   nothing behind; a sink dropped without either (a host bug, or a crash of the host's
//!   job) should discard itself in `Drop`. [`StoredBackup::parts`] may be empty when the
//!   storage kept the archive as one object.
//! - Calls are guarded: a panic in an adapter becomes an error for that call, not a dead
//!   daemon. Do not build adapters with `panic = "abort"`.
//! - Log with `tracing`: your crate's events (and others' at WARN and above) are forwarded to
//!   the daemon's log. Threads you spawn yourself log through the first instance's logger.
//! - An adapter that needs async I/O owns its own runtime (e.g. a tokio runtime created in
//!   [`Adapter::new`]); the host's runtime never crosses the boundary.
//! - Versioning: an adapter built against `aerie-adapter-api` 1.y loads in any aerie built
//!   against 1.x with x ≤ y.
#![allow(non_local_definitions, non_camel_case_types)]
#![allow(clippy::unnecessary_cast)]

pub mod abi;
mod error;
mod forward;
pub mod host;
mod plugin;
mod services;
mod types;

pub use error::{AdapterError, ErrorKind};
pub use plugin::{guard, module, parse_config, Adapter, Sink, Source};
pub use services::{BackupHints, PresignedParts, Services};
pub use types::{BackupInfo, HostContext, Part, StoredBackup};

/// What [`export_adapter!`] expands to needs; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

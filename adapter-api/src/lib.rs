//! The stable boundary between the aerie backup daemon and its storage adapters.
//!
//! An adapter is a shared library (`cdylib`) that stores backup archives somewhere: a local
//! directory, an S3 bucket, anything. The daemon loads it at start-up from the path an
//! operator gives in the plugins file, checks that it was built against a compatible version
//! of this crate (abi_stable verifies every type's layout), and then streams archives into it
//! and reads them back. Only this crate knows about the ABI; an adapter is ordinary Rust.
//!
//! **Writing an adapter? Start with the [guide]**: the whole contract (the lifecycle of every
//! method, what the host guarantees and expects, error kinds and what the host does with
//! each, logging, threads, panics, versioning) with a complete adapter that compiles and
//! runs.
//!
//! The modules: [`guide`] (documentation only); the traits an adapter implements
//! ([`Adapter`], [`Sink`], [`Source`]) and [`export_adapter!`] at the root; [`host`], what
//! the daemon (and an adapter's own tests) load and call adapters with; [`abi`], the types
//! that cross the boundary, which adapters never touch.
#![allow(non_local_definitions, non_camel_case_types)]
#![allow(clippy::unnecessary_cast)]

pub mod abi;
mod error;
mod forward;
pub mod guide;
#[cfg(feature = "helpers")]
pub mod helpers;
mod hint_board;
pub mod host;
mod panic;
mod plugin;
mod services;
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;

pub use error::{AdapterError, ErrorKind};
pub use plugin::{extensions, guard, module, parse_config, Adapter, Sink, Source};
pub use services::{BackupHints, PresignedParts, Services};
pub use types::{BackupInfo, HostContext, Part, StoredBackup};

/// What [`export_adapter!`] expands to needs; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

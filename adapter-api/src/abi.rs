//! The types that cross the library boundary: the root module every adapter exports and the
//! FFI-safe trait objects behind it. Adapter authors never touch these directly: they
//! implement the plain traits in [`crate::Adapter`] and its kin, and hosts use the wrappers in
//! [`crate::host`].
//!
//! Evolution: the root module and each trait may only grow at the end (after the
//! `last_prefix_field` marker) and new trait methods need default bodies; the plain
//! `#[repr(C)]` structs here never change within a major version.
//!
//! One more rule, learned the hard way: abi_stable rejects a library whose prefix types have
//! *fewer* fields than the host's, and it checks every type reachable from the root module.
//! So nothing reachable from [`AdapterModule`] may grow once adapters exist, or a newer host
//! would refuse every adapter built before it. What 1.1 adds ([`HostServices`], the way to
//! pass backup hints) lives in a second, optional export, [`AdapterExtensions`], found by
//! its own symbol and checked on its own: a 1.0 adapter simply lacks it.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    StableAbi,
};

use crate::error::AdapterError;

/// How much a log line matters; the numbers follow `tracing`'s levels from ERROR (1) to
/// TRACE (5).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// Something failed.
    pub const ERROR: Self = Self(1);
    /// Something is off but work goes on.
    pub const WARN: Self = Self(2);
    /// Normal progress an operator wants to see.
    pub const INFO: Self = Self(3);
    /// Detail for debugging.
    pub const DEBUG: Self = Self(4);
    /// Everything.
    pub const TRACE: Self = Self(5);
}

/// The host's side of logging: the adapter sends its log lines here, so they land in the
/// daemon's log rather than in the library's own copy of `tracing`.
#[sabi_trait]
pub trait HostLogger: Send + Sync {
    /// The most verbose level the host will keep; finer events need not be sent.
    fn max_level(&self) -> LogLevel;

    /// One event: its level, its target (the adapter's module path) and its formatted text.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);
}

/// A shared, FFI-safe handle to the host's logger.
pub type HostLoggerBox = HostLogger_TO<'static, RArc<()>>;

/// One part of a multipart upload, as the storage acknowledged it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The ETag the storage returned, verbatim (quotes included).
    pub etag: RString,
    /// Bytes in this part.
    pub size: u64,
}

/// What a finished backup became in storage.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct StoredBackupAbi {
    /// Where the backup lives, in the adapter's terms (a path, an object key).
    pub key: RString,
    /// Bytes stored.
    pub size: u64,
    /// The parts uploaded, when the storage works in parts.
    pub parts: RVec<UploadedPart>,
    /// True when the upload is left for the Panel to complete with `parts` (Wings' S3 mode);
    /// false when the adapter completed it itself.
    pub panel_completes: bool,
}

/// What the storage knows about one stored backup.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct BackupInfoAbi {
    /// The backup's uuid.
    pub backup: RString,
    /// The server it belongs to, when the storage records it.
    pub server: ROption<RString>,
    /// Where the backup lives, in the adapter's terms.
    pub key: RString,
    /// Size of the archive in bytes.
    pub size: u64,
    /// When it was stored, in seconds since the Unix epoch.
    pub created_unix: i64,
    /// Its SHA-1, hex, when the storage records it.
    pub sha1: ROption<RString>,
}

/// Receives the bytes of one archive as it is made.
#[sabi_trait]
pub trait BackupSink: Send {
    /// Appends bytes to the archive.
    fn write(&mut self, bytes: RSlice<'_, u8>) -> RResult<(), AdapterError>;

    /// Makes the archive durable and visible under its final name; `sha1` (hex) and `size`
    /// describe the whole archive.
    fn finish(self, sha1: RStr<'_>, size: u64) -> RResult<StoredBackupAbi, AdapterError>;

    /// Throws the archive away, leaving nothing behind.
    #[sabi(last_prefix_field)]
    fn abort(self) -> RResult<(), AdapterError>;
}

/// An owned sink.
pub type BackupSinkBox = BackupSink_TO<'static, RBox<()>>;

/// Gives back the bytes of a stored archive.
#[sabi_trait]
pub trait BackupSource: Send {
    /// Fills `buf` with the next bytes; 0 means the end.
    #[sabi(last_prefix_field)]
    fn read(&mut self, buf: RSliceMut<'_, u8>) -> RResult<usize, AdapterError>;
}

/// An owned source.
pub type BackupSourceBox = BackupSource_TO<'static, RBox<()>>;

/// One configured place where backups live.
#[sabi_trait]
pub trait StorageAdapter: Send + Sync {
    /// Starts storing a new backup of `server` named `backup`.
    fn begin_backup(
        &self,
        server: RStr<'_>,
        backup: RStr<'_>,
    ) -> RResult<BackupSinkBox, AdapterError>;

    /// Opens a stored backup for reading, from byte `offset` on.
    fn open(
        &self,
        server: RStr<'_>,
        backup: RStr<'_>,
        offset: u64,
    ) -> RResult<BackupSourceBox, AdapterError>;

    /// Describes a stored backup.
    fn stat(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<BackupInfoAbi, AdapterError>;

    /// Lists the stored backups of `server` (all of them when the storage does not record the
    /// server).
    fn list(&self, server: RStr<'_>) -> RResult<RVec<BackupInfoAbi>, AdapterError>;

    /// Deletes a stored backup.
    fn delete(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<(), AdapterError>;

    /// Removes whatever a backup that never finished may have left (a temporary file, an
    /// incomplete upload); called at start-up for backups that were running at a crash.
    #[sabi(last_prefix_field)]
    fn discard_incomplete(&self, server: RStr<'_>, backup: RStr<'_>) -> RResult<(), AdapterError>;
}

/// An owned adapter instance.
pub type StorageAdapterBox = StorageAdapter_TO<'static, RBox<()>>;

/// The root module: the one thing an adapter library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AdapterModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct AdapterModule {
    /// The adapter's kind, e.g. `"wings"` or `"s3"` (for logs; requests select adapters by
    /// the name the operator gives them).
    pub kind: extern "C" fn() -> RStr<'static>,

    /// Builds an adapter from its config (JSON text), what the host tells it (JSON text:
    /// `backup_directory`, `aerie_version`) and the host's logger.
    #[sabi(last_prefix_field)]
    pub new_adapter: extern "C" fn(
        config_json: RStr<'_>,
        host_json: RStr<'_>,
        logger: HostLoggerBox,
    ) -> RResult<StorageAdapterBox, AdapterError>,
}

/// The presigned upload URLs the Panel handed out for one backup (wings-protocol.md §1.5).
/// Added in 1.1.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PresignedPartsAbi {
    /// One presigned UploadPart URL per part, part 1 first.
    pub urls: RVec<RString>,
    /// The part size the Panel planned with (its `BACKUP_MAX_PART_SIZE`).
    pub part_size: u64,
}

/// What the host does for an adapter beyond calling it (added in 1.1), handed over at
/// construction through [`AdapterExtensions`].
#[sabi_trait]
pub trait HostServices: Send + Sync {
    /// True when the node has a Panel to talk to (`remote` is configured).
    fn panel_configured(&self) -> bool;

    /// What the host knows about `backup` as JSON ([`crate::BackupHints`]), waiting until
    /// the host knows it; `{}` when nothing is posted for `backup` (it is posted from
    /// before its `begin_backup` until its sink is finished or aborted).
    fn backup_hints(&self, backup: RStr<'_>) -> RString;

    /// Asks the Panel for presigned UploadPart URLs for backup `backup`
    /// (`GET <remote>/api/remote/backups/<backup>?size=<size>`, with the node's token).
    /// Blocks; call it only from within a call the host made into the adapter.
    #[sabi(last_prefix_field)]
    fn presigned_upload_parts(
        &self,
        backup: RStr<'_>,
        size: u64,
    ) -> RResult<PresignedPartsAbi, AdapterError>;
}

/// A shared, FFI-safe handle to the host's services.
pub type HostServicesBox = HostServices_TO<'static, RArc<()>>;

/// The extension module (added in 1.1): what an adapter offers beyond the root module,
/// exported under [`EXTENSIONS_SYMBOL`] by [`crate::export_adapter!`]. A later minor version
/// adds fields at the end; a host reads them through accessors that answer `None` for an
/// adapter built before them.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AdapterExtensions_Ref)))]
#[sabi(missing_field(option))]
pub struct AdapterExtensions {
    /// `new_adapter` with the host's services as a fourth argument.
    #[sabi(last_prefix_field)]
    pub new_adapter_with_services: extern "C" fn(
        config_json: RStr<'_>,
        host_json: RStr<'_>,
        logger: HostLoggerBox,
        services: HostServicesBox,
    ) -> RResult<StorageAdapterBox, AdapterError>,
}

/// The symbol (NUL-terminated) of the function that returns an adapter's
/// [`ExtensionsExport`]. Its name carries the extension generation: a change that cannot be
/// made by adding fields at the end would get a new symbol, never a changed one.
pub const EXTENSIONS_SYMBOL: &[u8] = b"aerie_adapter_extensions_v1\0";

/// What the function under [`EXTENSIONS_SYMBOL`] returns: the module and the layout the
/// adapter was built with, so the host can check it exactly as abi_stable checks the root
/// module. Fixed forever: two pointers.
#[repr(C)]
pub struct ExtensionsExport {
    /// The layout of [`AdapterExtensions_Ref`] as the adapter's copy of this crate sees it.
    pub layout: &'static abi_stable::type_layout::TypeLayout,
    /// The module itself.
    pub module: AdapterExtensions_Ref,
}

impl RootModule for AdapterModule_Ref {
    declare_root_module_statics! {AdapterModule_Ref}
    const BASE_NAME: &'static str = "aerie_adapter";
    const NAME: &'static str = "aerie adapter";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

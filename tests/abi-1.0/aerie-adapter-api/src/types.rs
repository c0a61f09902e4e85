//! Plain Rust descriptions of stored backups, shared by adapters and the host; they are
//! converted to and from their `#[repr(C)]` twins in [`crate::abi`] at the boundary.

use abi_stable::std_types::{ROption, RString, RVec};
use serde::Deserialize;

use crate::abi::{BackupInfoAbi, StoredBackupAbi, UploadedPart};

/// What the host tells every adapter when it creates one, so an adapter can pick defaults
/// that match the daemon's own configuration.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct HostContext {
    /// The host's `system.backup_directory`: where local backups live unless configured
    /// otherwise.
    pub backup_directory: std::path::PathBuf,
    /// The daemon's version, for metadata an adapter writes beside a backup.
    pub aerie_version: String,
}

/// What a finished backup became in storage, as [`crate::Sink::finish`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBackup {
    /// Where the backup lives, in the adapter's terms (a path, an object key).
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// The parts uploaded, when the storage works in parts.
    pub parts: Vec<Part>,
    /// True when the Panel is to complete the upload with `parts`; false when the adapter
    /// completed it (both bundled adapters do).
    pub panel_completes: bool,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1-based part number.
    pub number: u32,
    /// The storage's ETag, verbatim.
    pub etag: String,
    /// Bytes in the part.
    pub size: u64,
}

/// What the storage knows about one stored backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The backup's uuid.
    pub backup: String,
    /// Its server, when the storage records it.
    pub server: Option<String>,
    /// Where it lives, in the adapter's terms.
    pub key: String,
    /// Archive size in bytes.
    pub size: u64,
    /// When it was stored, seconds since the Unix epoch.
    pub created_unix: i64,
    /// Its SHA-1 (hex), when the storage records it.
    pub sha1: Option<String>,
}

impl From<StoredBackup> for StoredBackupAbi {
    fn from(s: StoredBackup) -> Self {
        Self {
            key: s.key.into(),
            size: s.size,
            parts: s
                .parts
                .into_iter()
                .map(|p| UploadedPart {
                    part_number: p.number,
                    etag: p.etag.into(),
                    size: p.size,
                })
                .collect::<RVec<_>>(),
            panel_completes: s.panel_completes,
        }
    }
}

impl From<StoredBackupAbi> for StoredBackup {
    fn from(s: StoredBackupAbi) -> Self {
        Self {
            key: s.key.into_string(),
            size: s.size,
            parts: s
                .parts
                .into_iter()
                .map(|p| Part {
                    number: p.part_number,
                    etag: p.etag.into_string(),
                    size: p.size,
                })
                .collect(),
            panel_completes: s.panel_completes,
        }
    }
}

impl From<BackupInfo> for BackupInfoAbi {
    fn from(i: BackupInfo) -> Self {
        Self {
            backup: i.backup.into(),
            server: i.server.map(RString::from).into(),
            key: i.key.into(),
            size: i.size,
            created_unix: i.created_unix,
            sha1: i.sha1.map(RString::from).into(),
        }
    }
}

impl From<BackupInfoAbi> for BackupInfo {
    fn from(i: BackupInfoAbi) -> Self {
        Self {
            backup: i.backup.into_string(),
            server: Option::from(i.server).map(RString::into_string),
            key: i.key.into_string(),
            size: i.size,
            created_unix: i.created_unix,
            sha1: ROption::into_option(i.sha1).map(RString::into_string),
        }
    }
}

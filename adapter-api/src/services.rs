//! What the host offers an adapter beyond storing bytes (added in 1.1): a way to ask the
//! Panel for presigned upload URLs, and hints about a backup before it starts. Both reach
//! the adapter through the host's services object, handed over by the extension module
//! (see [`crate::abi`] for why not through the root module).

use abi_stable::std_types::RStr;
use serde::{Deserialize, Serialize};

use crate::abi::{HostServicesBox, PresignedPartsAbi};
use crate::error::AdapterError;

/// What the host knows about a backup before its archive is made, from
/// [`Services::backup_hints`]. Crosses the boundary as JSON, so fields can be
/// added without changing the ABI; unknown ones are ignored, missing ones are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BackupHints {
    /// An upper bound of the archive's size in bytes: the walk before the backup's total
    /// of file contents plus tar's and gzip's worst-case overhead. Files that grow or appear
    /// between that walk and the archive can still push the archive past it.
    pub size_upper_bound: Option<u64>,
}

impl BackupHints {
    /// Hints with `size_upper_bound` set.
    pub fn with_size_upper_bound(bound: u64) -> Self {
        Self {
            size_upper_bound: Some(bound),
        }
    }
}

/// The Panel's answer to a request for presigned upload URLs (wings-protocol.md §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedParts {
    /// One presigned UploadPart URL per part, part 1 first.
    pub urls: Vec<String>,
    /// The part size the Panel planned with (its `BACKUP_MAX_PART_SIZE`); S3 accepts any
    /// size from 5 MiB per part (all but the last) whatever this says.
    pub part_size: u64,
}

impl From<PresignedPartsAbi> for PresignedParts {
    fn from(p: PresignedPartsAbi) -> Self {
        Self {
            urls: p.urls.into_iter().map(|u| u.into_string()).collect(),
            part_size: p.part_size,
        }
    }
}

impl From<PresignedParts> for PresignedPartsAbi {
    fn from(p: PresignedParts) -> Self {
        Self {
            urls: p.urls.into_iter().map(Into::into).collect(),
            part_size: p.part_size,
        }
    }
}

/// The host's services as an adapter sees them, given to [`crate::Adapter::new_with_services`].
/// Cheap to clone; keep a clone for later calls. A host built against 1.0 offers none: every
/// method then says so.
#[derive(Clone, Default)]
pub struct Services {
    inner: Option<std::sync::Arc<HostServicesBox>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("offered", &self.inner.is_some())
            .finish()
    }
}

impl Services {
    /// Services backed by the host's object.
    pub(crate) fn from_host(inner: HostServicesBox) -> Self {
        Self {
            inner: Some(std::sync::Arc::new(inner)),
        }
    }

    /// What the host knows about `backup` before its archive is made ([`BackupHints`]).
    /// Ask from within a call the host makes for that backup (`begin_backup`, a sink's
    /// `write` or `finish`). The host measures the tree beside the archive, so this may wait
    /// for that walk, which reads no file and ends long before the archive does. Empty
    /// under an aerie built before 1.1, and outside the backup.
    pub fn backup_hints(&self, backup: &str) -> BackupHints {
        self.inner
            .as_ref()
            .and_then(|s| {
                serde_json::from_str(s.backup_hints(RStr::from_str(backup)).as_str()).ok()
            })
            .unwrap_or_default()
    }

    /// True when the host handed over its services: it was built against
    /// aerie-adapter-api 1.1 or later, and created this adapter with them.
    pub fn offered(&self) -> bool {
        self.inner.is_some()
    }

    /// True when the node has a Panel to talk to (`remote` is configured).
    pub fn panel_configured(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.panel_configured())
    }

    /// Asks the Panel for presigned UploadPart URLs for `backup`, `size` bytes' worth: the
    /// Panel starts the multipart upload and answers `ceil(size / part_size)` URLs. Blocks;
    /// call it from within a call the host made (`begin_backup`, `write`, `finish`),
    /// never from a thread of the adapter's own.
    pub fn presigned_upload_parts(
        &self,
        backup: &str,
        size: u64,
    ) -> Result<PresignedParts, AdapterError> {
        let Some(inner) = &self.inner else {
            return Err(AdapterError::other(
                "this aerie offers no Panel services (it was built before aerie-adapter-api 1.1)",
            ));
        };
        inner
            .presigned_upload_parts(RStr::from_str(backup), size)
            .into_result()
            .map(Into::into)
    }
}

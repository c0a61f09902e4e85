//! What a restore may write: the optional size limit (`system.backups.restore_max_bytes`)
//! and the free space of the server's filesystem, looked at as the restore goes so that it
//! stops with a clear error before the disk is full.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use super::sys::FsSpace;
use super::ExtractError;

/// Space kept free on the server's filesystem, at least: a full disk stops the game server
/// and every other on the node, so a restore leaves this much (or [`RESERVE_PERCENT`]).
const MIN_RESERVE_BYTES: u64 = 256 * 1024 * 1024;

/// ...or this share of the filesystem, when more: ext4 itself reserves 5% for root, which
/// the daemon (root) may use; 1% keeps room for logs and the game's own writes.
const RESERVE_PERCENT: u64 = 1;

/// ...but never more than this share of a small filesystem (a test mount, a tiny VM), which
/// could otherwise take no restore at all.
const MAX_RESERVE_PERCENT: u64 = 25;

/// The longest stretch written between two looks at the free space. Between looks the
/// restore writes at most half the space left above the reserve, so it cannot reach the
/// reserve alone; this only spaces out the `fstatvfs` calls on a roomy disk.
const MAX_BYTES_BETWEEN_CHECKS: u64 = 64 * 1024 * 1024;

/// What every entry is counted as for the free-space checks (not for the size limit): its
/// inode and directory slot, about one filesystem block, so an archive of a million empty
/// files is watched too.
pub(super) const ENTRY_SPACE_BYTES: u64 = 4096;

/// Asks the free space of the filesystem holding the server root (given as a descriptor):
/// `fstatvfs`, or a simulated disk in tests.
#[derive(Clone)]
pub struct SpaceProbe(pub Arc<dyn Fn(BorrowedFd<'_>) -> io::Result<FsSpace> + Send + Sync>);

impl SpaceProbe {
    /// The real filesystem's space.
    pub fn system() -> Self {
        Self(Arc::new(super::sys::fs_space))
    }
}

impl Default for SpaceProbe {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for SpaceProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaceProbe")
    }
}

/// Space kept free on a filesystem of `total` bytes.
pub(super) fn reserve_for(total: u64) -> u64 {
    (total / 100 * RESERVE_PERCENT)
        .max(MIN_RESERVE_BYTES)
        .min(total / 100 * MAX_RESERVE_PERCENT)
}

/// Counts what a restore writes against the size limit and the free space.
pub(super) struct Budget {
    limit: Option<u64>,
    written: u64,
    probe: SpaceProbe,
    /// Bytes that may still be written before the next look at the free space.
    until_check: u64,
}

impl Budget {
    /// A budget of `limit` bytes of file content (none when `None`), checking free space
    /// with `probe` (first at the first charge).
    pub(super) fn new(limit: Option<u64>, probe: SpaceProbe) -> Self {
        Self {
            limit,
            written: 0,
            probe,
            until_check: 0,
        }
    }

    /// Accounts for `bytes` of file content about to be written in the filesystem of
    /// `root`: fails when that would pass the limit or the free-space reserve.
    pub(super) fn charge_content(
        &mut self,
        root: BorrowedFd<'_>,
        bytes: u64,
    ) -> Result<(), ExtractError> {
        if let Some(limit) = self.limit {
            if self.written.saturating_add(bytes) > limit {
                return Err(ExtractError::TooLarge { limit });
            }
        }
        self.written += bytes;
        self.charge_space(root, bytes)
    }

    /// Accounts for `bytes` about to be used on the filesystem of `root` (content, or an
    /// entry's inode), looking at the free space when the last look's allowance is spent.
    pub(super) fn charge_space(
        &mut self,
        root: BorrowedFd<'_>,
        bytes: u64,
    ) -> Result<(), ExtractError> {
        if bytes < self.until_check {
            self.until_check -= bytes;
            return Ok(());
        }
        let space = (self.probe.0)(root).map_err(ExtractError::SpaceUnknown)?;
        let reserve = reserve_for(space.total);
        let above = space.available.saturating_sub(reserve);
        if above <= bytes {
            return Err(ExtractError::DiskFull {
                available: space.available,
                reserve,
            });
        }
        self.until_check = ((above - bytes) / 2).min(MAX_BYTES_BETWEEN_CHECKS);
        Ok(())
    }
}

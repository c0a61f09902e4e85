//! Directories on the way to an entry: opened one component at a time from the root's
//! descriptor without following symlinks, a bounded cache of those descriptors, and the
//! directory entries whose mode and mtime wait until their contents are written.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::sys::{chmod_fd, chown_fd, lstat_at, mkdirat, open_dir_nofollow, set_times_fd};
use super::{io_error, refused, shown, ExtractError, Mtime};

/// Mode of a parent directory the archive does not list (Wings' archives list none).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// How many open directory descriptors are kept: those of the deepest directories of the
/// last path used, enough for the siblings and children that follow it in an archive,
/// whatever the tree's depth. Far below any descriptor limit (1024 by default).
pub(super) const MAX_CACHED_DIRS: usize = 64;

/// What to do about a missing directory on the way to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    Create,
    Fail,
}

/// Why a directory on the way to an entry could not be opened.
#[derive(Debug)]
enum Failure {
    Symlink,
    NotDirectory,
    Missing,
    Io(io::Error),
}

/// A [`Failure`] at the `depth`-th component of a path.
#[derive(Debug)]
pub(super) struct ResolveError {
    depth: usize,
    failure: Failure,
}

impl ResolveError {
    /// An error naming `entry` and the failing prefix of `parts`, introduced by `subject`.
    pub(super) fn into_extract_error(
        self,
        entry: &str,
        parts: &[CString],
        subject: impl FnOnce(String) -> String,
    ) -> ExtractError {
        let subject = subject(joined(&parts[..=self.depth]));
        match self.failure {
            Failure::Symlink => refused(entry, format!("{subject} is a symlink")),
            Failure::NotDirectory => refused(entry, format!("{subject} is not a directory")),
            Failure::Missing => refused(entry, format!("{subject} does not exist")),
            Failure::Io(source) => ExtractError::Io {
                entry: shown(entry.as_bytes()),
                action: format!("cannot open {subject}"),
                source,
            },
        }
    }
}

/// `parts` joined with `/`, shortened for a message.
fn joined(parts: &[CString]) -> String {
    let path = parts
        .iter()
        .map(|part| part.to_bytes())
        .collect::<Vec<_>>()
        .join(&b'/');
    shown(&path)
}

/// Directory descriptors along the last path used, reused by the next entries that share a
/// prefix with it (archives list siblings together).
///
/// Only the deepest [`MAX_CACHED_DIRS`] directories of that path stay open: walking down a
/// tree of any depth opens each directory once, and an entry that leaves the cached
/// window reopens its path from the root. Nothing here recurses.
///
/// Every descriptor was opened relative to its parent's without following a symlink, so it
/// is a directory inside the root. The cache stays true to the tree because a restore
/// never removes or replaces a directory; were another process to move one meanwhile, the
/// entries would land in the moved directory, never through a symlink.
pub(super) struct DirCache {
    root: OwnedFd,
    /// The names of the last path opened, from the root down (bounded by the name limit).
    path: Vec<CString>,
    /// Descriptors of the deepest directories of `path`; the first is at depth `first`.
    open: VecDeque<OwnedFd>,
    /// How many components of `path` lie above the first cached descriptor.
    first: usize,
    owner: Option<(u32, u32)>,
}

impl DirCache {
    /// A cache over the root's descriptor; directories it creates are given to `owner`.
    pub(super) fn new(root: OwnedFd, owner: Option<(u32, u32)>) -> Self {
        Self {
            root,
            path: Vec::new(),
            open: VecDeque::new(),
            first: 0,
            owner,
        }
    }

    /// The server root.
    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the directory `parts` under the root, one component at a time without
    /// following symlinks, creating missing ones when told to.
    pub(super) fn open(
        &mut self,
        parts: &[CString],
        missing: Missing,
    ) -> Result<BorrowedFd<'_>, ResolveError> {
        let common = self
            .path
            .iter()
            .zip(parts)
            .take_while(|(cached, part)| cached == part)
            .count();
        if parts.is_empty() {
            return Ok(self.root.as_fd());
        }
        if common == parts.len() && common > self.first {
            // An ancestor of the last path (or that path): open already, keep its children.
            return Ok(self.open[common - self.first - 1].as_fd());
        }
        let start = if common > self.first {
            // The common prefix ends inside the cached window: keep it.
            self.open.truncate(common - self.first);
            common
        } else {
            // It ends above: start again from the root.
            self.open.clear();
            self.first = 0;
            0
        };
        self.path.truncate(start);
        for (depth, part) in parts.iter().enumerate().skip(start) {
            let base = self.open.back().map_or(self.root.as_fd(), AsFd::as_fd);
            let fd = open_child_dir(base, part, missing, self.owner)
                .map_err(|failure| ResolveError { depth, failure })?;
            self.open.push_back(fd);
            self.path.push(part.clone());
            if self.open.len() > MAX_CACHED_DIRS {
                self.open.pop_front();
                self.first += 1;
            }
        }
        Ok(self.open.back().map_or(self.root.as_fd(), AsFd::as_fd))
    }
}

/// Opens the directory `name` in `base` without following a symlink, creating it (mode
/// 0755, owned by `owner`) if it is missing and `missing` says so.
fn open_child_dir(
    base: BorrowedFd<'_>,
    name: &CStr,
    missing: Missing,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, Failure> {
    let classify = |err: io::Error| match err.raw_os_error() {
        Some(libc::ENOENT) => Failure::Missing,
        Some(libc::ELOOP | libc::ENOTDIR) => match lstat_at(base, name) {
            Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFLNK => Failure::Symlink,
            Ok(stat) if stat.st_mode & libc::S_IFMT != libc::S_IFDIR => Failure::NotDirectory,
            _ => Failure::Io(err),
        },
        _ => Failure::Io(err),
    };
    let err = match open_dir_nofollow(base, name) {
        Ok(fd) => return Ok(fd),
        Err(err) => err,
    };
    if err.raw_os_error() != Some(libc::ENOENT) || missing == Missing::Fail {
        return Err(classify(err));
    }
    let created = match mkdirat(base, name, IMPLICIT_DIR_MODE) {
        Ok(()) => true,
        // Made meanwhile by someone else: use it, as any directory that was already there.
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => false,
        Err(err) => return Err(Failure::Io(err)),
    };
    let fd = open_dir_nofollow(base, name).map_err(classify)?;
    if created {
        // On the descriptor: the mode regardless of the umask, and no race on the name.
        chown_fd(fd.as_fd(), owner).map_err(Failure::Io)?;
        chmod_fd(fd.as_fd(), IMPLICIT_DIR_MODE).map_err(Failure::Io)?;
    }
    Ok(fd)
}

/// A directory entry's mode and mtime, applied once its contents are written.
#[derive(Debug, Clone, Copy)]
struct PendingDir {
    /// How many components its path has: it is `PendingDirs::path[..depth]`.
    depth: usize,
    mode: u32,
    mtime: Mtime,
}

/// Directory entries whose mode and mtime wait until the archive leaves them.
///
/// Archives list a directory's contents right after it (GNU tar, Wings, this daemon), so a
/// directory's mode and mtime are applied as soon as an entry outside it comes (writing
/// its contents would change its mtime, and a read-only mode could refuse them), and the
/// rest at the end. Only the directories along the current path wait: they are prefixes of
/// one path, kept once, so memory is bounded by the name limit whatever the archive holds;
/// an entry repeating the directory in wait replaces its mode and mtime. An archive that
/// comes back into a directory it left gets that directory's mtime bumped by the new entry,
/// as with GNU tar's own extraction of such an archive.
#[derive(Default)]
pub(super) struct PendingDirs {
    /// The deepest waiting directory's path; every waiting directory is a prefix of it.
    path: Vec<CString>,
    /// The waiting directories, shallowest first.
    stack: Vec<PendingDir>,
}

impl PendingDirs {
    /// Applies every waiting directory that `parts` (the next entry's path) is not inside.
    pub(super) fn leave_for(
        &mut self,
        parts: &[CString],
        dirs: &mut DirCache,
    ) -> Result<(), ExtractError> {
        let common = self
            .path
            .iter()
            .zip(parts)
            .take_while(|(waiting, part)| waiting == part)
            .count();
        while let Some(dir) = self.stack.last().copied() {
            if dir.depth <= common {
                break;
            }
            self.stack.pop();
            self.apply(dir, dirs)?;
        }
        self.path
            .truncate(self.stack.last().map_or(0, |dir| dir.depth));
        Ok(())
    }

    /// Makes the directory `parts` wait for its mode and mtime; [`Self::leave_for`] must have
    /// been called with `parts` before.
    pub(super) fn wait(&mut self, parts: &[CString], mode: u32, mtime: Mtime) {
        let dir = PendingDir {
            depth: parts.len(),
            mode,
            mtime,
        };
        match self.stack.last_mut() {
            // The same directory again: the later entry wins, as when extracting with tar.
            Some(top) if top.depth == parts.len() => *top = dir,
            _ => {
                self.path.clear();
                self.path.extend_from_slice(parts);
                self.stack.push(dir);
            }
        }
    }

    /// Applies every directory still waiting, deepest first.
    pub(super) fn finish(&mut self, dirs: &mut DirCache) -> Result<(), ExtractError> {
        self.leave_for(&[], dirs)
    }

    /// How many directories wait, for tests of the memory bound.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.stack.len()
    }

    fn apply(&self, dir: PendingDir, dirs: &mut DirCache) -> Result<(), ExtractError> {
        let parts = &self.path[..dir.depth];
        let name = joined(parts);
        let fd = dirs
            .open(parts, Missing::Fail)
            .map_err(|err| err.into_extract_error(&name, parts, |prefix| format!("{prefix:?}")))?;
        chmod_fd(fd, dir.mode).map_err(|source| io_error(&name, "cannot set its mode", source))?;
        set_times_fd(fd, dir.mtime)
            .map_err(|source| io_error(&name, "cannot set its mtime", source))
    }
}

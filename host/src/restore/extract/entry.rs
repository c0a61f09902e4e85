//! Placing one archive entry in the server directory, by the rules the parent module's
//! documentation lists: the parents opened through descriptors, the final component
//! created exclusively or replaced (never written through), links checked, modes, owners
//! and mtimes applied, content counted against the budget.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::budget::{Budget, ENTRY_SPACE_BYTES};
use super::dirs::{DirCache, Missing, PendingDirs};
use super::sys::{
    chmod_fd, chown_at_nofollow, chown_fd, linkat, lstat_at, openat, set_times_at_nofollow,
    set_times_fd, symlinkat, unlinkat,
};
use super::tar_stream::Entry;
use super::*;

/// One restore's state while it places entries: the open directories, what is owed to
/// them at the end, the space budget and the counts.
pub(super) struct Extractor<'a> {
    pub(super) dirs: DirCache,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) progress: &'a ExtractProgress,
    pub(super) cancel: &'a CancellationToken,
    pub(super) pending: PendingDirs,
    pub(super) budget: Budget,
    pub(super) summary: ExtractSummary,
    pub(super) buffer: Vec<u8>,
}

impl Extractor<'_> {
    /// Restores one entry and returns its name as shown in messages.
    pub(super) fn restore_entry<R: Read>(
        &mut self,
        entry: Entry,
        archive: &mut TarReader<R>,
        on_entry: &mut dyn FnMut(&Path),
    ) -> Result<String, ExtractError> {
        let name = shown(&entry.path);
        let kind = entry.header.entry_type();
        let parts = split_relative(&entry.path).map_err(|reason| refused(&name, reason))?;
        // Old archives mark directories with a trailing slash on a regular entry.
        let is_dir = kind.is_dir() || (kind.is_file() && entry.path.ends_with(b"/"));
        if parts.is_empty() {
            if is_dir {
                return Ok(name);
            }
            return Err(refused(&name, "it names the server directory itself"));
        }
        let restored = is_dir
            || matches!(
                kind,
                tar::EntryType::Regular
                    | tar::EntryType::Continuous
                    | tar::EntryType::GNUSparse
                    | tar::EntryType::Symlink
                    | tar::EntryType::Link
            );
        if !restored {
            tracing::warn!(entry = %name, kind = ?kind, "skipping an entry of a type a restore does not create");
            self.summary.skipped += 1;
            return Ok(name);
        }
        self.budget
            .charge_space(self.dirs.root(), ENTRY_SPACE_BYTES)?;
        self.pending.leave_for(&parts, &mut self.dirs)?;
        let relative: PathBuf = parts
            .iter()
            .map(|part| Path::new(std::ffi::OsStr::from_bytes(part.to_bytes())))
            .collect();
        on_entry(&relative);
        let mode = entry
            .header
            .mode()
            .map_err(|source| archive_error(&name, source))?
            & KEPT_MODE_BITS;
        let mtime = match entry.pax_mtime {
            Some(mtime) => mtime,
            None => {
                let secs = entry
                    .header
                    .mtime()
                    .map_err(|source| archive_error(&name, source))?;
                Mtime {
                    secs: i64::try_from(secs).unwrap_or(i64::MAX),
                    nanos: 0,
                }
            }
        };
        if is_dir {
            self.restore_dir(&name, &parts, mode, mtime)?;
        } else if kind.is_symlink() {
            self.restore_symlink(&name, &parts, link_target(&entry, &name)?, mtime)?;
        } else if kind.is_hard_link() {
            self.restore_hard_link(&name, &parts, &link_target(&entry, &name)?)?;
        } else {
            self.restore_file(&name, &parts, &entry, archive, mode, mtime)?;
        }
        self.summary.entries += 1;
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(name)
    }

    fn restore_dir(
        &mut self,
        name: &str,
        parts: &[CString],
        mode: u32,
        mtime: Mtime,
    ) -> Result<(), ExtractError> {
        let (last, parents) = parts.split_last().expect("checked non-empty");
        {
            let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
                err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
            })?;
            remove_non_directory(parent, last, name, true)?;
        }
        let owner = self.owner;
        let dir = self
            .dirs
            .open(parts, Missing::Create)
            .map_err(|err| err.into_extract_error(name, parts, |prefix| format!("{prefix:?}")))?;
        chown_fd(dir, owner).map_err(|source| io_error(name, "cannot set its owner", source))?;
        self.pending.wait(parts, mode, mtime);
        Ok(())
    }

    fn restore_file<R: Read>(
        &mut self,
        name: &str,
        parts: &[CString],
        entry: &Entry,
        archive: &mut TarReader<R>,
        mode: u32,
        mtime: Mtime,
    ) -> Result<(), ExtractError> {
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let file = {
            let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
                err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
            })?;
            replacing(parent, last, name, "cannot create it", || {
                openat(
                    parent,
                    last,
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                )
            })?
        };
        let mut file = File::from(file);
        let mut data = archive.data();
        match &entry.sparse {
            None => self.copy_content(&mut data, &mut file, name, entry.size)?,
            Some(sparse) => {
                // Only the data regions are written; what lies between them stays a hole.
                for extent in &sparse.extents {
                    file.seek(SeekFrom::Start(extent.offset))
                        .map_err(|source| io_error(name, "cannot seek in it", source))?;
                    self.copy_content(&mut data, &mut file, name, extent.length)?;
                }
                file.set_len(sparse.real_size)
                    .map_err(|source| io_error(name, "cannot set its length", source))?;
            }
        }
        // Owner first: a chown may clear mode bits. Times last: writing changes them.
        chown_fd(file.as_fd(), self.owner)
            .map_err(|source| io_error(name, "cannot set its owner", source))?;
        chmod_fd(file.as_fd(), mode)
            .map_err(|source| io_error(name, "cannot set its mode", source))?;
        set_times_fd(file.as_fd(), mtime)
            .map_err(|source| io_error(name, "cannot set its mtime", source))
    }

    /// Copies `length` bytes of `content` into `file`, within the restore's budget.
    fn copy_content(
        &mut self,
        content: &mut impl Read,
        file: &mut File,
        name: &str,
        length: u64,
    ) -> Result<(), ExtractError> {
        let mut written = 0;
        let mut since_check = 0;
        while written < length {
            let wanted = usize::try_from(length - written)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            let read = match content.read(&mut self.buffer[..wanted]) {
                Ok(0) => {
                    return Err(archive_error(
                        name,
                        io::Error::new(
                            ErrorKind::UnexpectedEof,
                            format!(
                                "the archive ends {} bytes before the end of this entry",
                                length - written
                            ),
                        ),
                    ))
                }
                Ok(read) => read,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(archive_error(name, err)),
            };
            self.budget.charge_content(self.dirs.root(), read as u64)?;
            file.write_all(&self.buffer[..read])
                .map_err(|source| io_error(name, "cannot write it", source))?;
            written += read as u64;
            self.summary.bytes += read as u64;
            self.progress
                .bytes
                .fetch_add(read as u64, Ordering::Relaxed);
            since_check += read as u64;
            if since_check >= CANCEL_CHECK_BYTES {
                since_check = 0;
                check_cancelled(self.cancel)?;
            }
        }
        Ok(())
    }

    fn restore_symlink(
        &mut self,
        name: &str,
        parts: &[CString],
        target: CString,
        mtime: Mtime,
    ) -> Result<(), ExtractError> {
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let owner = self.owner;
        let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
            err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
        })?;
        replacing(parent, last, name, "cannot create it", || {
            symlinkat(&target, parent, last)
        })?;
        // By name, without following: were the link swapped meanwhile, these would touch
        // whatever is now at that name inside the root, never a symlink's target.
        chown_at_nofollow(parent, last, owner)
            .map_err(|source| io_error(name, "cannot set its owner", source))?;
        set_times_at_nofollow(parent, last, mtime)
            .map_err(|source| io_error(name, "cannot set its mtime", source))
    }

    fn restore_hard_link(
        &mut self,
        name: &str,
        parts: &[CString],
        target: &CStr,
    ) -> Result<(), ExtractError> {
        let target_name = shown(target.to_bytes());
        let target_parts = split_relative(target.to_bytes()).map_err(|reason| {
            refused(name, format!("its link target {target_name:?}: {reason}"))
        })?;
        if target_parts.as_slice() == parts {
            // A link to itself: the file is already there.
            return Ok(());
        }
        let Some((target_last, target_parents)) = target_parts.split_last() else {
            return Err(refused(
                name,
                "its link target is the server directory itself",
            ));
        };
        let target_dir = self
            .dirs
            .open(target_parents, Missing::Fail)
            .map_err(|err| {
                err.into_extract_error(name, target_parents, |prefix| {
                    format!("its link target {target_name:?} is unusable: {prefix:?}")
                })
            })?
            .try_clone_to_owned()
            .map_err(|source| io_error(name, "cannot open its link target's directory", source))?;
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
            err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
        })?;
        let action = format!("cannot link it to {target_name:?}");
        replacing(parent, last, name, &action, || {
            linkat(target_dir.as_fd(), target_last, parent, last)
        })
    }

    /// Reads what follows the last entry (tar padding, further gzip members) so that the
    /// whole stream, and every gzip CRC, is checked.
    pub(super) fn drain(&mut self, mut rest: impl Read) -> Result<(), ExtractError> {
        let mut since_check = 0;
        loop {
            match rest.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => since_check += read as u64,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ExtractError::Archive {
                        place: "after its last entry".to_owned(),
                        source,
                    })
                }
            }
            if since_check >= CANCEL_CHECK_BYTES {
                since_check = 0;
                check_cancelled(self.cancel)?;
            }
        }
    }
}

/// A symlink's or hard link's target as the archive has it.
fn link_target(entry: &Entry, name: &str) -> Result<CString, ExtractError> {
    match &entry.link {
        Some(target) if !target.is_empty() => CString::new(target.clone())
            .map_err(|_| refused(name, "its link target has a NUL byte")),
        _ => Err(refused(name, "it has no link target")),
    }
}

/// The components of an entry's path (or a hard link's target), relative to the root.
fn split_relative(path: &[u8]) -> Result<Vec<CString>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("it is an absolute path");
    }
    let mut parts = Vec::new();
    for part in path.split(|&byte| byte == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("it has a \"..\" component"),
            _ => parts.push(CString::new(part).map_err(|_| "it has a NUL byte")?),
        }
    }
    if parts.is_empty() && path.is_empty() {
        return Err("it has an empty path");
    }
    Ok(parts)
}

/// Runs `create` for a name in `dir`; if the name is taken by a non-directory, unlinks that
/// and runs `create` once more. `create` must fail with `EEXIST` rather than follow or
/// reuse what is there; its errors are reported as `action`.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    last: &CStr,
    entry: &str,
    action: &str,
    mut create: impl FnMut() -> io::Result<T>,
) -> Result<T, ExtractError> {
    match create() {
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
            remove_non_directory(dir, last, entry, false)?;
            create().map_err(|source| io_error(entry, action, source))
        }
        result => result.map_err(|source| io_error(entry, action, source)),
    }
}

/// Unlinks whatever non-directory is at `last` in `dir`. A directory there is left alone:
/// accepted when `directory_wanted`, refused otherwise.
fn remove_non_directory(
    dir: BorrowedFd<'_>,
    last: &CStr,
    entry: &str,
    directory_wanted: bool,
) -> Result<(), ExtractError> {
    let stat = match lstat_at(dir, last) {
        Ok(stat) => stat,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(source) => return Err(io_error(entry, "cannot inspect what is there", source)),
    };
    if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return if directory_wanted {
            Ok(())
        } else {
            Err(refused(entry, "a directory is in its place"))
        };
    }
    match unlinkat(dir, last) {
        Err(err) if err.raw_os_error() != Some(libc::ENOENT) => {
            Err(io_error(entry, "cannot remove what is in its place", err))
        }
        _ => Ok(()),
    }
}

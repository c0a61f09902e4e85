//! Thin wrappers over the system calls the restore makes on directory descriptors, so that
//! the rest of the module never handles raw descriptors or pointers.
//!
//! Each passes valid descriptors and NUL-terminated names, and takes ownership of a
//! returned descriptor at once.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::Mtime;

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

pub(super) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let fd =
        // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
        cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: openat returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )
}

pub(super) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub(super) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A hard link without `AT_SYMLINK_FOLLOW`: a symlink at `old` is linked, not followed.
pub(super) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<()> {
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(super) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: the call succeeded, so it filled the struct.
    Ok(unsafe { stat.assume_init() })
}

pub(super) fn chown_fd(fd: BorrowedFd<'_>, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::fchown(fd, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

pub(super) fn chown_at_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(super) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

pub(super) fn set_times_fd(fd: BorrowedFd<'_>, mtime: Mtime) -> io::Result<()> {
    let times = mtime.timespecs();
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub(super) fn set_times_at_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mtime: Mtime,
) -> io::Result<()> {
    let times = mtime.timespecs();
    // SAFETY: valid descriptors, NUL-terminated names, pointers to live buffers.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// A filesystem's space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Free for the daemon (`f_bavail`).
    pub available: u64,
    /// The filesystem's size (`f_blocks`).
    pub total: u64,
}

/// Space on the filesystem holding `fd`, in bytes.
pub(super) fn fs_space(fd: BorrowedFd<'_>) -> io::Result<FsSpace> {
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `fd` is a valid descriptor and `stat` a writable statvfs, filled on success.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), stat.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it wrote the whole struct.
    let stat = unsafe { stat.assume_init() };
    let fragment = stat.f_frsize;
    Ok(FsSpace {
        available: stat.f_bavail.saturating_mul(fragment),
        total: stat.f_blocks.saturating_mul(fragment),
    })
}

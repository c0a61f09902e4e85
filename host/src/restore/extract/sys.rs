//! Thin wrappers over the system calls the restore makes on directory descriptors, through
//! `rustix` (no `unsafe` here): the rest of the module keeps its `libc` flag and error
//! constants, and never handles raw descriptors or pointers.

use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};

use super::Mtime;

/// `openat(2)` with `libc` open flags (`O_*`), which rustix's [`OFlags`] mirror bit for bit.
pub(super) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let flags = OFlags::from_bits_retain(flags as u32);
    Ok(rfs::openat(dir, name, flags, Mode::from_raw_mode(mode))?)
}

pub(super) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rfs::openat(dir, name, flags, Mode::empty())?)
}

pub(super) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rfs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

pub(super) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rfs::symlinkat(target, dir, name)?)
}

/// A hard link without `AT_SYMLINK_FOLLOW`: a symlink at `old` is linked, not followed.
pub(super) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<()> {
    Ok(rfs::linkat(old_dir, old, dir, name, AtFlags::empty())?)
}

pub(super) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rfs::unlinkat(dir, name, AtFlags::empty())?)
}

pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
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
    // The owner comes from the configuration, never the -1 that means "leave unchanged".
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    Ok(rfs::chownat(
        dir,
        name,
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub(super) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rfs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// Access and modification times both set to `mtime`.
fn timestamps(mtime: Mtime) -> Timestamps {
    let [spec, _] = mtime.timespecs();
    let spec = Timespec {
        tv_sec: spec.tv_sec,
        tv_nsec: spec.tv_nsec,
    };
    Timestamps {
        last_access: spec,
        last_modification: spec,
    }
}

pub(super) fn set_times_fd(fd: BorrowedFd<'_>, mtime: Mtime) -> io::Result<()> {
    Ok(rfs::futimens(fd, &timestamps(mtime))?)
}

pub(super) fn set_times_at_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mtime: Mtime,
) -> io::Result<()> {
    Ok(rfs::utimensat(
        dir,
        name,
        &timestamps(mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
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
    let stat = rfs::fstatvfs(fd)?;
    let fragment = stat.f_frsize;
    Ok(FsSpace {
        available: stat.f_bavail.saturating_mul(fragment),
        total: stat.f_blocks.saturating_mul(fragment),
    })
}

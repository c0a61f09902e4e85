//! Restoring a backup: streaming gunzip + untar of an archive into a server's root
//! directory, treating the archive as hostile until each entry has been checked.
//!
//! Why this exists rather than `tar::Entry::unpack_in` or Wings' extractor: a restore's
//! archive may come from anywhere (a `download_url`, an archive copied over from another
//! node), the daemon runs as root, and the server directory itself is written by the game
//! server. `unpack_in` follows symlinks in parent directories in some versions, and Wings
//! turns directory and link entries into empty regular files. The rules, all enforced here:
//!
//! - **Paths** are relative: an absolute path or a `..` component fails the restore; empty
//!   and `.` components are dropped; an entry naming the root itself (GNU tar's `./`) is
//!   skipped, since the root's mode and owner belong to the daemon.
//! - **Nothing is written through a symlink.** Every parent directory is opened relative to
//!   the previous one with `O_DIRECTORY | O_NOFOLLOW` (an `openat` walk from the root's
//!   descriptor), so a symlink among the parents, whether it was already in the server
//!   directory or an earlier entry made it, fails the restore with an error naming the
//!   entry and the link. As every step is taken on a descriptor, a symlink swapped in by a
//!   running process between a check and a write cannot redirect anything (no
//!   time-of-check/time-of-use race). Missing parents are created with mode 0755.
//! - **The final component** is created with `O_CREAT | O_EXCL | O_NOFOLLOW` (or
//!   `symlinkat`, `linkat`, `mkdirat`, which never follow it either). Whatever non-directory
//!   is already there (a file, a symlink, a FIFO) is unlinked and replaced, never written
//!   through nor truncated in place, so a symlink to `/etc/shadow` is replaced by the
//!   restored file and a file hard-linked elsewhere keeps its old content there. A directory
//!   where a non-directory should go fails the restore.
//! - **Symlinks** are created as they are, whatever their target (absolute and `..` targets
//!   included): they are never followed here, only writing through them is refused.
//! - **Hard links** must name a target inside the root, resolved by the same rules (no
//!   absolute path, no `..`, no symlink among its parents), that exists already; `linkat` is
//!   called without `AT_SYMLINK_FOLLOW`, so a link to a symlink links the symlink itself.
//! - **Modes**: permission bits and the sticky bit are restored; setuid and setgid are
//!   dropped, so that an archive cannot plant a setuid-root program on the node. A game
//!   server never needs them.
//! - **Ownership**: the archive's uid/gid are ignored. With [`ExtractOptions::owner`] set,
//!   everything the restore creates (and every directory entry it is given) is chowned to
//!   it, symlinks included (`AT_SYMLINK_NOFOLLOW`); otherwise it belongs to the daemon.
//! - **Mtimes** are restored on files, symlinks and directories, with the nanoseconds of a
//!   PAX `mtime` record when there is one. Directory modes and mtimes are applied at the
//!   end, deepest first, once their contents are written.
//! - **Other entry types** (devices, FIFOs, ...) are skipped with a warning; PAX global
//!   headers are ignored; GNU and PAX long names and link names are read by the `tar` crate.
//! - **Streaming**: file contents go through one fixed buffer, so memory stays flat whatever
//!   the archive's size (the only list kept is that of the directory entries, for the end).
//!   `cancelled` is checked between entries and every few MiB. After the last entry the
//!   rest of the stream is read, so that every gzip member's CRC is verified and a corrupt
//!   or truncated archive fails the restore.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use flate2::read::MultiGzDecoder;

/// Mode bits restored from the archive: permissions and sticky, without setuid and setgid.
const KEPT_MODE_BITS: u32 = 0o1777;

/// Mode of a parent directory the archive does not list (Wings' archives list none).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Size of the one buffer file contents are copied through.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// How many bytes are copied between two looks at the cancel flag.
const CANCEL_CHECK_BYTES: u64 = 4 * 1024 * 1024;

/// Decompressed bytes per chunk handed from the inflating thread to the unpacking one...
const INFLATED_CHUNK_BYTES: usize = 1024 * 1024;
/// ...and how many chunks it may run ahead: memory stays bounded.
const INFLATED_CHUNKS_AHEAD: usize = 4;

/// How many open directory descriptors are kept for the next entries; deeper directories
/// are opened again for each entry, so that a very deep archive cannot exhaust descriptors.
const MAX_CACHED_DIRS: usize = 64;

/// How an archive is restored.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// `(uid, gid)` given to everything the restore creates, when set (`system.user`).
    pub owner: Option<(u32, u32)>,
}

/// How far a running restore has come; shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ExtractProgress {
    /// Entries restored so far.
    pub entries: AtomicU64,
    /// Bytes of file content written so far (uncompressed).
    pub bytes: AtomicU64,
}

/// What a finished restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Entries restored: directories, files, symlinks and hard links.
    pub entries: u64,
    /// Bytes of file content written (uncompressed).
    pub bytes: u64,
    /// Entries skipped because their type is not restored (devices, FIFOs, ...).
    pub skipped: u64,
}

/// Why a restore stopped. Whatever was restored before the error stays in place.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The cancel flag was raised.
    #[error("restore cancelled")]
    Cancelled,
    /// The server directory could not be opened.
    #[error("cannot open the server directory {}: {source}", root.display())]
    Root {
        /// The server directory.
        root: PathBuf,
        /// What opening it said.
        source: io::Error,
    },
    /// The compressed stream or the tar stream is corrupt, truncated or unreadable.
    #[error("cannot read the archive {place}: {source}")]
    Archive {
        /// Where in the archive, e.g. `in "a/b.txt"` or `after "a/b.txt"`.
        place: String,
        /// What reading it said.
        source: io::Error,
    },
    /// An entry breaks a rule of the module documentation: the archive is refused.
    #[error("refusing {entry:?}: {reason}")]
    Refused {
        /// The entry's path as the archive has it.
        entry: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Writing an entry into the server directory failed.
    #[error("cannot restore {entry:?}: {action}: {source}")]
    Io {
        /// The entry's path as the archive has it.
        entry: String,
        /// What was being done.
        action: String,
        /// What the system said.
        source: io::Error,
    },
}

/// Restores the gzipped tar stream `compressed` (one gzip member or several) into `root`,
/// following the rules of the module documentation. `on_entry` is called with each
/// restored entry's path relative to `root` before it is written; `progress` is updated as
/// the restore goes.
pub fn extract_archive<R: Read + Send>(
    compressed: R,
    root: &Path,
    options: &ExtractOptions,
    progress: &ExtractProgress,
    on_entry: &mut dyn FnMut(&Path),
    cancelled: &AtomicBool,
) -> Result<ExtractSummary, ExtractError> {
    let root_fd = File::open(root)
        .and_then(|file| {
            if file.metadata()?.is_dir() {
                Ok(OwnedFd::from(file))
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        })
        .map_err(|source| ExtractError::Root {
            root: root.to_path_buf(),
            source,
        })?;
    let mut extractor = Extractor {
        dirs: DirCache {
            root: root_fd,
            open: Vec::new(),
            owner: options.owner,
        },
        owner: options.owner,
        progress,
        cancelled,
        deferred_dirs: Vec::new(),
        summary: ExtractSummary::default(),
        buffer: vec![0; COPY_BUFFER_BYTES],
    };
    // Inflating and unpacking overlap: one thread gunzips while this one writes files, so
    // a restore takes about the longer of the two rather than their sum.
    std::thread::scope(|scope| {
        let (chunks, inflated) = mpsc::sync_channel(INFLATED_CHUNKS_AHEAD);
        scope.spawn(move || inflate(compressed, chunks));
        let reader = InflatedReader {
            chunks: inflated,
            chunk: Vec::new(),
            at: 0,
        };
        unpack(reader, &mut extractor, on_entry, cancelled)
    })?;
    Ok(extractor.summary)
}

/// Gunzips `compressed` into chunks sent to the unpacking thread; stops early when that
/// thread has gone (the restore failed).
fn inflate<R: Read>(compressed: R, chunks: SyncSender<io::Result<Vec<u8>>>) {
    let mut decoder = MultiGzDecoder::new(compressed);
    loop {
        let mut chunk = vec![0; INFLATED_CHUNK_BYTES];
        let read = loop {
            match decoder.read(&mut chunk) {
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let message = match read {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                Ok(chunk)
            }
            Err(err) => Err(err),
        };
        let failed = message.is_err();
        if chunks.send(message).is_err() || failed {
            return;
        }
    }
}

/// The decompressed stream, read from the inflating thread's chunks.
struct InflatedReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for InflatedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(err)) => return Err(err),
                // The inflating thread ended without error: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Unpacks every entry of the decompressed tar stream, then reads the rest of the stream
/// (so every gzip CRC is checked) and applies directory modes and mtimes.
fn unpack(
    reader: InflatedReader,
    extractor: &mut Extractor<'_>,
    on_entry: &mut dyn FnMut(&Path),
    cancelled: &AtomicBool,
) -> Result<(), ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let mut last: Option<String> = None;
    let place_after = |last: &Option<String>| match last {
        Some(name) => format!("after {name:?}"),
        None => "at its start".to_owned(),
    };
    let entries = archive.entries().map_err(|source| ExtractError::Archive {
        place: place_after(&last),
        source,
    })?;
    for entry in entries {
        check_cancelled(cancelled)?;
        let mut entry = entry.map_err(|source| ExtractError::Archive {
            place: place_after(&last),
            source,
        })?;
        last = Some(extractor.restore_entry(&mut entry, on_entry)?);
    }
    extractor.drain(archive.into_inner())?;
    extractor.finish_directories()
}

fn check_cancelled(cancelled: &AtomicBool) -> Result<(), ExtractError> {
    if cancelled.load(Ordering::Relaxed) {
        Err(ExtractError::Cancelled)
    } else {
        Ok(())
    }
}

/// A modification time.
#[derive(Debug, Clone, Copy)]
struct Mtime {
    secs: i64,
    nanos: u32,
}

impl Mtime {
    /// Access and modification times for `futimens`/`utimensat`: both set to the mtime.
    fn timespecs(self) -> [libc::timespec; 2] {
        let spec = libc::timespec {
            tv_sec: self.secs as libc::time_t,
            tv_nsec: self.nanos.into(),
        };
        [spec, spec]
    }
}

/// A directory entry whose mode and mtime are applied once its contents are written.
struct DeferredDir {
    name: String,
    parts: Vec<CString>,
    mode: u32,
    mtime: Mtime,
}

struct Extractor<'a> {
    dirs: DirCache,
    owner: Option<(u32, u32)>,
    progress: &'a ExtractProgress,
    cancelled: &'a AtomicBool,
    deferred_dirs: Vec<DeferredDir>,
    summary: ExtractSummary,
    buffer: Vec<u8>,
}

impl Extractor<'_> {
    /// Restores one entry and returns its name as the archive has it.
    fn restore_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        on_entry: &mut dyn FnMut(&Path),
    ) -> Result<String, ExtractError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(name);
        }
        let parts = split_relative(&raw_path).map_err(|reason| refused(&name, reason))?;
        // Old archives mark directories with a trailing slash on a regular entry.
        let is_dir = kind.is_dir() || (kind.is_file() && raw_path.ends_with(b"/"));
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
        let relative: PathBuf = parts
            .iter()
            .map(|part| Path::new(std::ffi::OsStr::from_bytes(part.to_bytes())))
            .collect();
        on_entry(&relative);
        let mode = entry
            .header()
            .mode()
            .map_err(|source| archive_error(&name, source))?
            & KEPT_MODE_BITS;
        let mtime = entry_mtime(entry).map_err(|source| archive_error(&name, source))?;
        if is_dir {
            self.restore_dir(&name, parts, mode, mtime)?;
        } else if kind.is_symlink() {
            self.restore_symlink(&name, &parts, link_target(entry, &name)?, mtime)?;
        } else if kind.is_hard_link() {
            self.restore_hard_link(&name, &parts, &link_target(entry, &name)?)?;
        } else {
            self.restore_file(&name, &parts, entry, mode, mtime)?;
        }
        self.summary.entries += 1;
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(name)
    }

    fn restore_dir(
        &mut self,
        name: &str,
        parts: Vec<CString>,
        mode: u32,
        mtime: Mtime,
    ) -> Result<(), ExtractError> {
        let (last, parents) = parts.split_last().expect("checked non-empty");
        {
            let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
                err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
            })?;
            remove_non_directory(parent.as_fd(), last, name, true)?;
        }
        let owner = self.owner;
        let dir = self
            .dirs
            .open(&parts, Missing::Create)
            .map_err(|err| err.into_extract_error(name, &parts, |prefix| format!("{prefix:?}")))?;
        chown_fd(dir.as_fd(), owner)
            .map_err(|source| io_error(name, "cannot set its owner", source))?;
        self.deferred_dirs.push(DeferredDir {
            name: name.to_owned(),
            parts,
            mode,
            mtime,
        });
        Ok(())
    }

    fn restore_file<R: Read>(
        &mut self,
        name: &str,
        parts: &[CString],
        content: &mut tar::Entry<'_, R>,
        mode: u32,
        mtime: Mtime,
    ) -> Result<(), ExtractError> {
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let file = {
            let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
                err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
            })?;
            replacing(parent.as_fd(), last, name, "cannot create it", || {
                openat(
                    parent.as_fd(),
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
        let expected = content.size();
        let written = self.copy_content(content, &mut file, name)?;
        // The tar crate ends an entry's data quietly where the stream ends.
        if written < expected {
            return Err(archive_error(
                name,
                io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("the archive ends after {written} of its {expected} bytes"),
                ),
            ));
        }
        // Owner first: a chown may clear mode bits. Times last: writing changes them.
        chown_fd(file.as_fd(), self.owner)
            .map_err(|source| io_error(name, "cannot set its owner", source))?;
        chmod_fd(file.as_fd(), mode)
            .map_err(|source| io_error(name, "cannot set its mode", source))?;
        set_times_fd(file.as_fd(), mtime)
            .map_err(|source| io_error(name, "cannot set its mtime", source))
    }

    fn copy_content(
        &mut self,
        content: &mut impl Read,
        file: &mut File,
        name: &str,
    ) -> Result<u64, ExtractError> {
        let mut written = 0;
        let mut since_check = 0;
        loop {
            let read = match content.read(&mut self.buffer) {
                Ok(0) => return Ok(written),
                Ok(read) => read,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(archive_error(name, err)),
            };
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
                check_cancelled(self.cancelled)?;
            }
        }
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
        let parent = parent.as_fd();
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
        let target_name = String::from_utf8_lossy(target.to_bytes()).into_owned();
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
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| io_error(name, "cannot open its link target's directory", source))?;
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let parent = self.dirs.open(parents, Missing::Create).map_err(|err| {
            err.into_extract_error(name, parents, |prefix| format!("its parent {prefix:?}"))
        })?;
        let parent = parent.as_fd();
        let action = format!("cannot link it to {target_name:?}");
        replacing(parent, last, name, &action, || {
            linkat(target_dir.as_fd(), target_last, parent, last)
        })
    }

    /// Reads what follows the last entry (tar padding, further gzip members) so that the
    /// whole stream, and every gzip CRC, is checked.
    fn drain(&mut self, mut rest: impl Read) -> Result<(), ExtractError> {
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
                check_cancelled(self.cancelled)?;
            }
        }
    }

    /// Applies directory entries' modes and mtimes, deepest first, now that their contents
    /// are written.
    fn finish_directories(&mut self) -> Result<(), ExtractError> {
        let mut deferred = std::mem::take(&mut self.deferred_dirs);
        deferred.sort_by_key(|dir| std::cmp::Reverse(dir.parts.len()));
        for dir in deferred {
            check_cancelled(self.cancelled)?;
            let name = dir.name.as_str();
            let fd = self.dirs.open(&dir.parts, Missing::Fail).map_err(|err| {
                err.into_extract_error(name, &dir.parts, |prefix| format!("{prefix:?}"))
            })?;
            chmod_fd(fd.as_fd(), dir.mode)
                .map_err(|source| io_error(name, "cannot set its mode", source))?;
            set_times_fd(fd.as_fd(), dir.mtime)
                .map_err(|source| io_error(name, "cannot set its mtime", source))?;
        }
        Ok(())
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

/// A symlink's or hard link's target as the archive has it.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<CString, ExtractError> {
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() => CString::new(target.into_owned())
            .map_err(|_| refused(name, "its link target has a NUL byte")),
        _ => Err(refused(name, "it has no link target")),
    }
}

/// The entry's mtime: the PAX `mtime` record (which has nanoseconds) when it is there and
/// readable, else the header's.
fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Mtime> {
    if let Some(extensions) = entry.pax_extensions()? {
        let pax = extensions
            .filter_map(Result::ok)
            .find(|extension| extension.key_bytes() == b"mtime")
            .and_then(|extension| parse_pax_mtime(extension.value_bytes()));
        if let Some(mtime) = pax {
            return Ok(mtime);
        }
    }
    let secs = entry.header().mtime()?;
    Ok(Mtime {
        secs: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    })
}

/// A PAX time, `seconds[.fraction]`; negative times are left to the header.
fn parse_pax_mtime(value: &[u8]) -> Option<Mtime> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0, |nanos, digit| nanos * 10 + u32::from(digit - b'0'));
    Some(Mtime {
        secs: secs.parse().ok()?,
        nanos,
    })
}

fn refused(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn io_error(entry: &str, action: &str, source: io::Error) -> ExtractError {
    ExtractError::Io {
        entry: entry.to_owned(),
        action: action.to_owned(),
        source,
    }
}

fn archive_error(entry: &str, source: io::Error) -> ExtractError {
    ExtractError::Archive {
        place: format!("in {entry:?}"),
        source,
    }
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

/// What to do about a missing directory on the way to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
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
struct ResolveError {
    depth: usize,
    failure: Failure,
}

impl ResolveError {
    /// An error naming `entry` and the failing prefix of `parts`, introduced by `subject`.
    fn into_extract_error(
        self,
        entry: &str,
        parts: &[CString],
        subject: impl FnOnce(String) -> String,
    ) -> ExtractError {
        let prefix = parts[..=self.depth]
            .iter()
            .map(|part| String::from_utf8_lossy(part.to_bytes()))
            .collect::<Vec<_>>()
            .join("/");
        let subject = subject(prefix);
        match self.failure {
            Failure::Symlink => refused(entry, format!("{subject} is a symlink")),
            Failure::NotDirectory => refused(entry, format!("{subject} is not a directory")),
            Failure::Missing => refused(entry, format!("{subject} does not exist")),
            Failure::Io(source) => ExtractError::Io {
                entry: entry.to_owned(),
                action: format!("cannot open {subject}"),
                source,
            },
        }
    }
}

/// Directory descriptors from the root down to the last directory used, reused by the next
/// entries that share a prefix with it (archives list siblings together).
///
/// Every descriptor was opened relative to its parent's without following a symlink, so it
/// is a directory inside the root. The cache stays true to the tree because a restore
/// never removes or replaces a directory; were another process to move one meanwhile, the
/// entries would land in the moved directory, never through a symlink.
struct DirCache {
    root: OwnedFd,
    open: Vec<(CString, OwnedFd)>,
    owner: Option<(u32, u32)>,
}

/// An open directory, from the cache or opened for one use.
enum Dir<'a> {
    Cached(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for Dir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Cached(fd) => *fd,
            Dir::Owned(fd) => fd.as_fd(),
        }
    }
}

impl DirCache {
    fn deepest(&self) -> BorrowedFd<'_> {
        self.open
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }

    /// Opens the directory `parts` under the root, one component at a time without
    /// following symlinks, creating missing ones when told to.
    fn open(&mut self, parts: &[CString], missing: Missing) -> Result<Dir<'_>, ResolveError> {
        let common = self
            .open
            .iter()
            .zip(parts)
            .take_while(|((cached, _), part)| cached == *part)
            .count();
        self.open.truncate(common);
        let mut uncached: Option<OwnedFd> = None;
        for (depth, part) in parts.iter().enumerate().skip(common) {
            let base = match &uncached {
                Some(fd) => fd.as_fd(),
                None => self.deepest(),
            };
            let fd = open_child_dir(base, part, missing, self.owner)
                .map_err(|failure| ResolveError { depth, failure })?;
            if uncached.is_none() && self.open.len() < MAX_CACHED_DIRS {
                self.open.push((part.clone(), fd));
            } else {
                uncached = Some(fd);
            }
        }
        Ok(match uncached {
            Some(fd) => Dir::Owned(fd),
            None => Dir::Cached(self.deepest()),
        })
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

// Thin wrappers over the *at system calls. Each passes valid descriptors and NUL-terminated
// names, and takes ownership of a returned descriptor at once.

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let fd =
        cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )
}

fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A hard link without `AT_SYMLINK_FOLLOW`: a symlink at `old` is linked, not followed.
fn linkat(old_dir: BorrowedFd<'_>, old: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
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

fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(unsafe { stat.assume_init() })
}

fn chown_fd(fd: BorrowedFd<'_>, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::fchown(fd, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

fn chown_at_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
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

fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

fn set_times_fd(fd: BorrowedFd<'_>, mtime: Mtime) -> io::Result<()> {
    let times = mtime.timespecs();
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

fn set_times_at_nofollow(dir: BorrowedFd<'_>, name: &CStr, mtime: Mtime) -> io::Result<()> {
    let times = mtime.timespecs();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::process::Command;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use tar::{Builder, EntryType, Header};

    /// A fixed mtime with nanoseconds, different per `n`.
    fn time(n: i64) -> (i64, u32) {
        (1_600_000_000 + n * 1000, 123_456_789 + n as u32)
    }

    fn set_mtime(path: &Path, (secs, nanos): (i64, u32)) {
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        let times = Mtime { secs, nanos }.timespecs();
        let result = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(result, 0, "utimensat {}", path.display());
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A gzipped tar made by the `tar` crate's builder.
    fn archive(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        gzip(&tar_bytes(build))
    }

    fn tar_bytes(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn header(kind: EntryType, size: u64, mode: u32, mtime: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_cksum();
        header
    }

    fn add_file(builder: &mut Builder<Vec<u8>>, path: &str, mode: u32, content: &[u8]) {
        let mut header = header(
            EntryType::Regular,
            content.len() as u64,
            mode,
            1_500_000_000,
        );
        builder.append_data(&mut header, path, content).unwrap();
    }

    fn add_symlink(builder: &mut Builder<Vec<u8>>, path: &str, target: &str) {
        let mut header = header(EntryType::Symlink, 0, 0o777, 1_500_000_000);
        builder.append_link(&mut header, path, target).unwrap();
    }

    /// A header written byte by byte, for names the builder refuses.
    fn add_raw(
        builder: &mut Builder<Vec<u8>>,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
    ) {
        let mut header = Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_500_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn extract_with(
        compressed: &[u8],
        root: &Path,
        options: &ExtractOptions,
    ) -> Result<ExtractSummary, ExtractError> {
        extract_archive(
            compressed,
            root,
            options,
            &ExtractProgress::default(),
            &mut |_| {},
            &AtomicBool::new(false),
        )
    }

    fn extract(compressed: &[u8], root: &Path) -> Result<ExtractSummary, ExtractError> {
        extract_with(compressed, root, &ExtractOptions::default())
    }

    /// A server root with a sibling `outside/x` that no archive may touch.
    struct Sandbox {
        tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    impl Sandbox {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            let outside = tmp.path().join("outside");
            std::fs::create_dir(&root).unwrap();
            std::fs::create_dir(&outside).unwrap();
            std::fs::write(outside.join("x"), "precious").unwrap();
            Self { tmp, root, outside }
        }

        fn assert_outside_untouched(&self) {
            let mut around: Vec<_> = std::fs::read_dir(self.tmp.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            around.sort();
            assert_eq!(around, ["outside", "root"]);
            let outside: Vec<_> = std::fs::read_dir(&self.outside)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(outside, ["x"]);
            assert_eq!(
                std::fs::read_to_string(self.outside.join("x")).unwrap(),
                "precious"
            );
        }
    }

    /// What a tree holds, for comparing two of them.
    #[derive(Debug, PartialEq)]
    enum Node {
        Dir {
            mode: u32,
        },
        File {
            mode: u32,
            nlink: u64,
            content: Vec<u8>,
        },
        Symlink {
            target: PathBuf,
        },
    }

    fn snapshot(root: &Path, with_nanos: bool) -> BTreeMap<PathBuf, (Node, i64, i64)> {
        fn walk(
            root: &Path,
            dir: &Path,
            with_nanos: bool,
            out: &mut BTreeMap<PathBuf, (Node, i64, i64)>,
        ) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = path.symlink_metadata().unwrap();
                let mode = meta.mode() & 0o7777;
                let node = if meta.is_dir() {
                    walk(root, &path, with_nanos, out);
                    Node::Dir { mode }
                } else if meta.is_symlink() {
                    Node::Symlink {
                        target: std::fs::read_link(&path).unwrap(),
                    }
                } else {
                    Node::File {
                        mode,
                        nlink: meta.nlink(),
                        content: std::fs::read(&path).unwrap(),
                    }
                };
                let nanos = if with_nanos { meta.mtime_nsec() } else { 0 };
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(relative, (node, meta.mtime(), nanos));
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, with_nanos, &mut out);
        out
    }

    /// A tree with what a game server has: nested and empty directories, links of every
    /// kind, an executable, long and non-ASCII names, a few MiB of data; fixed mtimes.
    fn make_tree(src: &Path) {
        let long_dir = format!("long/{}", "d".repeat(120));
        let long_file = format!("{long_dir}/{}.txt", "f".repeat(100));
        for dir in [
            "bin",
            "config/nested/deeper",
            "empty",
            "shared",
            "données",
            long_dir.as_str(),
        ] {
            std::fs::create_dir_all(src.join(dir)).unwrap();
        }
        std::fs::write(src.join("bin/start.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(src.join("bin/start.sh"), PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::hard_link(src.join("bin/start.sh"), src.join("bin/start-again.sh")).unwrap();
        std::fs::write(src.join("config/server.properties"), "motd=hello\n").unwrap();
        std::fs::set_permissions(
            src.join("config/server.properties"),
            PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        std::fs::write(src.join("config/nested/deeper/deep.json"), "{}").unwrap();
        std::fs::write(src.join("données/café ☕.txt"), "crème").unwrap();
        std::fs::write(src.join(&long_file), "long").unwrap();
        std::fs::write(src.join("n".repeat(200)), "long name").unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(src.join("world.dat"), big).unwrap();
        let sparse = File::create(src.join("sparse.bin")).unwrap();
        sparse.set_len(2 * 1024 * 1024).unwrap();
        (&sparse).write_all(b"start").unwrap();
        std::fs::set_permissions(src.join("empty"), PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::set_permissions(src.join("shared"), PermissionsExt::from_mode(0o1777)).unwrap();
        symlink("config/server.properties", src.join("link-to-config")).unwrap();
        symlink("/nonexistent/absolute/target", src.join("dangling")).unwrap();
        symlink("../../outside", src.join("config/up")).unwrap();
        // Mtimes last, deepest first, so that nothing touches them afterwards.
        let mut paths: Vec<_> = snapshot(src, false).into_keys().collect();
        paths.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
        for (n, path) in paths.iter().enumerate() {
            set_mtime(&src.join(path), time(n as i64));
        }
    }

    /// Archives `make_tree` with GNU tar in `format`, passing `sparse` (`--sparse` makes
    /// GNU sparse entries in the gnu format), and checks the restored tree is identical.
    fn gnu_tar_round_trip(format: &str, sparse: &[&str], with_nanos: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        make_tree(&src);
        let archive_path = tmp.path().join("backup.tar.gz");
        let status = Command::new("tar")
            .arg(format!("--format={format}"))
            .args(sparse)
            .arg("-czf")
            .arg(&archive_path)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let sandbox = Sandbox::new();
        let root_mode = sandbox.root.metadata().unwrap().mode();
        let mut seen = Vec::new();
        let progress = ExtractProgress::default();
        let summary = extract_archive(
            File::open(&archive_path).unwrap(),
            &sandbox.root,
            &ExtractOptions::default(),
            &progress,
            &mut |path| seen.push(path.to_path_buf()),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(
            snapshot(&sandbox.root, with_nanos),
            snapshot(&src, with_nanos)
        );
        // "./" is not restored: the root keeps its own mode.
        assert_eq!(sandbox.root.metadata().unwrap().mode(), root_mode);
        assert_eq!(summary.entries as usize, snapshot(&src, false).len());
        assert_eq!(summary.skipped, 0);
        assert_eq!(progress.entries.load(Ordering::Relaxed), summary.entries);
        assert_eq!(progress.bytes.load(Ordering::Relaxed), summary.bytes);
        assert!(summary.bytes > 3 * 1024 * 1024);
        assert!(seen.contains(&PathBuf::from("données/café ☕.txt")));
        assert!(seen.contains(&PathBuf::from("n".repeat(200))));
        let restored = |name: &str| sandbox.root.join(name).metadata().unwrap().ino();
        assert_eq!(restored("bin/start.sh"), restored("bin/start-again.sh"));
        sandbox.assert_outside_untouched();
    }

    #[test]
    fn restores_a_gnu_tar_archive() {
        gnu_tar_round_trip("gnu", &["--sparse"], false);
    }

    #[test]
    fn restores_a_pax_tar_archive_with_nanosecond_mtimes() {
        gnu_tar_round_trip("pax", &[], true);
    }

    #[test]
    fn restores_a_wings_shaped_archive_creating_parents() {
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| {
            add_file(builder, "a/b/c.txt", 0o644, b"abc");
            add_file(builder, "a/top.txt", 0o600, b"top");
            add_file(builder, "server.jar", 0o644, b"jar");
            let mut header = header(EntryType::Regular, 3, 0o644, 1_500_000_000);
            builder
                .append_data(
                    &mut header,
                    Path::new(OsStr::from_bytes(b"raw-\xff.bin")),
                    &b"raw"[..],
                )
                .unwrap();
        });
        let summary = extract(&compressed, &sandbox.root).unwrap();
        assert_eq!(
            summary,
            ExtractSummary {
                entries: 4,
                bytes: 12,
                skipped: 0
            }
        );
        let root = &sandbox.root;
        assert_eq!(std::fs::read(root.join("a/b/c.txt")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read(root.join(OsStr::from_bytes(b"raw-\xff.bin"))).unwrap(),
            b"raw"
        );
        for dir in ["a", "a/b"] {
            assert_eq!(
                root.join(dir).metadata().unwrap().mode() & 0o7777,
                0o755,
                "{dir}"
            );
        }
        let top = root.join("a/top.txt").metadata().unwrap();
        assert_eq!((top.mode() & 0o7777, top.mtime()), (0o600, 1_500_000_000));
        sandbox.assert_outside_untouched();
    }

    #[test]
    fn drops_setuid_and_setgid_but_keeps_sticky() {
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| {
            let mut dir = header(EntryType::Directory, 0, 0o3777, 1_500_000_000);
            builder.append_data(&mut dir, "tmp/", io::empty()).unwrap();
            add_file(builder, "tmp/suid", 0o6755, b"#!/bin/sh\n");
        });
        extract(&compressed, &sandbox.root).unwrap();
        let mode = |name: &str| sandbox.root.join(name).metadata().unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("tmp/suid"), 0o755);
    }

    #[test]
    fn chowns_everything_it_creates() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: chown cannot be checked");
            return;
        }
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| {
            let mut dir = header(EntryType::Directory, 0, 0o750, 1_500_000_000);
            builder
                .append_data(&mut dir, "plugins/", io::empty())
                .unwrap();
            add_file(builder, "plugins/x.jar", 0o644, b"x");
            add_file(builder, "implicit/parent/file", 0o644, b"y");
            add_symlink(builder, "plugins/link", "/etc/passwd");
        });
        let options = ExtractOptions {
            owner: Some((12345, 23456)),
        };
        extract_with(&compressed, &sandbox.root, &options).unwrap();
        for name in [
            "plugins",
            "plugins/x.jar",
            "implicit",
            "implicit/parent",
            "implicit/parent/file",
            "plugins/link",
        ] {
            let meta = sandbox.root.join(name).symlink_metadata().unwrap();
            assert_eq!((meta.uid(), meta.gid()), (12345, 23456), "{name}");
        }
        // The link itself was chowned, not its target.
        assert_eq!(Path::new("/etc/passwd").metadata().unwrap().uid(), 0);
        // Without an owner, what is created belongs to the daemon.
        let other = Sandbox::new();
        extract(&compressed, &other.root).unwrap();
        assert_eq!(
            other.root.join("plugins/x.jar").metadata().unwrap().uid(),
            0
        );
    }

    #[test]
    fn accepts_multi_member_gzip() {
        let sandbox = Sandbox::new();
        let tar = tar_bytes(|builder| {
            add_file(builder, "first.txt", 0o644, &[b'1'; 5000]);
            add_file(builder, "second.txt", 0o644, &[b'2'; 5000]);
        });
        // Split inside the first file's data.
        let mut compressed = gzip(&tar[..2048]);
        compressed.extend(gzip(&tar[2048..]));
        let summary = extract(&compressed, &sandbox.root).unwrap();
        assert_eq!(summary.entries, 2);
        assert_eq!(
            std::fs::read(sandbox.root.join("second.txt")).unwrap(),
            [b'2'; 5000]
        );
    }

    #[test]
    fn refuses_corrupt_and_truncated_archives() {
        let sandbox = Sandbox::new();
        let tar = tar_bytes(|builder| add_file(builder, "big.bin", 0o644, &[7; 100_000]));
        let mut compressed = gzip(&tar);
        let len = compressed.len();
        compressed[len - 8] ^= 0xff; // the CRC
        let err = extract(&compressed, &sandbox.root).unwrap_err();
        assert!(matches!(err, ExtractError::Archive { .. }), "{err}");
        let truncated = gzip(&tar[..512 + 50_000]);
        let err = extract(&truncated, &sandbox.root).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read the archive in \"big.bin\""),
            "{err}"
        );
        let err = extract(b"not gzip at all", &sandbox.root)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read the archive at its start"),
            "{err}"
        );
    }

    #[test]
    fn skips_special_files_and_global_headers() {
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| {
            let mut global = header(EntryType::XGlobalHeader, 0, 0o644, 0);
            let record = b"19 comment=hello\n";
            global.set_size(record.len() as u64);
            global.set_cksum();
            builder
                .append_data(&mut global, "pax_global_header", &record[..])
                .unwrap();
            let mut fifo = header(EntryType::Fifo, 0, 0o644, 0);
            builder.append_data(&mut fifo, "pipe", io::empty()).unwrap();
            let mut device = header(EntryType::Char, 0, 0o644, 0);
            builder
                .append_data(&mut device, "null", io::empty())
                .unwrap();
            add_file(builder, "kept", 0o644, b"k");
        });
        let summary = extract(&compressed, &sandbox.root).unwrap();
        assert_eq!(
            summary,
            ExtractSummary {
                entries: 1,
                bytes: 1,
                skipped: 2
            }
        );
        let names: Vec<_> = std::fs::read_dir(&sandbox.root)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["kept"]);
    }

    #[test]
    fn stops_when_cancelled() {
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| add_file(builder, "file", 0o644, b"x"));
        let err = extract_archive(
            &compressed[..],
            &sandbox.root,
            &ExtractOptions::default(),
            &ExtractProgress::default(),
            &mut |_| {},
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::Cancelled));
        assert!(!sandbox.root.join("file").exists());
    }

    /// Extracts a hostile archive and returns its error, checking nothing escaped.
    fn refused_in(sandbox: &Sandbox, build: impl FnOnce(&mut Builder<Vec<u8>>)) -> String {
        let err = extract(&archive(build), &sandbox.root).unwrap_err();
        sandbox.assert_outside_untouched();
        err.to_string()
    }

    #[test]
    fn refuses_dot_dot() {
        let sandbox = Sandbox::new();
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Regular, "../escape", "", b"evil");
        });
        assert_eq!(err, r#"refusing "../escape": it has a ".." component"#);
        let err = refused_in(&sandbox, |builder| {
            add_raw(
                builder,
                EntryType::Regular,
                "a/../../outside/x",
                "",
                b"evil",
            );
        });
        assert!(err.contains("\"..\""), "{err}");
    }

    #[test]
    fn refuses_absolute_paths() {
        let sandbox = Sandbox::new();
        let marker = format!("/tmp/aerie-extract-abs-{}", std::process::id());
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Regular, &marker, "", b"evil");
        });
        assert_eq!(err, format!("refusing {marker:?}: it is an absolute path"));
        assert!(!Path::new(&marker).exists());
    }

    #[test]
    fn refuses_writing_through_a_symlink_the_archive_made() {
        let sandbox = Sandbox::new();
        let outside = sandbox.outside.to_str().unwrap().to_owned();
        let err = refused_in(&sandbox, |builder| {
            add_symlink(builder, "link", &outside);
            add_file(builder, "link/file", 0o644, b"evil");
        });
        assert_eq!(
            err,
            r#"refusing "link/file": its parent "link" is a symlink"#
        );
        // The link itself is restored as a link; only writing through it is refused.
        assert_eq!(
            std::fs::read_link(sandbox.root.join("link")).unwrap(),
            sandbox.outside
        );

        let marker = format!("aerie-extract-marker-{}", std::process::id());
        let err = refused_in(&sandbox, |builder| {
            add_symlink(builder, "tmp", "/tmp");
            add_file(builder, &format!("tmp/{marker}"), 0o644, b"evil");
        });
        assert!(err.ends_with(r#"its parent "tmp" is a symlink"#), "{err}");
        assert!(!Path::new("/tmp").join(&marker).exists());
    }

    #[test]
    fn refuses_writing_through_a_symlink_already_in_the_root() {
        let sandbox = Sandbox::new();
        std::fs::create_dir(sandbox.root.join("a")).unwrap();
        symlink(&sandbox.outside, sandbox.root.join("a/pre")).unwrap();
        let err = refused_in(&sandbox, |builder| {
            add_file(builder, "a/pre/x", 0o644, b"evil");
        });
        assert_eq!(
            err,
            r#"refusing "a/pre/x": its parent "a/pre" is a symlink"#
        );
        let err = refused_in(&sandbox, |builder| {
            let mut dir = header(EntryType::Directory, 0, 0o755, 0);
            builder
                .append_data(&mut dir, "a/pre/sub/", io::empty())
                .unwrap();
        });
        assert_eq!(
            err,
            r#"refusing "a/pre/sub/": its parent "a/pre" is a symlink"#
        );
    }

    #[test]
    fn refuses_hard_links_leaving_the_root() {
        let sandbox = Sandbox::new();
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Link, "passwd", "/etc/passwd", b"");
        });
        assert_eq!(
            err,
            r#"refusing "passwd": its link target "/etc/passwd": it is an absolute path"#
        );
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Link, "x", "../outside/x", b"");
        });
        assert_eq!(
            err,
            r#"refusing "x": its link target "../outside/x": it has a ".." component"#
        );
        let outside = sandbox.outside.to_str().unwrap().to_owned();
        let err = refused_in(&sandbox, |builder| {
            add_symlink(builder, "link", &outside);
            add_raw(builder, EntryType::Link, "x", "link/x", b"");
        });
        assert_eq!(
            err,
            r#"refusing "x": its link target "link/x" is unusable: "link" is a symlink"#
        );
        assert!(!sandbox.root.join("x").exists());
        assert_eq!(sandbox.outside.join("x").metadata().unwrap().nlink(), 1);
    }

    #[test]
    fn restores_hard_links_inside_the_root() {
        let sandbox = Sandbox::new();
        let compressed = archive(|builder| {
            add_file(builder, "data/original", 0o644, b"same");
            add_raw(builder, EntryType::Link, "other/copy", "data/original", b"");
        });
        extract(&compressed, &sandbox.root).unwrap();
        let ino = |name: &str| sandbox.root.join(name).metadata().unwrap().ino();
        assert_eq!(ino("data/original"), ino("other/copy"));
        let err = extract(
            &archive(|builder| add_raw(builder, EntryType::Link, "y", "missing", b"")),
            &sandbox.root,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(r#"cannot restore "y": cannot link it to "missing": "#),
            "{err}"
        );
    }

    #[test]
    fn replaces_a_symlink_at_the_final_component() {
        let sandbox = Sandbox::new();
        symlink(sandbox.outside.join("x"), sandbox.root.join("config.yml")).unwrap();
        symlink(&sandbox.outside, sandbox.root.join("dir")).unwrap();
        symlink(sandbox.outside.join("x"), sandbox.root.join("hard")).unwrap();
        let compressed = archive(|builder| {
            add_file(builder, "config.yml", 0o644, b"restored");
            let mut dir = header(EntryType::Directory, 0, 0o755, 0);
            builder.append_data(&mut dir, "dir/", io::empty()).unwrap();
            add_file(builder, "dir/x", 0o644, b"inside");
            add_raw(builder, EntryType::Link, "hard", "config.yml", b"");
        });
        extract(&compressed, &sandbox.root).unwrap();
        let root = &sandbox.root;
        let meta = root.join("config.yml").symlink_metadata().unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read(root.join("config.yml")).unwrap(), b"restored");
        assert!(root.join("dir").symlink_metadata().unwrap().is_dir());
        assert_eq!(std::fs::read(root.join("dir/x")).unwrap(), b"inside");
        assert_eq!(
            meta.ino(),
            root.join("hard").symlink_metadata().unwrap().ino()
        );
        sandbox.assert_outside_untouched();
    }

    #[test]
    fn replaces_files_without_writing_through_their_hard_links() {
        let sandbox = Sandbox::new();
        std::fs::write(sandbox.root.join("a"), "old").unwrap();
        std::fs::hard_link(sandbox.root.join("a"), sandbox.root.join("b")).unwrap();
        extract(
            &archive(|builder| add_file(builder, "a", 0o644, b"new")),
            &sandbox.root,
        )
        .unwrap();
        assert_eq!(std::fs::read(sandbox.root.join("a")).unwrap(), b"new");
        assert_eq!(std::fs::read(sandbox.root.join("b")).unwrap(), b"old");
    }

    #[test]
    fn refuses_a_file_where_a_directory_is() {
        let sandbox = Sandbox::new();
        std::fs::create_dir(sandbox.root.join("world")).unwrap();
        std::fs::write(sandbox.root.join("plain"), "file").unwrap();
        let err = refused_in(&sandbox, |builder| add_file(builder, "world", 0o644, b"x"));
        assert_eq!(err, r#"refusing "world": a directory is in its place"#);
        let err = refused_in(&sandbox, |builder| {
            add_file(builder, "plain/x", 0o644, b"x")
        });
        assert_eq!(
            err,
            r#"refusing "plain/x": its parent "plain" is not a directory"#
        );
    }

    #[test]
    fn refuses_entries_naming_nothing_or_the_root_itself() {
        let sandbox = Sandbox::new();
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Regular, ".", "", b"")
        });
        assert_eq!(err, r#"refusing ".": it names the server directory itself"#);
        let err = refused_in(&sandbox, |builder| {
            add_raw(builder, EntryType::Regular, "", "", b"")
        });
        assert_eq!(err, r#"refusing "": it has an empty path"#);
    }

    #[test]
    fn handles_paths_deeper_than_the_descriptor_cache() {
        let sandbox = Sandbox::new();
        let deep = vec!["d"; MAX_CACHED_DIRS + 6].join("/");
        let outside = sandbox.outside.to_str().unwrap().to_owned();
        let err = refused_in(&sandbox, |builder| {
            add_file(builder, &format!("{deep}/one"), 0o644, b"1");
            add_file(builder, &format!("{deep}/two"), 0o644, b"2");
            add_symlink(builder, &format!("{deep}/link"), &outside);
            add_file(builder, &format!("{deep}/link/evil"), 0o644, b"evil");
        });
        assert_eq!(
            err,
            format!("refusing \"{deep}/link/evil\": its parent \"{deep}/link\" is a symlink")
        );
        let restored = sandbox.root.join(&deep);
        assert_eq!(std::fs::read(restored.join("one")).unwrap(), b"1");
        assert_eq!(std::fs::read(restored.join("two")).unwrap(), b"2");
    }
}

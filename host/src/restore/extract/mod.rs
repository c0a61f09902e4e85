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
//!   PAX `mtime` record when there is one. A directory's mode and mtime are applied when
//!   the archive leaves it (see [`dirs::PendingDirs`]).
//! - **Sparse files** (GNU `S` entries, PAX `GNU.sparse.*`) are restored with their holes:
//!   only their data regions are written, the file's length is set at the end.
//! - **Other entry types** (devices, FIFOs, ...) are skipped with a warning; PAX global
//!   headers are ignored.
//! - **Bounded**: names and link targets over 64 KiB (the limit backups keep to; deeper
//!   than `PATH_MAX` is fine here), PAX headers over 256 KiB and sparse
//!   maps over 64 Ki extents are refused before they are read (see [`tar_stream`]); names
//!   in messages and logs are shortened. File contents go through one fixed buffer, the
//!   directories waiting for their mode are those of one path, so memory stays flat
//!   whatever the archive holds; descriptors are bounded by [`dirs::MAX_CACHED_DIRS`] and
//!   nothing recurses, whatever the tree's depth.
//! - **Disk**: file content counts against [`ExtractOptions::max_bytes`], and the free space
//!   of the root's filesystem is looked at as the restore goes (see [`budget`]): the restore
//!   stops with [`ExtractError::TooLarge`] or [`ExtractError::DiskFull`] before either is
//!   passed.
//! - **Streaming**: `cancel` is checked between entries and every few MiB. After the
//!   last entry the rest of the stream is read, so that every gzip member's CRC is verified
//!   and a corrupt or truncated archive fails the restore.

mod budget;
mod dirs;
mod entry;
mod sys;
pub(crate) mod tar_stream;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use flate2::read::MultiGzDecoder;
use tokio_util::sync::CancellationToken;

use budget::Budget;
pub use budget::SpaceProbe;
use dirs::{DirCache, PendingDirs};
use entry::Extractor;
pub use sys::FsSpace;
use tar_stream::{StreamError, TarReader};

use crate::read_ahead::{self, ChunkReader};

/// Mode bits restored from the archive: permissions and sticky, without setuid and setgid.
const KEPT_MODE_BITS: u32 = 0o1777;

/// Size of the one buffer file contents are copied through.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// How many bytes are copied between two looks at the cancel flag.
const CANCEL_CHECK_BYTES: u64 = 4 * 1024 * 1024;

/// Decompressed bytes per chunk handed from the inflating thread to the unpacking one...
const INFLATED_CHUNK_BYTES: usize = 1024 * 1024;
/// ...and how many chunks it may run ahead: memory stays bounded.
const INFLATED_CHUNKS_AHEAD: usize = 4;

/// Longest part of an entry's name put in a message or a log line, in characters: enough
/// to recognise it, short enough that a hostile name cannot flood the log.
const SHOWN_NAME_CHARS: usize = 200;

/// How an archive is restored.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// `(uid, gid)` given to everything the restore creates, when set (`system.user`).
    pub owner: Option<(u32, u32)>,
    /// Most bytes of file content the restore may write (`system.backups.restore_max_bytes`);
    /// `None` for no limit.
    pub max_bytes: Option<u64>,
    /// How the free space of the server's filesystem is asked (`fstatvfs` by default).
    pub space: SpaceProbe,
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
    /// Bytes of file content written (uncompressed; a sparse file's holes are not written).
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
    /// An entry's name or link target is longer than an archive's paths may be.
    #[error("refusing the archive {place}: an entry's {what} is {size} bytes long, more than the {limit} a path may have in an archive")]
    NameTooLong {
        /// Where in the archive, as for [`ExtractError::Archive`].
        place: String,
        /// `name` or `link target`.
        what: &'static str,
        /// Its length in bytes.
        size: u64,
        /// The longest accepted.
        limit: u64,
    },
    /// A PAX header or a sparse map is larger than any archive needs.
    #[error(
        "refusing the archive {place}: a {what} of {size} is larger than the {limit} accepted"
    )]
    HeaderTooLarge {
        /// Where in the archive, as for [`ExtractError::Archive`].
        place: String,
        /// `PAX header` (bytes) or `sparse map` (extents).
        what: &'static str,
        /// Its size.
        size: u64,
        /// The largest accepted.
        limit: u64,
    },
    /// The archive holds more file content than `system.backups.restore_max_bytes`.
    #[error("the archive holds more than the {limit} bytes of file content a restore may write (system.backups.restore_max_bytes)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The server's filesystem is about to run out of space.
    #[error("the server's disk is nearly full: {available} bytes free, {reserve} of which are kept free")]
    DiskFull {
        /// Bytes free on the filesystem when the restore stopped.
        available: u64,
        /// Bytes a restore leaves free.
        reserve: u64,
    },
    /// The free space of the server's filesystem could not be read.
    #[error("cannot read the free space of the server's disk: {0}")]
    SpaceUnknown(io::Error),
    /// An entry breaks a rule of the module documentation: the archive is refused.
    #[error("refusing {entry:?}: {reason}")]
    Refused {
        /// The entry's path as the archive has it (shortened).
        entry: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Writing an entry into the server directory failed.
    #[error("cannot restore {entry:?}: {action}: {source}")]
    Io {
        /// The entry's path as the archive has it (shortened).
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
    cancel: &CancellationToken,
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
    extract_archive_at(compressed, root_fd, options, progress, on_entry, cancel)
}

/// [`extract_archive`] into the directory open as `root_fd`, never resolving the root's
/// path again (the restore opens it once with `O_NOFOLLOW`).
pub fn extract_archive_at<R: Read + Send>(
    compressed: R,
    root_fd: OwnedFd,
    options: &ExtractOptions,
    progress: &ExtractProgress,
    on_entry: &mut dyn FnMut(&Path),
    cancel: &CancellationToken,
) -> Result<ExtractSummary, ExtractError> {
    let mut extractor = Extractor {
        dirs: DirCache::new(root_fd, options.owner),
        owner: options.owner,
        progress,
        cancel,
        pending: PendingDirs::default(),
        budget: Budget::new(options.max_bytes, options.space.clone()),
        summary: ExtractSummary::default(),
        buffer: vec![0; COPY_BUFFER_BYTES],
    };
    // Inflating and unpacking overlap: one thread gunzips while this one writes files, so
    // a restore takes about the longer of the two rather than their sum.
    std::thread::scope(|scope| {
        let (chunks, inflated) = read_ahead::channel(INFLATED_CHUNKS_AHEAD);
        let decoder = MultiGzDecoder::new(compressed);
        scope.spawn(move || chunks.send_from_reader(decoder, INFLATED_CHUNK_BYTES, None));
        unpack(inflated.into_reader(), &mut extractor, on_entry, cancel)
    })?;
    Ok(extractor.summary)
}

/// Unpacks every entry of the decompressed tar stream, then reads the rest of the stream
/// (so every gzip CRC is checked) and applies the last directory modes and mtimes.
fn unpack(
    reader: ChunkReader,
    extractor: &mut Extractor<'_>,
    on_entry: &mut dyn FnMut(&Path),
    cancel: &CancellationToken,
) -> Result<(), ExtractError> {
    let mut archive = TarReader::new(reader);
    let mut last: Option<String> = None;
    loop {
        check_cancelled(cancel)?;
        let entry = match archive.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(err) => return Err(stream_error(err, &last)),
        };
        last = Some(extractor.restore_entry(entry, &mut archive, on_entry)?);
    }
    extractor.drain(archive.into_inner())?;
    extractor.pending.finish(&mut extractor.dirs)
}

/// Where in the archive an error after `last` happened.
fn place_after(last: &Option<String>) -> String {
    match last {
        Some(name) => format!("after {name:?}"),
        None => "at its start".to_owned(),
    }
}

fn stream_error(err: StreamError, last: &Option<String>) -> ExtractError {
    let place = place_after(last);
    match err {
        StreamError::Io(source) => ExtractError::Archive { place, source },
        StreamError::Oversized { what, size, limit }
            if what.ends_with("name") || what.starts_with("link") =>
        {
            ExtractError::NameTooLong {
                place,
                what,
                size,
                limit,
            }
        }
        StreamError::Oversized { what, size, limit } => ExtractError::HeaderTooLarge {
            place,
            what,
            size,
            limit,
        },
    }
}

fn check_cancelled(cancel: &CancellationToken) -> Result<(), ExtractError> {
    if cancel.is_cancelled() {
        Err(ExtractError::Cancelled)
    } else {
        Ok(())
    }
}

/// `name` as shown in messages and logs: lossy UTF-8, at most [`SHOWN_NAME_CHARS`]
/// characters (a hostile archive's names may be 4 KiB of anything).
fn shown(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    match text.char_indices().nth(SHOWN_NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// A modification time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mtime {
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

fn refused(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: shown(entry.as_bytes()),
        reason: reason.into(),
    }
}

fn io_error(entry: &str, action: &str, source: io::Error) -> ExtractError {
    ExtractError::Io {
        entry: shown(entry.as_bytes()),
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

#[cfg(test)]
mod tests;

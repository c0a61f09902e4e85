//! The server's files as tar entries: a sorted walk that never follows symlinks, keeping
//! directories (empty ones too), regular files, symlinks as links, modes and mtimes, with
//! each file's size pinned at stat time so a file that changes while it is read never fails
//! the backup.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use walkdir::WalkDir;

use super::ignore_rules::IgnoreRules;

/// The read size for file contents: few syscalls per file, little memory.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How often a running backup logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// How far a backup has come; shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of file content archived so far.
    pub bytes_done: AtomicU64,
    /// Bytes of file content the backup will archive, from a walk before it starts.
    pub bytes_total: AtomicU64,
    /// Entries (files, directories, links) archived so far.
    pub entries_done: AtomicU64,
}

/// The walk of `root` that every pass shares: sorted, never following symlinks, pruning
/// what `rules` leave out.
fn walk<'a>(
    root: &'a Path,
    rules: &'a IgnoreRules,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + 'a {
    WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(move |entry| {
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            !rules.is_ignored(relative, entry.file_type().is_dir())
        })
}

/// The bytes of file content a backup of `root` will archive: a walk of metadata only
/// (no file is opened), so a progress bar has an honest total.
pub fn measure_tree(root: &Path, rules: &IgnoreRules, cancelled: &AtomicBool) -> u64 {
    let mut total = 0;
    for entry in walk(root, rules).flatten() {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        if entry.file_type().is_file() {
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

/// Appends every entry under `root` that `rules` keep to `builder`, in sorted order.
pub fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rules: &IgnoreRules,
    progress: &Progress,
    cancelled: &AtomicBool,
) -> anyhow::Result<()> {
    let walk = walk(root, rules);
    let mut last_log = Instant::now();
    for entry in walk {
        if cancelled.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if is_vanished(err.io_error()) => {
                tracing::warn!("skipping what vanished during the walk: {err}");
                continue;
            }
            Err(err) => return Err(err).context("cannot walk the server directory"),
        };
        let relative = entry.path().strip_prefix(root).expect("walk stays in root");
        match append_entry(builder, entry.path(), relative, progress) {
            Ok(()) => {}
            Err(err) if is_vanished(Some(&err)) => {
                tracing::warn!(path = %relative.display(), "skipping a file that vanished during the backup");
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot archive {}", relative.display()))
            }
        }
        progress.entries_done.fetch_add(1, Ordering::Relaxed);
        if last_log.elapsed() >= PROGRESS_LOG_EVERY {
            last_log = Instant::now();
            tracing::info!(
                entries = progress.entries_done.load(Ordering::Relaxed),
                bytes = progress.bytes_done.load(Ordering::Relaxed),
                "backup in progress"
            );
        }
    }
    Ok(())
}

fn is_vanished(err: Option<&io::Error>) -> bool {
    err.is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    relative: &Path,
    progress: &Progress,
) -> io::Result<()> {
    let metadata = path.symlink_metadata()?;
    let file_type = metadata.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
    if file_type.is_dir() {
        header.set_size(0);
        let mut name = relative.as_os_str().to_owned();
        name.push("/");
        builder.append_data(&mut header, Path::new(&name), io::empty())
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(path)?;
        header.set_size(0);
        builder.append_link(&mut header, relative, target)
    } else if file_type.is_file() {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let size = metadata.len();
        header.set_size(size);
        // Large reads: io::copy takes a BufReader's buffer as it is, not 8 KiB at a time.
        let content = io::BufReader::with_capacity(
            READ_BUFFER_BYTES,
            PinnedSize::new(file, size, relative, progress),
        );
        builder.append_data(&mut header, relative, content)
    } else {
        // Sockets, FIFOs and devices are not server files; Wings skips sockets too.
        tracing::debug!(path = %relative.display(), "skipping a special file");
        Ok(())
    }
}

/// A file's content held to the size it had when it was stat'ed: a file that grew is cut
/// there, one that shrank is padded with zeros, so the tar header stays true.
struct PinnedSize<'a> {
    file: io::Take<File>,
    remaining: u64,
    relative: &'a Path,
    progress: &'a Progress,
    padding: bool,
}

impl<'a> PinnedSize<'a> {
    fn new(file: File, size: u64, relative: &'a Path, progress: &'a Progress) -> Self {
        Self {
            file: file.take(size),
            remaining: size,
            relative,
            progress,
            padding: false,
        }
    }
}

impl Read for PinnedSize<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = if self.padding {
            let n = buf.len().min(self.remaining as usize);
            buf[..n].fill(0);
            n
        } else {
            match self.file.read(buf)? {
                0 => {
                    tracing::warn!(
                        path = %self.relative.display(),
                        missing = self.remaining,
                        "file shrank while it was archived; padding it with zeros"
                    );
                    self.padding = true;
                    return self.read(buf);
                }
                n => n,
            }
        };
        self.remaining -= n as u64;
        self.progress
            .bytes_done
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrunken_file_is_padded_and_a_grown_one_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let progress = Progress::default();
        let mut out = Vec::new();
        PinnedSize::new(File::open(&path).unwrap(), 5, Path::new("f"), &progress)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc\0\0");
        out.clear();
        PinnedSize::new(File::open(&path).unwrap(), 2, Path::new("f"), &progress)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
        assert_eq!(progress.bytes_done.load(Ordering::Relaxed), 7);
    }
}

//! The server's files as tar entries: the walk's directories (empty ones too), regular files
//! and symlinks (as links), with modes and mtimes, and each file's size pinned at stat time
//! so a file that changes while it is read never fails the backup.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::fs::Stat;
use tokio_util::sync::CancellationToken;

use super::gzip::{BlockWrite, ParallelGzWriter};
use super::ignore_rules::IgnoreRules;
use super::walk::{shown, Entry, Kind, ServerDir, Walk};

/// A tar stream's unit: every header and every file's content fill whole records of 512
/// bytes (POSIX `ustar`).
const TAR_RECORD_BYTES: usize = 512;

/// How often a running backup logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// How far a backup has come; shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of file content archived so far.
    pub bytes_done: AtomicU64,
    /// Bytes of file content the backup will archive, from a walk beside it (0 until that
    /// walk ends).
    pub bytes_total: AtomicU64,
    /// Entries (files, directories, links) archived so far.
    pub entries_done: AtomicU64,
}

/// Tar's worst case per entry besides the content: its header block, the padding of its
/// content to a block, and a GNU long-name record (a header block plus the name padded to a
/// block) for a path over 100 bytes; the path itself is counted apart.
const TAR_ENTRY_OVERHEAD: u64 = 4 * 512;
/// A symlink's target is not read by the walk: a GNU long-link record for a target up to
/// Linux's PATH_MAX (4096), padded, plus its header block.
const TAR_SYMLINK_OVERHEAD: u64 = 4096 + 2 * 512;
/// The end of a tar archive: two zero blocks, padded to tar's 10 KiB record.
const TAR_END: u64 = 10 * 1024;
/// Deflate's worst case on incompressible data: stored blocks of at most 64 KiB with a
/// 5-byte header each, and parallel compression's per-chunk flush markers; 1/1000 of the
/// input covers both with room to spare...
const GZIP_OVERHEAD_PER_MILLE: u64 = 1;
/// ...plus gzip's header and trailer and the last blocks' framing.
const GZIP_FIXED_OVERHEAD: u64 = 64 * 1024;

/// What a walk of metadata finds before a backup starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    /// Bytes of file content the backup will archive.
    pub file_bytes: u64,
    /// An upper bound of the compressed archive's size: the content plus tar's and gzip's
    /// worst-case overhead for these entries.
    pub archive_bound: u64,
}

/// The bytes of file content a backup of `root` will archive, and an upper bound of the
/// archive's size: a walk of metadata only (no file is opened), so a progress bar has an
/// honest total and a storage that must plan its parts has a bound.
pub fn measure_tree(root: &ServerDir, rules: &IgnoreRules, cancel: &CancellationToken) -> TreeSize {
    let mut file_bytes: u64 = 0;
    let mut tar_bytes: u64 = TAR_END;
    if let Ok(mut walk) = Walk::new(root, rules) {
        while !cancel.is_cancelled() {
            match walk.next_entry() {
                Ok(Some(entry)) => {
                    let path = entry.relative.as_os_str().len() as u64 + 1;
                    tar_bytes = tar_bytes.saturating_add(TAR_ENTRY_OVERHEAD + path);
                    match entry.kind {
                        Kind::File => {
                            let size = entry.stat.st_size as u64;
                            file_bytes = file_bytes.saturating_add(size);
                            tar_bytes = tar_bytes.saturating_add(size);
                        }
                        Kind::Symlink => tar_bytes = tar_bytes.saturating_add(TAR_SYMLINK_OVERHEAD),
                        Kind::Dir | Kind::Special => {}
                    }
                }
                // The backup's own walk meets the same error and reports it.
                Ok(None) | Err(_) => break,
            }
        }
    }
    let archive_bound = tar_bytes
        .saturating_add(tar_bytes / 1000 * GZIP_OVERHEAD_PER_MILLE)
        .saturating_add(GZIP_FIXED_OVERHEAD);
    TreeSize {
        file_bytes,
        archive_bound,
    }
}

/// Appends every entry under `root` that `rules` keep to `builder`, in sorted order.
pub fn append_tree<W: TarOutput>(
    builder: &mut tar::Builder<W>,
    root: &ServerDir,
    rules: &IgnoreRules,
    progress: &Progress,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut walk = Walk::new(root, rules).context("cannot read the server directory")?;
    let mut last_log = Instant::now();
    loop {
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        let entry = match walk.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(()),
            Err(err) => return Err(err).context("cannot walk the server directory"),
        };
        if let Err(err) = append_entry(builder, &entry, progress) {
            let at = shown(entry.relative);
            return Err(err).with_context(|| format!("cannot archive {at}"));
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
}

fn append_entry<W: TarOutput>(
    builder: &mut tar::Builder<W>,
    entry: &Entry<'_>,
    progress: &Progress,
) -> io::Result<()> {
    let relative = entry.relative;
    match entry.kind {
        Kind::Dir => {
            let mut header = header_for(&entry.stat, 0);
            let mut name = relative.as_os_str().to_owned();
            name.push("/");
            builder.append_data(&mut header, Path::new(&name), io::empty())
        }
        Kind::Symlink => {
            let Some(target) = entry.read_link()? else {
                return Ok(());
            };
            let mut header = header_for(&entry.stat, 0);
            builder.append_link(&mut header, relative, target)
        }
        Kind::File => {
            let Some((file, stat)) = entry.open_file()? else {
                return Ok(());
            };
            let size = stat.st_size as u64;
            let mut header = header_for(&stat, size);
            // The header (and a GNU long-name entry before it) alone; the content follows
            // straight from the file.
            builder.append_data(&mut header, relative, io::empty())?;
            append_content(builder.get_mut(), file.as_fd(), size, relative, progress)
        }
        Kind::Special => {
            // Sockets, FIFOs and devices are not server files; Wings skips sockets too.
            tracing::debug!(path = %shown(relative), "skipping a special file");
            Ok(())
        }
    }
}

/// A GNU header for `stat`, as `tar`'s `set_metadata_in_mode(.., Complete)` fills it from
/// an `fs::Metadata`: mode, owner, mtime, type, `size`, device numbers zero.
fn header_for(stat: &Stat, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(stat.st_mtime as u64);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mode(stat.st_mode);
    header.set_entry_type(match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::Directory => tar::EntryType::Directory,
        rustix::fs::FileType::Symlink => tar::EntryType::Symlink,
        _ => tar::EntryType::Regular,
    });
    header.set_size(size);
    if let Some(gnu) = header.as_gnu_mut() {
        gnu.set_device_major(0);
        gnu.set_device_minor(0);
    }
    header
}

/// Where the tar stream goes: a writer that can also take a file's content straight from
/// its descriptor, with no buffer of its own in between.
pub trait TarOutput: Write {
    /// Appends up to `max` bytes read from `file` at its offset; how many came, 0 at its end.
    fn read_from(&mut self, file: BorrowedFd<'_>, max: usize) -> io::Result<usize>;
}

impl<W: BlockWrite + Send> TarOutput for ParallelGzWriter<W> {
    fn read_from(&mut self, file: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        ParallelGzWriter::read_from(self, file, max)
    }
}

/// Appends a file's content held to `size`, the size it had when it was stat'ed, then the
/// zeros that end its last 512-byte record: a file that grew is cut there, one that shrank is
/// padded with zeros, so the tar header stays true.
fn append_content<W: TarOutput>(
    out: &mut W,
    file: BorrowedFd<'_>,
    size: u64,
    relative: &Path,
    progress: &Progress,
) -> io::Result<()> {
    let mut remaining = size;
    while remaining > 0 {
        let max = usize::try_from(remaining).unwrap_or(usize::MAX);
        let n = out.read_from(file, max)? as u64;
        if n == 0 {
            tracing::warn!(
                path = %shown(relative),
                missing = remaining,
                "file shrank while it was archived; padding it with zeros"
            );
            io::copy(&mut io::repeat(0).take(remaining), out)?;
            progress.bytes_done.fetch_add(remaining, Ordering::Relaxed);
            break;
        }
        remaining -= n;
        progress.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    let record = TAR_RECORD_BYTES as u64;
    let padding = (record - size % record) % record;
    out.write_all(&[0; TAR_RECORD_BYTES][..padding as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests read the tar stream as it is, uncompressed.
    impl TarOutput for Vec<u8> {
        fn read_from(&mut self, file: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
            let mut buffer = vec![0; max.min(64 * 1024)];
            let n = rustix::io::read(file, &mut buffer)?;
            self.extend_from_slice(&buffer[..n]);
            Ok(n)
        }
    }

    /// Makes `levels` nested folders of 250-character names under `server`, with a file
    /// `deep.txt` saying "deep" at the bottom; returns that file's relative path.
    fn deep_tree(server: &ServerDir, levels: usize) -> String {
        use rustix::fs::{mkdirat, openat, Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir = openat(server.fd(), ".", flags, Mode::empty()).unwrap();
        let mut deep = Vec::new();
        for level in 0..levels {
            let name = format!("{level:03}{}", "n".repeat(247));
            mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            dir = openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
            deep.push(name);
        }
        let create = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC;
        let file = openat(&dir, "deep.txt", create, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&file, b"deep").unwrap();
        deep.push("deep.txt".into());
        deep.join("/")
    }

    /// The tar archive of `server`, as a backup makes it (uncompressed).
    fn archive_of(server: &ServerDir, progress: &Progress) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let rules = IgnoreRules::parse("");
        append_tree(
            &mut builder,
            server,
            &rules,
            progress,
            &CancellationToken::new(),
        )
        .unwrap();
        builder.into_inner().unwrap()
    }

    /// The bound a storage plans its parts with holds for what costs tar the most per byte
    /// of content: deep 250-byte names, many empty and one-byte files, long symlink targets,
    /// all compressed with stored (uncompressed) deflate blocks, gzip's worst case.
    #[test]
    fn the_archive_bound_covers_the_worst_archive() {
        use std::io::Write as _;
        let root = tempfile::tempdir().unwrap();
        let server = ServerDir::open(root.path()).unwrap();
        deep_tree(&server, 30);
        for i in 0..500 {
            std::fs::write(
                root.path().join(format!("f{i}")),
                if i % 2 == 0 { "" } else { "x" },
            )
            .unwrap();
        }
        for i in 0..20 {
            let target = format!("{i}{}", "t/".repeat(1_900));
            std::os::unix::fs::symlink(target, root.path().join(format!("link{i}"))).unwrap();
        }
        let measured = measure_tree(&server, &IgnoreRules::parse(""), &CancellationToken::new());
        let tar = archive_of(&server, &Progress::default());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&tar).unwrap();
        let archive = gz.finish().unwrap();
        assert!(
            archive.len() as u64 <= measured.archive_bound,
            "{} bytes archived, bound {}",
            archive.len(),
            measured.archive_bound
        );
        assert_eq!(measured.file_bytes, 250 + 4);
    }

    #[test]
    fn a_path_longer_than_path_max_is_archived_with_its_content() {
        let root = tempfile::tempdir().unwrap();
        let server = ServerDir::open(root.path()).unwrap();
        // 20 levels of 250-character names: over 5,000 bytes, PATH_MAX is 4,096.
        let deep = deep_tree(&server, 20);
        let progress = Progress::default();
        let archive = archive_of(&server, &progress);
        let mut archive = tar::Archive::new(archive.as_slice());
        let mut found = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap() == Path::new(&deep) {
                let mut content = String::new();
                entry.read_to_string(&mut content).unwrap();
                found = Some(content);
            }
        }
        assert_eq!(found.as_deref(), Some("deep"));
        assert_eq!(progress.entries_done.load(Ordering::Relaxed), 21);
    }

    #[test]
    fn a_path_over_the_archive_limit_is_skipped_so_the_backup_restores() {
        use crate::archive::MAX_ENTRY_PATH_BYTES;
        use crate::restore::extract::{extract_archive, ExtractOptions, ExtractProgress};
        let root = tempfile::tempdir().unwrap();
        let server = ServerDir::open(root.path()).unwrap();
        // 270 levels of 251 bytes ("name/"): 67,770 bytes, over the 65,536 limit.
        let deep = deep_tree(&server, 270);
        let archive = archive_of(&server, &Progress::default());
        let mut longest = 0;
        for entry in tar::Archive::new(archive.as_slice()).entries().unwrap() {
            let path = entry.unwrap().path().unwrap().into_owned();
            assert!(path != Path::new(&deep), "the deepest file is skipped");
            longest = longest.max(path.as_os_str().len());
        }
        // Everything up to the limit is kept.
        assert!(
            longest + 2 + 251 > MAX_ENTRY_PATH_BYTES,
            "kept up to {longest} bytes"
        );
        // And aerie's own restore takes the whole archive.
        let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzipped.write_all(&archive).unwrap();
        let target = tempfile::tempdir().unwrap();
        let summary = extract_archive(
            gzipped.finish().unwrap().as_slice(),
            target.path(),
            &ExtractOptions::default(),
            &ExtractProgress::default(),
            &mut |_| {},
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(summary.entries > 250, "{summary:?}");
    }

    #[test]
    fn a_shrunken_file_is_padded_and_a_grown_one_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let progress = Progress::default();
        let content = |size| {
            let file = std::fs::File::open(&path).unwrap();
            let mut out = Vec::new();
            append_content(&mut out, file.as_fd(), size, Path::new("f"), &progress).unwrap();
            out
        };
        let shrunk = content(5);
        assert_eq!(shrunk[..5], *b"abc\0\0");
        assert_eq!(shrunk.len(), TAR_RECORD_BYTES, "padded to a whole record");
        assert!(shrunk[3..].iter().all(|&b| b == 0));
        let grown = content(2);
        assert_eq!(grown[..2], *b"ab");
        assert_eq!(grown.len(), TAR_RECORD_BYTES);
        assert!(grown[2..].iter().all(|&b| b == 0));
        assert_eq!(progress.bytes_done.load(Ordering::Relaxed), 7);
    }
}

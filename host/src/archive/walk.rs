//! A walk of a server's tree that can never leave it, whatever its hostile owner swaps when:
//! every child is opened relative to its parent's descriptor with `O_NOFOLLOW` and checked
//! against its `fstatat`, so a folder swapped for a symlink mid-backup is skipped, never
//! followed. Iterative, sorted by name, with a bounded number of open descriptors.

use std::ffi::{CStr, CString, OsStr};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use rustix::fs::{fstat, openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::ignore_rules::IgnoreRules;

/// Directory descriptors a walk holds at most (the server root's not counted). Deeper
/// directories that still have entries to visit are closed and reopened from a held
/// ancestor when the walk comes back to them; 64 is far below the default limit of 1,024
/// descriptors a process has, so many backups can run at once.
const MAX_OPEN_DIRS: usize = 64;

/// Levels below the root beyond which a subtree is skipped, logged: deeper than any real
/// server, and it bounds the walk's memory (one frame per level) and its time (reopening
/// a closed level costs an `openat` per level above it). Linux itself has no depth limit.
const MAX_DEPTH: usize = 8192;

/// The longest path, in bytes, an archive entry may have: a backup skips (logged) what is
/// longer, and a restore refuses it, so every archive aerie writes, aerie can restore. Far
/// beyond Linux's `PATH_MAX` (4096: both sides work relative to directory descriptors, so
/// deeper paths are fine), yet small enough that a hostile archive's names stay cheap.
pub const MAX_ENTRY_PATH_BYTES: usize = 64 * 1024;

/// Characters of a path a log line shows: a path inside a server can be far longer than
/// `PATH_MAX`, and its owner chooses it.
const LOGGED_PATH_CHARS: usize = 200;

/// How a directory is opened: never through a symlink, never anything but a directory.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How a file is opened: never through a symlink; non-blocking so that a FIFO swapped in
/// for a file cannot hang the backup (reads of regular files ignore the flag).
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// A server's root directory, opened once and never through a symlink.
pub struct ServerDir {
    fd: OwnedFd,
}

impl ServerDir {
    /// Opens `path`, refusing a symlink or anything but a directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        match openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Self { fd }),
            // With O_DIRECTORY, Linux answers ENOTDIR for a symlink, even one to a directory.
            Err(Errno::LOOP | Errno::NOTDIR) if path.is_symlink() => {
                bail!("the server directory is a symlink; refusing to follow it")
            }
            Err(Errno::NOTDIR) => bail!("the server directory is not a directory"),
            Err(err) => bail!("cannot open the server directory: {err}"),
        }
    }

    /// The root's descriptor, to open files in it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What an entry is, from its `fstatat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory; its contents follow it.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link, never followed.
    Symlink,
    /// A socket, FIFO or device: not a server file.
    Special,
}

/// One entry of the walk; valid until the next call to [`Walk::next_entry`].
pub struct Entry<'w> {
    /// Its path relative to the server root.
    pub relative: &'w Path,
    /// What it is.
    pub kind: Kind,
    /// Its `fstatat` (not following a symlink).
    pub stat: Stat,
    /// The directory holding a file or symlink entry, and its name there (a directory
    /// entry is opened by the walk itself, not through these).
    parent: BorrowedFd<'w>,
    name: &'w CStr,
}

impl Entry<'_> {
    /// Opens a [`Kind::File`] entry and returns it with the `fstat` of what was opened;
    /// `None`, logged, when it vanished or is no longer the file that was stat'ed.
    pub fn open_file(&self) -> io::Result<Option<(File, Stat)>> {
        let fd = match openat(self.parent, self.name, FILE_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(err) if changed(err) => {
                skipped(self.relative, err);
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        let stat = fstat(&fd)?;
        if !same_file(&stat, &self.stat) {
            swapped(self.relative);
            return Ok(None);
        }
        Ok(Some((File::from(fd), stat)))
    }

    /// A [`Kind::Symlink`] entry's target; `None`, logged, when it vanished or is no longer
    /// a link.
    pub fn read_link(&self) -> io::Result<Option<PathBuf>> {
        match readlinkat(self.parent, self.name, Vec::new()) {
            Ok(target) => Ok(Some(OsStr::from_bytes(target.as_bytes()).into())),
            // EINVAL: the name is no longer a symlink.
            Err(err) if changed(err) || err == Errno::INVAL => {
                skipped(self.relative, err);
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// A directory on the walk's stack.
struct Frame {
    /// Its descriptor; `None` once closed to keep the bound (reopened when needed) or
    /// because it has nothing left to visit.
    fd: Option<OwnedFd>,
    /// Its name in its parent (empty for the root).
    name: CString,
    /// Its device and inode, to check a reopened descriptor is the same directory.
    dev: u64,
    ino: u64,
    /// Its entries still to visit, sorted by name.
    children: std::vec::IntoIter<CString>,
}

/// A directory yielded and not yet entered.
struct Pending {
    name: CString,
    stat: Stat,
}

/// The walk of a server's tree (its root excluded): each directory, then its contents,
/// sorted by name; pruning what the ignore rules leave out; skipping (logged) whatever
/// vanishes, is swapped or changes type while it runs.
pub struct Walk<'a> {
    root: BorrowedFd<'a>,
    rules: &'a IgnoreRules,
    /// `stack[0]` is the root, whose descriptor is `root`.
    stack: Vec<Frame>,
    /// The last yielded entry's path relative to the root.
    relative: PathBuf,
    /// The last yielded entry's name, for [`Entry`].
    name: CString,
    /// The last yielded entry was not a directory: its name leaves `relative` next time.
    leaf_yielded: bool,
    /// The last yielded entry was a directory: it is entered next time.
    pending: Option<Pending>,
}

impl<'a> Walk<'a> {
    /// A walk of `root` that leaves out what `rules` ignore.
    pub fn new(root: &'a ServerDir, rules: &'a IgnoreRules) -> io::Result<Self> {
        let root_stat = fstat(root.fd())?;
        let mut walk = Self {
            root: root.fd(),
            rules,
            stack: Vec::new(),
            relative: PathBuf::new(),
            name: CString::default(),
            leaf_yielded: false,
            pending: None,
        };
        let children = read_sorted(root.fd())?;
        walk.stack.push(Frame {
            fd: None,
            name: CString::default(),
            dev: root_stat.st_dev,
            ino: root_stat.st_ino,
            children: children.into_iter(),
        });
        Ok(walk)
    }

    /// The next entry, `None` at the end. An error is one the backup cannot skip (a
    /// directory it may not read, an I/O error); what changed under the walk is skipped.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry<'_>>> {
        let advanced = self.advance().map_err(|err| {
            io::Error::new(err.kind(), format!("at {}: {err}", shown(&self.relative)))
        })?;
        let Some((kind, stat)) = advanced else {
            return Ok(None);
        };
        let parent = if kind == Kind::Dir {
            // Not opened through the entry: a directory is entered by the walk itself.
            self.root
        } else {
            self.dir_fd(self.stack.len() - 1)
                .expect("the directory being visited is open")
        };
        Ok(Some(Entry {
            relative: &self.relative,
            kind,
            stat,
            parent,
            name: &self.name,
        }))
    }

    /// Moves to the next entry to yield and returns what it is.
    fn advance(&mut self) -> io::Result<Option<(Kind, Stat)>> {
        if self.leaf_yielded {
            self.relative.pop();
            self.leaf_yielded = false;
        }
        if let Some(pending) = self.pending.take() {
            if !self.enter(pending)? {
                self.relative.pop();
            }
        }
        loop {
            let top = self.stack.len() - 1;
            let Some(name) = self.stack[top].children.next() else {
                if top == 0 {
                    return Ok(None);
                }
                self.stack.pop();
                self.relative.pop();
                continue;
            };
            if self.dir_fd(top).is_none() && !self.reopen(top)? {
                continue;
            }
            let parent = self.dir_fd(top).expect("reopened");
            let stat = statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW);
            self.relative.push(OsStr::from_bytes(name.to_bytes()));
            let stat = match stat {
                Ok(stat) => stat,
                Err(err) if changed(err) => {
                    skipped(&self.relative, err);
                    self.relative.pop();
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let kind = kind_of(&stat);
            if self.rules.is_ignored(&self.relative, kind == Kind::Dir) {
                self.relative.pop();
                continue;
            }
            // A directory's entry carries a trailing `/`; GNU's long-name block, a NUL.
            if self.relative.as_os_str().len() + 2 > MAX_ENTRY_PATH_BYTES {
                tracing::warn!(
                    path = %shown(&self.relative),
                    "skipping a path longer than {MAX_ENTRY_PATH_BYTES} bytes: no restore could take it"
                );
                self.relative.pop();
                continue;
            }
            if kind == Kind::Dir {
                if self.stack.len() > MAX_DEPTH {
                    tracing::warn!(
                        path = %shown(&self.relative),
                        "skipping a directory deeper than {MAX_DEPTH} levels"
                    );
                    self.relative.pop();
                    continue;
                }
                self.pending = Some(Pending { name, stat });
            } else {
                self.name = name;
                self.leaf_yielded = true;
            }
            return Ok(Some((kind, stat)));
        }
    }

    /// Opens the directory yielded last and pushes it; false (logged) when it vanished or
    /// is no longer the directory that was stat'ed.
    fn enter(&mut self, pending: Pending) -> io::Result<bool> {
        let top = self.stack.len() - 1;
        let parent = self
            .dir_fd(top)
            .expect("the directory being visited is open");
        let fd = match openat(parent, &pending.name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(err) if changed(err) => {
                skipped(&self.relative, err);
                return Ok(false);
            }
            Err(err) => return Err(err.into()),
        };
        let stat = fstat(&fd)?;
        if !same_file(&stat, &pending.stat) {
            swapped(&self.relative);
            return Ok(false);
        }
        let children = read_sorted(fd.as_fd())?;
        if top > 0 && self.stack[top].children.len() == 0 {
            // Nothing left to open in the parent: it is never needed again.
            self.stack[top].fd = None;
        }
        self.stack.push(Frame {
            fd: Some(fd),
            name: pending.name,
            dev: stat.st_dev,
            ino: stat.st_ino,
            children: children.into_iter(),
        });
        self.keep_bound();
        Ok(true)
    }

    /// Reopens `stack[index]`, closed to keep the bound, from its nearest open ancestor,
    /// one level at a time as it was first opened. False (logged) when a level is no longer
    /// the directory it was: the rest of those levels is skipped.
    fn reopen(&mut self, index: usize) -> io::Result<bool> {
        let anchor = (0..index)
            .rev()
            .find(|&i| self.dir_fd(i).is_some())
            .expect("the root is always open");
        for level in anchor + 1..=index {
            let parent = self.dir_fd(level - 1).expect("opened just before");
            let frame = &self.stack[level];
            let reopened = match openat(parent, &frame.name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Some(fstat(&fd)?)
                    .filter(|stat| stat.st_dev == frame.dev && stat.st_ino == frame.ino)
                    .map(|_| fd),
                Err(err) if changed(err) => None,
                Err(err) => return Err(err.into()),
            };
            let Some(fd) = reopened else {
                let moved: PathBuf = self.relative.components().take(level).collect();
                swapped(&moved);
                for frame in &mut self.stack[level..=index] {
                    frame.children = Vec::new().into_iter();
                }
                return Ok(false);
            };
            self.stack[level].fd = Some(fd);
            // Levels passed through and far above the top are closed again at once, so
            // the walk never holds more than the bound even while reopening.
            let above = level - 1;
            if above > anchor
                && (self.stack[above].children.len() == 0 || index - above >= MAX_OPEN_DIRS / 2)
            {
                self.stack[above].fd = None;
            }
        }
        self.keep_bound();
        Ok(true)
    }

    /// Closes the shallowest open directories (never the root nor the one being visited)
    /// until at most [`MAX_OPEN_DIRS`] are open.
    fn keep_bound(&mut self) {
        let mut open = self.open_dirs();
        let top = self.stack.len() - 1;
        for frame in &mut self.stack[1..top] {
            if open <= MAX_OPEN_DIRS {
                break;
            }
            if frame.fd.take().is_some() {
                open -= 1;
            }
        }
    }

    /// Directory descriptors the walk holds, the root's not counted.
    fn open_dirs(&self) -> usize {
        self.stack.iter().filter(|frame| frame.fd.is_some()).count()
    }

    fn dir_fd(&self, index: usize) -> Option<BorrowedFd<'_>> {
        if index == 0 {
            Some(self.root)
        } else {
            self.stack[index].fd.as_ref().map(|fd| fd.as_fd())
        }
    }
}

/// The names in a directory, sorted as bytes (the order archives have always had), without
/// `.` and `..`.
fn read_sorted(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn kind_of(stat: &Stat) -> Kind {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Special,
    }
}

/// True when `opened` (an `fstat`) is the entry `seen` (its `fstatat`): same kind, same
/// device and inode.
fn same_file(opened: &Stat, seen: &Stat) -> bool {
    kind_of(opened) == kind_of(seen) && opened.st_dev == seen.st_dev && opened.st_ino == seen.st_ino
}

/// Errors that mean the entry changed under the walk: it vanished (`ENOENT`), became a
/// symlink (`ELOOP` from `O_NOFOLLOW`), stopped being a directory (`ENOTDIR`) or became a
/// socket (`ENXIO`).
fn changed(err: Errno) -> bool {
    matches!(
        err,
        Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::NXIO
    )
}

fn skipped(relative: &Path, err: Errno) {
    tracing::warn!(path = %shown(relative), "skipping what changed during the backup: {err}");
}

fn swapped(relative: &Path) {
    tracing::warn!(path = %shown(relative), "skipping what was swapped during the backup");
}

/// `path` for a log line: at most [`LOGGED_PATH_CHARS`] characters, then an ellipsis.
pub fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut shown = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == LOGGED_PATH_CHARS {
            let _ = write!(shown, "… ({} bytes)", path.as_os_str().len());
            break;
        }
        shown.push(c);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{mkdirat, renameat_with, RenameFlags};
    use std::os::unix::fs::symlink;

    /// Walks `root` whole: (relative path, kind) in the walk's order.
    fn walk_all(root: &Path, rules: &IgnoreRules) -> Vec<(String, Kind)> {
        let dir = ServerDir::open(root).unwrap();
        let mut walk = Walk::new(&dir, rules).unwrap();
        let mut seen = Vec::new();
        while let Some(entry) = walk.next_entry().unwrap() {
            seen.push((entry.relative.to_string_lossy().into_owned(), entry.kind));
        }
        seen
    }

    /// Exchanges two names in `dir` atomically, as a hostile server owner does.
    fn exchange(dir: &Path, a: &str, b: &str) {
        let fd = ServerDir::open(dir).unwrap();
        renameat_with(fd.fd(), a, fd.fd(), b, RenameFlags::EXCHANGE).unwrap();
    }

    /// A directory outside the server root with a secret in it.
    fn outside() -> tempfile::TempDir {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "shadow").unwrap();
        outside
    }

    #[test]
    fn entries_come_sorted_by_name_each_directory_before_its_contents_minus_ignored() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a/c", "B", "cache/deep"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        for file in ["a/b", "a/c/x", "b", "x.log", "cache/deep/f"] {
            std::fs::write(root.path().join(file), "x").unwrap();
        }
        symlink("nowhere", root.path().join("link")).unwrap();
        let seen = walk_all(root.path(), &IgnoreRules::parse("*.log\ncache/\n"));
        assert_eq!(
            seen,
            [
                ("B", Kind::Dir),
                ("a", Kind::Dir),
                ("a/b", Kind::File),
                ("a/c", Kind::Dir),
                ("a/c/x", Kind::File),
                ("b", Kind::File),
                ("link", Kind::Symlink),
            ]
            .map(|(name, kind)| (name.to_string(), kind))
        );
    }

    #[test]
    fn a_symlink_where_a_directory_was_is_not_followed() {
        let outside = outside();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/inside"), "mine").unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        symlink(outside.path(), root.path().join("plain")).unwrap();

        let dir = ServerDir::open(root.path()).unwrap();
        let rules = IgnoreRules::parse("");
        let mut walk = Walk::new(&dir, &rules).unwrap();
        let first = walk.next_entry().unwrap().unwrap();
        assert_eq!((first.relative, first.kind), (Path::new("d"), Kind::Dir));
        // Stat'ed as a directory, a symlink to outside once the walk enters it.
        exchange(root.path(), "d", "link");
        let mut seen = vec![];
        while let Some(entry) = walk.next_entry().unwrap() {
            seen.push((entry.relative.to_string_lossy().into_owned(), entry.kind));
        }
        assert_eq!(
            seen,
            [
                ("link", Kind::Dir),
                ("link/inside", Kind::File),
                ("plain", Kind::Symlink),
            ]
            .map(|(name, kind)| (name.to_string(), kind)),
            "the swapped directory is skipped, never followed"
        );
    }

    #[test]
    fn a_directory_swapped_for_another_between_stat_and_open_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a", "b"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
            std::fs::write(root.path().join(dir).join("f"), dir).unwrap();
        }
        let dir = ServerDir::open(root.path()).unwrap();
        let rules = IgnoreRules::parse("");
        let mut walk = Walk::new(&dir, &rules).unwrap();
        assert_eq!(walk.next_entry().unwrap().unwrap().relative, Path::new("a"));
        exchange(root.path(), "a", "b");
        let mut seen = vec![];
        while let Some(entry) = walk.next_entry().unwrap() {
            seen.push(entry.relative.to_string_lossy().into_owned());
        }
        assert_eq!(seen, ["b", "b/f"], "not a's header with b's contents");
    }

    #[test]
    fn a_file_swapped_between_stat_and_open_is_skipped() {
        let outside = outside();
        let root = tempfile::tempdir().unwrap();
        for name in ["f", "g", "h"] {
            std::fs::write(root.path().join(name), name).unwrap();
        }
        symlink(outside.path().join("secret"), root.path().join("link")).unwrap();
        let dir = ServerDir::open(root.path()).unwrap();
        let rules = IgnoreRules::parse("");
        let mut walk = Walk::new(&dir, &rules).unwrap();

        // Another file renamed over it.
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!((entry.relative, entry.kind), (Path::new("f"), Kind::File));
        std::fs::rename(root.path().join("h"), root.path().join("f")).unwrap();
        assert!(entry.open_file().unwrap().is_none());

        // A symlink to a file outside.
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!(entry.relative, Path::new("g"));
        exchange(root.path(), "g", "link");
        assert!(entry.open_file().unwrap().is_none());

        // A FIFO: skipped at once, never waited on.
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!(entry.relative, Path::new("link"));
        let entry = walk.next_entry();
        assert!(
            entry.unwrap().is_none(),
            "h was renamed away before the walk met it"
        );
        let root2 = tempfile::tempdir().unwrap();
        std::fs::write(root2.path().join("f"), "f").unwrap();
        let dir2 = ServerDir::open(root2.path()).unwrap();
        let mut walk2 = Walk::new(&dir2, &rules).unwrap();
        let entry = walk2.next_entry().unwrap().unwrap();
        rustix::fs::unlinkat(dir2.fd(), "f", AtFlags::empty()).unwrap();
        rustix::fs::mknodat(
            dir2.fd(),
            "f",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(entry.open_file().unwrap().is_none());

        // Untouched, it opens.
        std::fs::write(root2.path().join("g"), "g").unwrap();
        let mut walk3 = Walk::new(&dir2, &rules).unwrap();
        walk3.next_entry().unwrap();
        let entry = walk3.next_entry().unwrap().unwrap();
        let (mut file, stat) = entry.open_file().unwrap().unwrap();
        assert_eq!(stat.st_size, 1);
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "g");
    }

    #[test]
    fn vanished_entries_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("a")).unwrap();
        std::fs::write(root.path().join("a/x"), "x").unwrap();
        for name in ["b", "c", "d"] {
            std::fs::write(root.path().join(name), name).unwrap();
        }
        symlink("x", root.path().join("e")).unwrap();
        let dir = ServerDir::open(root.path()).unwrap();
        let rules = IgnoreRules::parse("");
        let mut walk = Walk::new(&dir, &rules).unwrap();
        // Listed, stat'ed, then gone: a directory, a later file, a file being opened, a link.
        assert_eq!(walk.next_entry().unwrap().unwrap().relative, Path::new("a"));
        std::fs::remove_dir_all(root.path().join("a")).unwrap();
        std::fs::remove_file(root.path().join("c")).unwrap();
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!(entry.relative, Path::new("b"));
        std::fs::remove_file(root.path().join("b")).unwrap();
        assert!(entry.open_file().unwrap().is_none());
        assert_eq!(walk.next_entry().unwrap().unwrap().relative, Path::new("d"));
        let entry = walk.next_entry().unwrap().unwrap();
        assert_eq!(
            (entry.relative, entry.kind),
            (Path::new("e"), Kind::Symlink)
        );
        std::fs::remove_file(root.path().join("e")).unwrap();
        assert!(entry.read_link().unwrap().is_none());
        assert!(walk.next_entry().unwrap().is_none());
    }

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let outside = outside();
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("server");
        symlink(outside.path(), &root).unwrap();
        let err = ServerDir::open(&root).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the server directory is a symlink; refusing to follow it"
        );
    }

    /// `depth` nested directories `d`, each also holding a file `z` after it (so every
    /// level has something left to visit after its subtree); returns the deepest's path.
    fn deep_tree(root: &Path, depth: usize) -> String {
        let mut dir = ServerDir::open(root).unwrap().fd;
        let mut relative = String::new();
        for _ in 0..depth {
            mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
            let z = openat(
                &dir,
                "z",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            );
            drop(z.unwrap());
            dir = openat(&dir, "d", DIR_FLAGS, Mode::empty()).unwrap();
            relative.push_str(if relative.is_empty() { "d" } else { "/d" });
        }
        relative
    }

    /// Removes a tree from [`deep_tree`] without recursing: the chain is pulled up a level
    /// at a time.
    fn remove_deep_tree(root: &Path) {
        let d = root.join("d");
        while d.join("d").exists() {
            std::fs::rename(d.join("d"), root.join("next")).unwrap();
            std::fs::remove_dir_all(&d).unwrap();
            std::fs::rename(root.join("next"), &d).unwrap();
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_deep_tree_walks_without_recursion_and_with_bounded_descriptors() {
        const DEPTH: usize = 5_000;
        let root = tempfile::tempdir().unwrap();
        let deepest = deep_tree(root.path(), DEPTH);
        assert!(deepest.len() > 4096, "deeper than PATH_MAX");

        let dir = ServerDir::open(root.path()).unwrap();
        let rules = IgnoreRules::parse("");
        let mut walk = Walk::new(&dir, &rules).unwrap();
        let (mut dirs, mut files, mut most_open) = (0, 0, 0);
        let mut last = String::new();
        while let Some(entry) = walk.next_entry().unwrap() {
            match entry.kind {
                Kind::Dir => dirs += 1,
                Kind::File => files += 1,
                _ => unreachable!(),
            }
            if dirs == DEPTH && files == 0 {
                assert_eq!(entry.relative, Path::new(&deepest));
            }
            last = entry.relative.to_string_lossy().into_owned();
            most_open = most_open.max(walk.open_dirs());
        }
        assert_eq!((dirs, files), (DEPTH, DEPTH));
        assert_eq!(
            last, "z",
            "each level's file after its subtree, the root's last"
        );
        assert!(
            most_open <= MAX_OPEN_DIRS,
            "{most_open} directories open at once"
        );
        remove_deep_tree(root.path());
    }

    #[test]
    fn a_log_line_shows_a_long_path_cut() {
        let long = "a/".repeat(3000);
        let shown = shown(Path::new(&long));
        assert_eq!(
            shown,
            format!("{}… (6000 bytes)", &long[..LOGGED_PATH_CHARS])
        );
        assert_eq!(super::shown(Path::new("short/path")), "short/path");
    }
}

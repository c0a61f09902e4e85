//! Emptying a server directory before a truncating restore: iterative, so that no depth can
//! overflow the stack, and relative to directory descriptors, so that a folder its owner
//! swaps for a symlink mid-way can never lead outside the root.
//!
//! - **No full paths, no symlink followed.** Every folder is opened from its parent's
//!   descriptor with `O_DIRECTORY | O_NOFOLLOW`, every entry removed with `unlinkat` on its
//!   parent's descriptor. A symlink is removed as a link; an entry that turns from a folder
//!   into a symlink or file (or back) between two steps is removed as what it is now.
//! - **Bounded descriptors.** At most [`MAX_OPEN_DIRS`] folders are held open. Going deeper
//!   closes the shallowest; climbing back to a closed folder reopens it through `..` of the
//!   folder just emptied, accepted only if it is the very folder (device and inode) recorded
//!   on the way down. Otherwise (something was moved meanwhile) it is reopened from the
//!   root, one recorded name at a time, with the same `O_NOFOLLOW` steps.
//! - **Bounded depth.** Only each level's name is kept; deeper than [`MAX_DEPTH`] levels
//!   fails the restore with a clear error and nothing else.
//! - A folder that fills again while it is emptied (the server was left running) fails the
//!   restore rather than racing its writer for ever.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{anyhow, bail};
use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Folders held open at once (the root's own descriptor aside). Far below the usual limit of
/// 1024 descriptors a process starts with, shared by every running job; reopening through
/// `..` is one `openat` and one `fstat`, so a small window costs little.
pub const MAX_OPEN_DIRS: usize = 32;

/// The deepest nesting that is emptied. A path of `PATH_MAX` (4096) bytes holds at most
/// 2048 levels, so deeper trees are only made on purpose (with `*at` calls); 100,000 levels
/// keep the recorded names under about 26 MB even at 255 bytes each.
pub const MAX_DEPTH: usize = 100_000;

/// How often one entry may change between folder and non-folder under our hands before
/// the emptying gives up on it (someone is swapping it in a loop).
const MAX_ATTEMPTS_PER_ENTRY: usize = 8;

/// Longest relative path shown in an error (its end is kept).
const SHOWN_PATH_BYTES: usize = 200;

/// Removes everything inside the directory `root` (never following a symlink, never by
/// path), keeping `root` itself.
pub fn empty_directory(root: BorrowedFd<'_>) -> anyhow::Result<()> {
    Emptier::new(root, MAX_DEPTH)?.run()
}

/// One folder on the way down from the root.
struct Frame {
    /// Its name in its parent (empty for the root).
    name: CString,
    /// Its device and inode, to recognise it when reopened through `..`.
    id: (u64, u64),
    /// Its listing, while it is held open.
    dir: Option<Dir>,
}

/// The state of one emptying.
struct Emptier<'a> {
    root: BorrowedFd<'a>,
    /// The root first, then each folder being emptied, deepest last.
    stack: Vec<Frame>,
    /// Frames from this index to the top are open; those below are closed.
    lowest_open: usize,
    max_depth: usize,
}

impl<'a> Emptier<'a> {
    fn new(root: BorrowedFd<'a>, max_depth: usize) -> anyhow::Result<Self> {
        let stat = fs::fstat(root).map_err(|e| os_error("cannot read the server directory", e))?;
        let dir =
            Dir::read_from(root).map_err(|e| os_error("cannot list the server directory", e))?;
        Ok(Self {
            root,
            stack: vec![Frame {
                name: CString::default(),
                id: (stat.st_dev, stat.st_ino),
                dir: Some(dir),
            }],
            lowest_open: 0,
            max_depth,
        })
    }

    fn run(mut self) -> anyhow::Result<()> {
        loop {
            let top = self.stack.last_mut().expect("the root stays on the stack");
            let dir = top.dir.as_mut().expect("the deepest folder is open");
            let entry = match dir.read() {
                None if self.stack.len() == 1 => return Ok(()),
                None => {
                    self.leave()?;
                    continue;
                }
                Some(Err(e)) => {
                    return Err(os_error(&format!("cannot list {}", self.shown(None)), e))
                }
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let (name, kind) = (name.to_owned(), entry.file_type());
            self.remove(name, kind == FileType::Directory)?;
        }
    }

    /// The deepest open folder's descriptor.
    fn current(&self) -> BorrowedFd<'_> {
        let top = self.stack.last().expect("the root stays on the stack");
        let dir = top.dir.as_ref().expect("the deepest folder is open");
        dir.fd().expect("a listing has a descriptor")
    }

    /// Removes entry `name` of the deepest folder: unlinks a non-folder, or descends into a
    /// folder to empty it first (`looks_like_dir` is what its listing said).
    fn remove(&mut self, name: CString, looks_like_dir: bool) -> anyhow::Result<()> {
        let mut as_dir = looks_like_dir;
        for _ in 0..MAX_ATTEMPTS_PER_ENTRY {
            if as_dir {
                match open_dir(self.current(), &name) {
                    Ok(fd) => return self.enter(name, fd),
                    Err(Errno::NOENT) => return Ok(()),
                    // A symlink or a file now: removed as itself below, never followed.
                    Err(Errno::LOOP | Errno::NOTDIR) => as_dir = false,
                    Err(e) => {
                        return Err(os_error(
                            &format!("cannot open {}", self.shown(Some(&name))),
                            e,
                        ))
                    }
                }
            } else {
                match fs::unlinkat(self.current(), &name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => return Ok(()),
                    Err(Errno::ISDIR) => as_dir = true,
                    Err(e) => {
                        return Err(os_error(
                            &format!("cannot remove {}", self.shown(Some(&name))),
                            e,
                        ))
                    }
                }
            }
        }
        bail!(
            "cannot remove {}: it keeps changing between a folder and a file",
            self.shown(Some(&name))
        )
    }

    /// Descends into the folder `name`, opened as `fd`.
    fn enter(&mut self, name: CString, fd: OwnedFd) -> anyhow::Result<()> {
        if self.stack.len() > self.max_depth {
            bail!(
                "the server directory is nested deeper than {} folders (at {}); it cannot be emptied",
                self.max_depth,
                self.shown(Some(&name))
            );
        }
        let stat = fs::fstat(&fd).map_err(|e| os_error("cannot read a folder", e))?;
        let dir = Dir::new(fd).map_err(|e| os_error("cannot list a folder", e))?;
        self.stack.push(Frame {
            name,
            id: (stat.st_dev, stat.st_ino),
            dir: Some(dir),
        });
        if self.stack.len() - self.lowest_open > MAX_OPEN_DIRS {
            self.stack[self.lowest_open].dir = None;
            self.lowest_open += 1;
        }
        Ok(())
    }

    /// The deepest folder is empty: climbs back to its parent (reopening it if it was
    /// closed) and removes it.
    fn leave(&mut self) -> anyhow::Result<()> {
        let child = self.stack.pop().expect("not the root");
        let parent = self.stack.len() - 1;
        if self.lowest_open > parent {
            let child_fd = child.dir.as_ref().expect("the deepest folder is open");
            let dir = self.reopen(parent, child_fd.fd().expect("a listing has a descriptor"))?;
            self.stack[parent].dir = Some(dir);
            self.lowest_open = parent;
        }
        drop(child.dir);
        match fs::unlinkat(self.current(), &child.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            // Swapped for a symlink or a file once emptied: removed as what it is now.
            Err(Errno::NOTDIR) => self.remove(child.name, false),
            Err(Errno::NOTEMPTY | Errno::EXIST) => bail!(
                "{} filled again while it was emptied; stop the server and restore again",
                self.shown(Some(&child.name))
            ),
            Err(e) => Err(os_error(
                &format!("cannot remove {}", self.shown(Some(&child.name))),
                e,
            )),
        }
    }

    /// Reopens the closed frame `index` through `..` of its child `child`, or, if that is
    /// not the folder recorded, from the root by the recorded names.
    fn reopen(&mut self, index: usize, child: BorrowedFd<'_>) -> anyhow::Result<Dir> {
        if let Ok(fd) = open_dir(child, c"..") {
            if fs::fstat(&fd).is_ok_and(|s| (s.st_dev, s.st_ino) == self.stack[index].id) {
                return Dir::new(fd).map_err(|e| os_error("cannot list a folder", e));
            }
        }
        let mut fd: Option<OwnedFd> = None;
        for level in 1..=index {
            let parent = fd.as_ref().map_or(self.root, |fd| fd.as_fd());
            let next = open_dir(parent, &self.stack[level].name).map_err(|e| {
                os_error(
                    &format!(
                        "{} moved while the server directory was emptied",
                        self.shown_to(level, None)
                    ),
                    e,
                )
            })?;
            let stat = fs::fstat(&next).map_err(|e| os_error("cannot read a folder", e))?;
            self.stack[level].id = (stat.st_dev, stat.st_ino);
            fd = Some(next);
        }
        match fd {
            Some(fd) => Dir::new(fd),
            None => Dir::read_from(self.root),
        }
        .map_err(|e| os_error("cannot list a folder", e))
    }

    /// The deepest folder's path relative to the root (with `name` appended), its end only
    /// when long.
    fn shown(&self, name: Option<&CStr>) -> String {
        self.shown_to(self.stack.len() - 1, name)
    }

    /// The path of frame `index` relative to the root (with `name` appended), its end only
    /// when long.
    fn shown_to(&self, index: usize, name: Option<&CStr>) -> String {
        let names = self.stack[1..=index]
            .iter()
            .map(|frame| frame.name.as_c_str())
            .chain(name);
        let mut parts: Vec<&CStr> = Vec::new();
        let mut bytes = 0;
        let mut cut = false;
        for part in names.rev() {
            if bytes + part.to_bytes().len() > SHOWN_PATH_BYTES {
                cut = true;
                break;
            }
            bytes += part.to_bytes().len() + 1;
            parts.push(part);
        }
        let mut shown = if cut {
            String::from(".../")
        } else {
            String::new()
        };
        let joined: Vec<String> = parts
            .iter()
            .rev()
            .map(|part| String::from_utf8_lossy(part.to_bytes()).into_owned())
            .collect();
        shown.push_str(&joined.join("/"));
        if shown.is_empty() {
            shown.push('.');
        }
        shown
    }
}

/// Opens folder `name` of `parent`, never following a symlink.
fn open_dir(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn os_error(what: &str, errno: Errno) -> anyhow::Error {
    anyhow!("{what}: {}", io::Error::from(errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::path::Path;

    /// Makes a chain of `depth` folders named `d` under `root` (by descriptor: the path is
    /// far longer than `PATH_MAX`), with a file every 1000 levels and at the bottom.
    fn deep_tree(root: &Path, depth: usize) {
        let mut fd = open(root);
        for level in 1..=depth {
            fs::mkdirat(&fd, c"d", Mode::from_raw_mode(0o755)).unwrap();
            fd = open_dir(fd.as_fd(), c"d").unwrap();
            if level % 1000 == 0 || level == depth {
                let file = fs::openat(
                    &fd,
                    c"f",
                    OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .unwrap();
                drop(file);
            }
        }
    }

    fn open(path: &Path) -> OwnedFd {
        fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    /// Removes a deep tree with GNU `rm` (which does not recurse on the stack) if a failed
    /// test leaves it, so the test process does not overflow its stack cleaning up.
    struct RemoveOnDrop(std::path::PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("rm")
                .arg("-rf")
                .arg(&self.0)
                .status();
        }
    }

    fn is_empty(path: &Path) -> bool {
        std::fs::read_dir(path).unwrap().next().is_none()
    }

    #[test]
    fn a_tree_20000_folders_deep_is_emptied_and_the_root_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("server");
        std::fs::create_dir(&root).unwrap();
        deep_tree(&root, 20_000);
        let _cleanup = RemoveOnDrop(root.join("d"));
        std::fs::write(root.join("top.txt"), b"top").unwrap();
        std::fs::write(dir.path().join("beside.txt"), b"beside").unwrap();

        empty_directory(open(&root).as_fd()).unwrap();

        assert!(root.is_dir(), "the root is kept");
        assert!(is_empty(&root));
        assert_eq!(
            std::fs::read(dir.path().join("beside.txt")).unwrap(),
            b"beside"
        );
    }

    #[test]
    fn symlinks_inside_are_removed_as_links_and_their_targets_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("precious.txt"), b"precious").unwrap();
        std::fs::write(outside.join("sub/deeper.txt"), b"deeper").unwrap();
        let root = dir.path().join("server");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink("../../../outside/sub", root.join("a/b/relative")).unwrap();
        std::os::unix::fs::symlink(outside.join("precious.txt"), root.join("file")).unwrap();

        empty_directory(open(&root).as_fd()).unwrap();

        assert!(is_empty(&root));
        assert_eq!(
            std::fs::read(outside.join("precious.txt")).unwrap(),
            b"precious"
        );
        assert_eq!(
            std::fs::read(outside.join("sub/deeper.txt")).unwrap(),
            b"deeper"
        );
    }

    #[test]
    fn a_tree_deeper_than_the_limit_fails_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        deep_tree(dir.path(), 60);
        let root = open(dir.path());
        let err = Emptier::new(root.as_fd(), 50)
            .unwrap()
            .run()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the server directory is nested deeper than 50 folders (at d/d/d/"),
            "{err}"
        );
        assert!(err.ends_with("); it cannot be emptied"), "{err}");
        empty_directory(root.as_fd()).unwrap();
        assert!(is_empty(dir.path()));
    }

    /// Run by `a_deep_tree_is_emptied_within_a_few_descriptors` in a child process whose
    /// descriptor limit is [`DESCRIPTOR_LIMIT`].
    #[test]
    #[ignore = "run under prlimit by a_deep_tree_is_emptied_within_a_few_descriptors"]
    fn empty_a_deep_tree_under_a_descriptor_limit() {
        let dir = tempfile::tempdir().unwrap();
        deep_tree(dir.path(), 2_000);
        let _cleanup = RemoveOnDrop(dir.path().join("d"));
        empty_directory(open(dir.path()).as_fd()).unwrap();
        assert!(is_empty(dir.path()));
    }

    /// Descriptors the child may hold: the test harness's few, the root, and the window of
    /// open folders, with room to spare.
    const DESCRIPTOR_LIMIT: usize = MAX_OPEN_DIRS + 24;

    #[test]
    fn a_deep_tree_is_emptied_within_a_few_descriptors() {
        let output = std::process::Command::new("prlimit")
            .arg(format!("--nofile={DESCRIPTOR_LIMIT}"))
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "restore::empty::tests::empty_a_deep_tree_under_a_descriptor_limit",
                "--ignored",
                "--test-threads=1",
            ])
            .output()
            .expect("prlimit (util-linux) runs");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{printed}");
        assert!(printed.contains("1 passed"), "{printed}");
    }
}

//! Server trees for restore tests: build one with every kind of entry, and snapshot one
//! (paths, kinds, modes, mtimes, contents, link targets) to compare after a round trip.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

/// What a tree holds at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir {
        /// Its permission bits.
        mode: u32,
        /// Its mtime, in seconds.
        mtime: i64,
    },
    /// A regular file.
    File {
        /// Its permission bits.
        mode: u32,
        /// Its mtime, in seconds.
        mtime: i64,
        /// Every byte of it.
        content: Vec<u8>,
    },
    /// A symlink.
    Link {
        /// Where it points, as written.
        target: String,
        /// The link's own mtime, in seconds.
        mtime: i64,
    },
}

/// Every path under `root` (relative), with what is there.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut tree = BTreeMap::new();
    visit(root, root, &mut tree);
    tree
}

fn visit(root: &Path, dir: &Path, tree: &mut BTreeMap<String, Node>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let metadata = path.symlink_metadata().unwrap();
        let mode = metadata.permissions().mode() & 0o7777;
        let node = if metadata.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                mtime: metadata.mtime(),
            }
        } else if metadata.is_dir() {
            visit(root, &path, tree);
            Node::Dir {
                mode,
                mtime: metadata.mtime(),
            }
        } else {
            Node::File {
                mode,
                mtime: metadata.mtime(),
                content: std::fs::read(&path).unwrap(),
            }
        };
        tree.insert(relative, node);
    }
}

/// Fills `root` with nested directories, an empty one, a symlink, a dangling symlink, an
/// executable, a long path and a non-ASCII name (besides whatever `root` already holds),
/// then gives every path its own mtime in the past, so a restore must set each.
pub fn populate(root: &Path) {
    let write = |path: &str, content: &[u8], mode: u32| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("server.properties", b"motd=hello\n", 0o640);
    write("start.sh", b"#!/bin/sh\necho start\n", 0o755);
    write("world/region/r.0.0.mca", &vec![9u8; 100_000], 0o600);
    write("plugins/Ünïcødé 名前/config.yml", b"a: 1\n", 0o644);
    let long = format!(
        "{}/{}/{}",
        "a".repeat(100),
        "b".repeat(100),
        "c".repeat(150)
    );
    write(&long, b"long", 0o644);
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    symlink("world/region", root.join("region-link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let mut paths: Vec<String> = snapshot(root).into_keys().collect();
    // Deepest first, so that setting a child's mtime does not move its directory's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, path) in paths.iter().enumerate() {
        set_mtime(&root.join(path), 1_600_000_000 + 3_600 * i as i64);
    }
}

/// Sets `path`'s mtime (and atime), not following a symlink.
fn set_mtime(path: &Path, seconds: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let time = libc::timespec {
        tv_sec: seconds as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: a NUL-terminated path and an array of two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// Removes everything inside `root`.
pub fn wipe(root: &Path) {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// The names in `dir`, sorted; none when it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

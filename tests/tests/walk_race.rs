//! The backup walk against a hostile server owner, end to end: folders swapped for symlinks
//! while backups run, paths longer than `PATH_MAX`, a server root that is a symlink. Nothing
//! outside the server may ever reach an archive, and no such trick may fail a backup.

use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aerie_e2e::{new_uuid, run, Node};
use rustix::fs::{mkdirat, openat, renameat_with, Mode, OFlags, RenameFlags};

const SERVER: &str = "5f0c4a57-6a2e-4c8e-9a43-3f0a1b2c3d4e";

/// The name of the file that exists only outside the server.
const MARKER: &str = "MARKER-outside-the-server";

/// The content of the files outside the server that share the names of files inside it.
const SECRET: &str = "SECRET-outside-the-server";

/// Backups taken while the swapping runs: the old walk leaked within a few.
const BACKUPS: usize = 25;

/// Directories in the swapped folder: each is a chance for a walk by full path to go
/// through the symlink.
const SWAPPED_DIRS: usize = 40;

fn open_dir(path: &Path) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    openat(rustix::fs::CWD, path, flags, Mode::empty()).unwrap()
}

/// The archive's member names, as GNU tar lists them.
fn listing(node: &Node, uuid: &str) -> String {
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path())
}

#[test]
fn a_folder_swapped_for_a_symlink_during_backups_never_leaks_what_is_outside() {
    let node = Node::new();
    let root = node.server(SERVER);
    let outside = node.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join(MARKER), "secret").unwrap();
    for i in 0..SWAPPED_DIRS {
        let name = format!("d{i:02}");
        std::fs::create_dir_all(root.join("swap").join(&name)).unwrap();
        for f in 0..5 {
            std::fs::write(root.join("swap").join(&name).join(format!("f{f}")), "x").unwrap();
        }
        // The same names outside, each holding the marker, and files of the same names
        // holding a secret: what a reader that follows a path (not the walk's descriptors)
        // would take in.
        std::fs::create_dir(outside.join(&name)).unwrap();
        std::fs::write(outside.join(&name).join(MARKER), "secret").unwrap();
        for f in 0..5 {
            std::fs::write(outside.join(&name).join(format!("f{f}")), SECRET).unwrap();
        }
    }
    symlink(&outside, root.join("swaplink")).unwrap();
    let daemon = node.start();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let dir = open_dir(&root);
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat_with(&dir, "swap", &dir, "swaplink", RenameFlags::EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..BACKUPS {
        let uuid = new_uuid();
        daemon.start_backup(SERVER, "wings", &uuid, "");
        let status = daemon.wait_for_end(SERVER, &uuid);
        outcomes.push((uuid, status));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0);

    for (uuid, status) in &outcomes {
        assert_eq!(
            status["state"],
            "completed",
            "a swap must never fail a backup: {status}\n{}",
            daemon.log()
        );
        let names = listing(&node, uuid);
        assert!(
            !names.contains(MARKER),
            "backup {uuid} holds a file from outside the server:\n{names}"
        );
        let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
        let contents = run(
            "tar",
            &["-xzOf", archive.to_str().unwrap()],
            node.dir.path(),
        );
        assert!(
            !contents.contains(SECRET),
            "backup {uuid} holds the content of a file outside the server"
        );
    }
}

/// Makes `names` nested directories under `root` one level at a time (a path this long
/// cannot be opened whole) and a file `deep.txt` in the last; returns its relative path.
fn nest(root: &Path, names: &[String]) -> String {
    let mut dir = open_dir(root);
    for name in names {
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = openat(&dir, name.as_str(), flags, Mode::empty()).unwrap();
    }
    let file = openat(
        &dir,
        "deep.txt",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, b"deep").unwrap();
    let mut relative = names.join("/");
    relative.push_str("/deep.txt");
    relative
}

#[test]
fn a_path_longer_than_path_max_is_archived() {
    let node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("top.txt"), "top").unwrap();
    // 20 levels of 250-character names: over 5,000 bytes, PATH_MAX is 4,096.
    let names: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}", "n".repeat(248)))
        .collect();
    let deep = nest(&root, &names);
    assert!(deep.len() > 4096);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    let names = listing(&node, &uuid);
    let lines: Vec<&str> = names.lines().collect();
    assert!(lines.contains(&deep.as_str()), "{} entries", lines.len());
    assert!(lines.contains(&"top.txt"));

    // GNU tar reads the deep file's content back.
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let content = run(
        "tar",
        &["-xzOf", archive.to_str().unwrap(), &deep],
        node.dir.path(),
    );
    assert_eq!(content, "deep");
}

#[test]
fn a_server_root_that_is_a_symlink_is_not_followed() {
    let node = Node::new();
    let outside = node.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join(MARKER), "secret").unwrap();
    std::fs::create_dir_all(node.data()).unwrap();
    symlink(&outside, node.data().join(SERVER)).unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    let reply = daemon.post_backup(
        SERVER,
        &serde_json::json!({"adapter": "wings", "uuid": uuid, "ignore": ""}),
    );
    if reply.status == 404 {
        // Refused up front (the server root check): nothing was read.
        assert!(!node.backup_dir().join(format!("{uuid}.tar.gz")).exists());
        return;
    }
    assert_eq!(reply.status, 202, "{reply:?}");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("the server directory is a symlink; refusing to follow it"),
        "{status}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(node.backup_dir())
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

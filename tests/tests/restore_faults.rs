//! Restores under faults: a tree too deep for recursion is emptied without killing the
//! daemon; a server root that is a symlink is no server (404) and its target is never
//! touched; a restore cut off by a crash or a stop is reported failed at the next start.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use aerie_e2e::links::serve;
use aerie_e2e::links::serve_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::tree::{populate, snapshot};
use aerie_e2e::websocket::completion_message;
use aerie_e2e::{gnu_tar_gz, new_uuid, noise, Daemon, Node, SHORT_SHUTDOWN};
use rustix::fs::{self, Mode, OFlags};
use serde_json::json;

const SERVER: &str = "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7";
const OTHER: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

fn open_dir(parent: impl AsFd, name: &std::ffi::CStr) -> OwnedFd {
    fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// A chain of `depth` folders named `d` under `root`, made by descriptor (the path is far
/// longer than `PATH_MAX`).
fn deep_tree(root: &Path, depth: usize) {
    let mut fd = fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        fs::mkdirat(&fd, c"d", Mode::from_raw_mode(0o755)).unwrap();
        fd = open_dir(&fd, c"d");
    }
}

/// Removes a very deep tree with GNU `rm` (which does not recurse on the stack) if a failed
/// test leaves it, so the test process does not overflow its own stack cleaning up.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_truncating_restore_over_a_very_deep_tree_completes_and_the_daemon_lives() {
    let node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("level.dat"), b"level").unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "completed");
    // Deeper than any recursion over it survives on a 2 MiB thread stack.
    deep_tree(&root, 20_000);
    let _cleanup = RemoveOnDrop(root.join("d"));

    let mut socket = daemon.watch(&node, SERVER);
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let frames = socket.recv_until("backup restore completed");
    assert_eq!(
        completion_message(&frames),
        "Completed server restoration from local backup.",
        "{}",
        daemon.log()
    );
    assert!(!root.join("d").exists());
    assert_eq!(std::fs::read(root.join("level.dat")).unwrap(), b"level");
    assert_eq!(daemon.status(SERVER, &uuid).status, 200, "the daemon lives");
}

/// Serves a gzip archive that never ends: the first part of `body`, then nothing (the
/// connection is held open until the test ends), so a restore from it stays running.
fn serve_stalling_archive(body: Vec<u8>) -> String {
    serve(move |mut stream| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body[..body.len() / 4]);
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(3600));
    })
}

#[test]
fn a_server_root_that_is_a_symlink_is_no_server_and_its_target_is_untouched() {
    let mut node = Node::new();
    node.system_extra = LOOPBACK_ALLOWED.into();
    let other = node.server(OTHER);
    populate(&other);
    let outside = node.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), b"precious").unwrap();
    let (other_before, outside_before) = (snapshot(&other), snapshot(&outside));
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("restored.txt"), b"restored").unwrap();
    let archive = node.dir.path().join("archive.tar.gz");
    gnu_tar_gz(&archive, source.path(), &["."]);
    let url = serve_archive(std::fs::read(&archive).unwrap());
    let daemon = node.start();

    for target in [&other, &outside] {
        let link = node.data().join(SERVER);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
        let backup = daemon.post_backup(SERVER, &json!({"adapter": "wings", "uuid": new_uuid()}));
        assert_eq!(backup.status, 404, "{backup:?}");
        assert_eq!(
            backup.error(),
            "The requested resource does not exist on this instance."
        );
        let body = json!({"adapter": "s3", "truncate_directory": true, "download_url": url});
        let restore = daemon.post_restore(SERVER, &new_uuid(), &body);
        assert_eq!(restore.status, 404, "{restore:?}");
        assert_eq!(
            restore.error(),
            "The requested resource does not exist on this instance."
        );
    }
    assert_eq!(snapshot(&other), other_before);
    assert_eq!(snapshot(&outside), outside_before);
    assert!(std::fs::read_dir(node.backup_dir())
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
}

/// A node reporting to `panel`, restoring from loopback links, with SERVER in it.
fn node_with_panel(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    // A stop cuts the endless restore after a second, not the default minute.
    node.system_extra = format!("{LOOPBACK_ALLOWED}{SHORT_SHUTDOWN}");
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    node
}

/// Starts a restore of SERVER from a link that never finishes and waits until the restore
/// is seen writing the archive's one file, which can never be whole; returns the uuid.
fn start_endless_restore(node: &Node, daemon: &Daemon) -> String {
    let source = node.dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("noise.bin"), noise(4_000_000)).unwrap();
    let archive = node.dir.path().join("endless.tar.gz");
    gnu_tar_gz(&archive, &source, &["."]);
    let url = serve_stalling_archive(std::fs::read(&archive).unwrap());
    let mut socket = daemon.watch(node, SERVER);
    let uuid = new_uuid();
    let body = json!({"adapter": "s3", "truncate_directory": false, "download_url": url});
    let reply = daemon.post_restore(SERVER, &uuid, &body);
    assert_eq!(reply.status, 202, "{reply:?}");
    loop {
        let frame = socket.recv();
        assert_ne!(frame.0, "backup restore completed", "{frame:?}");
        if frame.0 == "daemon message"
            && frame
                .1
                .as_deref()
                .is_some_and(|m| m.starts_with("(restoring): ") && m.ends_with("noise.bin"))
        {
            return uuid;
        }
    }
}

fn assert_reported_failed(panel: &PanelStandIn, uuid: &str) {
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        reports[0].path,
        format!("/api/remote/backups/{uuid}/restore")
    );
    assert_eq!(reports[0].body, json!({"successful": false}));
}

#[test]
fn a_restore_cut_off_by_a_crash_is_reported_failed_at_the_next_start() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let daemon = node.start();
    let uuid = start_endless_restore(&node, &daemon);
    daemon.crash();
    assert!(panel.received().is_empty(), "{:?}", panel.received());

    let daemon = node.start();
    assert_reported_failed(&panel, &uuid);
    assert!(daemon
        .log()
        .contains("the daemon stopped while this restore was running"));
}

#[test]
fn a_restore_cut_off_by_a_stop_is_reported_failed() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let daemon = node.start();
    let uuid = start_endless_restore(&node, &daemon);
    daemon.stop();

    let _daemon = node.start();
    assert_reported_failed(&panel, &uuid);
}

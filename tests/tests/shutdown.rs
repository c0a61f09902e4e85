//! Stopping the daemon (SIGTERM) while a restore runs: the restore is cancelled and ends as
//! failed before the process exits: recorded (no running restore left in the registry),
//! told to the websocket (`backup restore completed`) and reported to the Panel, now if it
//! answers, else exactly once at the next start.

use aerie::registry::Registry;
use aerie_e2e::links::serve_held_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::websocket::completion_message;
use aerie_e2e::websocket::Socket;
use aerie_e2e::{new_uuid, Daemon, Node};
use serde_json::json;

const SERVER: &str = "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7";

/// A link to an archive that sends its gzip header and then nothing until the returned
/// sender is dropped: a restore from it stays running, whatever the machine's speed.
fn stalled_archive() -> (String, std::sync::mpsc::Sender<()>) {
    let mut body = GZIP_HEADER.to_vec();
    body.resize(1_000_000, 0);
    serve_held_archive(body)
}

/// The ten bytes every gzip member starts with (RFC 1952 §2.3: magic, deflate, no flags,
/// no mtime, no extra flags, Unix).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A node reporting to `panel`, restoring from loopback links, with SERVER in it.
fn node_with_panel(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    node.system_extra = LOOPBACK_ALLOWED.into();
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    node
}

/// Starts a restore of SERVER from `url` and returns its uuid once `socket` has seen it
/// running (its first progress event goes out when the archive is open).
fn start_stalled_restore(daemon: &Daemon, socket: &mut Socket, url: &str) -> String {
    let uuid = new_uuid();
    let body = json!({"adapter": "s3", "truncate_directory": false, "download_url": url});
    let reply = daemon.post_restore(SERVER, &uuid, &body);
    assert_eq!(reply.status, 202, "{reply:?}");
    loop {
        let frame = socket.recv();
        assert_ne!(frame.0, "backup restore completed", "{frame:?}");
        if frame.0 == "backup restore progress" {
            return uuid;
        }
    }
}

/// The registry of `node`, opened beside (or after) the daemon.
fn registry(node: &Node) -> Registry {
    Registry::open(&node.dir.path().join("state")).unwrap()
}

fn restore_reports(panel: &PanelStandIn, uuid: &str) -> Vec<serde_json::Value> {
    panel
        .received()
        .into_iter()
        .filter(|r| r.path == format!("/api/remote/backups/{uuid}/restore"))
        .map(|r| r.body)
        .collect()
}

#[test]
fn a_restore_running_at_sigterm_ends_failed_and_is_reported_before_the_daemon_exits() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let (url, release) = stalled_archive();
    let daemon = node.start();
    let mut socket = daemon.watch(&node, SERVER);
    let uuid = start_stalled_restore(&daemon, &mut socket, &url);

    assert_eq!(daemon.stop(), Some(0));
    // The daemon has exited: whatever it sent, it sent before.
    assert_eq!(
        restore_reports(&panel, &uuid),
        vec![json!({"successful": false})],
        "{:?}",
        panel.received()
    );
    assert!(panel.violations().is_empty(), "{:?}", panel.violations());
    let frames = socket.recv_until("backup restore completed");
    assert_eq!(
        completion_message(&frames),
        "Server restoration from S3 backup failed: restore cancelled: the daemon is shutting down"
    );
    let registry = registry(&node);
    assert!(registry.running_restores().unwrap().is_empty());
    assert!(
        registry.notifications().unwrap().is_empty(),
        "nothing is left to report at the next start"
    );
    drop(release);
}

#[test]
fn a_restore_cut_short_while_the_panel_is_down_is_reported_once_at_the_next_start() {
    let mut panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let (url, release) = stalled_archive();
    let daemon = node.start();
    let mut socket = daemon.watch(&node, SERVER);
    let uuid = start_stalled_restore(&daemon, &mut socket, &url);
    panel.go_down();

    assert_eq!(daemon.stop(), Some(0));
    let frames = socket.recv_until("backup restore completed");
    assert!(completion_message(&frames).ends_with("restore cancelled: the daemon is shutting down"));
    let queued = registry(&node).notifications().unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].path, format!("/backups/{uuid}/restore"));
    assert!(registry(&node).running_restores().unwrap().is_empty());

    panel.come_back();
    let daemon = node.start();
    assert_eq!(panel.wait_for_accepted(1).len(), 1);
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(
        restore_reports(&panel, &uuid),
        vec![json!({"successful": false})],
        "{:?}",
        panel.received()
    );
    assert!(registry(&node).notifications().unwrap().is_empty());
    drop(release);
}

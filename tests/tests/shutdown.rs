//! Stopping the daemon (SIGTERM, SIGINT). The first signal drains: new backups and
//! restores are refused with a Wings-shaped 503 while the API keeps answering, and running
//! jobs get `system.shutdown_timeout` to finish on their own; a job still running then is
//! cancelled and ends as failed before the process exits 0: recorded, its sink aborted,
//! told to the websocket and reported to the Panel, now if it answers, else exactly once at
//! the next start. A second signal exits at once, and the next start recovers as after a
//! crash.

use std::fs::File;
use std::path::PathBuf;

use aerie::registry::{Registry, State};
use aerie_e2e::links::serve_held_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::websocket::completion_message;
use aerie_e2e::websocket::Socket;
use aerie_e2e::{fixture_library, make_fifo, new_uuid, noise, Daemon, Node, SHORT_SHUTDOWN};
use serde_json::json;

const SERVER: &str = "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7";

/// What a request for new work is told while the daemon drains.
const SHUTTING_DOWN: &str = "This node is shutting down; try again once it is back.";

/// The end of the log line that says the daemon drains, waiting for one job for the
/// default `system.shutdown_timeout`.
const DRAINING_ONE: &str =
    "waiting up to 60 s (system.shutdown_timeout) for the running ones to finish running=1";

/// The log line that says the timeout passed and running jobs are being cancelled.
const TIMEOUT_CUTS: &str = "system.shutdown_timeout (1 s) has passed: cancelling";

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

/// A node reporting to `panel`, restoring from loopback links, with SERVER in it, whose
/// stalled restores are cut by a short `system.shutdown_timeout`.
fn node_with_panel(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    node.system_extra = format!("{LOOPBACK_ALLOWED}{SHORT_SHUTDOWN}");
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    node
}

/// A node reporting to `panel` whose backups go to the fixture adapter `held`, storing in
/// [`store`], which holds a backup while its `.hold` FIFO is open (see [`hold_backup`]).
fn node_with_held_backups(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    std::fs::write(node.server(SERVER).join("noise.bin"), noise(300_000)).unwrap();
    let store = store(&node);
    std::fs::create_dir_all(&store).unwrap();
    node.plugins = Some(format!(
        "adapters:\n  - name: held\n    library: {}\n    config:\n      directory: {}\n",
        fixture_library().display(),
        store.display()
    ));
    node
}

/// Where the `held` adapter stores archives and leaves its markers.
fn store(node: &Node) -> PathBuf {
    node.dir.path().join("fixture-store")
}

/// Starts a backup of SERVER with the `held` adapter and returns its uuid and the write end
/// of its `.hold` FIFO: the backup waits in its adapter until that is dropped.
fn hold_backup(node: &Node, daemon: &Daemon) -> (String, File) {
    let uuid = new_uuid();
    let hold = store(node).join(format!("{uuid}.hold"));
    make_fifo(&hold);
    daemon.start_backup(SERVER, "held", &uuid, "");
    // Returns once the adapter has opened the other end: the backup is running, held.
    let holder = std::fs::OpenOptions::new().write(true).open(&hold).unwrap();
    (uuid, holder)
}

/// What is in the `held` adapter's store for backup `uuid`: which of the archive, the
/// partial file and the abort marker exist.
fn stored(node: &Node, uuid: &str) -> [bool; 3] {
    ["tar.gz", "partial", "aborted"].map(|ext| store(node).join(format!("{uuid}.{ext}")).exists())
}

/// The `successful` of every backup report the Panel received about `uuid`.
fn backup_reports(panel: &PanelStandIn, uuid: &str) -> Vec<serde_json::Value> {
    panel
        .received()
        .into_iter()
        .filter(|r| r.path == format!("/api/remote/backups/{uuid}"))
        .map(|r| r.body["successful"].clone())
        .collect()
}

#[test]
fn a_backup_running_at_sigterm_finishes_while_new_work_is_refused_with_503() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_held_backups(&panel);
    let daemon = node.start();
    let mut socket = daemon.watch(&node, SERVER);
    let (uuid, holder) = hold_backup(&node, &daemon);

    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log(DRAINING_ONE);
    let backup = daemon.post_backup(
        SERVER,
        &json!({"adapter": "held", "uuid": new_uuid(), "ignore": ""}),
    );
    assert_eq!((backup.status, backup.error()), (503, SHUTTING_DOWN));
    let restore = daemon.post_restore(
        SERVER,
        &new_uuid(),
        &json!({"adapter": "wings", "truncate_directory": false}),
    );
    assert_eq!((restore.status, restore.error()), (503, SHUTTING_DOWN));
    // Reads are still answered: the Panel sees the backup it waits for.
    assert_eq!(daemon.status(SERVER, &uuid).json["state"], "running");

    drop(holder);
    let frames = socket.recv_until(&format!("backup completed:{uuid}"));
    let completed: serde_json::Value =
        serde_json::from_str(frames.last().unwrap().1.as_deref().unwrap()).unwrap();
    assert_eq!(completed["is_successful"], true, "{frames:?}");
    assert_eq!(daemon.wait_for_exit(), Some(0));
    assert_eq!(stored(&node, &uuid), [true, false, false], "stored whole");
    let record = registry(&node).get(&uuid).unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert_eq!(backup_reports(&panel, &uuid), vec![json!(true)]);
    assert!(registry(&node).notifications().unwrap().is_empty());
}

#[test]
fn a_backup_still_running_when_the_shutdown_timeout_passes_ends_failed_and_reported() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = node_with_held_backups(&panel);
    node.system_extra = SHORT_SHUTDOWN.into();
    let daemon = node.start();
    let (uuid, holder) = hold_backup(&node, &daemon);

    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log(TIMEOUT_CUTS);
    // Only now may the backup go on: it can only end by noticing it was cancelled.
    drop(holder);
    assert_eq!(daemon.wait_for_exit(), Some(0));
    assert_eq!(
        stored(&node, &uuid),
        [false, false, true],
        "the sink was aborted"
    );
    let record = registry(&node).get(&uuid).unwrap().unwrap();
    assert_eq!(record.state, State::Failed);
    assert_eq!(backup_reports(&panel, &uuid), vec![json!(false)]);
    assert!(panel.violations().is_empty(), "{:?}", panel.violations());
    assert!(registry(&node).notifications().unwrap().is_empty());
}

#[test]
fn a_second_signal_exits_at_once_and_the_next_start_recovers_as_after_a_crash() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_held_backups(&panel);
    let daemon = node.start();
    let (uuid, _holder) = hold_backup(&node, &daemon);

    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log(DRAINING_ONE);
    // The hold is never released: only the second signal can end the daemon.
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_for_exit(), Some(1));
    assert_eq!(
        registry(&node).get(&uuid).unwrap().unwrap().state,
        State::Running,
        "left as a crash leaves it"
    );

    let daemon = node.start();
    let status = daemon.status(SERVER, &uuid).json;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(
        status["error"],
        "the daemon stopped while the backup was running"
    );
    assert_eq!(stored(&node, &uuid), [false, false, false], "nothing left");
    assert_eq!(panel.wait_for_accepted(1).len(), 1);
    assert_eq!(backup_reports(&panel, &uuid), vec![json!(false)]);
    assert_eq!(daemon.stop(), Some(0));
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

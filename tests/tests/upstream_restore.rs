//! Restores in front of Wings (`upstream:`): Wings is asked to stop the server and the
//! restore writes only once Wings reports it offline; a server that does not stop, a Wings
//! that is down or refuses, or a daemon shutting down during the wait fail the restore with
//! the server's files untouched, the Panel told and the websocket saying why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aerie_e2e::links::serve_archive;
use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::websocket::Frame;
use aerie_e2e::wings::power::{Record, Stop};
use aerie_e2e::wings::WingsStandIn;
use aerie_e2e::{gnu_tar_gz, new_uuid, Daemon, Node, HANG_GUARD, SHORT_SHUTDOWN};
use serde_json::json;

const SERVER: &str = "0b5c2d4e-6f80-4a1b-9c3d-5e7f90a1b2c3";
/// In the archive: a file the server directory does not have before the restore.
const RESTORED: &str = "world/level.dat";
/// In the server directory before the restore, not in the archive: gone after a truncating
/// restore, there while nothing was touched.
const MARKER: &str = "marker.txt";

/// A node in front of `wings_url`, reporting to `panel`, allowing `stop_timeout` seconds.
fn node(panel: &PanelStandIn, wings_url: &str, stop_timeout: u64) -> Node {
    let mut node = Node::new();
    node.extra_config = format!(
        "remote: {}\nremote_query:\n  timeout: 5\nupstream:\n  url: {wings_url}\n",
        panel.url()
    );
    // A stop cuts a restore still waiting for Wings after a second, not the default minute.
    node.system_extra =
        format!("{SHORT_SHUTDOWN}  backups:\n    restore_stop_timeout: {stop_timeout}\n");
    node
}

/// Puts a local backup `uuid` holding [`RESTORED`] in the node's backup directory, and the
/// server's directory with [`MARKER`] alone; returns the server root.
fn prepare(node: &Node, uuid: &str) -> PathBuf {
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("world")).unwrap();
    std::fs::write(source.path().join(RESTORED), b"the world").unwrap();
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    gnu_tar_gz(
        &node.backup_dir().join(format!("{uuid}.tar.gz")),
        source.path(),
        &["."],
    );
    let root = node.server(SERVER);
    std::fs::write(root.join(MARKER), b"still here").unwrap();
    root
}

/// What the server directory looks like: untouched, or restored.
fn looks(root: &Path) -> &'static str {
    match (root.join(MARKER).exists(), root.join(RESTORED).exists()) {
        (true, false) => "untouched",
        (false, true) => "restored",
        _ => "half restored",
    }
}

/// Restores `uuid` with truncation, and returns the frames up to `backup restore completed`.
fn restore(node: &Node, daemon: &Daemon, uuid: &str) -> Vec<Frame> {
    restore_from(node, daemon, uuid, "")
}

/// [`restore`] from `download_url` (none when empty).
fn restore_from(node: &Node, daemon: &Daemon, uuid: &str, download_url: &str) -> Vec<Frame> {
    let mut socket = daemon.watch(node, SERVER);
    let reply = daemon.post_restore(
        SERVER,
        uuid,
        &json!({"adapter": "wings", "truncate_directory": true, "download_url": download_url}),
    );
    assert_eq!(reply.status, 202, "{reply:?}\n{}", daemon.log());
    socket.recv_until("backup restore completed")
}

/// The last `daemon message` before `backup restore completed`: the restore's outcome.
fn outcome(frames: &[Frame]) -> String {
    let last = frames.last().map(|f| f.0.as_str());
    assert_eq!(last, Some("backup restore completed"), "{frames:?}");
    frames
        .iter()
        .rev()
        .find(|f| f.0 == "daemon message")
        .and_then(|f| f.1.clone())
        .unwrap_or_else(|| panic!("no daemon message: {frames:?}"))
}

/// Waits for the Panel's report of the restore of `uuid`, and returns its body.
fn restore_report(panel: &PanelStandIn, uuid: &str) -> serde_json::Value {
    let reports = panel.wait_for_accepted(1);
    assert_eq!(
        reports[0].path,
        format!("/api/remote/backups/{uuid}/restore")
    );
    reports[0].body.clone()
}

/// Asserts the restore failed before touching anything, with `why` in its message.
fn assert_failed_untouched(
    frames: &[Frame],
    root: &Path,
    panel: &PanelStandIn,
    uuid: &str,
    why: &str,
) {
    let message = outcome(frames);
    assert!(
        message.starts_with(
            "Server restoration from local backup failed: the server could not be stopped first, so nothing was restored: "
        ),
        "{message}"
    );
    assert!(message.contains(why), "{message}");
    assert!(
        !frames
            .iter()
            .any(|f| f.1.as_deref().is_some_and(|m| m.starts_with("(restoring)"))),
        "{frames:?}"
    );
    assert_eq!(looks(root), "untouched");
    assert_eq!(
        std::fs::read(root.join(MARKER)).unwrap(),
        b"still here".to_vec()
    );
    assert_eq!(restore_report(panel, uuid), json!({"successful": false}));
}

#[test]
fn a_running_server_is_stopped_first_and_restored_once_offline() {
    stopped_first_then_restored(false);
}

#[test]
fn a_restore_from_a_link_also_waits_for_the_stop_with_its_download_open() {
    stopped_first_then_restored(true);
}

/// A running server that takes a while to stop is stopped, and restored once offline, from
/// a local backup or (with `link`) from a download link opened before the wait.
fn stopped_first_then_restored(link: bool) {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = node(&panel, &wings.url(), 30);
    node.system_extra
        .push_str("    restore_host_allowlist: [\"127.0.0.1\"]\n");
    let uuid = new_uuid();
    let root = prepare(&node, &uuid);
    let (download_url, described) = if link {
        let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
        let url = serve_archive(std::fs::read(&archive).unwrap());
        std::fs::remove_file(&archive).unwrap();
        (url, "S3 backup")
    } else {
        (String::new(), "local backup")
    };
    // Stopping takes a while, as a game server saving its world does; the stand-in looks
    // at the server directory the moment it goes offline.
    wings
        .power
        .set_running(SERVER, Stop::After(Duration::from_millis(1500)));
    let probed = root.clone();
    wings
        .power
        .on_offline(SERVER, move || looks(&probed).into());
    let daemon = node.start();

    let frames = restore_from(&node, &daemon, &uuid, &download_url);
    assert_eq!(
        outcome(&frames),
        format!("Completed server restoration from {described}."),
        "{}",
        daemon.log()
    );
    assert_eq!(looks(&root), "restored");
    assert_eq!(
        std::fs::read(root.join(RESTORED)).unwrap(),
        b"the world".to_vec()
    );
    // The stop came first, and nothing was written until the server was offline (waited
    // for here, so that a restore that did not wait shows what the stand-in saw).
    let start = Instant::now();
    while wings.power.state(SERVER) != "offline" {
        assert!(start.elapsed() < HANG_GUARD, "{:?}", wings.power.records());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        wings.power.records(),
        vec![
            Record::Action {
                server: SERVER.into(),
                action: "stop".into(),
                wait_seconds: Some(30),
            },
            Record::WentOffline {
                server: SERVER.into(),
                probe: Some("untouched".into()),
            },
        ]
    );
    assert_eq!(wings.power.state(SERVER), "offline");
    assert_eq!(restore_report(&panel, &uuid), json!({"successful": true}));
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("asking Wings to stop the server")
                && l.contains(&uuid)
                && l.contains(SERVER)),
        "{log}"
    );
}

#[test]
fn a_server_that_never_stops_fails_the_restore_untouched() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node(&panel, &wings.url(), 2);
    let uuid = new_uuid();
    let root = prepare(&node, &uuid);
    wings.power.set_running(SERVER, Stop::Never);
    let daemon = node.start();

    let frames = restore(&node, &daemon, &uuid);
    assert_failed_untouched(
        &frames,
        &root,
        &panel,
        &uuid,
        "the server did not stop within 2 s (Wings last reported it \"stopping\")",
    );
    assert_eq!(wings.power.actions(SERVER), vec!["stop"]);
    assert_eq!(wings.power.state(SERVER), "stopping");
}

#[test]
fn wings_down_fails_the_restore_untouched() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wings_url = format!("http://127.0.0.1:{port}");
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node(&panel, &wings_url, 2);
    let uuid = new_uuid();
    let root = prepare(&node, &uuid);
    let daemon = node.start();

    // With Wings down there is no server socket to watch (it is Wings'): it closes with
    // 1011, so the reason is read from the Panel's report and the log.
    let mut socket = aerie_e2e::websocket::connect(&daemon.base, SERVER, None).unwrap();
    let closed = socket.inner().read();
    assert!(
        matches!(&closed, Ok(tungstenite::Message::Close(Some(c))) if u16::from(c.code) == 1011),
        "{closed:?}"
    );
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(restore_report(&panel, &uuid), json!({"successful": false}));
    assert_eq!(looks(&root), "untouched");
    assert_eq!(
        std::fs::read(root.join(MARKER)).unwrap(),
        b"still here".to_vec()
    );
    let log = daemon.log();
    assert!(
        log.contains("the server could not be stopped first, so nothing was restored")
            && log.contains(&format!("Wings could not be reached at {wings_url}: ")),
        "{log}"
    );
}

#[test]
fn wings_refusing_the_stop_fails_the_restore_with_its_error() {
    // Wings knows another node token: it refuses aerie's bearer.
    let wings = WingsStandIn::start("another-node-token");
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node(&panel, &wings.url(), 2);
    let uuid = new_uuid();
    let root = prepare(&node, &uuid);
    wings.power.set_running(SERVER, Stop::After(Duration::ZERO));
    let daemon = node.start();

    let frames = restore(&node, &daemon, &uuid);
    assert_failed_untouched(
        &frames,
        &root,
        &panel,
        &uuid,
        "Wings refused to stop the server (status 403): You are not authorized to access this endpoint.",
    );
    assert!(wings.power.records().is_empty());
    assert_eq!(wings.power.state(SERVER), "running");
}

/// Whether process `pid` has exited (gone, or a zombie not yet reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn a_shutdown_during_the_wait_ends_it_and_the_restore_is_reported_failed() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    // A wait far longer than the test's guard: only the shutdown can end it.
    let node = node(&panel, &wings.url(), 3600);
    let uuid = new_uuid();
    let root = prepare(&node, &uuid);
    wings.power.set_running(SERVER, Stop::Never);
    let daemon = node.start();
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &json!({"adapter": "wings", "truncate_directory": true}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let start = Instant::now();
    while wings.power.actions(SERVER).is_empty() {
        assert!(start.elapsed() < HANG_GUARD, "no stop:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    let pid = daemon.pid();
    // SAFETY: kill(2) on the daemon this test spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    while !exited(pid) {
        assert!(
            start.elapsed() < HANG_GUARD,
            "the daemon is still waiting for Wings after SIGTERM:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
    assert_eq!(looks(&root), "untouched");

    // Cut off, the restore is reported failed once the daemon is back.
    let _daemon = node.start();
    assert_eq!(restore_report(&panel, &uuid), json!({"successful": false}));
    assert_eq!(looks(&root), "untouched");
}

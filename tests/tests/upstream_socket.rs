//! The server's websocket in front of Wings (`upstream:`): the browser's socket is relayed to
//! the Wings stand-in's socket frame by frame both ways, aerie's backup frames are added to it
//! for a token with `backup.read`, closing either end closes the other, a Wings that cannot
//! be reached closes the client with 1011, and `set state` is refused for a server being
//! restored.

use aerie_e2e::links::serve_held_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::websocket::{connect, token, Frame, Socket};
use aerie_e2e::wings::{socket as wings_socket, WingsStandIn};
use aerie_e2e::{gnu_tar_gz, new_uuid, noise, Daemon, Node};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

const SERVER: &str = "3d5f7a9c-1e2b-4c6d-8e0f-a1b3c5d7e9f0";
const OTHER: &str = "4e6a8b0d-2f3c-4d7e-9f1a-b2c4d6e8f0a1";
const PANEL: &str = "https://panel.example.com";

/// A node in front of `wings`, with SERVER and OTHER holding a few files, the Panel's
/// origin allowed, and restores from loopback links allowed.
fn node(wings_url: &str) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("allowed_origins:\n  - {PANEL}\nupstream:\n  url: {wings_url}\n");
    node.system_extra = LOOPBACK_ALLOWED.into();
    for server in [SERVER, OTHER] {
        let root = node.server(server);
        for i in 0..8 {
            std::fs::write(root.join(format!("file-{i}")), noise(200_000)).unwrap();
        }
    }
    node
}

/// A socket on `server` through aerie, from the Panel's origin, authenticated with
/// `permissions`; asserts that exactly Wings' one `auth success` came back.
fn open(daemon: &Daemon, node: &Node, server: &str, permissions: &[&str]) -> Socket {
    let mut socket = connect(&daemon.base, server, Some(PANEL)).expect("the socket opens");
    let answer = socket.auth(&token(&node.token, server, permissions, 600));
    assert_eq!(answer, ("auth success".to_string(), None));
    socket
}

fn console(line: &str) -> Frame {
    ("console output".to_string(), Some(line.to_string()))
}

#[test]
fn wings_frames_pass_both_ways_in_order_with_the_browser_origin() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut socket = open(&daemon, &node, SERVER, &["*"]);

    for n in 0..200 {
        socket.send("send command", &format!("say {n}"));
    }
    for n in 0..200 {
        assert_eq!(socket.recv(), console(&format!("say {n}")));
    }
    wings.socket.console(0, 200);
    for n in 0..200 {
        // Also proves Wings' `auth success` was the only one: the next frames are Wings'.
        assert_eq!(socket.recv(), console(&format!("line {n}")));
    }

    let seen = wings.socket.connections();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].server, SERVER);
    assert_eq!(seen[0].origin.as_deref(), Some(PANEL));
    assert_eq!(seen[0].received.len(), 201);
    let first: Value = serde_json::from_str(&seen[0].received[0]).unwrap();
    assert_eq!(first["event"], "auth");
    for (n, text) in seen[0].received[1..].iter().enumerate() {
        let frame: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            frame,
            json!({"event": "send command", "args": [format!("say {n}")]})
        );
    }
}

#[test]
fn a_backup_s_frames_arrive_on_the_same_socket_as_wings_frames() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut socket = open(
        &daemon,
        &node,
        SERVER,
        &["websocket.connect", "backup.read"],
    );
    wings.socket.console(0, 3);
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let frames = socket.recv_until(&format!("backup completed:{uuid}"));
    wings.socket.console(0, 3);
    // Wings' lines, those that came during the backup and the rest after it.
    let mut lines: Vec<Frame> = frames
        .iter()
        .filter(|f| f.0 == "console output")
        .cloned()
        .collect();
    while lines.len() < 6 {
        lines.push(socket.recv());
    }
    let names: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    let position = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} frame in {names:?}"))
    };
    assert!(position("backup started") < position("backup progress"));
    assert!(position("backup progress") < position("backup completed"));
    let completed: Value =
        serde_json::from_str(frames[position("backup completed")].1.as_deref().unwrap()).unwrap();
    assert_eq!(completed["uuid"], uuid.as_str());
    assert_eq!(completed["is_successful"], true);
    // Wings' own frames went down the same socket, in their order.
    let expected: Vec<Frame> = (0..6).map(|n| console(&format!("line {n}"))).collect();
    assert_eq!(lines, expected);
}

#[test]
fn a_token_without_backup_read_gets_wings_frames_and_none_of_aeries() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut console_only = open(&daemon, &node, SERVER, &["websocket.connect"]);
    let mut reader = open(&daemon, &node, SERVER, &["*"]);
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    // Once the reader saw the end, every frame of the backup was queued for both sockets.
    reader.recv_until(&format!("backup completed:{uuid}"));
    for round in 0..3 {
        console_only.send("send command", &format!("round {round}"));
        assert_eq!(console_only.recv(), console(&format!("round {round}")));
    }
    wings.socket.console(0, 1);
    assert_eq!(console_only.recv(), console("line 0"));
}

#[test]
fn closing_the_client_closes_wings_and_wings_closing_closes_the_client() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();

    let mut socket = open(&daemon, &node, SERVER, &["*"]);
    socket.inner().close(None).unwrap();
    while socket.inner().read().is_ok() {}
    let seen = wings.socket.wait_for(0, |c| c.ended);
    assert!(seen.close_received, "{seen:?}");

    let mut socket = open(&daemon, &node, SERVER, &["*"]);
    wings.socket.close(1);
    let close = loop {
        match socket.inner().read().expect("a close frame") {
            Message::Close(close) => break close.expect("a close code"),
            other => assert!(!matches!(other, Message::Text(_)), "{other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::from(wings_socket::CLOSE_CODE));
    assert_eq!(close.reason.as_str(), wings_socket::CLOSE_REASON);
    wings.socket.wait_for(1, |c| c.ended);
}

#[test]
fn a_wings_that_cannot_be_reached_closes_the_client_with_1011() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = node(&format!("http://127.0.0.1:{port}"));
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, Some(PANEL)).expect("the upgrade");
    let Message::Close(Some(close)) = socket.inner().read().expect("a close frame") else {
        panic!("not a close frame with a code");
    };
    assert_eq!(close.code, CloseCode::Error);
    assert_eq!(
        close.reason.as_str(),
        "Wings cannot be reached on this node"
    );
    assert!(
        daemon.log().contains("cannot open Wings' websocket"),
        "{}",
        daemon.log()
    );
}

/// The text frames Wings received on connection `index` whose event is `set state`.
fn set_states(wings: &WingsStandIn, index: usize) -> usize {
    wings.socket.connections()[index]
        .received
        .iter()
        .filter(|t| t.contains("set state"))
        .count()
}

/// The next frame that is not the restore's own news (its progress, its messages).
fn recv_past_restore(socket: &mut Socket) -> Frame {
    loop {
        let frame = socket.recv();
        if frame.0 != "backup restore progress" && frame.0 != "daemon message" {
            return frame;
        }
    }
}

#[test]
fn set_state_is_refused_for_a_server_being_restored_and_passed_on_for_another() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut restoring = open(&daemon, &node, SERVER, &["*"]);
    let mut other = open(&daemon, &node, OTHER, &["*"]);

    let source = node.dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("world.dat"), noise(100_000)).unwrap();
    let archive = node.dir.path().join("restore.tar.gz");
    gnu_tar_gz(&archive, &source, &["."]);
    let (url, release) = serve_held_archive(std::fs::read(&archive).unwrap());
    let restore = new_uuid();
    let reply = daemon.post_restore(
        SERVER,
        &restore,
        &json!({"adapter": "s3", "truncate_directory": false, "download_url": url}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");

    restoring.send("set state", "stop");
    let (event, message) = recv_past_restore(&mut restoring);
    assert_eq!(event, "daemon error");
    assert!(
        message
            .as_deref()
            .unwrap_or_default()
            .contains("being restored"),
        "{message:?}"
    );
    // A frame sent after it comes back from Wings: the refused one would have been first.
    restoring.send("send command", "after");
    assert_eq!(recv_past_restore(&mut restoring), console("after"));
    assert_eq!(set_states(&wings, 0), 0);

    other.send("set state", "stop");
    other.send("send command", "after");
    assert_eq!(other.recv(), console("after"));
    assert_eq!(set_states(&wings, 1), 1);

    // Once the restore has ended, the same frame reaches Wings again.
    drop(release);
    let ended = restoring.recv_until("backup restore completed");
    assert!(ended.iter().all(|f| f.0 != "daemon error"), "{ended:?}");
    let mut tries = 0;
    loop {
        restoring.send("set state", "start");
        restoring.send("send command", "probe");
        let answer = restoring.recv();
        if answer == console("probe") {
            break;
        }
        assert_eq!(answer.0, "daemon error");
        assert_eq!(restoring.recv(), console("probe"));
        tries += 1;
        assert!(
            tries < 100,
            "set state still refused after the restore ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(set_states(&wings, 0), 1);
}

#[test]
fn a_socket_without_a_token_aerie_accepts_is_closed_on_both_sides_in_time() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let mut node = node(&wings.url());
    node.api_extra = "  websocket_auth_timeout: 1\n".into();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, Some(PANEL)).expect("the socket opens");
    // The stand-in takes any token; aerie checks it with its own rules and does not.
    let forged = token("another-node-token", SERVER, &["*"], 600);
    assert_eq!(socket.auth(&forged).0, "auth success");
    let close = loop {
        match socket.inner().read().expect("a close frame") {
            Message::Close(close) => break close.expect("a close code"),
            other => assert!(!matches!(other, Message::Text(_)), "{other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "authentication timed out");
    let seen = wings.socket.wait_for(0, |c| c.ended);
    assert!(seen.close_received, "{seen:?}");
}

#[test]
fn a_client_that_stops_reading_under_wings_console_flood_never_holds_up_a_backup() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut idle = open(&daemon, &node, SERVER, &["*"]);
    // Far more than the socket buffers between Wings, aerie and the client hold: Wings'
    // side of the relay waits for the client, aerie's events queue on the bus.
    let flood = 100_000;
    wings.socket.console(0, flood);
    let uuids: Vec<String> = (0..3).map(|_| new_uuid()).collect();
    for uuid in &uuids {
        daemon.start_backup(SERVER, "wings", uuid, "");
        assert_eq!(daemon.wait_for_end(SERVER, uuid)["state"], "completed");
    }
    // Read late, the client still gets every backup's final frames in order, and every one
    // of Wings' lines in order.
    let mut line = 0;
    let mut completed = 0;
    while line < flood || completed < uuids.len() {
        let frame = idle.recv();
        if frame.0 == "console output" {
            assert_eq!(frame, console(&format!("line {line}")));
            line += 1;
        } else if frame.0.starts_with("backup completed:") {
            assert_eq!(frame.0, format!("backup completed:{}", uuids[completed]));
            completed += 1;
        }
    }
}

#[test]
fn a_stopping_daemon_closes_the_client_with_1001_and_closes_wings() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node(&wings.url());
    let daemon = node.start();
    let mut socket = open(&daemon, &node, SERVER, &["*"]);
    assert_eq!(daemon.stop(), Some(0));
    let close = loop {
        match socket.inner().read().expect("a close frame") {
            Message::Close(close) => break close.expect("a close code"),
            other => assert!(!matches!(other, Message::Text(_)), "{other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "the daemon is shutting down");
    let seen = wings.socket.wait_for(0, |c| c.ended);
    assert!(seen.close_received, "{seen:?}");
}

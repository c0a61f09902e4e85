//! The event websocket with a real websocket client: Wings' JWT handshake, each way a token
//! is refused, backup events in order ending with both `backup completed` frames, the
//! `backup.read` permission, and a socket that never reads.

use aerie_e2e::websocket::{connect, token, Frame};
use aerie_e2e::{new_uuid, Node};
use serde_json::{json, Value};

const SERVER: &str = "2c4e6a8b-0d1f-4a3b-9c5d-7e9f1a3b5c7d";
const NODE_TOKEN: &str = "test-node-token-0123456789";

fn node() -> Node {
    let mut node = Node::new();
    node.extra_config = "allowed_origins:\n  - https://panel.example.com\n".into();
    let root = node.server(SERVER);
    for i in 0..40 {
        std::fs::write(
            root.join(format!("file-{i:02}")),
            vec![b'a' + (i % 26) as u8; 50_000],
        )
        .unwrap();
    }
    node
}

#[test]
fn auth_succeeds_with_a_good_token_and_each_bad_one_gets_a_jwt_error() {
    let node = node();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    let good = token(NODE_TOKEN, SERVER, &["websocket.connect"], 600);
    assert_eq!(socket.auth(&good), ("auth success".to_string(), None));

    let cases = [
        (
            "bad signature",
            token("another-node-token", SERVER, &["*"], 600),
            "signature",
        ),
        (
            "wrong server",
            token(NODE_TOKEN, "some-other-server", &["*"], 600),
            "another server",
        ),
        (
            "no permission",
            token(NODE_TOKEN, SERVER, &["backup.read"], 600),
            "websocket.connect",
        ),
        ("expired", token(NODE_TOKEN, SERVER, &["*"], -10), "expired"),
        ("garbage", "not.a.jwt".to_string(), "malformed"),
    ];
    for (case, bad, reason) in cases {
        let (event, arg) = socket.auth(&bad);
        assert_eq!(event, "jwt error", "{case}");
        let arg = arg.unwrap_or_default();
        assert!(arg.contains(reason), "{case}: {arg}");
    }
    // A fresh token on the same socket is accepted.
    assert_eq!(socket.auth(&good).0, "auth success");
}

#[test]
fn a_browser_from_an_unknown_origin_is_refused() {
    let node = node();
    let daemon = node.start();
    assert!(connect(&daemon.base, SERVER, Some("https://evil.example.com")).is_err());
    assert!(connect(&daemon.base, SERVER, Some("https://panel.example.com")).is_ok());
    assert!(connect(&daemon.base, "no-such-server", None).is_err());
}

fn payload(frame: &Frame) -> Value {
    serde_json::from_str(frame.1.as_deref().expect("an argument")).expect("a JSON argument")
}

#[test]
fn backup_events_arrive_in_order_and_end_with_both_completed_frames() {
    let node = node();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    socket.auth(&token(
        NODE_TOKEN,
        SERVER,
        &["websocket.connect", "backup.read"],
        600,
    ));
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "file-3*");
    let frames = socket.recv_until(&format!("backup completed:{uuid}"));

    assert_eq!(frames[0].0, "backup started");
    assert_eq!(payload(&frames[0])["uuid"], uuid);
    assert_eq!(payload(&frames[0])["adapter"], "wings");
    let progress: Vec<Value> = frames
        .iter()
        .filter(|f| f.0 == "backup progress")
        .map(payload)
        .collect();
    assert!(!progress.is_empty(), "{frames:?}");
    // The total honours the ignore rules: 30 of the 40 files, 50,000 bytes each.
    assert!(progress
        .iter()
        .all(|p| p["bytes_total"] == 1_500_000 && p["uuid"] == uuid));
    let done: Vec<u64> = progress
        .iter()
        .map(|p| p["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");

    let n = frames.len();
    assert_eq!(frames[n - 2].0, "backup completed");
    assert_eq!(
        frames[n - 2].1,
        frames[n - 1].1,
        "both frames carry the same payload"
    );
    let completed = payload(&frames[n - 1]);
    let status = daemon.status(SERVER, &uuid).json;
    assert_eq!(completed["uuid"], uuid);
    assert_eq!(completed["is_successful"], true);
    assert_eq!(completed["checksum"], status["checksum"]);
    assert_eq!(completed["checksum_type"], "sha1");
    assert_eq!(completed["file_size"], status["size"]);
    let order: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    assert!(
        order[1..n - 2].iter().all(|e| *e == "backup progress"),
        "{order:?}"
    );
}

#[test]
fn a_socket_without_backup_read_gets_no_backup_events() {
    let node = node();
    let daemon = node.start();
    let mut watcher = connect(&daemon.base, SERVER, None).unwrap();
    watcher.auth(&token(NODE_TOKEN, SERVER, &["*"], 600));
    let mut outsider = connect(&daemon.base, SERVER, None).unwrap();
    outsider.auth(&token(
        NODE_TOKEN,
        SERVER,
        &["websocket.connect", "control.console"],
        600,
    ));
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    watcher.recv_until(&format!("backup completed:{uuid}"));
    // Every event has been published now: the outsider's next frame is the answer to a
    // fresh auth, with no backup event before it.
    outsider.send(
        "auth",
        &token(NODE_TOKEN, SERVER, &["websocket.connect"], 600),
    );
    let frames = outsider.recv_until("auth success");
    assert_eq!(frames, vec![("auth success".to_string(), None)]);
}

/// The kernel receive buffer the stalled client asks for (Linux doubles it).
const STALLED_RECEIVE_BUFFER: usize = 4096;

/// The final frames each backup publishes: `backup started` and both `backup completed`.
const FINAL_FRAMES_PER_BACKUP: usize = 3;

#[test]
fn a_socket_that_never_reads_does_not_stall_backups() {
    // A server of one small file: what matters is the number of backups, not their size.
    const SMALL: &str = "5d1a3c7e-9b2f-4e6a-8c0d-1f3b5d7e9a2c";
    let node = node();
    std::fs::write(node.server(SMALL).join("small"), b"a").unwrap();
    let daemon = node.start();
    // How many bytes of frames one backup makes, read by a socket that keeps up.
    let mut reader = connect(&daemon.base, SMALL, None).unwrap();
    reader.auth(&token(NODE_TOKEN, SMALL, &["*"], 600));
    let uuid = new_uuid();
    daemon.start_backup(SMALL, "wings", &uuid, "");
    let frames = reader.recv_until(&format!("backup completed:{uuid}"));
    let per_backup: usize = frames
        .iter()
        .map(|(name, arg)| name.len() + arg.as_ref().map_or(0, String::len))
        .sum();
    drop(reader);

    let mut idle = aerie_e2e::websocket::connect_with_receive_buffer(
        &daemon.base,
        SMALL,
        STALLED_RECEIVE_BUFFER,
    )
    .unwrap();
    idle.auth(&token(NODE_TOKEN, SMALL, &["*"], 600));
    // Enough backups that their frames are half as large again as everything the kernel
    // holds between the daemon and this socket (both buffers, doubled by Linux): the rest
    // must wait in the daemon while the socket is not read...
    let kernel_buffers = 2 * (aerie::serve::WEBSOCKET_SEND_BUFFER + STALLED_RECEIVE_BUFFER);
    let backups = 3 * kernel_buffers / (2 * per_backup) + 1;
    // ...but their final frames all fit in the socket's queue, which drops none of them.
    assert!(backups * FINAL_FRAMES_PER_BACKUP < aerie::events::bus::MAX_QUEUED);
    let uuids: Vec<String> = (0..backups).map(|_| new_uuid()).collect();
    for uuid in &uuids {
        daemon.start_backup(SMALL, "wings", uuid, "");
        assert_eq!(daemon.wait_for_end(SMALL, uuid)["state"], "completed");
    }
    // Read late, it still has every backup's final frames, in order.
    for uuid in &uuids {
        idle.recv_until(&format!("backup completed:{uuid}"));
    }
}

#[test]
fn a_socket_is_warned_before_its_token_expires_and_told_when_it_has() {
    let node = node();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    // Expiring in 2 s: the one-minute warning is due at once, the expiry shortly after.
    socket.auth(&token(NODE_TOKEN, SERVER, &["*"], 2));
    assert_eq!(socket.recv().0, "token expiring");
    assert_eq!(socket.recv().0, "token expired");
    // While the token is expired, a whole backup goes by unseen...
    let missed = new_uuid();
    daemon.start_backup(SERVER, "wings", &missed, "");
    assert_eq!(daemon.wait_for_end(SERVER, &missed)["state"], "completed");
    // ...so the next frame is the answer to a fresh token, not one of that backup's.
    assert_eq!(
        socket.auth(&token(NODE_TOKEN, SERVER, &["*"], 600)).0,
        "auth success"
    );
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let (event, arg) = socket.recv();
    assert_eq!(event, "backup started");
    assert!(
        arg.unwrap_or_default().contains(&uuid),
        "the new backup's, not the missed one's"
    );
}

#[test]
fn a_token_issued_before_the_daemon_started_is_refused() {
    let node = node();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    let now = aerie::jwt::unix_now();
    let before_start = aerie::jwt::sign(
        &json!({
            "iat": now - 3600, "nbf": now - 3900, "exp": now + 600,
            "server_uuid": SERVER, "permissions": ["*"],
        }),
        NODE_TOKEN.as_bytes(),
    );
    let (event, reason) = socket.auth(&before_start);
    assert_eq!(event, "jwt error");
    assert_eq!(
        reason.as_deref(),
        Some("jwt: the token was issued before the daemon started")
    );
}

#[test]
fn the_panels_own_origin_is_allowed_without_listing_it() {
    let mut node = node();
    node.extra_config = "remote: https://panel.remote.example\n".into();
    let daemon = node.start();
    assert!(connect(&daemon.base, SERVER, Some("https://panel.remote.example")).is_ok());
    assert!(connect(&daemon.base, SERVER, Some("https://panel.example.com")).is_err());
}

#[test]
fn a_failed_backup_ends_with_unsuccessful_completed_frames() {
    let mut node = node();
    let store = node.dir.path().join("fixture-store");
    node.plugins = Some(format!(
        "adapters:\n  - name: full\n    library: {}\n    config:\n      directory: {}\n      fail_after_bytes: 0\n",
        aerie_e2e::fixture_library().display(),
        store.display()
    ));
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    socket.auth(&token(NODE_TOKEN, SERVER, &["*"], 600));
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "full", &uuid, "");
    let frames = socket.recv_until(&format!("backup completed:{uuid}"));
    let completed = frames
        .iter()
        .find(|f| f.0 == "backup completed")
        .expect("backup completed");
    let completed = payload(completed);
    assert_eq!(completed["is_successful"], false, "{completed}");
    assert_eq!(completed["uuid"], uuid.as_str());
    assert_eq!(completed["checksum"], "");
    assert_eq!(completed["file_size"], 0);
}

//! Delete and download end to end: a delete is 204 then 404, and cancels a running backup;
//! a download streams the stored archive with Range support, and every bad token is refused
//! with a clear status.

use std::time::{Duration, Instant};

use aerie_e2e::{fixture_library, make_fifo, new_uuid, noise, Daemon, Node, HANG_GUARD};
use reqwest::Method;
use serde_json::json;

const SERVER: &str = "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const OTHER: &str = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";

fn delete(daemon: &Daemon, server: &str, uuid: &str) -> aerie_e2e::Reply {
    daemon.send(daemon.request(
        Method::DELETE,
        &format!("/api/servers/{server}/backup/{uuid}"),
    ))
}

#[test]
fn delete_is_204_then_404() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    node.server(OTHER);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    assert!(archive.is_file(), "the backup is stored before the delete");
    // Another server cannot delete it.
    assert_eq!(delete(&daemon, OTHER, &uuid).status, 404);
    assert!(archive.is_file(), "a delete from another server leaves it");
    assert_eq!(delete(&daemon, SERVER, &uuid).status, 204);
    assert!(!archive.exists());
    let again = delete(&daemon, SERVER, &uuid);
    assert_eq!(again.status, 404);
    assert_eq!(
        again.error(),
        "The requested backup was not found on this server."
    );
    assert_eq!(daemon.status(SERVER, &uuid).status, 404);
    assert_eq!(delete(&daemon, SERVER, "nope").status, 400);
}

#[test]
fn deleting_a_running_backup_cancels_it_and_leaves_nothing() {
    let mut node = Node::new();
    std::fs::write(node.server(SERVER).join("noise.bin"), noise(4_000_000)).unwrap();
    let store = node.dir.path().join("fixture-store");
    std::fs::create_dir_all(&store).unwrap();
    node.plugins = Some(format!(
        "adapters:\n  - name: held\n    library: {}\n    config:\n      directory: {}\n",
        fixture_library().display(),
        store.display()
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    // The fixture holds the backup in `begin_backup` while this FIFO is open for writing.
    let hold = store.join(format!("{uuid}.hold"));
    make_fifo(&hold);
    daemon.start_backup(SERVER, "held", &uuid, "");
    // Returns once the adapter has opened the other end: the backup is running, held.
    let holder = std::fs::OpenOptions::new().write(true).open(&hold).unwrap();
    assert_eq!(daemon.status(SERVER, &uuid).json["state"], "running");
    let deleted = std::thread::scope(|scope| {
        let deleting = scope.spawn(|| delete(&daemon, SERVER, &uuid));
        let asked = Instant::now();
        while !daemon
            .log()
            .contains("cancelling the running backup to delete it")
        {
            assert!(asked.elapsed() < HANG_GUARD, "{}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only now may the backup go on: it can only end by noticing it was cancelled.
        drop(holder);
        deleting.join().unwrap()
    });
    assert_eq!(deleted.status, 204);
    assert!(
        store.join(format!("{uuid}.aborted")).exists(),
        "the sink was aborted, not finished: {}",
        daemon.log()
    );
    assert!(!store.join(format!("{uuid}.tar.gz")).exists());
    assert!(!store.join(format!("{uuid}.partial")).exists());
    assert_eq!(daemon.status(SERVER, &uuid).status, 404);
}

#[test]
fn an_unregistered_archive_from_a_wings_node_can_be_deleted() {
    let node = Node::new();
    node.server(SERVER);
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    let uuid = new_uuid();
    std::fs::write(node.backup_dir().join(format!("{uuid}.tar.gz")), b"old").unwrap();
    let daemon = node.start();
    assert_eq!(delete(&daemon, SERVER, &uuid).status, 204);
    assert!(!node.backup_dir().join(format!("{uuid}.tar.gz")).exists());
}

fn download_token(
    node: &Node,
    server: &str,
    backup: &str,
    expires_in: i64,
    unique: &str,
) -> String {
    let now = aerie::jwt::unix_now();
    aerie::jwt::sign(
        &json!({
            "iss": "https://panel.example.com", "aud": ["https://node.example.com"],
            "jti": "abc", "iat": now, "nbf": now - 300, "exp": now + expires_in,
            "server_uuid": server, "backup_uuid": backup,
            "user_uuid": "u", "user_id": 1, "unique_id": unique,
        }),
        node.token.as_bytes(),
    )
}

#[test]
fn a_download_streams_the_archive_with_ranges_and_refuses_bad_tokens() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("noise.bin"), noise(600_000)).unwrap();
    node.server(OTHER);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    let get = |token: &str, range: Option<&str>| {
        let mut request = daemon
            .client
            .get(format!("{}/download/backup", daemon.base))
            .query(&[("token", token)]);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        request.send().unwrap()
    };

    let response = get(&download_token(&node, SERVER, &uuid, 900, "one"), None);
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"{uuid}.tar.gz\"").as_str()
    );
    assert_eq!(headers["content-length"], stored.len().to_string().as_str());
    assert_eq!(response.bytes().unwrap().as_ref(), stored.as_slice());

    let response = get(
        &download_token(&node, SERVER, &uuid, 900, "two"),
        Some("bytes=100-1099"),
    );
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 100-1099/{}", stored.len()).as_str()
    );
    assert_eq!(response.bytes().unwrap().as_ref(), &stored[100..1100]);

    let refused = |token: String, status: u16, what: &str| {
        let response = get(&token, None);
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: serde_json::Value = response.json().unwrap();
        assert!(body["error"].is_string(), "{what}: {body}");
    };
    refused(
        download_token(&node, SERVER, &uuid, 900, "one"),
        403,
        "replayed",
    );
    refused(
        download_token(&node, SERVER, &uuid, -5, "three"),
        403,
        "expired",
    );
    let mut forged = Node::new();
    forged.token = "another-node-token".into();
    refused(
        download_token(&forged, SERVER, &uuid, 900, "four"),
        403,
        "wrongly signed",
    );
    refused(
        download_token(&node, OTHER, &uuid, 900, "five"),
        404,
        "wrong server",
    );
    refused("garbage".into(), 401, "malformed");
    let response = daemon
        .client
        .get(format!("{}/download/backup", daemon.base))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401, "no token");
}

#[test]
fn a_range_past_the_end_is_416_naming_the_size() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let size = std::fs::metadata(node.backup_dir().join(format!("{uuid}.tar.gz")))
        .unwrap()
        .len();
    let response = daemon
        .client
        .get(format!("{}/download/backup", daemon.base))
        .query(&[("token", download_token(&node, SERVER, &uuid, 900, "r"))])
        .header("Range", format!("bytes={size}-"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
}

#[test]
fn an_archive_the_registry_never_saw_downloads_whole() {
    let node = Node::new();
    node.server(SERVER);
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    // As a Wings node leaves them: only the file, no record of it.
    let uuid = new_uuid();
    let archive = noise(300_000);
    std::fs::write(node.backup_dir().join(format!("{uuid}.tar.gz")), &archive).unwrap();
    let daemon = node.start();
    let response = daemon
        .client
        .get(format!("{}/download/backup", daemon.base))
        .query(&[("token", download_token(&node, SERVER, &uuid, 900, "w"))])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().as_ref(), archive.as_slice());
}

//! What the host promises adapters and their users, end to end with the real daemon and
//! libraries: one failing adapter never hides another's backups (a restore or download of
//! an archive the registry never saw succeeds while another adapter fails every `stat`); an
//! adapter's `list` shows in `GET /backups` (an archive copied in by hand appears), and a
//! failing `list` leaves the registry's entries; a retryable `stat` and `open` are tried
//! again (counted by the fixture's own record of calls).

use aerie_e2e::tree::{populate, snapshot};
use aerie_e2e::websocket::completion_message;
use aerie_e2e::{
    fixture_library, fixture_plugins, gnu_tar_gz, new_uuid, wings_library, Daemon, Node,
};
use reqwest::Method;
use serde_json::{json, Value};

const SERVER: &str = "3b5d7f91-2c4e-4a6b-8d0f-1a3c5e7f9b2d";

/// A node whose `wings` adapter keeps archives in the backup directory, beside a fixture
/// adapter `broken` whose every `stat` and `list` fails (as PERMISSION_DENIED).
fn node_with_a_broken_neighbour() -> Node {
    let mut node = Node::new();
    populate(&node.server(SERVER));
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    // `broken` comes first in the plugins file: it is asked first when no adapter is named.
    node.plugins = Some(format!(
        "adapters:\n  - name: broken\n    library: {fixture}\n    config:\n      directory: {store}\n      broken: true\n\
         \x20 - name: wings\n    library: {wings}\n",
        fixture = fixture_library().display(),
        store = node.dir.path().join("broken-store").display(),
        wings = wings_library().display(),
    ));
    node
}

/// Copies a GNU tar archive of a populated tree into `directory` as backup `uuid`, as an
/// operator moving archives from another node would: the registry never hears of it.
fn copy_in_by_hand(directory: &std::path::Path, uuid: &str) -> tempfile::TempDir {
    let source = tempfile::tempdir().unwrap();
    populate(source.path());
    std::fs::create_dir_all(directory).unwrap();
    gnu_tar_gz(
        &directory.join(format!("{uuid}.tar.gz")),
        source.path(),
        &["."],
    );
    source
}

fn download_token(node: &Node, backup: &str, unique: &str) -> String {
    let now = aerie::jwt::unix_now();
    aerie::jwt::sign(
        &json!({
            "iss": "https://panel.example.com", "aud": ["https://node.example.com"],
            "jti": "abc", "iat": now, "nbf": now - 60, "exp": now + 900,
            "server_uuid": SERVER, "backup_uuid": backup,
            "user_uuid": "u", "user_id": 1, "unique_id": unique,
        }),
        node.token.as_bytes(),
    )
}

fn download(daemon: &Daemon, token: &str) -> reqwest::blocking::Response {
    daemon
        .client
        .request(Method::GET, format!("{}/download/backup", daemon.base))
        .query(&[("token", token)])
        .send()
        .unwrap()
}

/// Restores `uuid` with `body` and returns the completion message.
fn restore(node: &Node, daemon: &Daemon, uuid: &str, body: Value) -> String {
    let mut socket = daemon.watch(node, SERVER);
    let reply = daemon.post_restore(SERVER, uuid, &body);
    assert_eq!(reply.status, 202, "{reply:?}\n{}", daemon.log());
    completion_message(&socket.recv_until("backup restore completed"))
}

#[test]
fn a_failing_adapter_does_not_hide_another_adapters_backup() {
    let node = node_with_a_broken_neighbour();
    let uuid = new_uuid();
    let source = copy_in_by_hand(&node.backup_dir(), &uuid);
    let daemon = node.start();

    // Named: only `wings` is asked.
    let message = restore(
        &node,
        &daemon,
        &uuid,
        json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert!(message.starts_with("Completed"), "{message}");
    assert_eq!(snapshot(&node.server(SERVER)), snapshot(source.path()));
    assert!(
        !daemon.log().contains("the fixture storage is broken"),
        "the named adapter alone is asked:\n{}",
        daemon.log()
    );

    // Not named (a download names none): every adapter is asked, `broken` fails, `wings`
    // finds it, and the failure is in the log with the adapter's name.
    let response = download(&daemon, &download_token(&node, &uuid, "neighbour"));
    assert_eq!(response.status(), 200, "{}", daemon.log());
    let archive = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(response.bytes().unwrap().as_ref(), archive.as_slice());
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot ask this adapter for the backup"))
        .unwrap_or_else(|| panic!("no line about the failing adapter:\n{log}"));
    assert!(line.contains("adapter=broken"), "{line}");
    assert!(
        line.contains("stat: the fixture storage is broken"),
        "{line}"
    );
}

#[test]
fn when_no_adapter_finds_a_backup_and_one_failed_the_answer_says_which() {
    let node = node_with_a_broken_neighbour();
    let daemon = node.start();
    let uuid = new_uuid();
    let response = download(&daemon, &download_token(&node, &uuid, "nobody-has-it"));
    // PERMISSION_DENIED is a 500: the link's words, the cause (naming the adapter) logged.
    assert_eq!(response.status(), 500);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "The backup could not be read.");
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("cannot look the backup up")
            && l.contains(
                "adapter \"broken\" (permission denied): stat: the fixture storage is broken"
            )),
        "{log}"
    );
}

#[test]
fn an_archive_copied_into_the_wings_directory_shows_in_the_list_beside_the_registrys() {
    let node = node_with_a_broken_neighbour();
    let daemon = node.start();
    let made = new_uuid();
    daemon.start_backup(SERVER, "wings", &made, "");
    let made_status = daemon.wait_for_end(SERVER, &made);
    assert_eq!(made_status["state"], "completed");
    let copied = new_uuid();
    let _source = copy_in_by_hand(&node.backup_dir(), &copied);
    let size = std::fs::metadata(node.backup_dir().join(format!("{copied}.tar.gz")))
        .unwrap()
        .len();

    let reply = daemon.send(daemon.request(Method::GET, &format!("/api/servers/{SERVER}/backups")));
    assert_eq!(reply.status, 200, "{reply:?}");
    let list = reply.json.as_array().unwrap().clone();
    let uuids: Vec<&str> = list.iter().map(|b| b["uuid"].as_str().unwrap()).collect();
    // Each once: the registry's backup is not listed again for being in the directory.
    assert_eq!(uuids.len(), 2, "{list:?}");
    assert!(
        uuids.contains(&made.as_str()) && uuids.contains(&copied.as_str()),
        "{list:?}"
    );
    let entry = list.iter().find(|b| b["uuid"] == copied.as_str()).unwrap();
    assert_eq!(entry["adapter"], "wings");
    assert_eq!(entry["state"], "completed");
    assert_eq!(entry["size"], size);
    assert_eq!(entry["server"], SERVER);
    assert!(
        entry["started_at"].as_str().unwrap().ends_with('Z'),
        "{entry}"
    );
    let registered = list.iter().find(|b| b["uuid"] == made.as_str()).unwrap();
    assert_eq!(registered["checksum"], made_status["checksum"]);

    // `broken`'s list failed: logged with its name, and the list still came back.
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot list the backups this adapter holds")
                && l.contains("adapter=broken")),
        "{log}"
    );
}

#[test]
fn a_retryable_stat_and_open_are_tried_again_until_they_succeed() {
    let mut node = Node::new();
    node.server(SERVER);
    let store = node.dir.path().join("flaky-store");
    node.plugins = Some(fixture_plugins("flaky", &store, &["transient_failures: 2"]));
    let uuid = new_uuid();
    let _source = copy_in_by_hand(&store, &uuid);
    let daemon = node.start();

    let response = download(&daemon, &download_token(&node, &uuid, "flaky"));
    assert_eq!(response.status(), 200, "{}", daemon.log());
    let archive = std::fs::read(store.join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(response.bytes().unwrap().as_ref(), archive.as_slice());
    // Two failures each, then success: three attempts of each, as the fixture counted them.
    let calls = std::fs::read_to_string(store.join("calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["stat", "stat", "stat", "open", "open", "open"]
    );
}

#[test]
fn a_storage_that_stays_unavailable_is_a_503_after_a_bounded_number_of_attempts() {
    let mut node = Node::new();
    node.server(SERVER);
    let store = node.dir.path().join("down-store");
    node.plugins = Some(fixture_plugins(
        "down",
        &store,
        &["transient_failures: 1000"],
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    let reply = daemon.post_backup(
        SERVER,
        &json!({"adapter": "down", "uuid": uuid, "ignore": ""}),
    );
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(
        reply.json["error"],
        "The backup storage cannot be reached right now; try again in a moment."
    );
    let calls = std::fs::read_to_string(store.join("calls")).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["stat"; 4]);
    // Nothing was reserved: the same uuid may be tried again.
    assert_eq!(daemon.status(SERVER, &uuid).status, 404);
}

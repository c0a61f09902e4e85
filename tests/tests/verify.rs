//! Verification end to end: `POST /api/servers/{server}/backups/{uuid}/verify` reads a
//! stored archive back through its adapter while the request has long returned, and `GET`
//! on the same path shows the result: a good backup is ok with every entry GNU tar lists
//! and every byte of the file; a byte flipped or the file cut short in storage is caught and
//! logged; periodic verification finds the damage on its own. The S3 adapter too (a
//! flipped byte written over the object through the test's own S3 client).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use aerie_e2e::s3::Plugins;
use aerie_e2e::websocket::Frame;
use aerie_e2e::{
    fixture_plugins, make_fifo, new_uuid, noise, run, Daemon, Node, Reply, HANG_GUARD,
};
use aerie_s3_test_support::{endpoint, Bucket};
use reqwest::Method;
use serde_json::{json, Value};

const SERVER: &str = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f";

fn verify_path(server: &str, uuid: &str) -> String {
    format!("/api/servers/{server}/backups/{uuid}/verify")
}

fn post_verify(daemon: &Daemon, uuid: &str) -> Reply {
    daemon.send(daemon.request(Method::POST, &verify_path(SERVER, uuid)))
}

fn get_verify(daemon: &Daemon, uuid: &str) -> Reply {
    daemon.send(daemon.request(Method::GET, &verify_path(SERVER, uuid)))
}

/// Polls `GET .../verify` until `done` holds for a finished verification's body, and
/// returns that body.
fn wait_verified_until(daemon: &Daemon, uuid: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let reply = get_verify(daemon, uuid);
        if reply.status == 200 && reply.json["state"] == "done" && done(&reply.json) {
            return reply.json;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "no verification of {uuid} as awaited after {HANG_GUARD:?}: {reply:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Polls `GET .../verify` until the verification is done, and returns the body.
fn wait_verified(daemon: &Daemon, uuid: &str) -> Value {
    wait_verified_until(daemon, uuid, |_| true)
}

/// A server with files, a folder, a symlink and a name long enough for a GNU long-name
/// entry, and a few MB that do not compress (so the archive spans many reads).
fn populate(node: &Node) {
    let root = node.server(SERVER);
    std::fs::create_dir_all(root.join("world/region")).unwrap();
    std::fs::write(root.join("server.properties"), b"motd=verify\n").unwrap();
    std::fs::write(root.join("world/region/r.0.0.mca"), noise(3_000_000)).unwrap();
    std::fs::write(
        root.join(format!("plugins-{}.yml", "x".repeat(150))),
        b"a: b\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("server.properties", root.join("link")).unwrap();
}

/// Backs the server up with `adapter` and returns the uuid and the recorded size.
fn completed_backup(daemon: &Daemon, adapter: &str) -> (String, u64) {
    let uuid = new_uuid();
    daemon.start_backup(SERVER, adapter, &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    (uuid, status["size"].as_u64().unwrap())
}

/// How many entries GNU tar lists in `archive`.
fn gnu_tar_entries(archive: &Path) -> u64 {
    run("tar", &["-tzf", archive.to_str().unwrap()], Path::new("."))
        .lines()
        .count() as u64
}

/// Flips one bit of the byte in the middle of `bytes`.
fn flip_middle(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
}

/// The `backup verify completed` frame's JSON argument, after checking that `frames` hold
/// a `backup verify progress` for `uuid` first.
fn completed_event(frames: &[Frame], uuid: &str) -> Value {
    let progress = frames
        .iter()
        .find(|f| f.0 == "backup verify progress")
        .unwrap_or_else(|| panic!("no progress event: {frames:?}"));
    let progress: Value = serde_json::from_str(progress.1.as_deref().unwrap()).unwrap();
    assert_eq!(progress["uuid"], uuid, "{progress}");
    let completed = frames.last().unwrap();
    assert_eq!(completed.0, "backup verify completed");
    serde_json::from_str(completed.1.as_deref().unwrap()).unwrap()
}

#[test]
fn a_good_backup_verifies_with_every_entry_gnu_tar_lists_and_every_byte() {
    let node = Node::new();
    populate(&node);
    let daemon = node.start();
    let (uuid, size) = completed_backup(&daemon, "wings");
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    assert_eq!(std::fs::metadata(&archive).unwrap().len(), size);
    let mut socket = daemon.watch(&node, SERVER);
    let before = aerie_e2e::websocket::now();

    let started = post_verify(&daemon, &uuid);
    assert_eq!(started.status, 202, "{started:?}");
    assert_eq!(started.json, json!({"state": "running"}));
    let done = wait_verified(&daemon, &uuid);
    let expected = json!({
        "ok": true,
        "checksum_matches": true,
        "entries": gnu_tar_entries(&archive),
        "bytes": size,
        "error": null,
    });
    assert_eq!(done["result"], expected, "{done}\n{}", daemon.log());
    assert!(done["verified_at"].as_i64().unwrap() >= before, "{done}");

    let frames = socket.recv_until("backup verify completed");
    let event = completed_event(&frames, &uuid);
    assert_eq!(event, json!({"uuid": uuid, "result": expected}));
}

#[test]
fn a_flipped_byte_in_storage_fails_the_checksum_and_is_logged() {
    let node = Node::new();
    populate(&node);
    let daemon = node.start();
    let (uuid, size) = completed_backup(&daemon, "wings");
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let mut bytes = std::fs::read(&archive).unwrap();
    flip_middle(&mut bytes);
    std::fs::write(&archive, &bytes).unwrap();

    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    let result = wait_verified(&daemon, &uuid)["result"].clone();
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["checksum_matches"], false, "{result}");
    assert_eq!(result["bytes"], size, "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("the stored bytes changed"), "{error}");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("VERIFICATION FAILED"))
        .unwrap_or_else(|| panic!("no mismatch logged:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&uuid) && line.contains(SERVER), "{line}");
}

#[test]
fn a_truncated_archive_fails_saying_it_is_truncated() {
    let node = Node::new();
    populate(&node);
    let daemon = node.start();
    let (uuid, size) = completed_backup(&daemon, "wings");
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(size / 2)
        .unwrap();

    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    let result = wait_verified(&daemon, &uuid)["result"].clone();
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["checksum_matches"], false, "{result}");
    assert_eq!(result["bytes"], size / 2, "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("the archive is truncated: its gzip or tar stream ends early"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "the stored archive is {} bytes, but {size} were recorded (it is cut short)",
            size / 2
        )),
        "{error}"
    );
}

#[test]
fn an_unknown_backup_is_404_and_a_known_one_never_verified_is_404_saying_so() {
    let node = Node::new();
    populate(&node);
    let daemon = node.start();
    let unknown = new_uuid();
    for reply in [
        post_verify(&daemon, &unknown),
        get_verify(&daemon, &unknown),
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
        assert_eq!(
            reply.error(),
            "The requested backup was not found on this server."
        );
    }
    let (uuid, _) = completed_backup(&daemon, "wings");
    let never = get_verify(&daemon, &uuid);
    assert_eq!(never.status, 404, "{never:?}");
    assert_eq!(
        never.error(),
        "This backup has not been verified yet; POST to this address to verify it."
    );
    // Another server's id does not reach it.
    let other = "0a0b0c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
    node.server(other);
    let reply = daemon.send(daemon.request(Method::POST, &verify_path(other, &uuid)));
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.error(),
        "The requested backup was not found on this server."
    );
}

#[test]
fn a_storage_that_cannot_be_reached_is_a_503_not_a_404_or_a_500() {
    let mut node = Node::new();
    node.server(SERVER);
    let store = node.dir.path().join("down-store");
    node.plugins = Some(fixture_plugins(
        "down",
        &store,
        &["transient_failures: 1000"],
    ));
    let daemon = node.start();
    // Nobody can say whether the backup exists: not "not found", and not the node's fault.
    let uuid = new_uuid();
    for reply in [post_verify(&daemon, &uuid), get_verify(&daemon, &uuid)] {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(
            reply.error(),
            "The backup storage cannot be reached right now; try again in a moment."
        );
    }
}

#[test]
fn the_post_returns_while_the_archive_is_still_being_read_and_a_second_is_409() {
    let (node, store) = fixture_node();
    let daemon = node.start();
    let (uuid, size) = completed_backup(&daemon, "fixture");
    let bytes = hold_archive(&store, &uuid);

    // A route that held the request until the end would never answer: the client's
    // timeout would fail the test.
    let started = post_verify(&daemon, &uuid);
    assert_eq!(started.status, 202, "{started:?}");
    let running = get_verify(&daemon, &uuid);
    assert_eq!(running.status, 200, "{running:?}");
    assert_eq!(
        running.json,
        json!({"state": "running", "bytes": 0, "total": size})
    );
    let again = post_verify(&daemon, &uuid);
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(
        again.error(),
        "This backup is being verified already; GET this address to follow it."
    );

    release_archive(&store, &uuid, &bytes);
    let result = wait_verified(&daemon, &uuid)["result"].clone();
    assert_eq!(result["ok"], true, "{result}\n{}", daemon.log());
    assert_eq!(result["bytes"], size, "{result}");
}

/// A node whose adapter is the fixture, storing into `<node>/fixture-store`.
fn fixture_node() -> (Node, std::path::PathBuf) {
    let mut node = Node::new();
    populate(&node);
    let store = node.dir.path().join("fixture-store");
    std::fs::create_dir_all(&store).unwrap();
    node.plugins = Some(fixture_plugins("fixture", &store, &[]));
    (node, store)
}

/// Puts a FIFO in the place of the fixture's archive of `uuid` and returns the archive's
/// bytes: the adapter's `open` then waits until the test opens the write end, and reads
/// what the test writes, so a verification is held there with no timer.
fn hold_archive(store: &Path, uuid: &str) -> Vec<u8> {
    let archive = store.join(format!("{uuid}.tar.gz"));
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::remove_file(&archive).unwrap();
    make_fifo(&archive);
    bytes
}

/// Writes `bytes` into the held archive of `uuid` (waiting until its reader is there) and
/// closes it.
fn release_archive(store: &Path, uuid: &str, bytes: &[u8]) {
    let archive = store.join(format!("{uuid}.tar.gz"));
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(archive)
        .unwrap();
    writer.write_all(bytes).unwrap();
}

#[test]
fn two_verifications_read_at_once_and_a_third_waits_for_a_place() {
    let (node, store) = fixture_node();
    let daemon = node.start();
    let backups: Vec<(String, Vec<u8>)> = (0..3)
        .map(|_| {
            let (uuid, _) = completed_backup(&daemon, "fixture");
            let bytes = hold_archive(&store, &uuid);
            (uuid, bytes)
        })
        .collect();
    for (uuid, _) in &backups {
        assert_eq!(post_verify(&daemon, uuid).status, 202);
    }
    let [(first, first_bytes), (second, second_bytes), (third, third_bytes)] = &backups[..] else {
        unreachable!()
    };
    // The first two hold both places. The third gets one only when the first has ended,
    // so its reader comes after (the opens of the write ends wait for the readers).
    release_archive(&store, first, first_bytes);
    assert_eq!(wait_verified(&daemon, first)["result"]["ok"], true);
    release_archive(&store, third, third_bytes);
    assert_eq!(wait_verified(&daemon, third)["result"]["ok"], true);
    release_archive(&store, second, second_bytes);
    assert_eq!(wait_verified(&daemon, second)["result"]["ok"], true);
    let log = daemon.log();
    let at = |uuid: &str, what: &str| {
        log.lines()
            .position(|l| l.contains(uuid) && l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line for {uuid}:\n{log}"))
    };
    assert!(
        at(third, "verification started") > at(first, "verification passed"),
        "the third verification started before a place was free:\n{log}"
    );
    assert!(at(second, "verification started") < at(first, "verification passed"));
}

#[test]
fn periodic_verification_rereads_a_backup_and_logs_a_flipped_byte() {
    let mut node = Node::new();
    node.system_extra = "  backups:\n    verify_interval: 1\n".into();
    populate(&node);
    let daemon = node.start();
    let (uuid, _) = completed_backup(&daemon, "wings");
    // Nobody asks: the timer does it.
    let first = wait_verified(&daemon, &uuid);
    assert_eq!(first["result"]["ok"], true, "{first}\n{}", daemon.log());

    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let mut bytes = std::fs::read(&archive).unwrap();
    flip_middle(&mut bytes);
    std::fs::write(&archive, &bytes).unwrap();
    let damaged = wait_verified_until(&daemon, &uuid, |body| body["result"]["ok"] == false);
    assert_eq!(damaged["result"]["checksum_matches"], false, "{damaged}");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("VERIFICATION FAILED"))
        .unwrap_or_else(|| panic!("no mismatch logged:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&uuid) && line.contains(SERVER), "{line}");
}

/// The object key of backup `uuid` in the S3 adapter's bucket.
fn s3_key(uuid: &str) -> String {
    format!("{SERVER}/{uuid}.tar.gz")
}

#[test]
fn s3_a_good_backup_verifies_and_a_flipped_byte_in_the_object_fails() {
    let bucket = Bucket::new("e2e-verify");
    let mut node = Node::new();
    node.plugins = Some(bucket.plugins(&endpoint(), &[]));
    populate(&node);
    let daemon = node.start();
    let (uuid, size) = completed_backup(&daemon, "s3");
    let object = bucket.get(&s3_key(&uuid));
    assert_eq!(object.len() as u64, size);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.tar.gz");
    std::fs::write(&archive, &object).unwrap();

    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    let good = wait_verified(&daemon, &uuid);
    assert_eq!(
        good["result"],
        json!({
            "ok": true,
            "checksum_matches": true,
            "entries": gnu_tar_entries(&archive),
            "bytes": size,
            "error": null,
        }),
        "{good}\n{}",
        daemon.log()
    );

    let mut bytes = object;
    flip_middle(&mut bytes);
    bucket
        .run(
            bucket
                .client
                .put_object()
                .bucket(&bucket.name)
                .key(s3_key(&uuid))
                .body(bytes.into())
                .send(),
        )
        .expect("PutObject over the archive");
    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    // From the 202 on, GET shows this run until its result replaces the last one.
    let bad = wait_verified(&daemon, &uuid);
    let result = &bad["result"];
    assert_eq!(result["ok"], false, "{bad}");
    assert_eq!(result["checksum_matches"], false, "{bad}");
    assert_eq!(result["bytes"], size, "{bad}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("the stored bytes changed"),
        "{bad}"
    );
}

#[test]
fn s3_an_archive_the_registry_never_recorded_is_checked_against_its_sidecar() {
    let bucket = Bucket::new("e2e-verify-sidecar");
    let mut node = Node::new();
    node.plugins = Some(bucket.plugins(&endpoint(), &[]));
    populate(&node);
    let (uuid, size) = {
        let daemon = node.start();
        completed_backup(&daemon, "s3")
    };
    // A new registry (another node's, or one lost): only the bucket knows the backup, and
    // its sidecar the SHA-1.
    std::fs::remove_dir_all(node.dir.path().join("state")).unwrap();
    let daemon = node.start();
    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    let good = wait_verified(&daemon, &uuid);
    assert_eq!(good["result"]["ok"], true, "{good}\n{}", daemon.log());
    assert_eq!(good["result"]["checksum_matches"], true, "{good}");

    let mut bytes = bucket.get(&s3_key(&uuid));
    flip_middle(&mut bytes);
    bucket
        .run(
            bucket
                .client
                .put_object()
                .bucket(&bucket.name)
                .key(s3_key(&uuid))
                .body(bytes.into())
                .send(),
        )
        .expect("PutObject over the archive");
    assert_eq!(post_verify(&daemon, &uuid).status, 202);
    let result = wait_verified(&daemon, &uuid)["result"].clone();
    assert_eq!(result["checksum_matches"], false, "{result}");
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["bytes"], size, "{result}");
}

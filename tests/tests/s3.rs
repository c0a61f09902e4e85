//! The `s3` adapter end to end: the spawned daemon, real HTTP, the real adapter library, and
//! a real S3 server (moto, started by `tests/s3-server.sh`), inspected directly with a
//! client of the test's own. A multipart backup checked byte for byte and with GNU tools; a
//! bucket that does not exist; a server that goes away mid-upload (nothing left once it is
//! back); a part refused once and retried; a part size S3 would refuse; restore, download
//! and delete of an S3 backup.
//!
//! Buckets are named `e2e-…`, apart from the adapter tests' buckets in the same server.

use std::time::Duration;

use aerie_e2e::s3::{Plugins, PART_SIZE};
use aerie_e2e::tree::{populate, snapshot, wipe};
use aerie_e2e::websocket::{connect, token, Frame};
use aerie_e2e::{new_uuid, noise, run, Daemon, Node};
use aerie_s3_test_support::{endpoint, sha1_hex, Bucket, Proxy, MIB};
use serde_json::{json, Value};

const SERVER: &str = "3b9d5f71-2a4c-4e6f-8a0b-c2d4e6f8a0b2";

/// A guard against a hang while the adapter aborts in the background (its retries wait 1 s,
/// 2 s, 4 s, … after the server comes back), never a performance check.
const ABORT_GUARD: Duration = Duration::from_secs(180);

/// The object key of backup `uuid`.
fn key(uuid: &str) -> String {
    format!("{SERVER}/{uuid}.tar.gz")
}

/// A node whose only adapter, `s3`, stores into `bucket` through `endpoint`.
fn s3_node(bucket: &Bucket, endpoint: &str, extra: &[&str]) -> Node {
    let mut node = Node::new();
    node.plugins = Some(bucket.plugins(endpoint, extra));
    node
}

/// Fills the server with `files` files of `each` incompressible bytes; returns their names.
fn incompressible_server(node: &Node, files: usize, each: usize) -> Vec<String> {
    let root = node.server(SERVER);
    (0..files)
        .map(|i| {
            let name = format!("world/region/r.{i}.0.mca");
            std::fs::create_dir_all(root.join("world/region")).unwrap();
            std::fs::write(root.join(&name), noise(each)).unwrap();
            name
        })
        .collect()
}

/// Backs the server up to `s3` and returns the final status, which must be `completed`.
fn completed_backup(daemon: &Daemon) -> (String, Value) {
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "s3", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    (uuid, status)
}

#[test]
fn a_multipart_backup_is_the_archive_the_daemon_reported() {
    let bucket = Bucket::new("e2e-multipart");
    let node = s3_node(&bucket, &endpoint(), &[]);
    let files = incompressible_server(&node, 4, 4 * MIB);
    std::fs::write(node.server(SERVER).join("server.properties"), b"motd=s3\n").unwrap();
    let daemon = node.start();
    let (uuid, status) = completed_backup(&daemon);
    assert_eq!(status["adapter"], "s3");
    assert_eq!(status["checksum_type"], "sha1");

    let object = bucket.get(&key(&uuid));
    let size = status["size"].as_u64().unwrap();
    assert_eq!(object.len() as u64, size);
    assert_eq!(status["checksum"], sha1_hex(&object).as_str());

    let parts = size.div_ceil(PART_SIZE);
    assert!(parts >= 3, "the archive spans only {parts} parts");
    let head = bucket.head(&key(&uuid)).expect("HeadObject of the archive");
    let etag = head.e_tag().unwrap_or_default();
    assert!(
        etag.ends_with(&format!("-{parts}\"")),
        "not a {parts}-part multipart ETag: {etag}"
    );

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.tar.gz");
    std::fs::write(&archive, &object).unwrap();
    let archive = archive.to_str().unwrap();
    run("gzip", &["-t", archive], dir.path());
    let mut names: Vec<String> = run("tar", &["-tzf", archive], dir.path())
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    let mut expected: Vec<String> = files;
    expected.extend(["server.properties", "world/", "world/region/"].map(str::to_string));
    expected.sort();
    assert_eq!(names, expected);

    let sidecar: Value = serde_json::from_slice(&bucket.get(&format!("{}.json", key(&uuid))))
        .expect("the sidecar is JSON");
    assert_eq!(sidecar["checksum"], status["checksum"], "{sidecar}");
    assert_eq!(sidecar["size"], size, "{sidecar}");
    assert!(bucket.multipart_uploads().is_empty());
}

#[test]
fn a_bucket_that_does_not_exist_fails_the_backup_naming_it() {
    let bucket = Bucket::without_creating("e2e-missing");
    let node = s3_node(&bucket, &endpoint(), &[]);
    incompressible_server(&node, 2, 4 * MIB);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "s3", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("bucket `{}` does not exist", bucket.name)),
        "{error}"
    );
    assert!(status["checksum"].is_null(), "{status}");
    // Nothing was made on the way: not the bucket, let alone an object in it.
    assert!(!bucket.is_created());
}

#[test]
fn a_server_gone_mid_upload_fails_the_backup_and_leaves_no_upload_once_back() {
    let bucket = Bucket::new("e2e-gone");
    let proxy = Proxy::start();
    // The server sees the first part; from the second UploadPart on, every connection
    // (answers in flight included) is dropped.
    proxy.go_down_after_parts(1);
    let node = s3_node(&bucket, &proxy.url, &[]);
    incompressible_server(&node, 4, 4 * MIB);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "s3", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}\n{}", daemon.log());
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("UploadPart"), "{error}");
    assert!(error.contains(&key(&uuid)), "{error}");
    assert!(error.contains("cannot reach the S3 server"), "{error}");
    assert!(proxy.is_down() && proxy.parts_seen() >= 2);
    // The adapter could not abort the upload while the server was away...
    assert_eq!(bucket.multipart_uploads(), [key(&uuid)]);

    // ...and does, in the background, once it is back.
    proxy.set_down(false);
    bucket.wait_for_no_uploads(ABORT_GUARD);
    assert!(!bucket.exists(&key(&uuid)));
    assert!(bucket.keys().is_empty(), "{:?}", bucket.keys());
}

#[test]
fn a_part_refused_once_with_slow_down_is_retried_and_the_backup_completes() {
    let bucket = Bucket::new("e2e-slowdown");
    let proxy = Proxy::start();
    proxy.refuse_next_parts(1);
    let node = s3_node(&bucket, &proxy.url, &[]);
    incompressible_server(&node, 3, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = completed_backup(&daemon);
    assert_eq!(proxy.refused(), 1);
    let object = bucket.get(&key(&uuid));
    assert_eq!(status["checksum"], sha1_hex(&object).as_str());
    assert_eq!(status["size"], object.len() as u64);
    assert!(daemon.log().contains("SlowDown"), "{}", daemon.log());
    assert!(bucket.multipart_uploads().is_empty());
}

#[test]
fn a_part_size_below_5_mib_stops_start_up_naming_part_size() {
    let bucket = Bucket::without_creating("e2e-partsize");
    let node = s3_node(&bucket, &endpoint(), &["part_size: 1048576"]);
    let line = node.refusal();
    assert!(line.contains("part_size"), "{line}");
    assert!(line.contains("plugins.yml"), "{line}");
}

#[test]
fn a_backup_restored_from_s3_over_a_wiped_directory_gives_back_the_same_tree() {
    let bucket = Bucket::new("e2e-restore");
    let node = s3_node(&bucket, &endpoint(), &[]);
    let root = node.server(SERVER);
    // Large enough that the archive is several parts.
    std::fs::write(root.join("world.bin"), noise(11 * MIB)).unwrap();
    populate(&root);
    let before = snapshot(&root);
    let daemon = node.start();
    let (uuid, _) = completed_backup(&daemon);

    wipe(&root);
    std::fs::write(root.join("written-after-the-backup"), b"junk").unwrap();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    let jwt = token(&node.token, SERVER, &["websocket.connect"], 600);
    assert_eq!(socket.auth(&jwt).0, "auth success");
    let reply = daemon.send(
        daemon
            .request(
                reqwest::Method::POST,
                &format!("/api/servers/{SERVER}/backup/{uuid}/restore"),
            )
            .json(&json!({"adapter": "s3", "truncate_directory": true, "download_url": ""})),
    );
    assert_eq!(reply.status, 202, "{reply:?}\n{}", daemon.log());
    let frames: Vec<Frame> = socket.recv_until("backup restore completed");
    let message = frames
        .iter()
        .rev()
        .find(|f| f.0 == "daemon message")
        .and_then(|f| f.1.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("Completed server restoration"),
        "{message}\n{}",
        daemon.log()
    );

    let after = snapshot(&root);
    let differences: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| {
            format!(
                "{path}:\n  before {:?}\n  after  {:?}",
                before.get(path),
                after.get(path)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "the restored tree differs:\n{}",
        differences.join("\n")
    );
}

/// A download link's token, as the Panel signs one.
fn download_token(node: &Node, uuid: &str) -> String {
    let claims = json!({
        "exp": aerie::jwt::unix_now() + 900,
        "server_uuid": SERVER,
        "backup_uuid": uuid,
        "unique_id": new_uuid(),
    });
    aerie::jwt::sign(&claims, node.token.as_bytes())
}

#[test]
fn an_s3_backup_downloads_whole_and_by_range() {
    let bucket = Bucket::new("e2e-download");
    let node = s3_node(&bucket, &endpoint(), &[]);
    incompressible_server(&node, 3, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = completed_backup(&daemon);
    let url = |token: &str| format!("{}/download/backup?token={token}", daemon.base);

    let response = daemon
        .client
        .get(url(&download_token(&node, &uuid)))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", daemon.log());
    let header = |r: &reqwest::blocking::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        header(&response, "content-disposition"),
        format!("attachment; filename=\"{uuid}.tar.gz\"")
    );
    assert_eq!(
        header(&response, "content-length"),
        status["size"].to_string()
    );
    let body = response.bytes().unwrap();
    assert_eq!(body.len() as u64, status["size"].as_u64().unwrap());
    assert_eq!(status["checksum"], sha1_hex(&body).as_str());

    let response = daemon
        .client
        .get(url(&download_token(&node, &uuid)))
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 206, "{}", daemon.log());
    assert_eq!(
        header(&response, "content-range"),
        format!("bytes 100-199/{}", body.len())
    );
    let part = response.bytes().unwrap();
    assert!(part[..] == body[100..200], "the range's bytes differ");
}

#[test]
fn deleting_an_s3_backup_removes_the_object_and_its_sidecar_then_is_404() {
    let bucket = Bucket::new("e2e-delete");
    let node = s3_node(&bucket, &endpoint(), &[]);
    incompressible_server(&node, 2, MIB);
    let daemon = node.start();
    let (uuid, _) = completed_backup(&daemon);
    let sidecar = format!("{}.json", key(&uuid));
    assert!(bucket.exists(&key(&uuid)) && bucket.exists(&sidecar));

    let delete = || {
        daemon.send(daemon.request(
            reqwest::Method::DELETE,
            &format!("/api/servers/{SERVER}/backup/{uuid}"),
        ))
    };
    let reply = delete();
    assert_eq!(reply.status, 204, "{reply:?}\n{}", daemon.log());
    assert!(!bucket.exists(&key(&uuid)));
    assert!(!bucket.exists(&sidecar));
    assert!(bucket.keys().is_empty(), "{:?}", bucket.keys());

    let reply = delete();
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.error(),
        "The requested backup was not found on this server."
    );
}

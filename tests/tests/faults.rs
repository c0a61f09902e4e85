//! Faults a node meets in production, against the real daemon: the backup disk filling up
//! mid-backup, the S3 server cutting connections mid-part, and the Panel down through many
//! retries while backups keep finishing. Each ends the way a user relies on: a clear error,
//! nothing partial left, the daemon still serving, and no report lost.
//!
//! A crash (kill -9) mid-backup is covered in `failures.rs` (failed, nothing partial, the uuid
//! usable again) and `panel_reports.rs` (reported failed at the next start).
//!
//! The disk-full test mounts a tmpfs, which needs root (CI runs as root); where mounting is
//! refused it says so on the terminal and skips. The S3 tests need the test S3 server
//! (`source tests/s3-server.sh && s3_server_start`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::s3::Plugins;
use aerie_e2e::{new_uuid, noise, run, skip_visibly, Daemon, Node, HANG_GUARD};
use aerie_s3_test_support::{sha1_hex, Bucket, Proxy, MIB};
use reqwest::Method;
use serde_json::Value;

const SERVER: &str = "6a1f0e2d-3c4b-4a59-8e7d-1f2a3b4c5d6e";
const TOKEN_ID: &str = "test";
const TOKEN: &str = "test-node-token-0123456789";

/// The size of the small backup disk: big enough for a small archive, far too small for the
/// 24 MB one the full-disk test writes.
const SMALL_DISK: &str = "16m";

/// A tmpfs mounted for the life of the value, unmounted (lazily, in case a file is still
/// open in it) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `path` (created if needed); `Err` says why it could not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if output.status.success() {
            Ok(Tmpfs {
                path: path.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A node whose reports go to `panel`.
fn node_with_panel(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    node
}

/// Backs `SERVER` up with `adapter` and returns the final status.
fn backup(daemon: &Daemon, adapter: &str) -> (String, Value) {
    let uuid = new_uuid();
    daemon.start_backup(SERVER, adapter, &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    (uuid, status)
}

/// The SHA-1 of a file, from GNU coreutils' sha1sum.
fn sha1sum(path: &Path) -> String {
    let out = run("sha1sum", &[path.to_str().unwrap()], Path::new("."));
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_full_backup_disk_fails_the_backup_clearly_and_leaves_room_for_the_next() {
    let panel = PanelStandIn::start(TOKEN_ID, TOKEN);
    let node = node_with_panel(&panel);
    let disk = match Tmpfs::mount(&node.backup_dir(), SMALL_DISK) {
        Ok(disk) => disk,
        Err(why) => {
            return skip_visibly(
                "a_full_backup_disk_fails_the_backup_clearly_and_leaves_room_for_the_next",
                &format!("cannot mount a tmpfs as the backup directory (needs root): {why}"),
            )
        }
    };
    // 24 MB that gzip cannot shrink: the archive cannot fit in 16 MiB.
    let root = node.server(SERVER);
    for (i, chunk) in noise(24_000_000).chunks(1_000_000).enumerate() {
        std::fs::write(root.join(format!("region-{i}.mca")), chunk).unwrap();
    }
    let daemon = node.start();

    let (full, status) = backup(&daemon, "wings");
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the backup storage is full: "), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(
        error.contains(&disk.path.display().to_string()),
        "the error names where: {error}"
    );
    assert!(status["checksum"].is_null(), "{status}");
    // Nothing partial: not the archive, not its temporary file.
    assert_eq!(aerie_e2e::tree::files_in(&disk.path), Vec::<String>::new());
    let report = &panel.wait_for_accepted(1)[0];
    assert_eq!(report.path, format!("/api/remote/backups/{full}"));
    assert_eq!(report.body["successful"], false);

    // Still serving: with most of the data gone, the next backup fits on the same disk.
    for i in 2..24 {
        std::fs::remove_file(root.join(format!("region-{i}.mca"))).unwrap();
    }
    let (fits, status) = backup(&daemon, "wings");
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    let archive = disk.path.join(format!("{fits}.tar.gz"));
    assert_eq!(
        aerie_e2e::tree::files_in(&disk.path),
        vec![format!("{fits}.tar.gz")]
    );
    assert_eq!(status["checksum"], sha1sum(&archive).as_str());
    run("gzip", &["-t", archive.to_str().unwrap()], Path::new("."));
    let reports = panel.wait_for_accepted(2);
    assert_eq!(reports[1].body["successful"], true);
    drop(daemon);
}

/// A guard against a hang while the adapter aborts an upload (at once, or in the background
/// with retries 1 s, 2 s, 4 s, ... apart), never a performance check.
const ABORT_GUARD: Duration = Duration::from_secs(120);

/// The object key of backup `uuid` in the S3 tests.
fn key(uuid: &str) -> String {
    format!("{SERVER}/{uuid}.tar.gz")
}

/// A node whose only adapter, `s3`, stores into `bucket` through `proxy`, with a server of
/// four 4 MiB files gzip cannot shrink: an archive of four 5 MiB parts.
fn s3_node_through(bucket: &Bucket, proxy: &Proxy) -> Node {
    let mut node = Node::new();
    node.plugins = Some(bucket.plugins(&proxy.url, &[]));
    let root = node.server(SERVER);
    for i in 0..4 {
        std::fs::write(root.join(format!("r.{i}.0.mca")), noise(4 * MIB)).unwrap();
    }
    node
}

#[test]
fn parts_cut_off_mid_upload_are_sent_again_and_the_backup_completes() {
    let bucket = Bucket::new("faults-reset-once");
    let proxy = Proxy::start();
    proxy.reset_next_parts(2);
    let node = s3_node_through(&bucket, &proxy);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon, "s3");
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    assert_eq!(proxy.resets(), 2);
    let object = bucket.get(&key(&uuid));
    assert_eq!(status["checksum"], sha1_hex(&object).as_str());
    assert_eq!(status["size"], object.len() as u64);
    assert!(bucket.multipart_uploads().is_empty());
    assert!(
        daemon.log().contains("S3 request failed; retrying"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_server_that_cuts_off_every_part_fails_the_backup_and_leaves_no_upload() {
    let bucket = Bucket::new("faults-reset-always");
    let proxy = Proxy::start();
    proxy.reset_next_parts(u32::MAX);
    let node = s3_node_through(&bucket, &proxy);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon, "s3");
    assert_eq!(status["state"], "failed", "{status}\n{}", daemon.log());
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("UploadPart"), "{error}");
    assert!(error.contains(&key(&uuid)), "{error}");
    assert!(error.contains("gave up after"), "{error}");
    assert!(proxy.resets() > 1, "retried before giving up");
    // Only parts are cut off: the abort reaches the server, at once or in the background.
    bucket.wait_for_no_uploads(ABORT_GUARD);
    assert!(bucket.keys().is_empty(), "{:?}", bucket.keys());

    // The daemon still serves, and with the server healthy again the next backup completes.
    proxy.reset_next_parts(0);
    let (uuid, status) = backup(&daemon, "s3");
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    assert_eq!(
        status["checksum"],
        sha1_hex(&bucket.get(&key(&uuid))).as_str()
    );
}

/// The reports the daemon still holds for the Panel.
fn queued(daemon: &Daemon) -> Vec<Value> {
    let reply = daemon.send(daemon.request(Method::GET, "/api/notifications"));
    assert_eq!(reply.status, 200);
    reply.json.as_array().unwrap().clone()
}

/// How many backups finish while the Panel is down.
const BACKUPS_WHILE_DOWN: usize = 5;
/// Failed delivery attempts each report must have seen before the Panel comes back: the
/// outage spans several rounds of the daemon's backoff (0.5 s, 1 s, 2 s, ...).
const ATTEMPTS_WHILE_DOWN: u64 = 4;

#[test]
fn every_backup_finished_while_the_panel_is_down_is_reported_once_when_it_is_back() {
    let mut panel = PanelStandIn::start(TOKEN_ID, TOKEN);
    let node = node_with_panel(&panel);
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    let daemon = node.start();
    panel.go_down();

    let mut finished = Vec::new();
    for _ in 0..BACKUPS_WHILE_DOWN {
        let (uuid, status) = backup(&daemon, "wings");
        assert_eq!(status["state"], "completed", "{status}");
        finished.push((uuid, status));
    }
    // Every report waits through several failed attempts; none is dropped meanwhile.
    let start = Instant::now();
    loop {
        let pending = queued(&daemon);
        assert_eq!(pending.len(), BACKUPS_WHILE_DOWN, "{pending:?}");
        if pending
            .iter()
            .all(|n| n["attempts"].as_u64().unwrap() >= ATTEMPTS_WHILE_DOWN)
        {
            assert!(pending.iter().all(|n| n["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("the Panel could not be reached")));
            break;
        }
        assert!(start.elapsed() < HANG_GUARD, "{pending:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for (uuid, _) in &finished {
        assert!(node.backup_dir().join(format!("{uuid}.tar.gz")).is_file());
    }

    panel.come_back();
    let reports = panel.wait_for_accepted(BACKUPS_WHILE_DOWN);
    let start = Instant::now();
    while !queued(&daemon).is_empty() {
        assert!(start.elapsed() < HANG_GUARD, "{:?}", queued(&daemon));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Delivered in the order the backups ended, not each at the end of its own backoff.
    let order: Vec<_> = reports.iter().map(|r| r.path.clone()).collect();
    let expected: Vec<_> = finished
        .iter()
        .map(|(uuid, _)| format!("/api/remote/backups/{uuid}"))
        .collect();
    assert_eq!(order, expected, "reports in the order the backups ended");
    for (uuid, status) in &finished {
        let mine: Vec<_> = reports
            .iter()
            .filter(|r| r.path == format!("/api/remote/backups/{uuid}"))
            .collect();
        assert_eq!(mine.len(), 1, "one report for {uuid}: {reports:?}");
        assert_eq!(mine[0].body["successful"], true);
        assert_eq!(mine[0].body["checksum"], status["checksum"]);
        assert_eq!(mine[0].body["size"], status["size"]);
    }
    daemon.stop();
    assert_eq!(
        panel.received().len(),
        BACKUPS_WHILE_DOWN,
        "each reported exactly once"
    );
}

#[test]
fn a_report_waiting_on_a_long_backoff_is_not_overtaken_by_newer_ones() {
    let mut panel = PanelStandIn::start(TOKEN_ID, TOKEN);
    let node = node_with_panel(&panel);
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    let daemon = node.start();
    panel.go_down();
    let (first, _) = backup(&daemon, "wings");
    // Its backoff grows to 16 s (0.5 s doubled five times).
    let start = Instant::now();
    while queued(&daemon)[0]["attempts"].as_u64().unwrap() < 6 {
        assert!(start.elapsed() < HANG_GUARD, "{:?}", queued(&daemon));
        std::thread::sleep(Duration::from_millis(200));
    }
    panel.come_back();
    let (second, _) = backup(&daemon, "wings");
    let (third, _) = backup(&daemon, "wings");
    let order: Vec<_> = panel
        .wait_for_accepted(3)
        .into_iter()
        .map(|r| r.path)
        .collect();
    let expected: Vec<_> = [first, second, third]
        .iter()
        .map(|uuid| format!("/api/remote/backups/{uuid}"))
        .collect();
    assert_eq!(order, expected, "the oldest report goes first");
    daemon.stop();
}

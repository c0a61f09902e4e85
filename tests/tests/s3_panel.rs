//! The `s3` adapter's `mode: panel` end to end: the Panel holds the bucket (its backup
//! driver is `s3`) and the daemon has no S3 credentials. A Panel stand-in does what the
//! Panel's `BackupRemoteUploadController` and `BackupStatusController` do against the test
//! S3 server (moto): CreateMultipartUpload and presigned UploadPart URLs when asked, then
//! CompleteMultipartUpload with the reported parts, or AbortMultipartUpload on a failure.
//! A backup over several parts is the archive reported; a part refused once is retried;
//! expired URLs, a Panel that fails the request for URLs, and a node without `remote` fail
//! with reasons that say what to do, leaving no upload in the bucket.

use std::time::{Duration, Instant};

use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::panel::{PanelStandIn, Received};
use aerie_e2e::s3::{panel_mode_plugins, PART_SIZE};
use aerie_e2e::tree::{populate, snapshot, wipe};
use aerie_e2e::{new_uuid, noise, run, Daemon, Node, HANG_GUARD};
use aerie_s3_test_support::{endpoint, sha1_hex, Bucket, PanelS3, Proxy, MIB};
use serde_json::Value;

const SERVER: &str = "5d2e8a41-7b3c-4f9e-9a1d-e3f5a7c9b1d3";
const TOKEN_ID: &str = "test";
const TOKEN: &str = "test-node-token-0123456789";

/// The Panel's key of backup `uuid`.
fn key(uuid: &str) -> String {
    format!("{SERVER}/{uuid}.tar.gz")
}

/// A node with the Panel stand-in as `remote` and `s3` in `mode: panel`.
fn panel_node(panel: &PanelStandIn, extra: &[&str]) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    node.plugins = Some(panel_mode_plugins(extra));
    node
}

/// A Panel stand-in whose S3 driver uses `bucket`, presigning URLs that point at `endpoint`.
fn s3_panel(bucket: &Bucket, endpoint: &str, adjust: impl FnOnce(&mut PanelS3)) -> PanelStandIn {
    let panel = PanelStandIn::start(TOKEN_ID, TOKEN);
    let mut s3 = PanelS3::new(&bucket.name, endpoint);
    adjust(&mut s3);
    panel.use_s3(s3, SERVER);
    panel
}

/// Fills the server with `files` files of `each` incompressible bytes.
fn incompressible_server(node: &Node, files: usize, each: usize) {
    let root = node.server(SERVER).join("world/region");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("r.{i}.0.mca")), noise(each)).unwrap();
    }
}

/// Runs a backup to its end; its uuid and final status.
fn backup(daemon: &Daemon) -> (String, Value) {
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "s3", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    (uuid, status)
}

/// Waits for the status report of `uuid` that the Panel answered, and returns it.
fn report(panel: &PanelStandIn, uuid: &str) -> Received {
    let path = format!("/api/remote/backups/{uuid}");
    let start = Instant::now();
    loop {
        if let Some(report) = panel
            .received()
            .into_iter()
            .find(|r| r.method == "POST" && r.path == path)
        {
            assert!(panel.violations().is_empty(), "{:?}", panel.violations());
            return report;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "no report: {:?}",
            panel.received()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The requests for upload URLs the Panel received.
fn url_requests(panel: &PanelStandIn) -> Vec<Received> {
    panel
        .received()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

/// Nothing of the backup is left on the node: the backup directory holds no file.
fn assert_nothing_on_the_node(node: &Node) {
    let left: Vec<_> = std::fs::read_dir(node.backup_dir())
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left on the node: {left:?}");
}

#[test]
fn a_backup_through_presigned_parts_is_the_archive_reported_and_the_panel_completes_it() {
    let bucket = Bucket::new("e2e-panel-parts");
    let panel = s3_panel(&bucket, &endpoint(), |_| {});
    let node = panel_node(&panel, &[]);
    incompressible_server(&node, 4, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());

    let report = report(&panel, &uuid);
    assert_eq!(report.answered, 204, "{report:?}\n{:?}", panel.s3_actions());
    assert_eq!(report.body["successful"], true);
    let size = status["size"].as_u64().unwrap();
    assert_eq!(report.body["size"], size);
    assert_eq!(report.body["checksum"], status["checksum"]);
    // Every part but the last is aerie's part size: 16 MiB of noise spans 4 parts.
    let parts = report.body["parts"].as_array().expect("parts").clone();
    assert_eq!(parts.len() as u64, size.div_ceil(PART_SIZE), "{parts:?}");
    assert!(parts.len() >= 3, "{parts:?}");
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part["part_number"], i + 1, "{parts:?}");
        let etag = part["etag"].as_str().unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "not verbatim: {etag}"
        );
    }
    assert_eq!(
        panel.s3_actions(),
        [
            format!("created {uuid}"),
            format!("completed {uuid} {} parts", parts.len())
        ]
    );

    // The URLs were asked for once, for enough 5 GiB Panel parts to cover aerie's parts,
    // and no more than the host's size bound calls for (it reached the adapter as a hint):
    // not S3's 10,000.
    let asked = url_requests(&panel);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let query_size: u64 = asked[0]
        .path
        .split("size=")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let urls_asked = query_size.div_ceil(5 << 30) as usize;
    assert!(urls_asked >= parts.len(), "{}", asked[0].path);
    assert!(
        urls_asked <= 2 * parts.len() + 1,
        "asked for {urls_asked} URLs for a {size}-byte archive: {}",
        asked[0].path
    );

    let object = bucket.get(&key(&uuid));
    assert_eq!(object.len() as u64, size);
    assert_eq!(status["checksum"], sha1_hex(&object).as_str());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.tar.gz");
    std::fs::write(&archive, &object).unwrap();
    run("gzip", &["-t", archive.to_str().unwrap()], dir.path());
    let head = bucket.head(&key(&uuid)).expect("HeadObject");
    assert_eq!(head.content_type(), Some("application/x-gzip"));
    assert!(bucket.multipart_uploads().is_empty());
    assert_nothing_on_the_node(&node);
}

#[test]
fn a_panel_held_backup_restores_through_the_panels_presigned_download_url() {
    let bucket = Bucket::new("e2e-panel-restore");
    let panel = s3_panel(&bucket, &endpoint(), |_| {});
    let mut node = panel_node(&panel, &[]);
    node.system_extra = LOOPBACK_ALLOWED.to_string();
    let root = node.server(SERVER);
    populate(&root);
    let before = snapshot(&root);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    assert_eq!(
        report(&panel, &uuid).answered,
        204,
        "{:?}",
        panel.s3_actions()
    );

    wipe(&root);
    // The Panel presigns GetObject for the restore; aerie never reads the bucket itself.
    let download_url = PanelS3::new(&bucket.name, &endpoint())
        .presign_get(&key(&uuid))
        .unwrap();
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &serde_json::json!({"adapter": "s3", "truncate_directory": true, "download_url": download_url}),
    );
    assert_eq!(reply.status, 202, "{reply:?}\n{}", daemon.log());
    let path = format!("/api/remote/backups/{uuid}/restore");
    let start = Instant::now();
    let restored = loop {
        if let Some(r) = panel.received().into_iter().find(|r| r.path == path) {
            break r;
        }
        assert!(start.elapsed() < HANG_GUARD, "no restore report");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(restored.body["successful"], true, "{}", daemon.log());
    assert_eq!(snapshot(&root), before);
}

#[test]
fn a_part_refused_once_with_503_is_sent_again_from_its_buffer() {
    let bucket = Bucket::new("e2e-panel-503");
    let proxy = Proxy::start();
    proxy.refuse_next_parts(1);
    let panel = s3_panel(&bucket, &proxy.url, |_| {});
    let node = panel_node(&panel, &[]);
    incompressible_server(&node, 3, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    assert_eq!(proxy.refused(), 1);
    let report = report(&panel, &uuid);
    assert_eq!(report.answered, 204, "{:?}", panel.s3_actions());
    let object = bucket.get(&key(&uuid));
    assert_eq!(status["checksum"], sha1_hex(&object).as_str());
    assert!(bucket.multipart_uploads().is_empty());
}

#[test]
fn expired_urls_fail_the_backup_naming_the_panel_setting_and_the_panel_aborts() {
    let bucket = Bucket::new("e2e-panel-expired");
    let proxy = Proxy::start();
    // Signed two hours ago for one: expired when they arrive.
    let panel = s3_panel(&bucket, &proxy.url, |s3| {
        s3.signed_ago = Duration::from_secs(2 * 3600);
        s3.lifetime = Duration::from_secs(3600);
    });
    let node = panel_node(&panel, &[]);
    incompressible_server(&node, 2, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("expired"), "{error}");
    assert!(
        error.contains("raise the Panel's BACKUP_PRESIGNED_URL_LIFESPAN"),
        "{error}"
    );
    // Never sent to a URL S3 would refuse.
    assert_eq!(proxy.parts_seen(), 0);
    let report = report(&panel, &uuid);
    assert_eq!(report.body["successful"], false);
    assert_eq!(
        panel.s3_actions(),
        [format!("created {uuid}"), format!("aborted {uuid}")]
    );
    assert!(bucket.multipart_uploads().is_empty());
    assert_nothing_on_the_node(&node);
}

#[test]
fn a_panel_failing_the_request_for_urls_fails_the_backup_cleanly() {
    let bucket = Bucket::new("e2e-panel-500");
    let panel = s3_panel(&bucket, &endpoint(), |_| {});
    panel.answer_next(&[500]);
    let node = panel_node(&panel, &[]);
    incompressible_server(&node, 2, 4 * MIB);
    let daemon = node.start();
    let (uuid, status) = backup(&daemon);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("asking the Panel for upload URLs")
            && error.contains("the Panel answered 500"),
        "{error}"
    );
    let report = report(&panel, &uuid);
    assert_eq!(report.body["successful"], false);
    assert_eq!(url_requests(&panel).len(), 1, "a 500 is not asked again");
    assert!(panel.s3_actions().is_empty(), "{:?}", panel.s3_actions());
    assert!(bucket.multipart_uploads().is_empty());
    assert_nothing_on_the_node(&node);
}

#[test]
fn panel_mode_without_remote_is_refused_at_start_naming_mode_and_remote() {
    let mut node = Node::new();
    node.plugins = Some(panel_mode_plugins(&[]));
    let refusal = node.refusal();
    assert!(
        refusal.contains("mode: `panel` needs the Panel") && refusal.contains("set `remote`"),
        "{refusal}"
    );
}

/// The daemon's peak resident memory (`VmHWM`, what `/usr/bin/time -v` reports as maximum
/// resident set size), in KiB.
fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Not a check but a measurement: backs the tree in `AERIE_BENCH_CORPUS` up once in each
/// mode (16 MiB parts × 4, a fresh daemon each) and prints the time, the throughput and the
/// daemon's peak memory. Run it with
/// `AERIE_BENCH_CORPUS=DIR cargo test -p aerie-e2e --test s3_panel -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; needs AERIE_BENCH_CORPUS"]
fn measure_both_modes_on_a_corpus() {
    use aerie_e2e::s3::Plugins;
    let corpus = std::env::var("AERIE_BENCH_CORPUS").expect("AERIE_BENCH_CORPUS=DIR");
    let settings = ["part_size: 16777216", "concurrency: 4"];
    let order = std::env::var("AERIE_BENCH_ORDER").unwrap_or_else(|_| "direct panel".into());
    for mode in order.split_whitespace() {
        let bucket = Bucket::new(&format!("bench-{mode}"));
        let panel = s3_panel(&bucket, &endpoint(), |_| {});
        let mut node = panel_node(&panel, &settings);
        if mode == "direct" {
            node.plugins = Some(bucket.plugins(&endpoint(), &settings));
        }
        let root = node.server(SERVER);
        run(
            "cp",
            &["-a", &format!("{corpus}/."), root.to_str().unwrap()],
            &root,
        );
        let daemon = node.start();
        let at_start = peak_rss_kib(&daemon) / 1024;
        let started = Instant::now();
        let (_, status) = backup(&daemon);
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
        let input = status["bytes_done"].as_u64().unwrap() as f64 / MIB as f64;
        let output = status["size"].as_u64().unwrap() as f64 / MIB as f64;
        println!(
            "mode {mode}: {input:.0} MiB of files -> {output:.0} MiB archive in {seconds:.1} s \
             ({:.1} MiB/s of files), daemon peak RSS {} MiB ({at_start} MiB before the backup)",
            input / seconds,
            peak_rss_kib(&daemon) / 1024
        );
    }
}

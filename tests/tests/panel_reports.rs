//! Status reports to the Panel, against a stand-in that checks every request against what
//! the Panel accepts: one report per backup, failures reported, and a report the Panel
//! cannot take yet is kept (with the archive) and delivered later, across restarts.

use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::{fixture_library, new_uuid, noise, Daemon, Node, SLOW_WRITES};
use reqwest::Method;

const SERVER: &str = "3b9e6f8a-1c2d-4e5f-8a7b-9c0d1e2f3a4b";

fn node_with_panel(panel: &PanelStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    node
}

fn queued(daemon: &Daemon) -> Vec<serde_json::Value> {
    let reply = daemon.send(daemon.request(Method::GET, "/api/notifications"));
    assert_eq!(reply.status, 200);
    reply.json.as_array().unwrap().clone()
}

#[test]
fn a_good_backup_is_reported_once_with_its_checksum_and_no_parts() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports[0].path, format!("/api/remote/backups/{uuid}"));
    let body = &reports[0].body;
    assert_eq!(body["successful"], true);
    assert_eq!(body["checksum"], status["checksum"]);
    assert_eq!(body["checksum_type"], "sha1");
    assert_eq!(body["size"], status["size"]);
    assert!(body["parts"].is_null());
    assert!(queued(&daemon).is_empty());
    daemon.stop();
    assert_eq!(panel.received().len(), 1, "reported exactly once");
}

#[test]
fn a_failed_backup_is_reported_unsuccessful() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = node_with_panel(&panel);
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {}\n    config:\n      directory: {}\n      fail_after_bytes: 0\n",
        fixture_library().display(),
        node.dir.path().join("store").display()
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "failed");
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports[0].body["successful"], false);
    assert_eq!(reports[0].body["size"], 0);
    assert!(reports[0].body["parts"].is_null());
}

#[test]
fn server_errors_are_retried_and_a_refusal_is_final_without_losing_the_archive() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    panel.answer_next(&[500, 502]);
    let node = node_with_panel(&panel);
    let daemon = node.start();
    let retried = new_uuid();
    daemon.start_backup(SERVER, "wings", &retried, "");
    daemon.wait_for_end(SERVER, &retried);
    panel.wait_for_accepted(1);
    let statuses: Vec<u16> = panel.received().iter().map(|r| r.answered).collect();
    assert_eq!(statuses, vec![500, 502, 204]);
    // Every attempt carried the same report of a good backup.
    for report in panel.received() {
        assert_eq!(report.path, format!("/api/remote/backups/{retried}"));
        assert_eq!(report.body["successful"], true);
    }

    // A 4xx (e.g. "already completed") is not retried, and unlike Wings the archive stays.
    panel.answer_next(&[400]);
    let refused = new_uuid();
    daemon.start_backup(SERVER, "wings", &refused, "");
    daemon.wait_for_end(SERVER, &refused);
    let start = std::time::Instant::now();
    while panel.received().len() < 4 || !queued(&daemon).is_empty() {
        assert!(start.elapsed() < aerie_e2e::HANG_GUARD);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(panel.received()[3].answered, 400);
    assert_eq!(panel.received()[3].body["successful"], true);
    assert!(node
        .backup_dir()
        .join(format!("{refused}.tar.gz"))
        .is_file());
    assert!(
        daemon.log().contains("the stand-in answered 400"),
        "the Panel's detail is logged"
    );
    daemon.stop();
    assert_eq!(panel.received().len(), 4);
}

#[test]
fn a_panel_that_is_down_at_completion_gets_the_report_when_it_is_back() {
    let mut panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let daemon = node.start();
    panel.go_down();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "completed");
    let pending = queued(&daemon);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["backup"], uuid);
    // Several failed attempts (0.5 s, 1 s, 2 s backoff), polled rather than slept through.
    let start = std::time::Instant::now();
    while queued(&daemon)[0]["attempts"].as_u64().unwrap() < 4 {
        assert!(
            start.elapsed() < aerie_e2e::HANG_GUARD,
            "{:?}",
            queued(&daemon)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        node.backup_dir().join(format!("{uuid}.tar.gz")).is_file(),
        "the archive is kept"
    );
    panel.come_back();
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports[0].body["successful"], true);
}

#[test]
fn a_report_survives_a_restart_of_the_daemon() {
    let mut panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    panel.go_down();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(queued(&daemon).len(), 1);
    daemon.stop();

    let daemon = node.start();
    panel.come_back();
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports[0].path, format!("/api/remote/backups/{uuid}"));
    assert_eq!(reports[0].body["successful"], true);
    drop(daemon);
}

#[test]
fn a_backup_cut_off_by_a_crash_is_reported_failed_at_the_next_start() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = node_with_panel(&panel);
    // Slow enough to be running when the daemon is killed.
    std::fs::write(node.server(SERVER).join("noise.bin"), noise(4_000_000)).unwrap();
    node.system_extra = SLOW_WRITES.into();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.crash();
    assert!(panel.received().is_empty());

    let _daemon = node.start();
    let reports = panel.wait_for_accepted(1);
    assert_eq!(reports[0].path, format!("/api/remote/backups/{uuid}"));
    assert_eq!(reports[0].body["successful"], false);
}

#[test]
fn an_operator_can_drop_a_report_the_panel_will_never_take() {
    let mut panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    panel.go_down();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let pending = queued(&daemon);
    let body: serde_json::Value =
        serde_json::from_str(pending[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["successful"], true);
    let id = pending[0]["id"].as_i64().unwrap();
    let reply = daemon.send(daemon.request(Method::DELETE, &format!("/api/notifications/{id}")));
    assert_eq!(reply.status, 204);
    assert!(queued(&daemon).is_empty());
    let reply = daemon.send(daemon.request(Method::DELETE, &format!("/api/notifications/{id}")));
    assert_eq!(reply.status, 404);
}

#[test]
fn without_a_remote_nothing_is_queued() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    assert!(queued(&daemon).is_empty());
}

#[test]
fn a_restore_is_reported_with_its_outcome() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let node = node_with_panel(&panel);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    panel.wait_for_accepted(1);
    let reply = daemon.send(
        daemon
            .request(Method::POST, &format!("/api/servers/{SERVER}/backup/{uuid}/restore"))
            .json(&serde_json::json!({"adapter": "wings", "truncate_directory": true, "download_url": ""})),
    );
    assert_eq!(reply.status, 202);
    let reports = panel.wait_for_accepted(2);
    assert_eq!(
        reports[1].path,
        format!("/api/remote/backups/{uuid}/restore")
    );
    assert_eq!(reports[1].body, serde_json::json!({"successful": true}));
    assert_eq!(
        std::fs::read(node.data().join(SERVER).join("level.dat")).unwrap(),
        b"level"
    );
}

//! `GET /metrics` end to end: behind the node token on the API port, without it on
//! `metrics.bind`, and read by a real Prometheus text parser (the `prometheus_client` Python
//! package's, from the virtualenv `tests/s3-server.sh` sets up): the counters move as
//! backups and restores run, fail and are cancelled, and nothing stays in flight.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::websocket::completion_message;
use aerie_e2e::{
    fixture_library, new_uuid, noise, wings_library, Daemon, Node, HANG_GUARD, SLOW_WRITES,
};
use serde::Deserialize;
use serde_json::json;

const SERVER: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
const BIG_SERVER: &str = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b0a";

/// Parses Prometheus text with `prometheus_client.parser.text_string_to_metric_families`
/// and prints what it found as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
"#;

/// One metric family as the parser read it.
#[derive(Debug, Deserialize)]
struct ParsedFamily {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<ParsedSample>,
}

/// One sample as the parser read it.
#[derive(Debug, Deserialize)]
struct ParsedSample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// One scrape, parsed.
#[derive(Debug)]
struct Scrape(Vec<ParsedFamily>);

impl Scrape {
    /// The type the parser gave family `name`.
    fn kind(&self, name: &str) -> &str {
        &self
            .0
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name} in {self:#?}"))
            .kind
    }

    /// The value of sample `name` with exactly `labels`, if there is one.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The value of sample `name` with `labels`, which must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sample(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {self:#?}"))
    }
}

/// The virtualenv's python (`AERIE_TEST_PYTHON`, exported by `s3_server_start`). Without it
/// the test fails, saying so, as the S3 tests do: a parser that is not there is no pass.
fn python() -> String {
    std::env::var("AERIE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "AERIE_TEST_PYTHON is not set: the metrics tests parse /metrics with the \
             prometheus_client Python package. Run them with `bash tests/run.sh`, or\n  \
             source tests/s3-server.sh && s3_server_start && \
             cargo build --workspace --all-targets && \
             cargo test -p aerie-e2e --test metrics; s3_server_stop"
        )
    })
}

/// Parses `text` with the Prometheus text parser; a text it refuses fails the test.
fn parse(text: &str) -> Scrape {
    let mut child = Command::new(python())
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the virtualenv's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Scrape(serde_json::from_slice(&output.stdout).expect("the parser's JSON"))
}

/// `GET {url}` without a token: status, `Content-Type` and body.
fn get_plain(url: &str) -> (u16, String, String) {
    let response = reqwest::blocking::get(url).expect("request");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, response.text().unwrap())
}

/// `GET /metrics` on the API port with the node token, parsed.
fn scrape_api(daemon: &Daemon) -> Scrape {
    let response = daemon
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    parse(&response.text().unwrap())
}

/// Polls the metrics until `check` holds, failing after [`HANG_GUARD`].
fn scrape_until(daemon: &Daemon, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let scrape = scrape_api(daemon);
        if check(&scrape) {
            return scrape;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "still not {what} after {HANG_GUARD:?}: {scrape:#?}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

#[test]
fn metrics_need_the_token_and_parse_as_prometheus_text() {
    let node = Node::new();
    let daemon = node.start();

    let (status, _, body) = get_plain(&format!("{}/metrics", daemon.base));
    assert_eq!(status, 401);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"error": "The required authorization heads were not present in the request."})
    );
    let wrong = daemon.send(
        daemon
            .client
            .get(format!("{}/metrics", daemon.base))
            .bearer_auth("not-the-node-token"),
    );
    assert_eq!(wrong.status, 403);
    assert_eq!(
        wrong.error(),
        "You are not authorized to access this endpoint."
    );

    let scrape = scrape_api(&daemon);
    // Every configured adapter's counters are there at zero before any backup, so that
    // the first failure is an increase an alert sees.
    let failed = [("adapter", "wings"), ("outcome", "failed")];
    assert_eq!(scrape.value("aerie_backups_finished_total", &failed), 0.0);
    assert_eq!(scrape.value("aerie_restores_finished_total", &failed), 0.0);
    assert_eq!(scrape.value("aerie_verifications_total", &failed), 0.0);
    assert_eq!(scrape.kind("aerie_backups_started"), "counter");
    assert_eq!(scrape.kind("aerie_backups_in_flight"), "gauge");
    assert_eq!(scrape.value("aerie_backups_in_flight", &[]), 0.0);
    assert_eq!(scrape.value("aerie_restores_in_flight", &[]), 0.0);
    assert_eq!(scrape.value("aerie_panel_reports_pending", &[]), 0.0);
    assert_eq!(
        scrape.value("aerie_panel_report_oldest_age_seconds", &[]),
        0.0
    );
    // The process's figures, from its /proc entry; the test's own view of that entry
    // bounds them.
    let rss = scrape.value("aerie_process_resident_memory_bytes", &[]);
    assert!(rss > 1_000_000.0, "{rss}");
    let fds = scrape.value("aerie_process_open_fds", &[]);
    let seen = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .count() as f64;
    assert!(fds >= 3.0 && fds <= seen + 16.0, "{fds} (seen {seen})");
}

#[test]
fn counters_move_as_backups_and_restores_run_fail_and_are_cancelled() {
    let mut node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("world.bin"), noise(300_000)).unwrap();
    std::fs::write(root.join("server.properties"), b"motd=hi\n").unwrap();
    let content_bytes = 300_000.0 + 8.0;
    let big = node.server(BIG_SERVER);
    for (i, chunk) in noise(8_000_000).chunks(1_000_000).enumerate() {
        std::fs::write(big.join(format!("chunk-{i}.bin")), chunk).unwrap();
    }
    node.system_extra = SLOW_WRITES.into();
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {wings}\n    config:\n      directory: {backups}\n\
         \x20 - name: flaky\n    library: {fixture}\n    config:\n      directory: {store}\n      fail_after_bytes: 0\n",
        wings = wings_library().display(),
        backups = node.backup_dir().display(),
        fixture = fixture_library().display(),
        store = node.dir.path().join("fixture-store").display(),
    ));
    let daemon = node.start();
    let wings = [("adapter", "wings")];
    let completed = [("adapter", "wings"), ("outcome", "completed")];

    // A backup that completes.
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}");
    let scrape = scrape_api(&daemon);
    assert_eq!(scrape.value("aerie_backups_started_total", &wings), 1.0);
    assert_eq!(
        scrape.value("aerie_backups_finished_total", &completed),
        1.0
    );
    assert_eq!(
        scrape.value("aerie_backup_duration_seconds_count", &completed),
        1.0
    );
    assert_eq!(scrape.kind("aerie_backup_duration_seconds"), "histogram");
    let le_inf = [
        ("adapter", "wings"),
        ("outcome", "completed"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        scrape.value("aerie_backup_duration_seconds_bucket", &le_inf),
        1.0
    );
    assert_eq!(
        scrape.value("aerie_backup_read_bytes_total", &wings),
        content_bytes
    );
    assert_eq!(
        scrape.value("aerie_backup_written_bytes_total", &wings),
        status["size"].as_f64().unwrap()
    );
    assert_eq!(scrape.value("aerie_backups_in_flight", &[]), 0.0);

    // A backup whose storage fails counts as failed, under its adapter, and stores nothing.
    let failing = new_uuid();
    daemon.start_backup(SERVER, "flaky", &failing, "");
    assert_eq!(daemon.wait_for_end(SERVER, &failing)["state"], "failed");
    let scrape = scrape_api(&daemon);
    let flaky = [("adapter", "flaky")];
    assert_eq!(scrape.value("aerie_backups_started_total", &flaky), 1.0);
    assert_eq!(
        scrape.value(
            "aerie_backups_finished_total",
            &[("adapter", "flaky"), ("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "aerie_backups_finished_total",
            &[("adapter", "flaky"), ("outcome", "completed")]
        ),
        0.0
    );
    assert_eq!(
        scrape.value("aerie_backup_written_bytes_total", &flaky),
        0.0
    );
    assert_eq!(
        scrape.value("aerie_backups_finished_total", &completed),
        1.0
    );
    assert_eq!(scrape.value("aerie_backups_in_flight", &[]), 0.0);

    // A restore of the completed backup.
    let mut socket = daemon.watch(&node, SERVER);
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let frames = socket.recv_until("backup restore completed");
    assert!(
        completion_message(&frames).starts_with("Completed server restoration"),
        "{frames:?}"
    );
    let scrape = scrape_api(&daemon);
    assert_eq!(scrape.value("aerie_restores_started_total", &wings), 1.0);
    assert_eq!(
        scrape.value("aerie_restores_finished_total", &completed),
        1.0
    );
    assert_eq!(
        scrape.value("aerie_restore_duration_seconds_count", &completed),
        1.0
    );
    assert_eq!(
        scrape.value("aerie_restore_written_bytes_total", &wings),
        content_bytes
    );
    assert_eq!(scrape.value("aerie_restores_in_flight", &[]), 0.0);

    // A slow backup is in flight while it runs; deleted meanwhile, it counts as cancelled
    // and leaves the gauge.
    let slow = new_uuid();
    daemon.start_backup(BIG_SERVER, "wings", &slow, "");
    scrape_until(&daemon, "one backup in flight", |s| {
        s.value("aerie_backups_in_flight", &[]) == 1.0
    });
    assert_eq!(daemon.status(BIG_SERVER, &slow).json["state"], "running");
    let deleted = daemon.send(daemon.request(
        reqwest::Method::DELETE,
        &format!("/api/servers/{BIG_SERVER}/backup/{slow}"),
    ));
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let scrape = scrape_api(&daemon);
    assert_eq!(
        scrape.value(
            "aerie_backups_finished_total",
            &[("adapter", "wings"), ("outcome", "cancelled")]
        ),
        1.0
    );
    assert_eq!(scrape.value("aerie_backups_started_total", &wings), 2.0);
    assert_eq!(
        scrape.value("aerie_backups_finished_total", &completed),
        1.0
    );
    assert_eq!(scrape.value("aerie_backups_in_flight", &[]), 0.0);
}

#[test]
fn metrics_bind_serves_the_metrics_without_a_token_and_nothing_else() {
    let mut node = Node::new();
    node.extra_config = "metrics:\n  bind: 127.0.0.1:0\n".into();
    let daemon = node.start();
    let url = daemon
        .printed
        .iter()
        .find_map(|line| line.strip_prefix("aerie metrics on "))
        .unwrap_or_else(|| panic!("no metrics address printed: {:?}", daemon.printed))
        .to_string();
    assert!(url.ends_with("/metrics"), "{url}");

    let (status, kind, text) = get_plain(&url);
    assert_eq!(status, 200, "{text}");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let scrape = parse(&text);
    assert_eq!(scrape.value("aerie_backups_in_flight", &[]), 0.0);

    // Only the metrics: the API is not reachable through this port.
    let base = url.trim_end_matches("/metrics");
    let (status, _, body) = get_plain(&format!("{base}/api/servers/{SERVER}/backups"));
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"error": aerie::wings_text::RESOURCE_NOT_FOUND})
    );
    // The API port still wants the token.
    let (status, _, _) = get_plain(&format!("{}/metrics", daemon.base));
    assert_eq!(status, 401);
}

#[test]
fn a_report_the_panel_has_not_taken_is_pending_and_ages_until_it_is_delivered() {
    let mut panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    std::fs::write(node.server(SERVER).join("level.dat"), b"level").unwrap();
    let daemon = node.start();
    panel.go_down();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "completed");
    let scrape = scrape_api(&daemon);
    assert_eq!(scrape.value("aerie_panel_reports_pending", &[]), 1.0);
    // The age is the oldest report's, read at each scrape: it grows while the Panel is away.
    scrape_until(&daemon, "an aged report", |s| {
        s.value("aerie_panel_report_oldest_age_seconds", &[]) >= 1.0
    });
    panel.come_back();
    panel.wait_for_accepted(1);
    scrape_until(&daemon, "an empty queue", |s| {
        s.value("aerie_panel_reports_pending", &[]) == 0.0
            && s.value("aerie_panel_report_oldest_age_seconds", &[]) == 0.0
    });
}

//! One-time download links and token dates, end to end: a used link stays used across a
//! restart, a `HEAD` does not spend a link, a link whose backup cannot be opened stays good,
//! two requests with one link do not both get the archive, a token (link or websocket)
//! whose `nbf` is in the future is refused, and a download's request line is logged
//! without its token.

use aerie_e2e::websocket::connect;
use aerie_e2e::{fixture_library, new_uuid, noise, Daemon, Node};
use reqwest::blocking::Response;
use reqwest::Method;
use serde_json::json;

const SERVER: &str = "3e5a7c9b-1d2f-4a6b-8c0d-2e4f6a8b0c1d";

const USED: &str = "This download link has already been used.";

/// A download token as the Panel signs one, with `nbf` at `nbf_offset` seconds from now
/// (the Panel uses -300).
fn download_token(node: &Node, backup: &str, unique: &str, nbf_offset: i64) -> String {
    let now = aerie::jwt::unix_now();
    aerie::jwt::sign(
        &json!({
            "iss": "https://panel.example.com", "aud": ["https://node.example.com"],
            "jti": "abc", "iat": now, "nbf": now + nbf_offset, "exp": now + 900,
            "server_uuid": SERVER, "backup_uuid": backup,
            "user_uuid": "u", "user_id": 1, "unique_id": unique,
        }),
        node.token.as_bytes(),
    )
}

fn fetch(daemon: &Daemon, method: Method, token: &str) -> Response {
    daemon
        .client
        .request(method, format!("{}/download/backup", daemon.base))
        .query(&[("token", token)])
        .send()
        .unwrap()
}

/// Asserts a Wings-shaped refusal with `status` and exactly `message`.
fn assert_refused(response: Response, status: u16, message: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"], message, "{body}");
}

/// A node with one server holding incompressible bytes, so the archive spans chunks.
fn node() -> Node {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("noise.bin"), noise(600_000)).unwrap();
    node
}

/// Takes a backup with `adapter` and returns its uuid.
fn backup(daemon: &Daemon, adapter: &str) -> String {
    let uuid = new_uuid();
    daemon.start_backup(SERVER, adapter, &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}");
    uuid
}

#[test]
fn a_used_link_stays_used_after_a_restart() {
    let node = node();
    let daemon = node.start();
    let uuid = backup(&daemon, "wings");
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    let token = download_token(&node, &uuid, "kept-across-restarts", -300);
    let response = fetch(&daemon, Method::GET, &token);
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().as_ref(), stored.as_slice());
    assert_eq!(daemon.stop(), Some(0));

    let daemon = node.start();
    assert_refused(fetch(&daemon, Method::GET, &token), 403, USED);
    // Another link to the same backup still works.
    let fresh = download_token(&node, &uuid, "another", -300);
    assert_eq!(fetch(&daemon, Method::GET, &fresh).status(), 200);
}

#[test]
fn a_download_request_is_logged_without_its_token() {
    let node = node();
    let daemon = node.start();
    let uuid = backup(&daemon, "wings");
    let token = download_token(&node, &uuid, "logged", -300);
    assert_eq!(fetch(&daemon, Method::GET, &token).status(), 200);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("download started"))
        .unwrap_or_else(|| panic!("no download line:\n{log}"));
    assert!(
        line.contains("uri=/download/backup?token=[redacted]"),
        "the request line names the route, not the token: {line}"
    );
    assert!(!log.contains(&token), "the token is in the log:\n{log}");
    // The signature alone is a credential's part too.
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "{log}");
}

#[test]
fn a_head_answers_like_a_get_and_does_not_spend_the_link() {
    let node = node();
    let daemon = node.start();
    let uuid = backup(&daemon, "wings");
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    let token = download_token(&node, &uuid, "looked-at-first", -300);

    let head = fetch(&daemon, Method::HEAD, &token);
    assert_eq!(head.status(), 200);
    let headers = head.headers().clone();
    assert_eq!(headers["content-length"], stored.len().to_string().as_str());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"{uuid}.tar.gz\"").as_str()
    );
    assert!(head.bytes().unwrap().is_empty());

    let get = fetch(&daemon, Method::GET, &token);
    assert_eq!(get.status(), 200);
    assert_eq!(get.bytes().unwrap().as_ref(), stored.as_slice());
    // Now spent, a HEAD says so as a GET would.
    let head = fetch(&daemon, Method::HEAD, &token);
    assert_eq!(head.status(), 403);
    assert_refused(fetch(&daemon, Method::GET, &token), 403, USED);
}

#[test]
fn a_link_whose_backup_cannot_be_opened_stays_good_for_a_retry() {
    let mut node = node();
    let store = node.dir.path().join("fixture-store");
    node.plugins = Some(format!(
        "adapters:\n  - name: flaky\n    library: {}\n    config:\n      directory: {}\n",
        fixture_library().display(),
        store.display()
    ));
    let daemon = node.start();
    let uuid = backup(&daemon, "flaky");
    let stored = std::fs::read(store.join(format!("{uuid}.tar.gz"))).unwrap();
    let token = download_token(&node, &uuid, "survives-an-outage", -300);

    // The storage is down when the link is first used (retryable UNAVAILABLE, tried a few
    // times): a 503 that says to try again.
    let outage = store.join(format!("{uuid}.fail-open"));
    std::fs::write(&outage, b"").unwrap();
    assert_refused(
        fetch(&daemon, Method::GET, &token),
        503,
        "The backup storage cannot be reached right now; try again in a moment.",
    );
    std::fs::remove_file(&outage).unwrap();

    let response = fetch(&daemon, Method::GET, &token);
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().unwrap().as_ref(), stored.as_slice());
    assert_refused(fetch(&daemon, Method::GET, &token), 403, USED);
}

#[test]
fn two_requests_with_one_link_do_not_both_get_the_archive() {
    let node = node();
    let daemon = node.start();
    let uuid = backup(&daemon, "wings");
    for round in 0..5 {
        let token = download_token(&node, &uuid, &format!("raced-{round}"), -300);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let response = fetch(&daemon, Method::GET, &token);
                        let status = response.status().as_u16();
                        let _ = response.bytes();
                        status
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, vec![200, 403], "round {round}: {statuses:?}");
    }
}

#[test]
fn a_token_whose_nbf_is_in_the_future_is_refused_for_downloads_and_the_websocket() {
    let node = node();
    let daemon = node.start();
    let uuid = backup(&daemon, "wings");
    let early = download_token(&node, &uuid, "too-early", 600);
    assert_refused(
        fetch(&daemon, Method::GET, &early),
        403,
        "The download link is not valid yet; check the node's clock.",
    );
    // The refusal did not spend the id: the same id in a valid token downloads.
    let valid = download_token(&node, &uuid, "too-early", -300);
    assert_eq!(fetch(&daemon, Method::GET, &valid).status(), 200);

    let now = aerie::jwt::unix_now();
    let websocket_token = |nbf: i64| {
        aerie::jwt::sign(
            &json!({
                "iss": "https://panel.example.com", "aud": ["http://node.example.com:8080"],
                "iat": now, "nbf": nbf, "exp": now + 600, "jti": "0123456789abcdef",
                "server_uuid": SERVER, "user_uuid": "u", "permissions": ["*"],
            }),
            node.token.as_bytes(),
        )
    };
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    let (event, reason) = socket.auth(&websocket_token(now + 600));
    assert_eq!(event, "jwt error");
    assert_eq!(
        reason.as_deref(),
        Some("jwt: the token is not valid yet (its nbf is in the future)")
    );
    assert_eq!(socket.auth(&websocket_token(now - 300)).0, "auth success");
}

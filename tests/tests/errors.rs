//! Every way a backup request can be wrong gets Wings' status and `{"error": "..."}` body,
//! and an `X-Request-Id`.

use aerie_e2e::{new_uuid, Daemon, Node, Reply};
use reqwest::Method;
use serde_json::{json, Value};

const SERVER: &str = "8c1a3f4e-4a9b-4d0e-9c62-3b1f0e2d7a55";

fn daemon() -> (Node, Daemon) {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a.txt"), b"a").unwrap();
    let daemon = node.start();
    (node, daemon)
}

fn assert_error(reply: &Reply, status: u16, contains: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.error().contains(contains),
        "expected {contains:?} in {:?}",
        reply.error()
    );
    assert!(
        reply.headers.get("x-request-id").is_some(),
        "no X-Request-Id: {reply:?}"
    );
}

fn post_raw(daemon: &Daemon, auth: Option<&str>, server: &str, body: &str) -> Reply {
    let mut request = daemon
        .client
        .post(format!("{}/api/servers/{server}/backup", daemon.base))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    daemon.send(request)
}

fn good_body() -> String {
    json!({"adapter": "wings", "uuid": new_uuid(), "ignore": ""}).to_string()
}

#[test]
fn a_missing_or_malformed_bearer_is_401_with_a_challenge() {
    let (_node, daemon) = daemon();
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Bearer a b"),
    ] {
        let reply = post_raw(&daemon, auth, SERVER, &good_body());
        assert_error(&reply, 401, "authorization");
        assert_eq!(
            reply
                .headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{auth:?}"
        );
    }
}

#[test]
fn a_wrong_token_is_403() {
    let (_node, daemon) = daemon();
    for token in [
        "wrong",
        "test-node-token-012345678",
        "test-node-token-01234567890",
    ] {
        let reply = post_raw(
            &daemon,
            Some(&format!("Bearer {token}")),
            SERVER,
            &good_body(),
        );
        assert_error(&reply, 403, "not authorized");
    }
}

/// Sends `POST <target>` as written, on a raw connection (an HTTP client would normalise
/// `..` and `%2E%2E` away before they reached the daemon); returns the status and the body.
fn post_verbatim(daemon: &Daemon, token: &str, target: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let address = daemon.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn an_unknown_or_unsafe_server_is_404_and_never_a_path() {
    let (node, daemon) = daemon();
    // A directory that exists outside the data folder must not be reachable.
    std::fs::create_dir_all(node.dir.path().join("outside")).unwrap();
    let body = json!({"adapter": "wings", "uuid": new_uuid()}).to_string();
    for server in [
        "no-such-server",
        "..",
        "..%2Foutside",
        "%2E%2E",
        "%2e%2e%2foutside",
        "a%00b",
        ".hidden",
    ] {
        let target = format!("/api/servers/{server}/backup");
        let (status, json) = post_verbatim(&daemon, &node.token, &target, &body);
        assert_eq!(status, 404, "{target}: {json}");
        assert_eq!(
            json["error"], "The requested resource does not exist on this instance.",
            "{target}"
        );
    }
    assert!(
        std::fs::read_dir(node.dir.path().join("outside"))
            .unwrap()
            .next()
            .is_none(),
        "nothing was written outside the data folder"
    );
}

#[test]
fn bad_bodies_are_400_saying_what_is_wrong() {
    let (_node, daemon) = daemon();
    let auth = Some("Bearer test-node-token-0123456789");
    assert_error(&post_raw(&daemon, auth, SERVER, ""), 400, "parsable");
    assert_error(
        &post_raw(&daemon, auth, SERVER, "{not json"),
        400,
        "parsable",
    );
    assert_error(
        &post_raw(&daemon, auth, SERVER, r#"{"adapter":"wings"}"#),
        400,
        "uuid",
    );
    for uuid in [
        "not-a-uuid",
        "../../etc/passwd",
        "0B6C9F3E-2D4A-4C8E-9A1B-7F6E5D4C3B2A",
        "",
    ] {
        let body = json!({"adapter": "wings", "uuid": uuid}).to_string();
        assert_error(&post_raw(&daemon, auth, SERVER, &body), 400, "valid UUID");
    }
    let body = json!({"adapter": "ftp", "uuid": new_uuid()}).to_string();
    assert_error(&post_raw(&daemon, auth, SERVER, &body), 400, "\"ftp\"");
}

#[test]
fn status_of_an_unknown_backup_is_404_and_unknown_routes_answer_json() {
    let (_node, daemon) = daemon();
    let reply = daemon.status(SERVER, &new_uuid());
    assert_error(&reply, 404, "not found");
    let reply = daemon.send(daemon.request(Method::GET, "/api/nothing-here"));
    assert_error(&reply, 404, "does not exist");
    let reply = daemon.send(daemon.request(Method::GET, &format!("/api/servers/{SERVER}/backup")));
    assert_error(&reply, 405, "not allowed");
}

#[test]
fn a_good_request_gets_202_with_an_empty_body_and_a_request_id() {
    let (_node, daemon) = daemon();
    let reply = post_raw(
        &daemon,
        Some("Bearer test-node-token-0123456789"),
        SERVER,
        &good_body(),
    );
    assert_eq!(reply.status, 202);
    assert!(reply.json.is_null());
    assert!(reply.headers.get("x-request-id").is_some());
}

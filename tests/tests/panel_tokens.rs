//! Tokens made as the Panel makes them, by an implementation that is not aerie's: Python's
//! standard library signs HS256 JWTs with the claims lcobucci/jwt gives them in the Panel
//! (`NodeJWTService`: `iss`, `aud`, `jti`, integer `iat`, `nbf` five minutes back, `exp`),
//! and aerie must take them on the websocket and for download links. aerie's own signer is
//! not used here, so a mistake both sides of aerie share cannot hide.

use aerie_e2e::websocket::connect;
use aerie_e2e::{new_uuid, Node};
use serde_json::{json, Value};

const SERVER: &str = "5b7d9f1a-3c5e-4a7b-9d1f-3a5c7e9b1d3f";

/// Signs `claims` with `key` as the Panel does, in Python (HS256, `{"typ":"JWT","alg":"HS256"}`).
fn panel_token(key: &str, claims: &Value) -> String {
    let script = r#"
import base64, hashlib, hmac, json, sys
key, claims = sys.argv[1].encode(), sys.argv[2]
def part(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=")
head = part(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
body = part(claims.encode())
signature = part(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + signature).decode())
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, key, &claims.to_string()])
        .output()
        .expect("python3");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The claims the Panel puts in every node token, around `extra`.
fn panel_claims(extra: Value) -> Value {
    let now = aerie::jwt::unix_now();
    let mut claims = json!({
        "iss": "https://panel.example.com",
        "aud": ["https://node.example.com"],
        "jti": "6f1c2b3a4d5e6f708192a3b4c5d6e7f8",
        "iat": now,
        "nbf": now - 300,
        "exp": now + 600,
        "user_uuid": "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f7a",
        "user_id": 1,
    });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

#[test]
fn a_websocket_token_made_as_the_panel_makes_it_is_taken() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    let claims = panel_claims(json!({
        "server_uuid": SERVER,
        "permissions": ["websocket.connect", "backup.read"],
    }));
    let forged = panel_token("not-the-node-token", &claims);
    assert_eq!(socket.auth(&forged).0, "jwt error");
    assert_eq!(
        socket.auth(&panel_token(&node.token, &claims)).0,
        "auth success"
    );
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    socket.recv_until(&format!("backup completed:{uuid}"));
}

#[test]
fn a_download_link_made_as_the_panel_makes_it_streams_the_backup_once() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let claims = panel_claims(json!({
        "server_uuid": SERVER,
        "backup_uuid": uuid,
        "unique_id": "b7c6d5e4f3a2918070615243",
    }));
    let url = format!(
        "{}/download/backup?token={}",
        daemon.base,
        panel_token(&node.token, &claims)
    );
    let client = reqwest::blocking::Client::new();
    let first = client.get(&url).send().unwrap();
    assert_eq!(first.status(), 200);
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(first.bytes().unwrap().as_ref(), stored.as_slice());
    // The Panel's link is good once.
    assert_eq!(client.get(&url).send().unwrap().status(), 403);
}

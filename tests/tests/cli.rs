//! The `aerie` command's one-off tools, run as an operator runs them: `check`, `ws-token`
//! and `download-link` against a node's config (their output works against the running
//! daemon), and the embedded default's generated token, kept across runs.

use std::process::{Command, Output};

use aerie_e2e::websocket::connect;
use aerie_e2e::{aerie_binary, new_uuid, target_dir, Node};

const SERVER: &str = "7c9e1a3b-5d7f-4b9d-8f1b-3d5f7a9c1e3b";

/// Runs `aerie <args>` in `dir`.
fn aerie(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(aerie_binary())
        .args(args)
        .current_dir(dir)
        .env("AERIE_ADAPTER_DIR", target_dir())
        .output()
        .expect("run aerie")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn check_says_the_config_is_good_or_names_what_is_wrong() {
    let node = Node::new();
    let config = node.write_config();
    let config = config.to_str().unwrap();
    let good = aerie(node.dir.path(), &["check", "--config", config]);
    assert!(good.status.success(), "{good:?}");
    assert_eq!(stdout(&good), "aerie: the config and its adapters are good");

    let bad = node.dir.path().join("bad.yml");
    std::fs::write(&bad, "token: x\napi:\n  port: http\n").unwrap();
    let refused = aerie(
        node.dir.path(),
        &["check", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.starts_with("aerie: invalid config "), "{said}");
    assert!(said.contains("api.port:"), "{said}");
}

#[test]
fn ws_token_and_download_link_work_against_the_running_daemon() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let config = node.write_config();
    let config = config.to_str().unwrap();
    let daemon = node.start();

    let minted = aerie(node.dir.path(), &["ws-token", SERVER, "--config", config]);
    assert!(minted.status.success(), "{minted:?}");
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    assert_eq!(socket.auth(&stdout(&minted)).0, "auth success");

    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let link = aerie(
        node.dir.path(),
        &["download-link", SERVER, &uuid, "--config", config],
    );
    assert!(link.status.success(), "{link:?}");
    // The link names the configured address; the daemon listens on a port chosen at start.
    let link = stdout(&link);
    let (_, query) = link
        .split_once("/download/backup?")
        .expect("a download link");
    let response = daemon
        .client
        .get(format!("{}/download/backup?{query}", daemon.base))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(response.bytes().unwrap().as_ref(), stored.as_slice());
}

#[test]
fn the_embedded_default_keeps_its_generated_token_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = aerie(dir.path(), &["ws-token", SERVER]);
    assert!(first.status.success(), "{first:?}");
    let saved = dir.path().join("aerie-data").join("token");
    let token = std::fs::read_to_string(&saved).unwrap().trim().to_string();
    assert!(token.len() >= 32, "a generated token: {token:?}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only the daemon's user may read it");
    let second = aerie(dir.path(), &["ws-token", SERVER]);
    assert_eq!(std::fs::read_to_string(&saved).unwrap().trim(), token);
    for minted in [&first, &second] {
        let claims: serde_json::Value =
            aerie::jwt::verify(&stdout(minted), token.as_bytes(), aerie::jwt::unix_now())
                .expect("signed with the saved token");
        assert_eq!(claims["server_uuid"], SERVER);
    }
}

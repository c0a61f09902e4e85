//! Restores bounded on disk, end to end: with `system.backups.restore_max_bytes` set, a
//! restore of an archive holding more file content fails, says why (the key and the limit)
//! on the console and to the Panel, and the daemon goes on to take the next restore.

use aerie_e2e::panel::PanelStandIn;
use aerie_e2e::websocket::{connect, token};
use aerie_e2e::{gnu_tar_gz, new_uuid, noise, Node};
use serde_json::json;

const SERVER: &str = "9a1c3e5f-7b2d-4f6a-8c0e-2d4f6a8b0c1e";

/// The limit set on the node: between the small archive's content and the large one's.
const LIMIT: u64 = 1_000_000;

#[test]
fn a_restore_over_restore_max_bytes_fails_naming_the_limit_and_the_daemon_goes_on() {
    let panel = PanelStandIn::start("test", "test-node-token-0123456789");
    let mut node = Node::new();
    node.extra_config = format!("remote: {}\nremote_query:\n  timeout: 5\n", panel.url());
    node.system_extra = format!("  backups:\n    restore_max_bytes: {LIMIT}\n");
    let root = node.server(SERVER);
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("small.dat"), noise(100_000)).unwrap();
    std::fs::write(source.path().join("big.dat"), noise(3_000_000)).unwrap();
    let (large, small) = (new_uuid(), new_uuid());
    let archive = |uuid: &str| node.backup_dir().join(format!("{uuid}.tar.gz"));
    gnu_tar_gz(&archive(&large), source.path(), &["small.dat", "big.dat"]);
    gnu_tar_gz(&archive(&small), source.path(), &["small.dat"]);
    let daemon = node.start();
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    assert_eq!(
        socket.auth(&token(&node.token, SERVER, &["*"], 600)).0,
        "auth success"
    );
    let restore = |uuid: &str| {
        let reply = daemon.send(
            daemon
                .request(
                    reqwest::Method::POST,
                    &format!("/api/servers/{SERVER}/backup/{uuid}/restore"),
                )
                .json(&json!({"adapter": "wings", "truncate_directory": true})),
        );
        assert_eq!(reply.status, 202, "{reply:?}");
    };
    let completion = |frames: &[aerie_e2e::websocket::Frame]| {
        frames
            .iter()
            .rev()
            .find(|frame| frame.0 == "daemon message")
            .and_then(|frame| frame.1.clone())
            .unwrap_or_default()
    };

    restore(&large);
    let message = completion(&socket.recv_until("backup restore completed"));
    assert!(
        message.contains("failed")
            && message.contains(&format!(
                "more than the {LIMIT} bytes of file content a restore may write \
                 (system.backups.restore_max_bytes)"
            )),
        "{message}"
    );
    let reports = panel.wait_for_accepted(1);
    assert_eq!(
        reports[0].path,
        format!("/api/remote/backups/{large}/restore")
    );
    assert_eq!(reports[0].body, json!({"successful": false}));
    assert!(daemon.log().contains("system.backups.restore_max_bytes"));
    // Nothing past the limit was written.
    let big = root.join("big.dat").metadata().map_or(0, |meta| meta.len());
    assert!(big < LIMIT, "{big}");

    // The daemon is still there and takes a restore within the limit.
    restore(&small);
    let message = completion(&socket.recv_until("backup restore completed"));
    assert!(message.starts_with("Completed"), "{message}");
    assert_eq!(
        std::fs::read(root.join("small.dat")).unwrap(),
        noise(100_000)
    );
    assert!(!root.join("big.dat").exists());
    let reports = panel.wait_for_accepted(2);
    assert_eq!(reports[1].body, json!({"successful": true}));
}

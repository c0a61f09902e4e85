//! Adapters built outside aerie's workspace, as a third party builds one, loaded by the real
//! daemon: the template (`adapters/template`, against today's aerie-adapter-api) and an
//! adapter built against the frozen aerie-adapter-api 1.0.0 (`tests/abi-1.0`), which shows
//! that today's daemon still loads adapters built for 1.0. Each takes a backup of a server
//! and restores it over the wiped directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use aerie_e2e::tree::{populate, snapshot, wipe};
use aerie_e2e::websocket::completion_message;
use aerie_e2e::{new_uuid, run, target_dir, Node};
use serde_json::json;

const SERVER: &str = "6a1f3c5e-7b9d-4f1a-8c2e-4d6f8a0b2c4e";

/// The repository's root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

/// Builds the crate of `manifest` (relative to the repository; with its own workspace and
/// lock file) into this test's target folder, as `cargo build --manifest-path` does for an
/// author, and returns the library `library` it made.
fn build_outside(manifest: &str, library: &str) -> PathBuf {
    let profile_dir = target_dir();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--locked", "--manifest-path"])
        .arg(repository().join(manifest))
        .arg("--target-dir")
        .arg(profile_dir.parent().expect("the target folder"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let output = cargo.output().expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build --manifest-path {manifest} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join(library)
}

/// A daemon with the adapter of `library` as `name` (config: `directory`), a backup of a
/// server through it and a restore of that backup over the wiped server; returns the
/// adapter's directory and the backup's uuid.
fn backup_and_restore(library: &Path, name: &str) -> (tempfile::TempDir, String) {
    let mut node = Node::new();
    let store = tempfile::tempdir().unwrap();
    node.plugins = Some(format!(
        "adapters:\n  - name: {name}\n    library: {}\n    config:\n      directory: {}\n",
        library.display(),
        store.path().display()
    ));
    let root = node.server(SERVER);
    populate(&root);
    let before = snapshot(&root);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, name, &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    assert_eq!(status["adapter"], name);

    wipe(&root);
    let mut socket = daemon.watch(&node, SERVER);
    let reply = daemon.post_restore(
        SERVER,
        &uuid,
        &json!({"adapter": name, "truncate_directory": true, "download_url": ""}),
    );
    assert_eq!(reply.status, 202, "{reply:?}\n{}", daemon.log());
    let frames = socket.recv_until("backup restore completed");
    assert!(
        completion_message(&frames).starts_with("Completed server restoration"),
        "{frames:?}\n{}",
        daemon.log()
    );
    assert_eq!(snapshot(&root), before);
    (store, uuid)
}

#[test]
fn the_template_adapter_is_built_outside_the_workspace_and_loaded_by_the_daemon() {
    let library = build_outside(
        "adapters/template/Cargo.toml",
        "libaerie_adapter_template.so",
    );
    let (store, uuid) = backup_and_restore(&library, "template");
    // Where the template keeps it, whole: GNU tar reads it.
    let archive = store.path().join(SERVER).join(format!("{uuid}.tar.gz"));
    let members = run(
        "tar",
        &["-tzf", &archive.display().to_string()],
        store.path(),
    );
    assert!(members.contains("server.properties"), "{members}");
}

#[test]
fn an_adapter_built_against_aerie_adapter_api_1_0_still_loads_and_works() {
    let library = build_outside("tests/abi-1.0/Cargo.toml", "libaerie_abi10_adapter.so");
    let (store, uuid) = backup_and_restore(&library, "old");
    assert!(store.path().join(format!("{uuid}.tar.gz")).is_file());
}

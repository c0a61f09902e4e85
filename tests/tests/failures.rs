//! Backups that cannot succeed end `failed` with the reason and leave nothing behind; a
//! crash is recovered at the next start; a panicking adapter does not take the daemon down.

use aerie_e2e::{fixture_library, new_uuid, noise, wings_library, Node, SLOW_WRITES};

const SERVER: &str = "5f0c2b1e-8d7a-4e3f-a1b2-c3d4e5f60718";

/// A server with 8 MB that gzip cannot shrink, so its archive spans several chunks.
fn busy_server(node: &Node) {
    let root = node.server(SERVER);
    let content = noise(8_000_000);
    for (i, chunk) in content.chunks(1_000_000).enumerate() {
        std::fs::write(root.join(format!("chunk-{i}.bin")), chunk).unwrap();
    }
}

#[test]
fn an_unwritable_backup_directory_fails_the_backup_with_its_reason() {
    let mut node = Node::new();
    busy_server(&node);
    // /proc refuses new directories even to root.
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {}\n    config:\n      directory: /proc/aerie-cannot-write-here\n",
        wings_library().display()
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("/proc/aerie-cannot-write-here"), "{error}");
    assert!(!status["finished_at"].is_null());
    assert!(aerie_e2e::tree::files_in(&node.backup_dir()).is_empty());
}

#[test]
fn a_storage_failure_mid_backup_aborts_the_sink_and_keeps_nothing() {
    let mut node = Node::new();
    busy_server(&node);
    let store = node.dir.path().join("fixture-store");
    node.plugins = Some(format!(
        "adapters:\n  - name: flaky\n    library: {}\n    config:\n      directory: {}\n      fail_after_bytes: 2000000\n",
        fixture_library().display(),
        store.display()
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "flaky", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("fixture storage full"),
        "{status}"
    );
    // The sink was aborted (not merely dropped) and nothing partial is left.
    assert_eq!(
        aerie_e2e::tree::files_in(&store),
        vec![format!("{uuid}.aborted")]
    );
}

#[test]
fn a_panicking_adapter_fails_the_backup_and_the_daemon_lives_on() {
    let mut node = Node::new();
    busy_server(&node);
    let store = node.dir.path().join("fixture-store");
    node.plugins = Some(format!(
        "adapters:\n  - name: panicky\n    library: {fixture}\n    config:\n      directory: {store}\n      fail_after_bytes: 1000000\n      panic: true\n\
         \x20 - name: wings\n    library: {wings}\n",
        fixture = fixture_library().display(),
        store = store.display(),
        wings = wings_library().display(),
    ));
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "panicky", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("panicked"),
        "{status}"
    );
    // The panic's message is a line of the daemon's log (its stderr), tagged with the
    // adapter and inside the backup's span; the library's default hook printed nothing.
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("the adapter panicked: fixture told to panic after"))
        .unwrap_or_else(|| panic!("no log line with the panic:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("adapter=\"panicky\""), "{line}");
    assert!(line.contains(&format!("backup={uuid}")), "{line}");
    assert!(
        !log.contains("panicked at"),
        "a raw panic message on stderr:\n{log}"
    );
    assert!(
        !log.contains("RUST_BACKTRACE"),
        "a raw panic message on stderr:\n{log}"
    );
    // Still serving, and the other adapter still works.
    let next = new_uuid();
    daemon.start_backup(SERVER, "wings", &next, "");
    assert_eq!(daemon.wait_for_end(SERVER, &next)["state"], "completed");
}

#[test]
fn a_backup_cut_off_by_a_crash_is_failed_and_cleaned_at_the_next_start() {
    let mut node = Node::new();
    busy_server(&node);
    // 1 MiB/s over ~8 MB of incompressible data: the backup runs for seconds.
    node.system_extra = SLOW_WRITES.into();
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.status(SERVER, &uuid).json["state"], "running");
    daemon.crash();

    let daemon = node.start();
    let status = daemon.status(SERVER, &uuid).json;
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("daemon stopped"),
        "{status}"
    );
    assert!(
        aerie_e2e::tree::files_in(&node.backup_dir()).is_empty(),
        "leftovers: {:?}",
        aerie_e2e::tree::files_in(&node.backup_dir())
    );
    // A failed uuid may be tried again.
    daemon.start_backup(SERVER, "wings", &uuid, "");
}

#[test]
fn a_clean_stop_aborts_running_backups() {
    let mut node = Node::new();
    busy_server(&node);
    // No grace: the stop cancels the running backup at once.
    node.system_extra = format!("{SLOW_WRITES}  shutdown_timeout: 0\n");
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.stop(), Some(0));
    assert!(aerie_e2e::tree::files_in(&node.backup_dir()).is_empty());
    let daemon = node.start();
    assert_eq!(daemon.status(SERVER, &uuid).json["state"], "failed");
}

//! Start-up: the ABI check on adapter libraries, and a bad config or plugins file stopping
//! the daemon with one clear line that names the file and the problem.

use std::sync::Arc;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{load_library, Logger};
use aerie_adapter_api::HostContext;
use aerie_e2e::{foreign_library, run, wings_library, Node};

struct Quiet;
impl Logger for Quiet {
    fn max_level(&self) -> LogLevel {
        LogLevel::ERROR
    }
    fn log(&self, _: LogLevel, _: &str, _: &str) {}
}

#[test]
fn a_library_built_against_the_api_loads_and_works() {
    let library = load_library(&wings_library()).expect("the wings adapter loads");
    assert_eq!(library.kind(), "wings");
    let dir = tempfile::tempdir().unwrap();
    let host = HostContext {
        backup_directory: dir.path().to_path_buf(),
        aerie_version: "test".into(),
    };
    let adapter = library
        .instantiate(&serde_json::Value::Null, &host, Arc::new(Quiet))
        .unwrap();
    assert!(adapter.list("any").unwrap().is_empty());
}

#[test]
fn libraries_that_are_not_adapters_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = load_library(&dir.path().join("libnothing.so"))
        .err()
        .unwrap();
    assert!(missing.0.starts_with("no such file"), "{missing}");

    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(&garbage, "not an ELF file").unwrap();
    let err = load_library(&garbage).err().unwrap();
    assert!(err.0.starts_with("cannot open the library"), "{err}");

    // A real shared library without the adapter's root module symbol.
    let source = dir.path().join("plain.c");
    std::fs::write(&source, "int plain(void) { return 42; }\n").unwrap();
    let plain = dir.path().join("libplain.so");
    run(
        "cc",
        &[
            "-shared",
            "-fPIC",
            "-o",
            plain.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
        dir.path(),
    );
    let err = load_library(&plain).err().unwrap();
    assert!(err.0.starts_with("not an aerie adapter"), "{err}");
    assert_eq!(err.0.lines().count(), 1);
}

#[test]
fn a_library_with_another_interface_is_refused_in_one_line() {
    let err = load_library(&foreign_library()).err().unwrap();
    assert!(err.0.contains("ABI mismatch"), "{err}");
    assert_eq!(err.0.lines().count(), 1, "{err}");

    let mut node = Node::new();
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {}\n",
        foreign_library().display()
    ));
    let (code, printed) = node.start_expecting_failure();
    assert_ne!(code, 0);
    let line = printed.lines().find(|l| l.starts_with("aerie: ")).unwrap();
    assert!(
        line.contains("plugins.yml") && line.contains("ABI mismatch"),
        "{line}"
    );
    assert!(
        printed.lines().count() < 10,
        "a short report, not a layout dump:\n{printed}"
    );
}

#[test]
fn a_missing_or_foreign_library_stops_start_up_naming_the_plugins_file() {
    let mut node = Node::new();
    node.plugins = Some("adapters:\n  - name: wings\n    library: ./libmissing.so\n".into());
    let line = node.refusal();
    assert!(line.contains("plugins.yml"), "{line}");
    assert!(line.contains("libmissing.so"), "{line}");

    node.plugins = Some("adapters:\n  - name: wings\n    librar: x\n".into());
    let line = node.refusal();
    assert!(
        line.contains("plugins.yml") && line.contains("librar"),
        "{line}"
    );
}

#[test]
fn a_bad_adapter_config_stops_start_up_naming_the_key() {
    let mut node = Node::new();
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {}\n    config:\n      directory: 42\n",
        wings_library().display()
    ));
    let line = node.refusal();
    assert!(line.contains("directory"), "{line}");
    assert!(line.contains("invalid config"), "{line}");
}

#[test]
fn a_bad_config_value_stops_start_up_naming_the_key() {
    let mut node = Node::new();
    node.system_extra = "  backups:\n    compression_level: fastest\n".into();
    let line = node.refusal();
    assert!(line.contains("system.backups.compression_level"), "{line}");
}

#[test]
fn one_library_can_serve_two_names_with_two_configs() {
    let mut node = Node::new();
    let (first, second) = (
        node.dir.path().join("first"),
        node.dir.path().join("second"),
    );
    node.plugins = Some(format!(
        "adapters:\n  - name: wings\n    library: {lib}\n    config:\n      directory: {first}\n\
         \x20 - name: archive\n    library: {lib}\n    config:\n      directory: {second}\n",
        lib = wings_library().display(),
        first = first.display(),
        second = second.display(),
    ));
    let server = "7e9d6c5b-4a3f-4e2d-8c1b-0a9f8e7d6c5b";
    std::fs::write(node.server(server).join("x"), b"x").unwrap();
    let daemon = node.start();
    let (a, b) = (aerie_e2e::new_uuid(), aerie_e2e::new_uuid());
    daemon.start_backup(server, "wings", &a, "");
    daemon.start_backup(server, "archive", &b, "");
    assert_eq!(daemon.wait_for_end(server, &a)["state"], "completed");
    assert_eq!(daemon.wait_for_end(server, &b)["state"], "completed");
    assert!(first.join(format!("{a}.tar.gz")).is_file());
    assert!(second.join(format!("{b}.tar.gz")).is_file());
}

#[test]
fn unused_wings_keys_are_logged_once_as_ignored() {
    let mut node = Node::new();
    node.extra_config = "debug: false\nuuid: 1234\nallowed_mounts: []\n".into();
    let daemon = node.start();
    let log = daemon.log();
    for key in ["debug", "uuid", "allowed_mounts"] {
        let needle = format!("key={key}");
        assert_eq!(log.matches(&needle).count(), 1, "{key} in:\n{log}");
    }
}

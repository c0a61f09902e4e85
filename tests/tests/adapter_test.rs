//! `aerie adapter-test`: the conformance suite against a built adapter library from the
//! command line. A library that keeps every promise passes (exit 0, a `pass` line per
//! case); a library that breaks one fails (exit 1) with the line of exactly that case.

use std::process::Command;

use aerie_e2e::{aerie_binary, fixture_library, wings_library};

/// The large-stream case's size here: the 1 GiB run is each adapter's own conformance
/// test; these check the command.
const STREAM_BYTES: &str = "67108864";

/// Runs `aerie adapter-test` with `args`; its exit code and standard output.
fn adapter_test(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(aerie_binary())
        .arg("adapter-test")
        .args(["--stream-bytes", STREAM_BYTES])
        .args(args)
        .output()
        .expect("run aerie adapter-test");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_library_that_keeps_every_promise_passes_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({ "directory": dir.path() }).to_string();
    let library = fixture_library().display().to_string();
    let (code, stdout, stderr) =
        adapter_test(&["--library", &library, "--config", &config, "--panics"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 13, "{stdout}");
    assert!(
        lines[..12].iter().all(|l| l.starts_with("pass ")),
        "{stdout}"
    );
    assert!(lines.contains(&"pass panics_become_errors"), "{stdout}");
    assert_eq!(lines[12], "12 passed, 0 failed, 0 skipped");
}

#[test]
fn the_wings_library_passes_with_its_directory_checked_for_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({ "directory": dir.path() }).to_string();
    let library = wings_library().display().to_string();
    let storage = dir.path().display().to_string();
    let (code, stdout, stderr) = adapter_test(&[
        "--library",
        &library,
        "--config",
        &config,
        "--storage-dir",
        &storage,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.ends_with("11 passed, 0 failed, 1 skipped\n"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("skip panics_become_errors: applies only to adapters that panic on request"),
        "{stdout}"
    );
}

#[test]
fn a_library_that_breaks_a_promise_fails_with_that_case_named() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        serde_json::json!({ "directory": dir.path(), "misbehave": "abort_keeps" }).to_string();
    let library = fixture_library().display().to_string();
    let (code, stdout, stderr) = adapter_test(&["--library", &library, "--config", &config]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(
        failed,
        ["FAIL abort_leaves_nothing: stat after abort: succeeded, wanted an error of kind not found"],
        "{stdout}"
    );
    assert!(stderr.contains("failed 1 of 12 cases"), "{stderr}");
}

#[test]
fn a_file_that_is_no_adapter_is_refused_before_any_case() {
    let (code, stdout, stderr) = adapter_test(&["--library", "/nonexistent/libnothing.so"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(
            "cannot load /nonexistent/libnothing.so: no such file: /nonexistent/libnothing.so"
        ),
        "{stderr}"
    );
}

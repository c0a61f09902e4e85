//! The conformance suite catches an adapter that breaks a promise: the fixture, told to
//! break one, fails exactly the case that guards it, saying what went wrong.

use aerie_adapter_api::testkit::{self, Config, Outcome, Report};
use aerie_fixture_adapter::FixtureAdapter;

/// The suite against the fixture told to `misbehave`, with a short stream: memory is not
/// what these runs are about.
fn run_misbehaving(misbehave: &str) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(serde_json::json!({
        "directory": dir.path(),
        "misbehave": misbehave,
    }));
    config.stream_bytes = 8 << 20;
    config.memory_limit = u64::MAX;
    let report = testkit::run_all::<FixtureAdapter>(config);
    eprintln!("{report}");
    report
}

/// The one line of a failed case.
fn failure<'a>(report: &'a Report, case: &str) -> &'a str {
    match report.outcome(case) {
        Some(Outcome::Failed(why)) => why,
        other => panic!("{case} did not fail: {other:?}\n{report}"),
    }
}

#[test]
fn a_stat_that_misreports_the_size_fails_stat_size_only() {
    let report = run_misbehaving("stat_size");
    assert_eq!(report.failed(), ["stat_size"], "{report}");
    let why = failure(&report, "stat_size");
    assert!(
        why.starts_with("stat says 6303802 bytes, but 6303801 bytes can be read"),
        "{why}"
    );
}

#[test]
fn an_abort_that_keeps_the_backup_fails_abort_leaves_nothing_only() {
    let report = run_misbehaving("abort_keeps");
    assert_eq!(report.failed(), ["abort_leaves_nothing"], "{report}");
    assert_eq!(
        failure(&report, "abort_leaves_nothing"),
        "stat after abort: succeeded, wanted an error of kind not found"
    );
}

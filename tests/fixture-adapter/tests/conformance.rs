//! The fixture adapter passes the conformance suite, every case, panics included (it is the
//! adapter that panics on request). In a test binary of its own: `large_stream` measures
//! the whole process's memory.

use aerie_adapter_api::testkit::{self, Config};
use aerie_fixture_adapter::FixtureAdapter;

#[test]
fn the_fixture_adapter_passes_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(serde_json::json!({ "directory": dir.path() }));
    config.panics = true;
    let store = dir.path().to_path_buf();
    // Every file but the `.aborted` markers the fixture leaves on purpose.
    config.residue = Some(Box::new(move || {
        std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".aborted"))
            .collect()
    }));
    let report = testkit::run_all::<FixtureAdapter>(config);
    eprintln!("{report}");
    report.assert_passed();
    assert!(
        report
            .cases
            .iter()
            .all(|c| c.outcome == testkit::Outcome::Passed),
        "no case may be skipped here:\n{report}"
    );
}

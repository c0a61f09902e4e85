//! The `wings` adapter passes the conformance suite, with the 1 GiB stream, and with its
//! directory checked for leftovers after every abort. In a test binary of its own:
//! `large_stream` measures the whole process's memory.

use aerie_adapter_api::testkit::{self, Config};
use aerie_adapter_wings::WingsAdapter;

#[test]
fn the_wings_adapter_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(serde_json::json!({ "directory": dir.path() }));
    let store = dir.path().to_path_buf();
    config.residue = Some(Box::new(move || {
        std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }));
    let report = testkit::run_all::<WingsAdapter>(config);
    eprintln!("{report}");
    report.assert_passed();
}

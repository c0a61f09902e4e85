//! The template passes aerie's conformance suite: every promise of the host contract,
//! through the same boundary code the daemon uses, with its folder checked for leftovers
//! after every abort. Keep it in a test file of its own: the 1 GiB case measures the
//! memory of the whole test process.

use aerie_adapter_api::testkit::{self, Config};
use aerie_adapter_template::DirectoryAdapter;

#[test]
fn the_adapter_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(serde_json::json!({ "directory": dir.path() }));
    let root = dir.path().to_path_buf();
    // Every file under the directory, so that a leftover temporary file is caught.
    config.residue = Some(Box::new(move || files_under(&root)));
    let report = testkit::run_all::<DirectoryAdapter>(config);
    eprintln!("{report}");
    report.assert_passed();
}

/// The paths of all files under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                folders.push(entry.path());
            } else {
                let path = entry.path();
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files
}

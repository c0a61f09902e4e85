//! For the unit tests: a test that cannot run here (not root, no git) says so past the
//! harness's capture and adds a line to `$AERIE_TEST_SKIPS`, which `tests/run.sh` counts
//! and prints at the end, so that a skip is never a silent pass.

use std::io::Write;

/// Reports that `test` did not run, and why.
pub fn skip_visibly(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    let _ = writeln!(std::io::stderr(), "\n{line}\n");
    if let Some(path) = std::env::var_os("AERIE_TEST_SKIPS") {
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(log, "{line}");
        }
    }
}

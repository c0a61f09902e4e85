//! The conformance suite: every promise of the host contract, checked against one adapter,
//! through the same boundary code the daemon uses. Behind the `testkit` feature.
//!
//! From an adapter's own tests (in a test file of its own: the large-stream case measures
//! the whole process's memory, so no other test should run beside it):
//!
//! ```ignore
//! use aerie_adapter_api::testkit;
//!
//! #[test]
//! fn conforms() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let config = testkit::Config::new(serde_json::json!({ "directory": dir.path() }));
//!     testkit::run_all::<MyAdapter>(config).assert_passed();
//! }
//! ```
//!
//! From the command line, against a built library:
//! `aerie adapter-test --library target/debug/libmy_adapter.so --config '{"directory": "/tmp/x"}'`.
//!
//! The cases, by name (see [`CASES`]): `round_trip`, `read_at_offset`, `stat_size`,
//! `invisible_before_finish`, `abort_leaves_nothing`, `dropped_sink_leaves_nothing`,
//! `already_exists`, `not_found`, `discard_incomplete`, `concurrent_backups`,
//! `large_stream` (1 GiB by default, in bounded memory) and `panics_become_errors`.
//!
//! `panics_become_errors` applies only to adapters that panic on request: with
//! [`Config::panics`] set, the suite adds `"panic_on_request": "methods"` to the adapter's
//! config and expects a panic in method `M` whenever the server id is `panic-M` (`M` one of
//! [`PANICKING_METHODS`]), and `"panic_on_request": "new"` to expect a panic in `new`. The
//! fixture adapter of aerie's tests does this; for any other adapter the case is skipped
//! (the guard that turns panics into errors is this crate's, not the adapter's).

mod cases;
mod support;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::TestLogger;
use crate::host::{AdapterLibrary, LoadedAdapter};
use crate::types::HostContext;
use crate::Adapter;

pub use cases::{CASES, PANICKING_METHODS};

/// The default size of the large-stream case: the 1 GiB a large server's backup reaches.
pub const DEFAULT_STREAM_BYTES: u64 = 1 << 30;

/// The default bound on the process's memory growth while streaming: 256 MiB, room for
/// an S3 adapter's parts in flight (a few parts of 5 to 64 MiB), far below the stream.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// The default wait for an adapter that cleans up in the background (an S3 abort retries
/// with growing pauses): a guard against a hang, not a performance expectation.
pub const DEFAULT_RESIDUE_GUARD: Duration = Duration::from_secs(120);

/// Lists everything the storage holds (files, objects, unfinished uploads), one string each.
pub type ResidueLister = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// What the suite runs against, and how far it goes.
pub struct Config {
    /// The adapter's config, as the `config` of its plugins-file entry (`null` for none).
    pub adapter: serde_json::Value,
    /// What the host tells the adapter (its `backup_directory`, the aerie version).
    pub host: HostContext,
    /// The server id the suite's backups belong to.
    pub server: String,
    /// Bytes streamed by `large_stream` ([`DEFAULT_STREAM_BYTES`]; less for quick runs).
    pub stream_bytes: u64,
    /// The most the process's resident memory may grow during `large_stream`.
    pub memory_limit: u64,
    /// When set, the abort, drop and `discard_incomplete` cases also check that the storage
    /// holds nothing more than before (not just that the adapter shows nothing).
    pub residue: Option<ResidueLister>,
    /// How long to wait for residue to go.
    pub residue_guard: Duration,
    /// Whether the adapter panics on request (see the module docs); otherwise
    /// `panics_become_errors` is skipped.
    pub panics: bool,
}

impl Config {
    /// The defaults for an adapter with this config.
    pub fn new(adapter: serde_json::Value) -> Self {
        Self {
            adapter,
            host: HostContext {
                aerie_version: "testkit".to_string(),
                ..HostContext::default()
            },
            server: "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7".to_string(),
            stream_bytes: DEFAULT_STREAM_BYTES,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            residue: None,
            residue_guard: DEFAULT_RESIDUE_GUARD,
            panics: false,
        }
    }
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check of the case held.
    Passed,
    /// A check failed: what was expected and what happened.
    Failed(String),
    /// The case does not apply to this adapter: why.
    Skipped(String),
}

/// One case's name and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    /// The case's name (one of [`CASES`]).
    pub name: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

/// The outcome of every case, in order; its `Display` is one line per case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every case that ran.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// True when no case failed.
    pub fn passed(&self) -> bool {
        !self
            .cases
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// The outcome of the case called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }

    /// The names of the cases that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .map(|c| c.name)
            .collect()
    }

    /// Panics, with every case's line, unless every case passed (or was skipped); for a
    /// `#[test]`.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(
            self.passed(),
            "the adapter fails the conformance suite:\n{self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            match &case.outcome {
                Outcome::Passed => writeln!(f, "pass {}", case.name)?,
                Outcome::Failed(why) => writeln!(f, "FAIL {}: {why}", case.name)?,
                Outcome::Skipped(why) => writeln!(f, "skip {}: {why}", case.name)?,
            }
        }
        let count =
            |pick: fn(&Outcome) -> bool| self.cases.iter().filter(|c| pick(&c.outcome)).count();
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            count(|o| matches!(o, Outcome::Passed)),
            count(|o| matches!(o, Outcome::Failed(_))),
            count(|o| matches!(o, Outcome::Skipped(_))),
        )
    }
}

/// Runs every case against adapter type `A`, linked into this process and called through
/// the same boundary code as a loaded library.
pub fn run_all<A: Adapter>(config: Config) -> Report {
    run_library(&AdapterLibrary::linked::<A>(), config)
}

/// Runs every case against a loaded adapter library (see [`crate::host::load_library`]).
pub fn run_library(library: &AdapterLibrary, config: Config) -> Report {
    let logger = Arc::new(TestLogger::default());
    let suite = cases::Suite {
        library: *library,
        config,
        logger,
    };
    let cases = CASES
        .iter()
        .map(|&name| {
            let outcome = match catch_unwind(AssertUnwindSafe(|| suite.run(name))) {
                Ok(outcome) => outcome,
                Err(payload) => Outcome::Failed(format!(
                    "the case itself panicked: {}",
                    support::panic_text(payload.as_ref())
                )),
            };
            CaseReport { name, outcome }
        })
        .collect();
    Report { cases }
}

/// An adapter instance as the host makes it, for a case.
fn instantiate(
    library: &AdapterLibrary,
    config: &serde_json::Value,
    host: &HostContext,
    logger: &Arc<TestLogger>,
) -> Result<LoadedAdapter, String> {
    library
        .instantiate(config, host, logger.clone())
        .map_err(|e| format!("cannot create the adapter: {e}"))
}

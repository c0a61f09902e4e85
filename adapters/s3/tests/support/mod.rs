//! What the S3 adapter's tests share beyond `aerie-s3-test-support` (the test server, a
//! direct client on a bucket, the fault-injecting proxy): the adapter library loaded through
//! the real boundary, a logger that keeps the adapter's lines, and deterministic test data.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{load_library, AdapterLibrary, LoadedAdapter, Logger};
use aerie_adapter_api::{AdapterError, HostContext};
use aerie_s3_test_support::{access_key_id, endpoint, secret_access_key, Bucket};
use serde_json::{json, Value};

/// The aerie version the tests announce, expected back in sidecars.
pub const AERIE_VERSION: &str = "0.0.0-test";

/// The adapter library under test: the built `libaerie_adapter_s3.so` beside the test's
/// own folder (`cargo test` does not build cdylibs: build it first), or, with
/// `AERIE_TEST_S3_LINKED=1`, the crate linked into the test through the same boundary code.
pub fn library() -> AdapterLibrary {
    static LIBRARY: OnceLock<AdapterLibrary> = OnceLock::new();
    *LIBRARY.get_or_init(|| {
        if std::env::var_os("AERIE_TEST_S3_LINKED").is_some() {
            return AdapterLibrary::linked::<aerie_adapter_s3::S3Adapter>();
        }
        let path = built_library();
        load_library(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

/// `target/<profile>/libaerie_adapter_s3.so`, checked to be newer than the sources it is
/// built from, so that a test never runs an old build.
fn built_library() -> PathBuf {
    const BUILD: &str = "run `cargo build -p aerie-adapter-s3` (or `cargo build --workspace`) \
                         before `cargo test`, with the same profile and target directory";
    // target/<profile>/deps/<test exe>
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("libaerie_adapter_s3.so");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {BUILD}", path.display()));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [
        crate_dir.join("src"),
        crate_dir.join("../../adapter-api/src"),
    ] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let changed = entry.metadata().and_then(|m| m.modified()).unwrap();
            assert!(
                changed <= built,
                "{} is older than {}: {BUILD}",
                path.display(),
                entry.path().display()
            );
        }
    }
    path
}

/// A host logger that keeps every line (and echoes it to stderr, shown for failing tests).
#[derive(Default)]
pub struct Lines(Mutex<Vec<String>>);

impl Lines {
    /// Whether some line contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Every line, for failure messages.
    pub fn dump(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

impl Logger for Lines {
    fn max_level(&self) -> LogLevel {
        LogLevel::DEBUG
    }

    fn log(&self, level: LogLevel, target: &str, message: &str) {
        let line = format!("[{}] {target}: {message}", level.0);
        eprintln!("{line}");
        self.0.lock().unwrap().push(line);
    }
}

/// The adapter on a bucket of the test server: the shared [`Bucket`] plus what only these
/// tests need.
pub trait AdapterOn {
    /// The adapter config for this bucket: the test server, path style, static keys.
    fn config(&self, extra: Value) -> Value;

    /// An adapter instance on this bucket, and its log.
    fn adapter(&self, extra: Value) -> (LoadedAdapter, Arc<Lines>);
}

impl AdapterOn for Bucket {
    fn config(&self, extra: Value) -> Value {
        let mut config = json!({
            "bucket": self.name,
            "endpoint": endpoint(),
            "force_path_style": true,
            "access_key_id": access_key_id(),
            "secret_access_key": secret_access_key(),
        });
        for (key, value) in extra.as_object().expect("extra config is a mapping") {
            config[key] = value.clone();
        }
        config
    }

    fn adapter(&self, extra: Value) -> (LoadedAdapter, Arc<Lines>) {
        instantiate(&self.config(extra)).unwrap_or_else(|e| panic!("instantiating: {e}"))
    }
}

/// An adapter instance from `config`, through the library's real boundary.
pub fn instantiate(config: &Value) -> Result<(LoadedAdapter, Arc<Lines>), AdapterError> {
    let lines = Arc::new(Lines::default());
    let host = HostContext {
        aerie_version: AERIE_VERSION.to_string(),
        ..HostContext::default()
    };
    let adapter = library().instantiate(config, &host, lines.clone())?;
    Ok((adapter, lines))
}

/// `len` deterministic, incompressible-looking bytes (xorshift64 from `seed`).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `body` on its own thread and fails if it has not returned within `limit` (a guard
/// against a hang, not a performance check).
pub fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(body());
    });
    match result.recv_timeout(limit) {
        Ok(value) => {
            thread.join().unwrap();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung: no result after {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
    }
}

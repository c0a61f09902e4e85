//! What the S3 adapter's tests share: the adapter library loaded through the real boundary,
//! a logger that keeps the adapter's lines, a direct S3 client for checking the bucket, and
//! deterministic test data.
//!
//! The tests need a running S3 server: `source tests/s3-server.sh && s3_server_start`
//! exports `AERIE_TEST_S3_ENDPOINT`. Without it they fail, saying so, rather than skip.

pub mod proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{load_library, AdapterLibrary, LoadedAdapter, Logger};
use aerie_adapter_api::{AdapterError, HostContext};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

/// The aerie version the tests announce, expected back in sidecars.
pub const AERIE_VERSION: &str = "0.0.0-test";
/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

/// The test S3 server's URL.
pub fn endpoint() -> String {
    std::env::var("AERIE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "AERIE_TEST_S3_ENDPOINT is not set: these tests need a local S3 server. Run them with\n  \
             source tests/s3-server.sh && s3_server_start && cargo build -p aerie-adapter-s3 && \
             cargo test -p aerie-adapter-s3; s3_server_stop"
        )
    })
}

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

/// A fresh bucket in the test server with a direct client to inspect it.
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// A client of its own (not the adapter's).
    pub client: Client,
    runtime: Runtime,
}

impl Bucket {
    /// Creates a bucket named after `test` (plus a counter, so each call gets its own).
    pub fn new(test: &str) -> Bucket {
        let bucket = Bucket::without_creating(test);
        bucket
            .run(bucket.client.create_bucket().bucket(&bucket.name).send())
            .unwrap();
        bucket
    }

    /// A client for a bucket name that is not created.
    pub fn without_creating(test: &str) -> Bucket {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}", test.replace('_', "-"), std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(endpoint())
            .force_path_style(true)
            .build();
        Bucket {
            name,
            client: Client::from_conf(config),
            runtime,
        }
    }

    /// Runs a request of the direct client.
    pub fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The adapter config for this bucket: the test server, path style, static keys.
    pub fn config(&self, extra: Value) -> Value {
        let mut config = json!({
            "bucket": self.name,
            "endpoint": endpoint(),
            "force_path_style": true,
            "access_key_id": "test",
            "secret_access_key": "test",
        });
        for (key, value) in extra.as_object().expect("extra config is a mapping") {
            config[key] = value.clone();
        }
        config
    }

    /// An adapter instance on this bucket, and its log.
    pub fn adapter(&self, extra: Value) -> (LoadedAdapter, Arc<Lines>) {
        instantiate(&self.config(extra)).unwrap_or_else(|e| panic!("instantiating: {e}"))
    }

    /// The object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.run(async {
            let output = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(output.body.collect().await?.to_vec())
        })
        .unwrap_or_else(|e| panic!("GetObject {key}: {e}"))
    }

    /// Whether an object exists at `key`.
    pub fn exists(&self, key: &str) -> bool {
        match self.run(self.client.head_object().bucket(&self.name).key(key).send()) {
            Ok(_) => true,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => false,
            Err(e) => panic!("HeadObject {key}: {e:?}"),
        }
    }

    /// The keys of the unfinished multipart uploads in the bucket.
    pub fn multipart_uploads(&self) -> Vec<String> {
        let output = self
            .run(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.name)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("ListMultipartUploads: {e:?}"));
        output
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect()
    }

    /// Waits (up to `limit`, a guard against a hang) until no multipart upload is left.
    pub fn wait_for_no_uploads(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while !self.multipart_uploads().is_empty() {
            assert!(
                start.elapsed() < limit,
                "multipart uploads still in the bucket after {limit:?}: {:?}",
                self.multipart_uploads()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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

/// The SHA-1 of `bytes`, hex.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

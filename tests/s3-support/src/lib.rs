//! S3 test support shared by the two suites that need a real S3 server: the `s3` adapter's
//! own tests (`adapters/s3/tests`, through the library's ABI boundary) and the end-to-end
//! tests through the daemon (`tests/tests/s3.rs`). Both inspect the bucket with a client of
//! their own, not the adapter's, and both put a fault-injecting proxy between the adapter and
//! the server; this crate is the one copy of that, so the two suites cannot drift apart.
//!
//! The tests need a running S3 server: `source tests/s3-server.sh && s3_server_start`
//! (which `tests/run.sh` does) exports `AERIE_TEST_S3_ENDPOINT` and the static test
//! credentials. Without it the tests fail, saying so, rather than skip.

mod panel_side;
mod proxy;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

pub use panel_side::PanelS3;
pub use proxy::Proxy;

/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

/// The test S3 server's URL (`http://127.0.0.1:PORT`).
pub fn endpoint() -> String {
    std::env::var("AERIE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "AERIE_TEST_S3_ENDPOINT is not set: the S3 tests need a local S3 server. Run them \
             with `bash tests/run.sh`, or\n  source tests/s3-server.sh && s3_server_start && \
             cargo build --workspace --all-targets && \
             cargo test -p aerie-adapter-s3 -p aerie-e2e; s3_server_stop"
        )
    })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The test server's region (`AWS_REGION`, `us-east-1` by default).
pub fn region() -> String {
    env_or("AWS_REGION", "us-east-1")
}

/// The test server's access key id (`AWS_ACCESS_KEY_ID`, `test` by default).
pub fn access_key_id() -> String {
    env_or("AWS_ACCESS_KEY_ID", "test")
}

/// The test server's secret access key (`AWS_SECRET_ACCESS_KEY`, `test` by default).
pub fn secret_access_key() -> String {
    env_or("AWS_SECRET_ACCESS_KEY", "test")
}

/// A client's configuration for the test server at `endpoint`: path style, the static test
/// credentials under the provider name `name`; the caller adds what it needs and builds.
fn client_config(endpoint: &str, name: &'static str) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region()))
        .credentials_provider(Credentials::new(
            access_key_id(),
            secret_access_key(),
            None,
            None,
            name,
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
}

/// A runtime of its own for a test's blocking S3 client.
fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the S3 client")
}

/// A bucket in the test server, and a client of the test's own to inspect it.
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// A direct client (path style, static test credentials), not the adapter's.
    pub client: Client,
    runtime: Runtime,
}

impl Bucket {
    /// Creates a fresh bucket named after `test` (see [`Bucket::without_creating`]).
    pub fn new(test: &str) -> Bucket {
        let bucket = Bucket::without_creating(test);
        bucket
            .run(bucket.client.create_bucket().bucket(&bucket.name).send())
            .unwrap_or_else(|e| panic!("CreateBucket {}: {e:?}", bucket.name));
        bucket
    }

    /// A client for a fresh bucket name that is not created: `test` (lower case, `_` made
    /// `-`), the process id and a counter, so that each call gets a name of its own.
    pub fn without_creating(test: &str) -> Bucket {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{}-{n}",
            test.to_ascii_lowercase().replace('_', "-"),
            std::process::id()
        );
        assert!(name.len() <= 63, "bucket name too long: {name}");
        Bucket {
            name,
            client: Client::from_conf(client_config(&endpoint(), "aerie-tests").build()),
            runtime: client_runtime(),
        }
    }

    /// Runs a request of the direct client.
    pub fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
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
        .unwrap_or_else(|e| panic!("GetObject {key}: {e:?}"))
    }

    /// HeadObject: `None` when there is no such object.
    pub fn head(&self, key: &str) -> Option<HeadObjectOutput> {
        match self.run(self.client.head_object().bucket(&self.name).key(key).send()) {
            Ok(head) => Some(head),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => None,
            Err(e) => panic!("HeadObject {key}: {e:?}"),
        }
    }

    /// Whether an object exists at `key`.
    pub fn exists(&self, key: &str) -> bool {
        self.head(key).is_some()
    }

    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let output = self
            .run(self.client.list_objects_v2().bucket(&self.name).send())
            .unwrap_or_else(|e| panic!("ListObjectsV2: {e:?}"));
        output
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Whether the bucket exists in the server.
    pub fn is_created(&self) -> bool {
        let output = self
            .run(self.client.list_buckets().send())
            .unwrap_or_else(|e| panic!("ListBuckets: {e:?}"));
        output
            .buckets()
            .iter()
            .any(|b| b.name() == Some(self.name.as_str()))
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

    /// Polls until no multipart upload is left; fails after `limit` (a hang guard).
    pub fn wait_for_no_uploads(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let uploads = self.multipart_uploads();
            if uploads.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "multipart uploads still in the bucket after {limit:?}: {uploads:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The SHA-1 of `bytes`, hex.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

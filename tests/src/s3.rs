//! S3 for the end-to-end tests: the test server's address, a bucket of one's own with a
//! direct client to look into it (not the adapter's), the plugins file that points the `s3`
//! adapter at it, and a small fault-injecting proxy to put between the daemon and the server.
//!
//! The tests need a running S3 server: `source tests/s3-server.sh && s3_server_start`
//! (which `tests/run.sh` does) exports `AERIE_TEST_S3_ENDPOINT`. Without it they fail,
//! saying so, rather than skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

/// S3's smallest part, the adapter's default `part_size`.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

/// The test S3 server's URL (`http://127.0.0.1:PORT`).
pub fn endpoint() -> String {
    std::env::var("AERIE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "AERIE_TEST_S3_ENDPOINT is not set: the S3 tests need a local S3 server. Run them \
             with `bash tests/run.sh`, or\n  source tests/s3-server.sh && s3_server_start && \
             cargo build --workspace --all-targets && cargo test -p aerie-e2e --test s3; \
             s3_server_stop"
        )
    })
}

/// The built `s3` adapter.
pub fn s3_library() -> PathBuf {
    crate::artifact("libaerie_adapter_s3.so")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A bucket in the test server, and a client of the test's own to inspect it.
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// A direct client (path style, static test credentials).
    pub client: Client,
    runtime: Runtime,
}

impl Bucket {
    /// Creates a fresh bucket named after `test`.
    pub fn new(test: &str) -> Bucket {
        let bucket = Bucket::without_creating(test);
        bucket
            .run(bucket.client.create_bucket().bucket(&bucket.name).send())
            .unwrap_or_else(|e| panic!("CreateBucket {}: {e:?}", bucket.name));
        bucket
    }

    /// A client for a fresh bucket name that is not created.
    pub fn without_creating(test: &str) -> Bucket {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "e2e-{}-{}-{n}",
            test.to_ascii_lowercase().replace('_', "-"),
            std::process::id()
        );
        assert!(name.len() <= 63, "bucket name too long: {name}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the S3 client");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(env_or("AWS_REGION", "us-east-1")))
            .credentials_provider(Credentials::new(
                env_or("AWS_ACCESS_KEY_ID", "test"),
                env_or("AWS_SECRET_ACCESS_KEY", "test"),
                None,
                None,
                "aerie-e2e",
            ))
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

    /// A plugins file with one adapter, `s3`, on this bucket through `endpoint` (the test
    /// server, or a proxy in front of it), with `part_size` 5 MiB and `extra` YAML lines
    /// (`key: value`) added to its config.
    pub fn plugins(&self, endpoint: &str, extra: &[&str]) -> String {
        let mut yaml = format!(
            "adapters:\n  - name: s3\n    library: {library}\n    config:\n      \
             bucket: {bucket}\n      endpoint: {endpoint}\n      force_path_style: true\n      \
             region: {region}\n      access_key_id: {id}\n      secret_access_key: {secret}\n",
            library = s3_library().display(),
            bucket = self.name,
            region = env_or("AWS_REGION", "us-east-1"),
            id = env_or("AWS_ACCESS_KEY_ID", "test"),
            secret = env_or("AWS_SECRET_ACCESS_KEY", "test"),
        );
        if !extra.iter().any(|line| line.starts_with("part_size:")) {
            yaml.push_str(&format!("      part_size: {PART_SIZE}\n"));
        }
        for line in extra {
            yaml.push_str(&format!("      {line}\n"));
        }
        yaml
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

/// A fault-injecting HTTP proxy in front of the test server. Each request gets a connection
/// of its own (it answers `Connection: close`); bodies must carry a `Content-Length`. It can
/// answer UploadPart requests with `503 SlowDown`, and play dead: drop every connection,
/// requests in flight included, until it is brought back. It lives until the test process
/// ends.
pub struct Proxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: SocketAddr,
    down: AtomicBool,
    /// UploadPart requests still to answer with 503.
    refuse_parts: AtomicU32,
    /// UploadPart requests answered with 503 so far.
    refused: AtomicU32,
    /// UploadPart requests to let through before playing dead (`u32::MAX`: never).
    parts_before_down: AtomicU32,
    /// UploadPart requests that reached the proxy.
    parts_seen: AtomicU32,
}

impl Proxy {
    /// Starts a proxy to the test server.
    pub fn start() -> Proxy {
        let upstream: SocketAddr = endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the test endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(ProxyState {
            upstream,
            down: AtomicBool::new(false),
            refuse_parts: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            parts_before_down: AtomicU32::new(u32::MAX),
            parts_seen: AtomicU32::new(0),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(&state, client);
                });
            }
        });
        Proxy { url, state }
    }

    /// Answers the next `n` UploadPart requests with `503 SlowDown`, as S3 does when
    /// throttling.
    pub fn refuse_next_parts(&self, n: u32) {
        self.state.refuse_parts.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests answered with 503 so far.
    pub fn refused(&self) -> u32 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Lets `n` UploadPart requests through, then plays dead from the next one on.
    pub fn go_down_after_parts(&self, n: u32) {
        self.state.parts_before_down.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests that reached the proxy so far.
    pub fn parts_seen(&self) -> u32 {
        self.state.parts_seen.load(Ordering::SeqCst)
    }

    /// Whether the proxy plays dead.
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Plays dead (`true`) or passes traffic again (`false`, which also cancels
    /// [`Proxy::go_down_after_parts`]).
    pub fn set_down(&self, down: bool) {
        if !down {
            self.state
                .parts_before_down
                .store(u32::MAX, Ordering::SeqCst);
        }
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// Serves one request on `client`, then closes the connection.
fn serve(state: &ProxyState, client: TcpStream) -> std::io::Result<()> {
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    assert!(
        header("transfer-encoding").is_none(),
        "the proxy handles Content-Length bodies only: {head:?}"
    );
    let is_part = head[0].starts_with("PUT ") && head[0].contains("partNumber=");
    if is_part {
        let seen = state.parts_seen.fetch_add(1, Ordering::SeqCst);
        if seen >= state.parts_before_down.load(Ordering::SeqCst) {
            state.down.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        (&client).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    // The body, in pieces: dropped mid-way if the proxy goes down meanwhile.
    let mut body = Vec::with_capacity(length);
    let mut piece = vec![0; 64 * 1024];
    while body.len() < length {
        if state.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let want = piece.len().min(length - body.len());
        let n = reader.read(&mut piece[..want])?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&piece[..n]);
    }

    let mut client = client;
    if is_part
        && state
            .refuse_parts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message>\
                   <RequestId>aerie-e2e-proxy</RequestId></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return client.flush();
    }

    let mut upstream = TcpStream::connect(state.upstream)?;
    let mut forwarded = format!("{}\r\n", head[0]);
    for line in &head[1..] {
        let name = line.split(':').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("expect") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes())?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    // Tell the client too that the connection ends here, so that it never reuses it.
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(());
    };
    let mut out = String::new();
    for line in String::from_utf8_lossy(&response[..split]).split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    client.write_all(&response[split + 4..])?;
    client.flush()
}

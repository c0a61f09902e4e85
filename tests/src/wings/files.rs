//! The Wings stand-in's `files` routes, for the pass-through tests: `GET /api/system`, an
//! upload that is hashed as it streams (never held), a deterministic download of any size,
//! an error route in Wings' shape, and a record of every request that reached Wings.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use axum::{
    body::Body,
    extract::{Query, Request, State as Shared},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// The version `GET /api/system` reports.
pub const WINGS_VERSION: &str = "1.11.11";

/// The download and upload pattern's block: big enough that streaming it is cheap, small
/// enough to rebuild per test.
const BLOCK: usize = 64 * 1024;

/// A request that reached the stand-in.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// Path and query, as Wings received them.
    pub uri: String,
    /// The headers Wings received.
    pub headers: HeaderMap,
}

/// An upload the stand-in hashed.
#[derive(Debug, Clone)]
pub struct Upload {
    /// SHA-256 of the body, in hex.
    pub sha256: String,
    /// The body's length.
    pub bytes: u64,
    /// The headers Wings received with it.
    pub headers: HeaderMap,
}

/// What these routes share and record.
pub struct State {
    /// The bearer token Wings expects.
    pub token: String,
    /// Every request that reached the stand-in, in order (see [`record`]).
    pub seen: Mutex<Vec<Seen>>,
    /// Every upload, once its body ended.
    pub uploads: Mutex<Vec<Upload>>,
}

impl State {
    /// Nothing recorded yet.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_string(),
            seen: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
        }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The uploads hashed so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.uploads.lock().unwrap().clone()
    }

    /// Whether `authorization` is Wings' bearer: the node token alone.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {}", self.token))
    }
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/system", get(system))
        .route("/upload/file", post(upload))
        .route("/download/file", get(download))
        .route(
            "/api/servers/{server}/files/decompress",
            post(unprocessable),
        )
        .with_state(state)
}

/// Middleware for the whole stand-in: records each request's method, URI and headers.
pub async fn record(Shared(state): Shared<Arc<State>>, request: Request, next: Next) -> Response {
    state.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request.headers().clone(),
    });
    next.run(request).await
}

/// Wings' refusal of a missing or wrong bearer (Wings says 401 or 403; 403 is enough here).
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({"error": "You are not authorized to access this endpoint."})),
    )
        .into_response()
}

/// `GET /api/system`: Wings' system information, for the node's token only.
async fn system(Shared(state): Shared<Arc<State>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return forbidden();
    }
    Json(serde_json::json!({
        "architecture": "amd64",
        "cpu_count": 2,
        "kernel_version": "6.1.0",
        "os": "linux",
        "version": WINGS_VERSION,
    }))
    .into_response()
}

/// `POST /upload/file`: hashes the body as it streams, then answers with what it counted
/// (`{"sha256", "bytes"}`) and, for the test, a hop-by-hop header that must not pass back.
async fn upload(Shared(state): Shared<Arc<State>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let mut body = request.into_body().into_data_stream();
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        hash.update(&chunk);
        bytes += chunk.len() as u64;
    }
    let sha256 = hex(&hash.finalize());
    state.uploads.lock().unwrap().push(Upload {
        sha256: sha256.clone(),
        bytes,
        headers,
    });
    (
        [
            (header::CONNECTION, "x-wings-hop"),
            (header::HeaderName::from_static("x-wings-hop"), "1"),
            (header::HeaderName::from_static("keep-alive"), "timeout=5"),
        ],
        Json(serde_json::json!({"sha256": sha256, "bytes": bytes})),
    )
        .into_response()
}

/// The download's query: how many bytes.
#[derive(serde::Deserialize)]
struct DownloadQuery {
    size: u64,
}

/// `GET /download/file?size=N`: `N` bytes of [`Pattern`], streamed with a `Content-Length`
/// and a `Content-Disposition` as Wings sends them.
async fn download(Query(query): Query<DownloadQuery>) -> Response {
    let mut pattern = Pattern::new(query.size);
    let chunks = futures_util::stream::poll_fn(move |_| {
        let mut chunk = vec![0u8; BLOCK];
        let n = pattern.read(&mut chunk).expect("the pattern never fails");
        chunk.truncate(n);
        std::task::Poll::Ready((n > 0).then_some(Ok::<_, std::io::Error>(chunk)))
    });
    (
        [
            (header::CONTENT_LENGTH, query.size.to_string()),
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"pattern.bin\"".to_string(),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// `POST /api/servers/{server}/files/decompress`: Wings' 422 with its error body and
/// request id, whatever is asked.
async fn unprocessable() -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(
            header::HeaderName::from_static("x-request-id"),
            "6f1c2a3e-0000-4000-8000-000000000422",
        )],
        Json(serde_json::json!({
            "error": "The archive could not be decompressed: unknown format.",
            "request_id": "6f1c2a3e-0000-4000-8000-000000000422",
        })),
    )
        .into_response()
}

/// `len` deterministic bytes that do not repeat within a transfer: a block of noise with
/// each block's index written over its first 8 bytes, so a lost, repeated or reordered
/// block changes the hash. Readable, for uploads.
pub struct Pattern {
    /// Bytes produced so far.
    offset: u64,
    /// Bytes in all.
    len: u64,
}

impl Pattern {
    /// `len` bytes of the pattern.
    pub fn new(len: u64) -> Self {
        Self { offset: 0, len }
    }

    /// The SHA-256 (hex) of `len` bytes of the pattern.
    pub fn sha256(len: u64) -> String {
        let mut pattern = Self::new(len);
        let mut hash = Sha256::new();
        let mut buffer = vec![0u8; BLOCK];
        loop {
            let n = pattern.read(&mut buffer).unwrap();
            if n == 0 {
                return hex(&hash.finalize());
            }
            hash.update(&buffer[..n]);
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        static NOISE: OnceLock<Vec<u8>> = OnceLock::new();
        let noise = NOISE.get_or_init(|| crate::noise(BLOCK));
        let left = self.len - self.offset;
        let at = (self.offset % BLOCK as u64) as usize;
        let n = (buf.len().min(BLOCK - at) as u64).min(left) as usize;
        buf[..n].copy_from_slice(&noise[at..at + n]);
        if at < 8 {
            let stamp = (self.offset / BLOCK as u64).to_le_bytes();
            let end = (at + n).min(8);
            buf[..end - at].copy_from_slice(&stamp[at..end]);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! Passing HTTP requests through to Wings: every request aerie does not serve itself goes to
//! Wings as it came (hop-by-hop headers excepted, `X-Forwarded-For`/`-Proto` added), both
//! bodies streamed without buffering or a size cap, and Wings' answer comes back unchanged.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    body::Body,
    extract::{Extension, Request},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Wings;
use crate::api_error::ApiError;
use crate::serve::ClientConnection;

/// How long a connection to Wings may take to open: Wings is on this node, so a second is
/// generous; the Panel's own connect timeout to a node is 5 s (`pterodactyl.guzzle`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled connection to Wings is kept (hyper-util's default, 90 s): long
/// enough to reuse it between a Panel's calls, short enough not to pile up.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections to Wings kept open at most; more are closed once their request ends.
/// The Panel and browsers rarely have more than a few requests in flight per node.
const POOL_MAX_IDLE: usize = 16;

/// How long `aerie check` waits for Wings' `/api/system` (the Panel's Guzzle timeout, 15 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1, plus
/// `Proxy-Connection` and `Keep-Alive` that old clients send): never passed on either way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The `X-Forwarded-For` header (not among `http`'s constants).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `X-Forwarded-Proto` header.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Wings, and the pooled HTTP/1 client that reaches it. Every request handler that forwards
/// finds it as a request extension.
pub struct Proxy {
    /// Where Wings listens.
    wings: Arc<Wings>,
    /// Streams bodies both ways as they come; no total timeout (a server transfer takes
    /// hours), a connect timeout, no redirects followed, no decompression, nothing added.
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    /// A proxy to `wings` (whose URL config has checked is `http://`).
    pub fn new(wings: Arc<Wings>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Arc::new(Self { wings, client })
    }

    /// Passes `request` to Wings and returns Wings' answer; 502 in Wings' error shape when
    /// Wings cannot be reached or breaks off before answering.
    pub async fn forward(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let method = parts.method.clone();
        // The path alone is logged: queries carry download and upload tokens.
        let path = parts.uri.path().to_string();
        let target = format!(
            "{}{}",
            self.wings.url,
            parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
        );
        parts.uri = match target.parse::<Uri>() {
            Ok(uri) => uri,
            Err(err) => return self.unreachable(&method, &path, &err),
        };
        let client = parts.extensions.get::<ClientConnection>().copied();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(client) = client {
            add_forwarded(&mut parts.headers, client);
        }
        // Only what the request itself says goes on: extensions are aerie's own.
        parts.extensions = Default::default();
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(err) => self.unreachable(&method, &path, &err),
        }
    }

    /// The 502 for a request Wings did not answer, and its log line.
    fn unreachable(
        &self,
        method: &axum::http::Method,
        path: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Response {
        let cause = causes(err);
        tracing::warn!(%method, path, upstream = %self.wings.url, "Wings did not answer: {cause}");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("The upstream Wings daemon did not answer: {cause}"),
        )
        .into_response()
    }

    /// `GET /api/system` with the node token, as the Panel asks Wings: Wings' version when
    /// it answers, else what went wrong (for `aerie check`).
    pub async fn probe(&self) -> Result<String, String> {
        let uri: Uri = format!("{}/api/system", self.wings.url)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let request = Request::get(uri)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.wings.token),
            )
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|e| format!("{e}"))?;
        let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
            let response = self.client.request(request).await.map_err(|e| causes(&e))?;
            let status = response.status();
            let body = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
                .await
                .map_err(|e| causes(&e))?;
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))??;
        let (status, body) = answer;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            let said = json["error"].as_str().unwrap_or("no error message");
            return Err(format!("it answered {status}: {said}"));
        }
        match json["version"].as_str() {
            Some(version) => Ok(format!("Wings {version}")),
            None => Err(format!(
                "it answered {status} but not with Wings' system information"
            )),
        }
    }
}

/// The fallback in front of Wings: every request aerie has no route for goes to Wings.
pub async fn forward(Extension(proxy): Extension<Arc<Proxy>>, request: Request) -> Response {
    proxy.forward(request).await
}

/// Removes the hop-by-hop headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For` (after any the request brought) and
/// sets `X-Forwarded-Proto` to the scheme the client used.
fn add_forwarded(headers: &mut HeaderMap, client: ClientConnection) {
    let ip = client.peer.ip().to_string();
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let chain = if earlier.is_empty() {
        ip
    } else {
        format!("{}, {ip}", earlier.join(", "))
    };
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = if client.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

/// An error and its causes on one line (hyper's own message is only "client error
/// (Connect)"; the cause says "Connection refused").
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.append(&X_FORWARDED_FOR, "203.0.113.1".parse().unwrap());
        headers.append(&X_FORWARDED_FOR, "203.0.113.2".parse().unwrap());
        headers.insert(&X_FORWARDED_PROTO, "http".parse().unwrap());
        let client = ClientConnection {
            peer: "198.51.100.7:4000".parse().unwrap(),
            tls: true,
        };
        add_forwarded(&mut headers, client);
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "203.0.113.1, 203.0.113.2, 198.51.100.7"
        );
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
    }
}

//! The CLI's client of the running daemon: its address and token from the config, its API
//! over HTTP(S), and every answer turned into a result or a [`Failure`] with its exit code.

use std::sync::Arc;
use std::time::Duration;

use aerie::config::Config;
use reqwest::{Method, StatusCode};
use rustls::ClientConfig;
use serde_json::Value;
use url::Url;

use super::exit::{Exit, Failure};
use super::pin;

/// How long the CLI waits for the daemon to accept a connection before calling it
/// unreachable: a local daemon accepts at once; a few seconds cover a loaded node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take: deleting a running backup waits for its job to stop
/// and an S3 delete to answer, well within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest answer read: a node's whole backup list at about 400 bytes a backup fits
/// many thousands of times.
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// The running daemon, as the config says where it listens.
pub struct Daemon {
    /// `http(s)://host:port/`, where the CLI connects.
    pub base: Url,
    /// The host connected to (`api.host`, or 127.0.0.1 for a wildcard address).
    pub host: String,
    /// `api.port`.
    pub port: u16,
    /// The pinned TLS config when `api.ssl.enabled`.
    pub tls: Option<Arc<ClientConfig>>,
    /// The node token (`token`).
    pub token: String,
    /// The HTTP client.
    http: reqwest::Client,
}

/// The host a local client connects to for `api.host`: a wildcard address listens on
/// loopback too.
pub fn local_host(config: &Config) -> &str {
    match config.api.host.as_str() {
        "0.0.0.0" | "::" | "" => "127.0.0.1",
        host => host,
    }
}

/// `http(s)://host:port/` for the daemon of `config`, reached locally.
pub fn base_url(config: &Config) -> anyhow::Result<Url> {
    let scheme = if config.api.ssl.enabled {
        "https"
    } else {
        "http"
    };
    let host = local_host(config);
    // An IPv6 literal takes brackets in a URL.
    let host = match host.contains(':') {
        true => format!("[{host}]"),
        false => host.to_string(),
    };
    Url::parse(&format!("{scheme}://{host}:{}/", config.api.port))
        .map_err(|e| anyhow::anyhow!("api.host/api.port do not make an address: {e}"))
}

impl Daemon {
    /// The daemon `config` describes; nothing is sent yet.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let tls = match config.api.ssl.enabled {
            true => Some(pin::client_config(&config.api.ssl.cert)?),
            false => None,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls((**tls).clone());
        }
        Ok(Self {
            base: base_url(config)?,
            host: local_host(config).to_string(),
            port: config.api.port,
            tls,
            token: config.token.clone(),
            http: http.build()?,
        })
    }

    /// The URL of the path made of `segments`, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The failure for a daemon that cannot be reached, naming its address and why (a
    /// TLS failure says so: the daemon may well run, with another certificate).
    pub fn unreachable(&self, cause: &(dyn std::error::Error + 'static)) -> Failure {
        let address = self.base.as_str().trim_end_matches('/');
        if is_tls_failure(cause) {
            return Failure::new(
                Exit::Unreachable,
                format!(
                    "the daemon at {address} is not trusted: {} (the CLI trusts only that \
                     certificate)",
                    root_cause(cause)
                ),
            );
        }
        Failure::new(
            Exit::Unreachable,
            format!(
                "no aerie daemon answers at {address}: {}; is it running? (its address is \
                 api.host and api.port in the config)",
                root_cause(cause)
            ),
        )
    }

    /// Sends `method` to the path of `segments` with the node token and an optional JSON
    /// body; returns the answer's status and JSON (`null` when empty), or the failure an
    /// error answer means.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut request = self
            .http
            .request(method, self.url(segments))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.sending_failed(e))?;
        let status = response.status();
        let body = self.read_limited(response).await?;
        let json: Value = match body.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&body).trim().to_string())
            }),
        };
        if status.is_success() {
            return Ok((status, json));
        }
        Err(refusal(status, &json))
    }

    /// `GET` the path of `segments`: its JSON.
    pub async fn get(&self, segments: &[&str]) -> Result<Value, Failure> {
        Ok(self.call(Method::GET, segments, None).await?.1)
    }

    /// The answer's body, refused beyond [`ANSWER_LIMIT`].
    async fn read_limited(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.sending_failed(e))? {
            if body.len() + chunk.len() > ANSWER_LIMIT {
                return Err(Failure::new(
                    Exit::Error,
                    format!(
                        "the daemon's answer is larger than {} MiB",
                        ANSWER_LIMIT >> 20
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn sending_failed(&self, err: reqwest::Error) -> Failure {
        if err.is_connect() || err.is_timeout() {
            self.unreachable(&err)
        } else {
            Failure::new(
                Exit::Error,
                format!(
                    "talking to the daemon at {}: {}",
                    self.base,
                    root_cause(&err)
                ),
            )
        }
    }
}

/// The failure an error answer means: 404 is "not found", anything else a refusal; the
/// message is the daemon's own (`{"error": "..."}`).
pub fn refusal(status: StatusCode, body: &Value) -> Failure {
    let said = match body.get("error").and_then(Value::as_str) {
        Some(error) => error.to_string(),
        None => body.as_str().unwrap_or_default().to_string(),
    };
    let exit = match status {
        StatusCode::NOT_FOUND => Exit::NotFound,
        _ => Exit::Refused,
    };
    Failure {
        status: Some(status.as_u16()),
        ..Failure::new(
            exit,
            format!("the daemon answered {}: {said}", status.as_u16()),
        )
    }
}

/// Whether `err` or one of its causes is a TLS failure (rustls' error, possibly inside
/// I/O errors, whose `source()` skips the error they wrap).
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    if err.is::<rustls::Error>() {
        return true;
    }
    let wrapped = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref);
    if wrapped.is_some_and(|inner| is_tls_failure(inner)) {
        return true;
    }
    err.source().is_some_and(is_tls_failure)
}

/// The innermost cause of an error (`Connection refused (os error 111)`), the part that
/// tells an operator what happened; hyper's and reqwest's outer layers only say "error
/// sending request".
pub fn root_cause(err: &dyn std::error::Error) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

//! A server's event websocket, as the CLI follows a job on it: opened and authenticated
//! (with a token minted from the node token, as the Panel mints them) before the job is
//! asked for, so that none of its events is missed; the token is renewed when it expires.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::daemon::{refusal, root_cause, Daemon, CONNECT_TIMEOUT};
use super::exit::{Exit, Failure};

/// How long a websocket token minted here is valid, as `aerie ws-token` mints them (the
/// Panel's are valid for 10 minutes too); the daemon warns before expiry and a fresh one is
/// sent then.
const TOKEN_LIFETIME: i64 = 600;

/// How long the daemon may take to answer `auth`.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame accepted: the daemon's events are small JSON (the largest a restore's
/// outcome message, under 1 KiB).
const FRAME_LIMIT: usize = 64 * 1024;

/// A stream the socket runs on: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An authenticated socket on one server's events.
pub struct Events {
    /// The socket, authenticated.
    socket: WebSocketStream<Box<dyn Io>>,
    /// The node token, to mint fresh websocket tokens with.
    node_token: String,
    /// The server whose events these are.
    server: String,
}

/// One event: its name and its argument, if any.
pub type Event = (String, Option<String>);

/// A websocket token for `server`, signed with `node_token` as the Panel signs them (all
/// permissions).
pub fn mint_token(node_token: &str, server: &str) -> String {
    let now = aerie::jwt::unix_now();
    let claims = json!({
        "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME,
        "server_uuid": server, "permissions": ["*"],
    });
    aerie::jwt::sign(&claims, node_token.as_bytes())
}

impl Events {
    /// Opens `/api/servers/{server}/ws` on `daemon` and authenticates.
    pub async fn open(daemon: &Daemon, server: &str) -> Result<Self, Failure> {
        let mut url = daemon.url(&["api", "servers", server, "ws"]);
        let scheme = if daemon.tls.is_some() { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes");
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((daemon.host.as_str(), daemon.port)),
        )
        .await
        .map_err(|elapsed| daemon.unreachable(&elapsed))?
        .map_err(|err| daemon.unreachable(&err))?;
        let stream: Box<dyn Io> = match &daemon.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(daemon.host.clone())
                    .map_err(|e| Failure::new(Exit::Error, format!("api.host: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|err| daemon.unreachable(&err))?,
                )
            }
            None => Box::new(tcp),
        };
        let config = WebSocketConfig::default()
            .max_frame_size(Some(FRAME_LIMIT))
            .max_message_size(Some(FRAME_LIMIT));
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                .await
                .map_err(|err| match err {
                    tungstenite::Error::Http(response) => {
                        let body = response.body().as_deref().unwrap_or_default();
                        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
                        refusal(response.status(), &body)
                    }
                    err => daemon.unreachable(&err),
                })?;
        let mut events = Self {
            socket,
            node_token: daemon.token.clone(),
            server: server.to_string(),
        };
        events.authenticate().await?;
        Ok(events)
    }

    /// Sends a fresh token and waits for `auth success`.
    async fn authenticate(&mut self) -> Result<(), Failure> {
        self.send_token().await?;
        let answer = tokio::time::timeout(AUTH_TIMEOUT, async {
            while let Some((name, arg)) = self.read().await? {
                match name.as_str() {
                    "auth success" => return Ok(()),
                    "jwt error" => {
                        return Err(Failure::new(
                            Exit::Refused,
                            format!(
                                "the daemon refused the websocket token: {}",
                                arg.unwrap_or_default()
                            ),
                        ))
                    }
                    _ => {}
                }
            }
            Err(closed())
        })
        .await;
        answer.unwrap_or_else(|_| {
            Err(Failure::new(
                Exit::Error,
                format!("the daemon did not answer the websocket's auth within {AUTH_TIMEOUT:?}"),
            ))
        })
    }

    async fn send_token(&mut self) -> Result<(), Failure> {
        let token = mint_token(&self.node_token, &self.server);
        let frame = json!({"event": "auth", "args": [token]}).to_string();
        self.socket
            .send(Message::Text(frame.into()))
            .await
            .map_err(|e| lost(&e))
    }

    /// The next event, or `None` when the daemon closed the socket. An expiring token is
    /// renewed on the way.
    pub async fn next(&mut self) -> Result<Option<Event>, Failure> {
        while let Some((name, arg)) = self.read().await? {
            match name.as_str() {
                "token expiring" | "token expired" => self.send_token().await?,
                _ => return Ok(Some((name, arg))),
            }
        }
        Ok(None)
    }

    /// The next frame as an event; pings are answered by the socket itself.
    async fn read(&mut self) -> Result<Option<Event>, Failure> {
        while let Some(message) = self.socket.next().await {
            let text = match message.map_err(|e| lost(&e))? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let name = frame["event"].as_str().unwrap_or_default().to_string();
            let arg = frame["args"][0].as_str().map(str::to_string);
            return Ok(Some((name, arg)));
        }
        Ok(None)
    }
}

fn closed() -> Failure {
    Failure::new(
        Exit::Error,
        "the daemon closed the event websocket before the job ended",
    )
}

fn lost(err: &tungstenite::Error) -> Failure {
    Failure::new(
        Exit::Error,
        format!("the event websocket failed: {}", root_cause(err)),
    )
}

//! `GET /api/servers/{server}/ws` in front of Wings: the browser's socket is relayed frame by
//! frame to Wings' socket for the same server, both ways, and aerie adds its own backup and
//! restore events to what goes down once the client's `auth` token (checked here with the
//! standalone socket's rules) allows them. `set state` frames for a server being restored are
//! refused here, as Wings refuses a power action it cannot take.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WingsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Wings;
use crate::events::bus::{Event, EventBus, Subscription};
use crate::events::websocket::{
    authorize, instant_at, needs_backup_read, Grant, AUTH_TIMEOUT_REASON, SHUTDOWN_REASON,
};
use crate::jwt::unix_now;
use crate::locks::ServerLocks;
use crate::serve::ConnectionSlot;
use crate::wings_text;

/// How long connecting to Wings' socket (TCP, TLS and the upgrade) may take: Wings is on
/// this node, so anything near this is a Wings that is down or stuck.
const WINGS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame and message taken from Wings: its frames are console lines and stats
/// JSON (a console line is cut by Wings well below this); a bound per socket, not a filter.
const WINGS_MESSAGE_LIMIT: usize = 1024 * 1024;

/// How long one frame may take to reach the client before the client counts as gone: a
/// browser that stops reading holds a Wings connection and a task, so it is closed.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the closing handshake with each side may take once one side has ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Frames aerie answers the client itself (refused `set state`) waiting for the writer: a
/// client that floods them waits for its own socket, never grows a queue.
const REPLIES_QUEUED: usize = 8;

/// What Wings calls an error answer on the socket (`router/websocket/message.go`).
const DAEMON_ERROR: &str = "daemon error";

/// The reason given to the client when Wings' connection ends without a close frame.
const WINGS_GONE: &str = "the connection to Wings ended";

/// Wings' socket, as aerie holds it.
type WingsSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a relayed socket needs to know.
pub struct Relay {
    /// The server the socket watches.
    pub server: String,
    /// The node token (the JWT key).
    pub node_token: String,
    /// When the daemon started (Unix seconds): tokens issued earlier are refused.
    pub started_at: i64,
    /// Where aerie's events come from.
    pub bus: Arc<EventBus>,
    /// Which servers are being restored.
    pub locks: Arc<ServerLocks>,
    /// How long the socket may stay without a valid token before it is closed.
    pub auth_timeout: Duration,
    /// Cancelled when the daemon stops (after its jobs): the socket then closes.
    pub closing: CancellationToken,
}

/// Why a relay ended, and so what each side is told.
enum End {
    /// The client closed (with this frame) or went away: Wings is told.
    Client(Option<CloseFrame>),
    /// Wings closed (with this frame) or went away: the client is told.
    Wings(Option<CloseFrame>),
    /// aerie ends the socket (no token in time, a client too slow): both are told.
    Aerie(CloseFrame),
}

/// A client frame, as far as aerie reads it.
#[derive(Deserialize)]
struct Inbound {
    /// The event's name, e.g. `auth`.
    event: String,
    /// Its arguments; Wings joins them (`auth` carries the JWT).
    #[serde(default)]
    args: Vec<Value>,
}

/// Upgrades the client's socket after connecting to Wings' socket for `server`. Wings'
/// refusal of the upgrade is returned as Wings gave it; a Wings that cannot be reached
/// gets the client's socket closed with 1011 and a reason.
/// `place` counts the socket among the sessions a stop waits for.
pub async fn open(
    relay: Relay,
    place: TaskTrackerToken,
    wings: &Wings,
    headers: &HeaderMap,
    slot: ConnectionSlot,
    upgrade: WebSocketUpgrade,
) -> Response {
    let server = relay.server.clone();
    let wings_socket = match connect(wings, &server, headers.get(header::ORIGIN)).await {
        Ok(socket) => socket,
        Err(Refusal::Answered(response)) => return response,
        Err(Refusal::Unreachable(err)) => {
            tracing::error!(%server, url = %wings.url, "cannot open Wings' websocket: {err}");
            return upgrade.on_upgrade(move |mut socket| async move {
                let _slot = slot;
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::ERROR,
                    reason: "Wings cannot be reached on this node".into(),
                }));
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    let _ = socket.send(close).await;
                    while let Some(Ok(_)) = socket.next().await {}
                })
                .await;
            });
        }
    };
    upgrade.on_upgrade(move |socket| async move {
        // The socket keeps its connection's place among `api.max_connections`.
        let _slot = slot;
        // Counted among the sessions a stop waits for.
        let _place = place;
        run(socket, wings_socket, relay).await
    })
}

/// Why Wings' socket could not be opened.
enum Refusal {
    /// Wings answered the upgrade with an HTTP error: passed on as it is.
    Answered(Response),
    /// Wings could not be reached, or did not speak websocket.
    Unreachable(String),
}

/// Wings' socket URL for `server`: the upstream URL (plain HTTP on loopback, as the config
/// requires) with the `ws` scheme.
fn socket_url(wings: &Wings, server: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(&wings.url).map_err(|e| format!("upstream.url: {e}"))?;
    url.set_scheme("ws")
        .map_err(|()| format!("upstream.url: {} has no websocket scheme", wings.url))?;
    url.path_segments_mut()
        .map_err(|()| format!("upstream.url: {} cannot have a path", wings.url))?
        .pop_if_empty()
        .extend(["api", "servers", server, "ws"]);
    Ok(url)
}

/// Opens Wings' socket for `server`, passing the browser's `Origin` (Wings checks it
/// against the Panel's URL).
async fn connect(
    wings: &Wings,
    server: &str,
    origin: Option<&HeaderValue>,
) -> Result<WingsSocket, Refusal> {
    let url = socket_url(wings, server).map_err(Refusal::Unreachable)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Refusal::Unreachable(e.to_string()))?;
    if let Some(origin) = origin {
        request.headers_mut().insert(header::ORIGIN, origin.clone());
    }
    let config = WebSocketConfig::default()
        .max_frame_size(Some(WINGS_MESSAGE_LIMIT))
        .max_message_size(Some(WINGS_MESSAGE_LIMIT));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(WINGS_CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let (parts, body) = response.into_parts();
            let mut answer = Body::from(body.unwrap_or_default()).into_response();
            *answer.status_mut() = parts.status;
            if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
                answer
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, kind.clone());
            }
            Err(Refusal::Answered(answer))
        }
        Ok(Err(err)) => Err(Refusal::Unreachable(err.to_string())),
        Err(_) => Err(Refusal::Unreachable(format!(
            "no answer within {WINGS_CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Relays until either side ends, then closes the other cleanly; nothing outlives it.
async fn run(client: WebSocket, wings: WingsSocket, relay: Relay) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut wings_tx, mut wings_rx) = wings.split();
    let (grants_tx, mut grants_rx) = watch::channel(None::<Grant>);
    let (replies_tx, mut replies_rx) = mpsc::channel(REPLIES_QUEUED);
    let end = tokio::select! {
        end = client_to_wings(&mut client_rx, &mut wings_tx, &relay, &grants_tx, &replies_tx) => end,
        end = to_client(&mut client_tx, &mut wings_rx, &relay, &mut grants_rx, &mut replies_rx) => end,
    };
    let (to_client_close, to_wings_close) = match end {
        End::Client(frame) => {
            tracing::debug!(server = %relay.server, "the client closed its socket; closing Wings'");
            (None, Some(frame))
        }
        End::Wings(frame) => {
            tracing::debug!(server = %relay.server, "Wings closed its socket; closing the client's");
            (Some(frame), None)
        }
        End::Aerie(frame) => {
            tracing::debug!(server = %relay.server, reason = %frame.reason, "closing a relayed socket");
            (Some(Some(frame)), Some(None))
        }
    };
    // The closing handshake, bounded: each side gets its close frame (one that closed
    // first was answered by its own socket) and is read until it is gone.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some(frame) = to_client_close {
            let _ = client_tx.send(Message::Close(frame)).await;
        }
        if let Some(frame) = to_wings_close {
            let frame = frame.map(|f| tungstenite::protocol::CloseFrame {
                code: CloseCode::from(f.code),
                reason: f.reason.as_str().into(),
            });
            let _ = wings_tx.send(WingsMessage::Close(frame)).await;
        }
        futures_util::join!(
            async { while let Some(Ok(_)) = client_rx.next().await {} },
            async { while let Some(Ok(_)) = wings_rx.next().await {} },
        );
    })
    .await;
}

/// What the client's `auth` frame carries: Wings joins the arguments.
fn joined(args: &[Value]) -> String {
    args.iter().filter_map(Value::as_str).collect()
}

/// Whether a client frame could make Wings change the power state: `set state` under any
/// spelling of the `event` key Wings' JSON decoder accepts (it matches keys without regard
/// to case), and any frame aerie cannot read (Wings' decoder may read it differently).
fn may_set_state(text: &str) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return true;
    };
    fields
        .iter()
        .any(|(key, value)| key.eq_ignore_ascii_case("event") && value == "set state")
}

/// Wings' answer to a refused action: `daemon error` with the message.
fn daemon_error(message: &str) -> Message {
    Message::Text(
        json!({"event": DAEMON_ERROR, "args": [message]})
            .to_string()
            .into(),
    )
}

/// The client's frames to Wings, in order; reads `auth` as it passes and keeps `set state`
/// from a server being restored.
async fn client_to_wings(
    client: &mut SplitStream<WebSocket>,
    wings: &mut SplitSink<WingsSocket, WingsMessage>,
    relay: &Relay,
    grants: &watch::Sender<Option<Grant>>,
    replies: &mpsc::Sender<Message>,
) -> End {
    loop {
        let message = match client.next().await {
            Some(Ok(message)) => message,
            Some(Err(_)) | None => return End::Client(None),
        };
        let forwarded = match message {
            Message::Text(text) => {
                if let Ok(inbound) = serde_json::from_str::<Inbound>(&text) {
                    if inbound.event == "auth" {
                        // Wings answers the client (`auth success` or `jwt error`); aerie
                        // only learns whether its own events may go down.
                        let token = joined(&inbound.args);
                        if let Ok(grant) =
                            authorize(&token, &relay.node_token, &relay.server, relay.started_at)
                        {
                            grants.send_replace(Some(grant));
                        }
                    }
                }
                if relay.locks.is_restoring(&relay.server) && may_set_state(&text) {
                    tracing::info!(server = %relay.server, "refused a power action on the websocket: the server is being restored");
                    let authorised = grants
                        .borrow()
                        .as_ref()
                        .is_some_and(|g| g.expires_at > unix_now());
                    if authorised
                        && replies
                            .send(daemon_error(wings_text::POWER_REFUSED_WHILE_RESTORING))
                            .await
                            .is_err()
                    {
                        return End::Client(None);
                    }
                    continue;
                }
                match tungstenite::Utf8Bytes::try_from(Bytes::from(text)) {
                    Ok(text) => WingsMessage::Text(text),
                    Err(_) => continue,
                }
            }
            Message::Binary(bytes) => WingsMessage::Binary(bytes),
            Message::Ping(bytes) => WingsMessage::Ping(bytes),
            Message::Pong(bytes) => WingsMessage::Pong(bytes),
            Message::Close(frame) => return End::Client(frame),
        };
        if wings.send(forwarded).await.is_err() {
            return End::Wings(Some(close(close_code::ERROR, WINGS_GONE)));
        }
    }
}

/// A frame of aerie's, as Wings frames events.
fn event_frame(name: &str, arg: Option<&str>) -> Message {
    let value = match arg {
        Some(arg) => json!({"event": name, "args": [arg]}),
        None => json!({"event": name}),
    };
    Message::Text(value.to_string().into())
}

/// Whether a socket whose token grants `session` (expiry, `backup.read`) sees `event`.
fn may_see(session: Option<(i64, bool)>, event: &Event) -> bool {
    session.is_some_and(|(_, backup_read)| backup_read || !needs_backup_read(event))
}

/// A close frame of aerie's.
fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// Everything that goes down to the client, through one writer: Wings' frames in order,
/// aerie's events while the token allows them, aerie's own answers.
async fn to_client(
    client: &mut SplitSink<WebSocket, Message>,
    wings: &mut SplitStream<WingsSocket>,
    relay: &Relay,
    grants: &mut watch::Receiver<Option<Grant>>,
    replies: &mut mpsc::Receiver<Message>,
) -> End {
    // Subscribed at the first valid token: nothing queues up for a stranger.
    let mut subscription: Option<Subscription> = None;
    // The token's grant until it expires; `None` before the first and after expiry.
    let mut session: Option<(i64, bool)> = None;
    // When the socket is closed unless a valid token comes first; `None` while it has one.
    let mut auth_deadline = Some(Instant::now() + relay.auth_timeout);
    loop {
        let expire_at = session.map(|(expires_at, _)| instant_at(expires_at));
        let frame = tokio::select! {
            // In this order: a token is taken before any frame after it (Wings' `auth
            // success` included) goes down, and Wings' frames never starve aerie's.
            biased;
            changed = grants.changed() => {
                if changed.is_err() {
                    continue;
                }
                if let Some(grant) = grants.borrow_and_update().as_ref() {
                    session = Some((grant.expires_at, grant.backup_read));
                    auth_deadline = None;
                    subscription.get_or_insert_with(|| relay.bus.subscribe(&relay.server));
                }
                continue;
            }
            () = relay.closing.cancelled() => {
                // What is queued now is everything the ended jobs published.
                while let Some(Some(event)) = subscription.as_ref().and_then(|s| s.next().now_or_never()) {
                    if may_see(session, &event) {
                        let frame = event_frame(&event.name, event.arg.as_deref());
                        if !matches!(tokio::time::timeout(CLIENT_WRITE_TIMEOUT, client.send(frame)).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
                return End::Aerie(close(close_code::AWAY, SHUTDOWN_REASON));
            }
            _ = tokio::time::sleep_until(expire_at.unwrap_or_else(Instant::now)), if expire_at.is_some() => {
                // Wings tells the client; aerie stops adding its events until a fresh token,
                // and what happens meanwhile is not kept for later either.
                session = None;
                subscription = None;
                auth_deadline = Some(Instant::now() + relay.auth_timeout);
                continue;
            }
            _ = tokio::time::sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                tracing::debug!(server = %relay.server, "closing a websocket that sent no valid token in time");
                return End::Aerie(close(close_code::POLICY, AUTH_TIMEOUT_REASON));
            }
            Some(reply) = replies.recv() => reply,
            event = async { subscription.as_ref().expect("subscribed at auth").next().await },
                if session.is_some() && subscription.is_some() => {
                // Cut off by the bus: too far behind to be told every outcome.
                let Some(event) = event else {
                    return End::Aerie(close(close_code::AGAIN, "the client read too slowly"));
                };
                if !may_see(session, &event) {
                    continue;
                }
                event_frame(&event.name, event.arg.as_deref())
            }
            message = wings.next() => match message {
                Some(Ok(WingsMessage::Text(text))) => match axum::extract::ws::Utf8Bytes::try_from(Bytes::from(text)) {
                    Ok(text) => Message::Text(text),
                    Err(_) => continue,
                },
                Some(Ok(WingsMessage::Binary(bytes))) => Message::Binary(bytes),
                Some(Ok(WingsMessage::Ping(bytes))) => Message::Ping(bytes),
                Some(Ok(WingsMessage::Pong(bytes))) => Message::Pong(bytes),
                Some(Ok(WingsMessage::Close(frame))) => {
                    return End::Wings(frame.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    }))
                }
                Some(Ok(WingsMessage::Frame(_))) => continue,
                Some(Err(err)) => {
                    tracing::warn!(server = %relay.server, "Wings' websocket failed: {err}");
                    return End::Wings(Some(close(close_code::ERROR, WINGS_GONE)));
                }
                None => return End::Wings(Some(close(close_code::ERROR, WINGS_GONE))),
            },
        };
        match tokio::time::timeout(CLIENT_WRITE_TIMEOUT, client.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return End::Client(None),
            Err(_) => {
                tracing::info!(server = %relay.server, "closing a websocket whose client stopped reading");
                return End::Aerie(close(close_code::AGAIN, "the client read too slowly"));
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_state_is_seen_under_every_spelling_wings_reads() {
        assert!(may_set_state(r#"{"event":"set state","args":["stop"]}"#));
        assert!(may_set_state(r#"{"EVENT":"set state","args":["stop"]}"#));
        assert!(may_set_state(r#"{"\u0065vent":"set\u0020state"}"#));
        assert!(may_set_state(
            r#"{"event":"send logs","Event":"set state"}"#
        ));
        // Unreadable here (a lone surrogate), readable to Go: refused too.
        assert!(may_set_state(r#"{"event":"set state","x":"\ud800"}"#));
        assert!(may_set_state("not json"));
        assert!(!may_set_state(
            r#"{"event":"send command","args":["set state"]}"#
        ));
        assert!(!may_set_state(r#"{"event":"auth","args":["x.y.z"]}"#));
    }

    #[test]
    fn the_socket_url_is_wings_with_ws_and_the_server_escaped() {
        let url = |base: &str, server: &str| {
            socket_url(&Wings::new(base, "t"), server)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("http://127.0.0.1:8081/", "abc"),
            "ws://127.0.0.1:8081/api/servers/abc/ws"
        );
        assert_eq!(
            url("http://127.0.0.1:8081", "a/../b?c"),
            "ws://127.0.0.1:8081/api/servers/a%2F..%2Fb%3Fc/ws"
        );
    }
}

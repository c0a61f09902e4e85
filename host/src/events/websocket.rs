//! `GET /api/servers/{server}/ws`: Wings' websocket protocol, for backup events. The client
//! authenticates with `{"event":"auth","args":["<JWT>"]}` (HS256 with the node token, for
//! this server, with `websocket.connect`), is warned before the token expires and may send a
//! fresh one on the same socket. A socket without a valid token (none sent yet, or the last
//! one expired) for `auth_timeout` is closed. A socket that stops reading only fills its own
//! queue. At shutdown, once the jobs have ended, each socket sends what is queued (their
//! last outcomes) and closes with 1001.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bus::{Event, EventBus, Subscription};
use crate::jwt::{self, unix_now, WebsocketClaims};

/// Wings warns this long before a socket's token expires.
const EXPIRY_WARNING: Duration = Duration::from_secs(60);

/// The reason of the close frame (code 1008, policy violation) sent to a socket that had no
/// valid token for `auth_timeout`.
pub const AUTH_TIMEOUT_REASON: &str = "authentication timed out";

/// The reason of the close frame (code 1001, going away) sent when the daemon stops.
pub const SHUTDOWN_REASON: &str = "the daemon is shutting down";

/// What a session needs to know.
pub struct SessionContext {
    /// The server the socket watches.
    pub server: String,
    /// The node token (the JWT key).
    pub token: String,
    /// When the daemon started (Unix seconds): tokens issued earlier are refused.
    pub started_at: i64,
    /// Where events come from.
    pub bus: Arc<EventBus>,
    /// How long the socket may stay without a valid token before it is closed.
    pub auth_timeout: Duration,
    /// Cancelled when the daemon stops, after its jobs have ended: the socket sends what is
    /// queued and closes.
    pub closing: CancellationToken,
}

/// A frame from the client.
#[derive(Deserialize)]
struct Inbound {
    event: String,
    #[serde(default)]
    args: Vec<String>,
}

/// What an authenticated socket may see.
struct Session {
    /// When its token expires (Unix seconds).
    expires_at: i64,
    /// Whether it may see backup events (`backup.read` or `*`).
    backup_read: bool,
    /// Whether `token expiring` was sent for this token.
    warned: bool,
}

fn frame(name: &str, arg: Option<&str>) -> Message {
    let value = match arg {
        Some(arg) => json!({"event": name, "args": [arg]}),
        None => json!({"event": name}),
    };
    Message::Text(value.to_string().into())
}

/// What a valid websocket token grants.
pub struct Grant {
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
    /// Whether it may see backup events (`backup.read` or `*`).
    pub backup_read: bool,
}

/// Checks a websocket JWT for `server`, signed with `node_token` and issued at or after
/// `started_at`; the error is the reason sent back. Shared with the socket relayed to Wings.
pub fn authorize(
    token: &str,
    node_token: &str,
    server: &str,
    started_at: i64,
) -> Result<Grant, String> {
    let claims: WebsocketClaims =
        jwt::verify(token, node_token.as_bytes(), unix_now()).map_err(|e| format!("jwt: {e}"))?;
    if claims.server_uuid != server {
        return Err("jwt: the token is for another server".into());
    }
    let has = |permission: &str| {
        claims
            .permissions
            .iter()
            .any(|p| p == permission || p == "*")
    };
    if !has("websocket.connect") {
        return Err("jwt: the token lacks the websocket.connect permission".into());
    }
    if claims.iat < started_at {
        return Err("jwt: the token was issued before the daemon started".into());
    }
    Ok(Grant {
        expires_at: claims.exp,
        backup_read: has("backup.read"),
    })
}

/// Checks a websocket JWT for `context`; the error is the reason sent back.
fn authenticate(token: &str, context: &SessionContext) -> Result<Session, String> {
    let grant = authorize(token, &context.token, &context.server, context.started_at)?;
    Ok(Session {
        expires_at: grant.expires_at,
        backup_read: grant.backup_read,
        warned: false,
    })
}

/// Whether a socket with `session` may be sent `event`.
fn may_see(session: &Option<Session>, event: &Event) -> bool {
    session
        .as_ref()
        .is_some_and(|s| s.backup_read || !needs_backup_read(event))
}

/// Backup events need `backup.read`; restore events, like Wings', do not.
pub fn needs_backup_read(event: &Event) -> bool {
    event.name.starts_with("backup ") && !event.name.starts_with("backup restore")
}

/// The instant of Unix time `unix` (now, if it is past).
pub fn instant_at(unix: i64) -> Instant {
    let from_now = unix.saturating_sub(unix_now()).max(0) as u64;
    Instant::now() + Duration::from_secs(from_now)
}

/// Runs one socket until the client goes away.
pub async fn run(socket: WebSocket, context: SessionContext) {
    let (mut outgoing, mut incoming) = socket.split();
    // Subscribed at a successful auth, dropped at expiry: nothing queues up for a stranger,
    // nor for a socket whose token has expired.
    let mut subscription: Option<Subscription> = None;
    let mut session: Option<Session> = None;
    // When the socket is closed unless a valid token comes first; `None` while it has one.
    let mut auth_deadline = Some(Instant::now() + context.auth_timeout);
    loop {
        let (warn_at, expire_at) = match &session {
            Some(s) => (
                (!s.warned).then(|| instant_at(s.expires_at) - EXPIRY_WARNING),
                Some(instant_at(s.expires_at)),
            ),
            None => (None, None),
        };
        let reply = tokio::select! {
            inbound = incoming.next() => {
                let Some(Ok(message)) = inbound else { break };
                let Message::Text(text) = message else { continue };
                let Ok(inbound) = serde_json::from_str::<Inbound>(&text) else { continue };
                if inbound.event != "auth" {
                    continue;
                }
                let token = inbound.args.first().map(String::as_str).unwrap_or("");
                match authenticate(token, &context) {
                    Ok(new_session) => {
                        session = Some(new_session);
                        auth_deadline = None;
                        subscription.get_or_insert_with(|| context.bus.subscribe(&context.server));
                        frame("auth success", None)
                    }
                    Err(reason) => frame("jwt error", Some(&reason)),
                }
            }
            event = async { subscription.as_ref().expect("subscribed at auth").next().await },
                if session.is_some() => {
                // Cut off by the bus: too far behind to be told every outcome.
                let Some(event) = event else { break };
                if !may_see(&session, &event) {
                    continue;
                }
                frame(&event.name, event.arg.as_deref())
            }
            () = context.closing.cancelled() => {
                // What is queued now is everything the ended jobs published.
                while let Some(Some(event)) = subscription.as_ref().and_then(|s| s.next().now_or_never()) {
                    if may_see(&session, &event)
                        && outgoing.send(frame(&event.name, event.arg.as_deref())).await.is_err()
                    {
                        return;
                    }
                }
                let _ = outgoing
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: SHUTDOWN_REASON.into(),
                    })))
                    .await;
                break;
            }
            _ = tokio::time::sleep_until(warn_at.unwrap_or_else(Instant::now)), if warn_at.is_some() => {
                if let Some(s) = &mut session {
                    s.warned = true;
                }
                frame("token expiring", None)
            }
            _ = tokio::time::sleep_until(expire_at.unwrap_or_else(Instant::now)), if expire_at.is_some() => {
                // Nothing that happens until a fresh token is kept for later, as in Wings.
                session = None;
                subscription = None;
                auth_deadline = Some(Instant::now() + context.auth_timeout);
                frame("token expired", None)
            }
            _ = tokio::time::sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                tracing::debug!(server = %context.server, "closing a websocket that sent no valid token in time");
                let _ = outgoing
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::POLICY,
                        reason: AUTH_TIMEOUT_REASON.into(),
                    })))
                    .await;
                break;
            }
        };
        if outgoing.send(reply).await.is_err() {
            break;
        }
    }
}

//! The Wings stand-in's console websocket, `GET /api/servers/{server}/ws`: it records the
//! `Origin` and every frame each connection received, answers `auth` with `auth success`
//! (checking nothing: aerie's own check is what the tests watch), echoes `send command` as
//! `console output`, and on the test's word sends numbered console lines or closes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as Shared};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The close code the stand-in sends when told to close (1000, normal closure).
pub const CLOSE_CODE: u16 = 1000;

/// The reason the stand-in gives when told to close.
pub const CLOSE_REASON: &str = "wings stand-in closing";

/// What these routes share and record.
pub struct State {
    /// The bearer token Wings expects.
    pub token: String,
    /// Every connection opened, oldest first.
    connections: Mutex<Vec<Connection>>,
}

/// One connection, as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The server in the path.
    pub server: String,
    /// The `Origin` header of the upgrade, if any.
    pub origin: Option<String>,
    /// Every text frame received, in order.
    pub received: Vec<String>,
    /// Whether the connection has ended (a close frame or the stream's end).
    pub ended: bool,
    /// Whether the other side sent a close frame.
    pub close_received: bool,
    /// Where the test's orders for this connection go.
    orders: mpsc::UnboundedSender<Order>,
}

/// What a test may tell a connection to do.
enum Order {
    /// Send this many numbered `console output` frames.
    Console(usize),
    /// Close with [`CLOSE_CODE`] and [`CLOSE_REASON`].
    Close,
}

impl State {
    /// Nothing recorded yet.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_string(),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Every connection so far, oldest first.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }

    /// Waits (up to the hang guard) until connection `index` satisfies `ready`, and returns it.
    pub fn wait_for(&self, index: usize, ready: impl Fn(&Connection) -> bool) -> Connection {
        let start = Instant::now();
        loop {
            if let Some(connection) = self.connections().get(index) {
                if ready(connection) {
                    return connection.clone();
                }
            }
            assert!(
                start.elapsed() < crate::HANG_GUARD,
                "the Wings stand-in's connection {index} never got there: {:?}",
                self.connections().get(index)
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Tells connection `index` to send `count` numbered console lines, `line 0`, `line 1`...
    /// (numbered per connection).
    pub fn console(&self, index: usize, count: usize) {
        let _ = self.connections.lock().unwrap()[index]
            .orders
            .send(Order::Console(count));
    }

    /// Tells connection `index` to close.
    pub fn close(&self, index: usize) {
        let _ = self.connections.lock().unwrap()[index]
            .orders
            .send(Order::Close);
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Connection)) {
        change(&mut self.connections.lock().unwrap()[index]);
    }
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/servers/{server}/ws", get(open))
        .with_state(state)
}

async fn open(
    Shared(state): Shared<Arc<State>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or_default().to_string());
    upgrade.on_upgrade(move |socket| serve(state, server, origin, socket))
}

fn frame(event: &str, arg: &str) -> Message {
    Message::Text(json!({"event": event, "args": [arg]}).to_string().into())
}

async fn serve(state: Arc<State>, server: String, origin: Option<String>, socket: WebSocket) {
    let (orders, mut incoming_orders) = mpsc::unbounded_channel();
    let index = {
        let mut connections = state.connections.lock().unwrap();
        connections.push(Connection {
            server,
            origin,
            received: Vec::new(),
            ended: false,
            close_received: false,
            orders,
        });
        connections.len() - 1
    };
    let (mut out, mut incoming) = socket.split();
    let mut next_line = 0;
    loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    state.update(index, |c| c.received.push(text.to_string()));
                    let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                    let arg = value["args"][0].as_str().unwrap_or_default();
                    let answer = match value["event"].as_str() {
                        Some("auth") => Message::Text(json!({"event": "auth success"}).to_string().into()),
                        Some("send command") => frame("console output", arg),
                        _ => continue,
                    };
                    if out.send(answer).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    state.update(index, |c| c.close_received = true);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(order) = incoming_orders.recv() => match order {
                Order::Console(count) => {
                    for _ in 0..count {
                        if out.send(frame("console output", &format!("line {next_line}"))).await.is_err() {
                            break;
                        }
                        next_line += 1;
                    }
                }
                Order::Close => {
                    let close = CloseFrame { code: CLOSE_CODE, reason: CLOSE_REASON.into() };
                    let _ = out.send(Message::Close(Some(close))).await;
                    // Read the answer to the close, then the end.
                    while let Some(Ok(message)) = incoming.next().await {
                        if matches!(message, Message::Close(_)) {
                            state.update(index, |c| c.close_received = true);
                        }
                    }
                    break;
                }
            },
        }
    }
    state.update(index, |c| c.ended = true);
}

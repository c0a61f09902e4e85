//! The Wings stand-in's `power` routes: `GET /api/servers/{server}` (Wings' server details,
//! with its `state`) and `POST /api/servers/{server}/power`, over a power-state machine the
//! test sets up per server (running, then stopping, then offline after a delay, or never
//! offline). Every power action received is recorded, in order with each server's going
//! offline, so a test can tell what happened before what. A server the test never set up
//! is `offline`, and stopping it is immediate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What a test runs at the moment a server goes offline; its answer is recorded.
type Probe = Box<dyn Fn() -> String + Send + Sync>;

/// How a running server answers a `stop`.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// It is `stopping` for this long, then `offline`.
    After(Duration),
    /// It stays `stopping` for ever.
    Never,
}

/// What the stand-in received or did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A `POST .../power` with a valid action and the right token.
    Action {
        /// The server id of the path.
        server: String,
        /// `start`, `stop`, `restart` or `kill`.
        action: String,
        /// The `wait_seconds` sent, if any.
        wait_seconds: Option<i64>,
    },
    /// The server went from `stopping` to `offline`.
    WentOffline {
        /// The server id.
        server: String,
        /// What the test's probe said at that moment, if it set one.
        probe: Option<String>,
    },
}

/// One server's power.
struct Server {
    /// Wings' state: `offline`, `starting`, `running` or `stopping`.
    state: &'static str,
    /// How it answers a stop when running.
    stop: Stop,
    /// Run as it goes offline.
    probe: Option<Arc<Probe>>,
}

impl Server {
    /// A server as Wings has it when the test said nothing: offline, stopping at once.
    fn offline() -> Self {
        Self {
            state: "offline",
            stop: Stop::After(Duration::ZERO),
            probe: None,
        }
    }
}

/// What these routes share and record.
pub struct State {
    /// The bearer token Wings expects.
    pub token: String,
    /// Servers the test set up, by id.
    servers: Mutex<HashMap<String, Server>>,
    /// Everything received or done, in order.
    records: Mutex<Vec<Record>>,
}

impl State {
    /// Nothing recorded yet; every server offline.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_string(),
            servers: Mutex::default(),
            records: Mutex::default(),
        }
    }

    /// Sets `server` running; a `stop` then takes it offline as `stop` says.
    pub fn set_running(&self, server: &str, stop: Stop) {
        let mut servers = self.servers.lock().unwrap();
        let entry = servers
            .entry(server.to_string())
            .or_insert_with(Server::offline);
        entry.state = "running";
        entry.stop = stop;
    }

    /// Runs `probe` at the moment `server` goes offline, and records what it says.
    pub fn on_offline(&self, server: &str, probe: impl Fn() -> String + Send + Sync + 'static) {
        let mut servers = self.servers.lock().unwrap();
        let entry = servers
            .entry(server.to_string())
            .or_insert_with(Server::offline);
        entry.probe = Some(Arc::new(Box::new(probe)));
    }

    /// Wings' state of `server` now.
    pub fn state(&self, server: &str) -> &'static str {
        let servers = self.servers.lock().unwrap();
        servers.get(server).map_or("offline", |s| s.state)
    }

    /// Everything received or done so far, in order.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// The power actions received for `server`, in order.
    pub fn actions(&self, server: &str) -> Vec<String> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Record::Action {
                    server: s, action, ..
                } if s == server => Some(action),
                _ => None,
            })
            .collect()
    }

    /// Takes `server` offline now if it is stopping, running the probe first; with
    /// `restart`, it is running again right after.
    fn go_offline(&self, server: &str, restart: bool) {
        let mut servers = self.servers.lock().unwrap();
        let Some(entry) = servers.get_mut(server) else {
            return;
        };
        if entry.state != "stopping" {
            return;
        }
        // Under the lock: nobody can see `offline` before the probe has looked.
        let probe = entry.probe.as_ref().map(|probe| probe());
        entry.state = if restart { "running" } else { "offline" };
        self.records.lock().unwrap().push(Record::WentOffline {
            server: server.to_string(),
            probe,
        });
    }
}

/// Wings' answer to a missing or wrong bearer (router/middleware `RequireAuthorization`),
/// or `None` for the right one.
fn refusal(state: &State, headers: &HeaderMap) -> Option<Response> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "The required authorization heads were not present in the request.",
        ));
    };
    (value.strip_prefix("Bearer ") != Some(state.token.as_str())).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "You are not authorized to access this endpoint.",
        )
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /api/servers/{server}`: Wings' `server.APIResponse`.
async fn details(
    Extract(state): Extract<Arc<State>>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let power = state.state(&server);
    Json(json!({
        "state": power,
        "is_suspended": false,
        "utilization": {
            "memory_bytes": 0,
            "memory_limit_bytes": 0,
            "cpu_absolute": 0.0,
            "network": {"rx_bytes": 0, "tx_bytes": 0},
            "uptime": 0,
            "state": power,
            "disk_bytes": 0
        },
        "configuration": {"uuid": server, "suspended": false}
    }))
    .into_response()
}

/// `POST /api/servers/{server}/power`: 202 and the action in the background, as Wings.
async fn power(
    Extract(state): Extract<Arc<State>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let action = body["action"].as_str().unwrap_or_default().to_string();
    if !["start", "stop", "restart", "kill"].contains(&action.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The power action provided was not valid, should be one of \"stop\", \"start\", \"restart\", \"kill\"",
        );
    }
    state.records.lock().unwrap().push(Record::Action {
        server: server.clone(),
        action: action.clone(),
        wait_seconds: body["wait_seconds"].as_i64(),
    });
    match action.as_str() {
        "stop" => stop(&state, &server, false),
        "kill" => {
            if begin_stopping(&state, &server).is_some() {
                state.go_offline(&server, false);
            }
        }
        // A running server restarts through a stop; an offline one just starts.
        _ => {
            if state.state(&server) == "offline" {
                start(&state, &server);
            } else if action == "restart" {
                stop(&state, &server, true);
            }
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// An offline `server` (known or not) is running, and stops at once when asked.
fn start(state: &State, server: &str) {
    let mut servers = state.servers.lock().unwrap();
    let entry = servers
        .entry(server.to_string())
        .or_insert_with(Server::offline);
    entry.state = "running";
}

/// Marks a running `server` stopping; returns how it stops, if it was running.
fn begin_stopping(state: &State, server: &str) -> Option<Stop> {
    let mut servers = state.servers.lock().unwrap();
    let entry = servers.get_mut(server)?;
    if entry.state != "running" && entry.state != "starting" {
        return None;
    }
    entry.state = "stopping";
    Some(entry.stop)
}

/// A stop: running → stopping → offline after the server's delay (or never); with
/// `restart`, running again once offline.
fn stop(state: &Arc<State>, server: &str, restart: bool) {
    match begin_stopping(state, server) {
        Some(Stop::After(delay)) if delay.is_zero() => state.go_offline(server, restart),
        Some(Stop::After(delay)) => {
            let (state, server) = (state.clone(), server.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                state.go_offline(&server, restart);
            });
        }
        Some(Stop::Never) | None => {}
    }
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/servers/{server}", get(details))
        .route("/api/servers/{server}/power", post(power))
        .with_state(state)
}

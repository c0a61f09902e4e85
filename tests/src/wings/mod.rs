//! A stand-in for Wings, for the tests of aerie in front of Wings (`upstream:`): a real HTTP
//! and websocket server on loopback, as Wings answers, with each concern in its own module:
//! `files` (the system route, big uploads and downloads, an error route), `power` (a
//! server's power state machine) and `socket` (the server's console websocket). It runs on
//! its own tokio runtime so that blocking tests can use it; it stops when dropped.

pub mod files;
pub mod power;
pub mod socket;

use std::sync::Arc;

use axum::Router;

/// The Wings stand-in; stops when dropped.
pub struct WingsStandIn {
    /// The loopback port it listens on.
    port: u16,
    /// What the `files` routes recorded.
    pub files: Arc<files::State>,
    /// The servers' power states.
    pub power: Arc<power::State>,
    /// The console websockets.
    pub socket: Arc<socket::State>,
    /// Keeps the server running; dropping it stops the runtime.
    _runtime: tokio::runtime::Runtime,
}

impl WingsStandIn {
    /// Starts on a free loopback port, expecting `Authorization: Bearer <token>` (Wings
    /// checks the node token alone, without its id).
    pub fn start(token: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the Wings stand-in");
        let files = Arc::new(files::State::new(token));
        let power = Arc::new(power::State::new(token));
        let socket = Arc::new(socket::State::new(token));
        let app = Router::new()
            .merge(files::router(files.clone()))
            .merge(power::router(power.clone()))
            .merge(socket::router(socket.clone()))
            .layer(axum::middleware::from_fn_with_state(
                files.clone(),
                files::record,
            ));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the Wings stand-in");
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the Wings stand-in");
        });
        Self {
            port,
            files,
            power,
            socket,
            _runtime: runtime,
        }
    }

    /// Wings' base URL, for aerie's `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

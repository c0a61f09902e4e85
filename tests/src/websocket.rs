//! A websocket client for the tests, and JWTs minted the way the Panel mints them.

use serde_json::{json, Value};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};

/// A frame: its event name and first argument.
pub type Frame = (String, Option<String>);

/// A connected websocket.
pub struct Socket {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// Opens `GET /api/servers/{server}/ws` on the daemon at `base` (`http://...`), optionally
/// with an `Origin` header.
pub fn connect(
    base: &str,
    server: &str,
    origin: Option<&str>,
) -> Result<Socket, tungstenite::Error> {
    let url = format!("{}/api/servers/{server}/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("origin header"));
    }
    let (ws, _) = tungstenite::connect(request)?;
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        // A hang guard, not a timing assertion: a missing frame fails the test instead of
        // hanging it.
        stream
            .set_read_timeout(Some(crate::HANG_GUARD))
            .expect("read timeout");
    }
    Ok(Socket { ws })
}

/// Opens the server's websocket as [`connect`] does, from a socket whose kernel receive
/// buffer is set to `bytes` before it connects (so the window it offers stays that small):
/// for tests of a client that stops reading.
pub fn connect_with_receive_buffer(
    base: &str,
    server: &str,
    bytes: usize,
) -> Result<Socket, tungstenite::Error> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let address: SocketAddr = base
        .strip_prefix("http://")
        .expect("an http:// base")
        .parse()
        .expect("a socket address");
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket(family, SocketType::STREAM, None).map_err(io::Error::from)?;
    sockopt::set_socket_recv_buffer_size(&socket, bytes).map_err(io::Error::from)?;
    rustix::net::connect(&socket, &address).map_err(io::Error::from)?;
    let stream = TcpStream::from(socket);
    // A hang guard, as in `connect`.
    stream.set_read_timeout(Some(crate::HANG_GUARD))?;
    let request = format!("ws://{address}/api/servers/{server}/ws").into_client_request()?;
    let (ws, _) =
        tungstenite::client(request, MaybeTlsStream::Plain(stream)).map_err(|err| match err {
            HandshakeError::Failure(err) => err,
            HandshakeError::Interrupted(_) => unreachable!("the stream is blocking"),
        })?;
    Ok(Socket { ws })
}

/// Opens `GET /api/servers/{server}/ws` over `wss://` on the daemon at `base`
/// (`https://...`), trusting what `tls` trusts.
pub fn connect_tls(
    base: &str,
    server: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Socket, tungstenite::Error> {
    let address = base.strip_prefix("https://").expect("an https:// base");
    let request = format!("wss://{address}/api/servers/{server}/ws").into_client_request()?;
    let stream = TcpStream::connect(address)?;
    // A hang guard, as in `connect`.
    stream.set_read_timeout(Some(crate::HANG_GUARD))?;
    let (ws, _) =
        tungstenite::client_tls_with_config(request, stream, None, Some(Connector::Rustls(tls)))
            .map_err(|err| match err {
                HandshakeError::Failure(err) => err,
                HandshakeError::Interrupted(_) => unreachable!("the stream is blocking"),
            })?;
    Ok(Socket { ws })
}

impl Socket {
    /// The tungstenite socket, for tests that read close frames or write raw bytes.
    pub fn inner(&mut self) -> &mut WebSocket<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }

    /// Sends `{"event": event, "args": [arg]}`.
    pub fn send(&mut self, event: &str, arg: &str) {
        let frame = json!({"event": event, "args": [arg]}).to_string();
        self.ws.send(Message::text(frame)).expect("send a frame");
    }

    /// Sends an `auth` frame with `token` and returns the answer.
    pub fn auth(&mut self, token: &str) -> Frame {
        self.send("auth", token);
        self.recv()
    }

    /// The next event frame.
    pub fn recv(&mut self) -> Frame {
        loop {
            match self.ws.read().expect("read a frame") {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("a JSON frame");
                    let name = value["event"].as_str().expect("an event name").to_string();
                    let arg = value["args"][0].as_str().map(str::to_string);
                    return (name, arg);
                }
                Message::Close(_) => panic!("the socket closed"),
                _ => continue,
            }
        }
    }

    /// Frames until one named `name` (inclusive), in order.
    pub fn recv_until(&mut self, name: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv();
            let done = frame.0 == name;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    aerie::jwt::unix_now()
}

/// A websocket JWT as the Panel issues one: HS256 with the node token, for `server`, with
/// `permissions`, expiring `expires_in` seconds from now.
pub fn token(node_token: &str, server: &str, permissions: &[&str], expires_in: i64) -> String {
    let claims = json!({
        "iss": "https://panel.example.com",
        "aud": ["http://node.example.com:8080"],
        "iat": now(),
        "nbf": now() - 300,
        "exp": now() + expires_in,
        "jti": "0123456789abcdef",
        "server_uuid": server,
        "user_uuid": "5b0d1e3c-aaaa-bbbb-cccc-123456789abc",
        "permissions": permissions,
    });
    aerie::jwt::sign(&claims, node_token.as_bytes())
}

/// What the last `daemon message` among `frames` says (a restore's outcome), or "".
pub fn completion_message(frames: &[Frame]) -> String {
    frames
        .iter()
        .rev()
        .find(|f| f.0 == "daemon message")
        .and_then(|f| f.1.clone())
        .unwrap_or_default()
}

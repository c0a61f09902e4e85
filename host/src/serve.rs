//! The accept loop in front of the router: a bounded number of connections, HTTP/1 with a
//! read timeout, websocket upgrades, and a graceful stop. `axum::serve` has none of the
//! bounds, so a few hundred clients that never finish a request could hold every descriptor.
//! With `api.ssl`, each connection's TLS handshake runs here too, under the same bounds.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a stop waits for requests in flight before it cuts them (a download, mostly):
/// the daemon stops serving only after the running jobs' `system.shutdown_timeout`, and
/// systemd sends SIGKILL 90 s after SIGTERM by default.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long the loop pauses when `accept` fails for want of descriptors or memory (what
/// `axum::serve` does too), instead of spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection: the content type of a handshake record
/// (RFC 8446 section 5.1). Anything else on the TLS port is not TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What Go's HTTP server (so Wings) answers to plain HTTP on its TLS port, word for word
/// (`net/http/server.go`, `conn.serve`).
const PLAIN_HTTP_REFUSAL: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How much of a refused plain-HTTP request is read and dropped after the answer, so that
/// closing with the request unread does not reset the connection before the client reads
/// the answer: a request's headers are far smaller.
const PLAIN_HTTP_DRAIN_BYTES: u64 = 64 * 1024;

/// The kernel send buffer of a connection upgraded to a websocket (Linux doubles it for its
/// bookkeeping). Events are small frames; left to autotuning, a client that never reads
/// would pin up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) of kernel memory, and
/// events would pile up there rather than in the bus's bounded, coalescing queue.
pub const WEBSOCKET_SEND_BUFFER: usize = 32 * 1024;

/// The bounds every connection is served under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers; hyper runs the same clock while a keep-alive
    /// connection waits for its next request, so it is the idle timeout too.
    pub read_timeout: Duration,
    /// Connections open at once, websockets included.
    pub max_connections: usize,
}

/// One of the `max_connections` places, held by a connection and, after an upgrade, by its
/// websocket: the place is free again when both are gone. Every request carries it as an
/// extension.
#[derive(Clone)]
pub struct ConnectionSlot {
    /// Returned to the semaphore when the last clone is dropped.
    _place: Arc<OwnedSemaphorePermit>,
}

/// Who is at the other end of a request's connection, for what is passed on to Wings
/// (`X-Forwarded-For`, `X-Forwarded-Proto`) and for logs. Every request carries it as an
/// extension.
#[derive(Debug, Clone, Copy)]
pub struct ClientConnection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is HTTPS.
    pub tls: bool,
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, lets
/// requests in flight finish (for at most [`SHUTDOWN_GRACE`]) and returns.
///
/// At the cap the loop stops calling `accept`: new connections wait in the kernel's backlog
/// (and are served when a place frees) rather than being accepted and closed, so the
/// daemon's descriptors stay bounded and a client only sees a slower connect.
///
/// With `tls`, every connection must start with a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    // Whether the last wait for a place was logged: one line each time the cap is reached.
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = accept(&listener, &places, limits.max_connections, &mut full) => accepted,
        };
        // Finished connections are reaped here, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let Some((stream, peer, place)) = accepted else {
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits,
            tls.clone(),
            ConnectionSlot {
                _place: Arc::new(place),
            },
            stop.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "requests still running after {SHUTDOWN_GRACE:?}; closing them"
        );
    }
}

/// Waits for a free place, then for a connection. `None` when `accept` failed; the error is
/// logged (and the loop paused when the process is out of descriptors or memory).
async fn accept(
    listener: &TcpListener,
    places: &Arc<Semaphore>,
    max_connections: usize,
    full: &mut bool,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let place = match places.clone().try_acquire_owned() {
        Ok(place) => {
            *full = false;
            place
        }
        Err(_) => {
            if !*full {
                tracing::warn!(
                    "all {max_connections} connections (api.max_connections) are open; \
                     new ones wait in the listen backlog"
                );
                *full = true;
            }
            places
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed")
        }
    };
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, place)),
        Err(err) if is_connection_error(&err) => None,
        Err(err) => {
            tracing::error!("cannot accept a connection: {err}");
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            None
        }
    }
}

/// Errors about one connection that went away before it was accepted, not about the
/// listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Serves one accepted connection until it closes, is upgraded, or the daemon stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    slot: ConnectionSlot,
    stop: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
    }
    let socket = stream.as_raw_fd();
    let Some(acceptor) = tls else {
        let client = ClientConnection { peer, tls: false };
        serve_http(stream, socket, client, router, limits, slot, stop).await;
        return;
    };
    // The handshake holds this connection's place and gets the time a request's headers
    // get: a client that connects and sends nothing is closed as it is without TLS.
    let handshake = tokio::time::timeout(limits.read_timeout, handshake(&acceptor, stream, peer));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        () = stop.cancelled() => return,
    };
    match handshake {
        Ok(Some(stream)) => {
            let client = ClientConnection { peer, tls: true };
            serve_http(stream, socket, client, router, limits, slot, stop).await;
        }
        Ok(None) => {}
        Err(_) => tracing::debug!(
            %peer,
            "no TLS handshake within {:?} (api.read_timeout); closed",
            limits.read_timeout
        ),
    }
}

/// The TLS stream of `stream`, or `None` when the client spoke plain HTTP (it is answered
/// as Go answers it) or the handshake failed. Anyone can reach the port, so failures are
/// logged at debug level only.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return None,
        Ok(_) => {}
        Err(err) => {
            tracing::debug!(%peer, "connection ended before a TLS handshake: {err}");
            return None;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        tracing::debug!(%peer, "plain HTTP on the TLS port; answered 400");
        refuse_plain_http(stream).await;
        return None;
    }
    match acceptor.accept(stream).await {
        Ok(stream) => Some(stream),
        Err(err) => {
            tracing::debug!(%peer, "TLS handshake failed: {err}");
            None
        }
    }
}

/// Answers a plain-HTTP client on the TLS port and closes, after reading and dropping (a
/// bounded part of) its request so that the close does not reset the connection under the
/// answer.
async fn refuse_plain_http(mut stream: TcpStream) {
    if stream.write_all(PLAIN_HTTP_REFUSAL).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::io::copy(
        &mut (&mut stream).take(PLAIN_HTTP_DRAIN_BYTES),
        &mut tokio::io::sink(),
    )
    .await;
}

/// Serves HTTP/1 (and upgrades) on `io`, a plain or TLS stream over the TCP `socket`.
async fn serve_http<I>(
    io: I,
    socket: RawFd,
    client: ClientConnection,
    router: Router,
    limits: Limits,
    slot: ConnectionSlot,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: hyper::Request<Incoming>| {
        if is_websocket_upgrade(&request) {
            // SAFETY: `socket` is the descriptor of the connection this request arrived on,
            // which owns it and is open for as long as one of its requests is being served.
            bound_send_buffer(unsafe { BorrowedFd::borrow_raw(socket) }, client.peer);
        }
        request.extensions_mut().insert(slot.clone());
        request.extensions_mut().insert(client);
        request
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, if any, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(peer = %client.peer, "connection ended: {err}");
    }
}

/// Whether `request` asks to become a websocket.
fn is_websocket_upgrade(request: &hyper::Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Caps the kernel send buffer of a websocket's connection at [`WEBSOCKET_SEND_BUFFER`].
fn bound_send_buffer(socket: BorrowedFd<'_>, peer: SocketAddr) {
    if let Err(err) =
        rustix::net::sockopt::set_socket_send_buffer_size(socket, WEBSOCKET_SEND_BUFFER)
    {
        tracing::debug!(%peer, "cannot bound the websocket's send buffer: {err}");
    }
}

//! Connections that never finish: half-sent requests, websockets that never authenticate or
//! send oversized messages, and more idle connections than `api.max_connections`. Each must
//! be closed or held back by the daemon, without breaking service for everyone else.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aerie_e2e::websocket::{connect, token};
use aerie_e2e::{Daemon, Node};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

const SERVER: &str = "5f1d9c3a-7b2e-4c8d-9a6f-0e1b2c3d4e5f";
const NODE_TOKEN: &str = "test-node-token-0123456789";

/// How long a test waits for the daemon to close a connection or reach a state before it
/// calls it stuck: a hang guard, not a timing assertion (the configured timeouts are 1 s).
const GUARD: Duration = Duration::from_secs(30);

fn node(api_extra: &str) -> Node {
    let mut node = Node::new();
    node.api_extra = api_extra.into();
    node.server(SERVER);
    node
}

/// A raw TCP connection to the daemon, with [`GUARD`] as its read timeout.
fn raw(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(daemon.base.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(GUARD)).expect("read timeout");
    stream
}

/// Reads until the daemon closes the connection (EOF or reset) and returns what came;
/// panics if it is still open after [`GUARD`].
fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the daemon kept the connection open for {GUARD:?}")
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Polls `condition` until it holds; panics with `what` after [`GUARD`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < GUARD, "{what}: not after {GUARD:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon's open descriptors.
fn descriptors(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("the daemon's fd folder")
        .count()
}

/// The daemon's resident memory in KiB (`VmRSS`).
fn rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Connections that completed the TCP handshake but wait in the listening socket's queue,
/// not yet accepted: for a listening socket `/proc/net/tcp` shows that count as rx_queue.
fn waiting_in_backlog(daemon: &Daemon) -> usize {
    let port: u16 = daemon.base.rsplit(':').next().unwrap().parse().unwrap();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields[1].rsplit(':').next().unwrap();
        let listening = fields[3] == "0A";
        if listening && u16::from_str_radix(local_port, 16).unwrap() == port {
            let rx_queue = fields[4].split(':').nth(1).unwrap();
            return usize::from_str_radix(rx_queue, 16).unwrap();
        }
    }
    panic!("no listening socket on port {port}");
}

/// A complete `GET` of the server's backup list that closes the connection after the reply.
fn list_request() -> String {
    format!(
        "GET /api/servers/{SERVER}/backups HTTP/1.1\r\nHost: aerie\r\n\
         Authorization: Bearer {NODE_TOKEN}\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn half_sent_requests_and_idle_keep_alives_are_closed_while_others_are_served() {
    let node = node("  read_timeout: 1\n");
    let daemon = node.start();

    // Headers that never end.
    let mut half_headers = raw(&daemon);
    half_headers
        .write_all(b"GET /api/notifications HTTP/1.1\r\nHost: aerie\r\n")
        .unwrap();
    // Complete headers, then 10 of the 100 body bytes announced.
    let mut half_body = raw(&daemon);
    write!(
        half_body,
        "POST /api/servers/{SERVER}/backup HTTP/1.1\r\nHost: aerie\r\n\
         Authorization: Bearer {NODE_TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"adapter\""
    )
    .unwrap();
    // One request, answered, then nothing on a keep-alive connection.
    let mut idle = raw(&daemon);
    write!(
        idle,
        "GET /api/servers/{SERVER}/backups HTTP/1.1\r\nHost: aerie\r\n\
         Authorization: Bearer {NODE_TOKEN}\r\n\r\n"
    )
    .unwrap();

    // Meanwhile everyone else is served.
    let reply = daemon.send(daemon.request(
        reqwest::Method::GET,
        &format!("/api/servers/{SERVER}/backups"),
    ));
    assert_eq!(reply.status, 200, "{reply:?}");

    let answer = read_until_closed(&mut half_headers, "half-sent headers");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    let answer = read_until_closed(&mut half_body, "half-sent body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"The request body did not arrive within 1 seconds."}"#),
        "{answer}"
    );
    let answer = read_until_closed(&mut idle, "idle keep-alive connection");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[]"), "{answer}");

    // And still are.
    let mut fresh = raw(&daemon);
    fresh.write_all(list_request().as_bytes()).unwrap();
    let answer = read_until_closed(&mut fresh, "a complete request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_json_body_over_64_kib_is_refused_with_413() {
    let node = node("");
    let daemon = node.start();
    let ignore = "x".repeat(100 * 1024);
    let reply = daemon.post_backup(
        SERVER,
        &serde_json::json!({"adapter": "wings", "uuid": aerie_e2e::new_uuid(), "ignore": ignore}),
    );
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.error(), "The request body is larger than 64 KiB.");
}

#[test]
fn a_websocket_that_never_authenticates_is_closed_with_1008() {
    let node = node("  websocket_auth_timeout: 1\n");
    let daemon = node.start();
    // Authenticated first: the deadline must not close it.
    let mut authenticated = connect(&daemon.base, SERVER, None).unwrap();
    let good = token(NODE_TOKEN, SERVER, &["*"], 600);
    assert_eq!(authenticated.auth(&good).0, "auth success");

    let mut stranger = connect(&daemon.base, SERVER, None).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = stranger.inner().get_ref() {
        stream.set_read_timeout(Some(GUARD)).unwrap();
    }
    match stranger.inner().read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason.as_str(), "authentication timed out");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The daemon then drops the connection.
    match stranger.inner().read() {
        Err(tungstenite::Error::ConnectionClosed)
        | Err(tungstenite::Error::AlreadyClosed)
        | Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }

    // The authenticated socket, opened earlier, still gets events.
    let uuid = aerie_e2e::new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(authenticated.recv().0, "backup started");
}

/// A masked (client) websocket frame header for a text message of `len` bytes, with the
/// all-zero mask so that the payload goes as it is.
fn text_frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

#[test]
fn unauthenticated_websockets_sending_most_of_a_2_mb_message_are_closed_and_memory_stays_flat() {
    // A long auth deadline: here the size limit must do the closing.
    let node = node("  websocket_auth_timeout: 600\n");
    let daemon = node.start();
    let before = rss_kib(&daemon);
    const MESSAGE: u64 = 2 * 1024 * 1024;
    const SOCKETS: usize = 6;
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut socket = connect(&daemon.base, SERVER, None).unwrap();
        let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.inner().get_mut() else {
            panic!("a plain TCP socket")
        };
        stream.set_read_timeout(Some(GUARD)).unwrap();
        stream.set_write_timeout(Some(GUARD)).unwrap();
        // A frame announcing 2 MB, and all of it but the last 100 KB: the daemon would have
        // to hold the rest while it waits for the end.
        let mut bytes = text_frame_header(MESSAGE);
        bytes.resize(bytes.len() + (MESSAGE as usize - 100 * 1024), b'a');
        // The daemon may close mid-write: then the write fails, which is what is wanted.
        let _ = stream.write_all(&bytes);
        sockets.push(socket);
    }
    for (i, socket) in sockets.iter_mut().enumerate() {
        let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.inner().get_mut() else {
            panic!("a plain TCP socket")
        };
        read_until_closed(stream, &format!("socket {i}"));
    }
    let after = rss_kib(&daemon);
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 8,
        "the daemon grew by {grown_mib} MiB ({before} KiB → {after} KiB)"
    );
}

#[test]
fn past_max_connections_new_ones_wait_and_are_served_when_places_free() {
    const CAP: usize = 8;
    // A long read timeout: here the idle connections stay until the test closes them.
    let node = node(&format!("  max_connections: {CAP}\n  read_timeout: 600\n"));
    let daemon = node.start();
    let baseline = descriptors(&daemon);

    let idle: Vec<TcpStream> = (0..CAP).map(|_| raw(&daemon)).collect();
    wait_until("the idle connections accepted", || {
        descriptors(&daemon) == baseline + CAP
    });
    // Past the cap: three more idle ones and a complete request wait in the backlog.
    let mut waiting: Vec<TcpStream> = (0..3).map(|_| raw(&daemon)).collect();
    let mut request = raw(&daemon);
    request.write_all(list_request().as_bytes()).unwrap();
    wait_until("four connections waiting in the backlog", || {
        waiting_in_backlog(&daemon) == 4
    });
    assert_eq!(descriptors(&daemon), baseline + CAP);
    wait_until("the cap logged", || {
        daemon
            .log()
            .contains("all 8 connections (api.max_connections) are open")
    });

    // Places free: the waiting request is served.
    drop(idle);
    let answer = read_until_closed(&mut request, "the waiting request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    waiting.clear();
    wait_until("the daemon's descriptors back to their baseline", || {
        descriptors(&daemon) == baseline
    });
    let reply = daemon.send(daemon.request(
        reqwest::Method::GET,
        &format!("/api/servers/{SERVER}/backups"),
    ));
    assert_eq!(reply.status, 200, "{reply:?}");
}

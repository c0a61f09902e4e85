//! A small fault-injecting HTTP proxy in front of the test S3 server. It forwards each
//! request on a connection of its own and can (a) answer the next N UploadPart requests
//! with `503 Slow Down`, as S3 does when throttling, and (b) play dead: drop every
//! connection, including requests in flight, until it is brought back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// A running proxy; it lives until the test process ends.
pub struct Proxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
}

struct State {
    upstream: SocketAddr,
    down: AtomicBool,
    /// UploadPart requests still to refuse.
    refuse_parts: AtomicU32,
    /// UploadPart requests refused so far.
    refused: AtomicU32,
    /// UploadPart requests forwarded so far.
    parts_forwarded: AtomicU32,
    /// UploadPart requests being received or forwarded now, and the most there ever were.
    parts_now: AtomicU32,
    parts_max: AtomicU32,
}

/// Counts one UploadPart request as in progress while it lives.
struct InProgress<'a>(&'a State);

impl<'a> InProgress<'a> {
    fn new(state: &'a State) -> Self {
        let now = state.parts_now.fetch_add(1, Ordering::SeqCst) + 1;
        state.parts_max.fetch_max(now, Ordering::SeqCst);
        InProgress(state)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.parts_now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Starts a proxy to the server at `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the test endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream,
            down: AtomicBool::new(false),
            refuse_parts: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            parts_forwarded: AtomicU32::new(0),
            parts_now: AtomicU32::new(0),
            parts_max: AtomicU32::new(0),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(&state, client);
                });
            }
        });
        Proxy { url, state }
    }

    /// Answers the next `n` UploadPart requests with `503 Slow Down`.
    pub fn refuse_next_parts(&self, n: u32) {
        self.state.refuse_parts.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests refused so far.
    pub fn refused(&self) -> u32 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// UploadPart requests forwarded to the server so far.
    pub fn parts_forwarded(&self) -> u32 {
        self.state.parts_forwarded.load(Ordering::SeqCst)
    }

    /// The most UploadPart requests that were ever in progress at once.
    pub fn most_parts_at_once(&self) -> u32 {
        self.state.parts_max.load(Ordering::SeqCst)
    }

    /// Plays dead (`true`): every connection, and every request in flight, is dropped.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// Serves one request on `client`, then closes it.
fn serve(state: &State, client: TcpStream) -> std::io::Result<()> {
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let end = line == b"\r\n";
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
        if end {
            break;
        }
    }
    let request_line = head[0].clone();
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    assert!(
        header("transfer-encoding").is_none(),
        "the proxy handles Content-Length bodies only: {head:?}"
    );
    let is_part = request_line.starts_with("PUT ") && request_line.contains("partNumber=");
    let _in_progress = is_part.then(|| InProgress::new(state));
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let mut client = &client;
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }

    // Read the body in pieces, dropping the connection if the proxy goes down meanwhile.
    let mut body = Vec::with_capacity(length);
    let mut piece = vec![0; 64 * 1024];
    while body.len() < length {
        if state.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let want = piece.len().min(length - body.len());
        let n = reader.read(&mut piece[..want])?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&piece[..n]);
    }

    let mut client = client;
    if is_part
        && state
            .refuse_parts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        state.refused.fetch_add(1, Ordering::SeqCst);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message>\
                   <RequestId>proxy</RequestId></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return client.flush();
    }

    let mut upstream = TcpStream::connect(state.upstream)?;
    let mut forwarded = format!("{request_line}\r\n");
    for h in &head[1..] {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !h.is_empty() && name != "connection" && name != "expect" {
            forwarded.push_str(h);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes())?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    if is_part {
        state.parts_forwarded.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    // Tell the client too that this connection ends here, so it never reuses it.
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut out = String::new();
    for line in head.split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    client.write_all(&response[split + 4..])?;
    client.flush()
}

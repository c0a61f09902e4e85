//! A fault-injecting HTTP proxy in front of the test S3 server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::endpoint;

/// A fault-injecting HTTP proxy in front of the test server. Each request gets a connection
/// of its own (it answers `Connection: close`); bodies must carry a `Content-Length`. It can
/// answer UploadPart requests with `503 SlowDown`, cut them off half-way through their body
/// (the connection is closed with the rest of the part unread, which the kernel answers with
/// a reset), and play dead: drop every connection,
/// requests in flight included, until it is brought back, either at once or from the Nth
/// UploadPart on. It counts the UploadPart requests it sees, refuses and forwards, and the
/// most in progress at once. It lives until the test process ends.
pub struct Proxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
}

struct State {
    upstream: SocketAddr,
    down: AtomicBool,
    /// UploadPart requests still to answer with 503.
    refuse_parts: AtomicU32,
    /// UploadPart requests answered with 503 so far.
    refused: AtomicU32,
    /// UploadPart requests still to cut off half-way through their body.
    reset_parts: AtomicU32,
    /// UploadPart requests cut off so far.
    resets: AtomicU32,
    /// UploadPart requests to let through before playing dead (`u32::MAX`: never).
    parts_before_down: AtomicU32,
    /// UploadPart requests that reached the proxy.
    parts_seen: AtomicU32,
    /// UploadPart requests forwarded to the server.
    parts_forwarded: AtomicU32,
    /// UploadPart requests being received or forwarded now, and the most there ever were.
    parts_now: AtomicU32,
    parts_max: AtomicU32,
    /// UploadPart requests are held, once received, until this many were in progress at
    /// once (0: never held).
    hold_until_at_once: AtomicU32,
}

/// How long a held UploadPart waits for the others before it goes on anyway: far longer
/// than any test needs, so that reaching it means the parts never overlapped.
const HOLD_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Starts a proxy to the test server.
    pub fn start() -> Proxy {
        let upstream: SocketAddr = endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the test endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let state = Arc::new(State {
            upstream,
            down: AtomicBool::new(false),
            refuse_parts: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            reset_parts: AtomicU32::new(0),
            resets: AtomicU32::new(0),
            parts_before_down: AtomicU32::new(u32::MAX),
            parts_seen: AtomicU32::new(0),
            parts_forwarded: AtomicU32::new(0),
            parts_now: AtomicU32::new(0),
            parts_max: AtomicU32::new(0),
            hold_until_at_once: AtomicU32::new(0),
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

    /// Answers the next `n` UploadPart requests with `503 SlowDown`, as S3 does when
    /// throttling.
    pub fn refuse_next_parts(&self, n: u32) {
        self.state.refuse_parts.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests answered with 503 so far.
    pub fn refused(&self) -> u32 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Cuts off the next `n` UploadPart requests half-way through their body, as a server or
    /// a middlebox resetting the connection mid-part does (`u32::MAX`: every one from now on).
    pub fn reset_next_parts(&self, n: u32) {
        self.state.reset_parts.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests cut off so far.
    pub fn resets(&self) -> u32 {
        self.state.resets.load(Ordering::SeqCst)
    }

    /// Lets `n` UploadPart requests through, then plays dead from the next one on.
    pub fn go_down_after_parts(&self, n: u32) {
        self.state.parts_before_down.store(n, Ordering::SeqCst);
    }

    /// UploadPart requests that reached the proxy so far.
    pub fn parts_seen(&self) -> u32 {
        self.state.parts_seen.load(Ordering::SeqCst)
    }

    /// UploadPart requests forwarded to the server so far.
    pub fn parts_forwarded(&self) -> u32 {
        self.state.parts_forwarded.load(Ordering::SeqCst)
    }

    /// The most UploadPart requests that were ever in progress at once.
    pub fn most_parts_at_once(&self) -> u32 {
        self.state.parts_max.load(Ordering::SeqCst)
    }

    /// Holds each UploadPart, once its body is in, until `n` were in progress at once (or
    /// for at most a minute): a client that uploads one part at a time then never gets
    /// [`Proxy::most_parts_at_once`] to `n`, whatever the machine's speed.
    pub fn hold_parts_until_at_once(&self, n: u32) {
        self.state.hold_until_at_once.store(n, Ordering::SeqCst);
    }

    /// Whether the proxy plays dead.
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Plays dead (`true`) or passes traffic again (`false`, which also cancels
    /// [`Proxy::go_down_after_parts`]).
    pub fn set_down(&self, down: bool) {
        if !down {
            self.state
                .parts_before_down
                .store(u32::MAX, Ordering::SeqCst);
        }
        self.state.down.store(down, Ordering::SeqCst);
    }
}

/// Serves one request on `client`, then closes the connection.
fn serve(state: &State, client: TcpStream) -> std::io::Result<()> {
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line == b"\r\n" {
            break;
        }
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
    }
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
    let is_part = head[0].starts_with("PUT ") && head[0].contains("partNumber=");
    if is_part {
        let seen = state.parts_seen.fetch_add(1, Ordering::SeqCst);
        if seen >= state.parts_before_down.load(Ordering::SeqCst) {
            state.down.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
    let _in_progress = is_part.then(|| InProgress::new(state));
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        (&client).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let reset = is_part
        && state
            .reset_parts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    // The body, in pieces: dropped mid-way if the proxy goes down meanwhile, or half-way
    // through when this part is to be cut off.
    let mut body = Vec::with_capacity(length);
    let mut piece = vec![0; 64 * 1024];
    while body.len() < length {
        if state.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        if reset && body.len() >= length / 2 {
            state.resets.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let want = piece.len().min(length - body.len());
        let n = reader.read(&mut piece[..want])?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&piece[..n]);
    }

    if is_part {
        let held = std::time::Instant::now();
        while state.parts_max.load(Ordering::SeqCst)
            < state.hold_until_at_once.load(Ordering::SeqCst)
            && held.elapsed() < HOLD_GUARD
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
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
                   <RequestId>aerie-test-proxy</RequestId></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return client.flush();
    }

    let mut upstream = TcpStream::connect(state.upstream)?;
    let mut forwarded = format!("{}\r\n", head[0]);
    for line in &head[1..] {
        let name = line.split(':').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("expect") {
            forwarded.push_str(line);
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
    // Tell the client too that the connection ends here, so that it never reuses it.
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(());
    };
    let mut out = String::new();
    for line in String::from_utf8_lossy(&response[..split]).split("\r\n") {
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

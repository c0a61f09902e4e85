//! Fetching a backup archive from the Panel-supplied `download_url` for a restore.
//!
//! On a restore the Panel may hand the daemon a URL (for S3 backups, a presigned
//! `GetObject` link) and the daemon downloads it and unpacks it into a server's
//! directory. Whoever can make the Panel send that request chooses where the node
//! connects, so without care it can be pointed at the loopback interface, the
//! private network behind the node or a cloud metadata service (server-side request
//! forgery). Wings 1.11 fetched the link with a bare HTTP client; later upstream Wings
//! added checks like the ones here, and its error messages are kept verbatim
//! (`wings-protocol.md` §7.1 item 4 and §7.2).
//!
//! What is enforced:
//! - The link must parse as a URL, use `http` or `https` and have a host. Links that
//!   carry credentials (`http://user:pass@host/`) are refused as not valid: the Panel
//!   never makes them, and they would otherwise end up in the request.
//! - Addresses are checked **at connect time** ([`crate::net_policy`]), on the resolved IPs: a
//!   [`reqwest::dns::Resolve`] implementation resolves every host name (of the first
//!   request and of every redirect hop) and drops loopback, private, link-local, CGNAT,
//!   benchmarking, documentation, multicast, broadcast, unspecified and other
//!   non-global addresses, including their IPv4-mapped, NAT64 and 6to4 IPv6 forms.
//!   A host name that resolves to nothing else is refused, so DNS rebinding between a
//!   check and the connect is not possible. A literal IP in the URL never reaches a
//!   resolver, so it is checked on the URL itself.
//! - `system.backups.restore_host_allowlist` entries ([`AllowEntry`]: host name, IP
//!   or CIDR) lift the block for a matching host name or address.
//! - At most [`MAX_REDIRECTS`] redirects, each one checked like the first URL; no
//!   proxy from the environment is used, and no `Referer` is sent (a presigned
//!   link's signature stays with its own host).
//! - A connect timeout and a timeout until the response headers (both covering every
//!   redirect hop); then the body streams with no total limit (an archive may be tens
//!   of gigabytes) but a read that stalls for [`FetchPolicy::stall_timeout`] fails.
//! - The final response must be `200` with a `Content-Type` whose media type (any
//!   parameters ignored, case-insensitive) is `application/x-gzip` or
//!   `application/gzip`. Like upstream Wings, `application/octet-stream` is refused:
//!   S3 serves an object with the type it was uploaded with, and both Wings and aerie
//!   upload archives as `application/x-gzip`.
//!
//! URLs are never logged whole: a presigned link is a credential until it expires.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::header::CONTENT_TYPE;
use reqwest::redirect;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::allowlist::AllowEntry;
use crate::net_policy::{check_url, GuardedResolver, Refused};
use crate::read_ahead::{self, ChunkReader};

/// The most redirects followed before a download is refused (as in upstream Wings).
pub const MAX_REDIRECTS: usize = 10;

/// Media types accepted for a backup archive.
const GZIP_MEDIA_TYPES: [&str; 2] = ["application/x-gzip", "application/gzip"];

/// Body chunks buffered ahead of the blocking reader.
const READ_AHEAD_CHUNKS: usize = 16;

/// Why a restore download was refused or failed.
///
/// The `Display` texts are the ones upstream Wings answers with (where it has one), so
/// they can be returned to the Panel as the `error` of a 400 response. The payloads
/// carry details for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The link does not parse as a URL, has no host or carries credentials; the
    /// payload says which.
    #[error("The provided backup link is not a valid URL.")]
    InvalidUrl(String),
    /// The link (or a redirect) uses a scheme other than `http` or `https`.
    #[error("The provided backup link must use HTTP or HTTPS.")]
    UnsupportedScheme(String),
    /// The host name or IP address (the payload) is not allowed to be connected to.
    #[error("The provided backup link resolves to a blocked address.")]
    BlockedAddress(String),
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("The provided backup link redirected too many times.")]
    TooManyRedirects,
    /// The final response status was not `200`.
    #[error("The provided backup link returned an invalid response status: {0}")]
    BadStatus(u16),
    /// The final response's `Content-Type` (the payload, as sent; empty when missing)
    /// is not a gzip media type.
    #[error(
        "The provided backup link is not a supported content type. \"{0}\" is not application/x-gzip."
    )]
    BadContentType(String),
    /// Connecting, waiting for the response headers or waiting for more of the body
    /// took too long.
    #[error("The provided backup link did not respond in time.")]
    Timeout,
    /// Any other failure to resolve, connect or read; the text never includes the URL.
    #[error("The provided backup link could not be downloaded: {0}")]
    Network(String),
}

impl From<Refused> for FetchError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::InvalidUrl(why) => FetchError::InvalidUrl(why),
            Refused::UnsupportedScheme(scheme) => FetchError::UnsupportedScheme(scheme),
            Refused::BlockedAddress(what) => FetchError::BlockedAddress(what),
        }
    }
}

/// How a restore download may connect, and how long it may wait.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Hosts, addresses and ranges that may be connected to although they are not
    /// public (from `system.backups.restore_host_allowlist`).
    pub allowlist: Vec<AllowEntry>,
    /// Limit for resolving and connecting (TCP and TLS) to one host. Default 10 s.
    pub connect_timeout: Duration,
    /// Limit from sending the request until the final response's headers arrive,
    /// across all redirects. Default 30 s (Wings' `ResponseHeaderTimeout`).
    pub header_timeout: Duration,
    /// Limit for one read of the body to deliver data; there is no limit on the whole
    /// body. Default 5 min.
    pub stall_timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allowlist: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// A validated download whose headers have arrived and whose body is still to be read.
pub struct Download {
    /// The `Content-Length` of the archive, when the server sent one.
    pub content_length: Option<u64>,
    response: reqwest::Response,
}

impl fmt::Debug for Download {
    /// Leaves out the response, whose own `Debug` shows the (presigned) URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Checks `url` against `policy`, follows redirects and waits for the response
/// headers, then checks the status and content type. Nothing of the body has been
/// read when this returns, so a restore can validate its source before it touches the
/// server's files.
pub async fn open_download(url: &str, policy: &FetchPolicy) -> Result<Download, FetchError> {
    let url = Url::parse(url).map_err(|err| FetchError::InvalidUrl(err.to_string()))?;
    let allowlist: Arc<[AllowEntry]> = policy.allowlist.clone().into();
    check_url(&url, &allowlist)?;
    tracing::debug!(host = url.host_str(), "downloading a backup archive");

    let redirect_allowlist = Arc::clone(&allowlist);
    let client = reqwest::Client::builder()
        .no_proxy()
        .referer(false)
        .user_agent(concat!("aerie/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver::new(allowlist)))
        .redirect(redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(FetchError::TooManyRedirects);
            }
            match check_url(attempt.url(), &redirect_allowlist) {
                Ok(()) => attempt.follow(),
                Err(err) => attempt.error(FetchError::from(err)),
            }
        }))
        .connect_timeout(policy.connect_timeout)
        .read_timeout(policy.stall_timeout)
        .build()
        .map_err(fetch_error)?;

    let response = tokio::time::timeout(policy.header_timeout, client.get(url).send())
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(fetch_error)?;

    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::BadStatus(status));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    if !is_gzip_media_type(&content_type) {
        return Err(FetchError::BadContentType(content_type));
    }

    Ok(Download {
        content_length: response.content_length(),
        response,
    })
}

impl Download {
    /// Turns the body into a [`std::io::Read`] for the blocking thread that unpacks the
    /// archive. A task on `handle` reads ahead a few chunks; dropping the reader or
    /// cancelling `cancel` stops it (the reader then fails). Read errors are
    /// [`io::Error`]s wrapping a [`FetchError`] (kind `TimedOut` for a stall), and a body
    /// cut short is an error, never an early end of file.
    ///
    /// The reader blocks, so it must not be read from inside an async task: use it on
    /// a `spawn_blocking` thread or another thread outside the runtime.
    pub fn into_blocking_reader(
        self,
        handle: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> ChunkReader {
        let body = self.response.bytes_stream().map_err(|err| {
            let err = fetch_error(err);
            let kind = match err {
                FetchError::Timeout => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            io::Error::new(kind, err)
        });
        read_ahead::spawn_stream(&handle, until_cancelled(body, cancel), READ_AHEAD_CHUNKS)
    }
}

/// `body` until `cancel`, which ends it with an error (never a clean end: a body cut
/// short between two gzip members would otherwise look like a whole archive). Noticed even
/// while the server sends nothing.
fn until_cancelled(
    body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    cancel: CancellationToken,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold((Box::pin(body), cancel), |(mut body, cancel)| async move {
        let item = tokio::select! {
            item = body.next() => item?,
            () = cancel.cancelled() => Err(io::Error::other("the download was cancelled")),
        };
        Some((item, (body, cancel)))
    })
}

/// Whether a `Content-Type` value names a gzip media type, parameters ignored.
fn is_gzip_media_type(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    GZIP_MEDIA_TYPES
        .iter()
        .any(|accepted| media_type.eq_ignore_ascii_case(accepted))
}

/// Maps a client error to a [`FetchError`]: a refusal raised by the resolver or the
/// redirect policy comes back as itself; the URL is stripped from anything else.
fn fetch_error(err: reqwest::Error) -> FetchError {
    let err = err.without_url();
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(current) = source {
        if let Some(refusal) = current.downcast_ref::<FetchError>() {
            return refusal.clone();
        }
        if let Some(refusal) = current.downcast_ref::<Refused>() {
            return refusal.clone().into();
        }
        source = current.source();
    }
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(current) = source {
        message.push_str(": ");
        message.push_str(&current.to_string());
        source = current.source();
    }
    FetchError::Network(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the test server answers. `truncate_to` sends only that much of the body
    /// (its full length still announced), and `stall` then keeps the connection open
    /// without sending more.
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        truncate_to: Option<usize>,
        stall: bool,
    }

    impl Reply {
        fn new(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
            Reply {
                status,
                headers: vec![("Content-Type", content_type.to_owned())],
                body,
                truncate_to: None,
                stall: false,
            }
        }

        fn gzip(body: Vec<u8>) -> Reply {
            Reply::new(200, "application/x-gzip", body)
        }

        fn redirect(location: String) -> Reply {
            Reply {
                status: 302,
                headers: vec![("Location", location)],
                body: Vec::new(),
                truncate_to: None,
                stall: false,
            }
        }
    }

    struct Server {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
    }

    impl Server {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    /// A minimal HTTP/1.1 server: one request per connection, answered by `handler`
    /// from the request path and the server's own address.
    async fn serve<F>(ip: &str, handler: F) -> Server
    where
        F: Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, addr, Arc::clone(&handler)));
            }
        });
        Server { addr, connections }
    }

    async fn answer<F>(mut stream: TcpStream, addr: SocketAddr, handler: Arc<F>)
    where
        F: Fn(&str, SocketAddr) -> Reply,
    {
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let request = String::from_utf8_lossy(&request);
        let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
        let reply = handler(&path, addr);
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            reply.body.len()
        ));
        let sent = reply.truncate_to.unwrap_or(reply.body.len());
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&reply.body[..sent]).await.is_err()
        {
            return;
        }
        if reply.stall {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let _ = stream.shutdown().await;
    }

    fn policy(entries: &[&str]) -> FetchPolicy {
        FetchPolicy {
            allowlist: entries.iter().map(|entry| entry.parse().unwrap()).collect(),
            ..FetchPolicy::default()
        }
    }

    async fn fetch(url: &str, policy: &FetchPolicy) -> Result<Vec<u8>, FetchError> {
        let download = open_download(url, policy).await?;
        let mut reader = download
            .into_blocking_reader(tokio::runtime::Handle::current(), CancellationToken::new());
        let body = tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            reader.read_to_end(&mut body).map(|_| body)
        })
        .await
        .unwrap();
        Ok(body.expect("body read"))
    }

    /// Deterministic pseudo-random bytes, so a lost, repeated or reordered chunk shows.
    fn pattern(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    fn blocking_read_error(download: Download) -> tokio::task::JoinHandle<io::Error> {
        let mut reader = download
            .into_blocking_reader(tokio::runtime::Handle::current(), CancellationToken::new());
        tokio::task::spawn_blocking(move || {
            let mut sink = Vec::new();
            reader.read_to_end(&mut sink).unwrap_err()
        })
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allow_listed() {
        let server = serve("127.0.0.1", |_, _| Reply::gzip(b"archive".to_vec())).await;
        let url = server.url("/backup.tar.gz");

        let err = open_download(&url, &policy(&[])).await.unwrap_err();
        assert_eq!(err, FetchError::BlockedAddress("127.0.0.1".to_owned()));
        assert_eq!(
            err.to_string(),
            "The provided backup link resolves to a blocked address."
        );
        let err = open_download(&url, &policy(&["127.0.0.2", "10.0.0.0/8"]))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BlockedAddress(_)), "{err:?}");
        assert_eq!(server.connections(), 0);

        assert_eq!(
            fetch(&url, &policy(&["127.0.0.1"])).await.unwrap(),
            b"archive"
        );
        assert_eq!(
            fetch(&url, &policy(&["127.0.0.0/8"])).await.unwrap(),
            b"archive"
        );
    }

    #[tokio::test]
    async fn host_names_are_checked_on_their_resolved_addresses() {
        let server = serve("127.0.0.1", |_, _| Reply::gzip(b"archive".to_vec())).await;
        let url = format!("http://localhost:{}/backup.tar.gz", server.addr.port());

        let err = open_download(&url, &policy(&[])).await.unwrap_err();
        assert_eq!(err, FetchError::BlockedAddress("localhost".to_owned()));
        assert_eq!(server.connections(), 0);

        // Allowed by name (every address it resolves to), or by address.
        assert_eq!(
            fetch(&url, &policy(&["LOCALHOST."])).await.unwrap(),
            b"archive"
        );
        assert_eq!(
            fetch(&url, &policy(&["127.0.0.1"])).await.unwrap(),
            b"archive"
        );
    }

    #[tokio::test]
    async fn ipv4_mapped_ipv6_literal_is_refused() {
        let err = open_download("http://[::ffff:127.0.0.1]:8080/", &policy(&[]))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BlockedAddress(_)), "{err:?}");
        for url in [
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:8080/",
            "http://2130706433/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:c0a8:101::1]/",
        ] {
            let err = open_download(url, &policy(&[])).await.unwrap_err();
            assert!(
                matches!(err, FetchError::BlockedAddress(_)),
                "{url}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn bad_urls_are_refused() {
        let none = policy(&[]);
        let err = open_download("ftp://example.com/backup.tar.gz", &none)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::UnsupportedScheme("ftp".to_owned()));
        assert_eq!(
            err.to_string(),
            "The provided backup link must use HTTP or HTTPS."
        );
        let err = open_download("file:///etc/passwd", &none)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::UnsupportedScheme(_)), "{err:?}");

        for url in [
            "not a url",
            "",
            "http://",
            "https://user:secret@example.com/",
        ] {
            let err = open_download(url, &none).await.unwrap_err();
            assert!(matches!(err, FetchError::InvalidUrl(_)), "{url}: {err:?}");
            assert_eq!(
                err.to_string(),
                "The provided backup link is not a valid URL."
            );
        }
    }

    fn hops(path: &str, _: SocketAddr) -> Reply {
        match path
            .strip_prefix("/hop/")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(0) => Reply::gzip(b"end of the chain".to_vec()),
            Some(n) => Reply::redirect(format!("/hop/{}", n - 1)),
            None => Reply::new(404, "text/plain", Vec::new()),
        }
    }

    #[tokio::test]
    async fn redirects_are_limited() {
        let server = serve("127.0.0.1", hops).await;
        let allowed = policy(&["127.0.0.1"]);

        for n in [3, MAX_REDIRECTS] {
            let body = fetch(&server.url(&format!("/hop/{n}")), &allowed).await;
            assert_eq!(body.unwrap(), b"end of the chain");
        }
        let err = open_download(&server.url("/hop/11"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::TooManyRedirects);
    }

    #[tokio::test]
    async fn redirects_are_checked_like_the_first_url() {
        let inner = serve("127.0.0.2", |_, _| Reply::gzip(b"secret".to_vec())).await;
        let to_ip = inner.url("/");
        let outer = serve("127.0.0.1", move |path, _| match path {
            "/to-ip" => Reply::redirect(to_ip.clone()),
            "/to-ftp" => Reply::redirect("ftp://example.com/".to_owned()),
            _ => Reply::redirect("http://user:pw@example.com/".to_owned()),
        })
        .await;
        let allowed = policy(&["127.0.0.1"]);

        let err = open_download(&outer.url("/to-ip"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::BlockedAddress("127.0.0.2".to_owned()));
        assert_eq!(inner.connections(), 0);

        let err = open_download(&outer.url("/to-ftp"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::UnsupportedScheme("ftp".to_owned()));
        let err = open_download(&outer.url("/to-userinfo"), &allowed)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::InvalidUrl(_)), "{err:?}");
    }

    #[tokio::test]
    async fn redirect_to_a_blocked_name_is_refused_by_the_resolver() {
        let target = serve("127.0.0.1", |_, _| Reply::gzip(b"secret".to_vec())).await;
        let target_port = target.addr.port();
        let outer = serve("127.0.0.2", move |_, _| {
            Reply::redirect(format!("http://localhost:{target_port}/"))
        })
        .await;

        let err = open_download(&outer.url("/"), &policy(&["127.0.0.2"]))
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::BlockedAddress("localhost".to_owned()));
        assert_eq!(target.connections(), 0);
        assert_eq!(outer.connections(), 1);
    }

    #[tokio::test]
    async fn status_and_content_type_are_checked() {
        let server = serve("127.0.0.1", |path, _| match path {
            "/missing" => Reply::new(404, "application/x-gzip", Vec::new()),
            "/html" => Reply::new(200, "text/html", b"<html>".to_vec()),
            "/octet" => Reply::new(200, "application/octet-stream", Vec::new()),
            "/none" => Reply {
                headers: Vec::new(),
                ..Reply::gzip(Vec::new())
            },
            "/charset" => Reply::new(200, "application/x-gzip; charset=binary", b"gz".to_vec()),
            _ => Reply::new(200, "Application/GZIP", b"gz".to_vec()),
        })
        .await;
        let allowed = policy(&["127.0.0.1"]);

        let err = open_download(&server.url("/missing"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::BadStatus(404));
        assert_eq!(
            err.to_string(),
            "The provided backup link returned an invalid response status: 404"
        );
        let err = open_download(&server.url("/html"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::BadContentType("text/html".to_owned()));
        assert_eq!(
            err.to_string(),
            "The provided backup link is not a supported content type. \"text/html\" is not application/x-gzip."
        );
        let err = open_download(&server.url("/octet"), &allowed)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BadContentType(_)), "{err:?}");
        let err = open_download(&server.url("/none"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(err, FetchError::BadContentType(String::new()));

        assert_eq!(
            fetch(&server.url("/charset"), &allowed).await.unwrap(),
            b"gz"
        );
        assert_eq!(fetch(&server.url("/upper"), &allowed).await.unwrap(), b"gz");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_reader_delivers_a_large_body_in_order() {
        const LEN: usize = 6 * 1024 * 1024 + 12_345;
        let server = serve("127.0.0.1", |_, _| Reply::gzip(pattern(LEN))).await;
        let download = open_download(&server.url("/"), &policy(&["127.0.0.1"]))
            .await
            .unwrap();
        assert_eq!(download.content_length, Some(LEN as u64));

        let mut reader = download
            .into_blocking_reader(tokio::runtime::Handle::current(), CancellationToken::new());
        let body = tokio::task::spawn_blocking(move || {
            // Odd-sized reads, so chunks are split across calls.
            let mut body = Vec::with_capacity(LEN);
            let mut buf = vec![0; 4093];
            loop {
                match reader.read(&mut buf).unwrap() {
                    0 => break body,
                    n => body.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(body.len(), LEN);
        assert!(body == pattern(LEN), "the body differs from what was sent");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let server = serve("127.0.0.1", |_, _| Reply {
            truncate_to: Some(1000),
            ..Reply::gzip(pattern(100_000))
        })
        .await;
        let download = open_download(&server.url("/"), &policy(&["127.0.0.1"]))
            .await
            .unwrap();
        let err = blocking_read_error(download).await.unwrap();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FetchError>());
        assert!(matches!(inner, Some(FetchError::Network(_))), "{err:?}");
    }

    #[tokio::test]
    async fn stalls_and_silent_servers_time_out() {
        let server = serve("127.0.0.1", |_, _| Reply {
            truncate_to: Some(10),
            stall: true,
            ..Reply::gzip(pattern(1000))
        })
        .await;
        let quick = FetchPolicy {
            stall_timeout: Duration::from_millis(200),
            ..policy(&["127.0.0.1"])
        };
        let download = open_download(&server.url("/stall"), &quick).await.unwrap();
        let err = blocking_read_error(download).await.unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err:?}");

        // Accepts the connection and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let quick = FetchPolicy {
            header_timeout: Duration::from_millis(200),
            ..policy(&["127.0.0.1"])
        };
        let err = open_download(&url, &quick).await.unwrap_err();
        assert_eq!(err, FetchError::Timeout);
        drop(silent);
    }

    #[test]
    fn content_types() {
        for accepted in [
            "application/x-gzip",
            "application/gzip",
            "application/x-gzip; charset=binary",
            " Application/X-GZIP ;foo=bar",
        ] {
            assert!(is_gzip_media_type(accepted), "{accepted}");
        }
        for refused in [
            "",
            "gzip",
            "application/octet-stream",
            "application/x-gzip-compressed",
            "text/html; application/x-gzip",
        ] {
            assert!(!is_gzip_media_type(refused), "{refused}");
        }
    }
}

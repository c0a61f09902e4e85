//! HTTPS for the tests: the `api.ssl` config lines, clients that trust only a test CA, and a
//! raw TLS connection that shows which certificate the daemon served and stays open across
//! a certificate change.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// `Node::api_extra` lines that turn HTTPS on with these files.
pub fn ssl_config(cert: &Path, key: &Path) -> String {
    format!(
        "  ssl:\n    enabled: true\n    cert: {}\n    key: {}\n",
        cert.display(),
        key.display()
    )
}

/// A rustls client config that trusts only the certificates in `ca_pem` (ring, as the
/// daemon uses).
pub fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM CA"))
            .expect("a CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A blocking HTTP client that trusts only the certificates in `ca_pem`, for
/// `Daemon::client`.
pub fn https_client(ca_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(ClientConfig::clone(&client_config(ca_pem)))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("https client")
}

/// One TLS connection to the daemon, speaking HTTP/1.1 keep-alive by hand.
pub struct TlsConnection {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsConnection {
    /// Connects to `base` (`https://IP:PORT`) and completes the handshake; fails when the
    /// daemon's certificate is not trusted by `config`.
    pub fn open(base: &str, config: Arc<ClientConfig>) -> std::io::Result<Self> {
        let address = base.strip_prefix("https://").expect("an https:// base");
        let ip = address.rsplit_once(':').expect("IP:PORT").0;
        let name = ServerName::try_from(ip.to_string()).expect("a server name");
        let mut socket = TcpStream::connect(address)?;
        // A hang guard, not a timing assertion.
        socket.set_read_timeout(Some(crate::HANG_GUARD))?;
        let mut connection = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut socket)?;
        }
        Ok(Self {
            stream: StreamOwned::new(connection, socket),
        })
    }

    /// The certificate the daemon presented (DER), its leaf.
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().expect("a certificate")[0].to_vec()
    }

    /// `GET path` with `token` as bearer on this connection; its status and body.
    pub fn get(&mut self, path: &str, token: &str) -> (u16, String) {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: aerie\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .expect("send a request");
        self.stream.flush().expect("send a request");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            self.stream.read_exact(&mut byte).expect("a response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("a UTF-8 head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().expect("a length"))
            })
            .expect("a content-length");
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).expect("a response body");
        (status, String::from_utf8(body).expect("a UTF-8 body"))
    }
}

//! HTTPS on the API port (`api.ssl`), with certificates made here by a test CA: a backup
//! and its websocket over TLS; a certificate overwritten in place or swapped by certbot's
//! symlinks picked up without dropping open connections; plain HTTP refused as Wings
//! refuses it; a missing or bad certificate stopping start-up with one line naming it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aerie_e2e::tls::{client_config, https_client, ssl_config, TlsConnection};
use aerie_e2e::websocket::{connect_tls, token};
use aerie_e2e::{aerie_binary, new_uuid, target_dir, Daemon, Node};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

const SERVER: &str = "5d7f9b1d-3f5a-4c6e-8a0c-2e4f6a8c0e2a";

/// How long a test waits for the daemon to pick up new certificate files: many times its
/// check interval.
const RELOAD_GUARD: Duration = Duration::from_secs(60);

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate for the daemon (`127.0.0.1` and `localhost`), signed by a [`Ca`].
struct Leaf {
    /// The chain as Let's Encrypt's `fullchain.pem` holds it: the leaf, then its issuer.
    chain_pem: String,
    /// The private key (PKCS#8 PEM).
    key_pem: String,
    /// The leaf, as a client receives it.
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, common_name: &str, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Overwrites `cert` and `key` in place (same inodes).
    fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.chain_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

/// `api_extra` for HTTPS with these files, and idle keep-alive connections that live long
/// enough for any of these tests (`api.read_timeout`).
fn https_config(cert: &Path, key: &Path) -> String {
    format!("  read_timeout: 600\n{}", ssl_config(cert, key))
}

/// A node with server [`SERVER`] and HTTPS on, serving `leaf` from `cert.pem` and
/// `key.pem` in the node folder.
fn https_node(leaf: &Leaf) -> (Node, PathBuf, PathBuf) {
    let mut node = Node::new();
    node.server(SERVER);
    let cert = node.dir.path().join("cert.pem");
    let key = node.dir.path().join("key.pem");
    leaf.write(&cert, &key);
    node.api_extra = https_config(&cert, &key);
    (node, cert, key)
}

/// Opens new connections until the daemon presents `expected`; panics after
/// [`RELOAD_GUARD`].
fn wait_for_certificate(daemon: &Daemon, ca: &Ca, expected: &Leaf) {
    let start = Instant::now();
    loop {
        let connection = TlsConnection::open(&daemon.base, client_config(&ca.pem())).unwrap();
        if connection.peer_certificate() == expected.der {
            return;
        }
        assert!(
            start.elapsed() < RELOAD_GUARD,
            "the new certificate was not picked up within {RELOAD_GUARD:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the daemon's log until it contains `text`; panics after [`RELOAD_GUARD`].
fn wait_for_log(daemon: &Daemon, text: &str) {
    let start = Instant::now();
    while !daemon.log().contains(text) {
        assert!(
            start.elapsed() < RELOAD_GUARD,
            "no {text:?} in the log within {RELOAD_GUARD:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_backup_and_its_websocket_work_over_https() {
    let ca = Ca::new("aerie test CA");
    let leaf = ca.leaf("node.example.com", 1);
    let (node, _, _) = https_node(&leaf);
    let root = node.server(SERVER);
    std::fs::write(root.join("server.properties"), "motd=hello\n").unwrap();
    std::fs::write(root.join("world.dat"), aerie_e2e::noise(200_000)).unwrap();
    let mut daemon = node.start();
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    daemon.client = https_client(&ca.pem());

    let mut socket = connect_tls(&daemon.base, SERVER, client_config(&ca.pem())).unwrap();
    let (event, _) = socket.auth(&token(&node.token, SERVER, &["*"], 600));
    assert_eq!(event, "auth success");

    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    let frames = socket.recv_until("backup completed");
    let completed = frames.last().unwrap().1.as_deref().unwrap();
    assert!(completed.contains(&uuid), "{completed}");
    assert!(completed.contains("\"is_successful\":true"), "{completed}");

    // A client that does not trust the test CA is refused: the daemon really serves TLS with
    // this certificate.
    let stranger = Ca::new("another CA");
    assert!(TlsConnection::open(&daemon.base, client_config(&stranger.pem())).is_err());
}

#[test]
fn a_certificate_overwritten_in_place_is_picked_up_and_a_bad_pair_is_not() {
    let ca = Ca::new("aerie test CA");
    let first = ca.leaf("first.example.com", 1);
    let second = ca.leaf("second.example.com", 2);
    let (node, cert, key) = https_node(&first);
    let daemon = node.start();
    let mut open = TlsConnection::open(&daemon.base, client_config(&ca.pem())).unwrap();
    assert_eq!(open.peer_certificate(), first.der);

    // The new chain without its key: the pair does not match, the old one is kept.
    std::fs::write(&cert, &second.chain_pem).unwrap();
    wait_for_log(
        &daemon,
        &format!(
            "api.ssl.key {}: does not match the certificate in {}",
            key.display(),
            cert.display()
        ),
    );
    let connection = TlsConnection::open(&daemon.base, client_config(&ca.pem())).unwrap();
    assert_eq!(connection.peer_certificate(), first.der);

    // Its key arrives: the next check loads the pair.
    std::fs::write(&key, &second.key_pem).unwrap();
    wait_for_certificate(&daemon, &ca, &second);

    // The connection made before is still served.
    let (status, body) = open.get(&format!("/api/servers/{SERVER}/backups"), &node.token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(open.peer_certificate(), first.der);
}

#[test]
fn a_certbot_renewal_swapping_live_symlinks_is_picked_up_without_dropping_connections() {
    let ca = Ca::new("aerie test CA");
    let first = ca.leaf("node.example.com", 1);
    let second = ca.leaf("node.example.com", 2);
    let mut node = Node::new();
    node.server(SERVER);
    // certbot's layout: live/<name>/*.pem are relative symlinks into archive/<name>/.
    let letsencrypt = node.dir.path().join("letsencrypt");
    let archive = letsencrypt.join("archive/node");
    let live = letsencrypt.join("live/node");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    first.write(
        &archive.join("fullchain1.pem"),
        &archive.join("privkey1.pem"),
    );
    second.write(
        &archive.join("fullchain2.pem"),
        &archive.join("privkey2.pem"),
    );
    let link = |name: &str, target: &str| {
        let temporary = live.join(format!("{name}.new"));
        std::os::unix::fs::symlink(format!("../../archive/node/{target}"), &temporary).unwrap();
        std::fs::rename(&temporary, live.join(name)).unwrap();
    };
    link("fullchain.pem", "fullchain1.pem");
    link("privkey.pem", "privkey1.pem");
    node.api_extra = https_config(&live.join("fullchain.pem"), &live.join("privkey.pem"));
    let daemon = node.start();
    let path = format!("/api/servers/{SERVER}/backups");
    let mut open = TlsConnection::open(&daemon.base, client_config(&ca.pem())).unwrap();
    assert_eq!(open.peer_certificate(), first.der);
    assert_eq!(open.get(&path, &node.token).0, 200);

    link("fullchain.pem", "fullchain2.pem");
    link("privkey.pem", "privkey2.pem");
    wait_for_certificate(&daemon, &ca, &second);

    // The keep-alive connection made before the swap still works, on its old certificate.
    let (status, body) = open.get(&path, &node.token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(open.peer_certificate(), first.der);
}

#[test]
fn plain_http_to_the_tls_port_gets_what_wings_answers_and_https_still_works() {
    let ca = Ca::new("aerie test CA");
    let (node, _, _) = https_node(&ca.leaf("node.example.com", 1));
    let mut daemon = node.start();
    let address = daemon.base.strip_prefix("https://").unwrap().to_string();

    let mut plain = TcpStream::connect(&address).unwrap();
    plain.set_read_timeout(Some(aerie_e2e::HANG_GUARD)).unwrap();
    write!(
        plain,
        "GET /api/servers/{SERVER}/backups HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        node.token
    )
    .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer,
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );

    // A handshake record that is not a ClientHello: the connection is closed.
    let mut garbage = TcpStream::connect(&address).unwrap();
    garbage
        .set_read_timeout(Some(aerie_e2e::HANG_GUARD))
        .unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    let _ = garbage.read_to_end(&mut Vec::new());

    daemon.client = https_client(&ca.pem());
    let reply = daemon.send(daemon.request(
        reqwest::Method::GET,
        &format!("/api/servers/{SERVER}/backups"),
    ));
    assert_eq!(reply.status, 200, "{reply:?}");
    // Anyone can reach the port: what strangers send is not worth a warning or an error.
    let log = daemon.log();
    assert!(!log.contains(" WARN ") && !log.contains(" ERROR "), "{log}");
}

#[test]
fn a_missing_or_bad_certificate_stops_start_up_naming_the_file() {
    let ca = Ca::new("aerie test CA");
    let leaf = ca.leaf("node.example.com", 1);
    let (mut node, cert, key) = https_node(&leaf);

    let missing = node.dir.path().join("missing.pem");
    node.api_extra = ssl_config(&missing, &key);
    let line = node.refusal();
    assert!(
        line.starts_with(&format!(
            "aerie: api.ssl.cert {}: No such file",
            missing.display()
        )),
        "{line}"
    );

    let not_pem = node.dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    node.api_extra = ssl_config(&not_pem, &key);
    let line = node.refusal();
    assert!(
        line.starts_with(&format!(
            "aerie: api.ssl.cert {}: no CERTIFICATE in it",
            not_pem.display()
        )),
        "{line}"
    );

    let other_key = node.dir.path().join("other-key.pem");
    std::fs::write(&other_key, ca.leaf("other.example.com", 2).key_pem).unwrap();
    node.api_extra = ssl_config(&cert, &other_key);
    let mismatch = format!(
        "aerie: api.ssl.key {}: does not match the certificate in {}",
        other_key.display(),
        cert.display()
    );
    assert_eq!(node.refusal(), mismatch);

    // `aerie check` tries the pair too.
    let check = Command::new(aerie_binary())
        .arg("--config")
        .arg(node.write_config())
        .arg("check")
        .env("AERIE_ADAPTER_DIR", target_dir())
        .output()
        .unwrap();
    assert!(!check.status.success());
    let printed = String::from_utf8_lossy(&check.stderr);
    assert!(printed.lines().any(|line| line == mismatch), "{printed}");
}

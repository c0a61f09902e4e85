//! aerie in front of Wings (`upstream:`): what aerie does not serve itself reaches Wings as it
//! came (bodies byte for byte both ways, headers but the hop-by-hop ones, the client's
//! address added), Wings' answers come back unchanged, Wings down is a 502 in Wings' shape,
//! power actions wait for restores, memory stays flat whatever passes, and the README's
//! deploy section works as written.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use aerie_e2e::links::serve_held_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::wings::files::{hex, Pattern, WINGS_VERSION};
use aerie_e2e::wings::WingsStandIn;
use aerie_e2e::{gnu_tar_gz, noise, Daemon, Node, HANG_GUARD};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The big transfers' size, each way (issue 10: 256 MiB).
const BIG: u64 = 256 * 1024 * 1024;

/// A node in front of `wings`.
fn node_before(wings: &WingsStandIn) -> Node {
    let mut node = Node::new();
    node.extra_config = format!("upstream:\n  url: {}\n", wings.url());
    node
}

/// A client without a total timeout short enough to cut a big transfer in a debug build;
/// [`HANG_GUARD`] only keeps a hung daemon from hanging the test.
fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(HANG_GUARD)
        .build()
        .unwrap()
}

/// Reads `len` bytes of [`Pattern`] and hashes what it hands out: the client side's hash
/// of an upload.
struct Hashing {
    pattern: Pattern,
    hash: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pattern.read(buf)?;
        self.hash.lock().unwrap().update(&buf[..n]);
        Ok(n)
    }
}

/// Uploads `len` bytes of the pattern through `daemon` to Wings' `/upload/file`; returns
/// the response and the hash of what was sent.
fn upload(daemon: &Daemon, token: &str, len: u64) -> (reqwest::blocking::Response, String) {
    let hash = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let body = Hashing {
        pattern: Pattern::new(len),
        hash: hash.clone(),
    };
    let response = client()
        .post(format!(
            "{}/upload/file?token=upload-jwt&server=s1",
            daemon.base
        ))
        .bearer_auth(token)
        .body(reqwest::blocking::Body::sized(body, len))
        .send()
        .expect("upload through aerie");
    let sent = hex(&hash.lock().unwrap().clone().finalize());
    (response, sent)
}

/// Downloads `len` bytes of the pattern through `base` from Wings' `/download/file`;
/// returns the headers and the hash and length of what arrived.
fn download(base: &str, len: u64) -> (reqwest::header::HeaderMap, String, u64) {
    let mut response = client()
        .get(format!(
            "{base}/download/file?token=download-jwt&size={len}"
        ))
        .send()
        .expect("download through aerie");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = response.read(&mut buffer).expect("download body");
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        total += n as u64;
    }
    (headers, hex(&hash.finalize()), total)
}

#[test]
fn a_256_mib_upload_reaches_wings_byte_exact_with_the_bearer_and_forwarded_headers() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    let (response, sent) = upload(&daemon, &node.token, BIG);
    assert_eq!(response.status(), 200);
    // Wings' hop-by-hop headers stay between Wings and aerie.
    assert!(response.headers().get("x-wings-hop").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    let answer: serde_json::Value = response.json().unwrap();
    assert_eq!(sent, Pattern::sha256(BIG));
    assert_eq!(answer, json!({"sha256": sent, "bytes": BIG}));

    let uploads = wings.files.uploads();
    assert_eq!(uploads.len(), 1);
    let seen = &uploads[0];
    assert_eq!((seen.sha256.as_str(), seen.bytes), (sent.as_str(), BIG));
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {}", node.token)
    );
    assert_eq!(seen.headers["content-length"], BIG.to_string());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    let uri = wings.files.seen().last().unwrap().uri.clone();
    assert_eq!(uri, "/upload/file?token=upload-jwt&server=s1");
}

#[test]
fn a_256_mib_download_comes_back_byte_exact_with_wings_headers() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    let (headers, hash, len) = download(&daemon.base, BIG);
    assert_eq!(len, BIG);
    assert_eq!(hash, Pattern::sha256(BIG));
    assert_eq!(headers["content-length"], BIG.to_string());
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"pattern.bin\""
    );
    assert_eq!(headers["content-type"], "application/octet-stream");
}

#[test]
fn request_headers_pass_as_they_came_but_the_hop_by_hop_ones() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    let address = daemon.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let request = format!(
        "GET /api/system?probe=1&x=%2F HTTP/1.1\r\n\
         Host: node.example.com:8080\r\n\
         Authorization: Bearer {token}\r\n\
         Accept: application/json\r\n\
         X-Custom: kept\r\n\
         X-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\n\
         Connection: close, X-Client-Hop\r\n\
         X-Client-Hop: dropped\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\n\
         Upgrade: h2c\r\n\
         \r\n",
        token = node.token
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains(WINGS_VERSION), "{answer}");

    let seen = wings.files.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/api/system?probe=1&x=%2F")
    );
    let h = &seen.headers;
    assert_eq!(h["host"], "node.example.com:8080");
    assert_eq!(h["authorization"], format!("Bearer {}", node.token));
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    for hop in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(h.get(hop).is_none(), "{hop} reached Wings: {h:?}");
    }
}

#[test]
fn wings_errors_come_back_unchanged() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    let reply = daemon.send(
        daemon
            .request(reqwest::Method::POST, "/api/servers/s1/files/decompress")
            .json(&json!({"root": "/", "file": "a.rar"})),
    );
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.json,
        json!({
            "error": "The archive could not be decompressed: unknown format.",
            "request_id": "6f1c2a3e-0000-4000-8000-000000000422",
        })
    );
    assert_eq!(
        reply.headers["x-request-id"],
        "6f1c2a3e-0000-4000-8000-000000000422"
    );
    // Wings checks the bearer of what aerie passes on, and its refusal passes back.
    let reply = daemon.send(
        client()
            .get(format!("{}/api/system", daemon.base))
            .bearer_auth("wrong"),
    );
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.error(),
        "You are not authorized to access this endpoint."
    );
}

#[test]
fn wings_down_is_a_502_in_wings_shape_and_a_log_line() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Node::new();
    node.extra_config = format!("upstream:\n  url: http://127.0.0.1:{port}\n");
    let daemon = node.start();

    let reply = daemon.send(daemon.request(reqwest::Method::GET, "/api/system?secret=abc"));
    assert_eq!(reply.status, 502, "{reply:?}");
    let error = reply.error();
    assert!(
        error.starts_with("The upstream Wings daemon did not answer: ")
            && error.contains("Connection refused"),
        "{error}"
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("Wings did not answer"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.contains("GET") && line.contains("/api/system") && line.contains("refused"),
        "{line}"
    );
    assert!(!line.contains("secret=abc"), "the query was logged: {line}");
}

#[test]
fn standalone_aerie_still_answers_404_for_what_it_does_not_serve() {
    let node = Node::new();
    let daemon = node.start();
    for (method, path) in [
        (reqwest::Method::GET, "/api/system"),
        (reqwest::Method::POST, "/api/servers/s1/power"),
    ] {
        let reply = daemon.send(daemon.request(method, path));
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert_eq!(
            reply.error(),
            "The requested resource does not exist on this instance."
        );
    }
}

#[test]
fn a_power_action_for_a_server_being_restored_is_refused_and_others_pass() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let mut node = node_before(&wings);
    node.system_extra = LOOPBACK_ALLOWED.into();
    std::fs::write(node.server("restoring").join("level.dat"), b"level").unwrap();
    node.server("other");
    let source = node.dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("world.bin"), noise(100_000)).unwrap();
    let archive = node.dir.path().join("backup.tar.gz");
    gnu_tar_gz(&archive, &source, &["."]);
    let (url, release) = serve_held_archive(std::fs::read(&archive).unwrap());
    let daemon = node.start();

    let uuid = uuid::Uuid::new_v4().to_string();
    let body = json!({"adapter": "s3", "truncate_directory": false, "download_url": url});
    let reply = daemon.post_restore("restoring", &uuid, &body);
    assert_eq!(reply.status, 202, "{reply:?}");

    let power = |server: &str| {
        daemon.send(
            daemon
                .request(
                    reqwest::Method::POST,
                    &format!("/api/servers/{server}/power"),
                )
                .json(&json!({"action": "start"})),
        )
    };
    // A client's power action passed on to Wings (aerie's own stop before the restore
    // carries no X-Forwarded-For).
    let powered = |server: &str| {
        wings.files.seen().iter().any(|s| {
            s.method == "POST"
                && s.uri == format!("/api/servers/{server}/power")
                && s.headers.contains_key("x-forwarded-for")
        })
    };
    let refused = power("restoring");
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(
        refused.error(),
        "This server is being restored; power actions are refused until the restore ends."
    );
    assert!(!powered("restoring"));
    // Without the bearer aerie answers itself, as Wings would, and passes nothing on.
    let anonymous = daemon.send(
        client()
            .post(format!("{}/api/servers/restoring/power", daemon.base))
            .json(&json!({"action": "start"})),
    );
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(!powered("restoring"));

    let passed = power("other");
    assert_ne!(passed.status, 409, "{passed:?}");
    assert!(powered("other"));

    // Once the restore has ended, power actions for the server go to Wings again.
    release.send(()).unwrap();
    let start = Instant::now();
    while power("restoring").status == 409 {
        assert!(start.elapsed() < HANG_GUARD, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(powered("restoring"));
    assert_eq!(
        std::fs::read(node.data().join("restoring/world.bin")).unwrap(),
        noise(100_000)
    );
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn memory_stays_flat_while_1_gib_passes_through() {
    /// How far the peak may rise above idle (issue 10).
    const ALLOWED: u64 = 32 * 1024 * 1024;
    /// Half of the GiB goes up, half comes down.
    const HALF: u64 = 512 * 1024 * 1024;
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();
    let pid = daemon.pid();
    // Warm up (runtime threads, the pool to Wings), then start the peak from here.
    assert_eq!(download(&daemon.base, 1024 * 1024).2, 1024 * 1024);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let idle = memory(pid, "VmRSS");

    let (response, sent) = upload(&daemon, &node.token, HALF);
    assert_eq!(response.status(), 200);
    assert_eq!(wings.files.uploads()[0].sha256, sent);
    let (_, hash, len) = download(&daemon.base, HALF);
    assert_eq!((hash, len), (Pattern::sha256(HALF), HALF));

    let peak = memory(pid, "VmHWM");
    eprintln!("idle RSS {} KiB, peak {} KiB", idle >> 10, peak >> 10);
    assert!(
        peak <= idle + ALLOWED,
        "peak RSS {} MiB, idle {} MiB",
        peak >> 20,
        idle >> 20
    );
}

/// Sends `head` (a request's head, without the blank line), waits for `100 Continue` when
/// `body` is given with `Expect`, sends the body, and returns the whole answer.
fn raw_exchange(base: &str, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    if head.contains("Expect: 100-continue") {
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            answer.push(byte[0]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    stream.write_all(body).unwrap();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn an_upload_that_expects_100_continue_passes_once() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    let answer = raw_exchange(
        &daemon.base,
        "POST /upload/file?token=t HTTP/1.1\r\nHost: node\r\nContent-Length: 5\r\n\
         Expect: 100-continue\r\nConnection: close\r\n",
        b"hello",
    );
    let hello = hex(&Sha256::digest(b"hello"));
    // One 100 (aerie's), then Wings' answer.
    assert_eq!(answer.matches("HTTP/1.1 100").count(), 1, "{answer}");
    assert!(answer.contains("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains(&hello), "{answer}");
    assert_eq!(wings.files.uploads()[0].sha256, hello);
}

#[test]
fn a_method_aerie_does_not_serve_on_its_own_paths_is_wings_to_answer() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let node = node_before(&wings);
    let daemon = node.start();

    // A browser's CORS preflight, and a method aerie has no handler for.
    let answer = raw_exchange(
        &daemon.base,
        "OPTIONS /api/servers/s1/backup HTTP/1.1\r\nHost: node\r\n\
         Origin: https://panel.example.com\r\nConnection: close\r\n",
        b"",
    );
    assert!(!answer.contains("not allowed"), "{answer}");
    let reply = daemon.send(daemon.request(reqwest::Method::PUT, "/api/servers/s1/backups"));
    assert_ne!(reply.status, 405, "{reply:?}");
    let seen: Vec<(String, String)> = wings
        .files
        .seen()
        .into_iter()
        .map(|s| (s.method, s.uri))
        .collect();
    assert_eq!(
        seen,
        [
            ("OPTIONS".to_string(), "/api/servers/s1/backup".to_string()),
            ("PUT".to_string(), "/api/servers/s1/backups".to_string()),
        ]
    );
}

/// Runs `aerie check` on `node`'s config: its exit code and what it printed.
fn check(node: &Node) -> (i32, String) {
    let config = node.write_config();
    let output = std::process::Command::new(aerie_e2e::aerie_binary())
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env("AERIE_ADAPTER_DIR", aerie_e2e::target_dir())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), printed)
}

#[test]
fn aerie_check_says_whether_wings_answers() {
    let wings = WingsStandIn::start("test-node-token-0123456789");
    let mut node = node_before(&wings);
    let (code, printed) = check(&node);
    assert_eq!(code, 0, "{printed}");
    assert!(
        printed.contains(&format!(
            "aerie: upstream {} answers: Wings {WINGS_VERSION}",
            wings.url()
        )),
        "{printed}"
    );
    assert_eq!(wings.files.seen()[0].uri, "/api/system");

    node.token = "not-the-token-wings-has".into();
    let (code, printed) = check(&node);
    assert_ne!(code, 0, "{printed}");
    assert!(
        printed.contains(&format!(
            "aerie: upstream.url: Wings at {} does not answer GET /api/system: it answered \
             403 Forbidden: You are not authorized to access this endpoint.",
            wings.url()
        )),
        "{printed}"
    );

    let url = wings.url();
    drop(wings);
    let (code, printed) = check(&node);
    assert_ne!(code, 0, "{printed}");
    let line = printed
        .lines()
        .find(|l| l.starts_with("aerie: upstream.url: "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(
        line.contains(&format!("Wings at {url} does not answer")) && line.contains("refused"),
        "{line}"
    );
}

/// The fenced block that follows the first line containing `marker` in the README's
/// "Deploy beside Wings" section.
fn readme_block(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Deploy beside Wings").expect("the section")..];
    let after = &section[section.find(marker).unwrap_or_else(|| panic!("{marker}"))..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// A test CA's certificate (PEM), and a chain (leaf then CA, as `fullchain.pem`) and key
/// for `127.0.0.1` signed by it.
fn test_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
    )
}

/// A daemon spawned on a config file of the test's own; killed when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_deploy_section_works_as_written() {
    let wings_change = readme_block("In Wings' `/etc/pterodactyl/config.yml`");
    for key in ["host: 127.0.0.1", "port: 8081", "enabled: false"] {
        assert!(wings_change.contains(key), "{wings_change}");
    }
    let documented = readme_block("aerie's `/etc/aerie/config.yml`");
    assert!(documented.contains("upstream:\n  url: \"http://127.0.0.1:8081\"\n"));
    let token = documented
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .trim_matches('"');
    let wings = WingsStandIn::start(token);
    let node = Node::new();
    std::fs::create_dir_all(node.server("s1")).unwrap();
    // The certificate, made by a test CA, where the documented paths say.
    let (ca_pem, chain_pem, key_pem) = test_certificate();
    let cert = node.dir.path().join("fullchain.pem");
    let key = node.dir.path().join("privkey.pem");
    std::fs::write(&cert, chain_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    // As documented, but on a free loopback port and in the test's folders.
    let config = documented
        .replace("host: 0.0.0.0", "host: 127.0.0.1")
        .replace("port: 8080", "port: 0")
        .replace(
            "/etc/letsencrypt/live/node.example.com/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/node.example.com/privkey.pem",
            &key.display().to_string(),
        )
        .replace(
            "/var/lib/aerie",
            &node.dir.path().join("state").display().to_string(),
        )
        .replace(
            "/var/lib/pterodactyl/volumes",
            &node.data().display().to_string(),
        )
        .replace(
            "/var/lib/pterodactyl/backups",
            &node.backup_dir().display().to_string(),
        )
        .replace("http://127.0.0.1:8081", &wings.url());
    let path = node.dir.path().join("aerie.yml");
    std::fs::write(&path, &config).unwrap();
    let aerie = |args: &[&str]| {
        let mut command = std::process::Command::new(aerie_e2e::aerie_binary());
        command
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("AERIE_ADAPTER_DIR", aerie_e2e::target_dir());
        command
    };

    let checked = aerie(&["check"]).output().unwrap();
    let printed = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{printed}{config}");
    assert!(
        printed.contains(&format!("answers: Wings {WINGS_VERSION}")),
        "{printed}"
    );

    let mut child = aerie(&[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let daemon = Spawned(child);
    let base = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("aerie listening on ").map(str::to_string))
        .expect("aerie listening");
    assert!(base.starts_with("https://"), "{base}");
    let client = aerie_e2e::tls::https_client(&ca_pem);
    let system: serde_json::Value = client
        .get(format!("{base}/api/system"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(system["version"], WINGS_VERSION);
    let backup = client
        .post(format!("{base}/api/servers/s1/backup"))
        .bearer_auth(token)
        .json(&json!({"adapter": "wings", "uuid": uuid::Uuid::new_v4().to_string(), "ignore": ""}))
        .send()
        .unwrap();
    assert_eq!(backup.status(), 202);
    let seen = wings.files.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["/api/system", "/api/system"]);
    // The client came over HTTPS, and Wings is told so.
    assert_eq!(seen[1].headers["x-forwarded-proto"], "https");
    drop(daemon);
}

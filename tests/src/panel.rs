//! A stand-in for the Pterodactyl Panel: a small HTTP server that receives aerie's status
//! reports, checks each against what the Panel accepts (wings-protocol.md §1.6–1.7: headers,
//! auth, exact JSON fields and types), records them, and can be told to fail (a status a
//! given number of times) or to go down and come back on the same port.
//!
//! With [`PanelStandIn::use_s3`] it also plays a Panel whose backup driver is `s3`, as its
//! `BackupRemoteUploadController` and `BackupStatusController` do: `GET
//! /api/remote/backups/<uuid>?size=N` starts a multipart upload and answers `{"parts":
//! [presigned UploadPart URLs], "part_size"}`, and the status report completes the upload
//! with the reported parts (or aborts it on `successful: false`).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aerie_s3_test_support::PanelS3;
use serde_json::{json, Value};

use crate::HANG_GUARD;

/// One request the Panel received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method, `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/api/remote/backups/<uuid>` (with its query, if any).
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// The status the stand-in answered.
    pub answered: u16,
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    violations: Vec<String>,
    planned: VecDeque<u16>,
    s3: Option<PanelS3Side>,
}

/// The Panel's S3 driver: its bucket, the one server whose backups it presigns, the upload
/// ids it saved per backup, and what it did, in order.
struct PanelS3Side {
    s3: PanelS3,
    server: String,
    upload_ids: HashMap<String, String>,
    actions: Vec<String>,
}

/// The Panel stand-in; stops when dropped.
pub struct PanelStandIn {
    port: u16,
    authorization: String,
    shared: Arc<Mutex<Shared>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl PanelStandIn {
    /// Starts on a free loopback port, expecting `Authorization: Bearer <token_id>.<token>`.
    pub fn start(token_id: &str, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Panel stand-in");
        let port = listener.local_addr().unwrap().port();
        let mut panel = Self {
            port,
            authorization: format!("Bearer {token_id}.{token}"),
            shared: Arc::default(),
            running: None,
        };
        panel.serve(listener);
        panel
    }

    /// The Panel's URL, for aerie's `remote`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Plays a Panel whose backup driver is `s3` on `s3`'s bucket, for backups of `server`
    /// (the Panel's key is `<server>/<backup>.tar.gz`).
    pub fn use_s3(&self, s3: PanelS3, server: &str) {
        self.shared.lock().unwrap().s3 = Some(PanelS3Side {
            s3,
            server: server.to_string(),
            upload_ids: HashMap::new(),
            actions: Vec::new(),
        });
    }

    /// What the Panel did in S3, in order: `created <uuid>`, `completed <uuid> <n> parts`,
    /// `aborted <uuid>`, or `failed: <why>`.
    pub fn s3_actions(&self) -> Vec<String> {
        let shared = self.shared.lock().unwrap();
        shared
            .s3
            .as_ref()
            .map_or_else(Vec::new, |s| s.actions.clone())
    }

    /// Answers the next requests with these statuses (then 204 again).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.shared.lock().unwrap().planned.extend(statuses);
    }

    /// Stops listening: connections are refused until [`PanelStandIn::come_back`].
    pub fn go_down(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            handle.join().unwrap();
        }
    }

    /// Listens again on the same port.
    pub fn come_back(&mut self) {
        let listener =
            TcpListener::bind(("127.0.0.1", self.port)).expect("rebind the Panel's port");
        self.serve(listener);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Requests that broke the Panel's contract.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().unwrap().violations.clone()
    }

    /// Waits until `count` requests were answered 2xx, and returns those.
    pub fn wait_for_accepted(&self, count: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let accepted: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.answered / 100 == 2)
                .collect();
            if accepted.len() >= count {
                assert!(self.violations().is_empty(), "{:?}", self.violations());
                return accepted;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "the Panel got {:?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, authorization, stopping) = (
            self.shared.clone(),
            self.authorization.clone(),
            stop.clone(),
        );
        let handle = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => handle(stream, &shared, &authorization),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.running = Some((stop, handle));
    }
}

impl Drop for PanelStandIn {
    fn drop(&mut self) {
        self.go_down();
    }
}

fn handle(stream: TcpStream, shared: &Mutex<Shared>, authorization: &str) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let mut problems = Vec::new();
    if header("authorization") != Some(authorization) {
        problems.push(format!("authorization {:?}", header("authorization")));
    }
    if header("accept") != Some("application/vnd.pterodactyl.v1+json") {
        problems.push(format!("accept {:?}", header("accept")));
    }
    if header("content-type") != Some("application/json") {
        problems.push(format!("content-type {:?}", header("content-type")));
    }
    if !header("user-agent").is_some_and(|ua| ua.contains("aerie")) {
        problems.push(format!("user-agent {:?}", header("user-agent")));
    }
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let backup = route.strip_prefix("/api/remote/backups/");
    match (method, backup) {
        ("GET", Some(uuid)) if !uuid.contains('/') => {}
        ("POST", Some(rest)) if rest.ends_with("/restore") => {
            problems.extend(check_restore_report(&body))
        }
        ("POST", Some(_)) => problems.extend(check_backup_report(&body)),
        _ => problems.push(format!("{method} {path}")),
    }

    let mut shared = shared.lock().unwrap();
    let (status, answer) = if !problems.is_empty() {
        shared
            .violations
            .push(format!("{method} {path}: {}", problems.join("; ")));
        (422, None)
    } else if let Some(planned) = shared.planned.pop_front() {
        (planned, None)
    } else {
        let uuid = backup.unwrap_or_default();
        match (method, shared.s3.as_mut()) {
            ("GET", Some(s3)) => presign(s3, uuid, query),
            ("GET", None) => (400, None),
            ("POST", Some(s3)) if !uuid.ends_with("/restore") => report_to_s3(s3, uuid, &body),
            _ => (204, None),
        }
    };
    shared.received.push(Received {
        method: method.to_string(),
        path: path.to_string(),
        body,
        answered: status,
    });
    drop(shared);
    let reply_body = match (status, answer) {
        (204, _) => String::new(),
        (_, Some(answer)) => answer.to_string(),
        _ => json!({"errors": [{"code": "StandInError", "status": status.to_string(),
            "detail": format!("the stand-in answered {status}")}]})
        .to_string(),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply_body}",
        reply_body.len()
    );
}

/// `BackupRemoteUploadController`: 400 without a non-zero `size`; otherwise
/// CreateMultipartUpload (the upload id saved for the backup, replacing any earlier one)
/// and `ceil(size / part_size)` presigned UploadPart URLs.
fn presign(s3: &mut PanelS3Side, uuid: &str, query: &str) -> (u16, Option<Value>) {
    let size: u64 = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("size="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if size == 0 {
        return (400, None);
    }
    let key = format!("{}/{uuid}.tar.gz", s3.server);
    let urls = s3.s3.create_upload(&key).and_then(|upload_id| {
        s3.upload_ids.insert(uuid.to_string(), upload_id.clone());
        s3.actions.push(format!("created {uuid}"));
        s3.s3.presign_parts(&key, &upload_id, size)
    });
    match urls {
        Ok(urls) => (
            200,
            Some(json!({"parts": urls, "part_size": s3.s3.part_size})),
        ),
        Err(why) => {
            s3.actions.push(format!("failed: {why}"));
            (500, None)
        }
    }
}

/// `BackupStatusController`: on success, CompleteMultipartUpload with the reported parts
/// (400 when no upload was started); on failure, AbortMultipartUpload if one was.
fn report_to_s3(s3: &mut PanelS3Side, uuid: &str, body: &Value) -> (u16, Option<Value>) {
    let key = format!("{}/{uuid}.tar.gz", s3.server);
    let upload_id = s3.upload_ids.get(uuid).cloned();
    if body["successful"] != true {
        if let Some(upload_id) = upload_id {
            match s3.s3.abort(&key, &upload_id) {
                Ok(()) => s3.actions.push(format!("aborted {uuid}")),
                Err(why) => s3.actions.push(format!("failed: {why}")),
            }
        }
        return (204, None);
    }
    let Some(upload_id) = upload_id else {
        s3.actions.push(format!("no upload_id for {uuid}"));
        return (400, None);
    };
    let parts: Vec<(String, i32)> = body["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    (
                        p["etag"].as_str().unwrap_or_default().to_string(),
                        p["part_number"].as_i64().unwrap_or_default() as i32,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    match s3.s3.complete(&key, &upload_id, &parts) {
        Ok(()) => {
            s3.actions
                .push(format!("completed {uuid} {} parts", parts.len()));
            (204, None)
        }
        Err(why) => {
            s3.actions.push(format!("failed: {why}"));
            (500, None)
        }
    }
}

/// §1.6: exactly `{"checksum","checksum_type","size","successful","parts"}`, typed as the
/// Panel validates them.
fn check_backup_report(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(object) = body.as_object() else {
        return vec![format!("body is not an object: {body}")];
    };
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    if keys != ["checksum", "checksum_type", "parts", "size", "successful"] {
        problems.push(format!("fields {keys:?}"));
    }
    let successful = body["successful"].as_bool();
    if successful.is_none() {
        problems.push("successful is not a boolean".into());
    }
    if !body["checksum"].is_string() || !body["checksum_type"].is_string() {
        problems.push("checksum or checksum_type is not a string".into());
    }
    if !body["size"].is_u64() {
        problems.push("size is not an integer".into());
    }
    if successful == Some(true) {
        let checksum = body["checksum"].as_str().unwrap_or("");
        if checksum.len() != 40 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("checksum {checksum:?} is not a SHA-1"));
        }
        if body["checksum_type"] != "sha1" {
            problems.push("checksum_type is not sha1".into());
        }
    }
    match &body["parts"] {
        Value::Null => {}
        Value::Array(parts) => {
            for part in parts {
                if !part["etag"].is_string() || !part["part_number"].is_u64() {
                    problems.push(format!("part {part}"));
                }
            }
        }
        other => problems.push(format!("parts is {other}")),
    }
    problems
}

/// §1.7: `{"successful": bool}`.
fn check_restore_report(body: &Value) -> Vec<String> {
    match body.as_object() {
        Some(object) if object.len() == 1 && body["successful"].is_boolean() => Vec::new(),
        _ => vec![format!("restore report {body}")],
    }
}

//! The end-to-end harness: a node (data, backup and state folders in a temporary
//! directory), the real `aerie` binary spawned on it with a config file, and a small HTTP
//! client that speaks to it as the Panel does.
//!
//! `cargo test` does not build cdylibs or other packages' binaries: run `cargo build
//! --workspace` first (the README's test command does). Everything is found beside the
//! test executable, in the same target folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod links;
pub mod panel;
pub mod s3;
pub mod tls;
pub mod tree;
pub mod websocket;
pub mod wings;

/// How long a test waits for a backup to end before it calls the daemon hung.
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// The daemon's log filter in every test: info, plus the request lines (method, URI,
/// status; debug level), so that the check that no log line holds a JWT
/// ([`assert_no_jwt_logged`]) covers the requests of the whole suite.
pub const DAEMON_LOG_FILTER: &str = "info,aerie::request_log=debug,tower_http=debug";

/// The target folder this test runs from (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("target folder").to_path_buf()
}

/// The path of a built artifact in the target folder, which must exist.
pub fn artifact(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before `cargo test`",
        path.display()
    );
    path
}

/// The built `aerie` binary.
pub fn aerie_binary() -> PathBuf {
    artifact("aerie")
}

/// The built `wings` adapter.
pub fn wings_library() -> PathBuf {
    artifact("libaerie_adapter_wings.so")
}

/// A built abi_stable library that is not an aerie adapter.
pub fn foreign_library() -> PathBuf {
    artifact("libaerie_foreign_library.so")
}

/// The built fixture adapter (fails or panics on request).
pub fn fixture_library() -> PathBuf {
    artifact("libaerie_fixture_adapter.so")
}

/// A plugins file with the fixture adapter alone, named `name`, storing in `directory`, with
/// `extra` lines of config (`key: value`, e.g. `transient_failures: 2`).
pub fn fixture_plugins(name: &str, directory: &Path, extra: &[&str]) -> String {
    let mut plugins = format!(
        "adapters:\n  - name: {name}\n    library: {}\n    config:\n      directory: {}\n",
        fixture_library().display(),
        directory.display()
    );
    for line in extra {
        plugins.push_str(&format!("      {line}\n"));
    }
    plugins
}

/// A node's folders and config, in a temporary directory that outlives daemon restarts.
pub struct Node {
    /// Holds everything; removed when the node is dropped.
    pub dir: tempfile::TempDir,
    /// The node token.
    pub token: String,
    /// Extra YAML appended to the config (top-level keys).
    pub extra_config: String,
    /// Extra YAML lines inside `system:` (indented by two spaces).
    pub system_extra: String,
    /// Extra YAML lines inside `api:` (indented by two spaces).
    pub api_extra: String,
    /// The plugins file's content; `None` means no plugins file (bundled `wings`).
    pub plugins: Option<String>,
}

impl Node {
    /// A node with the bundled `wings` adapter and no extra config.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            token: "test-node-token-0123456789".into(),
            extra_config: String::new(),
            system_extra: String::new(),
            api_extra: String::new(),
            plugins: None,
        }
    }

    /// `system.data`: server roots live here.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("volumes")
    }

    /// `system.backup_directory`.
    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// Creates the root of server `id` and returns it.
    pub fn server(&self, id: &str) -> PathBuf {
        let root = self.data().join(id);
        std::fs::create_dir_all(&root).expect("server root");
        root
    }

    /// Writes the config (and plugins file) and returns the config's path.
    pub fn write_config(&self) -> PathBuf {
        let root = self.dir.path();
        let mut config = format!(
            "token_id: test\ntoken: {token}\napi:\n  host: 127.0.0.1\n  port: 0\n{api}\
             system:\n  root_directory: {root}/state\n  data: {data}\n  backup_directory: {backups}\n",
            token = self.token,
            api = self.api_extra,
            root = root.display(),
            data = self.data().display(),
            backups = self.backup_dir().display(),
        );
        config.push_str(&self.system_extra);
        if let Some(plugins) = &self.plugins {
            let path = root.join("plugins.yml");
            std::fs::write(&path, plugins).expect("plugins file");
            config.push_str(&format!("plugins: {}\n", path.display()));
        }
        config.push_str(&self.extra_config);
        let path = root.join("config.yml");
        std::fs::write(&path, config).expect("config file");
        path
    }

    /// Starts the daemon on this node and waits until it listens.
    pub fn start(&self) -> Daemon {
        let config = self.write_config();
        let log = self.dir.path().join("aerie.log");
        // The daemon's log goes straight to a file in the node folder: everything it logged
        // before announcing its address is there once the address is read.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(aerie_binary())
            .arg("--config")
            .arg(&config)
            .env("AERIE_ADAPTER_DIR", target_dir())
            .env("AERIE_LOG", DAEMON_LOG_FILTER)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn aerie");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut address, mut printed) = (None, Vec::new());
        for line in stdout.lines() {
            let line = line.expect("daemon stdout");
            if let Some(rest) = line.strip_prefix("aerie listening on ") {
                address = Some(rest.to_string());
                break;
            }
            printed.push(line);
        }
        let Some(base) = address else {
            let status = child.wait().expect("wait");
            panic!(
                "aerie exited ({status}) before listening:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Daemon {
            child,
            base,
            printed,
            token: self.token.clone(),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    /// Runs the daemon with this node's config expecting it to refuse to start; returns
    /// its exit code and everything it printed.
    pub fn start_expecting_failure(&self) -> (i32, String) {
        let config = self.write_config();
        let mut child = Command::new(aerie_binary())
            .arg("--config")
            .arg(&config)
            .env("AERIE_ADAPTER_DIR", target_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run aerie");
        // A daemon that starts when it should have refused would run forever: it is
        // killed after the guard, and the test fails with what it printed.
        let started = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait for aerie") {
                break status.code().unwrap_or(-1);
            }
            if started.elapsed() > HANG_GUARD {
                let _ = child.kill();
                let _ = child.wait();
                break 0;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().expect("aerie's output");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for line in printed.lines() {
            assert!(jwt_in(line).is_none(), "aerie printed a JWT: {line}");
        }
        (code, printed)
    }

    /// Runs the daemon with this node's config, asserts that it refuses to start (a non-zero
    /// exit), and returns the one line that says why: the line starting `aerie: `.
    pub fn refusal(&self) -> String {
        let (code, printed) = self.start_expecting_failure();
        assert_ne!(code, 0, "aerie started:\n{printed}");
        printed
            .lines()
            .find(|l| l.starts_with("aerie: "))
            .unwrap_or_else(|| panic!("no error line:\n{printed}"))
            .to_string()
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `aerie` process; killed when dropped, and then its log is checked: a line
/// holding a JWT fails the test ([`assert_no_jwt_logged`]).
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// What the daemon printed on stdout before its listening line (e.g. `aerie metrics on
    /// http://...` with `metrics.bind`).
    pub printed: Vec<String>,
    token: String,
    log: PathBuf,
    /// The client used for requests.
    pub client: reqwest::blocking::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON (`Value::Null` if empty or not JSON).
    pub json: Value,
}

impl Reply {
    fn read(response: reqwest::blocking::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            json,
        }
    }

    /// The `error` field of a Wings-shaped error body.
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not a {{\"error\": ...}} body: {:?}", self.json))
    }
}

impl Daemon {
    /// The daemon's process id, for reading its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request with the node token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request` and reads the reply.
    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Reply {
        Reply::read(request.send().expect("request"))
    }

    /// `POST /api/servers/{server}/backup` with a JSON body, as the Panel sends it.
    pub fn post_backup(&self, server: &str, body: &Value) -> Reply {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/api/servers/{server}/backup"),
            )
            .header("Accept", "application/json")
            .json(body),
        )
    }

    /// `POST /api/servers/{server}/backup/{uuid}/restore` with a JSON body.
    pub fn post_restore(&self, server: &str, uuid: &str, body: &Value) -> Reply {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/api/servers/{server}/backup/{uuid}/restore"),
            )
            .json(body),
        )
    }

    /// A websocket on `server`, authenticated with every permission, to watch its events.
    pub fn watch(&self, node: &Node, server: &str) -> websocket::Socket {
        let mut socket = websocket::connect(&self.base, server, None).unwrap();
        assert_eq!(
            socket
                .auth(&websocket::token(&node.token, server, &["*"], 600))
                .0,
            "auth success"
        );
        socket
    }

    /// Starts a backup of `server` with `adapter` and asserts the 202.
    pub fn start_backup(&self, server: &str, adapter: &str, uuid: &str, ignore: &str) {
        let reply = self.post_backup(
            server,
            &serde_json::json!({"adapter": adapter, "uuid": uuid, "ignore": ignore}),
        );
        assert_eq!(reply.status, 202, "{reply:?}\n{}", self.log());
    }

    /// `GET /api/servers/{server}/backup/{uuid}`.
    pub fn status(&self, server: &str, uuid: &str) -> Reply {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/api/servers/{server}/backup/{uuid}"),
        ))
    }

    /// Polls the status until the backup is no longer running, and returns it.
    pub fn wait_for_end(&self, server: &str, uuid: &str) -> Value {
        let start = Instant::now();
        loop {
            let reply = self.status(server, uuid);
            assert_eq!(reply.status, 200, "{reply:?}");
            if reply.json["state"] != "running" {
                return reply.json;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "backup {uuid} still running after {HANG_GUARD:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGKILL: a crash, with no chance to clean up.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Sends `signal` (SIGTERM, SIGINT) and returns at once.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits until the daemon has exited and returns its exit code (`None` when a signal
    /// ended it); fails the test, with the log, when it is still running after
    /// [`HANG_GUARD`].
    pub fn wait_for_exit(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for aerie") {
                return status.code();
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "aerie still running {HANG_GUARD:?} after it was told to stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the daemon's log holds `text` (a line it writes when it reaches a
    /// point); fails the test, with the log, after [`HANG_GUARD`].
    pub fn wait_for_log(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < HANG_GUARD,
                "no {text:?} in the log after {HANG_GUARD:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that failed already says why; this check is for the ones that pass.
        if !std::thread::panicking() {
            assert_no_jwt_logged(&self.log);
        }
    }
}

/// Fails the test when a line of the daemon log at `path` holds a JWT (a download link's
/// token, a websocket token): no token may reach a log. Read line by line, so a long log
/// costs no more memory than its longest line.
pub fn assert_no_jwt_logged(path: &Path) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let mut log = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match log.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if let Some(jwt) = jwt_in(&text) {
                    panic!(
                        "the daemon logged a JWT ({jwt}) in {}:\n{text}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// The first JWT in `text`, if any: `eyJ` (a JSON object's `{"` in base64url, how every
/// JWT header starts), more base64url, a dot, and base64url again.
pub fn jwt_in(text: &str) -> Option<&str> {
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("eyJ") {
        let start = from + found;
        let header_end = start
            + bytes[start..]
                .iter()
                .position(|b| !base64url(b))
                .unwrap_or(bytes.len() - start);
        let payload = bytes.get(header_end + 1..).unwrap_or_default();
        if bytes.get(header_end) == Some(&b'.') && payload.first().is_some_and(base64url) {
            let end = header_end
                + 1
                + payload
                    .iter()
                    .position(|b| !base64url(b) && *b != b'.')
                    .unwrap_or(payload.len());
            return Some(&text[start..end]);
        }
        from = start + 3;
    }
    None
}

/// `len` bytes that gzip cannot shrink (xorshift), the same on every run.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `system_extra` for a one-second `system.shutdown_timeout`: a stop cancels the jobs still
/// running after it (a held or stalled one), rather than after the default minute.
pub const SHORT_SHUTDOWN: &str = "  shutdown_timeout: 1\n";

/// `system_extra` for a 1 MiB/s write limit: a backup of a few MB of [`noise`] then runs for
/// seconds, long enough to be caught running.
pub const SLOW_WRITES: &str = "  backups:\n    write_limit: 1\n";

/// Archives `members` of `source` (paths relative to it) into `archive` with GNU tar and
/// gzip; `--no-recursion` first among them leaves out what directories hold.
pub fn gnu_tar_gz(archive: &Path, source: &Path, members: &[&str]) {
    let mut args = vec![
        "-czf",
        archive.to_str().expect("a UTF-8 path"),
        "-C",
        source.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(members);
    run("tar", &args, Path::new("."));
}

/// Makes a FIFO at `path`. The fixture adapter waits on one (a `<backup>.hold`, or one put
/// in a stored archive's place) until the test opens or writes its other end, which holds a
/// job where it is without a timer.
pub fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("cannot make the FIFO {}: {e}", path.display()));
}

/// A fresh canonical uuid.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs a command and returns its stdout; panics with its stderr when it fails.
pub fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A test that cannot run here (not root, no tmpfs) says so past the harness's capture and
/// adds a line to `$AERIE_TEST_SKIPS`, which `tests/run.sh` counts and prints at the end, so
/// that a skip is never a silent pass.
pub fn skip_visibly(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED {test}: {why}");
    let _ = writeln!(std::io::stderr(), "\n{line}\n");
    if let Some(path) = std::env::var_os("AERIE_TEST_SKIPS") {
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(log, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jwt_in;

    #[test]
    fn a_jwt_is_found_wherever_it_is_and_nothing_else_is() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln_-";
        assert_eq!(
            jwt_in(&format!("uri=/download/backup?token={jwt} x")),
            Some(jwt)
        );
        assert_eq!(jwt_in(jwt), Some(jwt));
        assert_eq!(jwt_in("token=[redacted] eyJ eyJabc. eyJabc"), None);
        assert_eq!(jwt_in("backup=2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"), None);
    }
}

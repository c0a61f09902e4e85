//! The `aerie` command's one-off tools, run as an operator runs them: `check`, `ws-token`
//! and `download-link` against a node's config (their output works against the running
//! daemon), and the embedded default's generated token, kept across runs.

use std::process::{Command, Output};

use aerie_e2e::websocket::connect;
use aerie_e2e::{aerie_binary, new_uuid, target_dir, Node};

const SERVER: &str = "7c9e1a3b-5d7f-4b9d-8f1b-3d5f7a9c1e3b";

/// Runs `aerie <args>` in `dir`.
fn aerie(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(aerie_binary())
        .args(args)
        .current_dir(dir)
        .env("AERIE_ADAPTER_DIR", target_dir())
        .output()
        .expect("run aerie")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn check_says_the_config_is_good_or_names_what_is_wrong() {
    let node = Node::new();
    let config = node.write_config();
    let config = config.to_str().unwrap();
    let good = aerie(node.dir.path(), &["check", "--config", config]);
    assert!(good.status.success(), "{good:?}");
    assert_eq!(stdout(&good), "aerie: the config and its adapters are good");

    let bad = node.dir.path().join("bad.yml");
    std::fs::write(&bad, "token: x\napi:\n  port: http\n").unwrap();
    let refused = aerie(
        node.dir.path(),
        &["check", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.starts_with("aerie: invalid config "), "{said}");
    assert!(said.contains("api.port:"), "{said}");
}

#[test]
fn ws_token_and_download_link_work_against_the_running_daemon() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    let config = node.write_config();
    let config = config.to_str().unwrap();
    let daemon = node.start();

    let minted = aerie(node.dir.path(), &["ws-token", SERVER, "--config", config]);
    assert!(minted.status.success(), "{minted:?}");
    let mut socket = connect(&daemon.base, SERVER, None).unwrap();
    assert_eq!(socket.auth(&stdout(&minted)).0, "auth success");

    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    daemon.wait_for_end(SERVER, &uuid);
    let link = aerie(
        node.dir.path(),
        &["download-link", SERVER, &uuid, "--config", config],
    );
    assert!(link.status.success(), "{link:?}");
    // The link names the configured address; the daemon listens on a port chosen at start.
    let link = stdout(&link);
    let (_, query) = link
        .split_once("/download/backup?")
        .expect("a download link");
    let response = daemon
        .client
        .get(format!("{}/download/backup?{query}", daemon.base))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored = std::fs::read(node.backup_dir().join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(response.bytes().unwrap().as_ref(), stored.as_slice());
}

#[test]
fn the_embedded_default_keeps_its_generated_token_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = aerie(dir.path(), &["ws-token", SERVER]);
    assert!(first.status.success(), "{first:?}");
    let saved = dir.path().join("aerie-data").join("token");
    let token = std::fs::read_to_string(&saved).unwrap().trim().to_string();
    assert!(token.len() >= 32, "a generated token: {token:?}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only the daemon's user may read it");
    let second = aerie(dir.path(), &["ws-token", SERVER]);
    assert_eq!(std::fs::read_to_string(&saved).unwrap().trim(), token);
    for minted in [&first, &second] {
        let claims: serde_json::Value =
            aerie::jwt::verify(&stdout(minted), token.as_bytes(), aerie::jwt::unix_now())
                .expect("signed with the saved token");
        assert_eq!(claims["server_uuid"], SERVER);
    }
}

/// The node's config with the port the daemon actually listens on (the node's says 0), so
/// that the CLI finds the running daemon as it would on a real node.
fn cli_config(node: &Node, daemon: &aerie_e2e::Daemon) -> std::path::PathBuf {
    let port = daemon.base.rsplit(':').next().unwrap();
    let config = std::fs::read_to_string(node.dir.path().join("config.yml")).unwrap();
    let config = config.replacen("  port: 0\n", &format!("  port: {port}\n"), 1);
    let path = node.dir.path().join("cli.yml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `aerie <args> --config <config>` in the node's folder.
fn aerie_with(node: &Node, config: &std::path::Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    aerie(node.dir.path(), &all)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

/// The one JSON value a `--json` command printed.
fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("not one JSON value ({e}): {output:?}"))
}

/// A server with a few files, one large enough for the backup to take several chunks.
fn server_with_files(node: &Node) -> std::path::PathBuf {
    let root = node.server(SERVER);
    std::fs::write(root.join("server.properties"), b"motd=hello\n").unwrap();
    std::fs::create_dir_all(root.join("world")).unwrap();
    std::fs::write(root.join("world/region.bin"), aerie_e2e::noise(3_000_000)).unwrap();
    root
}

#[test]
fn backup_commands_round_trip_through_the_running_daemon() {
    let node = Node::new();
    let root = server_with_files(&node);
    let daemon = node.start();
    let config = cli_config(&node, &daemon);

    let created = aerie_with(&node, &config, &["backup", "create", SERVER, "--json"]);
    assert!(created.status.success(), "{created:?}");
    let created = json_of(&created);
    let uuid = created["uuid"]
        .as_str()
        .expect("the backup's uuid")
        .to_string();
    assert_eq!(created["outcome"], "completed", "{created}");
    assert_eq!(created["server"], SERVER);
    assert_eq!(created["adapter"], "wings");
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let stored = std::fs::read(&archive).unwrap();
    assert_eq!(created["size"], stored.len() as u64);
    let sha1 = aerie_e2e::run("sha1sum", &[archive.to_str().unwrap()], node.dir.path());
    assert_eq!(created["sha1"], sha1.split_whitespace().next().unwrap());
    let members = aerie_e2e::run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path());
    assert!(
        members.lines().any(|m| m == "world/region.bin"),
        "{members}"
    );

    // Without --json: the outcome in words on stdout, progress as plain lines on stderr
    // (not a terminal here).
    let again = aerie_with(&node, &config, &["backup", "create", SERVER]);
    assert!(again.status.success(), "{again:?}");
    let said = stdout(&again);
    assert!(
        said.starts_with("aerie: backup ") && said.contains(" completed: "),
        "{said}"
    );
    let second = said.split_whitespace().nth(2).unwrap().to_string();
    assert!(
        stderr(&again).contains(&format!("backup {second}: ")),
        "a progress line: {again:?}"
    );

    // One server's list and every server's list hold both, newest first.
    for args in [
        vec!["backup", "list", SERVER, "--json"],
        vec!["backup", "list", "--json"],
    ] {
        let listed = aerie_with(&node, &config, &args);
        assert!(listed.status.success(), "{listed:?}");
        let uuids: Vec<String> = json_of(&listed)
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["uuid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(uuids, [second.clone(), uuid.clone()], "{args:?}");
    }
    let table = aerie_with(&node, &config, &["backup", "list"]);
    let table = stdout(&table);
    let row = table.lines().find(|l| l.starts_with(&uuid)).expect(&table);
    assert!(row.contains(SERVER) && row.contains("completed"), "{row}");

    let shown = aerie_with(&node, &config, &["backup", "show", &uuid, "--json"]);
    assert!(shown.status.success(), "{shown:?}");
    let shown = json_of(&shown);
    assert_eq!(shown["uuid"], uuid.as_str());
    assert_eq!(shown["server"], SERVER);
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["checksum"], created["sha1"]);
    let shown = aerie_with(&node, &config, &["backup", "show", &uuid]);
    assert!(
        stdout(&shown).contains(&format!("checksum: {}", created["sha1"].as_str().unwrap())),
        "{shown:?}"
    );

    // The server loses a file and gains another; a truncating restore puts it back as it was.
    std::fs::remove_file(root.join("server.properties")).unwrap();
    std::fs::write(root.join("stray.txt"), b"not in the backup").unwrap();
    let restored = aerie_with(
        &node,
        &config,
        &["backup", "restore", SERVER, &uuid, "--truncate", "--json"],
    );
    assert!(restored.status.success(), "{restored:?}");
    let restored = json_of(&restored);
    assert_eq!(restored["outcome"], "completed", "{restored}");
    assert_eq!(
        restored["message"],
        "Completed server restoration from local backup."
    );
    assert_eq!(
        std::fs::read(root.join("server.properties")).unwrap(),
        b"motd=hello\n"
    );
    assert_eq!(
        std::fs::read(root.join("world/region.bin")).unwrap(),
        aerie_e2e::noise(3_000_000)
    );
    assert!(!root.join("stray.txt").exists());

    let deleted = aerie_with(
        &node,
        &config,
        &["backup", "delete", SERVER, &uuid, "--json"],
    );
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(json_of(&deleted)["deleted"], true);
    assert!(!archive.exists());
    let gone = aerie_with(&node, &config, &["backup", "show", &uuid]);
    assert_eq!(gone.status.code(), Some(4), "{gone:?}");

    // The routes behind `list` and `show` want the node token, as every API route does.
    for path in ["/api/backups".to_string(), format!("/api/backups/{second}")] {
        let anonymous = daemon
            .client
            .get(format!("{}{path}", daemon.base))
            .send()
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }
}

#[test]
fn a_missing_backup_or_server_exits_4_and_a_refusal_5_with_the_daemons_words() {
    let node = Node::new();
    server_with_files(&node);
    let daemon = node.start();
    let config = cli_config(&node, &daemon);
    let missing = new_uuid();
    let backup_not_found =
        "aerie: the daemon answered 404: The requested backup was not found on this server.";
    for args in [
        vec!["backup", "show", missing.as_str()],
        vec!["backup", "delete", SERVER, missing.as_str()],
        vec!["backup", "restore", SERVER, missing.as_str()],
    ] {
        let answer = aerie_with(&node, &config, &args);
        assert_eq!(answer.status.code(), Some(4), "{args:?}: {answer:?}");
        assert_eq!(stderr(&answer), backup_not_found, "{args:?}");
    }
    let no_server = aerie_with(&node, &config, &["backup", "create", "no-such-server"]);
    assert_eq!(no_server.status.code(), Some(4), "{no_server:?}");
    assert_eq!(
        stderr(&no_server),
        "aerie: the daemon answered 404: The requested resource does not exist on this instance."
    );
    let refused = aerie_with(
        &node,
        &config,
        &["backup", "create", SERVER, "--adapter", "nowhere"],
    );
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    assert_eq!(
        stderr(&refused),
        "aerie: the daemon answered 400: The backup adapter \"nowhere\" is not configured on this node."
    );
}

#[test]
fn a_backup_that_fails_exits_6_with_its_reason() {
    let mut node = Node::new();
    server_with_files(&node);
    let store = node.dir.path().join("fixture-store");
    node.plugins = Some(format!(
        "adapters:\n  - name: flaky\n    library: {}\n    config:\n      directory: {}\n      fail_after_bytes: 1000000\n",
        aerie_e2e::fixture_library().display(),
        store.display()
    ));
    let daemon = node.start();
    let config = cli_config(&node, &daemon);
    let failed = aerie_with(
        &node,
        &config,
        &["backup", "create", SERVER, "--adapter", "flaky", "--json"],
    );
    assert_eq!(failed.status.code(), Some(6), "{failed:?}");
    let outcome = json_of(&failed);
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert!(outcome["sha1"].is_null(), "{outcome}");
    let reason = outcome["error"].as_str().unwrap();
    assert!(reason.contains("fixture storage full"), "{reason}");
    let said = stderr(&failed);
    assert!(
        said.starts_with(&format!(
            "aerie: backup {} failed: ",
            outcome["uuid"].as_str().unwrap()
        )) && said.contains("fixture storage full"),
        "{said}"
    );
}

#[test]
fn a_restore_that_fails_exits_6_with_the_daemons_message() {
    let mut node = Node::new();
    server_with_files(&node);
    // The backup holds 3 MB of file content; a restore may write 1 MB.
    node.system_extra = "  backups:\n    restore_max_bytes: 1000000\n".to_string();
    let daemon = node.start();
    let config = cli_config(&node, &daemon);
    let created = aerie_with(&node, &config, &["backup", "create", SERVER, "--json"]);
    let uuid = json_of(&created)["uuid"].as_str().unwrap().to_string();

    let failed = aerie_with(
        &node,
        &config,
        &["backup", "restore", SERVER, &uuid, "--json"],
    );
    assert_eq!(failed.status.code(), Some(6), "{failed:?}");
    let outcome = json_of(&failed);
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    let message = outcome["message"].as_str().unwrap();
    assert!(
        message.starts_with("Server restoration from local backup failed: ")
            && message.contains("1000000"),
        "{message}"
    );
    assert_eq!(
        stderr(&failed),
        format!("aerie: restore of backup {uuid} failed")
    );
}

#[test]
fn an_unreachable_daemon_exits_3_with_one_line_naming_its_address() {
    let node = Node::new();
    node.write_config();
    // A port nothing listens on: taken from the system, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(node.dir.path().join("config.yml")).unwrap();
    let config_path = node.dir.path().join("cli.yml");
    std::fs::write(
        &config_path,
        config.replacen("  port: 0\n", &format!("  port: {port}\n"), 1),
    )
    .unwrap();
    for args in [
        vec!["backup", "list"],
        vec!["backup", "create", SERVER],
        vec![
            "backup",
            "show",
            "7c9e1a3b-0000-4b9d-8f1b-3d5f7a9c1e3b",
            "--json",
        ],
    ] {
        let answer = aerie_with(&node, &config_path, &args);
        assert_eq!(answer.status.code(), Some(3), "{args:?}: {answer:?}");
        let said = stderr(&answer);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.starts_with(&format!(
                "aerie: no aerie daemon answers at http://127.0.0.1:{port}: "
            )) && said.contains("Connection refused"),
            "{said}"
        );
        assert!(stdout(&answer).is_empty(), "{answer:?}");
    }
}

#[test]
fn verify_says_whether_a_stored_backup_is_still_good() {
    let node = Node::new();
    server_with_files(&node);
    let daemon = node.start();
    let config = cli_config(&node, &daemon);
    let created = aerie_with(&node, &config, &["backup", "create", SERVER, "--json"]);
    let uuid = json_of(&created)["uuid"].as_str().unwrap().to_string();

    let good = aerie_with(
        &node,
        &config,
        &["backup", "verify", SERVER, &uuid, "--json"],
    );
    assert_eq!(good.status.code(), Some(0), "{good:?}");
    let result = json_of(&good);
    let mut keys: Vec<&str> = result
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["bytes", "checksum_matches", "entries", "error", "ok"]
    );
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["checksum_matches"], true);
    // server.properties, world/, world/region.bin.
    assert_eq!(result["entries"], 3, "{result}");
    assert!(result["error"].is_null());
    let text = aerie_with(&node, &config, &["backup", "verify", SERVER, &uuid]);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    assert!(
        stdout(&text).contains(" is good: checksum matches"),
        "{text:?}"
    );

    // One flipped byte in storage.
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let mut stored = std::fs::read(&archive).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    std::fs::write(&archive, stored).unwrap();
    let bad = aerie_with(
        &node,
        &config,
        &["backup", "verify", SERVER, &uuid, "--json"],
    );
    assert_eq!(bad.status.code(), Some(6), "{bad:?}");
    let result = json_of(&bad);
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["checksum_matches"], false, "{result}");

    let missing = aerie_with(&node, &config, &["backup", "verify", SERVER, &new_uuid()]);
    assert_eq!(missing.status.code(), Some(4), "{missing:?}");
}

#[test]
fn adapters_lists_each_adapter_and_says_which_do_not_work() {
    let mut node = Node::new();
    let s3 = aerie_e2e::artifact("libaerie_adapter_s3.so");
    node.plugins = Some(format!(
        "adapters:\n\
         \x20 - name: wings\n    library: {wings}\n\
         \x20 - name: s3\n    library: {s3}\n    config:\n      bucket: backups\n      endpoint: http://127.0.0.1:9\n\
         \x20 - name: s3-without-bucket\n    library: {s3}\n    config:\n      region: eu-west-1\n\
         \x20 - name: foreign\n    library: {foreign}\n",
        wings = aerie_e2e::wings_library().display(),
        s3 = s3.display(),
        foreign = aerie_e2e::foreign_library().display(),
    ));
    let config = node.write_config();
    let listed = aerie_with(&node, &config, &["adapters", "--json"]);
    assert_eq!(listed.status.code(), Some(1), "{listed:?}");
    assert_eq!(
        stderr(&listed).lines().last().unwrap(),
        "aerie: these adapters do not work: s3-without-bucket, foreign"
    );
    let listed = json_of(&listed);
    let by_name = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
            .clone()
    };
    let api_version = include_str!("../../adapter-api/Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    for (name, kind, library) in [
        ("wings", "wings", aerie_e2e::wings_library()),
        ("s3", "s3", s3.clone()),
    ] {
        let adapter = by_name(name);
        assert_eq!(adapter["kind"], kind, "{adapter}");
        assert_eq!(adapter["library"], library.to_str().unwrap());
        assert_eq!(adapter["abi_version"], api_version, "{adapter}");
        assert!(adapter["error"].is_null(), "{adapter}");
    }
    let no_bucket = by_name("s3-without-bucket");
    assert_eq!(no_bucket["kind"], "s3");
    let error = no_bucket["error"].as_str().unwrap();
    assert!(error.contains("bucket"), "{error}");
    let foreign = by_name("foreign");
    assert!(foreign["kind"].is_null(), "{foreign}");
    assert!(
        foreign["error"]
            .as_str()
            .unwrap()
            .starts_with("its adapter-api types do not match this aerie's (ABI mismatch"),
        "{foreign}"
    );

    // The same in words, one adapter a line.
    let text = aerie_with(&node, &config, &["adapters"]);
    let text = stdout(&text);
    let wings_line = format!(
        "wings: {} (kind wings, adapter-api {api_version}): ok",
        aerie_e2e::wings_library().display()
    );
    assert!(text.lines().any(|l| l == wings_line), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("s3-without-bucket: ") && l.contains("bucket")),
        "{text}"
    );
}

#[test]
fn log_format_json_writes_every_daemon_log_line_as_a_json_object() {
    let node = Node::new();
    server_with_files(&node);
    let config = node.write_config();
    let log = node.dir.path().join("daemon.json.log");
    let mut child = Command::new(aerie_binary())
        .args(["--log-format", "json", "--config", config.to_str().unwrap()])
        .env("AERIE_ADAPTER_DIR", target_dir())
        .env("AERIE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let base = lines
        .find_map(|l| {
            l.unwrap()
                .strip_prefix("aerie listening on ")
                .map(str::to_string)
        })
        .expect("the daemon listens");
    let port = base.rsplit(':').next().unwrap();
    let cli = node.dir.path().join("cli.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &cli,
        text.replacen("  port: 0\n", &format!("  port: {port}\n"), 1),
    )
    .unwrap();
    let created = aerie_with(&node, &cli, &["backup", "create", SERVER, "--json"]);
    assert!(created.status.success(), "{created:?}");
    let uuid = json_of(&created)["uuid"].as_str().unwrap().to_string();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    child.wait().unwrap();

    let written = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "listening" && l["level"] == "INFO"),
        "{written}"
    );
    // A job's lines carry its backup uuid and server, as fields of its span.
    let job = lines
        .iter()
        .find(|l| l["span"]["backup"] == uuid.as_str())
        .unwrap_or_else(|| panic!("no line of backup {uuid}:\n{written}"));
    assert_eq!(job["span"]["server"], SERVER, "{job}");
}

#[test]
fn over_https_the_cli_trusts_exactly_the_configured_certificate() {
    let mut node = Node::new();
    server_with_files(&node);
    // Self-signed, for a name the CLI does not dial (it connects to 127.0.0.1).
    let pair = rcgen::generate_simple_self_signed(vec!["node.example.com".to_string()]).unwrap();
    let cert = node.dir.path().join("cert.pem");
    let key = node.dir.path().join("key.pem");
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    node.api_extra = aerie_e2e::tls::ssl_config(&cert, &key);
    let daemon = node.start();
    assert!(daemon.base.starts_with("https://"), "{}", daemon.base);
    let config = cli_config(&node, &daemon);

    // The backup's request over HTTPS, its progress over wss.
    let created = aerie_with(&node, &config, &["backup", "create", SERVER, "--json"]);
    assert!(created.status.success(), "{created:?}");
    let created = json_of(&created);
    assert_eq!(created["outcome"], "completed", "{created}");
    let listed = aerie_with(&node, &config, &["backup", "list", SERVER, "--json"]);
    assert_eq!(json_of(&listed)[0]["uuid"], created["uuid"]);

    // A config naming another certificate does not trust this daemon.
    let other = rcgen::generate_simple_self_signed(vec!["node.example.com".to_string()]).unwrap();
    let other_cert = node.dir.path().join("other.pem");
    std::fs::write(&other_cert, other.cert.pem()).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let other_config = node.dir.path().join("other.yml");
    std::fs::write(
        &other_config,
        text.replace(cert.to_str().unwrap(), other_cert.to_str().unwrap()),
    )
    .unwrap();
    let address = daemon.base.clone();
    for args in [vec!["backup", "list"], vec!["backup", "create", SERVER]] {
        let refused = aerie_with(&node, &other_config, &args);
        assert_eq!(refused.status.code(), Some(3), "{args:?}: {refused:?}");
        assert_eq!(
            stderr(&refused),
            format!(
                "aerie: the daemon at {address} is not trusted: unexpected error: the daemon's \
                 certificate is not the one in api.ssl.cert (the CLI trusts only that certificate)"
            ),
        );
    }
}

//! Restores end to end: a round trip through backup and restore gives back the same tree;
//! archives made by GNU tar and shaped like Wings' restore; hostile archives write nothing
//! outside the server root; nothing is touched when the backup is missing; a
//! `download_url` to a private address is refused unless allow-listed.

use std::path::Path;

use aerie_e2e::links::serve_archive;
use aerie_e2e::links::LOOPBACK_ALLOWED;
use aerie_e2e::tree::{populate, snapshot, wipe};
use aerie_e2e::websocket::completion_message;
use aerie_e2e::websocket::Frame;
use aerie_e2e::{gnu_tar_gz, new_uuid, noise, run, Daemon, Node, Reply, SLOW_WRITES};
use serde_json::{json, Value};

const SERVER: &str = "6d8f0a2c-4e6b-4d8f-a0c2-e4f6a8b0c2d4";

fn post_restore(daemon: &Daemon, uuid: &str, body: &Value) -> Reply {
    daemon.post_restore(SERVER, uuid, body)
}

/// Restores `uuid` and returns every frame up to `backup restore completed`.
fn restore(node: &Node, daemon: &Daemon, uuid: &str, body: Value) -> Vec<Frame> {
    let mut socket = daemon.watch(node, SERVER);
    let reply = post_restore(daemon, uuid, &body);
    assert_eq!(reply.status, 202, "{reply:?}");
    socket.recv_until("backup restore completed")
}

#[test]
fn a_backup_restored_over_a_wiped_directory_gives_back_the_same_tree() {
    let node = Node::new();
    let root = node.server(SERVER);
    populate(&root);
    let before = snapshot(&root);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "completed");

    wipe(&root);
    std::fs::write(root.join("junk-after-backup"), b"junk").unwrap();
    let frames = restore(
        &node,
        &daemon,
        &uuid,
        json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert!(
        completion_message(&frames).starts_with("Completed server restoration"),
        "{frames:?}"
    );
    assert!(frames
        .iter()
        .any(|f| f.1.as_deref() == Some("(restoring): server.properties")));
    assert!(frames.iter().any(|f| f.0 == "backup restore progress"));
    assert_eq!(snapshot(&root), before);
}

#[test]
fn archives_made_by_gnu_tar_and_shaped_like_wings_restore_even_unregistered() {
    let node = Node::new();
    let root = node.server(SERVER);
    let source = tempfile::tempdir().unwrap();
    populate(source.path());
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    let daemon = node.start();

    // GNU tar, with directory entries and long names, copied into the backup directory as
    // if from a Wings node: the registry has never heard of it.
    let gnu = new_uuid();
    let archive = node.backup_dir().join(format!("{gnu}.tar.gz"));
    gnu_tar_gz(&archive, source.path(), &["."]);
    let frames = restore(
        &node,
        &daemon,
        &gnu,
        json!({"adapter": "wings", "truncate_directory": true}),
    );
    assert!(
        completion_message(&frames).starts_with("Completed"),
        "{frames:?}"
    );
    assert_eq!(snapshot(&root), snapshot(source.path()));

    // Wings' shape: regular files only, no directory entries.
    let wings = new_uuid();
    let archive = node.backup_dir().join(format!("{wings}.tar.gz"));
    gnu_tar_gz(
        &archive,
        source.path(),
        &[
            "--no-recursion",
            "server.properties",
            "world/region/r.0.0.mca",
        ],
    );
    wipe(&root);
    let frames = restore(
        &node,
        &daemon,
        &wings,
        json!({"adapter": "wings", "truncate_directory": false}),
    );
    assert!(
        completion_message(&frames).starts_with("Completed"),
        "{frames:?}"
    );
    assert_eq!(
        std::fs::read(root.join("world/region/r.0.0.mca")).unwrap(),
        vec![9u8; 100_000]
    );
}

/// Writes a gzipped tar with hostile entries, made with Python's tarfile (which, unlike
/// GNU tar, writes whatever names it is given).
fn hostile_archive(path: &Path, script: &str) {
    let program = format!(
        "import io, tarfile, sys\n\
         t = tarfile.open(sys.argv[1], 'w:gz')\n\
         def file(name, data=b'pwned'):\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         def link(name, target, kind=tarfile.SYMTYPE):\n    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; t.addfile(i)\n\
         {script}\n\
         t.close()\n"
    );
    run(
        "python3",
        &["-c", &program, path.to_str().unwrap()],
        Path::new("."),
    );
}

#[test]
fn hostile_archives_are_refused_and_nothing_lands_outside_the_root() {
    let node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("keep.txt"), b"keep").unwrap();
    let outside = node.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(node.backup_dir()).unwrap();
    let daemon = node.start();
    let escape_target = outside.join("escaped");
    // Each case, and the reason its restore must give.
    let cases = [
        (
            "dot-dot",
            "file('../../outside/escaped')".to_string(),
            "refusing \"../../outside/escaped\": it has a \"..\" component",
        ),
        (
            "absolute",
            format!("file('{}')", escape_target.display()),
            "it is an absolute path",
        ),
        (
            "through a symlink it made",
            format!(
                "link('link', '{}')\nfile('link/escaped')",
                outside.display()
            ),
            "refusing \"link/escaped\": its parent \"link\" is a symlink",
        ),
        (
            "hard link to /etc/passwd",
            "link('passwd', '/etc/passwd', tarfile.LNKTYPE)".into(),
            "refusing \"passwd\": its link target \"/etc/passwd\": it is an absolute path",
        ),
    ];
    for (case, script, reason) in cases {
        let uuid = new_uuid();
        hostile_archive(&node.backup_dir().join(format!("{uuid}.tar.gz")), &script);
        let frames = restore(&node, &daemon, &uuid, json!({"adapter": "wings"}));
        let message = completion_message(&frames);
        assert!(
            message.starts_with("Server restoration from local backup failed: "),
            "{case}: {message}"
        );
        assert!(message.contains(reason), "{case}: {message}");
        assert!(!escape_target.exists(), "{case}: wrote outside the root");
        assert_eq!(
            std::fs::read(root.join("keep.txt")).unwrap(),
            b"keep",
            "{case}"
        );
    }
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    assert!(!root.join("passwd").exists());
}

#[test]
fn a_missing_backup_is_404_and_the_directory_is_untouched_even_with_truncate() {
    let node = Node::new();
    let root = node.server(SERVER);
    populate(&root);
    let before = snapshot(&root);
    let daemon = node.start();
    let reply = post_restore(
        &daemon,
        &new_uuid(),
        &json!({"adapter": "wings", "truncate_directory": true, "download_url": ""}),
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.error(),
        "The requested backup was not found on this server."
    );
    assert_eq!(snapshot(&root), before);
    let reply = post_restore(&daemon, "not-a-uuid", &json!({"truncate_directory": true}));
    assert_eq!(reply.status, 400);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn a_download_url_to_loopback_is_refused_unless_allow_listed() {
    let source = tempfile::tempdir().unwrap();
    populate(source.path());
    let archive = source.path().join("../archive.tar.gz");
    gnu_tar_gz(&archive, source.path(), &["."]);
    let url = serve_archive(std::fs::read(&archive).unwrap());
    std::fs::remove_file(&archive).unwrap();

    let mut node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("keep.txt"), b"keep").unwrap();
    let daemon = node.start();
    let body = json!({"adapter": "s3", "truncate_directory": true, "download_url": url});
    let reply = post_restore(&daemon, &new_uuid(), &body);
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.error().contains("blocked address"), "{reply:?}");
    assert!(root.join("keep.txt").exists(), "untouched");
    drop(daemon);

    node.system_extra = LOOPBACK_ALLOWED.into();
    let daemon = node.start();
    let frames = restore(&node, &daemon, &new_uuid(), body);
    assert!(
        completion_message(&frames).contains("Completed"),
        "{frames:?}"
    );
    assert_eq!(snapshot(&root), snapshot(source.path()));
}

#[test]
fn a_second_restore_or_a_restore_during_a_backup_is_409() {
    let mut node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("noise.bin"), noise(3_000_000)).unwrap();
    // 1 MiB/s both ways: the jobs below run for seconds.
    node.system_extra = SLOW_WRITES.into();
    let daemon = node.start();
    let stored = new_uuid();
    daemon.start_backup(SERVER, "wings", &stored, "");
    // A backup is running (reserved before its 202): a restore must wait.
    let reply = post_restore(&daemon, &stored, &json!({"adapter": "wings"}));
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(daemon.wait_for_end(SERVER, &stored)["state"], "completed");

    let mut socket = daemon.watch(&node, SERVER);
    assert_eq!(
        post_restore(&daemon, &stored, &json!({"adapter": "wings"})).status,
        202
    );
    let again = post_restore(&daemon, &stored, &json!({"adapter": "wings"}));
    assert_eq!(again.status, 409, "{again:?}");
    let backup = daemon.post_backup(SERVER, &json!({"adapter": "wings", "uuid": new_uuid()}));
    assert_eq!(backup.status, 409, "{backup:?}");
    socket.recv_until("backup restore completed");
}

//! Backups end to end: the spawned daemon, real HTTP, the real `wings` adapter library, and
//! the archive checked with GNU tar, gzip and sha1sum.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use aerie_e2e::{new_uuid, noise, run, Node, SLOW_WRITES};
use serde_json::json;

const SERVER: &str = "1a7ce997-259b-452e-8b4e-cecc464142ca";

/// A server tree with everything an archive must get right.
fn populate(root: &Path) -> (String, String) {
    let write = |path: &str, content: &[u8]| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    };
    write(
        ".pteroignore",
        b"# comment\r\n*.log\r\n!keep.log\r\ncache/\r\n",
    );
    write("server.properties", b"motd=hello\n");
    write("world/level.dat", &[1, 2, 3, 4]);
    write("world/region/r.0.0.mca", &vec![7u8; 300_000]);
    write("logs/latest.log", b"noise");
    write("logs/keep.log", b"kept");
    write("cache/big.bin", &[0u8; 1000]);
    write("plugins/Ünïcødé 名前.yml", b"unicode: true\n");
    let long_dir = "d".repeat(90);
    let long_name = format!("{long_dir}/{}", "f".repeat(109));
    assert_eq!(long_name.len(), 200);
    write(&long_name, b"long");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    symlink("world/level.dat", root.join("level-link")).unwrap();
    std::fs::set_permissions(
        root.join("server.properties"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    (long_dir, long_name)
}

#[test]
fn a_backup_is_a_standard_tar_gz_that_gnu_tools_accept() {
    let node = Node::new();
    let root = node.server(SERVER);
    let (long_dir, long_name) = populate(&root);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());

    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let backups: Vec<_> = std::fs::read_dir(node.backup_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        backups,
        vec![format!("{uuid}.tar.gz")],
        "only the archive, no leftovers"
    );
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    run("gzip", &["-t", archive.to_str().unwrap()], node.dir.path());
    let sha1 = run("sha1sum", &[archive.to_str().unwrap()], node.dir.path());
    assert_eq!(status["checksum"], sha1.split_whitespace().next().unwrap());
    assert_eq!(status["checksum_type"], "sha1");
    assert_eq!(status["size"], std::fs::metadata(&archive).unwrap().len());
    assert_eq!(status["uuid"], uuid);
    assert_eq!(status["server"], SERVER);
    assert_eq!(status["adapter"], "wings");
    assert!(status["error"].is_null());

    let listing = run(
        "tar",
        &["-tzvf", archive.to_str().unwrap()],
        node.dir.path(),
    );
    let names: BTreeSet<String> = run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path())
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = [
        ".pteroignore",
        "empty/",
        "level-link",
        "logs/",
        "logs/keep.log",
        "plugins/",
        "plugins/Ünïcødé 名前.yml",
        "server.properties",
        "world/",
        "world/level.dat",
        "world/region/",
        "world/region/r.0.0.mca",
        &format!("{long_dir}/"),
        &long_name,
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(names, expected, "full listing:\n{listing}");
    assert!(
        listing.contains("level-link -> world/level.dat"),
        "the symlink is kept as a link:\n{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-r-----") && l.ends_with("server.properties")),
        "modes are kept:\n{listing}"
    );

    // Extracted by GNU tar, the tree is the original, contents and mtimes included.
    let out = tempfile::tempdir().unwrap();
    run(
        "tar",
        &[
            "-xzf",
            archive.to_str().unwrap(),
            "-C",
            out.path().to_str().unwrap(),
        ],
        node.dir.path(),
    );
    for path in [
        "world/region/r.0.0.mca",
        "plugins/Ünïcødé 名前.yml",
        long_name.as_str(),
    ] {
        assert_eq!(
            std::fs::read(out.path().join(path)).unwrap(),
            std::fs::read(root.join(path)).unwrap(),
            "{path}"
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let (original, restored) = (mtime(&root.join(path)), mtime(&out.path().join(path)));
        let drift = original
            .duration_since(restored)
            .unwrap_or_else(|e| e.duration());
        assert!(
            drift.as_secs() < 1,
            "{path}: mtime {original:?} vs {restored:?}"
        );
    }
    assert_eq!(
        std::fs::read_link(out.path().join("level-link")).unwrap(),
        Path::new("world/level.dat")
    );
}

#[test]
fn the_request_ignore_lines_replace_pteroignore() {
    let node = Node::new();
    let root = node.server(SERVER);
    populate(&root);
    let daemon = node.start();
    let uuid = new_uuid();
    daemon.start_backup(
        SERVER,
        "wings",
        &uuid,
        "world/region\nplugins/\n*.properties",
    );
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed", "{status}");
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    let names = run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path());
    assert!(
        names.contains("logs/latest.log"),
        ".pteroignore was not used:\n{names}"
    );
    assert!(names.contains("cache/big.bin"));
    assert!(!names.contains("world/region"), "{names}");
    assert!(!names.contains("plugins/"), "{names}");
    assert!(!names.contains("server.properties"), "{names}");
    assert!(names.contains("world/level.dat"), "{names}");
}

#[test]
fn the_backups_of_a_server_are_listed_newest_first() {
    let node = Node::new();
    std::fs::write(node.server(SERVER).join("a"), b"a").unwrap();
    node.server("other-server");
    let daemon = node.start();
    let first = new_uuid();
    let second = new_uuid();
    daemon.start_backup(SERVER, "wings", &first, "");
    daemon.wait_for_end(SERVER, &first);
    daemon.start_backup(SERVER, "wings", &second, "");
    daemon.wait_for_end(SERVER, &second);
    let reply = daemon.send(daemon.request(
        reqwest::Method::GET,
        &format!("/api/servers/{SERVER}/backups"),
    ));
    assert_eq!(reply.status, 200);
    let uuids: Vec<&str> = reply
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, vec![second.as_str(), first.as_str()]);
    // Another server's status endpoint does not show them.
    assert_eq!(daemon.status("other-server", &first).status, 404);
}

#[test]
fn ten_backups_at_once_all_complete() {
    let node = Node::new();
    let servers = ["server-a", "server-b"];
    for server in servers {
        let root = node.server(server);
        for i in 0..50 {
            std::fs::write(
                root.join(format!("file-{i}")),
                format!("{server} {i}").repeat(500),
            )
            .unwrap();
        }
    }
    let daemon = node.start();
    let started: Vec<(String, &str)> = (0..10)
        .map(|i| {
            let uuid = new_uuid();
            let server = servers[i % 2];
            daemon.start_backup(server, "wings", &uuid, "");
            (uuid, server)
        })
        .collect();
    for (uuid, server) in &started {
        let status = daemon.wait_for_end(server, uuid);
        assert_eq!(status["state"], "completed", "{status}");
        let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
        run("gzip", &["-t", archive.to_str().unwrap()], node.dir.path());
        let names = run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path());
        assert_eq!(names.lines().count(), 50);
    }
}

#[test]
fn files_that_change_size_during_the_backup_never_fail_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let node = Node::new();
    let root = node.server(SERVER);
    for i in 0..20 {
        std::fs::write(root.join(format!("churn-{i}.log")), vec![b'x'; 200_000]).unwrap();
    }
    // Noise ahead of the churning files, under a 1 MiB/s write limit, keeps the backup
    // busy while the files change.
    std::fs::write(root.join("a-noise.bin"), noise(2_000_000)).unwrap();
    let mut node = node;
    node.system_extra = SLOW_WRITES.into();
    let daemon = node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let root = root.clone();
        std::thread::spawn(move || {
            let mut grow = true;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..20 {
                    let size = if grow { 400_000 } else { 1_000 };
                    let _ = std::fs::write(root.join(format!("churn-{i}.log")), vec![b'y'; size]);
                }
                grow = !grow;
            }
        })
    };
    let uuid = new_uuid();
    daemon.start_backup(SERVER, "wings", &uuid, "");
    let status = daemon.wait_for_end(SERVER, &uuid);
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert_eq!(status["state"], "completed", "{status}\n{}", daemon.log());
    let archive = node.backup_dir().join(format!("{uuid}.tar.gz"));
    run("gzip", &["-t", archive.to_str().unwrap()], node.dir.path());
    let names = run("tar", &["-tzf", archive.to_str().unwrap()], node.dir.path());
    assert_eq!(names.lines().count(), 21, "{names}");
}

#[test]
fn a_running_or_stored_uuid_is_refused_also_after_a_restart() {
    let node = Node::new();
    let root = node.server(SERVER);
    std::fs::write(root.join("noise.bin"), noise(3_000_000)).unwrap();
    let daemon = node.start();
    let uuid = new_uuid();
    let body = json!({"adapter": "wings", "uuid": uuid, "ignore": ""});
    assert_eq!(daemon.post_backup(SERVER, &body).status, 202);
    // The uuid is reserved before the 202: an immediate second request always conflicts.
    let again = daemon.post_backup(SERVER, &body);
    assert_eq!(again.status, 409, "{again:?}");
    assert!(again.error().contains(&uuid));
    let status = daemon.wait_for_end(SERVER, &uuid);
    assert_eq!(status["state"], "completed");
    assert_eq!(daemon.post_backup(SERVER, &body).status, 409);
    assert_eq!(daemon.stop(), Some(0));

    let daemon = node.start();
    let after = daemon.post_backup(SERVER, &body);
    assert_eq!(after.status, 409, "{after:?}");
    let status = daemon.status(SERVER, &uuid);
    assert_eq!(status.json["state"], "completed");
}

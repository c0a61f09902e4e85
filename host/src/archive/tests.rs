//! The whole archive pipeline (walk, tar, parallel gzip, hashing and storing threads) into a
//! real sink across the adapter boundary (the fixture adapter linked in): the same tree
//! always makes the same bytes, at every level and thread count, and GNU tar gives the tree
//! back as it was.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use aerie_adapter_api::host::AdapterLibrary;
use aerie_adapter_api::HostContext;
use aerie_fixture_adapter::FixtureAdapter;
use serde_json::json;
use sha1::{Digest, Sha1};

use super::*;
use crate::archive::gzip::tests::random_bytes;
use crate::archive::gzip::BLOCK_SIZE;
use crate::plugins::Adapters;

/// A game server in small: hundreds of small text files over nested folders, files that
/// cross compression blocks (text and noise), empty files and folders, a symlink, modes.
fn game_server(root: &Path) {
    for i in 0..300 {
        let dir = root.join(format!("plugins/p{}/conf", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!("key-{i}: value {i}\n").repeat(1 + i * 7 % 300);
        std::fs::write(dir.join(format!("c{i:03}.yml")), text).unwrap();
    }
    std::fs::create_dir_all(root.join("world/region")).unwrap();
    for i in 0..3 {
        let region = random_bytes(i, BLOCK_SIZE + 4096 * i as usize + 77);
        std::fs::write(root.join(format!("world/region/r.{i}.mca")), region).unwrap();
    }
    let log = "[12:00:00 INFO]: a player joined the game\n".repeat(60_000);
    std::fs::write(root.join("latest.log"), log).unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::create_dir(root.join("empty-folder")).unwrap();
    symlink("world/region/r.0.mca", root.join("link")).unwrap();
    let private = root.join("server.properties");
    std::fs::write(&private, "motd=hello\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
}

/// The archive of `root`, made as a backup makes it, into the fixture adapter's sink in
/// `store`: its bytes as stored, checked against the SHA-1 and size the pipeline reported.
fn archive(root: &Path, store: &Path, compression: CompressionLevel, threads: usize) -> Vec<u8> {
    let host = HostContext {
        backup_directory: store.to_path_buf(),
        aerie_version: "test".into(),
    };
    let library = AdapterLibrary::linked::<FixtureAdapter>();
    let adapters = Adapters::linked(
        vec![("fixture", library, json!({"directory": store}))],
        &host,
    );
    let adapter = adapters.get("fixture").unwrap();
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let uuid = format!("archive-{}", MADE.fetch_add(1, Ordering::Relaxed));
    let mut sink = adapter.blocking().begin_backup("server", &uuid).unwrap();
    let server = ServerDir::open(root).unwrap();
    let settings = ArchiveSettings {
        compression,
        threads,
        write_limit: None,
    };
    let written = write_archive(
        &server,
        &IgnoreRules::parse(""),
        settings,
        &mut sink,
        &Progress::default(),
        &CancellationToken::new(),
    )
    .unwrap();
    sink.finish(&written.sha1, written.size).unwrap();
    let bytes = std::fs::read(store.join(format!("{uuid}.tar.gz"))).unwrap();
    assert_eq!(written.size, bytes.len() as u64);
    assert_eq!(written.sha1, hex::encode(Sha1::digest(&bytes)));
    bytes
}

/// Every path under `root` (sorted) with what it is: a folder and its mode, a file, its
/// mode and content, or a symlink and its target.
fn tree(root: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.is_dir() {
                folders.push(path.clone());
                format!("folder {mode:o}")
            } else if meta.is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let content = hex::encode(Sha1::digest(std::fs::read(&path).unwrap()));
                format!("file {mode:o} {content}")
            };
            found.push((path.strip_prefix(root).unwrap().to_path_buf(), what));
        }
    }
    found.sort();
    found
}

#[test]
fn the_same_tree_makes_the_same_bytes_at_every_level_and_thread_count_and_extracts_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    game_server(&root);
    let store = dir.path().join("store");
    for compression in [
        CompressionLevel::None,
        CompressionLevel::BestSpeed,
        CompressionLevel::BestCompression,
    ] {
        let first = archive(&root, &store, compression, 1);
        for threads in [1, 2, 4] {
            // Twice at each count, through fresh adapters and threads.
            for _ in 0..2 {
                let again = archive(&root, &store, compression, threads);
                assert!(
                    again == first,
                    "{compression:?} with {threads} threads made other bytes than with 1"
                );
            }
        }
        let archive_path = dir.path().join("archive.tar.gz");
        std::fs::write(&archive_path, &first).unwrap();
        let out = dir.path().join(format!("extracted-{compression:?}"));
        std::fs::create_dir(&out).unwrap();
        let tar = Command::new("tar")
            .arg("-xzf")
            .arg(&archive_path)
            .arg("-C")
            .arg(&out)
            .output()
            .unwrap();
        assert!(tar.status.success(), "{compression:?}: {tar:?}");
        assert_eq!(tree(&out), tree(&root), "{compression:?}");
    }
}

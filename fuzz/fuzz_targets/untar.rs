//! The restore's untar path on hostile archives: `extract_archive` must never panic and
//! never create or change anything outside the server root, whatever the archive holds.
//!
//! The first input byte picks the form: even, the rest is a tar stream whose header
//! checksums the harness fixes up and which it gzips (so that mutations reach the tar
//! parser and the extractor's rules); odd, the rest is the compressed stream as is (so the
//! gzip side is fuzzed too). Memory is bounded by libFuzzer's `-rss_limit_mb` (see
//! `run.sh`).
//!
//! The root sits four levels below a sandbox that also holds `outside/marker`; after each
//! run the sandbox outside the root must be exactly as it was, the marker unchanged and not
//! hard-linked, and the root still a real directory. Escapes through absolute symlink
//! targets take the same code path as relative ones (`..` targets reaching `outside/`),
//! which is what the check can see.

#![no_main]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use aerie::restore::extract::{extract_archive, ExtractOptions, ExtractProgress};
use aerie::tasks::CancellationToken;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

/// Size of a tar header block.
const BLOCK: usize = 512;

/// Where a tar header's checksum field lies (POSIX ustar: 8 bytes at offset 148).
const CHECKSUM: std::ops::Range<usize> = 148..156;

/// Content of the marker file outside the root.
const MARKER: &[u8] = b"outside the root; must never change\n";

/// Finished roots are moved aside and removed with `rm -rf` once this many have piled up:
/// an archive may nest thousands of directories, which `std::fs::remove_dir_all` recurses
/// into, and one process per run would slow the fuzzer down.
const ROOTS_PER_SWEEP: u64 = 256;

/// The directories of this process's runs.
struct Sandbox {
    /// Holds `outside/` and `d1/d2/d3/root`; nothing else may appear in it.
    base: PathBuf,
    /// The parent of each run's root.
    parent: PathBuf,
    /// Where finished roots wait to be removed (outside `base`).
    trash: PathBuf,
    /// Runs so far.
    runs: AtomicU64,
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let base = tmp.join(format!("aerie-fuzz-untar-{}", std::process::id()));
        let trash = tmp.join(format!("aerie-fuzz-untar-{}-trash", std::process::id()));
        remove_tree(&base);
        remove_tree(&trash);
        let parent = base.join("d1/d2/d3");
        fs::create_dir_all(&parent).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/marker"), MARKER).unwrap();
        fs::create_dir_all(&trash).unwrap();
        Sandbox {
            base,
            parent,
            trash,
            runs: AtomicU64::new(0),
        }
    })
}

fn remove_tree(path: &Path) {
    let status = Command::new("rm").arg("-rf").arg(path).status().unwrap();
    assert!(status.success(), "rm -rf {} failed", path.display());
}

/// Sets each header's checksum, walking from header to header by the entry sizes.
fn fix_checksums(mut tar: Vec<u8>) -> Vec<u8> {
    let mut at = 0;
    while at + BLOCK <= tar.len() {
        let block = &mut tar[at..at + BLOCK];
        if block.iter().all(|&b| b == 0) {
            at += BLOCK;
            continue;
        }
        block[CHECKSUM].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = tar::Header::from_byte_slice(block)
            .entry_size()
            .unwrap_or(0);
        let data = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        match usize::try_from(data) {
            Ok(data) if data <= tar.len() => at += BLOCK + data,
            _ => break,
        }
    }
    tar
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Panics unless `base` holds exactly `outside/marker` (intact) and `d1/d2/d3/root`.
fn check_outside(sandbox: &Sandbox, root: &Path) {
    let mut found = Vec::new();
    let mut pending = vec![sandbox.base.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == root {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path.clone());
            }
            let relative = path.strip_prefix(&sandbox.base).unwrap().to_owned();
            found.push((relative, meta.file_type().is_dir()));
        }
    }
    found.sort();
    let expected: Vec<(PathBuf, bool)> = [
        ("d1", true),
        ("d1/d2", true),
        ("d1/d2/d3", true),
        ("outside", true),
        ("outside/marker", false),
    ]
    .iter()
    .map(|&(path, is_dir)| (PathBuf::from(path), is_dir))
    .collect();
    assert_eq!(
        found, expected,
        "the restore changed the sandbox outside its root"
    );
    let marker = sandbox.base.join("outside/marker");
    let meta = fs::symlink_metadata(&marker).unwrap();
    assert!(
        meta.is_file() && meta.nlink() == 1,
        "the marker was replaced or hard-linked"
    );
    assert_eq!(fs::read(&marker).unwrap(), MARKER, "the marker was written");
    let root_meta = fs::symlink_metadata(root).unwrap();
    assert!(root_meta.is_dir(), "the root is no longer a directory");
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let compressed = if form % 2 == 0 {
        gzip(&fix_checksums(rest.to_vec()))
    } else {
        rest.to_vec()
    };
    let sandbox = sandbox();
    let root = sandbox.parent.join("root");
    fs::create_dir(&root).unwrap();
    let result = extract_archive(
        &compressed[..],
        &root,
        &ExtractOptions::default(),
        &ExtractProgress::default(),
        &mut |_| {},
        &CancellationToken::new(),
    );
    if let Err(err) = result {
        // Formatting the error (as the job's log line does) must not panic either.
        let _ = err.to_string();
    }
    check_outside(sandbox, &root);
    let run = sandbox.runs.fetch_add(1, Ordering::Relaxed);
    fs::rename(&root, sandbox.trash.join(run.to_string())).unwrap();
    if run % ROOTS_PER_SWEEP == ROOTS_PER_SWEEP - 1 {
        remove_tree(&sandbox.trash);
        fs::create_dir(&sandbox.trash).unwrap();
    }
});

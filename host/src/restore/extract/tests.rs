use super::dirs::{Missing, MAX_CACHED_DIRS};
use super::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::process::Command;
use std::sync::atomic::Ordering;

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Builder, EntryType, Header};

/// A fixed mtime with nanoseconds, different per `n`.
fn time(n: i64) -> (i64, u32) {
    (1_600_000_000 + n * 1000, 123_456_789 + n as u32)
}

fn set_mtime(path: &Path, (secs, nanos): (i64, u32)) {
    let name = CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = Mtime { secs, nanos }.timespecs();
    // SAFETY: `name` is a NUL-terminated path and `times` two live timespecs for the call.
    let result = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(result, 0, "utimensat {}", path.display());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A gzipped tar made by the `tar` crate's builder.
fn archive(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    gzip(&tar_bytes(build))
}

fn tar_bytes(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = Builder::new(Vec::new());
    build(&mut builder);
    builder.into_inner().unwrap()
}

fn header(kind: EntryType, size: u64, mode: u32, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_cksum();
    header
}

fn add_file(builder: &mut Builder<Vec<u8>>, path: &str, mode: u32, content: &[u8]) {
    let mut header = header(
        EntryType::Regular,
        content.len() as u64,
        mode,
        1_500_000_000,
    );
    builder.append_data(&mut header, path, content).unwrap();
}

fn add_symlink(builder: &mut Builder<Vec<u8>>, path: &str, target: &str) {
    let mut header = header(EntryType::Symlink, 0, 0o777, 1_500_000_000);
    builder.append_link(&mut header, path, target).unwrap();
}

/// A header written byte by byte, for names the builder refuses.
fn add_raw(builder: &mut Builder<Vec<u8>>, kind: EntryType, name: &str, link: &str, data: &[u8]) {
    let mut header = Header::new_gnu();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_500_000_000);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn extract_with(
    compressed: &[u8],
    root: &Path,
    options: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    extract_archive(
        compressed,
        root,
        options,
        &ExtractProgress::default(),
        &mut |_| {},
        &CancellationToken::new(),
    )
}

fn extract(compressed: &[u8], root: &Path) -> Result<ExtractSummary, ExtractError> {
    extract_with(compressed, root, &ExtractOptions::default())
}

/// A server root with a sibling `outside/x` that no archive may touch.
struct Sandbox {
    tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("x"), "precious").unwrap();
        Self { tmp, root, outside }
    }

    fn assert_outside_untouched(&self) {
        let mut around: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        around.sort();
        assert_eq!(around, ["outside", "root"]);
        let outside: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(outside, ["x"]);
        assert_eq!(
            std::fs::read_to_string(self.outside.join("x")).unwrap(),
            "precious"
        );
    }
}

/// What a tree holds, for comparing two of them.
#[derive(Debug, PartialEq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        nlink: u64,
        content: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
    },
}

fn snapshot(root: &Path, with_nanos: bool) -> BTreeMap<PathBuf, (Node, i64, i64)> {
    fn walk(
        root: &Path,
        dir: &Path,
        with_nanos: bool,
        out: &mut BTreeMap<PathBuf, (Node, i64, i64)>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            let mode = meta.mode() & 0o7777;
            let node = if meta.is_dir() {
                walk(root, &path, with_nanos, out);
                Node::Dir { mode }
            } else if meta.is_symlink() {
                Node::Symlink {
                    target: std::fs::read_link(&path).unwrap(),
                }
            } else {
                Node::File {
                    mode,
                    nlink: meta.nlink(),
                    content: std::fs::read(&path).unwrap(),
                }
            };
            let nanos = if with_nanos { meta.mtime_nsec() } else { 0 };
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(relative, (node, meta.mtime(), nanos));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, with_nanos, &mut out);
    out
}

/// A tree with what a game server has: nested and empty directories, links of every
/// kind, an executable, long and non-ASCII names, a few MiB of data; fixed mtimes.
fn make_tree(src: &Path) {
    let long_dir = format!("long/{}", "d".repeat(120));
    let long_file = format!("{long_dir}/{}.txt", "f".repeat(100));
    for dir in [
        "bin",
        "config/nested/deeper",
        "empty",
        "shared",
        "données",
        long_dir.as_str(),
    ] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    std::fs::write(src.join("bin/start.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("bin/start.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::hard_link(src.join("bin/start.sh"), src.join("bin/start-again.sh")).unwrap();
    std::fs::write(src.join("config/server.properties"), "motd=hello\n").unwrap();
    std::fs::set_permissions(
        src.join("config/server.properties"),
        PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(src.join("config/nested/deeper/deep.json"), "{}").unwrap();
    std::fs::write(src.join("données/café ☕.txt"), "crème").unwrap();
    std::fs::write(src.join(&long_file), "long").unwrap();
    std::fs::write(src.join("n".repeat(200)), "long name").unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(src.join("world.dat"), big).unwrap();
    let sparse = File::create(src.join("sparse.bin")).unwrap();
    sparse.set_len(2 * 1024 * 1024).unwrap();
    (&sparse).write_all(b"start").unwrap();
    std::fs::set_permissions(src.join("empty"), PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::set_permissions(src.join("shared"), PermissionsExt::from_mode(0o1777)).unwrap();
    symlink("config/server.properties", src.join("link-to-config")).unwrap();
    symlink("/nonexistent/absolute/target", src.join("dangling")).unwrap();
    symlink("../../outside", src.join("config/up")).unwrap();
    // Mtimes last, deepest first, so that nothing touches them afterwards.
    let mut paths: Vec<_> = snapshot(src, false).into_keys().collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for (n, path) in paths.iter().enumerate() {
        set_mtime(&src.join(path), time(n as i64));
    }
}

/// Archives `make_tree` with GNU tar in `format`, passing `sparse` (`--sparse` makes
/// GNU sparse entries in the gnu format), and checks the restored tree is identical.
fn gnu_tar_round_trip(format: &str, sparse: &[&str], with_nanos: bool) {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let archive_path = tmp.path().join("backup.tar.gz");
    let status = Command::new("tar")
        .arg(format!("--format={format}"))
        .args(sparse)
        .arg("-czf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let sandbox = Sandbox::new();
    let root_mode = sandbox.root.metadata().unwrap().mode();
    let mut seen = Vec::new();
    let progress = ExtractProgress::default();
    let summary = extract_archive(
        File::open(&archive_path).unwrap(),
        &sandbox.root,
        &ExtractOptions::default(),
        &progress,
        &mut |path| seen.push(path.to_path_buf()),
        &CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(
        snapshot(&sandbox.root, with_nanos),
        snapshot(&src, with_nanos)
    );
    // "./" is not restored: the root keeps its own mode.
    assert_eq!(sandbox.root.metadata().unwrap().mode(), root_mode);
    assert_eq!(summary.entries as usize, snapshot(&src, false).len());
    assert_eq!(summary.skipped, 0);
    assert_eq!(progress.entries.load(Ordering::Relaxed), summary.entries);
    assert_eq!(progress.bytes.load(Ordering::Relaxed), summary.bytes);
    assert!(summary.bytes > 3 * 1024 * 1024);
    assert!(seen.contains(&PathBuf::from("données/café ☕.txt")));
    assert!(seen.contains(&PathBuf::from("n".repeat(200))));
    let restored = |name: &str| sandbox.root.join(name).metadata().unwrap().ino();
    assert_eq!(restored("bin/start.sh"), restored("bin/start-again.sh"));
    sandbox.assert_outside_untouched();
}

#[test]
fn restores_a_gnu_tar_archive() {
    gnu_tar_round_trip("gnu", &["--sparse"], false);
}

#[test]
fn restores_a_pax_tar_archive_with_nanosecond_mtimes() {
    gnu_tar_round_trip("pax", &[], true);
}

#[test]
fn restores_a_wings_shaped_archive_creating_parents() {
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| {
        add_file(builder, "a/b/c.txt", 0o644, b"abc");
        add_file(builder, "a/top.txt", 0o600, b"top");
        add_file(builder, "server.jar", 0o644, b"jar");
        let mut header = header(EntryType::Regular, 3, 0o644, 1_500_000_000);
        builder
            .append_data(
                &mut header,
                Path::new(OsStr::from_bytes(b"raw-\xff.bin")),
                &b"raw"[..],
            )
            .unwrap();
    });
    let summary = extract(&compressed, &sandbox.root).unwrap();
    assert_eq!(
        summary,
        ExtractSummary {
            entries: 4,
            bytes: 12,
            skipped: 0
        }
    );
    let root = &sandbox.root;
    assert_eq!(std::fs::read(root.join("a/b/c.txt")).unwrap(), b"abc");
    assert_eq!(
        std::fs::read(root.join(OsStr::from_bytes(b"raw-\xff.bin"))).unwrap(),
        b"raw"
    );
    for dir in ["a", "a/b"] {
        assert_eq!(
            root.join(dir).metadata().unwrap().mode() & 0o7777,
            0o755,
            "{dir}"
        );
    }
    let top = root.join("a/top.txt").metadata().unwrap();
    assert_eq!((top.mode() & 0o7777, top.mtime()), (0o600, 1_500_000_000));
    sandbox.assert_outside_untouched();
}

#[test]
fn drops_setuid_and_setgid_but_keeps_sticky() {
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| {
        let mut dir = header(EntryType::Directory, 0, 0o3777, 1_500_000_000);
        builder.append_data(&mut dir, "tmp/", io::empty()).unwrap();
        add_file(builder, "tmp/suid", 0o6755, b"#!/bin/sh\n");
    });
    extract(&compressed, &sandbox.root).unwrap();
    let mode = |name: &str| sandbox.root.join(name).metadata().unwrap().mode() & 0o7777;
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("tmp/suid"), 0o755);
}

#[test]
fn chowns_everything_it_creates() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return crate::test_skips::skip_visibly(
            "restore::extract::tests::chowns_everything_it_creates",
            "not root: chown cannot be checked",
        );
    }
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| {
        let mut dir = header(EntryType::Directory, 0, 0o750, 1_500_000_000);
        builder
            .append_data(&mut dir, "plugins/", io::empty())
            .unwrap();
        add_file(builder, "plugins/x.jar", 0o644, b"x");
        add_file(builder, "implicit/parent/file", 0o644, b"y");
        add_symlink(builder, "plugins/link", "/etc/passwd");
    });
    let options = ExtractOptions {
        owner: Some((12345, 23456)),
        ..ExtractOptions::default()
    };
    extract_with(&compressed, &sandbox.root, &options).unwrap();
    for name in [
        "plugins",
        "plugins/x.jar",
        "implicit",
        "implicit/parent",
        "implicit/parent/file",
        "plugins/link",
    ] {
        let meta = sandbox.root.join(name).symlink_metadata().unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 23456), "{name}");
    }
    // The link itself was chowned, not its target.
    assert_eq!(Path::new("/etc/passwd").metadata().unwrap().uid(), 0);
    // Without an owner, what is created belongs to the daemon.
    let other = Sandbox::new();
    extract(&compressed, &other.root).unwrap();
    assert_eq!(
        other.root.join("plugins/x.jar").metadata().unwrap().uid(),
        0
    );
}

#[test]
fn accepts_multi_member_gzip() {
    let sandbox = Sandbox::new();
    let tar = tar_bytes(|builder| {
        add_file(builder, "first.txt", 0o644, &[b'1'; 5000]);
        add_file(builder, "second.txt", 0o644, &[b'2'; 5000]);
    });
    // Split inside the first file's data.
    let mut compressed = gzip(&tar[..2048]);
    compressed.extend(gzip(&tar[2048..]));
    let summary = extract(&compressed, &sandbox.root).unwrap();
    assert_eq!(summary.entries, 2);
    assert_eq!(
        std::fs::read(sandbox.root.join("second.txt")).unwrap(),
        [b'2'; 5000]
    );
}

#[test]
fn refuses_corrupt_and_truncated_archives() {
    let sandbox = Sandbox::new();
    let tar = tar_bytes(|builder| add_file(builder, "big.bin", 0o644, &[7; 100_000]));
    let mut compressed = gzip(&tar);
    let len = compressed.len();
    compressed[len - 8] ^= 0xff; // the CRC
    let err = extract(&compressed, &sandbox.root).unwrap_err();
    assert!(matches!(err, ExtractError::Archive { .. }), "{err}");
    let truncated = gzip(&tar[..512 + 50_000]);
    let err = extract(&truncated, &sandbox.root).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot read the archive in \"big.bin\""),
        "{err}"
    );
    let err = extract(b"not gzip at all", &sandbox.root)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read the archive at its start"),
        "{err}"
    );
}

#[test]
fn skips_special_files_and_global_headers() {
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| {
        let mut global = header(EntryType::XGlobalHeader, 0, 0o644, 0);
        let record = b"19 comment=hello\n";
        global.set_size(record.len() as u64);
        global.set_cksum();
        builder
            .append_data(&mut global, "pax_global_header", &record[..])
            .unwrap();
        let mut fifo = header(EntryType::Fifo, 0, 0o644, 0);
        builder.append_data(&mut fifo, "pipe", io::empty()).unwrap();
        let mut device = header(EntryType::Char, 0, 0o644, 0);
        builder
            .append_data(&mut device, "null", io::empty())
            .unwrap();
        add_file(builder, "kept", 0o644, b"k");
    });
    let summary = extract(&compressed, &sandbox.root).unwrap();
    assert_eq!(
        summary,
        ExtractSummary {
            entries: 1,
            bytes: 1,
            skipped: 2
        }
    );
    let names: Vec<_> = std::fs::read_dir(&sandbox.root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kept"]);
}

/// A token cancelled already.
fn cancelled() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

#[test]
fn stops_when_cancelled() {
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| add_file(builder, "file", 0o644, b"x"));
    let err = extract_archive(
        &compressed[..],
        &sandbox.root,
        &ExtractOptions::default(),
        &ExtractProgress::default(),
        &mut |_| {},
        &cancelled(),
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::Cancelled));
    assert!(!sandbox.root.join("file").exists());
}

/// Extracts a hostile archive and returns its error, checking nothing escaped.
fn refused_in(sandbox: &Sandbox, build: impl FnOnce(&mut Builder<Vec<u8>>)) -> String {
    let err = extract(&archive(build), &sandbox.root).unwrap_err();
    sandbox.assert_outside_untouched();
    err.to_string()
}

#[test]
fn refuses_dot_dot() {
    let sandbox = Sandbox::new();
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Regular, "../escape", "", b"evil");
    });
    assert_eq!(err, r#"refusing "../escape": it has a ".." component"#);
    let err = refused_in(&sandbox, |builder| {
        add_raw(
            builder,
            EntryType::Regular,
            "a/../../outside/x",
            "",
            b"evil",
        );
    });
    assert!(err.contains("\"..\""), "{err}");
}

#[test]
fn refuses_absolute_paths() {
    let sandbox = Sandbox::new();
    let marker = format!("/tmp/aerie-extract-abs-{}", std::process::id());
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Regular, &marker, "", b"evil");
    });
    assert_eq!(err, format!("refusing {marker:?}: it is an absolute path"));
    assert!(!Path::new(&marker).exists());
}

#[test]
fn refuses_writing_through_a_symlink_the_archive_made() {
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().unwrap().to_owned();
    let err = refused_in(&sandbox, |builder| {
        add_symlink(builder, "link", &outside);
        add_file(builder, "link/file", 0o644, b"evil");
    });
    assert_eq!(
        err,
        r#"refusing "link/file": its parent "link" is a symlink"#
    );
    // The link itself is restored as a link; only writing through it is refused.
    assert_eq!(
        std::fs::read_link(sandbox.root.join("link")).unwrap(),
        sandbox.outside
    );

    let marker = format!("aerie-extract-marker-{}", std::process::id());
    let err = refused_in(&sandbox, |builder| {
        add_symlink(builder, "tmp", "/tmp");
        add_file(builder, &format!("tmp/{marker}"), 0o644, b"evil");
    });
    assert!(err.ends_with(r#"its parent "tmp" is a symlink"#), "{err}");
    assert!(!Path::new("/tmp").join(&marker).exists());
}

#[test]
fn refuses_writing_through_a_symlink_already_in_the_root() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.root.join("a")).unwrap();
    symlink(&sandbox.outside, sandbox.root.join("a/pre")).unwrap();
    let err = refused_in(&sandbox, |builder| {
        add_file(builder, "a/pre/x", 0o644, b"evil");
    });
    assert_eq!(
        err,
        r#"refusing "a/pre/x": its parent "a/pre" is a symlink"#
    );
    let err = refused_in(&sandbox, |builder| {
        let mut dir = header(EntryType::Directory, 0, 0o755, 0);
        builder
            .append_data(&mut dir, "a/pre/sub/", io::empty())
            .unwrap();
    });
    assert_eq!(
        err,
        r#"refusing "a/pre/sub/": its parent "a/pre" is a symlink"#
    );
}

#[test]
fn refuses_hard_links_leaving_the_root() {
    let sandbox = Sandbox::new();
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Link, "passwd", "/etc/passwd", b"");
    });
    assert_eq!(
        err,
        r#"refusing "passwd": its link target "/etc/passwd": it is an absolute path"#
    );
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Link, "x", "../outside/x", b"");
    });
    assert_eq!(
        err,
        r#"refusing "x": its link target "../outside/x": it has a ".." component"#
    );
    let outside = sandbox.outside.to_str().unwrap().to_owned();
    let err = refused_in(&sandbox, |builder| {
        add_symlink(builder, "link", &outside);
        add_raw(builder, EntryType::Link, "x", "link/x", b"");
    });
    assert_eq!(
        err,
        r#"refusing "x": its link target "link/x" is unusable: "link" is a symlink"#
    );
    assert!(!sandbox.root.join("x").exists());
    assert_eq!(sandbox.outside.join("x").metadata().unwrap().nlink(), 1);
}

#[test]
fn restores_hard_links_inside_the_root() {
    let sandbox = Sandbox::new();
    let compressed = archive(|builder| {
        add_file(builder, "data/original", 0o644, b"same");
        add_raw(builder, EntryType::Link, "other/copy", "data/original", b"");
    });
    extract(&compressed, &sandbox.root).unwrap();
    let ino = |name: &str| sandbox.root.join(name).metadata().unwrap().ino();
    assert_eq!(ino("data/original"), ino("other/copy"));
    let err = extract(
        &archive(|builder| add_raw(builder, EntryType::Link, "y", "missing", b"")),
        &sandbox.root,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(r#"cannot restore "y": cannot link it to "missing": "#),
        "{err}"
    );
}

#[test]
fn replaces_a_symlink_at_the_final_component() {
    let sandbox = Sandbox::new();
    symlink(sandbox.outside.join("x"), sandbox.root.join("config.yml")).unwrap();
    symlink(&sandbox.outside, sandbox.root.join("dir")).unwrap();
    symlink(sandbox.outside.join("x"), sandbox.root.join("hard")).unwrap();
    let compressed = archive(|builder| {
        add_file(builder, "config.yml", 0o644, b"restored");
        let mut dir = header(EntryType::Directory, 0, 0o755, 0);
        builder.append_data(&mut dir, "dir/", io::empty()).unwrap();
        add_file(builder, "dir/x", 0o644, b"inside");
        add_raw(builder, EntryType::Link, "hard", "config.yml", b"");
    });
    extract(&compressed, &sandbox.root).unwrap();
    let root = &sandbox.root;
    let meta = root.join("config.yml").symlink_metadata().unwrap();
    assert!(meta.is_file());
    assert_eq!(std::fs::read(root.join("config.yml")).unwrap(), b"restored");
    assert!(root.join("dir").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read(root.join("dir/x")).unwrap(), b"inside");
    assert_eq!(
        meta.ino(),
        root.join("hard").symlink_metadata().unwrap().ino()
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn replaces_files_without_writing_through_their_hard_links() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.root.join("a"), "old").unwrap();
    std::fs::hard_link(sandbox.root.join("a"), sandbox.root.join("b")).unwrap();
    extract(
        &archive(|builder| add_file(builder, "a", 0o644, b"new")),
        &sandbox.root,
    )
    .unwrap();
    assert_eq!(std::fs::read(sandbox.root.join("a")).unwrap(), b"new");
    assert_eq!(std::fs::read(sandbox.root.join("b")).unwrap(), b"old");
}

#[test]
fn refuses_a_file_where_a_directory_is() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.root.join("world")).unwrap();
    std::fs::write(sandbox.root.join("plain"), "file").unwrap();
    let err = refused_in(&sandbox, |builder| add_file(builder, "world", 0o644, b"x"));
    assert_eq!(err, r#"refusing "world": a directory is in its place"#);
    let err = refused_in(&sandbox, |builder| {
        add_file(builder, "plain/x", 0o644, b"x")
    });
    assert_eq!(
        err,
        r#"refusing "plain/x": its parent "plain" is not a directory"#
    );
}

#[test]
fn refuses_entries_naming_nothing_or_the_root_itself() {
    let sandbox = Sandbox::new();
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Regular, ".", "", b"")
    });
    assert_eq!(err, r#"refusing ".": it names the server directory itself"#);
    let err = refused_in(&sandbox, |builder| {
        add_raw(builder, EntryType::Regular, "", "", b"")
    });
    assert_eq!(err, r#"refusing "": it has an empty path"#);
}

#[test]
fn handles_paths_deeper_than_the_descriptor_cache() {
    let sandbox = Sandbox::new();
    let deep = vec!["d"; MAX_CACHED_DIRS + 6].join("/");
    let outside = sandbox.outside.to_str().unwrap().to_owned();
    let err = refused_in(&sandbox, |builder| {
        add_file(builder, &format!("{deep}/one"), 0o644, b"1");
        add_file(builder, &format!("{deep}/two"), 0o644, b"2");
        add_symlink(builder, &format!("{deep}/link"), &outside);
        add_file(builder, &format!("{deep}/link/evil"), 0o644, b"evil");
    });
    assert_eq!(
        err,
        format!("refusing \"{deep}/link/evil\": its parent \"{deep}/link\" is a symlink")
    );
    let restored = sandbox.root.join(&deep);
    assert_eq!(std::fs::read(restored.join("one")).unwrap(), b"1");
    assert_eq!(std::fs::read(restored.join("two")).unwrap(), b"2");
}

// Bounds: what one archive can make a restore hold in memory or write on disk.

/// Tests measuring memory, and tests allocating tens of MiB, run one at a time: the
/// high-water mark measured is the process's.
static MEMORY_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`MEMORY_TESTS`] for the rest of the test.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    MEMORY_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// A gzipped tar written through the encoder as it is built, so that a huge archive
/// (a 64 MB name, a million entries) never sits uncompressed in the test's memory.
fn streamed_archive(build: impl FnOnce(&mut GzEncoder<Vec<u8>>)) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    build(&mut encoder);
    encoder.write_all(&[0; 1024]).unwrap();
    encoder.finish().unwrap()
}

/// Writes one header of `kind` with `size`, then `size` bytes of `fill` and the padding.
fn write_entry(out: &mut impl Write, kind: EntryType, name: &str, size: u64, fill: u8) {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_500_000_000);
    header.set_cksum();
    out.write_all(header.as_bytes()).unwrap();
    let chunk = vec![fill; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let padding = (512 - size % 512) % 512;
    out.write_all(&vec![0; padding as usize]).unwrap();
}

#[test]
fn refuses_a_huge_gnu_long_name_without_reading_it() {
    let _serial = one_at_a_time();
    const NAME: u64 = 64 * 1024 * 1024;
    let compressed = streamed_archive(|out| {
        write_entry(out, EntryType::GNULongName, "././@LongLink", NAME, b'a');
        write_entry(out, EntryType::Regular, "placeholder", 1, b'x');
    });
    let sandbox = Sandbox::new();
    let before = peak_rss();
    let err = extract(&compressed, &sandbox.root).unwrap_err();
    let grown = peak_rss() - before;
    eprintln!("the restore grew the process by {grown} bytes");
    assert!(
        matches!(
            err,
            ExtractError::NameTooLong {
                what: "name",
                size: NAME,
                limit: 65_536,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "refusing the archive at its start: an entry's name is 67108864 bytes long, \
         more than the 65536 a path may have in an archive"
    );
    assert!(
        grown < 24 * 1024 * 1024,
        "the restore grew by {grown} bytes"
    );
    sandbox.assert_outside_untouched();
}

/// A PAX extended header holding `records`.
fn add_pax(builder: &mut Builder<Vec<u8>>, records: &[u8]) {
    let mut header = header(EntryType::XHeader, records.len() as u64, 0o644, 0);
    header.set_cksum();
    builder.append(&header, records).unwrap();
}

/// One PAX record, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut length = body.len() + 1;
    while format!("{length}{body}").len() != length {
        length += 1;
    }
    format!("{length}{body}").into_bytes()
}

#[test]
fn refuses_pax_paths_over_path_max_and_oversized_pax_headers() {
    let sandbox = Sandbox::new();
    let long = "p/".repeat(40_000);
    let err = extract(
        &archive(|builder| {
            add_file(builder, "first", 0o644, b"1");
            add_pax(builder, &pax_record("path", &long));
            add_file(builder, "placeholder", 0o644, b"x");
        }),
        &sandbox.root,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::NameTooLong {
                what: "name",
                size: 80_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("refusing the archive after \"first\""),
        "{err}"
    );
    let err = extract(
        &archive(|builder| {
            add_pax(builder, &pax_record("comment", &"c".repeat(1024 * 1024)));
            add_file(builder, "placeholder", 0o644, b"x");
        }),
        &sandbox.root,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExtractError::HeaderTooLarge {
                what: "PAX header",
                limit: 262_144,
                ..
            }
        ),
        "{err}"
    );
    // A PAX path under the limit is restored.
    let fine = format!("{}file", "q/".repeat(1000));
    extract(
        &archive(|builder| {
            add_pax(builder, &pax_record("path", &fine));
            add_file(builder, "placeholder", 0o644, b"x");
        }),
        &sandbox.root,
    )
    .unwrap();
    assert_eq!(std::fs::read(sandbox.root.join(&fine)).unwrap(), b"x");
}

#[test]
fn shortens_long_names_in_messages() {
    let sandbox = Sandbox::new();
    let name = format!("../{}", "n".repeat(3000));
    let err = extract(
        &archive(|builder| {
            let mut header = header(EntryType::Regular, 1, 0o644, 0);
            builder.append_data(&mut header, "x", &b"x"[..]).unwrap();
            add_pax(builder, &pax_record("path", &name));
            add_file(builder, "placeholder", 0o644, b"x");
        }),
        &sandbox.root,
    )
    .unwrap_err()
    .to_string();
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
    assert!(err.ends_with(r#"…": it has a ".." component"#), "{err}");
}

#[test]
fn a_million_repeated_directory_entries_keep_memory_flat() {
    let _serial = one_at_a_time();
    const REPEATS: u32 = 1_000_000;
    let entry = |mode, mtime| {
        let mut dir = header(EntryType::Directory, 0, mode, mtime);
        dir.as_old_mut().name[..5].copy_from_slice(b"same/");
        dir.set_cksum();
        dir
    };
    let compressed = streamed_archive(|out| {
        let repeated = entry(0o750, 1_500_000_000);
        let mut file = header(EntryType::Regular, 1, 0o644, 0);
        file.as_old_mut().name[..9].copy_from_slice(b"same/file");
        file.set_cksum();
        for n in 0..REPEATS {
            out.write_all(repeated.as_bytes()).unwrap();
            if n == 10 {
                out.write_all(file.as_bytes()).unwrap();
                out.write_all(&[b'f'; 512]).unwrap();
            }
        }
        // The last entry for the directory wins.
        out.write_all(entry(0o700, 1_234_567_890).as_bytes())
            .unwrap();
    });
    let sandbox = Sandbox::new();
    let before = peak_rss();
    let summary = extract(&compressed, &sandbox.root).unwrap();
    let grown = peak_rss() - before;
    eprintln!("the restore grew the process by {grown} bytes");
    assert_eq!(summary.entries, u64::from(REPEATS) + 2);
    assert!(
        grown < 24 * 1024 * 1024,
        "the restore grew by {grown} bytes"
    );
    let meta = sandbox.root.join("same").metadata().unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o700, 1_234_567_890));
    assert_eq!(std::fs::read(sandbox.root.join("same/file")).unwrap(), b"f");
}

#[test]
fn directories_wait_only_along_the_current_path() {
    let sandbox = Sandbox::new();
    let root = File::open(&sandbox.root).unwrap();
    let mut dirs = DirCache::new(OwnedFd::from(root), None);
    let mut pending = PendingDirs::default();
    let parts = |path: &str| -> Vec<CString> {
        path.split('/')
            .map(|part| CString::new(part).unwrap())
            .collect()
    };
    let mtime = Mtime {
        secs: 1_400_000_000,
        nanos: 0,
    };
    for path in ["a", "a/b", "a/b", "a/b/c", "a/b", "a/d", "e"] {
        let parts = parts(path);
        pending.leave_for(&parts, &mut dirs).unwrap();
        dirs.open(&parts, Missing::Create).unwrap();
        pending.wait(&parts, 0o700, mtime);
        assert!(pending.waiting() <= 3, "{path}: {}", pending.waiting());
    }
    // "e" left "a" and everything under it: applied already.
    assert_eq!(pending.waiting(), 1);
    let mode = |name: &str| sandbox.root.join(name).metadata().unwrap().mode() & 0o7777;
    assert_eq!(
        (mode("a"), mode("a/b/c"), mode("a/d"), mode("e")),
        (0o700, 0o700, 0o700, 0o755)
    );
    pending.finish(&mut dirs).unwrap();
    assert_eq!(mode("e"), 0o700);
    assert_eq!(pending.waiting(), 0);
}

/// Three files of 100,000 bytes.
fn three_files() -> Vec<u8> {
    archive(|builder| {
        for name in ["one", "two", "three"] {
            add_file(builder, name, 0o644, &[b'z'; 100_000]);
        }
    })
}

#[test]
fn stops_at_restore_max_bytes() {
    let sandbox = Sandbox::new();
    let options = ExtractOptions {
        max_bytes: Some(250_000),
        ..ExtractOptions::default()
    };
    let err = extract_with(&three_files(), &sandbox.root, &options).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooLarge { limit: 250_000 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the archive holds more than the 250000 bytes of file content a restore may write \
         (system.backups.restore_max_bytes)"
    );
    // Nothing past the limit was written.
    let written: u64 = ["one", "two", "three"]
        .iter()
        .filter_map(|name| sandbox.root.join(name).metadata().ok())
        .map(|meta| meta.len())
        .sum();
    assert!(written <= 250_000, "{written}");
    // An archive of exactly the limit is restored.
    let options = ExtractOptions {
        max_bytes: Some(300_000),
        ..ExtractOptions::default()
    };
    let summary = extract_with(&three_files(), &Sandbox::new().root, &options).unwrap();
    assert_eq!(summary.bytes, 300_000);
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn stops_before_the_disk_is_full() {
    let _serial = one_at_a_time();
    const TOTAL: u64 = 10 * 1024 * 1024 * 1024;
    const FREE_ABOVE_RESERVE: u64 = 8 * 1024 * 1024;
    let sandbox = Sandbox::new();
    let reserve = budget::reserve_for(TOTAL);
    assert_eq!(reserve, 256 * 1024 * 1024);
    // A disk with 8 MiB above the reserve when the restore starts, filled by what it writes.
    let root = sandbox.root.clone();
    let options = ExtractOptions {
        space: SpaceProbe(std::sync::Arc::new(move |_| {
            Ok(FsSpace {
                available: reserve + FREE_ABOVE_RESERVE - bytes_under(&root),
                total: TOTAL,
            })
        })),
        ..ExtractOptions::default()
    };
    let compressed = archive(|builder| {
        for n in 0..4 {
            add_file(
                builder,
                &format!("dir/big-{n}"),
                0o644,
                &vec![b'b'; 4 * 1024 * 1024],
            );
        }
    });
    let err = extract_with(&compressed, &sandbox.root, &options).unwrap_err();
    match err {
        ExtractError::DiskFull {
            available,
            reserve: kept,
        } => {
            assert_eq!(kept, reserve);
            assert!(available > reserve, "{available}");
        }
        other => panic!("{other}"),
    }
    assert!(bytes_under(&sandbox.root) < FREE_ABOVE_RESERVE);
    // Without the probe's limit the same archive fits.
    extract(&compressed, &Sandbox::new().root).unwrap();
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(status) if status.success() => Some(Self { dir }),
            other => {
                crate::test_skips::skip_visibly(
                    "restore::extract::tests::stops_before_a_real_small_disk_is_full",
                    &format!("cannot mount a tmpfs ({other:?})"),
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn stops_before_a_real_small_disk_is_full() {
    let _serial = one_at_a_time();
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let root = tmpfs.dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let compressed = archive(|builder| {
        for n in 0..6 {
            add_file(
                builder,
                &format!("big-{n}"),
                0o644,
                &vec![7; 2 * 1024 * 1024],
            );
        }
    });
    let err = extract(&compressed, &root).unwrap_err();
    let reserve = budget::reserve_for(8 * 1024 * 1024);
    assert!(
        matches!(err, ExtractError::DiskFull { reserve: kept, .. } if kept == reserve),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the server's disk is nearly full: "),
        "{err}"
    );
}

/// A 64 MiB file with a few bytes at its start, middle and end, the rest holes.
fn make_sparse(path: &Path) {
    let file = File::create(path).unwrap();
    file.set_len(64 * 1024 * 1024).unwrap();
    for (offset, bytes) in [
        (0, &b"start"[..]),
        (32 << 20, b"middle"),
        ((64 << 20) - 3, b"end"),
    ] {
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset).unwrap();
    }
}

fn sparse_round_trip(args: &[&str]) {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_sparse(&src.join("world.img"));
    let archive_path = tmp.path().join("sparse.tar.gz");
    let status = Command::new("tar")
        .args(args)
        .arg("-czf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&src)
        .arg("world.img")
        .status()
        .unwrap();
    assert!(status.success());
    let sandbox = Sandbox::new();
    let summary = extract_archive(
        File::open(&archive_path).unwrap(),
        &sandbox.root,
        &ExtractOptions::default(),
        &ExtractProgress::default(),
        &mut |_| {},
        &CancellationToken::new(),
    )
    .unwrap();
    let restored = sandbox.root.join("world.img");
    let meta = restored.metadata().unwrap();
    assert_eq!(meta.len(), 64 * 1024 * 1024);
    assert!(
        meta.blocks() * 512 < 1024 * 1024,
        "{} blocks allocated",
        meta.blocks()
    );
    assert!(
        summary.bytes < 1024 * 1024,
        "{} bytes written",
        summary.bytes
    );
    let (mut ours, mut theirs) = (
        File::open(&restored).unwrap(),
        File::open(src.join("world.img")).unwrap(),
    );
    let (mut a, mut b) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    for _ in 0..64 {
        ours.read_exact(&mut a).unwrap();
        theirs.read_exact(&mut b).unwrap();
        assert!(a == b);
    }
}

#[test]
fn restores_gnu_sparse_files_with_their_holes() {
    sparse_round_trip(&["--format=gnu", "--sparse"]);
}

#[test]
fn restores_pax_sparse_files_with_their_holes() {
    for version in ["0.0", "0.1", "1.0"] {
        sparse_round_trip(&[
            "--format=pax",
            "--sparse",
            &format!("--sparse-version={version}"),
        ]);
    }
}

#[test]
fn a_tree_far_deeper_than_path_max_restores_until_a_name_over_the_limit() {
    let _serial = one_at_a_time();
    // 6,000 levels of 10-character names: past PATH_MAX after 373 levels, past the 64 KiB
    // name limit at level 5,958.
    const DEPTH: usize = 6_000;
    const LEVEL: &str = "dddddddddd";
    let compressed = {
        let encoder = GzEncoder::new(Vec::new(), Compression::fast());
        let mut builder = Builder::new(encoder);
        let mut path = String::new();
        for _ in 0..DEPTH {
            path.push_str(LEVEL);
            path.push('/');
            let mut dir = header(EntryType::Directory, 0, 0o755, 1_500_000_000);
            builder.append_data(&mut dir, &path, io::empty()).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    };
    let sandbox = Sandbox::new();
    let err = extract(&compressed, &sandbox.root).unwrap_err();
    // The first name over the limit: 5,958 levels of "dddddddddd/" make 65,538 bytes, and
    // the GNU long name block counts a NUL.
    assert!(
        matches!(
            err,
            ExtractError::NameTooLong {
                what: "name",
                size: 65_539,
                ..
            }
        ),
        "{err}"
    );
    // The levels before it were restored (walked by descriptor: their path is too long
    // for a system call).
    let mut dirs = DirCache::new(OwnedFd::from(File::open(&sandbox.root).unwrap()), None);
    let d = CString::new(LEVEL).unwrap();
    assert!(dirs.open(&vec![d.clone(); 5_957], Missing::Fail).is_ok());
    assert!(dirs.open(&vec![d; 5_958], Missing::Fail).is_err());
    sandbox.assert_outside_untouched();
}

#[test]
fn restores_a_tree_two_thousand_levels_deep() {
    let _serial = one_at_a_time();
    let compressed = archive(|builder| {
        let mut path = String::new();
        for _ in 0..2000 {
            path.push_str("d/");
            let mut dir = header(EntryType::Directory, 0, 0o700, 1_400_000_000);
            builder.append_data(&mut dir, &path, io::empty()).unwrap();
        }
        add_file(builder, &format!("{path}leaf"), 0o644, b"leaf");
    });
    let sandbox = Sandbox::new();
    extract(&compressed, &sandbox.root).unwrap();
    let deepest = sandbox.root.join("d/".repeat(2000));
    assert_eq!(std::fs::read(deepest.join("leaf")).unwrap(), b"leaf");
    for depth in [1, 1000, 2000] {
        let meta = sandbox.root.join("d/".repeat(depth)).metadata().unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.mtime()),
            (0o700, 1_400_000_000),
            "{depth}"
        );
    }
}

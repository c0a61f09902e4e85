//! The wings adapter through the real boundary code: archives appear whole or not at all.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use aerie_adapter_api::abi::LogLevel;
use aerie_adapter_api::host::{AdapterLibrary, LoadedAdapter, Logger};
use aerie_adapter_api::{ErrorKind, HostContext};
use aerie_adapter_wings::WingsAdapter;

const SERVER: &str = "8d5e4f3c-1f6e-4a53-9f7b-1b2a3c4d5e6f";
const BACKUP: &str = "0b6c9f3e-2d4a-4c8e-9a1b-7f6e5d4c3b2a";

struct Quiet;
impl Logger for Quiet {
    fn max_level(&self) -> LogLevel {
        LogLevel::ERROR
    }
    fn log(&self, _: LogLevel, _: &str, _: &str) {}
}

fn adapter(dir: &std::path::Path) -> LoadedAdapter {
    let host = HostContext {
        backup_directory: dir.to_path_buf(),
        aerie_version: "test".into(),
    };
    AdapterLibrary::linked::<WingsAdapter>()
        .instantiate(&serde_json::Value::Null, &host, Arc::new(Quiet))
        .expect("adapter")
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_finished_backup_is_one_private_file_named_by_its_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter(dir.path());
    let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
    sink.write(b"hello ").unwrap();
    assert!(
        names(dir.path()).iter().all(|n| n.starts_with('.')),
        "nothing visible under a final name before finish: {:?}",
        names(dir.path())
    );
    sink.write(b"world").unwrap();
    let stored = sink.finish("0123", 11).unwrap();
    assert_eq!(names(dir.path()), vec![format!("{BACKUP}.tar.gz")]);
    let path = dir.path().join(format!("{BACKUP}.tar.gz"));
    assert_eq!(stored.key, path.display().to_string());
    assert_eq!(stored.size, 11);
    assert!(stored.parts.is_empty() && !stored.panel_completes);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut body = String::new();
    adapter
        .open(SERVER, BACKUP, 6)
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body, "world");
    assert_eq!(adapter.stat(SERVER, BACKUP).unwrap().size, 11);
    let listed = adapter.list(SERVER).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup, BACKUP);

    adapter.delete(SERVER, BACKUP).unwrap();
    assert!(names(dir.path()).is_empty());
    let err = adapter.stat(SERVER, BACKUP).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NOT_FOUND);
    assert_eq!(
        adapter.delete(SERVER, BACKUP).unwrap_err().kind,
        ErrorKind::NOT_FOUND
    );
}

#[test]
fn abort_and_discard_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter(dir.path());
    let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
    sink.write(&[7; 4096]).unwrap();
    sink.abort().unwrap();
    assert!(names(dir.path()).is_empty());

    // A crash mid-backup leaves the temporary file; discard_incomplete removes it.
    std::fs::write(dir.path().join(format!(".{BACKUP}.tar.gz.partial")), b"x").unwrap();
    adapter.discard_incomplete(SERVER, BACKUP).unwrap();
    assert!(names(dir.path()).is_empty());
    adapter.discard_incomplete(SERVER, BACKUP).unwrap();
}

#[test]
fn a_stored_backup_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter(dir.path());
    let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
    sink.write(b"first").unwrap();
    sink.finish("", 5).unwrap();
    let err = adapter.begin_backup(SERVER, BACKUP).err().unwrap();
    assert_eq!(err.kind, ErrorKind::ALREADY_EXISTS);
    assert_eq!(
        std::fs::read(dir.path().join(format!("{BACKUP}.tar.gz"))).unwrap(),
        b"first"
    );
}

#[test]
fn names_that_could_leave_the_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter(dir.path());
    for name in ["../x", "a/b", "", ".hidden", "x\0y"] {
        let refusal = format!("{name:?} is not a valid backup name");
        let err = adapter.begin_backup(SERVER, name).err().expect("refused");
        assert_eq!(
            (err.kind, err.message.as_str()),
            (ErrorKind::OTHER, refusal.as_str())
        );
        let err = adapter.open(SERVER, name, 0).err().expect("refused");
        assert_eq!(
            (err.kind, err.message.as_str()),
            (ErrorKind::OTHER, refusal.as_str())
        );
    }
    assert!(names(dir.path()).is_empty());
}

#[test]
fn a_size_mismatch_at_finish_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = adapter(dir.path());
    let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
    sink.write(b"abc").unwrap();
    let err = sink.finish("", 4).expect_err("refused");
    assert!(
        err.message
            .ends_with("holds 3 bytes but the archive is 4 bytes"),
        "{}",
        err.message
    );
    assert!(names(dir.path()).is_empty());
}

#[test]
fn unknown_config_keys_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostContext {
        backup_directory: dir.path().to_path_buf(),
        aerie_version: "test".into(),
    };
    let err = AdapterLibrary::linked::<WingsAdapter>()
        .instantiate(
            &serde_json::json!({"directry": "/x"}),
            &host,
            Arc::new(Quiet),
        )
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::INVALID_CONFIG);
    assert!(err.message.contains("directry"), "{}", err.message);
}

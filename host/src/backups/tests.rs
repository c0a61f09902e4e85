//! The job lifecycle through the real adapter boundary: the fixture adapter linked in
//! (`AdapterLibrary::linked`), a real registry and event bus. A job is held running by the
//! fixture's `.hold` FIFO, never by a timer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aerie_adapter_api::host::AdapterLibrary;
use aerie_adapter_api::HostContext;
use aerie_fixture_adapter::FixtureAdapter;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::*;
use crate::config::CompressionLevel;
use crate::events::panel::Panel;
use crate::ids::{BackupId, ServerId};

const SERVER: &str = "0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7";
const UUID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

/// A node in a temporary directory: a server with a few files, the fixture adapter as
/// `fixture`, failing at its first write as `full`, and failing the first two calls of
/// `stat`, `begin_backup` and `open` as retryable as `flaky` (in its own directory), and a
/// Panel to queue reports for.
struct Node {
    dir: tempfile::TempDir,
    registry: Arc<Registry>,
    events: Arc<EventBus>,
    tasks: TaskGroup,
    backups: Arc<Backups>,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("volumes").join(SERVER);
        std::fs::create_dir_all(server.join("world")).unwrap();
        std::fs::write(server.join("server.properties"), b"motd=hello\n").unwrap();
        std::fs::write(server.join("world/level.dat"), vec![7u8; 100_000]).unwrap();
        let host = HostContext {
            backup_directory: dir.path().join("backups"),
            aerie_version: "test".into(),
        };
        let library = AdapterLibrary::linked::<FixtureAdapter>;
        let store = dir.path().join("store");
        let adapters = Adapters::linked(
            vec![
                ("fixture", library(), json!({"directory": store})),
                (
                    "full",
                    library(),
                    json!({"directory": store, "fail_after_bytes": 0}),
                ),
                (
                    "flaky",
                    library(),
                    json!({"directory": dir.path().join("flaky-store"), "transient_failures": 2}),
                ),
            ],
            &host,
        );
        let registry = Arc::new(Registry::open(&dir.path().join("state")).unwrap());
        let events = Arc::new(EventBus::default());
        // Never started: reports stay in the registry's queue, where the tests read them.
        let panel = Panel::new("http://127.0.0.1:9", "id", "token", Duration::from_secs(1));
        let notifier = Arc::new(Notifier::new(panel.unwrap(), registry.clone()));
        let tasks = TaskGroup::new();
        let backups = Arc::new(Backups::new(
            dir.path().join("volumes"),
            ArchiveSettings {
                compression: CompressionLevel::BestSpeed,
                threads: 1,
                write_limit: None,
            },
            registry.clone(),
            Arc::new(adapters),
            events.clone(),
            Arc::new(ServerLocks::default()),
            Some(notifier),
            Arc::new(Metrics::new(registry.clone(), [])),
            tasks.clone(),
        ));
        Self {
            dir,
            registry,
            events,
            tasks,
            backups,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Starts backup `uuid` of SERVER with `adapter`.
    async fn start(&self, adapter: &str, uuid: &str) -> Result<(), StartError> {
        let request = BackupRequest {
            adapter: adapter.into(),
            uuid: BackupId::parse(uuid).expect("a canonical uuid"),
            ignore: String::new(),
        };
        let server = ServerId::parse(SERVER).unwrap();
        let root = self
            .backups
            .server_root(&server)
            .expect("the server exists");
        self.backups.start(&server, root, request).await
    }

    /// Makes the fixture hold backup `uuid` in `begin_backup` until the returned write end
    /// is dropped; returns once the job is held there.
    fn hold(&self, uuid: &str) -> Hold {
        let fifo = self.store().join(format!("{uuid}.hold"));
        if !fifo.exists() {
            std::fs::create_dir_all(self.store()).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        }
        Hold(fifo)
    }

    /// Waits until backup `uuid`'s job has ended (at once when it is not running).
    async fn ended(&self, uuid: &str) {
        let ended = self
            .backups
            .running
            .lock()
            .unwrap()
            .get(uuid)
            .map(|job| job.ended.clone());
        if let Some(ended) = ended {
            ended.wait().await;
        }
    }

    fn record(&self, uuid: &str) -> BackupRecord {
        self.registry.get(uuid).unwrap().expect("recorded")
    }

    /// The queued Panel report about backup `uuid`, as JSON.
    fn report(&self, uuid: &str) -> Value {
        let queue = self.registry.notifications().unwrap();
        let mine: Vec<_> = queue.iter().filter(|n| n.backup == uuid).collect();
        assert_eq!(mine.len(), 1, "{queue:?}");
        assert_eq!(mine[0].path, format!("/backups/{uuid}"));
        serde_json::from_str(&mine[0].body).unwrap()
    }

    fn exists(&self, uuid: &str, suffix: &str) -> bool {
        self.store().join(format!("{uuid}.{suffix}")).exists()
    }
}

/// A held job's FIFO.
struct Hold(PathBuf);

impl Hold {
    /// Opens the write end: returns once the job has opened the read end (it is held).
    async fn held(&self) -> File {
        let fifo = self.0.clone();
        tokio::task::spawn_blocking(move || File::options().write(true).open(fifo))
            .await
            .unwrap()
            .unwrap()
    }
}

fn sha1_of(path: &Path) -> String {
    hex::encode(Sha1::digest(std::fs::read(path).unwrap()))
}

/// Lets other tasks run until `done` holds; a bounded loop, not a timer.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_runs_to_completed_with_its_checksum_and_size() {
    let node = Node::new();
    let events = node.events.subscribe(SERVER);
    node.start("fixture", UUID).await.unwrap();
    node.ended(UUID).await;

    let record = node.record(UUID);
    let stored = node.store().join(format!("{UUID}.tar.gz"));
    assert_eq!(record.state, State::Completed, "{record:?}");
    assert_eq!(record.checksum.as_deref(), Some(sha1_of(&stored).as_str()));
    assert_eq!(record.size, Some(std::fs::metadata(&stored).unwrap().len()));
    let report = node.report(UUID);
    assert_eq!(report["successful"], true);
    assert_eq!(report["checksum"], sha1_of(&stored));
    assert!(!node.exists(UUID, "aborted"));
    let mut names = Vec::new();
    while let Some(Some(event)) = futures_util::FutureExt::now_or_never(events.next()) {
        names.push(event.name);
    }
    assert_eq!(names.first().map(String::as_str), Some("backup started"));
    assert!(
        names.contains(&format!("backup completed:{UUID}")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_error_records_failed_and_aborts_the_sink() {
    let node = Node::new();
    node.start("full", UUID).await.unwrap();
    node.ended(UUID).await;

    let record = node.record(UUID);
    assert_eq!(record.state, State::Failed);
    let error = record.error.unwrap_or_default();
    assert!(
        error.starts_with("the backup storage is full: fixture storage full after 0 bytes"),
        "{error}"
    );
    assert!(node.exists(UUID, "aborted"), "the sink was aborted");
    assert!(!node.exists(UUID, "partial") && !node.exists(UUID, "tar.gz"));
    assert_eq!(node.report(UUID)["successful"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_records_failed_cancelled_and_aborts_the_sink() {
    let node = Node::new();
    let hold = node.hold(UUID);
    node.start("fixture", UUID).await.unwrap();
    let writer = hold.held().await;
    // What `delete` does to a running job first.
    node.backups.running.lock().unwrap()[UUID].cancel.cancel();
    drop(writer);
    node.ended(UUID).await;

    let record = node.record(UUID);
    assert_eq!(record.state, State::Failed);
    assert_eq!(record.error.as_deref(), Some("cancelled"));
    assert!(node.exists(UUID, "aborted"), "the sink was aborted");
    assert!(!node.exists(UUID, "partial") && !node.exists(UUID, "tar.gz"));
    assert_eq!(node.report(UUID)["successful"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_backup_cancels_it_and_forgets_it() {
    let node = Node::new();
    let events = node.events.subscribe(SERVER);
    let hold = node.hold(UUID);
    node.start("fixture", UUID).await.unwrap();
    let writer = hold.held().await;
    let backups = node.backups.clone();
    let deleting = tokio::spawn(async move { backups.delete(SERVER, UUID).await });
    until(|| {
        node.backups.running.lock().unwrap()[UUID]
            .cancel
            .is_cancelled()
    })
    .await;
    assert!(!deleting.is_finished(), "delete waits for the job to end");
    drop(writer);

    assert!(deleting.await.unwrap().unwrap(), "it was known");
    assert!(node.registry.get(UUID).unwrap().is_none());
    assert!(node.exists(UUID, "aborted"), "the sink was aborted");
    assert!(!node.exists(UUID, "partial") && !node.exists(UUID, "tar.gz"));
    let mut completed = None;
    while let Some(Some(event)) = futures_util::FutureExt::now_or_never(events.next()) {
        if event.name == "backup completed" {
            completed = event.arg;
        }
    }
    let completed: Value = serde_json::from_str(&completed.expect("published")).unwrap();
    assert_eq!(completed["is_successful"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_a_running_job_as_failed_before_it_returns() {
    let node = Node::new();
    let hold = node.hold(UUID);
    node.start("fixture", UUID).await.unwrap();
    let writer = hold.held().await;
    let tasks = node.tasks.clone();
    let stopping = tokio::spawn(async move { tasks.stop().await });
    until(|| node.tasks.enter().is_none()).await;
    assert!(!stopping.is_finished(), "the stop waits for the job");
    drop(writer);
    stopping.await.unwrap();

    let record = node.record(UUID);
    assert_eq!(record.state, State::Failed);
    assert_eq!(record.error.as_deref(), Some("cancelled"));
    assert!(node.exists(UUID, "aborted"), "the sink was aborted");
    assert_eq!(node.report(UUID)["successful"], false);
    let refused = node
        .start("fixture", "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e")
        .await;
    assert!(
        matches!(&refused, Err(StartError::ShuttingDown)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uuid_running_or_stored_is_a_conflict() {
    let node = Node::new();
    let hold = node.hold(UUID);
    node.start("fixture", UUID).await.unwrap();
    let writer = hold.held().await;
    let again = node.start("fixture", UUID).await;
    assert!(
        matches!(&again, Err(StartError::Conflict(u, "running")) if &**u == UUID),
        "{again:?}"
    );
    std::fs::remove_file(&hold.0).unwrap();
    drop(writer);
    node.ended(UUID).await;
    assert_eq!(node.record(UUID).state, State::Completed);

    let again = node.start("fixture", UUID).await;
    assert!(
        matches!(&again, Err(StartError::Conflict(u, "stored")) if &**u == UUID),
        "{again:?}"
    );
    let message = again.unwrap_err().to_string();
    assert_eq!(
        message,
        format!("A backup with the identifier {UUID} already exists on this node (stored).")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_stat_and_begin_backup_are_tried_again_and_the_backup_completes() {
    let node = Node::new();
    node.start("flaky", UUID).await.unwrap();
    node.ended(UUID).await;

    let record = node.record(UUID);
    assert_eq!(record.state, State::Completed, "{record:?}");
    assert_eq!(node.report(UUID)["successful"], true);
    // The fixture's own record: two failures each, then the call that succeeded.
    let calls = std::fs::read_to_string(node.dir.path().join("flaky-store/calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "stat",
            "stat",
            "stat",
            "begin_backup",
            "begin_backup",
            "begin_backup"
        ]
    );
}

//! Backups as jobs: checking a request, reserving its uuid in the registry, starting the job
//! (see [`job`]) as a task of the daemon, cancelling it when it is deleted, and what a
//! restart finds: backups that were running when the daemon stopped are marked failed and
//! their leftovers removed.

mod job;
mod progress;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aerie_adapter_api::{BackupInfo, ErrorKind};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::archive::{ArchiveSettings, Progress};
use crate::events::panel::Notifier;
use crate::events::reports::{self, Report};
use crate::events::EventBus;
use crate::ids::{BackupId, ServerId};
use crate::locks::ServerLocks;
use crate::metrics::Metrics;
use crate::plugins::{Adapter, Adapters, StorageError};
use crate::registry::{BackupRecord, NewNotification, Registry, ReserveError, State};
use crate::tasks::{CancellationToken, TaskGroup};
use job::Job;

/// What the Panel asks for: `POST /api/servers/{server}/backup`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BackupRequest {
    /// The name of the adapter to store the backup with.
    pub adapter: String,
    /// The backup's uuid, chosen by the Panel.
    pub uuid: BackupId,
    /// gitignore-style lines; empty means "use the server's .pteroignore".
    #[serde(default)]
    pub ignore: String,
}

/// Why a backup could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The adapter name is not configured.
    #[error("The backup adapter {0:?} is not configured on this node.")]
    UnknownAdapter(String),
    /// The uuid is running or stored already.
    #[error("A backup with the identifier {0} already exists on this node ({1}).")]
    Conflict(BackupId, &'static str),
    /// The server is being restored.
    #[error("This server is being restored; try again when the restore is done.")]
    Restoring,
    /// The adapter could not say whether the backup is stored already.
    #[error("{0}")]
    Storage(StorageError),
    /// The daemon is shutting down: running backups may finish, no new one starts.
    #[error("{}", crate::api_error::SHUTTING_DOWN)]
    ShuttingDown,
    /// Something on this side failed.
    #[error("The backup could not be started: {0}")]
    Internal(String),
}

/// Why [`Backups::locate`] could not tell where a backup is.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The registry could not be read.
    #[error("the registry: {0:#}")]
    Registry(anyhow::Error),
    /// No adapter found it, and these adapters (of the `asked`) failed to answer.
    #[error("{}", describe_failures(failures, *asked))]
    Storage {
        /// Each failure, in the order the adapters were asked.
        failures: Vec<StorageError>,
        /// How many adapters were asked in all.
        asked: usize,
    },
}

impl LocateError {
    /// The kind the request's answer follows: the first failing adapter's (a registry failure
    /// is OTHER, a 500).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry(_) => ErrorKind::OTHER,
            Self::Storage { failures, .. } => failures
                .first()
                .map_or(ErrorKind::OTHER, StorageError::kind),
        }
    }
}

fn describe_failures(failures: &[StorageError], asked: usize) -> String {
    let each: Vec<String> = failures.iter().map(ToString::to_string).collect();
    if failures.len() == asked {
        each.join("; ")
    } else {
        format!(
            "no adapter that answered holds the backup, and {} could not be asked: {}",
            failures.len(),
            each.join("; ")
        )
    }
}

/// A backup's status, as `GET /api/servers/{server}/backup/{uuid}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    uuid: String,
    server: String,
    adapter: String,
    state: State,
    checksum: Option<String>,
    checksum_type: &'static str,
    size: Option<u64>,
    bytes_done: u64,
    error: Option<String>,
    started_at: String,
    finished_at: Option<String>,
}

/// The status of an archive that only adapter `adapter`'s storage knows: stored whole, with
/// what the storage records (its SHA-1 when it keeps one, its size, when it was stored).
fn stored_only(adapter: &str, server: &str, info: BackupInfo) -> BackupStatus {
    let stored_at = time::OffsetDateTime::from_unix_timestamp(info.created_unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    BackupStatus {
        uuid: info.backup,
        server: server.to_string(),
        adapter: adapter.to_string(),
        state: State::Completed,
        checksum: info.sha1,
        checksum_type: "sha1",
        size: Some(info.size),
        bytes_done: info.size,
        error: None,
        started_at: stored_at.clone(),
        finished_at: Some(stored_at),
    }
}

/// An RFC 3339 time as a comparable instant; an unreadable one sorts as the oldest.
fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// A backup being made now.
struct RunningJob {
    /// How far it has come.
    progress: Arc<Progress>,
    /// Cancelled to stop it (when it is deleted; a child of the daemon's token, so shutdown
    /// cancels it too); the pipeline checks it between entries and chunks, then aborts its
    /// sink.
    cancel: CancellationToken,
    /// Tracks the job's task alone: its `wait` returns once the job has ended and recorded
    /// how.
    ended: TaskTracker,
}

/// All backups of this node: the registry, the running jobs and the way to start one.
pub struct Backups {
    /// Where server roots live: `<data>/<server id>`.
    data_directory: PathBuf,
    /// How archives are made.
    settings: ArchiveSettings,
    /// The durable record.
    registry: Arc<Registry>,
    /// The configured adapters.
    adapters: Arc<Adapters>,
    /// Where backup events are published.
    events: Arc<EventBus>,
    /// Keeps backups and restores of one server apart.
    locks: Arc<ServerLocks>,
    /// Delivers reports to the Panel; `None` when `remote` is unset.
    notifier: Option<Arc<Notifier>>,
    /// Counts every job: started, how it ended, bytes, duration.
    metrics: Arc<Metrics>,
    /// Jobs running now, by backup uuid.
    running: Mutex<HashMap<String, RunningJob>>,
    /// The daemon's jobs (backups and restores, one task each): every backup runs as one
    /// of them, under a child token; closed when the daemon begins to shut down.
    tasks: TaskGroup,
}

impl Backups {
    /// The backups of this node, over `registry` and `adapters`, publishing to `events`,
    /// sharing servers through `locks`, reporting through `notifier`, counted in `metrics`
    /// and running each job as one of `tasks` (a group that holds jobs only: a shutdown
    /// waits for it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data_directory: PathBuf,
        settings: ArchiveSettings,
        registry: Arc<Registry>,
        adapters: Arc<Adapters>,
        events: Arc<EventBus>,
        locks: Arc<ServerLocks>,
        notifier: Option<Arc<Notifier>>,
        metrics: Arc<Metrics>,
        tasks: TaskGroup,
    ) -> Self {
        Self {
            data_directory,
            settings,
            registry,
            adapters,
            events,
            locks,
            notifier,
            metrics,
            running: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// The root directory of `server`, if it exists as a real directory: a symlink in its
    /// place (to another server's folder, or anywhere) counts as no server, so that it is
    /// never backed up nor emptied through.
    pub fn server_root(&self, server: &ServerId) -> Option<PathBuf> {
        let root = self.data_directory.join(server.as_ref() as &str);
        let metadata = root.symlink_metadata().ok()?;
        metadata.file_type().is_dir().then_some(root)
    }

    /// Checks `request` and starts the backup of `server`, whose directory is `root` (from
    /// [`Backups::server_root`]), in the background; returns once it is reserved.
    pub async fn start(
        self: &Arc<Self>,
        server: &ServerId,
        root: PathBuf,
        request: BackupRequest,
    ) -> Result<(), StartError> {
        let adapter = self
            .adapters
            .get(&request.adapter)
            .ok_or_else(|| StartError::UnknownAdapter(request.adapter.clone()))?;
        match adapter.stat(server, &request.uuid).await {
            Ok(_) => return Err(StartError::Conflict(request.uuid, "stored")),
            Err(err) if err.kind() == ErrorKind::NOT_FOUND => {}
            Err(err) => return Err(StartError::Storage(err)),
        }
        // Held from here until the job is a tracked task: a shutdown that begins meanwhile
        // still waits for this job to end and record how.
        let place = self.tasks.enter().ok_or(StartError::ShuttingDown)?;
        let server_guard = self
            .locks
            .try_backup(server)
            .map_err(|_| StartError::Restoring)?;
        match self.registry.reserve(&request.uuid, server, &adapter.name) {
            Ok(()) => {}
            Err(ReserveError::Taken(State::Running)) => {
                return Err(StartError::Conflict(request.uuid, "running"))
            }
            Err(ReserveError::Taken(_)) => {
                return Err(StartError::Conflict(request.uuid, "stored"))
            }
            Err(ReserveError::Database(e)) => return Err(StartError::Internal(e)),
        }
        let running = RunningJob {
            progress: Arc::new(Progress::default()),
            cancel: self.tasks.child_token(),
            ended: TaskTracker::new(),
        };
        // A root span: the job outlives the request that started it.
        let span =
            tracing::info_span!(parent: None, "backup", backup = %request.uuid, server = %server);
        let uuid = request.uuid.clone();
        let job = Job {
            server: server.to_string(),
            root,
            request,
            adapter,
            progress: running.progress.clone(),
            cancel: running.cancel.clone(),
            server_guard,
        };
        let this = self.clone();
        let task = running
            .ended
            .track_future(async move { this.run(job).await }.instrument(span));
        running.ended.close();
        self.running
            .lock()
            .expect("jobs lock")
            .insert(uuid.to_string(), running);
        self.tasks.spawn(task);
        drop(place);
        Ok(())
    }

    /// Where backup `uuid` of `server` is stored: the adapter the registry recorded; for a
    /// backup the registry never saw (an archive copied over from a Wings node), the adapter
    /// the request `named` (only it, when it is loaded), else every adapter in the plugins
    /// file's order until one holds it. An
    /// adapter that fails (other than NOT_FOUND) is logged and skipped, so it never hides
    /// another's backup; the error says so only when no adapter found the backup.
    pub async fn locate(
        &self,
        server: &str,
        uuid: &str,
        named: Option<&str>,
    ) -> Result<Option<(Arc<Adapter>, BackupInfo)>, LocateError> {
        let record = self.registry.get(uuid).map_err(LocateError::Registry)?;
        let candidates: Vec<Arc<Adapter>> = match record {
            // The registry ties a backup to its server: another server's id finds nothing.
            Some(record) if record.server != server => return Ok(None),
            Some(record) => self.adapters.get(&record.adapter).into_iter().collect(),
            None => match named.and_then(|name| self.adapters.get(name)) {
                Some(adapter) => vec![adapter],
                None => self.adapters.all().cloned().collect(),
            },
        };
        let asked = candidates.len();
        let mut failures = Vec::new();
        for adapter in candidates {
            match adapter.stat(server, uuid).await {
                Ok(info) => {
                    if !failures.is_empty() {
                        tracing::info!(adapter = %adapter.name, "found the backup despite the failures above");
                    }
                    return Ok(Some((adapter, info)));
                }
                Err(err) if err.kind() == ErrorKind::NOT_FOUND => continue,
                Err(err) => {
                    tracing::warn!(adapter = %adapter.name, kind = err.kind().name(), backup = %uuid, server = %server, "cannot ask this adapter for the backup: {err}");
                    failures.push(err);
                }
            }
        }
        if failures.is_empty() {
            Ok(None)
        } else {
            Err(LocateError::Storage { failures, asked })
        }
    }

    /// Deletes backup `uuid` of `server`: a running one is cancelled first (its sink
    /// aborts); then the stored archive and the registry's record go. `Ok(false)` when
    /// neither the registry nor any adapter knows it.
    pub async fn delete(&self, server: &str, uuid: &str) -> anyhow::Result<bool> {
        let record = self.registry.get(uuid)?;
        if record.as_ref().is_some_and(|r| r.server != server) {
            return Ok(false);
        }
        let running = {
            let running = self.running.lock().expect("jobs lock");
            running.get(uuid).map(|job| {
                job.cancel.cancel();
                job.ended.clone()
            })
        };
        if let Some(ended) = running {
            tracing::info!(backup = %uuid, server = %server, "cancelling the running backup to delete it");
            ended.wait().await;
        }
        let stored = self.locate(server, uuid, None).await?;
        if let Some((adapter, _)) = &stored {
            let (s, u) = (server.to_string(), uuid.to_string());
            adapter
                .run(move |a| a.delete(&s, &u))
                .await
                .map_err(|e| StorageError::new(&adapter.name, e))?;
            tracing::info!(backup = %uuid, server = %server, adapter = %adapter.name, "deleted backup");
        }
        if record.is_some() {
            self.registry.remove(uuid)?;
        }
        Ok(record.is_some() || stored.is_some())
    }

    /// The report to queue about backup `uuid`, or `None` when there is no Panel to tell.
    fn report_for<'a>(&self, uuid: &'a str, report: &'a Report) -> Option<NewNotification<'a>> {
        self.notifier
            .as_ref()
            .map(|_| (uuid, report.path.as_str(), report.body.as_str()))
    }

    /// The status of backup `uuid` of `server`, if known.
    pub fn status(&self, server: &str, uuid: &str) -> anyhow::Result<Option<BackupStatus>> {
        Ok(self
            .registry
            .get(uuid)?
            .filter(|record| record.server == server)
            .map(|record| self.describe(record)))
    }

    /// The backups of `server`: the registry's, merged with what each adapter's `list` holds
    /// that the registry does not know (an archive copied over from another node), newest
    /// first by when each was started (for an archive only its storage knows, when it was
    /// stored); on a tie, the registry's before the storage's, then in the adapters' order
    /// (the plugins file's) and each adapter's own `list` order. An archive an
    /// adapter files under another server, or that the registry ties to another server, is
    /// left out. An adapter whose `list` fails is logged and skipped: the registry's entries
    /// still come back.
    pub async fn list(&self, server: &str) -> anyhow::Result<Vec<BackupStatus>> {
        let mut list: Vec<BackupStatus> = self
            .registry
            .list(server)?
            .into_iter()
            .map(|record| self.describe(record))
            .collect();
        let adapters: Vec<Arc<Adapter>> = self.adapters.all().cloned().collect();
        for adapter in adapters {
            let owner = server.to_string();
            let held = match adapter.run(move |a| a.list(&owner)).await {
                Ok(held) => held,
                Err(err) => {
                    let err = StorageError::new(&adapter.name, err);
                    tracing::warn!(adapter = %adapter.name, kind = err.kind().name(), server = %server, "cannot list the backups this adapter holds; listing the registry's only: {err}");
                    continue;
                }
            };
            for info in held {
                let elsewhere = info.server.as_deref().is_some_and(|s| s != server);
                if elsewhere || list.iter().any(|known| known.uuid == info.backup) {
                    continue;
                }
                if self.registry.get(&info.backup)?.is_some() {
                    continue;
                }
                list.push(stored_only(&adapter.name, server, info));
            }
        }
        // Stable: the registry's entries keep their order among equal times.
        list.sort_by_key(|status| std::cmp::Reverse(parse_time(&status.started_at)));
        Ok(list)
    }

    /// Every server's known backups, newest first (an operator's view, `aerie backup list`).
    pub fn list_all(&self) -> anyhow::Result<Vec<BackupStatus>> {
        Ok(self
            .registry
            .list_all()?
            .into_iter()
            .map(|record| self.describe(record))
            .collect())
    }

    /// The status of backup `uuid`, whatever its server, if known.
    pub fn find(&self, uuid: &str) -> anyhow::Result<Option<BackupStatus>> {
        Ok(self.registry.get(uuid)?.map(|record| self.describe(record)))
    }

    fn describe(&self, record: BackupRecord) -> BackupStatus {
        let live_bytes = (record.state == State::Running)
            .then(|| {
                let running = self.running.lock().expect("jobs lock");
                running
                    .get(&record.uuid)
                    .map(|job| job.progress.bytes_done.load(Ordering::Relaxed))
            })
            .flatten();
        BackupStatus {
            bytes_done: live_bytes.unwrap_or(record.bytes_done),
            uuid: record.uuid,
            server: record.server,
            adapter: record.adapter,
            state: record.state,
            checksum: record.checksum,
            checksum_type: "sha1",
            size: record.size,
            error: record.error,
            started_at: record.started_at,
            finished_at: record.finished_at,
        }
    }

    /// At start-up: backups the registry still shows as running were cut off by a stop;
    /// mark them failed and have their adapters remove what they left.
    pub async fn recover_interrupted(&self) -> anyhow::Result<()> {
        for record in self.registry.running()? {
            let span =
                tracing::info_span!("backup", backup = %record.uuid, server = %record.server);
            async {
                tracing::warn!(
                    "the daemon stopped while this backup was running; marking it failed"
                );
                let report = reports::backup(&record.uuid, None);
                self.registry.fail(
                    &record.uuid,
                    "the daemon stopped while the backup was running",
                    record.bytes_done,
                    self.report_for(&record.uuid, &report),
                )?;
                match self.adapters.get(&record.adapter) {
                    Some(adapter) => {
                        let (server, uuid) = (record.server.clone(), record.uuid.clone());
                        if let Err(err) = adapter
                            .run(move |a| a.discard_incomplete(&server, &uuid))
                            .await
                        {
                            tracing::warn!(
                                "cannot remove the unfinished backup's leftovers: {err}"
                            );
                        }
                    }
                    None => tracing::warn!(
                        adapter = %record.adapter,
                        "its adapter is no longer configured; leftovers were not removed"
                    ),
                }
                anyhow::Ok(())
            }
            .instrument(span)
            .await?;
        }
        Ok(())
    }
}

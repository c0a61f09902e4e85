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
use crate::plugins::{Adapter, Adapters};
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
    /// The daemon is shutting down: running backups may finish, no new one starts.
    #[error("{}", crate::api_error::SHUTTING_DOWN)]
    ShuttingDown,
    /// Something on this side failed.
    #[error("The backup could not be started: {0}")]
    Internal(String),
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
    /// Jobs running now, by backup uuid.
    running: Mutex<HashMap<String, RunningJob>>,
    /// The daemon's jobs (backups and restores, one task each): every backup runs as one
    /// of them, under a child token; closed when the daemon begins to shut down.
    tasks: TaskGroup,
}

impl Backups {
    /// The backups of this node, over `registry` and `adapters`, publishing to `events`,
    /// sharing servers through `locks`, reporting through `notifier` and running each job
    /// as one of `tasks` (a group that holds jobs only: a shutdown waits for it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data_directory: PathBuf,
        settings: ArchiveSettings,
        registry: Arc<Registry>,
        adapters: Arc<Adapters>,
        events: Arc<EventBus>,
        locks: Arc<ServerLocks>,
        notifier: Option<Arc<Notifier>>,
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
        let (uuid, owner) = (request.uuid.clone(), server.to_string());
        let stored = adapter.run(move |a| a.stat(&owner, &uuid)).await;
        if stored.is_ok() {
            return Err(StartError::Conflict(request.uuid, "stored"));
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

    /// Where backup `uuid` of `server` is stored: the adapter the registry recorded, or,
    /// for a backup the registry never saw (an archive copied over from a Wings node), any
    /// adapter that holds it.
    pub async fn locate(
        &self,
        server: &str,
        uuid: &str,
    ) -> anyhow::Result<Option<(Arc<Adapter>, BackupInfo)>> {
        let candidates: Vec<Arc<Adapter>> = match self.registry.get(uuid)? {
            // The registry ties a backup to its server: another server's id finds nothing.
            Some(record) if record.server != server => return Ok(None),
            Some(record) => self.adapters.get(&record.adapter).into_iter().collect(),
            None => self.adapters.all().cloned().collect(),
        };
        for adapter in candidates {
            let (s, u) = (server.to_string(), uuid.to_string());
            match adapter.run(move |a| a.stat(&s, &u)).await {
                Ok(info) => return Ok(Some((adapter, info))),
                Err(err) if err.kind == ErrorKind::NOT_FOUND => continue,
                Err(err) => anyhow::bail!("adapter {}: {err}", adapter.name),
            }
        }
        Ok(None)
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
        let stored = self.locate(server, uuid).await?;
        if let Some((adapter, _)) = &stored {
            let (s, u) = (server.to_string(), uuid.to_string());
            adapter
                .run(move |a| a.delete(&s, &u))
                .await
                .map_err(|e| anyhow::anyhow!("adapter {}: {e}", adapter.name))?;
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

    /// The known backups of `server`, newest first.
    pub fn list(&self, server: &str) -> anyhow::Result<Vec<BackupStatus>> {
        Ok(self
            .registry
            .list(server)?
            .into_iter()
            .map(|record| self.describe(record))
            .collect())
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

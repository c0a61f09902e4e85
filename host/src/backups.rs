//! Backups as jobs: checking a request, reserving its uuid in the registry, running the
//! archive pipeline on a blocking thread, and recording how it ended. Also what a restart
//! finds: backups that were running when the daemon stopped are marked failed and their
//! leftovers removed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aerie_adapter_api::host::LoadedAdapter;
use aerie_adapter_api::{BackupInfo, ErrorKind, StoredBackup};
use anyhow::anyhow;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::archive::{self, ArchiveSettings, IgnoreRules, Progress, ServerDir, Written};
use crate::events::panel::Notifier;
use crate::events::{self, EventBus, ProgressGate, PROGRESS_EVERY};
use crate::locks::{ServerGuard, ServerLocks};
use crate::plugins::{Adapter, Adapters};
use crate::registry::{BackupRecord, NewNotification, Registry, ReserveError, State};

/// What the Panel asks for: `POST /api/servers/{server}/backup`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BackupRequest {
    /// The name of the adapter to store the backup with.
    pub adapter: String,
    /// The backup's uuid, chosen by the Panel.
    pub uuid: String,
    /// gitignore-style lines; empty means "use the server's .pteroignore".
    #[serde(default)]
    pub ignore: String,
}

/// Why a backup could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such server on this node.
    #[error("The requested resource does not exist on this instance.")]
    ServerNotFound,
    /// The uuid is not a canonical UUID.
    #[error("The backup identifier must be a valid UUID.")]
    InvalidUuid,
    /// The adapter name is not configured.
    #[error("The backup adapter {0:?} is not configured on this node.")]
    UnknownAdapter(String),
    /// The uuid is running or stored already.
    #[error("A backup with the identifier {0} already exists on this node ({1}).")]
    Conflict(String, &'static str),
    /// The server is being restored.
    #[error("This server is being restored; try again when the restore is done.")]
    Restoring,
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
    /// Set to stop it (at shutdown, or when it is deleted); the pipeline checks it between
    /// entries and chunks, then aborts its sink.
    cancelled: Arc<AtomicBool>,
    /// Turns true once the job has ended and recorded how.
    ended: watch::Receiver<bool>,
}

/// Everything one backup job works with.
struct Job {
    server: String,
    root: PathBuf,
    request: BackupRequest,
    adapter: Arc<Adapter>,
    progress: Arc<Progress>,
    cancelled: Arc<AtomicBool>,
    /// Keeps restores off the server until the archive is made.
    server_guard: ServerGuard,
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
    /// Each job holds a clone; when every clone is gone after shutdown began, all jobs have
    /// ended (mini-redis' shutdown pattern).
    jobs_alive: Mutex<Option<mpsc::Sender<()>>>,
    /// Receives `None` once all jobs have ended.
    jobs_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// A server id as it may appear in a path: letters, digits, `-`, `_`, `.`, not starting with
/// a dot. Anything else (a `/`, `..`) can never name a server directory.
pub fn is_safe_server_id(server: &str) -> bool {
    !server.is_empty()
        && server.len() <= 128
        && !server.starts_with('.')
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// True for a canonical (lowercase, hyphenated) UUID, the form the Panel sends.
pub fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|u| u.hyphenated().to_string() == text)
}

impl Backups {
    /// The backups of this node, over `registry` and `adapters`, publishing to `events`,
    /// sharing servers through `locks` and reporting through `notifier`.
    pub fn new(
        data_directory: PathBuf,
        settings: ArchiveSettings,
        registry: Arc<Registry>,
        adapters: Arc<Adapters>,
        events: Arc<EventBus>,
        locks: Arc<ServerLocks>,
        notifier: Option<Arc<Notifier>>,
    ) -> Self {
        let (alive, done) = mpsc::channel(1);
        Self {
            data_directory,
            settings,
            registry,
            adapters,
            events,
            locks,
            notifier,
            running: Mutex::new(HashMap::new()),
            jobs_alive: Mutex::new(Some(alive)),
            jobs_done: tokio::sync::Mutex::new(done),
        }
    }

    /// The root directory of `server`, if the id is safe and the directory exists as a real
    /// directory: a symlink in its place (to another server's folder, or anywhere) counts
    /// as no server, so that it is never backed up nor emptied through.
    pub fn server_root(&self, server: &str) -> Option<PathBuf> {
        if !is_safe_server_id(server) {
            return None;
        }
        let root = self.data_directory.join(server);
        let metadata = root.symlink_metadata().ok()?;
        metadata.file_type().is_dir().then_some(root)
    }

    /// Checks `request` and starts the backup in the background; returns once it is
    /// reserved. The server must have been checked with [`Backups::server_root`].
    pub async fn start(
        self: &Arc<Self>,
        server: &str,
        request: BackupRequest,
    ) -> Result<(), StartError> {
        let root = self.server_root(server).ok_or(StartError::ServerNotFound)?;
        if !is_canonical_uuid(&request.uuid) {
            return Err(StartError::InvalidUuid);
        }
        let adapter = self
            .adapters
            .get(&request.adapter)
            .ok_or_else(|| StartError::UnknownAdapter(request.adapter.clone()))?;
        let (uuid, owner) = (request.uuid.clone(), server.to_string());
        let stored = adapter.run(move |a| a.stat(&owner, &uuid)).await;
        if stored.is_ok() {
            return Err(StartError::Conflict(request.uuid, "stored"));
        }
        let alive = self
            .jobs_alive
            .lock()
            .expect("jobs lock")
            .clone()
            .ok_or_else(|| StartError::Internal("the daemon is shutting down".into()))?;
        let guard = self
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
        let (ended_tx, ended) = watch::channel(false);
        let job = RunningJob {
            progress: Arc::new(Progress::default()),
            cancelled: Arc::new(AtomicBool::new(false)),
            ended,
        };
        let (progress, cancelled) = (job.progress.clone(), job.cancelled.clone());
        self.running
            .lock()
            .expect("jobs lock")
            .insert(request.uuid.clone(), job);
        let span = tracing::info_span!("backup", backup = %request.uuid, server = %server);
        let this = self.clone();
        let server = server.to_string();
        tokio::spawn(
            async move {
                let job = Job {
                    server,
                    root,
                    request,
                    adapter,
                    progress,
                    cancelled,
                    server_guard: guard,
                };
                this.run(job).await;
                let _ = ended_tx.send(true);
                drop(alive);
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn run(&self, job: Job) {
        let Job {
            server,
            root,
            request,
            adapter,
            progress,
            cancelled,
            server_guard,
        } = job;
        tracing::info!(adapter = %adapter.name, root = %root.display(), "backup started");
        let uuid = request.uuid.clone();
        self.events
            .publish(&server, events::backup_started(&uuid, &adapter.name));
        let started = Instant::now();
        let reporter = Arc::new(ProgressReporter::new(
            self.events.clone(),
            &server,
            &uuid,
            progress.clone(),
        ));
        let (stop_ticking, ticker) = reporter.clone().tick();
        let settings = self.settings;
        let job_reporter = reporter.clone();
        let job_server = server.clone();
        let outcome = adapter
            .run(move |a| {
                // A panic in the pipeline still ends the job (failed, recorded, reported),
                // rather than leaving it `running` until the next start.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    make_backup(
                        a,
                        &job_server,
                        &request,
                        &root,
                        settings,
                        &job_reporter,
                        &cancelled,
                    )
                }))
                .unwrap_or_else(|_| Err(anyhow!("an internal error (a panic) stopped the backup")))
            })
            .await;
        let _ = stop_ticking.send(());
        let _ = ticker.await;
        // The server is free again before anyone can see the backup has ended.
        drop(server_guard);
        let bytes_done = progress.bytes_done.load(Ordering::Relaxed);
        let report_path = format!("/backups/{uuid}");
        let (recorded, completed) = match &outcome {
            Ok((written, stored)) => {
                tracing::info!(
                    checksum = %written.sha1,
                    size = written.size,
                    key = %stored.key,
                    bytes_done,
                    seconds = started.elapsed().as_secs_f64(),
                    "backup completed"
                );
                let report = events::backup_report(Some((written, stored)));
                let recorded = self.registry.complete(
                    &uuid,
                    &written.sha1,
                    written.size,
                    bytes_done,
                    self.report_for(uuid.as_str(), report_path.as_str(), report.as_str()),
                );
                (recorded, events::backup_completed(&uuid, Some(written)))
            }
            Err(err) => {
                let reason = format!("{err:#}");
                tracing::error!(reason = %reason, "backup failed");
                let report = events::backup_report(None);
                let recorded = self.registry.fail(
                    &uuid,
                    &reason,
                    bytes_done,
                    self.report_for(uuid.as_str(), report_path.as_str(), report.as_str()),
                );
                (recorded, events::backup_completed(&uuid, None))
            }
        };
        if let Err(err) = recorded {
            tracing::error!("cannot record how the backup ended: {err:#}");
        }
        if let Some(notifier) = &self.notifier {
            notifier.wake();
        }
        for event in completed {
            self.events.publish(&server, event);
        }
        self.running.lock().expect("jobs lock").remove(&uuid);
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
                job.cancelled.store(true, Ordering::Relaxed);
                job.ended.clone()
            })
        };
        if let Some(mut ended) = running {
            tracing::info!(backup = %uuid, server = %server, "cancelling the running backup to delete it");
            let _ = ended.wait_for(|ended| *ended).await;
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
    fn report_for<'a>(
        &self,
        uuid: &'a str,
        path: &'a str,
        body: &'a str,
    ) -> Option<NewNotification<'a>> {
        self.notifier.as_ref().map(|_| (uuid, path, body))
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
                let report = events::backup_report(None);
                let path = format!("/backups/{}", record.uuid);
                self.registry.fail(
                    &record.uuid,
                    "the daemon stopped while the backup was running",
                    record.bytes_done,
                    self.report_for(record.uuid.as_str(), path.as_str(), report.as_str()),
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

    /// Stops every running backup (each aborts its sink and is recorded as failed) and waits
    /// for them to end; new backups are refused from now on.
    pub async fn shut_down(&self) {
        self.jobs_alive.lock().expect("jobs lock").take();
        for job in self.running.lock().expect("jobs lock").values() {
            job.cancelled.store(true, Ordering::Relaxed);
        }
        let _ = self.jobs_done.lock().await.recv().await;
    }
}

/// Publishes `backup progress` for one backup, as its [`ProgressGate`] allows.
struct ProgressReporter {
    events: Arc<EventBus>,
    server: String,
    uuid: String,
    progress: Arc<Progress>,
    gate: ProgressGate,
}

impl ProgressReporter {
    fn new(events: Arc<EventBus>, server: &str, uuid: &str, progress: Arc<Progress>) -> Self {
        Self {
            events,
            server: server.to_string(),
            uuid: uuid.to_string(),
            progress,
            gate: ProgressGate::default(),
        }
    }

    /// Publishes the current progress if it changed and the last event is old enough.
    fn publish(&self) {
        let done = self.progress.bytes_done.load(Ordering::Relaxed);
        let total = self.progress.bytes_total.load(Ordering::Relaxed);
        if self.gate.admit(done) {
            self.events.publish(
                &self.server,
                events::backup_progress(&self.uuid, done, total),
            );
        }
    }

    /// Publishes on a timer until the returned sender fires; await the handle to be sure
    /// the last event is out.
    fn tick(
        self: Arc<Self>,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if self.gate.opened() {
                            self.publish();
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
        });
        (stop, handle)
    }
}

/// The whole backup on a blocking thread: measure the tree, open the sink, stream the
/// archive into it, then finish it, or abort it on any error so nothing partial is left.
fn make_backup(
    adapter: &LoadedAdapter,
    server: &str,
    request: &BackupRequest,
    root: &std::path::Path,
    settings: ArchiveSettings,
    reporter: &ProgressReporter,
    cancelled: &AtomicBool,
) -> anyhow::Result<(Written, StoredBackup)> {
    let progress = &reporter.progress;
    // Opened once, never through a symlink: every later open is relative to it.
    let root = &ServerDir::open(root)?;
    let rules = IgnoreRules::for_backup(root.fd(), &request.ignore);
    let total = archive::measure_tree(root, &rules, cancelled);
    progress.bytes_total.store(total, Ordering::Relaxed);
    // The first event, at once: a progress bar appears with its honest total.
    reporter.publish();
    let mut sink = adapter
        .begin_backup(server, &request.uuid)
        .map_err(|e| anyhow!("storage could not start the backup: {e}"))?;
    let written =
        match archive::write_archive(root, &rules, settings, &mut sink, progress, cancelled) {
            Ok(written) => written,
            Err(err) => {
                if let Err(abort_err) = sink.abort() {
                    tracing::warn!("the storage could not discard the partial backup: {abort_err}");
                }
                let full = err.chain().find_map(|cause| {
                    cause
                        .downcast_ref::<std::io::Error>()
                        .filter(|io| io.kind() == std::io::ErrorKind::StorageFull)
                });
                return Err(match full {
                    Some(cause) => storage_full(cause),
                    None => err,
                });
            }
        };
    let stored = sink.finish(&written.sha1, written.size).map_err(|e| {
        if e.kind == ErrorKind::STORAGE_FULL {
            storage_full(&e)
        } else {
            anyhow!("storage could not complete the backup: {e}")
        }
    })?;
    Ok((written, stored))
}

/// A backup's error when the storage ran out of room: said first, with the storage's own
/// words (which name where), and what to do.
fn storage_full(cause: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "the backup storage is full: {cause}; the partial archive was discarded. Free space \
         there, or store backups elsewhere, and try again"
    )
}

//! Verification of stored backups: `POST /api/servers/{server}/backups/{uuid}/verify`
//! starts re-reading an archive through its adapter in the background (see [`check`]),
//! `GET` on the same path shows how far it is or how it came out; the last result of each
//! backup is kept in the registry, and [`periodic`] re-reads the least recently verified
//! backup on a timer. A verification runs as a task of the daemon: a stop cancels it and
//! nothing is concluded.

pub mod check;
pub mod periodic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::backups::Backups;
use crate::events::{self, EventBus, ProgressGate};
use crate::jwt::unix_now;
use crate::metrics::Metrics;
use crate::plugins::Adapter;
use crate::registry::{Registry, State, VerificationRecord};
use crate::tasks::{CancellationToken, TaskGroup};
use check::{Expected, Verdict};

/// Why a verification could not start, or has no result to show.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Neither the registry nor any adapter holds this backup of this server.
    #[error("{}", crate::wings_text::BACKUP_NOT_FOUND)]
    NotFound,
    /// The backup exists but was never verified (and is not being verified now).
    #[error("This backup has not been verified yet; POST to this address to verify it.")]
    NeverVerified,
    /// A verification of this backup is running.
    #[error("This backup is being verified already; GET this address to follow it.")]
    AlreadyRunning,
    /// The backup is still being made.
    #[error("This backup is still being made; verify it once it has completed.")]
    StillBeingMade,
    /// The daemon is stopping and takes no new work.
    #[error("This node is shutting down; try again when it is back.")]
    ShuttingDown,
    /// The storage could not say whether it holds the backup (unreachable, refusing).
    #[error("{0}")]
    Storage(crate::backups::LocateError),
    /// Something on this side failed.
    #[error("The verification could not be started: {0}")]
    Internal(String),
}

/// A verification as `GET .../verify` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum VerifyStatus {
    /// Being read now.
    Running {
        /// Archive bytes read so far.
        bytes: u64,
        /// The archive's recorded size.
        total: u64,
    },
    /// The last verification, ended.
    Done {
        /// When it ended, in Unix seconds.
        verified_at: i64,
        /// How it came out.
        result: Verdict,
    },
}

/// A verification running now.
struct Running {
    /// Its backup's server.
    server: String,
    /// Archive bytes read so far.
    bytes: AtomicU64,
    /// The archive's recorded size.
    total: u64,
}

/// Everything one verification works with.
struct Job {
    server: String,
    uuid: String,
    adapter: Arc<Adapter>,
    expected: Expected,
    read_limit: Option<u64>,
    running: Arc<Running>,
    cancel: CancellationToken,
}

/// The verifications of this node: the running ones, and the way to start one.
pub struct Verifications {
    /// Where backups are found (their adapter and stored size).
    backups: Arc<Backups>,
    /// Where recorded checksums are read and results kept.
    registry: Arc<Registry>,
    /// Where progress and results are published.
    events: Arc<EventBus>,
    /// Verifications running now, by backup uuid.
    running: Mutex<HashMap<String, Arc<Running>>>,
    /// Counts verification results by adapter and outcome.
    metrics: Arc<Metrics>,
    /// The daemon's tasks: every verification runs as one of them, under a child token.
    tasks: TaskGroup,
    /// Places for verifications reading at once ([`MAX_READING`]); the others wait.
    slots: Semaphore,
}

/// Verifications that read at once. Each is one sequential stream from storage; more at a
/// time would only make them compete for the same disk or link, and a client could
/// otherwise start one blocking thread per stored backup.
const MAX_READING: usize = 2;

impl Verifications {
    /// The verifications of this node, reading through `backups`, keeping results in
    /// `registry`, publishing to `events`, counted in `metrics` and running each as one of
    /// `tasks`.
    pub fn new(
        backups: Arc<Backups>,
        registry: Arc<Registry>,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
        tasks: TaskGroup,
    ) -> Self {
        Self {
            backups,
            registry,
            events,
            metrics,
            running: Mutex::new(HashMap::new()),
            tasks,
            slots: Semaphore::new(MAX_READING),
        }
    }

    /// Starts verifying backup `uuid` of `server` in the background, reading at most
    /// `read_limit` bytes per second if set; returns once it is running, with the handle
    /// of its task (which ends once the result is recorded).
    pub async fn start(
        self: &Arc<Self>,
        server: &str,
        uuid: &str,
        read_limit: Option<u64>,
    ) -> Result<JoinHandle<()>, VerifyError> {
        let internal = |err: anyhow::Error| VerifyError::Internal(format!("{err:#}"));
        let record = self.registry.get(uuid).map_err(internal)?;
        match &record {
            Some(record) if record.server != server => return Err(VerifyError::NotFound),
            Some(record) if record.state == State::Running => {
                return Err(VerifyError::StillBeingMade)
            }
            _ => {}
        }
        if self.running.lock().expect("verify lock").contains_key(uuid) {
            return Err(VerifyError::AlreadyRunning);
        }
        let (adapter, info) = self
            .backups
            .locate(server, uuid, None)
            .await
            .map_err(VerifyError::Storage)?
            .ok_or(VerifyError::NotFound)?;
        let recorded = record.filter(|r| r.state == State::Completed);
        // The registry's record when there is one, else what the storage says of itself
        // (the S3 adapter's sidecar holds the SHA-1; a plain file has none).
        let size = recorded.as_ref().and_then(|r| r.size).unwrap_or(info.size);
        let expected = Expected {
            sha1: recorded
                .as_ref()
                .and_then(|r| r.checksum.clone())
                .or(info.sha1),
            size: Some(size),
        };
        // Held until the job is a tracked task: a stop that begins meanwhile waits for it.
        let place = self.tasks.enter().ok_or(VerifyError::ShuttingDown)?;
        let running = Arc::new(Running {
            server: server.to_string(),
            bytes: AtomicU64::new(0),
            total: size,
        });
        {
            let mut all = self.running.lock().expect("verify lock");
            if all.contains_key(uuid) {
                return Err(VerifyError::AlreadyRunning);
            }
            all.insert(uuid.to_string(), running.clone());
        }
        let job = Job {
            server: server.to_string(),
            uuid: uuid.to_string(),
            adapter,
            expected,
            read_limit,
            running,
            cancel: self.tasks.child_token(),
        };
        let span = tracing::info_span!("verify", backup = %uuid, server = %server);
        let this = self.clone();
        let handle = self
            .tasks
            .spawn(async move { this.run(job).await }.instrument(span));
        drop(place);
        Ok(handle)
    }

    /// How the verification of backup `uuid` of `server` stands: running, or its last
    /// result.
    pub async fn status(&self, server: &str, uuid: &str) -> Result<VerifyStatus, VerifyError> {
        if let Some(running) = self.running.lock().expect("verify lock").get(uuid) {
            if running.server == server {
                return Ok(VerifyStatus::Running {
                    bytes: running.bytes.load(Ordering::Relaxed),
                    total: running.total,
                });
            }
        }
        let internal = |err: anyhow::Error| VerifyError::Internal(format!("{err:#}"));
        match self.registry.verification(uuid).map_err(internal)? {
            Some(record) if record.server == server => Ok(VerifyStatus::Done {
                verified_at: record.verified_at,
                result: Verdict {
                    ok: record.ok,
                    checksum_matches: record.checksum_matches,
                    entries: record.entries,
                    bytes: record.bytes,
                    error: record.error,
                },
            }),
            _ => match self
                .backups
                .locate(server, uuid, None)
                .await
                .map_err(VerifyError::Storage)?
            {
                Some(_) => Err(VerifyError::NeverVerified),
                None => Err(VerifyError::NotFound),
            },
        }
    }

    /// Records that the completed backup `uuid` of `server` is missing from its storage: a
    /// verification that found no archive to read.
    pub fn record_missing(&self, server: &str, uuid: &str) {
        let verdict = Verdict::unreadable(
            "the registry records this backup as completed, but its storage no longer holds \
             the archive"
                .into(),
        );
        let adapter = match self.registry.get(uuid) {
            Ok(Some(record)) => record.adapter,
            _ => String::new(),
        };
        self.conclude(server, uuid, &adapter, &verdict);
    }

    /// Runs one verification to its end: the archive is read and judged on a blocking
    /// thread, then the result recorded, logged and published; a cancelled one concludes
    /// nothing.
    async fn run(self: Arc<Self>, job: Job) {
        // Queued (shown as running with nothing read) until one of the slots is free.
        let _slot = tokio::select! {
            slot = self.slots.acquire() => slot.expect("the slots are never closed"),
            () = job.cancel.cancelled() => {
                tracing::info!("verification cancelled before it started: the daemon is shutting down");
                self.running.lock().expect("verify lock").remove(&job.uuid);
                return;
            }
        };
        tracing::info!(adapter = %job.adapter.name, size = job.running.total, "verification started");
        let started = Instant::now();
        let events = self.events.clone();
        let (server, uuid, adapter_name) = (
            job.server.clone(),
            job.uuid.clone(),
            job.adapter.name.clone(),
        );
        let span = tracing::Span::current();
        let outcome =
            tokio::task::spawn_blocking(move || span.in_scope(|| read_back(job, &events))).await;
        match outcome {
            Ok(Ok(verdict)) => {
                if verdict.ok {
                    tracing::info!(
                        adapter = %adapter_name,
                        entries = verdict.entries,
                        bytes = verdict.bytes,
                        seconds = started.elapsed().as_secs_f64(),
                        "verification passed: the stored archive is whole"
                    );
                }
                self.conclude(&server, &uuid, &adapter_name, &verdict);
            }
            Ok(Err(check::Cancelled)) => {
                tracing::info!("verification cancelled: the daemon is shutting down");
            }
            Err(err) => tracing::error!("the verification task failed: {err}"),
        }
        self.running.lock().expect("verify lock").remove(&uuid);
    }

    /// Keeps `verdict` as the last verification of `uuid` (stored by `adapter`), counts it,
    /// logs a failure at error level and publishes `backup verify completed`.
    fn conclude(&self, server: &str, uuid: &str, adapter: &str, verdict: &Verdict) {
        self.metrics.verification_finished(adapter, verdict.ok);
        let record = VerificationRecord {
            uuid: uuid.to_string(),
            server: server.to_string(),
            verified_at: unix_now(),
            ok: verdict.ok,
            checksum_matches: verdict.checksum_matches,
            entries: verdict.entries,
            bytes: verdict.bytes,
            error: verdict.error.clone(),
        };
        if let Err(err) = self.registry.record_verification(&record) {
            tracing::error!(backup = %uuid, server = %server, "cannot record the verification: {err:#}");
        }
        if !verdict.ok {
            tracing::error!(
                backup = %uuid,
                server = %server,
                checksum_matches = verdict.checksum_matches,
                entries = verdict.entries,
                bytes = verdict.bytes,
                reason = verdict.error.as_deref().unwrap_or_default(),
                "VERIFICATION FAILED: the stored backup is not what was recorded"
            );
        }
        self.events
            .publish(server, events::verify_completed(uuid, verdict));
    }
}

/// Opens the archive at its first byte and judges it, publishing `backup verify progress`
/// as it goes; on a blocking thread.
fn read_back(job: Job, events: &EventBus) -> Result<Verdict, check::Cancelled> {
    let source = match job.adapter.blocking().open(&job.server, &job.uuid, 0) {
        Ok(source) => source,
        Err(err) => {
            return Ok(Verdict::unreadable(format!(
                "storage could not open the archive: {err}"
            )))
        }
    };
    let gate = ProgressGate::default();
    let total = job.running.total;
    let mut on_read = |bytes: u64| {
        job.running.bytes.store(bytes, Ordering::Relaxed);
        if gate.admit(bytes) {
            events.publish(
                &job.server,
                events::verify_progress(&job.uuid, bytes, total),
            );
        }
    };
    on_read(0);
    check::check_archive(
        source,
        &job.expected,
        job.read_limit,
        &mut on_read,
        &job.cancel,
    )
}

//! Restores: `POST /api/servers/{server}/backup/{uuid}/restore`. Everything is checked
//! before the server's directory is touched (the backup exists in its adapter, or the
//! `download_url` answers 200 with a gzip type); only then is the directory truncated, if
//! asked, and the archive streamed from its source through gunzip and a hostile-archive-safe
//! untar into the server root. Wings truncates first and loses the server's files when the
//! backup turns out to be missing. The root is opened once, with `O_NOFOLLOW`, and emptied
//! and filled through that descriptor. A running restore is recorded in the registry, so
//! one cut off by a crash is reported failed at the next start; a restore runs as a task of
//! the daemon, so one cut short by a stop ends as failed (cancelled) and is reported then.
//! In front of Wings, the server is stopped through Wings before anything in its directory
//! is touched.

pub mod empty;
pub mod extract;
pub mod fetch;

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::backups::Backups;
use crate::events::panel::Notifier;
use crate::events::{self, reports, EventBus, ProgressGate};
use crate::ids::{BackupId, ServerId};
use crate::locks::{Activity, ServerGuard, ServerLocks};
use crate::metrics::{self, Metrics, Outcome};
use crate::plugins::{retrying, Adapter, StorageError};
use crate::rate_limit::RateLimiter;
use crate::registry::Registry;
use crate::tasks::{CancellationToken, TaskGroup};
use crate::upstream::{power, Wings};
use extract::{ExtractOptions, ExtractProgress};
use fetch::{Download, FetchError, FetchPolicy};

/// At most this many `(restoring): <path>` lines a second reach the console.
const ENTRY_MESSAGES_PER_SECOND: u32 = 20;

/// What the Panel sends. Its `adapter` (`wings` or `s3`) is not needed: the registry knows
/// which adapter holds a backup, and one it never saw is looked for in every adapter.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RestoreRequest {
    /// Empty the server directory before unpacking.
    #[serde(default)]
    pub truncate_directory: bool,
    /// Where to download the archive from instead (a presigned S3 link); empty for none.
    #[serde(default)]
    pub download_url: String,
    /// The adapter the Panel names (its `backup.disk`): for a backup the registry does not
    /// know, only this adapter is asked for it, when it is loaded. Last, so that a body given
    /// as a JSON array keeps the meaning it had before this field.
    #[serde(default)]
    pub adapter: Option<String>,
}

/// Why a restore could not start; the server directory is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The server is being backed up or restored.
    #[error("This server is busy with {0}; try again when it is done.")]
    Busy(&'static str),
    /// Neither the named adapter nor any other holds this backup.
    #[error("{}", crate::wings_text::BACKUP_NOT_FOUND)]
    BackupNotFound,
    /// The `download_url` was refused or did not answer as a gzip archive.
    #[error("{0}")]
    Source(#[from] FetchError),
    /// The adapters could not say where the backup is.
    #[error("{0}")]
    Storage(crate::backups::LocateError),
    /// The daemon is shutting down: running restores may finish, no new one starts.
    #[error("{}", crate::api_error::SHUTTING_DOWN)]
    ShuttingDown,
    /// Something on this side failed.
    #[error("The restore could not be started: {0}")]
    Internal(String),
}

/// How restores are made.
pub struct RestoreSettings {
    /// Compressed bytes read per second, if limited.
    pub read_limit: Option<u64>,
    /// Owner of restored files.
    pub owner: Option<(u32, u32)>,
    /// Most bytes of file content one restore may write (`system.backups.restore_max_bytes`).
    pub max_bytes: Option<u64>,
    /// What a `download_url` may reach.
    pub fetch_policy: FetchPolicy,
    /// Wings behind aerie (`upstream:`), which must stop the server first; `None` alone.
    pub upstream: Option<Arc<Wings>>,
    /// How long Wings may take to stop it (`system.backups.restore_stop_timeout`).
    pub stop_timeout: Duration,
}

/// Where a restore reads the archive from.
enum Source {
    /// A stored backup, through its adapter.
    Adapter { adapter: Arc<Adapter>, size: u64 },
    /// The Panel's link.
    Link(Download),
}

impl Source {
    /// The `adapter` label of its metrics.
    fn metrics_label(&self) -> &str {
        match self {
            Source::Adapter { adapter, .. } => &adapter.name,
            Source::Link(_) => metrics::DOWNLOAD_URL_SOURCE,
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Adapter { adapter, .. } if adapter.kind == "wings" => "local backup".into(),
            Source::Adapter { adapter, .. } => format!("{} backup", adapter.name),
            Source::Link(_) => "S3 backup".into(),
        }
    }
}

/// Every restore of this node.
pub struct Restores {
    locks: Arc<ServerLocks>,
    backups: Arc<Backups>,
    registry: Arc<Registry>,
    events: Arc<EventBus>,
    notifier: Option<Arc<Notifier>>,
    settings: RestoreSettings,
    /// Counts every restore: started, how it ended, bytes, duration.
    metrics: Arc<Metrics>,
    /// The daemon's jobs (backups and restores, one task each): every restore runs as one
    /// of them, under a child token; closed when the daemon begins to shut down.
    tasks: TaskGroup,
}

impl Restores {
    /// The restores of this node, counted in `metrics`, each running as one of `tasks` (a
    /// group that holds jobs only: a shutdown waits for it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        locks: Arc<ServerLocks>,
        backups: Arc<Backups>,
        registry: Arc<Registry>,
        events: Arc<EventBus>,
        notifier: Option<Arc<Notifier>>,
        settings: RestoreSettings,
        metrics: Arc<Metrics>,
        tasks: TaskGroup,
    ) -> Self {
        Self {
            locks,
            backups,
            registry,
            events,
            notifier,
            settings,
            metrics,
            tasks,
        }
    }

    /// Whether `server` is being restored now (from the request until the restore ended).
    pub fn is_restoring(&self, server: &str) -> bool {
        self.locks.is_restoring(server)
    }

    /// Checks the source of backup `uuid` and starts restoring it into `root` in the
    /// background; `root` is `server`'s directory (from [`Backups::server_root`]).
    pub async fn start(
        self: &Arc<Self>,
        server: &ServerId,
        root: PathBuf,
        uuid: &BackupId,
        request: RestoreRequest,
    ) -> Result<(), RestoreError> {
        let (server, uuid): (&str, &str) = (server, uuid);
        // Held until the restore is a tracked task: a shutdown that begins meanwhile still
        // waits for it to end and report how.
        let place = self.tasks.enter().ok_or(RestoreError::ShuttingDown)?;
        let guard = self.locks.try_restore(server).map_err(|busy| match busy {
            Activity::Restore => RestoreError::Busy("another restore"),
            Activity::Backups(_) => RestoreError::Busy("a backup"),
        })?;
        let source = if request.download_url.trim().is_empty() {
            match self
                .backups
                .locate(server, uuid, request.adapter.as_deref())
                .await
            {
                Ok(Some((adapter, info))) => Source::Adapter {
                    adapter,
                    size: info.size,
                },
                Ok(None) => return Err(RestoreError::BackupNotFound),
                Err(err) => return Err(RestoreError::Storage(err)),
            }
        } else {
            Source::Link(
                fetch::open_download(request.download_url.trim(), &self.settings.fetch_policy)
                    .await?,
            )
        };
        // Recorded before the 202: from here on, a crash leaves a record for the next start.
        self.registry
            .begin_restore(uuid, server)
            .map_err(|e| RestoreError::Internal(format!("{e:#}")))?;
        // A root span: the job outlives the request that started it.
        let span = tracing::info_span!(parent: None, "restore", backup = %uuid, server = %server);
        let this = self.clone();
        let (server, uuid) = (server.to_string(), uuid.to_string());
        let cancel = self.tasks.child_token();
        self.tasks.spawn(
            async move {
                this.run(
                    server,
                    root,
                    uuid,
                    request.truncate_directory,
                    source,
                    guard,
                    cancel,
                )
                .await
            }
            .instrument(span),
        );
        drop(place);
        Ok(())
    }

    /// Runs the restore to its end, whatever the end (completed, failed, or cancelled by
    /// `cancel`): it is recorded, reported and published before this returns.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        self: Arc<Self>,
        server: String,
        root: PathBuf,
        uuid: String,
        truncate: bool,
        source: Source,
        guard: ServerGuard,
        cancel: CancellationToken,
    ) {
        let described = source.describe();
        tracing::info!(source = %described, truncate, "restore started");
        let started = Instant::now();
        let counted = self.metrics.restore_started(source.metrics_label());
        let extracted = Arc::new(ExtractProgress::default());
        let job_extracted = extracted.clone();
        let stopped = self.stop_server_first(&server, &cancel).await;
        let handle = tokio::runtime::Handle::current();
        let span = tracing::Span::current();
        let this = self.clone();
        let (job_server, job_uuid, job_cancel) = (server.clone(), uuid.clone(), cancel.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            // A server that could not be stopped first is not touched.
            stopped?;
            span.in_scope(|| {
                this.restore(
                    &job_server,
                    &root,
                    &job_uuid,
                    truncate,
                    source,
                    handle,
                    &job_extracted,
                    &job_cancel,
                )
            })
            // However the pipeline noticed it (between entries, or as its download cut), a
            // cancelled restore says so.
            .map_err(|err| match job_cancel.is_cancelled() {
                true => anyhow::anyhow!("restore cancelled: the daemon is shutting down"),
                false => err,
            })
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the restore task failed: {e}")));
        // Counted before the end is published or recorded, so whoever sees it sees the count.
        counted.finished(
            Outcome::of(outcome.is_ok(), cancel.is_cancelled()),
            extracted.bytes.load(Ordering::Relaxed),
        );
        let message = match &outcome {
            Ok(summary) => {
                tracing::info!(
                    entries = summary.entries,
                    bytes = summary.bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "restore completed"
                );
                format!("Completed server restoration from {described}.")
            }
            Err(err) => {
                tracing::error!(reason = %format!("{err:#}"), "restore failed");
                format!("Server restoration from {described} failed: {err:#}")
            }
        };
        for event in events::restore_completed(message) {
            self.events.publish(&server, event);
        }
        self.end(&uuid, &server, outcome.is_ok());
        drop(guard);
    }

    /// In front of Wings, has Wings stop `server` and waits until it is offline, before
    /// anything in its directory is touched; alone, the operator stops it (README).
    async fn stop_server_first(
        &self,
        server: &str,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(wings) = &self.settings.upstream else {
            return Ok(());
        };
        let stopped = tokio::select! {
            stopped = power::stop_and_wait(wings, server, self.settings.stop_timeout) => stopped,
            () = cancel.cancelled() => {
                anyhow::bail!("the daemon is shutting down; nothing was restored")
            }
        };
        stopped.map_err(|err| {
            anyhow::Error::new(err)
                .context("the server could not be stopped first, so nothing was restored")
        })
    }

    /// Forgets the running restore and queues its report, in one transaction.
    fn end(&self, uuid: &str, server: &str, successful: bool) {
        let report = reports::restore(uuid, successful);
        let report = self
            .notifier
            .as_ref()
            .map(|_| (uuid, report.path.as_str(), report.body.as_str()));
        if let Err(err) = self.registry.end_restore(uuid, server, report) {
            tracing::error!("cannot record the end of the restore: {err:#}");
        }
        if let Some(notifier) = &self.notifier {
            notifier.wake();
        }
    }

    /// At start-up: restores the registry still shows as running were cut off by a crash or
    /// a stop; report them failed to the Panel.
    pub fn recover_interrupted(&self) -> anyhow::Result<()> {
        for record in self.registry.running_restores()? {
            let span =
                tracing::info_span!("restore", backup = %record.uuid, server = %record.server);
            span.in_scope(|| {
                tracing::warn!(
                    started_at = %record.started_at,
                    "the daemon stopped while this restore was running; reporting it failed"
                );
                self.end(&record.uuid, &record.server, false);
            });
        }
        Ok(())
    }

    /// The restore itself, on a blocking thread.
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &self,
        server: &str,
        root: &Path,
        uuid: &str,
        truncate: bool,
        source: Source,
        handle: tokio::runtime::Handle,
        extracted: &ExtractProgress,
        cancel: &CancellationToken,
    ) -> anyhow::Result<extract::ExtractSummary> {
        let (reader, size): (Box<dyn Read + Send>, Option<u64>) = match source {
            Source::Adapter { adapter, size } => {
                let reader = retrying(&adapter.name, "open", || {
                    adapter.blocking().open(server, uuid, 0)
                })
                .map_err(|e| {
                    anyhow::anyhow!(
                        "storage could not open the backup: {}",
                        StorageError::new(&adapter.name, e)
                    )
                })?;
                (Box::new(reader), Some(size))
            }
            Source::Link(download) => {
                let size = download.content_length;
                (
                    Box::new(download.into_blocking_reader(handle, cancel.clone())),
                    size,
                )
            }
        };
        let root_fd = open_root(root)?;
        if truncate {
            empty::empty_directory(root_fd.as_fd())?;
            tracing::info!("emptied the server directory");
        }
        let reporter = RestoreReporter {
            events: &self.events,
            server,
            uuid,
            total: size,
            gate: ProgressGate::default(),
        };
        reporter.publish(0);
        let reader = ThrottledReader {
            inner: reader,
            limiter: self.settings.read_limit.map(RateLimiter::new),
            read: 0,
            reporter: &reporter,
        };
        let options = ExtractOptions {
            owner: self.settings.owner,
            max_bytes: self.settings.max_bytes,
            ..ExtractOptions::default()
        };
        let mut console = ConsoleLines::new(self.events.as_ref(), server);
        let summary = extract::extract_archive_at(
            reader,
            root_fd,
            &options,
            extracted,
            &mut |path| console.entry(path),
            cancel,
        )?;
        Ok(summary)
    }
}

/// Opens the server directory itself, refusing a symlink (even one swapped in after the
/// request was checked): everything after goes through this descriptor.
fn open_root(root: &Path) -> anyhow::Result<OwnedFd> {
    rustix::fs::open(
        root,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the server directory (it must be a real folder, not a link): {}",
            io::Error::from(e)
        )
    })
}

/// Publishes `backup restore progress` (compressed bytes read of the total, when known).
struct RestoreReporter<'a> {
    events: &'a EventBus,
    server: &'a str,
    uuid: &'a str,
    total: Option<u64>,
    gate: ProgressGate,
}

impl RestoreReporter<'_> {
    /// Publishes that `read` bytes of the archive are in, if the gate allows.
    fn publish(&self, read: u64) {
        if !self.gate.admit(read) {
            return;
        }
        self.events.publish(
            self.server,
            events::restore_progress(self.uuid, read, self.total),
        );
    }
}

/// The archive as it is read: held to the read limit, counted, and reported.
struct ThrottledReader<'a> {
    inner: Box<dyn Read + Send>,
    limiter: Option<RateLimiter>,
    read: u64,
    reporter: &'a RestoreReporter<'a>,
}

impl Read for ThrottledReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(limiter) = &mut self.limiter {
            limiter.take(n);
        }
        self.read += n as u64;
        self.reporter.publish(self.read);
        Ok(n)
    }
}

/// `(restoring): <path>` console lines, at most [`ENTRY_MESSAGES_PER_SECOND`].
struct ConsoleLines<'a> {
    events: &'a EventBus,
    server: &'a str,
    window: Instant,
    sent: u32,
}

impl<'a> ConsoleLines<'a> {
    fn new(events: &'a EventBus, server: &'a str) -> Self {
        Self {
            events,
            server,
            window: Instant::now(),
            sent: 0,
        }
    }

    fn entry(&mut self, path: &Path) {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.sent = 0;
        }
        if self.sent < ENTRY_MESSAGES_PER_SECOND {
            self.sent += 1;
            self.events
                .publish(self.server, events::restoring_entry(path));
        }
    }
}

//! Running one backup job: the archive pipeline on a blocking thread (measure, open the
//! sink, stream the archive into it, finish or abort it), then recording how it ended,
//! queueing the Panel's report and publishing `backup completed`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use aerie_adapter_api::{BackupHints, ErrorKind, StoredBackup};
use anyhow::anyhow;

use super::progress::ProgressReporter;
use super::{BackupRequest, Backups};
use crate::archive::{self, ArchiveSettings, IgnoreRules, Progress, ServerDir, Written};
use crate::events::{self, reports};
use crate::locks::ServerGuard;
use crate::metrics::Outcome;
use crate::plugins::{retrying, Adapter, StorageError};
use crate::tasks::CancellationToken;

/// Everything one backup job works with.
pub(super) struct Job {
    /// The server backed up.
    pub(super) server: String,
    /// Its checked root directory.
    pub(super) root: PathBuf,
    /// What the Panel asked for.
    pub(super) request: BackupRequest,
    /// Where the archive goes.
    pub(super) adapter: Arc<Adapter>,
    /// How far it has come, shared with status requests.
    pub(super) progress: Arc<Progress>,
    /// Cancelled when the backup is deleted or the daemon stops.
    pub(super) cancel: CancellationToken,
    /// Keeps restores off the server until the archive is made.
    pub(super) server_guard: ServerGuard,
}

impl Backups {
    /// Runs `job` to its end, whatever the end: completed, failed or cancelled, it is
    /// recorded, reported and published before this returns.
    pub(super) async fn run(&self, job: Job) {
        let Job {
            server,
            root,
            request,
            adapter,
            progress,
            cancel,
            server_guard,
        } = job;
        tracing::info!(adapter = %adapter.name, root = %root.display(), "backup started");
        let uuid = request.uuid.clone();
        self.events
            .publish(&server, events::backup_started(&uuid, &adapter.name));
        let started = Instant::now();
        let counted = self.metrics.backup_started(&adapter.name);
        let cancelled = cancel.clone();
        let reporter = Arc::new(ProgressReporter::new(
            self.events.clone(),
            &server,
            &uuid,
            progress.clone(),
        ));
        let stop_ticking = cancel.child_token();
        let settings = self.settings;
        let job_reporter = reporter.clone();
        let job_server = server.clone();
        let job_adapter = adapter.clone();
        let pipeline = adapter.run(move |_| {
            // A panic in the pipeline still ends the job (failed, recorded, reported),
            // rather than leaving it `running` until the next start.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                make_backup(
                    &job_adapter,
                    &job_server,
                    &request,
                    &root,
                    settings,
                    &job_reporter,
                    &cancel,
                )
            }))
            .unwrap_or_else(|_| Err(anyhow!("an internal error (a panic) stopped the backup")))
        });
        let pipeline = async {
            let outcome = pipeline.await;
            stop_ticking.cancel();
            outcome
        };
        let (outcome, ()) = tokio::join!(pipeline, reporter.tick(stop_ticking.clone()));
        // The server is free again before anyone can see the backup has ended.
        drop(server_guard);
        let bytes_done = progress.bytes_done.load(Ordering::Relaxed);
        // Counted before the registry shows the end, so whoever sees it sees the count too.
        counted.finished(
            Outcome::of(outcome.is_ok(), cancelled.is_cancelled()),
            bytes_done,
            outcome.as_ref().map_or(0, |(written, _)| written.size),
        );
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
                let report = reports::backup(&uuid, Some((written, stored)));
                let recorded = self.registry.complete(
                    &uuid,
                    &written.sha1,
                    written.size,
                    bytes_done,
                    self.report_for(&uuid, &report),
                );
                (recorded, events::backup_completed(&uuid, Some(written)))
            }
            Err(err) => {
                let reason = format!("{err:#}");
                tracing::error!(reason = %reason, "backup failed");
                let report = reports::backup(&uuid, None);
                let recorded =
                    self.registry
                        .fail(&uuid, &reason, bytes_done, self.report_for(&uuid, &report));
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
        self.running.lock().expect("jobs lock").remove(&*uuid);
    }
}

/// The whole backup on a blocking thread: measure the tree (beside the rest), open the
/// sink, stream the archive into it, then finish it, or abort it on any error so nothing
/// partial is left.
fn make_backup(
    adapter: &Adapter,
    server: &str,
    request: &BackupRequest,
    root: &std::path::Path,
    settings: ArchiveSettings,
    reporter: &ProgressReporter,
    cancel: &CancellationToken,
) -> anyhow::Result<(Written, StoredBackup)> {
    let progress = reporter.progress();
    // Opened once, never through a symlink: every later open is relative to it.
    let root = &ServerDir::open(root)?;
    let rules = IgnoreRules::for_backup(root.fd(), &request.ignore);
    // What the adapter may ask about the backup, posted until the backup ends (this
    // function returns), filled in once the tree is measured.
    let (_hints, hints_filler) = adapter.blocking().post_hints(&request.uuid);
    std::thread::scope(|scope| {
        // The tree is measured beside the archive, not before it: its walk reads no file,
        // so it is done long before the archive, and the archive need not wait for it (an
        // adapter that asks for the hints meanwhile waits for them).
        let measuring = cancel.child_token();
        let measure = measuring.clone();
        let rules = &rules;
        // What it logs (a file that vanished) carries the backup's span.
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("backup-measure".into())
            .spawn_scoped(scope, move || {
                let _span = span.enter();
                let measured = archive::measure_tree(root, rules, &measure);
                if !measure.is_cancelled() {
                    progress
                        .bytes_total
                        .store(measured.file_bytes, Ordering::Relaxed);
                    hints_filler.fill(&BackupHints::with_size_upper_bound(measured.archive_bound));
                    // The first event, once the total is known: a progress bar appears
                    // with its honest total, never a partial one.
                    reporter.publish();
                }
            })
            .map_err(|e| anyhow!("cannot start measuring the backup: {e}"))?;
        let archived = archive_into_sink(
            adapter, server, request, root, rules, settings, progress, cancel,
        );
        if archived.is_err() {
            // Its total no longer matters.
            measuring.cancel();
        }
        archived
    })
}

/// Opens the adapter's sink, streams the archive into it, then finishes it, or aborts it on
/// any error so nothing partial is left.
#[allow(clippy::too_many_arguments)]
fn archive_into_sink(
    adapter: &Adapter,
    server: &str,
    request: &BackupRequest,
    root: &ServerDir,
    rules: &IgnoreRules,
    settings: ArchiveSettings,
    progress: &Progress,
    cancel: &CancellationToken,
) -> anyhow::Result<(Written, StoredBackup)> {
    let mut sink = retrying(&adapter.name, "begin_backup", || {
        adapter.blocking().begin_backup(server, &request.uuid)
    })
    .map_err(|e| {
        anyhow!(
            "storage could not start the backup: {}",
            StorageError::new(&adapter.name, e)
        )
    })?;
    let written = match archive::write_archive(root, rules, settings, &mut sink, progress, cancel) {
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
            anyhow!(
                "storage could not complete the backup: {}",
                StorageError::new(&adapter.name, e)
            )
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

//! What a monitoring system needs to know about this node, in Prometheus' text format at
//! `GET /metrics`: backups and restores (started, finished by outcome, bytes, durations, in
//! flight), verifications, the queue of Panel reports and the process's memory and
//! descriptors. The metrics are kept and encoded by `prometheus-client`; the queue and the
//! process are read when scraped.
//!
//! Jobs count themselves: [`Metrics::backup_started`] and [`Metrics::restore_started`] give a
//! guard that holds the job's place in the in-flight gauge until it is finished (or dropped,
//! should its task die). A verification calls [`Metrics::verification_finished`] once it has
//! its verdict.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::api_error::ApiError;
use crate::registry::Registry;
use crate::wings_text;

/// The upper bounds, in seconds, of the duration histograms' buckets: from the few seconds a
/// small server takes to the hours of a large world on a write limit.
const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0,
];

/// The label of restores that read a `download_url` rather than a stored backup.
pub const DOWNLOAD_URL_SOURCE: &str = "download_url";

/// The `outcome` of a verification: the archive read back whole and matched, or not.
const VERIFICATION_OUTCOMES: [&str; 2] = ["ok", "failed"];

/// How a backup or restore ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Completed,
    /// It stopped on an error.
    Failed,
    /// It was stopped: its backup deleted while it ran, or the daemon shutting down.
    Cancelled,
}

impl Outcome {
    /// The outcome of a job that ended `ok` or not, `cancelled` or not: a job that fails
    /// after it was cancelled was cut short by the cancellation.
    pub fn of(ok: bool, cancelled: bool) -> Self {
        match (ok, cancelled) {
            (true, _) => Outcome::Completed,
            (false, true) => Outcome::Cancelled,
            (false, false) => Outcome::Failed,
        }
    }

    /// Its label value.
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// `{adapter}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdapterLabels {
    /// The adapter's configured name (or [`DOWNLOAD_URL_SOURCE`] for a restore).
    adapter: String,
}

/// `{adapter, outcome}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// The adapter's configured name (or [`DOWNLOAD_URL_SOURCE`] for a restore).
    adapter: String,
    /// `completed`, `failed` or `cancelled`; `ok` or `failed` for verifications.
    outcome: &'static str,
}

/// A family of duration histograms, each with [`DURATION_BUCKETS`].
type Durations = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The node's metrics: one object, shared by the jobs and the HTTP routes.
pub struct Metrics {
    /// What is encoded at a scrape: every metric below, registered once.
    registry: prometheus_client::registry::Registry,
    /// The registry of backups, whose queue of Panel reports is read at each scrape.
    reports: Arc<Registry>,
    backups_started: Family<AdapterLabels, Counter>,
    backups_finished: Family<OutcomeLabels, Counter>,
    backup_duration: Durations,
    backups_in_flight: Gauge,
    backup_read_bytes: Family<AdapterLabels, Counter>,
    backup_written_bytes: Family<AdapterLabels, Counter>,
    restores_started: Family<AdapterLabels, Counter>,
    restores_finished: Family<OutcomeLabels, Counter>,
    restore_duration: Durations,
    restores_in_flight: Gauge,
    restore_written_bytes: Family<AdapterLabels, Counter>,
    verifications: Family<OutcomeLabels, Counter>,
    reports_pending: Gauge,
    oldest_report_age: Gauge,
    resident_memory: Gauge,
    open_fds: Gauge,
}

impl Metrics {
    /// Every metric at zero, with a series for each of `adapters` (the configured names)
    /// and outcome from the start: a counter that first appears at 1 hides its first
    /// increase from `rate()` and `increase()`, and so from alerts. `reports` is the
    /// registry whose queue of Panel reports the scrapes read.
    pub fn new<'a>(reports: Arc<Registry>, adapters: impl IntoIterator<Item = &'a str>) -> Self {
        let mut metrics = Self {
            registry: prometheus_client::registry::Registry::with_prefix("aerie"),
            reports,
            backups_started: Family::default(),
            backups_finished: Family::default(),
            backup_duration: Family::new_with_constructor(duration_histogram),
            backups_in_flight: Gauge::default(),
            backup_read_bytes: Family::default(),
            backup_written_bytes: Family::default(),
            restores_started: Family::default(),
            restores_finished: Family::default(),
            restore_duration: Family::new_with_constructor(duration_histogram),
            restores_in_flight: Gauge::default(),
            restore_written_bytes: Family::default(),
            verifications: Family::default(),
            reports_pending: Gauge::default(),
            oldest_report_age: Gauge::default(),
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "backups_started",
            "Backups started, by adapter",
            metrics.backups_started.clone(),
        );
        r.register(
            "backups_finished",
            "Backups ended, by adapter and outcome (completed, failed, cancelled)",
            metrics.backups_finished.clone(),
        );
        r.register_with_unit(
            "backup_duration",
            "How long backups took, from start to their end, by adapter and outcome",
            Unit::Seconds,
            metrics.backup_duration.clone(),
        );
        r.register(
            "backups_in_flight",
            "Backups running now",
            metrics.backups_in_flight.clone(),
        );
        r.register_with_unit(
            "backup_read",
            "Bytes of file content read from server directories by ended backups, by adapter",
            Unit::Bytes,
            metrics.backup_read_bytes.clone(),
        );
        r.register_with_unit(
            "backup_written",
            "Archive bytes (compressed) of completed backups handed to their adapter",
            Unit::Bytes,
            metrics.backup_written_bytes.clone(),
        );
        r.register(
            "restores_started",
            "Restores started, by adapter (download_url for a Panel link)",
            metrics.restores_started.clone(),
        );
        r.register(
            "restores_finished",
            "Restores ended, by adapter and outcome (completed, failed, cancelled)",
            metrics.restores_finished.clone(),
        );
        r.register_with_unit(
            "restore_duration",
            "How long restores took, from start to their end, by adapter and outcome",
            Unit::Seconds,
            metrics.restore_duration.clone(),
        );
        r.register(
            "restores_in_flight",
            "Restores running now",
            metrics.restores_in_flight.clone(),
        );
        r.register_with_unit(
            "restore_written",
            "Bytes of file content written into server directories by ended restores",
            Unit::Bytes,
            metrics.restore_written_bytes.clone(),
        );
        r.register(
            "verifications",
            "Stored backups read back and checked, by adapter and outcome (ok, failed)",
            metrics.verifications.clone(),
        );
        r.register(
            "panel_reports_pending",
            "Reports to the Panel queued and not yet accepted",
            metrics.reports_pending.clone(),
        );
        r.register_with_unit(
            "panel_report_oldest_age",
            "How long the oldest queued Panel report has waited (0 when none waits)",
            Unit::Seconds,
            metrics.oldest_report_age.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory of the aerie process",
            Unit::Bytes,
            metrics.resident_memory.clone(),
        );
        r.register(
            "process_open_fds",
            "File descriptors the aerie process holds open",
            metrics.open_fds.clone(),
        );
        for adapter in adapters {
            metrics.create_series(adapter);
        }
        metrics.create_restore_series(DOWNLOAD_URL_SOURCE);
        metrics
    }

    /// The counters of `adapter`, at zero.
    fn create_series(&self, adapter: &str) {
        let labels = AdapterLabels {
            adapter: adapter.to_string(),
        };
        self.backups_started.get_or_create_owned(&labels);
        self.backup_read_bytes.get_or_create_owned(&labels);
        self.backup_written_bytes.get_or_create_owned(&labels);
        for outcome in [Outcome::Completed, Outcome::Failed, Outcome::Cancelled] {
            self.backups_finished.get_or_create_owned(&OutcomeLabels {
                adapter: adapter.to_string(),
                outcome: outcome.as_str(),
            });
        }
        for outcome in VERIFICATION_OUTCOMES {
            self.verifications.get_or_create_owned(&OutcomeLabels {
                adapter: adapter.to_string(),
                outcome,
            });
        }
        self.create_restore_series(adapter);
    }

    /// The restore counters of `adapter`, at zero.
    fn create_restore_series(&self, adapter: &str) {
        let labels = AdapterLabels {
            adapter: adapter.to_string(),
        };
        self.restores_started.get_or_create_owned(&labels);
        self.restore_written_bytes.get_or_create_owned(&labels);
        for outcome in [Outcome::Completed, Outcome::Failed, Outcome::Cancelled] {
            self.restores_finished.get_or_create_owned(&OutcomeLabels {
                adapter: adapter.to_string(),
                outcome: outcome.as_str(),
            });
        }
    }

    /// Counts a backup with `adapter` as started and running; the guard counts how it
    /// ended.
    pub fn backup_started(self: &Arc<Self>, adapter: &str) -> RunningBackup {
        let labels = AdapterLabels {
            adapter: adapter.to_string(),
        };
        self.backups_started.get_or_create(&labels).inc();
        RunningBackup {
            metrics: self.clone(),
            adapter: labels.adapter,
            in_flight: InFlight::enter(&self.backups_in_flight),
        }
    }

    /// Counts a restore from `adapter` ([`DOWNLOAD_URL_SOURCE`] for a Panel link) as started
    /// and running; the guard counts how it ended.
    pub fn restore_started(self: &Arc<Self>, adapter: &str) -> RunningRestore {
        let labels = AdapterLabels {
            adapter: adapter.to_string(),
        };
        self.restores_started.get_or_create(&labels).inc();
        RunningRestore {
            metrics: self.clone(),
            adapter: labels.adapter,
            in_flight: InFlight::enter(&self.restores_in_flight),
        }
    }

    /// Counts a verification of a backup stored with `adapter`: `ok` when the archive read
    /// back whole and matched its checksum and size, else `failed`. Exported as
    /// `aerie_verifications_total{adapter, outcome="ok"|"failed"}`.
    pub fn verification_finished(&self, adapter: &str, ok: bool) {
        let [passed, failed] = VERIFICATION_OUTCOMES;
        let labels = OutcomeLabels {
            adapter: adapter.to_string(),
            outcome: if ok { passed } else { failed },
        };
        self.verifications.get_or_create(&labels).inc();
    }

    /// Every metric in Prometheus' text format (version 0.0.4), with the queue of Panel
    /// reports and the process's memory and descriptors read now.
    pub fn render(&self) -> anyhow::Result<String> {
        let (pending, oldest) = self.reports.notification_backlog()?;
        self.reports_pending.set(saturating_i64(pending));
        let age = oldest.as_deref().map_or(0, seconds_since);
        self.oldest_report_age.set(age);
        // Outside Linux (or without /proc) the last values stay; aerie runs on Linux nodes.
        if let Some(rss) = process::resident_memory_bytes() {
            self.resident_memory.set(saturating_i64(rss));
        }
        if let Some(fds) = process::open_fds() {
            self.open_fds.set(saturating_i64(fds));
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The answer to `GET /metrics`: the text, or a 500 in Wings' shape when the registry
    /// cannot be read.
    pub fn response(&self) -> Response {
        match self.render() {
            Ok(text) => (
                [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                text,
            )
                .into_response(),
            Err(err) => {
                ApiError::internal(format!("cannot gather the metrics: {err:#}")).into_response()
            }
        }
    }
}

/// The router of the `metrics.bind` listener: `GET /metrics` without a token, and Wings'
/// 404 for anything else.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>| async move {
                    metrics.response()
                },
            ),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, wings_text::RESOURCE_NOT_FOUND) })
        .with_state(metrics)
}

/// A job's place in an in-flight gauge, given back when dropped.
struct InFlight {
    /// The gauge (a handle on the registered one).
    gauge: Gauge,
    /// When the job started.
    started: Instant,
}

impl InFlight {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self {
            gauge: gauge.clone(),
            started: Instant::now(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A running backup, counted in `aerie_backups_in_flight` until it is finished or dropped.
pub struct RunningBackup {
    metrics: Arc<Metrics>,
    adapter: String,
    in_flight: InFlight,
}

impl RunningBackup {
    /// Counts how the backup ended, its duration, the bytes of file content it read and
    /// the archive bytes it stored (0 unless completed).
    pub fn finished(self, outcome: Outcome, read_bytes: u64, written_bytes: u64) {
        let m = &self.metrics;
        let adapter = AdapterLabels {
            adapter: self.adapter.clone(),
        };
        let labels = OutcomeLabels {
            adapter: self.adapter.clone(),
            outcome: outcome.as_str(),
        };
        m.backups_finished.get_or_create(&labels).inc();
        m.backup_duration
            .get_or_create(&labels)
            .observe(self.in_flight.started.elapsed().as_secs_f64());
        m.backup_read_bytes
            .get_or_create(&adapter)
            .inc_by(read_bytes);
        m.backup_written_bytes
            .get_or_create(&adapter)
            .inc_by(written_bytes);
    }
}

/// A running restore, counted in `aerie_restores_in_flight` until it is finished or
/// dropped.
pub struct RunningRestore {
    metrics: Arc<Metrics>,
    adapter: String,
    in_flight: InFlight,
}

impl RunningRestore {
    /// Counts how the restore ended, its duration and the bytes of file content it wrote.
    pub fn finished(self, outcome: Outcome, written_bytes: u64) {
        let m = &self.metrics;
        let labels = OutcomeLabels {
            adapter: self.adapter.clone(),
            outcome: outcome.as_str(),
        };
        m.restores_finished.get_or_create(&labels).inc();
        m.restore_duration
            .get_or_create(&labels)
            .observe(self.in_flight.started.elapsed().as_secs_f64());
        m.restore_written_bytes
            .get_or_create(&AdapterLabels {
                adapter: self.adapter.clone(),
            })
            .inc_by(written_bytes);
    }
}

/// A count as a gauge's `i64` (no count here comes near its limit).
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whole seconds from `rfc3339` (a registry time) to now; 0 for a time that does not parse
/// or lies ahead (a clock set back).
fn seconds_since(rfc3339: &str) -> i64 {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .map(|then| {
            (time::OffsetDateTime::now_utc() - then)
                .whole_seconds()
                .max(0)
        })
        .unwrap_or(0)
}

/// The process's own figures, from `/proc/self`.
mod process {
    /// Bytes of resident memory: `VmRSS` of `/proc/self/status` (in kB, as the kernel
    /// writes it: KiB).
    pub fn resident_memory_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    }

    /// Descriptors open: the entries of `/proc/self/fd`, less the one that lists them.
    pub fn open_fds() -> Option<u64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(entries.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (tempfile::TempDir, Arc<Metrics>) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::open(dir.path()).unwrap());
        (dir, Arc::new(Metrics::new(registry, ["wings"])))
    }

    #[test]
    fn a_dropped_job_leaves_the_in_flight_gauge() {
        let (_dir, metrics) = metrics();
        let backup = metrics.backup_started("wings");
        let restore = metrics.restore_started(DOWNLOAD_URL_SOURCE);
        assert_eq!(metrics.backups_in_flight.get(), 1);
        assert_eq!(metrics.restores_in_flight.get(), 1);
        drop(backup);
        restore.finished(Outcome::Failed, 0);
        assert_eq!(metrics.backups_in_flight.get(), 0);
        assert_eq!(metrics.restores_in_flight.get(), 0);
    }

    #[test]
    fn the_text_names_every_metric_with_its_unit() {
        let (_dir, metrics) = metrics();
        metrics
            .backup_started("wings")
            .finished(Outcome::Completed, 10, 4);
        metrics.verification_finished("s3", false);
        let text = metrics.render().unwrap();
        for line in [
            "aerie_backups_started_total{adapter=\"wings\"} 1",
            "aerie_backups_finished_total{adapter=\"wings\",outcome=\"completed\"} 1",
            "aerie_backup_duration_seconds_count{adapter=\"wings\",outcome=\"completed\"} 1",
            "aerie_backup_read_bytes_total{adapter=\"wings\"} 10",
            "aerie_backup_written_bytes_total{adapter=\"wings\"} 4",
            "aerie_verifications_total{adapter=\"s3\",outcome=\"failed\"} 1",
            "aerie_backups_in_flight 0",
            "aerie_panel_reports_pending 0",
            "aerie_panel_report_oldest_age_seconds 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for name in [
            "aerie_process_resident_memory_bytes",
            "aerie_process_open_fds",
        ] {
            let value: i64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap();
            assert!(value > 0, "{name} {value}");
        }
    }

    #[test]
    fn every_adapter_and_outcome_is_there_at_zero_from_the_start() {
        let (_dir, metrics) = metrics();
        let text = metrics.render().unwrap();
        for line in [
            "aerie_backups_started_total{adapter=\"wings\"} 0",
            "aerie_backups_finished_total{adapter=\"wings\",outcome=\"failed\"} 0",
            "aerie_backups_finished_total{adapter=\"wings\",outcome=\"cancelled\"} 0",
            "aerie_restores_finished_total{adapter=\"download_url\",outcome=\"failed\"} 0",
            "aerie_verifications_total{adapter=\"wings\",outcome=\"failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_failure_after_cancellation_is_a_cancellation() {
        assert_eq!(Outcome::of(true, true), Outcome::Completed);
        assert_eq!(Outcome::of(false, true), Outcome::Cancelled);
        assert_eq!(Outcome::of(false, false), Outcome::Failed);
    }
}

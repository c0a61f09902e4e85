//! aerie: a backup daemon for the Pterodactyl Panel that speaks the Wings backup API and
//! keeps storage in adapter libraries.
//!
//! A backup request travels `http` → `backups` → `archive` → `plugins` (the adapter).

pub mod adapter_test;
pub mod allowlist;
pub mod api_error;
pub mod archive;
pub mod backups;
pub mod config;
pub mod download;
pub mod events;
pub mod http;
pub mod ids;
pub mod jwt;
pub mod locks;
pub mod metrics;
pub mod net_policy;
pub mod plugins;
pub mod rate_limit;
pub mod read_ahead;
pub mod registry;
pub mod request_log;
pub mod restore;
pub mod serve;
pub mod tasks;
#[cfg(test)]
mod test_skips;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod wings_text;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::archive::ArchiveSettings;
use crate::backups::Backups;
use crate::config::Config;
use crate::download::Downloads;
use crate::events::panel::{Notifier, Panel};
use crate::events::presign::PanelServices;
use crate::events::EventBus;
use crate::locks::ServerLocks;
use crate::metrics::Metrics;
use crate::plugins::Adapters;
use crate::registry::Registry;
use crate::restore::fetch::FetchPolicy;
use crate::restore::{RestoreSettings, Restores};
use crate::tasks::{CancellationToken, TaskGroup};
use crate::upstream::Wings;
use crate::verify::Verifications;

/// How long the websockets may take, at shutdown, to send their last events and close: a
/// client that stopped reading must not hold the exit.
const SESSIONS_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Connections the `metrics.bind` listener serves at once: a Prometheus server or two, and
/// an operator with curl.
const METRICS_MAX_CONNECTIONS: usize = 8;

/// The exit status after a second SIGTERM or SIGINT: the process ends without waiting for
/// its jobs, so it is not a clean stop (1, as for any other failure); the next start
/// recovers the jobs it cut off as after a crash.
const FORCED_STOP_EXIT_CODE: i32 = 1;

/// Runs the daemon until SIGINT or SIGTERM: loads the adapters, opens the registry,
/// recovers from an earlier stop, serves HTTP, and on shutdown drains running work.
///
/// Every task the daemon starts belongs to one of three [`TaskGroup`]s: `jobs` (backups
/// and restores, one task each, nothing else, so that waiting for the group waits for just
/// them), `sessions` (the websockets) and `services` (the Panel notifier, which only ends
/// when cancelled). The first signal starts the shutdown, in this order:
/// 1. `jobs` is closed: a new backup or restore is refused with 503, while the API keeps
///    serving everything else (status, lists, downloads, websockets, the pass-through to
///    Wings), so the Panel and clients see the running jobs end.
/// 2. The running jobs get `system.shutdown_timeout` to end on their own; then `jobs` is
///    cancelled and awaited, so that each job cut short records that it failed, aborts its
///    sink and queues its report.
/// 3. The HTTP loop stops (requests in flight get [`serve`]'s grace), then `sessions` send
///    the jobs' last events and close, then `services` stop.
/// 4. The queued Panel reports get one bounded delivery attempt; what the Panel does not
///    take stays queued for the next start. The daemon then exits 0.
///
/// A second signal, at any point of this, exits at once with [`FORCED_STOP_EXIT_CODE`]:
/// nothing more is waited for (a job blocked in its adapter would hold a graceful exit), and
/// the registry, written in transactions, is left as a crash leaves it: the next start marks
/// the jobs that were running failed, reports them and removes what they left.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // From the start: a signal that comes during start-up is kept and stops the daemon
    // once it serves, rather than killing it halfway.
    let mut signals = StopSignals::listen()?;
    for key in &config.ignored_keys {
        tracing::info!(key = %key, "config key not used by aerie; ignored");
    }
    // First, so that a bad certificate stops start-up before anything else is touched.
    let tls = match config.api.ssl.enabled {
        true => Some(tls::Tls::load(&config.api.ssl)?),
        false => None,
    };
    let panel = Panel::from_config(&config)?;
    let adapters = {
        let (plugins, backup_directory) = (
            config.plugins.clone(),
            config.system.backup_directory.clone(),
        );
        let services = Arc::new(PanelServices::new(panel.clone()));
        tokio::task::spawn_blocking(move || {
            Adapters::load(plugins.as_deref(), &backup_directory, services)
        })
        .await??
    };
    let registry = Arc::new(Registry::open(&config.system.root_directory)?);
    let metrics = Arc::new(Metrics::new(
        registry.clone(),
        adapters.all().map(|adapter| adapter.name.as_str()),
    ));
    std::fs::create_dir_all(&config.system.data)
        .with_context(|| format!("cannot create {}", config.system.data.display()))?;
    let settings = ArchiveSettings {
        compression: config.system.backups.compression_level,
        threads: config.compression_threads(),
        write_limit: config.write_limit_bytes(),
    };
    let started_at = jwt::unix_now();
    let jobs = TaskGroup::new();
    let sessions = TaskGroup::new();
    let services = TaskGroup::new();
    let events = Arc::new(EventBus::default());
    let notifier = match panel {
        Some(panel) => {
            let notifier = Arc::new(Notifier::new(panel, registry.clone()));
            services.spawn(notifier.clone().run(services.child_token()));
            Some(notifier)
        }
        None => None,
    };
    let adapters = Arc::new(adapters);
    let upstream = config
        .upstream
        .as_ref()
        .map(|upstream| Arc::new(Wings::new(&upstream.url, &config.token)));
    let locks = Arc::new(ServerLocks::default());
    let backups = Arc::new(Backups::new(
        config.system.data.clone(),
        settings,
        registry.clone(),
        adapters.clone(),
        events.clone(),
        locks.clone(),
        notifier.clone(),
        metrics.clone(),
        jobs.clone(),
    ));
    let restores = Arc::new(Restores::new(
        locks.clone(),
        backups.clone(),
        registry.clone(),
        events.clone(),
        notifier.clone(),
        RestoreSettings {
            read_limit: config.write_limit_bytes(),
            owner: config.restore_owner(),
            max_bytes: config.restore_max_bytes(),
            fetch_policy: FetchPolicy {
                allowlist: config.system.backups.restore_host_allowlist.clone(),
                ..FetchPolicy::default()
            },
            upstream: upstream.clone(),
            stop_timeout: Duration::from_secs(config.system.backups.restore_stop_timeout),
        },
        metrics.clone(),
        jobs.clone(),
    ));
    // Verifications only read: they are not waited for at shutdown but cancelled with the
    // other services.
    let verifications = Arc::new(Verifications::new(
        backups.clone(),
        registry.clone(),
        events.clone(),
        metrics.clone(),
        services.clone(),
    ));
    backups.recover_interrupted().await?;
    restores.recover_interrupted()?;
    if let Some(every) = config.verify_interval() {
        services.spawn(verify::periodic::run(
            verifications.clone(),
            every,
            config.verify_read_limit_bytes(),
            services.child_token(),
        ));
    }
    if let Some(notifier) = &notifier {
        notifier.wake();
    }

    let mut allowed_origins = config.allowed_origins.clone();
    allowed_origins.extend(config.remote.clone());
    let state = Arc::new(http::AppState {
        token: config.token.clone(),
        backups: backups.clone(),
        restores: restores.clone(),
        verifications,
        locks,
        downloads: Downloads::new(config.token.clone(), backups.clone(), registry.clone()),
        registry,
        events,
        allowed_origins,
        started_at,
        read_timeout: Duration::from_secs(config.api.read_timeout),
        websocket_auth_timeout: Duration::from_secs(config.api.websocket_auth_timeout),
        upstream: upstream.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
    });
    let address = format!("{}:{}", config.api.host, config.api.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("api: cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    let metrics_listener = match config.metrics.bind {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("metrics.bind: cannot listen on {address}"))?;
            let local = listener.local_addr()?;
            tracing::info!(address = %local, "metrics listening (no token)");
            // Before the API's line, which scripts wait for.
            println!("aerie metrics on http://{local}/metrics");
            Some(listener)
        }
        None => None,
    };
    tracing::info!(address = %local, "listening");
    // One line on stdout, for operators and for scripts that start aerie on port 0.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("aerie listening on {scheme}://{local}");
    let limits = serve::Limits {
        read_timeout: Duration::from_secs(config.api.read_timeout),
        max_connections: config.api.max_connections,
    };
    let (acceptor, reloads) = match tls {
        Some(tls) => (Some(tls.acceptor), Some(tokio::spawn(tls.reloader.run()))),
        None => (None, None),
    };
    let serving = CancellationToken::new();
    if let Some(listener) = metrics_listener {
        let limits = serve::Limits {
            max_connections: METRICS_MAX_CONNECTIONS,
            ..limits
        };
        // Stops with the API listener; `services` waits for it at the end.
        services.spawn(serve::serve(
            listener,
            metrics::router(metrics),
            limits,
            None,
            serving.clone(),
        ));
    }
    let shutdown = async {
        signals.recv().await;
        // Runs on its own (in no group: it must outlast them all, being the way out when
        // they do not end).
        tokio::spawn(exit_on_second_signal(signals, jobs.clone()));
        drain_jobs(&jobs, Duration::from_secs(config.system.shutdown_timeout)).await;
        serving.cancel();
    };
    tokio::join!(
        serve::serve(
            listener,
            http::router(state),
            limits,
            acceptor,
            serving.clone()
        ),
        shutdown
    );
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    if tokio::time::timeout(SESSIONS_CLOSE_GRACE, sessions.stop())
        .await
        .is_err()
    {
        tracing::warn!("websockets still open after {SESSIONS_CLOSE_GRACE:?}; closing them");
    }
    services.stop().await;
    if let Some(notifier) = &notifier {
        notifier.deliver_before_exit().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Closes `jobs` to new work, lets the running ones end on their own for up to `grace`
/// (`system.shutdown_timeout`), then cancels those left; returns once every job has ended
/// and recorded how.
async fn drain_jobs(jobs: &TaskGroup, grace: Duration) {
    jobs.close();
    let running = jobs.running();
    if running == 0 {
        tracing::info!("shutting down: no backup or restore is running");
        return;
    }
    tracing::info!(
        running,
        "shutting down: new backups and restores are refused; waiting up to {} s \
         (system.shutdown_timeout) for the running ones to finish",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, jobs.ended()).await.is_ok() {
        tracing::info!("every running backup and restore has finished");
        return;
    }
    tracing::warn!(
        running = jobs.running(),
        "system.shutdown_timeout ({} s) has passed: cancelling the backups and restores \
         still running; each ends failed and is reported",
        grace.as_secs()
    );
    jobs.stop().await;
    tracing::info!("every cancelled backup and restore has recorded its end");
}

/// Waits for a second signal, then ends the process at once (see [`run`]).
async fn exit_on_second_signal(mut signals: StopSignals, jobs: TaskGroup) {
    signals.recv().await;
    tracing::warn!(
        running = jobs.running(),
        "a second signal: exiting now without waiting; the next start marks the backups \
         and restores cut off failed, reports them and removes what they left"
    );
    std::process::exit(FORCED_STOP_EXIT_CODE);
}

/// SIGTERM and SIGINT, listened for from start-up on: the first asks for a graceful stop, a
/// second for an immediate one.
struct StopSignals {
    /// SIGTERM (systemd's stop, `kill`).
    terminate: Signal,
    /// SIGINT (Ctrl-C).
    interrupt: Signal,
}

impl StopSignals {
    /// Starts listening: from here on, these signals no longer kill the process.
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

//! aerie: a backup daemon for the Pterodactyl Panel that speaks the Wings backup API and
//! keeps storage in adapter libraries.
//!
//! A backup request travels `http` → `backups` → `archive` → `plugins` (the adapter).

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
pub mod net_policy;
pub mod plugins;
pub mod rate_limit;
pub mod read_ahead;
pub mod registry;
pub mod restore;
pub mod serve;
pub mod tasks;
#[cfg(test)]
mod test_skips;
pub mod tls;
pub mod upstream;
pub mod wings_text;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::archive::ArchiveSettings;
use crate::backups::Backups;
use crate::config::Config;
use crate::download::Downloads;
use crate::events::panel::{Notifier, Panel};
use crate::events::presign::PanelServices;
use crate::events::EventBus;
use crate::locks::ServerLocks;
use crate::plugins::Adapters;
use crate::registry::Registry;
use crate::restore::fetch::FetchPolicy;
use crate::restore::{RestoreSettings, Restores};
use crate::tasks::TaskGroup;
use crate::upstream::Wings;

/// How long the websockets may take, at shutdown, to send their last events and close: a
/// client that stopped reading must not hold the exit.
const SESSIONS_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until SIGINT or SIGTERM: loads the adapters, opens the registry,
/// recovers from an earlier stop, serves HTTP, and on shutdown stops running work.
///
/// Every task the daemon starts belongs to one of two [`TaskGroup`]s, stopped in order:
/// `work` (backups, restores, their progress tickers, the Panel notifier; the HTTP loop
/// stops on a child token of it) is cancelled and awaited first, so that each job cut short
/// records how it ended and queues its report; then `sessions` (the websockets) send those
/// jobs' last events and close; then the queued reports get one bounded delivery attempt.
pub async fn run(config: Config) -> anyhow::Result<()> {
    for key in &config.ignored_keys {
        tracing::info!(key = %key, "config key not used by aerie; ignored");
    }
    // First, so that a bad certificate stops start-up before anything else is touched.
    let tls = match config.api.ssl.enabled {
        true => Some(tls::Tls::load(&config.api.ssl)?),
        false => None,
    };
    let panel = match &config.remote {
        Some(remote) => Some(Panel::new(
            remote,
            &config.token_id,
            &config.token,
            Duration::from_secs(config.remote_query.timeout),
        )?),
        None => None,
    };
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
    std::fs::create_dir_all(&config.system.data)
        .with_context(|| format!("cannot create {}", config.system.data.display()))?;
    let settings = ArchiveSettings {
        compression: config.system.backups.compression_level,
        threads: config.compression_threads(),
        write_limit: config.write_limit_bytes(),
    };
    let started_at = jwt::unix_now();
    let work = TaskGroup::new();
    let sessions = TaskGroup::new();
    let events = Arc::new(EventBus::default());
    let notifier = match panel {
        Some(panel) => {
            let notifier = Arc::new(Notifier::new(panel, registry.clone()));
            work.spawn(notifier.clone().run(work.child_token()));
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
        work.clone(),
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
        work.clone(),
    ));
    backups.recover_interrupted().await?;
    restores.recover_interrupted()?;
    if let Some(notifier) = &notifier {
        notifier.wake();
    }

    let mut allowed_origins = config.allowed_origins.clone();
    allowed_origins.extend(config.remote.clone());
    let state = Arc::new(http::AppState {
        token: config.token.clone(),
        backups: backups.clone(),
        restores: restores.clone(),
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
    });
    let address = format!("{}:{}", config.api.host, config.api.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("api: cannot listen on {address}"))?;
    let local = listener.local_addr()?;
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
    let serving = work.child_token();
    let stop_serving = async {
        shutdown_signal().await;
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
        stop_serving
    );
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    tracing::info!("shutting down: stopping running backups and restores");
    work.stop().await;
    if tokio::time::timeout(SESSIONS_CLOSE_GRACE, sessions.stop())
        .await
        .is_err()
    {
        tracing::warn!("websockets still open after {SESSIONS_CLOSE_GRACE:?}; closing them");
    }
    if let Some(notifier) = &notifier {
        notifier.deliver_before_exit().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

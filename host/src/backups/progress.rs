//! `backup progress` events for one backup: published when the pipeline has news, and on a
//! timer (run beside the pipeline, inside the job's own task) so a slow backup still shows
//! it is alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::archive::Progress;
use crate::events::{self, EventBus, ProgressGate, PROGRESS_EVERY};
use crate::tasks::CancellationToken;

/// Publishes `backup progress` for one backup, as its [`ProgressGate`] allows.
pub(super) struct ProgressReporter {
    /// Where the events go.
    events: Arc<EventBus>,
    /// The server whose sockets hear them.
    server: String,
    /// The backup they are about.
    uuid: String,
    /// The counts the pipeline moves.
    progress: Arc<Progress>,
    /// Paces the events.
    gate: ProgressGate,
}

impl ProgressReporter {
    /// A reporter of `progress` of backup `uuid` of `server`, publishing to `events`.
    pub(super) fn new(
        events: Arc<EventBus>,
        server: &str,
        uuid: &str,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            events,
            server: server.to_string(),
            uuid: uuid.to_string(),
            progress,
            gate: ProgressGate::default(),
        }
    }

    /// The counts reported.
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Publishes the current progress if it changed and the last event is old enough.
    pub(super) fn publish(&self) {
        let done = self.progress.bytes_done.load(Ordering::Relaxed);
        let total = self.progress.bytes_total.load(Ordering::Relaxed);
        if self.gate.admit(done) {
            self.events.publish(
                &self.server,
                events::backup_progress(&self.uuid, done, total),
            );
        }
    }

    /// Publishes on a timer until `stop` is cancelled. The job awaits it beside its
    /// pipeline, so that the job stays one task and its last event is out when it ends.
    pub(super) async fn tick(&self, stop: CancellationToken) {
        let mut interval = tokio::time::interval(PROGRESS_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if self.gate.opened() {
                        self.publish();
                    }
                }
                () = stop.cancelled() => break,
            }
        }
    }
}

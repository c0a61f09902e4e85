//! Periodic verification (`system.backups.verify_interval`): every interval, the completed
//! backup verified least recently (one never verified first) is read back at the bounded
//! `verify_read_limit`, one at a time, so that a backup that rotted in storage is found
//! before anyone needs it.

use std::sync::Arc;
use std::time::Duration;

use super::{Verifications, VerifyError};
use crate::tasks::CancellationToken;

/// Verifies one backup per `every` (waiting for each to end before the next interval
/// starts), reading at most `read_limit` bytes per second, until `stop` is cancelled.
pub async fn run(
    verifications: Arc<Verifications>,
    every: Duration,
    read_limit: Option<u64>,
    stop: CancellationToken,
) {
    tracing::info!(
        every_seconds = every.as_secs(),
        read_limit_bytes = read_limit,
        "periodic verification on"
    );
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let next = match verifications.registry.least_recently_verified() {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(err) => {
                tracing::error!("periodic verification cannot read the registry: {err:#}");
                continue;
            }
        };
        let (uuid, server) = next;
        match verifications.start(&server, &uuid, read_limit).await {
            Ok(job) => {
                // The job is a task of the daemon, cancelled with it: this ends too.
                let _ = job.await;
            }
            // Started through the API meanwhile: it records its result itself.
            Err(VerifyError::AlreadyRunning) => {}
            Err(VerifyError::NotFound) => verifications.record_missing(&server, &uuid),
            Err(VerifyError::ShuttingDown) => return,
            Err(err) => {
                tracing::error!(backup = %uuid, server = %server, "periodic verification could not start: {err}")
            }
        }
    }
}

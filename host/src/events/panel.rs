//! Reports to the Panel (`POST <remote>/api/remote/backups/<uuid>` and its `/restore`
//! sibling), sent from a durable queue in the registry: a report is queued in the same
//! transaction that records how the backup ended, retried with exponential backoff while the
//! Panel is unreachable or failing (5xx), across restarts, and removed once the Panel accepts
//! it, finally refuses it (4xx, logged with the Panel's reason) or an operator drops it.
//! Unlike Wings, a report that cannot be delivered never costs the backup its archive.
//! At shutdown the delivery loop is cancelled like any task; once the jobs have ended, one
//! last bounded attempt sends what they queued, and what the Panel does not take then
//! waits for the next start.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::registry::{Notification, Registry};

/// The first retry delay; it doubles with each failed attempt...
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// ...up to this, so a Panel that comes back is told within half a minute.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How long the last delivery attempt at shutdown may take: a few round trips to a Panel
/// that answers, and still far inside systemd's 90 s between SIGTERM and SIGKILL after the
/// connections' and jobs' own grace. What is not delivered by then stays queued.
pub const SHUTDOWN_DELIVERY: Duration = Duration::from_secs(5);

/// How aerie reaches the Panel.
#[derive(Clone)]
pub struct Panel {
    client: reqwest::Client,
    /// `<remote>/api/remote`, no trailing slash.
    base: String,
    /// `Bearer <token_id>.<token>`.
    authorization: String,
}

/// How a delivery attempt ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// 4xx: the Panel will not take this report; retrying cannot help.
    #[error("the Panel refused the report ({status}): {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `errors[0].detail` from the Panel's body, or the body itself.
        detail: String,
    },
    /// A 5xx: the Panel answered but failed on this report; try it again later.
    #[error("the Panel failed on the report: {0}")]
    Failed(String),
    /// A connection error or a timeout: the Panel is not there; try again later.
    #[error("the Panel could not be reached: {0}")]
    Unavailable(String),
}

impl Panel {
    /// A client for the Panel at `remote`, authenticating as `token_id.token`, with
    /// `timeout` per request (Wings' `remote_query.timeout`).
    pub fn new(
        remote: &str,
        token_id: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Self {
            client,
            base: format!("{}/api/remote", remote.trim_end_matches('/')),
            authorization: format!("Bearer {token_id}.{token}"),
        })
    }

    /// The Panel of `config` (`remote`, the node's token, `remote_query.timeout`); `None`
    /// when no `remote` is configured.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<Self>> {
        config
            .remote
            .as_deref()
            .map(|remote| {
                Self::new(
                    remote,
                    &config.token_id,
                    &config.token,
                    Duration::from_secs(config.remote_query.timeout),
                )
            })
            .transpose()
    }

    /// POSTs `body` (JSON text) to `<remote>/api/remote<path>` with Wings' headers.
    pub async fn post(&self, path: &str, body: &str) -> Result<(), DeliveryError> {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        self.send(request).await.map(drop)
    }

    /// GETs `<remote>/api/remote<path>` (a path with its query) with Wings' headers; the
    /// body of a 2xx answer, read up to `limit` bytes.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>, DeliveryError> {
        let request = self.client.get(format!("{}{path}", self.base));
        let mut response = self.send(request).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| DeliveryError::Unavailable(error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(DeliveryError::Failed(format!(
                    "the Panel's answer is larger than {limit} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends `request` with Wings' headers; a 2xx response, or why not.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        let user_agent = format!(
            "aerie/{} (Pterodactyl Wings compatible)",
            env!("CARGO_PKG_VERSION")
        );
        let response = request
            .header(AUTHORIZATION, &self.authorization)
            .header(ACCEPT, "application/vnd.pterodactyl.v1+json")
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, user_agent)
            .send()
            .await
            .map_err(|e| DeliveryError::Unavailable(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["errors"][0]["detail"].as_str().map(str::to_string))
            .unwrap_or(text);
        if status.is_client_error() {
            Err(DeliveryError::Refused {
                status: status.as_u16(),
                detail,
            })
        } else {
            Err(DeliveryError::Failed(format!("{status}: {detail}")))
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The delay before attempt `attempts + 1`.
fn retry_delay(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(MAX_RETRY)
}

/// What one delivery attempt means for the rest of the queue.
enum Delivery {
    /// The Panel answered (took, refused or failed on the report): go on with the next.
    Done,
    /// The Panel could not be reached: the whole queue waits.
    PanelAway,
}

/// Delivers queued reports in the background.
pub struct Notifier {
    panel: Panel,
    registry: Arc<Registry>,
    wake: Notify,
}

impl Notifier {
    /// A notifier that delivers `registry`'s queue to `panel`.
    pub fn new(panel: Panel, registry: Arc<Registry>) -> Self {
        Self {
            panel,
            registry,
            wake: Notify::new(),
        }
    }

    /// Tells the delivery loop that something new is queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The delivery loop; runs until `stop` is cancelled (a report being delivered then is
    /// finished first). Reports go out oldest first: whenever one is due the whole queue is
    /// sent in order, and while the Panel cannot be reached the whole queue waits on one
    /// backoff.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = now_ms();
            // When anything is due, the whole queue goes, oldest first: a report that waits
            // on a long backoff is never overtaken by a newer one.
            let due = self.registry.next_notification_due().ok().flatten();
            if due.is_some_and(|due| due <= now) {
                match self.registry.notifications() {
                    Ok(queue) => self.deliver_in_order(queue, &stop).await,
                    Err(err) => tracing::error!("cannot read the Panel report queue: {err:#}"),
                }
            }
            let next = self.registry.next_notification_due().ok().flatten();
            let wait = next.map_or(MAX_RETRY, |due| {
                Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64)
            });
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tokio::time::timeout(wait, self.wake.notified()) => {}
            }
        }
    }

    /// At shutdown, after every job has ended and queued its report: one attempt to deliver
    /// the whole queue, due or not, for at most [`SHUTDOWN_DELIVERY`]. What the Panel does
    /// not take stays queued for the next start.
    pub async fn deliver_before_exit(&self) {
        let queue = match self.registry.notifications() {
            Ok(queue) if queue.is_empty() => return,
            Ok(queue) => queue,
            Err(err) => {
                tracing::error!("cannot read the Panel report queue: {err:#}");
                return;
            }
        };
        let count = queue.len();
        // Bounded by the timeout, not by a stop: this attempt is what runs after the stop.
        let unstopped = CancellationToken::new();
        let attempt = self.deliver_in_order(queue, &unstopped);
        if tokio::time::timeout(SHUTDOWN_DELIVERY, attempt)
            .await
            .is_err()
        {
            tracing::warn!(
                "the Panel did not take every report within {SHUTDOWN_DELIVERY:?}; \
                 what is left is sent at the next start"
            );
        }
        let left = self.registry.notifications().map_or(0, |queue| queue.len());
        tracing::info!(
            delivered = count.saturating_sub(left),
            left,
            "last delivery of Panel reports before exit"
        );
    }

    /// Delivers `queue` in order, stopping at the first report the Panel is not there to
    /// take, or before the next report once `stop` is cancelled. Afterwards every report
    /// left is due in the future (delivered ones are gone, a 5xx reschedules its report,
    /// and an absent Panel reschedules them all) or was not tried.
    async fn deliver_in_order(&self, queue: Vec<Notification>, stop: &CancellationToken) {
        for notification in queue {
            if stop.is_cancelled() {
                return;
            }
            if let Delivery::PanelAway = self.deliver(notification).await {
                return;
            }
        }
    }

    async fn deliver(&self, notification: Notification) -> Delivery {
        let span =
            tracing::info_span!("panel", backup = %notification.backup, path = %notification.path);
        let _entered = span.enter();
        let delay = retry_delay(notification.attempts);
        let next = now_ms() + delay.as_millis() as i64;
        let retry_in_ms = delay.as_millis() as u64;
        match self
            .panel
            .post(&notification.path, &notification.body)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    attempts = notification.attempts + 1,
                    "the Panel accepted the report"
                );
                self.forget(notification.id);
                Delivery::Done
            }
            Err(DeliveryError::Refused { status, detail }) => {
                tracing::error!(status, detail = %detail, "the Panel refused the report; not retrying");
                self.forget(notification.id);
                Delivery::Done
            }
            Err(err @ DeliveryError::Failed(_)) => {
                tracing::warn!(
                    attempts = notification.attempts + 1,
                    retry_in_ms,
                    "{err}; the report is kept and retried"
                );
                if let Err(err) =
                    self.registry
                        .retry_notification_later(notification.id, next, &err.to_string())
                {
                    tracing::error!("cannot reschedule the report: {err:#}");
                }
                Delivery::Done
            }
            Err(err @ DeliveryError::Unavailable(_)) => {
                tracing::warn!(
                    attempts = notification.attempts + 1,
                    retry_in_ms,
                    "{err}; every queued report is kept and retried"
                );
                if let Err(err) = self
                    .registry
                    .retry_all_notifications_later(next, &err.to_string())
                {
                    tracing::error!("cannot reschedule the Panel report queue: {err:#}");
                }
                Delivery::PanelAway
            }
        }
    }

    fn forget(&self, id: i64) {
        if let Err(err) = self.registry.remove_notification(id) {
            tracing::error!("cannot remove a delivered report from the queue: {err:#}");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        assert_eq!(retry_delay(0), Duration::from_millis(500));
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(10), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }
}

//! What the world hears about backups: events on each server's websocket (the bus and the
//! socket protocol) and status reports to the Panel.

pub mod bus;
pub mod panel;
pub mod websocket;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aerie_adapter_api::StoredBackup;
use serde_json::json;

pub use bus::{Event, EventBus};

use crate::archive::Written;

/// A job's progress events go out at most this often (twice a second).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// When a job's next progress event is due: the first at once, later ones when the count
/// has moved and [`PROGRESS_EVERY`] has passed since the last one went out.
#[derive(Default)]
pub struct ProgressGate {
    /// When the last event went out, and the count it carried.
    last: Mutex<Option<(Instant, u64)>>,
}

impl ProgressGate {
    /// Whether an event saying `done` may go out now; if so, it counts as sent.
    pub fn admit(&self, done: u64) -> bool {
        let mut last = self.last.lock().expect("progress gate");
        let due = last.is_none_or(|(at, sent)| sent != done && at.elapsed() >= PROGRESS_EVERY);
        if due {
            *last = Some((Instant::now(), done));
        }
        due
    }

    /// Whether the first event has gone out.
    pub fn opened(&self) -> bool {
        self.last.lock().expect("progress gate").is_some()
    }
}

/// `backup started`: `{"uuid","adapter"}` (new in aerie).
pub fn backup_started(uuid: &str, adapter: &str) -> Event {
    Event::new(
        "backup started",
        json!({"uuid": uuid, "adapter": adapter}).to_string(),
    )
}

/// `backup progress`: `{"uuid","bytes_done","bytes_total"}` (new in aerie).
pub fn backup_progress(uuid: &str, bytes_done: u64, bytes_total: u64) -> Event {
    Event::progress(
        "backup progress",
        uuid,
        json!({"uuid": uuid, "bytes_done": bytes_done, "bytes_total": bytes_total}).to_string(),
    )
}

/// `backup completed` and `backup completed:<uuid>` with Wings' payload; the Panel's
/// frontend listens for the second, Wings only ever sends the first.
pub fn backup_completed(uuid: &str, outcome: Option<&Written>) -> [Event; 2] {
    let (checksum, size) = outcome.map_or(("", 0), |w| (w.sha1.as_str(), w.size));
    let payload = json!({
        "checksum": checksum,
        "checksum_type": "sha1",
        "file_size": size,
        "is_successful": outcome.is_some(),
        "uuid": uuid,
    })
    .to_string();
    [
        Event::new("backup completed", payload.clone()),
        Event::new(format!("backup completed:{uuid}"), payload),
    ]
}

/// The Panel's body for `POST /api/remote/backups/<uuid>`: exactly
/// `{"checksum","checksum_type","size","successful","parts"}`, with `parts` only when the
/// adapter left the upload for the Panel to complete.
pub fn backup_report(outcome: Option<(&Written, &StoredBackup)>) -> String {
    match outcome {
        Some((written, stored)) => json!({
            "checksum": written.sha1,
            "checksum_type": "sha1",
            "size": written.size,
            "successful": true,
            "parts": stored.panel_completes.then(|| stored
                .parts
                .iter()
                .map(|p| json!({"etag": p.etag, "part_number": p.number}))
                .collect::<Vec<_>>()),
        }),
        None => json!({
            "checksum": "",
            "checksum_type": "sha1",
            "size": 0,
            "successful": false,
            "parts": null,
        }),
    }
    .to_string()
}

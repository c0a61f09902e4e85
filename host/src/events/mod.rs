//! What the world hears about backups: events on each server's websocket (the bus and the
//! socket protocol) and status reports to the Panel.

pub mod bus;
pub mod panel;
pub mod presign;
pub mod reports;
pub mod websocket;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How a restore ends on the socket, as Wings ends one: a `daemon message` saying how it
/// went, then `backup restore completed` (the Panel's frontend reloads the file list on it).
pub fn restore_completed(message: String) -> [Event; 2] {
    [
        Event::new("daemon message", message),
        Event::new("backup restore completed", ""),
    ]
}

/// `backup restore progress`: `{"uuid","bytes_done","bytes_total"}`, compressed bytes read
/// of the archive's size when known (new in aerie).
pub fn restore_progress(uuid: &str, bytes_done: u64, bytes_total: Option<u64>) -> Event {
    Event::progress(
        "backup restore progress",
        uuid,
        json!({"uuid": uuid, "bytes_done": bytes_done, "bytes_total": bytes_total}).to_string(),
    )
}

/// `(restoring): <path>`, the console line Wings prints for each restored entry; transient,
/// so a paused socket loses these first.
pub fn restoring_entry(path: &Path) -> Event {
    Event::transient("daemon message", format!("(restoring): {}", path.display()))
}

/// `backup verify progress`: `{"uuid","bytes_done","bytes_total"}`, archive bytes read back
/// from storage of its recorded size (new in aerie).
pub fn verify_progress(uuid: &str, bytes_done: u64, bytes_total: u64) -> Event {
    Event::progress(
        "backup verify progress",
        uuid,
        json!({"uuid": uuid, "bytes_done": bytes_done, "bytes_total": bytes_total}).to_string(),
    )
}

/// `backup verify completed`: `{"uuid","result"}`, `result` as the verify route shows it
/// (new in aerie).
pub fn verify_completed(uuid: &str, result: &impl serde::Serialize) -> Event {
    Event::new(
        "backup verify completed",
        json!({"uuid": uuid, "result": result}).to_string(),
    )
}

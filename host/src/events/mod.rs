//! What the world hears about backups: events on each server's websocket (the bus and the
//! socket protocol) and status reports to the Panel.

pub mod bus;
pub mod panel;
pub mod websocket;

use serde_json::json;

pub use bus::{Event, EventBus};

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
pub fn backup_completed(uuid: &str, outcome: Option<(&str, u64)>) -> [Event; 2] {
    let (checksum, size) = outcome.unwrap_or(("", 0));
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
/// `{"checksum","checksum_type","size","successful","parts"}`.
pub fn backup_report(outcome: Option<(&str, u64, Option<Vec<(String, u32)>>)>) -> String {
    match outcome {
        Some((checksum, size, parts)) => json!({
            "checksum": checksum,
            "checksum_type": "sha1",
            "size": size,
            "successful": true,
            "parts": parts.map(|parts| parts
                .into_iter()
                .map(|(etag, part_number)| json!({"etag": etag, "part_number": part_number}))
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

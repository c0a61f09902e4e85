//! What the CLI prints on stdout: one JSON value on one line for scripts (`--json`), or
//! text for people (tables, `key: value` lines, one-line outcomes).

use indicatif::HumanBytes;
use serde_json::Value;

/// Prints `value` as JSON when `json`, else the text `text` makes.
pub fn print(json: bool, value: &Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// The columns of a backup list: heading and the field shown under it.
const COLUMNS: [(&str, &str); 6] = [
    ("UUID", "uuid"),
    ("SERVER", "server"),
    ("ADAPTER", "adapter"),
    ("STATE", "state"),
    ("SIZE", "size"),
    ("STARTED", "started_at"),
];

/// A list of backups as a table, one backup a line, columns aligned.
pub fn table(backups: &Value) -> String {
    let rows: Vec<Vec<String>> = backups
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|backup| {
            COLUMNS
                .iter()
                .map(|(_, field)| match *field {
                    "size" => backup[field]
                        .as_u64()
                        .map_or("-".to_string(), |size| HumanBytes(size).to_string()),
                    _ => text_of(&backup[field]),
                })
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return "no backups".to_string();
    }
    let headings: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            std::iter::once(&headings)
                .chain(&rows)
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&headings)
        .chain(&rows)
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One backup as `key: value` lines, every field the daemon gave, in its order.
pub fn details(backup: &Value) -> String {
    backup
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(key, value)| format!("{key}: {}", text_of(value)))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| text_of(backup))
}

/// A finished `create`, in one line.
pub fn created(outcome: &Value) -> String {
    let uuid = text_of(&outcome["uuid"]);
    match outcome["outcome"].as_str() {
        Some("completed") => format!(
            "aerie: backup {uuid} completed: {} ({} bytes), sha1 {}",
            HumanBytes(outcome["size"].as_u64().unwrap_or(0)),
            text_of(&outcome["size"]),
            text_of(&outcome["sha1"]),
        ),
        _ => format!(
            "aerie: backup {uuid} failed: {}",
            text_of(&outcome["error"])
        ),
    }
}

/// A verification's result, in one line.
pub fn verified(backup: &str, result: &Value) -> String {
    let counts = format!(
        "{} entries, {} bytes",
        text_of(&result["entries"]),
        text_of(&result["bytes"])
    );
    match result["ok"].as_bool() {
        Some(true) => format!("aerie: backup {backup} is good: checksum matches, {counts}"),
        _ => format!(
            "aerie: backup {backup} is NOT good (checksum matches: {}, {counts}): {}",
            text_of(&result["checksum_matches"]),
            text_of(&result["error"])
        ),
    }
}

/// A JSON value as text: strings bare, `null` as `-`.
fn text_of(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

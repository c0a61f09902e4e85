//! The Panel's status reports, in one place: the path under `<remote>/api/remote` and the
//! exact JSON body the Panel accepts for each (wings-protocol.md §1.6–1.7). Jobs queue them
//! in the registry; `panel` delivers them.

use aerie_adapter_api::StoredBackup;
use serde_json::json;

use crate::archive::Written;

/// One report: where it goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The path under `<remote>/api/remote`, e.g. `/backups/<uuid>`.
    pub path: String,
    /// The JSON body.
    pub body: String,
}

/// How backup `uuid` ended, for `POST /api/remote/backups/<uuid>`: exactly
/// `{"checksum","checksum_type","size","successful","parts"}`, with `parts` only when the
/// adapter left the upload for the Panel to complete.
pub fn backup(uuid: &str, outcome: Option<(&Written, &StoredBackup)>) -> Report {
    let body = match outcome {
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
    };
    Report {
        path: format!("/backups/{uuid}"),
        body: body.to_string(),
    }
}

/// How the restore of backup `uuid` ended, for `POST /api/remote/backups/<uuid>/restore`:
/// exactly `{"successful"}`.
pub fn restore(uuid: &str, successful: bool) -> Report {
    Report {
        path: format!("/backups/{uuid}/restore"),
        body: json!({ "successful": successful }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(report: &Report) -> Vec<String> {
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&report.body).unwrap();
        body.keys().cloned().collect()
    }

    #[test]
    fn each_report_has_the_panels_path_and_exactly_its_keys() {
        let failed = backup("b1", None);
        assert_eq!(failed.path, "/backups/b1");
        assert_eq!(
            keys(&failed),
            ["checksum", "checksum_type", "parts", "size", "successful"]
        );
        let restored = restore("b1", true);
        assert_eq!(restored.path, "/backups/b1/restore");
        assert_eq!(restored.body, r#"{"successful":true}"#);
    }
}

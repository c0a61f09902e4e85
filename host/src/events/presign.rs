//! The host's services for adapters (aerie-adapter-api 1.1): asking the Panel for presigned
//! UploadPart URLs on an adapter's behalf (wings-protocol.md §1.5), so that an adapter can
//! upload to the Panel's bucket without any S3 credentials on the node.

use std::time::Duration;

use aerie_adapter_api::host::ServicesProvider;
use aerie_adapter_api::{AdapterError, ErrorKind, PresignedParts};
use serde::Deserialize;

use super::panel::{DeliveryError, Panel};

/// The largest answer taken from the Panel: 10,000 presigned URLs (S3's part limit) of
/// about 1.5 KiB each, with room to spare.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Attempts at asking when the Panel cannot be reached or a proxy in front of it answers
/// 502/503/504 (the request never reached the Panel, so no upload was started for it).
const ATTEMPTS: u32 = 4;
/// The wait before the second attempt; it doubles each time (0.5 s, 1 s, 2 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The Panel's answer, `{"parts": [...], "part_size": N}`.
#[derive(Deserialize)]
struct Answer {
    parts: Vec<String>,
    part_size: u64,
}

/// What adapters may ask of the host: the Panel, when one is configured.
pub struct PanelServices {
    panel: Option<Panel>,
    /// The daemon's runtime, which the Panel client runs on; captured at construction,
    /// because adapters call from threads of their own or of the archive's, outside it.
    /// `None` in the tools that load adapters without running the daemon.
    runtime: Option<tokio::runtime::Handle>,
}

impl PanelServices {
    /// Services backed by `panel` (`None` when `remote` is not configured), on the runtime
    /// this is called from, if any.
    pub fn new(panel: Option<Panel>) -> Self {
        Self {
            panel,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Services backed by the Panel of `config` (`remote`), for the tools that load the
    /// adapters outside the daemon (`aerie check`, `aerie adapters`).
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        Ok(Self::new(Panel::from_config(config)?))
    }
}

impl ServicesProvider for PanelServices {
    fn panel_configured(&self) -> bool {
        self.panel.is_some()
    }

    fn presigned_upload_parts(
        &self,
        backup: &str,
        size: u64,
    ) -> Result<PresignedParts, AdapterError> {
        let Some(panel) = &self.panel else {
            return Err(AdapterError::other(
                "no Panel is configured (`remote`), so there is no one to ask for upload URLs",
            ));
        };
        let Some(runtime) = &self.runtime else {
            return Err(AdapterError::other(
                "the Panel can only be asked while the daemon runs",
            ));
        };
        if backup.is_empty()
            || !backup
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(AdapterError::other(format!(
                "not a backup uuid: {backup:?}"
            )));
        }
        let path = format!("/backups/{backup}?size={size}");
        let body = runtime.block_on(ask(panel, &path))?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            AdapterError::other(format!(
                "the Panel's answer to GET /api/remote{path} is not {{\"parts\", \"part_size\"}}: {e}"
            ))
        })?;
        tracing::info!(
            urls = answer.parts.len(),
            panel_part_size = answer.part_size,
            size,
            "the Panel presigned the backup's upload"
        );
        Ok(PresignedParts {
            urls: answer.parts,
            part_size: answer.part_size,
        })
    }
}

/// GETs `path`, retrying while the Panel is unreachable or a gateway answers 502/503/504.
async fn ask(panel: &Panel, path: &str) -> Result<Vec<u8>, AdapterError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let err = match panel.get(path, MAX_ANSWER_BYTES).await {
            Ok(body) => return Ok(body),
            Err(err) => err,
        };
        let retry = match &err {
            DeliveryError::Unavailable(_) => true,
            DeliveryError::Failed(text) => ["502", "503", "504"]
                .iter()
                .any(|status| text.starts_with(status)),
            DeliveryError::Refused { .. } => false,
        };
        if !retry || attempt >= ATTEMPTS {
            let (kind, why) = match err {
                DeliveryError::Unavailable(why) => (
                    ErrorKind::UNAVAILABLE,
                    format!("the Panel could not be reached: {why}"),
                ),
                DeliveryError::Failed(why) => {
                    (ErrorKind::OTHER, format!("the Panel answered {why}"))
                }
                DeliveryError::Refused { status, detail } => (
                    ErrorKind::OTHER,
                    format!("the Panel refused it ({status}): {detail}"),
                ),
            };
            return Err(AdapterError::new(
                kind,
                format!("asking the Panel for upload URLs (GET /api/remote{path}) failed: {why}"),
            ));
        }
        tracing::warn!(attempt, error = %err, retry_in_ms = backoff.as_millis() as u64, "asking the Panel for upload URLs failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

//! The sidecar object `<key>.json` written beside each finished archive. The SHA-1 is known
//! only once the whole archive has been streamed, too late for object metadata, so this small
//! object records it (with the size, time and versions) and the bucket alone says what each
//! backup is.

use std::time::SystemTime;

use aerie_adapter_api::AdapterError;
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use serde::{Deserialize, Serialize};

use crate::error::s3_error;
use crate::store::{sidecar_key, Store};

/// What the sidecar says about one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The archive's SHA-1, hex.
    pub checksum: String,
    /// Always `sha1`.
    #[serde(default)]
    pub checksum_type: String,
    /// The archive's size in bytes.
    #[serde(default)]
    pub size: u64,
    /// When the upload completed, RFC 3339 (UTC).
    #[serde(default)]
    pub created_at: String,
    /// The version of aerie that made the backup.
    #[serde(default)]
    pub aerie_version: String,
    /// The server's uuid.
    #[serde(default)]
    pub server: String,
    /// The backup's uuid.
    #[serde(default)]
    pub backup: String,
}

impl Sidecar {
    /// The sidecar of an archive completed now.
    pub fn new(sha1: &str, size: u64, aerie_version: &str, server: &str, backup: &str) -> Self {
        let created_at = DateTime::from(SystemTime::now())
            .fmt(DateTimeFormat::DateTime)
            .unwrap_or_default();
        Sidecar {
            checksum: sha1.to_string(),
            checksum_type: "sha1".to_string(),
            size,
            created_at,
            aerie_version: aerie_version.to_string(),
            server: server.to_string(),
            backup: backup.to_string(),
        }
    }
}

/// Writes the sidecar of the archive at `key`.
pub async fn put(store: &Store, key: &str, sidecar: &Sidecar) -> Result<(), AdapterError> {
    let key = sidecar_key(key);
    let body = serde_json::to_vec_pretty(sidecar).expect("a sidecar serializes");
    store
        .client
        .put_object()
        .bucket(&store.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| s3_error("PutObject", store.url(&key), &store.bucket, &e))?;
    Ok(())
}

/// Reads the sidecar of the archive at `key`; `None` when there is none (a backup made by
/// another tool, e.g. Wings, or one whose sidecar could not be written) or it is unreadable.
pub async fn get(store: &Store, key: &str) -> Result<Option<Sidecar>, AdapterError> {
    let key = sidecar_key(key);
    let url = store.url(&key);
    let output = match store
        .client
        .get_object()
        .bucket(&store.bucket)
        .key(&key)
        .send()
        .await
    {
        Ok(output) => output,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(s3_error("GetObject", url, &store.bucket, &e)),
    };
    let bytes = output.body.collect().await.map_err(|e| {
        AdapterError::new(
            aerie_adapter_api::ErrorKind::UNAVAILABLE,
            format!("reading {url} failed: {e}"),
        )
        .with_retryable(true)
    })?;
    match serde_json::from_slice(&bytes.into_bytes()) {
        Ok(sidecar) => Ok(Some(sidecar)),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "ignoring an unreadable sidecar");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sidecar;

    #[test]
    fn round_trip() {
        let sidecar = Sidecar::new(
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            0,
            "1.2.3",
            "s",
            "b",
        );
        assert!(sidecar.created_at.ends_with('Z'), "{}", sidecar.created_at);
        let json = serde_json::to_value(&sidecar).unwrap();
        assert_eq!(json["checksum_type"], "sha1");
        assert_eq!(json["aerie_version"], "1.2.3");
        let back: Sidecar = serde_json::from_value(json).unwrap();
        assert_eq!(back, sidecar);
    }
}

//! Aborting multipart uploads, so that no incomplete upload (and none of its parts, which
//! are billed) stays in the bucket: at once when a backup fails or is aborted, again in the
//! background while the server cannot be reached, and on request for what a crash left.

use std::time::Duration;

use aerie_adapter_api::AdapterError;
use std::sync::Arc;

use crate::error::s3_error;
use crate::runtime;
use crate::store::Store;

/// Background attempts to abort an upload the server refused to abort at once.
const BACKGROUND_ATTEMPTS: u32 = 12;
/// The first wait between background attempts; it doubles up to [`MAX_BACKGROUND_DELAY`]
/// (about seven minutes in all).
const FIRST_BACKGROUND_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between background attempts.
const MAX_BACKGROUND_DELAY: Duration = Duration::from_secs(60);

/// Aborts upload `upload_id` of `key`, then any other unfinished upload of the same key (a
/// retried CreateMultipartUpload can leave one). An upload that is already gone is fine.
pub async fn abort(store: &Store, key: &str, upload_id: &str) -> Result<(), AdapterError> {
    abort_one(store, key, upload_id).await?;
    discard(store, key).await?;
    Ok(())
}

/// Aborts every unfinished multipart upload of `key`; returns how many there were.
pub async fn discard(store: &Store, key: &str) -> Result<usize, AdapterError> {
    let mut aborted = 0;
    let mut key_marker: Option<String> = None;
    let mut upload_id_marker: Option<String> = None;
    loop {
        let page = store
            .client
            .list_multipart_uploads()
            .bucket(&store.bucket)
            .prefix(key)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await
            .map_err(|e| s3_error("ListMultipartUploads", store.url(key), &store.bucket, &e))?;
        for upload in page.uploads() {
            if let (Some(k), Some(id)) = (upload.key(), upload.upload_id()) {
                if k == key {
                    abort_one(store, key, id).await?;
                    aborted += 1;
                }
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(aborted);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        upload_id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() && upload_id_marker.is_none() {
            return Ok(aborted);
        }
    }
}

/// One AbortMultipartUpload; an upload that no longer exists counts as aborted.
async fn abort_one(store: &Store, key: &str, upload_id: &str) -> Result<(), AdapterError> {
    let result = store
        .client
        .abort_multipart_upload()
        .bucket(&store.bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::debug!(key, upload_id, "aborted multipart upload");
            Ok(())
        }
        Err(e)
            if e.as_service_error().is_some_and(|e| e.is_no_such_upload())
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
        {
            Ok(())
        }
        Err(e) => Err(s3_error(
            "AbortMultipartUpload",
            format!("{} (upload {upload_id})", store.url(key)),
            &store.bucket,
            &e,
        )),
    }
}

/// Keeps trying to abort upload `upload_id` of `key` on the adapter's runtime, first after
/// `first_delay`, while the failures may pass (the server is down, throttling); logs the
/// outcome. Never blocks the caller.
pub fn abort_in_background(
    store: Arc<Store>,
    key: String,
    upload_id: String,
    first_delay: Duration,
) {
    let task = async move {
        let mut delay = first_delay;
        for attempt in 1..=BACKGROUND_ATTEMPTS {
            tokio::time::sleep(delay).await;
            match abort(&store, &key, &upload_id).await {
                Ok(()) => {
                    tracing::info!(key = %key, upload_id = %upload_id, attempt, "aborted multipart upload in the background");
                    return;
                }
                Err(e) if e.retryable && attempt < BACKGROUND_ATTEMPTS => {
                    tracing::debug!(key = %key, attempt, error = %e, "abort failed; will try again");
                }
                Err(e) => {
                    tracing::error!(
                        key = %key,
                        upload_id = %upload_id,
                        error = %e,
                        "gave up aborting the multipart upload: it stays in the bucket until the \
                         backup's discard_incomplete or a lifecycle rule removes it"
                    );
                    return;
                }
            }
            delay = (delay * 2).clamp(FIRST_BACKGROUND_DELAY, MAX_BACKGROUND_DELAY);
        }
    };
    if let Err(e) = runtime::spawn(task) {
        tracing::error!(error = %e, "cannot abort the multipart upload in the background");
    }
}

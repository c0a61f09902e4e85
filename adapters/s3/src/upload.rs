//! Writing one backup: a multipart upload fed by the host's stream, with no temporary file.
//!
//! `write` fills a part buffer; a full part is handed to a task on the adapter's runtime
//! (UploadPart, retried with backoff from its own buffer) while the host keeps writing. At
//! most `concurrency` parts, and `concurrency × part_size` bytes, are in flight: past that
//! `write` blocks, so memory stays near `(concurrency + 1) × part_size` whatever the
//! archive's size. Parts grow for very large archives (S3 allows 10,000 parts). An archive
//! smaller than one part is a single PutObject. Any failure, an `abort`, or a sink dropped
//! unfinished aborts the multipart upload.

use std::future::Future;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aerie_adapter_api::{AdapterError, Part, Sink, StoredBackup};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};
use tracing::instrument::WithSubscriber;

use crate::cleanup;
use crate::config::MAX_PART_SIZE;
use crate::error::s3_error;
use crate::runtime;
use crate::sidecar::{self, Sidecar};
use crate::store::{timeouts, Store, ATTEMPT_TIMEOUT};
use crate::upload_state::UploadState;

/// The archive's Content-Type.
pub(crate) const CONTENT_TYPE: &str = "application/x-gzip";
/// S3's limit on the parts of one upload.
pub(crate) const MAX_PARTS: u32 = 10_000;
/// The part size doubles after every this many parts: 10,000 parts of a 5 MiB start then
/// hold about 4.9 TiB, close to S3's 5 TiB object limit.
const PARTS_PER_DOUBLING: u32 = 1_000;
/// Attempts at sending one part (or a small archive) before giving up.
pub(crate) const ATTEMPTS: u32 = 6;
/// The wait before the second attempt; it doubles each time (200 ms … 3.2 s).
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long completing an upload may take: S3 assembles the parts before it answers.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How every backup of an adapter instance is uploaded.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Bytes per part at the start of an upload.
    pub part_size: u64,
    /// Parts in flight at most.
    pub concurrency: usize,
    /// The archives' storage class; the bucket's default when `None`.
    pub storage_class: Option<StorageClass>,
    /// The daemon's version, recorded in the sidecar.
    pub aerie_version: String,
}

/// The size of part `number` (from 1): the configured size for the first 1,000 parts, then
/// doubling every 1,000 parts, never above S3's 5 GiB.
fn part_size_for(base: u64, number: u32) -> u64 {
    let doublings = number.saturating_sub(1) / PARTS_PER_DOUBLING;
    base.saturating_mul(1 << doublings.min(32))
        .min(MAX_PART_SIZE)
}

/// Moves as much of `bytes` into the part being filled as fits below `target` bytes
/// (reserving the whole part at its first byte); returns how many it took.
pub(crate) fn fill_part(buffer: &mut Vec<u8>, target: u64, bytes: &[u8]) -> usize {
    if buffer.capacity() == 0 {
        buffer.reserve_exact(target as usize);
    }
    let room = target.saturating_sub(buffer.len() as u64) as usize;
    let taken = room.min(bytes.len());
    buffer.extend_from_slice(&bytes[..taken]);
    taken
}

/// The writer of one backup. Its state lives in `upload` until the backup is finished,
/// aborted or failed.
pub struct S3Sink {
    /// The upload in progress, or why it failed.
    state: UploadState<Upload>,
}

/// One backup being uploaded.
struct Upload {
    store: Arc<Store>,
    settings: Arc<UploadSettings>,
    /// The server's and the backup's ids, for the sidecar.
    server: String,
    backup: String,
    /// The archive's key.
    key: String,
    /// Set once the first part is full; until then the archive may still be a PutObject.
    upload_id: Option<String>,
    /// The part being filled.
    buffer: Vec<u8>,
    /// The number of the part being filled.
    next_part: u32,
    /// The UploadPart tasks not yet collected, and the bytes they hold.
    in_flight: JoinSet<Result<Part, AdapterError>>,
    in_flight_bytes: u64,
    /// The parts uploaded, in the order they finished.
    done: Vec<Part>,
    /// Bytes written by the host so far.
    written: u64,
}

impl S3Sink {
    /// A sink for backup `backup` of server `server`, to be stored at `key`. Nothing is sent
    /// before the first part is full.
    pub fn new(
        store: Arc<Store>,
        settings: Arc<UploadSettings>,
        server: &str,
        backup: &str,
        key: String,
    ) -> Self {
        tracing::debug!(key = %key, "backup started");
        S3Sink {
            state: UploadState::new(Upload {
                store,
                settings,
                server: server.to_string(),
                backup: backup.to_string(),
                key,
                upload_id: None,
                buffer: Vec::new(),
                next_part: 1,
                in_flight: JoinSet::new(),
                in_flight_bytes: 0,
                done: Vec::new(),
                written: 0,
            }),
        }
    }

    /// Aborts after `err`, keeps `err` for later calls, and returns it.
    fn fail(&mut self, err: AdapterError) -> AdapterError {
        self.state.fail(err, |upload, err| {
            // A failed abort is logged and retried in the background; `err` is what matters.
            let _ = upload.abort(Some(err));
        })
    }
}

impl Sink for S3Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        match self.state.get()?.write(bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn finish(mut self, sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        match self.state.get()?.finish(sha1, size) {
            Ok(stored) => {
                self.state.take();
                Ok(stored)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn abort(mut self) -> Result<(), AdapterError> {
        match self.state.take() {
            Some(upload) => upload.abort(None),
            None => Ok(()),
        }
    }
}

impl Drop for S3Sink {
    /// A sink dropped without `finish` or `abort`: its parts are cancelled and the upload is
    /// aborted in the background, without blocking.
    fn drop(&mut self) {
        let Some(mut upload) = self.state.take() else {
            return;
        };
        let Some(upload_id) = upload.upload_id.take() else {
            return;
        };
        tracing::warn!(key = %upload.key, "backup dropped unfinished; aborting its upload");
        let (store, key) = (upload.store.clone(), upload.key.clone());
        // Dropping the upload cancels its part tasks; the abort follows once they are gone.
        drop(upload);
        cleanup::abort_in_background(store, key, upload_id, Duration::from_millis(500));
    }
}

impl Upload {
    /// `s3://bucket/key`, for messages.
    fn url(&self) -> String {
        self.store.url(&self.key)
    }

    /// Appends to the part buffer, sending each part once it is full.
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), AdapterError> {
        while !bytes.is_empty() {
            let target = part_size_for(self.settings.part_size, self.next_part);
            // A full part is sent only when more bytes come, so an archive of exactly one
            // part is still a single PutObject.
            if self.buffer.len() as u64 >= target {
                self.send_part()?;
                continue;
            }
            let taken = fill_part(&mut self.buffer, target, bytes);
            self.written += taken as u64;
            bytes = &bytes[taken..];
        }
        Ok(())
    }

    /// Hands the buffer to an UploadPart task, first creating the upload and waiting for room.
    fn send_part(&mut self) -> Result<(), AdapterError> {
        let number = self.next_part;
        if number > MAX_PARTS {
            return Err(AdapterError::other(format!(
                "{}: the archive is larger than S3 allows in {MAX_PARTS} parts \
                 ({} bytes so far); raise `part_size`",
                self.url(),
                self.written
            )));
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = runtime::block_on(self.create())?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let len = self.buffer.len() as u64;
        self.make_room(len)?;
        let body = Bytes::from(mem::take(&mut self.buffer));
        let task = upload_part(
            self.store.clone(),
            self.key.clone(),
            upload_id,
            number,
            body,
        );
        self.in_flight
            .spawn_on(task.with_current_subscriber(), runtime::handle()?);
        self.in_flight_bytes += len;
        self.next_part += 1;
        Ok(())
    }

    /// Collects finished parts (failing on a failed one), then waits while `len` more bytes
    /// would exceed the in-flight limits; one part may always be in flight.
    fn make_room(&mut self, len: u64) -> Result<(), AdapterError> {
        while let Some(joined) = self.in_flight.try_join_next() {
            self.collect(joined)?;
        }
        let budget = self
            .settings
            .part_size
            .saturating_mul(self.settings.concurrency as u64);
        while !self.in_flight.is_empty()
            && (self.in_flight.len() >= self.settings.concurrency
                || self.in_flight_bytes + len > budget)
        {
            let in_flight = &mut self.in_flight;
            if let Some(joined) = runtime::block_on(async { Ok(in_flight.join_next().await) })? {
                self.collect(joined)?;
            }
        }
        Ok(())
    }

    /// Waits for every part in flight.
    fn wait_all(&mut self) -> Result<(), AdapterError> {
        loop {
            let in_flight = &mut self.in_flight;
            match runtime::block_on(async { Ok(in_flight.join_next().await) })? {
                Some(joined) => self.collect(joined)?,
                None => return Ok(()),
            }
        }
    }

    /// Records a finished part task's outcome.
    fn collect(
        &mut self,
        joined: Result<Result<Part, AdapterError>, JoinError>,
    ) -> Result<(), AdapterError> {
        let part = joined.map_err(|e| {
            AdapterError::other(format!("uploading a part of {} failed: {e}", self.url()))
        })??;
        self.in_flight_bytes -= part.size;
        self.done.push(part);
        Ok(())
    }

    /// CreateMultipartUpload; returns the upload id.
    async fn create(&self) -> Result<String, AdapterError> {
        let output = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .content_type(CONTENT_TYPE)
            .set_storage_class(self.settings.storage_class.clone())
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", self.url(), &self.store.bucket, &e))?;
        let id = output.upload_id.ok_or_else(|| {
            AdapterError::other(format!(
                "S3 CreateMultipartUpload of {} returned no upload id",
                self.url()
            ))
        })?;
        tracing::info!(key = %self.key, upload_id = %id, "multipart upload created");
        Ok(id)
    }

    /// Stores what is left, completes the upload (or puts a small archive whole) and writes
    /// the sidecar. On an error the caller aborts.
    fn finish(&mut self, sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        if size != self.written {
            return Err(AdapterError::other(format!(
                "{}: the host finished the backup at {size} bytes, but {} were written",
                self.url(),
                self.written
            )));
        }
        let parts = match self.upload_id.clone() {
            None => {
                runtime::block_on(self.put_whole())?;
                Vec::new()
            }
            Some(upload_id) => {
                if !self.buffer.is_empty() {
                    self.send_part()?;
                }
                self.wait_all()?;
                self.done.sort_by_key(|p| p.number);
                runtime::block_on(self.complete(&upload_id))?;
                self.upload_id = None;
                mem::take(&mut self.done)
            }
        };
        tracing::info!(key = %self.key, parts = parts.len(), bytes = size, "backup stored");

        let sidecar = Sidecar::new(
            sha1,
            size,
            &self.settings.aerie_version,
            &self.server,
            &self.backup,
        );
        // The archive is complete and good: a sidecar that cannot be written is no reason to
        // lose it, only to warn (stat then reports no checksum).
        if let Err(e) = runtime::block_on(sidecar::put(&self.store, &self.key, &sidecar)) {
            tracing::warn!(key = %self.key, error = %e, "the backup is stored, but its sidecar could not be written");
        }
        Ok(StoredBackup {
            key: self.key.clone(),
            size,
            parts,
            panel_completes: false,
        })
    }

    /// Stores an archive smaller than one part with a single PutObject.
    async fn put_whole(&mut self) -> Result<(), AdapterError> {
        let body = Bytes::from(mem::take(&mut self.buffer));
        let url = self.url();
        let (store, key, url, storage_class) =
            (&self.store, &self.key, &url, &self.settings.storage_class);
        with_retries(url, || {
            let request = store
                .client
                .put_object()
                .bucket(&store.bucket)
                .key(key)
                .content_type(CONTENT_TYPE)
                .set_storage_class(storage_class.clone())
                .content_length(body.len() as i64)
                .body(ByteStream::from(body.clone()))
                .customize()
                .config_override(body_request_config(body.len()));
            async move {
                request
                    .send()
                    .await
                    .map_err(|e| s3_error("PutObject", url, &store.bucket, &e))
            }
        })
        .await?;
        Ok(())
    }

    /// CompleteMultipartUpload with the parts, sorted by number.
    async fn complete(&self, upload_id: &str) -> Result<(), AdapterError> {
        let parts = self
            .done
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        let output = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(timeouts(COMPLETE_TIMEOUT)),
            )
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    "CompleteMultipartUpload",
                    self.url(),
                    &self.store.bucket,
                    &e,
                )
            })?;
        tracing::debug!(key = %self.key, etag = output.e_tag().unwrap_or_default(), "multipart upload completed");
        Ok(())
    }

    /// Cancels the parts in flight and aborts the multipart upload, if there is one. `cause`
    /// is the failure that ends the upload (`None` for an abort the host asked for). When the
    /// server cannot be reached, the abort goes on in the background.
    fn abort(mut self, cause: Option<&AdapterError>) -> Result<(), AdapterError> {
        self.in_flight.abort_all();
        let in_flight = &mut self.in_flight;
        // Cancelled tasks end at once; wait so that no part is sent after the abort.
        let _ = runtime::block_on(async {
            while in_flight.join_next().await.is_some() {}
            Ok(())
        });
        let Some(upload_id) = self.upload_id.take() else {
            tracing::info!(key = %self.key, bytes = self.written, "backup aborted before any part was sent");
            return Ok(());
        };
        let parts = self.next_part - 1;
        match runtime::block_on(cleanup::abort(&self.store, &self.key, &upload_id)) {
            Ok(()) => {
                match cause {
                    Some(cause) => {
                        tracing::info!(key = %self.key, parts, bytes = self.written, error = %cause, "multipart upload aborted after a failure")
                    }
                    None => {
                        tracing::info!(key = %self.key, parts, bytes = self.written, "multipart upload aborted")
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(key = %self.key, upload_id = %upload_id, error = %e, "cannot abort the multipart upload now; retrying in the background");
                cleanup::abort_in_background(
                    self.store.clone(),
                    self.key.clone(),
                    upload_id,
                    Duration::from_secs(1),
                );
                Err(e)
            }
        }
    }
}

/// Uploads one part, retrying from its own buffer.
async fn upload_part(
    store: Arc<Store>,
    key: String,
    upload_id: String,
    number: u32,
    body: Bytes,
) -> Result<Part, AdapterError> {
    let size = body.len() as u64;
    let what = format!("{} part {number}", store.url(&key));
    let (store, key, upload_id, body, what_ref) = (&store, &key, &upload_id, &body, &what);
    let output = with_retries(&what, || {
        let request = store
            .client
            .upload_part()
            .bucket(&store.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body.clone()))
            .customize()
            .config_override(body_request_config(body.len()));
        async move {
            request
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", what_ref, &store.bucket, &e))
        }
    })
    .await?;
    let etag = output
        .e_tag
        .ok_or_else(|| AdapterError::other(format!("S3 UploadPart of {what} returned no ETag")))?;
    tracing::debug!(key = %key, part = number, bytes = size, "part uploaded");
    Ok(Part { number, etag, size })
}

/// Per-request settings for a request with a large body: no SDK retries (the caller retries
/// from its own buffer) and an attempt timeout that allows for at least 256 KiB/s. A stalled
/// transfer fails sooner, through the client's stalled-stream protection.
fn body_request_config(len: usize) -> aws_sdk_s3::config::Builder {
    let transfer = Duration::from_secs(len as u64 / (256 * 1024));
    aws_sdk_s3::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts(ATTEMPT_TIMEOUT + transfer))
}

/// Runs `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] attempts failed,
/// waiting 200 ms, 400 ms, … 3.2 s (with jitter) between attempts.
async fn with_retries<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AdapterError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.retryable && tries < ATTEMPTS => {
                let wait = jitter(backoff);
                tracing::warn!(what, attempt = tries, error = %e, retry_in_ms = wait.as_millis() as u64, "S3 request failed; retrying");
                tokio::time::sleep(wait).await;
                backoff *= 2;
                tries += 1;
            }
            Err(e) if tries > 1 => {
                return Err(AdapterError::new(
                    e.kind,
                    format!("{} (gave up after {tries} attempts)", e.message),
                )
                .with_retryable(e.retryable))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Between half and all of `wait`, so that parts failing together do not retry together.
pub(crate) fn jitter(wait: Duration) -> Duration {
    let noise = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1_000)
        .unwrap_or(0);
    wait / 2 + wait / 2 * noise / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_grow_every_thousand() {
        assert_eq!(part_size_for(5 * MIB, 1), 5 * MIB);
        assert_eq!(part_size_for(5 * MIB, 1000), 5 * MIB);
        assert_eq!(part_size_for(5 * MIB, 1001), 10 * MIB);
        assert_eq!(part_size_for(5 * MIB, 2001), 20 * MIB);
        assert_eq!(part_size_for(5 * MIB, 10_000), 2560 * MIB);
        assert_eq!(part_size_for(64 * MIB, 10_000), MAX_PART_SIZE);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size_for(5 * MIB, n)).sum();
        assert!(
            total > 4 * 1024 * 1024 * MIB,
            "10,000 parts hold {total} bytes"
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let wait = jitter(Duration::from_millis(200));
            assert!(wait >= Duration::from_millis(100) && wait <= Duration::from_millis(200));
        }
    }
}

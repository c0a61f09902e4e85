//! Reading one backup: GetObject (from an offset, with a `Range` header), its body pumped by
//! a task on the adapter's runtime into a small bounded channel that the host's blocking
//! `read` calls drain. Memory stays at a few body chunks whatever the archive's size.

use std::sync::Arc;

use aerie_adapter_api::{AdapterError, ErrorKind, Source};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::s3_error;
use crate::runtime;
use crate::store::Store;

/// Body chunks buffered between the pump and the reader.
const CHUNKS_IN_FLIGHT: usize = 16;

/// The reader of one stored archive.
pub struct S3Source {
    /// Body chunks from the pump; closed at the end of the body.
    chunks: mpsc::Receiver<Result<Bytes, AdapterError>>,
    /// What is left of the chunk being read.
    current: Bytes,
    /// Bytes taken from the channel so far.
    received: u64,
    /// The bytes GetObject announced, to tell the end from a cut-short transfer.
    expected: Option<u64>,
    /// `s3://bucket/key`, for messages.
    url: String,
    /// The pump task, stopped when the reader is dropped.
    pump: Option<AbortHandle>,
}

/// Opens the archive at `key` (backup `backup` of server `server`) for reading from byte
/// `offset`. Opening exactly at the end gives an empty reader.
pub fn open(
    store: &Arc<Store>,
    server: &str,
    backup: &str,
    key: &str,
    offset: u64,
) -> Result<S3Source, AdapterError> {
    let url = store.url(key);
    let request = store
        .client
        .get_object()
        .bucket(&store.bucket)
        .key(key)
        .set_range((offset > 0).then(|| format!("bytes={offset}-")));
    let result = runtime::block_on(async { Ok(request.send().await) })?;
    let output = match result {
        Ok(output) => output,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Err(AdapterError::not_found(format!(
                "no backup {backup} of server {server}: {url} does not exist"
            )))
        }
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
            return at_or_past_end(store, &url, key, offset)
        }
        Err(e) => return Err(s3_error("GetObject", &url, &store.bucket, &e)),
    };
    let expected = output.content_length.and_then(|n| u64::try_from(n).ok());
    let (sender, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let pump = runtime::spawn(pump(output.body, sender, url.clone()))?;
    tracing::debug!(key, offset, bytes = expected, "reading backup");
    Ok(S3Source {
        chunks,
        current: Bytes::new(),
        received: 0,
        expected,
        url,
        pump: Some(pump.abort_handle()),
    })
}

/// A range that S3 refused: an empty reader when `offset` is exactly the archive's size,
/// otherwise an error saying how large it is.
fn at_or_past_end(
    store: &Store,
    url: &str,
    key: &str,
    offset: u64,
) -> Result<S3Source, AdapterError> {
    let head = store.client.head_object().bucket(&store.bucket).key(key);
    let head = runtime::block_on(async {
        head.send()
            .await
            .map_err(|e| s3_error("HeadObject", url, &store.bucket, &e))
    })?;
    let size = head.content_length.unwrap_or(0).max(0) as u64;
    if offset != size {
        return Err(AdapterError::other(format!(
            "cannot read {url} from byte {offset}: it has only {size} bytes"
        )));
    }
    let (_, chunks) = mpsc::channel(1);
    Ok(S3Source {
        chunks,
        current: Bytes::new(),
        received: 0,
        expected: Some(0),
        url: url.to_string(),
        pump: None,
    })
}

/// Moves the body into the channel until it ends, fails, or the reader goes away. A stalled
/// body fails through the client's stalled-stream protection.
async fn pump(
    mut body: ByteStream,
    sender: mpsc::Sender<Result<Bytes, AdapterError>>,
    url: String,
) {
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            AdapterError::new(
                ErrorKind::UNAVAILABLE,
                format!("reading {url} failed after {received} bytes: {e}"),
            )
            .with_retryable(true)
        });
        let failed = chunk.is_err();
        if let Ok(bytes) = &chunk {
            received += bytes.len() as u64;
        }
        if sender.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

impl Source for S3Source {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk?;
                    self.received += self.current.len() as u64;
                }
                None => {
                    return match self.expected {
                        Some(expected) if self.received < expected => Err(AdapterError::new(
                            ErrorKind::UNAVAILABLE,
                            format!(
                                "reading {} ended after {} of {expected} bytes",
                                self.url, self.received
                            ),
                        )
                        .with_retryable(true)),
                        _ => Ok(0),
                    };
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for S3Source {
    /// Stops the pump (and so the transfer) when the reader is dropped early.
    fn drop(&mut self) {
        if let Some(pump) = &self.pump {
            pump.abort();
        }
    }
}

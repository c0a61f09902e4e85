//! `mode: panel`: writing one backup into the Panel's bucket through presigned UploadPart
//! URLs (wings-protocol.md §1.5, §3), with no S3 credentials on the node and no temporary
//! file. The Panel starts the multipart upload when aerie asks for the URLs, and completes
//! it (or aborts it) from the status report, into which the host puts the parts this sink
//! returns (`panel_completes`).
//!
//! Like the direct sink, `write` fills a part buffer and hands each full part to a task on
//! the adapter's runtime (a plain HTTP PUT, retried from its own buffer) while the host keeps
//! writing; at most `concurrency` parts are in flight, so memory stays near
//! `(concurrency + 1) × part size`. The URLs are asked for when the first part is full (or
//! at `finish` for an archive smaller than one part), enough of them for the whole archive
//! at aerie's own part size, from the host's upper bound of the archive's size (its hint,
//! read at that moment: the host measures the tree beside the archive).

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aerie_adapter_api::{AdapterError, ErrorKind, Part, Services, Sink, StoredBackup};
use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};
use tracing::instrument::WithSubscriber;

use crate::config::MAX_PART_SIZE;
use crate::error::causes;
use crate::runtime;
use crate::store::{ATTEMPT_TIMEOUT, CONNECT_TIMEOUT};
use crate::upload::{fill_part, jitter, ATTEMPTS, CONTENT_TYPE, FIRST_BACKOFF, MAX_PARTS};
use crate::upload_state::UploadState;
use crate::url_expiry;

/// The Panel's part size until it tells its own: its default `BACKUP_MAX_PART_SIZE`, which
/// is also S3's largest part. aerie asks for `parts × this` bytes, so that the Panel, which
/// presigns `ceil(size / its part size)` URLs, presigns at least `parts`.
const ASSUMED_PANEL_PART_SIZE: u64 = MAX_PART_SIZE;
/// Room for files that grow or appear between the host's walk and the archive: a tenth
/// more than the bound, and one part.
const GROWTH_PER_TEN: u64 = 1;
/// A URL must stay valid at least this long when its part starts uploading; S3 checks the
/// expiry when the request arrives, so this covers the wait for a connection and a retry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The Panel setting that decides how long its URLs live, named in errors about expiry.
const LIFESPAN_SETTING: &str = "BACKUP_PRESIGNED_URL_LIFESPAN";

/// What every `mode: panel` backup of an adapter instance shares.
pub struct PanelSettings {
    /// The host's services: the Panel, asked for the URLs.
    pub services: Services,
    /// The HTTP client for the PUTs (connection pool shared by every backup).
    pub client: reqwest::Client,
    /// Bytes per part at the least.
    pub part_size: u64,
    /// Parts in flight at most.
    pub concurrency: usize,
    /// The part size the Panel last said it plans with; [`ASSUMED_PANEL_PART_SIZE`] until
    /// the first answer.
    pub panel_part_size: AtomicU64,
}

impl PanelSettings {
    /// Settings for `services`, `part_size` and `concurrency`.
    pub fn new(
        services: Services,
        part_size: u64,
        concurrency: usize,
    ) -> Result<Self, AdapterError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| AdapterError::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            services,
            client,
            part_size,
            concurrency,
            panel_part_size: AtomicU64::new(ASSUMED_PANEL_PART_SIZE),
        })
    }
}

/// How a backup's parts are laid out, from the host's bound of its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Bytes per part (the last may be smaller).
    part_size: u64,
    /// Parts (and so URLs) needed for the bound with room to grow; at most 10,000.
    parts: u32,
}

impl Plan {
    /// The configured part size, larger when the bound needs more than 10,000 of them
    /// (whole MiB, at most 5 GiB); without a bound, every part S3 allows.
    fn new(part_size: u64, bound: Option<u64>) -> Plan {
        const MIB: u64 = 1024 * 1024;
        let Some(bound) = bound else {
            return Plan {
                part_size,
                parts: MAX_PARTS,
            };
        };
        let want = bound.saturating_add(bound / 10 * GROWTH_PER_TEN);
        let least = want.div_ceil(u64::from(MAX_PARTS) - 1).div_ceil(MIB) * MIB;
        let part_size = part_size.max(least).min(MAX_PART_SIZE);
        let parts = want.div_ceil(part_size).saturating_add(1);
        Plan {
            part_size,
            parts: parts.min(u64::from(MAX_PARTS)) as u32,
        }
    }
}

/// The writer of one `mode: panel` backup.
pub struct PanelSink {
    /// The upload in progress, or why it failed.
    state: UploadState<PanelUpload>,
}

/// One backup being uploaded through presigned URLs.
struct PanelUpload {
    settings: Arc<PanelSettings>,
    /// The backup's uuid, what the Panel is asked about.
    backup: String,
    /// `<server>/<backup>.tar.gz`, the Panel's key, for messages and the report.
    key: String,
    /// The host's upper bound of the archive's size, once asked (with the URLs).
    bound: Option<u64>,
    /// The parts' layout, planned from the bound when the URLs are asked for.
    plan: Option<Plan>,
    /// The presigned URLs, part 1 first; asked for when the first part is ready.
    urls: Option<Arc<Vec<String>>>,
    /// The part being filled.
    buffer: Vec<u8>,
    /// The number of the part being filled.
    next_part: u32,
    /// The part uploads not yet collected.
    in_flight: JoinSet<Result<Part, AdapterError>>,
    /// The parts uploaded.
    done: Vec<Part>,
    /// Bytes written by the host so far.
    written: u64,
}

impl PanelSink {
    /// A sink for backup `backup` of server `server`; nothing is asked or sent before the
    /// first part is full.
    pub fn new(settings: Arc<PanelSettings>, server: &str, backup: &str) -> Self {
        let key = format!("{server}/{backup}.tar.gz");
        tracing::debug!(key = %key, part_size = settings.part_size, "backup started");
        PanelSink {
            state: UploadState::new(PanelUpload {
                settings,
                backup: backup.to_string(),
                key,
                bound: None,
                plan: None,
                urls: None,
                buffer: Vec::new(),
                next_part: 1,
                in_flight: JoinSet::new(),
                done: Vec::new(),
                written: 0,
            }),
        }
    }

    /// Stops the parts in flight after `err`, keeps `err` for later calls, and returns it.
    /// The Panel aborts the multipart upload when the host reports the failure.
    fn fail(&mut self, err: AdapterError) -> AdapterError {
        self.state.fail(err, |upload, err| upload.stop(Some(err)))
    }
}

impl Sink for PanelSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        match self.state.get()?.write(bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn finish(mut self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        match self.state.get()?.finish(size) {
            Ok(stored) => {
                self.state.take();
                Ok(stored)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn abort(mut self) -> Result<(), AdapterError> {
        if let Some(upload) = self.state.take() {
            upload.stop(None);
        }
        Ok(())
    }
}

impl Drop for PanelSink {
    /// A sink dropped unfinished stops its parts; the Panel aborts the upload when told the
    /// backup failed.
    fn drop(&mut self) {
        if let Some(upload) = self.state.take() {
            upload.stop(None);
        }
    }
}

impl PanelUpload {
    /// Appends to the part buffer, sending each part once it is full and more bytes come
    /// (so the last part is never empty).
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), AdapterError> {
        while !bytes.is_empty() {
            let target = self.part_size();
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

    /// The size parts are cut at: the configured one until the plan says more (which only
    /// an archive past 10,000 such parts makes it do).
    fn part_size(&self) -> u64 {
        self.plan
            .map_or(self.settings.part_size, |plan| plan.part_size)
    }

    /// The URL for part `number`, asking the Panel for all of them first if not yet done.
    fn url(&mut self, number: u32) -> Result<String, AdapterError> {
        let urls = match &self.urls {
            Some(urls) => urls.clone(),
            None => {
                let urls = Arc::new(self.ask_for_urls()?);
                self.urls = Some(urls.clone());
                urls
            }
        };
        // The Panel may presign more URLs than planned (its part size is smaller than it
        // was assumed to be); S3 still takes no part past 10,000.
        let usable = urls.len().min(MAX_PARTS as usize);
        let url = urls[..usable].get(number as usize - 1).ok_or_else(|| {
            AdapterError::other(format!(
                "{}: the archive outgrew the {} upload URLs the Panel presigned ({} bytes so \
                 far in parts of {} bytes; the size bound was {}): files grew or appeared \
                 after the backup was measured; try again",
                self.key,
                usable,
                self.written,
                self.part_size(),
                self.bound
                    .map_or_else(|| "unknown".to_string(), |b| format!("{b} bytes")),
            ))
        })?;
        check_lifetime(url, number)?;
        Ok(url.clone())
    }

    /// Plans the parts from the host's size bound, then asks the Panel for enough URLs for
    /// them: `parts ×` its part size.
    fn ask_for_urls(&mut self) -> Result<Vec<String>, AdapterError> {
        self.bound = self
            .settings
            .services
            .backup_hints(&self.backup)
            .size_upper_bound;
        let plan = Plan::new(self.settings.part_size, self.bound);
        self.plan = Some(plan);
        let panel_part_size = self.settings.panel_part_size.load(Ordering::Relaxed).max(1);
        let size = panel_part_size.saturating_mul(u64::from(plan.parts));
        let answer = self
            .settings
            .services
            .presigned_upload_parts(&self.backup, size)?;
        if answer.part_size > 0 {
            self.settings
                .panel_part_size
                .store(answer.part_size, Ordering::Relaxed);
        }
        if answer.urls.is_empty() {
            return Err(AdapterError::other(format!(
                "{}: the Panel presigned no upload URL (asked for {size} bytes)",
                self.key
            )));
        }
        tracing::info!(
            key = %self.key,
            urls = answer.urls.len(),
            bound = ?self.bound,
            planned = plan.parts,
            part_size = plan.part_size,
            "the Panel presigned the upload"
        );
        Ok(answer.urls)
    }

    /// Hands the buffer to a PUT task, first getting its URL and waiting for room.
    fn send_part(&mut self) -> Result<(), AdapterError> {
        let number = self.next_part;
        let url = self.url(number)?;
        self.make_room()?;
        let body = Bytes::from(mem::take(&mut self.buffer));
        let task = put_part(self.settings.client.clone(), url, number, body);
        self.in_flight
            .spawn_on(task.with_current_subscriber(), runtime::handle()?);
        self.next_part += 1;
        Ok(())
    }

    /// Collects finished parts (failing on a failed one), then waits while `concurrency`
    /// parts are in flight.
    fn make_room(&mut self) -> Result<(), AdapterError> {
        while let Some(joined) = self.in_flight.try_join_next() {
            self.collect(joined)?;
        }
        while self.in_flight.len() >= self.settings.concurrency {
            let in_flight = &mut self.in_flight;
            if let Some(joined) = runtime::block_on(async { Ok(in_flight.join_next().await) })? {
                self.collect(joined)?;
            }
        }
        Ok(())
    }

    fn collect(
        &mut self,
        joined: Result<Result<Part, AdapterError>, JoinError>,
    ) -> Result<(), AdapterError> {
        let part = joined.map_err(|e| {
            AdapterError::other(format!("uploading a part of {} failed: {e}", self.key))
        })??;
        self.done.push(part);
        Ok(())
    }

    /// Sends the last part, waits for every part, and returns them for the Panel.
    fn finish(&mut self, size: u64) -> Result<StoredBackup, AdapterError> {
        if size != self.written {
            return Err(AdapterError::other(format!(
                "{}: the host finished the backup at {size} bytes, but {} were written",
                self.key, self.written
            )));
        }
        if !self.buffer.is_empty() || self.next_part == 1 {
            self.send_part()?;
        }
        loop {
            let in_flight = &mut self.in_flight;
            match runtime::block_on(async { Ok(in_flight.join_next().await) })? {
                Some(joined) => self.collect(joined)?,
                None => break,
            }
        }
        let mut parts = mem::take(&mut self.done);
        parts.sort_by_key(|p| p.number);
        tracing::info!(key = %self.key, parts = parts.len(), bytes = size, "backup uploaded; the Panel completes it");
        Ok(StoredBackup {
            key: self.key.clone(),
            size,
            parts,
            panel_completes: true,
        })
    }

    /// Cancels the parts in flight (dropping the set aborts its tasks).
    fn stop(self, cause: Option<&AdapterError>) {
        let parts = self.next_part - 1;
        match cause {
            Some(cause) => {
                tracing::info!(key = %self.key, parts, bytes = self.written, error = %cause, "upload stopped after a failure; the Panel aborts it")
            }
            None => {
                tracing::info!(key = %self.key, parts, bytes = self.written, "upload stopped; the Panel aborts it")
            }
        }
    }
}

/// Fails when `url` has expired or would expire before part `number` could use it.
fn check_lifetime(url: &str, number: u32) -> Result<(), AdapterError> {
    let Some(expires) = url_expiry::expiry(url) else {
        return Ok(());
    };
    if SystemTime::now() + EXPIRY_MARGIN < expires {
        return Ok(());
    }
    let when = expires
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Err(AdapterError::other(format!(
        "the Panel's presigned URL for part {number} expired (at Unix time {when}) before the \
         backup could use it: the backup outlasts the URLs' lifetime; raise the Panel's \
         {LIFESPAN_SETTING} (minutes, 60 by default) so the URLs outlive the longest backup"
    )))
}

/// PUTs one part to its presigned URL, retrying from its own buffer on 5xx and connection
/// errors; the ETag the storage returns, verbatim.
async fn put_part(
    client: reqwest::Client,
    url: String,
    number: u32,
    body: Bytes,
) -> Result<Part, AdapterError> {
    let size = body.len() as u64;
    // At least 256 KiB/s, as for the direct mode's parts.
    let timeout = ATTEMPT_TIMEOUT + Duration::from_secs(size / (256 * 1024));
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 1;
    loop {
        let err = match put_once(&client, &url, number, &body, timeout).await {
            Ok(etag) => {
                tracing::debug!(part = number, bytes = size, "part uploaded");
                return Ok(Part { number, etag, size });
            }
            Err(err) => err,
        };
        if !err.retryable || tries >= ATTEMPTS {
            let message = if tries > 1 {
                format!("{} (gave up after {tries} attempts)", err.message)
            } else {
                err.message.to_string()
            };
            return Err(AdapterError::new(err.kind, message));
        }
        let wait = jitter(backoff);
        tracing::warn!(part = number, attempt = tries, error = %err, retry_in_ms = wait.as_millis() as u64, "part upload failed; retrying");
        tokio::time::sleep(wait).await;
        // A retry much later must not use a URL that has expired meanwhile.
        check_lifetime(&url, number)?;
        backoff *= 2;
        tries += 1;
    }
}

/// One PUT attempt: the ETag on a 200, or an error saying whether to try again.
async fn put_once(
    client: &reqwest::Client,
    url: &str,
    number: u32,
    body: &Bytes,
    timeout: Duration,
) -> Result<String, AdapterError> {
    let what = format!("PUT of part {number} to the Panel's presigned URL");
    // A `Bytes` body has a known length: reqwest sends Content-Length, never chunked.
    let response = client
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(body.clone())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            AdapterError::new(
                ErrorKind::UNAVAILABLE,
                format!("{what} failed: {}", causes(&e)),
            )
            .with_retryable(true)
        })?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return etag.ok_or_else(|| AdapterError::other(format!("{what}: 200 without an ETag")));
    }
    let text = response.text().await.unwrap_or_default();
    let code = xml_value(&text, "Code").unwrap_or_default();
    let message = xml_value(&text, "Message").unwrap_or_default();
    let detail = format!("{what}: HTTP {status} {code} {message}");
    let detail = detail.trim_end();
    if status.is_server_error() {
        return Err(AdapterError::new(ErrorKind::UNAVAILABLE, detail).with_retryable(true));
    }
    if code == "AccessDenied" && message.to_ascii_lowercase().contains("expired") {
        return Err(AdapterError::new(
            ErrorKind::PERMISSION_DENIED,
            format!("{detail}: the URL expired; raise the Panel's {LIFESPAN_SETTING}"),
        ));
    }
    Err(AdapterError::other(detail.to_string()))
}

/// The text of the first `<name>` element of an S3 error body.
fn xml_value(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn plans_cover_the_bound_with_room_and_stay_within_s3_limits() {
        // 100 MiB in 16 MiB parts: 110 MiB needs 7 parts, plus one.
        assert_eq!(
            Plan::new(16 * MIB, Some(100 * MIB)),
            Plan {
                part_size: 16 * MIB,
                parts: 8
            }
        );
        // 1 TiB cannot go in 10,000 parts of 16 MiB: parts grow to whole MiB.
        let plan = Plan::new(16 * MIB, Some(1024 * GIB));
        assert!(plan.parts <= MAX_PARTS);
        assert_eq!(plan.part_size % MIB, 0);
        assert!(plan.part_size * u64::from(plan.parts) >= 1024 * GIB * 11 / 10);
        // Never a part over 5 GiB, never over 10,000 parts.
        let huge = Plan::new(16 * MIB, Some(u64::MAX / 4));
        assert_eq!(
            huge,
            Plan {
                part_size: MAX_PART_SIZE,
                parts: MAX_PARTS
            }
        );
        assert_eq!(Plan::new(16 * MIB, None).parts, MAX_PARTS);
    }

    #[test]
    fn expired_urls_name_the_panel_setting() {
        let url = "http://s3/b/k?X-Amz-Date=20200101T000000Z&X-Amz-Expires=3600";
        let err = check_lifetime(url, 3).unwrap_err();
        assert!(err.message.contains("part 3"), "{}", err.message);
        assert!(
            err.message.contains("BACKUP_PRESIGNED_URL_LIFESPAN"),
            "{}",
            err.message
        );
        assert!(check_lifetime(
            "http://s3/b/k?X-Amz-Date=29990101T000000Z&X-Amz-Expires=60",
            1
        )
        .is_ok());
        assert!(check_lifetime("http://s3/b/k?partNumber=1", 1).is_ok());
    }

    #[test]
    fn s3_error_bodies() {
        let xml = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(xml_value(xml, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_value(xml, "Message").as_deref(),
            Some("Request has expired")
        );
        assert_eq!(xml_value(xml, "Key"), None);
    }
}

//! `GET /download/backup?token=<JWT>`: a user's browser downloads a backup with a one-time
//! link the Panel signed with the node token. The body streams from the backup's adapter
//! (so an S3 backup downloads too), with `Range` support for resuming a large download.
//! Unlike Wings, a bad or expired token is a 401/403 that says why, not a 500; a used link
//! stays used across restarts (the registry keeps its id), and a `HEAD` does not spend it.

use std::io::Read;
use std::sync::Arc;

use aerie_adapter_api::ErrorKind;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use crate::api_error::ApiError;
use crate::backups::Backups;
use crate::ids::{BackupId, ServerId};
use crate::jwt::{self, unix_now, DownloadClaims, JwtError};
use crate::read_ahead;
use crate::registry::Registry;
use crate::wings_text;

/// Bytes read from the adapter per body chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of a slow client.
const CHUNKS_AHEAD: usize = 4;

/// Why a download is refused: a status and the message for the user.
pub type Refusal = (StatusCode, String);

/// Checks download tokens and spends the one-time ids in the registry.
pub struct Downloads {
    /// The node token, the tokens' HS256 key.
    key: String,
    backups: Arc<Backups>,
    /// Where used `unique_id`s are kept until their token expires, across restarts.
    registry: Arc<Registry>,
}

/// The part of a backup a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    /// Inclusive.
    end: u64,
}

fn refuse(status: StatusCode, message: &str) -> Refusal {
    (status, message.to_string())
}

fn already_used() -> Refusal {
    refuse(
        StatusCode::FORBIDDEN,
        "This download link has already been used.",
    )
}

fn unreadable() -> Refusal {
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The backup could not be read.",
    )
}

/// The refusal when an adapter's error of `kind` stops a download: the status the kind
/// means (see [`ApiError::storage`]), and for the kinds that mean a 500, that the backup
/// could not be read. `cause` goes to the log.
fn storage_refusal(kind: ErrorKind, cause: String) -> Refusal {
    let (status, message) = ApiError::storage(kind, cause).into_parts();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        unreadable()
    } else {
        (status, message)
    }
}

fn registry_failed(err: anyhow::Error) -> Refusal {
    tracing::error!("cannot check the download link's id: {err:#}");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The download link could not be checked; try again.",
    )
}

impl Downloads {
    /// Downloads signed with `key`, served from `backups`, with used ids kept in `registry`.
    pub fn new(key: String, backups: Arc<Backups>, registry: Arc<Registry>) -> Self {
        Self {
            key,
            backups,
            registry,
        }
    }

    /// Serves the download a `token` allows. With `head_only` (a `HEAD`), answers with the
    /// headers a `GET` would get and no body, and leaves the link unspent. A `GET` spends the
    /// link only once the backup is open, so a failure to open leaves it good for a retry.
    pub async fn serve(
        &self,
        token: Option<&str>,
        headers: &HeaderMap,
        head_only: bool,
    ) -> Result<Response, Refusal> {
        let token = token
            .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "The download link has no token."))?;
        let claims: DownloadClaims =
            jwt::verify(token, self.key.as_bytes(), unix_now()).map_err(|e| match e {
                JwtError::BadSignature | JwtError::WrongAlgorithm => refuse(
                    StatusCode::FORBIDDEN,
                    "The download link's signature is not valid.",
                ),
                JwtError::Expired => {
                    refuse(StatusCode::FORBIDDEN, "The download link has expired.")
                }
                JwtError::NotYetValid => refuse(
                    StatusCode::FORBIDDEN,
                    "The download link is not valid yet; check the node's clock.",
                ),
                JwtError::Malformed | JwtError::NoExpiry | JwtError::BadNotBefore => refuse(
                    StatusCode::UNAUTHORIZED,
                    "The download link's token is malformed.",
                ),
                JwtError::BadClaims(_) => refuse(
                    StatusCode::UNAUTHORIZED,
                    "The download link's token lacks server_uuid, backup_uuid or unique_id.",
                ),
            })?;
        let (server, backup, unique_id) = (
            claims.server_uuid.as_str(),
            claims.backup_uuid.as_str(),
            claims.unique_id.as_str(),
        );
        let known = BackupId::parse(backup).is_some()
            && ServerId::parse(server).is_some_and(|s| self.backups.server_root(&s).is_some());
        if !known {
            return Err(refuse(StatusCode::NOT_FOUND, wings_text::BACKUP_NOT_FOUND));
        }
        if self
            .registry
            .download_id_used(unique_id, unix_now())
            .map_err(registry_failed)?
        {
            tracing::warn!(backup = %backup, server = %server, "a used download link was presented again");
            return Err(already_used());
        }
        let located = self
            .backups
            .locate(server, backup, None)
            .await
            .map_err(|e| storage_refusal(e.kind(), format!("cannot look the backup up: {e}")))?;
        let Some((adapter, info)) = located else {
            return Err(refuse(StatusCode::NOT_FOUND, wings_text::BACKUP_NOT_FOUND));
        };
        let span = match requested_span(headers, info.size) {
            Ok(span) => span,
            Err(()) => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", info.size)).expect("ascii"),
                );
                return Ok(response);
            }
        };
        let (offset, length) = match span {
            Some(span) => (span.start, span.end - span.start + 1),
            None => (0, info.size),
        };
        if head_only {
            return Ok(with_headers(Body::empty(), backup, span, length, info.size));
        }
        // The claim: an atomic insert, so of two requests with one link only one gets past.
        if !self
            .registry
            .claim_download_id(unique_id, claims.exp, unix_now())
            .map_err(registry_failed)?
        {
            return Err(already_used());
        }
        let source = match adapter.open(server, backup, offset).await {
            Ok(source) => source,
            Err(e) => {
                // The link was not used: give it back so that the user can try again.
                self.registry
                    .release_download_id(unique_id)
                    .map_err(registry_failed)?;
                return Err(storage_refusal(
                    e.kind(),
                    format!("cannot open backup {backup} of server {server} for download: {e}"),
                ));
            }
        };
        tracing::info!(backup = %backup, offset, length, "download started");
        Ok(with_headers(
            stream_body(source, length),
            backup,
            span,
            length,
            info.size,
        ))
    }
}

/// A download's response: `body` (`length` bytes of the `size`-byte archive of `backup`,
/// `span` of it if a range was asked for) with its status and headers.
fn with_headers(body: Body, backup: &str, span: Option<Span>, length: u64, size: u64) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = if span.is_none() {
        StatusCode::OK
    } else {
        StatusCode::PARTIAL_CONTENT
    };
    let headers = response.headers_mut();
    let text = |s: String| HeaderValue::from_str(&s).expect("ascii header");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        text(format!("attachment; filename=\"{backup}.tar.gz\"")),
    );
    headers.insert(header::CONTENT_LENGTH, text(length.to_string()));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(span) = span {
        headers.insert(
            header::CONTENT_RANGE,
            text(format!("bytes {}-{}/{}", span.start, span.end, size)),
        );
    }
    response
}

/// The single byte range a `Range: bytes=a-b` header asks for within `size` bytes:
/// `Ok(None)` for the whole body (no or unusable header), `Err` when unsatisfiable.
fn requested_span(headers: &HeaderMap, size: u64) -> Result<Option<Span>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: answer with the whole body, which RFC 9110 allows.
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let span = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().map_err(|_| ())?;
            if suffix == 0 || size == 0 {
                return Err(());
            }
            Span {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        }
        (start, end) => {
            let start: u64 = start.parse().map_err(|_| ())?;
            let end = if end.is_empty() {
                size.saturating_sub(1)
            } else {
                end.parse::<u64>()
                    .map_err(|_| ())?
                    .min(size.saturating_sub(1))
            };
            if start >= size || end < start {
                return Err(());
            }
            Span { start, end }
        }
    };
    Ok(Some(span))
}

/// Streams `length` bytes of `source` (read ahead on a blocking thread) as a response body.
fn stream_body(source: impl Read + Send + 'static, length: u64) -> Body {
    let span = tracing::Span::current();
    let chunks = read_ahead::spawn_reader(source, CHUNK_BYTES, CHUNKS_AHEAD, length);
    Body::from_stream(chunks.inspect_err(move |err| {
        span.in_scope(|| tracing::error!("download failed: {err}"));
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Result<Option<Span>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        requested_span(&headers, size)
    }

    #[test]
    fn byte_ranges_are_read_as_rfc_9110_says() {
        assert_eq!(
            range("bytes=0-99", 1000),
            Ok(Some(Span { start: 0, end: 99 }))
        );
        assert_eq!(
            range("bytes=900-", 1000),
            Ok(Some(Span {
                start: 900,
                end: 999
            }))
        );
        assert_eq!(
            range("bytes=-100", 1000),
            Ok(Some(Span {
                start: 900,
                end: 999
            }))
        );
        assert_eq!(
            range("bytes=990-5000", 1000),
            Ok(Some(Span {
                start: 990,
                end: 999
            }))
        );
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=5-2", 1000), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(range("items=0-1", 1000), Ok(None));
        assert_eq!(requested_span(&HeaderMap::new(), 1000), Ok(None));
    }
}

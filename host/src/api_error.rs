//! The error answer of every route, in Wings' shape: a status and `{"error": "..."}`, with
//! the challenge header a 401 needs. A leaf, so that the HTTP layer and what it forwards to
//! (the pass-through to Wings) answer errors the same way without importing each other.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use aerie_adapter_api::ErrorKind;

use crate::wings_text;

/// What a request for new work is told while the daemon shuts down (the running jobs are
/// given `system.shutdown_timeout` to finish; nothing new starts).
pub const SHUTTING_DOWN: &str = "This node is shutting down; try again once it is back.";

/// An error answer: a status and Wings' `{"error": "..."}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Wings' 404 for a server that is not on this node.
    pub fn server_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, wings_text::RESOURCE_NOT_FOUND)
    }

    /// The 503 for work asked of a daemon that is shutting down (new backups, restores,
    /// websockets once they are closing): the caller can try again once it is back.
    pub fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN)
    }

    /// Wings' 500, with the cause in the log only.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("request failed: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            wings_text::UNEXPECTED_ERROR,
        )
    }
}

impl ApiError {
    /// The answer when an adapter's error of `kind` is why a request failed (`cause` names
    /// the adapter and says what it said; it goes to the log, not to the client):
    /// NOT_FOUND is Wings' 404, ALREADY_EXISTS a 409, STORAGE_FULL a 507, UNAVAILABLE a 503
    /// (each with what to do), and every other kind Wings' generic 500.
    pub fn storage(kind: ErrorKind, cause: impl std::fmt::Display) -> Self {
        let (status, message) = match kind {
            ErrorKind::NOT_FOUND => {
                return Self::new(StatusCode::NOT_FOUND, wings_text::BACKUP_NOT_FOUND)
            }
            ErrorKind::ALREADY_EXISTS => (
                StatusCode::CONFLICT,
                "A backup with this identifier is already stored on this node.",
            ),
            ErrorKind::STORAGE_FULL => (
                StatusCode::INSUFFICIENT_STORAGE,
                "The backup storage is full; free space there and try again.",
            ),
            ErrorKind::UNAVAILABLE => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The backup storage cannot be reached right now; try again in a moment.",
            ),
            _ => return Self::internal(cause),
        };
        tracing::error!("request failed: {cause}");
        Self::new(status, message)
    }

    /// The status and the message, for handlers that answer in their own types.
    pub fn into_parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_adapter_error_kind_answers_with_its_status_and_words() {
        let answer = |kind| ApiError::storage(kind, "adapter \"x\": cause").into_parts();
        assert_eq!(
            answer(ErrorKind::NOT_FOUND),
            (
                StatusCode::NOT_FOUND,
                wings_text::BACKUP_NOT_FOUND.to_string()
            )
        );
        assert_eq!(answer(ErrorKind::ALREADY_EXISTS).0, StatusCode::CONFLICT);
        assert_eq!(
            answer(ErrorKind::STORAGE_FULL),
            (
                StatusCode::INSUFFICIENT_STORAGE,
                "The backup storage is full; free space there and try again.".to_string()
            )
        );
        assert_eq!(
            answer(ErrorKind::UNAVAILABLE),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The backup storage cannot be reached right now; try again in a moment."
                    .to_string()
            )
        );
        // The rest are the daemon's or the operator's to fix: Wings' generic 500, the cause
        // in the log only.
        for kind in [
            ErrorKind::OTHER,
            ErrorKind::INVALID_CONFIG,
            ErrorKind::PERMISSION_DENIED,
            ErrorKind(200),
        ] {
            assert_eq!(
                answer(kind),
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    wings_text::UNEXPECTED_ERROR.to_string()
                ),
                "{kind:?}"
            );
        }
    }
}

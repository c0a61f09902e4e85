//! The error answer of every route, in Wings' shape: a status and `{"error": "..."}`, with
//! the challenge header a 401 needs. A leaf, so that the HTTP layer and what it forwards to
//! (the pass-through to Wings) answer errors the same way without importing each other.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

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

//! The Wings stand-in's `files` routes (to be filled by the work on aerie in front of Wings).

use std::sync::Arc;

use axum::Router;

/// What these routes share and record.
pub struct State {
    /// The bearer token Wings expects.
    pub token: String,
}

impl State {
    /// Nothing recorded yet.
    pub fn new(token: &str) -> Self {
        Self {
            token: token.to_string(),
        }
    }
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new().with_state(state)
}

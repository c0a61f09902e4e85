//! Stopping a server through Wings before a restore: restoring over a running game server
//! corrupts its world, so aerie asks Wings to stop it (`POST /api/servers/{server}/power`)
//! and waits until Wings reports it `offline` (`GET /api/servers/{server}`), as Wings' own
//! restore does with `WaitForStop`.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::AUTHORIZATION;
use serde_json::json;

use super::Wings;

/// How often Wings is asked for the server's state while it stops; a game server takes
/// seconds to save and stop, so once a second is soon enough and costs Wings nothing.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest one request to Wings may take; Wings answers both routes at once (the stop
/// itself runs in the background), so only a stuck Wings comes near this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `wait_seconds` Wings takes (router_server.go `postServerPower` resets any
/// other value to 30): how long the stop may wait for another power action to finish.
const WINGS_MAX_WAIT_SECONDS: u64 = 300;

/// Most bytes of an error body read from Wings: its `{"error": "..."}` bodies are a line.
const MAX_ERROR_BODY: usize = 4096;

/// Most bytes of Wings' server details read: they carry the server's configuration (its
/// environment, mounts, allocations), a few KiB; far more is not Wings.
const MAX_DETAILS_BODY: usize = 1024 * 1024;

/// Wings' state of a server that is stopped (environment.ProcessOfflineState).
const OFFLINE: &str = "offline";

/// Why a server could not be stopped before a restore.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// Wings answered the stop request with an error.
    #[error("Wings refused to stop the server (status {status}): {message}")]
    StopRefused {
        /// Wings' HTTP status.
        status: u16,
        /// The `error` of Wings' body, or the body itself.
        message: String,
    },
    /// Wings answered the request for the server's state with an error.
    #[error("Wings did not give the server's state (status {status}): {message}")]
    StateRefused {
        /// Wings' HTTP status.
        status: u16,
        /// The `error` of Wings' body, or the body itself.
        message: String,
    },
    /// Wings' answer about the server's state was not its details with a `state`.
    #[error("Wings' answer about the server's state could not be read")]
    StateUnreadable(#[source] serde_json::Error),
    /// No connection to Wings, or no answer in time.
    #[error("Wings could not be reached at {url}")]
    Unreachable {
        /// Wings' base URL.
        url: String,
        /// What the connection attempt ran into.
        #[source]
        source: reqwest::Error,
    },
    /// The server was not offline within the allowed time.
    #[error("the server did not stop within {seconds} s ({})", last_seen(.state))]
    DidNotStop {
        /// The allowed time (`system.backups.restore_stop_timeout`).
        seconds: u64,
        /// The last state Wings reported, if it reported any.
        state: Option<String>,
    },
}

/// The end of [`StopError::DidNotStop`]'s message: what Wings said last.
fn last_seen(state: &Option<String>) -> String {
    match state {
        Some(state) => format!("Wings last reported it {state:?}"),
        None => "Wings never reported its state".into(),
    }
}

/// The part of Wings' server details (`server.APIResponse`) that matters here.
#[derive(serde::Deserialize)]
struct Details {
    /// `offline`, `starting`, `running` or `stopping`.
    state: String,
}

/// Asks Wings to stop `server` and waits until Wings reports it offline, all within
/// `timeout`. Dropping the future abandons the wait; the stop Wings started goes on.
pub async fn stop_and_wait(
    wings: &Wings,
    server: &str,
    timeout: Duration,
) -> Result<(), StopError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| StopError::Unreachable {
            url: wings.url.clone(),
            source,
        })?;
    let mut state = None;
    let waited = tokio::time::timeout(
        timeout,
        stop_then_poll(&client, wings, server, timeout, &mut state),
    )
    .await;
    waited.unwrap_or(Err(StopError::DidNotStop {
        seconds: timeout.as_secs(),
        state,
    }))
}

/// The stop request, then the state until it is offline; `state` keeps the last seen.
async fn stop_then_poll(
    client: &reqwest::Client,
    wings: &Wings,
    server: &str,
    timeout: Duration,
    state: &mut Option<String>,
) -> Result<(), StopError> {
    let unreachable = |source| StopError::Unreachable {
        url: wings.url.clone(),
        source,
    };
    let wait_seconds = timeout.as_secs().min(WINGS_MAX_WAIT_SECONDS);
    tracing::info!(
        wait_seconds,
        "asking Wings to stop the server before the restore"
    );
    let response = client
        .post(format!("{}/api/servers/{server}/power", wings.url))
        .header(AUTHORIZATION, format!("Bearer {}", wings.token))
        .json(&json!({"action": "stop", "wait_seconds": wait_seconds}))
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let message = error_message(response).await;
        return Err(StopError::StopRefused { status, message });
    }
    loop {
        let response = client
            .get(format!("{}/api/servers/{server}", wings.url))
            .header(AUTHORIZATION, format!("Bearer {}", wings.token))
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let message = error_message(response).await;
            return Err(StopError::StateRefused { status, message });
        }
        let body = read_at_most(response, MAX_DETAILS_BODY)
            .await
            .map_err(unreachable)?;
        let details: Details = serde_json::from_slice(&body).map_err(StopError::StateUnreadable)?;
        if details.state == OFFLINE {
            tracing::info!("Wings reports the server offline");
            return Ok(());
        }
        if state.as_deref() != Some(details.state.as_str()) {
            tracing::info!(state = %details.state, "waiting for the server to stop");
        }
        *state = Some(details.state);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The first `limit` bytes of `response`'s body.
async fn read_at_most(response: reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while body.len() < limit {
        let Some(chunk) = stream.next().await.transpose()? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// The `error` of Wings' `{"error": "..."}` body, or the start of the body as text.
async fn error_message(response: reqwest::Response) -> String {
    let body = read_at_most(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    match parsed.as_ref().and_then(|v| v["error"].as_str()) {
        Some(error) => error.to_string(),
        None if body.is_empty() => "no error message".into(),
        None => String::from_utf8_lossy(&body).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_names_the_last_state_seen() {
        let err = StopError::DidNotStop {
            seconds: 2,
            state: Some("stopping".into()),
        };
        assert_eq!(
            err.to_string(),
            "the server did not stop within 2 s (Wings last reported it \"stopping\")"
        );
    }

    fn answer(body: &'static str) -> reqwest::Response {
        reqwest::Response::from(
            axum::http::Response::builder()
                .status(403)
                .body(body)
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn wings_errors_are_read_from_their_json_or_as_text_and_bounded() {
        let json = answer(r#"{"error":"You are not authorized to access this endpoint."}"#);
        assert_eq!(
            error_message(json).await,
            "You are not authorized to access this endpoint."
        );
        assert_eq!(error_message(answer(" bad gateway\n")).await, "bad gateway");
        assert_eq!(error_message(answer("")).await, "no error message");
        let huge: &'static str = "x".repeat(3 * MAX_ERROR_BODY).leak();
        assert_eq!(error_message(answer(huge)).await.len(), MAX_ERROR_BODY);
    }
}

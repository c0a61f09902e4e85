//! The HTTP API the Panel drives, in Wings' shapes: bearer-token auth, `{"error": "..."}`
//! bodies, an `X-Request-Id` on every response.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{ws::WebSocketUpgrade, Extension, Path, Query, Request, State},
    http::{header, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use crate::api_error::ApiError;
use crate::backups::{BackupRequest, Backups, LocateError, StartError};
use crate::download::Downloads;
use crate::events::{websocket, EventBus};
use crate::ids::{BackupId, ServerId};
use crate::locks::ServerLocks;
use crate::metrics::Metrics;
use crate::plugins::StorageError;
use crate::registry::Registry;
use crate::request_log::RedactedSpan;
use crate::restore::{RestoreError, RestoreRequest, Restores};
use crate::serve::ConnectionSlot;
use crate::tasks::TaskGroup;
use crate::upstream::proxy::{self, Proxy};
use crate::upstream::{socket, Wings};
use crate::verify::{Verifications, VerifyError};
use crate::wings_text;

/// The largest JSON body read: a backup request's `ignore` list or a restore's
/// `download_url` (a presigned S3 URL is about 2 KiB) fit many times over.
const BODY_LIMIT: usize = 64 * 1024;

/// The largest websocket frame and message, before and after `auth` (tungstenite takes its
/// limits at the upgrade): Wings' client frames are small JSON, the largest an `auth` with
/// a JWT of about 1 KiB. axum's defaults (16 MiB frames, 64 MiB messages) let a stranger make
/// the daemon buffer 64 MiB per socket.
const WEBSOCKET_MESSAGE_LIMIT: usize = 64 * 1024;

/// The websocket's read buffer (tungstenite's default is 128 KiB): a frame larger than it
/// is still read, in steps.
const WEBSOCKET_READ_BUFFER: usize = 8 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The node token the Panel authenticates with.
    pub token: String,
    /// The backups of this node.
    pub backups: Arc<Backups>,
    /// The restores of this node.
    pub restores: Arc<Restores>,
    /// Verifications of stored backups.
    pub verifications: Arc<Verifications>,
    /// Which servers are busy with a backup or a restore.
    pub locks: Arc<ServerLocks>,
    /// Download links.
    pub downloads: Downloads,
    /// The registry, for the queue of Panel reports.
    pub registry: Arc<Registry>,
    /// Where websocket sessions get their events.
    pub events: Arc<EventBus>,
    /// Browser origins allowed on the websocket (the Panel's URL always is).
    pub allowed_origins: Vec<String>,
    /// When the daemon started, in Unix seconds (older websocket tokens are refused).
    pub started_at: i64,
    /// How long a request body may take to arrive (`api.read_timeout`).
    pub read_timeout: Duration,
    /// How long a websocket may stay without a valid token (`api.websocket_auth_timeout`).
    pub websocket_auth_timeout: Duration,
    /// Wings behind aerie, when `upstream:` is set; `None` in standalone mode.
    pub upstream: Option<Arc<Wings>>,
    /// The websocket sessions, closed (after the jobs) when the daemon stops.
    pub sessions: TaskGroup,
    /// The node's metrics, for `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

impl From<StartError> for ApiError {
    fn from(err: StartError) -> Self {
        let status = match err {
            StartError::UnknownAdapter(_) => StatusCode::BAD_REQUEST,
            StartError::Conflict(..) | StartError::Restoring => StatusCode::CONFLICT,
            StartError::Storage(err) => return ApiError::storage(err.kind(), err),
            StartError::ShuttingDown => return ApiError::shutting_down(),
            StartError::Internal(_) => return ApiError::internal(err),
        };
        ApiError::new(status, err.to_string())
    }
}

impl From<RestoreError> for ApiError {
    fn from(err: RestoreError) -> Self {
        let status = match err {
            RestoreError::Busy(_) => StatusCode::CONFLICT,
            RestoreError::BackupNotFound => StatusCode::NOT_FOUND,
            RestoreError::Source(_) => StatusCode::BAD_REQUEST,
            RestoreError::Storage(err) => return ApiError::storage(err.kind(), err),
            RestoreError::ShuttingDown => return ApiError::shutting_down(),
            RestoreError::Internal(_) => return ApiError::internal(err),
        };
        ApiError::new(status, err.to_string())
    }
}

/// The answer for a request that failed on `err`: by the adapter's error kind when an
/// adapter's error is the cause (see [`ApiError::storage`]), else Wings' generic 500.
fn failed(err: anyhow::Error) -> ApiError {
    if let Some(storage) = err.downcast_ref::<StorageError>() {
        return ApiError::storage(storage.kind(), storage);
    }
    if let Some(locate) = err.downcast_ref::<LocateError>() {
        return ApiError::storage(locate.kind(), locate);
    }
    ApiError::internal(format!("{err:#}"))
}

impl From<VerifyError> for ApiError {
    fn from(err: VerifyError) -> Self {
        let status = match err {
            VerifyError::NotFound | VerifyError::NeverVerified => StatusCode::NOT_FOUND,
            VerifyError::AlreadyRunning | VerifyError::StillBeingMade => StatusCode::CONFLICT,
            VerifyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            VerifyError::Storage(locate) => return ApiError::storage(locate.kind(), locate),
            VerifyError::Internal(_) => return ApiError::internal(err),
        };
        ApiError::new(status, err.to_string())
    }
}

fn backup_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, wings_text::BACKUP_NOT_FOUND)
}

fn invalid_uuid() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, wings_text::INVALID_BACKUP_ID)
}

/// Every route, with auth, request ids and request tracing (secrets left out of the
/// logged URI: [`crate::request_log`]). In front of Wings (`upstream:`), power actions are
/// checked against restores and everything else aerie has no route for is passed through
/// to Wings; standalone, it is a 404.
pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route("/api/servers/{server}/backup", post(create_backup))
        .route(
            "/api/servers/{server}/backup/{uuid}",
            get(backup_status).delete(delete_backup),
        )
        .route(
            "/api/servers/{server}/backup/{uuid}/restore",
            post(restore_backup),
        )
        .route("/api/servers/{server}/backups", get(list_backups))
        .route("/api/backups", get(list_all_backups))
        .route("/api/backups/{uuid}", get(find_backup))
        .route(
            "/api/servers/{server}/backups/{uuid}/verify",
            post(start_verify).get(verify_status),
        )
        .route("/api/notifications", get(list_notifications))
        .route("/api/notifications/{id}", delete(drop_notification))
        .route("/metrics", get(metrics));
    if state.upstream.is_some() {
        api = api.route("/api/servers/{server}/power", post(power));
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // The websocket authenticates inside the protocol (a JWT in its first message).
    // The download link carries its own token in the query.
    let open = Router::new()
        .route("/api/servers/{server}/ws", get(open_websocket))
        .route("/download/backup", get(download_backup));
    let routes = api.merge(open);
    let routes = match &state.upstream {
        // A method aerie does not serve on one of its paths is Wings' to answer too (an
        // `OPTIONS` preflight gets Wings' CORS answer).
        Some(wings) => routes
            .fallback(proxy::forward)
            .method_not_allowed_fallback(proxy::forward)
            .layer(Extension(Proxy::new(wings.clone()))),
        None => routes
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, wings_text::RESOURCE_NOT_FOUND)
            })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "This method is not allowed on this endpoint.",
                )
            }),
    };
    routes
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(RedactedSpan))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// `Authorization: Bearer <token>`, compared in constant time: 401 when absent or malformed,
/// 403 when wrong (Wings' answers, word for word).
async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, token)| *scheme == "Bearer" && !token.contains(' '))
        .map(|(_, token)| token.to_string());
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "The required authorization heads were not present in the request.",
        ));
    };
    if !bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You are not authorized to access this endpoint.",
        ));
    }
    Ok(next.run(request).await)
}

/// A route's `{server}`, parsed once: a safe id naming a server directory that exists on
/// this node, with that directory. Anything else is Wings' 404, whatever the route.
pub struct ExistingServer {
    /// The server's id.
    pub id: ServerId,
    /// `<data>/<id>`, a real directory when the request came in.
    pub root: std::path::PathBuf,
}

impl axum::extract::FromRequestParts<Arc<AppState>> for ExistingServer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        let id = params
            .get("server")
            .and_then(|raw| ServerId::parse(raw))
            .ok_or_else(ApiError::server_not_found)?;
        let root = state
            .backups
            .server_root(&id)
            .ok_or_else(ApiError::server_not_found)?;
        Ok(Self { id, root })
    }
}

/// A route's `{uuid}`, parsed once into a canonical uuid; anything else is a 400 in Wings'
/// words. Declared after [`ExistingServer`] in a handler, so that an unknown server is a
/// 404 whatever the uuid, as in Wings.
pub struct BackupPath(pub BackupId);

impl axum::extract::FromRequestParts<Arc<AppState>> for BackupPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        params
            .get("uuid")
            .and_then(|raw| BackupId::parse(raw))
            .map(Self)
            .ok_or_else(invalid_uuid)
    }
}

/// The route's named path parameters, percent-decoded.
async fn path_params(
    parts: &mut axum::http::request::Parts,
    state: &Arc<AppState>,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    use axum::extract::FromRequestParts;
    Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(params)| params)
        .map_err(|_| ApiError::server_not_found())
}

/// `POST /api/servers/{server}/backup`: 202 once the backup is reserved; it runs in the
/// background.
async fn create_backup(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body, state.read_timeout).await?;
    let request: BackupRequest = parse_json(&body)?;
    state
        .backups
        .start(&server.id, server.root, request)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/servers/{server}/backup/{uuid}/restore`: 202 once the source is checked; the
/// restore runs in the background.
async fn restore_backup(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    BackupPath(uuid): BackupPath,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body, state.read_timeout).await?;
    let request: RestoreRequest = parse_json(&body)?;
    state
        .restores
        .start(&server.id, server.root, &uuid, request)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /api/servers/{server}/backup/{uuid}`: 204 once the backup is gone (a running
/// one is cancelled first).
async fn delete_backup(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    BackupPath(uuid): BackupPath,
) -> Result<StatusCode, ApiError> {
    match state.backups.delete(&server.id, &uuid).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(backup_not_found()),
        Err(err) => Err(failed(err)),
    }
}

/// `POST /api/servers/{server}/power` in front of Wings: refused with 409 while aerie
/// restores the server (starting it would run it over half-written files), else forwarded.
async fn power(
    State(state): State<Arc<AppState>>,
    Extension(proxy): Extension<Arc<Proxy>>,
    Path(server): Path<String>,
    request: Request,
) -> Response {
    if state.restores.is_restoring(&server) {
        return ApiError::new(
            StatusCode::CONFLICT,
            wings_text::POWER_REFUSED_WHILE_RESTORING,
        )
        .into_response();
    }
    proxy.forward(request).await
}

/// The download link's query.
#[derive(serde::Deserialize)]
struct DownloadQuery {
    token: Option<String>,
}

/// `GET /download/backup?token=<JWT>`: streams a backup to a browser. Axum routes `HEAD`
/// here too; it gets the headers only and does not spend the link.
async fn download_backup(
    State(state): State<Arc<AppState>>,
    Query(query): Query<DownloadQuery>,
    method: Method,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    state
        .downloads
        .serve(query.token.as_deref(), &headers, method == Method::HEAD)
        .await
        .map_err(|(status, message)| ApiError::new(status, message))
}

/// `GET /api/servers/{server}/backup/{uuid}`: one backup's status (an aerie addition).
async fn backup_status(
    State(state): State<Arc<AppState>>,
    Path((server, uuid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match state.backups.status(&server, &uuid) {
        Ok(Some(status)) => Ok(Json(status).into_response()),
        Ok(None) => Err(backup_not_found()),
        Err(err) => Err(ApiError::internal(format!("{err:#}"))),
    }
}

/// `POST /api/servers/{server}/backups/{uuid}/verify`: 202 once the verification runs; the
/// archive is read back in the background (an aerie addition).
async fn start_verify(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    BackupPath(uuid): BackupPath,
) -> Result<Response, ApiError> {
    state.verifications.start(&server.id, &uuid, None).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"state": "running"})),
    )
        .into_response())
}

/// `GET /api/servers/{server}/backups/{uuid}/verify`: the running verification's progress,
/// or the last one's result (an aerie addition).
async fn verify_status(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    BackupPath(uuid): BackupPath,
) -> Result<Response, ApiError> {
    let status = state.verifications.status(&server.id, &uuid).await?;
    Ok(Json(status).into_response())
}

/// `GET /api/servers/{server}/backups`: the server's backups, the registry's merged with
/// what the adapters hold, newest first (see [`Backups::list`]).
async fn list_backups(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
) -> Result<Response, ApiError> {
    let list = state
        .backups
        .list(&server.id)
        .await
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    Ok(Json(list).into_response())
}

/// `GET /api/backups`: every server's known backups, newest first (an aerie addition, for
/// `aerie backup list`).
async fn list_all_backups(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let list = state
        .backups
        .list_all()
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    Ok(Json(list).into_response())
}

/// `GET /api/backups/{uuid}`: one backup's status, whatever its server (an aerie addition,
/// for `aerie backup show`).
async fn find_backup(
    State(state): State<Arc<AppState>>,
    BackupPath(uuid): BackupPath,
) -> Result<Response, ApiError> {
    match state.backups.find(&uuid) {
        Ok(Some(status)) => Ok(Json(status).into_response()),
        Ok(None) => Err(backup_not_found()),
        Err(err) => Err(ApiError::internal(format!("{err:#}"))),
    }
}

/// `GET /api/notifications`: reports the Panel has not accepted yet (an operator's view of
/// the retry queue).
async fn list_notifications(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let queued = state
        .registry
        .notifications()
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    Ok(Json(queued).into_response())
}

/// `DELETE /api/notifications/{id}`: an operator gives up on delivering a report.
async fn drop_notification(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    match state.registry.remove_notification(id) {
        Ok(true) => {
            tracing::warn!(id, "an operator dropped a queued Panel report");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No queued report has this id.",
        )),
        Err(err) => Err(ApiError::internal(format!("{err:#}"))),
    }
}

/// `GET /metrics`: the node's metrics in Prometheus' text format (`metrics.bind` serves
/// them without the token too).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.response()
}

/// `GET /api/servers/{server}/ws`: upgrades to the event websocket. Browsers must come from
/// the Panel or an allowed origin; clients that send no `Origin` are not browsers and pass.
async fn open_websocket(
    State(state): State<Arc<AppState>>,
    server: ExistingServer,
    headers: axum::http::HeaderMap,
    Extension(slot): Extension<ConnectionSlot>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        let allowed = state
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin);
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "This origin may not open a websocket on this node.",
            ));
        }
    }
    let upgrade = upgrade
        .max_frame_size(WEBSOCKET_MESSAGE_LIMIT)
        .max_message_size(WEBSOCKET_MESSAGE_LIMIT)
        .read_buffer_size(WEBSOCKET_READ_BUFFER);
    // In front of Wings, the socket is Wings', with aerie's events added.
    let place = state.sessions.enter().ok_or_else(ApiError::shutting_down)?;
    if let Some(wings) = &state.upstream {
        let relay = socket::Relay {
            server: server.id.to_string(),
            node_token: state.token.clone(),
            started_at: state.started_at,
            bus: state.events.clone(),
            locks: state.locks.clone(),
            auth_timeout: state.websocket_auth_timeout,
            closing: state.sessions.child_token(),
        };
        return Ok(socket::open(relay, place, wings, &headers, slot, upgrade).await);
    }
    let context = websocket::SessionContext {
        server: server.id.to_string(),
        token: state.token.clone(),
        started_at: state.started_at,
        bus: state.events.clone(),
        auth_timeout: state.websocket_auth_timeout,
        closing: state.sessions.child_token(),
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        // The socket keeps its connection's place among `api.max_connections`.
        let _slot = slot;
        // Counted among the sessions a stop waits for.
        let _place = place;
        websocket::run(socket, context).await
    }))
}

/// Reads a request body of at most [`BODY_LIMIT`] bytes that arrives within `timeout`: 413
/// when larger, 408 when it stops coming (the connection is then closed).
async fn read_body(body: Body, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) if is_length_limit(&err) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {} KiB.", BODY_LIMIT / 1024),
        )),
        Ok(Err(err)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The request body could not be read: {err}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} seconds.",
                timeout.as_secs()
            ),
        )),
    }
}

/// Whether reading a body failed on [`BODY_LIMIT`] (the error is boxed inside axum's).
fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// Parses a JSON body, whatever its `Content-Type`, into a 400 that says what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            wings_text::NOT_PARSABLE,
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The data passed in the request was not in a parsable format: {e}"),
        )
    })
}

//! The library's own tokio runtime. The host calls the adapter from blocking threads and its
//! runtime never crosses the boundary, so every S3 request runs here: synchronous methods
//! drive it with `block_on`, upload parts and download pumps are spawned onto it.

use std::future::Future;
use std::sync::OnceLock;

use aerie_adapter_api::AdapterError;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

/// The runtime, once started.
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime, started on first use (two worker threads named `aerie-s3`). It lives as long
/// as the process, like the library itself.
pub fn runtime() -> Result<&'static Runtime, AdapterError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aerie-s3")
        .enable_all()
        .build()
        .map_err(|e| AdapterError::other(format!("cannot start the S3 adapter's runtime: {e}")))?;
    // A racing caller may have won; its runtime is kept and this one dropped.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion on the runtime, blocking the calling (host) thread.
pub fn block_on<T>(
    future: impl Future<Output = Result<T, AdapterError>>,
) -> Result<T, AdapterError> {
    runtime()?.block_on(future)
}

/// The runtime's handle, for spawning.
pub fn handle() -> Result<&'static Handle, AdapterError> {
    Ok(runtime()?.handle())
}

/// Spawns `future` onto the runtime, logging through the `tracing` subscriber current at the
/// call, so that its events reach the logger of the adapter instance that was called.
pub fn spawn<F>(future: F) -> Result<JoinHandle<F::Output>, AdapterError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(handle()?.spawn(future.with_current_subscriber()))
}

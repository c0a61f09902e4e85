//! Panic messages from inside guarded adapter calls go to the host's log (through the
//! caller's `tracing` subscriber, so the host's line carries the call's context) instead of
//! the library's own stderr hook with its backtrace; every other panic is left to the hook
//! that was there before.

use std::cell::Cell;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// How many guarded calls this thread is inside (guards may nest).
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Installs the hook, once per copy of this crate (each adapter library has its own copy of
/// std, hence its own hook).
fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) > 0 {
                tracing::error!("{}", describe(info));
            } else {
                previous(info);
            }
        }));
    });
}

/// `the adapter panicked: <message> (<file>:<line>:<column>)`.
fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    match info.location() {
        Some(at) => format!(
            "the adapter panicked: {message} ({}:{}:{})",
            at.file(),
            at.line(),
            at.column()
        ),
        None => format!("the adapter panicked: {message}"),
    }
}

/// Runs `body` as a guarded call: a panic inside it is logged through `tracing` rather than
/// printed by the default hook (the caller still catches it).
pub(crate) fn logged<T>(body: impl FnOnce() -> T) -> T {
    install();
    /// Leaves the guarded section however `body` ends, unwinding included.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            GUARDED.with(|depth| depth.set(depth.get() - 1));
        }
    }
    GUARDED.with(|depth| depth.set(depth.get() + 1));
    let _leave = Leave;
    body()
}

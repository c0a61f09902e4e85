//! Log forwarding from inside an adapter library: a `tracing` subscriber in the library's own
//! copy of `tracing` that hands each event to the host's [`HostLogger`](crate::abi::HostLogger),
//! so an adapter logs with ordinary `tracing` macros and its lines land in the daemon's log.

use std::fmt::Write as _;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::abi::{HostLoggerBox, LogLevel};

/// A subscriber that forwards the events of the adapter crate `own_crate` (at any level
/// the host wants; its dependencies' only at WARN and above) to `logger`.
pub(crate) fn forwarding_dispatch(logger: HostLoggerBox, own_crate: String) -> Dispatch {
    let max_level = logger.max_level();
    let layer = Forward {
        logger,
        max_level,
        own_crate,
    };
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

struct Forward {
    logger: HostLoggerBox,
    max_level: LogLevel,
    own_crate: String,
}

fn to_log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::ERROR,
        Level::WARN => LogLevel::WARN,
        Level::INFO => LogLevel::INFO,
        Level::DEBUG => LogLevel::DEBUG,
        _ => LogLevel::TRACE,
    }
}

impl Forward {
    fn wants(&self, metadata: &Metadata<'_>) -> bool {
        let level = to_log_level(metadata.level());
        if level > self.max_level {
            return false;
        }
        metadata.target().starts_with(self.own_crate.as_str()) || level <= LogLevel::WARN
    }
}

impl<S: Subscriber> Layer<S> for Forward {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wants(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = TextVisitor::default();
        event.record(&mut text);
        let metadata = event.metadata();
        self.logger.log(
            to_log_level(metadata.level()),
            RStr::from_str(metadata.target()),
            RStr::from_str(&text.finish()),
        );
    }
}

/// Formats an event as `message key=value key=value`.
#[derive(Default)]
struct TextVisitor {
    message: String,
    fields: String,
}

impl TextVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for TextVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

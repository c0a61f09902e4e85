//! A host logger for an adapter's own tests: it keeps every line the adapter logs (so a test
//! can assert one was logged) and echoes it to stderr (which the test harness shows for a
//! failing test).

use std::sync::Mutex;

use crate::abi::LogLevel;
use crate::host::Logger;

/// Keeps every line an adapter logs, at every level.
#[derive(Default)]
pub struct TestLogger {
    /// The lines so far, as `[LEVEL] target: message`.
    lines: Mutex<Vec<String>>,
}

impl TestLogger {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether some line contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.lines().iter().any(|line| line.contains(text))
    }
}

impl Logger for TestLogger {
    fn max_level(&self) -> LogLevel {
        LogLevel::TRACE
    }

    fn log(&self, level: LogLevel, target: &str, message: &str) {
        let name = match level {
            LogLevel::ERROR => "ERROR",
            LogLevel::WARN => "WARN",
            LogLevel::INFO => "INFO",
            LogLevel::DEBUG => "DEBUG",
            _ => "TRACE",
        };
        let line = format!("[{name}] {target}: {message}");
        eprintln!("{line}");
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

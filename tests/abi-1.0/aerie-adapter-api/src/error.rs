//! The one error type that crosses the ABI: a stable kind code, a retry hint and a message.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, as a stable code the host can map to an HTTP status or a retry decision.
///
/// A newtype over `u8` rather than an enum: new kinds can be added in a minor version without
/// breaking adapters built earlier (an unknown code reads as [`ErrorKind::OTHER`]'s meaning).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u8);

impl ErrorKind {
    /// Anything not covered by a more precise kind.
    pub const OTHER: Self = Self(0);
    /// The backup (or the object behind it) does not exist.
    pub const NOT_FOUND: Self = Self(1);
    /// A backup with this identity is already stored.
    pub const ALREADY_EXISTS: Self = Self(2);
    /// The adapter's configuration is unusable; the message names the key.
    pub const INVALID_CONFIG: Self = Self(3);
    /// The storage has no room left (ENOSPC, a quota).
    pub const STORAGE_FULL: Self = Self(4);
    /// The storage cannot be reached right now (network, server down).
    pub const UNAVAILABLE: Self = Self(5);
    /// The storage refused access (file permissions, credentials).
    pub const PERMISSION_DENIED: Self = Self(6);

    /// A short lowercase name, for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::NOT_FOUND => "not found",
            Self::ALREADY_EXISTS => "already exists",
            Self::INVALID_CONFIG => "invalid config",
            Self::STORAGE_FULL => "storage full",
            Self::UNAVAILABLE => "unavailable",
            Self::PERMISSION_DENIED => "permission denied",
            _ => "error",
        }
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorKind({}: {})", self.0, self.name())
    }
}

/// An error from an adapter: its kind, whether trying again may succeed, and a message for a
/// person (say what failed and, where it helps, what to do).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct AdapterError {
    /// The stable code the host acts on.
    pub kind: ErrorKind,
    /// True when the same call may succeed later (a timeout, a 503).
    pub retryable: bool,
    /// What went wrong, in words.
    pub message: RString,
}

impl AdapterError {
    /// An error of `kind` that is not worth retrying.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            retryable: false,
            message: message.into().into(),
        }
    }

    /// An [`ErrorKind::INVALID_CONFIG`] error; `message` should name the offending key.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_CONFIG, message)
    }

    /// An [`ErrorKind::NOT_FOUND`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NOT_FOUND, message)
    }

    /// An [`ErrorKind::OTHER`] error.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }

    /// The same error, marked as worth retrying (or not).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// An I/O error with `context` (what was being done, e.g. the path) in front of it; the kind
    /// follows the I/O error kind.
    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NOT_FOUND,
            Io::AlreadyExists => ErrorKind::ALREADY_EXISTS,
            Io::PermissionDenied | Io::ReadOnlyFilesystem => ErrorKind::PERMISSION_DENIED,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::STORAGE_FULL,
            _ => ErrorKind::OTHER,
        };
        let retryable = matches!(err.kind(), Io::Interrupted | Io::TimedOut | Io::WouldBlock);
        Self::new(kind, format!("{context}: {err}")).with_retryable(retryable)
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdapterError {}

//! What the `aerie` command's exit code says happened, so that scripts can tell a daemon
//! that is down from a backup that is missing from a job that ran and failed.

use std::fmt;

/// The exit codes, as `--help` lists them (2 is clap's, for a command line it cannot parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else: a bad config, a file that cannot be read, an adapter that does not load.
    Error = 1,
    /// No daemon answers at the configured address.
    Unreachable = 3,
    /// The daemon knows no such server or backup.
    NotFound = 4,
    /// The daemon refused the request (any other error answer).
    Refused = 5,
    /// The backup, restore or verification ran and did not succeed.
    JobFailed = 6,
}

/// The exit codes, for `--help` (and the README).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done (the backup, restore or verification succeeded)
  1  error (bad config, unreadable file, an adapter that does not load)
  2  the command line could not be parsed
  3  no daemon answers at the configured address (api.host, api.port)
  4  the daemon knows no such server or backup
  5  the daemon refused the request (any other error answer)
  6  the backup, restore or verification ran and failed";

/// A failure with the exit code that says what kind it is; the message is one line.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong, for the operator.
    pub message: String,
    /// The HTTP status of the daemon's answer, when the failure is one.
    pub status: Option<u16>,
}

impl Failure {
    /// A failure of kind `exit`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            status: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error `run` returned: a [`Failure`]'s own, else 1.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>()
        .map_or(Exit::Error, |failure| failure.exit) as u8
}

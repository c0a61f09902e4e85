//! The words of Wings' error answers, in one place: the Panel shows them to its users and
//! its code matches some of them, so each is written once (wings-protocol.md §7.3) and used
//! wherever that error is answered. aerie's own refusals that have no Wings counterpart are
//! here too, so that HTTP and the websocket say the same thing.

/// An unknown server, or a route's id that cannot name one (Wings' 404).
pub const RESOURCE_NOT_FOUND: &str = "The requested resource does not exist on this instance.";

/// A backup that no adapter holds, or a download link for one (Wings' 404).
pub const BACKUP_NOT_FOUND: &str = "The requested backup was not found on this server.";

/// A failure on this side; the cause goes to the log, not to the client (Wings' 500).
pub const UNEXPECTED_ERROR: &str =
    "An unexpected error was encountered while processing this request";

/// A request body that is empty or not JSON (Wings' 400).
pub const NOT_PARSABLE: &str =
    "The data passed in the request was not in a parsable format. Please try again.";

/// A backup id that is not a canonical uuid.
pub const INVALID_BACKUP_ID: &str = "The backup identifier must be a valid UUID.";

/// A power action, on HTTP or on the websocket, for a server aerie is restoring.
pub const POWER_REFUSED_WHILE_RESTORING: &str =
    "This server is being restored; power actions are refused until the restore ends.";

//! What adapter authors otherwise write by hand, behind the `helpers` feature so that the ABI
//! surface stays small: publishing a file atomically, turning the host's ids into safe path
//! segments, and a logger for tests.

mod publish;
mod segments;
mod test_logger;

pub use publish::AtomicFile;
pub use segments::{backup_segment, server_segment, MAX_SERVER_ID_LEN};
pub use test_logger::TestLogger;

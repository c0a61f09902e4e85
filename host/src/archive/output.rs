//! Where the compressed archive goes: a writer that hashes SHA-1 and counts bytes as they
//! pass (no second read), applies the write limit, and hands the adapter's sink chunks of
//! about 1 MiB.

use std::io::{self, Write};

use aerie_adapter_api::host::SinkHandle;
use aerie_adapter_api::{AdapterError, ErrorKind};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

use crate::rate_limit::RateLimiter;

/// The size of the chunks handed to the sink: big enough that crossing the library
/// boundary costs nothing, small enough that memory stays flat.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The archive's compressed bytes on their way to storage.
pub struct ArchiveOutput<'a> {
    sink: &'a mut SinkHandle,
    chunk: Vec<u8>,
    sha1: Sha1,
    size: u64,
    limiter: Option<RateLimiter>,
    cancel: &'a CancellationToken,
}

/// What went into storage, once the archive is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// SHA-1 of every byte written, hex.
    pub sha1: String,
    /// Bytes written.
    pub size: u64,
}

impl<'a> ArchiveOutput<'a> {
    /// Writes into `sink`, at most `write_limit` bytes per second if set; stops with an
    /// error once `cancel` is cancelled.
    pub fn new(
        sink: &'a mut SinkHandle,
        write_limit: Option<u64>,
        cancel: &'a CancellationToken,
    ) -> Self {
        Self {
            sink,
            chunk: Vec::with_capacity(CHUNK_BYTES),
            sha1: Sha1::new(),
            size: 0,
            limiter: write_limit.map(RateLimiter::new),
            cancel,
        }
    }

    /// Sends what is buffered; then the archive's checksum and size.
    pub fn finish(mut self) -> io::Result<Written> {
        self.send_chunk()?;
        Ok(Written {
            sha1: hex::encode(self.sha1.finalize()),
            size: self.size,
        })
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: `write_all` would retry that forever.
            return Err(io::Error::other("cancelled"));
        }
        if let Some(limiter) = &mut self.limiter {
            limiter.take(self.chunk.len());
        }
        self.sha1.update(&self.chunk);
        self.size += self.chunk.len() as u64;
        self.sink.write(&self.chunk).map_err(storage_error)?;
        self.chunk.clear();
        Ok(())
    }
}

/// A sink's error as an I/O error; a full storage keeps its kind (`StorageFull`), so that
/// the backup's error can say so first, whatever the archive was doing when it happened;
/// any other kind but OTHER is named in the message (`storage (unavailable): ...`).
fn storage_error(err: AdapterError) -> io::Error {
    if err.kind == ErrorKind::STORAGE_FULL {
        io::Error::new(io::ErrorKind::StorageFull, err.message.to_string())
    } else {
        let kind = match err.kind {
            ErrorKind::OTHER => String::new(),
            kind => format!(" ({})", kind.name()),
        };
        io::Error::other(format!("storage{kind}: {err}"))
    }
}

impl Write for ArchiveOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.chunk.len();
        let taken = bytes.len().min(room);
        self.chunk.extend_from_slice(&bytes[..taken]);
        if self.chunk.len() == CHUNK_BYTES {
            self.send_chunk()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks go out when full or at `finish`; a flush mid-archive has nothing to force.
        Ok(())
    }
}

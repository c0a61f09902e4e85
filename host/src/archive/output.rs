//! Where the compressed archive goes: a writer that takes it in compressed blocks (and
//! gathers what else is written into chunks of up to 1 MiB) and hands them to two threads of
//! their own, one that hashes SHA-1 and counts bytes (no
//! second read), one that applies the write limit and writes to the adapter's sink. Hashing
//! and storing (a `write` into the page cache costs as much as the read it came from) so
//! run beside the walk and the compression instead of after them, chunk by chunk.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use aerie_adapter_api::host::SinkHandle;
use aerie_adapter_api::{AdapterError, ErrorKind};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

use super::gzip::BlockWrite;
use crate::rate_limit::RateLimiter;

/// The most bytes written as bytes (not as blocks) that are gathered before they go to the
/// sink: big enough that crossing the library boundary costs nothing, small enough that
/// memory stays flat. (Compressed blocks go as they are, each under 1.2 MiB.)
const CHUNK_BYTES: usize = 1024 * 1024;

/// Chunks that may wait before each of the two threads: enough that neither waits on the
/// other's jitter, so that at most `2 × (CHUNKS_QUEUED + 1)` chunks (about 7 MiB) are in
/// the output at once.
const CHUNKS_QUEUED: usize = 2;

/// The archive's compressed bytes on their way to storage.
pub struct ArchiveOutput<'scope> {
    /// What was written as bytes (the gzip header, its trailer) since the last chunk.
    chunk: Vec<u8>,
    /// Full chunks to the hashing thread; `None` once closed.
    to_hash: Option<SyncSender<Vec<u8>>>,
    /// Chunks the storing thread has written, to fill again.
    spare: Receiver<Vec<u8>>,
    /// The hashing thread: the archive's SHA-1 and size.
    hasher: Option<ScopedJoinHandle<'scope, Written>>,
    /// The storing thread: the sink's first error, if any.
    storer: Option<ScopedJoinHandle<'scope, io::Result<()>>>,
}

/// What went into storage, once the archive is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// SHA-1 of every byte written, hex.
    pub sha1: String,
    /// Bytes written.
    pub size: u64,
}

impl<'scope> ArchiveOutput<'scope> {
    /// Starts the threads that hash and write into `sink`, at most `write_limit` bytes per
    /// second if set; the archive stops with an error once `cancel` is cancelled.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        sink: &'env mut SinkHandle,
        write_limit: Option<u64>,
        cancel: &'env CancellationToken,
    ) -> io::Result<Self> {
        let (to_hash, hash_queue) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_QUEUED);
        let (to_store, store_queue) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_QUEUED);
        let (return_spare, spare) = mpsc::channel();
        let hasher = std::thread::Builder::new()
            .name("archive-sha1".into())
            .spawn_scoped(scope, move || hash(&hash_queue, &to_store))?;
        // The sink's log lines (and any panic the adapter reports) carry the backup's span.
        let span = tracing::Span::current();
        let storer = std::thread::Builder::new()
            .name("archive-store".into())
            .spawn_scoped(scope, move || {
                let _span = span.enter();
                let limiter = write_limit.map(RateLimiter::new);
                store(&store_queue, &return_spare, sink, limiter, cancel)
            })?;
        Ok(Self {
            chunk: Vec::new(),
            to_hash: Some(to_hash),
            spare,
            hasher: Some(hasher),
            storer: Some(storer),
        })
    }

    /// Sends what is buffered, waits until everything is stored; then the archive's
    /// checksum and size.
    pub fn finish(mut self) -> io::Result<Written> {
        self.send_chunk()?;
        // Closing the queue ends both threads once they have done their part.
        self.to_hash = None;
        let stored = self.storer.take().map(join).unwrap_or(Ok(()));
        let written = self.hasher.take().map(join);
        stored?;
        written.ok_or_else(|| io::Error::other("the archive's hash thread is gone"))
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        let chunk = std::mem::take(&mut self.chunk);
        self.send(chunk)
    }

    /// Hands `chunk` to the hashing thread, which passes it on to the storing one.
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let sent = match &self.to_hash {
            Some(to_hash) => to_hash.send(chunk).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The storing thread stopped on an error, and the hashing one after it: say which.
        self.to_hash = None;
        match self.storer.take().map(join) {
            Some(Err(err)) => Err(err),
            _ => Err(io::Error::other("the archive's storing thread is gone")),
        }
    }
}

/// Waits for a thread of the output; a panic there goes on here.
fn join<T>(thread: ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The hashing thread: SHA-1 and size of every chunk, in order, each passed on to be stored.
fn hash(queue: &Receiver<Vec<u8>>, to_store: &SyncSender<Vec<u8>>) -> Written {
    let mut sha1 = Sha1::new();
    let mut size = 0;
    while let Ok(chunk) = queue.recv() {
        sha1.update(&chunk);
        size += chunk.len() as u64;
        if to_store.send(chunk).is_err() {
            // The storing thread failed; it tells the archive why.
            break;
        }
    }
    Written {
        sha1: hex::encode(sha1.finalize()),
        size,
    }
}

/// The storing thread: each chunk, in order, into the sink, held to the write limit; stops
/// at the first error (or cancellation), which ends the archive.
fn store(
    queue: &Receiver<Vec<u8>>,
    spare: &mpsc::Sender<Vec<u8>>,
    sink: &mut SinkHandle,
    mut limiter: Option<RateLimiter>,
    cancel: &CancellationToken,
) -> io::Result<()> {
    while let Ok(mut chunk) = queue.recv() {
        if cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        if let Some(limiter) = &mut limiter {
            limiter.take(chunk.len());
        }
        sink.write(&chunk).map_err(storage_error)?;
        chunk.clear();
        // The writer may be gone already; then the chunk is simply freed.
        let _ = spare.send(chunk);
    }
    Ok(())
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

impl BlockWrite for ArchiveOutput<'_> {
    /// Passes a compressed block on as it is, no copy: its buffer goes through the hashing
    /// and storing threads and comes back to be filled again.
    fn write_block(&mut self, block: Vec<u8>) -> io::Result<Vec<u8>> {
        // What was written before it (the gzip header) goes first.
        self.send_chunk()?;
        self.send(block)?;
        Ok(self.spare.try_recv().unwrap_or_default())
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

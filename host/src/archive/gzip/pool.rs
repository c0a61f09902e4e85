//! The compression thread pool: workers take blocks from one shared queue, deflate them and
//! send each result back on the block's own channel, so the writer collects them in order.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::deflater::Deflater;
use super::{worker_died, Level};

/// One block for a worker: `output` is a spare buffer to compress into.
pub(super) struct Job {
    /// The uncompressed block.
    pub(super) input: Vec<u8>,
    /// A spare buffer the compressed block is written into.
    pub(super) output: Vec<u8>,
    /// Whether this is the stream's final block.
    pub(super) last: bool,
    /// Where the result goes.
    pub(super) reply: SyncSender<io::Result<Done>>,
}

/// A compressed block: its buffers come back for reuse.
pub(super) struct Done {
    /// The uncompressed block.
    pub(super) input: Vec<u8>,
    /// The compressed block.
    pub(super) output: Vec<u8>,
    /// The CRC-32 of `input`.
    pub(super) crc: u32,
}

/// Worker threads taking jobs from one shared queue; dropping it stops and joins them.
pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads` workers compressing at `level`.
    pub(super) fn new(level: Level, threads: usize) -> io::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut pool = Pool {
            jobs: Some(jobs),
            workers: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let worker = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || work(level, &queue))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Queues a block for the next free worker.
    pub(super) fn submit(&self, job: Job) -> io::Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(worker_died)?;
        jobs.send(job).map_err(|_| worker_died())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends every worker once it has finished its current block.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            // A worker that panicked has already surfaced as an error to the writer.
            let _ = worker.join();
        }
    }
}

fn work(level: Level, queue: &Mutex<Receiver<Job>>) {
    let mut deflater = Deflater::new(level);
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let Job {
            input,
            mut output,
            last,
            reply,
        } = job;
        let result = deflater.deflate(&input, &mut output, last).map(|()| Done {
            crc: crc32fast::hash(&input),
            input,
            output,
        });
        // The writer may have been dropped meanwhile; then nobody wants the block.
        let _ = reply.send(result);
    }
}

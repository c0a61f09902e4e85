//! Parallel gzip: compresses the archive stream on every core into one standard gzip member.
//!
//! A backup is CPU-bound on deflate, and a single deflate stream runs on one core. This module
//! does what pigz does: the input is cut into [`BLOCK_SIZE`] blocks, each block is raw-deflated
//! independently on a pool of worker threads, and the calling thread writes the compressed
//! blocks in order between one gzip header and one trailer (the CRC-32 of the whole input,
//! combined from the workers' per-block CRCs, and its length). Every block but the last ends
//! byte-aligned on an empty, non-final stored block (what zlib's `Z_SYNC_FLUSH` emits), so the
//! concatenation is one valid deflate stream: the result is a single-member RFC 1952 file that
//! `gzip`, GNU tar, Python's `gzip`/`tarfile` and flate2's `GzDecoder` read.
//!
//! Two deflate back ends. `best_speed` uses ISA-L's igzip at its level 2 (see `isal.rs`):
//! about 700 MB per CPU-second, 1 % larger than `pigz -1`'s output; it ends blocks with a sync
//! flush, so nothing below applies to it. Every other level uses libdeflate (through
//! `libdeflater`): on the game-server corpus it is both smaller and faster than zlib-rs and
//! miniz_oxide at every level; its level 8 output is 2.4 % smaller than `pigz -9`'s at 2× its
//! speed per core (its level 1, 3.5 % smaller than `pigz -1`'s at ~230 MB per CPU-second,
//! was `best_speed` until ISA-L's threefold speed won). libdeflate only writes complete
//! streams whose last block is
//! marked final, so each non-last block's stream is walked block by block (`Unfinalizer`) to
//! clear that BFINAL bit and find the exact bit where the stream ends, after which the empty
//! stored block is appended; the walk costs about a quarter of level 1's compression time and
//! 5 % of level 8's, and libdeflate still comes out ahead. libdeflate has no preset dictionary,
//! so each block starts with an empty window; at 1 MiB blocks pigz's 32 KiB dictionary would
//! save 0.2 % (measured with zlib-rs).
//!
//! libdeflate already emits stored blocks wherever deflate would not shrink the data, but at
//! level 1 it takes twice as long to find that out as to compress text. Blocks of which deflate
//! shrinks no sample (jars, zips, PNGs, OGGs: already compressed) are stored without trying.

mod deflater;
mod isal;
mod pool;
mod unfinalize;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use pool::{Done, Job, Pool};

/// Uncompressed bytes per independently deflated block.
///
/// Large enough that the window reset at each block boundary (libdeflate has no preset
/// dictionary) and the 5-byte sync marker cost well under 1 % of the output, small enough that
/// `2 × threads` blocks in flight (input plus output) keep memory at a few MiB per thread.
pub const BLOCK_SIZE: usize = 1 << 20;

/// A compression level: libdeflate's scale, 0 (stored) to 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level(u8);

impl Level {
    /// No compression: stored blocks only.
    pub const NONE: Level = Level(0);
    /// Fastest: compressed by ISA-L (its level 2), 1 % larger than `pigz -1` output on
    /// game-server data at three times libdeflate level 1's speed.
    pub const BEST_SPEED: Level = Level(1);
    /// Small output at half of zlib level 9's time: 2.4 % smaller than `pigz -9` output.
    /// (Level 9 is 0.1 % smaller again for 25 % more time, level 6 1.4 % larger in half.)
    pub const BEST_COMPRESSION: Level = Level(8);

    /// A level on libdeflate's scale, or `None` above 12.
    pub fn new(level: u8) -> Option<Level> {
        (level <= 12).then_some(Level(level))
    }

    /// The level on libdeflate's scale, 0 to 12.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The gzip header's XFL byte: 4 for the fastest levels, 2 for the strongest.
    fn xfl(self) -> u8 {
        match self.0 {
            0..=1 => 4,
            n if n >= Level::BEST_COMPRESSION.0 => 2,
            _ => 0,
        }
    }
}

/// Where the gzip stream goes: a writer that takes each compressed block whole. One that can
/// keep the block's buffer (and give back an empty one to compress into) spares a copy of
/// the archive; any other writes it and hands the same buffer back.
pub trait BlockWrite: Write {
    /// Writes `block` whole; returns an empty buffer to reuse.
    fn write_block(&mut self, mut block: Vec<u8>) -> io::Result<Vec<u8>> {
        self.write_all(&block)?;
        block.clear();
        Ok(block)
    }
}

impl BlockWrite for Vec<u8> {}

/// An [`io::Write`] that gzips what is written to it on `threads` worker threads into one
/// single-member gzip stream on `W`.
///
/// Input is gathered into [`BLOCK_SIZE`] blocks; each full block goes to the workers, and
/// finished blocks are written to `W` in order from the calling thread, during later calls to
/// `write`. At most `2 × threads` blocks are in flight, so memory stays flat whatever the input
/// size. Call [`finish`](Self::finish) to write the last block and the trailer; dropping the
/// writer without it stops the workers and leaves `W` with an incomplete stream. After an error
/// every later call fails.
pub struct ParallelGzWriter<W: BlockWrite + Send> {
    inner: W,
    /// The block being filled.
    block: Vec<u8>,
    /// Results of the blocks handed to the workers, oldest first.
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    max_in_flight: usize,
    /// Buffers returned by finished blocks, reused for the next ones.
    spare_inputs: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: u64,
    failed: bool,
    pool: Pool,
}

impl<W: BlockWrite + Send> ParallelGzWriter<W> {
    /// Writes the gzip header to `inner` and starts `threads` worker threads (at least one).
    pub fn new(mut inner: W, level: Level, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=255 (unknown).
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, level.xfl(), 255])?;
        Ok(ParallelGzWriter {
            inner,
            block: Vec::with_capacity(BLOCK_SIZE),
            in_flight: VecDeque::new(),
            max_in_flight: 2 * threads,
            spare_inputs: Vec::new(),
            spare_outputs: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            failed: false,
            pool: Pool::new(level, threads)?,
        })
    }

    /// Compresses what is buffered as the final block, writes every block and the trailer,
    /// flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.checked(|w| {
            w.submit(true)?;
            while !w.in_flight.is_empty() {
                w.write_next()?;
            }
            let mut trailer = [0; 8];
            trailer[..4].copy_from_slice(&w.crc.clone().finalize().to_le_bytes());
            // ISIZE is the input length modulo 2^32.
            trailer[4..].copy_from_slice(&(w.len as u32).to_le_bytes());
            w.inner.write_all(&trailer)?;
            w.inner.flush()
        })?;
        Ok(self.inner)
    }

    /// Reads up to `max` bytes of `file`, from its current offset, straight into the block
    /// being filled, with one `read` and no buffer between the page cache and the
    /// compressor; returns how many bytes came (0 at the end of the file, or when `max` is 0).
    pub fn read_from(&mut self, file: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        self.checked(|w| {
            let room = max.min(BLOCK_SIZE - w.block.len());
            let spare = &mut w.block.spare_capacity_mut()[..room];
            let n = loop {
                match rustix::io::read(file, &mut *spare) {
                    Ok((filled, _)) => break filled.len(),
                    // Interrupted by a signal before reading anything: read again.
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(err) => return Err(err.into()),
                }
            };
            // SAFETY: `read` initialised the first `n` bytes of the spare capacity, which
            // follow the block's `len` bytes directly.
            unsafe { w.block.set_len(w.block.len() + n) };
            if w.block.len() == BLOCK_SIZE {
                w.submit(false)?;
            }
            Ok(n)
        })
    }

    /// Runs `f`, failing at once if an earlier call failed and remembering a failure: after one,
    /// blocks may be missing from the output, so nothing more may be written.
    fn checked<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if self.failed {
            return Err(io::Error::other("parallel gzip writer failed earlier"));
        }
        let result = f(self);
        self.failed = result.is_err();
        result
    }

    /// Hands the current block to the workers, then writes the blocks already finished.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.write_next()?;
        }
        let next = self.spare_inputs.pop();
        let input = std::mem::replace(
            &mut self.block,
            next.unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE)),
        );
        let output = self.spare_outputs.pop().unwrap_or_default();
        let (reply, result) = mpsc::sync_channel(1);
        self.pool.submit(Job {
            input,
            output,
            last,
            reply,
        })?;
        self.in_flight.push_back(result);
        while let Some(front) = self.in_flight.front() {
            match front.try_recv() {
                Ok(done) => {
                    self.in_flight.pop_front();
                    self.write_done(done?)?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(worker_died()),
            }
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it.
    fn write_next(&mut self) -> io::Result<()> {
        if let Some(result) = self.in_flight.pop_front() {
            let done = result.recv().map_err(|_| worker_died())??;
            self.write_done(done)?;
        }
        Ok(())
    }

    fn write_done(&mut self, mut done: Done) -> io::Result<()> {
        let len = done.input.len() as u64;
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(done.crc, len));
        self.len += len;
        done.input.clear();
        self.spare_inputs.push(done.input);
        let spare = self.inner.write_block(done.output)?;
        self.spare_outputs.push(spare);
        Ok(())
    }
}

impl<W: BlockWrite + Send> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.checked(|w| {
            let n = buf.len().min(BLOCK_SIZE - w.block.len());
            w.block.extend_from_slice(&buf[..n]);
            if w.block.len() == BLOCK_SIZE {
                w.submit(false)?;
            }
            Ok(n)
        })
    }

    /// Ends the current block early (a sync flush), writes every block in flight and flushes
    /// the inner writer. Frequent flushes cost ratio: each one cuts a short block.
    fn flush(&mut self) -> io::Result<()> {
        self.checked(|w| {
            if !w.block.is_empty() {
                w.submit(false)?;
            }
            while !w.in_flight.is_empty() {
                w.write_next()?;
            }
            w.inner.flush()
        })
    }
}

fn worker_died() -> io::Error {
    io::Error::other("parallel gzip worker thread died")
}

#[cfg(test)]
pub(in crate::archive) mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;
    use std::process::{Command, Stdio};

    const THREADS: [usize; 3] = [1, 2, 4];
    const NAMED: [Level; 3] = [Level::NONE, Level::BEST_SPEED, Level::BEST_COMPRESSION];

    /// Xorshift64 bytes: incompressible.
    pub(in crate::archive) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text-like, compressible bytes with some random runs, like a tar of configs and logs.
    pub(super) fn mixed_bytes(len: usize) -> Vec<u8> {
        let noise = random_bytes(7, len);
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            if i % 50 == 49 {
                out.extend_from_slice(&noise[out.len()..(out.len() + 3000).min(len)]);
            } else {
                let line = format!(
                    "[12:{:02}:{:02} INFO]: player{} moved to {} 64 {}\n",
                    i % 60,
                    i % 37,
                    i % 17,
                    i * 31 % 1000,
                    i * 7 % 500
                );
                out.extend_from_slice(line.as_bytes());
            }
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Gzips `data` handing it over in writes of the sizes in `sizes`, cycled.
    fn gzip(data: &[u8], level: Level, threads: usize, sizes: &[usize]) -> Vec<u8> {
        let mut w = ParallelGzWriter::new(Vec::new(), level, threads).unwrap();
        let mut rest = data;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.min(rest.len()));
            w.write_all(now).unwrap();
            rest = later;
        }
        w.finish().unwrap()
    }

    /// Decodes with flate2's single-member decoder, checking the header and the trailer.
    fn gunzip(gz: &[u8], level: Level) -> Vec<u8> {
        assert_eq!(gz[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, level.xfl(), 255]);
        let mut decoder = GzDecoder::new(gz);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        // One member: the decoder consumed everything.
        assert!(
            decoder.into_inner().is_empty(),
            "bytes after the first gzip member"
        );
        let isize = u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap());
        assert_eq!(isize, out.len() as u32);
        out
    }

    fn round_trip(data: &[u8], level: Level, threads: usize, sizes: &[usize]) {
        let gz = gzip(data, level, threads, sizes);
        let out = gunzip(&gz, level);
        assert!(
            out == data,
            "level {level:?}, {threads} threads, {} bytes",
            data.len()
        );
    }

    fn all_levels() -> impl Iterator<Item = Level> {
        (0..=12).map(|n| Level::new(n).unwrap())
    }

    #[test]
    fn levels() {
        assert_eq!(Level::new(13), None);
        assert_eq!(Level::new(12).map(Level::get), Some(12));
        assert_eq!(Level::BEST_SPEED.xfl(), 4);
        assert_eq!(Level::BEST_COMPRESSION.xfl(), 2);
    }

    #[test]
    fn empty_and_single_byte() {
        for level in all_levels() {
            for threads in THREADS {
                round_trip(b"", level, threads, &[1]);
                round_trip(b"x", level, threads, &[1]);
            }
        }
    }

    #[test]
    fn block_boundaries() {
        let data = mixed_bytes(BLOCK_SIZE + 1);
        for level in all_levels() {
            for threads in THREADS {
                round_trip(&data[..BLOCK_SIZE], level, threads, &[BLOCK_SIZE]);
                round_trip(&data, level, threads, &[BLOCK_SIZE]);
            }
        }
    }

    #[test]
    fn many_blocks_in_odd_writes() {
        let data = mixed_bytes(9 * BLOCK_SIZE + 12_345);
        for level in [
            Level::NONE,
            Level::BEST_SPEED,
            Level::new(6).unwrap(),
            Level::BEST_COMPRESSION,
        ] {
            for threads in THREADS {
                round_trip(
                    &data,
                    level,
                    threads,
                    &[1, 511, 7, 65_537, 3 * BLOCK_SIZE + 3, 100_003],
                );
            }
        }
    }

    /// Flushing after writes of every small size cuts short blocks whose streams end at every
    /// bit offset, exercising each way the sync marker is placed.
    #[test]
    fn flushed_short_blocks() {
        let data = mixed_bytes(200_000);
        for level in all_levels() {
            for threads in [1, 2] {
                let mut w = ParallelGzWriter::new(Vec::new(), level, threads).unwrap();
                let mut at = 0;
                for size in (1..300).chain([5_000, 20_000, 70_000]) {
                    w.write_all(&data[at..at + size]).unwrap();
                    w.flush().unwrap();
                    at += size;
                }
                w.write_all(&data[at..]).unwrap();
                let gz = w.finish().unwrap();
                assert!(gunzip(&gz, level) == data, "level {level:?}");
            }
        }
    }

    #[test]
    fn incompressible_100_mib() {
        const LEN: usize = 100 << 20;
        let data = random_bytes(42, LEN);
        for level in NAMED {
            for threads in THREADS {
                let gz = gzip(&data, level, threads, &[BLOCK_SIZE / 3 + 1]);
                // Stored blocks cost 5 bytes per 64 KiB.
                assert!(gz.len() < LEN + LEN / 8192, "{} bytes", gz.len());
                let mut decoder = GzDecoder::new(&gz[..]);
                let mut chunk = vec![0; BLOCK_SIZE];
                let mut at = 0;
                loop {
                    let n = decoder.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    assert!(chunk[..n] == data[at..at + n], "level {level:?} at {at}");
                    at += n;
                }
                assert_eq!(at, LEN, "level {level:?}, {threads} threads");
            }
        }
    }

    fn run(program: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(program)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", out.status);
        out.stdout
    }

    /// gzip, GNU tar and Python's gzip and tarfile modules read the output.
    #[test]
    fn other_readers() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("world")).unwrap();
        std::fs::write(tree.join("server.log"), mixed_bytes(3 * BLOCK_SIZE)).unwrap();
        std::fs::write(
            tree.join("world/r.0.0.mca"),
            random_bytes(3, BLOCK_SIZE + 77),
        )
        .unwrap();
        std::fs::write(tree.join("eula.txt"), "eula=true\n").unwrap();
        let tar_path = dir.path().join("t.tar");
        run(
            "tar",
            &[
                "-cf",
                tar_path.to_str().unwrap(),
                "-C",
                tree.to_str().unwrap(),
                ".",
            ],
        );
        let tar = std::fs::read(&tar_path).unwrap();
        let check = "import gzip, sys, tarfile
data = gzip.decompress(open(sys.argv[1], 'rb').read())
assert data == open(sys.argv[2], 'rb').read(), 'gzip module'
with tarfile.open(sys.argv[1], 'r:gz') as t:
    assert t.extractfile('./eula.txt').read() == b'eula=true\\n', 'tarfile'
    assert len(t.extractfile('./world/r.0.0.mca').read()) == 1048653, 'tarfile'";
        for level in NAMED {
            for threads in THREADS {
                let gz_path = dir.path().join("t.tar.gz");
                std::fs::write(&gz_path, gzip(&tar, level, threads, &[10_000])).unwrap();
                let gz = gz_path.to_str().unwrap();
                run("gzip", &["-t", gz]);
                assert!(
                    run("gzip", &["-dc", gz]) == tar,
                    "gzip -dc, level {level:?}"
                );
                let listing = String::from_utf8(run("tar", &["-tzf", gz])).unwrap();
                assert!(listing.contains("./world/r.0.0.mca"), "{listing}");
                run("python3", &["-c", check, gz, tar_path.to_str().unwrap()]);
            }
        }
    }

    /// A writer that fails once it has taken `limit` bytes.
    struct Failing {
        limit: usize,
    }

    impl BlockWrite for Failing {}

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.limit {
                return Err(io::Error::other("disk full"));
            }
            self.limit -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_errors_surface_and_stick() {
        let data = mixed_bytes(8 * BLOCK_SIZE);
        for threads in THREADS {
            // Fails writing the header.
            assert!(
                ParallelGzWriter::new(Failing { limit: 5 }, Level::BEST_SPEED, threads).is_err()
            );
            // Fails writing a block: some later call fails, and every call after it.
            let mut w =
                ParallelGzWriter::new(Failing { limit: 100_000 }, Level::BEST_SPEED, threads)
                    .unwrap();
            let failed = data
                .chunks(100_000)
                .any(|chunk| w.write_all(chunk).is_err())
                || w.flush().is_err();
            assert!(failed);
            assert!(w.write_all(b"more").is_err());
            assert!(w.finish().is_err());
            // Fails writing the trailer.
            let w =
                ParallelGzWriter::new(Failing { limit: 15 }, Level::BEST_SPEED, threads).unwrap();
            assert!(w.finish().is_err());
        }
    }

    /// A writer whose bytes outlive it, to look at what a dropped writer left.
    #[derive(Clone, Default)]
    struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl BlockWrite for SharedBuffer {}

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_dropped_without_finish_never_leaves_a_complete_stream() {
        let data = mixed_bytes(6 * BLOCK_SIZE + 5);
        for threads in THREADS {
            let out = SharedBuffer::default();
            let mut w =
                ParallelGzWriter::new(out.clone(), Level::BEST_COMPRESSION, threads).unwrap();
            w.write_all(&data).unwrap();
            drop(w);
            // A cancelled backup must not look whole: no trailer, so gunzip fails, and what
            // it can read is a prefix of the input.
            let written = out.0.lock().unwrap().clone();
            let mut decoded = Vec::new();
            let read = flate2::read::GzDecoder::new(written.as_slice()).read_to_end(&mut decoded);
            assert_eq!(
                read.map_err(|e| e.kind()).unwrap_err(),
                io::ErrorKind::UnexpectedEof,
                "{threads} threads"
            );
            assert!(data.starts_with(&decoded), "{threads} threads");
        }
    }
}

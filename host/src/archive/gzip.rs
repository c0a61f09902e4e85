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

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

use super::isal::IsalDeflater;

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

/// An [`io::Write`] that gzips what is written to it on `threads` worker threads into one
/// single-member gzip stream on `W`.
///
/// Input is gathered into [`BLOCK_SIZE`] blocks; each full block goes to the workers, and
/// finished blocks are written to `W` in order from the calling thread, during later calls to
/// `write`. At most `2 × threads` blocks are in flight, so memory stays flat whatever the input
/// size. Call [`finish`](Self::finish) to write the last block and the trailer; dropping the
/// writer without it stops the workers and leaves `W` with an incomplete stream. After an error
/// every later call fails.
pub struct ParallelGzWriter<W: Write + Send> {
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

impl<W: Write + Send> ParallelGzWriter<W> {
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
        self.inner.write_all(&done.output)?;
        let len = done.input.len() as u64;
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(done.crc, len));
        self.len += len;
        done.input.clear();
        self.spare_inputs.push(done.input);
        self.spare_outputs.push(done.output);
        Ok(())
    }
}

impl<W: Write + Send> Write for ParallelGzWriter<W> {
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

/// One block for a worker: `output` is a spare buffer to compress into.
struct Job {
    input: Vec<u8>,
    output: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

/// A compressed block: its buffers come back for reuse.
struct Done {
    input: Vec<u8>,
    output: Vec<u8>,
    crc: u32,
}

/// Worker threads taking jobs from one shared queue; dropping it stops and joins them.
struct Pool {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(level: Level, threads: usize) -> io::Result<Pool> {
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

    fn submit(&self, job: Job) -> io::Result<()> {
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

/// A worker's compressors, and what makes libdeflate's streams concatenable.
struct Deflater {
    /// ISA-L, for `best_speed`; libdeflate for every other level.
    fast: Option<IsalDeflater>,
    compressor: Compressor,
    /// Level 1, for sampling blocks; `None` at level 0.
    probe: Option<Compressor>,
    /// Level 0, for blocks the samples say deflate cannot shrink.
    store: Compressor,
    scratch: Vec<u8>,
    unfinalizer: Unfinalizer,
}

/// Samples taken from a block, evenly spaced from its start, to decide whether to deflate it.
const SAMPLES: usize = 8;
/// Bytes per sample: enough for deflate to shrink any compressible data at all.
const SAMPLE_SIZE: usize = 4096;

impl Deflater {
    fn new(level: Level) -> Deflater {
        let compressor =
            |n: u8| Compressor::new(CompressionLvl::new(i32::from(n)).expect("at most 12"));
        Deflater {
            fast: (level == Level::BEST_SPEED).then(IsalDeflater::new),
            compressor: compressor(level.get()),
            probe: (level != Level::NONE).then(|| compressor(1)),
            store: compressor(0),
            scratch: vec![0; SAMPLE_SIZE - 1],
            unfinalizer: Unfinalizer::new(),
        }
    }

    /// Whether deflate shrinks none of the block's samples (at level 1, its fastest): then the
    /// block is most likely already compressed (jar, zip, png, ogg, encrypted) and is stored.
    /// Deflating such data takes 15 to 50 times as long as this and saves nothing.
    /// A compressible block costs one sample, as the first one to shrink settles it.
    fn incompressible(&mut self, input: &[u8]) -> bool {
        let Some(probe) = self.probe.as_mut() else {
            return false;
        };
        let step = input.len() / SAMPLES;
        step >= SAMPLE_SIZE
            && (0..SAMPLES).all(|i| {
                // Not shrunk: the output does not fit in fewer bytes than the sample.
                let sample = &input[i * step..i * step + SAMPLE_SIZE];
                probe.deflate_compress(sample, &mut self.scratch).is_err()
            })
    }

    /// Raw-deflates `input` into `output`: a final stream if `last`, else one that ends
    /// byte-aligned on an empty stored block, ready for the next block's stream to follow.
    fn deflate(&mut self, input: &[u8], output: &mut Vec<u8>, last: bool) -> io::Result<()> {
        let incompressible = self.incompressible(input);
        if let (Some(fast), false) = (self.fast.as_mut(), incompressible) {
            return fast.deflate(input, output, last);
        }
        let compressor = if incompressible {
            &mut self.store
        } else {
            &mut self.compressor
        };
        output.resize(compressor.deflate_compress_bound(input.len()), 0);
        let n = compressor
            .deflate_compress(input, output)
            .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        output.truncate(n);
        if !last {
            self.unfinalizer.unfinalize(output)?;
        }
        Ok(())
    }
}

fn corrupt() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "libdeflate wrote an invalid deflate stream",
    )
}

/// Bits of a Huffman code looked up in one step; longer codes (rare) are decoded bit by bit.
const FAST_BITS: u32 = 11;
/// A fast-table entry for a code longer than [`FAST_BITS`] or not in the code at all.
const SLOW: u16 = u16::MAX;
const FAST_MASK: usize = (1 << FAST_BITS) - 1;
/// Extra bits after each valid literal/length symbol (RFC 1951 3.2.5): 0 for literals.
const LENGTH_EXTRA: [u8; 286] = {
    let mut extra = [0; 286];
    let mut sym = 265;
    while sym < 285 {
        extra[sym] = ((sym - 261) / 4) as u8;
        sym += 1;
    }
    extra
};
/// Extra bits after each valid distance symbol.
const DIST_EXTRA: [u8; 30] = {
    let mut extra = [0; 30];
    let mut sym = 4;
    while sym < 30 {
        extra[sym] = (sym / 2 - 1) as u8;
        sym += 1;
    }
    extra
};
/// The order in which code length code lengths are sent.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Turns libdeflate's complete raw deflate stream into one that another stream can follow.
///
/// It walks the stream's blocks without producing output (only code lengths matter, so each
/// symbol's extra bits are folded into its table entry), clears the final block's BFINAL bit,
/// and appends an empty stored block (`000` + alignment + `00 00 ff ff`) right after the bit
/// where the stream ends.
struct Unfinalizer {
    fixed_litlen: Huffman,
    fixed_dist: Huffman,
    litlen: Huffman,
    dist: Huffman,
    code_lengths: Huffman,
}

impl Unfinalizer {
    fn new() -> Unfinalizer {
        let mut lengths = [8; 288];
        lengths[144..256].fill(9);
        lengths[256..280].fill(7);
        let mut fixed_litlen = Huffman::new();
        let mut fixed_dist = Huffman::new();
        fixed_litlen
            .build(&lengths, &LENGTH_EXTRA)
            .expect("the fixed literal/length code is valid");
        fixed_litlen.chain_literals();
        fixed_dist
            .build(&[5; 32], &DIST_EXTRA)
            .expect("the fixed distance code is valid");
        Unfinalizer {
            fixed_litlen,
            fixed_dist,
            litlen: Huffman::new(),
            dist: Huffman::new(),
            code_lengths: Huffman::new(),
        }
    }

    fn unfinalize(&mut self, stream: &mut Vec<u8>) -> io::Result<()> {
        let (final_header, end) = self.walk(stream)?;
        if end.div_ceil(8) != stream.len() {
            return Err(corrupt());
        }
        stream[final_header / 8] &= !(1 << (final_header % 8));
        // The bits after `end` in its byte are zero: if at least 3 are left they hold the stored
        // block's header, else it takes a new zero byte; either way alignment follows.
        let used = end % 8;
        if used == 0 || used > 5 {
            stream.push(0);
        }
        stream.extend_from_slice(&[0, 0, 0xff, 0xff]);
        Ok(())
    }

    /// Returns the bit positions of the final block's header and of the stream's end.
    fn walk(&mut self, stream: &[u8]) -> io::Result<(usize, usize)> {
        let mut bits = Bits::new(stream);
        loop {
            bits.refill()?;
            let header = bits.position();
            let last = bits.take(1) == 1;
            match bits.take(2) {
                0 => bits.skip_stored()?,
                1 => symbols(&mut bits, &self.fixed_litlen, &self.fixed_dist)?,
                2 => {
                    self.read_dynamic_codes(&mut bits)?;
                    symbols(&mut bits, &self.litlen, &self.dist)?;
                }
                _ => return Err(corrupt()),
            }
            if last {
                return Ok((header, bits.position()));
            }
        }
    }

    fn read_dynamic_codes(&mut self, bits: &mut Bits) -> io::Result<()> {
        let litlens = bits.take(5) as usize + 257;
        let dists = bits.take(5) as usize + 1;
        let code_length_codes = bits.take(4) as usize + 4;
        let mut lengths = [0u8; 288 + 32];
        for &sym in &CODE_LENGTH_ORDER[..code_length_codes] {
            bits.refill()?;
            lengths[sym] = bits.take(3) as u8;
        }
        self.code_lengths.build(&lengths[..19], &[0; 19])?;
        lengths[..19].fill(0);
        let total = litlens + dists;
        let mut i = 0;
        while i < total {
            bits.refill()?;
            let entry = self.code_lengths.decode(bits.peek())?;
            bits.take(u32::from(entry & 31));
            let sym = entry >> 5;
            let (value, repeat) = match sym {
                0..=15 => (sym as u8, 1),
                16 if i > 0 => (lengths[i - 1], 3 + bits.take(2) as usize),
                17 => (0, 3 + bits.take(3) as usize),
                18 => (0, 11 + bits.take(7) as usize),
                _ => return Err(corrupt()),
            };
            if i + repeat > total {
                return Err(corrupt());
            }
            lengths[i..i + repeat].fill(value);
            i += repeat;
        }
        if lengths[256] == 0 {
            return Err(corrupt());
        }
        self.litlen.build(&lengths[..litlens], &LENGTH_EXTRA)?;
        self.litlen.chain_literals();
        self.dist.build(&lengths[litlens..total], &DIST_EXTRA)
    }
}

/// Skips one Huffman-coded block's symbols, up to and including end-of-block.
fn symbols(bits: &mut Bits, litlen: &Huffman, dist: &Huffman) -> io::Result<()> {
    // A local copy stays in registers in this, the hot loop.
    let mut local = *bits;
    let result = skip_symbols(&mut local, litlen, dist);
    *bits = local;
    result
}

#[inline(always)]
fn skip_symbols(bits: &mut Bits, litlen: &Huffman, dist: &Huffman) -> io::Result<()> {
    loop {
        // A literal/length code takes at most 15 + 5 bits, a distance code 15 + 13.
        if bits.count < 20 {
            bits.refill()?;
        }
        let entry = litlen.decode(bits.peek())?;
        bits.take(u32::from(entry & 31));
        match entry >> 5 {
            0..=255 => {}
            256 => return Ok(()),
            _ => {
                if bits.count < 28 {
                    bits.refill()?;
                }
                let entry = dist.decode(bits.peek())?;
                bits.take(u32::from(entry & 31));
            }
        }
    }
}

/// A canonical Huffman code for decoding, each symbol's extra bits added to its length.
///
/// Symbols are decoded as entries: `symbol << 5 | (code length + extra bits)`.
struct Huffman {
    /// The entry for the next [`FAST_BITS`] bits, or [`SLOW`].
    fast: Box<[u16; 1 << FAST_BITS]>,
    /// Number of codes of each length, and the symbols in canonical order, for long codes.
    counts: [u16; 16],
    symbols: [u16; 288],
    /// Extra bits of each valid symbol: symbols from `extra.len()` on are invalid.
    extra: [u8; 288],
    valid: usize,
}

impl Huffman {
    fn new() -> Huffman {
        Huffman {
            fast: Box::new([SLOW; 1 << FAST_BITS]),
            counts: [0; 16],
            symbols: [0; 288],
            extra: [0; 288],
            valid: 0,
        }
    }

    /// Builds the code from each symbol's code length (0: unused); incomplete codes are
    /// allowed (their missing codes fail to decode), over-subscribed ones are not. `extra`
    /// holds each valid symbol's extra bits.
    fn build(&mut self, lengths: &[u8], extra: &[u8]) -> io::Result<()> {
        self.counts = [0; 16];
        for &len in lengths {
            self.counts[usize::from(len)] += 1;
        }
        self.counts[0] = 0;
        let mut left = 1i32;
        let mut offsets = [0u16; 16];
        for len in 1..16 {
            left = (left << 1) - i32::from(self.counts[len]);
            if left < 0 {
                return Err(corrupt());
            }
            if len < 15 {
                offsets[len + 1] = offsets[len] + self.counts[len];
            }
        }
        for (sym, &len) in lengths.iter().enumerate() {
            if len != 0 {
                self.symbols[usize::from(offsets[usize::from(len)])] = sym as u16;
                offsets[usize::from(len)] += 1;
            }
        }
        self.extra[..extra.len()].copy_from_slice(extra);
        self.valid = extra.len();
        self.fast.fill(SLOW);
        let mut code = 0u32;
        let mut index = 0;
        for len in 1..=FAST_BITS {
            for _ in 0..self.counts[len as usize] {
                let sym = self.symbols[index];
                index += 1;
                let this = code;
                code += 1;
                if usize::from(sym) >= self.valid {
                    continue;
                }
                let entry = sym << 5 | (len as u16 + u16::from(self.extra[usize::from(sym)]));
                // Codes are sent most significant bit first; the table is indexed LSB first.
                let mut i = (this.reverse_bits() >> (32 - len)) as usize;
                while i < self.fast.len() {
                    self.fast[i] = entry;
                    i += 1 << len;
                }
            }
            code <<= 1;
        }
        Ok(())
    }

    /// Makes each literal's fast entry also cover the symbols after it that fit in the rest of
    /// its [`FAST_BITS`]: one lookup then skips a run of literals (and a length or end-of-block
    /// after it), the entry keeping the run's last symbol. For the literal/length code only.
    fn chain_literals(&mut self) {
        let single = *self.fast;
        for i in 0..single.len() {
            let first = single[i];
            if first == SLOW || first >> 5 > 255 {
                continue;
            }
            let used = first & 31;
            let rest = FAST_BITS as u16 - used;
            // Entries below i are chained already; the next bits index the table zero-extended,
            // so an entry is right for them only if it takes no more than the bits known.
            let next = i >> used;
            for entry in [self.fast[next], single[next]] {
                if entry != SLOW && entry & 31 <= rest {
                    self.fast[i] = (entry & !31) | (used + (entry & 31));
                    break;
                }
            }
        }
    }

    /// Decodes the symbol at the start of `bits` into its entry.
    #[inline]
    fn decode(&self, bits: u64) -> io::Result<u16> {
        match self.fast[bits as usize & FAST_MASK] {
            SLOW => self.decode_slow(bits),
            entry => Ok(entry),
        }
    }

    #[cold]
    #[inline(never)]
    fn decode_slow(&self, bits: u64) -> io::Result<u16> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= ((bits >> (len - 1)) & 1) as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                let sym = self.symbols[(index + code - first) as usize];
                if usize::from(sym) >= self.valid {
                    break;
                }
                return Ok(sym << 5 | (len as u16 + u16::from(self.extra[usize::from(sym)])));
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(corrupt())
    }
}

/// An LSB-first bit reader; past the end of the data it reads zeros, at most a few bytes' worth.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    /// Index of the next byte to load into `buf`.
    next: usize,
    buf: u64,
    /// Valid bits in `buf`; any bits above them are copies of the bytes from `next` on.
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            next: 0,
            buf: 0,
            count: 0,
        }
    }

    /// Bits consumed so far.
    fn position(&self) -> usize {
        self.next * 8 - self.count as usize
    }

    /// Loads bytes until at least 56 bits are valid.
    #[inline]
    fn refill(&mut self) -> io::Result<()> {
        if let Some(word) = self.data.get(self.next..self.next + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            self.buf |= word << self.count;
            self.next += (63 - self.count as usize) / 8;
            self.count |= 56;
        } else {
            // By value, so that the hot loop's copy need not live in memory.
            *self = self.refill_slow()?;
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn refill_slow(mut self) -> io::Result<Self> {
        // A valid stream ends before the zeros past its end are consumed.
        if self.position() > self.data.len() * 8 {
            return Err(corrupt());
        }
        self.buf &= (1 << self.count) - 1;
        while self.count <= 56 {
            let byte = self.data.get(self.next).copied().unwrap_or(0);
            self.buf |= u64::from(byte) << self.count;
            self.next += 1;
            self.count += 8;
        }
        Ok(self)
    }

    #[inline]
    fn peek(&self) -> u64 {
        self.buf
    }

    /// Consumes `n` bits (at most `count`) and returns them.
    #[inline]
    fn take(&mut self, n: u32) -> u32 {
        let value = (self.buf & ((1 << n) - 1)) as u32;
        self.buf >>= n;
        self.count -= n;
        value
    }

    /// Skips a stored block's body, its header's 3 bits already taken.
    fn skip_stored(&mut self) -> io::Result<()> {
        let start = self.position().div_ceil(8);
        let Some(&[l0, l1, n0, n1]) = self.data.get(start..start + 4) else {
            return Err(corrupt());
        };
        let len = u16::from_le_bytes([l0, l1]);
        if len != !u16::from_le_bytes([n0, n1]) {
            return Err(corrupt());
        }
        let end = start + 4 + usize::from(len);
        if end > self.data.len() {
            return Err(corrupt());
        }
        self.next = end;
        self.buf = 0;
        self.count = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;
    use std::process::{Command, Stdio};

    const THREADS: [usize; 3] = [1, 2, 4];
    const NAMED: [Level; 3] = [Level::NONE, Level::BEST_SPEED, Level::BEST_COMPRESSION];

    /// Xorshift64 bytes: incompressible.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
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
    fn mixed_bytes(len: usize) -> Vec<u8> {
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

    #[test]
    fn stored_fallback_spots_only_incompressible_blocks() {
        let mut deflater = Deflater::new(Level::BEST_SPEED);
        let random = random_bytes(5, BLOCK_SIZE);
        assert!(deflater.incompressible(&random));
        assert!(!deflater.incompressible(&mixed_bytes(BLOCK_SIZE)));
        assert!(!deflater.incompressible(&random[..SAMPLES * SAMPLE_SIZE - 1]));
        let mut tail_text = random.clone();
        tail_text[BLOCK_SIZE - 140_000..].copy_from_slice(&mixed_bytes(140_000));
        assert!(!deflater.incompressible(&tail_text));
        assert!(!Deflater::new(Level::NONE).incompressible(&random));
    }

    #[test]
    fn unfinalizer_rejects_garbage() {
        let mut unfinalizer = Unfinalizer::new();
        for bad in [
            &[][..],
            &[0x07],
            &[0x01, 0x05, 0x00, 0xfa, 0xff],
            &[0xff; 16],
        ] {
            assert!(
                unfinalizer.unfinalize(&mut bad.to_vec()).is_err(),
                "{bad:?}"
            );
        }
    }
}

//! What the cases share: deterministic test data that can be checked as it streams by,
//! backup ids of the shape the host sends, the process's resident memory, and error text.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use sha1::{Digest, Sha1};

use crate::error::{AdapterError, ErrorKind};
use crate::host::{LoadedAdapter, SourceHandle};
use crate::types::StoredBackup;

/// Test data is made and checked in chunks of this size, which is also the size of each
/// write (the host writes about 1 MiB at a time).
pub(super) const CHUNK: usize = 1 << 20;

/// Incompressible-looking bytes that are a pure function of a seed and a position, so that
/// a GiB can be written and checked without being held.
#[derive(Clone, Copy)]
pub(super) struct Pattern {
    /// What makes this backup's bytes differ from another's.
    pub seed: u64,
}

impl Pattern {
    /// Fills `buf` with the start of chunk `index` (xorshift64 from the seed and index).
    pub fn fill(self, index: u64, buf: &mut [u8]) {
        let mut state = (self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        for word in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
    }

    /// The first `len` bytes of the pattern.
    pub fn bytes(self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        for (index, chunk) in out.chunks_mut(CHUNK).enumerate() {
            self.fill(index as u64, chunk);
        }
        out
    }
}

/// Checks a stream against a pattern as it arrives, holding one chunk.
pub(super) struct Verifier {
    pattern: Pattern,
    /// Bytes checked so far.
    pub position: u64,
    /// The chunk `position` falls in, and its index.
    chunk: Vec<u8>,
    chunk_index: Option<u64>,
}

impl Verifier {
    pub fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            position: 0,
            chunk: vec![0; CHUNK],
            chunk_index: None,
        }
    }

    /// Checks the next bytes; the error names the first offset that differs.
    pub fn check(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            let index = self.position / CHUNK as u64;
            if self.chunk_index != Some(index) {
                self.pattern.fill(index, &mut self.chunk);
                self.chunk_index = Some(index);
            }
            let within = (self.position % CHUNK as u64) as usize;
            let take = bytes.len().min(CHUNK - within);
            let expected = &self.chunk[within..within + take];
            // `==` first: a memcmp, fast even unoptimised; the byte only on a mismatch.
            if expected != &bytes[..take] {
                let at = expected.iter().zip(bytes).position(|(a, b)| a != b);
                return Err(format!(
                    "byte {} read back differs from the byte written",
                    self.position + at.unwrap_or(0) as u64
                ));
            }
            self.position += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }
}

/// A fresh backup id in the host's shape: a random version-4 UUID, lowercase and hyphenated.
pub(super) fn new_backup_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        *half = hasher.finish();
    }
    let bits = (u128::from(halves[0]) << 64 | u128::from(halves[1])) & !(0xF << 76) & !(0x3 << 62)
        | (0x4 << 76)
        | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// SHA-1 of `bytes`, as the hex the host passes to `finish`.
pub(super) fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

/// Lowercase hex of a digest.
pub(super) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A streaming SHA-1, for data too big to hold.
pub(super) type StreamHash = Sha1;

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`).
pub(super) fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_string())
}

/// An error as a case reports it: its message and kind.
pub(super) fn describe(err: &AdapterError) -> String {
    format!("{:?} ({})", err.message.as_str(), err.kind.name())
}

/// Passes when `result` is an error of `kind`.
pub(super) fn expect_kind<T>(
    result: Result<T, AdapterError>,
    kind: ErrorKind,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(err) if err.kind == kind => Ok(()),
        Err(err) => Err(format!(
            "{what}: wanted an error of kind {}, got {}",
            kind.name(),
            describe(&err)
        )),
        Ok(_) => Err(format!(
            "{what}: succeeded, wanted an error of kind {}",
            kind.name()
        )),
    }
}

/// Writes `data` as the host would (a 1-byte write, an odd-sized one, then 1 MiB ones) and
/// finishes with its SHA-1 and size; checks the size `finish` reports.
pub(super) fn store(
    adapter: &LoadedAdapter,
    server: &str,
    backup: &str,
    data: &[u8],
) -> Result<StoredBackup, String> {
    let mut sink = adapter
        .begin_backup(server, backup)
        .map_err(|e| format!("begin_backup: {}", describe(&e)))?;
    for piece in pieces(data) {
        sink.write(piece)
            .map_err(|e| format!("write: {}", describe(&e)))?;
    }
    let stored = sink
        .finish(&sha1_hex(data), data.len() as u64)
        .map_err(|e| format!("finish: {}", describe(&e)))?;
    if stored.size != data.len() as u64 {
        return Err(format!(
            "finish reports {} bytes stored, {} were written",
            stored.size,
            data.len()
        ));
    }
    Ok(stored)
}

/// `data` cut as the host might write it: 1 byte, 4095 bytes, then [`CHUNK`]s.
pub(super) fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for first in [1, 4095] {
        let (piece, tail) = rest.split_at(first.min(rest.len()));
        if !piece.is_empty() {
            out.push(piece);
        }
        rest = tail;
    }
    out.extend(rest.chunks(CHUNK));
    out
}

/// Reads a source to its end, refusing to read more than `limit` bytes.
pub(super) fn read_to_end(mut source: SourceHandle, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = source
            .read(&mut buf)
            .map_err(|e| format!("read after {} bytes: {e}", out.len()))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limit {
            return Err(format!("read more than the {limit} bytes stored"));
        }
    }
}

/// Opens `backup` at `offset` and reads it to its end.
pub(super) fn read_back(
    adapter: &LoadedAdapter,
    server: &str,
    backup: &str,
    offset: u64,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let source = adapter
        .open(server, backup, offset)
        .map_err(|e| format!("open at {offset}: {}", describe(&e)))?;
    read_to_end(source, limit)
}

/// Compares what was read with what was expected; the error names the first difference.
pub(super) fn same(what: &str, read: &[u8], expected: &[u8]) -> Result<(), String> {
    if read.len() != expected.len() {
        return Err(format!(
            "{what}: read {} bytes, expected {}",
            read.len(),
            expected.len()
        ));
    }
    if read == expected {
        return Ok(());
    }
    let at = read.iter().zip(expected).position(|(a, b)| a != b);
    Err(format!(
        "{what}: byte {} differs from the byte written",
        at.unwrap_or(0)
    ))
}

/// A panic payload as text.
pub(super) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_have_the_host_shape_and_differ() {
        let a = new_backup_id();
        let b = new_backup_id();
        assert_ne!(a, b);
        for id in [a, b] {
            crate::helpers::backup_segment(&id).unwrap();
            assert_eq!(&id[14..15], "4", "{id}");
        }
    }

    #[test]
    fn the_verifier_finds_the_first_wrong_byte_across_chunks() {
        let pattern = Pattern { seed: 7 };
        let mut data = pattern.bytes(2 * CHUNK + 10);
        let mut verifier = Verifier::new(pattern);
        verifier.check(&data[..CHUNK - 3]).unwrap();
        verifier.check(&data[CHUNK - 3..CHUNK + 5]).unwrap();
        data[CHUNK + 7] ^= 1;
        let err = verifier.check(&data[CHUNK + 5..]).unwrap_err();
        assert!(err.contains(&format!("byte {}", CHUNK + 7)), "{err}");
    }
}

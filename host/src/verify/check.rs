//! Checking one stored archive as it streams back from storage: SHA-1 and byte count of
//! the bytes read, against what was recorded, and a gunzip and tar walk of every entry, so
//! that a flipped bit, a cut-off file or a broken stream is found without unpacking anything.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::rate_limit::RateLimiter;
use crate::restore::extract::tar_stream::{StreamError, TarReader};
use crate::tasks::CancellationToken;

/// What the archive should be, as recorded when it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Its SHA-1 (hex), from the registry or the storage's own record; `None` when neither
    /// holds one.
    pub sha1: Option<String>,
    /// Its size in bytes, when recorded.
    pub size: Option<u64>,
}

/// How a verification came out: the body of `result` in the API and in the
/// `backup verify completed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The archive is whole and sound: the checksum and size match and every entry reads.
    pub ok: bool,
    /// The SHA-1 of the bytes read equals the recorded one.
    pub checksum_matches: bool,
    /// Tar entries walked (as `tar -t` lists them), up to a failure if any.
    pub entries: u64,
    /// Archive (compressed) bytes read from storage.
    pub bytes: u64,
    /// What is wrong, in words for an operator; `None` when `ok`.
    pub error: Option<String>,
}

impl Verdict {
    /// The verdict when the archive could not even be opened.
    pub fn unreadable(error: String) -> Self {
        Self {
            ok: false,
            checksum_matches: false,
            entries: 0,
            bytes: 0,
            error: Some(error),
        }
    }
}

/// The verification was cancelled (the daemon is stopping); nothing is concluded.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// Reads `source` (a stored archive from its first byte) to its end and judges it against
/// `expected`, at most `read_limit` bytes per second if set, calling `on_read` with the
/// bytes read so far after each read; stops with [`Cancelled`] once `cancel` is.
pub fn check_archive(
    source: impl Read,
    expected: &Expected,
    read_limit: Option<u64>,
    on_read: &mut dyn FnMut(u64),
    cancel: &CancellationToken,
) -> Result<Verdict, Cancelled> {
    let mut tap = Tap {
        inner: source,
        sha1: Sha1::new(),
        bytes: 0,
        limiter: read_limit.map(RateLimiter::new),
        cancel,
        on_read,
        storage_error: None,
    };
    let mut entries = 0;
    let walked = walk(&mut tap, &mut entries);
    // Whatever the walk found, the rest of the stored bytes are read too: the checksum and
    // the size are about the whole object.
    let drained = match tap.storage_error {
        None => io::copy(&mut tap, &mut io::sink()).map(drop),
        Some(_) => Ok(()),
    };
    if cancel.is_cancelled() {
        return Err(Cancelled);
    }
    let sha1 = hex::encode(tap.sha1.finalize());
    let mut problems = Vec::new();
    if let Some(storage) = &tap.storage_error {
        problems.push(format!(
            "storage failed while reading the archive after {} bytes: {storage}",
            tap.bytes
        ));
    } else if let Err(err) = &walked {
        problems.push(err.clone());
    } else if let Err(err) = drained {
        problems.push(format!("reading the archive failed: {err}"));
    }
    let size_matches = expected.size.is_none_or(|size| size == tap.bytes);
    if let Some(size) = expected.size.filter(|_| !size_matches) {
        let short = if tap.bytes < size {
            " (it is cut short)"
        } else {
            ""
        };
        problems.push(format!(
            "the stored archive is {} bytes, but {size} were recorded{short}",
            tap.bytes
        ));
    }
    let checksum_matches = match &expected.sha1 {
        Some(recorded) if recorded.eq_ignore_ascii_case(&sha1) => true,
        Some(recorded) => {
            problems.push(format!(
                "its SHA-1 is {sha1}, but {recorded} was recorded: the stored bytes changed"
            ));
            false
        }
        None => {
            problems.push(
                "no SHA-1 was recorded for it (neither in the registry nor by its storage), \
                 so its content cannot be proved unchanged"
                    .to_string(),
            );
            false
        }
    };
    let ok = problems.is_empty();
    debug_assert!(!ok || (checksum_matches && size_matches));
    Ok(Verdict {
        ok,
        checksum_matches,
        entries,
        bytes: tap.bytes,
        error: (!ok).then(|| problems.join("; ")),
    })
}

/// Gunzips the archive and walks every tar entry (their data read and dropped), then reads
/// the gzip stream to its end so that every member's CRC and length are checked; counts
/// entries into `entries`. The error is a sentence about the archive.
fn walk<R: Read>(tap: &mut Tap<'_, R>, entries: &mut u64) -> Result<(), String> {
    let mut archive = TarReader::new(MultiGzDecoder::new(tap));
    loop {
        match archive.next_entry() {
            Ok(Some(_)) => *entries += 1,
            Ok(None) => break,
            Err(StreamError::Io(err)) => return Err(described(&err, *entries)),
            Err(StreamError::Oversized { what, size, limit }) => {
                return Err(format!(
                    "the archive is corrupt: entry {} has a {what} of {size}, over the \
                     limit of {limit}",
                    *entries + 1
                ))
            }
        }
    }
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map(drop)
        .map_err(|err| described(&err, *entries))
}

/// An error of the gzip or tar layer, after `entries` whole entries, in an operator's words.
fn described(err: &io::Error, entries: u64) -> String {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        format!(
            "the archive is truncated: its gzip or tar stream ends early, after {entries} \
             entries"
        )
    } else {
        format!("the archive is corrupt after {entries} entries: {err}")
    }
}

/// The raw archive as it is read: hashed, counted, held to the read limit and reported;
/// a storage error is kept aside so that it is not mistaken for a corrupt archive.
struct Tap<'a, R> {
    inner: R,
    sha1: Sha1,
    bytes: u64,
    limiter: Option<RateLimiter>,
    cancel: &'a CancellationToken,
    on_read: &'a mut dyn FnMut(u64),
    /// The storage's own error, when reading from it failed.
    storage_error: Option<String>,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: readers would retry that forever.
            return Err(io::Error::other("cancelled"));
        }
        let read = match self.inner.read(buf) {
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Err(err),
            Err(err) => {
                self.storage_error = Some(err.to_string());
                return Err(err);
            }
        };
        if let Some(limiter) = &mut self.limiter {
            limiter.take(read);
        }
        self.sha1.update(&buf[..read]);
        self.bytes += read as u64;
        (self.on_read)(self.bytes);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzipped tar of `files` small files (GNU format, as backups are).
    fn archive(files: usize) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for i in 0..files {
            let data = format!("file {i}\n").repeat(100);
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("dir/file-{i}.txt"), data.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn expected(bytes: &[u8]) -> Expected {
        Expected {
            sha1: Some(hex::encode(Sha1::digest(bytes))),
            size: Some(bytes.len() as u64),
        }
    }

    fn check(bytes: &[u8], expected: &Expected) -> Verdict {
        check_archive(
            bytes,
            expected,
            None,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .unwrap()
    }

    #[test]
    fn a_sound_archive_is_ok_with_its_entries_and_bytes() {
        let bytes = archive(5);
        let verdict = check(&bytes, &expected(&bytes));
        assert_eq!(
            verdict,
            Verdict {
                ok: true,
                checksum_matches: true,
                entries: 5,
                bytes: bytes.len() as u64,
                error: None,
            }
        );
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum_and_the_stream() {
        let good = archive(5);
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x40;
        let verdict = check(&bad, &expected(&good));
        assert!(!verdict.ok && !verdict.checksum_matches, "{verdict:?}");
        assert_eq!(verdict.bytes, good.len() as u64);
        let error = verdict.error.unwrap();
        assert!(error.contains("the archive is corrupt"), "{error}");
        assert!(error.contains("the stored bytes changed"), "{error}");
    }

    #[test]
    fn a_truncated_archive_says_so() {
        let good = archive(5);
        let cut = &good[..good.len() / 2];
        let verdict = check(cut, &expected(&good));
        assert!(!verdict.ok && !verdict.checksum_matches, "{verdict:?}");
        let error = verdict.error.unwrap();
        assert!(error.starts_with("the archive is truncated"), "{error}");
        assert!(error.contains("(it is cut short)"), "{error}");
    }

    #[test]
    fn without_a_recorded_checksum_nothing_is_ok() {
        let bytes = archive(1);
        let verdict = check(
            &bytes,
            &Expected {
                sha1: None,
                size: None,
            },
        );
        assert!(!verdict.ok && !verdict.checksum_matches);
        assert_eq!(verdict.entries, 1);
        assert!(verdict.error.unwrap().contains("no SHA-1 was recorded"));
    }

    #[test]
    fn a_storage_error_is_not_called_corruption() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("bucket gone"))
            }
        }
        let verdict = check_archive(
            Failing,
            &Expected::default(),
            None,
            &mut |_| {},
            &CancellationToken::new(),
        )
        .unwrap();
        let error = verdict.error.unwrap();
        assert!(
            error
                .starts_with("storage failed while reading the archive after 0 bytes: bucket gone"),
            "{error}"
        );
    }

    #[test]
    fn a_cancelled_check_concludes_nothing() {
        let bytes = archive(1);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = check_archive(&bytes[..], &expected(&bytes), None, &mut |_| {}, &cancel);
        assert_eq!(outcome, Err(Cancelled));
    }
}

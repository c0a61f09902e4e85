//! A tar reader that bounds what an archive can make it hold: GNU long names and PAX
//! headers are checked against a limit before they are read, sparse maps are counted, file
//! data is handed out as a stream. The `tar` crate's reader reads long names and PAX
//! headers whole whatever their size (a 256 MB name from a 254 KiB archive); its header
//! type still parses each 512-byte block here.
//!
//! Understood: ustar, GNU (long names `L`, long link names `K`, sparse files `S` with their
//! extension blocks) and PAX (local `x` records `path`, `linkpath`, `size`, `mtime` and the
//! GNU sparse formats 0.0, 0.1 and 1.0; global `g` headers are skipped unread).

use std::io::{self, ErrorKind, Read};

use super::Mtime;

/// Longest entry name or link target accepted, in bytes (GNU tar's long-name blocks count
/// their NUL): the limit the backup walk keeps to, so every archive aerie writes restores.
/// Longer than `PATH_MAX` on purpose: entries are created relative to directory descriptors.
pub(super) const MAX_NAME_BYTES: u64 = crate::archive::MAX_ENTRY_PATH_BYTES as u64;

/// Largest PAX extended header accepted, in bytes: a name and a link of `MAX_NAME_BYTES`
/// each, times and a GNU sparse map of a few thousand extents fit.
pub(super) const MAX_PAX_BYTES: u64 = 4 * MAX_NAME_BYTES;

/// Most extents accepted in one sparse file's map (16 bytes each in memory: 1 MiB). GNU tar
/// writes one per data region; a game server's files have a handful.
pub(super) const MAX_SPARSE_EXTENTS: usize = 64 * 1024;

/// Longest decimal number in a PAX sparse map (`u64::MAX` has 20 digits).
const MAX_DIGITS: usize = 20;

/// A tar block.
const BLOCK: u64 = 512;

/// Why the stream could not give the next entry.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Reading failed, or the archive is malformed.
    Io(io::Error),
    /// A long name, PAX header or sparse map is over its limit.
    Oversized {
        /// What: `name`, `link target`, `PAX header`, `sparse map`.
        what: &'static str,
        /// Its size (bytes, or extents for a sparse map), or at least this much.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl From<io::Error> for StreamError {
    fn from(err: io::Error) -> Self {
        StreamError::Io(err)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.into())
}

/// Where a sparse file's data goes: `length` bytes of the archive's data at `offset` in the
/// file; the rest of the file is holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub offset: u64,
    pub length: u64,
}

/// A sparse file's layout.
#[derive(Debug)]
pub(crate) struct Sparse {
    /// Its data regions, in order, not overlapping.
    pub extents: Vec<Extent>,
    /// Its length, holes included.
    pub real_size: u64,
}

/// One entry: its header and what the extension headers before it said.
pub(crate) struct Entry {
    /// Its own header block (type, mode, mtime).
    pub header: tar::Header,
    /// Its path as the archive has it (at most `MAX_NAME_BYTES`).
    pub path: Vec<u8>,
    /// Its link target, for links (at most `MAX_NAME_BYTES`).
    pub link: Option<Vec<u8>>,
    /// Bytes of data that follow in the archive (a sparse file's data regions, end to end).
    pub size: u64,
    /// The PAX `mtime`, with nanoseconds, when there is a readable one.
    pub pax_mtime: Option<Mtime>,
    /// The layout of a file the archive marks sparse.
    pub sparse: Option<Sparse>,
}

/// What PAX records said about the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<Mtime>,
    sparse_name: Option<Vec<u8>>,
    /// GNU.sparse.size (0.x) or GNU.sparse.realsize (1.0).
    sparse_real_size: Option<u64>,
    /// GNU.sparse.major = 1: the map leads the entry's data.
    sparse_map_in_data: bool,
    /// The 0.0 and 0.1 formats' maps.
    sparse_extents: Vec<Extent>,
    /// A 0.0 `GNU.sparse.offset` waiting for its `numbytes`.
    sparse_offset: Option<u64>,
}

/// Reads entries off a tar stream, one at a time.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Data of the current entry not read yet.
    unread: u64,
    /// Padding after it, to the next block.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            unread: 0,
            padding: 0,
        }
    }

    /// The stream after the end-of-archive block.
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// The current entry's data (a sparse file's regions end to end); what is left unread
    /// is skipped by the next [`Self::next_entry`].
    pub(super) fn data(&mut self) -> EntryData<'_, R> {
        EntryData { reader: self }
    }

    /// The next entry, or `None` at the end of the archive (a zero block, or the end of the
    /// stream at a block boundary, as the `tar` crate and GNU tar accept).
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, StreamError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        let mut extensions = false;
        loop {
            self.skip_rest()?;
            let Some(header) = self.read_header()? else {
                if extensions {
                    return Err(invalid("the archive ends after an extension header").into());
                }
                return Ok(None);
            };
            let kind = header.entry_type();
            let size = header.entry_size()?;
            self.start_data(size)?;
            extensions = true;
            match kind.as_byte() {
                b'L' => long_name = Some(self.read_name(size, "name")?),
                b'K' => long_link = Some(self.read_name(size, "link target")?),
                b'x' => pax = self.read_pax(size)?,
                // Global records (comments, charset) change nothing a restore does.
                b'g' => {}
                _ => return self.entry(header, long_name, long_link, pax).map(Some),
            }
        }
    }

    /// Builds the entry of `header` with what came before it.
    fn entry(
        &mut self,
        header: tar::Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Pax,
    ) -> Result<Entry, StreamError> {
        if let Some(size) = pax.size {
            self.start_data(size)?;
        }
        let path = pax
            .sparse_name
            .or(pax.path)
            .or(long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = pax
            .link
            .or(long_link)
            .or_else(|| header.link_name_bytes().map(|link| link.into_owned()));
        let sparse = if header.entry_type().is_gnu_sparse() {
            Some(self.gnu_sparse_map(&header)?)
        } else if pax.sparse_map_in_data {
            let real_size = pax
                .sparse_real_size
                .ok_or_else(|| invalid("a PAX sparse file without GNU.sparse.realsize"))?;
            Some(self.sparse_map_from_data(real_size)?)
        } else if let Some(real_size) = pax.sparse_real_size {
            Some(Sparse {
                extents: pax.sparse_extents,
                real_size,
            })
        } else {
            None
        };
        if let Some(sparse) = &sparse {
            check_sparse(sparse, self.unread)?;
        }
        Ok(Entry {
            header,
            path,
            link,
            size: self.unread,
            pax_mtime: pax.mtime,
            sparse,
        })
    }

    /// Reads one header block, `None` at the end of the archive.
    fn read_header(&mut self) -> io::Result<Option<tar::Header>> {
        let mut header = tar::Header::new_old();
        if !self.read_block(header.as_mut_bytes())? {
            return Ok(None);
        }
        if header.as_bytes().iter().all(|&byte| byte == 0) {
            return Ok(None);
        }
        let bytes = header.as_bytes();
        let sum = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .fold(8 * u32::from(b' '), |sum, &byte| sum + u32::from(byte));
        if sum != header.cksum()? {
            return Err(invalid("archive header checksum mismatch"));
        }
        Ok(Some(header))
    }

    /// Fills `block`; `false` if the stream ends before its first byte.
    fn read_block(&mut self, block: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(read) => filled += read,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Sets the current entry's data size (and its padding).
    fn start_data(&mut self, size: u64) -> io::Result<()> {
        let padded = size
            .checked_next_multiple_of(BLOCK)
            .ok_or_else(|| invalid("an entry size overflows"))?;
        self.unread = size;
        self.padding = padded - size;
        Ok(())
    }

    /// Reads the whole current data, of `size` bytes, known to be small.
    fn read_small(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; size as usize];
        self.data().read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// A GNU long name or link target, refused unread when over the limit.
    fn read_name(&mut self, size: u64, what: &'static str) -> Result<Vec<u8>, StreamError> {
        if size > MAX_NAME_BYTES {
            return Err(StreamError::Oversized {
                what,
                size,
                limit: MAX_NAME_BYTES,
            });
        }
        let mut name = self.read_small(size)?;
        if let Some(end) = name.iter().position(|&byte| byte == 0) {
            name.truncate(end);
        }
        Ok(name)
    }

    /// A PAX extended header's records, refused unread when over the limit.
    fn read_pax(&mut self, size: u64) -> Result<Pax, StreamError> {
        if size > MAX_PAX_BYTES {
            return Err(StreamError::Oversized {
                what: "PAX header",
                size,
                limit: MAX_PAX_BYTES,
            });
        }
        let records = self.read_small(size)?;
        let mut pax = Pax::default();
        let mut rest = &records[..];
        while !rest.is_empty() {
            let (key, value, after) = pax_record(rest)?;
            rest = after;
            pax.take(key, value)?;
        }
        Ok(pax)
    }

    /// The sparse map of a GNU `S` header and its extension blocks (which precede the data).
    fn gnu_sparse_map(&mut self, header: &tar::Header) -> Result<Sparse, StreamError> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| invalid("a sparse entry without a GNU header"))?;
        let mut extents = Vec::new();
        let mut add = |block: &tar::GnuSparseHeader| -> Result<(), StreamError> {
            if block.is_empty() {
                return Ok(());
            }
            if extents.len() == MAX_SPARSE_EXTENTS {
                return Err(StreamError::Oversized {
                    what: "sparse map",
                    size: MAX_SPARSE_EXTENTS as u64 + 1,
                    limit: MAX_SPARSE_EXTENTS as u64,
                });
            }
            extents.push(Extent {
                offset: block.offset()?,
                length: block.length()?,
            });
            Ok(())
        };
        for block in &gnu.sparse {
            add(block)?;
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = tar::GnuExtSparseHeader::new();
            if !self.read_block(ext.as_mut_bytes())? {
                return Err(invalid("the archive ends in a sparse map").into());
            }
            for block in ext.sparse() {
                add(block)?;
            }
            extended = ext.is_extended();
        }
        Ok(Sparse {
            extents,
            real_size: gnu.real_size()?,
        })
    }

    /// The sparse map of the PAX 1.0 format, at the start of the data: decimal numbers one
    /// a line (the count, then offset and length pairs), padded to a block.
    fn sparse_map_from_data(&mut self, real_size: u64) -> Result<Sparse, StreamError> {
        let before = self.unread;
        let count = self.map_number()?;
        if count > MAX_SPARSE_EXTENTS as u64 {
            return Err(StreamError::Oversized {
                what: "sparse map",
                size: count,
                limit: MAX_SPARSE_EXTENTS as u64,
            });
        }
        let mut extents = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = self.map_number()?;
            let length = self.map_number()?;
            extents.push(Extent { offset, length });
        }
        let used = before - self.unread;
        let padding = used.next_multiple_of(BLOCK) - used;
        if padding > self.unread {
            return Err(invalid("a PAX sparse map longer than its entry").into());
        }
        io::copy(&mut self.data().take(padding), &mut io::sink())?;
        Ok(Sparse { extents, real_size })
    }

    /// One decimal number and its newline, from the data.
    fn map_number(&mut self) -> io::Result<u64> {
        let mut digits = Vec::with_capacity(MAX_DIGITS);
        loop {
            let mut byte = [0];
            self.data().read_exact(&mut byte)?;
            match byte[0] {
                b'\n' => break,
                digit @ b'0'..=b'9' if digits.len() < MAX_DIGITS => digits.push(digit),
                _ => return Err(invalid("a malformed PAX sparse map")),
            }
        }
        parse_decimal(&digits).ok_or_else(|| invalid("a malformed PAX sparse map"))
    }

    /// Skips what is left of the current entry's data and its padding.
    fn skip_rest(&mut self) -> io::Result<()> {
        let rest = self.unread + self.padding;
        let skipped = io::copy(&mut (&mut self.inner).take(rest), &mut io::sink())?;
        if skipped < rest {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.unread = 0;
        self.padding = 0;
        Ok(())
    }
}

/// The current entry's data.
pub(super) struct EntryData<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reader = &mut *self.reader;
        let wanted = buf
            .len()
            .min(usize::try_from(reader.unread).unwrap_or(usize::MAX));
        if wanted == 0 {
            return Ok(0);
        }
        let read = reader.inner.read(&mut buf[..wanted])?;
        reader.unread -= read as u64;
        Ok(read)
    }
}

impl Pax {
    /// Takes in one record.
    fn take(&mut self, key: &[u8], value: &[u8]) -> Result<(), StreamError> {
        let number = || parse_decimal(value).ok_or_else(|| invalid("a malformed PAX number"));
        match key {
            b"path" => self.path = Some(pax_name(value, "name")?),
            b"linkpath" => self.link = Some(pax_name(value, "link target")?),
            b"GNU.sparse.name" => self.sparse_name = Some(pax_name(value, "name")?),
            b"size" => self.size = Some(number()?),
            b"mtime" => self.mtime = parse_pax_mtime(value),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => self.sparse_real_size = Some(number()?),
            b"GNU.sparse.major" => self.sparse_map_in_data = value == b"1",
            b"GNU.sparse.offset" => self.sparse_offset = Some(number()?),
            b"GNU.sparse.numbytes" => {
                let offset = self
                    .sparse_offset
                    .take()
                    .ok_or_else(|| invalid("GNU.sparse.numbytes without an offset"))?;
                self.sparse_extents.push(Extent {
                    offset,
                    length: number()?,
                });
            }
            b"GNU.sparse.map" => {
                let numbers = value
                    .split(|&byte| byte == b',')
                    .map(|number| {
                        parse_decimal(number).ok_or_else(|| invalid("a malformed GNU.sparse.map"))
                    })
                    .collect::<io::Result<Vec<u64>>>()?;
                if numbers.len() % 2 != 0 {
                    return Err(invalid("a malformed GNU.sparse.map").into());
                }
                self.sparse_extents = numbers
                    .chunks(2)
                    .map(|pair| Extent {
                        offset: pair[0],
                        length: pair[1],
                    })
                    .collect();
            }
            _ => {}
        }
        Ok(())
    }
}

/// A PAX name, refused when over the limit (a PAX header may hold more).
fn pax_name(value: &[u8], what: &'static str) -> Result<Vec<u8>, StreamError> {
    if value.len() as u64 >= MAX_NAME_BYTES {
        return Err(StreamError::Oversized {
            what,
            size: value.len() as u64,
            limit: MAX_NAME_BYTES,
        });
    }
    Ok(value.to_vec())
}

/// Splits the first PAX record (`<length> <key>=<value>\n`) off `records`.
fn pax_record(records: &[u8]) -> io::Result<(&[u8], &[u8], &[u8])> {
    let malformed = || invalid("a malformed PAX record");
    let space = records
        .iter()
        .take(MAX_DIGITS + 1)
        .position(|&byte| byte == b' ')
        .ok_or_else(malformed)?;
    let length = parse_decimal(&records[..space]).ok_or_else(malformed)?;
    let length = usize::try_from(length).map_err(|_| malformed())?;
    if length <= space + 1 || length > records.len() || records[length - 1] != b'\n' {
        return Err(malformed());
    }
    let record = &records[space + 1..length - 1];
    let equals = record
        .iter()
        .position(|&byte| byte == b'=')
        .ok_or_else(malformed)?;
    Ok((&record[..equals], &record[equals + 1..], &records[length..]))
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A PAX time, `seconds[.fraction]`; negative times are left to the header.
pub(super) fn parse_pax_mtime(value: &[u8]) -> Option<Mtime> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0, |nanos, digit| nanos * 10 + u32::from(digit - b'0'));
    Some(Mtime {
        secs: secs.parse().ok()?,
        nanos,
    })
}

/// Checks that a sparse map's regions are in order, inside the file and as long as the data.
fn check_sparse(sparse: &Sparse, data: u64) -> io::Result<()> {
    let mut end = 0u64;
    let mut total = 0u64;
    for extent in &sparse.extents {
        let extent_end = extent.offset.checked_add(extent.length);
        match extent_end {
            Some(extent_end) if extent.offset >= end && extent_end <= sparse.real_size => {
                end = extent_end;
                total += extent.length;
            }
            _ => {
                return Err(invalid(
                    "a sparse map with regions out of order or past its end",
                ))
            }
        }
    }
    if total != data {
        return Err(invalid(format!(
            "a sparse map of {total} bytes of data for {data} in the archive"
        )));
    }
    Ok(())
}

//! A deflate bit-walker that makes libdeflate's complete streams concatenable: it finds where
//! a stream ends, clears its BFINAL bit and appends an empty stored block.

use std::io;

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
pub(super) struct Unfinalizer {
    fixed_litlen: Huffman,
    fixed_dist: Huffman,
    litlen: Huffman,
    dist: Huffman,
    code_lengths: Huffman,
}

impl Unfinalizer {
    /// A walker with the fixed codes built.
    pub(super) fn new() -> Unfinalizer {
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

    /// Clears the final block's BFINAL bit and appends an empty stored block after the
    /// stream's last bit; fails if `stream` is not one valid deflate stream.
    pub(super) fn unfinalize(&mut self, stream: &mut Vec<u8>) -> io::Result<()> {
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

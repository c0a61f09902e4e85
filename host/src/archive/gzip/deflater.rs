//! The deflate back ends a worker compresses a block with: ISA-L for `best_speed`, libdeflate
//! for every other level, and libdeflate's level 0 (stored) for blocks that will not shrink.

use std::io;

use libdeflater::{CompressionLvl, Compressor};

use super::isal::IsalDeflater;
use super::unfinalize::Unfinalizer;
use super::Level;

/// A worker's compressors, and what makes libdeflate's streams concatenable.
pub(super) struct Deflater {
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
    /// A worker's compressors for `level`.
    pub(super) fn new(level: Level) -> Deflater {
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
    pub(super) fn deflate(
        &mut self,
        input: &[u8],
        output: &mut Vec<u8>,
        last: bool,
    ) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::gzip::tests::{mixed_bytes, random_bytes};
    use crate::archive::gzip::BLOCK_SIZE;

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
}

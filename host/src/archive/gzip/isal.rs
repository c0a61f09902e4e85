//! The `best_speed` deflate engine: Intel ISA-L's igzip, whose fast levels compress about
//! three times as fast per core as libdeflate's level 1 on game-server data (at 1.01× the
//! size of `pigz -1`'s output, level 2). Unlike libdeflate it can end a block with a sync
//! flush (`00 00 ff ff`, no BFINAL bit), so its blocks concatenate into one deflate stream
//! as they come, with no walk through the output.

use std::io;

use isal_sys::igzip_lib as isal;

/// ISA-L's level 2: as fast as its level 1, with margin under 1.02× `pigz -1`'s size.
const LEVEL: u32 = 2;
/// The level's working buffer, as ISA-L sizes it.
const LEVEL_BUFFER_BYTES: usize = isal::ISAL_DEF_LVL2_DEFAULT as usize;
/// Room for a block that does not shrink (stored blocks add a few bytes per 64 KiB).
const OUTPUT_SLACK_BYTES: usize = 64 * 1024;

/// One worker's ISA-L deflate stream, reused block after block.
pub struct IsalDeflater {
    /// Boxed: ISA-L keeps pointers into it while it works.
    stream: Box<isal::isal_zstream>,
    level_buffer: Vec<u8>,
}

impl IsalDeflater {
    /// A fresh stream.
    pub fn new() -> Self {
        Self {
            // SAFETY: isal_zstream is a plain C struct; isal_deflate_init sets it up before
            // every use.
            stream: Box::new(unsafe { std::mem::zeroed() }),
            level_buffer: vec![0; LEVEL_BUFFER_BYTES],
        }
    }

    /// Raw-deflates `input` into `output` (replacing its content): a final stream if `last`,
    /// else one that ends byte-aligned on a sync flush, ready for the next block.
    pub fn deflate(&mut self, input: &[u8], output: &mut Vec<u8>, last: bool) -> io::Result<()> {
        let capacity = input.len() + input.len() / 8 + OUTPUT_SLACK_BYTES;
        output.clear();
        output.reserve(capacity);
        let stream = self.stream.as_mut();
        // SAFETY: the stream is initialised here; its input and output pointers cover
        // `input` and the reserved capacity of `output`, both alive for the whole call, and
        // ISA-L writes at most `avail_out` bytes; `set_len` covers only what it wrote.
        unsafe {
            isal::isal_deflate_init(stream);
            stream.level = LEVEL;
            stream.level_buf = self.level_buffer.as_mut_ptr();
            stream.level_buf_size = self.level_buffer.len() as u32;
            stream.flush = isal::SYNC_FLUSH as u16;
            stream.end_of_stream = u16::from(last);
            stream.next_in = input.as_ptr() as *mut u8;
            stream.avail_in = input.len() as u32;
            stream.next_out = output.as_mut_ptr();
            stream.avail_out = capacity as u32;
            let done = if last {
                isal::isal_zstate_state_ZSTATE_END
            } else {
                isal::isal_zstate_state_ZSTATE_NEW_HDR
            };
            loop {
                if isal::isal_deflate(stream) != 0 {
                    return Err(io::Error::other("ISA-L could not deflate a block"));
                }
                if stream.avail_in == 0 && stream.internal_state.state == done {
                    break;
                }
                if stream.avail_out == 0 {
                    return Err(io::Error::other("ISA-L ran out of output room"));
                }
            }
            output.set_len(capacity - stream.avail_out as usize);
        }
        Ok(())
    }
}

//! Making an archive: walk the server's tree (minus what its ignore rules leave out) into a
//! tar stream, gzip it on every core, and stream the result into an adapter's sink while
//! hashing it. The walk and tar run on the calling thread, reading each file straight into
//! the block being compressed; worker threads compress; two more hash the result and write
//! it to the sink. Everything streams, so memory stays flat whatever the size of the backup.

pub mod gzip;
mod ignore_rules;
mod output;
#[cfg(test)]
mod tests;
mod tree;
mod walk;

use aerie_adapter_api::host::SinkHandle;
use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use ignore_rules::IgnoreRules;
pub use output::Written;
pub use tree::{measure_tree, Progress, TreeSize};
pub use walk::{ServerDir, MAX_ENTRY_PATH_BYTES};

use crate::config::CompressionLevel;
use gzip::{Level, ParallelGzWriter};
use output::ArchiveOutput;

/// How an archive is made.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveSettings {
    /// gzip level.
    pub compression: CompressionLevel,
    /// Threads that compress (`system.backups.compression_threads`).
    pub threads: usize,
    /// Compressed bytes per second, if limited.
    pub write_limit: Option<u64>,
}

fn gzip_level(level: CompressionLevel) -> Level {
    match level {
        CompressionLevel::None => Level::NONE,
        CompressionLevel::BestSpeed => Level::BEST_SPEED,
        CompressionLevel::BestCompression => Level::BEST_COMPRESSION,
    }
}

/// Writes the archive of `root` into `sink` and returns its SHA-1 and size. The caller
/// still owns the sink: it finishes it on success and aborts it on error.
pub fn write_archive(
    root: &ServerDir,
    rules: &IgnoreRules,
    settings: ArchiveSettings,
    sink: &mut SinkHandle,
    progress: &Progress,
    cancel: &CancellationToken,
) -> anyhow::Result<Written> {
    std::thread::scope(|scope| {
        let output = ArchiveOutput::start(scope, sink, settings.write_limit, cancel)
            .context("cannot start storing")?;
        let gzip =
            ParallelGzWriter::new(output, gzip_level(settings.compression), settings.threads)
                .context("cannot start compressing")?;
        let mut builder = tar::Builder::new(gzip);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        tree::append_tree(&mut builder, root, rules, progress, cancel)?;
        // Close the tar stream (its end blocks) and the gzip stream (its trailer), checking
        // both: Wings ignores these errors and can report a truncated archive as good.
        let gzip = builder.into_inner().context("cannot end the tar stream")?;
        let output = gzip.finish().context("cannot end the gzip stream")?;
        output.finish().context("cannot store the archive")
    })
}

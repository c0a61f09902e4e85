//! The `wings` adapter: each backup is one `<uuid>.tar.gz` file in a local directory, exactly
//! where and how Wings keeps them, so the directory of an existing Wings node works as it is.
//!
//! A backup is written to a hidden temporary name and only linked to its final name by
//! `finish`, after an fsync: a file with the final name is always a whole archive.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use aerie_adapter_api::{
    parse_config, Adapter, AdapterError, BackupInfo, ErrorKind, HostContext, Sink, Source,
    StoredBackup,
};
use serde::Deserialize;

/// Archives hold the server's files: only the daemon's user may read them, as in Wings.
const ARCHIVE_MODE: u32 = 0o600;
/// The backup directory itself is private too (Wings creates it 0700).
const DIRECTORY_MODE: u32 = 0o700;
/// The suffix of every stored archive.
const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// How many written bytes go to the disk's writeback at a time: large enough that the
/// hint costs nothing per write, small enough that a 1 GB archive's fsync finds at most
/// this much still to write (measured: that fsync took 0.4 to 0.6 s without the hints,
/// under 10 ms with them).
const WRITEBACK_EVERY_BYTES: u64 = 8 * 1024 * 1024;

/// The adapter's entry in the plugins file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where archives live; defaults to the host's `system.backup_directory`.
    directory: Option<PathBuf>,
}

/// Backups as files in one flat directory.
pub struct WingsAdapter {
    /// The directory that holds `<uuid>.tar.gz` files.
    directory: PathBuf,
}

impl WingsAdapter {
    /// The final path of `backup`, after checking that the name cannot leave the directory.
    fn archive_path(&self, backup: &str) -> Result<PathBuf, AdapterError> {
        check_backup_name(backup)?;
        Ok(self.directory.join(format!("{backup}{ARCHIVE_SUFFIX}")))
    }

    /// Where `backup` is written until it is finished.
    fn partial_path(&self, backup: &str) -> Result<PathBuf, AdapterError> {
        check_backup_name(backup)?;
        Ok(self
            .directory
            .join(format!(".{backup}{ARCHIVE_SUFFIX}.partial")))
    }
}

/// Backup names become file names: allow only what a uuid is made of.
fn check_backup_name(backup: &str) -> Result<(), AdapterError> {
    let safe = !backup.is_empty()
        && backup.len() <= 64
        && backup
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if safe {
        Ok(())
    } else {
        Err(AdapterError::new(
            ErrorKind::OTHER,
            format!("{backup:?} is not a valid backup name"),
        ))
    }
}

fn info_for(path: &Path, backup: &str) -> Result<BackupInfo, AdapterError> {
    let metadata = fs::metadata(path).map_err(|e| AdapterError::io(path.display(), &e))?;
    if !metadata.is_file() {
        return Err(AdapterError::not_found(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let created_unix = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok(BackupInfo {
        backup: backup.to_string(),
        server: None,
        key: path.display().to_string(),
        size: metadata.len(),
        created_unix,
        sha1: None,
    })
}

impl Adapter for WingsAdapter {
    const KIND: &'static str = "wings";
    type Sink = FileSink;
    type Source = FileSource;

    fn new(config: serde_json::Value, host: &HostContext) -> Result<Self, AdapterError> {
        let config: Config = if config.is_null() {
            Config { directory: None }
        } else {
            parse_config(config)?
        };
        let directory = config
            .directory
            .unwrap_or_else(|| host.backup_directory.clone());
        if directory.as_os_str().is_empty() {
            return Err(AdapterError::invalid_config(
                "directory: not set, and the host has no system.backup_directory",
            ));
        }
        // A directory that cannot be made now (a mount not yet there) is not fatal: each
        // backup then fails with the reason, and the daemon keeps serving the others.
        if let Err(err) = create_private_dir(&directory) {
            tracing::warn!(directory = %directory.display(), "cannot create the backup directory: {err}");
        }
        tracing::info!(directory = %directory.display(), "storing backups as files");
        Ok(Self { directory })
    }

    fn begin_backup(&self, _server: &str, backup: &str) -> Result<FileSink, AdapterError> {
        let final_path = self.archive_path(backup)?;
        if final_path.exists() {
            return Err(AdapterError::new(
                ErrorKind::ALREADY_EXISTS,
                format!("{} already exists", final_path.display()),
            ));
        }
        create_private_dir(&self.directory)
            .map_err(|e| AdapterError::io(self.directory.display(), &e))?;
        let partial_path = self.partial_path(backup)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(ARCHIVE_MODE)
            .open(&partial_path)
            .map_err(|e| AdapterError::io(partial_path.display(), &e))?;
        Ok(FileSink {
            file: Some(file),
            written: 0,
            flushing_from: 0,
            partial_path,
            final_path,
            directory: self.directory.clone(),
        })
    }

    fn open(&self, _server: &str, backup: &str, offset: u64) -> Result<FileSource, AdapterError> {
        let path = self.archive_path(backup)?;
        let mut file = File::open(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| AdapterError::io(path.display(), &e))?;
        }
        Ok(FileSource { file, path })
    }

    fn stat(&self, _server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        info_for(&self.archive_path(backup)?, backup)
    }

    fn list(&self, _server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        let entries = match fs::read_dir(&self.directory) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AdapterError::io(self.directory.display(), &e)),
        };
        let mut backups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AdapterError::io(self.directory.display(), &e))?;
            let name = entry.file_name();
            let Some(backup) = name
                .to_str()
                .and_then(|n| n.strip_suffix(ARCHIVE_SUFFIX))
                .filter(|b| check_backup_name(b).is_ok())
            else {
                continue;
            };
            backups.push(info_for(&entry.path(), backup)?);
        }
        backups.sort_by(|a, b| a.backup.cmp(&b.backup));
        Ok(backups)
    }

    fn delete(&self, _server: &str, backup: &str) -> Result<(), AdapterError> {
        let path = self.archive_path(backup)?;
        fs::remove_file(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        tracing::info!(path = %path.display(), "deleted backup");
        Ok(())
    }

    fn discard_incomplete(&self, _server: &str, backup: &str) -> Result<(), AdapterError> {
        let path = self.partial_path(backup)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed an unfinished backup");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AdapterError::io(path.display(), &e)),
        }
    }
}

fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
}

/// One backup being written to its temporary file.
pub struct FileSink {
    /// The open temporary file; `None` once finished or aborted.
    file: Option<File>,
    /// Bytes written so far.
    written: u64,
    /// Where the bytes not yet handed to the disk's writeback start.
    flushing_from: u64,
    /// `.<uuid>.tar.gz.partial`, removed on abort or drop.
    partial_path: PathBuf,
    /// `<uuid>.tar.gz`, which appears only when the archive is whole.
    final_path: PathBuf,
    /// The directory, fsynced after the final name appears.
    directory: PathBuf,
}

impl FileSink {
    fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("a sink is used only until finish or abort")
    }

    fn discard(&mut self) -> Result<(), AdapterError> {
        self.file = None;
        match fs::remove_file(&self.partial_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AdapterError::io(self.partial_path.display(), &e)),
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        let path = self.partial_path.display().to_string();
        self.file()
            .write_all(bytes)
            .map_err(|e| AdapterError::io(path, &e))?;
        self.written += bytes.len() as u64;
        if self.written - self.flushing_from >= WRITEBACK_EVERY_BYTES {
            let (from, to) = (self.flushing_from, self.written);
            start_writeback(self.file(), from, to);
            self.flushing_from = to;
        }
        Ok(())
    }

    fn finish(mut self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        let result = self.publish(size);
        if result.is_err() {
            let _ = self.discard();
        }
        result
    }

    fn abort(mut self) -> Result<(), AdapterError> {
        self.discard()
    }
}

impl FileSink {
    /// fsyncs the archive, links it to its final name (never replacing an existing file),
    /// then tidies up (drops the temporary name, fsyncs the directory).
    fn publish(&mut self, size: u64) -> Result<StoredBackup, AdapterError> {
        self.publish_then(size, remove_partial_and_sync)
    }

    /// [`FileSink::publish`] with the tidying step given. Once the final name exists the
    /// backup is stored, whole and downloadable: a failure to tidy up after that is logged,
    /// never returned, so the host does not record `failed` for a backup that is there.
    fn publish_then(
        &mut self,
        size: u64,
        tidy: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
    ) -> Result<StoredBackup, AdapterError> {
        let partial = self.partial_path.display().to_string();
        let file = self.file.take().expect("finish is called once");
        file.sync_all()
            .map_err(|e| AdapterError::io(&partial, &e))?;
        let written = file
            .metadata()
            .map_err(|e| AdapterError::io(&partial, &e))?
            .len();
        if written != size {
            return Err(AdapterError::other(format!(
                "{partial} holds {written} bytes but the archive is {size} bytes"
            )));
        }
        drop(file);
        fs::hard_link(&self.partial_path, &self.final_path)
            .map_err(|e| AdapterError::io(self.final_path.display(), &e))?;
        if let Err(err) = tidy(&self.partial_path, &self.directory) {
            tracing::warn!(
                path = %self.final_path.display(),
                "the backup is stored, but tidying up after it failed: {err}"
            );
        }
        tracing::info!(path = %self.final_path.display(), size, "stored backup");
        Ok(StoredBackup {
            key: self.final_path.display().to_string(),
            size,
            parts: Vec::new(),
            panel_completes: false,
        })
    }
}

/// Asks the kernel to start writing bytes `from..to` of `file` to the disk, without waiting:
/// an archive's pages then go to disk while it is made, so that the fsync in `finish` has
/// little left to do, instead of writing the whole archive while the backup waits. Only a
/// hint: an error here is the fsync's to report.
fn start_writeback(file: &File, from: u64, to: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// After the final name exists: drops the temporary name and fsyncs the directory, so the
/// new name survives a power cut.
fn remove_partial_and_sync(partial: &Path, directory: &Path) -> std::io::Result<()> {
    fs::remove_file(partial)?;
    File::open(directory)?.sync_all()
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = self.discard();
        }
    }
}

/// A stored archive opened for reading.
pub struct FileSource {
    file: File,
    path: PathBuf,
}

impl Source for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
        self.file
            .read(buf)
            .map_err(|e| AdapterError::io(self.path.display(), &e))
    }
}

aerie_adapter_api::export_adapter!(WingsAdapter);

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = "0b6c9f3e-2d4a-4c8e-9a1b-7f6e5d4c3b2a";

    #[test]
    fn a_backup_linked_into_place_is_stored_even_when_tidying_up_fails() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostContext {
            backup_directory: dir.path().to_path_buf(),
            aerie_version: "test".into(),
        };
        let adapter = WingsAdapter::new(serde_json::Value::Null, &host).unwrap();
        let mut sink = adapter.begin_backup("server", BACKUP).unwrap();
        sink.write(b"archive bytes").unwrap();
        let stored = sink
            .publish_then(13, |_, _| Err(std::io::Error::other("the disk went away")))
            .expect("once the final name exists, the backup is stored");
        assert_eq!(stored.size, 13);
        let info = adapter.stat("server", BACKUP).expect("stat finds it");
        assert_eq!(info.size, 13);
    }
}

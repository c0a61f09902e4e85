//! A template aerie storage adapter: each backup is one `<server>/<uuid>.tar.gz` file under
//! a directory. Copy this folder, rename the crate, and replace the file operations with
//! your storage's; the shape (a config, an adapter, a sink, a source, one export line) stays.
//!
//! What it shows:
//! - the config is the `config` mapping of the adapter's entry in the operator's plugins
//!   file, `null` when the entry has none (here: the host's backup directory is used);
//! - server ids and backup ids become path segments only through
//!   [`server_segment`] and [`backup_segment`], which accept exactly what the host sends;
//! - a backup is written under a temporary name and published by [`AtomicFile`] only in
//!   `finish` (fsync, link without replacing, directory fsync), and a sink that is aborted
//!   or dropped leaves nothing, because `AtomicFile` discards itself on drop;
//! - errors carry a kind the host acts on (`NOT_FOUND`, `ALREADY_EXISTS`, ...):
//!   [`AdapterError::io`] picks it from the I/O error;
//! - logging is plain `tracing`: the lines land in the daemon's log.
//!
//! Its tests run aerie's conformance suite on it (`tests/conformance.rs`):
//! `cargo test --manifest-path adapters/template/Cargo.toml`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use aerie_adapter_api::helpers::{backup_segment, server_segment, AtomicFile};
use aerie_adapter_api::{
    parse_config, Adapter, AdapterError, BackupInfo, ErrorKind, HostContext, Sink, Source,
    StoredBackup,
};
use serde::Deserialize;

/// Directories hold servers' data: only the daemon's user may enter them.
const DIRECTORY_MODE: u32 = 0o700;

/// The adapter's `config` in the plugins file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where backups go; the host's `system.backup_directory` when not set.
    directory: Option<PathBuf>,
}

/// Backups as files, one folder per server.
pub struct DirectoryAdapter {
    /// The folder that holds one folder per server.
    root: PathBuf,
}

/// One backup being written.
pub struct DirectorySink {
    /// The archive under its temporary name; removed if dropped unpublished.
    file: AtomicFile,
    /// Bytes written so far, checked against the size `finish` is given.
    written: u64,
}

/// One stored backup being read.
pub struct DirectorySource {
    file: File,
    path: PathBuf,
}

impl DirectoryAdapter {
    /// The folder of `server`'s backups.
    fn server_dir(&self, server: &str) -> Result<PathBuf, AdapterError> {
        Ok(self.root.join(server_segment(server)?))
    }

    /// The path of a stored backup.
    fn archive(&self, server: &str, backup: &str) -> Result<PathBuf, AdapterError> {
        Ok(self.server_dir(server)?.join(archive_name(backup)?))
    }
}

/// The file name of `backup`'s archive.
fn archive_name(backup: &str) -> Result<String, AdapterError> {
    Ok(format!("{}.tar.gz", backup_segment(backup)?))
}

/// Describes the stored archive at `path`.
fn describe(path: &Path, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
    let metadata = fs::metadata(path).map_err(|e| AdapterError::io(path.display(), &e))?;
    let created_unix = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok(BackupInfo {
        backup: backup.to_string(),
        server: Some(server.to_string()),
        key: path.display().to_string(),
        size: metadata.len(),
        created_unix,
        sha1: None,
    })
}

impl Adapter for DirectoryAdapter {
    const KIND: &'static str = "directory";
    type Sink = DirectorySink;
    type Source = DirectorySource;

    fn new(config: serde_json::Value, host: &HostContext) -> Result<Self, AdapterError> {
        let config: Config = if config.is_null() {
            Config { directory: None }
        } else {
            parse_config(config)?
        };
        let root = config
            .directory
            .unwrap_or_else(|| host.backup_directory.clone());
        if root.as_os_str().is_empty() {
            return Err(AdapterError::invalid_config(
                "directory: not set, and the host has no backup directory",
            ));
        }
        tracing::info!(directory = %root.display(), "storing backups as files");
        Ok(Self { root })
    }

    fn begin_backup(&self, server: &str, backup: &str) -> Result<DirectorySink, AdapterError> {
        let dir = self.server_dir(server)?;
        let name = archive_name(backup)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIRECTORY_MODE)
            .create(&dir)
            .map_err(|e| AdapterError::io(dir.display(), &e))?;
        if dir.join(&name).exists() {
            return Err(AdapterError::new(
                ErrorKind::ALREADY_EXISTS,
                format!("{} already exists", dir.join(&name).display()),
            ));
        }
        let file =
            AtomicFile::create(&dir, &name).map_err(|e| AdapterError::io(dir.display(), &e))?;
        Ok(DirectorySink { file, written: 0 })
    }

    fn open(
        &self,
        server: &str,
        backup: &str,
        offset: u64,
    ) -> Result<DirectorySource, AdapterError> {
        let path = self.archive(server, backup)?;
        let mut file = File::open(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| AdapterError::io(path.display(), &e))?;
        Ok(DirectorySource { file, path })
    }

    fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        describe(&self.archive(server, backup)?, server, backup)
    }

    fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        let dir = self.server_dir(server)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AdapterError::io(dir.display(), &e)),
        };
        let mut backups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AdapterError::io(dir.display(), &e))?;
            let name = entry.file_name();
            let backup = name.to_str().and_then(|n| n.strip_suffix(".tar.gz"));
            // Temporary files start with a dot and are no backup id: they are skipped.
            if let Some(backup) = backup.filter(|b| backup_segment(b).is_ok()) {
                backups.push(describe(&entry.path(), server, backup)?);
            }
        }
        backups.sort_by(|a, b| a.backup.cmp(&b.backup));
        Ok(backups)
    }

    fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        let path = self.archive(server, backup)?;
        fs::remove_file(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        tracing::info!(path = %path.display(), "deleted backup");
        Ok(())
    }

    fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        let dir = self.server_dir(server)?;
        let name = archive_name(backup)?;
        if AtomicFile::remove_leftover(&dir, &name)
            .map_err(|e| AdapterError::io(dir.display(), &e))?
        {
            tracing::info!(server, backup, "removed an unfinished backup");
        }
        Ok(())
    }
}

impl Sink for DirectorySink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        self.file
            .write_all(bytes)
            .map_err(|e| AdapterError::io(self.file.final_path().display(), &e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn finish(self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        if self.written != size {
            // Dropping `self` discards the temporary file.
            return Err(AdapterError::other(format!(
                "{} bytes were written but the archive is {size} bytes",
                self.written
            )));
        }
        let shown = self.file.final_path().display().to_string();
        let path = self
            .file
            .publish()
            .map_err(|e| AdapterError::io(&shown, &e))?;
        tracing::info!(path = %path.display(), size, "stored backup");
        Ok(StoredBackup {
            key: path.display().to_string(),
            size,
            parts: Vec::new(),
            panel_completes: false,
        })
    }

    fn abort(self) -> Result<(), AdapterError> {
        let shown = self.file.final_path().display().to_string();
        self.file.discard().map_err(|e| AdapterError::io(shown, &e))
    }
}

impl Source for DirectorySource {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
        self.file
            .read(buf)
            .map_err(|e| AdapterError::io(self.path.display(), &e))
    }
}

aerie_adapter_api::export_adapter!(DirectoryAdapter);

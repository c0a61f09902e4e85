//! An adapter built against aerie-adapter-api 1.0.0 and nothing newer: backups as
//! `<uuid>.tar.gz` files in one directory, written under a temporary name and renamed in
//! `finish`. It uses only what 1.0 offers, so that today's daemon loading it shows that
//! adapters built for 1.0 still work.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use aerie_adapter_api::{
    parse_config, Adapter, AdapterError, BackupInfo, HostContext, Sink, Source, StoredBackup,
};

/// The adapter's config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where archives go.
    directory: PathBuf,
}

/// Backups as files in one directory.
pub struct Abi10Adapter {
    directory: PathBuf,
}

/// A backup being written to `.<uuid>.partial`.
pub struct Abi10Sink {
    file: File,
    partial: PathBuf,
    done: PathBuf,
}

/// A stored archive being read.
pub struct Abi10Source(File);

impl Abi10Adapter {
    fn path(&self, backup: &str) -> PathBuf {
        self.directory.join(format!("{backup}.tar.gz"))
    }
}

impl Adapter for Abi10Adapter {
    const KIND: &'static str = "abi-1.0";
    type Sink = Abi10Sink;
    type Source = Abi10Source;

    fn new(config: serde_json::Value, _host: &HostContext) -> Result<Self, AdapterError> {
        let config: Config = parse_config(config)?;
        fs::create_dir_all(&config.directory)
            .map_err(|e| AdapterError::io(config.directory.display(), &e))?;
        Ok(Self {
            directory: config.directory,
        })
    }

    fn begin_backup(&self, _server: &str, backup: &str) -> Result<Abi10Sink, AdapterError> {
        let partial = self.directory.join(format!(".{backup}.partial"));
        let file = File::create(&partial).map_err(|e| AdapterError::io(partial.display(), &e))?;
        Ok(Abi10Sink {
            file,
            partial,
            done: self.path(backup),
        })
    }

    fn open(&self, _server: &str, backup: &str, offset: u64) -> Result<Abi10Source, AdapterError> {
        let path = self.path(backup);
        let mut file = File::open(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| AdapterError::io(path.display(), &e))?;
        Ok(Abi10Source(file))
    }

    fn stat(&self, _server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        let path = self.path(backup);
        let metadata = fs::metadata(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        Ok(BackupInfo {
            backup: backup.to_string(),
            server: None,
            key: path.display().to_string(),
            size: metadata.len(),
            created_unix: 0,
            sha1: None,
        })
    }

    fn list(&self, _server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        Ok(Vec::new())
    }

    fn delete(&self, _server: &str, backup: &str) -> Result<(), AdapterError> {
        let path = self.path(backup);
        fs::remove_file(&path).map_err(|e| AdapterError::io(path.display(), &e))
    }

    fn discard_incomplete(&self, _server: &str, backup: &str) -> Result<(), AdapterError> {
        let _ = fs::remove_file(self.directory.join(format!(".{backup}.partial")));
        Ok(())
    }
}

impl Sink for Abi10Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        self.file
            .write_all(bytes)
            .map_err(|e| AdapterError::io(self.partial.display(), &e))
    }

    fn finish(self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        self.file
            .sync_all()
            .map_err(|e| AdapterError::io(self.partial.display(), &e))?;
        fs::rename(&self.partial, &self.done)
            .map_err(|e| AdapterError::io(self.done.display(), &e))?;
        Ok(StoredBackup {
            key: self.done.display().to_string(),
            size,
            parts: Vec::new(),
            panel_completes: false,
        })
    }

    fn abort(self) -> Result<(), AdapterError> {
        fs::remove_file(&self.partial).map_err(|e| AdapterError::io(self.partial.display(), &e))
    }
}

impl Source for Abi10Source {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
        self.0
            .read(buf)
            .map_err(|e| AdapterError::io("abi-1.0 adapter", &e))
    }
}

aerie_adapter_api::export_adapter!(Abi10Adapter);

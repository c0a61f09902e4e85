//! An adapter for aerie's end-to-end tests, loaded through the real ABI like any other: it
//! stores archives as `<backup>.tar.gz` in a directory, and on request fails or panics after
//! a number of bytes, so tests can watch the daemon clean up. Every `abort` leaves a
//! `<backup>.aborted` marker, so a test can tell the sink was aborted rather than dropped.
//! A stored archive can be read back; while a `<backup>.fail-open` marker exists, opening it
//! fails as a storage outage would, so tests can watch a transient failure. While a
//! `<backup>.hold` FIFO exists, `begin_backup` waits on it: it opens it (so the test's open
//! of the write end returns once the backup is there) and reads it to its end (so the
//! backup goes on when the test closes it), which holds a job running without timers. A
//! FIFO put in a stored archive's place holds whoever reads it (`open` at offset 0) the same
//! way, until the test writes the archive into it.
//! While a `<backup>.writes` file exists, the sink logs to it when each write arrived, so
//! a test can check the rate the adapter received bytes at.
//! `broken: true` makes every `stat` and `list` fail (not as NOT_FOUND), as a storage that
//! refuses access would; `transient_failures: N` makes the first N calls of each of
//! `begin_backup`, `stat` and `open` fail as retryable, and records every call of those in
//! `<directory>/calls` (one line each: the method's name), so a test counts attempts from the
//! adapter's own record.
//!
//! For the conformance suite (`aerie_adapter_api::testkit`), it panics on request
//! (`panic_on_request: new` panics in `new`; `methods` panics in method `M` for server id
//! `panic-M`), and it can break one promise of the contract on purpose (`misbehave`), so a
//! test can watch the suite catch it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use aerie_adapter_api::{
    parse_config, Adapter, AdapterError, BackupInfo, ErrorKind, HostContext, Sink, Source,
    StoredBackup,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where archives and markers go.
    directory: PathBuf,
    /// Fail a write once this many bytes were written.
    #[serde(default)]
    fail_after_bytes: Option<u64>,
    /// Panic (instead of failing) at that point.
    #[serde(default)]
    panic: bool,
    /// Fail every `stat` and `list` as a storage that refuses access would.
    #[serde(default)]
    broken: bool,
    /// Fail the first this-many calls of each of `begin_backup`, `stat` and `open` as
    /// retryable, and record every call of those in `<directory>/calls`.
    #[serde(default)]
    transient_failures: Option<u32>,
    /// Panic in `new` (`"new"`), or in method `M` when the server id is `panic-M`
    /// (`"methods"`), as the conformance suite asks.
    #[serde(default)]
    panic_on_request: Option<PanicOnRequest>,
    /// Break one promise of the contract, for tests of the conformance suite.
    #[serde(default)]
    misbehave: Option<Misbehaviour>,
}

/// Where the fixture panics when asked to.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PanicOnRequest {
    /// In `new`.
    New,
    /// In method `M` when the server id is `panic-M`.
    Methods,
}

/// A promise the fixture breaks on purpose.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Misbehaviour {
    /// `stat` reports one byte more than is stored.
    StatSize,
    /// `abort` publishes the archive instead of discarding it.
    AbortKeeps,
}

/// Panics when `panics` is on and `server` asks for a panic in `method`.
fn panic_if_asked(panics: bool, server: &str, method: &str) {
    if panics && server.strip_prefix("panic-") == Some(method) {
        panic!("the fixture panics in {method} on request");
    }
}

/// The fixture adapter.
pub struct FixtureAdapter {
    directory: PathBuf,
    fail_after_bytes: Option<u64>,
    panic: bool,
    /// Whether methods panic for servers `panic-<method>`.
    panic_methods: bool,
    misbehave: Option<Misbehaviour>,
    broken: bool,
    transient_failures: Option<u32>,
    /// Calls so far of `begin_backup`, `stat` and `open`, in that order.
    calls: [AtomicU32; 3],
}

/// The methods `transient_failures` applies to, as indexes into `FixtureAdapter::calls`.
#[derive(Clone, Copy)]
enum Flaky {
    BeginBackup = 0,
    Stat = 1,
    Open = 2,
}

impl FixtureAdapter {
    /// Records a call of `method` (when `transient_failures` is set) and fails it while it is
    /// among the first `transient_failures` calls of that method.
    fn flaky(&self, method: Flaky, name: &str) -> Result<(), AdapterError> {
        let Some(failures) = self.transient_failures else {
            return Ok(());
        };
        let path = self.directory.join("calls");
        let mut record = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AdapterError::io(path.display(), &e))?;
        writeln!(record, "{name}").map_err(|e| AdapterError::io(path.display(), &e))?;
        let call = self.calls[method as usize].fetch_add(1, Ordering::SeqCst);
        if call < failures {
            return Err(AdapterError::new(
                ErrorKind::UNAVAILABLE,
                format!("{name}: the fixture storage is briefly unavailable"),
            )
            .with_retryable(true));
        }
        Ok(())
    }

    /// What `stat` and `list` say of the stored `backup` (off by one byte when told to
    /// misbehave so), without counting a call.
    fn info(&self, backup: &str) -> Result<BackupInfo, AdapterError> {
        let path = self.directory.join(format!("{backup}.tar.gz"));
        let metadata = fs::metadata(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        let wrong = u64::from(self.misbehave == Some(Misbehaviour::StatSize));
        Ok(BackupInfo {
            backup: backup.to_string(),
            server: None,
            key: path.display().to_string(),
            size: metadata.len() + wrong,
            created_unix: 0,
            sha1: None,
        })
    }

    /// Fails as a storage that refuses access, when `broken`.
    fn check_broken(&self, name: &str) -> Result<(), AdapterError> {
        if self.broken {
            return Err(AdapterError::new(
                ErrorKind::PERMISSION_DENIED,
                format!("{name}: the fixture storage is broken"),
            ));
        }
        Ok(())
    }
}

/// A backup being written to `<backup>.partial`.
pub struct FixtureSink {
    file: File,
    /// `<backup>.writes`, when a test created it: each write appends when it arrived and the
    /// bytes received so far.
    write_log: Option<WriteLog>,
    written: u64,
    directory: PathBuf,
    backup: String,
    fail_after_bytes: Option<u64>,
    panic: bool,
    /// Set for a sink whose server asks for panics.
    server: String,
    panic_methods: bool,
    misbehave: Option<Misbehaviour>,
    /// True once finished or aborted: only a sink dropped without either panics in drop.
    ended: bool,
}

/// A record of when a sink's bytes arrived: one line per write, `<nanoseconds since
/// begin_backup> <bytes received so far>`.
struct WriteLog {
    file: File,
    started: Instant,
}

/// A stored archive being read (and whether `read` panics on request).
pub struct FileSource(File, bool);

impl Adapter for FixtureAdapter {
    const KIND: &'static str = "fixture";
    type Sink = FixtureSink;
    type Source = FileSource;

    fn new(config: serde_json::Value, _host: &HostContext) -> Result<Self, AdapterError> {
        let config: Config = parse_config(config)?;
        if config.panic_on_request == Some(PanicOnRequest::New) {
            panic!("the fixture panics in new on request");
        }
        fs::create_dir_all(&config.directory)
            .map_err(|e| AdapterError::io(config.directory.display(), &e))?;
        tracing::info!(directory = %config.directory.display(), "fixture adapter ready");
        Ok(Self {
            directory: config.directory,
            fail_after_bytes: config.fail_after_bytes,
            panic: config.panic,
            broken: config.broken,
            transient_failures: config.transient_failures,
            calls: Default::default(),
            panic_methods: config.panic_on_request == Some(PanicOnRequest::Methods),
            misbehave: config.misbehave,
        })
    }

    fn begin_backup(&self, server: &str, backup: &str) -> Result<FixtureSink, AdapterError> {
        panic_if_asked(self.panic_methods, server, "begin_backup");
        self.flaky(Flaky::BeginBackup, "begin_backup")?;
        let stored = self.directory.join(format!("{backup}.tar.gz"));
        if stored.exists() {
            return Err(AdapterError::new(
                ErrorKind::ALREADY_EXISTS,
                format!("{} already exists", stored.display()),
            ));
        }
        let hold = self.directory.join(format!("{backup}.hold"));
        if fs::symlink_metadata(&hold).is_ok_and(|m| m.file_type().is_fifo()) {
            File::open(&hold)
                .and_then(|mut fifo| fifo.read_to_end(&mut Vec::new()))
                .map_err(|e| AdapterError::io(hold.display(), &e))?;
        }
        let started = Instant::now();
        let log = self.directory.join(format!("{backup}.writes"));
        let write_log = match log.exists() {
            true => Some(WriteLog {
                file: File::options()
                    .append(true)
                    .open(&log)
                    .map_err(|e| AdapterError::io(log.display(), &e))?,
                started,
            }),
            false => None,
        };
        let path = self.directory.join(format!("{backup}.partial"));
        let file = File::create(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        Ok(FixtureSink {
            file,
            write_log,
            written: 0,
            directory: self.directory.clone(),
            backup: backup.to_string(),
            fail_after_bytes: self.fail_after_bytes,
            panic: self.panic,
            server: server.to_string(),
            panic_methods: self.panic_methods,
            misbehave: self.misbehave,
            ended: false,
        })
    }

    fn open(&self, server: &str, backup: &str, offset: u64) -> Result<FileSource, AdapterError> {
        panic_if_asked(self.panic_methods, server, "open");
        self.flaky(Flaky::Open, "open")?;
        if self.directory.join(format!("{backup}.fail-open")).exists() {
            return Err(AdapterError::new(
                ErrorKind::UNAVAILABLE,
                format!("{backup}: the fixture storage is unavailable"),
            )
            .with_retryable(true));
        }
        let path = self.directory.join(format!("{backup}.tar.gz"));
        let mut file = File::open(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
        // Not at 0: a test may put a FIFO in the archive's place, which cannot seek.
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| AdapterError::io(path.display(), &e))?;
        }
        Ok(FileSource(
            file,
            self.panic_methods && server == "panic-read",
        ))
    }

    fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        panic_if_asked(self.panic_methods, server, "stat");
        self.check_broken("stat")?;
        self.flaky(Flaky::Stat, "stat")?;
        self.info(backup)
    }

    fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        panic_if_asked(self.panic_methods, server, "list");
        self.check_broken("list")?;
        let entries = fs::read_dir(&self.directory).map_err(|e| AdapterError::io("fixture", &e))?;
        let mut backups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AdapterError::io("fixture", &e))?;
            let name = entry.file_name();
            if let Some(backup) = name.to_str().and_then(|n| n.strip_suffix(".tar.gz")) {
                backups.push(self.info(backup)?);
            }
        }
        Ok(backups)
    }

    fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        panic_if_asked(self.panic_methods, server, "delete");
        let path = self.directory.join(format!("{backup}.tar.gz"));
        fs::remove_file(&path).map_err(|e| AdapterError::io(path.display(), &e))
    }

    fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        panic_if_asked(self.panic_methods, server, "discard_incomplete");
        let _ = fs::remove_file(self.directory.join(format!("{backup}.partial")));
        Ok(())
    }
}

impl Sink for FixtureSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        panic_if_asked(self.panic_methods, &self.server, "write");
        if self
            .fail_after_bytes
            .is_some_and(|limit| self.written >= limit)
        {
            if self.panic {
                panic!("fixture told to panic after {} bytes", self.written);
            }
            return Err(AdapterError::new(
                ErrorKind::STORAGE_FULL,
                format!("fixture storage full after {} bytes", self.written),
            ));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| AdapterError::io("fixture", &e))?;
        self.written += bytes.len() as u64;
        if let Some(log) = &mut self.write_log {
            let line = format!("{} {}\n", log.started.elapsed().as_nanos(), self.written);
            log.file
                .write_all(line.as_bytes())
                .map_err(|e| AdapterError::io("fixture write log", &e))?;
        }
        Ok(())
    }

    fn finish(mut self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        self.ended = true;
        panic_if_asked(self.panic_methods, &self.server, "finish");
        let from = self.directory.join(format!("{}.partial", self.backup));
        let to = self.directory.join(format!("{}.tar.gz", self.backup));
        fs::rename(&from, &to).map_err(|e| AdapterError::io(to.display(), &e))?;
        Ok(StoredBackup {
            key: to.display().to_string(),
            size,
            parts: Vec::new(),
            panel_completes: false,
        })
    }

    fn abort(mut self) -> Result<(), AdapterError> {
        self.ended = true;
        panic_if_asked(self.panic_methods, &self.server, "abort");
        let partial = self.directory.join(format!("{}.partial", self.backup));
        if self.misbehave == Some(Misbehaviour::AbortKeeps) {
            let _ = fs::rename(
                &partial,
                self.directory.join(format!("{}.tar.gz", self.backup)),
            );
        }
        let _ = fs::remove_file(partial);
        fs::write(self.directory.join(format!("{}.aborted", self.backup)), b"")
            .map_err(|e| AdapterError::io("fixture", &e))
    }
}

impl Drop for FixtureSink {
    /// A sink dropped unended discards its archive (or panics, when asked to).
    fn drop(&mut self) {
        if !self.ended {
            let _ = fs::remove_file(self.directory.join(format!("{}.partial", self.backup)));
            panic_if_asked(self.panic_methods, &self.server, "drop");
        }
    }
}

impl Source for FileSource {
    fn read(&mut self, buffer: &mut [u8]) -> Result<usize, AdapterError> {
        if self.1 {
            panic!("the fixture panics in read on request");
        }
        self.0
            .read(buffer)
            .map_err(|e| AdapterError::io("fixture", &e))
    }
}

aerie_adapter_api::export_adapter!(FixtureAdapter);

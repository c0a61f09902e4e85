//! # Writing an adapter
//!
//! An adapter is a shared library that stores aerie's backup archives somewhere: a local
//! directory, an S3 bucket, a tape robot. This page is the whole contract between it and the
//! daemon (the *host*): what you implement, when each method is called and with what, what
//! the host does with your answers, and what you must never do. You should not need to read
//! the host's source.
//!
//! Contents: [the crate](#the-crate) · [a whole adapter](#a-whole-adapter) ·
//! [loading it](#loading-it) · [lifecycle of every method](#lifecycle-of-every-method) ·
//! [identifiers](#identifiers-the-host-guarantees) · [guarantees](#guarantees-both-ways) ·
//! [errors](#errors-and-what-the-host-does-with-each) · [logging](#logging) ·
//! [threads and runtimes](#threads-and-runtimes) · [panics](#panics) ·
//! [retention](#retention-is-the-panels-job) · [testing](#testing) ·
//! [versioning](#versioning)
//!
//! # The crate
//!
//! ```toml
//! [package]
//! name = "my-tape-adapter"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! # `cdylib` is the `.so` the daemon loads. `rlib` lets your own integration tests
//! # (`tests/*.rs`) and the conformance suite link the adapter type directly: a crate that is
//! # only a `cdylib` cannot be used by another Rust crate, not even by its own tests.
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! aerie-adapter-api = "1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! tracing = "0.1"
//!
//! # Never `panic = "abort"`: the host turns your panics into errors by unwinding.
//! ```
//!
//! You depend on this crate alone: no `abi_stable` in your code. You implement three plain
//! traits, [`Adapter`], [`Sink`] and [`Source`], and export the type once with
//! [`export_adapter!`](crate::export_adapter); this crate does the rest (the stable ABI, the
//! panic guard, the log forwarding).
//!
//! A ready folder to copy, with its conformance test, is in the aerie repository under
//! `adapters/template/` (its own `Cargo.toml`, outside aerie's workspace, as your crate
//! will be). The conformance suite is this crate's `testkit` feature; the same checks run
//! against a built library with `aerie adapter-test --library PATH --config JSON`.
//!
//! # A whole adapter
//!
//! Backups as files in one directory. It shows the shape most adapters take:
//!
//! - **`Arc<Inner>`**: a [`Sink`] must be `'static` (it outlives the `begin_backup` call
//!   that made it, and crosses threads), so it cannot borrow the adapter. Keep what both
//!   need (the configuration, a client, a runtime handle) in an `Inner` behind an `Arc`
//!   and give each sink a clone.
//! - **`Option` fields**: [`Sink::finish`] and [`Sink::abort`] take `self`, and the sink
//!   also needs a `Drop` that discards a sink dropped without either. Rust does not let a
//!   method move a field out of a type that implements `Drop`, so keep what `finish` and
//!   `abort` consume in an `Option` and `take()` it: `Drop` then sees `None` after a
//!   `finish` or `abort` and `Some` when neither ran.
//! - **Nothing visible before `finish`**: write to a temporary name, make it durable, then
//!   publish it under its final name.
//!
//! ```
//! use std::fs::{self, File};
//! use std::io::{Read, Seek, SeekFrom, Write};
//! use std::path::PathBuf;
//! use std::sync::Arc;
//! use std::time::UNIX_EPOCH;
//!
//! use aerie_adapter_api::{
//!     parse_config, Adapter, AdapterError, BackupInfo, HostContext, Sink, Source, StoredBackup,
//! };
//!
//! /// The plugins file's `config:` mapping.
//! #[derive(serde::Deserialize, Default)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Where archives go; the host's backup directory when unset.
//!     directory: Option<PathBuf>,
//! }
//!
//! /// What the adapter and all its sinks share.
//! struct Inner {
//!     directory: PathBuf,
//! }
//!
//! impl Inner {
//!     /// `<directory>/<server>/<backup><suffix>`: safe, because the host guarantees both ids'
//!     /// shapes (no `/`, no leading `.`).
//!     fn path(&self, server: &str, backup: &str, suffix: &str) -> PathBuf {
//!         self.directory.join(server).join(format!("{backup}{suffix}"))
//!     }
//! }
//!
//! pub struct FlatDir {
//!     inner: Arc<Inner>,
//! }
//!
//! pub struct FlatDirSink {
//!     inner: Arc<Inner>,
//!     server: String,
//!     backup: String,
//!     /// `None` once `finish` or `abort` has taken it.
//!     file: Option<File>,
//! }
//!
//! pub struct FlatDirSource(File);
//!
//! impl Adapter for FlatDir {
//!     const KIND: &'static str = "flatdir";
//!     type Sink = FlatDirSink;
//!     type Source = FlatDirSource;
//!
//!     fn new(config: serde_json::Value, host: &HostContext) -> Result<Self, AdapterError> {
//!         // `config` is `null` when the plugins entry has no `config:`.
//!         let config: Config = parse_config::<Option<Config>>(config)?.unwrap_or_default();
//!         let directory = config.directory.unwrap_or_else(|| host.backup_directory.clone());
//!         fs::create_dir_all(&directory).map_err(|e| AdapterError::io(directory.display(), &e))?;
//!         tracing::info!(directory = %directory.display(), "flatdir adapter ready");
//!         Ok(FlatDir { inner: Arc::new(Inner { directory }) })
//!     }
//!
//!     fn begin_backup(&self, server: &str, backup: &str) -> Result<FlatDirSink, AdapterError> {
//!         if self.inner.path(server, backup, ".tar.gz").exists() {
//!             return Err(AdapterError::new(
//!                 aerie_adapter_api::ErrorKind::ALREADY_EXISTS,
//!                 format!("backup {backup} is stored already"),
//!             ));
//!         }
//!         let partial = self.inner.path(server, backup, ".partial");
//!         fs::create_dir_all(partial.parent().unwrap())
//!             .map_err(|e| AdapterError::io(partial.display(), &e))?;
//!         let file = File::create(&partial).map_err(|e| AdapterError::io(partial.display(), &e))?;
//!         Ok(FlatDirSink {
//!             inner: self.inner.clone(),
//!             server: server.to_string(),
//!             backup: backup.to_string(),
//!             file: Some(file),
//!         })
//!     }
//!
//!     fn open(&self, server: &str, backup: &str, offset: u64) -> Result<FlatDirSource, AdapterError> {
//!         let path = self.inner.path(server, backup, ".tar.gz");
//!         // A missing file is `NOT_FOUND` (`AdapterError::io` maps the I/O error's kind).
//!         let mut file = File::open(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
//!         // Past the end is not an error: the first read returns 0.
//!         file.seek(SeekFrom::Start(offset)).map_err(|e| AdapterError::io(path.display(), &e))?;
//!         Ok(FlatDirSource(file))
//!     }
//!
//!     fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
//!         let path = self.inner.path(server, backup, ".tar.gz");
//!         let metadata = fs::metadata(&path).map_err(|e| AdapterError::io(path.display(), &e))?;
//!         Ok(BackupInfo {
//!             backup: backup.to_string(),
//!             server: Some(server.to_string()),
//!             key: path.display().to_string(),
//!             size: metadata.len(),
//!             created_unix: metadata
//!                 .modified()
//!                 .ok()
//!                 .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
//!                 .map_or(0, |d| d.as_secs() as i64),
//!             sha1: None,
//!         })
//!     }
//!
//!     fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
//!         let folder = self.inner.directory.join(server);
//!         let entries = match fs::read_dir(&folder) {
//!             Ok(entries) => entries,
//!             Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
//!             Err(e) => return Err(AdapterError::io(folder.display(), &e)),
//!         };
//!         let mut found = Vec::new();
//!         for entry in entries {
//!             let entry = entry.map_err(|e| AdapterError::io(folder.display(), &e))?;
//!             let name = entry.file_name().to_string_lossy().into_owned();
//!             if let Some(backup) = name.strip_suffix(".tar.gz") {
//!                 found.push(self.stat(server, backup)?);
//!             }
//!         }
//!         found.sort_by(|a, b| a.backup.cmp(&b.backup));
//!         Ok(found)
//!     }
//!
//!     fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
//!         let path = self.inner.path(server, backup, ".tar.gz");
//!         fs::remove_file(&path).map_err(|e| AdapterError::io(path.display(), &e))
//!     }
//!
//!     fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
//!         let partial = self.inner.path(server, backup, ".partial");
//!         match fs::remove_file(&partial) {
//!             Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
//!                 Err(AdapterError::io(partial.display(), &e))
//!             }
//!             _ => Ok(()), // nothing to discard is success
//!         }
//!     }
//! }
//!
//! impl Sink for FlatDirSink {
//!     fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
//!         let file = self.file.as_mut().expect("the host never writes after finish or abort");
//!         file.write_all(bytes).map_err(|e| AdapterError::io("flatdir write", &e))
//!     }
//!
//!     fn finish(mut self, _sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
//!         let file = self.file.take().expect("finish runs once");
//!         let partial = self.inner.path(&self.server, &self.backup, ".partial");
//!         let done = self.inner.path(&self.server, &self.backup, ".tar.gz");
//!         let published = file
//!             .sync_all()
//!             .and_then(|()| fs::rename(&partial, &done))
//!             .map_err(|e| AdapterError::io(done.display(), &e));
//!         if published.is_err() {
//!             // The host does not call `abort` after a failed `finish`: clean up here.
//!             let _ = fs::remove_file(&partial);
//!         }
//!         published?;
//!         Ok(StoredBackup { key: done.display().to_string(), size, parts: Vec::new(), panel_completes: false })
//!     }
//!
//!     fn abort(mut self) -> Result<(), AdapterError> {
//!         drop(self.file.take());
//!         let partial = self.inner.path(&self.server, &self.backup, ".partial");
//!         fs::remove_file(&partial).map_err(|e| AdapterError::io(partial.display(), &e))
//!     }
//! }
//!
//! impl Drop for FlatDirSink {
//!     /// Neither `finish` nor `abort` ran (the file is still here): leave nothing behind.
//!     fn drop(&mut self) {
//!         if self.file.take().is_some() {
//!             let _ = fs::remove_file(self.inner.path(&self.server, &self.backup, ".partial"));
//!         }
//!     }
//! }
//!
//! impl Source for FlatDirSource {
//!     fn read(&mut self, buf: &mut [u8]) -> Result<usize, AdapterError> {
//!         self.0.read(buf).map_err(|e| AdapterError::io("flatdir read", &e))
//!     }
//! }
//!
//! // Once, at the crate root: the symbol the daemon loads.
//! aerie_adapter_api::export_adapter!(FlatDir);
//!
//! // A round trip through the real boundary, as a test of the crate would do it.
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aerie_adapter_api::host::{AdapterLibrary, Logger};
//! use aerie_adapter_api::abi::LogLevel;
//! struct Quiet;
//! impl Logger for Quiet {
//!     fn max_level(&self) -> LogLevel { LogLevel::WARN }
//!     fn log(&self, _: LogLevel, _: &str, _: &str) {}
//! }
//! let directory = std::env::temp_dir().join(format!("flatdir-guide-{}", std::process::id()));
//! let adapter = AdapterLibrary::linked::<FlatDir>().instantiate(
//!     &serde_json::json!({ "directory": directory }),
//!     &HostContext::default(),
//!     Arc::new(Quiet),
//! )?;
//! let (server, backup) = ("0f4e2d6c-8a1b-4c3d-9e5f-a7b9c1d3e5f7", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
//! let mut sink = adapter.begin_backup(server, backup)?;
//! sink.write(b"not really a tar.gz")?;
//! assert_eq!(adapter.stat(server, backup).unwrap_err().kind, aerie_adapter_api::ErrorKind::NOT_FOUND);
//! sink.finish("0000000000000000000000000000000000000000", 19)?;
//! assert_eq!(adapter.stat(server, backup)?.size, 19);
//! let mut tail = String::new();
//! adapter.open(server, backup, 15)?.read_to_string(&mut tail)?;
//! assert_eq!(tail, "r.gz");
//! assert_eq!(adapter.list(server)?.len(), 1);
//! adapter.delete(server, backup)?;
//! fs::remove_dir_all(&directory)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Loading it
//!
//! `cargo build --release` makes `target/release/libmy_tape_adapter.so`. An operator names
//! it in the plugins file (`plugins:` in aerie's `config.yml` gives its path):
//!
//! ```yaml
//! adapters:
//!   - name: tape            # what the Panel's `adapter` field selects
//!     library: /usr/lib/aerie/libmy_tape_adapter.so   # relative: from the plugins file's folder
//!     config: { endpoint: "tape0" }                   # handed to `Adapter::new` as JSON
//! ```
//!
//! One library may back several entries (two buckets, two directories): each entry is its
//! own instance of your type, but they share the library's statics. Load only libraries
//! from a directory only root can write: loading a library runs its code.
//!
//! # Lifecycle of every method
//!
//! Every call identifies a backup by `(server, backup)` and nothing else; the host never
//! hands you back a `key` you returned.
//!
//! | Method | When the host calls it | What it does with the answer |
//! |---|---|---|
//! | [`Adapter::new`] | Once per plugins entry, at start-up, before the daemon listens. `config` is the entry's `config:` mapping as JSON, **`null` when the entry has none** (and for the bundled default with no plugins file). | An error stops start-up with `<plugins file>: adapter "<name>" (<library>): <kind>: <your message>`. Use [`AdapterError::invalid_config`] naming the key ([`parse_config`] does). |
//! | [`Adapter::discard_incomplete`] | At start-up, once for each backup that was running when the daemon last stopped without finishing it (a crash, a kill); the backup is already marked failed. | An error is logged as a warning; start-up goes on. **Nothing to discard must be success**: it is called even when the crash came before `begin_backup`. |
//! | [`Adapter::stat`] | Before every `begin_backup` (a backup it finds is refused as 409; NOT_FOUND lets it start; any other error refuses the request with the kind's status). Before every restore, download and delete, to find the backup and its size. | `size` is the download's `Content-Length` and the restore's progress total: it must equal the bytes `open(.., 0)` reads. |
//! | [`Adapter::new_with_services`] (1.1) | Instead of `new`, by an aerie built against 1.1 or later, with the host's [`Services`]. The default calls `new`. | As `new`. |
//! | [`Adapter::begin_backup`] | Once per backup, on the job's thread, after the host has measured the tree (so a slow walk does not hold your connection open). | An error fails the backup (the Panel is told `successful: false`). Retried when `retryable`. |
//! | [`Sink::write`] | In order, from one thread at a time, in chunks of about 1 MiB (the last is smaller); never after an error from `write`. | An error stops the archive: the host then calls `abort`. Never retried (the bytes are not sent twice). |
//! | [`Sink::finish`] | Once after the last `write`, with the archive's SHA-1 (hex) and byte count. | Success makes the backup `completed` and is reported to the Panel; the `key` is only logged. An error fails the backup; **`abort` is not called after it** (the sink is consumed): clean up in `finish`. |
//! | [`Sink::abort`] | Instead of `finish`: after a failed `write`, a failed archive (a file that cannot be read), a cancel (the backup was deleted while running) or a shutdown. | An error is logged as a warning. Must leave nothing behind. |
//! | `Drop` of a sink | Only if neither `finish` nor `abort` ran (a host bug or a panic in the host's pipeline). | Discard what was written. |
//! | [`Adapter::open`] | Restore (`offset` 0), download (`offset` = the `Range` start, never past `stat`'s size as the host checks ranges against it first). | Retried when `retryable`. An `offset` at or past the end must succeed with a source whose first `read` returns 0 (as a file does), not fail. |
//! | [`Source::read`] | Until it returns 0, or until the host has the `size` bytes it expects; from one thread at a time (not always the same thread). | A source that ends before `stat`'s size fails the restore or download. |
//! | [`Adapter::list`] | On every `GET /api/servers/{server}/backups`. | Merged with the host's registry (see below). An error is logged and the registry's entries are listed alone. |
//! | [`Adapter::delete`] | On `DELETE /api/servers/{server}/backup/{uuid}`, after `stat` found the backup with you. | NOT_FOUND is a 404; other errors are the kind's status. The Panel calls this for retention too. |
//!
//! **`list`.** Return the backups you hold for `server`, in any order (the host sorts: newest
//! first by start time, an archive only you know by `created_unix`; a stable order of yours,
//! e.g. by uuid, is kept among equal times). Set [`BackupInfo::server`] when your storage
//! records it: entries filed under another server are dropped. A storage that does not
//! record servers (like Wings' flat directory) returns `server: None` for all it holds, and
//! the host shows them to every server, as it lets any server restore them. Entries the
//! host's registry already knows are not listed twice. Fill [`BackupInfo::sha1`] and
//! `created_unix` when you know them: the list shows them (as `checksum` and the times).
//!
//! **Which adapter is asked.** A backup the registry recorded is asked of the adapter that
//! stored it. Otherwise (an archive copied in from another node) a restore that names an
//! adapter asks only that one (when it is loaded); a download or a delete asks every adapter
//! in the plugins file's order until one finds it. An adapter's error other than NOT_FOUND is
//! logged with its name and the next adapter is asked; only when none finds the backup does
//! the request fail with that error's status.
//!
//! **`key`** ([`StoredBackup::key`], [`BackupInfo::key`]) is for people: the host logs it and
//! never parses it or passes it back. Put what an operator would look for: a path, an
//! object key, a tape label.
//!
//! **[`StoredBackup::parts`] and `panel_completes`**: leave `parts` empty and
//! `panel_completes` false unless you upload in parts to URLs the Panel presigned and want
//! the Panel to complete the upload (Wings' S3 mode; see the host services below).
//!
//! # Host services and hints (1.1)
//!
//! An aerie built against 1.1 or later creates your adapter with [`Adapter::new_with_services`]
//! and hands it [`Services`]: keep a clone. [`Services::presigned_upload_parts`] asks the
//! Panel for presigned UploadPart URLs (`GET /api/remote/backups/<uuid>?size=N`, with the
//! node's token), which is how the bundled s3 adapter's `mode: panel` writes into a bucket
//! whose credentials only the Panel has. Call it only from within a call the host made (it
//! blocks on the host's runtime). [`Services::offered`] is false under an older aerie:
//! refuse a config that needs the services with a message that says so.
//!
//! [`Services::backup_hints`] gives [`BackupHints`] about a running backup: today
//! `size_upper_bound`, the files' total from the host's walk plus tar's and gzip's worst-case
//! overhead (files that grow after the walk can still exceed it). Ask from a call the host
//! makes for that backup (`begin_backup`, `write`, `finish`): the host walks the tree beside
//! the archive, so the answer may wait for that walk (it reads no file, and ends long before
//! the archive). The s3 adapter asks when its first part is full. Hints are empty under an
//! older aerie.
//!
//! # Identifiers the host guarantees
//!
//! Both are checked before any call reaches you, so you may use them as path components or
//! object-key segments as they are:
//!
//! - `backup`: a canonical UUID, lowercase and hyphenated, 36 characters
//!   (`1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d`).
//! - `server`: 1 to 128 characters of `A-Z a-z 0-9 - _ .`, never starting with `.` (so never
//!   `.` or `..`, never containing `/`); in practice the Panel's server UUID.
//!
//! # Guarantees both ways
//!
//! The host promises:
//! - one sink per backup, ended by exactly one of `finish` or `abort`; bytes in order; no
//!   call on a sink after it ended;
//! - no two backups with the same uuid at once, and no `begin_backup` for a uuid `stat`
//!   finds;
//! - every call from a blocking thread of its own, never from inside an async runtime;
//! - calls of the same adapter instance at the same time from several threads (several
//!   backups, downloads and restores at once): [`Adapter`] is `Sync`;
//! - the identifier shapes above.
//!
//! You promise:
//! - nothing visible under the final name before `finish` returns: `stat`, `open` and
//!   `list` do not see a backup in progress;
//! - nothing left after `abort`, a dropped sink, or `discard_incomplete`;
//! - `stat`'s size equals the readable bytes, and `open` at an offset reads from there;
//! - NOT_FOUND (and only NOT_FOUND) for "there is no such backup", from `stat`, `open`
//!   and `delete`;
//! - memory bounded whatever the archive's size: stream, never hold a whole archive;
//! - no pruning of your own (see [retention](#retention-is-the-panels-job)).
//!
//! # Errors and what the host does with each
//!
//! Return an [`AdapterError`]: a kind, `retryable`, and a message for a person. The
//! [`ErrorKind`] decides what the host does:
//!
//! | Kind | Meaning | HTTP status of a request it fails | Otherwise |
//! |---|---|---|---|
//! | [`ErrorKind::NOT_FOUND`] | No such backup. | 404 `The requested backup was not found on this server.` | `stat`: a backup may start; another adapter is asked. |
//! | [`ErrorKind::ALREADY_EXISTS`] | A backup with this uuid is stored already. | 409 | |
//! | [`ErrorKind::STORAGE_FULL`] | No room (ENOSPC, a quota). | 507 | A backup's failure reason starts `the backup storage is full:`. |
//! | [`ErrorKind::UNAVAILABLE`] | The storage cannot be reached now (network, 503s). | 503, saying to try again | Usually `retryable`. |
//! | [`ErrorKind::PERMISSION_DENIED`] | The storage refused access (permissions, credentials). | 500 (the operator must fix it; the log says what) | |
//! | [`ErrorKind::INVALID_CONFIG`] | The configuration is unusable. | 500 | From `new`: start-up stops. |
//! | [`ErrorKind::OTHER`] and any code this host does not know | Anything else. | 500 | |
//!
//! The 500 answers carry Wings' generic words; the cause, with the adapter's name and kind,
//! is in the daemon's log, so messages may name paths and buckets.
//!
//! **`retryable`**: `begin_backup`, `stat` and `open` failing with `retryable: true` are
//! tried again, up to 4 attempts in all, pausing 0.25 s, 0.5 s then 1 s; each retry is
//! logged as a warning. Writes, `finish`, `abort`, `delete` and `list` are never retried by
//! the host: retry inside your adapter where that is safe (an S3 part upload). A Panel
//! report is retried by the host whatever you answer.
//!
//! **Messages.** Say what failed and where, in one clause, without your adapter's name or
//! an `error:` prefix: the host adds its own. A backup's failure reason (the registry's
//! `error`, the log line `backup failed`) reads `storage could not start the backup:
//! adapter "<name>" (<kind>): <message>`, `storage (<kind>): <message>` for a write,
//! `storage could not complete the backup: adapter "<name>" (<kind>): <message>` for
//! `finish`, and `the backup storage is full: <message>; the partial archive was discarded.
//! Free space there, or store backups elsewhere, and try again` for STORAGE_FULL. The
//! `(<kind>)` is left out for OTHER. [`AdapterError::io`] puts your context (a path) before
//! the I/O error and maps its kind.
//!
//! # Logging
//!
//! Log with `tracing`'s macros. Your library has its own copy of `tracing`, so this crate
//! installs a subscriber there that forwards each event to the host: events of your own
//! crate at every level the daemon keeps, your dependencies' at WARN and above. The host
//! writes them as its own lines with target `adapter`, your instance's name (`adapter="s3"`)
//! and your event's target (`from=`). Lines logged on the calling thread during a call land
//! inside the host's span for that work (`backup{backup=… server=…}`), so they carry the
//! backup's context; spans you open yourself do not cross. Threads you start log through the
//! first instance's logger. The daemon's level filter is read when your instance is
//! created. Do not print to stdout or stderr: the host owns them.
//!
//! # Threads and runtimes
//!
//! The interface is synchronous: block in your methods as long as the work takes. An adapter
//! that needs async I/O (an SDK on tokio) creates its own runtime in [`Adapter::new`], keeps
//! it in its `Inner`, and drives it with `block_on` (or channels) from the host's threads;
//! the host's runtime never crosses the boundary. Bound what you keep in flight (parts
//! uploaded in parallel, read-ahead buffers) so memory stays flat.
//!
//! # Panics
//!
//! Every call is guarded: a panic becomes an [`ErrorKind::OTHER`] error `the adapter
//! panicked: <message>` for that call (a backup fails, the daemon lives on), and the
//! message, with its file and line, becomes an ERROR line of the daemon's log in the call's
//! context, not raw text on stderr. A panic on a thread you started yourself is not guarded:
//! catch it there. Never build with `panic = "abort"`: a panic would then end the daemon.
//!
//! # Retention is the Panel's job
//!
//! The Panel keeps each server's backup limit and deletes the oldest backup through
//! `delete` when a new one would pass it. Do not prune, expire or rotate backups on your own
//! (no lifecycle rule that deletes finished backups either): the Panel would go on listing
//! backups that no longer exist, and its users would find out on the day they restore.
//! Cleaning up *incomplete* uploads (an S3 lifecycle rule for abandoned multipart uploads)
//! is fine and recommended.
//!
//! # Testing
//!
//! With `crate-type = ["cdylib", "rlib"]`, your tests link the adapter type and run it
//! through exactly the boundary code the daemon uses:
//! [`AdapterLibrary::linked::<YourAdapter>()`](crate::host::AdapterLibrary::linked), then
//! `instantiate(config, host, logger)`, as the round trip above does. The conformance suite
//! (feature `testkit`) runs the contract's checks against your type from your own tests, and
//! against your built `.so` with `aerie adapter-test --library PATH --config JSON` (exit 0
//! when every case passes). Note that `cargo test` does not build the `.so`: run
//! `cargo build` first when a test loads it.
//!
//! # Versioning
//!
//! The host checks at load time that your library was built against a compatible
//! `aerie-adapter-api` and that every type crossing the boundary has the same layout; a
//! mismatch is refused with one line that says to rebuild, never a crash. An adapter built
//! against 1.y loads in any aerie built against 1.x with x ≤ y: within 1.x the boundary only
//! grows at the end, and new methods come with defaults. The reverse holds too: an adapter
//! built against 1.0 loads in an aerie built against 1.1 (and is created with `new`, without
//! services), because the root module and the types it reaches never change; what 1.1 added
//! travels in a second, optional export (the extension module, see [`crate::abi`]) that
//! `export_adapter!` adds for you. Build against the oldest 1.x that has what you need, to
//! load in the most daemons. Error kinds are numbers, not an enum: a newer kind reaching an
//! older host is treated as OTHER.
//!
//! [`Adapter`]: crate::Adapter
//! [`Adapter::new`]: crate::Adapter::new
//! [`Adapter::begin_backup`]: crate::Adapter::begin_backup
//! [`Adapter::new_with_services`]: crate::Adapter::new_with_services
//! [`Services`]: crate::Services
//! [`Services::offered`]: crate::Services::offered
//! [`Services::presigned_upload_parts`]: crate::Services::presigned_upload_parts
//! [`Services::backup_hints`]: crate::Services::backup_hints
//! [`BackupHints`]: crate::BackupHints
//! [`Adapter::open`]: crate::Adapter::open
//! [`Adapter::stat`]: crate::Adapter::stat
//! [`Adapter::list`]: crate::Adapter::list
//! [`Adapter::delete`]: crate::Adapter::delete
//! [`Adapter::discard_incomplete`]: crate::Adapter::discard_incomplete
//! [`Sink`]: crate::Sink
//! [`Sink::write`]: crate::Sink::write
//! [`Sink::finish`]: crate::Sink::finish
//! [`Sink::abort`]: crate::Sink::abort
//! [`Source`]: crate::Source
//! [`Source::read`]: crate::Source::read
//! [`AdapterError`]: crate::AdapterError
//! [`AdapterError::io`]: crate::AdapterError::io
//! [`AdapterError::invalid_config`]: crate::AdapterError::invalid_config
//! [`ErrorKind`]: crate::ErrorKind
//! [`ErrorKind::NOT_FOUND`]: crate::ErrorKind::NOT_FOUND
//! [`ErrorKind::ALREADY_EXISTS`]: crate::ErrorKind::ALREADY_EXISTS
//! [`ErrorKind::STORAGE_FULL`]: crate::ErrorKind::STORAGE_FULL
//! [`ErrorKind::UNAVAILABLE`]: crate::ErrorKind::UNAVAILABLE
//! [`ErrorKind::PERMISSION_DENIED`]: crate::ErrorKind::PERMISSION_DENIED
//! [`ErrorKind::INVALID_CONFIG`]: crate::ErrorKind::INVALID_CONFIG
//! [`ErrorKind::OTHER`]: crate::ErrorKind::OTHER
//! [`parse_config`]: crate::parse_config
//! [`BackupInfo::server`]: crate::BackupInfo::server
//! [`BackupInfo::sha1`]: crate::BackupInfo::sha1
//! [`BackupInfo::key`]: crate::BackupInfo::key
//! [`StoredBackup::key`]: crate::StoredBackup::key
//! [`StoredBackup::parts`]: crate::StoredBackup::parts

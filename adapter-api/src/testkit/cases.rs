//! The cases of the conformance suite, one function each, in the order they run.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use sha1::Digest;

use super::support::{
    describe, expect_kind, hex, new_backup_id, read_back, read_to_end, resident_bytes, same,
    sha1_hex, store, Pattern, StreamHash, Verifier, CHUNK,
};
use super::{instantiate, Config, Outcome};
use crate::abi::LogLevel;
use crate::error::{AdapterError, ErrorKind};
use crate::helpers::TestLogger;
use crate::host::{AdapterLibrary, LoadedAdapter, Logger};

/// Every case, in the order they run.
pub const CASES: &[&str] = &[
    "round_trip",
    "read_at_offset",
    "stat_size",
    "invisible_before_finish",
    "abort_leaves_nothing",
    "dropped_sink_leaves_nothing",
    "already_exists",
    "not_found",
    "discard_incomplete",
    "concurrent_backups",
    "large_stream",
    "panics_become_errors",
];

/// The methods an adapter that panics on request panics in, for server id `panic-<method>`
/// (`drop` is a sink dropped without `finish` or `abort`).
pub const PANICKING_METHODS: &[&str] = &[
    "begin_backup",
    "write",
    "finish",
    "abort",
    "drop",
    "open",
    "read",
    "stat",
    "list",
    "delete",
    "discard_incomplete",
];

/// The size of most cases' backups: more than one 5 MiB part (S3's smallest), and not a
/// multiple of any block or buffer size.
const BACKUP_BYTES: usize = 6 * CHUNK + 12_345;

/// Backups written at once by `concurrent_backups`: more than the 2 cores of a small node.
const CONCURRENT_BACKUPS: usize = 4;

/// How often residue is looked at while waiting for it to go.
const RESIDUE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// One run of the suite: the library under test, its config and the logger it logs to.
pub(super) struct Suite {
    pub library: AdapterLibrary,
    pub config: Config,
    pub logger: Arc<TestLogger>,
}

type CaseResult = Result<(), String>;

impl Suite {
    /// Runs case `name` on a fresh adapter instance.
    pub fn run(&self, name: &str) -> Outcome {
        if name == "panics_become_errors" && !self.config.panics {
            return Outcome::Skipped(
                "applies only to adapters that panic on request (like aerie's fixture adapter)"
                    .to_string(),
            );
        }
        let result = self.adapter(&self.config.adapter).and_then(|adapter| {
            let case = Case {
                suite: self,
                adapter: &adapter,
                server: &self.config.server,
            };
            match name {
                "round_trip" => case.round_trip(),
                "read_at_offset" => case.read_at_offset(),
                "stat_size" => case.stat_size(),
                "invisible_before_finish" => case.invisible_before_finish(),
                "abort_leaves_nothing" => case.abort_leaves_nothing(),
                "dropped_sink_leaves_nothing" => case.dropped_sink_leaves_nothing(),
                "already_exists" => case.already_exists(),
                "not_found" => case.not_found(),
                "discard_incomplete" => case.discard_incomplete(),
                "concurrent_backups" => case.concurrent_backups(),
                "large_stream" => case.large_stream(),
                "panics_become_errors" => case.panics_become_errors(),
                other => Err(format!("no case called {other}")),
            }
        });
        match result {
            Ok(()) => Outcome::Passed,
            Err(why) => Outcome::Failed(why),
        }
    }

    fn adapter(&self, config: &serde_json::Value) -> Result<LoadedAdapter, String> {
        instantiate(&self.library, config, &self.config.host, &self.logger)
    }

    /// The adapter's config with `"panic_on_request": what` added.
    fn panicking_config(&self, what: &str) -> Result<serde_json::Value, String> {
        let mut config = match &self.config.adapter {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(map) => map.clone(),
            _ => return Err("the adapter's config is not a mapping".to_string()),
        };
        config.insert("panic_on_request".to_string(), what.into());
        Ok(config.into())
    }
}

/// One case's adapter instance and server.
struct Case<'a> {
    suite: &'a Suite,
    adapter: &'a LoadedAdapter,
    server: &'a str,
}

impl Case<'_> {
    /// A backup stored, read back whole, deleted, and gone.
    fn round_trip(&self) -> CaseResult {
        let data = Pattern { seed: 1 }.bytes(BACKUP_BYTES);
        let id = new_backup_id();
        store(self.adapter, self.server, &id, &data)?;
        let read = read_back(self.adapter, self.server, &id, 0, data.len())?;
        same("read back from offset 0", &read, &data)?;
        self.adapter
            .delete(self.server, &id)
            .map_err(|e| format!("delete: {}", describe(&e)))?;
        expect_kind(
            self.adapter.stat(self.server, &id),
            ErrorKind::NOT_FOUND,
            "stat after delete",
        )
    }

    /// Opening at an offset gives exactly the bytes from there to the end (none at the end).
    fn read_at_offset(&self) -> CaseResult {
        let data = Pattern { seed: 2 }.bytes(BACKUP_BYTES);
        let id = new_backup_id();
        store(self.adapter, self.server, &id, &data)?;
        let len = data.len();
        for offset in [1, 4096, 5 * CHUNK, len / 2, len - 1, len] {
            let read = read_back(self.adapter, self.server, &id, offset as u64, len)?;
            same(
                &format!("read from offset {offset}"),
                &read,
                &data[offset..],
            )?;
        }
        self.cleanup(&id);
        Ok(())
    }

    /// `stat` says the size that can be read, the backup's id, and the SHA-1 if any.
    fn stat_size(&self) -> CaseResult {
        let data = Pattern { seed: 3 }.bytes(BACKUP_BYTES);
        let id = new_backup_id();
        store(self.adapter, self.server, &id, &data)?;
        let info = self
            .adapter
            .stat(self.server, &id)
            .map_err(|e| format!("stat: {}", describe(&e)))?;
        let readable = read_back(self.adapter, self.server, &id, 0, 2 * data.len())?.len();
        if info.size != readable as u64 {
            return Err(format!(
                "stat says {} bytes, but {readable} bytes can be read",
                info.size
            ));
        }
        if info.backup != id {
            return Err(format!(
                "stat names the backup {:?}, not {id:?}",
                info.backup
            ));
        }
        if let Some(sha1) = info.sha1.as_deref() {
            if sha1 != sha1_hex(&data) {
                return Err(format!(
                    "stat says SHA-1 {sha1}, finish was given {}",
                    sha1_hex(&data)
                ));
            }
        }
        let listed = self.listed(&id)?;
        match listed {
            Some(size) if size == readable as u64 => {}
            Some(size) => return Err(format!("list says {size} bytes, {readable} can be read")),
            None => return Err("list does not include a finished backup".to_string()),
        }
        self.cleanup(&id);
        Ok(())
    }

    /// A backup being written cannot be seen (stat, open, list) until `finish` returns.
    fn invisible_before_finish(&self) -> CaseResult {
        let data = Pattern { seed: 4 }.bytes(BACKUP_BYTES);
        let id = new_backup_id();
        let mut sink = self
            .adapter
            .begin_backup(self.server, &id)
            .map_err(|e| format!("begin_backup: {}", describe(&e)))?;
        for piece in data.chunks(CHUNK) {
            sink.write(piece)
                .map_err(|e| format!("write: {}", describe(&e)))?;
        }
        let absent = self.absent(&id, "before finish");
        let finished = sink
            .finish(&sha1_hex(&data), data.len() as u64)
            .map_err(|e| format!("finish: {}", describe(&e)));
        absent?;
        finished?;
        self.adapter
            .stat(self.server, &id)
            .map_err(|e| format!("stat after finish: {}", describe(&e)))?;
        self.cleanup(&id);
        Ok(())
    }

    /// After `abort`: nothing to see, nothing left in storage, and the id can be used again.
    fn abort_leaves_nothing(&self) -> CaseResult {
        self.unfinished_leaves_nothing("abort", |sink| {
            sink.abort().map_err(|e| format!("abort: {}", describe(&e)))
        })
    }

    /// A sink dropped without `finish` or `abort` leaves nothing either.
    fn dropped_sink_leaves_nothing(&self) -> CaseResult {
        self.unfinished_leaves_nothing("a dropped sink", |sink| {
            drop(sink);
            Ok(())
        })
    }

    fn unfinished_leaves_nothing(
        &self,
        what: &str,
        end: impl FnOnce(crate::host::SinkHandle) -> CaseResult,
    ) -> CaseResult {
        let data = Pattern { seed: 5 }.bytes(BACKUP_BYTES);
        let id = new_backup_id();
        let before = self.residue();
        let mut sink = self
            .adapter
            .begin_backup(self.server, &id)
            .map_err(|e| format!("begin_backup: {}", describe(&e)))?;
        for piece in data.chunks(CHUNK) {
            sink.write(piece)
                .map_err(|e| format!("write: {}", describe(&e)))?;
        }
        end(sink)?;
        let after = format!("after {what}");
        self.absent(&id, &after)?;
        self.no_residue(before, &after)?;
        store(self.adapter, self.server, &id, &data)
            .map_err(|e| format!("storing the same id again {after}: {e}"))?;
        let read = read_back(self.adapter, self.server, &id, 0, data.len())?;
        same(&format!("the backup stored again {after}"), &read, &data)?;
        self.cleanup(&id);
        Ok(())
    }

    /// A second backup with a stored backup's id is refused with ALREADY_EXISTS (at
    /// `begin_backup` or at `finish`), and the first stays whole.
    fn already_exists(&self) -> CaseResult {
        let first = Pattern { seed: 6 }.bytes(BACKUP_BYTES);
        let second = Pattern { seed: 7 }.bytes(CHUNK);
        let id = new_backup_id();
        store(self.adapter, self.server, &id, &first)?;
        let refused = match self.adapter.begin_backup(self.server, &id) {
            Err(err) => Err(err),
            Ok(mut sink) => match sink.write(&second) {
                Err(err) => Err(err),
                Ok(()) => sink
                    .finish(&sha1_hex(&second), second.len() as u64)
                    .map(drop),
            },
        };
        expect_kind(
            refused,
            ErrorKind::ALREADY_EXISTS,
            "a second backup with the same id",
        )?;
        let read = read_back(self.adapter, self.server, &id, 0, first.len())?;
        same(
            "the first backup after the second was refused",
            &read,
            &first,
        )?;
        self.cleanup(&id);
        Ok(())
    }

    /// `stat`, `open` and `delete` of a backup that was never stored say NOT_FOUND.
    fn not_found(&self) -> CaseResult {
        let id = new_backup_id();
        let failures: Vec<String> = [
            expect_kind(
                self.adapter.stat(self.server, &id),
                ErrorKind::NOT_FOUND,
                "stat",
            ),
            expect_kind(
                self.adapter.open(self.server, &id, 0),
                ErrorKind::NOT_FOUND,
                "open",
            ),
            expect_kind(
                self.adapter.delete(self.server, &id),
                ErrorKind::NOT_FOUND,
                "delete",
            ),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// `discard_incomplete` succeeds when there is nothing to discard, never touches a
    /// finished backup, and removes what a sink that was never ended left.
    fn discard_incomplete(&self) -> CaseResult {
        let unknown = new_backup_id();
        self.adapter
            .discard_incomplete(self.server, &unknown)
            .map_err(|e| {
                format!(
                    "discard_incomplete of a backup never begun: {}",
                    describe(&e)
                )
            })?;

        let data = Pattern { seed: 8 }.bytes(BACKUP_BYTES);
        let finished = new_backup_id();
        store(self.adapter, self.server, &finished, &data)?;
        self.adapter
            .discard_incomplete(self.server, &finished)
            .map_err(|e| format!("discard_incomplete of a finished backup: {}", describe(&e)))?;
        let read = read_back(self.adapter, self.server, &finished, 0, data.len())
            .map_err(|e| format!("after discard_incomplete of a finished backup: {e}"))?;
        same("a finished backup after discard_incomplete", &read, &data)?;

        // A crash: the sink is never ended (forgotten, so its Drop never runs either).
        let before = self.residue();
        let crashed = new_backup_id();
        let mut sink = self
            .adapter
            .begin_backup(self.server, &crashed)
            .map_err(|e| format!("begin_backup: {}", describe(&e)))?;
        for piece in data.chunks(CHUNK) {
            sink.write(piece)
                .map_err(|e| format!("write: {}", describe(&e)))?;
        }
        std::mem::forget(sink);
        self.adapter
            .discard_incomplete(self.server, &crashed)
            .map_err(|e| format!("discard_incomplete of a sink never ended: {}", describe(&e)))?;
        let after = "after discard_incomplete of a sink never ended";
        self.absent(&crashed, after)?;
        self.no_residue(before, after)?;
        self.cleanup(&finished);
        Ok(())
    }

    /// Several backups written at the same time, interleaved, each read back as written.
    fn concurrent_backups(&self) -> CaseResult {
        let ids: Vec<String> = (0..CONCURRENT_BACKUPS).map(|_| new_backup_id()).collect();
        let begun = Barrier::new(CONCURRENT_BACKUPS);
        let written = Barrier::new(CONCURRENT_BACKUPS);
        let results: Vec<CaseResult> = std::thread::scope(|scope| {
            let threads: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let (begun, written) = (&begun, &written);
                    scope.spawn(move || {
                        let data = Pattern {
                            seed: 100 + i as u64,
                        }
                        .bytes(2 * CHUNK + 1000 * i);
                        let sink = self.adapter.begin_backup(self.server, id);
                        begun.wait();
                        let mut sink =
                            sink.map_err(|e| format!("begin_backup {id}: {}", describe(&e)));
                        if let Ok(sink) = sink.as_mut() {
                            for piece in data.chunks(CHUNK / 4) {
                                if let Err(e) = sink.write(piece) {
                                    written.wait();
                                    return Err(format!("write {id}: {}", describe(&e)));
                                }
                            }
                        }
                        written.wait();
                        sink?
                            .finish(&sha1_hex(&data), data.len() as u64)
                            .map_err(|e| format!("finish {id}: {}", describe(&e)))?;
                        let read = read_back(self.adapter, self.server, id, 0, data.len())?;
                        same(&format!("backup {i} of {CONCURRENT_BACKUPS}"), &read, &data)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err("a backup's thread panicked".into()))
                })
                .collect()
        });
        for id in &ids {
            self.cleanup(id);
        }
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// [`Config::stream_bytes`] written and read back 1 MiB at a time while the process's
    /// resident memory grows by no more than [`Config::memory_limit`].
    fn large_stream(&self) -> CaseResult {
        let config = &self.suite.config;
        let total = config.stream_bytes;
        let pattern = Pattern { seed: 9 };
        let id = new_backup_id();
        let mut buf = vec![0; CHUNK];
        let baseline = resident_bytes()?;
        let mut peak = baseline;
        let started = Instant::now();
        let mut sink = self
            .adapter
            .begin_backup(self.server, &id)
            .map_err(|e| format!("begin_backup: {}", describe(&e)))?;
        let mut hash = StreamHash::new();
        let mut written = 0u64;
        let mut index = 0;
        while written < total {
            let n = (total - written).min(CHUNK as u64) as usize;
            pattern.fill(index, &mut buf[..n]);
            hash.update(&buf[..n]);
            sink.write(&buf[..n])
                .map_err(|e| format!("write at byte {written}: {}", describe(&e)))?;
            written += n as u64;
            index += 1;
            peak = peak.max(resident_bytes()?);
        }
        sink.finish(&hex(&hash.finalize()), total)
            .map_err(|e| format!("finish: {}", describe(&e)))?;
        let wrote_in = started.elapsed();
        let mut source = self
            .adapter
            .open(self.server, &id, 0)
            .map_err(|e| format!("open: {}", describe(&e)))?;
        let mut verifier = Verifier::new(pattern);
        loop {
            let n = source
                .read(&mut buf)
                .map_err(|e| format!("read at byte {}: {e}", verifier.position))?;
            if n == 0 {
                break;
            }
            verifier.check(&buf[..n])?;
            if verifier.position > total {
                return Err(format!("read more than the {total} bytes stored"));
            }
            peak = peak.max(resident_bytes()?);
        }
        drop(source);
        if verifier.position != total {
            return Err(format!("read back {} bytes of {total}", verifier.position));
        }
        self.cleanup(&id);
        let growth = peak.saturating_sub(baseline);
        let mib = |bytes: u64| bytes >> 20;
        self.suite.logger.log(LogLevel::INFO, "testkit", &format!(
            "large_stream: {} MiB written in {wrote_in:?}, read in {:?}; resident memory grew by {} MiB",
            mib(total),
            started.elapsed() - wrote_in,
            mib(growth)
        ));
        if growth > config.memory_limit {
            return Err(format!(
                "resident memory grew by {} MiB while streaming {} MiB (the limit is {} MiB)",
                mib(growth),
                mib(total),
                mib(config.memory_limit)
            ));
        }
        Ok(())
    }

    /// A panic in `new` and in every method ([`PANICKING_METHODS`]) is an error for that
    /// call, and the instance works on afterwards.
    fn panics_become_errors(&self) -> CaseResult {
        let mut failures = Vec::new();
        let new_config = self.suite.panicking_config("new")?;
        match self.suite.library.instantiate(
            &new_config,
            &self.suite.config.host,
            self.suite.logger.clone(),
        ) {
            Err(err) => failures.extend(not_a_panic("new", &err)),
            Ok(_) => failures.push("new: did not panic when asked to".to_string()),
        }
        let adapter = self
            .suite
            .adapter(&self.suite.panicking_config("methods")?)?;
        let data = Pattern { seed: 10 }.bytes(CHUNK);
        for &method in PANICKING_METHODS {
            let server = format!("panic-{method}");
            match panic_in(&adapter, &server, method, &data) {
                Ok(None) => {}
                Ok(Some(err)) => failures.extend(not_a_panic(method, &err)),
                Err(why) => failures.push(format!("{method}: {why}")),
            }
        }
        let id = new_backup_id();
        store(&adapter, self.server, &id, &data)
            .and_then(|_| read_back(&adapter, self.server, &id, 0, data.len()))
            .and_then(|read| same("a backup after the panics", &read, &data))
            .map_err(|e| format!("the adapter after its panics: {e}"))
            .unwrap_or_else(|e| failures.push(e));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Whether `backup` cannot be seen through `stat`, `open` or `list`.
    fn absent(&self, id: &str, when: &str) -> CaseResult {
        expect_kind(
            self.adapter.stat(self.server, id),
            ErrorKind::NOT_FOUND,
            &format!("stat {when}"),
        )?;
        expect_kind(
            self.adapter.open(self.server, id, 0),
            ErrorKind::NOT_FOUND,
            &format!("open {when}"),
        )?;
        match self.listed(id)? {
            None => Ok(()),
            Some(_) => Err(format!("list includes the backup {when}")),
        }
    }

    /// The size `list` gives for `id`, if it lists it.
    fn listed(&self, id: &str) -> Result<Option<u64>, String> {
        let all = self
            .adapter
            .list(self.server)
            .map_err(|e| format!("list: {}", describe(&e)))?;
        Ok(all
            .into_iter()
            .find(|info| info.backup == id)
            .map(|info| info.size))
    }

    /// What the storage holds now, when the config says how to look.
    fn residue(&self) -> Option<BTreeSet<String>> {
        self.suite
            .config
            .residue
            .as_ref()
            .map(|list| list().into_iter().collect())
    }

    /// Waits (within the residue guard) until the storage holds nothing that was not in
    /// `before`.
    fn no_residue(&self, before: Option<BTreeSet<String>>, when: &str) -> CaseResult {
        let Some(before) = before else {
            return Ok(());
        };
        let started = Instant::now();
        loop {
            let extra: Vec<String> = self
                .residue()
                .unwrap_or_default()
                .difference(&before)
                .cloned()
                .collect();
            if extra.is_empty() {
                return Ok(());
            }
            if started.elapsed() > self.suite.config.residue_guard {
                return Err(format!(
                    "{when}, the storage still holds {extra:?} (waited {:?})",
                    self.suite.config.residue_guard
                ));
            }
            std::thread::sleep(RESIDUE_POLL);
        }
    }

    /// Deletes a backup a case made, when the case is over (its result is not the case's).
    fn cleanup(&self, id: &str) {
        let _ = self.adapter.delete(self.server, id);
    }
}

/// Calls `method` in a way that reaches it for server `server`; `Ok(Some(err))` is the
/// error the panicking call gave, `Ok(None)` a `drop` that the process survived.
fn panic_in(
    adapter: &LoadedAdapter,
    server: &str,
    method: &str,
    data: &[u8],
) -> Result<Option<AdapterError>, String> {
    let id = new_backup_id();
    let begin = || {
        let mut sink = adapter
            .begin_backup(server, &id)
            .map_err(|e| format!("begin_backup (which should not panic): {}", describe(&e)))?;
        sink.write(data)
            .map_err(|e| format!("write (which should not panic): {}", describe(&e)))?;
        Ok::<_, String>(sink)
    };
    let result = match method {
        "begin_backup" => adapter.begin_backup(server, &id).map(drop),
        "write" => {
            let mut sink = adapter
                .begin_backup(server, &id)
                .map_err(|e| format!("begin_backup (which should not panic): {}", describe(&e)))?;
            let result = sink.write(data);
            let _ = sink.abort();
            result
        }
        "finish" => begin()?
            .finish(&sha1_hex(data), data.len() as u64)
            .map(drop),
        "abort" => begin()?.abort(),
        "drop" => {
            drop(begin()?);
            return Ok(None);
        }
        "open" => adapter.open(server, &id, 0).map(drop),
        "read" => {
            store(adapter, server, &id, data)?;
            let source = adapter
                .open(server, &id, 0)
                .map_err(|e| format!("open (which should not panic): {}", describe(&e)))?;
            let result = read_to_end(source, data.len());
            let _ = adapter.delete(server, &id);
            return match result {
                Err(message) => Ok(Some(AdapterError::other(message))),
                Ok(_) => Err("did not panic when asked to".to_string()),
            };
        }
        "stat" => adapter.stat(server, &id).map(drop),
        "list" => adapter.list(server).map(drop),
        "delete" => adapter.delete(server, &id),
        "discard_incomplete" => adapter.discard_incomplete(server, &id),
        other => return Err(format!("no method called {other}")),
    };
    match result {
        Err(err) => Ok(Some(err)),
        Ok(()) => Err("did not panic when asked to".to_string()),
    }
}

/// A failure unless `err` is the error a guarded panic becomes.
fn not_a_panic(method: &str, err: &AdapterError) -> Option<String> {
    (!err.message.contains("panicked")).then(|| {
        format!(
            "{method}: wanted the error of a panic, got {}",
            describe(err)
        )
    })
}

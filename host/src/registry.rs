//! The durable record of backups: one SQLite database in `system.root_directory`, so that a
//! duplicate uuid is refused and a backup's status can be read across restarts. It also keeps
//! the one-time download ids already used, so that a restart does not make a link good again.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

/// The database file's name inside `system.root_directory`.
pub const DATABASE_FILE: &str = "aerie.sqlite3";

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being made now.
    Running,
    /// Stored whole.
    Completed,
    /// Ended without a stored archive.
    Failed,
}

impl State {
    fn parse(text: &str) -> Self {
        match text {
            "running" => State::Running,
            "completed" => State::Completed,
            _ => State::Failed,
        }
    }
}

/// One backup as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// The backup's uuid.
    pub uuid: String,
    /// Its server.
    pub server: String,
    /// The name of the adapter that stores it.
    pub adapter: String,
    /// Where it is in its life.
    pub state: State,
    /// SHA-1 of the archive (hex), once completed.
    pub checksum: Option<String>,
    /// Archive size in bytes, once completed.
    pub size: Option<u64>,
    /// Bytes of the server's files archived, when it ended.
    pub bytes_done: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339 time it started.
    pub started_at: String,
    /// RFC 3339 time it ended.
    pub finished_at: Option<String>,
}

/// A report the Panel has not accepted yet: a path under `<remote>/api/remote` and its
/// JSON body. Kept in the registry until the Panel accepts it, so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Its id, for an operator who wants to drop it.
    pub id: i64,
    /// The backup it is about.
    pub backup: String,
    /// E.g. `/backups/<uuid>` (appended to `<remote>/api/remote`).
    pub path: String,
    /// The JSON body.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When to try next, in Unix milliseconds.
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: String,
}

/// A report to queue: `(backup, path, JSON body)`.
pub type NewNotification<'a> = (&'a str, &'a str, &'a str);

/// Why a uuid could not be reserved.
#[derive(Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// A backup with this uuid is running or stored.
    Taken(State),
    /// The database failed.
    Database(String),
}

/// The registry; cheap to share behind an `Arc`. Calls are short and synchronous: each is
/// one indexed statement or a one-row transaction, a handful per backup or request. They
/// run on the thread that calls them, async workers included, rather than through
/// `spawn_blocking`: a commit in WAL mode is one append and one fsync of the WAL, no longer
/// than the fsyncs a backup makes anyway, and a thread hop per call would cost every
/// request more than it saves. A registry on a disk slow enough to matter is a fault an
/// operator sees in the logs (each job logs its duration).
pub struct Registry {
    connection: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS backups (
    uuid        TEXT PRIMARY KEY,
    server      TEXT NOT NULL,
    adapter     TEXT NOT NULL,
    state       TEXT NOT NULL,
    checksum    TEXT,
    size        INTEGER,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS backups_by_server ON backups (server, started_at);
CREATE TABLE IF NOT EXISTS notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    backup          TEXT NOT NULL,
    path            TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL
);
";

/// The one-time download ids used, each until its token's `exp` (Unix seconds); created on
/// its own so that the table can be read apart from the backups'.
const DOWNLOAD_IDS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS used_download_ids (
    unique_id  TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS used_download_ids_by_expiry ON used_download_ids (expires_at);
";

const COLUMNS: &str =
    "uuid, server, adapter, state, checksum, size, bytes_done, error, started_at, finished_at";

fn record(row: &Row<'_>) -> rusqlite::Result<BackupRecord> {
    Ok(BackupRecord {
        uuid: row.get(0)?,
        server: row.get(1)?,
        adapter: row.get(2)?,
        state: State::parse(&row.get::<_, String>(3)?),
        checksum: row.get(4)?,
        size: row.get::<_, Option<i64>>(5)?.map(|s| s as u64),
        bytes_done: row.get::<_, i64>(6)? as u64,
        error: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

const NOTIFICATION_COLUMNS: &str =
    "id, backup, path, body, attempts, next_attempt_ms, last_error, created_at";

fn notification(row: &Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: row.get(0)?,
        backup: row.get(1)?,
        path: row.get(2)?,
        body: row.get(3)?,
        attempts: row.get(4)?,
        next_attempt_ms: row.get(5)?,
        last_error: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn insert_notification(
    c: &Connection,
    (backup, path, body): NewNotification<'_>,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO notifications (backup, path, body, next_attempt_ms, created_at)
         VALUES (?1, ?2, ?3, 0, ?4)",
        params![backup, path, body, now()],
    )
    .map(drop)
}

/// The current time as RFC 3339 UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats")
}

impl Registry {
    /// Opens (creating if needed) the registry in `root_directory`.
    pub fn open(root_directory: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root_directory)
            .with_context(|| format!("cannot create {}", root_directory.display()))?;
        let path = root_directory.join(DATABASE_FILE);
        let connection = Connection::open(&path)
            .with_context(|| format!("cannot open the registry {}", path.display()))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| connection.pragma_update(None, "synchronous", "FULL"))
            .with_context(|| format!("cannot set up the registry {}", path.display()))?;
        migrate(&connection).with_context(|| format!("registry {}", path.display()))?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let connection = self.connection.lock().expect("registry lock");
        f(&connection).context("registry query failed")
    }

    /// Records a new running backup, unless the uuid is running or completed already; a
    /// failed backup's uuid may be used again.
    pub fn reserve(&self, uuid: &str, server: &str, adapter: &str) -> Result<(), ReserveError> {
        let connection = self.connection.lock().expect("registry lock");
        let existing: Option<String> = connection
            .query_row("SELECT state FROM backups WHERE uuid = ?1", [uuid], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| ReserveError::Database(e.to_string()))?;
        if let Some(state) = existing.map(|s| State::parse(&s)) {
            if state != State::Failed {
                return Err(ReserveError::Taken(state));
            }
        }
        connection
            .execute(
                "INSERT OR REPLACE INTO backups (uuid, server, adapter, state, started_at)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![uuid, server, adapter, now()],
            )
            .map_err(|e| ReserveError::Database(e.to_string()))?;
        Ok(())
    }

    /// Marks a backup completed and, in the same transaction, queues the report for the
    /// Panel: a crash can lose neither without the other.
    pub fn complete(
        &self,
        uuid: &str,
        checksum: &str,
        size: u64,
        bytes_done: u64,
        report: Option<NewNotification<'_>>,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE backups SET state = 'completed', checksum = ?2, size = ?3,
                 bytes_done = ?4, error = NULL, finished_at = ?5 WHERE uuid = ?1",
                params![uuid, checksum, size as i64, bytes_done as i64, now()],
            )?;
            if let Some(report) = report {
                insert_notification(&tx, report)?;
            }
            tx.commit()
        })
    }

    /// Marks a backup failed, with the reason, and queues the report (one transaction).
    pub fn fail(
        &self,
        uuid: &str,
        error: &str,
        bytes_done: u64,
        report: Option<NewNotification<'_>>,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "UPDATE backups SET state = 'failed', error = ?2, bytes_done = ?3,
                 finished_at = ?4 WHERE uuid = ?1",
                params![uuid, error, bytes_done as i64, now()],
            )?;
            if let Some(report) = report {
                insert_notification(&tx, report)?;
            }
            tx.commit()
        })
    }

    /// Reports due at `now_ms`, oldest first.
    pub fn due_notifications(&self, now_ms: i64) -> anyhow::Result<Vec<Notification>> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications
                 WHERE next_attempt_ms <= ?1 ORDER BY id"
            ))?;
            let rows = statement.query_map([now_ms], notification)?;
            rows.collect()
        })
    }

    /// Every queued report.
    pub fn notifications(&self) -> anyhow::Result<Vec<Notification>> {
        self.due_notifications(i64::MAX)
    }

    /// When the next queued report is due, if any.
    pub fn next_notification_due(&self) -> anyhow::Result<Option<i64>> {
        self.with(|c| {
            c.query_row("SELECT MIN(next_attempt_ms) FROM notifications", [], |r| {
                r.get(0)
            })
        })
    }

    /// Removes a report (the Panel accepted or finally refused it, or an operator dropped
    /// it); false if there was none with this id.
    pub fn remove_notification(&self, id: i64) -> anyhow::Result<bool> {
        self.with(|c| c.execute("DELETE FROM notifications WHERE id = ?1", [id]))
            .map(|n| n > 0)
    }

    /// How many reports are queued, and when the oldest was queued (RFC 3339), for the
    /// metrics: one indexed query, whatever the queue's length.
    pub fn notification_backlog(&self) -> anyhow::Result<(u64, Option<String>)> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*), (SELECT created_at FROM notifications ORDER BY id LIMIT 1)
                 FROM notifications",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
        })
    }

    /// Records a failed attempt and when to try again.
    pub fn retry_notification_later(
        &self,
        id: i64,
        next_attempt_ms: i64,
        error: &str,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = ?2,
                 last_error = ?3 WHERE id = ?1",
                params![id, next_attempt_ms, error],
            )
        })
        .map(drop)
    }

    /// Records a failed round for every queued report (the Panel could not be reached at
    /// all) and schedules them all for `next_attempt_ms`, so they go out together, oldest
    /// first, when the Panel is back.
    pub fn retry_all_notifications_later(
        &self,
        next_attempt_ms: i64,
        error: &str,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = ?1,
                 last_error = ?2",
                params![next_attempt_ms, error],
            )
        })
        .map(drop)
    }

    /// Forgets a backup (after it was deleted), and its last verification.
    pub fn remove(&self, uuid: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM backups WHERE uuid = ?1", [uuid])?;
            c.execute("DELETE FROM verifications WHERE uuid = ?1", [uuid])
        })
        .map(drop)
    }

    /// The backup with this uuid.
    pub fn get(&self, uuid: &str) -> anyhow::Result<Option<BackupRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM backups WHERE uuid = ?1"),
                [uuid],
                record,
            )
            .optional()
        })
    }

    /// The backups of `server`, newest first.
    pub fn list(&self, server: &str) -> anyhow::Result<Vec<BackupRecord>> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {COLUMNS} FROM backups WHERE server = ?1
                 ORDER BY started_at DESC, rowid DESC"
            ))?;
            let rows = statement.query_map([server], record)?;
            rows.collect()
        })
    }

    /// Every server's backups, newest first.
    pub fn list_all(&self) -> anyhow::Result<Vec<BackupRecord>> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {COLUMNS} FROM backups ORDER BY started_at DESC, rowid DESC"
            ))?;
            let rows = statement.query_map([], record)?;
            rows.collect()
        })
    }

    /// Backups recorded as running: at start-up, the ones a previous run left unfinished.
    pub fn running(&self) -> anyhow::Result<Vec<BackupRecord>> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {COLUMNS} FROM backups WHERE state = 'running'"
            ))?;
            let rows = statement.query_map([], record)?;
            rows.collect()
        })
    }
}

/// One-time download links: the `unique_id`s already spent, kept until their token expires
/// (after which the token is refused anyway) and forgotten then, so the table stays as small
/// as the number of links alive.
impl Registry {
    /// Claims `unique_id` for a download until `expires_at` (Unix seconds), after forgetting
    /// the ids whose tokens expired by `now`: true if it was free and is now taken, false if
    /// it was already taken. The insert is the claim: of two concurrent claims, one wins.
    pub fn claim_download_id(
        &self,
        unique_id: &str,
        expires_at: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM used_download_ids WHERE expires_at <= ?1",
                [now],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO used_download_ids (unique_id, expires_at) VALUES (?1, ?2)",
                params![unique_id, expires_at],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
    }

    /// Gives a claim back: the download it was for could not start.
    pub fn release_download_id(&self, unique_id: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM used_download_ids WHERE unique_id = ?1",
                [unique_id],
            )
        })
        .map(drop)
    }

    /// Whether `unique_id` is claimed by a token still alive at `now`.
    pub fn download_id_used(&self, unique_id: &str, now: i64) -> anyhow::Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM used_download_ids
                 WHERE unique_id = ?1 AND expires_at > ?2)",
                params![unique_id, now],
                |r| r.get(0),
            )
        })
    }
}

/// Restores running now, so that one cut off by a crash or a stop is reported failed at the
/// next start. A row lives from the restore's start until its report is queued.
const RESTORES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS restores (
    uuid       TEXT NOT NULL,
    server     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (uuid, server)
);
";

/// The last verification of each backup (stored archives re-read and checked), so that
/// periodic verification can take the least recently verified one and a result outlives a
/// restart. Keyed by backup uuid: an archive the registry never recorded can be verified too.
const VERIFICATIONS_SCHEMA: &str = "
CREATE TABLE verifications (
    uuid             TEXT PRIMARY KEY,
    server           TEXT NOT NULL,
    verified_at      INTEGER NOT NULL,
    ok               INTEGER NOT NULL,
    checksum_matches INTEGER NOT NULL,
    entries          INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    error            TEXT
);
";

/// The registry's schema, one step per version: step `i` brings a database whose
/// `PRAGMA user_version` is `i` to `i + 1`. Steps are only ever appended; a released step
/// is never edited. The first three say `IF NOT EXISTS` because databases made before the
/// schema had a version hold some of their tables at version 0.
const MIGRATIONS: [&str; 4] = [
    SCHEMA,
    DOWNLOAD_IDS_SCHEMA,
    RESTORES_SCHEMA,
    VERIFICATIONS_SCHEMA,
];

/// Brings the database's schema to the newest version, one step per transaction; refuses a
/// database made by a newer aerie rather than guess at its tables.
fn migrate(connection: &Connection) -> anyhow::Result<()> {
    let version: usize = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .context("cannot read the schema version")?;
    if version > MIGRATIONS.len() {
        anyhow::bail!(
            "the schema is version {version}, newer than this aerie knows ({}): it was made \
             by a newer aerie; run that one, or move the file away to start afresh",
            MIGRATIONS.len()
        );
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = connection.unchecked_transaction()?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", step + 1))
            .and_then(|_| tx.commit())
            .with_context(|| format!("cannot bring the schema to version {}", step + 1))?;
    }
    Ok(())
}

/// A restore recorded as running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRecord {
    /// The backup being restored.
    pub uuid: String,
    /// The server restored into.
    pub server: String,
    /// RFC 3339 time it started.
    pub started_at: String,
}

impl Registry {
    /// Records that backup `uuid` is being restored into `server`.
    pub fn begin_restore(&self, uuid: &str, server: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO restores (uuid, server, started_at) VALUES (?1, ?2, ?3)",
                params![uuid, server, now()],
            )
        })
        .map(drop)
    }

    /// Forgets a restore that ended and, in the same transaction, queues its report for the
    /// Panel: a crash can lose neither without the other.
    pub fn end_restore(
        &self,
        uuid: &str,
        server: &str,
        report: Option<NewNotification<'_>>,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM restores WHERE uuid = ?1 AND server = ?2",
                params![uuid, server],
            )?;
            if let Some(report) = report {
                insert_notification(&tx, report)?;
            }
            tx.commit()
        })
    }

    /// Restores recorded as running: at start-up, the ones a previous run left unfinished.
    pub fn running_restores(&self) -> anyhow::Result<Vec<RestoreRecord>> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT uuid, server, started_at FROM restores ORDER BY started_at")?;
            let rows = statement.query_map([], |row| {
                Ok(RestoreRecord {
                    uuid: row.get(0)?,
                    server: row.get(1)?,
                    started_at: row.get(2)?,
                })
            })?;
            rows.collect()
        })
    }
}

/// The last verification of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRecord {
    /// The backup verified.
    pub uuid: String,
    /// Its server.
    pub server: String,
    /// When the verification ended, in Unix seconds.
    pub verified_at: i64,
    /// The archive was whole and sound.
    pub ok: bool,
    /// Its SHA-1 matched the recorded one.
    pub checksum_matches: bool,
    /// Tar entries walked.
    pub entries: u64,
    /// Archive bytes read.
    pub bytes: u64,
    /// What was wrong, when not `ok`.
    pub error: Option<String>,
}

impl Registry {
    /// Keeps `record` as its backup's last verification (replacing an older one).
    pub fn record_verification(&self, record: &VerificationRecord) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO verifications
                 (uuid, server, verified_at, ok, checksum_matches, entries, bytes, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    record.uuid,
                    record.server,
                    record.verified_at,
                    record.ok,
                    record.checksum_matches,
                    record.entries as i64,
                    record.bytes as i64,
                    record.error,
                ],
            )
        })
        .map(drop)
    }

    /// The last verification of backup `uuid`, if it was ever verified.
    pub fn verification(&self, uuid: &str) -> anyhow::Result<Option<VerificationRecord>> {
        self.with(|c| {
            c.query_row(
                "SELECT uuid, server, verified_at, ok, checksum_matches, entries, bytes, error
                 FROM verifications WHERE uuid = ?1",
                [uuid],
                |row| {
                    Ok(VerificationRecord {
                        uuid: row.get(0)?,
                        server: row.get(1)?,
                        verified_at: row.get(2)?,
                        ok: row.get(3)?,
                        checksum_matches: row.get(4)?,
                        entries: row.get::<_, i64>(5)? as u64,
                        bytes: row.get::<_, i64>(6)? as u64,
                        error: row.get(7)?,
                    })
                },
            )
            .optional()
        })
    }

    /// The completed backup verified least recently, as `(uuid, server)`: one never
    /// verified first (the oldest of those), then the one whose last verification is oldest.
    pub fn least_recently_verified(&self) -> anyhow::Result<Option<(String, String)>> {
        self.with(|c| {
            c.query_row(
                "SELECT b.uuid, b.server FROM backups b
                 LEFT JOIN verifications v ON v.uuid = b.uuid
                 WHERE b.state = 'completed'
                 ORDER BY v.verified_at IS NOT NULL, v.verified_at, b.started_at, b.rowid
                 LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_version(dir: &Path) -> usize {
        let connection = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_registry_is_at_the_newest_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        Registry::open(dir.path()).unwrap();
        assert_eq!(schema_version(dir.path()), MIGRATIONS.len());
    }

    #[test]
    fn a_registry_from_before_versions_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What the first releases made: the backups tables only, user_version 0.
            let connection = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            connection.execute_batch(SCHEMA).unwrap();
            connection
                .execute(
                    "INSERT INTO backups (uuid, server, adapter, state, started_at)
                     VALUES ('b1', 's1', 'wings', 'completed', '2026-01-01T00:00:00Z')",
                    [],
                )
                .unwrap();
        }
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(schema_version(dir.path()), MIGRATIONS.len());
        assert_eq!(registry.get("b1").unwrap().unwrap().server, "s1");
        registry.begin_restore("b1", "s1").unwrap();
        assert_eq!(registry.running_restores().unwrap().len(), 1);
    }

    #[test]
    fn a_registry_from_a_newer_aerie_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Registry::open(dir.path()).unwrap();
        Connection::open(dir.path().join(DATABASE_FILE))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Registry::open(dir.path()).err().expect("refused");
        assert!(
            format!("{err:#}").contains("the schema is version 99, newer than this aerie knows"),
            "{err:#}"
        );
    }

    #[test]
    fn a_uuid_is_taken_while_running_or_completed_and_free_again_after_failure() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.reserve("b1", "s1", "wings").unwrap();
        assert_eq!(
            registry.reserve("b1", "s1", "wings"),
            Err(ReserveError::Taken(State::Running))
        );
        registry.fail("b1", "disk on fire", 10, None).unwrap();
        registry.reserve("b1", "s1", "wings").unwrap();
        registry
            .complete("b1", "abc", 42, 100, Some(("b1", "/backups/b1", "{}")))
            .unwrap();
        let queued = registry.notifications().unwrap();
        assert_eq!(queued.len(), 1);
        registry
            .retry_notification_later(queued[0].id, 5_000, "down")
            .unwrap();
        assert!(registry.due_notifications(4_999).unwrap().is_empty());
        assert_eq!(registry.next_notification_due().unwrap(), Some(5_000));
        assert_eq!(registry.due_notifications(5_000).unwrap()[0].attempts, 1);
        assert!(registry.remove_notification(queued[0].id).unwrap());
        assert_eq!(registry.next_notification_due().unwrap(), None);
        assert_eq!(
            registry.reserve("b1", "s2", "wings"),
            Err(ReserveError::Taken(State::Completed))
        );
        let record = registry.get("b1").unwrap().unwrap();
        assert_eq!(record.state, State::Completed);
        assert_eq!(record.checksum.as_deref(), Some("abc"));
        assert_eq!(record.size, Some(42));
        assert_eq!(record.error, None);
    }

    #[test]
    fn the_backlog_counts_queued_reports_and_dates_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.notification_backlog().unwrap(), (0, None));
        for uuid in ["first", "second"] {
            registry.reserve(uuid, "s1", "wings").unwrap();
            registry
                .fail(uuid, "no", 0, Some((uuid, "/backups/x", "{}")))
                .unwrap();
        }
        let queued = registry.notifications().unwrap();
        let (count, oldest) = registry.notification_backlog().unwrap();
        assert_eq!(count, 2);
        assert_eq!(oldest.as_deref(), Some(queued[0].created_at.as_str()));
        assert!(registry.remove_notification(queued[0].id).unwrap());
        let (count, oldest) = registry.notification_backlog().unwrap();
        assert_eq!(count, 1);
        assert_eq!(oldest.as_deref(), Some(queued[1].created_at.as_str()));
    }

    #[test]
    fn records_survive_reopening_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let registry = Registry::open(dir.path()).unwrap();
            registry.reserve("old", "s1", "wings").unwrap();
            registry.reserve("new", "s1", "wings").unwrap();
            registry.reserve("other", "s2", "wings").unwrap();
        }
        let registry = Registry::open(dir.path()).unwrap();
        let listed: Vec<String> = registry
            .list("s1")
            .unwrap()
            .into_iter()
            .map(|r| r.uuid)
            .collect();
        assert_eq!(listed, vec!["new", "old"]);
        assert_eq!(registry.running().unwrap().len(), 3);
    }

    #[test]
    fn a_download_id_is_claimed_once_until_it_expires_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert!(registry.claim_download_id("a", 100, 50).unwrap());
        assert!(!registry.claim_download_id("a", 100, 60).unwrap());
        assert!(registry.download_id_used("a", 60).unwrap());
        // A released claim (the download could not start) can be made again.
        registry.release_download_id("a").unwrap();
        assert!(!registry.download_id_used("a", 60).unwrap());
        assert!(registry.claim_download_id("a", 100, 60).unwrap());
        drop(registry);

        // Kept across a reopening (a restart), until its expiry.
        let registry = Registry::open(dir.path()).unwrap();
        assert!(!registry.claim_download_id("a", 100, 99).unwrap());
        // The next claim after its expiry purges it: only live ids stay in the table.
        assert!(registry.claim_download_id("b", 500, 100).unwrap());
        let kept: Vec<String> = registry
            .with(|c| {
                let mut statement = c.prepare("SELECT unique_id FROM used_download_ids")?;
                let rows = statement.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .unwrap();
        assert_eq!(kept, vec!["b"]);
        assert!(!registry.download_id_used("a", 100).unwrap());
    }

    #[test]
    fn the_least_recently_verified_completed_backup_comes_next() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        for uuid in ["old", "new", "running"] {
            registry.reserve(uuid, "s1", "wings").unwrap();
        }
        registry.complete("old", "abc", 1, 1, None).unwrap();
        registry.complete("new", "def", 1, 1, None).unwrap();
        let verified = |uuid: &str, at: i64| VerificationRecord {
            uuid: uuid.into(),
            server: "s1".into(),
            verified_at: at,
            ok: true,
            checksum_matches: true,
            entries: 3,
            bytes: 1,
            error: None,
        };
        // Never verified first, oldest first; a running backup never.
        assert_eq!(
            registry.least_recently_verified().unwrap(),
            Some(("old".into(), "s1".into()))
        );
        registry.record_verification(&verified("old", 100)).unwrap();
        assert_eq!(
            registry.least_recently_verified().unwrap().unwrap().0,
            "new"
        );
        registry.record_verification(&verified("new", 200)).unwrap();
        assert_eq!(
            registry.least_recently_verified().unwrap().unwrap().0,
            "old"
        );
        registry.record_verification(&verified("old", 300)).unwrap();
        assert_eq!(
            registry.least_recently_verified().unwrap().unwrap().0,
            "new"
        );
        assert_eq!(
            registry.verification("old").unwrap(),
            Some(verified("old", 300))
        );
        // Deleting a backup forgets its verification.
        registry.remove("old").unwrap();
        assert_eq!(registry.verification("old").unwrap(), None);
    }

    #[test]
    fn a_restore_is_recorded_until_its_report_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        {
            let registry = Registry::open(dir.path()).unwrap();
            registry.begin_restore("b1", "s1").unwrap();
            registry.begin_restore("b2", "s2").unwrap();
            registry
                .end_restore("b2", "s2", Some(("b2", "/backups/b2/restore", "{}")))
                .unwrap();
        }
        let registry = Registry::open(dir.path()).unwrap();
        let running = registry.running_restores().unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].uuid.as_str(), running[0].server.as_str()),
            ("b1", "s1")
        );
        assert_eq!(
            registry.notifications().unwrap()[0].path,
            "/backups/b2/restore"
        );
    }
}

//! The store's tables and their versions. A database is ours when its `bmad_meta` table says
//! so; an empty database becomes ours; anything else is refused before a byte is written.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{StoreError, StoreResult};

/// What `bmad_meta.app` holds in every store.
pub const APP: &str = "bmad-background-executor";

/// The schema version this build writes. Older stores are migrated; newer ones refused.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` brings a store from version `i` to `i + 1`.
pub(super) const MIGRATIONS: [&str; 2] = [
  r"
CREATE TABLE bmad_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE bmad_executions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent TEXT NOT NULL,
  task TEXT NOT NULL,
  options TEXT,
  level TEXT NOT NULL,
  priority INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  key TEXT,
  state INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3, 4)),
  attempt INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
  retry_delay_ms REAL NOT NULL,
  backoff INTEGER NOT NULL,
  timeout_ms REAL NOT NULL,
  progress REAL NOT NULL DEFAULT 0,
  result TEXT,
  error TEXT,
  owner TEXT,
  lease_expires_at REAL,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL,
  scheduled_at REAL NOT NULL,
  attempted_at REAL,
  finalized_at REAL
) STRICT;
CREATE INDEX bmad_executions_queue ON bmad_executions (priority DESC, id) WHERE state = 0;
CREATE INDEX bmad_executions_running ON bmad_executions (owner) WHERE state = 1;
CREATE INDEX bmad_executions_finalized ON bmad_executions (finalized_at) WHERE state >= 2;
CREATE UNIQUE INDEX bmad_executions_key ON bmad_executions (key) WHERE key IS NOT NULL AND state <= 1;
CREATE TABLE bmad_ends (seq INTEGER PRIMARY KEY, execution_id INTEGER NOT NULL) STRICT;
CREATE TRIGGER bmad_executions_ended AFTER UPDATE OF state ON bmad_executions
  WHEN NEW.state >= 2 AND OLD.state < 2
  BEGIN INSERT INTO bmad_ends (execution_id) VALUES (NEW.id); END;
CREATE TABLE bmad_workers (
  owner TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  proc_start INTEGER NOT NULL,
  started_at REAL NOT NULL,
  heartbeat_at REAL NOT NULL
) STRICT;
",
  r"
-- The state check becomes a range: SQLite compiles a CHECK with an IN list into a temporary
-- B-tree built at every insert and every change of state. The table is rebuilt (SQLite
-- cannot alter a constraint), keeping its rows, ids and AUTOINCREMENT counter. The trigger
-- that logged ends goes with the old table: the statements that end an execution log it.
-- The queue is indexed per agent, so a claim reads only the queues of the agents it takes,
-- and queued rows due later than their creation (delayed, retried) have an index of their
-- own for the next due time.
CREATE TABLE bmad_executions_v2 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent TEXT NOT NULL,
  task TEXT NOT NULL,
  options TEXT,
  level TEXT NOT NULL,
  priority INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  key TEXT,
  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),
  attempt INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
  retry_delay_ms REAL NOT NULL,
  backoff INTEGER NOT NULL,
  timeout_ms REAL NOT NULL,
  progress REAL NOT NULL DEFAULT 0,
  result TEXT,
  error TEXT,
  owner TEXT,
  lease_expires_at REAL,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL,
  scheduled_at REAL NOT NULL,
  attempted_at REAL,
  finalized_at REAL
) STRICT;
INSERT INTO bmad_executions_v2 SELECT id, agent, task, options, level, priority, mode, key, state, attempt,
  max_attempts, retry_delay_ms, backoff, timeout_ms, progress, result, error, owner, lease_expires_at,
  cancel_requested, created_at, scheduled_at, attempted_at, finalized_at FROM bmad_executions;
DELETE FROM sqlite_sequence WHERE name = 'bmad_executions_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'bmad_executions_v2', seq FROM sqlite_sequence WHERE name = 'bmad_executions';
DROP TABLE bmad_executions;
ALTER TABLE bmad_executions_v2 RENAME TO bmad_executions;
CREATE INDEX bmad_executions_agent_queue ON bmad_executions (agent, priority DESC, id) WHERE state = 0;
CREATE INDEX bmad_executions_due ON bmad_executions (scheduled_at) WHERE state = 0 AND scheduled_at > created_at;
CREATE INDEX bmad_executions_running ON bmad_executions (owner) WHERE state = 1;
CREATE INDEX bmad_executions_finalized ON bmad_executions (finalized_at) WHERE state >= 2;
CREATE UNIQUE INDEX bmad_executions_key ON bmad_executions (key) WHERE key IS NOT NULL AND state <= 1;
",
];

/// How durable a commit is: `Normal` survives a process crash (WAL), `Full` also a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
  Normal,
  Full,
}

/// Opens (creating it and its folders if needed) and migrates the store at `path`. Locks
/// held by other processes opening it too are waited for up to 10 s.
pub fn open(path: &Path, synchronous: Synchronous) -> StoreResult<Connection> {
  let shown = path.display();
  if let Some(parent) = path.parent() {
    if !parent.as_os_str().is_empty() {
      std::fs::create_dir_all(parent)
        .map_err(|e| StoreError::store(format!("cannot create the folder of store {shown}: {e}")))?;
    }
  }
  let flags =
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
  let conn = Connection::open_with_flags(path, flags)
    .map_err(|e| StoreError::store(format!("cannot open store {shown}: {e}")))?;
  // Room for every statement the store prepares: re-preparing costs more than running them.
  conn.set_prepared_statement_cache_capacity(64);
  // Plans independent of bound values. Without it SQLite reads the value bound to the claim's
  // `LIMIT ?` while planning, and a statement planned from a bound value is re-prepared once
  // its bindings are cleared (rusqlite clears them whenever a statement returns to its
  // cache): the claim was re-prepared at every call, a tenth of the store thread's time.
  // Every `state` comparison is written as a literal, so the partial indexes still apply.
  conn
    .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
    .map_err(|e| StoreError::store(format!("cannot configure store {shown}: {e}")))?;
  conn
    .busy_timeout(Duration::from_secs(10))
    .map_err(|e| StoreError::store(format!("cannot configure store {shown}: {e}")))?;
  // Read before any write: a file that is not a database, or a database of something else,
  // is refused untouched.
  check_ours(&conn, path)?;
  let mode =
    wal_mode(&conn).map_err(|e| StoreError::store(format!("cannot use WAL mode on store {shown}: {e}")))?;
  if !mode.eq_ignore_ascii_case("wal") {
    return Err(StoreError::store(format!(
      "store {shown} cannot use WAL mode (journal mode stays {mode}); is it on a network file system?"
    )));
  }
  let sync = match synchronous {
    Synchronous::Normal => "NORMAL",
    Synchronous::Full => "FULL",
  };
  conn
    .execute_batch(&format!("PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"))
    .map_err(|e| StoreError::store(format!("cannot configure store {shown}: {e}")))?;
  migrate(&conn, path)?;
  Ok(conn)
}

/// Switches to WAL mode; returns the journal mode the database has then. SQLite does not
/// wait for a busy lock here (another process creating the same store at once), so the
/// switch is tried again for up to 10 s.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
  let deadline = std::time::Instant::now() + Duration::from_secs(10);
  let mut pause = Duration::from_millis(2);
  loop {
    match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
      Err(e)
        if std::time::Instant::now() < deadline
          && matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
          ) =>
      {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
      }
      other => return other,
    }
  }
}

/// The version a database of ours holds, `None` for an empty database; refuses anything else.
fn check_ours(conn: &Connection, path: &Path) -> StoreResult<Option<i64>> {
  let shown = path.display();
  let tables: i64 = conn
    .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
    .map_err(|e| {
      let read_only = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
      );
      StoreError::store(if read_only {
        format!("{shown} cannot be written (the store writes the file and its folder): {e}")
      } else {
        format!("{shown} is not a usable SQLite database: {e}")
      })
    })?;
  if tables == 0 {
    return Ok(None);
  }
  let has_meta: i64 = conn.query_row(
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'bmad_meta'",
    [],
    |r| r.get(0),
  )?;
  if has_meta == 0 {
    return Err(StoreError::store(format!(
      "{shown} is a SQLite database of something else (no bmad_meta table); use another path"
    )));
  }
  let app: Option<String> = conn
    .query_row("SELECT value FROM bmad_meta WHERE key = 'app'", [], |r| r.get(0))
    .optional()?;
  if app.as_deref() != Some(APP) {
    return Err(StoreError::store(format!(
      "{shown} is a SQLite database of something else (bmad_meta.app is {app:?}); use another path"
    )));
  }
  let version: Option<String> = conn
    .query_row("SELECT value FROM bmad_meta WHERE key = 'version'", [], |r| {
      r.get(0)
    })
    .optional()?;
  known_version(&shown.to_string(), version.as_deref(), VERSION).map(Some)
}

/// The schema version in `bmad_meta` (`text`, of the store `shown`): a version from 1 to
/// `newest` (this release's), else an error. Never below 1, so migrations are never skipped.
pub(super) fn known_version(shown: &str, text: Option<&str>, newest: i64) -> StoreResult<i64> {
  let v = text
    .and_then(|s| s.parse::<i64>().ok())
    .ok_or_else(|| StoreError::store(format!("{shown}: bmad_meta.version is missing or not a number")))?;
  if v > newest {
    return Err(StoreError::version(format!(
      "{shown} holds schema version {v}, written by a newer release; this release reads versions up to {newest}: upgrade bmad-background-executor"
    )));
  }
  if v < 1 {
    return Err(StoreError::store(format!(
      "{shown}: bmad_meta.version is {v}, which no release writes (versions start at 1); the store was changed by hand"
    )));
  }
  Ok(v)
}

/// Applies the missing migrations in one immediate transaction (two processes opening a new
/// store at once: the second sees the first one's work).
fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
  let shown = path.display();
  let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
    .map_err(|e| StoreError::store(format!("cannot lock store {shown} to migrate it: {e}")))?;
  let from = check_ours(&tx, path)?.unwrap_or(0);
  for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
    tx.execute_batch(sql)
      .map_err(|e| StoreError::store(format!("migration {} of store {shown} failed: {e}", i + 1)))?;
  }
  if from < VERSION {
    tx.execute(
      "INSERT INTO bmad_meta (key, value) VALUES ('app', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      [APP],
    )?;
    tx.execute(
      "INSERT INTO bmad_meta (key, value) VALUES ('version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      [VERSION.to_string()],
    )?;
  }
  tx.commit()
    .map_err(|e| StoreError::store(format!("cannot commit the migration of store {shown}: {e}")))?;
  Ok(())
}

//! The durable store: executions in an embedded SQLite database that several processes
//! share, or in a PostgreSQL database that several hosts share.
//!
//! ```text
//! schema    the tables, versioned migrations, and the checks made before anything is written
//! decide    what a failed attempt and a rescue lead to, the same for both drivers
//! backend   what the thread needs of a driver (SQLite's is `ops::Store`, PostgreSQL's `pg`)
//! ops       every read and state change, each a compare-and-set where it changes state
//! host      this process's identity, and whether another process on this host still lives
//! messages  what the thread is asked, what it answers, and the sink the answers go to
//! service   the thread that owns the connection: requests, the wake-up poll, heartbeats,
//!           rescue and retention, answers through one event sink
//! wake      on Linux, a wake-up when another process writes the WAL file
//! pg        PostgreSQL: the connection string and TLS, the schema, the statements,
//!           notifications and pushes
//! ```
//!
//! Nothing here imports napi: `binding/store.rs` converts to and from JS.

pub mod backend;
pub mod decide;
pub mod host;
pub mod messages;
pub mod ops;
pub mod pg;
pub mod schema;
pub mod service;
pub mod wake;

pub use ops::Store;

/// A store failure: `code` is `ERR_STORE`, `ERR_STORE_VERSION`, `BUSY`, `DISCONNECTED` or
/// `REFUSED`, `message` names the path and the cause.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError {
  pub code: &'static str,
  pub message: String,
}

impl StoreError {
  pub fn store(message: impl Into<String>) -> Self {
    StoreError {
      code: "ERR_STORE",
      message: message.into(),
    }
  }
  pub fn version(message: impl Into<String>) -> Self {
    StoreError {
      code: "ERR_STORE_VERSION",
      message: message.into(),
    }
  }
}

impl std::fmt::Display for StoreError {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    write!(f, "{}: {}", self.code, self.message)
  }
}

/// The code of a failure that goes away by itself: another process held the database's
/// lock longer than the wait allowed. The request may be made again as it was.
pub const BUSY: &str = "ERR_STORE_BUSY";

/// The code of a failure of a lost connection to a database server: the request may be made
/// again as it was once the connection is back (the store thread gets it back by itself).
pub const DISCONNECTED: &str = "ERR_STORE_DISCONNECTED";

/// The code of a failure of what was written, not of the store: a value or row the database
/// refuses (a constraint, a trigger, data it cannot hold). The same write fails again;
/// others made with it may go through on their own.
pub const REFUSED: &str = "ERR_STORE_REFUSED";

impl From<rusqlite::Error> for StoreError {
  fn from(e: rusqlite::Error) -> Self {
    use rusqlite::ErrorCode as C;
    let code = match e.sqlite_error_code() {
      Some(C::DatabaseBusy | C::DatabaseLocked) => BUSY,
      Some(C::ConstraintViolation | C::TooBig | C::TypeMismatch) => REFUSED,
      _ => "ERR_STORE",
    };
    StoreError {
      code,
      message: format!("database error: {e}"),
    }
  }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A submission to store.
#[derive(Debug, Clone, Default)]
pub struct NewExecution {
  pub agent: String,
  pub task: String,
  /// JSON text, or `None` when the submission had no options.
  pub options: Option<String>,
  /// The priority level's name and value (higher runs first).
  pub level: String,
  pub priority: i64,
  pub mode: u32,
  /// Deduplication key: while an execution with it is queued or running, the same key gets
  /// that execution's id.
  pub key: Option<String>,
  /// Attempts allowed (1 + retries).
  pub max_attempts: u32,
  pub retry_delay_ms: f64,
  pub backoff: u32,
  /// Per-attempt timeout in ms (0: none).
  pub timeout_ms: f64,
  /// The earliest start, ms since the epoch (0 or past: at once).
  pub start_after: f64,
  /// This executor's number for the submission (0: none), the same when a batch goes again
  /// after a lost connection: PostgreSQL then finds the row its first try may have committed.
  pub seq: u64,
}

/// The answer to one insert: its id, and whether it is an earlier execution with its key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inserted {
  pub id: i64,
  pub existing: bool,
}

/// The end of one attempt this process ran.
#[derive(Debug, Clone, Default)]
pub struct Finish {
  pub id: i64,
  pub attempt: u32,
  /// `STATUS_COMPLETED`, `STATUS_FAILED` or `STATUS_CANCELLED`.
  pub status: u32,
  /// JSON text of the result (completed) or of the error (failed, cancelled).
  pub value: Option<String>,
  /// A failure the retry policy may retry.
  pub retryable: bool,
}

/// What became of a `Finish`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finished {
  /// Recorded as the execution's end.
  Recorded,
  /// The execution is queued again for its next attempt after this delay (ms).
  Retry(f64),
  /// The attempt no longer owns the execution (rescued, cancelled and re-run...): discarded.
  Stale,
  /// A cancel was asked while the attempt ran: the execution is recorded cancelled, with
  /// the cancel's error, whatever the attempt's own outcome.
  Cancelled,
}

/// A progress report of an attempt this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
  pub id: i64,
  pub attempt: u32,
  pub percent: f64,
}

/// An attempt handed back to the queue without counting it (shutdown).
#[derive(Debug, Clone, Copy)]
pub struct Release {
  pub id: i64,
  pub attempt: u32,
}

/// Everything one transaction does, in this order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
  pub inserts: Vec<NewExecution>,
  pub finishes: Vec<Finish>,
  pub progress: Vec<Progress>,
  pub releases: Vec<Release>,
  /// Claim up to this many queued executions (of the agents this process runs).
  pub claim: u32,
  /// Agents not to claim for now (at their limits in this process).
  pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BatchResult {
  pub inserted: Vec<Inserted>,
  pub finished: Vec<Finished>,
  pub claimed: Vec<Row>,
  /// Finishes whose attempt no longer owned the execution.
  pub stale: u32,
}

/// One execution as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
  pub id: i64,
  pub agent: String,
  pub task: String,
  pub options: Option<String>,
  pub level: String,
  pub priority: i64,
  pub mode: u32,
  pub key: Option<String>,
  /// A `STATUS_*` code (queued, running, completed, failed, cancelled).
  pub status: u32,
  pub attempt: u32,
  pub max_attempts: u32,
  pub timeout_ms: f64,
  pub progress: f64,
  /// JSON text: the result when completed, the (last) error otherwise.
  pub result: Option<String>,
  pub error: Option<String>,
  pub owner: Option<String>,
  pub cancel_requested: bool,
  pub created_at: f64,
  pub scheduled_at: f64,
  pub attempted_at: Option<f64>,
  pub finalized_at: Option<f64>,
}

/// Attempts whose rescue the store refused (a trigger or constraint of the user's): left
/// running, not tried again by this executor, each reported once (`take`).
#[derive(Debug, Default)]
pub struct Refusals {
  skip: std::collections::HashSet<(i64, u32)>,
  notices: Vec<StoreError>,
}

impl Refusals {
  /// Whether the rescue of `attempt` of `id` was refused already.
  pub fn skips(&self, id: i64, attempt: u32) -> bool {
    self.skip.contains(&(id, attempt))
  }

  /// The store refused to move `attempt` of `id` (`cause` says why).
  pub fn refuse(&mut self, id: i64, attempt: u32, cause: &StoreError) {
    self.skip.insert((id, attempt));
    self.notices.push(StoreError {
      code: REFUSED,
      message: format!(
        "execution {id} (attempt {attempt}) stays running: its rescue was refused ({})",
        cause.message
      ),
    });
  }

  /// The refusals not reported yet.
  pub fn take(&mut self) -> Vec<StoreError> {
    std::mem::take(&mut self.notices)
  }
}

/// An execution whose owner stopped heartbeating, moved on by a rescue.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescued {
  pub id: i64,
  pub agent: String,
  /// The attempt that was lost.
  pub attempt: u32,
  pub owner: String,
  /// `STATUS_QUEUED` (it runs again), `STATUS_FAILED` (`ERR_WORKER_LOST`) or
  /// `STATUS_CANCELLED` (a cancel was requested while it ran).
  pub status: u32,
}

/// A cancel requested for an attempt this process runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CancelRequest {
  pub id: i64,
  pub attempt: u32,
}

#[cfg(test)]
mod tests;

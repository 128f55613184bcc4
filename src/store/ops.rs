//! Every read and write of the store. Each state change is a compare-and-set on the
//! execution's (id, attempt, owner, state): a late answer from an attempt that no longer
//! owns its execution changes nothing and is counted as stale.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row as SqlRow, TransactionBehavior};

use super::backend::{Backend, Changes, Interest};
use super::decide::{self, AfterAttempt, Stored};
use super::host::{self, Identity};
use super::schema::{self, Synchronous};
use super::{
  Batch, BatchResult, CancelRequest, Finish, Finished, Inserted, NewExecution, Refusals, Release, Rescued,
  Row, StoreError, StoreResult,
};
use crate::protocol::{NOT_FOUND, STATUS_CANCELLED, STATUS_COMPLETED, STATUS_QUEUED, STATUS_RUNNING};
use crate::scheduler::retry::Jitter;

pub(super) const COLUMNS: &str = "id, agent, task, options, level, priority, mode, key, state, attempt, max_attempts, \
  timeout_ms, progress, result, error, owner, cancel_requested, created_at, scheduled_at, attempted_at, finalized_at";

/// The error stored for an execution whose worker stopped heartbeating past its attempts.
pub const WORKER_LOST: &str = r#"{"name":"Error","code":"ERR_WORKER_LOST","message":"The executor running this execution stopped (crashed or lost its lease) and no attempts were left"}"#;

/// Entries of the ends log kept by retention.
const ENDS_KEPT: i64 = 1_000_000;

/// An INTEGER column as a count, saturating: a value out of range (set by hand) reads as the
/// nearest one instead of failing every statement that reads its row.
fn count(r: &SqlRow<'_>, i: usize) -> rusqlite::Result<u32> {
  let n: i64 = r.get(i)?;
  Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A TEXT column. SQLite keeps whatever bytes it is given: invalid UTF-8 (written by hand)
/// reads with replacement characters, as the PostgreSQL store never sees it.
fn text(r: &SqlRow<'_>, i: usize) -> rusqlite::Result<String> {
  match r.get_ref(i)? {
    ValueRef::Text(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
    _ => r.get(i),
  }
}

/// A TEXT column that may be NULL (see `text`).
fn opt_text(r: &SqlRow<'_>, i: usize) -> rusqlite::Result<Option<String>> {
  match r.get_ref(i)? {
    ValueRef::Null => Ok(None),
    _ => text(r, i).map(Some),
  }
}

fn row(r: &SqlRow<'_>) -> rusqlite::Result<Row> {
  Ok(Row {
    id: r.get(0)?,
    agent: text(r, 1)?,
    task: text(r, 2)?,
    options: opt_text(r, 3)?,
    level: text(r, 4)?,
    priority: r.get(5)?,
    mode: count(r, 6)?,
    key: opt_text(r, 7)?,
    status: count(r, 8)?,
    attempt: count(r, 9)?,
    max_attempts: count(r, 10)?,
    timeout_ms: r.get(11)?,
    progress: r.get(12)?,
    result: opt_text(r, 13)?,
    error: opt_text(r, 14)?,
    owner: opt_text(r, 15)?,
    cancel_requested: r.get::<_, i64>(16)? != 0,
    created_at: r.get(17)?,
    scheduled_at: r.get(18)?,
    attempted_at: r.get(19)?,
    finalized_at: r.get(20)?,
  })
}

/// One connection to a store, as one worker.
pub struct Store {
  conn: Connection,
  pub me: Identity,
  pub lease_ms: f64,
  jitter: Jitter,
  interest: Interest,
  /// The database's data version, and the last entry of the ends log read (`changes`).
  version: i64,
  ends_seen: i64,
  /// How long a statement waits for another process's lock (half a lease).
  busy: Duration,
  /// Attempts whose rescue the store refused.
  refusals: Refusals,
}

/// The longest lock wait of housekeeping (rescue, retention): each runs again at its next
/// period, so it gives up soon rather than hold back the heartbeat after it.
const HOUSEKEEPING_WAIT: Duration = Duration::from_millis(100);

/// Lock waits cut to `HOUSEKEEPING_WAIT` until dropped.
struct ShortWaits<'c> {
  conn: &'c Connection,
  normal: Duration,
}

impl<'c> ShortWaits<'c> {
  fn new(conn: &'c Connection, normal: Duration) -> ShortWaits<'c> {
    let _ = conn.busy_timeout(HOUSEKEEPING_WAIT.min(normal));
    ShortWaits { conn, normal }
  }
}

impl Drop for ShortWaits<'_> {
  fn drop(&mut self) {
    let _ = self.conn.busy_timeout(self.normal);
  }
}

impl Store {
  /// Opens the store at `path` (see `schema::open`) and registers this worker in it.
  pub fn open(path: &Path, synchronous: Synchronous, lease_ms: f64, now: f64) -> StoreResult<Store> {
    // A lock wait never outlasts half a lease: a heartbeat (every third of a lease) that waits
    // that long still renews the lease in time.
    let busy = Duration::from_millis((lease_ms / 2.0).clamp(50.0, 10_000.0) as u64);
    let conn = schema::open(path, synchronous)?;
    conn.busy_timeout(busy)?;
    let mut store = Store {
      conn,
      me: Identity::new(),
      lease_ms,
      jitter: Jitter::seeded(),
      interest: Interest::new(false, &[]),
      version: 0,
      ends_seen: 0,
      busy,
      refusals: Refusals::default(),
    };
    store.conn.execute(
      "INSERT INTO bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
      params![store.me.owner, store.me.host, store.me.pid, store.me.proc_start as i64, now],
    )?;
    // Changes are what others commit from now on.
    store.version = store.data_version().unwrap_or(0);
    store.ends_seen = store.ends_head().unwrap_or(0);
    Ok(store)
  }

  /// Changes when another connection commits (`PRAGMA data_version`).
  pub fn data_version(&self) -> StoreResult<i64> {
    Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
  }

  /// The newest entry of the ends log (0: none): every execution's end appends one, in
  /// commit order.
  pub fn ends_head(&self) -> StoreResult<i64> {
    Ok(
      self
        .conn
        .query_row("SELECT coalesce(max(seq), 0) FROM bmad_ends", [], |r| r.get(0))?,
    )
  }

  /// How many times SQLite has re-prepared the cached claim statements.
  #[cfg(test)]
  pub fn claim_reprepares(&self) -> StoreResult<i32> {
    self.claim_status(rusqlite::StatementStatus::RePrepare)
  }

  /// The virtual-machine steps the cached claim and next-due statements have run (a measure
  /// of the rows they read).
  #[cfg(test)]
  pub fn claim_steps(&self) -> StoreResult<i32> {
    let next_due = self
      .conn
      .prepare_cached(NEXT_DUE)?
      .get_status(rusqlite::StatementStatus::VmStep);
    Ok(self.claim_status(rusqlite::StatementStatus::VmStep)? + next_due)
  }

  #[cfg(test)]
  fn claim_status(&self, what: rusqlite::StatementStatus) -> StoreResult<i32> {
    let mut n = 0;
    for sql in claim_sqls() {
      n += self.conn.prepare_cached(&sql)?.get_status(what);
    }
    Ok(n)
  }

  /// One rescue transaction (see `Backend::rescue`): the attempts moved, or None when a
  /// refusal rolled the whole transaction back; it is then run again without that attempt.
  fn rescue_round(&mut self, now: f64) -> StoreResult<Option<Vec<Rescued>>> {
    let _short = ShortWaits::new(&self.conn, self.busy);
    let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
    let mut dead: Vec<String> = Vec::new();
    if !self.me.host.is_empty() {
      let mut st =
        tx.prepare_cached("SELECT owner, pid, proc_start FROM bmad_workers WHERE host = ?1 AND owner != ?2")?;
      let workers = st
        .query_map(params![self.me.host, self.me.owner], |r| {
          Ok((text(r, 0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
      for (owner, pid, started) in workers {
        // A pid no process can have (set by hand) tells nothing: its lease decides.
        let Ok(pid) = u32::try_from(pid) else { continue };
        if host::is_dead(pid, started as u64) {
          dead.push(owner);
        }
      }
    }
    let dead_json = serde_json::to_string(&dead).map_err(|e| StoreError::store(e.to_string()))?;
    let candidates = {
      let mut st = tx.prepare_cached(
        "SELECT id, agent, attempt, owner, max_attempts, cancel_requested FROM bmad_executions \
         WHERE state = 1 AND ((lease_expires_at < ?1 AND owner != ?3) OR owner IN (SELECT value FROM json_each(?2)))",
      )?;
      // Never its own attempts: they are alive while this process is (a late heartbeat
      // after a long lock wait must not start a second run here).
      let rows = st.query_map(params![now, dead_json, self.me.owner], |r| {
        Ok((
          r.get::<_, i64>(0)?,
          text(r, 1)?,
          count(r, 2)?,
          opt_text(r, 3)?.unwrap_or_default(),
          count(r, 4)?,
          r.get::<_, i64>(5)? != 0,
        ))
      })?;
      rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut out = Vec::new();
    for (id, agent, attempt, owner, max_attempts, cancel) in candidates {
      if self.refusals.skips(id, attempt) {
        continue;
      }
      let status = decide::rescue_status(cancel, attempt, max_attempts);
      // Each move in a savepoint: a refusal undoes that move alone, whatever the trigger or
      // constraint's conflict resolution (ABORT, or FAIL after part of the change).
      tx.execute_batch("SAVEPOINT bmad_rescue")?;
      let moved = match status {
        // Due at once, whatever a claimer's clock says (as when it was created).
        STATUS_QUEUED => tx.execute(
          "UPDATE bmad_executions SET state = 0, owner = NULL, lease_expires_at = NULL, scheduled_at = created_at \
           WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1",
          params![id, attempt, owner],
        ),
        STATUS_CANCELLED => tx.execute(
          "UPDATE bmad_executions SET state = 4, lease_expires_at = NULL, finalized_at = ?4 \
           WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1",
          params![id, attempt, owner, now],
        ),
        _ => tx.execute(
          "UPDATE bmad_executions SET state = 3, error = ?5, lease_expires_at = NULL, finalized_at = ?4 \
           WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1",
          params![id, attempt, owner, now, WORKER_LOST],
        ),
      };
      // A move the store refuses (a trigger) leaves that attempt running, reported once;
      // only the statement is undone, and the others are moved all the same.
      let changed = match moved.map_err(StoreError::from) {
        Ok(n) => n,
        Err(e) if e.code == super::REFUSED => {
          self.refusals.refuse(id, attempt, &e);
          if tx.is_autocommit() {
            return Ok(None); // the whole transaction was rolled back (RAISE(ROLLBACK))
          }
          tx.execute_batch("ROLLBACK TO bmad_rescue; RELEASE bmad_rescue")?;
          continue;
        }
        Err(e) => return Err(e),
      };
      tx.execute_batch("RELEASE bmad_rescue")?;
      if changed == 1 {
        if status != STATUS_QUEUED {
          log_end(&tx, id)?;
        }
        out.push(Rescued {
          id,
          agent,
          attempt,
          owner,
          status,
        });
      }
    }
    if !dead.is_empty() {
      tx.execute(
        "DELETE FROM bmad_workers WHERE owner IN (SELECT value FROM json_each(?1))",
        [&dead_json],
      )?;
    }
    // Workers silent for long (other hosts) are forgotten; their executions were rescued by
    // lease long before. One that comes back registers again with its next heartbeat.
    tx.execute(
      "DELETE FROM bmad_workers WHERE heartbeat_at < ?1 AND owner != ?2",
      params![now - (10.0 * self.lease_ms).max(600_000.0), self.me.owner],
    )?;
    tx.commit()?;
    Ok(Some(out))
  }

  /// Ends logged after `seq`: (seq, execution id) pairs, oldest first.
  pub fn ends_after(&self, seq: i64) -> StoreResult<Vec<(i64, i64)>> {
    let mut st = self
      .conn
      .prepare_cached("SELECT seq, execution_id FROM bmad_ends WHERE seq > ?1 ORDER BY seq")?;
    let rows = st.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
  }
}

/// The SQLite driver: changes seen through the data version and the ends log.
impl Backend for Store {
  fn owner(&self) -> &str {
    &self.me.owner
  }

  fn set_interest(&mut self, interest: Interest) {
    self.interest = interest;
  }

  fn interest(&self) -> &Interest {
    &self.interest
  }

  /// Runs one batch in one immediate transaction. Its times (leases of its claims among
  /// them) count from when it holds the write lock.
  fn batch(&mut self, batch: &Batch, now: f64) -> StoreResult<BatchResult> {
    let (tx, now) = immediate(&self.conn, now)?;
    let mut out = BatchResult::default();
    for n in &batch.inserts {
      out.inserted.push(insert(&tx, n, now)?);
    }
    for f in &batch.finishes {
      let r = finish(&tx, &self.me.owner, f, now, &mut self.jitter)?;
      if r == Finished::Stale {
        out.stale += 1;
      }
      out.finished.push(r);
    }
    if !batch.progress.is_empty() {
      let mut st = tx.prepare_cached(
        "UPDATE bmad_executions SET progress = ?1 WHERE id = ?2 AND attempt = ?3 AND owner = ?4 AND state = 1",
      )?;
      for p in &batch.progress {
        st.execute(params![p.percent, p.id, p.attempt, self.me.owner])?;
      }
    }
    for r in &batch.releases {
      release(&tx, &self.me.owner, r, now)?;
    }
    if batch.claim > 0 && !self.interest.none {
      out.claimed = claim(
        &tx,
        &self.me.owner,
        &self.interest,
        &batch.exclude,
        batch.claim,
        now,
        self.lease_ms,
      )?;
    }
    tx.commit()?;
    Ok(out)
  }

  /// The earliest time a queued execution of interest becomes due, if any is scheduled later.
  fn next_due(&mut self, now: f64) -> StoreResult<Option<f64>> {
    if self.interest.none {
      return Ok(None);
    }
    let mut st = self.conn.prepare_cached(NEXT_DUE)?;
    Ok(
      st.query_row(params![now, self.interest.any, self.interest.agents_json], |r| {
        r.get(0)
      })?,
    )
  }

  /// Cancels execution `id`: a queued one ends at once, a running one is flagged for its
  /// owner. Returns the status it had (`NOT_FOUND` when there is no such execution).
  fn cancel(&mut self, id: i64, error_json: &str, now: f64) -> StoreResult<i32> {
    let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
    let state: Option<u32> = tx
      .query_row("SELECT state FROM bmad_executions WHERE id = ?1", [id], |r| {
        r.get(0)
      })
      .optional()?;
    let Some(state) = state else {
      return Ok(NOT_FOUND);
    };
    let was = state as i32;
    match state {
      STATUS_QUEUED => {
        let changed = tx.execute(
          "UPDATE bmad_executions SET state = 4, error = ?2, finalized_at = ?3 WHERE id = ?1 AND state = 0",
          params![id, error_json, now],
        )?;
        if changed == 1 {
          log_end(&tx, id)?;
        }
      }
      STATUS_RUNNING => {
        tx.execute(
          "UPDATE bmad_executions SET cancel_requested = 1, error = ?2 WHERE id = ?1 AND state = 1",
          params![id, error_json],
        )?;
      }
      _ => {}
    }
    tx.commit()?;
    Ok(was)
  }

  /// The running attempts of this worker with a cancel requested.
  fn cancel_requests(&mut self) -> StoreResult<Vec<CancelRequest>> {
    let mut st = self.conn.prepare_cached(
      "SELECT id, attempt FROM bmad_executions WHERE owner = ?1 AND state = 1 AND cancel_requested = 1",
    )?;
    let rows = st.query_map([&self.me.owner], |r| {
      Ok(CancelRequest {
        id: r.get(0)?,
        attempt: count(r, 1)?,
      })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
  }

  fn fetch(&mut self, id: i64) -> StoreResult<Option<Row>> {
    let mut st = self
      .conn
      .prepare_cached(&format!("SELECT {COLUMNS} FROM bmad_executions WHERE id = ?1"))?;
    Ok(st.query_row([id], row).optional()?)
  }

  /// Of `ids`, the ended executions (rows) and the ids no longer stored.
  fn ended_among(&mut self, ids: &[i64]) -> StoreResult<(Vec<Row>, Vec<i64>)> {
    let json = serde_json::to_string(ids).map_err(|e| StoreError::store(e.to_string()))?;
    let mut st = self.conn.prepare_cached(&format!(
      "SELECT {COLUMNS} FROM bmad_executions WHERE id IN (SELECT value FROM json_each(?1)) AND state >= 2"
    ))?;
    let ended = st
      .query_map([&json], row)?
      .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut gone_st = self.conn.prepare_cached(
      "SELECT value FROM json_each(?1) WHERE value NOT IN (SELECT id FROM bmad_executions WHERE id IN (SELECT value FROM json_each(?1)))",
    )?;
    let gone = gone_st
      .query_map([&json], |r| r.get(0))?
      .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok((ended, gone))
  }

  fn open_among(&mut self, ids: &[i64]) -> StoreResult<Vec<i64>> {
    let json = serde_json::to_string(ids).map_err(|e| StoreError::store(e.to_string()))?;
    let mut st = self.conn.prepare_cached(
      "SELECT id FROM bmad_executions WHERE id IN (SELECT value FROM json_each(?1)) AND state < 2",
    )?;
    let open = st
      .query_map([&json], |r| r.get(0))?
      .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(open)
  }

  /// Renews the lease of every attempt this worker runs, and its own heartbeat. Leases
  /// count from when the write lock is held: a wait for it does not shorten them.
  fn heartbeat(&mut self, now: f64) -> StoreResult<()> {
    let (tx, now) = immediate(&self.conn, now)?;
    tx.execute(
      "UPDATE bmad_executions SET lease_expires_at = ?2 WHERE owner = ?1 AND state = 1",
      params![self.me.owner, now + self.lease_ms],
    )?;
    // An upsert: a rescuer may have forgotten this worker after a long silence.
    tx.execute(
      "INSERT INTO bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
       ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
      params![self.me.owner, self.me.host, self.me.pid, self.me.proc_start as i64, now],
    )?;
    tx.commit()?;
    Ok(())
  }

  fn take_notices(&mut self) -> Vec<StoreError> {
    self.refusals.take()
  }

  /// Moves on every running execution whose lease expired or whose owner, a process on this
  /// host, has exited: queued again when attempts are left, else failed (`ERR_WORKER_LOST`),
  /// or cancelled when a cancel was requested. Each move is a compare-and-set: an attempt
  /// that finished meanwhile is left alone. A move the store refuses (a trigger) leaves
  /// that attempt running, reported once (`take_notices`); the others are moved all the same.
  fn rescue(&mut self, now: f64) -> StoreResult<Vec<Rescued>> {
    loop {
      if let Some(rescued) = self.rescue_round(now)? {
        return Ok(rescued);
      }
    }
  }

  /// Deletes ended executions older than `ttl_ms`, then all but the newest `max_kept`.
  fn retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64> {
    let _short = ShortWaits::new(&self.conn, self.busy);
    let mut deleted = self.conn.execute(
      "DELETE FROM bmad_executions WHERE state >= 2 AND finalized_at < ?1",
      [now - ttl_ms],
    )?;
    deleted += self.conn.execute(
      "DELETE FROM bmad_executions WHERE id IN (SELECT id FROM bmad_executions WHERE state >= 2 \
       ORDER BY finalized_at DESC, id DESC LIMIT -1 OFFSET ?1)",
      [max_kept.min(i64::MAX as u64) as i64],
    )?;
    // Readers of the ends log look a few polls back at most.
    self.conn.execute(
      "DELETE FROM bmad_ends WHERE seq < (SELECT max(seq) FROM bmad_ends) - ?1",
      [ENDS_KEPT],
    )?;
    Ok(deleted as u64)
  }

  /// This worker leaves the store, unless attempts are still running in its name (see the
  /// PostgreSQL store's `leave`).
  fn leave(&mut self) -> StoreResult<()> {
    self.conn.execute(
      "DELETE FROM bmad_workers WHERE owner = ?1 \
       AND NOT EXISTS (SELECT 1 FROM bmad_executions e WHERE e.state = 1 AND e.owner = ?1)",
      [&self.me.owner],
    )?;
    Ok(())
  }

  /// `PRAGMA integrity_check`: "ok" for a sound file.
  fn integrity_check(&mut self) -> StoreResult<String> {
    Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
  }

  fn changes(&mut self) -> StoreResult<Changes> {
    let v = self.data_version()?;
    if v == self.version {
      return Ok(Changes::default());
    }
    let ends = self.ends_after(self.ends_seen)?;
    // Only once read: a failed read leaves the change to be seen at the next poll.
    self.version = v;
    if let Some(&(seq, _)) = ends.last() {
      self.ends_seen = seq;
    }
    Ok(Changes {
      any: true,
      ended: ends.into_iter().map(|(_, id)| id).collect(),
      full: false,
      cancels: true,
      work: true,
      ..Changes::default()
    })
  }
}

/// One submission. No RETURNING: SQLite serves it through a temporary table built per
/// statement; the id is `last_insert_rowid`.
pub(super) const INSERT: &str =
  "INSERT INTO bmad_executions (agent, task, options, level, priority, mode, key, state, \
  max_attempts, retry_delay_ms, backoff, timeout_ms, created_at, scheduled_at) \
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, ?12, max(?12, ?13)) ON CONFLICT DO NOTHING";

/// A completed attempt, compare-and-set on (id, attempt, owner, running), when no cancel
/// was asked of it.
pub(super) const COMPLETE: &str = "UPDATE bmad_executions SET state = 2, result = ?4, progress = 100, \
  lease_expires_at = NULL, finalized_at = ?5 WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1 \
  AND cancel_requested = 0";

/// A completion that came after a cancel was asked: the execution ends cancelled, the value
/// discarded (the cancel's error is in the row).
const COMPLETE_CANCELLED: &str = "UPDATE bmad_executions SET state = 4, lease_expires_at = NULL, \
  finalized_at = ?4 WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1 AND cancel_requested = 1";

fn insert(tx: &Connection, n: &NewExecution, now: f64) -> StoreResult<Inserted> {
  let mut st = tx.prepare_cached(INSERT)?;
  let added = st.execute(params![
    n.agent,
    n.task,
    n.options,
    n.level,
    n.priority,
    n.mode,
    n.key,
    n.max_attempts.max(1),
    n.retry_delay_ms,
    n.backoff,
    n.timeout_ms,
    now,
    n.start_after
  ])?;
  if added == 1 {
    return Ok(Inserted {
      id: tx.last_insert_rowid(),
      existing: false,
    });
  }
  // Only the key's unique index can refuse the row: the live execution with that key.
  let existing: i64 = tx.query_row(
    "SELECT id FROM bmad_executions WHERE key = ?1 AND state <= 1",
    [&n.key],
    |r| r.get(0),
  )?;
  Ok(Inserted {
    id: existing,
    existing: true,
  })
}

fn finish(tx: &Connection, owner: &str, f: &Finish, now: f64, jitter: &mut Jitter) -> StoreResult<Finished> {
  let cas = "id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1";
  if f.status == STATUS_COMPLETED {
    // The common case, spelled out: no string built per attempt.
    let mut st = tx.prepare_cached(COMPLETE)?;
    if st.execute(params![f.id, f.attempt, owner, f.value, now])? == 1 {
      log_end(tx, f.id)?;
      return Ok(Finished::Recorded);
    }
    let mut st = tx.prepare_cached(COMPLETE_CANCELLED)?;
    if st.execute(params![f.id, f.attempt, owner, now])? == 1 {
      log_end(tx, f.id)?;
      return Ok(Finished::Cancelled);
    }
    return Ok(Finished::Stale);
  }
  let stored: Option<Stored> = tx
    .prepare_cached(&format!(
      "SELECT max_attempts, retry_delay_ms, backoff, cancel_requested FROM bmad_executions WHERE {cas}"
    ))?
    .query_row(params![f.id, f.attempt, owner], |r| {
      Ok(Stored {
        max_attempts: count(r, 0)?,
        retry_delay_ms: r.get(1)?,
        backoff: count(r, 2)?,
        cancel_requested: r.get::<_, i64>(3)? != 0,
      })
    })
    .optional()?;
  let Some(stored) = stored else {
    return Ok(Finished::Stale);
  };
  let state = match decide::after_attempt(f.status, f.retryable, f.attempt, stored, jitter) {
    AfterAttempt::Retry(delay) => {
      tx.prepare_cached(&format!(
        "UPDATE bmad_executions SET state = 0, owner = NULL, lease_expires_at = NULL, error = ?4, scheduled_at = ?5 WHERE {cas}"
      ))?
      .execute(params![f.id, f.attempt, owner, f.value, now + delay])?;
      return Ok(Finished::Retry(delay));
    }
    AfterAttempt::End(state) => state,
  };
  // A failure after a cancel was asked: the cancel's error stays.
  let overruled = stored.cancel_requested && f.status != STATUS_CANCELLED;
  let value = if overruled { None } else { f.value.as_deref() };
  let changed = tx
    .prepare_cached(&format!(
      "UPDATE bmad_executions SET state = ?4, error = coalesce(?5, error), lease_expires_at = NULL, finalized_at = ?6 WHERE {cas}"
    ))?
    .execute(params![f.id, f.attempt, owner, state, value, now])?;
  if changed == 1 {
    log_end(tx, f.id)?;
  }
  Ok(if overruled {
    Finished::Cancelled
  } else {
    Finished::Recorded
  })
}

/// An immediate transaction (the write lock held), and `now` moved on by the wait for the
/// lock when there was one: an uncontended lock takes microseconds, and times written then
/// stay `now` exactly.
fn immediate(conn: &Connection, now: f64) -> StoreResult<(rusqlite::Transaction<'_>, f64)> {
  let asked = std::time::Instant::now();
  let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
  let waited = asked.elapsed().as_secs_f64() * 1000.0;
  Ok((tx, if waited >= 1.0 { now + waited } else { now }))
}

/// Hands a running attempt back to the queue without counting it (or ends it as cancelled
/// when a cancel was requested).
fn release(tx: &Connection, owner: &str, r: &Release, now: f64) -> StoreResult<()> {
  let cancelled: Option<bool> = tx
    .prepare_cached("SELECT cancel_requested FROM bmad_executions WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1")?
    .query_row(params![r.id, r.attempt, owner], |r| Ok(r.get::<_, i64>(0)? != 0))
    .optional()?;
  let Some(cancelled) = cancelled else {
    return Ok(());
  };
  let changed = tx
    .prepare_cached(
      "UPDATE bmad_executions SET \
       state = CASE WHEN cancel_requested THEN 4 ELSE 0 END, \
       attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END, \
       owner = CASE WHEN cancel_requested THEN owner ELSE NULL END, \
       finalized_at = CASE WHEN cancel_requested THEN ?4 ELSE NULL END, \
       lease_expires_at = NULL, scheduled_at = created_at \
     WHERE id = ?1 AND attempt = ?2 AND owner = ?3 AND state = 1",
    )?
    .execute(params![r.id, r.attempt, owner, now])?;
  if changed == 1 && cancelled {
    log_end(tx, r.id)?;
  }
  Ok(())
}

/// Appends an execution's end to the ends log, in the transaction that ended it. Every change
/// of state to ended calls it (a trigger would make each such statement keep a statement
/// journal, a copy of every page it touches).
fn log_end(tx: &Connection, id: i64) -> StoreResult<()> {
  tx.prepare_cached("INSERT INTO bmad_ends (execution_id) VALUES (?1)")?
    .execute([id])?;
  Ok(())
}

#[cfg(test)]
fn claim_sqls() -> Vec<String> {
  vec![
    FIRST_QUEUED_AGENT.to_string(),
    QUEUED_AGENT.to_string(),
    CLAIM_PICK.to_string(),
    claim_take().to_string(),
  ]
}

/// The earliest due time after `?1` among queued executions of interest (`?2`: any agent;
/// `?3`: the agents, JSON). Read from the index of delayed rows: a row due when it was created
/// is claimable at once (see `CLAIM_PICK`).
pub(super) const NEXT_DUE: &str = "SELECT min(scheduled_at) FROM bmad_executions \
  WHERE state = 0 AND scheduled_at > created_at AND scheduled_at > ?1 \
  AND (?2 OR agent IN (SELECT value FROM json_each(?3)))";

/// The first agent after `?1` with queued executions: one seek in the queue index.
const QUEUED_AGENT: &str =
  "SELECT agent FROM bmad_executions WHERE state = 0 AND agent > ?1 ORDER BY agent LIMIT 1";

/// Up to this many agents of interest, a claim reads their queues by name; beyond, it finds
/// the agents with queued work in the index.
const LISTED_AGENTS_READ: usize = 8;

/// The first agent with queued executions.
const FIRST_QUEUED_AGENT: &str = "SELECT agent FROM bmad_executions WHERE state = 0 ORDER BY agent LIMIT 1";

/// One agent's best `?3` due executions, read in order from the queue index. A row due when
/// it was created is due whatever this process's clock says (a clock stepped back, or read
/// a moment before another process's): only delayed rows wait for theirs.
const CLAIM_PICK: &str = "SELECT priority, id FROM bmad_executions \
  WHERE state = 0 AND agent = ?1 AND (scheduled_at <= ?2 OR scheduled_at <= created_at) \
  ORDER BY priority DESC, id LIMIT ?3";

/// Takes the claimed ids (`?4`, JSON), compare-and-set on queued. Built once.
fn claim_take() -> &'static str {
  static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
      "UPDATE bmad_executions SET state = 1, attempt = attempt + 1, owner = ?1, lease_expires_at = ?2, attempted_at = ?3 \
       WHERE id IN (SELECT value FROM json_each(?4)) AND state = 0 RETURNING {COLUMNS}"
    )
  });
  &SQL
}

/// Claims the best `limit` due executions of the agents of interest but `exclude`. Each
/// agent's queue is read from the index on its own: queued rows of agents left out (run
/// elsewhere, or held back here by their limits) are never stepped over. The queues are
/// merged best first: each agent's best row is read, then the agents in that order, each
/// read only while its rows can still make the best `limit`.
#[allow(clippy::too_many_arguments)]
fn claim(
  tx: &Connection,
  owner: &str,
  interest: &Interest,
  exclude: &[String],
  limit: u32,
  now: f64,
  lease_ms: f64,
) -> StoreResult<Vec<Row>> {
  // A long list of agents of interest is not read one by one: the agents with queued work
  // are found in the index and kept when listed.
  let found: Vec<String>;
  let agents: &[String] = if interest.any || interest.agents.len() > LISTED_AGENTS_READ {
    let listed: std::collections::HashSet<&str> = interest.agents.iter().map(String::as_str).collect();
    let mut queued = Vec::new();
    let mut next = tx
      .prepare_cached(FIRST_QUEUED_AGENT)?
      .query_row([], |r| text(r, 0))
      .optional()?;
    let mut st = tx.prepare_cached(QUEUED_AGENT)?;
    while let Some(a) = next {
      next = st.query_row([&a], |r| text(r, 0)).optional()?;
      if interest.any || listed.contains(a.as_str()) {
        queued.push(a);
      }
    }
    found = queued;
    &found
  } else {
    &interest.agents
  };
  // Rows as (Reverse(priority), id): the smaller, the sooner it runs.
  type Rank = (std::cmp::Reverse<i64>, i64);
  let rank = |r: &SqlRow<'_>| -> rusqlite::Result<Rank> { Ok((std::cmp::Reverse(r.get(0)?), r.get(1)?)) };
  let limit_n = limit as usize;
  let mut pick = tx.prepare_cached(CLAIM_PICK)?;
  let mut heads: Vec<(Rank, &String)> = Vec::new();
  for agent in agents.iter().filter(|a| !exclude.contains(a)) {
    if let Some(head) = pick.query_row(params![agent, now, 1], rank).optional()? {
      heads.push((head, agent));
    }
  }
  heads.sort();
  // The best `limit` so far; the worst of them on top.
  let mut best: std::collections::BinaryHeap<Rank> = std::collections::BinaryHeap::with_capacity(limit_n + 1);
  for (head, agent) in heads {
    if best.len() == limit_n && best.peek().is_some_and(|worst| head >= *worst) {
      break;
    }
    let mut rows = pick.query(params![agent, now, limit])?;
    while let Some(r) = rows.next()? {
      let r = rank(r)?;
      if best.len() == limit_n {
        if best.peek().is_some_and(|worst| r >= *worst) {
          break;
        }
        best.pop();
      }
      best.push(r);
    }
  }
  if best.is_empty() {
    return Ok(Vec::new());
  }
  let ids: Vec<i64> = best.iter().map(|&(_, id)| id).collect();
  let ids = serde_json::to_string(&ids).map_err(|e| StoreError::store(e.to_string()))?;
  let mut st = tx.prepare_cached(claim_take())?;
  let mut rows = st
    .query_map(params![owner, now + lease_ms, now, ids], row)?
    .collect::<rusqlite::Result<Vec<_>>>()?;
  // RETURNING gives no order: start them in queue order.
  rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
  Ok(rows)
}

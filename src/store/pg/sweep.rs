//! Retention on PostgreSQL: deleting ended executions past their time-to-live or past the
//! newest ones kept. Keeping the newest `n` reads every ended row beyond them (tens of ms at
//! 100k ended rows, growing with the store), so an executor sweeps on a connection of its
//! pool, in the background: its batches do not queue behind a sweep (they can still meet a
//! row it locks). One executor of a store sweeps at a time (an advisory lock; the others
//! skip their turn), and a sweep that runs long is stopped by the server
//! (`statement_timeout`, `lock_timeout`), so none is left running when the client gives up.

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::pg_error;
use super::pool::Pool;
use crate::store::{StoreError, StoreResult};

/// How long the record of a try whose answer never came is kept, and the empty record that
/// keeps a try given up from committing late (see the `bmad_batches` migration).
const BATCH_RECORD_MS: f64 = 24.0 * 3600.0 * 1000.0;

/// Deletes, in schema `s` (quoted), the ended executions that ended before `cutoff`, then
/// those past the newest `keep`; returns how many. Records of batches older than a day go
/// too.
pub async fn delete_ended(
  client: &Client,
  s: &str,
  cutoff: f64,
  keep: i64,
) -> Result<u64, tokio_postgres::Error> {
  let mut n = client
    .execute(
      &format!("DELETE FROM {s}.bmad_executions WHERE state >= 2 AND finalized_at < $1"),
      &[&cutoff],
    )
    .await?;
  n += client
    .execute(
      &format!(
        "DELETE FROM {s}.bmad_executions WHERE id IN (SELECT id FROM {s}.bmad_executions WHERE state >= 2 \
         ORDER BY finalized_at DESC, id DESC OFFSET $1)"
      ),
      &[&keep],
    )
    .await?;
  let before = crate::system::probes::now_ms() - BATCH_RECORD_MS;
  client
    .execute(
      &format!("DELETE FROM {s}.bmad_batches WHERE recorded_at < $1"),
      &[&before],
    )
    .await?;
  Ok(n)
}

/// Sweeps one at a time on a task of the shared runtime, with a connection of the pool.
pub struct Sweeper {
  rt: Handle,
  pool: Pool,
  task: Option<JoinHandle<StoreResult<u64>>>,
}

impl Sweeper {
  pub fn new(rt: Handle, pool: Pool) -> Sweeper {
    Sweeper { rt, pool, task: None }
  }

  /// Closes the pool's connections left unused too long.
  pub fn prune(&self) {
    self.pool.prune();
  }

  /// Whether a sweep is under way.
  pub fn busy(&self) -> bool {
    self.task.as_ref().is_some_and(|t| !t.is_finished())
  }

  /// Starts a sweep, unless one is under way. Returns how the sweep finished since the last
  /// call went (`None`: none did).
  pub fn start(&mut self, s: String, cutoff: f64, keep: i64) -> Option<StoreResult<u64>> {
    if self.busy() {
      return None;
    }
    let last = self.take_finished();
    let pool = self.pool.clone();
    self.task = Some(self.rt.spawn(async move {
      let shown = pool.target().shown.clone();
      // A sweep given up is a failed sweep (reported), not a lost connection.
      super::within(&shown, "cannot clean", sweep(&pool, &s, cutoff, keep))
        .await
        .unwrap_or_else(|e| Err(StoreError::store(e.message)))
    }));
    last
  }

  /// The outcome of a finished sweep, once.
  fn take_finished(&mut self) -> Option<StoreResult<u64>> {
    let task = self.task.take()?;
    match self.rt.block_on(task) {
      Ok(result) => Some(result),
      Err(e) => Some(Err(StoreError::store(format!(
        "cannot clean store {}: the sweep stopped ({e})",
        self.pool.target().shown
      )))),
    }
  }
}

impl Drop for Sweeper {
  fn drop(&mut self) {
    if let Some(t) = &self.task {
      t.abort();
    }
  }
}

async fn sweep(pool: &Pool, s: &str, cutoff: f64, keep: i64) -> StoreResult<u64> {
  let mut lent = pool.get().await?;
  let client = lent.client();
  let outcome = async {
    // Planned per sweep (not prepared). The server ends a sweep before the client's own
    // limit (`TIMEOUT`, 30 s) would drop it.
    client
      .batch_execute("BEGIN; SET LOCAL statement_timeout = '20s'; SET LOCAL lock_timeout = '5s'")
      .await?;
    // Not under `bmad/{s}/`: those keys are the agents' global limits (an agent may be
    // named "sweep").
    let key = format!("bmad-sweep/{s}");
    let mine: bool = client
      .query_one(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
      )
      .await?
      .try_get(0)?;
    let n = if mine {
      delete_ended(client, s, cutoff, keep).await?
    } else {
      0
    };
    client.batch_execute("COMMIT").await?;
    Ok::<u64, tokio_postgres::Error>(n)
  }
  .await;
  match outcome {
    Ok(n) => {
      lent.done();
      Ok(n)
    }
    Err(e) => {
      let err = pg_error(&pool.target().shown, "cannot clean", &e);
      if client.batch_execute("ROLLBACK").await.is_ok() {
        lent.done();
      }
      Err(err)
    }
  }
}

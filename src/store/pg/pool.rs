//! A small pool of connections for the work done beside the statement connection: status
//! reads and retention sweeps. The statement connection stays one (the order of its
//! requests is what lines up a batch's answers with them), so a read or a sweep never waits
//! for a batch, nor a batch for them. At most `SIZE` connections are open; one left unused
//! for `IDLE` is closed (the store thread prunes the pool at each retention turn, every 5 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::{open_client, within_pg, PgTarget, SESSION};
use crate::store::StoreError;

/// Connections open at most.
pub const SIZE: usize = 2;

/// An idle connection older than this is closed rather than lent.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
  target: PgTarget,
  idle: Mutex<Vec<(Client, Instant)>>,
  permits: Arc<Semaphore>,
}

/// A connection lent by the pool. It goes back when dropped, if `done` said its last
/// operation finished (one given up half-way may still be running on the server).
pub struct Lent {
  client: Option<Client>,
  reusable: bool,
  pool: Arc<Inner>,
  _permit: OwnedSemaphorePermit,
}

impl Pool {
  pub fn new(target: PgTarget) -> Pool {
    Pool(Arc::new(Inner {
      target,
      idle: Mutex::new(Vec::new()),
      permits: Arc::new(Semaphore::new(SIZE)),
    }))
  }

  pub fn target(&self) -> &PgTarget {
    &self.0.target
  }

  /// An idle connection, else a new one; waits while `SIZE` are lent.
  pub async fn get(&self) -> Result<Lent, StoreError> {
    let shown = &self.0.target.shown;
    let permit = self
      .0
      .permits
      .clone()
      .acquire_owned()
      .await
      .map_err(|_| StoreError::store(format!("store {shown}: the connection pool is closed")))?;
    let reused = self.0.idle.lock().ok().and_then(|mut idle| {
      prune(&mut idle);
      idle.pop().map(|(c, _)| c)
    });
    let client = match reused {
      Some(c) => c,
      None => {
        let c = open_client(&self.0.target, None).await?;
        within_pg(shown, "cannot connect to", c.batch_execute(SESSION)).await?;
        c
      }
    };
    Ok(Lent {
      client: Some(client),
      reusable: false,
      pool: self.0.clone(),
      _permit: permit,
    })
  }

  /// Closes the connections closed by the server or unused for `IDLE`.
  pub fn prune(&self) {
    if let Ok(mut idle) = self.0.idle.lock() {
      prune(&mut idle);
    }
  }

  /// Closes the idle connections and lends no more (the store closed): those lent now
  /// close when given back.
  pub fn close(&self) {
    if let Ok(mut idle) = self.0.idle.lock() {
      self.0.permits.close();
      idle.clear();
    }
  }

  /// Connections idle in the pool now.
  #[cfg(test)]
  pub fn idle(&self) -> usize {
    self.0.idle.lock().map(|i| i.len()).unwrap_or(0)
  }
}

impl Lent {
  pub fn client(&self) -> &Client {
    match &self.client {
      Some(c) => c,
      None => unreachable!("a lent connection holds its client until dropped"),
    }
  }

  /// Its operation finished: the connection may serve another.
  pub fn done(&mut self) {
    self.reusable = true;
  }
}

impl Drop for Lent {
  fn drop(&mut self) {
    if let Some(c) = self.client.take() {
      if self.reusable && !c.is_closed() {
        // Looked at under the lock `close` empties the pool with: none is kept after it.
        if let Ok(mut idle) = self.pool.idle.lock() {
          if !self.pool.permits.is_closed() {
            idle.push((c, Instant::now()));
          }
        }
      }
    }
  }
}

/// Drops the idle connections closed by the server or unused for `IDLE`.
fn prune(idle: &mut Vec<(Client, Instant)>) {
  idle.retain(|(c, at)| !c.is_closed() && at.elapsed() < IDLE);
}

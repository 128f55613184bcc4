//! Status reads beside the store thread: on a PostgreSQL store, `fetchExecutionStatus` goes
//! to the pool at once, so it waits neither for the batches queued on the thread nor for one
//! held up on the server. Reads go beside the thread once it has opened the store; it waits
//! for those under way before it answers a close. A read sees what is committed when it runs.

use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;

use super::pool::Pool;
use super::rows::{fetch_sql, row};
use crate::store::messages::{send_event, Event, SharedSink};
use crate::store::{StoreError, StoreResult};

pub struct Reader {
  pool: Pool,
  sql: String,
  rt: Handle,
  sink: SharedSink,
  reads: Mutex<Reads>,
}

#[derive(Default)]
struct Reads {
  /// Reads go beside the thread only while the store is open.
  open: bool,
  under_way: Vec<JoinHandle<()>>,
}

impl Reader {
  pub fn new(pool: Pool, sink: SharedSink) -> StoreResult<Reader> {
    let rt = crate::system::runtime::handle().map_err(StoreError::store)?;
    let sql = fetch_sql(&pool.target().quoted_schema());
    Ok(Reader {
      pool,
      sql,
      rt,
      sink,
      reads: Mutex::new(Reads::default()),
    })
  }

  /// The store is open (its schema is there): reads may go beside the thread.
  pub fn open(&self) {
    if let Ok(mut r) = self.reads.lock() {
      r.open = true;
    }
  }

  /// Reads `id` for request `req` on the pool and answers it through the sink; false when
  /// the store is not open (then the thread answers it, in line).
  pub fn fetch(&self, req: u32, id: i64) -> bool {
    let Ok(mut r) = self.reads.lock() else {
      return false;
    };
    if !r.open {
      return false;
    }
    r.under_way.retain(|t| !t.is_finished());
    let (pool, sql, sink) = (self.pool.clone(), self.sql.clone(), self.sink.clone());
    r.under_way.push(self.rt.spawn(async move {
      let ev = match fetch(&pool, &sql, id).await {
        Ok(row) => Event::Fetched {
          req,
          row: row.map(Box::new),
        },
        Err(error) => Event::Failed { req, error },
      };
      send_event(&sink, ev);
    }));
    true
  }

  /// No more reads beside the thread; waits for those under way (each answers its request),
  /// then closes the pool's connections (the handle, which holds this, outlives the thread).
  pub fn close(&self) {
    let under_way = match self.reads.lock() {
      Ok(mut r) => {
        r.open = false;
        std::mem::take(&mut r.under_way)
      }
      Err(_) => Vec::new(),
    };
    for t in under_way {
      let _ = self.rt.block_on(t);
    }
    self.pool.close();
  }
}

impl Drop for Reader {
  fn drop(&mut self) {
    if let Ok(r) = self.reads.lock() {
      for t in &r.under_way {
        t.abort();
      }
    }
  }
}

/// Execution `id` read with `sql` on a connection of `pool`, in one round trip (its
/// parameter's type given: nothing to prepare).
async fn fetch(pool: &Pool, sql: &str, id: i64) -> StoreResult<Option<crate::store::Row>> {
  let shown = &pool.target().shown;
  let mut lent = pool.get().await?;
  let r = super::within_pg(
    shown,
    "cannot read",
    lent.client().query_typed(sql, &[(&id, Type::INT8)]),
  )
  .await?;
  lent.done();
  // A row the driver cannot read (a schema changed by hand) fails this read; the store's
  // thread stops when it reads one.
  r.first().map(row).transpose().map_err(|e| {
    StoreError::store(format!(
      "cannot read store {shown}: execution {id} has a row this release cannot read ({e})"
    ))
  })
}

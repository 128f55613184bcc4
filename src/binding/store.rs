//! `NativeStore`: the durable store's thread behind napi. Requests are queued without
//! waiting; every answer and notice comes back through one weak `JsCallback` as a
//! `NativeStoreEvent`, referenced (keeping Node.js alive) only while JS says it waits.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::js_callback::{JsCallback, KeepAlive};
use super::store_rows::{new_executions, row_columns};
use crate::protocol::{
  FINISH_CANCELLED, FINISH_RECORDED, FINISH_STALE, STORE_BACKGROUND_ERROR, STORE_BATCH, STORE_CANCELLED,
  STORE_CANCEL_REQUESTED, STORE_CHANGED, STORE_CHECKED, STORE_CLOSED, STORE_DONE, STORE_ENDED, STORE_FAILED,
  STORE_FETCHED, STORE_LINK, STORE_OPENED, STORE_RESCUED, STORE_STOPPED,
};
use crate::store::pg::PgTarget;
use crate::store::schema::Synchronous;
use crate::store::service::{self, Command, Event, Handle};
use crate::store::{Batch, Finish, Finished, Progress, Release, Row};

#[napi(object)]
pub struct NativeStoreOptions {
  /// The database file (absolute, or relative to the working directory).
  pub path: String,
  /// A PostgreSQL store's URL (`postgres://…?schema=…`) instead of the file.
  pub postgres_url: Option<String>,
  /// `synchronous=FULL` (survives power loss) instead of NORMAL.
  pub synchronous_full: bool,
  pub lease_ms: f64,
  pub poll_ms: f64,
  pub ttl_ms: f64,
  pub max_kept: f64,
}

#[napi(object)]
pub struct NativeStoreBatch {
  /// The submissions' texts, one after the other (see `INSERT_TEXTS`).
  pub insert_text: Utf16String,
  /// Per submission its `INSERT_NUMBERS`, then the lengths of its `INSERT_TEXTS`.
  pub insert_numbers: Float64Array,
  /// `[id, attempt, status, retryable (0/1), ...]` per attempt that ended here; `status` is
  /// `STATUS_COMPLETED`, `STATUS_FAILED` or `STATUS_CANCELLED`.
  pub finishes: Vec<f64>,
  /// The JSON text of each finish's result or error, in the same order.
  pub finish_values: Vec<String>,
  /// `[id, attempt, percent, ...]`.
  pub progress: Vec<f64>,
  /// `[id, attempt, ...]`: attempts handed back to the queue uncounted.
  pub releases: Vec<f64>,
  pub claim: u32,
  /// Agents not to claim for now (at their limits here).
  pub exclude: Vec<String>,
}

#[napi(object)]
pub struct NativeStoreEvent {
  /// One of the `STORE_*` codes.
  pub kind: u32,
  /// The request answered (0: a notice).
  pub req: u32,
  pub ids: Vec<f64>,
  pub codes: Vec<f64>,
  /// Stored executions (`STORE_BATCH`: the claimed ones, in queue order): `ROW_TEXTS` per row.
  pub row_texts: Vec<Option<String>>,
  /// `ROW_NUMBERS` per row.
  pub row_numbers: Float64Array,
  pub names: Vec<String>,
  pub stale: u32,
  pub error_code: Option<String>,
  pub text: Option<String>,
}

fn to_id(v: f64) -> i64 {
  if (1.0..=9_007_199_254_740_991.0).contains(&v) {
    v as i64
  } else {
    0
  }
}

/// An event of `kind` carrying `rows` (see `store_rows::row_columns`).
fn rows_event(rows: Vec<Row>, kind: u32, req: u32, claims: bool) -> NativeStoreEvent {
  let (texts, numbers) = row_columns(rows, claims);
  NativeStoreEvent {
    row_texts: texts,
    row_numbers: Float64Array::new(numbers),
    ..NativeStoreEvent::new(kind, req)
  }
}

impl From<NativeStoreBatch> for Batch {
  fn from(b: NativeStoreBatch) -> Self {
    Batch {
      inserts: new_executions(&b.insert_text, &b.insert_numbers),
      finishes: b
        .finishes
        .chunks_exact(4)
        .zip(b.finish_values)
        .map(|(f, value)| Finish {
          id: to_id(f[0]),
          attempt: f[1] as u32,
          status: f[2] as u32,
          value: Some(value),
          retryable: f[3] != 0.0,
        })
        .collect(),
      progress: b
        .progress
        .chunks_exact(3)
        .map(|c| Progress {
          id: to_id(c[0]),
          attempt: c[1] as u32,
          percent: if c[2].is_finite() {
            c[2].clamp(0.0, 100.0)
          } else {
            0.0
          },
        })
        .collect(),
      releases: b
        .releases
        .chunks_exact(2)
        .map(|c| Release {
          id: to_id(c[0]),
          attempt: c[1] as u32,
        })
        .collect(),
      claim: b.claim,
      exclude: b.exclude,
    }
  }
}

impl NativeStoreEvent {
  fn new(kind: u32, req: u32) -> Self {
    NativeStoreEvent {
      kind,
      req,
      ids: Vec::new(),
      codes: Vec::new(),
      row_texts: Vec::new(),
      row_numbers: Float64Array::new(Vec::new()),
      names: Vec::new(),
      stale: 0,
      error_code: None,
      text: None,
    }
  }
}

impl From<Event> for NativeStoreEvent {
  fn from(ev: Event) -> Self {
    match ev {
      Event::Opened { owner } => NativeStoreEvent {
        text: Some(owner),
        ..NativeStoreEvent::new(STORE_OPENED, 0)
      },
      Event::Batch { req, result } => NativeStoreEvent {
        ids: result
          .inserted
          .iter()
          .map(|i| if i.existing { -(i.id as f64) } else { i.id as f64 })
          .collect(),
        codes: result
          .finished
          .iter()
          .map(|f| match f {
            Finished::Recorded => f64::from(FINISH_RECORDED),
            Finished::Stale => f64::from(FINISH_STALE),
            Finished::Cancelled => f64::from(FINISH_CANCELLED),
            Finished::Retry(d) => *d,
          })
          .collect(),
        stale: result.stale,
        ..rows_event(result.claimed, STORE_BATCH, req, true)
      },
      Event::Cancelled { req, was } => NativeStoreEvent {
        codes: vec![f64::from(was)],
        ..NativeStoreEvent::new(STORE_CANCELLED, req)
      },
      Event::Fetched { req, row } => {
        rows_event(row.into_iter().map(|r| *r).collect(), STORE_FETCHED, req, false)
      }
      Event::Checked { req, result } => NativeStoreEvent {
        text: Some(result),
        ..NativeStoreEvent::new(STORE_CHECKED, req)
      },
      Event::Failed { req, error } => NativeStoreEvent {
        error_code: Some(error.code.to_string()),
        text: Some(error.message),
        ..NativeStoreEvent::new(STORE_FAILED, req)
      },
      Event::Changed => NativeStoreEvent::new(STORE_CHANGED, 0),
      Event::CancelRequested(list) => NativeStoreEvent {
        ids: list
          .iter()
          .flat_map(|c| [c.id as f64, f64::from(c.attempt)])
          .collect(),
        ..NativeStoreEvent::new(STORE_CANCEL_REQUESTED, 0)
      },
      Event::Ended { rows, gone, unread } => NativeStoreEvent {
        ids: gone.iter().map(|&id| id as f64).collect(),
        codes: unread.iter().map(|&id| id as f64).collect(),
        ..rows_event(rows, STORE_ENDED, 0, false)
      },
      Event::Done { req } => NativeStoreEvent::new(STORE_DONE, req),
      Event::Link { up, store } => NativeStoreEvent {
        codes: vec![if up { 1.0 } else { 0.0 }],
        text: Some(store),
        ..NativeStoreEvent::new(STORE_LINK, 0)
      },
      Event::Rescued(list) => NativeStoreEvent {
        ids: list
          .iter()
          .flat_map(|r| [r.id as f64, f64::from(r.attempt), f64::from(r.status)])
          .collect(),
        names: list.into_iter().flat_map(|r| [r.agent, r.owner]).collect(),
        ..NativeStoreEvent::new(STORE_RESCUED, 0)
      },
      Event::Background(error) => NativeStoreEvent {
        error_code: Some(error.code.to_string()),
        text: Some(error.message),
        ..NativeStoreEvent::new(STORE_BACKGROUND_ERROR, 0)
      },
      Event::Stopped(error) => NativeStoreEvent {
        error_code: Some(error.code.to_string()),
        text: Some(error.message),
        ..NativeStoreEvent::new(STORE_STOPPED, 0)
      },
      Event::Closed { req } => NativeStoreEvent::new(STORE_CLOSED, req),
    }
  }
}

#[napi]
pub struct NativeStore {
  handle: Handle,
  keep_alive: KeepAlive,
}

#[napi]
impl NativeStore {
  /// Starts the store's thread, which opens the database and answers `STORE_OPENED` or
  /// `STORE_FAILED` (req 0) through `on_event`.
  #[napi(constructor, catch_unwind)]
  pub fn new(options: NativeStoreOptions, on_event: Function<NativeStoreEvent, ()>) -> Result<Self> {
    let callback = JsCallback::new(on_event)?;
    let keep_alive = callback.keep_alive();
    let opts = service::Options {
      path: PathBuf::from(options.path),
      synchronous: if options.synchronous_full {
        Synchronous::Full
      } else {
        Synchronous::Normal
      },
      lease_ms: positive(options.lease_ms, 30_000.0),
      poll_ms: positive(options.poll_ms, 0.25),
      ttl_ms: if options.ttl_ms.is_finite() && options.ttl_ms >= 0.0 {
        options.ttl_ms
      } else {
        7.0 * 86_400_000.0
      },
      max_kept: if options.max_kept.is_finite() && options.max_kept >= 0.0 {
        options.max_kept as u64
      } else {
        u64::MAX
      },
      postgres: options.postgres_url.as_deref().map(PgTarget::parse),
      follow_ms: service::FOLLOW_MS,
    };
    let sink = Box::new(move |ev: Event| callback.call(NativeStoreEvent::from(ev)) == Status::Ok);
    let handle = service::start(opts, sink).map_err(|e| {
      Error::new(
        Status::GenericFailure,
        format!("cannot start the store thread: {e}"),
      )
    })?;
    Ok(NativeStore { handle, keep_alive })
  }

  #[napi(catch_unwind)]
  pub fn batch(&self, req: u32, batch: NativeStoreBatch) -> bool {
    self.handle.send(Command::Batch {
      req,
      batch: batch.into(),
    })
  }

  /// A claim of up to `claim` executions held by the store's thread until claimable work
  /// may be waiting, then answered under `req` like a batch (`STORE_BATCH`/`STORE_FAILED`).
  /// It replaces a claim parked before (answered with what was pushed to it, if anything).
  #[napi(catch_unwind)]
  pub fn park(&self, req: u32, claim: u32, exclude: Vec<String>) -> bool {
    self.handle.send(Command::Park {
      req,
      batch: Batch {
        claim,
        exclude,
        ..Batch::default()
      },
    })
  }

  /// The parked claim runs now (`run`), or is answered with nothing claimed; nothing when
  /// none is parked.
  #[napi(catch_unwind)]
  pub fn unpark(&self, run: bool) -> bool {
    self.handle.send(Command::Unpark { run })
  }

  #[napi(catch_unwind)]
  pub fn cancel(&self, req: u32, id: f64, error_json: String) -> bool {
    self.handle.send(Command::Cancel {
      req,
      id: to_id(id),
      error: error_json,
    })
  }

  /// Reads one execution, beside the store thread when the store can (PostgreSQL's pool);
  /// answered by `STORE_FETCHED` or `STORE_FAILED`.
  #[napi(catch_unwind)]
  pub fn fetch(&self, req: u32, id: f64) -> bool {
    self.handle.fetch(req, to_id(id))
  }

  /// `fetch` in line with the requests sent before it (it sees what they wrote).
  #[napi(catch_unwind)]
  pub fn fetch_in_line(&self, req: u32, id: f64) -> bool {
    self.handle.send(Command::Fetch { req, id: to_id(id) })
  }

  #[napi(catch_unwind)]
  pub fn check(&self, req: u32) -> bool {
    self.handle.send(Command::Check { req })
  }

  /// The most executions of `agent` running at once on every executor (0: no limit);
  /// answered by `STORE_DONE` or `STORE_FAILED`.
  #[napi(catch_unwind)]
  pub fn global_limit(&self, req: u32, agent: String, limit: u32) -> bool {
    self.handle.send(Command::GlobalLimit {
      req,
      agent,
      limit: (limit > 0).then_some(limit),
    })
  }

  /// Claims executions of `agents` (or of any agent).
  #[napi(catch_unwind)]
  pub fn interest(&self, any: bool, agents: Vec<String>) -> bool {
    self.handle.send(Command::Interest { any, agents })
  }

  /// Reports the ends of `ids`; `check`: they may have ended already, look now.
  #[napi(catch_unwind)]
  pub fn watch(&self, ids: Vec<f64>, check: bool) -> bool {
    self.handle.send(Command::Watch {
      ids: ids.into_iter().map(to_id).collect(),
      check,
    })
  }

  #[napi(catch_unwind)]
  pub fn unwatch(&self, ids: Vec<f64>) -> bool {
    self
      .handle
      .send(Command::Unwatch(ids.into_iter().map(to_id).collect()))
  }

  #[napi(catch_unwind)]
  pub fn close(&self, req: u32) -> bool {
    self.handle.send(Command::Close { req })
  }

  /// Whether the store's callback keeps Node.js alive (JS waits for an answer or for work).
  #[napi(catch_unwind)]
  pub fn keep_alive(&mut self, env: Env, on: bool) {
    self.keep_alive.set(&env, on);
  }
}

fn positive(v: f64, default: f64) -> f64 {
  if v.is_finite() && v > 0.0 {
    v
  } else {
    default
  }
}

//! `NativeStore`: the durable store's thread behind napi. Requests are queued without
//! waiting; every answer and notice comes back through one weak `JsCallback` as a
//! `NativeStoreEvent`, referenced (keeping Node.js alive) only while JS says it waits.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::js_callback::{JsCallback, KeepAlive};
use crate::protocol::{
  FINISH_RECORDED, FINISH_STALE, STORE_BACKGROUND_ERROR, STORE_BATCH, STORE_CANCELLED,
  STORE_CANCEL_REQUESTED, STORE_CHANGED, STORE_CHECKED, STORE_CLOSED, STORE_DONE, STORE_ENDED, STORE_FAILED,
  STORE_FETCHED, STORE_LINK, STORE_OPENED, STORE_RESCUED, STORE_STOPPED,
};
use crate::store::pg::PgTarget;
use crate::store::schema::Synchronous;
use crate::store::service::{self, Command, Event, Handle};
use crate::store::{Batch, Finish, Finished, NewExecution, Progress, Release, Row};

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

/// Where field `name` of `fields` is: the layouts of `protocol` are the one source, and a
/// name missing from them fails the build.
const fn position(fields: &[&str], name: &str) -> usize {
  let mut i = 0;
  while i < fields.len() {
    let (a, b) = (fields[i].as_bytes(), name.as_bytes());
    if a.len() == b.len() {
      let mut j = 0;
      while j < a.len() && a[j] == b[j] {
        j += 1;
      }
      if j == a.len() {
        return i;
      }
    }
    i += 1;
  }
  panic!("a field missing from its layout in protocol.rs")
}

/// Positions of a submission's fields (`INSERT_TEXTS`, `INSERT_NUMBERS`).
mod insert {
  use super::position;
  use crate::protocol::{INSERT_NUMBERS as N, INSERT_TEXTS as T};
  pub const TEXTS: usize = T.len();
  pub const NUMBERS: usize = N.len();
  pub const AGENT: usize = position(&T, "agent");
  pub const TASK: usize = position(&T, "task");
  pub const OPTIONS: usize = position(&T, "options");
  pub const LEVEL: usize = position(&T, "level");
  pub const KEY: usize = position(&T, "key");
  pub const PRIORITY: usize = position(&N, "priority");
  pub const MODE: usize = position(&N, "mode");
  pub const MAX_ATTEMPTS: usize = position(&N, "maxAttempts");
  pub const RETRY_DELAY_MS: usize = position(&N, "retryDelayMs");
  pub const BACKOFF: usize = position(&N, "backoff");
  pub const TIMEOUT_MS: usize = position(&N, "timeoutMs");
  pub const START_AFTER: usize = position(&N, "startAfter");
  pub const SEQ: usize = position(&N, "seq");
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

/// Positions of a stored execution's fields (`ROW_TEXTS`, `ROW_NUMBERS`).
mod row {
  use super::position;
  use crate::protocol::{ROW_NUMBERS as N, ROW_TEXTS as T};
  pub const TEXTS: usize = T.len();
  pub const NUMBERS: usize = N.len();
  pub const AGENT: usize = position(&T, "agent");
  pub const TASK: usize = position(&T, "task");
  pub const OPTIONS: usize = position(&T, "options");
  pub const LEVEL: usize = position(&T, "level");
  pub const KEY: usize = position(&T, "key");
  pub const RESULT: usize = position(&T, "result");
  pub const ERROR: usize = position(&T, "error");
  pub const OWNER: usize = position(&T, "owner");
  pub const ID: usize = position(&N, "id");
  pub const PRIORITY: usize = position(&N, "priority");
  pub const MODE: usize = position(&N, "mode");
  pub const STATUS: usize = position(&N, "status");
  pub const ATTEMPT: usize = position(&N, "attempt");
  pub const MAX_ATTEMPTS: usize = position(&N, "maxAttempts");
  pub const TIMEOUT_MS: usize = position(&N, "timeoutMs");
  pub const PROGRESS: usize = position(&N, "progress");
  pub const CANCEL_REQUESTED: usize = position(&N, "cancelRequested");
  pub const CREATED_AT: usize = position(&N, "createdAt");
  pub const SCHEDULED_AT: usize = position(&N, "scheduledAt");
  pub const ATTEMPTED_AT: usize = position(&N, "attemptedAt");
  pub const FINALIZED_AT: usize = position(&N, "finalizedAt");
}

/// An event of `kind` carrying `rows`, laid out as `row` says. `claims`: what running them
/// needs, without their last result or error (a retry's error may be large), owner or key.
fn rows_event(rows: Vec<Row>, kind: u32, req: u32, claims: bool) -> NativeStoreEvent {
  let mut texts = Vec::with_capacity(rows.len() * row::TEXTS);
  let mut numbers = Vec::with_capacity(rows.len() * row::NUMBERS);
  for r in rows {
    let mut t: [Option<String>; row::TEXTS] = Default::default();
    t[row::AGENT] = Some(r.agent);
    t[row::TASK] = Some(r.task);
    t[row::OPTIONS] = r.options;
    t[row::LEVEL] = Some(r.level);
    if !claims {
      t[row::KEY] = r.key;
      t[row::RESULT] = r.result;
      t[row::ERROR] = r.error;
      t[row::OWNER] = r.owner;
    }
    texts.extend(t);
    let mut n = [0.0; row::NUMBERS];
    n[row::ID] = r.id as f64;
    n[row::PRIORITY] = r.priority as f64;
    n[row::MODE] = f64::from(r.mode);
    n[row::STATUS] = f64::from(r.status);
    n[row::ATTEMPT] = f64::from(r.attempt);
    n[row::MAX_ATTEMPTS] = f64::from(r.max_attempts);
    n[row::TIMEOUT_MS] = r.timeout_ms;
    n[row::PROGRESS] = r.progress;
    n[row::CANCEL_REQUESTED] = if r.cancel_requested { 1.0 } else { 0.0 };
    n[row::CREATED_AT] = r.created_at;
    n[row::SCHEDULED_AT] = r.scheduled_at;
    n[row::ATTEMPTED_AT] = r.attempted_at.unwrap_or(f64::NAN);
    n[row::FINALIZED_AT] = r.finalized_at.unwrap_or(f64::NAN);
    numbers.extend(n);
  }
  NativeStoreEvent {
    row_texts: texts,
    row_numbers: Float64Array::new(numbers),
    ..NativeStoreEvent::new(kind, req)
  }
}

/// `n` if finite, else `or`.
fn finite(n: f64, or: f64) -> f64 {
  if n.is_finite() {
    n
  } else {
    or
  }
}

/// The submissions of a batch from its text and numbers (laid out as `insert` says). Lengths
/// past the text's end (a bug) shorten the texts; nothing panics.
fn new_executions(text: &[u16], numbers: &[f64]) -> Vec<NewExecution> {
  let mut at = 0usize;
  let mut next = |len: f64| -> Option<String> {
    if len.is_nan() || len < 0.0 {
      return None;
    }
    let end = at.saturating_add(len as usize).min(text.len());
    let s = String::from_utf16_lossy(&text[at.min(end)..end]);
    at = end;
    Some(s)
  };
  numbers
    .chunks_exact(insert::NUMBERS + insert::TEXTS)
    .map(|c| {
      let (n, lens) = c.split_at(insert::NUMBERS);
      let mut t: [Option<String>; insert::TEXTS] = Default::default();
      for (slot, &len) in t.iter_mut().zip(lens) {
        *slot = next(len);
      }
      let mut take = |i: usize| std::mem::take(&mut t[i]);
      NewExecution {
        agent: take(insert::AGENT).unwrap_or_default(),
        task: take(insert::TASK).unwrap_or_default(),
        options: take(insert::OPTIONS),
        level: take(insert::LEVEL).unwrap_or_default(),
        key: take(insert::KEY),
        priority: finite(n[insert::PRIORITY], 0.0) as i64,
        mode: n[insert::MODE] as u32,
        max_attempts: (n[insert::MAX_ATTEMPTS] as u32).max(1),
        retry_delay_ms: finite(n[insert::RETRY_DELAY_MS], 0.0).max(0.0),
        backoff: n[insert::BACKOFF] as u32,
        timeout_ms: finite(n[insert::TIMEOUT_MS], 0.0).max(0.0),
        start_after: finite(n[insert::START_AFTER], 0.0),
        seq: if n[insert::SEQ].is_finite() && n[insert::SEQ] >= 1.0 {
          n[insert::SEQ] as u64
        } else {
          0
        },
      }
    })
    .collect()
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
      Event::Ended { rows, gone } => NativeStoreEvent {
        ids: gone.iter().map(|&id| id as f64).collect(),
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
  #[napi(constructor)]
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

  #[napi]
  pub fn batch(&self, req: u32, batch: NativeStoreBatch) -> bool {
    self.handle.send(Command::Batch {
      req,
      batch: batch.into(),
    })
  }

  #[napi]
  pub fn cancel(&self, req: u32, id: f64, error_json: String) -> bool {
    self.handle.send(Command::Cancel {
      req,
      id: to_id(id),
      error: error_json,
    })
  }

  /// Reads one execution, beside the store thread when the store can (PostgreSQL's pool);
  /// answered by `STORE_FETCHED` or `STORE_FAILED`.
  #[napi]
  pub fn fetch(&self, req: u32, id: f64) -> bool {
    self.handle.fetch(req, to_id(id))
  }

  /// `fetch` in line with the requests sent before it (it sees what they wrote).
  #[napi]
  pub fn fetch_in_line(&self, req: u32, id: f64) -> bool {
    self.handle.send(Command::Fetch { req, id: to_id(id) })
  }

  #[napi]
  pub fn check(&self, req: u32) -> bool {
    self.handle.send(Command::Check { req })
  }

  /// The most executions of `agent` running at once on every executor (0: no limit);
  /// answered by `STORE_DONE` or `STORE_FAILED`.
  #[napi]
  pub fn global_limit(&self, req: u32, agent: String, limit: u32) -> bool {
    self.handle.send(Command::GlobalLimit {
      req,
      agent,
      limit: (limit > 0).then_some(limit),
    })
  }

  /// Claims executions of `agents` (or of any agent).
  #[napi]
  pub fn interest(&self, any: bool, agents: Vec<String>) -> bool {
    self.handle.send(Command::Interest { any, agents })
  }

  /// Reports the ends of `ids`; `check`: they may have ended already, look now.
  #[napi]
  pub fn watch(&self, ids: Vec<f64>, check: bool) -> bool {
    self.handle.send(Command::Watch {
      ids: ids.into_iter().map(to_id).collect(),
      check,
    })
  }

  #[napi]
  pub fn unwatch(&self, ids: Vec<f64>) -> bool {
    self
      .handle
      .send(Command::Unwatch(ids.into_iter().map(to_id).collect()))
  }

  #[napi]
  pub fn close(&self, req: u32) -> bool {
    self.handle.send(Command::Close { req })
  }

  /// Whether the store's callback keeps Node.js alive (JS waits for an answer or for work).
  #[napi]
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

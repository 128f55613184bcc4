//! What the store's thread needs of a driver: the operations, and how it learns what other
//! processes changed. SQLite (`ops::Store`) reads `PRAGMA data_version` and its ends log;
//! PostgreSQL (`pg::backend::Postgres`) hears NOTIFY messages.

use super::{Batch, BatchResult, CancelRequest, Rescued, Row, StoreResult};

/// What other processes changed since the last look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
  /// Something changed: claimable work or cancels may be waiting.
  pub any: bool,
  /// Executions that ended: only true ends (one may be told twice), never an attempt
  /// handed back to the queue or a completion that changed nothing.
  pub ended: Vec<i64>,
  /// Executions that may have ended: told by a host of an older release (PostgreSQL, see
  /// `pg::notify`), which also named attempts handed back and ends that changed nothing.
  pub maybe_ended: Vec<i64>,
  /// Some changes may have gone unheard: look at every watched execution.
  pub full: bool,
  /// A cancel may have been requested for an execution this worker runs.
  pub cancels: bool,
  /// Claimable work may be waiting.
  pub work: bool,
  /// A global limit was set or removed.
  pub limits: bool,
  /// Tokens of parked claims of this worker that executions were pushed to (PostgreSQL, see
  /// `pg::push`) whose notice carried no rows it could read (too many to be told): they are
  /// read when the claim is taken back.
  pub pushed: Vec<i64>,
}

/// What pushes started from another thread (see `Backend::answered`): the claim's token, and
/// each execution's (id, attempt).
pub type Answered = (i64, Vec<(i64, u32)>);

/// What taking back a published parked claim found.
#[derive(Debug)]
pub enum Withdrawn {
  /// The executions pushed to it, if any.
  Pushed(Vec<Row>),
  /// A push answered it first (see `Backend::answered`).
  Answered,
}

pub trait Backend: Send {
  /// This worker's owner id in the store.
  fn owner(&self) -> &str;
  fn interest(&self) -> &Interest;
  fn set_interest(&mut self, interest: Interest);
  fn batch(&mut self, batch: &Batch, now: f64) -> StoreResult<BatchResult>;
  /// The earliest time a queued execution of interest becomes due, if any is scheduled later.
  fn next_due(&mut self, now: f64) -> StoreResult<Option<f64>>;
  fn cancel(&mut self, id: i64, error_json: &str, now: f64) -> StoreResult<i32>;
  fn cancel_requests(&mut self) -> StoreResult<Vec<CancelRequest>>;
  fn fetch(&mut self, id: i64) -> StoreResult<Option<Row>>;
  /// "ok" when the stored data is sound, else what is wrong.
  fn integrity_check(&mut self) -> StoreResult<String>;
  fn heartbeat(&mut self, now: f64) -> StoreResult<()>;
  fn rescue(&mut self, now: f64) -> StoreResult<Vec<Rescued>>;
  /// Errors of rescues the store refused since the last call (each attempt reported once).
  fn take_notices(&mut self) -> Vec<super::StoreError>;
  fn retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64>;
  /// Of `ids`, the ended executions and the ids no longer stored.
  fn ended_among(&mut self, ids: &[i64]) -> StoreResult<(Vec<Row>, Vec<i64>)>;
  /// Of `ids`, those stored and not ended (queued or running).
  fn open_among(&mut self, ids: &[i64]) -> StoreResult<Vec<i64>>;
  fn leave(&mut self) -> StoreResult<()>;
  /// What other processes changed since the last call.
  fn changes(&mut self) -> StoreResult<Changes>;
  /// When to call `changes` next when nothing has woken the thread, in ms from now: a
  /// driver whose changes each come with a wake-up looks only as its own fallback (and its
  /// reconnection) needs. `None`: at the thread's poll interval.
  fn look_in_ms(&self) -> Option<f64> {
    None
  }
  /// A failure after which the store cannot go on (a row it cannot read): the thread stops
  /// with it, as after a panic.
  fn broken(&self) -> Option<super::StoreError> {
    None
  }
  /// Sets or removes the most executions of `agent` running at once on every executor.
  fn set_global_limit(&mut self, agent: &str, limit: Option<u32>) -> StoreResult<()> {
    let _ = (agent, limit);
    Err(super::StoreError::store(
      "globalConcurrency needs a PostgreSQL store: with SQLite, limit the agent in each process",
    ))
  }
  /// After the connection came back, and after every heartbeat: hands back to the queue,
  /// uncounted, the attempts this worker holds in the store but does not know of
  /// (`running`: the (id, attempt) it knows): claims committed by a try whose answer was
  /// lost. Not those pushed to the parked claim `parked` (their notice may be on its way).
  /// Returns their ids.
  fn release_unknown(&mut self, running: &[(i64, u32)], parked: Option<i64>) -> StoreResult<Vec<i64>> {
    let _ = (running, parked);
    Ok(Vec::new())
  }
  /// Publishes the parked claim of request `req` (`batch`: its claim) for submissions to
  /// fill (see `pg::push`): its token, or `None` (a store without pushes, no listener
  /// connected).
  fn publish(&mut self, req: u32, batch: &Batch, now: f64) -> StoreResult<Option<i64>> {
    let _ = (req, batch, now);
    Ok(None)
  }
  /// Withdraws the published parked claim `token`.
  fn withdraw(&mut self, token: i64) -> StoreResult<Withdrawn> {
    let _ = token;
    Ok(Withdrawn::Pushed(Vec::new()))
  }
  /// The published parked claims that pushes answered since the last call, from another
  /// thread: each one's token and the (id, attempt) of the executions it started.
  fn answered(&mut self) -> Vec<Answered> {
    Vec::new()
  }
  /// Losses (false) and recoveries (true) of the connection since the last call, in order,
  /// each with what names the store; a local file has no connection to lose.
  fn link_changes(&mut self) -> Vec<(bool, String)> {
    Vec::new()
  }
}

/// Which agents this process claims executions of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interest {
  /// Any agent (a `defaultAgent`, or an overridden agent runner).
  pub any: bool,
  pub agents: Vec<String>,
  /// `agents` as a JSON array, for SQLite's `json_each`.
  pub agents_json: String,
  pub none: bool,
}

impl Interest {
  pub fn new(any: bool, agents: &[String]) -> Interest {
    Interest {
      any,
      agents: agents.to_vec(),
      agents_json: serde_json::to_string(agents).unwrap_or_else(|_| "[]".to_string()),
      none: !any && agents.is_empty(),
    }
  }
}

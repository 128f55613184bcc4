//! The store's thread. It owns the statement connection of this executor, so the JS thread
//! never waits on the disk. Requests arrive on a channel and are answered through the sink
//! in order (a PostgreSQL store's status reads go beside it, to its pool: `Handle::fetch`);
//! between requests the thread
//!
//! - asks its driver what other processes changed while anything could come from them
//!   (claimable work, cancels of attempts it runs, ends of executions it watches): SQLite's
//!   `PRAGMA data_version` every `poll_ms` for a second after any activity, every
//!   `IDLE_POLL_MS` after that (a busy store answers fast; an idle one costs little CPU);
//!   PostgreSQL's listener wakes the thread for each notification, and the driver names
//!   its own fallback look (`Backend::look_in_ms`);
//! - renews its leases every `lease_ms / 3` from this thread, so a JS event loop blocked by
//!   a CPU-heavy agent does not make its executions look abandoned;
//! - rescues abandoned executions every `min(lease_ms / 2, 1 s)`, and deletes ended ones
//!   past retention every 5 s.
//!
//! The files:
//! - `mod.rs` (this one): the options, the handle, `start`, and the state the thread keeps.
//! - `serve`: opening the store, the loop that waits for requests, and each request's work.
//! - `periodic`: the work between requests: polls and what they find, heartbeats, rescue,
//!   retention, wake-ups.

mod periodic;
mod serve;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::backend::{Backend, Withdrawn};
pub use super::messages::{send_event, Command, Event, SharedSink, Sink};
use super::pg::pool::Pool;
use super::pg::reader::Reader;
use super::pg::PgTarget;
use super::schema::Synchronous;
use super::StoreError;
use serve::run;

#[derive(Debug, Clone)]
pub struct Options {
  pub path: PathBuf,
  pub synchronous: Synchronous,
  pub lease_ms: f64,
  pub poll_ms: f64,
  pub ttl_ms: f64,
  pub max_kept: u64,
  /// How long after an announcement of work an executor that did not lead claims (see
  /// `Service::work_announced`); `FOLLOW_MS` but in tests.
  pub follow_ms: f64,
  /// A PostgreSQL store instead of the SQLite file at `path` (an error: its URL was refused,
  /// and the open fails with it).
  pub postgres: Option<Result<PgTarget, StoreError>>,
}

/// The sending end of a running store thread. Dropping it stops the thread.
pub struct Handle {
  tx: Sender<Command>,
  thread: Option<JoinHandle<()>>,
  /// Status reads beside the thread (PostgreSQL).
  reader: Option<Arc<Reader>>,
}

impl Drop for Handle {
  fn drop(&mut self) {
    // The wake-up watcher holds a sender too: the channel alone would never disconnect.
    let _ = self.tx.send(Command::Dropped);
  }
}

impl Handle {
  /// Queues a request; `false` once the thread has stopped.
  pub fn send(&self, cmd: Command) -> bool {
    self.tx.send(cmd).is_ok()
  }

  /// Reads execution `id` for request `req`: beside the thread when the store can (its
  /// pool, PostgreSQL), else in line with the other requests. `false` once the thread has
  /// stopped.
  pub fn fetch(&self, req: u32, id: i64) -> bool {
    if self.reader.as_ref().is_some_and(|r| r.fetch(req, id)) {
      return true;
    }
    self.send(Command::Fetch { req, id })
  }

  /// Waits for the thread to end (after `Close`).
  pub fn join(&mut self) {
    if let Some(t) = self.thread.take() {
      let _ = t.join();
    }
  }
}

/// Starts the thread; it opens the store and answers `Opened` or `Failed { req: 0 }`.
pub fn start(opts: Options, sink: Sink) -> std::io::Result<Handle> {
  let (tx, rx) = mpsc::channel();
  let sink: SharedSink = Arc::new(Mutex::new(sink));
  // PostgreSQL: a pool for the work beside the statement connection, and its reads.
  let pool = match &opts.postgres {
    Some(Ok(target)) => Some(Pool::new(target.clone())),
    _ => None,
  };
  let reader = pool
    .clone()
    .and_then(|p| Reader::new(p, sink.clone()).ok())
    .map(Arc::new);
  let thread = std::thread::Builder::new().name("bmad-store".into()).spawn({
    let tx = tx.clone();
    let reader = reader.clone();
    move || run(opts, pool, reader, rx, tx, sink)
  })?;
  Ok(Handle {
    tx,
    thread: Some(thread),
    reader,
  })
}

struct Service {
  store: Box<dyn Backend>,
  opts: Options,
  sink: SharedSink,
  reader: Option<Arc<Reader>>,
  watched: HashSet<i64>,
  /// Of `watched`, the submissions of this executor whose submitter takes no value
  /// (`fireAndForget`, `executeWatched`): their ends are gathered for `LAZY_MS` and only the
  /// rows of the latest `ENDED_KEPT` read, the ones JS keeps; the rest are told unread.
  lazy: HashSet<i64>,
  /// Lazy ids heard ended, oldest first, until `lazy_at`.
  lazy_ended: Vec<i64>,
  lazy_at: Option<f64>,
  /// The attempts this worker runs: execution id -> attempt.
  running: HashMap<i64, u32>,
  /// The thread's own deadlines below are on a monotonic clock (`tick`, ms since `epoch`): a
  /// step of the wall clock neither stalls heartbeats and rescues nor bunches them. Times
  /// written to the store stay on the wall clock (`now_ms`), which every process shares.
  epoch: Instant,
  wake_at: Option<f64>,
  next_poll: f64,
  next_heartbeat: f64,
  next_rescue: f64,
  next_retention: f64,
  /// When every watched id is looked up next.
  next_full_check: f64,
  /// The last request or change seen: polls are fast for `ACTIVE_MS` after it.
  active_at: f64,
  /// A watcher sends `Wake` on other processes' commits: the poll is only a safety net.
  woken: bool,
  /// A wake-up found nothing yet: look once more after `RECHECK_MS`.
  recheck: bool,
  /// The claim JS left to run when work may be waiting (`Command::Park`).
  parked: Option<Parked>,
  /// The last parked claim run on announced work found some (see `work_announced`).
  leading: bool,
  /// When a follower looks at announced work.
  follow_at: Option<f64>,
  /// When the parked claim is published for submissions to fill (`PUBLISH_MS` after it was
  /// parked).
  publish_at: Option<f64>,
  alive: bool,
  /// The store was left (a close, the executor dropped): nothing more to hand back.
  left: bool,
  /// The store cannot go on (`Backend::broken`): the thread stops with this.
  broken: Option<StoreError>,
  /// JS's `Close` request: answered once the store's connections are closed.
  close_req: Option<u32>,
}

/// A claim JS left to run when work may be waiting, answered under `req`; `token` once
/// published for submissions to fill (PostgreSQL, see `pg::push`).
struct Parked {
  req: u32,
  batch: super::Batch,
  token: Option<i64>,
}

/// See `Options::follow_ms`.
pub const FOLLOW_MS: f64 = 0.6;

/// How long a claim stays parked before it is published (see `pg::push`) while the worker
/// runs something: a busy worker's parked claims are run within this by announced work or
/// its own attempt ends, and cost no publication and withdrawal. One running nothing
/// publishes at once.
const PUBLISH_MS: f64 = 1.0;

/// See `Service::recheck`.
const RECHECK_MS: f64 = 0.2;

/// The poll interval once nothing has happened for `ACTIVE_MS`.
const IDLE_POLL_MS: f64 = 5.0;
/// The poll interval while active when a watcher sends wake-ups: it only catches a change
/// the wake-up raced (the WAL written, its index not yet).
const WOKEN_POLL_MS: f64 = 2.0;
const ACTIVE_MS: f64 = 1_000.0;

/// How long the ends of lazy ids are gathered before their rows are read.
const LAZY_MS: f64 = 250.0;

/// How often every watched id is looked up, whatever changed.
const FULL_CHECK_MS: f64 = 5_000.0;

impl Service {
  fn emit(&mut self, ev: Event) {
    self.heard(ev);
  }

  /// Sends `ev` to JS; false when JS can no longer hear (the thread then stops).
  fn heard(&mut self, ev: Event) -> bool {
    // Once the store cannot go on, JS hears only that the thread stopped.
    if self.stops() {
      return true;
    }
    let heard = send_event(&self.sink, ev);
    if !heard {
      self.alive = false;
    }
    heard
  }

  /// Whether the store cannot go on: the thread then stops, as after a panic.
  fn stops(&mut self) -> bool {
    if self.broken.is_none() {
      self.broken = self.store.broken();
      if self.broken.is_some() {
        self.alive = false;
      }
    }
    self.broken.is_some()
  }

  /// Claims JS did not hear of are not run here: the thread's leave hands them back.
  fn unheard(&mut self, claimed: &[(i64, u32)]) {
    for (id, attempt) in claimed {
      if self.running.get(id) == Some(attempt) {
        self.running.remove(id);
      }
    }
  }

  /// Claimable work may be waiting: the parked claim runs now (what it claimed, or what was
  /// pushed to it), or JS hears it.
  fn work_may_wait(&mut self) -> Option<usize> {
    if self.store.interest().none {
      return None;
    }
    let (was_parked, before) = (self.parked.is_some(), self.running.len());
    match self.take_parked() {
      Some((p, pushed)) => Some(self.run_parked(p, pushed)),
      // A push answered it meanwhile: JS has the work (unless it is gone), and parks again.
      None if was_parked => Some(self.running.len() - before),
      None => {
        self.emit(Event::Changed);
        None
      }
    }
  }

  /// The parked claim, withdrawn from submissions if published, with what they pushed to
  /// it meanwhile; none when a push answered it first.
  fn take_parked(&mut self) -> Option<(Parked, Vec<super::Row>)> {
    let p = self.parked.take()?;
    self.publish_at = None;
    let pushed = match p.token {
      Some(token) => self.withdraw(token)?,
      None => Vec::new(),
    };
    Some((p, pushed))
  }

  /// The executions that pushes started from the listener's thread run here; the claim they
  /// answered is no longer parked.
  fn note_answered(&mut self) {
    for (token, started) in self.store.answered() {
      if self.parked.as_ref().is_some_and(|p| p.token == Some(token)) {
        self.parked = None;
        self.publish_at = None;
      }
      self.running.extend(started);
    }
  }

  /// Parks `batch` for JS's request `req`, to publish soon (see `PUBLISH_MS`).
  fn park(&mut self, req: u32, batch: super::Batch) {
    self.parked = Some(Parked {
      req,
      batch,
      token: None,
    });
    // A worker running nothing is idle: published at once.
    let after = if self.running.is_empty() { 0.0 } else { PUBLISH_MS };
    self.publish_at = Some(self.tick() + after);
  }

  /// Publishes the parked claim for submissions to fill.
  fn publish(&mut self) {
    self.publish_at = None;
    let Some(p) = self.parked.as_ref() else {
      return;
    };
    if p.token.is_some() {
      return;
    }
    match self
      .store
      .publish(p.req, &p.batch, crate::system::probes::now_ms())
    {
      Ok(token) => {
        if let Some(p) = self.parked.as_mut() {
          p.token = token;
        }
      }
      // Parked all the same: announced work still wakes it.
      Err(e) => self.emit(Event::Background(e)),
    }
  }

  /// Withdraws the published parked claim `token`: what was pushed to it; `None` when a push
  /// answered it first.
  fn withdraw(&mut self, token: i64) -> Option<Vec<super::Row>> {
    match self.store.withdraw(token) {
      Ok(Withdrawn::Pushed(rows)) => Some(rows),
      Ok(Withdrawn::Answered) => {
        self.note_answered();
        None
      }
      Err(e) => {
        // Left to the heartbeat's look for attempts this worker does not know of.
        self.emit(Event::Background(e));
        Some(Vec::new())
      }
    }
  }

  /// Runs the parked claim `p` taken back with `pushed`: those answer it when there are
  /// any (and JS hears of work if they fill it only in part: what woke it may be more),
  /// else it claims. How many executions it got.
  fn run_parked(&mut self, p: Parked, pushed: Vec<super::Row>) -> usize {
    if pushed.is_empty() {
      return self.run_batch(p.req, &p.batch);
    }
    let n = self.answer_pushed(p.req, pushed);
    if n < p.batch.claim as usize {
      self.emit(Event::Changed);
    }
    n
  }

  /// Answers the parked claim `req` with the executions pushed to it; how many.
  fn answer_pushed(&mut self, req: u32, rows: Vec<super::Row>) -> usize {
    let claimed: Vec<(i64, u32)> = rows.iter().map(|r| (r.id, r.attempt)).collect();
    self.running.extend(claimed.iter().copied());
    if !self.heard(Event::claimed(req, rows)) {
      self.unheard(&claimed);
    }
    claimed.len()
  }

  /// Another process announced work: the executor whose parked claim found work last time
  /// claims at once; the others look `follow_ms` later (at what is left), so the claims of
  /// idle executors do not all compete with the one that takes it.
  fn work_announced(&mut self) {
    if !self.leading && self.parked.is_some() {
      let at = self.tick() + self.opts.follow_ms;
      self.follow_at = Some(self.follow_at.map_or(at, |f| f.min(at)));
    } else {
      self.follow();
    }
  }

  /// The announced work looked at: whether the parked claim found some decides whether
  /// this executor leads next time.
  fn follow(&mut self) {
    self.follow_at = None;
    if let Some(n) = self.work_may_wait() {
      self.leading = n > 0;
    }
  }

  fn interested(&self) -> bool {
    !self.store.interest().none || !self.watched.is_empty() || !self.running.is_empty()
  }

  /// Ms on the monotonic clock since the thread started.
  fn tick(&self) -> f64 {
    self.epoch.elapsed().as_secs_f64() * 1000.0
  }
}

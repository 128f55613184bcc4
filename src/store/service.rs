//! The store's thread. It owns the statement connection of this executor, so the JS thread
//! never waits on the disk. Requests arrive on a channel and are answered through the sink
//! in order (a PostgreSQL store's status reads go beside it, to its pool: `Handle::fetch`);
//! between requests the thread
//!
//! - polls `PRAGMA data_version` while anything could come from another process (claimable
//!   work, cancels of attempts it runs, ends of executions it watches), and reads what
//!   changed only when it changed: every `poll_ms` for a second after any activity, every
//!   `IDLE_POLL_MS` after that (a busy store answers fast; an idle one costs little CPU);
//! - renews its leases every `lease_ms / 3` from this thread, so a JS event loop blocked by
//!   a CPU-heavy agent does not make its executions look abandoned;
//! - rescues abandoned executions every `min(lease_ms / 2, 1 s)`, and deletes ended ones
//!   past retention every 5 s.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::{Backend, Changes};
use super::ops::Interest;
use super::pg::backend::Postgres;
use super::pg::ops::PgStore;
use super::pg::pool::Pool;
use super::pg::reader::Reader;
use super::pg::PgTarget;
use super::schema::Synchronous;
use super::{Batch, BatchResult, CancelRequest, Finished, Rescued, Row, Store, StoreError, StoreResult};
use crate::system::probes::now_ms;

#[derive(Debug, Clone)]
pub struct Options {
  pub path: PathBuf,
  pub synchronous: Synchronous,
  pub lease_ms: f64,
  pub poll_ms: f64,
  pub ttl_ms: f64,
  pub max_kept: u64,
  /// A PostgreSQL store instead of the SQLite file at `path` (an error: its URL was refused,
  /// and the open fails with it).
  pub postgres: Option<Result<PgTarget, StoreError>>,
}

pub enum Command {
  Batch {
    req: u32,
    batch: Batch,
  },
  Cancel {
    req: u32,
    id: i64,
    error: String,
  },
  Fetch {
    req: u32,
    id: i64,
  },
  /// Which agents to claim executions of.
  Interest {
    any: bool,
    agents: Vec<String>,
  },
  /// Report when these executions end (they may run elsewhere); `check`: they may have
  /// ended already (not just inserted), so look now.
  Watch {
    ids: Vec<i64>,
    check: bool,
  },
  Unwatch(Vec<i64>),
  /// The most executions of `agent` running at once on every executor (`None`: no limit).
  GlobalLimit {
    req: u32,
    agent: String,
    limit: Option<u32>,
  },
  /// `PRAGMA integrity_check`.
  Check {
    req: u32,
  },
  Close {
    req: u32,
  },
  /// Another process may have committed (the WAL file was written).
  Wake,
  /// The handle was dropped without `Close`.
  Dropped,
}

impl Command {
  /// The request it answers, if it is one (`Close` is answered by `Closed`).
  fn req(&self) -> Option<u32> {
    match self {
      Command::Batch { req, .. }
      | Command::Cancel { req, .. }
      | Command::Fetch { req, .. }
      | Command::GlobalLimit { req, .. }
      | Command::Check { req } => Some(*req),
      _ => None,
    }
  }
}

#[derive(Debug)]
pub enum Event {
  Opened {
    owner: String,
  },
  Batch {
    req: u32,
    result: BatchResult,
  },
  Cancelled {
    req: u32,
    was: i32,
  },
  Fetched {
    req: u32,
    row: Option<Box<Row>>,
  },
  Checked {
    req: u32,
    result: String,
  },
  /// A request that answers nothing but its success.
  Done {
    req: u32,
  },
  /// A request failed; nothing of it was written.
  Failed {
    req: u32,
    error: StoreError,
  },
  /// Claimable work may be waiting.
  Changed,
  CancelRequested(Vec<CancelRequest>),
  /// Watched executions that ended, and watched ids no longer stored.
  Ended {
    rows: Vec<Row>,
    gone: Vec<i64>,
  },
  Rescued(Vec<Rescued>),
  /// The connection to the store was lost (`up` false) or is back; `store` names it.
  Link {
    up: bool,
    store: String,
  },
  /// A failure outside any request (heartbeat, rescue, retention, poll); the thread goes on.
  Background(StoreError),
  /// The thread failed (a panic): requests in flight get no answer; later ones the failure.
  Stopped(StoreError),
  Closed {
    req: u32,
  },
}

/// Answers go here; `false` means nobody listens any more and the thread stops.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// The sink, shared by the thread and the reads made beside it (`Reader`).
pub type SharedSink = Arc<Mutex<Sink>>;

/// Sends `ev` to `sink`; false when nobody listens any more.
pub fn send_event(sink: &SharedSink, ev: Event) -> bool {
  match sink.lock() {
    Ok(mut f) => f(ev),
    Err(poisoned) => (poisoned.into_inner())(ev),
  }
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
  alive: bool,
}

/// See `Service::recheck`.
const RECHECK_MS: f64 = 0.2;

/// The poll interval once nothing has happened for `ACTIVE_MS`.
const IDLE_POLL_MS: f64 = 5.0;
/// The poll interval while active when a watcher sends wake-ups: it only catches a change
/// the wake-up raced (the WAL written, its index not yet).
const WOKEN_POLL_MS: f64 = 2.0;
const ACTIVE_MS: f64 = 1_000.0;

/// How often every watched id is looked up, whatever changed.
const FULL_CHECK_MS: f64 = 5_000.0;

fn run(
  opts: Options,
  pool: Option<Pool>,
  reader: Option<Arc<Reader>>,
  rx: Receiver<Command>,
  tx: Sender<Command>,
  sink: SharedSink,
) {
  let opened: Result<Box<dyn Backend>, StoreError> = match &opts.postgres {
    None => Store::open(&opts.path, opts.synchronous, opts.lease_ms, now_ms())
      .map(|s| Box::new(s) as Box<dyn Backend>),
    Some(Err(e)) => Err(e.clone()),
    Some(Ok(target)) => {
      let pool = pool.unwrap_or_else(|| Pool::new(target.clone()));
      PgStore::open(target.clone(), pool, opts.lease_ms, now_ms())
        .and_then(|s| Postgres::new(s, tx.clone()))
        .map(|p| Box::new(p) as Box<dyn Backend>)
    }
  };
  let store = match opened {
    Ok(s) => s,
    Err(error) => {
      if send_event(
        &sink,
        Event::Failed {
          req: 0,
          error: error.clone(),
        },
      ) {
        refuse_all(&rx, &sink, &error);
      }
      return;
    }
  };
  if let Some(r) = &reader {
    r.open();
  }
  if !send_event(
    &sink,
    Event::Opened {
      owner: store.owner().to_string(),
    },
  ) {
    return;
  }
  // SQLite: a watch on the WAL file; PostgreSQL's listener already wakes the thread.
  let waker = if opts.postgres.is_none() {
    super::wake::watch(&opts.path, tx)
  } else {
    None
  };
  let now = 0.0; // on the monotonic clock, from `epoch`
  let listened = opts.postgres.is_some();
  let mut s = Service {
    store,
    opts,
    sink,
    reader,
    watched: HashSet::new(),
    running: HashMap::new(),
    epoch: Instant::now(),
    wake_at: None,
    next_poll: now,
    next_heartbeat: now,
    next_rescue: now, // at once: executions of this host's exited executors, our previous run's too
    next_retention: now + 1_000.0,
    next_full_check: now + FULL_CHECK_MS,
    active_at: now,
    woken: waker.is_some() || listened,
    recheck: false,
    alive: true,
  };
  // A panic (a bug, or a row of a schema changed by hand that a driver cannot read) must
  // not leave callers waiting in silence: JS hears that the thread stopped (and fails what
  // it waits for), and every later request is answered with the failure.
  let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.serve(&rx)));
  if let Err(panic) = served {
    let what = panic
      .downcast_ref::<&str>()
      .map(|m| m.to_string())
      .or_else(|| panic.downcast_ref::<String>().cloned())
      .unwrap_or_else(|| "a panic".to_string());
    let error = StoreError::store(format!(
      "the store's thread failed ({what}); nothing more can be written"
    ));
    send_event(&s.sink, Event::Stopped(error.clone()));
    if let Some(r) = &s.reader {
      r.close();
    }
    refuse_all(&rx, &s.sink, &error);
  }
}

impl Service {
  /// Answers commands and does the periodic work until the executor closes or goes.
  fn serve(&mut self, rx: &Receiver<Command>) {
    while self.alive {
      let wait = (self.next_deadline() - self.tick()).clamp(0.0, 1_000.0);
      match rx.recv_timeout(Duration::from_micros((wait * 1000.0) as u64)) {
        Ok(cmd) => {
          self.handle(cmd);
          // Everything already queued, with what falls due in between (a busy executor
          // always has a batch queued: a cancel heard meanwhile must not wait for a lull).
          while self.alive {
            match rx.try_recv() {
              Ok(cmd) => {
                self.handle(cmd);
                if self.alive && self.tick() >= self.next_deadline() {
                  self.periodic();
                }
              }
              Err(_) => break,
            }
          }
        }
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => {
          let _ = self.store.leave();
          return;
        }
      }
      if self.alive {
        self.periodic();
      }
      if self.alive {
        for (up, store) in self.store.link_changes() {
          self.emit(Event::Link { up, store });
          if up {
            self.resync();
          }
        }
      }
    }
  }
}

/// After a failed open, every request is answered with that failure.
fn refuse_all(rx: &Receiver<Command>, sink: &SharedSink, error: &StoreError) {
  while let Ok(cmd) = rx.recv() {
    let req = match cmd {
      Command::Close { req } => {
        send_event(sink, Event::Closed { req });
        return;
      }
      Command::Dropped => return,
      _ => match cmd.req() {
        Some(req) => req,
        None => continue,
      },
    };
    if !send_event(
      sink,
      Event::Failed {
        req,
        error: error.clone(),
      },
    ) {
      return;
    }
  }
}

impl Service {
  fn emit(&mut self, ev: Event) {
    if !send_event(&self.sink, ev) {
      self.alive = false;
    }
  }

  fn interested(&self) -> bool {
    !self.store.interest().none || !self.watched.is_empty() || !self.running.is_empty()
  }

  fn next_deadline(&self) -> f64 {
    let mut d = self.next_heartbeat.min(self.next_rescue).min(self.next_retention);
    if self.interested() {
      d = d.min(self.next_poll);
    }
    if let Some(w) = self.wake_at {
      d = d.min(w);
    }
    d
  }

  fn handle(&mut self, cmd: Command) {
    let now = now_ms();
    self.active_at = self.tick();
    match cmd {
      Command::Batch { req, batch } => match self.store.batch(&batch, now) {
        Ok(result) => {
          for (f, r) in batch.finishes.iter().zip(&result.finished) {
            // Only this attempt: a stale end of an earlier one leaves a later one running.
            if self.running.get(&f.id) == Some(&f.attempt) {
              self.running.remove(&f.id);
            }
            if let Finished::Retry(delay) = r {
              self.wake_in(*delay);
            }
          }
          for r in &batch.releases {
            if self.running.get(&r.id) == Some(&r.attempt) {
              self.running.remove(&r.id);
            }
          }
          for row in &result.claimed {
            self.running.insert(row.id, row.attempt);
          }
          // Their submitter waits for their ends from now: one that another process claims
          // and ends before JS has the answer must not go unseen.
          for i in &result.inserted {
            if !i.existing {
              self.watched.insert(i.id);
            }
          }
          let look_ahead = batch.claim > 0 && (result.claimed.len() as u32) < batch.claim;
          // The answer first: JS goes on while this thread looks for the next due time.
          self.emit(Event::Batch { req, result });
          if look_ahead {
            match self.store.next_due(now) {
              Ok(Some(t)) => self.wake_in(t - now_ms()),
              Ok(None) => {}
              Err(e) => self.emit(Event::Background(e)),
            }
          }
        }
        Err(error) => self.emit(Event::Failed { req, error }),
      },
      Command::Cancel { req, id, error } => match self.store.cancel(id, &error, now) {
        Ok(was) => {
          if self.running.contains_key(&id) {
            // Ours: the request reaches JS like one from another process.
            self.check_cancels();
          }
          self.emit(Event::Cancelled { req, was });
        }
        Err(error) => self.emit(Event::Failed { req, error }),
      },
      Command::Fetch { req, id } => match self.store.fetch(id) {
        Ok(row) => self.emit(Event::Fetched {
          req,
          row: row.map(Box::new),
        }),
        Err(error) => self.emit(Event::Failed { req, error }),
      },
      Command::GlobalLimit { req, agent, limit } => match self.store.set_global_limit(&agent, limit) {
        Ok(()) => self.emit(Event::Done { req }),
        Err(error) => self.emit(Event::Failed { req, error }),
      },
      Command::Check { req } => match self.store.integrity_check() {
        Ok(result) => self.emit(Event::Checked { req, result }),
        Err(error) => self.emit(Event::Failed { req, error }),
      },
      Command::Interest { any, agents } => {
        self.store.set_interest(Interest::new(any, &agents));
        if !self.store.interest().none {
          self.emit(Event::Changed);
        }
      }
      Command::Watch { ids, check } => {
        if check {
          let before = std::mem::take(&mut self.watched);
          self.watched.extend(ids);
          self.check_ended();
          self.watched.extend(before);
        } else {
          self.watched.extend(ids);
        }
      }
      Command::Unwatch(ids) => {
        for id in ids {
          self.watched.remove(&id);
        }
      }
      Command::Wake => {
        if self.interested() {
          // Look now, and once more shortly: the commit may not be visible yet.
          self.next_poll = self.tick();
          self.recheck = true;
        }
      }
      Command::Dropped => {
        let _ = self.store.leave();
        self.alive = false;
      }
      Command::Close { req } => {
        // Reads made beside the thread are answered before the close.
        if let Some(r) = &self.reader {
          r.close();
        }
        if let Err(e) = self.store.leave() {
          self.emit(Event::Background(e));
        }
        self.emit(Event::Closed { req });
        self.alive = false;
      }
    }
  }

  /// The connection is back: claims whose answer was lost go back to the queue, and what
  /// other executors did meanwhile is looked at.
  fn resync(&mut self) {
    self.release_unknown();
    self.check_ended();
    if !self.store.interest().none {
      self.emit(Event::Changed);
    }
  }

  /// Attempts this worker holds in the store but does not know of go back to the queue:
  /// claims whose answer was lost.
  fn release_unknown(&mut self) {
    let running: Vec<(i64, u32)> = self.running.iter().map(|(&id, &a)| (id, a)).collect();
    match self.store.release_unknown(&running) {
      Ok(ids) if !ids.is_empty() => tracing::debug!(?ids, "claims whose answer was lost handed back"),
      Ok(_) => {}
      Err(e) => self.emit(Event::Background(e)),
    }
  }

  /// Ms on the monotonic clock since the thread started.
  fn tick(&self) -> f64 {
    self.epoch.elapsed().as_secs_f64() * 1000.0
  }

  /// Tells JS to look for work again in `delay_ms` (a retry's or a delayed row's due time).
  fn wake_in(&mut self, delay_ms: f64) {
    let at = self.tick() + delay_ms.max(0.0);
    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
  }

  fn periodic(&mut self) {
    // `now` is what the store is told; `t` what this thread's deadlines are compared with.
    let now = now_ms();
    let t = self.tick();
    if t >= self.next_heartbeat {
      self.next_heartbeat = t + self.opts.lease_ms / 3.0;
      match self.store.heartbeat(now) {
        // Also after a reconnect's look: a batch given up when its answer was late may
        // still commit its claims on the server afterwards, and the heartbeat would renew
        // them for ever.
        Ok(()) => self.release_unknown(),
        Err(e) => self.emit(Event::Background(e)),
      }
    }
    if t >= self.next_rescue {
      self.next_rescue = t + (self.opts.lease_ms / 2.0).min(1_000.0);
      match self.store.rescue(now) {
        Ok(rescued) if !rescued.is_empty() => {
          let requeued = rescued.iter().any(|r| r.status == crate::protocol::STATUS_QUEUED);
          self.emit(Event::Rescued(rescued));
          if requeued && !self.store.interest().none {
            self.emit(Event::Changed);
          }
        }
        Ok(_) => {}
        Err(e) => self.emit(Event::Background(e)),
      }
    }
    if t >= self.next_retention {
      self.next_retention = t + 5_000.0;
      if let Err(e) = self.store.retention(self.opts.ttl_ms, self.opts.max_kept, now) {
        self.emit(Event::Background(e));
      }
    }
    if !self.watched.is_empty() && t >= self.next_full_check {
      // Catches ids deleted by retention before their end was seen.
      self.check_ended();
    }
    if let Some(w) = self.wake_at {
      if t >= w {
        self.wake_at = None;
        if !self.store.interest().none {
          self.emit(Event::Changed);
        }
      }
    }
    if self.interested() && t >= self.next_poll {
      let active = t - self.active_at < ACTIVE_MS;
      let fast = if self.woken {
        self.opts.poll_ms.max(WOKEN_POLL_MS)
      } else {
        self.opts.poll_ms
      };
      self.next_poll = t
        + if active {
          fast
        } else {
          self.opts.poll_ms.max(IDLE_POLL_MS)
        };
      match self.store.changes() {
        Ok(c) if c.any => {
          self.active_at = t;
          self.recheck = false;
          self.changed(&c);
          if c.full {
            self.check_ended();
          }
        }
        Ok(_) => {
          if self.recheck {
            self.recheck = false;
            self.next_poll = t + RECHECK_MS;
          }
        }
        Err(e) => self.emit(Event::Background(e)),
      }
    }
  }

  /// Another process committed `c`: what concerns this one.
  fn changed(&mut self, c: &Changes) {
    let ended = &c.ended;
    if c.cancels && !self.running.is_empty() {
      self.check_cancels();
    }
    if !self.watched.is_empty() {
      let mine: Vec<i64> = ended
        .iter()
        .copied()
        .filter(|id| self.watched.contains(id))
        .collect();
      if !mine.is_empty() {
        let found = self.store.ended_among(&mine);
        self.report_ended(found);
      }
    }
    if c.work && !self.store.interest().none {
      self.emit(Event::Changed);
    }
  }

  fn check_cancels(&mut self) {
    match self.store.cancel_requests() {
      Ok(list) if !list.is_empty() => self.emit(Event::CancelRequested(list)),
      Ok(_) => {}
      Err(e) => self.emit(Event::Background(e)),
    }
  }

  /// A full look at every watched id (their ends may have gone unheard, or been deleted by
  /// retention before they were seen).
  fn check_ended(&mut self) {
    if self.watched.is_empty() {
      return;
    }
    self.next_full_check = self.tick() + FULL_CHECK_MS;
    let ids: Vec<i64> = self.watched.iter().copied().collect();
    let found = self.store.ended_among(&ids);
    self.report_ended(found);
  }

  fn report_ended(&mut self, found: StoreResult<(Vec<Row>, Vec<i64>)>) {
    match found {
      Ok((rows, gone)) => {
        if rows.is_empty() && gone.is_empty() {
          return;
        }
        for r in &rows {
          self.watched.remove(&r.id);
        }
        for id in &gone {
          self.watched.remove(id);
        }
        self.emit(Event::Ended { rows, gone });
      }
      Err(e) => self.emit(Event::Background(e)),
    }
  }
}

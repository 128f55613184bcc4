//! The PostgreSQL driver as the store thread sees it: the operations of `PgStore`, and what
//! other executors changed, from the NOTIFY payloads its listener collects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::ops::PgStore;
use super::published::Published;
use super::{notify, push};
use crate::store::backend::{Answered, Backend, Changes, Interest, Withdrawn};
use crate::store::messages::{Command, SharedSink};
use crate::store::{Batch, BatchResult, CancelRequest, Rescued, Row, StoreError, StoreResult};
use crate::system::runtime;

/// The fallback look for changes whose notification was lost (the listener reconnecting):
/// soon after a notification, then less and less often while none comes.
const FALLBACK_FIRST: Duration = Duration::from_millis(250);
const FALLBACK_MAX: Duration = Duration::from_secs(10);

pub struct Postgres {
  store: PgStore,
  notes: Receiver<String>,
  listener: JoinHandle<()>,
  listening: notify::Listening,
  /// The listener has failed and is trying again (see `notify::Listener`).
  listen_failed: Arc<AtomicBool>,
  /// The statement connection as last told, and the link as last reported: up while both
  /// the statement connection and the listener are.
  statements_up: bool,
  link_up: bool,
  published: Arc<Published>,
  fallback_at: Instant,
  fallback_every: Duration,
  /// While the connection is down: when to try again, and the pause after that.
  retry_at: Instant,
  retry_every: Duration,
}

/// Pauses between attempts to get a lost connection back while no operation asks for it.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Postgres {
  /// Records the link as `up`, reporting a change in `changes`.
  fn note_link(&mut self, up: bool, changes: &mut Vec<bool>) {
    if up != self.link_up {
      self.link_up = up;
      changes.push(up);
    }
  }

  /// Starts listening for `store`'s channel; `wake` is the store thread's command channel,
  /// `sink` where its answers go (a push answers a parked claim from the listener's thread).
  pub fn new(store: PgStore, wake: Sender<Command>, sink: SharedSink) -> StoreResult<Postgres> {
    let rt = runtime::handle().map_err(StoreError::store)?;
    let (tx, notes) = mpsc::channel();
    let listening = notify::Listening::default();
    let listen_failed = Arc::new(AtomicBool::new(false));
    let published = Published::new(sink);
    let listener = notify::listen(
      &rt,
      store.target(),
      notify::Listener {
        notes: tx,
        wake,
        own: store.pid(),
        listening: listening.clone(),
        failed: listen_failed.clone(),
        published: published.clone(),
      },
    );
    Ok(Postgres {
      store,
      notes,
      listener,
      listening,
      listen_failed,
      statements_up: true,
      link_up: true,
      published,
      fallback_at: Instant::now() + FALLBACK_FIRST,
      fallback_every: FALLBACK_FIRST,
      retry_at: Instant::now(),
      retry_every: RETRY_FIRST,
    })
  }
}

impl Drop for Postgres {
  fn drop(&mut self) {
    self.listener.abort();
    self.published.shut();
  }
}

impl Backend for Postgres {
  fn owner(&self) -> &str {
    &self.store.me.owner
  }
  fn interest(&self) -> &Interest {
    self.store.interest()
  }
  fn set_interest(&mut self, interest: Interest) {
    self.store.set_interest(interest);
  }
  fn batch(&mut self, batch: &Batch, now: f64) -> StoreResult<BatchResult> {
    self.store.batch(batch, now)
  }
  fn next_due(&mut self, now: f64) -> StoreResult<Option<f64>> {
    self.store.next_due(now)
  }
  fn cancel(&mut self, id: i64, error_json: &str, now: f64) -> StoreResult<i32> {
    self.store.cancel(id, error_json, now)
  }
  fn cancel_requests(&mut self) -> StoreResult<Vec<CancelRequest>> {
    self.store.cancel_requests()
  }
  fn fetch(&mut self, id: i64) -> StoreResult<Option<Row>> {
    self.store.fetch(id)
  }
  fn integrity_check(&mut self) -> StoreResult<String> {
    self.store.integrity_check()
  }
  fn heartbeat(&mut self, now: f64) -> StoreResult<()> {
    self.store.heartbeat(now)
  }
  fn rescue(&mut self, now: f64) -> StoreResult<Vec<Rescued>> {
    self.store.rescue(now)
  }
  fn take_notices(&mut self) -> Vec<crate::store::StoreError> {
    self.store.take_notices()
  }
  fn retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64> {
    self.store.start_retention(ttl_ms, max_kept, now)
  }
  fn ended_among(&mut self, ids: &[i64]) -> StoreResult<(Vec<Row>, Vec<i64>)> {
    self.store.ended_among(ids)
  }
  fn open_among(&mut self, ids: &[i64]) -> StoreResult<Vec<i64>> {
    self.store.open_among(ids)
  }
  fn leave(&mut self) -> StoreResult<()> {
    self.store.leave()
  }
  fn set_global_limit(&mut self, agent: &str, limit: Option<u32>) -> StoreResult<()> {
    self.store.set_global_limit(agent, limit)
  }
  fn release_unknown(&mut self, running: &[(i64, u32)], parked: Option<i64>) -> StoreResult<Vec<i64>> {
    self.store.release_unknown(running, parked)
  }
  fn publish(&mut self, req: u32, batch: &Batch, now: f64) -> StoreResult<Option<i64>> {
    let listening = self.listening.load(std::sync::atomic::Ordering::Relaxed);
    let token = self
      .store
      .publish(batch, now, Some(listening).filter(|&k| k != 0))?;
    if let Some(t) = token {
      self.published.open(t, req);
    }
    Ok(token)
  }
  fn withdraw(&mut self, token: i64) -> StoreResult<Withdrawn> {
    if !self.published.close(token) {
      return Ok(Withdrawn::Answered);
    }
    self.store.withdraw(token).map(Withdrawn::Pushed)
  }
  fn answered(&mut self) -> Vec<Answered> {
    self.published.answered()
  }

  fn link_changes(&mut self) -> Vec<(bool, String)> {
    self.store.note_link();
    if self.store.is_down() {
      let now = Instant::now();
      if now >= self.retry_at {
        // Failing is expected while the server is away: the next try comes later.
        if self.store.reconnect().is_ok() {
          self.retry_every = RETRY_FIRST;
        } else {
          self.retry_every = (self.retry_every * 2).min(RETRY_MAX);
        }
        self.retry_at = now + self.retry_every;
      }
    }
    // One link for users: down while either the statement connection or the listener is
    // (without the listener, work from other executors is only found by the fallback look).
    let listening = !self.listen_failed.load(Ordering::Relaxed);
    let mut changes = Vec::new();
    for up in self.store.link_events() {
      self.statements_up = up;
      self.note_link(up && listening, &mut changes);
    }
    self.note_link(self.statements_up && listening, &mut changes);
    let shown = &self.store.target().shown;
    changes.into_iter().map(|up| (up, shown.clone())).collect()
  }

  // The listener wakes the thread for every notification: a look is due only when the
  // fallback is (or, while the connection is down, the next try to get it back).
  fn look_in_ms(&self) -> Option<f64> {
    let mut at = self.fallback_at;
    if self.store.is_down() {
      at = at.min(self.retry_at);
    }

    Some(at.saturating_duration_since(Instant::now()).as_secs_f64() * 1000.0)
  }

  fn broken(&self) -> Option<StoreError> {
    self.store.broken()
  }

  fn changes(&mut self) -> StoreResult<Changes> {
    let mut c = Changes::default();
    while let Ok(payload) = self.notes.try_recv() {
      match push::parse(&payload) {
        // Heard before its claim was open (published meanwhile), or after it ended (then
        // ignored: whoever ended it read the pushes, as the withdrawal that follows this
        // executor's own submission does).
        Some((token, Some(rows))) => {
          c.any = true;
          self.published.answer(token, rows);
        }
        Some((token, None)) => {
          c.any = true;
          c.pushed.push(token);
        }
        None => notify::parse(&payload, &mut c),
      }
    }
    if c.limits {
      self.store.limits_changed();
    }
    let now = Instant::now();
    // Without a listener nothing is heard: the fallback looks at its first pace meanwhile.
    if self.listen_failed.load(Ordering::Relaxed) && self.fallback_at > now + FALLBACK_FIRST {
      self.fallback_every = FALLBACK_FIRST;
      self.fallback_at = now + FALLBACK_FIRST;
    }
    if c.any {
      self.fallback_every = FALLBACK_FIRST;
      self.fallback_at = now + FALLBACK_FIRST;
    } else if now >= self.fallback_at {
      // Nothing heard for a while: look as if something had changed.
      c.any = true;
      c.cancels = true;
      c.work = true;
      self.fallback_every = (self.fallback_every * 2).min(FALLBACK_MAX);
      self.fallback_at = now + self.fallback_every;
    }
    Ok(c)
  }
}

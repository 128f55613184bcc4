//! The thread's main line: `run` opens the store and serves until the executor closes or
//! goes, `serve` waits for requests between the periodic work, and `handle` does each one.
//! After a failed open, a panic or a store that cannot go on, `refuse_all` answers every
//! later request with the failure.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{send_event, Command, Event, Options, Service, SharedSink, FULL_CHECK_MS};
use crate::protocol::{MODE_FIRE, MODE_WATCHED};
use crate::store::backend::{Backend, Interest};
use crate::store::pg::backend::Postgres;
use crate::store::pg::ops::PgStore;
use crate::store::pg::pool::Pool;
use crate::store::pg::reader::Reader;
use crate::store::{Batch, BatchResult, Finished, Release, Store, StoreError};
use crate::system::probes::now_ms;

pub(super) fn run(
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
        .and_then(|s| Postgres::new(s, tx.clone(), sink.clone()))
        .map(|p| Box::new(p) as Box<dyn Backend>)
    }
  };
  let mut store = match opened {
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
    // JS went before the store opened: nothing was run or claimed, the worker is forgotten.
    let _ = store.leave();
    return;
  }
  // SQLite: a watch on the WAL file; PostgreSQL's listener already wakes the thread.
  let waker = if opts.postgres.is_none() {
    crate::store::wake::watch(&opts.path, tx)
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
    lazy: HashSet::new(),
    lazy_ended: Vec::new(),
    lazy_at: None,
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
    parked: None,
    leading: true,
    follow_at: None,
    publish_at: None,
    alive: true,
    left: false,
    broken: None,
    close_req: None,
  };
  // A panic (a bug) or a store that cannot go on (a row of a schema changed by hand that
  // the driver cannot read) must not leave callers waiting in silence: JS hears that the
  // thread stopped (and fails what it waits for), and every later request is answered with
  // the failure.
  let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.serve(&rx)));
  let what = match served {
    Err(panic) => Some(
      panic
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string()),
    ),
    Ok(()) => s.broken.take().map(|e| e.message),
  };
  // The store's connections close here (with its listener: no submission hands work to this
  // thread any more, and no push answers a claim after JS heard that the thread stopped).
  let (sink, reader, close_req) = (s.sink.clone(), s.reader.clone(), s.close_req);
  drop(s);
  drop(waker);
  // A close is answered once they are (SQLite has checkpointed its WAL into the file and
  // removed it), and before a failure met after it: it was done.
  if let Some(req) = close_req {
    send_event(&sink, Event::Closed { req });
  }
  if let Some(what) = what {
    let error = StoreError::store(format!(
      "the store's thread failed ({what}); nothing more can be written"
    ));
    send_event(&sink, Event::Stopped(error.clone()));
    if let Some(r) = &reader {
      r.close();
    }
    refuse_all(&rx, &sink, &error);
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
          self.stops();
          // Everything already queued, with what falls due in between (a busy executor
          // always has a batch queued: a cancel heard meanwhile must not wait for a lull).
          while self.alive {
            match rx.try_recv() {
              Ok(cmd) => {
                self.handle(cmd);
                if self.alive && !self.stops() && self.tick() >= self.next_deadline() {
                  self.periodic();
                }
              }
              Err(_) => break,
            }
          }
        }
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => break,
      }
      if self.alive {
        self.periodic();
      }
      if self.alive && !self.stops() {
        for (up, store) in self.store.link_changes() {
          self.emit(Event::Link { up, store });
          if up {
            self.resync();
          }
        }
        // A connection found lost just now is tried again when its driver says.
        if let Some(ms) = self.store.look_in_ms() {
          self.next_poll = self.next_poll.min(self.tick() + ms.max(self.opts.poll_ms));
        }
      }
    }
    // Stopped by an event JS could not hear (its executor is going), or by the channel. A
    // store that cannot go on is left as after a panic: rescuers hand its work back.
    if !self.left && self.broken.is_none() {
      self.leave_unheard();
    }
  }

  /// JS hears this thread no more: what was pushed to it and the claims it does not know of
  /// go back to the queue; the attempts it runs stay in its name, rescued when this process
  /// exits or their lease runs out.
  fn leave_unheard(&mut self) {
    self.give_back_parked(now_ms());
    self.release_unknown();
    let _ = self.store.leave();
    self.alive = false;
    self.left = true;
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
  /// Runs `batch` and answers it under `req`; the executions it claimed.
  pub(super) fn run_batch(&mut self, req: u32, batch: &Batch) -> usize {
    let now = now_ms();
    match self.store.batch(batch, now) {
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
        let claimed: Vec<(i64, u32)> = result.claimed.iter().map(|r| (r.id, r.attempt)).collect();
        self.running.extend(claimed.iter().copied());
        // Their submitter waits for their ends from now: one that another process claims
        // and ends before JS has the answer must not go unseen.
        for (i, n) in result.inserted.iter().zip(&batch.inserts) {
          if !i.existing {
            self.watched.insert(i.id);
            if n.mode == MODE_FIRE || n.mode == MODE_WATCHED {
              self.lazy.insert(i.id);
            }
          }
        }
        let look_ahead = batch.claim > 0 && (result.claimed.len() as u32) < batch.claim;
        // This process's own submissions notify other processes only: a parked claim hears
        // of them here.
        let fresh = result.inserted.iter().any(|i| !i.existing);
        // The answer first: JS goes on while this thread looks for the next due time.
        if !self.heard(Event::Batch { req, result }) {
          self.unheard(&claimed);
        }
        if fresh && self.parked.is_some() {
          self.work_may_wait();
        }
        if look_ahead {
          match self.store.next_due(now) {
            Ok(Some(t)) => self.wake_in(t - now_ms()),
            Ok(None) => {}
            Err(e) => self.emit(Event::Background(e)),
          }
        }
        claimed.len()
      }
      Err(error) => {
        self.emit(Event::Failed { req, error });
        0
      }
    }
  }

  /// The parked claim taken back without running it: what was pushed to it goes back to the
  /// queue. Its request, and whether anything had been pushed.
  fn give_back_parked(&mut self, now: f64) -> Option<(u32, bool)> {
    let (p, pushed) = self.take_parked()?;
    self.hand_back(&pushed, now);
    Some((p.req, !pushed.is_empty()))
  }

  /// Answers batch `req` with nothing done.
  fn answer_empty(&mut self, req: u32) {
    self.emit(Event::Batch {
      req,
      result: BatchResult::default(),
    });
  }

  /// Executions pushed to this worker that it will not run go back to the queue, uncounted.
  fn hand_back(&mut self, pushed: &[crate::store::Row], now: f64) {
    if pushed.is_empty() {
      return;
    }
    let back = Batch {
      releases: pushed
        .iter()
        .map(|r| Release {
          id: r.id,
          attempt: r.attempt,
        })
        .collect(),
      ..Batch::default()
    };
    if let Err(e) = self.store.batch(&back, now) {
      // Left to the heartbeat's look for attempts this worker does not know of.
      self.emit(Event::Background(e));
    }
  }

  fn handle(&mut self, cmd: Command) {
    self.note_answered();
    let now = now_ms();
    self.active_at = self.tick();
    match cmd {
      Command::Batch { req, batch } => {
        self.run_batch(req, &batch);
      }
      Command::Park { req, batch } => {
        if let Some((old, pushed)) = self.take_parked() {
          self.answer_pushed(old.req, pushed);
        }
        self.park(req, batch);
      }
      Command::Unpark { run } => {
        if run && self.parked.is_none() {
          // It ran already (its answer is on its way), maybe before what JS wants it for
          // was stored (a submission of its own, which notifies only the others): JS hears
          // of work, and claims.
          if !self.store.interest().none {
            self.emit(Event::Changed);
          }
        }
        if run {
          if let Some((p, pushed)) = self.take_parked() {
            self.run_parked(p, pushed);
          }
        } else if let Some((req, pushed)) = self.give_back_parked(now) {
          // Taken back as JS cannot take more now. What was pushed went back to the queue:
          // JS hears of it (its own notice of work is not heard here), to claim what it can.
          self.answer_empty(req);
          if pushed && !self.store.interest().none {
            self.emit(Event::Changed);
          }
        }
      }
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
        if self.store.interest().none {
          // Shutting down: submissions stop filling the parked claim, and what they pushed
          // to it goes back to the queue.
          if let Some(token) = self.parked.as_mut().and_then(|p| p.token.take()) {
            match self.withdraw(token) {
              Some(pushed) => self.hand_back(&pushed, now),
              None => self.parked = None,
            }
          }
        }
        self.work_may_wait();
      }
      Command::Watch { ids, check } => {
        // JS waits for these now: none is lazy any more, and one heard ended is read now.
        let before = self.lazy_ended.len();
        if before > 0 {
          let wanted: HashSet<i64> = ids.iter().copied().collect();
          self.lazy_ended.retain(|id| !wanted.contains(id));
        }
        let check = check || self.lazy_ended.len() < before;
        for id in &ids {
          self.lazy.remove(id);
        }
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
        if !self.lazy_ended.is_empty() {
          let gone: HashSet<i64> = ids.iter().copied().collect();
          self.lazy_ended.retain(|id| !gone.contains(id));
        }
        for id in ids {
          self.watched.remove(&id);
          self.lazy.remove(&id);
        }
      }
      Command::Wake => {
        if self.interested() {
          // Look now, and once more shortly: the commit may not be visible yet.
          self.next_poll = self.tick();
          self.recheck = true;
        }
      }
      // What was pushed to this worker goes back, heard of or not.
      Command::Dropped => self.leave_unheard(),
      Command::Close { req } => {
        if let Some((req, _)) = self.give_back_parked(now) {
          self.answer_empty(req);
        }
        // As must what was pushed to a claim withdrawn without reading it (a failure).
        self.release_unknown();
        // Reads made beside the thread are answered before the close.
        if let Some(r) = &self.reader {
          r.close();
        }
        if let Err(e) = self.store.leave() {
          self.emit(Event::Background(e));
        }
        self.close_req = Some(req);
        self.alive = false;
        self.left = true;
      }
    }
  }
}

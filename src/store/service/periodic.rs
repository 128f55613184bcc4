//! The thread's work between requests: the deadlines it keeps (heartbeat, rescue,
//! retention, the poll, a wake-up), the poll's findings (work, cancels, ended executions),
//! and the look after a reconnect.

use super::{Event, Service, ACTIVE_MS, FULL_CHECK_MS, IDLE_POLL_MS, LAZY_MS, RECHECK_MS, WOKEN_POLL_MS};
use crate::store::backend::Changes;
use std::collections::HashSet;

use crate::protocol::ENDED_KEPT;
use crate::store::{Row, StoreResult};
use crate::system::probes::now_ms;

impl Service {
  pub(super) fn next_deadline(&self) -> f64 {
    let mut d = self.next_heartbeat.min(self.next_rescue).min(self.next_retention);
    if self.interested() {
      d = d.min(self.next_poll);
    }
    if let Some(w) = self.wake_at {
      d = d.min(w);
    }
    if let Some(f) = self.follow_at {
      d = d.min(f);
    }
    if let Some(p) = self.publish_at {
      d = d.min(p);
    }
    if let Some(l) = self.lazy_at {
      d = d.min(l);
    }
    d
  }

  /// The connection is back: claims whose answer was lost go back to the queue, and what
  /// other executors did meanwhile is looked at.
  pub(super) fn resync(&mut self) {
    self.release_unknown();
    self.check_ended();
    self.work_may_wait();
  }

  /// Attempts this worker holds in the store but does not know of go back to the queue:
  /// claims whose answer was lost. True when any went back (or ended cancelled).
  pub(super) fn release_unknown(&mut self) -> bool {
    // Pushes answered from the listener's thread are known.
    self.note_answered();
    let running: Vec<(i64, u32)> = self.running.iter().map(|(&id, &a)| (id, a)).collect();
    let parked = self.parked.as_ref().and_then(|p| p.token);
    match self.store.release_unknown(&running, parked) {
      Ok(ids) if !ids.is_empty() => {
        tracing::debug!(?ids, "claims whose answer was lost handed back");
        true
      }
      Ok(_) => false,
      Err(e) => {
        self.emit(Event::Background(e));
        false
      }
    }
  }

  /// Tells JS to look for work again in `delay_ms` (a retry's or a delayed row's due time).
  pub(super) fn wake_in(&mut self, delay_ms: f64) {
    let at = self.tick() + delay_ms.max(0.0);
    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
  }

  pub(super) fn periodic(&mut self) {
    self.note_answered();
    // `now` is what the store is told; `t` what this thread's deadlines are compared with.
    let now = now_ms();
    let t = self.tick();
    if t >= self.next_heartbeat {
      self.next_heartbeat = t + self.opts.lease_ms / 3.0;
      match self.store.heartbeat(now) {
        // Also after a reconnect's look: a batch given up when its answer was late may
        // still commit its claims on the server afterwards, and the heartbeat would renew
        // them for ever.
        Ok(()) => {
          if self.release_unknown() {
            // Claimable here too: this process ignores its own notice of it.
            self.work_may_wait();
          }
        }
        Err(e) => self.emit(Event::Background(e)),
      }
    }
    if t >= self.next_rescue {
      self.next_rescue = t + (self.opts.lease_ms / 2.0).min(1_000.0);
      match self.store.rescue(now) {
        Ok(rescued) if !rescued.is_empty() => {
          self.emit(Event::Rescued(rescued));
          // Queued again, or ended: a slot of its agent's global limit may be free.
          self.work_may_wait();
        }
        Ok(_) => {}
        Err(e) => self.emit(Event::Background(e)),
      }
      for e in self.store.take_notices() {
        self.emit(Event::Background(e));
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
    if self.follow_at.is_some_and(|f| t >= f) {
      self.follow();
    }
    if self.publish_at.is_some_and(|p| t >= p) {
      self.publish();
    }
    if self.lazy_at.is_some_and(|l| t >= l) {
      self.read_lazy();
    }
    if let Some(w) = self.wake_at {
      if t >= w {
        self.wake_at = None;
        self.work_may_wait();
      }
    }
    if self.interested() && t >= self.next_poll {
      let active = t - self.active_at < ACTIVE_MS;
      let fast = if self.woken {
        self.opts.poll_ms.max(WOKEN_POLL_MS)
      } else {
        self.opts.poll_ms
      };
      let every = if active {
        fast
      } else {
        self.opts.poll_ms.max(IDLE_POLL_MS)
      };
      let changes = self.store.changes();
      // Never sooner than the poll interval asked for.
      self.next_poll = t
        + self
          .store
          .look_in_ms()
          .map_or(every, |ms| ms.max(self.opts.poll_ms));
      match changes {
        Ok(c) if c.any => {
          self.active_at = t;
          self.recheck = false;
          let full = c.full;
          self.changed(c);
          if full {
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
  fn changed(&mut self, c: Changes) {
    // What the look answered, and pushes too long to be told, read with the withdrawal.
    self.note_answered();
    for token in c.pushed {
      if self.parked.as_ref().is_some_and(|p| p.token == Some(token)) {
        if let Some((p, rows)) = self.take_parked() {
          self.answer_pushed(p.req, rows);
        }
      }
    }
    let ended = &c.ended;
    if c.cancels && !self.running.is_empty() {
      self.check_cancels();
    }
    if !self.watched.is_empty() {
      let mut mine: Vec<i64> = ended
        .iter()
        .copied()
        .filter(|id| self.watched.contains(id))
        .collect();
      // Lazy ones wait to be read with the others of the next `LAZY_MS`.
      mine.retain(|id| {
        if !self.lazy.remove(id) {
          return true;
        }
        self.watched.remove(id);
        self.lazy_ended.push(*id);
        false
      });
      if !self.lazy_ended.is_empty() && self.lazy_at.is_none() {
        self.lazy_at = Some(self.tick() + LAZY_MS);
      }
      // Possible ends are looked up now, as the full look does: those still open stay
      // watched.
      let (lazy, eager): (Vec<i64>, Vec<i64>) = c
        .maybe_ended
        .iter()
        .copied()
        .filter(|id| self.watched.contains(id))
        .partition(|id| self.lazy.contains(id));
      mine.extend(eager);
      mine.sort_unstable();
      mine.dedup();
      self.look_up(lazy, mine);
    }
    if c.work {
      self.work_announced();
    }
  }

  pub(super) fn check_cancels(&mut self) {
    match self.store.cancel_requests() {
      Ok(list) if !list.is_empty() => self.emit(Event::CancelRequested(list)),
      Ok(_) => {}
      Err(e) => self.emit(Event::Background(e)),
    }
  }

  /// A full look at every watched id (their ends may have gone unheard, or been deleted by
  /// retention before they were seen). Lazy ids are looked up without their rows: those no
  /// longer queued or running join the lazy ends, of which only the latest `ENDED_KEPT`
  /// rows are read.
  pub(super) fn check_ended(&mut self) {
    if self.watched.is_empty() {
      return;
    }
    self.next_full_check = self.tick() + FULL_CHECK_MS;
    let (lazy, eager): (Vec<i64>, Vec<i64>) = self
      .watched
      .iter()
      .copied()
      .partition(|id| self.lazy.contains(id));
    self.look_up(lazy, eager);
  }

  /// Looks watched ids up: `lazy` ones without their rows (those no longer queued or
  /// running join the lazy ends), `eager` ones with them (those ended are reported).
  fn look_up(&mut self, mut lazy: Vec<i64>, eager: Vec<i64>) {
    if !lazy.is_empty() {
      match self.store.open_among(&lazy) {
        Ok(open) => {
          let open: HashSet<i64> = open.into_iter().collect();
          lazy.retain(|id| !open.contains(id));
          lazy.sort_unstable();
          lazy.dedup();
          for id in &lazy {
            self.watched.remove(id);
            self.lazy.remove(id);
          }
          self.lazy_ended.extend(lazy);
          if !self.lazy_ended.is_empty() && self.lazy_at.is_none() {
            self.lazy_at = Some(self.tick() + LAZY_MS);
          }
        }
        Err(e) => self.emit(Event::Background(e)),
      }
    }
    if !eager.is_empty() {
      let found = self.store.ended_among(&eager);
      self.report_ended(found);
    }
  }

  fn report_ended(&mut self, found: StoreResult<(Vec<Row>, Vec<i64>)>) {
    match found {
      Ok((rows, gone)) => {
        if rows.is_empty() && gone.is_empty() {
          return;
        }
        for r in &rows {
          self.watched.remove(&r.id);
          self.lazy.remove(&r.id);
        }
        for id in gone.iter() {
          self.watched.remove(id);
          self.lazy.remove(id);
        }
        self.emit(Event::Ended {
          rows,
          gone,
          unread: Vec::new(),
        });
      }
      Err(e) => self.emit(Event::Background(e)),
    }
  }

  /// The lazy ids heard ended in the last `LAZY_MS`: the rows of the latest `ENDED_KEPT`
  /// are read and reported, the others told unread (a store tells only true ends). On a
  /// failed read they are watched again, lazily (the full look finds them).
  pub(super) fn read_lazy(&mut self) {
    self.lazy_at = None;
    let mut unread = std::mem::take(&mut self.lazy_ended);
    let read = unread.split_off(unread.len().saturating_sub(ENDED_KEPT as usize));
    if read.is_empty() {
      return;
    }
    match self.store.ended_among(&read) {
      Ok((rows, gone)) => {
        // Neither ended nor gone: still open after all, so watched again.
        let found: HashSet<i64> = rows.iter().map(|r| r.id).chain(gone.iter().copied()).collect();
        self.watch_lazily(read.into_iter().filter(|id| !found.contains(id)));
        if !rows.is_empty() || !gone.is_empty() || !unread.is_empty() {
          self.emit(Event::Ended { rows, gone, unread });
        }
      }
      Err(e) => {
        self.watch_lazily(read);
        self.watch_lazily(unread);
        self.emit(Event::Background(e));
      }
    }
  }

  fn watch_lazily(&mut self, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
      self.watched.insert(id);
      self.lazy.insert(id);
    }
  }
}

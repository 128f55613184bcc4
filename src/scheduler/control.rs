//! Run-time control: concurrency, pause, throttle, agent and global limits, the rate
//! timer, and closing or aborting the scheduler.

use super::limits::Block;
use super::rate::{self, RateLimit};
use super::types::HOLDS_SLOT;
use super::{is_queued, Scheduler, Status, TimerCmd, TimerKind};

impl Scheduler {
  pub fn set_concurrency(&mut self, n: u32, now: f64) -> Vec<u64> {
    self.cfg.max_concurrent = n.max(1);
    self.pump(now)
  }

  pub fn set_paused(&mut self, paused: bool, now: f64) -> Vec<u64> {
    self.paused = paused;
    self.pump(now)
  }

  pub fn set_throttled(&mut self, throttled: bool, now: f64) -> Vec<u64> {
    self.throttled = throttled;
    self.pump(now)
  }

  /// Sets the limits of `agent` (key 0, "other", takes none: false). `concurrency` and
  /// `rate` replace the previous ones (`None`: no limit). The first limits of an agent move
  /// its queued executions to a lane of their own, once. Returns what started.
  pub fn set_agent_limits(
    &mut self,
    agent: u16,
    concurrency: Option<u32>,
    rate: Option<RateLimit>,
    now: f64,
  ) -> Option<Vec<u64>> {
    if agent == 0 {
      return None;
    }
    let execs = &self.execs;
    if !self.queue.has_lane(agent) {
      self.queue.add_lane(
        agent,
        |id| execs.get(id).is_some_and(|e| e.agent == agent),
        |id| is_queued(execs, id),
      );
    }
    let holders = || {
      execs
        .iter()
        .filter(|(_, e)| e.agent == agent && e.has(HOLDS_SLOT))
        .count() as u32
    };
    let a = self.limits.entry(agent, holders);
    a.concurrency = concurrency.map_or(u32::MAX, |c| c.max(1));
    rate::RateWindow::set(&mut a.rate, rate);
    self.update_block(agent, now);
    Some(self.pump(now))
  }

  /// Sets or removes the global rate limit. Returns what started.
  pub fn set_rate_limit(&mut self, rate: Option<RateLimit>, now: f64) -> Vec<u64> {
    self.limits.set_global(rate);
    self.pump(now)
  }

  /// The rate timer of `agent` (0: the global one) fired. Returns what started: what the
  /// window held back while a slot was free (counted as rate-limited starts).
  pub fn rate_due(&mut self, agent: u16, now: f64) -> Vec<u64> {
    if agent == 0 {
      self.limits.global_timer_at = None;
    } else {
      self.update_block(agent, now);
      // A firing that came early leaves the block as it was: its timer must come again.
      if let Some(Block::Rate(at)) = self.limits.get(agent).map(|a| a.block) {
        self.timer_cmds.push(TimerCmd::Arm {
          id: u64::from(agent),
          kind: TimerKind::Rate,
          at_ms: at,
        });
      }
    }
    let started = self.pump(now);
    self.limits.rate_limited += started.len() as u64;
    started
  }

  /// Stops accepting submissions. With `cancel_queued`, every queued execution is
  /// cancelled; returns those ids in start order.
  ///
  /// Pending retries stop in both modes: executions waiting for their next attempt are
  /// cancelled (listed after the queued ones).
  pub fn close(&mut self, cancel_queued: bool, now: f64) -> Vec<u64> {
    self.closed = true;
    let mut ids = if cancel_queued {
      let execs = &self.execs;
      self.queue.drain(|i| is_queued(execs, i))
    } else {
      Vec::new()
    };
    if self.waiting > 0 {
      ids.extend(
        self
          .execs
          .iter()
          .filter(|(_, e)| e.status == Status::Waiting)
          .map(|(id, _)| id)
          .collect::<Vec<_>>(),
      );
    }
    for &id in &ids {
      self.finish(id, Status::Cancelled, now);
    }
    ids
  }

  /// Forced end of a shutdown: cancels everything queued and running and frees every slot.
  /// Returns the cancelled ids (queued first, then running in start order).
  pub fn abort_all(&mut self, now: f64) -> Vec<u64> {
    let mut ids = self.close(true, now);
    let running = self.running_ids();
    for &id in &running {
      self.finish(id, Status::Cancelled, now);
    }
    let holders: Vec<u64> = self
      .execs
      .iter()
      .filter(|(_, e)| e.has(HOLDS_SLOT))
      .map(|(id, _)| id)
      .collect();
    for id in holders {
      self.release_slot(id, now);
    }
    ids.extend(running);
    ids
  }
}

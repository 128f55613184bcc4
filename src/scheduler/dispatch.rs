//! Submission and start: admitting an execution, starting it when a slot and the limits
//! allow, holding it back for a rate limit, and pumping the queue into free slots.

use super::limits::Block;
use super::types::{HOLDS_SLOT, WATCHED};
use super::{arm, is_queued, Exec, Scheduler, Status, TimerCmd, TimerKind};

impl Scheduler {
  /// Creates an execution. Returns `(id, started)`, or `None` once the scheduler is closed.
  pub fn submit(
    &mut self,
    mode: u8,
    agent: u16,
    watched: bool,
    priority: i32,
    timeout_ms: f64,
    now: f64,
  ) -> Option<(u64, bool)> {
    self.submit_as(mode, agent, watched, priority, timeout_ms, false, now)
  }

  /// As `submit`; `held`: the execution waits, shown as queued, until `start_after` arms its
  /// start (a delayed execution). It takes no place in the queue meanwhile.
  #[allow(clippy::too_many_arguments)]
  pub fn submit_as(
    &mut self,
    mode: u8,
    agent: u16,
    watched: bool,
    priority: i32,
    timeout_ms: f64,
    held: bool,
    now: f64,
  ) -> Option<(u64, bool)> {
    if self.closed {
      return None;
    }
    // At once when a slot is free, the limits allow it and nothing queued could start before
    // it (everything queued may be behind agents at their limits).
    let start_now = !held
      && self.can_start()
      && (self.queue.is_empty() || !self.queue.has_ready())
      && self.limits.global_allows(now)
      && self.limits.get(agent).is_none_or(|a| a.block == Block::None);
    if !held && !start_now && self.queue.len() >= self.cfg.max_queued {
      return None; // the queue is full: refused, nothing recorded
    }
    let id = self.next_id;
    self.next_id += 1;
    self.totals.submitted += 1;
    let mut exec = Exec {
      status: Status::Queued,
      mode,
      flags: if watched { WATCHED } else { 0 },
      agent,
      attempt: 0,
      priority,
      progress: 0.0,
      timeout_ms: if timeout_ms.is_finite() && timeout_ms >= 1.0 {
        timeout_ms.min(f64::from(u32::MAX)) as u32
      } else {
        0
      },
      submitted_at: now,
      started_at: f64::NAN,
      finished_at: f64::NAN,
      finish_seq: 0,
      timers: 0,
    };
    if watched {
      arm(
        &mut self.timer_cmds,
        &mut exec,
        id,
        TimerKind::Progress,
        now + self.cfg.progress_interval_ms,
      );
    }
    if held {
      exec.status = Status::Waiting;
      self.waiting += 1;
      self.execs.insert(id, exec);
      return Some((id, false));
    }
    self.execs.insert(id, exec);
    if start_now {
      self.start(id, now, None);
    } else {
      self.queue.push(id, priority, agent);
      tracing::debug!(id, priority, slots = self.slots_used, "queued");
      self.hold_for_global_rate(now);
    }
    Some((id, start_now))
  }

  /// Starts `id`; `seq`: its queue sequence number when it was queued.
  fn start(&mut self, id: u64, now: f64, seq: Option<u64>) {
    let Some(exec) = self.execs.get_mut(id) else {
      return;
    };
    let agent = exec.agent;
    exec.status = Status::Running;
    exec.started_at = now;
    exec.set(HOLDS_SLOT, true);
    exec.attempt = exec.attempt.saturating_add(1);
    self.stats.started(exec.agent, now - exec.submitted_at);
    if exec.timeout_ms > 0 {
      let at = now + f64::from(exec.timeout_ms);
      arm(&mut self.timer_cmds, exec, id, TimerKind::Timeout, at);
    }
    self.slots_used += 1;
    self.running += 1;
    tracing::debug!(
      id,
      slots = self.slots_used,
      limit = self.cfg.max_concurrent,
      "start"
    );
    self.count_limited_start(agent, now, seq);
  }

  /// Records a start against the rate windows and the agent's slots, counts what it waited
  /// for, and blocks the agent's lane when it reached a limit.
  fn count_limited_start(&mut self, agent: u16, now: f64, seq: Option<u64>) {
    let limits = &mut self.limits;
    if let Some(w) = &mut limits.global {
      w.record(now);
    }
    let seq = seq.unwrap_or(u64::MAX);
    let mut waited_limit = false;
    if let Some(a) = limits.get_mut(agent) {
      a.running += 1;
      if let Some(w) = &mut a.rate {
        w.record(now);
      }
      waited_limit = seq < a.limit_released_seq;
      self.update_block(agent, now);
    }
    self.limits.limit_deferred += u64::from(waited_limit);
  }

  /// Brings the lane of `agent` in line with its limits at `now`: blocks or unblocks it,
  /// arms the timer that ends a rate block, and notes when a block ended.
  pub(super) fn update_block(&mut self, agent: u16, now: f64) {
    let next_seq = self.queue.next_seq();
    let Some(a) = self.limits.get_mut(agent) else {
      return;
    };
    let before = a.block;
    let block = a.block_at(now);
    if block == before {
      return;
    }
    if before == Block::Limit {
      a.limit_released_seq = next_seq;
    }
    a.block = block;
    let id = u64::from(agent);
    match block {
      Block::Rate(at) => self.timer_cmds.push(TimerCmd::Arm {
        id,
        kind: TimerKind::Rate,
        at_ms: at,
      }),
      _ if matches!(before, Block::Rate(_)) => self.timer_cmds.push(TimerCmd::Disarm {
        id,
        kind: TimerKind::Rate,
      }),
      _ => {}
    }
    if (before == Block::None) != (block == Block::None) {
      self.queue.set_blocked(agent, block != Block::None);
    }
  }

  /// A slot is free and something could start but for the global rate limit: the limit's
  /// timer is armed for when its window lets the next start through.
  fn hold_for_global_rate(&mut self, now: f64) {
    let Some(w) = &self.limits.global else {
      return;
    };
    if w.allows(now) || !self.can_start() || !self.queue.has_ready() {
      return;
    }
    let at = w.free_at(now);
    if self.limits.global_timer_at != Some(at) {
      self.limits.global_timer_at = Some(at);
      self.timer_cmds.push(TimerCmd::Arm {
        id: 0,
        kind: TimerKind::Rate,
        at_ms: at,
      });
    }
  }

  /// Starts the next queued execution if a slot allows it.
  pub(super) fn start_next(&mut self, now: f64) -> Option<u64> {
    if !self.can_start() {
      return None;
    }
    if !self.limits.global_allows(now) {
      self.hold_for_global_rate(now);
      return None;
    }
    let execs = &self.execs;
    let id = if self.cfg.aging_ms > 0.0 {
      let aging = self.cfg.aging_ms;
      let age = |i: u64| -> usize {
        execs
          .get(i)
          .map(|e| ((now - e.submitted_at).max(0.0) / aging) as usize)
          .unwrap_or(0)
      };
      self.queue.pop(|i| is_queued(execs, i), Some(&age))?
    } else {
      self.queue.pop(|i| is_queued(execs, i), None)?
    };
    self.start(id.id, now, Some(id.seq));
    Some(id.id)
  }

  /// Starts everything the limits allow; returns the started ids in start order.
  pub fn pump(&mut self, now: f64) -> Vec<u64> {
    let mut started = Vec::new();
    while let Some(id) = self.start_next(now) {
      started.push(id);
    }
    started
  }
}

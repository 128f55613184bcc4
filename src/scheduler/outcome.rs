//! How attempts end: settles, retries, timeouts, cancels, the grace period of a zombie's
//! slot, and the finish of an execution.

use super::retry::RetryPolicy;
use super::types::{EVICTED, HOLDS_SLOT, OWN_RETRY_POLICY, RETRY_READY};
use super::{
  arm, disarm, Scheduler, Settled, Status, TimedOut, TimerCmd, TimerKind, MAX_GRACE_MS, SWEEP_SLACK_MS,
};

impl Scheduler {
  /// Attempt `attempt` of `id` settled (0: whichever runs). Frees its slot; if the
  /// execution was still running it ends as completed or failed, or, when it failed and its
  /// retry policy allows, waits for its next attempt. A settle of an older attempt (its slot
  /// already freed by the grace period) is ignored.
  pub fn settle(&mut self, id: u64, attempt: u16, ok: bool, now: f64) -> Settled {
    self.settle_as(id, attempt, ok, true, now)
  }

  /// As `settle`; with `retry` false a failure ends the execution whatever its policy allows
  /// (the user's `retryIf` said no).
  pub fn settle_as(&mut self, id: u64, attempt: u16, ok: bool, retry: bool, now: f64) -> Settled {
    let mut ended = false;
    let mut retry_delay_ms = None;
    if let Some(exec) = self
      .execs
      .get(id)
      .filter(|e| e.attempt == attempt || attempt == 0)
    {
      let was_running = exec.status == Status::Running;
      self.release_slot(id, now);
      if was_running {
        if ok {
          self.finish(id, Status::Completed, now);
        } else {
          retry_delay_ms = self.fail_attempt(id, retry, now);
        }
        ended = true;
      }
    }
    Settled {
      ended,
      next: self.start_next(now),
      retry_delay_ms,
    }
  }

  /// The running attempt of `id` failed: the execution waits for its next attempt when its
  /// policy allows one (returns the delay), else it fails.
  fn fail_attempt(&mut self, id: u64, retry: bool, now: f64) -> Option<f64> {
    let delay = if retry { self.retry_delay(id) } else { None };
    match delay {
      Some(ms) => self.wait_for_retry(id, ms, now),
      None => self.finish(id, Status::Failed, now),
    }
    delay
  }

  /// The delay before the next attempt of `id`, if it gets one: never once closed.
  fn retry_delay(&mut self, id: u64) -> Option<f64> {
    if self.closed {
      return None;
    }
    let exec = self.execs.get(id)?;
    let policy = if exec.has(OWN_RETRY_POLICY) {
      self.retry_policies.get(&id).unwrap_or(&self.cfg.retry)
    } else {
      &self.cfg.retry
    };
    policy.delay_after(exec.attempt, &mut self.jitter)
  }

  /// `id` retries by `policy` instead of the configured one. False (and nothing kept) when
  /// `id` is unknown or has finished.
  pub fn set_retry_policy(&mut self, id: u64, policy: RetryPolicy) -> bool {
    match self.execs.get_mut(id) {
      Some(exec) if !exec.status.is_terminal() => {
        exec.set(OWN_RETRY_POLICY, true);
        self.retry_policies.insert(id, policy);
        true
      }
      _ => false,
    }
  }

  /// A failed attempt: wait `delay_ms`, then queue the next attempt (see `retry_due`).
  fn wait_for_retry(&mut self, id: u64, delay_ms: f64, now: f64) {
    let Some(exec) = self.execs.get_mut(id) else {
      return;
    };
    if exec.status == Status::Running {
      self.running -= 1;
    }
    exec.status = Status::Waiting;
    disarm(&mut self.timer_cmds, exec, id, TimerKind::Timeout);
    arm(&mut self.timer_cmds, exec, id, TimerKind::Retry, now + delay_ms);
    self.waiting += 1;
    tracing::debug!(id, attempt = exec.attempt, delay_ms, "retry scheduled");
  }

  /// A held execution (`submit_as`) joins the queue after `delay_ms` (at once for 0). False
  /// when `id` is not a held execution waiting for its first start.
  pub fn start_after(&mut self, id: u64, delay_ms: f64, now: f64) -> bool {
    let Some(exec) = self.execs.get_mut(id) else {
      return false;
    };
    if exec.status != Status::Waiting || exec.attempt != 0 || exec.timers & TimerKind::Retry.bit() != 0 {
      return false;
    }
    arm(&mut self.timer_cmds, exec, id, TimerKind::Retry, now + delay_ms);
    true
  }

  /// The retry delay of `id` is over: its next attempt joins the queue (at the back of its
  /// level) once the previous attempt's slot is free. Returns what started.
  pub fn retry_due(&mut self, id: u64, now: f64) -> Vec<u64> {
    if let Some(exec) = self.execs.get_mut(id) {
      exec.timers &= !TimerKind::Retry.bit();
      if exec.status == Status::Waiting {
        if exec.has(HOLDS_SLOT) {
          exec.set(RETRY_READY, true); // requeued when the zombie attempt lets go
        } else {
          self.requeue(id);
        }
      }
    }
    self.pump(now)
  }

  fn requeue(&mut self, id: u64) {
    let Some(exec) = self.execs.get_mut(id) else {
      return;
    };
    exec.set(RETRY_READY, false);
    exec.status = Status::Queued;
    self.waiting -= 1;
    self.queue.push(id, exec.priority, exec.agent);
  }

  /// The agent of a running attempt is only now being called (its start was deferred to
  /// keep the event loop responsive): its timeout counts from now.
  pub fn restart_timeout(&mut self, id: u64, now: f64) {
    if let Some(exec) = self.execs.get_mut(id) {
      if exec.status == Status::Running && exec.timeout_ms > 0 {
        exec.started_at = now; // the attempt really starts now; its deadline moves with it
        let at = now + f64::from(exec.timeout_ms);
        arm(&mut self.timer_cmds, exec, id, TimerKind::Timeout, at);
      }
    }
  }

  /// The timeout of `id` fired. When it fails a running attempt, the execution fails or,
  /// when its retry policy allows, waits for its next attempt. Either way the timed-out
  /// agent keeps the slot until it settles or the grace period ends.
  pub fn timeout(&mut self, id: u64, now: f64) -> TimedOut {
    self.timeout_as(id, true, now)
  }

  /// Whether a timeout firing for `id` now would fail its running attempt (not a stale one).
  pub fn timeout_due(&self, id: u64, now: f64) -> bool {
    self.execs.get(id).is_some_and(|exec| {
      exec.status == Status::Running
        && exec.timeout_ms > 0
        && now + 1.0 >= exec.started_at + f64::from(exec.timeout_ms)
    })
  }

  /// As `timeout`; with `retry` false the timed-out execution fails whatever its policy allows.
  pub fn timeout_as(&mut self, id: u64, retry: bool, now: f64) -> TimedOut {
    match self.execs.get_mut(id) {
      // A firing earlier than this attempt's deadline is a stale one (an earlier attempt's,
      // or from before a restart): ignore it.
      Some(exec)
        if exec.status == Status::Running
          && exec.timeout_ms > 0
          && now + 1.0 >= exec.started_at + f64::from(exec.timeout_ms) =>
      {
        exec.timers &= !TimerKind::Timeout.bit();
        let delay = self.fail_attempt(id, retry, now);
        self.begin_grace(id, now);
        delay.map_or(TimedOut::Failed, TimedOut::Retry)
      }
      _ => TimedOut::Stale,
    }
  }

  /// Cancels `id` if it has not finished. Returns the status it had before (`None`: not
  /// found or no longer retained); a terminal one means nothing changed.
  pub fn cancel(&mut self, id: u64, now: f64) -> Option<Status> {
    let exec = self.execs.get(id).filter(|e| self.visible(e, now))?;
    let before = exec.status;
    match before {
      Status::Queued => {
        self.queue.forget(exec.priority, exec.agent);
        self.finish(id, Status::Cancelled, now);
      }
      Status::Waiting => self.finish(id, Status::Cancelled, now),
      Status::Running => {
        self.finish(id, Status::Cancelled, now);
        self.begin_grace(id, now);
      }
      Status::Completed | Status::Failed | Status::Cancelled => {}
    }
    Some(before)
  }

  fn begin_grace(&mut self, id: u64, now: f64) {
    let grace = self
      .min_grace
      .get(&id)
      .map_or(self.cfg.cancel_grace_ms, |&g| g.max(self.cfg.cancel_grace_ms));
    if grace <= 0.0 {
      self.release_slot(id, now);
    } else if let Some(exec) = self.execs.get_mut(id) {
      arm(&mut self.timer_cmds, exec, id, TimerKind::Grace, now + grace);
    }
  }

  /// The running attempt of `id` needs at least `ms` to stop once signalled (see
  /// `min_grace`). False (and nothing kept) unless `id` is running.
  pub fn set_min_grace(&mut self, id: u64, ms: f64) -> bool {
    match self.execs.get(id) {
      Some(exec) if exec.status == Status::Running && ms.is_finite() && ms > 0.0 => {
        self.min_grace.insert(id, ms.min(MAX_GRACE_MS));
        true
      }
      _ => false,
    }
  }

  /// The grace period of a zombie ended: free its slot. Returns what started in it.
  pub fn grace_expired(&mut self, id: u64, now: f64) -> Vec<u64> {
    match self.execs.get_mut(id) {
      // Only while its grace period is armed: a firing that was already on its way when
      // the zombie settled must not free the slot of whatever runs now (its next attempt).
      Some(exec) if exec.timers & TimerKind::Grace.bit() != 0 => {
        exec.timers &= !TimerKind::Grace.bit();
        self.release_slot(id, now);
        self.pump(now)
      }
      _ => Vec::new(),
    }
  }

  pub(super) fn release_slot(&mut self, id: u64, now: f64) {
    let Some(exec) = self.execs.get_mut(id) else {
      return;
    };
    if !exec.has(HOLDS_SLOT) {
      return;
    }
    let agent = exec.agent;
    exec.set(HOLDS_SLOT, false);
    self.slots_used -= 1;
    if !self.min_grace.is_empty() {
      self.min_grace.remove(&id);
    }
    disarm(&mut self.timer_cmds, exec, id, TimerKind::Grace);
    if exec.has(EVICTED) {
      self.execs.remove(id);
    } else if exec.status == Status::Waiting && exec.has(RETRY_READY) {
      self.requeue(id);
    }
    if let Some(a) = self.limits.get_mut(agent) {
      a.running = a.running.saturating_sub(1);
      self.update_block(agent, now);
    }
  }

  /// A finished execution whose end the store overruled with a cancel (asked elsewhere while
  /// it ran, not heard here in time): it counts as cancelled from now on. False when `id` is
  /// not a completed or failed execution still retained.
  pub fn overrule_cancelled(&mut self, id: u64) -> bool {
    let Some(exec) = self.execs.get_mut(id) else {
      return false;
    };
    let from = match exec.status {
      Status::Completed => &mut self.totals.completed,
      Status::Failed => &mut self.totals.failed,
      _ => return false,
    };
    *from = from.saturating_sub(1);
    self.totals.cancelled += 1;
    exec.status = Status::Cancelled;
    true
  }

  pub(super) fn finish(&mut self, id: u64, status: Status, now: f64) {
    let Some(exec) = self.execs.get_mut(id) else {
      return;
    };
    match exec.status {
      Status::Running => self.running -= 1,
      Status::Waiting => self.waiting -= 1,
      _ => {}
    }
    disarm(&mut self.timer_cmds, exec, id, TimerKind::Retry);
    if exec.has(OWN_RETRY_POLICY) {
      // Every record leaves retention finished: this is the one place the policy can go.
      exec.set(OWN_RETRY_POLICY, false);
      self.retry_policies.remove(&id);
    }
    self
      .stats
      .finished(exec.agent, exec.started_at().map(|s| now - s), now);
    tracing::debug!(id, status = status.as_str(), "finished");
    exec.status = status;
    exec.finished_at = now;
    exec.finish_seq = self.finish_count;
    self.finish_count = self.finish_count.wrapping_add(1);
    if status == Status::Completed {
      exec.progress = 100.0;
    }
    disarm(&mut self.timer_cmds, exec, id, TimerKind::Timeout);
    disarm(&mut self.timer_cmds, exec, id, TimerKind::Progress);
    match status {
      Status::Completed => self.totals.completed += 1,
      Status::Failed => self.totals.failed += 1,
      Status::Cancelled => self.totals.cancelled += 1,
      Status::Queued | Status::Running | Status::Waiting => {}
    }
    self.retained.push_back((id, now));
    if self.sweep_at.is_none() {
      if let Some(&(_, oldest)) = self.retained.front() {
        let at = oldest + self.cfg.result_ttl_ms + SWEEP_SLACK_MS;
        self.sweep_at = Some(at);
        self.timer_cmds.push(TimerCmd::Arm {
          id: 0,
          kind: TimerKind::Sweep,
          at_ms: at,
        });
      }
    }
  }
}

//! Retention of finished executions: which ones queries still see, and dropping the rest
//! by count and TTL (at each batch, and on the sweep timer).

use super::types::{EVICTED, HOLDS_SLOT};
use super::{Exec, Scheduler, TimerCmd, TimerKind, SWEEP_SLACK_MS};

impl Scheduler {
  /// Finished executions queryable at `now` (physical eviction may lag until the next
  /// batch or sweep; this count does not).
  pub fn retained(&self, now: f64) -> usize {
    let ttl = self.cfg.result_ttl_ms;
    // Finish times are in order: the expired ones are a prefix.
    let expired = self
      .retained
      .partition_point(|&(_, finished)| finished + ttl <= now);
    (self.retained.len() - expired).min(self.cfg.max_retained)
  }

  /// Whether retention still keeps `exec` for queries: exact at every moment, although the
  /// record itself is only freed at the start of the next batch (see `evict`).
  pub(super) fn visible(&self, exec: &Exec, now: f64) -> bool {
    if exec.has(EVICTED) {
      return false;
    }
    match exec.finished_at() {
      None => true,
      Some(finished) => {
        // How many executions finished after this one.
        let newer = self.finish_count.wrapping_sub(exec.finish_seq).wrapping_sub(1) as usize;
        finished + self.cfg.result_ttl_ms > now && newer < self.cfg.max_retained
      }
    }
  }

  /// Drops finished executions beyond `max_retained` and those older than the TTL.
  ///
  /// Not called by `finish`: the caller runs it at the start of each batch of operations,
  /// so an execution that just finished can still be read (`view(.., false)`) while its
  /// outcome is delivered, even with `max_retained == 0` or a TTL of 0.
  pub fn evict(&mut self, now: f64) {
    let ttl = self.cfg.result_ttl_ms;
    while let Some(&(id, finished)) = self.retained.front() {
      if self.retained.len() <= self.cfg.max_retained && finished + ttl > now {
        break;
      }
      self.retained.pop_front();
      self.evicted.push(id);
      match self.execs.get_mut(id) {
        Some(exec) if exec.has(HOLDS_SLOT) => exec.set(EVICTED, true),
        Some(_) => {
          self.execs.remove(id);
        }
        None => {}
      }
    }
  }

  /// The retention sweep timer fired.
  pub fn sweep(&mut self, now: f64) {
    self.sweep_at = None;
    self.evict(now);
    if let Some(&(_, oldest)) = self.retained.front() {
      let at = (oldest + self.cfg.result_ttl_ms).max(now) + SWEEP_SLACK_MS;
      self.sweep_at = Some(at);
      self.timer_cmds.push(TimerCmd::Arm {
        id: 0,
        kind: TimerKind::Sweep,
        at_ms: at,
      });
    }
  }
}

//! Queries: counters, what one execution or agent looks like, and the queue and running
//! orders.

use super::rate::RateLimit;
use super::types::{EVICTED, HOLDS_SLOT};
use super::{is_queued, AgentView, Counts, ExecView, Scheduler, Status};

impl Scheduler {
  pub fn counts(&self, now: f64) -> Counts {
    Counts {
      queued: self.queued(),
      running: self.running,
      slots_used: self.slots_used,
      max_concurrent: self.cfg.max_concurrent,
      paused: self.paused,
      throttled: self.throttled,
      closed: self.closed,
      totals: self.totals,
      retained: self.retained(now),
      records: self.records(),
    }
  }

  /// Whether `id` holds a concurrency slot: running, or ended while its agent has not
  /// settled and its grace period has not ended.
  pub fn holds_slot(&self, id: u64) -> bool {
    self.execs.get(id).is_some_and(|e| e.has(HOLDS_SLOT))
  }

  /// What a query sees of `id`. With `respect_ttl`, an execution finished longer than the
  /// TTL ago is gone even before a sweep frees it; without, anything still held is shown.
  pub fn view(&self, id: u64, now: f64, respect_ttl: bool) -> Option<ExecView> {
    let exec = self.execs.get(id)?;
    if exec.has(EVICTED) || (respect_ttl && !self.visible(exec, now)) {
      return None;
    }
    let end = exec.finished_at().unwrap_or(now);
    Some(ExecView {
      status: exec.status,
      mode: exec.mode,
      priority: exec.priority,
      progress: f64::from(exec.progress),
      submitted_at: exec.submitted_at,
      started_at: exec.started_at(),
      finished_at: exec.finished_at(),
      // Whole microseconds: enough for anyone, and no float noise in logs.
      duration: ((end - exec.submitted_at).max(0.0) * 1000.0).round() / 1000.0,
      queue_position: if exec.status == Status::Queued {
        self.queue_position(id)
      } else {
        None
      },
    })
  }

  /// 1-based position in start order of a queued execution.
  pub fn queue_position(&self, id: u64) -> Option<usize> {
    let exec = self.execs.get(id)?;
    if exec.status != Status::Queued {
      return None;
    }
    let execs = &self.execs;
    self.queue.position(id, exec.priority, |i| is_queued(execs, i))
  }

  /// Queued ids in the order they will start (without aging).
  pub fn queue_order(&self) -> Vec<u64> {
    let execs = &self.execs;
    self.queue.ordered(|i| is_queued(execs, i))
  }

  /// Running ids in start order.
  pub fn running_ids(&self) -> Vec<u64> {
    let mut ids: Vec<u64> = self
      .execs
      .iter()
      .filter(|(_, e)| e.status == Status::Running)
      .map(|(id, _)| id)
      .collect();
    ids.sort_by(|a, b| self.started_at(*a).total_cmp(&self.started_at(*b)).then(a.cmp(b)));
    ids
  }

  fn started_at(&self, id: u64) -> f64 {
    self
      .execs
      .get(id)
      .and_then(|e| e.started_at())
      .unwrap_or(f64::INFINITY)
  }

  /// The agents with limits, by key.
  pub fn agent_views(&self, now: f64) -> Vec<AgentView> {
    self
      .limits
      .keys()
      .filter_map(|agent| {
        let a = self.limits.get(agent)?;
        let free_at = a.rate.as_ref().map_or(f64::NEG_INFINITY, |w| w.free_at(now));
        Some(AgentView {
          agent,
          running: a.running,
          queued: self.queue.queued_of(agent),
          concurrency: (a.concurrency != u32::MAX).then_some(a.concurrency),
          rate: a.rate.as_ref().and_then(|w| w.limit()),
          next_start_at: (free_at > now).then_some(free_at),
        })
      })
      .collect()
  }

  /// The global rate limit, and when its window lets the next start through while it is full.
  pub fn global_rate(&self, now: f64) -> Option<(RateLimit, Option<f64>)> {
    let w = self.limits.global.as_ref()?;
    let free_at = w.free_at(now);
    Some((w.limit()?, (free_at > now).then_some(free_at)))
  }

  /// Starts that waited for a rate limit, and for their agent's concurrency limit.
  pub fn limited_starts(&self) -> (u64, u64) {
    (self.limits.rate_limited, self.limits.limit_deferred)
  }

  /// Entries and lanes the queue has looked at (its cost, for tests).
  pub fn queue_steps(&self) -> u64 {
    self.queue.steps()
  }
}

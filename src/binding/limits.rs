//! `NativeExecutor`'s per-agent and global limits: setting them, their timers, and what
//! `getQueueStatus` shows of them.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::executor::{ids, NativeExecutor};
use crate::scheduler::rate::RateLimit;
use crate::scheduler::AgentView;

#[napi(object)]
pub struct NativeRate {
  pub max: u32,
  pub interval_ms: f64,
  /// When the window lets the next start through (ms since the Unix epoch), while it is full.
  pub next_start_at: Option<f64>,
}

#[napi(object)]
pub struct NativeAgentLimits {
  pub key: u32,
  pub running: u32,
  pub queued: f64,
  pub concurrency: Option<u32>,
  pub rate: Option<NativeRate>,
}

impl NativeAgentLimits {
  fn new(v: AgentView, wall_epoch_ms: f64) -> Self {
    NativeAgentLimits {
      key: u32::from(v.agent),
      running: v.running,
      queued: v.queued as f64,
      concurrency: v.concurrency,
      rate: v.rate.map(|r| NativeRate {
        max: r.max,
        interval_ms: r.interval_ms,
        next_start_at: v.next_start_at.map(|t| t + wall_epoch_ms),
      }),
    }
  }
}

#[napi]
impl NativeExecutor {
  /// Sets the limits of agent `key`: `concurrency` 0 and `rate_max` 0 mean none. Returns
  /// what started, or `None` for key 0 (agents beyond `MAX_AGENT_KEYS` take no limits).
  #[napi(catch_unwind)]
  pub fn set_agent_limits(
    &mut self,
    env: Env,
    key: u32,
    concurrency: u32,
    rate_max: u32,
    rate_interval_ms: f64,
  ) -> Option<Vec<f64>> {
    let agent = u16::try_from(key).ok()?;
    let limit = (concurrency > 0).then_some(concurrency);
    let r = RateLimit::new(rate_max, rate_interval_ms);
    let started = self.change(&env, |s, now| s.set_agent_limits(agent, limit, r, now))?;
    tracing::debug!(
      key,
      concurrency,
      rate_max,
      started = started.len(),
      "agent limits set"
    );
    Some(ids(started))
  }

  /// Sets the global rate limit (`max` 0: none). Returns what started.
  #[napi(catch_unwind)]
  pub fn set_rate_limit(&mut self, env: Env, max: u32, interval_ms: f64) -> Vec<f64> {
    let r = RateLimit::new(max, interval_ms);
    ids(self.change(&env, |s, now| s.set_rate_limit(r, now)))
  }

  /// The rate timer of agent `key` (0: the global one) fired. Returns what started.
  #[napi(catch_unwind)]
  pub fn rate_due(&mut self, env: Env, key: f64) -> Vec<f64> {
    let agent = if (0.0..=f64::from(u16::MAX)).contains(&key) {
      key as u16
    } else {
      return Vec::new();
    };
    ids(self.change(&env, |s, now| s.rate_due(agent, now)))
  }

  /// Every agent with limits, and the global rate limit.
  #[napi(catch_unwind)]
  pub fn agent_limits(&self) -> Vec<NativeAgentLimits> {
    let now = self.now();
    let wall = self.wall_epoch_ms;
    self
      .sched
      .agent_views(now)
      .into_iter()
      .map(|v| NativeAgentLimits::new(v, wall))
      .collect()
  }

  /// The global rate limit, if any.
  #[napi(catch_unwind)]
  pub fn global_rate(&self) -> Option<NativeRate> {
    let (limit, next) = self.sched.global_rate(self.now())?;
    Some(NativeRate {
      max: limit.max,
      interval_ms: limit.interval_ms,
      next_start_at: next.map(|t| t + self.wall_epoch_ms),
    })
  }
}

//! Per-agent limits: a concurrency limit and a rate limit per agent key, the global rate
//! limit, and the counters of starts they held back.
//!
//! This module only keeps the state and answers "may it start, and if not until when"; the
//! scheduler applies the answers to the queue's lanes and arms the timers.

use super::rate::{RateLimit, RateWindow};

/// Why an agent's lane is blocked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Block {
  None,
  /// At its concurrency limit.
  Limit,
  /// Its rate window is full, until the given time.
  Rate(f64),
}

#[derive(Debug)]
pub struct AgentLimit {
  /// `u32::MAX`: none.
  pub concurrency: u32,
  pub rate: Option<RateWindow>,
  /// Executions of this agent holding a slot (running, or zombies).
  pub running: u32,
  pub block: Block,
  /// The queue's sequence number when a concurrency block last ended: entries pushed
  /// before it waited for that limit.
  pub limit_released_seq: u64,
}

impl AgentLimit {
  /// What holds the agent back at `now`.
  pub fn block_at(&self, now: f64) -> Block {
    if self.running >= self.concurrency {
      return Block::Limit;
    }
    match &self.rate {
      Some(w) if !w.allows(now) => Block::Rate(w.free_at(now)),
      _ => Block::None,
    }
  }
}

#[derive(Debug, Default)]
pub struct Limits {
  /// Indexed by agent key; `Some` once the agent was given limits (key 0, "other", never).
  agents: Vec<Option<AgentLimit>>,
  pub global: Option<RateWindow>,
  /// When the global rate timer is armed for.
  pub global_timer_at: Option<f64>,
  /// Starts a rate limit's timer released (they waited for a window with a slot free), and
  /// starts of executions queued while their agent was at its concurrency limit.
  pub rate_limited: u64,
  pub limit_deferred: u64,
}

impl Limits {
  pub fn get(&self, agent: u16) -> Option<&AgentLimit> {
    self.agents.get(usize::from(agent)).and_then(Option::as_ref)
  }

  pub fn get_mut(&mut self, agent: u16) -> Option<&mut AgentLimit> {
    self.agents.get_mut(usize::from(agent)).and_then(Option::as_mut)
  }

  /// The limits of `agent`, created with no limit and `running` slot holders.
  pub fn entry(&mut self, agent: u16, running: impl FnOnce() -> u32) -> &mut AgentLimit {
    let i = usize::from(agent);
    if self.agents.len() <= i {
      self.agents.resize_with(i + 1, || None);
    }
    self.agents[i].get_or_insert_with(|| AgentLimit {
      concurrency: u32::MAX,
      rate: None,
      running: running(),
      block: Block::None,
      limit_released_seq: 0,
    })
  }

  /// Agent keys with limits, ascending.
  pub fn keys(&self) -> impl Iterator<Item = u16> + '_ {
    self
      .agents
      .iter()
      .enumerate()
      .filter(|(_, a)| a.is_some())
      .map(|(i, _)| i as u16)
  }

  pub fn global_allows(&self, now: f64) -> bool {
    self.global.as_ref().is_none_or(|w| w.allows(now))
  }

  /// Sets or removes the global rate limit; the starts recorded so far still count.
  pub fn set_global(&mut self, limit: Option<RateLimit>) {
    RateWindow::set(&mut self.global, limit);
  }
}

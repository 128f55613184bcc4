//! The scheduler: the state machine of every execution, the concurrency slots, retries,
//! throttling, retention of finished executions, and the timer requests the runtime has to
//! carry out.
//!
//! Pure logic: no napi, no tokio, no clock. Every method that depends on time takes `now`
//! (milliseconds on a monotonic timeline chosen by the caller), so tests drive it with a
//! fake clock. Timer requests are written to an outbox (`take_timer_cmds`) that the binding
//! layer forwards to the timer service; a fired timer comes back as a method call here.
//!
//! Lifecycle of one execution:
//!
//! ```text
//!   submit ──> Queued ──(slot free)──> Running ──settle ok─────────────> Completed
//!               │  ▲                   ├──settle err / timeout─────────> Failed     (no retry left)
//!               │  │                   ├──settle err / timeout─────────> Waiting    (a retry left)
//!               │  └──────────────────(delay over)───────────────────────┘
//!               └──cancel──> Cancelled └──cancel───────────────────────> Cancelled
//! ```
//!
//! A waiting execution is cancelled like a queued one. A timeout or a cancel of a running
//! attempt leaves its slot held (a zombie, below).
//!
//! A zombie is an attempt that ended (cancel, timeout) while its agent has not settled
//! yet. It keeps its concurrency slot until the agent settles or `cancel_grace_ms` passes,
//! whichever comes first, so an agent that ignores its abort signal cannot hold a slot for
//! ever, and one that honours it cannot overlap with the next start. A timed-out attempt
//! that is retried keeps its slot the same way; its next attempt waits for it.

pub mod limits;
pub mod queue;
pub mod rate;
pub mod retry;
pub mod stats;
pub mod throttle;
pub mod window;

mod control;
mod dispatch;
mod outcome;
mod progress;
mod retention;
mod types;
mod views;

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use limits::Limits;
use queue::PriorityQueue;
use retry::{Jitter, RetryPolicy};
use stats::Stats;
use window::{IdHasher, IdWindow};

pub use types::{
  AgentView, Config, Counts, Exec, ExecView, Settled, Status, TimedOut, TimerCmd, TimerKind, Totals,
};

/// Longest grace a running agent may ask for (`set_min_grace`): a day.
const MAX_GRACE_MS: f64 = 86_400_000.0;

/// Slack added to retention sweeps so that a steady stream of finishes does not wake the
/// timer for every single expiry. Queries check expiry exactly; sweeps only free memory.
const SWEEP_SLACK_MS: f64 = 250.0;

#[derive(Debug)]
pub struct Scheduler {
  cfg: Config,
  execs: IdWindow<Exec>,
  queue: PriorityQueue,
  /// Executions in `Running` status (a count: queries that list them scan the records).
  running: usize,
  /// Executions waiting for a retry (`Waiting`).
  waiting: usize,
  next_id: u64,
  slots_used: u32,
  paused: bool,
  throttled: bool,
  closed: bool,
  /// Finished executions in finish order, with their finish time.
  retained: VecDeque<(u64, f64)>,
  /// Ids dropped from retention, for the JS side to drop its values.
  evicted: Vec<u64>,
  sweep_at: Option<f64>,
  /// Executions finished so far (wrapping), for `Exec::finish_seq`.
  finish_count: u32,
  totals: Totals,
  stats: Stats,
  timer_cmds: Vec<TimerCmd>,
  /// Running executions whose agent takes longer than `cancel_grace_ms` to stop once
  /// signalled (a command: its `killGraceMs`, then its pipes): their grace period is at
  /// least this many ms, so the slot is not handed on while the process still lives.
  min_grace: HashMap<u64, f64, BuildHasherDefault<IdHasher>>,
  /// Executions with their own retry policy (flagged `OWN_RETRY_POLICY`), until they finish.
  retry_policies: HashMap<u64, RetryPolicy, BuildHasherDefault<IdHasher>>,
  jitter: Jitter,
  limits: Limits,
}

impl Scheduler {
  pub fn new(cfg: Config) -> Self {
    let queue = PriorityQueue::with_levels(&cfg.levels);
    let mut limits = Limits::default();
    limits.set_global(cfg.rate_limit);
    Scheduler {
      cfg,
      execs: IdWindow::default(),
      queue,
      running: 0,
      waiting: 0,
      next_id: 1,
      slots_used: 0,
      paused: false,
      throttled: false,
      closed: false,
      retained: VecDeque::new(),
      evicted: Vec::new(),
      sweep_at: None,
      finish_count: 0,
      totals: Totals::default(),
      stats: Stats::default(),
      timer_cmds: Vec::new(),
      min_grace: HashMap::default(),
      retry_policies: HashMap::default(),
      jitter: Jitter::seeded(),
      limits,
    }
  }

  // ----- counts and flags -------------------------------------------------------------

  pub fn queued(&self) -> usize {
    self.queue.len()
  }
  pub fn running(&self) -> usize {
    self.running
  }
  pub fn slots_used(&self) -> u32 {
    self.slots_used
  }
  pub fn max_concurrent(&self) -> u32 {
    self.cfg.max_concurrent
  }
  pub fn is_paused(&self) -> bool {
    self.paused
  }
  pub fn is_throttled(&self) -> bool {
    self.throttled
  }
  pub fn is_closed(&self) -> bool {
    self.closed
  }
  pub fn totals(&self) -> Totals {
    self.totals
  }
  pub fn stats(&self) -> &Stats {
    &self.stats
  }

  /// Nothing queued and nothing running (zombies do not count: they have ended).
  pub fn is_idle(&self) -> bool {
    self.queue.is_empty() && self.running == 0 && self.waiting == 0
  }
  /// Idle, and no slot still held by a zombie (its agent not settled, its grace period not
  /// over): what a shutdown waits for, so that no agent runs once it has resolved.
  pub fn is_quiet(&self) -> bool {
    self.is_idle() && self.slots_used == 0
  }
  /// Whether pending work keeps the host process alive: anything not idle, and once closed
  /// the zombies a shutdown waits for.
  pub fn keeps_alive(&self) -> bool {
    !self.is_idle() || (self.closed && self.slots_used > 0)
  }
  /// Records kept in memory in all (queued, running, zombies, retained).
  pub fn records(&self) -> usize {
    self.execs.len()
  }

  fn can_start(&self) -> bool {
    !self.paused
      && self.slots_used < self.cfg.max_concurrent
      && (!self.throttled || self.slots_used < self.cfg.min_concurrent)
  }

  pub fn take_timer_cmds(&mut self) -> Option<Vec<TimerCmd>> {
    if self.timer_cmds.is_empty() {
      None
    } else {
      Some(std::mem::take(&mut self.timer_cmds))
    }
  }

  pub fn take_evicted(&mut self) -> Vec<u64> {
    std::mem::take(&mut self.evicted)
  }

  /// Moves up to `out.len()` evicted ids into `out`; returns how many.
  pub fn drain_evicted_into(&mut self, out: &mut [f64]) -> usize {
    let n = self.evicted.len().min(out.len());
    for (slot, id) in out.iter_mut().zip(self.evicted.drain(..n)) {
      *slot = id as f64;
    }
    n
  }
}

fn is_queued(execs: &IdWindow<Exec>, id: u64) -> bool {
  execs.get(id).is_some_and(|e| e.status == Status::Queued)
}

fn arm(cmds: &mut Vec<TimerCmd>, exec: &mut Exec, id: u64, kind: TimerKind, at_ms: f64) {
  exec.timers |= kind.bit();
  cmds.push(TimerCmd::Arm { id, kind, at_ms });
}

fn disarm(cmds: &mut Vec<TimerCmd>, exec: &mut Exec, id: u64, kind: TimerKind) {
  if exec.timers & kind.bit() != 0 {
    exec.timers &= !kind.bit();
    cmds.push(TimerCmd::Disarm { id, kind });
  }
}

#[cfg(test)]
mod limits_tests;

#[cfg(test)]
mod held_tests;

#[cfg(test)]
mod max_queued_tests;

#[cfg(test)]
mod tests;

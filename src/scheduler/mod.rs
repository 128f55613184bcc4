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

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crate::protocol;
use limits::{Block, Limits};
use queue::PriorityQueue;
use rate::RateLimit;
use retry::{Jitter, RetryPolicy};
use stats::Stats;
use window::{IdHasher, IdWindow};

/// Longest grace a running agent may ask for (`set_min_grace`): a day.
const MAX_GRACE_MS: f64 = 86_400_000.0;

/// Slack added to retention sweeps so that a steady stream of finishes does not wake the
/// timer for every single expiry. Queries check expiry exactly; sweeps only free memory.
const SWEEP_SLACK_MS: f64 = 250.0;

/// An execution's status; the discriminants are the protocol's `STATUS_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
  Queued = protocol::STATUS_QUEUED as u8,
  Running = protocol::STATUS_RUNNING as u8,
  Completed = protocol::STATUS_COMPLETED as u8,
  Failed = protocol::STATUS_FAILED as u8,
  Cancelled = protocol::STATUS_CANCELLED as u8,
  /// Between a failed attempt and its retry (not in the queue yet). Shown as "queued".
  Waiting = protocol::STATUS_WAITING as u8,
}

impl Status {
  /// The name users see (`protocol::STATUS_NAMES`).
  pub fn as_str(self) -> &'static str {
    protocol::STATUS_NAMES[self as usize]
  }

  /// The protocol code.
  pub fn code(self) -> i32 {
    i32::from(self as u8)
  }

  pub fn is_terminal(self) -> bool {
    matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
  }
}

/// A timer's kind; the discriminants are the protocol's `TIMER_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TimerKind {
  /// An execution's timeout.
  Timeout = protocol::TIMER_TIMEOUT as u8,
  /// A watched execution's periodic progress update.
  Progress = protocol::TIMER_PROGRESS as u8,
  /// End of the grace period of a cancelled or timed-out execution's slot.
  Grace = protocol::TIMER_GRACE as u8,
  /// Retention sweep (id 0).
  Sweep = protocol::TIMER_SWEEP as u8,
  /// Shutdown deadline (id 0).
  Shutdown = protocol::TIMER_SHUTDOWN as u8,
  /// End of the delay before an execution's next attempt.
  Retry = protocol::TIMER_RETRY as u8,
  /// A rate limit lets the next start through (id: agent key, 0 for the global limit).
  Rate = protocol::TIMER_RATE as u8,
}

impl TimerKind {
  pub const ALL: [TimerKind; 7] = [
    TimerKind::Timeout,
    TimerKind::Progress,
    TimerKind::Grace,
    TimerKind::Sweep,
    TimerKind::Shutdown,
    TimerKind::Retry,
    TimerKind::Rate,
  ];

  pub fn from_u8(v: u8) -> Option<TimerKind> {
    TimerKind::ALL.into_iter().find(|k| *k as u8 == v)
  }

  fn bit(self) -> u8 {
    1 << (self as u8)
  }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimerCmd {
  Arm { id: u64, kind: TimerKind, at_ms: f64 },
  Disarm { id: u64, kind: TimerKind },
}

#[derive(Clone, Debug)]
pub struct Config {
  pub max_concurrent: u32,
  pub min_concurrent: u32,
  /// How long a finished execution stays queryable.
  pub result_ttl_ms: f64,
  pub max_retained: usize,
  pub progress_interval_ms: f64,
  pub cancel_grace_ms: f64,
  /// A queued execution gains one priority level per `aging_ms` waited; 0 = off.
  pub aging_ms: f64,
  /// The configured priority values (any order).
  pub levels: Vec<i32>,
  /// Retries of failed attempts, unless an execution has its own (`set_retry_policy`).
  pub retry: RetryPolicy,
  /// Most executions waiting in the queue: a submission that would wait beyond it is refused.
  pub max_queued: usize,
  /// At most `max` starts in any window of `interval_ms`, all agents together (at the
  /// start; `set_rate_limit` changes the scheduler's window, not this).
  pub rate_limit: Option<RateLimit>,
}

impl Default for Config {
  fn default() -> Self {
    Config {
      max_concurrent: 5,
      min_concurrent: 1,
      result_ttl_ms: 60_000.0,
      max_retained: 10_000,
      progress_interval_ms: 1_000.0,
      cancel_grace_ms: 5_000.0,
      aging_ms: 0.0,
      levels: vec![5, 4, 3, 2, 1],
      retry: RetryPolicy::default(),
      max_queued: usize::MAX,
      rate_limit: None,
    }
  }
}

#[derive(Debug)]
pub struct Exec {
  pub status: Status,
  pub mode: u8,
  /// `WATCHED`, `HOLDS_SLOT`, `EVICTED`, `RETRY_READY`, `OWN_RETRY_POLICY` bits.
  flags: u8,
  /// The caller's key for the agent (statistics).
  pub agent: u16,
  /// The current (or last) attempt, from 1; 0 before the first start.
  pub attempt: u16,
  pub priority: i32,
  /// 0–100 (f32 is plenty and keeps the record small: 48 bytes).
  pub progress: f32,
  /// Milliseconds; 0 = none.
  pub timeout_ms: u32,
  pub submitted_at: f64,
  /// NaN until started.
  started_at: f64,
  /// NaN until finished.
  finished_at: f64,
  /// Order of finishing (wrapping), to know at once whether retention still keeps it.
  finish_seq: u32,
  /// Bit set of armed `TimerKind`s.
  timers: u8,
}

/// A watched execution (periodic progress updates).
const WATCHED: u8 = 1;
/// Holds a concurrency slot (running, or a zombie whose agent has not settled).
const HOLDS_SLOT: u8 = 2;
/// Dropped from retention while still holding its slot: invisible to queries.
const EVICTED: u8 = 4;
/// Waiting for a retry whose delay is over, until its zombie attempt frees the slot.
const RETRY_READY: u8 = 8;
/// Has its own retry policy in `Scheduler::retry_policies`.
const OWN_RETRY_POLICY: u8 = 16;

impl Exec {
  fn has(&self, flag: u8) -> bool {
    self.flags & flag != 0
  }
  fn set(&mut self, flag: u8, on: bool) {
    if on {
      self.flags |= flag;
    } else {
      self.flags &= !flag;
    }
  }
  pub fn watched(&self) -> bool {
    self.has(WATCHED)
  }
  pub fn started_at(&self) -> Option<f64> {
    Some(self.started_at).filter(|t| !t.is_nan())
  }
  pub fn finished_at(&self) -> Option<f64> {
    Some(self.finished_at).filter(|t| !t.is_nan())
  }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
  pub submitted: u64,
  pub completed: u64,
  pub failed: u64,
  pub cancelled: u64,
}

/// What `settle` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settled {
  /// The settle ended the attempt (false: a late result to discard).
  pub ended: bool,
  /// The execution started in the freed slot.
  pub next: Option<u64>,
  /// The attempt failed and the execution now waits this many ms for its next one.
  pub retry_delay_ms: Option<f64>,
}

/// What a timeout firing did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimedOut {
  /// Nothing: no attempt of this execution was due (an earlier attempt's firing, or one
  /// from before a restart, or the execution is not running).
  Stale,
  /// The running attempt failed, and with it the execution.
  Failed,
  /// The running attempt failed; the execution waits this many ms for its next one.
  Retry(f64),
}

/// Counters and flags of the whole scheduler, for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
  pub queued: usize,
  pub running: usize,
  pub slots_used: u32,
  pub max_concurrent: u32,
  pub paused: bool,
  pub throttled: bool,
  pub closed: bool,
  pub totals: Totals,
  /// Finished executions still queryable.
  pub retained: usize,
  /// Records held in memory in all.
  pub records: usize,
}

/// What a query sees of one execution.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecView {
  pub status: Status,
  pub mode: u8,
  pub priority: i32,
  pub progress: f64,
  pub submitted_at: f64,
  pub started_at: Option<f64>,
  pub finished_at: Option<f64>,
  /// From submission to the end, or to `now` while not finished.
  pub duration: f64,
  pub queue_position: Option<usize>,
}

/// What a query sees of one agent with limits.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView {
  pub agent: u16,
  /// Executions holding one of its slots (running, or stopping after a cancel or timeout).
  pub running: u32,
  pub queued: usize,
  pub concurrency: Option<u32>,
  pub rate: Option<RateLimit>,
  /// When its rate window lets the next start through, while it is full.
  pub next_start_at: Option<f64>,
}

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
  fn visible(&self, exec: &Exec, now: f64) -> bool {
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
  /// Nothing queued and nothing running (zombies do not count: they have ended).
  pub fn is_idle(&self) -> bool {
    self.queue.is_empty() && self.running == 0 && self.waiting == 0
  }
  /// Records kept in memory in all (queued, running, zombies, retained).
  pub fn records(&self) -> usize {
    self.execs.len()
  }

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

  // ----- submission and start -----------------------------------------------------------

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

  /// 1-based position in start order of a queued execution.
  pub fn queue_position(&self, id: u64) -> Option<usize> {
    let exec = self.execs.get(id)?;
    if exec.status != Status::Queued {
      return None;
    }
    let execs = &self.execs;
    self.queue.position(id, exec.priority, |i| is_queued(execs, i))
  }

  fn can_start(&self) -> bool {
    !self.paused
      && self.slots_used < self.cfg.max_concurrent
      && (!self.throttled || self.slots_used < self.cfg.min_concurrent)
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
  fn update_block(&mut self, agent: u16, now: f64) {
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
  fn start_next(&mut self, now: f64) -> Option<u64> {
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

  // ----- ending -----------------------------------------------------------------------------

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

  fn release_slot(&mut self, id: u64, now: f64) {
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

  fn finish(&mut self, id: u64, status: Status, now: f64) {
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

  // ----- progress -----------------------------------------------------------------------

  /// Records progress reported by a running agent (clamped to 0–100; NaN ignored).
  pub fn set_progress(&mut self, id: u64, percent: f64) -> bool {
    if percent.is_nan() {
      return false;
    }
    match self.execs.get_mut(id) {
      Some(exec) if exec.status == Status::Running => {
        exec.progress = percent.clamp(0.0, 100.0) as f32;
        true
      }
      _ => false,
    }
  }

  /// A watched execution's progress timer fired: re-arms it while the execution is active.
  pub fn progress_tick(&mut self, id: u64, now: f64) -> bool {
    match self.execs.get_mut(id) {
      Some(exec) if !exec.status.is_terminal() && exec.watched() => {
        let at = now + self.cfg.progress_interval_ms;
        arm(&mut self.timer_cmds, exec, id, TimerKind::Progress, at);
        true
      }
      _ => false,
    }
  }

  // ----- run-time control ----------------------------------------------------------------

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

  fn started_at(&self, id: u64) -> f64 {
    self
      .execs
      .get(id)
      .and_then(|e| e.started_at())
      .unwrap_or(f64::INFINITY)
  }

  // ----- queries ------------------------------------------------------------------------------

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
mod held_tests {
  use super::*;

  #[test]
  fn a_held_submission_waits_for_its_timer_then_queues_and_starts() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 1,
      ..Config::default()
    });
    assert_eq!(s.submit_as(0, 0, false, 3, 0.0, true, 0.0), Some((1, false)));
    assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Waiting));
    assert_eq!(s.queued(), 0, "not in the queue while held");
    assert_eq!(
      s.submit(0, 0, false, 3, 0.0, 0.0),
      Some((2, true)),
      "others start meanwhile"
    );
    assert!(s.start_after(1, 50.0, 0.0));
    assert!(!s.start_after(1, 50.0, 0.0), "armed once");
    assert!(s.retry_due(1, 50.0).is_empty(), "the slot is taken: it queues");
    assert_eq!(s.queued(), 1);
    let settled = s.settle(2, 1, true, 60.0);
    assert_eq!(settled.next, Some(1));
    assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Running));
  }

  #[test]
  fn a_held_submission_can_be_cancelled_while_it_waits() {
    let mut s = Scheduler::new(Config::default());
    s.submit_as(0, 0, false, 3, 0.0, true, 0.0);
    s.start_after(1, 1000.0, 0.0);
    assert_eq!(s.cancel(1, 10.0), Some(Status::Waiting));
    assert!(s.retry_due(1, 1000.0).is_empty());
    assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Cancelled));
  }
}

#[cfg(test)]
mod max_queued_tests {
  use super::*;

  #[test]
  fn a_submission_beyond_max_queued_is_refused_and_leaves_no_trace() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 1,
      max_queued: 2,
      ..Config::default()
    });
    assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((1, true)));
    assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((2, false)));
    assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((3, false)));
    assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), None, "the queue holds 2");
    assert_eq!(s.queued(), 2);
    assert_eq!(s.totals.submitted, 3, "the refused one is not counted");
    // A start makes room, and ids stay in sequence.
    s.settle(1, 1, true, 1.0);
    assert_eq!(s.submit(0, 0, false, 3, 0.0, 1.0), Some((4, false)));
  }
}

#[cfg(test)]
mod tests {
  use super::retry::Backoff;
  use super::*;

  fn sched(max: u32) -> Scheduler {
    Scheduler::new(Config {
      max_concurrent: max,
      ..Config::default()
    })
  }

  fn sched_with_grace(max: u32, cancel_grace_ms: f64) -> Scheduler {
    Scheduler::new(Config {
      max_concurrent: max,
      cancel_grace_ms,
      ..Config::default()
    })
  }

  fn sched_with_retry(max: u32, retry: RetryPolicy) -> Scheduler {
    Scheduler::new(Config {
      max_concurrent: max,
      retry,
      ..Config::default()
    })
  }

  fn fixed(retries: u32, delay_ms: f64) -> RetryPolicy {
    RetryPolicy::new(retries, delay_ms, Backoff::Fixed)
  }

  fn submit(s: &mut Scheduler, prio: i32, now: f64) -> (u64, bool) {
    s.submit(0, 0, false, prio, 0.0, now).expect("open")
  }

  /// `settle` as `(ended, next)`.
  fn settle(s: &mut Scheduler, id: u64, attempt: u16, ok: bool, now: f64) -> (bool, Option<u64>) {
    let r = s.settle(id, attempt, ok, now);
    (r.ended, r.next)
  }

  #[test]
  fn stats_record_wait_and_run_per_agent() {
    let mut s = sched(1);
    s.submit(3, 1, false, 3, 0.0, 0.0);
    s.submit(3, 2, false, 3, 0.0, 10.0);
    settle(&mut s, 1, 0, true, 40.0); // agent 1 ran 40 ms; agent 2 waited 30 ms
    settle(&mut s, 2, 0, false, 45.0);
    let by_key: Vec<_> = s
      .stats()
      .agents()
      .map(|(k, a)| (k, a.wait.count(), a.run.count()))
      .collect();
    assert_eq!(by_key, vec![(1, 1, 1), (2, 1, 1)]);
    let a2 = s
      .stats()
      .agents()
      .find(|(k, _)| *k == 2)
      .map(|(_, a)| a.wait.quantile(0.5));
    assert!(a2.is_some_and(|w| (w - 30.0).abs() < 30.0 * 0.125), "{a2:?}");
    assert_eq!(s.stats().last_minute(45.0), 2);
  }

  #[test]
  fn a_failed_attempt_waits_then_requeues_at_the_back() {
    let mut s = sched_with_retry(1, fixed(1, 100.0));
    submit(&mut s, 3, 0.0); // 1
    submit(&mut s, 3, 0.0); // 2 queued
                            // Attempt 1 of id 1 fails with a retry in 100 ms: the slot goes to id 2 at once.
    assert_eq!(
      s.settle(1, 1, false, 10.0),
      Settled {
        ended: true,
        next: Some(2),
        retry_delay_ms: Some(100.0)
      }
    );
    assert_eq!(s.view(1, 10.0, true).map(|v| v.status), Some(Status::Waiting));
    assert!(!s.is_idle());
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(cmds.contains(&TimerCmd::Arm {
      id: 1,
      kind: TimerKind::Retry,
      at_ms: 110.0
    }));
    // Nothing counted as failed yet.
    assert_eq!(s.totals().failed, 0);
    // The delay ends while id 2 runs: id 1 is queued again, and starts when 2 settles.
    assert_eq!(s.retry_due(1, 110.0), Vec::<u64>::new());
    assert_eq!(s.queue_order(), vec![1]);
    assert_eq!(settle(&mut s, 2, 1, true, 120.0), (true, Some(1)));
    // Its second attempt; a settle tagged with the old attempt is ignored.
    assert_eq!(settle(&mut s, 1, 1, true, 130.0), (false, None));
    assert_eq!(settle(&mut s, 1, 2, true, 140.0), (true, None));
    assert_eq!(
      s.totals(),
      Totals {
        submitted: 2,
        completed: 2,
        failed: 0,
        cancelled: 0
      }
    );
    assert!(s.is_idle());
  }

  #[test]
  fn retries_run_out_after_the_configured_count() {
    let mut s = sched_with_retry(1, fixed(2, 10.0));
    submit(&mut s, 3, 0.0);
    let mut now = 0.0;
    for attempt in 1..=2 {
      assert_eq!(s.settle(1, attempt, false, now).retry_delay_ms, Some(10.0));
      now += 10.0;
      assert_eq!(s.retry_due(1, now), vec![1]);
    }
    // Attempt 3 of 3 fails: the execution fails.
    let r = s.settle(1, 3, false, now);
    assert_eq!((r.ended, r.retry_delay_ms), (true, None));
    assert_eq!(s.view(1, now, true).map(|v| v.status), Some(Status::Failed));
    assert_eq!(s.totals().failed, 1);
  }

  #[test]
  fn no_retries_configured_means_a_failure_ends_the_execution() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    assert_eq!(s.settle(1, 1, false, 1.0).retry_delay_ms, None);
    assert_eq!(s.view(1, 1.0, true).map(|v| v.status), Some(Status::Failed));
  }

  #[test]
  fn a_closed_scheduler_retries_nothing() {
    let mut s = sched_with_retry(1, fixed(5, 10.0));
    submit(&mut s, 3, 0.0);
    s.close(false, 1.0);
    assert_eq!(s.settle(1, 1, false, 2.0).retry_delay_ms, None);
    assert_eq!(s.view(1, 2.0, true).map(|v| v.status), Some(Status::Failed));
  }

  #[test]
  fn exponential_retry_delays_grow_within_their_jitter_bounds() {
    let mut s = sched_with_retry(1, RetryPolicy::new(4, 100.0, Backoff::Exponential));
    s.submit(0, 0, false, 3, 50.0, 0.0); // timeout 50 ms
    let mut now = 0.0;
    for attempt in 1..=4u16 {
      let d = 100.0 * f64::from(1u32 << (attempt - 1));
      // Odd attempts fail by a settle, even ones by their timeout.
      let delay = if attempt % 2 == 1 {
        s.settle(1, attempt, false, now).retry_delay_ms
      } else {
        now += 50.0;
        match s.timeout(1, now) {
          TimedOut::Retry(ms) => Some(ms),
          other => panic!("{other:?}"),
        }
      };
      let delay = delay.unwrap_or(-1.0);
      assert!((d / 2.0..=d).contains(&delay), "attempt {attempt}: {delay}");
      now += delay;
      s.retry_due(1, now);
      if attempt % 2 == 0 {
        settle(&mut s, 1, attempt, true, now); // the timed-out agent lets go of its slot
      }
      assert_eq!(s.running_ids(), vec![1]);
    }
    now += 50.0;
    assert_eq!(s.timeout(1, now), TimedOut::Failed);
  }

  #[test]
  fn an_execution_s_own_policy_wins_and_goes_when_it_finishes() {
    let mut s = sched_with_retry(2, fixed(0, 10.0));
    submit(&mut s, 3, 0.0); // 1: its own policy
    submit(&mut s, 3, 0.0); // 2: the configured one (no retries)
    assert!(s.set_retry_policy(1, fixed(1, 500.0)));
    assert!(!s.set_retry_policy(99, fixed(1, 500.0)));
    assert_eq!(s.settle(1, 1, false, 1.0).retry_delay_ms, Some(500.0));
    assert_eq!(s.settle(2, 1, false, 1.0).retry_delay_ms, None);
    assert!(!s.set_retry_policy(2, fixed(1, 500.0)), "finished: nothing kept");
    assert_eq!(s.retry_policies.len(), 1);
    s.retry_due(1, 501.0);
    settle(&mut s, 1, 2, true, 502.0);
    assert!(s.retry_policies.is_empty(), "dropped when it finished");
    // Dropped however it finishes: cancelled while queued, then evicted.
    let (id, _) = submit(&mut s, 3, 600.0);
    assert!(s.set_retry_policy(id, fixed(3, 1.0)));
    assert_eq!(s.cancel(id, 601.0), Some(Status::Running));
    assert!(s.retry_policies.is_empty());
    s.sweep(1e9);
    assert_eq!(s.records(), 1, "only the zombie's record is left");
    assert!(s.retry_policies.is_empty());
  }

  #[test]
  fn a_timed_out_attempt_keeps_its_slot_until_it_lets_go() {
    let mut s = sched_with_retry(1, fixed(1, 10.0));
    s.submit(0, 0, false, 3, 50.0, 0.0); // 1, timeout 50 ms
    assert_eq!(s.timeout(1, 50.0), TimedOut::Retry(10.0));
    assert_eq!(s.slots_used(), 1, "the timed-out agent still holds the slot");
    // The retry delay ends first: the next attempt waits for the slot.
    assert_eq!(s.retry_due(1, 60.0), Vec::<u64>::new());
    assert!(s.queue_order().is_empty());
    // The old attempt settles late: its result is discarded, the next attempt starts in
    // the slot it frees.
    assert_eq!(settle(&mut s, 1, 1, true, 70.0), (false, Some(1)));
    assert_eq!(s.running_ids(), vec![1]);
    assert_eq!(s.execs.get(1).map(|e| e.attempt), Some(2));
  }

  #[test]
  fn cancel_and_close_stop_pending_retries() {
    let mut s = sched_with_retry(2, fixed(1, 1000.0));
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    s.settle(1, 1, false, 1.0);
    s.settle(2, 1, false, 1.0);
    assert_eq!(s.cancel(1, 2.0), Some(Status::Waiting));
    assert_eq!(s.close(false, 3.0), vec![2]);
    assert!(s.is_idle());
    assert_eq!(s.totals().cancelled, 2);
    // A retry timer that fires afterwards changes nothing.
    assert!(s.retry_due(2, 1001.0).is_empty());
    assert_eq!(s.view(2, 1001.0, true).map(|v| v.status), Some(Status::Cancelled));
  }

  #[test]
  fn stale_grace_and_timeout_firings_are_ignored() {
    let mut s = sched_with_retry(1, fixed(1, 0.0));
    s.submit(0, 0, false, 3, 50.0, 0.0); // 1: timeout 50
                                         // A zombie with grace armed; its retry is due at once.
    assert_eq!(s.timeout(1, 50.0), TimedOut::Retry(0.0));
    s.retry_due(1, 50.0); // ready, waits for the slot
                          // The zombie settles: its slot goes to attempt 2 at once.
    assert_eq!(settle(&mut s, 1, 1, true, 60.0), (false, Some(1)));
    assert_eq!(s.slots_used(), 1);
    // A grace expiry already in flight arrives late: it must not free attempt 2's slot.
    assert!(s.grace_expired(1, 61.0).is_empty());
    assert_eq!(s.slots_used(), 1);
    // The first attempt's timeout firing arriving now is stale for attempt 2 (deadline 110).
    assert_eq!(s.timeout(1, 62.0), TimedOut::Stale);
    assert_eq!(s.timeout(1, 110.0), TimedOut::Failed);
  }

  #[test]
  fn codes_agree_with_the_protocol() {
    let statuses = [
      (Status::Queued, protocol::STATUS_QUEUED),
      (Status::Running, protocol::STATUS_RUNNING),
      (Status::Completed, protocol::STATUS_COMPLETED),
      (Status::Failed, protocol::STATUS_FAILED),
      (Status::Cancelled, protocol::STATUS_CANCELLED),
      (Status::Waiting, protocol::STATUS_WAITING),
    ];
    assert_eq!(statuses.len(), protocol::STATUS_NAMES.len());
    for (status, code) in statuses {
      assert_eq!(status.code(), code as i32);
      assert_eq!(status.as_str(), protocol::STATUS_NAMES[code as usize]);
    }
    assert_eq!(Status::Waiting.as_str(), Status::Queued.as_str());
    let kinds = [
      (TimerKind::Timeout, protocol::TIMER_TIMEOUT),
      (TimerKind::Progress, protocol::TIMER_PROGRESS),
      (TimerKind::Grace, protocol::TIMER_GRACE),
      (TimerKind::Sweep, protocol::TIMER_SWEEP),
      (TimerKind::Shutdown, protocol::TIMER_SHUTDOWN),
      (TimerKind::Retry, protocol::TIMER_RETRY),
      (TimerKind::Rate, protocol::TIMER_RATE),
    ];
    assert_eq!(kinds.map(|(k, _)| k), TimerKind::ALL);
    for (kind, code) in kinds {
      assert_eq!(u32::from(kind as u8), code);
      assert_eq!(TimerKind::from_u8(kind as u8), Some(kind));
      assert!(code < 8, "timer kinds are bits of a u8");
    }
    assert_eq!(TimerKind::from_u8(0), None);
    let modes = [
      protocol::MODE_FIRE,
      protocol::MODE_CALLBACK,
      protocol::MODE_WATCHED,
      protocol::MODE_EXECUTE,
      protocol::MODE_AGGREGATE,
    ];
    assert_eq!(modes.len(), protocol::MODE_NAMES.len());
    for (i, mode) in modes.into_iter().enumerate() {
      assert_eq!(mode as usize, i);
      assert!(
        mode < 1 << protocol::SUBMIT_KEY_SHIFT,
        "a mode fits below the agent key"
      );
    }
    assert!(
      protocol::MAX_RETRIES < u32::from(u16::MAX),
      "attempts fit an Exec's u16"
    );
  }

  #[test]
  fn execution_record_stays_small() {
    assert!(
      std::mem::size_of::<Exec>() <= 48,
      "{}",
      std::mem::size_of::<Exec>()
    );
  }

  #[test]
  fn starts_up_to_the_limit_then_queues_by_priority() {
    let mut s = sched(2);
    assert_eq!(submit(&mut s, 2, 0.0), (1, true));
    assert_eq!(submit(&mut s, 2, 0.0), (2, true));
    assert_eq!(submit(&mut s, 2, 0.0), (3, false));
    assert_eq!(submit(&mut s, 5, 0.0), (4, false));
    assert_eq!(submit(&mut s, 2, 0.0), (5, false));
    assert_eq!(submit(&mut s, 5, 0.0), (6, false));
    assert_eq!(s.queue_order(), vec![4, 6, 3, 5]);
    assert_eq!(s.queue_position(3), Some(3));
    assert_eq!((s.running(), s.queued()), (2, 4));
    assert_eq!(settle(&mut s, 1, 0, true, 1.0), (true, Some(4)));
    assert_eq!(settle(&mut s, 4, 0, false, 2.0), (true, Some(6)));
    assert_eq!(settle(&mut s, 2, 0, true, 3.0), (true, Some(3)));
    assert_eq!(settle(&mut s, 6, 0, true, 3.0), (true, Some(5)));
    assert_eq!(settle(&mut s, 3, 0, true, 3.0), (true, None));
    assert!(!s.is_idle());
    assert_eq!(settle(&mut s, 5, 0, true, 3.0), (true, None));
    assert!(s.is_idle());
    assert_eq!(
      s.totals(),
      Totals {
        submitted: 6,
        completed: 5,
        failed: 1,
        cancelled: 0
      }
    );
    assert_eq!(s.view(4, 3.0, true).map(|v| v.status), Some(Status::Failed));
  }

  #[test]
  fn late_settle_is_discarded() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    assert_eq!(settle(&mut s, 1, 0, true, 1.0), (true, None));
    assert_eq!(settle(&mut s, 1, 0, false, 2.0), (false, None));
    assert_eq!(settle(&mut s, 99, 0, true, 2.0), (false, None));
    assert_eq!(s.totals().completed, 1);
    assert_eq!(s.totals().failed, 0);
  }

  #[test]
  fn cancel_queued_leaves_queue_and_keeps_counts() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    assert_eq!(s.cancel(2, 1.0), Some(Status::Queued));
    assert_eq!(s.cancel(2, 1.0), Some(Status::Cancelled));
    assert_eq!(s.cancel(42, 1.0), None);
    assert_eq!((s.running(), s.queued(), s.slots_used()), (1, 1, 1));
    assert_eq!(s.queue_order(), vec![3]);
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, Some(3)));
    assert_eq!(s.totals().cancelled, 1);
  }

  #[test]
  fn cancelled_running_keeps_slot_until_settle() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    assert_eq!(s.cancel(1, 1.0), Some(Status::Running));
    // Cancelled at once, but the slot is still held: nothing starts.
    assert_eq!(s.view(1, 1.0, true).map(|v| v.status), Some(Status::Cancelled));
    assert_eq!((s.running(), s.slots_used(), s.queued()), (0, 1, 1));
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(cmds.contains(&TimerCmd::Arm {
      id: 1,
      kind: TimerKind::Grace,
      at_ms: 5001.0
    }));
    // The agent settles: late result discarded, slot freed, next starts, grace disarmed.
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (false, Some(2)));
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(cmds.contains(&TimerCmd::Disarm {
      id: 1,
      kind: TimerKind::Grace
    }));
    assert_eq!(s.totals().completed, 0);
    assert_eq!(s.totals().cancelled, 1);
  }

  #[test]
  fn grace_expiry_frees_the_slot_of_an_agent_that_ignores_its_signal() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    s.cancel(1, 1.0);
    assert_eq!(s.grace_expired(1, 5001.0), vec![2]);
    assert_eq!(s.slots_used(), 1);
    // The ignoring agent finally settles: nothing changes.
    assert_eq!(settle(&mut s, 1, 0, true, 9000.0), (false, None));
    assert_eq!(s.slots_used(), 1);
  }

  #[test]
  fn zero_grace_frees_at_once() {
    let mut s = sched_with_grace(1, 0.0);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    s.cancel(1, 1.0);
    assert_eq!(s.slots_used(), 0);
    assert_eq!(s.pump(1.0), vec![2]);
  }

  #[test]
  fn timeout_fails_running_and_arms_grace() {
    let mut s = sched(1);
    assert_eq!(s.submit(0, 0, false, 3, 50.0, 10.0), Some((1, true)));
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert_eq!(
      cmds,
      vec![TimerCmd::Arm {
        id: 1,
        kind: TimerKind::Timeout,
        at_ms: 60.0
      }]
    );
    assert_eq!(s.timeout(1, 60.0), TimedOut::Failed);
    assert_eq!(s.timeout(1, 61.0), TimedOut::Stale);
    assert_eq!(s.view(1, 60.0, true).map(|v| v.status), Some(Status::Failed));
    assert_eq!(s.totals().failed, 1);
    assert_eq!(s.slots_used(), 1);
  }

  #[test]
  fn settle_disarms_timeout() {
    let mut s = sched(1);
    s.submit(0, 0, false, 3, 50.0, 0.0);
    s.take_timer_cmds();
    settle(&mut s, 1, 0, true, 5.0);
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(cmds.contains(&TimerCmd::Disarm {
      id: 1,
      kind: TimerKind::Timeout
    }));
  }

  #[test]
  fn pause_resume_and_concurrency_changes() {
    let mut s = sched(1);
    s.set_paused(true, 0.0);
    for _ in 0..4 {
      assert!(!submit(&mut s, 3, 0.0).1);
    }
    assert_eq!(s.set_paused(false, 1.0), vec![1]);
    assert_eq!(s.set_concurrency(3, 1.0), vec![2, 3]);
    assert_eq!(s.set_concurrency(1, 1.0), Vec::<u64>::new());
    // Lowering the limit does not stop running work, and nothing new starts above it.
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, None));
    assert_eq!(settle(&mut s, 2, 0, true, 2.0), (true, None));
    assert_eq!(settle(&mut s, 3, 0, true, 2.0), (true, Some(4)));
  }

  #[test]
  fn throttling_allows_min_concurrent() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 4,
      min_concurrent: 1,
      ..Config::default()
    });
    s.set_throttled(true, 0.0);
    assert!(submit(&mut s, 3, 0.0).1);
    assert!(!submit(&mut s, 3, 0.0).1);
    assert!(!submit(&mut s, 3, 0.0).1);
    assert_eq!(s.set_throttled(false, 1.0), vec![2, 3]);
    let mut s = Scheduler::new(Config {
      max_concurrent: 4,
      min_concurrent: 0,
      ..Config::default()
    });
    s.set_throttled(true, 0.0);
    assert!(!submit(&mut s, 3, 0.0).1, "min 0: nothing runs while throttled");
    assert_eq!(s.set_throttled(false, 1.0), vec![1]);
  }

  #[test]
  fn retention_by_count_and_ttl() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 10,
      max_retained: 3,
      result_ttl_ms: 100.0,
      ..Config::default()
    });
    for i in 0..5 {
      submit(&mut s, 3, f64::from(i));
    }
    for id in 1..=5u64 {
      settle(&mut s, id, 0, true, 10.0 + id as f64);
    }
    // Queries see exactly the last 3 at once; the records are freed at the next batch.
    assert_eq!(s.retained(16.0), 3);
    assert_eq!(s.retained(114.5), 1);
    assert!(s.view(2, 16.0, true).is_none());
    assert!(s.view(2, 16.0, false).is_some());
    assert_eq!(s.records(), 5);
    s.evict(16.0);
    assert_eq!(s.records(), 3);
    assert_eq!(s.take_evicted(), vec![1, 2]);
    assert!(s.view(1, 20.0, true).is_none());
    assert!(s.view(3, 20.0, true).is_some());
    // TTL: queries stop seeing them at once; the sweep frees them.
    assert!(s.view(3, 113.0, true).is_none());
    assert_eq!(s.records(), 3);
    s.sweep(113.5);
    assert_eq!(s.take_evicted(), vec![3]);
    s.sweep(200.0);
    assert_eq!(s.take_evicted(), vec![4, 5]);
    assert_eq!(s.records(), 0);
  }

  #[test]
  fn memory_stays_flat_over_many_executions() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 8,
      max_retained: 100,
      ..Config::default()
    });
    let mut now = 0.0;
    for _ in 0..100_000 {
      let (id, started) = submit(&mut s, 3, now);
      assert!(started);
      settle(&mut s, id, 0, true, now);
      now += 0.01;
      s.evict(now);
      s.take_timer_cmds();
      s.take_evicted();
    }
    assert_eq!(s.records(), 100);
    assert_eq!(s.totals().completed, 100_000);
  }

  #[test]
  fn retention_never_frees_a_held_slot() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 1,
      max_retained: 0,
      ..Config::default()
    });
    submit(&mut s, 3, 0.0);
    submit(&mut s, 3, 0.0);
    s.cancel(1, 1.0);
    assert!(s.view(1, 1.0, false).is_some(), "readable until the next batch");
    assert!(s.view(1, 1.0, true).is_none(), "but not to queries");
    s.evict(1.0);
    // Not queryable any more, but its slot is still accounted for.
    assert!(s.view(1, 1.0, true).is_none());
    assert_eq!(s.cancel(1, 1.0), None);
    assert_eq!(s.slots_used(), 1);
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (false, Some(2)));
    assert_eq!(s.records(), 1);
  }

  #[test]
  fn close_cancels_queued_or_drains() {
    let mut s = sched(1);
    for _ in 0..3 {
      submit(&mut s, 3, 0.0);
    }
    assert_eq!(s.close(true, 1.0), vec![2, 3]);
    assert!(s.submit(0, 0, false, 3, 0.0, 1.0).is_none());
    assert_eq!(s.totals().cancelled, 2);
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, None));
    assert!(s.is_idle());

    let mut s = sched(1);
    for _ in 0..3 {
      submit(&mut s, 3, 0.0);
    }
    assert!(s.close(false, 1.0).is_empty());
    assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, Some(2)));
    assert_eq!(s.abort_all(3.0), vec![3, 2]);
    assert!(s.is_idle());
    assert_eq!(s.slots_used(), 0);
    assert_eq!(s.totals().cancelled, 2);
  }

  #[test]
  fn watched_progress_ticks_until_finished() {
    let mut s = sched(1);
    let (id, _) = s.submit(2, 0, true, 3, 0.0, 0.0).expect("open");
    assert_eq!(
      s.take_timer_cmds().unwrap_or_default(),
      vec![TimerCmd::Arm {
        id,
        kind: TimerKind::Progress,
        at_ms: 1000.0
      }]
    );
    assert!(s.set_progress(id, 250.0));
    assert_eq!(s.view(id, 1.0, true).map(|v| v.progress), Some(100.0));
    assert!(s.set_progress(id, -5.0));
    assert_eq!(s.view(id, 1.0, true).map(|v| v.progress), Some(0.0));
    assert!(!s.set_progress(id, f64::NAN));
    assert!(s.progress_tick(id, 1000.0));
    settle(&mut s, id, 0, true, 1500.0);
    assert!(!s.progress_tick(id, 2000.0));
    assert_eq!(s.view(id, 1600.0, true).map(|v| v.progress), Some(100.0));
  }

  #[test]
  fn view_reports_position_and_duration() {
    let mut s = sched(1);
    submit(&mut s, 3, 0.0);
    submit(&mut s, 2, 5.0);
    submit(&mut s, 4, 6.0);
    let v = s.view(2, 10.0, true).expect("queued");
    assert_eq!(v.status, Status::Queued);
    assert_eq!(v.queue_position, Some(2));
    assert_eq!(v.duration, 5.0);
    settle(&mut s, 1, 0, true, 20.0);
    let v = s.view(1, 30.0, true).expect("done");
    assert_eq!(
      (v.duration, v.started_at, v.finished_at),
      (20.0, Some(0.0), Some(20.0))
    );
    assert_eq!(s.running_ids(), vec![3]);
  }

  #[test]
  fn aging_lets_low_priority_work_through() {
    let mut s = Scheduler::new(Config {
      max_concurrent: 1,
      aging_ms: 100.0,
      ..Config::default()
    });
    submit(&mut s, 5, 0.0); // 1 runs
    submit(&mut s, 1, 0.0); // 2: background, waits
    let mut now = 0.0;
    let mut order = vec![];
    let mut current = 1;
    // A steady stream of critical work: one new critical submission per finish.
    for _ in 0..10 {
      submit(&mut s, 5, now);
      now += 60.0;
      let (_, next) = settle(&mut s, current, 0, true, now);
      current = next.expect("something starts");
      order.push(current);
    }
    // Without aging id 2 would never start; with it, after 4 levels × 100 ms it does.
    assert!(order.contains(&2), "order {order:?}");
    let mut s = sched(1);
    submit(&mut s, 5, 0.0);
    submit(&mut s, 1, 0.0);
    let mut current = 1;
    let mut now = 0.0;
    for _ in 0..10 {
      submit(&mut s, 5, now);
      now += 60.0;
      current = settle(&mut s, current, 0, true, now).1.expect("starts");
      assert_ne!(current, 2);
    }
  }

  #[test]
  fn an_agent_that_needs_longer_to_stop_keeps_its_slot_longer() {
    let mut s = sched_with_grace(1, 100.0);
    let (a, started) = submit(&mut s, 3, 0.0);
    assert!(started);
    let (b, _) = submit(&mut s, 3, 0.0);
    assert!(!s.set_min_grace(b, 2_000.0), "queued: nothing kept");
    assert!(s.set_min_grace(a, 2_000.0));
    let _ = s.take_timer_cmds();
    assert_eq!(s.cancel(a, 10.0), Some(Status::Running));
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(
      cmds.iter().any(
        |c| matches!(c, TimerCmd::Arm { id, kind: TimerKind::Grace, at_ms } if *id == a && *at_ms == 2_010.0)
      ),
      "grace armed for 2 s, not 100 ms: {cmds:?}"
    );
    // Its agent settles (the process is gone) before then: the slot goes to b at once, and
    // the override is forgotten with the slot.
    let (_, next) = settle(&mut s, a, 1, false, 900.0);
    assert_eq!(next, Some(b));
    assert!(s.min_grace.is_empty());
    // Without an override, the configured grace applies.
    let _ = s.take_timer_cmds();
    s.cancel(b, 1_000.0);
    let cmds = s.take_timer_cmds().unwrap_or_default();
    assert!(cmds.iter().any(
      |c| matches!(c, TimerCmd::Arm { id, kind: TimerKind::Grace, at_ms } if *id == b && *at_ms == 1_100.0)
    ));
  }
}

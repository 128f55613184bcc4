//! The values the scheduler works with and reports: statuses, timer kinds and requests,
//! the configuration, the record of one execution, and what outcomes and queries return.

use super::rate::RateLimit;
use super::retry::RetryPolicy;
use crate::protocol;

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

  pub(super) fn bit(self) -> u8 {
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
  pub(super) flags: u8,
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
  pub(super) started_at: f64,
  /// NaN until finished.
  pub(super) finished_at: f64,
  /// Order of finishing (wrapping), to know at once whether retention still keeps it.
  pub(super) finish_seq: u32,
  /// Bit set of armed `TimerKind`s.
  pub(super) timers: u8,
}

/// A watched execution (periodic progress updates).
pub(super) const WATCHED: u8 = 1;
/// Holds a concurrency slot (running, or a zombie whose agent has not settled).
pub(super) const HOLDS_SLOT: u8 = 2;
/// Dropped from retention while still holding its slot: invisible to queries.
pub(super) const EVICTED: u8 = 4;
/// Waiting for a retry whose delay is over, until its zombie attempt frees the slot.
pub(super) const RETRY_READY: u8 = 8;
/// Has its own retry policy in `Scheduler::retry_policies`.
pub(super) const OWN_RETRY_POLICY: u8 = 16;

impl Exec {
  pub(super) fn has(&self, flag: u8) -> bool {
    self.flags & flag != 0
  }
  pub(super) fn set(&mut self, flag: u8, on: bool) {
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

//! `NativeExecutor`: the scheduler behind napi. It converts arguments, keeps the clock,
//! forwards timer requests to the timer service, and keeps Node.js alive while work is
//! pending.
//!
//! The JS wrapper calls these methods synchronously for every scheduling decision, so the hot
//! path (`sync`) takes and returns plain numbers and never hops threads. Only timers cross
//! threads: the service calls back through one weak `JsCallback`, which is referenced while
//! anything is queued, running or waiting for a retry, and unreferenced when the executor is
//! idle, so an idle executor never keeps Node.js alive and pending work always does.

use std::sync::Once;
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::js_callback::{JsCallback, KeepAlive};
use crate::protocol::{
  MODE_WATCHED, NOT_FOUND, OP_SETTLE_FAILED, OP_SETTLE_OK, OP_SUBMIT, OP_WIDTH, RETRY_NONE, SUBMIT_HELD,
  SUBMIT_KEY_SHIFT, SYNC_EVICTED_STEP, SYNC_IDLE, THROTTLE_BEGAN, THROTTLE_ENDED, THROTTLE_UNCHANGED,
  TIMEOUT_STALE,
};
use crate::scheduler::rate::RateLimit;
use crate::scheduler::retry::{Backoff, RetryPolicy};
use crate::scheduler::stats::{AgentStats, Histogram, Stats};
use crate::scheduler::throttle::{Throttle, Transition};
use crate::scheduler::{Config, Counts, ExecView, Scheduler, TimedOut, TimerCmd, TimerKind};
use crate::system::probes::now_ms;
use crate::system::runtime;
use crate::system::timers::TimerService;

static TRACING: Once = Once::new();

/// Rust-side logs go to stderr when `BMAD_BG_LOG` is set (e.g. `BMAD_BG_LOG=debug`).
fn init_tracing() {
  TRACING.call_once(|| {
    let Ok(filter) = std::env::var("BMAD_BG_LOG") else {
      return;
    };
    if filter.trim().is_empty() {
      return;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(format!("bmad_background_executor={filter}"))
      .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("bmad_background_executor=debug"));
    let _ = tracing_subscriber::fmt()
      .with_env_filter(filter)
      .with_writer(std::io::stderr)
      .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
      .with_target(false)
      .try_init();
  });
}

/// An execution id from JS; 0 (no execution) unless a safe integer >= 1.
pub(super) fn to_id(id: f64) -> u64 {
  if (1.0..=9_007_199_254_740_991.0).contains(&id) {
    id as u64
  } else {
    0
  }
}

pub(super) fn ids(v: Vec<u64>) -> Vec<f64> {
  v.into_iter().map(|id| id as f64).collect()
}

fn finite_or(v: f64, lo: f64, hi: f64, default: f64) -> f64 {
  if v.is_finite() {
    v.clamp(lo, hi)
  } else {
    default
  }
}

/// A retry policy from JS (values brought into range); `None` for an unknown backoff code.
fn retry_policy(retries: u32, delay_ms: f64, backoff: u32) -> Option<RetryPolicy> {
  Backoff::from_code(backoff).map(|b| RetryPolicy::new(retries, delay_ms, b))
}

/// Scheduler settings, already validated by the JS wrapper (clamped again here).
#[napi(object)]
pub struct NativeConfig {
  pub max_concurrent: u32,
  pub min_concurrent: u32,
  pub result_ttl_ms: f64,
  pub max_retained: f64,
  pub progress_interval_ms: f64,
  pub cancel_grace_ms: f64,
  pub aging_ms: f64,
  pub levels: Vec<i32>,
  /// Retries of a failed attempt (at most `MAX_RETRIES`).
  pub retries: u32,
  pub retry_delay_ms: f64,
  /// `BACKOFF_FIXED` or `BACKOFF_EXPONENTIAL`.
  pub backoff: u32,
  /// Most executions waiting in the queue (beyond: refused); 0 or less means no limit.
  pub max_queued: f64,
  /// The global rate limit: at most `rate_max` starts per `rate_interval_ms` (0: none).
  pub rate_max: u32,
  pub rate_interval_ms: f64,
}

impl TryFrom<NativeConfig> for Config {
  type Error = Error;

  fn try_from(c: NativeConfig) -> Result<Config> {
    let d = Config::default();
    let retry = retry_policy(c.retries, c.retry_delay_ms, c.backoff)
      .ok_or_else(|| Error::new(Status::InvalidArg, format!("unknown backoff code {}", c.backoff)))?;
    let mut levels = c.levels;
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    Ok(Config {
      max_concurrent: c.max_concurrent.max(1),
      min_concurrent: c.min_concurrent,
      result_ttl_ms: finite_or(c.result_ttl_ms, 0.0, 1e15, d.result_ttl_ms),
      max_retained: finite_or(c.max_retained, 0.0, 1e12, d.max_retained as f64) as usize,
      progress_interval_ms: finite_or(c.progress_interval_ms, 1.0, 1e12, d.progress_interval_ms),
      cancel_grace_ms: finite_or(c.cancel_grace_ms, 0.0, 1e12, d.cancel_grace_ms),
      aging_ms: finite_or(c.aging_ms, 0.0, 1e15, d.aging_ms),
      levels,
      retry,
      max_queued: if c.max_queued.is_finite() && c.max_queued >= 1.0 {
        c.max_queued.min(1e15) as usize
      } else {
        usize::MAX
      },
      rate_limit: RateLimit::new(c.rate_max, c.rate_interval_ms),
    })
  }
}

#[napi(object)]
pub struct NativeView {
  pub status: String,
  pub mode: u32,
  pub priority: i32,
  pub progress: f64,
  /// Submission time, ms since the Unix epoch.
  pub submitted_at: f64,
  pub started_at: Option<f64>,
  pub finished_at: Option<f64>,
  pub duration: f64,
  pub queue_position: Option<u32>,
}

/// A view with its times moved from the executor's clock to the wall clock: `.1` is the
/// wall-clock time (ms since the Unix epoch) of the executor's time 0.
impl From<(ExecView, f64)> for NativeView {
  fn from((v, wall_epoch_ms): (ExecView, f64)) -> Self {
    let wall = |t: f64| wall_epoch_ms + t;
    NativeView {
      status: v.status.as_str().to_string(),
      mode: u32::from(v.mode),
      priority: v.priority,
      progress: v.progress,
      submitted_at: wall(v.submitted_at),
      started_at: v.started_at.map(wall),
      finished_at: v.finished_at.map(wall),
      duration: v.duration,
      queue_position: v.queue_position.map(|p| p.min(u32::MAX as usize) as u32),
    }
  }
}

#[napi(object)]
pub struct NativeCounts {
  pub queued: u32,
  pub running: u32,
  pub slots_used: u32,
  pub max_concurrent: u32,
  pub paused: bool,
  pub throttled: bool,
  pub closed: bool,
  pub submitted: f64,
  pub completed: f64,
  pub failed: f64,
  pub cancelled: f64,
  pub retained: u32,
  pub records: u32,
}

impl From<Counts> for NativeCounts {
  fn from(c: Counts) -> Self {
    let small = |n: usize| n.min(u32::MAX as usize) as u32;
    NativeCounts {
      queued: small(c.queued),
      running: small(c.running),
      slots_used: c.slots_used,
      max_concurrent: c.max_concurrent,
      paused: c.paused,
      throttled: c.throttled,
      closed: c.closed,
      submitted: c.totals.submitted as f64,
      completed: c.totals.completed as f64,
      failed: c.totals.failed as f64,
      cancelled: c.totals.cancelled as f64,
      retained: small(c.retained),
      records: small(c.records),
    }
  }
}

#[napi(object)]
pub struct NativePercentiles {
  pub count: f64,
  pub p50: f64,
  pub p90: f64,
  pub p99: f64,
}

impl From<&Histogram> for NativePercentiles {
  fn from(h: &Histogram) -> Self {
    NativePercentiles {
      count: h.count() as f64,
      p50: h.quantile(0.5),
      p90: h.quantile(0.9),
      p99: h.quantile(0.99),
    }
  }
}

#[napi(object)]
pub struct NativeAgentStats {
  pub key: u32,
  pub wait: NativePercentiles,
  pub run: NativePercentiles,
}

impl From<(u16, &AgentStats)> for NativeAgentStats {
  fn from((key, a): (u16, &AgentStats)) -> Self {
    NativeAgentStats {
      key: u32::from(key),
      wait: (&a.wait).into(),
      run: (&a.run).into(),
    }
  }
}

#[napi(object)]
pub struct NativeStats {
  pub last_minute: f64,
  pub agents: Vec<NativeAgentStats>,
  /// Starts of executions that waited for a rate limit.
  pub rate_limited: f64,
  /// Starts of executions that waited for their agent's concurrency limit.
  pub limit_deferred: f64,
}

/// The statistics as of `.1` (the executor's clock, ms).
impl From<(&Stats, f64)> for NativeStats {
  fn from((st, now): (&Stats, f64)) -> Self {
    NativeStats {
      last_minute: st.last_minute(now) as f64,
      agents: st.agents().map(NativeAgentStats::from).collect(),
      rate_limited: 0.0,
      limit_deferred: 0.0,
    }
  }
}

#[napi(object)]
pub struct Observed {
  /// `THROTTLE_UNCHANGED`, `THROTTLE_BEGAN` or `THROTTLE_ENDED`.
  pub transition: u32,
  pub started: Vec<f64>,
}

#[napi]
pub struct NativeExecutor {
  pub(super) sched: Scheduler,
  epoch: Instant,
  pub(super) wall_epoch_ms: f64,
  timers: Option<TimerService>,
  keep_alive: KeepAlive,
  throttle: Throttle,
}

#[napi]
impl NativeExecutor {
  /// `on_timers(batch)` receives `[kind, id, kind, id, ...]` for every timer that fired.
  #[napi(constructor, catch_unwind)]
  pub fn new(config: NativeConfig, on_timers: Function<Vec<f64>, ()>) -> Result<Self> {
    init_tracing();
    let cfg = Config::try_from(config)?;
    tracing::debug!(?cfg, "executor created");
    let callback = JsCallback::new(on_timers)?;
    let keep_alive = callback.keep_alive();
    let epoch = Instant::now();
    let rt = runtime::handle().map_err(|e| Error::new(Status::GenericFailure, e))?;
    let timers = TimerService::spawn(&rt, epoch, move |fired| {
      let mut flat = Vec::with_capacity(fired.len() * 2);
      for (kind, id) in fired {
        flat.push(f64::from(kind as u8));
        flat.push(id as f64);
      }
      callback.call(flat);
    });
    Ok(NativeExecutor {
      sched: Scheduler::new(cfg),
      epoch,
      wall_epoch_ms: now_ms(),
      timers: Some(timers),
      keep_alive,
      throttle: Throttle::default(),
    })
  }

  pub(super) fn now(&self) -> f64 {
    self.epoch.elapsed().as_secs_f64() * 1000.0
  }

  /// The clock for a mutating call; retention eviction happens here, at the start of each
  /// batch, so what the previous batch finished stayed readable while it was delivered.
  fn begin(&mut self) -> f64 {
    let now = self.now();
    self.sched.evict(now);
    now
  }

  /// Forwards timer requests and keeps the keep-alive in step with "work is pending".
  fn after(&mut self, env: &Env) {
    if let Some(cmds) = self.sched.take_timer_cmds() {
      if let Some(t) = &self.timers {
        t.send(cmds);
      }
    }
    self.keep_alive.set(env, self.sched.keeps_alive());
  }

  /// One state change of the scheduler at the current time, bracketed by `begin` and `after`.
  pub(super) fn change<R>(&mut self, env: &Env, f: impl FnOnce(&mut Scheduler, f64) -> R) -> R {
    let now = self.begin();
    let r = f(&mut self.sched, now);
    self.after(env);
    r
  }

  /// The hot path: applies a batch of submissions and settlements recorded by the wrapper in
  /// `io`, `OP_WIDTH` numbers per operation, in the order they happened, and writes each
  /// answer back in place. One call per batch instead of one per operation: a napi call costs
  /// more than the scheduling work it carries.
  ///
  /// - `[OP_SUBMIT, mode | agentKey << SUBMIT_KEY_SHIFT, priority, timeoutMs]` -> `io[4k+1]`
  ///   = id, positive when it started at once, negative when queued, 0 when closed;
  /// - `[OP_SETTLE_OK | OP_SETTLE_FAILED, id, final, attempt]` -> `io[4k+2]` = the id started in
  ///   the freed slot, or 0; `io[4k+3]` = the retry delay (ms) when this failure made the
  ///   execution wait for its next attempt, else `RETRY_NONE`.
  ///
  /// Ids that retention dropped are written to `evicted` (the wrapper drops their values).
  /// Returns `evicted * SYNC_EVICTED_STEP + (idle ? SYNC_IDLE : 0)`; idle: nothing queued,
  /// running or waiting for a retry.
  #[napi(catch_unwind)]
  pub fn sync(&mut self, env: Env, mut io: Float64ArraySlice, n: u32, mut evicted: Float64ArraySlice) -> f64 {
    const WIDTH: usize = OP_WIDTH as usize;
    const MODE_MASK: u64 = 7;
    // SAFETY: we are on the JS thread and nothing else touches these buffers during the call.
    let buf = unsafe { io.as_mut() };
    let n = (n as usize).min(buf.len() / WIDTH);
    // One timestamp per batch: its operations happened within one turn of the event loop.
    let now = self.begin();
    for op in buf[..n * WIDTH].chunks_exact_mut(WIDTH) {
      match op[0] as u32 {
        OP_SUBMIT => {
          let packed = if op[1].is_finite() {
            op[1].clamp(0.0, 1e9) as u64
          } else {
            0
          };
          let mode = (packed & MODE_MASK) as u8;
          let agent = (packed >> SUBMIT_KEY_SHIFT).min(u64::from(u16::MAX)) as u16;
          let priority = if op[2].is_finite() {
            op[2].clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
          } else {
            0
          };
          let watched = u32::from(mode) == MODE_WATCHED;
          let held = packed & u64::from(SUBMIT_HELD) != 0;
          op[1] = match self
            .sched
            .submit_as(mode, agent, watched, priority, op[3], held, now)
          {
            None => 0.0,
            Some((id, true)) => id as f64,
            Some((id, false)) => -(id as f64),
          };
        }
        code @ (OP_SETTLE_OK | OP_SETTLE_FAILED) => {
          let attempt = if op[3].is_finite() {
            op[3].clamp(0.0, f64::from(u16::MAX)) as u16
          } else {
            0
          };
          // Slot 2 set: the failure is final (the user's retryIf declined a retry).
          let retry = op[2] == 0.0;
          let r = self
            .sched
            .settle_as(to_id(op[1]), attempt, code == OP_SETTLE_OK, retry, now);
          op[2] = r.next.map_or(0.0, |id| id as f64);
          op[3] = r.retry_delay_ms.unwrap_or(f64::from(RETRY_NONE));
        }
        _ => op[1] = 0.0,
      }
    }
    self.after(&env);
    // SAFETY: as above.
    let dropped = self.sched.drain_evicted_into(unsafe { evicted.as_mut() });
    let idle = if self.sched.is_idle() { SYNC_IDLE } else { 0 };
    dropped as f64 * f64::from(SYNC_EVICTED_STEP) + f64::from(idle)
  }

  /// `NOT_FOUND` when `id` is unknown or no longer retained, else the status code it had
  /// before: `STATUS_QUEUED`, `STATUS_WAITING` or `STATUS_RUNNING` mean it is cancelled now;
  /// a terminal status means it had already finished and nothing changed.
  #[napi(catch_unwind)]
  pub fn cancel(&mut self, env: Env, id: f64) -> i32 {
    let r = self
      .change(&env, |s, now| s.cancel(to_id(id), now))
      .map_or(NOT_FOUND, |s| s.code());
    tracing::debug!(id, before = r, "cancel");
    r
  }

  /// The timeout of `id` fired: `TIMEOUT_STALE` when it failed nothing, `RETRY_NONE` when
  /// the running attempt failed and with it the execution, else the delay (ms) before the
  /// execution's next attempt.
  /// A held submission (`SUBMIT_HELD`) starts no earlier than `delay_ms` from now. False when
  /// `id` is not held (unknown, started, cancelled).
  #[napi(catch_unwind)]
  pub fn start_after(&mut self, env: Env, id: f64, delay_ms: f64) -> bool {
    let delay = if delay_ms.is_finite() {
      delay_ms.max(0.0)
    } else {
      0.0
    };
    self.change(&env, |s, now| s.start_after(to_id(id), delay, now))
  }

  /// `retry` false: the execution fails whatever its retry policy allows.
  #[napi(catch_unwind)]
  pub fn timeout(&mut self, env: Env, id: f64, retry: bool) -> f64 {
    let r = match self.change(&env, |s, now| s.timeout_as(to_id(id), retry, now)) {
      TimedOut::Stale => f64::from(TIMEOUT_STALE),
      TimedOut::Failed => f64::from(RETRY_NONE),
      TimedOut::Retry(ms) => ms,
    };
    tracing::debug!(id, outcome = r, "timeout fired");
    r
  }

  /// `id` retries by this policy instead of the configured one (call it before any of its
  /// attempts can settle). False when `id` is unknown or finished, or `backoff` is unknown.
  #[napi(catch_unwind)]
  pub fn set_retry_policy(&mut self, id: f64, retries: u32, retry_delay_ms: f64, backoff: u32) -> bool {
    retry_policy(retries, retry_delay_ms, backoff).is_some_and(|p| self.sched.set_retry_policy(to_id(id), p))
  }

  /// The running agent of `id` needs at least `ms` to stop once signalled (a command's
  /// `killGraceMs` and pipe drain): its slot's grace period is at least that long.
  #[napi(catch_unwind)]
  pub fn set_min_grace(&mut self, id: f64, ms: f64) -> bool {
    self.sched.set_min_grace(to_id(id), ms)
  }

  /// The agent of `id` is called only now (a deferred start): its timeout restarts.
  #[napi(catch_unwind)]
  pub fn restart_timeout(&mut self, env: Env, id: f64) {
    self.change(&env, |s, now| s.restart_timeout(to_id(id), now));
  }

  /// The retry delay of `id` ended: its next attempt is queued. Returns what started.
  #[napi(catch_unwind)]
  pub fn retry_due(&mut self, env: Env, id: f64) -> Vec<f64> {
    ids(self.change(&env, |s, now| s.retry_due(to_id(id), now)))
  }

  #[napi(catch_unwind)]
  pub fn grace_expired(&mut self, env: Env, id: f64) -> Vec<f64> {
    let r = self.change(&env, |s, now| s.grace_expired(to_id(id), now));
    tracing::debug!(id, started = r.len(), "grace period over, slot freed");
    ids(r)
  }

  /// Starts whatever the limits allow now.
  #[napi(catch_unwind)]
  pub fn pump(&mut self, env: Env) -> Vec<f64> {
    ids(self.change(&env, |s, now| s.pump(now)))
  }

  #[napi(catch_unwind)]
  pub fn set_progress(&mut self, id: f64, percent: f64) -> bool {
    self.sched.set_progress(to_id(id), percent)
  }

  /// A watched execution's tick: re-arms it and returns true while the execution is active.
  #[napi(catch_unwind)]
  pub fn progress_tick(&mut self, env: Env, id: f64) -> bool {
    self.change(&env, |s, now| s.progress_tick(to_id(id), now))
  }

  #[napi(catch_unwind)]
  pub fn set_concurrency(&mut self, env: Env, n: u32) -> Vec<f64> {
    let r = self.change(&env, |s, now| s.set_concurrency(n, now));
    tracing::debug!(limit = n, started = r.len(), "concurrency changed");
    ids(r)
  }

  /// Whether execution `id` holds a slot (see `Scheduler::holds_slot`).
  #[napi(catch_unwind)]
  pub fn holds_slot(&self, id: f64) -> bool {
    self.sched.holds_slot(to_id(id))
  }

  /// The store overruled execution `id`'s end with a cancel: it counts as cancelled.
  #[napi(catch_unwind)]
  pub fn overrule_cancelled(&mut self, id: f64) -> bool {
    self.sched.overrule_cancelled(to_id(id))
  }

  #[napi(catch_unwind)]
  pub fn set_paused(&mut self, env: Env, paused: bool) -> Vec<f64> {
    let r = self.change(&env, |s, now| s.set_paused(paused, now));
    tracing::debug!(paused, started = r.len(), "pause state changed");
    ids(r)
  }

  /// One resource sample: `exceeded` when it exceeds a threshold and throttling is enabled.
  /// `started` lists what the end of an episode let start.
  #[napi(catch_unwind)]
  pub fn observe_sample(&mut self, env: Env, exceeded: bool) -> Observed {
    let Some(t) = self.throttle.observe(exceeded) else {
      return Observed {
        transition: THROTTLE_UNCHANGED,
        started: Vec::new(),
      };
    };
    let began = t == Transition::Began;
    let started = ids(self.change(&env, |s, now| s.set_throttled(began, now)));
    tracing::debug!(began, started = started.len(), "throttling changed");
    Observed {
      transition: if began { THROTTLE_BEGAN } else { THROTTLE_ENDED },
      started,
    }
  }

  /// Stops accepting work; with `cancel_queued`, cancels the queue and returns those ids.
  #[napi(catch_unwind)]
  pub fn close(&mut self, env: Env, cancel_queued: bool) -> Vec<f64> {
    let r = self.change(&env, |s, now| s.close(cancel_queued, now));
    tracing::debug!(cancel_queued, cancelled = r.len(), "closed");
    ids(r)
  }

  /// Cancels everything queued and running and frees every slot (forced shutdown).
  #[napi(catch_unwind)]
  pub fn abort_all(&mut self, env: Env) -> Vec<f64> {
    let r = self.change(&env, |s, now| s.abort_all(now));
    tracing::debug!(cancelled = r.len(), "forced shutdown");
    ids(r)
  }

  #[napi(catch_unwind)]
  pub fn arm_shutdown_timer(&mut self, env: Env, ms: f64) {
    let at = self.now() + finite_or(ms, 0.0, 1e12, 0.0);
    if let Some(t) = &self.timers {
      t.send(vec![TimerCmd::Arm {
        id: 0,
        kind: TimerKind::Shutdown,
        at_ms: at,
      }]);
    }
    self.after(&env);
  }

  /// The retention sweep timer fired.
  #[napi(catch_unwind)]
  pub fn sweep(&mut self, env: Env) {
    self.change(&env, |s, now| s.sweep(now));
  }

  /// Ids dropped from retention since the last call (their JS values can go).
  #[napi(catch_unwind)]
  pub fn take_evicted(&mut self) -> Vec<f64> {
    ids(self.sched.take_evicted())
  }

  /// Stops the timer service and drops the keep-alive: nothing native holds the process.
  #[napi(catch_unwind)]
  pub fn dispose(&mut self, env: Env) {
    self.keep_alive.release(&env);
    self.timers = None;
    tracing::debug!("disposed");
  }

  #[napi(catch_unwind)]
  pub fn view(&self, id: f64) -> Option<NativeView> {
    let v = self.sched.view(to_id(id), self.now(), true)?;
    Some((v, self.wall_epoch_ms).into())
  }

  /// Like `view`, ignoring the TTL: for the wrapper to describe an execution that has just
  /// finished (eviction only happens at the start of the next batch).
  #[napi(catch_unwind)]
  pub fn view_finished(&self, id: f64) -> Option<NativeView> {
    let v = self.sched.view(to_id(id), self.now(), false)?;
    Some((v, self.wall_epoch_ms).into())
  }

  /// Milliseconds since submission (to the end, or to now), ignoring the TTL; `NOT_FOUND`
  /// when unknown.
  #[napi(catch_unwind)]
  pub fn duration_of(&self, id: f64) -> f64 {
    self
      .sched
      .view(to_id(id), self.now(), false)
      .map_or(f64::from(NOT_FOUND), |v| v.duration)
  }

  /// The status code of an execution (`STATUS_*`), `NOT_FOUND` when unknown.
  #[napi(catch_unwind)]
  pub fn status_of(&self, id: f64) -> i32 {
    self
      .sched
      .view(to_id(id), self.now(), true)
      .map_or(NOT_FOUND, |v| v.status.code())
  }

  /// Executions waiting in the queue (cheaper than `counts()`).
  #[napi(catch_unwind)]
  pub fn queued(&self) -> u32 {
    self.sched.queued().min(u32::MAX as usize) as u32
  }

  /// Whether the timeout of `id` firing now would fail its running attempt.
  #[napi(catch_unwind)]
  pub fn timeout_due(&self, id: f64) -> bool {
    self.sched.timeout_due(to_id(id), self.now())
  }

  #[napi(catch_unwind)]
  pub fn queue_order(&self) -> Vec<f64> {
    ids(self.sched.queue_order())
  }

  /// 1-based position in start order, `NOT_FOUND` unless queued.
  #[napi(catch_unwind)]
  pub fn queue_position(&self, id: f64) -> i32 {
    self
      .sched
      .queue_position(to_id(id))
      .map_or(NOT_FOUND, |p| p.min(i32::MAX as usize) as i32)
  }

  #[napi(catch_unwind)]
  pub fn running_ids(&self) -> Vec<f64> {
    ids(self.sched.running_ids())
  }

  #[napi(catch_unwind)]
  pub fn counts(&self) -> NativeCounts {
    self.sched.counts(self.now()).into()
  }

  /// Per-agent queue-wait and run-time percentiles (ms) and finishes in the last minute.
  #[napi(catch_unwind)]
  pub fn stats(&self) -> NativeStats {
    let mut st: NativeStats = (self.sched.stats(), self.now()).into();
    let (rate_limited, limit_deferred) = self.sched.limited_starts();
    st.rate_limited = rate_limited as f64;
    st.limit_deferred = limit_deferred as f64;
    st
  }

  #[napi(catch_unwind)]
  pub fn is_idle(&self) -> bool {
    self.sched.is_idle()
  }

  /// Idle with no slot held by a cancelled or timed-out agent still running (see
  /// `Scheduler::is_quiet`).
  #[napi(catch_unwind)]
  pub fn is_quiet(&self) -> bool {
    self.sched.is_quiet()
  }
}

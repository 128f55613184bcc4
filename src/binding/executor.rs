//! The binding layer: every `#[napi]` item lives here. It converts arguments, keeps the clock,
//! forwards timer requests to the timer service, and owns the one keep-alive handle.
//!
//! The JS wrapper calls these methods synchronously for every scheduling decision, so the hot
//! path (`submit`, `settle`) takes and returns plain numbers and never hops threads. Only
//! timers cross threads: the service calls back through one weak threadsafe function.
//!
//! Keep-alive: that same threadsafe function is referenced (`napi_ref_threadsafe_function`)
//! while anything is queued or running and unreferenced when the executor is idle, so an
//! idle executor never keeps Node.js alive and pending work always does.

use std::sync::Once;
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::monitor::{Sample, Thresholds, Throttle, Transition};

use crate::report;
use crate::runtime;
use crate::scheduler::{CancelOutcome, Config, ExecView, Scheduler, TimerCmd, TimerKind};
use crate::timers::TimerService;

const OP_SUBMIT: u32 = 1;
const OP_SETTLE_OK: u32 = 2;
const OP_SETTLE_FAILED: u32 = 3;
/// The mode number of watched executions (periodic progress updates).
const MODE_WATCHED: u8 = 2;

type TimerCallback = ThreadsafeFunction<Vec<f64>, (), Vec<f64>, Status, false, true>;

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

fn to_id(id: f64) -> u64 {
  if (1.0..=9_007_199_254_740_991.0).contains(&id) {
    id as u64
  } else {
    0
  }
}

/// A retry delay from JS: negative or NaN means "no retry".
fn retry_delay(ms: f64) -> Option<f64> {
  (ms >= 0.0).then(|| ms.min(1e12))
}

fn ids(v: Vec<u64>) -> Vec<f64> {
  v.into_iter().map(|id| id as f64).collect()
}

fn finite_or(v: f64, lo: f64, hi: f64, default: f64) -> f64 {
  if v.is_finite() {
    v.clamp(lo, hi)
  } else {
    default
  }
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
  pub max_cpu_percent: f64,
  pub max_memory_mb: f64,
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

#[napi(object)]
pub struct NativePercentiles {
  pub count: f64,
  pub p50: f64,
  pub p90: f64,
  pub p99: f64,
}

#[napi(object)]
pub struct NativeAgentStats {
  pub key: u32,
  pub wait: NativePercentiles,
  pub run: NativePercentiles,
}

#[napi(object)]
pub struct NativeStats {
  pub last_minute: f64,
  pub agents: Vec<NativeAgentStats>,
}

#[napi(object)]
pub struct Observed {
  pub transition: u32,
  pub started: Vec<f64>,
}

#[napi(object)]
pub struct NativeReport {
  pub total: u32,
  pub successful: u32,
  pub failed: u32,
  pub success_rate: f64,
  pub total_duration: f64,
  pub average_duration: f64,
}

/// Arithmetic of an aggregation report (see `report.rs`).
#[napi(catch_unwind)]
pub fn aggregate_report(succeeded: Vec<bool>, durations: Vec<f64>) -> NativeReport {
  let r = report::report(&succeeded, &durations);
  NativeReport {
    total: r.total,
    successful: r.successful,
    failed: r.failed,
    success_rate: r.success_rate,
    total_duration: r.total_duration,
    average_duration: r.average_duration,
  }
}

#[napi]
pub struct NativeExecutor {
  sched: Scheduler,
  epoch: Instant,
  wall_epoch_ms: f64,
  timers: Option<TimerService>,
  keepalive: Option<napi::sys::napi_threadsafe_function>,
  kept_alive: bool,
  throttle: Throttle,
  thresholds: Thresholds,
}

#[napi]
impl NativeExecutor {
  /// `on_timers(batch)` receives `[kind, id, kind, id, ...]` for every timer that fired.
  #[napi(constructor, catch_unwind)]
  pub fn new(config: NativeConfig, on_timers: Function<Vec<f64>, ()>) -> Result<Self> {
    init_tracing();
    let mut levels = config.levels;
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let cfg = Config {
      max_concurrent: config.max_concurrent.max(1),
      min_concurrent: config.min_concurrent,
      result_ttl_ms: finite_or(config.result_ttl_ms, 0.0, 1e15, 60_000.0),
      max_retained: finite_or(config.max_retained, 0.0, 1e12, 10_000.0) as usize,
      progress_interval_ms: finite_or(config.progress_interval_ms, 1.0, 1e12, 1_000.0),
      cancel_grace_ms: finite_or(config.cancel_grace_ms, 0.0, 1e12, 5_000.0),
      aging_ms: finite_or(config.aging_ms, 0.0, 1e15, 0.0),
      levels,
    };
    let thresholds = Thresholds {
      cpu: finite_or(config.max_cpu_percent, 0.0, 100.0, 80.0),
      memory: finite_or(config.max_memory_mb, 0.0, 1e15, 2048.0),
    };
    tracing::debug!(?cfg, ?thresholds, "executor created");
    let tsfn: TimerCallback = on_timers
      .build_threadsafe_function()
      .weak::<true>()
      .callee_handled::<false>()
      .build()?;
    let raw = tsfn.raw();
    let epoch = Instant::now();
    let rt = runtime::handle().map_err(|e| Error::new(Status::GenericFailure, e))?;
    let timers = TimerService::spawn(&rt, epoch, move |fired| {
      let mut flat = Vec::with_capacity(fired.len() * 2);
      for (kind, id) in fired {
        flat.push(f64::from(kind as u8));
        flat.push(id as f64);
      }
      tsfn.call(flat, ThreadsafeFunctionCallMode::NonBlocking);
    });
    Ok(NativeExecutor {
      sched: Scheduler::new(cfg),
      epoch,
      wall_epoch_ms: crate::monitor::now_ms(),
      timers: Some(timers),
      keepalive: Some(raw),
      kept_alive: false,
      throttle: Throttle::default(),
      thresholds,
    })
  }

  fn now(&self) -> f64 {
    self.epoch.elapsed().as_secs_f64() * 1000.0
  }

  /// The clock for a mutating call; retention eviction happens here, at the start of each
  /// batch, so what the previous batch finished stayed readable while it was delivered.
  fn begin(&mut self) -> f64 {
    let now = self.now();
    self.sched.evict(now);
    now
  }

  fn native_view(&self, v: ExecView) -> NativeView {
    let wall = |t: f64| self.wall_epoch_ms + t;
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

  /// Forwards timer requests and keeps the keep-alive in step with "work is pending".
  fn after(&mut self, env: &Env) {
    if let Some(cmds) = self.sched.take_timer_cmds() {
      if let Some(t) = &self.timers {
        t.send(cmds);
      }
    }
    let busy = !self.sched.is_idle();
    if busy != self.kept_alive {
      self.set_keepalive(env, busy);
    }
  }

  fn set_keepalive(&mut self, env: &Env, on: bool) {
    let Some(raw) = self.keepalive else {
      return;
    };
    // SAFETY: `raw` belongs to the threadsafe function owned by our timer service, which
    // lives as long as `self.keepalive` is Some (both are dropped together in `dispose`);
    // we are on the JS thread of `env`, as (un)ref requires.
    if unsafe { super::set_tsfn_ref(env, raw, on) } {
      self.kept_alive = on;
    }
  }

  /// The hot path: applies a batch of submissions and settlements recorded by the wrapper in
  /// `io`, four numbers per operation, in the order they happened, and writes each answer
  /// back in place. One call per batch instead of one per operation: a napi call costs more
  /// than the scheduling work it carries.
  ///
  /// - submit `[1, mode + 8 * agentKey, priority, timeoutMs]` -> `io[4k+1]` = id, positive when it started
  ///   at once, negative when queued, 0 when the executor is closed;
  /// - settle `[2 (ok) | 3 (failed), id, retryDelayMs (< 0: no retry), attempt]` ->
  ///   `io[4k+2]` = the id started in the freed slot, or 0. A failed attempt with a retry
  ///   delay waits for its next attempt instead of failing the execution.
  ///
  /// Ids that retention dropped are written to `evicted` (the wrapper drops their values).
  /// Returns `2 * evicted_count + idle`, where idle is 1 when nothing is queued or running.
  #[napi(catch_unwind)]
  pub fn sync(&mut self, env: Env, mut io: Float64ArraySlice, n: u32, mut evicted: Float64ArraySlice) -> f64 {
    // SAFETY: we are on the JS thread and nothing else touches these buffers during the call.
    let buf = unsafe { io.as_mut() };
    let n = (n as usize).min(buf.len() / 4);
    // One timestamp per batch: its operations happened within one turn of the event loop.
    let now = self.begin();
    for op in buf[..n * 4].chunks_exact_mut(4) {
      match op[0] as u32 {
        OP_SUBMIT => {
          // mode + 8 * agent key
          let packed = if op[1].is_finite() {
            op[1].clamp(0.0, 1e9) as u64
          } else {
            0
          };
          let mode = (packed & 7) as u8;
          let agent = (packed >> 3).min(u64::from(u16::MAX)) as u16;
          let priority = if op[2].is_finite() {
            op[2].clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
          } else {
            0
          };
          op[1] = match self
            .sched
            .submit(mode, agent, mode == MODE_WATCHED, priority, op[3], now)
          {
            None => 0.0,
            Some((id, true)) => id as f64,
            Some((id, false)) => -(id as f64),
          };
        }
        code @ (OP_SETTLE_OK | OP_SETTLE_FAILED) => {
          let attempt = if op[3].is_finite() {
            op[3].clamp(0.0, 65535.0) as u16
          } else {
            0
          };
          let (_, next) = self.sched.settle(
            to_id(op[1]),
            attempt,
            code == OP_SETTLE_OK,
            retry_delay(op[2]),
            now,
          );
          op[2] = next.map_or(0.0, |id| id as f64);
        }
        _ => op[1] = 0.0,
      }
    }
    self.after(&env);
    // SAFETY: as above.
    let dropped = self.sched.drain_evicted_into(unsafe { evicted.as_mut() });
    let idle = if self.sched.is_idle() { 1.0 } else { 0.0 };
    2.0 * dropped as f64 + idle
  }

  /// 0 not found, 2 cancelled while queued, 3 cancelled while running,
  /// 10 + status code when it had already finished (12 completed, 13 failed, 14 cancelled).
  #[napi(catch_unwind)]
  pub fn cancel(&mut self, env: Env, id: f64) -> u32 {
    let now = self.begin();
    let r = match self.sched.cancel(to_id(id), now) {
      CancelOutcome::NotFound => 0,
      CancelOutcome::WasQueued => 2,
      CancelOutcome::WasRunning => 3,
      CancelOutcome::Finished(s) => 10 + s as u32,
    };
    tracing::debug!(id, outcome = r, "cancel");
    self.after(&env);
    r
  }

  /// The timeout fired: true when a running attempt failed by it (`retry_delay_ms` >= 0:
  /// the execution waits that long for its next attempt instead of failing).
  #[napi(catch_unwind)]
  pub fn timeout(&mut self, env: Env, id: f64, retry_delay_ms: f64) -> bool {
    let now = self.begin();
    let r = self.sched.timeout(to_id(id), retry_delay(retry_delay_ms), now);
    tracing::debug!(id, timed_out = r, "timeout fired");
    self.after(&env);
    r
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
    let now = self.begin();
    self.sched.restart_timeout(to_id(id), now);
    self.after(&env);
  }

  /// The retry delay of `id` ended: its next attempt is queued. Returns what started.
  #[napi(catch_unwind)]
  pub fn retry_due(&mut self, env: Env, id: f64) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.retry_due(to_id(id), now);
    self.after(&env);
    ids(r)
  }

  #[napi(catch_unwind)]
  pub fn grace_expired(&mut self, env: Env, id: f64) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.grace_expired(to_id(id), now);
    tracing::debug!(id, started = r.len(), "grace period over, slot freed");
    self.after(&env);
    ids(r)
  }

  /// Starts whatever the limits allow now.
  #[napi(catch_unwind)]
  pub fn pump(&mut self, env: Env) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.pump(now);
    self.after(&env);
    ids(r)
  }

  #[napi(catch_unwind)]
  pub fn set_progress(&mut self, id: f64, percent: f64) -> bool {
    self.sched.set_progress(to_id(id), percent)
  }

  /// A watched execution's tick: re-arms it and returns true while the execution is active.
  #[napi(catch_unwind)]
  pub fn progress_tick(&mut self, env: Env, id: f64) -> bool {
    let now = self.begin();
    let r = self.sched.progress_tick(to_id(id), now);
    self.after(&env);
    r
  }

  #[napi(catch_unwind)]
  pub fn set_concurrency(&mut self, env: Env, n: u32) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.set_concurrency(n, now);
    tracing::debug!(limit = n, started = r.len(), "concurrency changed");
    self.after(&env);
    ids(r)
  }

  #[napi(catch_unwind)]
  pub fn set_paused(&mut self, env: Env, paused: bool) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.set_paused(paused, now);
    tracing::debug!(paused, started = r.len(), "pause state changed");
    self.after(&env);
    ids(r)
  }

  /// Feeds one resource sample to the throttle rules. `transition` is 1 when a throttling
  /// episode begins, 2 when it ends, 0 otherwise; `started` lists what the end let start.
  #[napi(catch_unwind)]
  pub fn observe_sample(&mut self, env: Env, cpu: f64, memory: f64, enabled: bool) -> Observed {
    let sample = Sample {
      cpu,
      memory,
      total_memory: 0.0,
      free_memory: 0.0,
      process_cpu: 0.0,
      load_average: [0.0; 3],
      timestamp: 0.0,
      processes: 0,
    };
    let now = self.begin();
    let r = match self.throttle.observe(&sample, self.thresholds, enabled) {
      None => Observed {
        transition: 0,
        started: Vec::new(),
      },
      Some(Transition::Throttled(exceeded)) => {
        tracing::debug!(
          cpu,
          memory,
          ?exceeded,
          "throttling: new starts limited to minConcurrentAgents"
        );
        let started = ids(self.sched.set_throttled(true, now));
        Observed {
          transition: 1,
          started,
        }
      }
      Some(Transition::Resumed) => {
        let started = ids(self.sched.set_throttled(false, now));
        tracing::debug!(cpu, memory, started = started.len(), "throttle lifted");
        Observed {
          transition: 2,
          started,
        }
      }
    };
    self.after(&env);
    r
  }

  /// Stops accepting work; with `cancel_queued`, cancels the queue and returns those ids.
  #[napi(catch_unwind)]
  pub fn close(&mut self, env: Env, cancel_queued: bool) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.close(cancel_queued, now);
    tracing::debug!(cancel_queued, cancelled = r.len(), "closed");
    self.after(&env);
    ids(r)
  }

  /// Cancels everything queued and running and frees every slot (forced shutdown).
  #[napi(catch_unwind)]
  pub fn abort_all(&mut self, env: Env) -> Vec<f64> {
    let now = self.begin();
    let r = self.sched.abort_all(now);
    tracing::debug!(cancelled = r.len(), "forced shutdown");
    self.after(&env);
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
    let now = self.begin();
    self.sched.sweep(now);
    self.after(&env);
  }

  /// Ids dropped from retention since the last call (their JS values can go).
  #[napi(catch_unwind)]
  pub fn take_evicted(&mut self) -> Vec<f64> {
    ids(self.sched.take_evicted())
  }

  /// Stops the timer service and drops the keep-alive: nothing native holds the process.
  #[napi(catch_unwind)]
  pub fn dispose(&mut self, env: Env) {
    if self.kept_alive {
      self.set_keepalive(&env, false);
    }
    self.keepalive = None;
    self.timers = None;
    tracing::debug!("disposed");
  }

  #[napi(catch_unwind)]
  pub fn view(&self, id: f64) -> Option<NativeView> {
    let v = self.sched.view(to_id(id), self.now(), true)?;
    Some(self.native_view(v))
  }

  /// Like `view`, ignoring the TTL: for the wrapper to describe an execution that has just
  /// finished (eviction only happens at the start of the next batch).
  #[napi(catch_unwind)]
  pub fn view_finished(&self, id: f64) -> Option<NativeView> {
    let v = self.sched.view(to_id(id), self.now(), false)?;
    Some(self.native_view(v))
  }

  /// Milliseconds since submission (to the end, or to now), ignoring the TTL; -1 when unknown.
  #[napi(catch_unwind)]
  pub fn duration_of(&self, id: f64) -> f64 {
    self
      .sched
      .view(to_id(id), self.now(), false)
      .map_or(-1.0, |v| v.duration)
  }

  /// Status of an execution as a small integer (see `Status`), -1 when unknown.
  #[napi(catch_unwind)]
  pub fn status_of(&self, id: f64) -> i32 {
    self
      .sched
      .view(to_id(id), self.now(), true)
      .map_or(-1, |v| i32::from(v.status as u8))
  }

  #[napi(catch_unwind)]
  pub fn queue_order(&self) -> Vec<f64> {
    ids(self.sched.queue_order())
  }

  #[napi(catch_unwind)]
  pub fn queue_position(&self, id: f64) -> i32 {
    self
      .sched
      .queue_position(to_id(id))
      .map_or(-1, |p| p.min(i32::MAX as usize) as i32)
  }

  #[napi(catch_unwind)]
  pub fn running_ids(&self) -> Vec<f64> {
    ids(self.sched.running_ids())
  }

  #[napi(catch_unwind)]
  pub fn counts(&self) -> NativeCounts {
    let t = self.sched.totals();
    NativeCounts {
      queued: self.sched.queued() as u32,
      running: self.sched.running() as u32,
      slots_used: self.sched.slots_used(),
      max_concurrent: self.sched.max_concurrent(),
      paused: self.sched.is_paused(),
      throttled: self.sched.is_throttled(),
      closed: self.sched.is_closed(),
      submitted: t.submitted as f64,
      completed: t.completed as f64,
      failed: t.failed as f64,
      cancelled: t.cancelled as f64,
      retained: self.sched.retained(self.now()) as u32,
      records: self.sched.records() as u32,
    }
  }

  /// Per-agent queue-wait and run-time percentiles (ms) and finishes in the last minute.
  #[napi(catch_unwind)]
  pub fn stats(&self) -> NativeStats {
    let st = self.sched.stats();
    let q = |h: &crate::stats::Histogram| NativePercentiles {
      count: h.count() as f64,
      p50: h.quantile(0.5),
      p90: h.quantile(0.9),
      p99: h.quantile(0.99),
    };
    NativeStats {
      last_minute: st.last_minute(self.now()) as f64,
      agents: st
        .agents()
        .map(|(key, a)| NativeAgentStats {
          key: u32::from(key),
          wait: q(&a.wait),
          run: q(&a.run),
        })
        .collect(),
    }
  }

  #[napi(catch_unwind)]
  pub fn is_idle(&self) -> bool {
    self.sched.is_idle()
  }
}

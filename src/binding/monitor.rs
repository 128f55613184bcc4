//! `NativeMonitor`: resource sampling on the shared tokio runtime, delivered to JS through a
//! weak `JsCallback` (it never keeps Node.js alive). `stop()` aborts the sampling task and
//! joins it before returning. When Node.js exits, the callback is closed and the sampling
//! loop ends at its next tick (a call that reports `Closing` ends it).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::js_callback::JsCallback;
use crate::protocol::MAX_DELAY_MS;
use crate::system::probes::{Sample, Sampler, Thresholds, Trends};
use crate::system::runtime;

#[napi(object)]
#[derive(Clone)]
pub struct NativeSample {
  pub cpu: f64,
  pub memory: f64,
  pub total_memory: f64,
  pub free_memory: f64,
  pub process_cpu: f64,
  pub load_average: Vec<f64>,
  pub timestamp: f64,
  pub processes: u32,
  pub exceeded: Vec<String>,
}

#[napi(object)]
pub struct TrendPoint {
  pub value: f64,
  pub timestamp: f64,
}

#[napi(object)]
pub struct NativeTrends {
  pub cpu: Vec<TrendPoint>,
  pub memory: Vec<TrendPoint>,
}

struct Shared {
  sampler: Option<Sampler>,
  trends: Trends,
  thresholds: Thresholds,
  error: Option<String>,
}

impl Shared {
  fn take_sample(&mut self) -> Option<NativeSample> {
    if self.sampler.is_none() && self.error.is_none() {
      match Sampler::new() {
        Ok(s) => self.sampler = Some(s),
        Err(e) => self.error = Some(e),
      }
    }
    let sample = self.sampler.as_mut()?.sample();
    let out = NativeSample::from((&sample, self.thresholds));
    self.trends.push(sample);
    Some(out)
  }
}

/// A sample with the names of the thresholds it exceeds.
impl From<(&Sample, Thresholds)> for NativeSample {
  fn from((s, t): (&Sample, Thresholds)) -> Self {
    NativeSample {
      cpu: s.cpu,
      memory: s.memory,
      total_memory: s.total_memory,
      free_memory: s.free_memory,
      process_cpu: s.process_cpu,
      load_average: s.load_average.to_vec(),
      timestamp: s.timestamp,
      processes: s.processes,
      exceeded: s.exceeded(t).into_iter().map(String::from).collect(),
    }
  }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
  m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Running {
  task: JoinHandle<()>,
}

#[napi]
pub struct NativeMonitor {
  shared: Arc<Mutex<Shared>>,
  callback: JsCallback<NativeSample>,
  rt: Handle,
  running: Option<Running>,
}

#[napi]
impl NativeMonitor {
  #[napi(constructor, catch_unwind)]
  pub fn new(
    cpu_threshold: f64,
    memory_threshold: f64,
    on_sample: Function<NativeSample, ()>,
  ) -> Result<Self> {
    let callback = JsCallback::new(on_sample)?;
    let rt = runtime::handle().map_err(|e| Error::new(Status::GenericFailure, e))?;
    Ok(NativeMonitor {
      shared: Arc::new(Mutex::new(Shared {
        // Created now: CPU is measured from here, not from the first sample.
        sampler: Sampler::new().ok(),
        trends: Trends::default(),
        thresholds: Thresholds {
          cpu: cpu_threshold,
          memory: memory_threshold,
        },
        error: None,
      })),
      callback,
      rt,
      running: None,
    })
  }

  /// Starts periodic sampling; false when it was already running.
  #[napi(catch_unwind)]
  pub fn start(&mut self, interval_ms: f64) -> Result<bool> {
    if self.running.is_some() {
      return Ok(false);
    }
    if interval_ms.is_nan() {
      return Err(Error::new(Status::InvalidArg, "interval must be a number"));
    }
    let interval = Duration::from_secs_f64(interval_ms.clamp(1.0, f64::from(MAX_DELAY_MS)) / 1000.0);
    let shared = Arc::clone(&self.shared);
    let callback = self.callback.clone();
    let task = self.rt.spawn(async move {
      // The first tick is immediate: limits apply from the start, not one interval later.
      let mut ticker = tokio::time::interval(interval);
      ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
      loop {
        ticker.tick().await;
        let sample = lock(&shared).take_sample();
        if let Some(sample) = sample {
          if callback.call(sample) == Status::Closing {
            break; // Node.js is shutting down this environment
          }
        }
      }
    });
    // No env cleanup hook: napi-rs leaks the hook's box on removal (one per start/stop).
    tracing::debug!(interval_ms, "monitor started");
    self.running = Some(Running { task });
    Ok(true)
  }

  /// Stops sampling and waits for the task to end; false when it was not running.
  #[napi(catch_unwind)]
  pub fn stop(&mut self) -> Result<bool> {
    let Some(mut running) = self.running.take() else {
      return Ok(false);
    };
    running.task.abort();
    // Join: we are on the JS thread, never a runtime thread, so blocking here is allowed.
    let _ = self.rt.block_on(&mut running.task);
    tracing::debug!("monitor stopped");
    Ok(true)
  }

  /// Takes a sample now (on the calling thread) and records it in the trends.
  #[napi(catch_unwind)]
  pub fn sample_now(&self) -> Result<NativeSample> {
    let mut shared = lock(&self.shared);
    match shared.take_sample() {
      Some(s) => Ok(s),
      None => Err(Error::new(
        Status::GenericFailure,
        shared
          .error
          .clone()
          .unwrap_or_else(|| "sampling failed".to_string()),
      )),
    }
  }

  /// The CPU threshold (whole-machine busy percent) samples are checked against.
  #[napi(getter, catch_unwind)]
  pub fn cpu_threshold(&self) -> f64 {
    lock(&self.shared).thresholds.cpu
  }

  /// The memory threshold (MB) samples are checked against.
  #[napi(getter, catch_unwind)]
  pub fn memory_threshold(&self) -> f64 {
    lock(&self.shared).thresholds.memory
  }

  #[napi(catch_unwind)]
  pub fn latest(&self) -> Option<NativeSample> {
    let shared = lock(&self.shared);
    let t = shared.thresholds;
    shared.trends.latest().map(|s| (s, t).into())
  }

  #[napi(catch_unwind)]
  pub fn trends(&self) -> NativeTrends {
    let shared = lock(&self.shared);
    NativeTrends {
      cpu: shared
        .trends
        .iter()
        .map(|s| TrendPoint {
          value: s.cpu,
          timestamp: s.timestamp,
        })
        .collect(),
      memory: shared
        .trends
        .iter()
        .map(|s| TrendPoint {
          value: s.memory,
          timestamp: s.timestamp,
        })
        .collect(),
    }
  }
}

impl Drop for NativeMonitor {
  fn drop(&mut self) {
    if let Some(running) = self.running.take() {
      running.task.abort();
    }
  }
}

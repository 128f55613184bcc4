//! `NativeCommands`: the command agents of one executor (see `crate::command`).
//!
//! Commands are spawned synchronously on the JS thread (the pid, or the reason the program
//! could not start, is known at once); their pipes and exits are driven on the tokio runtime.
//! Events reach JS through one weak `JsCallback`, in batches: lines, progress values, and
//! exactly one exit per command.
//!
//! Keep-alive: that callback is referenced while any command has not been released
//! by JS (its exit not yet handled), so Node.js stays up while a command runs — or is being
//! terminated — and never because of an idle executor. A command's exit is reported only
//! once its process group has ended (or been sent SIGKILL), so releasing it is safe.
//!
//! Backpressure: events go through a bounded channel and the pump waits for JS to handle
//! each batch before it sends the next, so a command printing faster than JS can listen is
//! slowed down (its pipe fills) instead of filling memory.
//!
//! Environment teardown (a worker's `terminate()`, where no JS 'exit' handler runs): every
//! running command of the environment is in its instance data, whose finalizer sends them
//! SIGKILL.
//!
//! Output strings are made from Latin-1 or UTF-16 prepared on the runtime (`command::Text`):
//! the JS thread only copies them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::js_callback::{JsCallback, KeepAlive};
use crate::command::{self, Event, Output, ProgressMode, Running, Spec, Text, Usage};
use crate::protocol::{EVENT_EXIT, EVENT_LINES, EVENT_PROGRESS, PROGRESS_JSON, PROGRESS_REGEXP};
use crate::system::runtime;

/// Events per call into JS.
const EVENTS_PER_BATCH: usize = 1024;
/// Output lines per call into JS (each may be matched and emitted there).
const LINES_PER_BATCH: usize = 2048;
/// Events waiting for JS, across the executor's commands, before readers wait.
const EVENT_QUEUE: usize = 256;

/// Distinguishes the `NativeCommands` objects of a process in the environment registry.
static NEXT_OWNER: AtomicU32 = AtomicU32::new(1);

/// Every running command of one Node.js environment, by `owner << 32 | handle`.
#[derive(Default)]
struct EnvCommands {
  running: HashMap<u64, Running>,
}

/// This environment's registry, created (with its teardown finalizer) on first use.
fn env_commands(env: &Env) -> Option<&'static mut EnvCommands> {
  if let Ok(Some(registry)) = env.get_instance_data::<EnvCommands>() {
    return Some(registry);
  }
  env
    .set_instance_data(EnvCommands::default(), (), |ctx| {
      for r in ctx.value.running.values() {
        r.kill_now();
      }
    })
    .ok()?;
  env.get_instance_data::<EnvCommands>().ok().flatten()
}

/// A command as the wrapper validated it.
#[napi(object)]
pub struct NativeCommandSpec {
  pub command: String,
  pub args: Vec<String>,
  pub cwd: Option<String>,
  pub env_keys: Vec<String>,
  /// `null` removes the variable.
  pub env_values: Vec<Option<String>>,
  pub inherit_env: bool,
  pub input: Option<Buffer>,
  pub max_output_bytes: f64,
  pub kill_signal: i32,
  pub kill_grace_ms: f64,
  /// `PROGRESS_OFF`, `PROGRESS_REGEXP` or `PROGRESS_JSON`.
  pub progress: u32,
}

impl From<NativeCommandSpec> for Spec {
  fn from(spec: NativeCommandSpec) -> Spec {
    let progress = match spec.progress {
      PROGRESS_REGEXP => ProgressMode::Lines,
      PROGRESS_JSON => ProgressMode::JsonLines,
      _ => ProgressMode::Off,
    };
    let max_output_bytes = if spec.max_output_bytes.is_finite() {
      spec.max_output_bytes.clamp(0.0, (isize::MAX / 2) as f64) as usize
    } else {
      1 << 20
    };
    let kill_grace = if spec.kill_grace_ms.is_finite() {
      Duration::from_secs_f64(spec.kill_grace_ms.clamp(0.0, 1e12) / 1000.0)
    } else {
      Duration::from_secs(5)
    };
    Spec {
      program: spec.command,
      args: spec.args,
      cwd: spec.cwd,
      env: spec.env_keys.into_iter().zip(spec.env_values).collect(),
      inherit_env: spec.inherit_env,
      input: spec.input.map(|b| b.to_vec()),
      max_output_bytes,
      kill_signal: spec.kill_signal,
      kill_grace,
      progress,
    }
  }
}

/// A JS string made from `Text` with a plain copy.
pub struct JsText(Text);

impl TypeName for JsText {
  fn type_name() -> &'static str {
    "string"
  }

  fn value_type() -> ValueType {
    ValueType::String
  }
}

impl ToNapiValue for JsText {
  unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
    let mut out = std::ptr::null_mut();
    // SAFETY (both calls): the pointer and length describe a live buffer; napi copies it.
    let status = match &val.0 {
      Text::Latin1(b) => unsafe {
        sys::napi_create_string_latin1(env, b.as_ptr().cast(), b.len() as isize, &mut out)
      },
      Text::Utf16(u) => unsafe { sys::napi_create_string_utf16(env, u.as_ptr(), u.len() as isize, &mut out) },
    };
    if status == sys::Status::napi_ok {
      return Ok(out);
    }
    // The caps keep every text far below V8's longest string; should one still fail, an
    // empty string, not a lost batch of events.
    let mut exception = std::ptr::null_mut();
    // SAFETY: clears the exception the failed call may have left; an empty string.
    unsafe {
      sys::napi_get_and_clear_last_exception(env, &mut exception);
      check_status!(sys::napi_create_string_latin1(env, c"".as_ptr(), 0, &mut out))?;
    }
    Ok(out)
  }
}

/// What a command's streams produced: `heapBytes` is what the two strings take in the JS
/// heap.
#[napi(object, object_from_js = false)]
pub struct NativeCommandOutput {
  #[napi(ts_type = "string")]
  pub stdout: JsText,
  #[napi(ts_type = "string")]
  pub stderr: JsText,
  pub stdout_bytes: f64,
  pub stderr_bytes: f64,
  pub truncated: bool,
  pub heap_bytes: f64,
}

impl From<Output> for NativeCommandOutput {
  fn from(o: Output) -> Self {
    NativeCommandOutput {
      heap_bytes: (o.stdout.heap_bytes() + o.stderr.heap_bytes()) as f64,
      stdout: JsText(o.stdout),
      stderr: JsText(o.stderr),
      stdout_bytes: o.stdout_bytes as f64,
      stderr_bytes: o.stderr_bytes as f64,
      truncated: o.truncated,
    }
  }
}

#[napi(object)]
pub struct NativeSpawned {
  /// 0 when the command could not be started.
  pub handle: u32,
  pub pid: u32,
  /// The OS error number when it could not be started.
  pub errno: Option<i32>,
  pub error: Option<String>,
}

/// One event: `kind` `EVENT_LINES` (`stream`: `STREAM_STDOUT` / `STREAM_STDERR`, `lines`),
/// `EVENT_PROGRESS` (`progress`), `EVENT_EXIT` (the remaining fields; `heapBytes` as in
/// `NativeCommandOutput`).
#[napi(object, object_from_js = false)]
pub struct NativeCommandEvent {
  pub kind: u32,
  pub handle: u32,
  pub stream: Option<u32>,
  pub lines: Option<Vec<String>>,
  pub progress: Option<f64>,
  pub exit_code: Option<i32>,
  pub signal: Option<i32>,
  #[napi(ts_type = "string")]
  pub stdout: Option<JsText>,
  #[napi(ts_type = "string")]
  pub stderr: Option<JsText>,
  pub stdout_bytes: Option<f64>,
  pub stderr_bytes: Option<f64>,
  pub truncated: Option<bool>,
  pub heap_bytes: Option<f64>,
  pub duration_ms: Option<f64>,
  pub wait_error: Option<String>,
}

impl NativeCommandEvent {
  fn empty(kind: u32, handle: u32) -> Self {
    NativeCommandEvent {
      kind,
      handle,
      stream: None,
      lines: None,
      progress: None,
      exit_code: None,
      signal: None,
      stdout: None,
      stderr: None,
      stdout_bytes: None,
      stderr_bytes: None,
      truncated: None,
      heap_bytes: None,
      duration_ms: None,
      wait_error: None,
    }
  }
}

impl From<Event> for NativeCommandEvent {
  fn from(ev: Event) -> Self {
    match ev {
      Event::Lines {
        handle,
        stream,
        lines,
      } => NativeCommandEvent {
        stream: Some(stream as u32),
        lines: Some(lines),
        ..NativeCommandEvent::empty(EVENT_LINES, handle)
      },
      Event::Progress { handle, value } => NativeCommandEvent {
        progress: Some(value),
        ..NativeCommandEvent::empty(EVENT_PROGRESS, handle)
      },
      Event::Exit(e) => NativeCommandEvent {
        exit_code: e.exit_code,
        signal: e.signal,
        heap_bytes: Some((e.output.stdout.heap_bytes() + e.output.stderr.heap_bytes()) as f64),
        stdout: Some(JsText(e.output.stdout)),
        stderr: Some(JsText(e.output.stderr)),
        stdout_bytes: Some(e.output.stdout_bytes as f64),
        stderr_bytes: Some(e.output.stderr_bytes as f64),
        truncated: Some(e.output.truncated),
        duration_ms: Some(e.duration_ms),
        wait_error: e.wait_error,
        ..NativeCommandEvent::empty(EVENT_EXIT, e.handle)
      },
    }
  }
}

#[napi(object)]
pub struct NativeUsage {
  pub pid: u32,
  pub cpu_percent: Option<f64>,
  pub rss_mb: Option<f64>,
}

impl From<Usage> for NativeUsage {
  fn from(u: Usage) -> Self {
    NativeUsage {
      pid: u.pid,
      cpu_percent: u.cpu_percent,
      rss_mb: u.rss_bytes.map(|b| (b / 1048576.0 * 100.0).round() / 100.0),
    }
  }
}

#[napi]
pub struct NativeCommands {
  owner: u32,
  rt: Handle,
  running: HashMap<u32, Running>,
  next: u32,
  forward: Arc<AtomicBool>,
  tx: mpsc::Sender<Event>,
  /// On while any command has not been released.
  keep_alive: KeepAlive,
}

#[napi]
impl NativeCommands {
  /// `on_events(batch)` receives arrays of `NativeCommandEvent`.
  #[napi(constructor, catch_unwind)]
  pub fn new(on_events: Function<Vec<NativeCommandEvent>, ()>) -> Result<Self> {
    let rt = runtime::handle().map_err(|e| Error::new(Status::GenericFailure, e))?;
    let pump = JsCallback::new(on_events)?;
    let keep_alive = pump.keep_alive();
    let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    // Ends when every sender is gone: this object and every command it started.
    rt.spawn(async move {
      while let Some(first) = rx.recv().await {
        let mut lines = first.line_count();
        let mut batch = vec![NativeCommandEvent::from(first)];
        // Bounded in lines too: one call into JS stays short, so its timers keep running
        // while a chatty command is being listened to.
        while batch.len() < EVENTS_PER_BATCH && lines < LINES_PER_BATCH {
          match rx.try_recv() {
            Ok(ev) => {
              lines += ev.line_count();
              batch.push(NativeCommandEvent::from(ev));
            }
            Err(_) => break,
          }
        }
        // Waits until JS has handled the batch (a throw comes back as Err, not as a crash).
        if let Err(e) = pump.call_async_catch(batch).await {
          if e.status == Status::Closing {
            break; // Node.js is shutting down
          }
          tracing::debug!(error = %e, "command events callback failed");
        }
      }
    });
    Ok(NativeCommands {
      owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
      rt,
      running: HashMap::new(),
      next: 0,
      forward: Arc::new(AtomicBool::new(false)),
      tx,
      keep_alive,
    })
  }

  /// Starts a command. Never throws for a program that cannot start: the reason comes back
  /// in `errno` / `error` with `handle` 0.
  #[napi(catch_unwind)]
  pub fn spawn(&mut self, env: Env, spec: NativeCommandSpec) -> NativeSpawned {
    let spec = Spec::from(spec);
    self.next = self.next.checked_add(1).unwrap_or(1);
    while self.running.contains_key(&self.next) {
      self.next = self.next.checked_add(1).unwrap_or(1);
    }
    let handle = self.next;
    match command::spawn(&self.rt, handle, spec, Arc::clone(&self.forward), self.tx.clone()) {
      Ok(running) => {
        let pid = running.pid();
        if let Some(registry) = env_commands(&env) {
          registry.running.insert(self.key(handle), running.clone());
        }
        self.running.insert(handle, running);
        self.keep_alive.set(&env, true);
        NativeSpawned {
          handle,
          pid,
          errno: None,
          error: None,
        }
      }
      Err(e) => NativeSpawned {
        handle: 0,
        pid: 0,
        errno: e.raw_os_error(),
        error: Some(e.to_string()),
      },
    }
  }

  /// Cancel, timeout, forced shutdown: the kill signal to the command's process group, then
  /// SIGKILL after the grace period. False when the command is not running.
  #[napi(catch_unwind)]
  pub fn terminate(&self, handle: u32) -> bool {
    match self.running.get(&handle) {
      Some(r) if !r.has_exited() => {
        r.terminate();
        true
      }
      _ => false,
    }
  }

  /// SIGKILL to every command's group now (Node.js is exiting).
  #[napi(catch_unwind)]
  pub fn kill_all_now(&self) {
    for r in self.running.values() {
      r.kill_now();
    }
  }

  /// What a running command's streams have produced so far (a cancelled or timed-out
  /// command's error carries it); null once its exit has been released.
  #[napi(catch_unwind)]
  pub fn output(&self, handle: u32) -> Option<NativeCommandOutput> {
    Some(self.running.get(&handle)?.output().into())
  }

  #[napi(catch_unwind)]
  pub fn usage(&self, handle: u32) -> Option<NativeUsage> {
    Some(self.running.get(&handle)?.usage().into())
  }

  /// Whether every line of every command is sent to JS (a `command-output` listener).
  #[napi(catch_unwind)]
  pub fn set_forward_output(&self, on: bool) {
    self.forward.store(on, Ordering::Relaxed);
  }

  /// JS has handled the command's exit: forget it, and let Node.js go when none is left.
  #[napi(catch_unwind)]
  pub fn release(&mut self, env: Env, handle: u32) {
    self.running.remove(&handle);
    if let Some(registry) = env_commands(&env) {
      registry.running.remove(&self.key(handle));
    }
    self.keep_alive.set(&env, !self.running.is_empty());
  }

  #[napi(getter, catch_unwind)]
  pub fn live(&self) -> u32 {
    self.running.len().min(u32::MAX as usize) as u32
  }

  fn key(&self, handle: u32) -> u64 {
    (u64::from(self.owner) << 32) | u64::from(handle)
  }
}

//! Command agents: real programs run on the tokio runtime, so waiting on them costs the JS
//! thread nothing. No napi in here (the binding is `binding::command`).
//!
//! - Spawned without a shell, in a new process group (the child is its leader), so the whole
//!   tree it starts can be signalled at once. Spawning uses posix_spawn (no fork), which keeps
//!   it cheap on the JS thread however large the Node.js process is; the child inherits no
//!   descriptor beyond 0-2 and no ignored signal (see `spawn`).
//! - stdout and stderr are read to the end and kept up to `max_output_bytes` each; the rest is
//!   counted and discarded, so a chatty child can neither fill our memory nor block on a full
//!   pipe. The text made of them is at most `max_output_bytes` of UTF-8 too, whatever the
//!   bytes. Lines are split only when someone wants them (progress, `command-output`).
//! - Termination (cancel, timeout, forced shutdown, and whatever of the group outlives its
//!   leader): `kill_signal` to the group (then `SIGCONT`, for stopped members), `SIGKILL` to
//!   the group after `kill_grace`.
//! - Every command ends with exactly one [`Event::Exit`], even when its pipes are held open by
//!   a process that left the group: reading stops `kill_grace` + 500 ms after the leader
//!   exited.
//!
//! The files:
//! - `platform`: what differs between platforms, one module each: a started command (pid,
//!   pipes, exit; on Linux started by `spawn` and reaped by `reaper`, elsewhere by
//!   `tokio::process`), signals, clock ticks and `/proc` scans.
//! - `spawn` (Linux): program lookup along the child's PATH, `posix_spawn` and the fork
//!   fallback.
//! - `reaper` (Linux): the thread that reaps every command (pidfd + epoll, or polling).
//! - `output`: reads the pipes.
//! - `sentinel`: guards the groups against this process dying without running JavaScript.

mod output;
mod platform;
#[cfg(target_os = "linux")]
mod reaper;
pub mod sentinel;
#[cfg(target_os = "linux")]
mod spawn;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::protocol;
pub use output::{json_progress, Text};
use output::{read_stream, Capture, Captures, Reader};
use platform::{
  clock_ticks_per_second, end_without_signals, exit_signal, group_alive, signal_group, signal_pid,
  tree_usage, Child, POLL_FOR_EXIT, SIGCONT, SIGKILL,
};

/// Longest line forwarded for progress or `command-output`; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long the pipes may stay open once the command's group has ended.
const PIPE_DRAIN: Duration = Duration::from_millis(500);
/// Where tokio reaps (not Linux): how often the waiting task checks for the leader's exit
/// itself (`POLL_FOR_EXIT`; Linux has a reaper thread, see `reaper`).
const EXIT_POLL: Duration = Duration::from_millis(250);
/// Longest pause between two checks of a group that outlived its leader; also how old a
/// shared `/proc` scan may be to answer such a check.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// How stdout reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
  Off,
  /// Every stdout line goes to JS, which matches the user's RegExp.
  Lines,
  /// `{"progress": n}` lines are parsed here; only the numbers go to JS.
  JsonLines,
}

#[derive(Debug, Clone)]
pub struct Spec {
  pub program: String,
  pub args: Vec<String>,
  pub cwd: Option<String>,
  /// Variables to set (`Some`) or remove (`None`).
  pub env: Vec<(String, Option<String>)>,
  pub inherit_env: bool,
  pub input: Option<Vec<u8>>,
  pub max_output_bytes: usize,
  pub kill_signal: i32,
  pub kill_grace: Duration,
  pub progress: ProgressMode,
}

/// An output stream; the discriminants are the protocol's `STREAM_*` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
  Stdout = protocol::STREAM_STDOUT,
  Stderr = protocol::STREAM_STDERR,
}

/// What a command's two streams produced (so far, or in all).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
  pub stdout: Text,
  pub stderr: Text,
  /// Bytes the stream produced in all, kept or not.
  pub stdout_bytes: u64,
  pub stderr_bytes: u64,
  /// A stream was cut at the cap.
  pub truncated: bool,
}

impl Output {
  fn of(out: Capture, err: Capture, cap: usize) -> Output {
    let (stdout_bytes, stderr_bytes) = (out.total, err.total);
    let (stdout, out_cut) = out.into_text(cap);
    let (stderr, err_cut) = err.into_text(cap);
    Output {
      stdout,
      stderr,
      stdout_bytes,
      stderr_bytes,
      truncated: out_cut || err_cut,
    }
  }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
  pub handle: u32,
  pub pid: u32,
  pub exit_code: Option<i32>,
  pub signal: Option<i32>,
  pub output: Output,
  pub duration_ms: f64,
  /// Set when waiting for the process failed (the OS lost track of it).
  pub wait_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
  Lines {
    handle: u32,
    stream: Stream,
    lines: Vec<String>,
  },
  Progress {
    handle: u32,
    value: f64,
  },
  Exit(Exit),
}

impl Event {
  pub fn line_count(&self) -> usize {
    match self {
      Event::Lines { lines, .. } => lines.len(),
      _ => 0,
    }
  }
}

/// Shared between the task that waits for the command and the JS thread that may kill it.
#[derive(Debug)]
struct State {
  pid: u32,
  /// The leader has exited and been reaped: its pid may now be reused by anyone.
  exited: AtomicBool,
  /// The group was seen empty after the leader exited, or got its SIGKILL then: from now on
  /// its id may name someone else's group, so it is never signalled again.
  group_done: AtomicBool,
  kill_signal: i32,
  kill_grace: Duration,
  /// Set by the first `terminate()`: when the group is due its SIGKILL.
  kill_deadline: Mutex<Option<Instant>>,
  /// Wakes the waiting task when `terminate()` sets the deadline.
  wake: tokio::sync::Notify,
  /// The previous usage reading: (CPU ticks of the tree, when).
  last_usage: Mutex<(u64, Instant)>,
}

impl State {
  fn deadline(&self) -> Option<Instant> {
    self.kill_deadline.lock().map(|d| *d).unwrap_or(None)
  }

  /// `kill_signal` to the group now; the waiting task sends `SIGKILL` to what is left of it
  /// `kill_grace` later. Only the first call acts.
  fn terminate(&self) {
    {
      let Ok(mut deadline) = self.kill_deadline.lock() else {
        return;
      };
      if deadline.is_some() || self.group_done.load(Ordering::Acquire) {
        return;
      }
      *deadline = Some(Instant::now() + self.kill_grace);
    }
    // SIGCONT after it: a stopped process (a job reading the terminal in the background,
    // SIGTTIN) handles the signal now instead of only dying by the SIGKILL `kill_grace` later.
    if signal_group(self.pid, self.kill_signal) {
      signal_group(self.pid, SIGCONT);
    } else if !self.exited.load(Ordering::Acquire) {
      // The leader moved itself to another group: signal it alone.
      signal_pid(self.pid, self.kill_signal);
      signal_pid(self.pid, SIGCONT);
    }
    self.wake.notify_one();
  }

  /// SIGKILL to the group (and to the leader, if it runs elsewhere), unless the group id may
  /// already be someone else's.
  fn kill_group(&self) {
    if !self.group_done.load(Ordering::Acquire) {
      signal_group(self.pid, SIGKILL);
    }
    if !self.exited.load(Ordering::Acquire) {
      signal_pid(self.pid, SIGKILL);
    }
  }

  /// After the leader exited: what is left of its group ends too — at once if the group is
  /// empty, else after `kill_signal` (sent now unless a termination already runs), and at
  /// the latest with `SIGKILL` at the deadline. Returns once the group is empty or killed.
  async fn end_group(&self) {
    if self.group_done.load(Ordering::Acquire) {
      return;
    }
    let since = Instant::now();
    if group_alive(self.pid, since).await {
      tracing::debug!(
        pid = self.pid,
        "command exited, its group did not: terminating the group"
      );
      self.terminate();
      let deadline = self.deadline().unwrap_or_else(Instant::now);
      let mut pause = Duration::from_millis(2);
      loop {
        let now = Instant::now();
        if now >= deadline {
          tracing::debug!(pid = self.pid, "command group outlived its kill signal: SIGKILL");
          signal_group(self.pid, SIGKILL);
          break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(GROUP_POLL);
        // Any scan made since the leader exited and at most GROUP_POLL old will do.
        let recent = Instant::now()
          .checked_sub(GROUP_POLL)
          .map_or(since, |t| t.max(since));
        if !group_alive(self.pid, recent).await {
          break;
        }
      }
    }
    self.group_done.store(true, Ordering::Release);
    sentinel::unregister(self.pid);
  }
}

/// A command that has been started; dropping it does not stop the command.
#[derive(Debug, Clone)]
pub struct Running {
  state: Arc<State>,
  captures: Arc<Captures>,
  cap: usize,
}

/// What a running command uses now: its process tree's resident memory and CPU since the
/// previous reading (or since it started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
  pub pid: u32,
  pub cpu_percent: Option<f64>,
  pub rss_bytes: Option<f64>,
}

impl Running {
  pub fn pid(&self) -> u32 {
    self.state.pid
  }

  pub fn has_exited(&self) -> bool {
    self.state.exited.load(Ordering::Acquire)
  }

  /// Cancel, timeout, forced shutdown: `kill_signal` to the process group, then `SIGKILL`.
  pub fn terminate(&self) {
    self.state.terminate();
  }

  /// `SIGKILL` to the group at once (Node.js is exiting: there is no later).
  pub fn kill_now(&self) {
    self.state.kill_group();
  }

  /// What the command's streams have produced so far (all of it, also after its exit).
  pub fn output(&self) -> Output {
    Output::of(
      self.captures.copy(Stream::Stdout),
      self.captures.copy(Stream::Stderr),
      self.cap,
    )
  }

  /// Nothing but the pid once the leader has been reaped (its pid may be someone else's).
  pub fn usage(&self) -> Usage {
    let pid = self.state.pid;
    let tree = if self.has_exited() { None } else { tree_usage(pid) };
    let Some((ticks, rss)) = tree else {
      return Usage {
        pid,
        cpu_percent: None,
        rss_bytes: None,
      };
    };
    let now = Instant::now();
    let cpu = match self.state.last_usage.lock() {
      Ok(mut last) => {
        let (prev_ticks, prev_at) = *last;
        let wall = now.duration_since(prev_at).as_secs_f64();
        *last = (ticks, now);
        let hz = clock_ticks_per_second();
        (wall > 0.0 && hz > 0.0).then(|| {
          let busy = ticks.saturating_sub(prev_ticks) as f64 / hz;
          ((busy / wall) * 10_000.0).round() / 100.0
        })
      }
      Err(_) => None,
    };
    Usage {
      pid,
      cpu_percent: cpu,
      rss_bytes: Some(rss as f64),
    }
  }
}

/// Starts `spec`. Must be called where `rt` can be entered (any thread but a runtime worker
/// blocked in `block_on`). The command's events go to `events`, its `Exit` last.
/// `forward_output` says whether every line should be sent (a `command-output` listener).
pub fn spawn(
  rt: &Handle,
  handle: u32,
  spec: Spec,
  forward_output: Arc<AtomicBool>,
  events: mpsc::Sender<Event>,
) -> io::Result<Running> {
  // No fork (nor a pre_exec hook such as PR_SET_PDEATHSIG, which needs one): forking a
  // Node.js process of ~500 MB RSS blocks the JS thread ~15-19 ms per command instead of
  // ~0.4 ms (measured here: bench/commands.mjs, README "Performance").
  let started = Instant::now();
  let mut child = {
    let _guard = rt.enter();
    platform::spawn(&spec)?
  };
  let pid = child.id();
  tracing::debug!(handle, pid, program = %spec.program, "command started");
  // Guarded from now on against this process dying without running JS (before the waiting
  // task exists, so its unregister always comes after).
  sentinel::register(pid);
  let state = Arc::new(State {
    pid,
    exited: AtomicBool::new(false),
    group_done: AtomicBool::new(false),
    kill_signal: spec.kill_signal,
    kill_grace: spec.kill_grace,
    kill_deadline: Mutex::new(None),
    wake: tokio::sync::Notify::new(),
    last_usage: Mutex::new((0, started)),
  });
  let cap = spec.max_output_bytes;
  let captures = Arc::new(Captures::default());
  let running = Running {
    state: Arc::clone(&state),
    captures: Arc::clone(&captures),
    cap,
  };

  let (stop_tx, stop_rx) = watch::channel(false);
  let stdout = child.stdout.take();
  let stderr = child.stderr.take();
  let stdin = child.stdin.take();
  let rt2 = rt.clone();
  rt.spawn(async move {
    let mut out_task = rt2.spawn(read_stream(
      stdout,
      Reader {
        handle,
        stream: Stream::Stdout,
        cap,
        captures: Arc::clone(&captures),
        progress: spec.progress,
        forward: Arc::clone(&forward_output),
        events: events.clone(),
        stop: stop_rx.clone(),
        lines: Vec::new(),
        progress_value: None,
      },
    ));
    let mut err_task = rt2.spawn(read_stream(
      stderr,
      Reader {
        handle,
        stream: Stream::Stderr,
        cap,
        captures: Arc::clone(&captures),
        progress: ProgressMode::Off,
        forward: forward_output,
        events: events.clone(),
        stop: stop_rx,
        lines: Vec::new(),
        progress_value: None,
      },
    ));
    let writer = match (stdin, spec.input) {
      (Some(mut stdin), Some(input)) => Some(rt2.spawn(async move {
        // A child that exits without reading its input is not an error of ours.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
      })),
      _ => None,
    };
    let status = wait(&mut child, &state).await;
    state.exited.store(true, Ordering::Release);
    // Whatever the command left behind in its group ends with it, before its exit is
    // reported: when JS hears of the exit, the command's processes are gone (or SIGKILLed).
    state.end_group().await;
    // Processes outside the group (setsid) may still hold the pipes: stop reading soon.
    let drained = tokio::time::timeout(PIPE_DRAIN, async {
      let _ = (&mut out_task).await;
      let _ = (&mut err_task).await;
    })
    .await;
    if drained.is_err() {
      tracing::debug!(
        handle,
        pid,
        "pipes still open after the command's group ended: stop reading"
      );
      let _ = stop_tx.send(true);
    }
    if let Some(w) = writer {
      w.abort(); // stdin inherited by a process that never reads it
    }
    if drained.is_err() {
      let _ = out_task.await;
      let _ = err_task.await;
    }
    let (exit_code, signal, wait_error) = match status {
      Ok(s) => (s.code(), exit_signal(&s), None),
      Err(e) => (None, None, Some(e.to_string())),
    };
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Copies: a cancel or timeout that lands before JS hears of the exit reads the output
    // through `Running::output` (freed with the Running, once JS has released it).
    let (out, err) = (captures.copy(Stream::Stdout), captures.copy(Stream::Stderr));
    // Up to 2 x 256 MiB to decode: not on the worker that drives timers and pipes.
    let output = tokio::task::spawn_blocking(move || Output::of(out, err, cap))
      .await
      .unwrap_or_default();
    let exit = Exit {
      handle,
      pid,
      exit_code,
      signal,
      output,
      duration_ms,
      wait_error,
    };
    tracing::debug!(handle, pid, ?exit_code, ?signal, "command ended");
    let _ = events.send(Event::Exit(exit)).await;
  });
  Ok(running)
}

/// Waits for the leader to exit, sending the group its SIGKILL when a termination's grace
/// period ends first.
async fn wait(child: &mut Child, state: &State) -> io::Result<std::process::ExitStatus> {
  let mut killed = false;
  loop {
    let deadline = state.deadline();
    let kill_at = tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now));
    tokio::select! {
      status = child.wait() => return status,
      _ = state.wake.notified() => {
        // Without signals (Windows), a termination ends the child here.
        end_without_signals(child);
      }
      _ = tokio::time::sleep_until(kill_at), if deadline.is_some() && !killed => {
        tracing::debug!(pid = state.pid, "command outlived its kill signal: SIGKILL");
        state.kill_group();
        killed = true;
      }
      _ = tokio::time::sleep(EXIT_POLL), if POLL_FOR_EXIT => {
        // tokio relies on SIGCHLD there, whose handler libuv replaces when Node spawns a
        // child of its own: look for our child's exit ourselves.
        if let Some(status) = child.try_wait() {
          return status;
        }
      }
    }
  }
}

#[cfg(all(test, unix))]
mod tests;

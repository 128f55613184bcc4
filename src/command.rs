//! Command agents: real programs run on the tokio runtime, so waiting on them costs the JS
//! thread nothing. No napi in here (the binding is `binding/command.rs`).
//!
//! - Spawned without a shell, in a new process group (the child is its leader), so the whole
//!   tree it starts can be signalled at once. Spawning uses posix_spawn (no pre_exec hook),
//!   which keeps it cheap on the JS thread however large the Node.js process is.
//! - stdout and stderr are read to the end and kept up to `max_output_bytes` each; the rest is
//!   counted and discarded, so a chatty child can neither fill our memory nor block on a full
//!   pipe. Lines are split only when someone wants them (progress, `command-output`).
//! - Termination (cancel, timeout, forced shutdown, and whatever of the group outlives its
//!   leader): `kill_signal` to the group, `SIGKILL` to the group after `kill_grace`.
//! - Every command ends with exactly one [`Event::Exit`], even when its pipes are held open by
//!   a process that left the group: reading stops `kill_grace` + 500 ms after the leader
//!   exited.

use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

/// Longest line forwarded for progress or `command-output`; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Lines per [`Event::Lines`], so one chatty read does not make one huge JS array.
const LINES_PER_EVENT: usize = 256;
/// How long the pipes may stay open once the command's group has ended.
const PIPE_DRAIN: Duration = Duration::from_millis(500);
/// How often the waiting task checks for the leader's exit itself.
const EXIT_POLL: Duration = Duration::from_millis(250);

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
  Stdout = 1,
  Stderr = 2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
  pub handle: u32,
  pub pid: u32,
  pub exit_code: Option<i32>,
  pub signal: Option<i32>,
  pub stdout: String,
  pub stderr: String,
  /// Bytes the stream produced in all, kept or not.
  pub stdout_bytes: u64,
  pub stderr_bytes: u64,
  pub truncated: bool,
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
    if !signal_group(self.pid, self.kill_signal) && !self.exited.load(Ordering::Acquire) {
      // The leader moved itself to another group: signal it alone.
      signal_pid(self.pid, self.kill_signal);
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
    if group_alive(self.pid).await {
      tracing::debug!(
        pid = self.pid,
        "command exited, its group did not: terminating the group"
      );
      self.terminate();
      let deadline = self.deadline().unwrap_or_else(Instant::now);
      let mut pause = Duration::from_millis(2);
      while group_alive(self.pid).await {
        let now = Instant::now();
        if now >= deadline {
          tracing::debug!(pid = self.pid, "command group outlived its kill signal: SIGKILL");
          signal_group(self.pid, SIGKILL);
          break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
      }
    }
    self.group_done.store(true, Ordering::Release);
    crate::sentinel::unregister(self.pid);
  }
}

/// A command that has been started; dropping it does not stop the command.
#[derive(Debug, Clone)]
pub struct Running {
  state: Arc<State>,
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
  let mut cmd = tokio::process::Command::new(&spec.program);
  cmd.args(&spec.args);
  if let Some(cwd) = &spec.cwd {
    cmd.current_dir(cwd);
  }
  if !spec.inherit_env {
    cmd.env_clear();
  }
  for (key, value) in &spec.env {
    match value {
      Some(v) => cmd.env(key, v),
      None => cmd.env_remove(key),
    };
  }
  cmd.stdin(if spec.input.is_some() {
    Stdio::piped()
  } else {
    Stdio::null()
  });
  cmd.stdout(Stdio::piped());
  cmd.stderr(Stdio::piped());
  #[cfg(unix)]
  cmd.process_group(0);
  // No pre_exec hook (such as PR_SET_PDEATHSIG): with one, std must fork() instead of
  // posix_spawn(), and forking a Node.js process of ~500 MB RSS blocks the JS thread ~15-19 ms
  // per command instead of ~0.4 ms (measured here: bench/commands.mjs, README "Performance").

  let started = Instant::now();
  let mut child = {
    let _guard = rt.enter();
    cmd.spawn()?
  };
  let pid = child.id().unwrap_or(0);
  tracing::debug!(handle, pid, program = %spec.program, "command started");
  // Guarded from now on against this process dying without running JS (before the waiting
  // task exists, so its unregister always comes after).
  crate::sentinel::register(pid);
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
  let running = Running {
    state: Arc::clone(&state),
  };

  let (stop_tx, stop_rx) = watch::channel(false);
  let cap = spec.max_output_bytes;
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
    let mut out = None;
    let mut err = None;
    let drained = tokio::time::timeout(PIPE_DRAIN, async {
      out = Some((&mut out_task).await.unwrap_or_default());
      err = Some((&mut err_task).await.unwrap_or_default());
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
    let out = match out {
      Some(c) => c,
      None => out_task.await.unwrap_or_default(),
    };
    let err = match err {
      Some(c) => c,
      None => err_task.await.unwrap_or_default(),
    };
    let (exit_code, signal, wait_error) = match status {
      Ok(s) => (s.code(), exit_signal(&s), None),
      Err(e) => (None, None, Some(e.to_string())),
    };
    let truncated = out.truncated() || err.truncated();
    let exit = Exit {
      handle,
      pid,
      exit_code,
      signal,
      stdout_bytes: out.total,
      stderr_bytes: err.total,
      stdout: out.into_string(),
      stderr: err.into_string(),
      truncated,
      duration_ms: started.elapsed().as_secs_f64() * 1000.0,
      wait_error,
    };
    tracing::debug!(handle, pid, ?exit_code, ?signal, "command ended");
    let _ = events.send(Event::Exit(exit)).await;
  });
  Ok(running)
}

/// Waits for the leader to exit, sending the group its SIGKILL when a termination's grace
/// period ends first.
async fn wait(child: &mut tokio::process::Child, state: &State) -> io::Result<std::process::ExitStatus> {
  let mut killed = false;
  loop {
    let deadline = state.deadline();
    let kill_at = tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now));
    tokio::select! {
      status = child.wait() => return status,
      _ = state.wake.notified() => {
        // Without signals (Windows), a termination ends the child here.
        #[cfg(not(unix))]
        let _ = child.start_kill();
      }
      _ = tokio::time::sleep_until(kill_at), if deadline.is_some() && !killed => {
        tracing::debug!(pid = state.pid, "command outlived its kill signal: SIGKILL");
        state.kill_group();
        killed = true;
      }
      _ = tokio::time::sleep(EXIT_POLL) => {
        // On Linux tokio watches a pidfd. Where pidfd_open is unavailable (kernels before
        // 5.3, some sandboxes) it relies on SIGCHLD, whose handler libuv replaces when Node
        // spawns a child of its own: look for our child's exit ourselves.
        if let Ok(Some(status)) = child.try_wait() {
          return Ok(status);
        }
      }
    }
  }
}

#[cfg(unix)]
fn exit_signal(s: &std::process::ExitStatus) -> Option<i32> {
  std::os::unix::process::ExitStatusExt::signal(s)
}

#[cfg(not(unix))]
fn exit_signal(_s: &std::process::ExitStatus) -> Option<i32> {
  None
}

/// What one stream kept.
#[derive(Debug, Default)]
struct Capture {
  kept: Vec<u8>,
  total: u64,
}

impl Capture {
  fn truncated(&self) -> bool {
    self.total > self.kept.len() as u64
  }

  /// UTF-8 text (invalid sequences replaced); a character cut by the cap is dropped whole.
  fn into_string(mut self) -> String {
    if self.truncated() {
      if let Err(e) = std::str::from_utf8(&self.kept) {
        if e.error_len().is_none() {
          self.kept.truncate(e.valid_up_to());
        }
      }
    }
    match String::from_utf8(self.kept) {
      Ok(s) => s,
      Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
  }
}

struct Reader {
  handle: u32,
  stream: Stream,
  cap: usize,
  progress: ProgressMode,
  forward: Arc<AtomicBool>,
  /// Bounded: when JS falls behind, sending waits, reading stops, and the child blocks on
  /// its full pipe, instead of events piling up in memory.
  events: mpsc::Sender<Event>,
  stop: watch::Receiver<bool>,
  lines: Vec<String>,
  /// The latest JSON-lines progress value not sent yet (only the latest matters).
  progress_value: Option<f64>,
}

impl Reader {
  fn wants_lines(&self) -> bool {
    self.progress != ProgressMode::Off || self.forward.load(Ordering::Relaxed)
  }

  /// One complete line: JSON progress is parsed here; the line itself goes to JS when
  /// progress matching or `command-output` wants it. True when a batch is full.
  fn line(&mut self, bytes: &[u8]) -> bool {
    if self.progress == ProgressMode::JsonLines {
      if let Some(value) = json_progress(bytes) {
        self.progress_value = Some(value);
      }
    }
    if self.progress == ProgressMode::Lines || self.forward.load(Ordering::Relaxed) {
      self.lines.push(String::from_utf8_lossy(bytes).into_owned());
    }
    self.lines.len() >= LINES_PER_EVENT
  }

  async fn flush(&mut self) {
    if !self.lines.is_empty() {
      let lines = std::mem::take(&mut self.lines);
      let ev = Event::Lines {
        handle: self.handle,
        stream: self.stream,
        lines,
      };
      let _ = self.events.send(ev).await;
    }
    if let Some(value) = self.progress_value.take() {
      let _ = self
        .events
        .send(Event::Progress {
          handle: self.handle,
          value,
        })
        .await;
    }
  }
}

async fn read_stream<R: AsyncRead + Unpin>(source: Option<R>, mut r: Reader) -> Capture {
  let mut cap = Capture::default();
  let Some(mut source) = source else {
    return cap;
  };
  let mut chunk = vec![0u8; READ_CHUNK];
  let mut partial: Vec<u8> = Vec::new();
  let mut partial_overflow = false;
  let mut after_cr = false;
  let mut mid_line = false;
  loop {
    let n = tokio::select! {
      read = source.read(&mut chunk) => match read {
        Ok(0) | Err(_) => break,
        Ok(n) => n,
      },
      _ = r.stop.changed() => break,
    };
    let data = &chunk[..n];
    cap.total += n as u64;
    if cap.kept.len() < r.cap {
      let take = (r.cap - cap.kept.len()).min(n);
      cap.kept.extend_from_slice(&data[..take]);
    }
    if !r.wants_lines() {
      partial.clear();
      partial_overflow = false;
      after_cr = false;
      // If lines are wanted from the next read on, its bytes up to the first line end are
      // the tail of a line nobody saw the start of: they are skipped, not sent as a line.
      mid_line = !matches!(data.last(), Some(b'\n' | b'\r'));
      continue;
    }
    let mut rest = data;
    if mid_line {
      match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(pos) => {
          mid_line = false;
          after_cr = rest[pos] == b'\r';
          rest = &rest[pos + 1..];
        }
        None => continue,
      }
    }
    if after_cr && rest.first() == Some(&b'\n') {
      rest = &rest[1..]; // the \n of a \r\n split between two reads
    }
    after_cr = false;
    // Lines end at \n, \r\n, or a lone \r (progress bars redraw their line with \r).
    while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
      let (head, tail) = rest.split_at(pos);
      let full = if partial.is_empty() && !partial_overflow {
        r.line(&head[..head.len().min(MAX_LINE_BYTES)])
      } else {
        append_capped(&mut partial, head, &mut partial_overflow);
        let full = r.line(&partial);
        partial.clear();
        partial_overflow = false;
        full
      };
      if full {
        r.flush().await;
      }
      rest = match tail {
        [b'\r', b'\n', more @ ..] => more,
        [b'\r'] => {
          after_cr = true;
          &[]
        }
        [_, more @ ..] => more,
        [] => &[],
      };
    }
    append_capped(&mut partial, rest, &mut partial_overflow);
    r.flush().await;
  }
  if (!partial.is_empty() || partial_overflow) && r.wants_lines() {
    r.line(&partial);
  }
  r.flush().await;
  cap
}

fn append_capped(partial: &mut Vec<u8>, bytes: &[u8], overflow: &mut bool) {
  let room = MAX_LINE_BYTES.saturating_sub(partial.len());
  if bytes.len() > room {
    *overflow = true;
  }
  partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `{"progress": n}` (other fields allowed) -> n.
pub fn json_progress(line: &[u8]) -> Option<f64> {
  let trimmed = line.trim_ascii();
  if !trimmed.starts_with(b"{") || !trimmed.windows(10).any(|w| w == b"\"progress\"") {
    return None;
  }
  let value: serde_json::Value = serde_json::from_slice(trimmed).ok()?;
  value.get("progress")?.as_f64().filter(|v| v.is_finite())
}

/// Signals and clock ticks. Only Unix has process groups and signals: elsewhere nothing is
/// signalled and a command is ended with `Child::start_kill` (see `State::kill_request`).
#[cfg(unix)]
mod sys {
  pub const SIGKILL: i32 = libc::SIGKILL;

  /// Sends `sig` to the process group `pgid`; false when there is no such group. Never
  /// signals group 0 or 1 (our own group, every process).
  pub fn signal_group(pgid: u32, sig: i32) -> bool {
    signal(pgid, true, sig)
  }

  pub fn signal_pid(pid: u32, sig: i32) -> bool {
    signal(pid, false, sig)
  }

  fn signal(id: u32, group: bool, sig: i32) -> bool {
    let Ok(id) = i32::try_from(id) else {
      return false;
    };
    if id <= 1 {
      return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe { libc::kill(if group { -id } else { id }, sig) == 0 }
  }

  /// A positive `sysconf` value, else `fallback`.
  fn sysconf(name: libc::c_int, fallback: i64) -> i64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
      v as i64
    } else {
      fallback
    }
  }

  pub fn clock_ticks_per_second() -> f64 {
    sysconf(libc::_SC_CLK_TCK, 100) as f64
  }

  #[cfg(target_os = "linux")]
  pub fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE, 4096) as u64
  }
}

#[cfg(not(unix))]
mod sys {
  pub const SIGKILL: i32 = 9;

  pub fn signal_group(_pgid: u32, _sig: i32) -> bool {
    false
  }

  pub fn signal_pid(_pid: u32, _sig: i32) -> bool {
    false
  }

  pub fn clock_ticks_per_second() -> f64 {
    100.0
  }
}

use sys::{signal_group, signal_pid, SIGKILL};

/// Whether the group has a member that is not a zombie. A zombie is dead but keeps the group
/// "signallable" until someone reaps it, and in a container whose PID 1 does not reap
/// orphans (or where Node.js is PID 1) that may be never: waiting for it would hold every
/// such command for its whole grace period.
///
/// The `/proc` scan runs on the blocking pool: the runtime's one worker also drives every
/// executor's timers and every command's pipes.
async fn group_alive(pgid: u32) -> bool {
  if !signal_group(pgid, 0) {
    return false;
  }
  tokio::task::spawn_blocking(move || live_member(pgid))
    .await
    .ok()
    .flatten()
    .unwrap_or(true)
}

/// `Some(false)` when every process of group `pgid` is a zombie (from `/proc`).
#[cfg(target_os = "linux")]
fn live_member(pgid: u32) -> Option<bool> {
  let entries = std::fs::read_dir("/proc").ok()?;
  for entry in entries.flatten() {
    let name = entry.file_name();
    let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
      continue;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
      continue; // ended meanwhile
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
      continue;
    };
    // Fields after the name: state (3), ppid (4), pgrp (5).
    let mut fields = after.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
    if pgrp == Some(pgid) && state != Some("Z") {
      return Some(true);
    }
  }
  Some(false)
}

#[cfg(not(target_os = "linux"))]
fn live_member(_pgid: u32) -> Option<bool> {
  None
}

fn clock_ticks_per_second() -> f64 {
  sys::clock_ticks_per_second()
}

/// CPU ticks (user + system) and resident bytes of the tree under `pid`, from `/proc`.
#[cfg(target_os = "linux")]
fn tree_usage(pid: u32) -> Option<(u64, u64)> {
  let page = sys::page_size();
  let pids = crate::monitor::proc_tree(pid)?;
  let mut ticks = 0u64;
  let mut rss = 0u64;
  for p in pids {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
      continue;
    };
    // Fields after the command name, which may itself contain spaces and parentheses.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
      continue;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state): utime = 14, stime = 15, cutime = 16, cstime = 17 (its
    // reaped children: a tree of short-lived processes, like a test runner's, shows up
    // there), rss = 24.
    let get = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    ticks += get(14) + get(15) + get(16) + get(17);
    rss += get(24) * page;
  }
  Some((ticks, rss))
}

#[cfg(not(target_os = "linux"))]
fn tree_usage(_pid: u32) -> Option<(u64, u64)> {
  None
}

#[cfg(all(test, unix))]
mod tests {
  use super::*;

  fn spec(program: &str, args: &[&str]) -> Spec {
    Spec {
      program: program.into(),
      args: args.iter().map(|s| s.to_string()).collect(),
      cwd: None,
      env: Vec::new(),
      inherit_env: true,
      input: None,
      max_output_bytes: 1 << 20,
      kill_signal: libc::SIGTERM,
      kill_grace: Duration::from_millis(300),
      progress: ProgressMode::Off,
    }
  }

  fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
      .worker_threads(1)
      .enable_all()
      .build()
      .unwrap()
  }

  /// Runs `spec` and returns its events, the Exit last.
  fn run(
    rt: &tokio::runtime::Runtime,
    spec: Spec,
    forward: bool,
    kill_after: Option<Duration>,
  ) -> Vec<Event> {
    let (tx, mut rx) = mpsc::channel(64);
    let running = spawn(rt.handle(), 7, spec, Arc::new(AtomicBool::new(forward)), tx).unwrap();
    rt.block_on(async move {
      if let Some(d) = kill_after {
        tokio::time::sleep(d).await;
        running.terminate();
      }
      let mut out = Vec::new();
      while let Some(ev) = rx.recv().await {
        let last = matches!(ev, Event::Exit(_));
        out.push(ev);
        if last {
          break;
        }
      }
      out
    })
  }

  /// Running (not a zombie waiting for a reaper that a container's PID 1 may never be).
  fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
      .map(|s| s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next()) != Some("Z"))
      .unwrap_or(false)
  }

  fn exit_of(events: &[Event]) -> &Exit {
    match events.last() {
      Some(Event::Exit(e)) => e,
      other => panic!("no exit: {other:?}"),
    }
  }

  #[test]
  fn captures_output_and_exit_code() {
    let rt = rt();
    let ev = run(
      &rt,
      spec("sh", &["-c", "printf 'out\\n'; printf 'err' >&2; exit 3"]),
      false,
      None,
    );
    let e = exit_of(&ev);
    assert_eq!(e.exit_code, Some(3));
    assert_eq!(e.signal, None);
    assert_eq!(e.stdout, "out\n");
    assert_eq!(e.stderr, "err");
    assert!(!e.truncated);
    assert_eq!(ev.len(), 1, "no lines unless asked for");
  }

  #[test]
  fn caps_output_but_counts_it_all() {
    let rt = rt();
    let mut s = spec("sh", &["-c", "head -c 300000 /dev/zero | tr '\\0' x"]);
    s.max_output_bytes = 1000;
    let e = exit_of(&run(&rt, s, false, None)).clone();
    assert_eq!(e.stdout.len(), 1000);
    assert_eq!(e.stdout_bytes, 300_000);
    assert!(e.truncated);
  }

  #[test]
  fn cut_multibyte_character_is_dropped_whole() {
    let c = Capture {
      kept: "aé".as_bytes()[..2].to_vec(),
      total: 3,
    };
    assert_eq!(c.into_string(), "a");
  }

  #[test]
  fn json_progress_lines() {
    assert_eq!(json_progress(br#"{"progress": 42.5}"#), Some(42.5));
    assert_eq!(json_progress(br#"  {"step":"x","progress":7}  "#), Some(7.0));
    assert_eq!(json_progress(br#"{"progress": "7"}"#), None);
    assert_eq!(json_progress(b"progress 7"), None);
    assert_eq!(json_progress(br#"{"progress": 7"#), None);
  }

  #[test]
  fn json_progress_and_forwarded_lines() {
    let rt = rt();
    let mut s = spec(
      "sh",
      &["-c", "echo '{\"progress\": 10}'; echo plain; printf 'no-newline'"],
    );
    s.progress = ProgressMode::JsonLines;
    let ev = run(&rt, s, true, None);
    let progress: Vec<f64> = ev
      .iter()
      .filter_map(|e| match e {
        Event::Progress { value, .. } => Some(*value),
        _ => None,
      })
      .collect();
    assert_eq!(progress, vec![10.0]);
    let lines: Vec<String> = ev
      .iter()
      .filter_map(|e| match e {
        Event::Lines {
          stream: Stream::Stdout,
          lines,
          ..
        } => Some(lines.clone()),
        _ => None,
      })
      .flatten()
      .collect();
    assert_eq!(lines, vec!["{\"progress\": 10}", "plain", "no-newline"]);
  }

  #[test]
  fn lines_end_at_lf_crlf_and_lone_cr() {
    let rt = rt();
    let s = spec("sh", &["-c", "printf 'a\\r\\nb\\rc 50%%\\rd\\n\\ne'"]);
    let ev = run(&rt, s, true, None);
    let lines: Vec<String> = ev
      .iter()
      .filter_map(|e| match e {
        Event::Lines { lines, .. } => Some(lines.clone()),
        _ => None,
      })
      .flatten()
      .collect();
    assert_eq!(lines, vec!["a", "b", "c 50%", "d", "", "e"]);
  }

  #[test]
  fn input_env_and_cwd() {
    let rt = rt();
    let mut s = spec(
      "sh",
      &["-c", "read x; echo \"$x $FOO $(pwd)\"; echo ${HOME:-nohome}"],
    );
    s.input = Some(b"hello\n".to_vec());
    s.env = vec![("FOO".into(), Some("bar".into())), ("HOME".into(), None)];
    s.cwd = Some("/tmp".into());
    let e = exit_of(&run(&rt, s, false, None)).clone();
    assert_eq!(e.stdout, "hello bar /tmp\nnohome\n");
    let mut s = spec("/usr/bin/env", &[]);
    s.inherit_env = false;
    s.env = vec![("ONLY".into(), Some("1".into()))];
    assert_eq!(exit_of(&run(&rt, s, false, None)).stdout, "ONLY=1\n");
  }

  #[test]
  fn missing_program_is_a_spawn_error() {
    let rt = rt();
    let (tx, _rx) = mpsc::channel(64);
    let err = spawn(
      rt.handle(),
      1,
      spec("no-such-program-xyz", &[]),
      Arc::new(AtomicBool::new(false)),
      tx,
    )
    .err()
    .map(|e| e.kind());
    assert_eq!(err, Some(io::ErrorKind::NotFound));
  }

  #[test]
  fn terminate_kills_the_group_including_a_grandchild_ignoring_sigterm() {
    let rt = rt();
    // The grandchild ignores SIGTERM and keeps stdout open; only SIGKILL ends it.
    let s = spec(
      "sh",
      &[
        "-c",
        "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' & echo $!; wait",
      ],
    );
    let t0 = Instant::now();
    let ev = run(&rt, s, false, Some(Duration::from_millis(200)));
    let e = exit_of(&ev);
    let grandchild: i32 = e.stdout.trim().parse().unwrap();
    assert_eq!(e.signal, Some(libc::SIGTERM), "the leader dies of SIGTERM");
    assert!(
      t0.elapsed() >= Duration::from_millis(450),
      "the grandchild held stdout until SIGKILL"
    );
    assert!(!alive(grandchild), "grandchild {grandchild} survived");
  }

  #[test]
  fn stragglers_end_with_their_leader() {
    let rt = rt();
    let s = spec("sh", &["-c", "sleep 30 & echo $!"]);
    let t0 = Instant::now();
    let e = exit_of(&run(&rt, s, false, None)).clone();
    assert_eq!(e.exit_code, Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5));
    let straggler: i32 = e.stdout.trim().parse().unwrap();
    assert!(!alive(straggler), "sleep {straggler} survived");
  }

  #[test]
  fn a_group_seen_ended_is_never_signalled_again() {
    // A stranger: a process group leader we did not start as a command. Its pid stands for a
    // number the kernel handed out again after a command's group ended.
    let mut stranger = std::process::Command::new("sleep");
    stranger.arg("30");
    std::os::unix::process::CommandExt::process_group(&mut stranger, 0);
    let mut stranger = stranger.spawn().unwrap();
    let pid = stranger.id();
    let state = State {
      pid,
      exited: AtomicBool::new(true),
      group_done: AtomicBool::new(true),
      kill_signal: libc::SIGTERM,
      kill_grace: Duration::from_millis(10),
      kill_deadline: Mutex::new(None),
      wake: tokio::sync::Notify::new(),
      last_usage: Mutex::new((0, Instant::now())),
    };
    state.terminate();
    state.kill_group();
    rt().block_on(state.end_group());
    std::thread::sleep(Duration::from_millis(50));
    assert!(alive(pid as i32), "the stranger {pid} was signalled");
    let _ = stranger.kill();
    let _ = stranger.wait();
  }

  #[test]
  fn usage_reports_the_tree() {
    let rt = rt();
    let (tx, _rx) = mpsc::channel(64);
    let running = spawn(
      rt.handle(),
      1,
      spec("sleep", &["2"]),
      Arc::new(AtomicBool::new(false)),
      tx,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let u = running.usage();
    assert_eq!(u.pid, running.pid());
    if cfg!(target_os = "linux") {
      assert!(u.rss_bytes.unwrap_or(0.0) > 0.0);
      assert!(u.cpu_percent.is_some());
    }
    running.kill_now();
  }
}

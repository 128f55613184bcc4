//! Commands on Linux: `spawn` starts them (posix_spawn) in a process group of their own and
//! `reaper` reaps them; their groups and usage are read from `/proc`.

#[path = "posix.rs"]
mod posix;

use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::Instant;

pub(crate) use posix::{clock_ticks_per_second, exit_signal, signal_group, signal_pid, SIGCONT, SIGKILL};

use crate::command::reaper;
use crate::command::spawn::{launch, Io, Launch};
use crate::command::Spec;

/// Whether the waiting task looks for the leader's exit itself: no, the reaper reports it.
pub(crate) const POLL_FOR_EXIT: bool = false;

/// A started command: its pid, its pipes, and the news of its exit.
pub(crate) struct Child {
  pid: u32,
  pub(crate) stdin: Option<tokio::process::ChildStdin>,
  pub(crate) stdout: Option<tokio::process::ChildStdout>,
  pub(crate) stderr: Option<tokio::process::ChildStderr>,
  exit: tokio::sync::oneshot::Receiver<io::Result<ExitStatus>>,
}

impl Child {
  pub(crate) fn id(&self) -> u32 {
    self.pid
  }

  /// Resolves once the process has exited and been reaped. Cancel-safe; not to be polled
  /// again once it has resolved.
  pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
    (&mut self.exit)
      .await
      .unwrap_or_else(|_| Err(io::Error::other("the reaper thread stopped")))
  }

  /// The reaper reports the exit: always `None` (see `command::wait`).
  pub(crate) fn try_wait(&mut self) -> Option<io::Result<ExitStatus>> {
    None
  }
}

/// Signals end a command here (see `command::wait`): nothing to do.
pub(crate) fn end_without_signals(_child: &mut Child) {}

/// Starts `spec` in a new process group. Must run inside a tokio runtime context (the pipes
/// are registered with its reactor).
pub(crate) fn spawn(spec: &Spec) -> io::Result<Child> {
  let reaper = reaper::start()?;
  let launched = launch(&Launch {
    program: &spec.program,
    args: &spec.args,
    cwd: spec.cwd.as_deref(),
    env: &spec.env,
    inherit_env: spec.inherit_env,
    stdin: if spec.input.is_some() { Io::Pipe } else { Io::Null },
    stdout: Io::Pipe,
    stderr: Io::Pipe,
  })?;
  let pid = launched.pid;
  let exit = reaper.watch(pid);
  let wrap = || -> io::Result<_> {
    let stdin = launched
      .stdin
      .map(|fd: OwnedFd| tokio::process::ChildStdin::from_std(fd.into()))
      .transpose()?;
    let stdout = launched
      .stdout
      .map(|fd: OwnedFd| tokio::process::ChildStdout::from_std(fd.into()))
      .transpose()?;
    let stderr = launched
      .stderr
      .map(|fd: OwnedFd| tokio::process::ChildStderr::from_std(fd.into()))
      .transpose()?;
    Ok((stdin, stdout, stderr))
  };
  match wrap() {
    Ok((stdin, stdout, stderr)) => Ok(Child {
      pid,
      stdin,
      stdout,
      stderr,
      exit,
    }),
    Err(e) => {
      // Started, but its pipes cannot be watched: end it (the reaper reaps it).
      signal_group(pid, SIGKILL);
      Err(e)
    }
  }
}

/// Starts `/bin/sh -c script` for the sentinel (see `sentinel`) in a process group of its own, with only `PATH` in its
/// environment (`set` then lists only the shell's own variables and ours); returns its pid
/// and the write end of its stdin.
pub(crate) fn start_sentinel(script: &str) -> io::Result<(u32, Option<OwnedFd>)> {
  use crate::command::spawn::{launch, Io, Launch};
  let args = [
    "-c".to_string(),
    script.to_string(),
    "bmad-bg-sentinel".to_string(),
  ];
  let env = [("PATH".to_string(), Some("/usr/bin:/bin".to_string()))];
  let l = launch(&Launch {
    program: "/bin/sh",
    args: &args, // $0 (the last one): how it shows in `ps`
    cwd: None,
    env: &env,
    inherit_env: false,
    stdin: Io::Pipe,
    stdout: Io::Null,
    stderr: Io::Null,
  })?;
  Ok((l.pid, l.stdin))
}

// ----- process groups in /proc ----------------------------------------------------------------

/// The fields of a `/proc/<pid>/stat` line after the command name, state first. The name may
/// hold any bytes (the kernel cuts it at 15, which can split a UTF-8 character), spaces and
/// parentheses included: everything up to the last `)` is skipped.
fn stat_fields(stat: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
  let close = stat.iter().rposition(|&b| b == b')')?;
  Some(
    stat[close + 1..]
      .split(u8::is_ascii_whitespace)
      .filter(|f| !f.is_empty()),
  )
}

fn number(field: &[u8]) -> Option<u64> {
  std::str::from_utf8(field).ok()?.parse().ok()
}

/// Every process group that has a member that is not a zombie, from one pass over `/proc`.
fn live_groups() -> Option<std::collections::HashSet<u32>> {
  use std::io::Read;
  let entries = std::fs::read_dir("/proc").ok()?;
  let mut live = std::collections::HashSet::new();
  let mut buf = Vec::with_capacity(1024);
  for entry in entries.flatten() {
    let name = entry.file_name();
    let Some(pid) = name
      .to_str()
      .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    else {
      continue;
    };
    buf.clear();
    let Ok(mut file) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
      continue; // ended meanwhile
    };
    if file.read_to_end(&mut buf).is_err() {
      continue;
    }
    let Some(mut fields) = stat_fields(&buf) else {
      continue;
    };
    // Fields after the name: state (3), ppid (4), pgrp (5).
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(number).and_then(|g| u32::try_from(g).ok());
    if let (Some(state), Some(pgrp)) = (state, pgrp) {
      if state != b"Z" {
        live.insert(pgrp);
      }
    }
  }
  #[cfg(test)]
  SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
  Some(live)
}

#[cfg(test)]
static SCANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The latest `/proc` scan: when it started, and the groups it found alive.
struct Scan {
  started: Instant,
  live: std::collections::HashSet<u32>,
}

/// One scan serves every group being waited for: the lock is held while a scan runs, and a
/// caller that finds a recent enough scan done uses it.
fn last_scan() -> &'static tokio::sync::Mutex<Option<Scan>> {
  static LAST: std::sync::OnceLock<tokio::sync::Mutex<Option<Scan>>> = std::sync::OnceLock::new();
  LAST.get_or_init(|| tokio::sync::Mutex::new(None))
}

/// Whether the group has a member that is not a zombie. A zombie is dead but keeps the group
/// "signallable" until someone reaps it, and in a container whose PID 1 does not reap
/// orphans (or where Node.js is PID 1) that may be never: waiting for it would hold every
/// such command for its whole grace period.
///
/// The answer comes from `kill(-pgid, 0)` (no group: false) and, if the group exists, from a
/// `/proc` scan started at `not_before` or later: a scan serves every group waited for at the
/// time, so many lingering groups cost one scan, not one each. It runs on the blocking pool:
/// the runtime's one worker also drives every executor's timers and every command's pipes.
pub(crate) async fn group_alive(pgid: u32, not_before: Instant) -> bool {
  if !signal_group(pgid, 0) {
    return false;
  }
  let mut last = last_scan().lock().await;
  if let Some(scan) = last.as_ref().filter(|s| s.started >= not_before) {
    return scan.live.contains(&pgid);
  }
  let started = Instant::now();
  let Some(live) = tokio::task::spawn_blocking(live_groups).await.ok().flatten() else {
    return true; // unknown: alive until its SIGKILL
  };
  let alive = live.contains(&pgid);
  *last = Some(Scan { started, live });
  alive
}

/// CPU ticks (user + system) and resident bytes of the tree under `pid`, from `/proc`.
pub(crate) fn tree_usage(pid: u32) -> Option<(u64, u64)> {
  let page = page_size();
  let pids = crate::system::probes::proc_tree(pid)?;
  let mut ticks = 0u64;
  let mut rss = 0u64;
  for p in pids {
    let Ok(stat) = std::fs::read(format!("/proc/{p}/stat")) else {
      continue;
    };
    let Some(fields) = stat_fields(&stat) else {
      continue;
    };
    let fields: Vec<&[u8]> = fields.collect();
    // fields[0] is field 3 (state): utime = 14, stime = 15, cutime = 16, cstime = 17 (its
    // reaped children: a tree of short-lived processes, like a test runner's, shows up
    // there), rss = 24.
    let get = |n: usize| fields.get(n - 3).and_then(|f| number(f)).unwrap_or(0);
    ticks += get(14) + get(15) + get(16) + get(17);
    rss += get(24) * page;
  }
  Some((ticks, rss))
}

fn page_size() -> u64 {
  posix::sysconf(libc::_SC_PAGESIZE, 4096) as u64
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::os::unix::process::CommandExt;
  use std::sync::atomic::Ordering;
  use std::time::Duration;

  /// A process group leader whose name (as the kernel keeps it: 15 bytes) is not UTF-8.
  fn badly_named_leader() -> (std::process::Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
      "bmad-bg-name-{}-{:?}",
      std::process::id(),
      std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // Nine 2-byte characters: cut at 15 bytes, the eighth is split.
    let link = dir.join("ééééééééé");
    std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink");
    let mut cmd = std::process::Command::new(&link);
    cmd.arg("30").process_group(0);
    (cmd.spawn().expect("spawn"), dir)
  }

  #[test]
  fn a_name_that_is_not_utf8_does_not_hide_a_process() {
    let (mut child, dir) = badly_named_leader();
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read(format!("/proc/{}/stat", child.id())).expect("stat");
    assert!(
      std::str::from_utf8(&stat).is_err(),
      "the name is cut inside a character"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .expect("rt");
    assert!(rt.block_on(group_alive(child.id(), Instant::now())), "seen alive");
    let usage = tree_usage(child.id()).expect("usage");
    assert!(usage.1 > 0, "its memory counts");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
  }

  #[test]
  fn many_groups_waited_for_at_once_share_scans() {
    let mut leaders: Vec<std::process::Child> = (0..20)
      .map(|_| {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").process_group(0);
        cmd.spawn().expect("sleep")
      })
      .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
      .worker_threads(1)
      .enable_all()
      .build()
      .expect("rt");
    let before = SCANS.load(Ordering::Relaxed);
    let since = Instant::now();
    let alive = rt.block_on(async {
      let checks: Vec<_> = leaders
        .iter()
        .map(|c| tokio::spawn(group_alive(c.id(), since)))
        .collect();
      let mut all = true;
      for c in checks {
        all &= c.await.unwrap_or(false);
      }
      all
    });
    let scans = SCANS.load(Ordering::Relaxed) - before;
    for c in &mut leaders {
      let _ = c.kill();
      let _ = c.wait();
    }
    assert!(alive);
    // Other tests scan at the same time; 20 groups alone would be 20 scans.
    assert!(scans <= 6, "{scans} scans for 20 groups");
  }
}

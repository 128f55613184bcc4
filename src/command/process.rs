//! What a command's process group needs from the OS: signals, clock ticks, and `/proc`
//! scans. Only Unix has process groups and signals: elsewhere nothing is signalled (a
//! command is ended with `Child::start_kill`, see `command::wait`) and usage is unknown.

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

pub(super) use sys::{clock_ticks_per_second, signal_group, signal_pid, SIGKILL};

/// Whether the group has a member that is not a zombie. A zombie is dead but keeps the group
/// "signallable" until someone reaps it, and in a container whose PID 1 does not reap
/// orphans (or where Node.js is PID 1) that may be never: waiting for it would hold every
/// such command for its whole grace period.
///
/// The `/proc` scan runs on the blocking pool: the runtime's one worker also drives every
/// executor's timers and every command's pipes.
pub(super) async fn group_alive(pgid: u32) -> bool {
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

/// CPU ticks (user + system) and resident bytes of the tree under `pid`, from `/proc`.
#[cfg(target_os = "linux")]
pub(super) fn tree_usage(pid: u32) -> Option<(u64, u64)> {
  let page = sys::page_size();
  let pids = crate::system::probes::proc_tree(pid)?;
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
pub(super) fn tree_usage(_pid: u32) -> Option<(u64, u64)> {
  None
}

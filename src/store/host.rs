//! Who this process is to the store, and whether a process recorded by another executor on
//! this host is still alive: a dead owner's executions are rescued at once instead of when
//! their lease expires.
//!
//! "Same host" must mean "same process table": on Linux it is the boot id plus the pid
//! namespace, so two containers sharing a store file never judge each other's pids. Where
//! that cannot be told, a process is never judged dead and only leases apply.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// This process as a store worker.
#[derive(Debug, Clone)]
pub struct Identity {
  /// Unique per executor: host, pid and a random part.
  pub owner: String,
  /// Equal for processes that share a process table (empty: unknown).
  pub host: String,
  pub pid: u32,
  /// The process's start time as the OS counts it (0: unknown); guards against pid reuse.
  pub proc_start: u64,
}

impl Identity {
  pub fn new() -> Identity {
    let pid = std::process::id();
    let host = host_key();
    let mut h = RandomState::new().build_hasher();
    h.write_u32(pid);
    let random = h.finish();
    let name = hostname();
    Identity {
      owner: format!("{name}:{pid}:{random:016x}"),
      host,
      pid,
      proc_start: stat(pid).1.unwrap_or(0),
    }
  }
}

impl Default for Identity {
  fn default() -> Self {
    Identity::new()
  }
}

/// Whether the process `pid` that started at `started` (as `proc_start` reported it) on
/// this host has exited. `false` whenever that cannot be known.
pub fn is_dead(pid: u32, started: u64) -> bool {
  if started == 0 || pid == 0 {
    return false;
  }
  let (zombie, start_now) = stat(pid);
  judge(started, zombie, start_now, || pid_exists(pid))
}

/// `is_dead` from what was read: a zombie is dead; another start time means the pid was
/// reused; with no start time readable (`/proc` hides other users' processes under
/// `hidepid` or systemd's `ProtectProc`), only a pid that no longer exists is dead.
fn judge(started: u64, zombie: bool, start_now: Option<u64>, exists: impl FnOnce() -> bool) -> bool {
  if zombie {
    return true; // killed, not yet reaped by its parent
  }
  match start_now {
    Some(now) => now != started,
    None => !exists(),
  }
}

/// From one read of `/proc/<pid>/stat`: whether `pid` has exited and waits for its parent to
/// reap it (state Z or X), and its start time in clock ticks since boot (field 22).
#[cfg(target_os = "linux")]
fn stat(pid: u32) -> (bool, Option<u64>) {
  match std::fs::read(format!("/proc/{pid}/stat")) {
    Ok(stat) => parse_stat(&stat),
    Err(_) => (false, None),
  }
}

#[cfg(target_os = "linux")]
/// `stat` from the bytes of a `/proc/<pid>/stat`. Bytes, not text: the command name (field 2)
/// need not be UTF-8 (a process.title cut at 15 bytes inside a character); the fields after
/// it always are.
fn parse_stat(stat: &[u8]) -> (bool, Option<u64>) {
  // The command name may hold spaces and parentheses: fields follow the last ')'.
  let Some(end) = stat.iter().rposition(|&b| b == b')') else {
    return (false, None);
  };
  let rest = String::from_utf8_lossy(&stat[end + 1..]);
  let mut fields = rest.split_whitespace();
  let zombie = matches!(fields.next(), Some("Z" | "X"));
  (zombie, fields.nth(18).and_then(|f| f.parse().ok()))
}

#[cfg(not(target_os = "linux"))]
fn stat(_pid: u32) -> (bool, Option<u64>) {
  (false, None)
}

#[cfg(target_os = "linux")]
fn host_key() -> String {
  let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
  let ns = std::fs::read_link("/proc/self/ns/pid")
    .map(|p| p.display().to_string())
    .unwrap_or_default();
  if boot.trim().is_empty() || ns.is_empty() {
    return String::new();
  }
  format!("{}/{}", boot.trim(), ns)
}

#[cfg(not(target_os = "linux"))]
fn host_key() -> String {
  String::new()
}

/// Whether a process `pid` exists, asked of the kernel (signal 0 sends nothing): `/proc` may
/// hide it. EPERM means it exists but belongs to another user; anything but ESRCH is taken
/// as "exists", so a process is never judged dead on an unclear answer.
#[cfg(target_os = "linux")]
fn pid_exists(pid: u32) -> bool {
  let Ok(pid) = libc::pid_t::try_from(pid) else {
    return true;
  };
  // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
  let rc = unsafe { libc::kill(pid, 0) };
  rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(target_os = "linux"))]
fn pid_exists(_pid: u32) -> bool {
  true
}

fn hostname() -> String {
  #[cfg(unix)]
  {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what gethostname is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
      let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
      if let Ok(s) = std::str::from_utf8(&buf[..end]) {
        if !s.is_empty() {
          return s.to_string();
        }
      }
    }
  }
  std::env::var("COMPUTERNAME").unwrap_or_else(|_| "host".to_string())
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn this_process_is_alive_and_identified() {
    let me = Identity::new();
    assert!(me.owner.contains(&format!(":{}:", me.pid)));
    assert!(!is_dead(me.pid, me.proc_start));
    assert_ne!(
      Identity::new().owner,
      me.owner,
      "two executors in one process differ"
    );
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn an_exited_child_is_dead_and_unknown_is_never_dead() {
    let mut child = std::process::Command::new("sleep")
      .arg("5")
      .spawn()
      .expect("spawn sleep");
    let pid = child.id();
    let started = stat(pid).1.expect("a live child has a start time");
    assert!(!is_dead(pid, started));
    assert!(
      is_dead(pid, started + 1),
      "another start time: the pid was reused"
    );
    child.kill().expect("kill");
    // Killed but not reaped yet: dead already.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !stat(pid).0 && std::time::Instant::now() < deadline {
      std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(is_dead(pid, started), "a zombie counts as dead");
    child.wait().expect("wait");
    assert!(is_dead(pid, started));
    assert!(!is_dead(pid, 0), "no recorded start time: never judged dead");
    assert!(!pid_exists(pid), "reaped: gone");
    assert!(pid_exists(std::process::id()));
    assert!(!host_key().is_empty());
  }

  #[cfg(target_os = "linux")]
  #[test]
  fn a_command_name_that_is_not_utf8_still_gives_the_start_time() {
    // "node éé" cut at 15 bytes inside a character, with a ')' and spaces in the name too.
    let mut stat = b"4242 (a) b \xc3\xa9\xc3".to_vec();
    stat.extend_from_slice(b") S 1 4242 4242 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0");
    assert_eq!(parse_stat(&stat), (false, Some(987654)));
    let zombie = b"7 (\xff) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
    assert_eq!(parse_stat(zombie), (true, Some(55)));
    assert_eq!(parse_stat(b"garbage"), (false, None));
  }

  #[test]
  fn a_process_hidden_by_proc_is_alive_while_it_exists() {
    // hidepid / ProtectProc: no start time readable, but the kernel says the pid exists.
    assert!(!judge(42, false, None, || true));
    assert!(judge(42, false, None, || false), "gone");
    assert!(judge(42, false, Some(43), || true), "reused");
    assert!(!judge(42, false, Some(42), || true));
    assert!(judge(42, true, None, || true), "a zombie");
  }
}

//! Signals and clock ticks: Linux and the other Unixes.

pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// Resumes a stopped process: a signal it handles is delivered then, not left pending.
pub(crate) const SIGCONT: i32 = libc::SIGCONT;

/// Sends `sig` to the process group `pgid`; false when there is no such group. Never
/// signals group 0 or 1 (our own group, every process).
pub(crate) fn signal_group(pgid: u32, sig: i32) -> bool {
  signal(pgid, true, sig)
}

pub(crate) fn signal_pid(pid: u32, sig: i32) -> bool {
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
pub(super) fn sysconf(name: libc::c_int, fallback: i64) -> i64 {
  // SAFETY: sysconf has no preconditions.
  let v = unsafe { libc::sysconf(name) };
  if v > 0 {
    v as i64
  } else {
    fallback
  }
}

pub(crate) fn clock_ticks_per_second() -> f64 {
  sysconf(libc::_SC_CLK_TCK, 100) as f64
}

pub(crate) fn exit_signal(s: &std::process::ExitStatus) -> Option<i32> {
  std::os::unix::process::ExitStatusExt::signal(s)
}

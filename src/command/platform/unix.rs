//! Commands on the Unixes other than Linux (macOS, the BSDs): `tokio::process` starts them in
//! a process group of their own and reaps them; signals as on Linux; usage is unknown.

#[path = "portable.rs"]
mod portable;
#[path = "posix.rs"]
mod posix;

use std::io;
use std::os::fd::OwnedFd;

pub(crate) use portable::{group_alive, tree_usage, Child, POLL_FOR_EXIT};
pub(crate) use posix::{clock_ticks_per_second, exit_signal, signal_group, signal_pid, SIGCONT, SIGKILL};

/// Starts `spec` in a new process group. Must run inside a tokio runtime context (the pipes
/// are registered with its reactor).
pub(crate) fn spawn(spec: &crate::command::Spec) -> io::Result<Child> {
  let mut cmd = portable::command(spec);
  cmd.process_group(0);
  portable::start(cmd)
}

/// Signals end a command here (see `command::wait`): nothing to do.
pub(crate) fn end_without_signals(_child: &mut Child) {}

/// Starts `/bin/sh -c script` for the sentinel (see `sentinel`) in a process group of its
/// own, with only `PATH` in its environment; returns its pid and the write end of its stdin.
pub(crate) fn start_sentinel(script: &str) -> io::Result<(u32, Option<OwnedFd>)> {
  use std::os::unix::process::CommandExt;
  use std::process::{Command, Stdio};
  let mut child = Command::new("/bin/sh")
    .arg("-c")
    .arg(script)
    .arg("bmad-bg-sentinel")
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0)
    .spawn()?;
  // Dropping the Child neither waits nor kills: `Sentinel` reaps it by pid.
  Ok((child.id(), child.stdin.take().map(OwnedFd::from)))
}

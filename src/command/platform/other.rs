//! Commands where there are no process groups nor signals (Windows): `tokio::process` starts
//! and reaps them, nothing is signalled (a command is ended with `start_kill`, see
//! `end_without_signals`), usage is unknown, and there is no sentinel.

#[path = "portable.rs"]
mod portable;

use std::io;

pub(crate) use portable::{group_alive, tree_usage, Child, POLL_FOR_EXIT};

pub(crate) const SIGKILL: i32 = 9;
pub(crate) const SIGCONT: i32 = 18;

pub(crate) fn signal_group(_pgid: u32, _sig: i32) -> bool {
  false
}

pub(crate) fn signal_pid(_pid: u32, _sig: i32) -> bool {
  false
}

pub(crate) fn clock_ticks_per_second() -> f64 {
  100.0
}

pub(crate) fn exit_signal(_s: &std::process::ExitStatus) -> Option<i32> {
  None
}

/// Starts `spec`. Must run inside a tokio runtime context (the pipes are registered with its
/// reactor).
pub(crate) fn spawn(spec: &crate::command::Spec) -> io::Result<Child> {
  portable::start(portable::command(spec))
}

/// Without signals, a termination ends the child here (see `command::wait`).
pub(crate) fn end_without_signals(child: &mut Child) {
  let _ = child.inner.start_kill();
}

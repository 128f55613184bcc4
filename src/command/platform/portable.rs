//! A command started and reaped by `tokio::process`, and no `/proc`: every platform but
//! Linux. The including module adds what differs (a process group on Unix).

use std::io;
use std::process::{ExitStatus, Stdio};

use super::signal_group;
use crate::command::Spec;

/// Whether the waiting task looks for the leader's exit itself: yes, tokio relies on SIGCHLD
/// (see `command::wait`).
pub(crate) const POLL_FOR_EXIT: bool = true;

/// A started command: its pid, its pipes, and the news of its exit.
pub(crate) struct Child {
  pid: u32,
  pub(crate) stdin: Option<tokio::process::ChildStdin>,
  pub(crate) stdout: Option<tokio::process::ChildStdout>,
  pub(crate) stderr: Option<tokio::process::ChildStderr>,
  pub(super) inner: tokio::process::Child,
}

impl Child {
  pub(crate) fn id(&self) -> u32 {
    self.pid
  }

  /// Resolves once the process has exited and been reaped. Cancel-safe; not to be polled
  /// again once it has resolved.
  pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
    self.inner.wait().await
  }

  /// A check for the exit of our own (see `command::wait`).
  pub(crate) fn try_wait(&mut self) -> Option<io::Result<ExitStatus>> {
    self.inner.try_wait().transpose()
  }
}

/// The command for `spec`, its stdin piped only when there is input.
pub(super) fn command(spec: &Spec) -> tokio::process::Command {
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
  cmd
}

pub(super) fn start(mut cmd: tokio::process::Command) -> io::Result<Child> {
  let mut inner = cmd.spawn()?;
  Ok(Child {
    pid: inner.id().unwrap_or(0),
    stdin: inner.stdin.take(),
    stdout: inner.stdout.take(),
    stderr: inner.stderr.take(),
    inner,
  })
}

/// Whether the group is still there (no `/proc` to tell a zombie from a live member).
pub(crate) async fn group_alive(pgid: u32, _not_before: std::time::Instant) -> bool {
  signal_group(pgid, 0)
}

/// Unknown without `/proc`.
pub(crate) fn tree_usage(_pid: u32) -> Option<(u64, u64)> {
  None
}

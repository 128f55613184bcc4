//! Starting a command's process and waiting for its exit. On Linux `spawn` starts it and
//! `reaper` reaps it; elsewhere `tokio::process` does both.

use std::io;
use std::process::ExitStatus;

#[cfg(target_os = "linux")]
use super::process::{signal_group, SIGKILL};
#[cfg(target_os = "linux")]
use super::reaper;
#[cfg(target_os = "linux")]
use super::spawn::{launch, Io, Launch};
use super::Spec;

/// A started command: its pid, its pipes, and the news of its exit.
pub(super) struct Child {
  pid: u32,
  pub(super) stdin: Option<tokio::process::ChildStdin>,
  pub(super) stdout: Option<tokio::process::ChildStdout>,
  pub(super) stderr: Option<tokio::process::ChildStderr>,
  #[cfg(target_os = "linux")]
  exit: tokio::sync::oneshot::Receiver<io::Result<ExitStatus>>,
  #[cfg(not(target_os = "linux"))]
  inner: tokio::process::Child,
}

impl Child {
  pub(super) fn id(&self) -> u32 {
    self.pid
  }

  /// Resolves once the process has exited and been reaped. Cancel-safe; not to be polled
  /// again once it has resolved.
  pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
    #[cfg(target_os = "linux")]
    {
      (&mut self.exit)
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the reaper thread stopped")))
    }
    #[cfg(not(target_os = "linux"))]
    {
      self.inner.wait().await
    }
  }

  /// Where tokio reaps: a check for the exit of our own (see `command::wait`). On Linux
  /// the reaper does it: always `None`.
  pub(super) fn try_wait(&mut self) -> Option<io::Result<ExitStatus>> {
    #[cfg(target_os = "linux")]
    {
      None
    }
    #[cfg(not(target_os = "linux"))]
    {
      self.inner.try_wait().transpose()
    }
  }

  #[cfg(not(unix))]
  pub(super) fn start_kill(&mut self) {
    let _ = self.inner.start_kill();
  }
}

/// Starts `spec` in a new process group. Must run inside a tokio runtime context (the pipes
/// are registered with its reactor).
#[cfg(target_os = "linux")]
pub(super) fn spawn(spec: &Spec) -> io::Result<Child> {
  use std::os::fd::OwnedFd;
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

#[cfg(not(target_os = "linux"))]
pub(super) fn spawn(spec: &Spec) -> io::Result<Child> {
  use std::process::Stdio;
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
  let mut inner = cmd.spawn()?;
  Ok(Child {
    pid: inner.id().unwrap_or(0),
    stdin: inner.stdin.take(),
    stdout: inner.stdout.take(),
    stderr: inner.stderr.take(),
    inner,
  })
}

//! The sentinel on Unix (see `sentinel`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The sentinel's program. Each listed group is a shell variable `g_<pgid>` (set and unset
/// in O(1), whatever the number of groups); at end-of-file every `g_*` still set is
/// killed. Lines that are not `+digits` / `-digits` are ignored (nothing reaches `eval`
/// but digits), and so are 0, 1 and leading zeros: `kill -- -0` and `kill -- -1` would
/// be our own group and every process. POSIX sh only: dash, bash, busybox ash.
pub(super) const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT TSTP TTIN TTOU PIPE
while IFS= read -r line; do
  pg=${line#?}
  case $pg in ''|*[!0-9]*|0*|1) continue ;; esac
  case $line in
    +*) eval "g_$pg=1" ;;
    -*) unset "g_$pg" ;;
  esac
done
set | while IFS= read -r v; do
  case $v in g_[0-9]*=*) pg=${v%%=*}; kill -s KILL -- "-${pg#g_}" 2>/dev/null ;; esac
done
"#;

/// One sentinel process and the groups it guards.
#[derive(Debug)]
pub struct Sentinel {
  pid: u32,
  pipe: File,
}

/// Waits for our child `pid`.
fn reap(pid: u32) -> io::Result<ExitStatus> {
  let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
  loop {
    let mut status = 0;
    // SAFETY: waitpid on the sentinel, our child, which nobody else waits for.
    if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
      return Ok(ExitStatus::from_raw(status));
    }
    let err = io::Error::last_os_error();
    if err.kind() != io::ErrorKind::Interrupted {
      return Err(err);
    }
  }
}

impl Sentinel {
  /// Starts a sentinel guarding `groups`.
  pub fn start(groups: &BTreeSet<u32>) -> io::Result<Sentinel> {
    let (pid, pipe) = crate::command::platform::start_sentinel(SCRIPT)?;
    let Some(pipe) = pipe else {
      crate::command::platform::signal_pid(pid, libc::SIGKILL);
      let _ = reap(pid);
      return Err(io::Error::other("sentinel: no pipe"));
    };
    let pipe = File::from(pipe);
    // Never block the caller (the JS thread): a full pipe means a stuck sentinel, which
    // is then replaced (see `send`).
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
      let fd = pipe.as_raw_fd();
      let flags = libc::fcntl(fd, libc::F_GETFL);
      if flags >= 0 {
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
      }
    }
    let mut s = Sentinel { pid, pipe };
    let mut all = String::new();
    for pg in groups {
      all.push_str(&format!("+{pg}\n"));
    }
    if !all.is_empty() {
      if let Err(e) = s.write(all.as_bytes()) {
        s.discard();
        return Err(e);
      }
    }
    Ok(s)
  }

  pub fn pid(&self) -> u32 {
    self.pid
  }

  /// Writes a whole message or fails (a partial write would corrupt the line protocol, so
  /// the caller replaces the sentinel on any error).
  pub fn write(&mut self, msg: &[u8]) -> io::Result<()> {
    self.pipe.write_all(msg)
  }

  /// Closes the pipe, as this process's death would: the sentinel kills what is listed
  /// and exits. Waits for it.
  pub fn close(self) -> io::Result<ExitStatus> {
    let Sentinel { pid, pipe } = self;
    drop(pipe);
    reap(pid)
  }

  /// Stops a sentinel that is being replaced, without it killing anything.
  fn discard(self) {
    let Sentinel { pid, pipe } = self;
    crate::command::platform::signal_pid(pid, libc::SIGKILL);
    drop(pipe);
    let _ = reap(pid);
  }
}

struct Global {
  sentinel: Option<Sentinel>,
  groups: BTreeSet<u32>,
  /// Starting a sentinel failed (e.g. EMFILE): not retried before this instant, so a
  /// burst of commands does not try on each one; the next start gets the whole list.
  retry_at: Option<Instant>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
  sentinel: None,
  groups: BTreeSet::new(),
  retry_at: None,
});

/// How long after a failed start the next one is tried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn send(g: &mut Global, msg: &str) {
  if g.retry_at.is_some_and(|at| Instant::now() < at) {
    return;
  }
  if let Some(s) = g.sentinel.as_mut() {
    if s.write(msg.as_bytes()).is_ok() {
      return;
    }
    // Gone, or stuck with a full pipe: replace it (the new one gets the whole list).
    if let Some(old) = g.sentinel.take() {
      tracing::debug!(pid = old.pid(), "sentinel lost: starting another");
      old.discard();
    }
  }
  match Sentinel::start(&g.groups) {
    Ok(s) => {
      tracing::debug!(pid = s.pid(), groups = g.groups.len(), "sentinel started");
      g.sentinel = Some(s);
      g.retry_at = None;
    }
    Err(e) => {
      tracing::warn!(error = %e, "no sentinel for now: commands would outlive a killed Node.js process");
      g.retry_at = Some(Instant::now() + RETRY_AFTER);
    }
  }
}

/// A command's process group was created: guard it.
pub fn register(pgid: u32) {
  if pgid <= 1 {
    return;
  }
  let Ok(mut g) = GLOBAL.lock() else {
    return;
  };
  if g.groups.insert(pgid) {
    send(&mut g, &format!("+{pgid}\n"));
  }
}

/// A command's process group was seen ended: its id may be reused, never kill it.
pub fn unregister(pgid: u32) {
  let Ok(mut g) = GLOBAL.lock() else {
    return;
  };
  if g.groups.remove(&pgid) && g.sentinel.is_some() {
    send(&mut g, &format!("-{pgid}\n"));
  }
}

#[cfg(test)]
mod tests {
  use super::Sentinel;
  use std::collections::BTreeSet;
  use std::os::unix::process::CommandExt;
  use std::process::{Child, Command};
  use std::time::{Duration, Instant};

  fn group_leader() -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("30").process_group(0);
    cmd.spawn().expect("sleep")
  }

  /// Reaps `child` if it ended within `within`.
  fn ends_within(child: &mut Child, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
      if let Ok(Some(_)) = child.try_wait() {
        return true;
      }
      std::thread::sleep(Duration::from_millis(10));
    }
    false
  }

  #[test]
  fn closing_the_pipe_kills_the_listed_groups_only() {
    let mut a = group_leader();
    let mut b = group_leader();
    let mut c = group_leader();
    let mut s = Sentinel::start(&BTreeSet::from([a.id()])).expect("sentinel");
    s.write(format!("+{}\n+{}\n-{}\n", b.id(), c.id(), c.id()).as_bytes())
      .expect("write");
    s.close().expect("sentinel exits");
    assert!(
      ends_within(&mut a, Duration::from_secs(5)),
      "listed at start: killed"
    );
    assert!(ends_within(&mut b, Duration::from_secs(5)), "registered: killed");
    assert!(
      !ends_within(&mut c, Duration::from_millis(300)),
      "unregistered: left alone"
    );
    let _ = c.kill();
    let _ = c.wait();
  }

  #[test]
  fn the_sentinel_ignores_terminal_signals() {
    let mut a = group_leader();
    let mut s = Sentinel::start(&BTreeSet::new()).expect("sentinel");
    s.write(format!("+{}\n", a.id()).as_bytes()).expect("write");
    // Give sh time to install its traps, then send what Ctrl-C or a hang-up would.
    std::thread::sleep(Duration::from_millis(200));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
      // SAFETY: kill(2) on our own child's pid.
      unsafe { libc::kill(s.pid() as i32, sig) };
    }
    std::thread::sleep(Duration::from_millis(100));
    s.write(b"\n").expect("still listening");
    s.close().expect("sentinel exits");
    assert!(ends_within(&mut a, Duration::from_secs(5)));
  }

  #[test]
  fn the_script_never_lists_group_0_1_or_leading_zeros() {
    // `kill` is replaced by a function that prints what it would do: `+1` must never become
    // `kill -- -1` (every process), whatever the Rust side lets through.
    let script = format!("kill() {{ echo \"kill $*\"; }}\n{}", super::SCRIPT);
    let mut child = Command::new("/bin/sh")
      .arg("-c")
      .arg(script)
      .env_clear()
      .stdin(std::process::Stdio::piped())
      .stdout(std::process::Stdio::piped())
      .spawn()
      .expect("sh");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"+0\n+1\n+01\n+007\n+00\n+42\n+\n+4x\n").expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kill -s KILL -- -42\n");
  }

  #[test]
  fn the_script_does_constant_work_per_line() {
    // 1000 groups listed, then 20 000 more listed and unlisted: a list rescanned per line
    // (the first version) took minutes at this size. Group ids above Linux's largest pid
    // (2^22) name no group, so the final kills hit nothing.
    let mut lines = String::new();
    for pg in 5_000_000..5_001_000u32 {
      lines.push_str(&format!("+{pg}\n"));
    }
    for pg in 6_000_000..6_010_000u32 {
      lines.push_str(&format!("+{pg}\n-{pg}\nnoise\n-x1\n"));
    }
    let path = std::env::temp_dir().join(format!("bmad-bg-sentinel-{}.txt", std::process::id()));
    std::fs::write(&path, lines).expect("write");
    let started = Instant::now();
    let status = Command::new("/bin/sh")
      .arg("-c")
      .arg(super::SCRIPT)
      .stdin(std::fs::File::open(&path).expect("open"))
      .env_clear()
      .status()
      .expect("sh");
    let took = started.elapsed();
    let _ = std::fs::remove_file(&path);
    assert!(status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
  }
}

//! Reaps every command (Linux): one thread waits on their pidfds (epoll), or polls `waitpid`
//! for those without one (kernels before 5.3, some sandboxes). It never waits for any other
//! process: Node.js reaps its own children.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// How often processes without a pidfd are checked.
const POLL: Duration = Duration::from_millis(20);
/// The epoll token of the wake-up eventfd.
const WAKE: u64 = 0;

struct Entry {
  pid: libc::pid_t,
  /// In the epoll set; `None`: polled.
  pidfd: Option<OwnedFd>,
  tx: oneshot::Sender<io::Result<ExitStatus>>,
}

#[derive(Default)]
struct Waiting {
  entries: HashMap<u64, Entry>,
  polled: usize,
  next: u64,
}

pub(super) struct Reaper {
  epoll: OwnedFd,
  wake: OwnedFd,
  waiting: Mutex<Waiting>,
}

static REAPER: Mutex<Option<&'static Reaper>> = Mutex::new(None);

/// The reaper, started on first use. An error (no descriptors or thread to spare) is not
/// kept: the next command tries again.
pub(super) fn start() -> io::Result<&'static Reaper> {
  let mut slot = REAPER.lock().unwrap_or_else(|e| e.into_inner());
  if let Some(r) = *slot {
    return Ok(r);
  }
  // SAFETY: plain syscalls; results checked before use.
  let (epoll, wake) = unsafe {
    let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
    if ep < 0 {
      return Err(io::Error::last_os_error());
    }
    let ep = OwnedFd::from_raw_fd(ep);
    let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
    if ev < 0 {
      return Err(io::Error::last_os_error());
    }
    (ep, OwnedFd::from_raw_fd(ev))
  };
  let mut event = libc::epoll_event {
    events: libc::EPOLLIN as u32,
    u64: WAKE,
  };
  // SAFETY: both descriptors are open; the event is read during the call only.
  if unsafe {
    libc::epoll_ctl(
      epoll.as_raw_fd(),
      libc::EPOLL_CTL_ADD,
      wake.as_raw_fd(),
      &mut event,
    )
  } != 0
  {
    return Err(io::Error::last_os_error());
  }
  let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
    epoll,
    wake,
    waiting: Mutex::new(Waiting {
      next: WAKE + 1,
      ..Waiting::default()
    }),
  }));
  std::thread::Builder::new()
    .name("bmad-bg-reaper".into())
    .stack_size(256 * 1024)
    .spawn(move || reaper.run())?;
  *slot = Some(reaper);
  Ok(reaper)
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
  // SAFETY: pidfd_open(2) takes two integers; its descriptor is close-on-exec.
  let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
  let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
  // SAFETY: a new descriptor owned by nobody else.
  Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The exit of `pid`, when it has exited (it is reaped then).
fn try_reap(pid: libc::pid_t) -> Option<io::Result<ExitStatus>> {
  loop {
    let mut status = 0;
    // SAFETY: waitpid on one pid we started and nobody else waits for.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
      return Some(Ok(ExitStatus::from_raw(status)));
    }
    if r == 0 {
      return None;
    }
    let err = io::Error::last_os_error();
    if err.kind() != io::ErrorKind::Interrupted {
      return Some(Err(err));
    }
  }
}

impl Reaper {
  fn waiting(&self) -> MutexGuard<'_, Waiting> {
    self.waiting.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Resolves with the exit of `pid`, a child of this process that nobody else reaps.
  pub(super) fn watch(&self, pid: u32) -> oneshot::Receiver<io::Result<ExitStatus>> {
    let (tx, rx) = oneshot::channel();
    let Ok(pid) = libc::pid_t::try_from(pid) else {
      let _ = tx.send(Err(io::Error::from_raw_os_error(libc::ESRCH)));
      return rx;
    };
    let pidfd = pidfd_open(pid);
    let mut w = self.waiting();
    let token = w.next;
    w.next += 1;
    let pidfd = pidfd.filter(|fd| self.arm(fd, token, libc::EPOLL_CTL_ADD));
    let polled = pidfd.is_none();
    w.entries.insert(token, Entry { pid, pidfd, tx });
    if polled {
      w.polled += 1;
      drop(w);
      let one = 1u64.to_ne_bytes();
      // SAFETY: writes 8 bytes to our eventfd (the thread then polls on a timer).
      unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
    rx
  }

  /// Adds (or re-arms) `pidfd` in the epoll set, for one readiness report.
  fn arm(&self, pidfd: &OwnedFd, token: u64, op: libc::c_int) -> bool {
    let mut event = libc::epoll_event {
      events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
      u64: token,
    };
    // SAFETY: both descriptors are open; the event is read during the call only.
    unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, pidfd.as_raw_fd(), &mut event) == 0 }
  }

  fn run(&self) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
      let timeout = if self.waiting().polled > 0 {
        POLL.as_millis() as libc::c_int
      } else {
        -1
      };
      // SAFETY: the buffer holds 64 events.
      let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, timeout) };
      if n < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
          std::thread::sleep(POLL); // never a busy loop
        }
        continue;
      }
      let mut due: Vec<u64> = Vec::new();
      for ev in &events[..n as usize] {
        let token = ev.u64;
        if token == WAKE {
          let mut buf = [0u8; 8];
          // SAFETY: reads 8 bytes from our non-blocking eventfd into the buffer.
          unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        } else {
          due.push(token);
        }
      }
      let mut w = self.waiting();
      if w.polled > 0 {
        due.extend(
          w.entries
            .iter()
            .filter(|(_, e)| e.pidfd.is_none())
            .map(|(t, _)| *t),
        );
      }
      for token in due {
        let Some(entry) = w.entries.get(&token) else {
          continue;
        };
        let Some(result) = try_reap(entry.pid) else {
          // Reported ready but not exited (it should not happen): wait for the next report.
          if let Some(fd) = &entry.pidfd {
            self.arm(fd, token, libc::EPOLL_CTL_MOD);
          }
          continue;
        };
        if let Some(entry) = w.entries.remove(&token) {
          if entry.pidfd.is_none() {
            w.polled -= 1;
          }
          // Closing the pidfd takes it out of the epoll set.
          let _ = entry.tx.send(result);
        }
      }
    }
  }
}

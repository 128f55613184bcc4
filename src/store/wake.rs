//! Wake-ups when another process commits to the store. On Linux an inotify watch on the WAL
//! file (every commit writes it) sends `Command::Wake` to the store's thread within
//! microseconds; elsewhere there is no watcher and the thread relies on its poll.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::messages::Command;

/// A running watcher; dropping it stops its thread (within `POLL_MS`).
pub struct Waker {
  stop: Arc<AtomicBool>,
  thread: Option<JoinHandle<()>>,
}

impl Drop for Waker {
  fn drop(&mut self) {
    self.stop.store(true, Ordering::Relaxed);
    if let Some(t) = self.thread.take() {
      let _ = t.join();
    }
  }
}

/// How long the watcher waits for an event before looking at its stop flag.
#[cfg(target_os = "linux")]
const POLL_MS: i32 = 100;

/// Watches `db`'s WAL file; `None` where that is not supported or fails (the poll remains).
#[cfg(target_os = "linux")]
pub fn watch(db: &Path, tx: Sender<Command>) -> Option<Waker> {
  use std::os::unix::ffi::OsStrExt;
  let mut wal = db.as_os_str().to_owned();
  wal.push("-wal");
  let wal = std::ffi::CString::new(wal.as_bytes()).ok()?;
  // SAFETY: plain syscalls on an fd this function owns; `wal` is a valid C string.
  let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
  if fd < 0 {
    return None;
  }
  // SAFETY: as above.
  if unsafe { libc::inotify_add_watch(fd, wal.as_ptr(), libc::IN_MODIFY) } < 0 {
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    return None;
  }
  let stop = Arc::new(AtomicBool::new(false));
  let stopped = Arc::clone(&stop);
  let thread = std::thread::Builder::new()
    .name("bmad-store-wake".into())
    .spawn(move || {
      let mut buf = [0u8; 4096];
      while !stopped.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
          fd,
          events: libc::POLLIN,
          revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if n <= 0 {
          continue;
        }
        // Drain every queued event: one wake-up stands for them all.
        // SAFETY: `buf` is writable for its length; `fd` is non-blocking.
        while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        if tx.send(Command::Wake).is_err() {
          break;
        }
      }
      // SAFETY: `fd` is ours and closed once, here.
      unsafe { libc::close(fd) };
    })
    .ok();
  let Some(thread) = thread else {
    // SAFETY: the thread did not start, so `fd` is still ours alone.
    unsafe { libc::close(fd) };
    return None;
  };
  Some(Waker {
    stop,
    thread: Some(thread),
  })
}

#[cfg(not(target_os = "linux"))]
pub fn watch(_db: &Path, _tx: Sender<Command>) -> Option<Waker> {
  None
}

//! The tokio runtime the executors share: one worker thread for timers, sampling and command
//! agents (their pipes and exits are driven by the I/O reactor; on Linux a child's exit is
//! seen through a pidfd; without pidfd support tokio falls back to SIGCHLD, which libuv may
//! take over, so `command::wait` also polls its child).
//!
//! Created on first use. Its thread is not a libuv handle, so it never keeps Node.js alive;
//! what keeps Node alive is a referenced callback (see `binding::js_callback::KeepAlive`).

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// A handle to the shared runtime, or why it could not be started.
pub fn handle() -> Result<Handle, String> {
  let rt = RUNTIME.get_or_init(|| {
    Builder::new_multi_thread()
      .worker_threads(1)
      .max_blocking_threads(2)
      .thread_name("bmad-bg-runtime")
      .enable_time()
      .enable_io()
      .build()
      .map_err(|e| format!("cannot start the tokio runtime: {e}"))
  });
  match rt {
    Ok(rt) => Ok(rt.handle().clone()),
    Err(e) => Err(e.clone()),
  }
}

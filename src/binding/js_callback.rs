//! Calling JS from the runtime's thread: `JsCallback` wraps a JS function in a weak
//! threadsafe function (it never keeps Node.js alive by itself, and a throw in it comes back
//! to the caller), and `KeepAlive` references it while the owner has work pending, so Node.js
//! waits for that work and for nothing else.

use std::sync::Arc;

use napi::bindgen_prelude::{Function, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode, ThreadsafeFunctionHandle};
use napi::{Env, Result, Status};

/// Weak (unreferenced at creation) and not callee-handled (the JS function gets the value,
/// not an error-first pair).
type Tsfn<T> = ThreadsafeFunction<T, (), T, Status, false, true>;

/// A JS function `(value: T) => void` callable from any thread.
pub struct JsCallback<T: 'static + ToNapiValue> {
  tsfn: Arc<Tsfn<T>>,
}

impl<T: 'static + ToNapiValue> Clone for JsCallback<T> {
  fn clone(&self) -> Self {
    JsCallback {
      tsfn: Arc::clone(&self.tsfn),
    }
  }
}

impl<T: 'static + ToNapiValue> JsCallback<T> {
  pub fn new(f: Function<T, ()>) -> Result<Self> {
    let tsfn = f
      .build_threadsafe_function()
      .weak::<true>()
      .callee_handled::<false>()
      .build()?;
    Ok(JsCallback { tsfn: Arc::new(tsfn) })
  }

  /// Queues a call without waiting. `Status::Closing` once Node.js tears the environment down.
  pub fn call(&self, value: T) -> Status {
    self.tsfn.call(value, ThreadsafeFunctionCallMode::NonBlocking)
  }

  /// Calls and waits until JS has returned; a JS throw comes back as `Err`.
  pub async fn call_async_catch(&self, value: T) -> Result<()> {
    self.tsfn.call_async_catch(value).await
  }

  /// The keep-alive switch of this callback, initially off.
  pub fn keep_alive(&self) -> KeepAlive {
    KeepAlive {
      handle: Some(Arc::clone(&self.tsfn.handle)),
      on: false,
    }
  }
}

/// Whether one callback's threadsafe function is referenced (keeps Node.js's event loop
/// alive). Holds the function, so it stays valid while this can still switch it.
pub struct KeepAlive {
  handle: Option<Arc<ThreadsafeFunctionHandle>>,
  on: bool,
}

impl KeepAlive {
  /// References (`on`) or unreferences the callback; calls Node-API only on a change.
  pub fn set(&mut self, env: &Env, on: bool) {
    if on == self.on {
      return;
    }
    let Some(handle) = &self.handle else {
      return;
    };
    let done = handle.with_read_aborted(|aborted| {
      if aborted {
        return false; // Node.js closed it: nothing left to (un)reference
      }
      let raw = handle.get_raw();
      // SAFETY: `raw` is a live threadsafe function: `handle` releases it only when the last
      // clone goes, and it is not aborted (checked under the lock that aborting takes).
      // `Env` is neither Send nor Sync, so this runs on the JS thread of `env`, as (un)ref
      // requires.
      let status = unsafe {
        if on {
          napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
        } else {
          napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
        }
      };
      status == napi::sys::Status::napi_ok
    });
    if done {
      self.on = on;
    }
  }

  /// Unreferences the callback for good and lets go of it.
  pub fn release(&mut self, env: &Env) {
    self.set(env, false);
    self.handle = None;
  }
}

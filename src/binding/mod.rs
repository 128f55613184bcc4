//! The binding layer: every `#[napi]` item of the crate lives under this module.
//! `executor` wraps the scheduler and timers; `monitor` wraps resource sampling; `command`
//! runs command agents.

pub mod command;
pub mod executor;
pub mod monitor;

/// References (`on`) or unreferences a threadsafe function: a referenced one keeps Node.js's
/// event loop alive. Returns whether the call succeeded.
///
/// # Safety
/// `raw` must be a live threadsafe function and the call must be made on the JS thread of `env`.
pub(crate) unsafe fn set_tsfn_ref(
  env: &napi::Env,
  raw: napi::sys::napi_threadsafe_function,
  on: bool,
) -> bool {
  let status = if on {
    napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
  } else {
    napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
  };
  status == napi::sys::Status::napi_ok
}

//! The binding layer: every `#[napi]` item of the crate lives under this module. It converts
//! arguments and results, keeps the clocks, and calls back into JS.
//!
//! `executor` wraps the scheduler and its timers, `limits` its per-agent and rate limits;
//! `command` runs command agents; `monitor` samples resources; `store` is the durable
//! store's thread, `store_rows` what of it crosses as texts and numbers; `js_callback` is how
//! they call JS and keep Node.js alive.

pub mod command;
pub mod executor;
pub mod js_callback;
pub mod limits;
pub mod monitor;
pub mod store;
mod store_rows;

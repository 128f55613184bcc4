//! The binding layer: every `#[napi]` item of the crate lives under this module.
//! `executor` wraps the scheduler and timers; `monitor` wraps resource sampling; `command`
//! runs command agents.

pub mod command;
pub mod executor;
pub mod monitor;

//! bmad-background-executor: the native core of the background executor.
//!
//! `queue`, `scheduler` and `report` are pure logic (no napi, no tokio); `timers` and
//! `runtime` run on tokio; `binding` holds every `#[napi]` item.

pub mod command;
pub mod monitor;
pub mod queue;
pub mod report;
pub mod runtime;
pub mod scheduler;
pub mod sentinel;
pub mod stats;
pub mod timers;
pub mod window;

pub mod binding;

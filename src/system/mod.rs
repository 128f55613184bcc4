//! What the scheduler needs from the machine: resource probes, the shared tokio runtime, and
//! the timer service that turns the scheduler's timer requests into wake-ups. No napi.

pub mod probes;
pub mod runtime;
pub mod timers;

//! bmad-background-executor: the native core of the background executor.
//!
//! ```text
//! protocol     every code that crosses the JS/Rust boundary (JS is generated from it)
//! scheduler/   the state machine of executions: pure logic, no napi, no tokio, no clock
//!   queue        priority levels, FIFO within a level
//!   window       execution records keyed by sequential id
//!   stats        per-agent wait and run histograms, throughput
//!   retry        retry policy and backoff jitter
//!   throttle     throttle episodes from resource samples
//! command/     command agents on tokio: spawn, output, process groups, the sentinel
//! system/      the machine: resource probes, the shared tokio runtime, the timer service
//! binding/     every #[napi] item: NativeExecutor, NativeCommands, NativeMonitor, and
//!              the callback and keep-alive they share
//! ```
//!
//! Only `binding` imports napi, so everything else is tested with `cargo test`.

// One-line items, as the JS generator reads them: rustfmt would wrap the long ones.
#[rustfmt::skip]
pub mod protocol;

pub mod command;
pub mod scheduler;
pub mod store;
pub mod system;

pub mod binding;

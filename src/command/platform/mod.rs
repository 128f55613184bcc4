//! What differs between platforms for a command: one module per platform, each with the same
//! names (`Child`, `spawn`, `POLL_FOR_EXIT`, `end_without_signals`, `SIGKILL`, `SIGCONT`, `signal_group`,
//! `signal_pid`, `exit_signal`, `clock_ticks_per_second`, `group_alive`, `tree_usage`; on Unix
//! also `start_sentinel`).
//!
//! - `linux.rs`: `spawn` starts a command and `reaper` reaps it; `/proc` scans.
//! - `unix.rs`: the other Unixes (macOS, the BSDs): `tokio::process` starts and reaps.
//! - `other.rs`: elsewhere (Windows): `tokio::process`; no process groups nor signals, a
//!   command is ended with `start_kill`, usage is unknown.
//!
//! Shared: `posix.rs` (signals, clock ticks, exit signals) by Linux and the other Unixes,
//! `portable.rs` (a `tokio::process` child, no `/proc`) by every platform but Linux.

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(all(unix, not(target_os = "linux")), path = "unix.rs")]
#[cfg_attr(not(unix), path = "other.rs")]
mod imp;

pub(crate) use imp::*;

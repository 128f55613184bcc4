//! The sentinel: one small `/bin/sh` per process that kills the process groups of the
//! commands still running when this process dies without running any JavaScript — SIGKILL,
//! a SIGTERM/SIGINT/SIGHUP nobody handles (Ctrl-C in a terminal: commands run in process
//! groups of their own, so the terminal's SIGINT does not reach them), a crash.
//!
//! The sentinel reads `+pgid` / `-pgid` lines from a pipe whose only write end is ours
//! (close-on-exec, so no child inherits it). Like a command, it starts with no descriptor
//! beyond 0-2 and default signal dispositions (on Linux, see `spawn`). When this
//! process dies, the kernel closes that end; the sentinel reads end-of-file and sends
//! SIGKILL to every group still listed. It runs in a process group of its own and ignores
//! the terminal's signals, so a Ctrl-C that kills this process does not kill it first. A
//! group is unlisted once it is seen ended, so a group id reused by somebody else is never
//! signalled.
//!
//! Cost: one `sh` started with the first command (posix_spawn, ~1.7 MB RSS), one short write
//! per command start and end, O(1) work in the sentinel per line. If the sentinel is gone or
//! its pipe is full, the next start or end of a command starts a new one with the groups
//! still listed (until then they are unguarded); if none can be started, commands run
//! unguarded, as they would without this module, and a start is tried again a second later.
//!
//! No napi in here. Unix only; elsewhere every call is a no-op.

#[cfg_attr(unix, path = "sentinel/unix.rs")]
#[cfg_attr(not(unix), path = "sentinel/other.rs")]
mod imp;

pub use imp::*;

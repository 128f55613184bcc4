//! No `/proc`: the probes use sysinfo alone.

pub(super) fn proc_stat() -> Option<String> {
  None
}

/// Unknown: the sampler walks sysinfo's parent links instead.
pub(crate) fn proc_tree(_root: u32) -> Option<Vec<u32>> {
  None
}

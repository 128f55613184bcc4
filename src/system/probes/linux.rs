//! What Linux's `/proc` tells the probes.

/// The contents of `/proc/stat` (see `CpuTimes::parse`).
pub(super) fn proc_stat() -> Option<String> {
  std::fs::read_to_string("/proc/stat").ok()
}

/// The process tree under `root` from `/proc/*/task/*/children` (Linux), `root` first.
/// `None` when the kernel does not provide those files. Also used for command agents' usage.
pub(crate) fn proc_tree(root: u32) -> Option<Vec<u32>> {
  let mut out = vec![root];
  let mut seen: std::collections::HashSet<u32> = out.iter().copied().collect();
  let mut i = 0;
  while i < out.len() && out.len() < 100_000 {
    let pid = out[i];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
      if i == 0 {
        return None;
      }
      i += 1;
      continue; // the process ended meanwhile
    };
    let mut found_children_file = false;
    for task in tasks.flatten() {
      if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
        found_children_file = true;
        for child in list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
          if seen.insert(child) {
            out.push(child);
          }
        }
      }
    }
    if i == 0 && !found_children_file {
      return None;
    }
    i += 1;
  }
  Some(out)
}

#[cfg(test)]
mod tests {
  use super::super::*;

  #[test]
  fn a_child_whose_name_is_not_utf8_is_measured() {
    // Nine 2-byte characters: the kernel keeps 15 bytes of the name, splitting the eighth.
    let dir = std::env::temp_dir().join(format!("bmad-bg-probes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("ééééééééé");
    std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink");
    let mut sampler = Sampler::new().expect("sysinfo works here");
    let mut child = std::process::Command::new(&link).arg("5").spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(100));
    sampler.sample();
    // Only the processes of the tree are refreshed: a memory figure means it was counted.
    let rss = sampler.sys.process(Pid::from_u32(child.id())).map(|p| p.memory());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(rss.unwrap_or(0) > 0, "its resident memory counts: {rss:?}");
  }
}

//! Resource sampling (sysinfo and `/proc`). No napi.
//!
//! - `cpu`: whole-machine busy percent over the last sampling interval (not since boot),
//!   from `/proc/stat` deltas on Linux, from sysinfo elsewhere.
//! - `memory`: MB resident in this process plus every process it started (its descendants).
//! - `total_memory` / `free_memory`: the machine's, MB (free = available to new work).
//!
//! A sample names the thresholds it exceeds (`Sample::exceeded`); whether that throttles
//! new starts is the scheduler's `Throttle`.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

#[cfg_attr(target_os = "linux", path = "probes/linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "probes/other.rs")]
mod sys;

pub(crate) use sys::proc_tree;

pub const TREND_LEN: usize = 60;
const MB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
  pub cpu: f64,
  pub memory: f64,
  pub total_memory: f64,
  pub free_memory: f64,
  /// This process's CPU use, percent of one core, over the last interval.
  pub process_cpu: f64,
  pub load_average: [f64; 3],
  pub timestamp: f64,
  /// Processes counted in `memory` (this one plus its descendants).
  pub processes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
  pub cpu: f64,
  pub memory: f64,
}

impl Sample {
  /// Names of the thresholds this sample exceeds, in the order cpu, memory.
  pub fn exceeded(&self, t: Thresholds) -> Vec<&'static str> {
    let mut out = Vec::new();
    if self.cpu > t.cpu {
      out.push("cpu");
    }
    if self.memory > t.memory {
      out.push("memory");
    }
    out
  }
}

pub struct Sampler {
  sys: System,
  pid: Option<Pid>,
  /// Linux: the machine's CPU times at the previous sample, and the last busy percent.
  cpu_times: Option<CpuTimes>,
  last_cpu: f64,
  measured: bool,
}

/// Aggregate CPU times from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTimes {
  busy: u64,
  total: u64,
}

impl CpuTimes {
  /// Parses `cpu  user nice system idle iowait irq softirq steal ...`; idle and iowait are
  /// not busy; guest time is already inside user.
  fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
      return None;
    }
    let v: Vec<u64> = fields.take(8).map(|f| f.parse().unwrap_or(0)).collect();
    if v.len() < 4 {
      return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
      busy: total.saturating_sub(idle),
      total,
    })
  }

  fn read() -> Option<CpuTimes> {
    CpuTimes::parse(&sys::proc_stat()?)
  }

  /// Busy percent between two readings; `None` when no tick elapsed in between.
  fn busy_percent(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let busy = now.busy.checked_sub(prev.busy)?;
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
  }
}

impl Sampler {
  pub fn new() -> Result<Self, String> {
    let mut sys = System::new().map_err(|e| format!("cannot read system information: {e}"))?;
    // sysinfo's CPU baseline, for platforms without /proc/stat.
    sys.refresh_cpu_usage();
    let pid = sysinfo::get_current_pid().ok();
    let mut s = Sampler {
      sys,
      pid,
      cpu_times: CpuTimes::read(),
      last_cpu: 0.0,
      measured: false,
    };
    s.refresh_tree(); // baseline for the processes' CPU usage
    Ok(s)
  }

  fn refresh_processes(&mut self) {
    self.sys.refresh_processes_specifics(
      ProcessesToUpdate::All,
      true,
      ProcessRefreshKind::nothing().with_memory().with_cpu(),
    );
  }

  /// This process and its descendants. On Linux the tree is read from
  /// `/proc/<pid>/task/<tid>/children` and only those processes are refreshed, so a sample
  /// costs the same however many other processes the machine runs; elsewhere (or without
  /// that file) every process is refreshed and the tree is found through parent links.
  fn refresh_tree(&mut self) -> Vec<Pid> {
    if let Some(root) = self.pid {
      if let Some(pids) = proc_tree(root.as_u32()) {
        let pids: Vec<Pid> = pids.into_iter().map(Pid::from_u32).collect();
        self.sys.refresh_processes_specifics(
          ProcessesToUpdate::Some(&pids),
          true,
          ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        return pids;
      }
    }
    self.refresh_processes();
    self.tree()
  }

  /// This process and its descendants, by walking parent links once.
  fn tree(&self) -> Vec<Pid> {
    let Some(root) = self.pid else {
      return Vec::new();
    };
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for (pid, p) in self.sys.processes() {
      // Threads are listed as tasks of their process: counting them would count the same
      // resident memory once per thread.
      if p.thread_kind().is_some() {
        continue;
      }
      if let Some(parent) = p.parent() {
        children.entry(parent).or_default().push(*pid);
      }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
      if let Some(kids) = children.get(&out[i]) {
        out.extend(kids.iter().copied().filter(|k| *k != root));
      }
      i += 1;
      if out.len() > 1_000_000 {
        break; // a parent-link cycle cannot make this loop for ever
      }
    }
    out
  }

  /// The machine's busy percent since the previous sample. On Linux it is computed from
  /// `/proc/stat` deltas, exact for any interval (sysinfo ignores CPU refreshes closer than
  /// 200 ms apart and its first reading is the average since boot); a sample taken before
  /// the next clock tick repeats the previous value. Elsewhere, sysinfo's figure.
  fn machine_cpu(&mut self) -> f64 {
    if let Some(prev) = self.cpu_times {
      if let Some(mut now) = CpuTimes::read() {
        if !self.measured && CpuTimes::busy_percent(prev, now).is_none() {
          // The very first sample, less than a clock tick after the baseline: wait for two
          // ticks rather than report a figure that measured nothing.
          std::thread::sleep(std::time::Duration::from_millis(20));
          now = CpuTimes::read().unwrap_or(now);
        }
        if let Some(p) = CpuTimes::busy_percent(prev, now) {
          self.cpu_times = Some(now);
          self.last_cpu = p;
          self.measured = true;
        }
        return self.last_cpu;
      }
    }
    self.sys.refresh_cpu_usage();
    f64::from(self.sys.global_cpu_usage()).clamp(0.0, 100.0)
  }

  pub fn sample(&mut self) -> Sample {
    let cpu = self.machine_cpu();
    self.sys.refresh_memory();
    let tree = self.refresh_tree();
    let resident: u64 = tree
      .iter()
      .filter_map(|pid| self.sys.process(*pid))
      .map(|p| p.memory())
      .sum();
    let process_cpu = self
      .pid
      .and_then(|pid| self.sys.process(pid))
      .map_or(0.0, |p| f64::from(p.cpu_usage()));
    let load = System::load_average().map_or([0.0; 3], |l| [l.one, l.five, l.fifteen]);
    Sample {
      cpu: round2(cpu),
      memory: round2(resident as f64 / MB),
      total_memory: round2(self.sys.total_memory() as f64 / MB),
      free_memory: round2(self.sys.available_memory() as f64 / MB),
      process_cpu: round2(process_cpu),
      load_average: load,
      timestamp: now_ms(),
      processes: tree.len() as u32,
    }
  }
}

fn round2(x: f64) -> f64 {
  (x * 100.0).round() / 100.0
}

pub fn now_ms() -> f64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map(|d| d.as_secs_f64() * 1000.0)
    .unwrap_or(0.0)
}

/// The last `TREND_LEN` samples.
#[derive(Debug, Default)]
pub struct Trends {
  samples: VecDeque<Sample>,
}

impl Trends {
  pub fn push(&mut self, s: Sample) {
    if self.samples.len() == TREND_LEN {
      self.samples.pop_front();
    }
    self.samples.push_back(s);
  }
  pub fn latest(&self) -> Option<&Sample> {
    self.samples.back()
  }
  pub fn iter(&self) -> impl Iterator<Item = &Sample> {
    self.samples.iter()
  }
  pub fn len(&self) -> usize {
    self.samples.len()
  }
  pub fn is_empty(&self) -> bool {
    self.samples.is_empty()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn s(cpu: f64, memory: f64) -> Sample {
    Sample {
      cpu,
      memory,
      total_memory: 1000.0,
      free_memory: 500.0,
      process_cpu: 0.0,
      load_average: [0.0; 3],
      timestamp: 0.0,
      processes: 1,
    }
  }

  const T: Thresholds = Thresholds {
    cpu: 80.0,
    memory: 100.0,
  };

  #[test]
  fn exceeded_names_each_limit() {
    assert!(s(80.0, 100.0).exceeded(T).is_empty());
    assert_eq!(s(80.1, 10.0).exceeded(T), vec!["cpu"]);
    assert_eq!(s(10.0, 100.5).exceeded(T), vec!["memory"]);
    assert_eq!(s(99.0, 200.0).exceeded(T), vec!["cpu", "memory"]);
  }

  #[test]
  fn cpu_from_proc_stat_deltas() {
    let a = CpuTimes::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3").expect("parses");
    assert_eq!(
      a,
      CpuTimes {
        busy: 150,
        total: 1000
      }
    );
    let b = CpuTimes::parse("cpu  160 0 70 820 50 0 0 0 0 0").expect("parses");
    assert_eq!(CpuTimes::busy_percent(a, b), Some(80.0));
    assert_eq!(CpuTimes::busy_percent(b, b), None, "no tick elapsed");
    assert_eq!(CpuTimes::parse("intr 1 2 3"), None);
  }

  #[test]
  fn first_sample_measures_from_construction_not_boot() {
    // A busy loop right after construction: the first sample must see it (the average
    // since boot on an idle test machine is far lower than a fully busy core).
    let mut sampler = Sampler::new().expect("sysinfo works here");
    let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
    let mut x = 0u64;
    while std::time::Instant::now() < until {
      x = x.wrapping_add(1);
    }
    assert!(x > 0);
    let s = sampler.sample();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
      s.cpu >= 100.0 / cores * 0.6,
      "cpu {} with one of {cores} cores busy",
      s.cpu
    );
  }

  #[test]
  fn trends_keep_the_last_sixty() {
    let mut tr = Trends::default();
    for i in 0..100 {
      tr.push(s(f64::from(i), 0.0));
    }
    assert_eq!(tr.len(), TREND_LEN);
    assert_eq!(tr.iter().next().map(|x| x.cpu), Some(40.0));
    assert_eq!(tr.latest().map(|x| x.cpu), Some(99.0));
  }

  #[test]
  fn sampler_measures_this_process() {
    let mut sampler = Sampler::new().expect("sysinfo works here");
    let a = sampler.sample();
    assert!(a.memory > 1.0, "rss {}", a.memory);
    assert!(a.total_memory >= a.free_memory);
    assert!((0.0..=100.0).contains(&a.cpu));
    assert!(a.processes >= 1);
    // A child process is part of the tree; threads are not.
    let mut child = std::process::Command::new("sleep")
      .arg("5")
      .spawn()
      .expect("spawn sleep");
    let b = sampler.sample();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(b.processes, a.processes + 1, "{a:?} {b:?}");
  }
}

//! Execution statistics in bounded memory: per agent, log-linear histograms of queue wait
//! and run time; for everyone, finishes per second over the last minute.
//!
//! A histogram never stores durations, only counts in buckets: 8 buckets per power of two
//! of microseconds (relative error under 1/8 = 12.5 %), 2 KiB each, whatever the number of
//! executions. Agents are small integer keys given by the caller, below `MAX_AGENTS` (the
//! caller gives later agents key 0, "other"); a larger key is clamped.

/// Agent keys with statistics of their own (`protocol::MAX_AGENT_KEYS`).
pub const MAX_AGENTS: usize = crate::protocol::MAX_AGENT_KEYS as usize;
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Covers 1 µs .. 2^40 µs (~12.7 days); longer durations land in the last bucket.
const BUCKETS: usize = (40 + 1) * SUB;
const WINDOW_S: usize = 60;

#[derive(Clone, Debug)]
pub struct Histogram {
  counts: Box<[u32; BUCKETS]>,
  total: u64,
  max_us: u64,
}

impl Default for Histogram {
  fn default() -> Self {
    Histogram {
      counts: Box::new([0; BUCKETS]),
      total: 0,
      max_us: 0,
    }
  }
}

fn bucket_of(us: u64) -> usize {
  if us < SUB as u64 {
    return us as usize;
  }
  let exp = 63 - us.leading_zeros(); // >= SUB_BITS
  let shift = exp - SUB_BITS;
  let sub = ((us >> shift) as usize) & (SUB - 1);
  (((exp - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// The smallest value of a bucket, in µs.
fn bucket_floor(b: usize) -> u64 {
  if b < SUB {
    return b as u64;
  }
  let exp = (b / SUB) as u32 + SUB_BITS - 1;
  let sub = (b % SUB) as u64;
  (1u64 << exp) | (sub << (exp - SUB_BITS))
}

impl Histogram {
  pub fn record(&mut self, ms: f64) {
    let us = if ms.is_finite() && ms > 0.0 {
      (ms * 1000.0) as u64
    } else {
      0
    };
    let b = bucket_of(us);
    self.counts[b] = self.counts[b].saturating_add(1);
    self.total += 1;
    self.max_us = self.max_us.max(us);
  }

  pub fn count(&self) -> u64 {
    self.total
  }

  /// The value at quantile `q` (0..1), in ms: the middle of its bucket, capped by the max seen.
  pub fn quantile(&self, q: f64) -> f64 {
    if self.total == 0 {
      return 0.0;
    }
    let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (b, &c) in self.counts.iter().enumerate() {
      seen += u64::from(c);
      if seen >= rank {
        let lo = bucket_floor(b);
        let hi = if b + 1 < BUCKETS { bucket_floor(b + 1) } else { lo };
        let mid = (lo + hi) / 2;
        return mid.min(self.max_us) as f64 / 1000.0;
      }
    }
    self.max_us as f64 / 1000.0
  }
}

#[derive(Clone, Debug, Default)]
pub struct AgentStats {
  pub wait: Histogram,
  pub run: Histogram,
}

#[derive(Debug)]
pub struct Stats {
  agents: Vec<Option<AgentStats>>,
  /// Finishes per second, a ring over the last minute; `second` is the slot's second.
  ring: [(u64, u32); WINDOW_S],
}

impl Default for Stats {
  fn default() -> Self {
    Stats {
      agents: Vec::new(),
      ring: [(u64::MAX, 0); WINDOW_S],
    }
  }
}

impl Stats {
  fn agent(&mut self, key: u16) -> &mut AgentStats {
    let k = usize::from(key).min(MAX_AGENTS - 1);
    if self.agents.len() <= k {
      self.agents.resize_with(k + 1, || None);
    }
    self.agents[k].get_or_insert_with(AgentStats::default)
  }

  pub fn started(&mut self, key: u16, waited_ms: f64) {
    self.agent(key).wait.record(waited_ms);
  }

  /// An execution ended at `now_ms`; `ran_ms` when it had started.
  pub fn finished(&mut self, key: u16, ran_ms: Option<f64>, now_ms: f64) {
    if let Some(ran) = ran_ms {
      self.agent(key).run.record(ran);
    }
    let second = (now_ms.max(0.0) / 1000.0) as u64;
    let slot = &mut self.ring[(second % WINDOW_S as u64) as usize];
    if slot.0 != second {
      *slot = (second, 0);
    }
    slot.1 = slot.1.saturating_add(1);
  }

  /// Executions that ended in the last 60 s (the current second included).
  pub fn last_minute(&self, now_ms: f64) -> u64 {
    let now_s = (now_ms.max(0.0) / 1000.0) as u64;
    self
      .ring
      .iter()
      .filter(|(s, _)| *s != u64::MAX && *s + (WINDOW_S as u64) > now_s && *s <= now_s)
      .map(|(_, c)| u64::from(*c))
      .sum()
  }

  pub fn agents(&self) -> impl Iterator<Item = (u16, &AgentStats)> {
    self
      .agents
      .iter()
      .enumerate()
      .filter_map(|(k, a)| a.as_ref().map(|a| (k as u16, a)))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn buckets_are_ordered_and_tight() {
    let mut last = 0;
    for us in [
      0u64,
      1,
      7,
      8,
      9,
      15,
      16,
      100,
      1_000,
      65_535,
      1 << 30,
      1 << 40,
      u64::MAX,
    ] {
      let b = bucket_of(us);
      assert!(b >= last, "{us}");
      last = b;
      if us < (1 << 40) {
        assert!(bucket_floor(b) <= us, "{us} floor {}", bucket_floor(b));
        if b + 1 < BUCKETS {
          assert!(bucket_floor(b + 1) > us, "{us}");
        }
      }
    }
  }

  #[test]
  fn quantiles_within_the_bucket_error() {
    let mut h = Histogram::default();
    for ms in 1..=1000 {
      h.record(f64::from(ms));
    }
    for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
      let got = h.quantile(q);
      assert!((got - exact).abs() / exact < 0.125, "q{q}: {got} vs {exact}");
    }
    assert_eq!(h.count(), 1000);
    assert_eq!(Histogram::default().quantile(0.5), 0.0);
    let mut one = Histogram::default();
    one.record(3.0);
    assert!((one.quantile(0.99) - 3.0).abs() < 0.4);
  }

  #[test]
  fn memory_is_bounded_by_buckets_not_samples() {
    let mut s = Stats::default();
    for i in 0..100_000 {
      s.started(7, f64::from(i % 50));
      s.finished(7, Some(f64::from(i % 300)), f64::from(i));
    }
    assert_eq!(s.agents().count(), 1);
    let a = s.agents().next().map(|(_, a)| a.run.count());
    assert_eq!(a, Some(100_000));
    // An absurd key is clamped, not allocated.
    s.started(u16::MAX, 1.0);
    assert!(s.agents.len() <= MAX_AGENTS);
  }

  #[test]
  fn throughput_counts_the_last_minute_only() {
    let mut s = Stats::default();
    for i in 0..120 {
      s.finished(1, None, f64::from(i) * 1000.0); // one per second for two minutes
    }
    assert_eq!(s.last_minute(119_500.0), 60);
    assert_eq!(s.last_minute(200_000.0), 0);
  }
}

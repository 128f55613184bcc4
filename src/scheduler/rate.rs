//! A sliding-window rate limit: at most `max` starts in any window of `interval_ms`.
//!
//! The window keeps the times of the last `max` starts (a ring). A start at `now` is allowed
//! when fewer than `max` starts are recorded or the oldest of them is at least `interval_ms`
//! old, so every half-open window `[t, t + interval_ms)` holds at most `max` starts: unlike
//! fixed buckets, no boundary lets `2 × max` through. Memory is `max` timestamps.

use std::collections::VecDeque;

/// Largest `max` accepted (the ring holds this many timestamps).
pub const MAX_RATE: u32 = crate::protocol::MAX_RATE;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
  pub max: u32,
  pub interval_ms: f64,
}

impl RateLimit {
  /// `None` unless `max >= 1` and `interval_ms` is finite and positive.
  pub fn new(max: u32, interval_ms: f64) -> Option<RateLimit> {
    (max >= 1 && interval_ms.is_finite() && interval_ms > 0.0).then(|| RateLimit {
      max: max.min(MAX_RATE),
      interval_ms: interval_ms.min(1e12),
    })
  }
}

#[derive(Clone, Debug)]
pub struct RateWindow {
  limit: RateLimit,
  /// Whether the limit holds starts back; a removed limit keeps recording, so that one set
  /// again counts the starts made meanwhile.
  active: bool,
  /// Start times, oldest first; at most `limit.max` of them.
  starts: VecDeque<f64>,
}

impl RateWindow {
  pub fn new(limit: RateLimit) -> Self {
    RateWindow {
      limit,
      active: true,
      starts: VecDeque::new(),
    }
  }

  /// The limit, while it is active.
  pub fn limit(&self) -> Option<RateLimit> {
    self.active.then_some(self.limit)
  }

  /// Sets the limit (`None`: removed, the window still records starts).
  pub fn set(window: &mut Option<RateWindow>, limit: Option<RateLimit>) {
    match (window, limit) {
      (Some(w), None) => w.active = false,
      (Some(w), Some(l)) => {
        w.set_limit(l);
        w.active = true;
      }
      (w @ None, Some(l)) => *w = Some(RateWindow::new(l)),
      (None, None) => {}
    }
  }

  /// A new limit; the starts already recorded still count against it. A full window forgot
  /// its older starts: for a larger `max`, they count as made at its oldest remembered start
  /// (no later than they were), so no window can exceed the new limit.
  fn set_limit(&mut self, limit: RateLimit) {
    let keep = limit.max as usize;
    if self.starts.len() == self.limit.max as usize {
      if let Some(&oldest) = self.starts.front() {
        while self.starts.len() < keep {
          self.starts.push_front(oldest);
        }
      }
    }
    while self.starts.len() > keep {
      self.starts.pop_front();
    }
    self.limit = limit;
  }

  /// The earliest time a start is allowed: `now` or earlier when one is allowed now.
  pub fn free_at(&self) -> f64 {
    if !self.active || self.starts.len() < self.limit.max as usize {
      return f64::NEG_INFINITY;
    }
    self
      .starts
      .front()
      .map_or(f64::NEG_INFINITY, |&t| t + self.limit.interval_ms)
  }

  pub fn allows(&self, now: f64) -> bool {
    now >= self.free_at()
  }

  /// Records a start at `now` (the caller checked `allows`).
  pub fn record(&mut self, now: f64) {
    if self.starts.len() >= self.limit.max as usize {
      self.starts.pop_front();
    }
    self.starts.push_back(now);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn window(max: u32, interval_ms: f64) -> RateWindow {
    RateWindow::new(RateLimit::new(max, interval_ms).expect("valid"))
  }

  #[test]
  fn allows_max_starts_then_waits_for_the_oldest_to_leave_the_window() {
    let mut w = window(3, 100.0);
    for t in [0.0, 10.0, 20.0] {
      assert!(w.allows(t));
      w.record(t);
    }
    assert!(!w.allows(99.9));
    assert_eq!(w.free_at(), 100.0);
    assert!(w.allows(100.0));
    w.record(100.0);
    assert_eq!(w.free_at(), 110.0);
  }

  #[test]
  fn no_window_holds_more_than_max_starts() {
    // Start as early as allowed, for a long stream; then check every window.
    let mut w = window(5, 50.0);
    let mut starts = vec![];
    let mut now = 0.0;
    while starts.len() < 500 {
      if w.allows(now) {
        w.record(now);
        starts.push(now);
      }
      now += 0.5;
    }
    for (i, &t) in starts.iter().enumerate() {
      let inside = starts[i..].iter().take_while(|&&s| s < t + 50.0).count();
      assert!(inside <= 5, "{inside} starts in [{t}, {})", t + 50.0);
    }
    // And it is not slower than the limit: 5 per 50 ms.
    assert!(now <= 500.0 / 5.0 * 50.0 + 1.0, "{now}");
  }

  #[test]
  fn a_lower_limit_keeps_the_recorded_starts() {
    let mut w = window(4, 100.0);
    for t in [0.0, 1.0, 2.0, 3.0] {
      w.record(t);
    }
    w.set_limit(RateLimit::new(2, 100.0).expect("valid"));
    assert_eq!(w.free_at(), 102.0, "the last two starts still count");
    // Raised again: the two starts it forgot count as made at its oldest remembered one.
    w.set_limit(RateLimit::new(4, 100.0).expect("valid"));
    assert_eq!(w.free_at(), 102.0);
    w.set_limit(RateLimit::new(10, 100.0).expect("valid"));
    assert!(!w.allows(101.0));
    assert!(w.allows(102.0));
  }

  #[test]
  fn a_removed_limit_keeps_counting_for_when_it_comes_back() {
    let mut slot = Some(window(2, 100.0));
    RateWindow::set(&mut slot, None);
    let w = slot.as_mut().expect("kept");
    assert_eq!(w.limit(), None);
    for t in [0.0, 1.0, 2.0] {
      assert!(w.allows(t));
      w.record(t);
    }
    RateWindow::set(&mut slot, RateLimit::new(2, 100.0));
    assert_eq!(slot.as_ref().map(RateWindow::free_at), Some(101.0));
  }

  #[test]
  fn a_raised_limit_never_lets_a_window_exceed_it() {
    let mut w = window(2, 100.0);
    let mut starts = vec![];
    for t in [0.0, 10.0, 100.0, 110.0] {
      assert!(w.allows(t));
      w.record(t);
      starts.push(t);
    }
    // Raised to 3: the window remembers 100 and 110; the start it forgot counts as made at
    // 100 (it was made earlier), so the next one waits until 200.
    w.set_limit(RateLimit::new(3, 100.0).expect("valid"));
    assert!(!w.allows(150.0));
    assert_eq!(w.free_at(), 200.0);
  }

  #[test]
  fn invalid_limits_are_refused() {
    assert!(RateLimit::new(0, 10.0).is_none());
    assert!(RateLimit::new(1, 0.0).is_none());
    assert!(RateLimit::new(1, f64::NAN).is_none());
    assert!(RateLimit::new(1, f64::INFINITY).is_none());
  }
}

//! A sliding-window rate limit: at most `max` starts in any window of `interval_ms`.
//!
//! The window keeps the times of recent starts, oldest first. A start at `now` is allowed
//! when fewer than `max` of them are later than `now - interval_ms`, so every half-open
//! window `[t, t + interval_ms)` holds at most `max` starts: unlike fixed buckets, no
//! boundary lets `2 × max` through.
//!
//! Starts are kept exactly for the longest interval the window has had (at most `MAX_RATE`
//! of them); older ones are summarised as counts over time spans (at most `SPANS`). A limit
//! whose interval grows at run time counts a span wholly while any part of it may be inside
//! the window, and until its latest start has left it: never fewer starts than were made.

use std::collections::VecDeque;

/// Largest `max` accepted, and most start times a window keeps exactly.
pub const MAX_RATE: u32 = crate::protocol::MAX_RATE;

/// Most summarised spans of older starts a window keeps (the oldest two merge beyond it).
const SPANS: usize = 32;

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

/// Starts no longer kept one by one: `count` of them, made from `first` to `last`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
  first: f64,
  last: f64,
  count: u64,
}

#[derive(Clone, Debug)]
pub struct RateWindow {
  limit: RateLimit,
  /// Whether the limit holds starts back; a removed limit keeps recording, so that one set
  /// again counts the starts made meanwhile.
  active: bool,
  /// Start times, oldest first: those of the last `keep_ms`, at most `MAX_RATE`.
  starts: VecDeque<f64>,
  /// The longest interval this window has had.
  keep_ms: f64,
  /// Older starts, oldest first.
  spans: VecDeque<Span>,
}

impl RateWindow {
  pub fn new(limit: RateLimit) -> Self {
    RateWindow {
      limit,
      active: true,
      starts: VecDeque::new(),
      keep_ms: limit.interval_ms,
      spans: VecDeque::new(),
    }
  }

  /// The limit, while it is active.
  pub fn limit(&self) -> Option<RateLimit> {
    self.active.then_some(self.limit)
  }

  /// Sets the limit (`None`: removed, the window still records starts). The starts already
  /// recorded count against the new limit.
  pub fn set(window: &mut Option<RateWindow>, limit: Option<RateLimit>) {
    match (window, limit) {
      (Some(w), None) => w.active = false,
      (Some(w), Some(l)) => {
        w.limit = l;
        w.keep_ms = w.keep_ms.max(l.interval_ms);
        w.active = true;
      }
      (w @ None, Some(l)) => *w = Some(RateWindow::new(l)),
      (None, None) => {}
    }
  }

  /// The earliest time a start is allowed: `now` or earlier when one is allowed now.
  /// O(log starts + spans).
  pub fn free_at(&self, now: f64) -> f64 {
    if !self.active {
      return f64::NEG_INFINITY;
    }
    let max = self.limit.max as u64;
    let interval = self.limit.interval_ms;
    // Starts after `now - interval` are in the window; a span is while its last one is.
    let from = now - interval;
    let spans = self.spans.iter().filter(|s| s.last > from);
    let in_spans: u64 = spans.clone().map(|s| s.count).sum();
    let first_inside = self.starts.partition_point(|&t| t <= from);
    let exact = (self.starts.len() - first_inside) as u64;
    if in_spans + exact < max {
      return f64::NEG_INFINITY;
    }
    // Full: the next start may come once enough of these have left, oldest first.
    let mut leave = in_spans + exact - (max - 1);
    for s in spans {
      if s.count >= leave {
        return s.last + interval;
      }
      leave -= s.count;
    }
    self.starts[first_inside + leave as usize - 1] + interval
  }

  pub fn allows(&self, now: f64) -> bool {
    now >= self.free_at(now)
  }

  /// Records a start at `now` (the caller checked `allows`).
  pub fn record(&mut self, now: f64) {
    while let Some(&oldest) = self.starts.front() {
      if oldest > now - self.keep_ms && self.starts.len() < MAX_RATE as usize {
        break;
      }
      self.starts.pop_front();
      self.summarise(oldest);
    }
    self.starts.push_back(now);
  }

  /// Adds a start dropped from `starts` to the spans: to the latest one while it covers at
  /// most `keep_ms`, else to a new one; beyond `SPANS`, the two neighbours that together
  /// cover the shortest time merge (so the summary stays finest where it is shortest).
  fn summarise(&mut self, t: f64) {
    match self.spans.back_mut() {
      Some(s) if t - s.first <= self.keep_ms => {
        s.last = t;
        s.count += 1;
      }
      _ => self.spans.push_back(Span {
        first: t,
        last: t,
        count: 1,
      }),
    }
    if self.spans.len() > SPANS {
      let i = (0..self.spans.len() - 1)
        .min_by(|&i, &j| {
          let width = |k: usize| self.spans[k + 1].last - self.spans[k].first;
          width(i).total_cmp(&width(j))
        })
        .unwrap_or(0);
      if let Some(b) = self.spans.remove(i + 1) {
        let a = &mut self.spans[i];
        a.last = b.last;
        a.count += b.count;
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn window(max: u32, interval_ms: f64) -> RateWindow {
    RateWindow::new(RateLimit::new(max, interval_ms).expect("valid"))
  }

  fn set(w: RateWindow, max: u32, interval_ms: f64) -> RateWindow {
    let mut slot = Some(w);
    RateWindow::set(&mut slot, RateLimit::new(max, interval_ms));
    slot.expect("kept")
  }

  #[test]
  fn allows_max_starts_then_waits_for_the_oldest_to_leave_the_window() {
    let mut w = window(3, 100.0);
    for t in [0.0, 10.0, 20.0] {
      assert!(w.allows(t));
      w.record(t);
    }
    assert!(!w.allows(99.9));
    assert_eq!(w.free_at(50.0), 100.0);
    assert!(w.allows(100.0));
    w.record(100.0);
    assert_eq!(w.free_at(100.0), 110.0);
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
    assert!(
      w.starts.len() <= 6,
      "only the last interval is kept: {}",
      w.starts.len()
    );
  }

  #[test]
  fn a_changed_max_counts_the_starts_already_made() {
    let mut w = window(4, 100.0);
    for t in [0.0, 1.0, 2.0, 3.0] {
      w.record(t);
    }
    let w = set(w, 2, 100.0);
    assert_eq!(w.free_at(50.0), 102.0, "the second latest start leaves at 102");
    let w = set(w, 4, 100.0);
    assert_eq!(w.free_at(50.0), 100.0, "raised again: exact, nothing forgotten");
    let w = set(w, 10, 100.0);
    assert!(w.allows(50.0));
  }

  #[test]
  fn a_longer_interval_counts_the_starts_a_shorter_one_let_through() {
    let mut w = window(2, 10.0);
    for t in [0.0, 20.0, 40.0] {
      assert!(w.allows(t));
      w.record(t);
    }
    let w = set(w, 2, 100.0);
    assert!(!w.allows(50.0), "three starts in the last 100 ms");
    assert_eq!(w.free_at(50.0), 120.0, "two must leave: 0, then 20");
    let w = set(w, 4, 100.0);
    assert!(w.allows(50.0), "three of four");
  }

  #[test]
  fn a_much_longer_interval_does_not_hold_a_window_with_room() {
    // 10 per 10 ms, two starts; then 10 per second: 2 of 10 used, the next goes at once.
    let mut w = window(10, 10.0);
    w.record(0.0);
    w.record(20.0);
    let w = set(w, 10, 1000.0);
    assert!(w.allows(30.0));
  }

  #[test]
  fn summarised_starts_stay_bounded_and_still_count() {
    // 1 per ms for 10 s, kept exactly for 1 ms: everything older is summarised.
    let mut w = window(1, 1.0);
    for i in 0..10_000 {
      let t = f64::from(i);
      assert!(w.allows(t));
      w.record(t);
    }
    assert!(
      w.starts.len() <= 2 && w.spans.len() <= SPANS,
      "{} {}",
      w.starts.len(),
      w.spans.len()
    );
    // 10k starts in the last 10 s: a limit of 10k per 20 s is full until some leave.
    let w = set(w, 10_000, 20_000.0);
    assert!(!w.allows(10_000.0));
    let free = w.free_at(10_000.0);
    assert!(
      (20_000.0..=20_000.0 + 10_000.0 / 16.0).contains(&free),
      "{free}: the first start leaves at 20000"
    );
    assert!(w.allows(30_000.0));
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
    assert_eq!(slot.as_ref().map(|w| w.free_at(50.0)), Some(101.0));
  }

  #[test]
  fn invalid_limits_are_refused() {
    assert!(RateLimit::new(0, 10.0).is_none());
    assert!(RateLimit::new(1, 0.0).is_none());
    assert!(RateLimit::new(1, f64::NAN).is_none());
    assert!(RateLimit::new(1, f64::INFINITY).is_none());
  }
}

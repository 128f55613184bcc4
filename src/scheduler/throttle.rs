//! Throttle episodes: one begins with the first resource sample that exceeds a threshold
//! and ends with the first that does not. Each transition is reported once, so listeners get
//! one event per episode, not one per sample. Which thresholds were exceeded is decided where
//! the sample is taken (`system::probes::Sample::exceeded`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
  /// A throttling episode began.
  Began,
  /// The episode ended.
  Ended,
}

#[derive(Debug, Default)]
pub struct Throttle {
  on: bool,
}

impl Throttle {
  pub fn is_on(&self) -> bool {
    self.on
  }

  /// One sample: `exceeded` when it exceeds a threshold and throttling is enabled.
  pub fn observe(&mut self, exceeded: bool) -> Option<Transition> {
    if exceeded == self.on {
      return None;
    }
    self.on = exceeded;
    Some(if exceeded {
      Transition::Began
    } else {
      Transition::Ended
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn one_transition_per_episode_and_immediate_end() {
    let mut th = Throttle::default();
    assert_eq!(th.observe(false), None);
    assert_eq!(th.observe(true), Some(Transition::Began));
    // Still over: same episode, no new transition.
    assert_eq!(th.observe(true), None);
    assert_eq!(th.observe(true), None);
    assert!(th.is_on());
    // The first sample under the thresholds ends it at once.
    assert_eq!(th.observe(false), Some(Transition::Ended));
    assert!(!th.is_on());
    assert_eq!(th.observe(false), None);
    assert_eq!(th.observe(true), Some(Transition::Began));
  }
}

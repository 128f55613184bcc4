//! Retry policy: whether a failed attempt gets another one, and after which delay.
//!
//! Exponential backoff doubles the delay per attempt and applies "equal jitter" (half the
//! delay fixed, half random), so executions that failed together do not all come back at
//! the same moment. The random half comes from a small xorshift64* generator: jitter needs
//! spread, not cryptographic quality, and it keeps the crate free of a `rand` dependency.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{BACKOFF_EXPONENTIAL, BACKOFF_FIXED, MAX_DELAY_MS, MAX_RETRIES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
  /// The same delay before every retry.
  Fixed,
  /// The delay doubles per attempt, with equal jitter.
  Exponential,
}

impl Backoff {
  /// From its protocol code (`BACKOFF_*`).
  pub fn from_code(code: u32) -> Option<Backoff> {
    match code {
      BACKOFF_FIXED => Some(Backoff::Fixed),
      BACKOFF_EXPONENTIAL => Some(Backoff::Exponential),
      _ => None,
    }
  }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
  /// Retries after the first attempt (at most `MAX_RETRIES`).
  pub retries: u32,
  /// The delay before the first retry, in ms (at most `MAX_DELAY_MS`).
  pub delay_ms: f64,
  pub backoff: Backoff,
}

impl Default for RetryPolicy {
  fn default() -> Self {
    RetryPolicy {
      retries: 0,
      delay_ms: 1_000.0,
      backoff: Backoff::Exponential,
    }
  }
}

impl RetryPolicy {
  /// A policy with `retries` and `delay_ms` brought into range (NaN delay: 0).
  pub fn new(retries: u32, delay_ms: f64, backoff: Backoff) -> Self {
    RetryPolicy {
      retries: retries.min(MAX_RETRIES),
      delay_ms: if delay_ms.is_nan() {
        0.0
      } else {
        delay_ms.clamp(0.0, f64::from(MAX_DELAY_MS))
      },
      backoff,
    }
  }

  /// The delay before the attempt after `attempt` (counted from 1) failed, or `None` when
  /// the policy allows no further attempt.
  pub fn delay_after(&self, attempt: u16, jitter: &mut Jitter) -> Option<f64> {
    if attempt == 0 || u32::from(attempt) > self.retries {
      return None;
    }
    Some(match self.backoff {
      Backoff::Fixed => self.delay_ms,
      Backoff::Exponential => {
        // 2^1023 is the largest finite power of two: no infinity, so a 0 delay stays 0.
        let doublings = i32::from(attempt - 1).min(1023);
        let d = (self.delay_ms * 2f64.powi(doublings)).min(f64::from(MAX_DELAY_MS));
        (d / 2.0 + jitter.next_unit() * d / 2.0).round()
      }
    })
  }
}

/// Tells apart generators created within one clock tick of each other.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// xorshift64* (Vigna, 2016): one state word, uniform enough for jitter.
#[derive(Debug, Clone)]
pub struct Jitter {
  state: u64,
}

impl Jitter {
  /// A generator seeded from the process's random hash keys and a per-instance counter.
  pub fn seeded() -> Self {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(INSTANCES.fetch_add(1, Ordering::Relaxed));
    Jitter::from_seed(h.finish())
  }

  pub fn from_seed(seed: u64) -> Self {
    // splitmix64 of the seed: never zero for a seed that is, and well spread for small ones.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Jitter {
      state: if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z },
    }
  }

  fn next_u64(&mut self) -> u64 {
    let mut x = self.state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    self.state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
  }

  /// Uniform in [0, 1).
  pub fn next_unit(&mut self) -> f64 {
    (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn fixed_delays_do_not_grow() {
    let p = RetryPolicy::new(3, 250.0, Backoff::Fixed);
    let mut j = Jitter::from_seed(1);
    let delays: Vec<_> = (1..=4).map(|a| p.delay_after(a, &mut j)).collect();
    assert_eq!(delays, vec![Some(250.0), Some(250.0), Some(250.0), None]);
  }

  #[test]
  fn exponential_delays_stay_within_half_to_whole() {
    let p = RetryPolicy::new(6, 100.0, Backoff::Exponential);
    let mut j = Jitter::seeded();
    for attempt in 1..=6u16 {
      let d = 100.0 * 2f64.powi(i32::from(attempt) - 1);
      let mut seen_low = false;
      let mut seen_high = false;
      for _ in 0..500 {
        let got = p.delay_after(attempt, &mut j).unwrap_or(-1.0);
        assert!(
          (d / 2.0..=d).contains(&got),
          "attempt {attempt}: {got} outside [{}, {d}]",
          d / 2.0
        );
        assert_eq!(got, got.round());
        seen_low |= got < d * 0.6;
        seen_high |= got > d * 0.9;
      }
      assert!(seen_low && seen_high, "attempt {attempt}: no spread");
    }
    assert_eq!(p.delay_after(7, &mut j), None);
  }

  #[test]
  fn exponential_delays_are_capped() {
    let max = f64::from(MAX_DELAY_MS);
    let p = RetryPolicy::new(MAX_RETRIES, 1_000.0, Backoff::Exponential);
    let mut j = Jitter::from_seed(7);
    for attempt in [40u16, 1000] {
      let got = p.delay_after(attempt, &mut j).unwrap_or(-1.0);
      assert!((max / 2.0 - 1.0..=max).contains(&got), "{got}");
    }
    let zero = RetryPolicy::new(MAX_RETRIES, 0.0, Backoff::Exponential);
    assert_eq!(zero.delay_after(1000, &mut j), Some(0.0));
  }

  #[test]
  fn policy_values_are_brought_into_range() {
    let p = RetryPolicy::new(u32::MAX, f64::INFINITY, Backoff::Fixed);
    assert_eq!((p.retries, p.delay_ms), (MAX_RETRIES, f64::from(MAX_DELAY_MS)));
    let p = RetryPolicy::new(1, f64::NAN, Backoff::Fixed);
    assert_eq!(p.delay_ms, 0.0);
    assert_eq!(RetryPolicy::new(1, -5.0, Backoff::Fixed).delay_ms, 0.0);
    assert_eq!(Backoff::from_code(BACKOFF_FIXED), Some(Backoff::Fixed));
    assert_eq!(
      Backoff::from_code(BACKOFF_EXPONENTIAL),
      Some(Backoff::Exponential)
    );
    assert_eq!(Backoff::from_code(99), None);
  }

  #[test]
  fn no_retries_means_no_retry() {
    let p = RetryPolicy::new(0, 10.0, Backoff::Fixed);
    let mut j = Jitter::from_seed(3);
    assert_eq!(p.delay_after(1, &mut j), None);
    assert_eq!(p.delay_after(0, &mut j), None);
  }

  #[test]
  fn generators_differ_and_stay_in_the_unit_interval() {
    let mut a = Jitter::seeded();
    let mut b = Jitter::seeded();
    let xs: Vec<f64> = (0..8).map(|_| a.next_unit()).collect();
    let ys: Vec<f64> = (0..8).map(|_| b.next_unit()).collect();
    assert_ne!(xs, ys);
    let mut j = Jitter::from_seed(0);
    let mean = (0..100_000)
      .map(|_| j.next_unit())
      .inspect(|u| assert!((0.0..1.0).contains(u)))
      .sum::<f64>()
      / 1e5;
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
  }
}

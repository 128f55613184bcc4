//! Arithmetic of the aggregation report (`executeMultiple`).

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
  pub total: u32,
  pub successful: u32,
  pub failed: u32,
  /// 0–100, rounded to two decimals.
  pub success_rate: f64,
  /// Sum of the executions' durations (ms).
  pub total_duration: f64,
  /// `total_duration / total`, rounded to two decimals; 0 when there is nothing.
  pub average_duration: f64,
}

fn round2(x: f64) -> f64 {
  (x * 100.0).round() / 100.0
}

/// `succeeded[i]` and `durations[i]` describe execution `i`. Non-finite or negative
/// durations count as 0 (a duration is never negative).
pub fn report(succeeded: &[bool], durations: &[f64]) -> Report {
  let total = succeeded.len() as u32;
  let successful = succeeded.iter().filter(|&&ok| ok).count() as u32;
  let total_duration: f64 = durations
    .iter()
    .map(|&d| if d.is_finite() && d > 0.0 { d } else { 0.0 })
    .sum();
  let (success_rate, average_duration) = if total == 0 {
    (0.0, 0.0)
  } else {
    (
      round2(f64::from(successful) * 100.0 / f64::from(total)),
      round2(total_duration / f64::from(total)),
    )
  };
  Report {
    total,
    successful,
    failed: total - successful,
    success_rate,
    total_duration: round2(total_duration),
    average_duration,
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn all_succeeded() {
    let r = report(&[true, true, true], &[1000.0, 1500.0, 2000.0]);
    assert_eq!(
      r,
      Report {
        total: 3,
        successful: 3,
        failed: 0,
        success_rate: 100.0,
        total_duration: 4500.0,
        average_duration: 1500.0
      }
    );
  }

  #[test]
  fn failures_count_and_rates_round() {
    let r = report(&[true, false, true], &[10.0, 20.0, 30.5]);
    assert_eq!((r.successful, r.failed), (2, 1));
    assert_eq!(r.success_rate, 66.67);
    assert_eq!(r.total_duration, 60.5);
    assert_eq!(r.average_duration, 20.17);
  }

  #[test]
  fn empty_and_bad_durations() {
    let r = report(&[], &[]);
    assert_eq!((r.total, r.success_rate, r.average_duration), (0, 0.0, 0.0));
    let r = report(&[false, false], &[f64::NAN, -3.0]);
    assert_eq!((r.failed, r.success_rate, r.total_duration), (2, 0.0, 0.0));
  }
}

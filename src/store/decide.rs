//! The decisions both drivers make the same way: what the end of a failed attempt does to
//! its execution, and what a rescue does with an execution whose worker was lost. Pure:
//! the drivers read the stored fields, ask here, and write the answer with their own SQL.

use crate::protocol::{STATUS_CANCELLED, STATUS_FAILED, STATUS_QUEUED};
use crate::scheduler::retry::{Backoff, Jitter, RetryPolicy};

/// The stored retry settings and cancel flag of a running execution.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
  pub max_attempts: u32,
  pub retry_delay_ms: f64,
  pub backoff: u32,
  pub cancel_requested: bool,
}

/// What an attempt that did not complete leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterAttempt {
  /// Queued again, due after this delay (ms).
  Retry(f64),
  /// Ended with this status (`STATUS_FAILED` or `STATUS_CANCELLED`).
  End(u32),
}

/// The end of attempt `attempt` with `status` (failed or cancelled): retried when it failed
/// retryably, no cancel was requested and its policy has attempts left; else it ends,
/// cancelled when asked to be.
pub fn after_attempt(
  status: u32,
  retryable: bool,
  attempt: u32,
  s: Stored,
  jitter: &mut Jitter,
) -> AfterAttempt {
  if status == STATUS_FAILED && retryable && !s.cancel_requested {
    let policy = RetryPolicy::new(
      s.max_attempts.saturating_sub(1),
      s.retry_delay_ms,
      Backoff::from_code(s.backoff).unwrap_or(Backoff::Exponential),
    );
    if let Some(delay) = policy.delay_after(u16::try_from(attempt).unwrap_or(u16::MAX), jitter) {
      return AfterAttempt::Retry(delay);
    }
  }
  AfterAttempt::End(if status == STATUS_CANCELLED || s.cancel_requested {
    STATUS_CANCELLED
  } else {
    STATUS_FAILED
  })
}

/// What a rescue does with an execution whose worker was lost during `attempt`: cancelled
/// when a cancel was requested, queued again while attempts are left, else failed
/// (`ERR_WORKER_LOST`).
pub fn rescue_status(cancel_requested: bool, attempt: u32, max_attempts: u32) -> u32 {
  if cancel_requested {
    STATUS_CANCELLED
  } else if attempt < max_attempts {
    STATUS_QUEUED
  } else {
    STATUS_FAILED
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::protocol::BACKOFF_FIXED;

  fn stored(max_attempts: u32, cancel_requested: bool) -> Stored {
    Stored {
      max_attempts,
      retry_delay_ms: 100.0,
      backoff: BACKOFF_FIXED,
      cancel_requested,
    }
  }

  #[test]
  fn a_retryable_failure_with_attempts_left_is_retried() {
    let mut j = Jitter::seeded();
    assert_eq!(
      after_attempt(STATUS_FAILED, true, 1, stored(3, false), &mut j),
      AfterAttempt::Retry(100.0)
    );
    assert_eq!(
      after_attempt(STATUS_FAILED, true, 3, stored(3, false), &mut j),
      AfterAttempt::End(STATUS_FAILED)
    );
    assert_eq!(
      after_attempt(STATUS_FAILED, false, 1, stored(3, false), &mut j),
      AfterAttempt::End(STATUS_FAILED)
    );
  }

  #[test]
  fn a_requested_cancel_wins() {
    let mut j = Jitter::seeded();
    assert_eq!(
      after_attempt(STATUS_FAILED, true, 1, stored(3, true), &mut j),
      AfterAttempt::End(STATUS_CANCELLED)
    );
    assert_eq!(
      after_attempt(STATUS_CANCELLED, true, 1, stored(3, false), &mut j),
      AfterAttempt::End(STATUS_CANCELLED)
    );
    assert_eq!(rescue_status(true, 1, 3), STATUS_CANCELLED);
    assert_eq!(rescue_status(false, 1, 3), STATUS_QUEUED);
    assert_eq!(rescue_status(false, 3, 3), STATUS_FAILED);
  }
}

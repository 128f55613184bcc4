//! The `max_queued` bound on submissions.

use super::*;

#[test]
fn a_submission_beyond_max_queued_is_refused_and_leaves_no_trace() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 1,
    max_queued: 2,
    ..Config::default()
  });
  assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((1, true)));
  assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((2, false)));
  assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), Some((3, false)));
  assert_eq!(s.submit(0, 0, false, 3, 0.0, 0.0), None, "the queue holds 2");
  assert_eq!(s.queued(), 2);
  assert_eq!(s.totals.submitted, 3, "the refused one is not counted");
  // A start makes room, and ids stay in sequence.
  s.settle(1, 1, true, 1.0);
  assert_eq!(s.submit(0, 0, false, 3, 0.0, 1.0), Some((4, false)));
}

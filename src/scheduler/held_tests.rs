//! Held (delayed) submissions: waiting for their start timer, and cancelled meanwhile.

use super::*;

#[test]
fn a_held_submission_waits_for_its_timer_then_queues_and_starts() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 1,
    ..Config::default()
  });
  assert_eq!(s.submit_as(0, 0, false, 3, 0.0, true, 0.0), Some((1, false)));
  assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Waiting));
  assert_eq!(s.queued(), 0, "not in the queue while held");
  assert_eq!(
    s.submit(0, 0, false, 3, 0.0, 0.0),
    Some((2, true)),
    "others start meanwhile"
  );
  assert!(s.start_after(1, 50.0, 0.0));
  assert!(!s.start_after(1, 50.0, 0.0), "armed once");
  assert!(s.retry_due(1, 50.0).is_empty(), "the slot is taken: it queues");
  assert_eq!(s.queued(), 1);
  let settled = s.settle(2, 1, true, 60.0);
  assert_eq!(settled.next, Some(1));
  assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Running));
}

#[test]
fn a_held_submission_can_be_cancelled_while_it_waits() {
  let mut s = Scheduler::new(Config::default());
  s.submit_as(0, 0, false, 3, 0.0, true, 0.0);
  s.start_after(1, 1000.0, 0.0);
  assert_eq!(s.cancel(1, 10.0), Some(Status::Waiting));
  assert!(s.retry_due(1, 1000.0).is_empty());
  assert_eq!(s.view(1, 0.0, false).map(|v| v.status), Some(Status::Cancelled));
}

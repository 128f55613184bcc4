//! The scheduler's lifecycle, timers, retries, retention and queries, driven with a fake
//! clock.

use super::retry::Backoff;
use super::*;
use crate::protocol;

fn sched(max: u32) -> Scheduler {
  Scheduler::new(Config {
    max_concurrent: max,
    ..Config::default()
  })
}

fn sched_with_grace(max: u32, cancel_grace_ms: f64) -> Scheduler {
  Scheduler::new(Config {
    max_concurrent: max,
    cancel_grace_ms,
    ..Config::default()
  })
}

fn sched_with_retry(max: u32, retry: RetryPolicy) -> Scheduler {
  Scheduler::new(Config {
    max_concurrent: max,
    retry,
    ..Config::default()
  })
}

fn fixed(retries: u32, delay_ms: f64) -> RetryPolicy {
  RetryPolicy::new(retries, delay_ms, Backoff::Fixed)
}

fn submit(s: &mut Scheduler, prio: i32, now: f64) -> (u64, bool) {
  s.submit(0, 0, false, prio, 0.0, now).expect("open")
}

/// `settle` as `(ended, next)`.
fn settle(s: &mut Scheduler, id: u64, attempt: u16, ok: bool, now: f64) -> (bool, Option<u64>) {
  let r = s.settle(id, attempt, ok, now);
  (r.ended, r.next)
}

#[test]
fn stats_record_wait_and_run_per_agent() {
  let mut s = sched(1);
  s.submit(3, 1, false, 3, 0.0, 0.0);
  s.submit(3, 2, false, 3, 0.0, 10.0);
  settle(&mut s, 1, 0, true, 40.0); // agent 1 ran 40 ms; agent 2 waited 30 ms
  settle(&mut s, 2, 0, false, 45.0);
  let by_key: Vec<_> = s
    .stats()
    .agents()
    .map(|(k, a)| (k, a.wait.count(), a.run.count()))
    .collect();
  assert_eq!(by_key, vec![(1, 1, 1), (2, 1, 1)]);
  let a2 = s
    .stats()
    .agents()
    .find(|(k, _)| *k == 2)
    .map(|(_, a)| a.wait.quantile(0.5));
  assert!(a2.is_some_and(|w| (w - 30.0).abs() < 30.0 * 0.125), "{a2:?}");
  assert_eq!(s.stats().last_minute(45.0), 2);
}

#[test]
fn a_failed_attempt_waits_then_requeues_at_the_back() {
  let mut s = sched_with_retry(1, fixed(1, 100.0));
  submit(&mut s, 3, 0.0); // 1
  submit(&mut s, 3, 0.0); // 2 queued
                          // Attempt 1 of id 1 fails with a retry in 100 ms: the slot goes to id 2 at once.
  assert_eq!(
    s.settle(1, 1, false, 10.0),
    Settled {
      ended: true,
      next: Some(2),
      retry_delay_ms: Some(100.0)
    }
  );
  assert_eq!(s.view(1, 10.0, true).map(|v| v.status), Some(Status::Waiting));
  assert!(!s.is_idle());
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.contains(&TimerCmd::Arm {
    id: 1,
    kind: TimerKind::Retry,
    at_ms: 110.0
  }));
  // Nothing counted as failed yet.
  assert_eq!(s.totals().failed, 0);
  // The delay ends while id 2 runs: id 1 is queued again, and starts when 2 settles.
  assert_eq!(s.retry_due(1, 110.0), Vec::<u64>::new());
  assert_eq!(s.queue_order(), vec![1]);
  assert_eq!(settle(&mut s, 2, 1, true, 120.0), (true, Some(1)));
  // Its second attempt; a settle tagged with the old attempt is ignored.
  assert_eq!(settle(&mut s, 1, 1, true, 130.0), (false, None));
  assert_eq!(settle(&mut s, 1, 2, true, 140.0), (true, None));
  assert_eq!(
    s.totals(),
    Totals {
      submitted: 2,
      completed: 2,
      failed: 0,
      cancelled: 0
    }
  );
  assert!(s.is_idle());
}

#[test]
fn retries_run_out_after_the_configured_count() {
  let mut s = sched_with_retry(1, fixed(2, 10.0));
  submit(&mut s, 3, 0.0);
  let mut now = 0.0;
  for attempt in 1..=2 {
    assert_eq!(s.settle(1, attempt, false, now).retry_delay_ms, Some(10.0));
    now += 10.0;
    assert_eq!(s.retry_due(1, now), vec![1]);
  }
  // Attempt 3 of 3 fails: the execution fails.
  let r = s.settle(1, 3, false, now);
  assert_eq!((r.ended, r.retry_delay_ms), (true, None));
  assert_eq!(s.view(1, now, true).map(|v| v.status), Some(Status::Failed));
  assert_eq!(s.totals().failed, 1);
}

#[test]
fn no_retries_configured_means_a_failure_ends_the_execution() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  assert_eq!(s.settle(1, 1, false, 1.0).retry_delay_ms, None);
  assert_eq!(s.view(1, 1.0, true).map(|v| v.status), Some(Status::Failed));
}

#[test]
fn a_closed_scheduler_retries_nothing() {
  let mut s = sched_with_retry(1, fixed(5, 10.0));
  submit(&mut s, 3, 0.0);
  s.close(false, 1.0);
  assert_eq!(s.settle(1, 1, false, 2.0).retry_delay_ms, None);
  assert_eq!(s.view(1, 2.0, true).map(|v| v.status), Some(Status::Failed));
}

#[test]
fn exponential_retry_delays_grow_within_their_jitter_bounds() {
  let mut s = sched_with_retry(1, RetryPolicy::new(4, 100.0, Backoff::Exponential));
  s.submit(0, 0, false, 3, 50.0, 0.0); // timeout 50 ms
  let mut now = 0.0;
  for attempt in 1..=4u16 {
    let d = 100.0 * f64::from(1u32 << (attempt - 1));
    // Odd attempts fail by a settle, even ones by their timeout.
    let delay = if attempt % 2 == 1 {
      s.settle(1, attempt, false, now).retry_delay_ms
    } else {
      now += 50.0;
      match s.timeout(1, now) {
        TimedOut::Retry(ms) => Some(ms),
        other => panic!("{other:?}"),
      }
    };
    let delay = delay.unwrap_or(-1.0);
    assert!((d / 2.0..=d).contains(&delay), "attempt {attempt}: {delay}");
    now += delay;
    s.retry_due(1, now);
    if attempt % 2 == 0 {
      settle(&mut s, 1, attempt, true, now); // the timed-out agent lets go of its slot
    }
    assert_eq!(s.running_ids(), vec![1]);
  }
  now += 50.0;
  assert_eq!(s.timeout(1, now), TimedOut::Failed);
}

#[test]
fn an_execution_s_own_policy_wins_and_goes_when_it_finishes() {
  let mut s = sched_with_retry(2, fixed(0, 10.0));
  submit(&mut s, 3, 0.0); // 1: its own policy
  submit(&mut s, 3, 0.0); // 2: the configured one (no retries)
  assert!(s.set_retry_policy(1, fixed(1, 500.0)));
  assert!(!s.set_retry_policy(99, fixed(1, 500.0)));
  assert_eq!(s.settle(1, 1, false, 1.0).retry_delay_ms, Some(500.0));
  assert_eq!(s.settle(2, 1, false, 1.0).retry_delay_ms, None);
  assert!(!s.set_retry_policy(2, fixed(1, 500.0)), "finished: nothing kept");
  assert_eq!(s.retry_policies.len(), 1);
  s.retry_due(1, 501.0);
  settle(&mut s, 1, 2, true, 502.0);
  assert!(s.retry_policies.is_empty(), "dropped when it finished");
  // Dropped however it finishes: cancelled while queued, then evicted.
  let (id, _) = submit(&mut s, 3, 600.0);
  assert!(s.set_retry_policy(id, fixed(3, 1.0)));
  assert_eq!(s.cancel(id, 601.0), Some(Status::Running));
  assert!(s.retry_policies.is_empty());
  s.sweep(1e9);
  assert_eq!(s.records(), 1, "only the zombie's record is left");
  assert!(s.retry_policies.is_empty());
}

#[test]
fn a_timed_out_attempt_keeps_its_slot_until_it_lets_go() {
  let mut s = sched_with_retry(1, fixed(1, 10.0));
  s.submit(0, 0, false, 3, 50.0, 0.0); // 1, timeout 50 ms
  assert_eq!(s.timeout(1, 50.0), TimedOut::Retry(10.0));
  assert_eq!(s.slots_used(), 1, "the timed-out agent still holds the slot");
  // The retry delay ends first: the next attempt waits for the slot.
  assert_eq!(s.retry_due(1, 60.0), Vec::<u64>::new());
  assert!(s.queue_order().is_empty());
  // The old attempt settles late: its result is discarded, the next attempt starts in
  // the slot it frees.
  assert_eq!(settle(&mut s, 1, 1, true, 70.0), (false, Some(1)));
  assert_eq!(s.running_ids(), vec![1]);
  assert_eq!(s.execs.get(1).map(|e| e.attempt), Some(2));
}

#[test]
fn cancel_and_close_stop_pending_retries() {
  let mut s = sched_with_retry(2, fixed(1, 1000.0));
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  s.settle(1, 1, false, 1.0);
  s.settle(2, 1, false, 1.0);
  assert_eq!(s.cancel(1, 2.0), Some(Status::Waiting));
  assert_eq!(s.close(false, 3.0), vec![2]);
  assert!(s.is_idle());
  assert_eq!(s.totals().cancelled, 2);
  // A retry timer that fires afterwards changes nothing.
  assert!(s.retry_due(2, 1001.0).is_empty());
  assert_eq!(s.view(2, 1001.0, true).map(|v| v.status), Some(Status::Cancelled));
}

#[test]
fn stale_grace_and_timeout_firings_are_ignored() {
  let mut s = sched_with_retry(1, fixed(1, 0.0));
  s.submit(0, 0, false, 3, 50.0, 0.0); // 1: timeout 50
                                       // A zombie with grace armed; its retry is due at once.
  assert_eq!(s.timeout(1, 50.0), TimedOut::Retry(0.0));
  s.retry_due(1, 50.0); // ready, waits for the slot
                        // The zombie settles: its slot goes to attempt 2 at once.
  assert_eq!(settle(&mut s, 1, 1, true, 60.0), (false, Some(1)));
  assert_eq!(s.slots_used(), 1);
  // A grace expiry already in flight arrives late: it must not free attempt 2's slot.
  assert!(s.grace_expired(1, 61.0).is_empty());
  assert_eq!(s.slots_used(), 1);
  // The first attempt's timeout firing arriving now is stale for attempt 2 (deadline 110).
  assert_eq!(s.timeout(1, 62.0), TimedOut::Stale);
  assert_eq!(s.timeout(1, 110.0), TimedOut::Failed);
}

#[test]
fn codes_agree_with_the_protocol() {
  let statuses = [
    (Status::Queued, protocol::STATUS_QUEUED),
    (Status::Running, protocol::STATUS_RUNNING),
    (Status::Completed, protocol::STATUS_COMPLETED),
    (Status::Failed, protocol::STATUS_FAILED),
    (Status::Cancelled, protocol::STATUS_CANCELLED),
    (Status::Waiting, protocol::STATUS_WAITING),
  ];
  assert_eq!(statuses.len(), protocol::STATUS_NAMES.len());
  for (status, code) in statuses {
    assert_eq!(status.code(), code as i32);
    assert_eq!(status.as_str(), protocol::STATUS_NAMES[code as usize]);
  }
  assert_eq!(Status::Waiting.as_str(), Status::Queued.as_str());
  let kinds = [
    (TimerKind::Timeout, protocol::TIMER_TIMEOUT),
    (TimerKind::Progress, protocol::TIMER_PROGRESS),
    (TimerKind::Grace, protocol::TIMER_GRACE),
    (TimerKind::Sweep, protocol::TIMER_SWEEP),
    (TimerKind::Shutdown, protocol::TIMER_SHUTDOWN),
    (TimerKind::Retry, protocol::TIMER_RETRY),
    (TimerKind::Rate, protocol::TIMER_RATE),
  ];
  assert_eq!(kinds.map(|(k, _)| k), TimerKind::ALL);
  for (kind, code) in kinds {
    assert_eq!(u32::from(kind as u8), code);
    assert_eq!(TimerKind::from_u8(kind as u8), Some(kind));
    assert!(code < 8, "timer kinds are bits of a u8");
  }
  assert_eq!(TimerKind::from_u8(0), None);
  let modes = [
    protocol::MODE_FIRE,
    protocol::MODE_CALLBACK,
    protocol::MODE_WATCHED,
    protocol::MODE_EXECUTE,
    protocol::MODE_AGGREGATE,
  ];
  assert_eq!(modes.len(), protocol::MODE_NAMES.len());
  for (i, mode) in modes.into_iter().enumerate() {
    assert_eq!(mode as usize, i);
    assert!(
      mode < 1 << protocol::SUBMIT_KEY_SHIFT,
      "a mode fits below the agent key"
    );
  }
  assert!(
    protocol::MAX_RETRIES < u32::from(u16::MAX),
    "attempts fit an Exec's u16"
  );
}

#[test]
fn execution_record_stays_small() {
  assert!(
    std::mem::size_of::<Exec>() <= 48,
    "{}",
    std::mem::size_of::<Exec>()
  );
}

#[test]
fn starts_up_to_the_limit_then_queues_by_priority() {
  let mut s = sched(2);
  assert_eq!(submit(&mut s, 2, 0.0), (1, true));
  assert_eq!(submit(&mut s, 2, 0.0), (2, true));
  assert_eq!(submit(&mut s, 2, 0.0), (3, false));
  assert_eq!(submit(&mut s, 5, 0.0), (4, false));
  assert_eq!(submit(&mut s, 2, 0.0), (5, false));
  assert_eq!(submit(&mut s, 5, 0.0), (6, false));
  assert_eq!(s.queue_order(), vec![4, 6, 3, 5]);
  assert_eq!(s.queue_position(3), Some(3));
  assert_eq!((s.running(), s.queued()), (2, 4));
  assert_eq!(settle(&mut s, 1, 0, true, 1.0), (true, Some(4)));
  assert_eq!(settle(&mut s, 4, 0, false, 2.0), (true, Some(6)));
  assert_eq!(settle(&mut s, 2, 0, true, 3.0), (true, Some(3)));
  assert_eq!(settle(&mut s, 6, 0, true, 3.0), (true, Some(5)));
  assert_eq!(settle(&mut s, 3, 0, true, 3.0), (true, None));
  assert!(!s.is_idle());
  assert_eq!(settle(&mut s, 5, 0, true, 3.0), (true, None));
  assert!(s.is_idle());
  assert_eq!(
    s.totals(),
    Totals {
      submitted: 6,
      completed: 5,
      failed: 1,
      cancelled: 0
    }
  );
  assert_eq!(s.view(4, 3.0, true).map(|v| v.status), Some(Status::Failed));
}

#[test]
fn late_settle_is_discarded() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  assert_eq!(settle(&mut s, 1, 0, true, 1.0), (true, None));
  assert_eq!(settle(&mut s, 1, 0, false, 2.0), (false, None));
  assert_eq!(settle(&mut s, 99, 0, true, 2.0), (false, None));
  assert_eq!(s.totals().completed, 1);
  assert_eq!(s.totals().failed, 0);
}

#[test]
fn cancel_queued_leaves_queue_and_keeps_counts() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  assert_eq!(s.cancel(2, 1.0), Some(Status::Queued));
  assert_eq!(s.cancel(2, 1.0), Some(Status::Cancelled));
  assert_eq!(s.cancel(42, 1.0), None);
  assert_eq!((s.running(), s.queued(), s.slots_used()), (1, 1, 1));
  assert_eq!(s.queue_order(), vec![3]);
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, Some(3)));
  assert_eq!(s.totals().cancelled, 1);
}

#[test]
fn cancelled_running_keeps_slot_until_settle() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  assert_eq!(s.cancel(1, 1.0), Some(Status::Running));
  // Cancelled at once, but the slot is still held: nothing starts.
  assert_eq!(s.view(1, 1.0, true).map(|v| v.status), Some(Status::Cancelled));
  assert_eq!((s.running(), s.slots_used(), s.queued()), (0, 1, 1));
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.contains(&TimerCmd::Arm {
    id: 1,
    kind: TimerKind::Grace,
    at_ms: 5001.0
  }));
  // The agent settles: late result discarded, slot freed, next starts, grace disarmed.
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (false, Some(2)));
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.contains(&TimerCmd::Disarm {
    id: 1,
    kind: TimerKind::Grace
  }));
  assert_eq!(s.totals().completed, 0);
  assert_eq!(s.totals().cancelled, 1);
}

#[test]
fn grace_expiry_frees_the_slot_of_an_agent_that_ignores_its_signal() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  s.cancel(1, 1.0);
  assert_eq!(s.grace_expired(1, 5001.0), vec![2]);
  assert_eq!(s.slots_used(), 1);
  // The ignoring agent finally settles: nothing changes.
  assert_eq!(settle(&mut s, 1, 0, true, 9000.0), (false, None));
  assert_eq!(s.slots_used(), 1);
}

#[test]
fn zero_grace_frees_at_once() {
  let mut s = sched_with_grace(1, 0.0);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  s.cancel(1, 1.0);
  assert_eq!(s.slots_used(), 0);
  assert_eq!(s.pump(1.0), vec![2]);
}

#[test]
fn timeout_fails_running_and_arms_grace() {
  let mut s = sched(1);
  assert_eq!(s.submit(0, 0, false, 3, 50.0, 10.0), Some((1, true)));
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert_eq!(
    cmds,
    vec![TimerCmd::Arm {
      id: 1,
      kind: TimerKind::Timeout,
      at_ms: 60.0
    }]
  );
  assert_eq!(s.timeout(1, 60.0), TimedOut::Failed);
  assert_eq!(s.timeout(1, 61.0), TimedOut::Stale);
  assert_eq!(s.view(1, 60.0, true).map(|v| v.status), Some(Status::Failed));
  assert_eq!(s.totals().failed, 1);
  assert_eq!(s.slots_used(), 1);
}

#[test]
fn settle_disarms_timeout() {
  let mut s = sched(1);
  s.submit(0, 0, false, 3, 50.0, 0.0);
  s.take_timer_cmds();
  settle(&mut s, 1, 0, true, 5.0);
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.contains(&TimerCmd::Disarm {
    id: 1,
    kind: TimerKind::Timeout
  }));
}

#[test]
fn pause_resume_and_concurrency_changes() {
  let mut s = sched(1);
  s.set_paused(true, 0.0);
  for _ in 0..4 {
    assert!(!submit(&mut s, 3, 0.0).1);
  }
  assert_eq!(s.set_paused(false, 1.0), vec![1]);
  assert_eq!(s.set_concurrency(3, 1.0), vec![2, 3]);
  assert_eq!(s.set_concurrency(1, 1.0), Vec::<u64>::new());
  // Lowering the limit does not stop running work, and nothing new starts above it.
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, None));
  assert_eq!(settle(&mut s, 2, 0, true, 2.0), (true, None));
  assert_eq!(settle(&mut s, 3, 0, true, 2.0), (true, Some(4)));
}

#[test]
fn throttling_allows_min_concurrent() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 4,
    min_concurrent: 1,
    ..Config::default()
  });
  s.set_throttled(true, 0.0);
  assert!(submit(&mut s, 3, 0.0).1);
  assert!(!submit(&mut s, 3, 0.0).1);
  assert!(!submit(&mut s, 3, 0.0).1);
  assert_eq!(s.set_throttled(false, 1.0), vec![2, 3]);
  let mut s = Scheduler::new(Config {
    max_concurrent: 4,
    min_concurrent: 0,
    ..Config::default()
  });
  s.set_throttled(true, 0.0);
  assert!(!submit(&mut s, 3, 0.0).1, "min 0: nothing runs while throttled");
  assert_eq!(s.set_throttled(false, 1.0), vec![1]);
}

#[test]
fn retention_by_count_and_ttl() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 10,
    max_retained: 3,
    result_ttl_ms: 100.0,
    ..Config::default()
  });
  for i in 0..5 {
    submit(&mut s, 3, f64::from(i));
  }
  for id in 1..=5u64 {
    settle(&mut s, id, 0, true, 10.0 + id as f64);
  }
  // Queries see exactly the last 3 at once; the records are freed at the next batch.
  assert_eq!(s.retained(16.0), 3);
  assert_eq!(s.retained(114.5), 1);
  assert!(s.view(2, 16.0, true).is_none());
  assert!(s.view(2, 16.0, false).is_some());
  assert_eq!(s.records(), 5);
  s.evict(16.0);
  assert_eq!(s.records(), 3);
  assert_eq!(s.take_evicted(), vec![1, 2]);
  assert!(s.view(1, 20.0, true).is_none());
  assert!(s.view(3, 20.0, true).is_some());
  // TTL: queries stop seeing them at once; the sweep frees them.
  assert!(s.view(3, 113.0, true).is_none());
  assert_eq!(s.records(), 3);
  s.sweep(113.5);
  assert_eq!(s.take_evicted(), vec![3]);
  s.sweep(200.0);
  assert_eq!(s.take_evicted(), vec![4, 5]);
  assert_eq!(s.records(), 0);
}

#[test]
fn memory_stays_flat_over_many_executions() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 8,
    max_retained: 100,
    ..Config::default()
  });
  let mut now = 0.0;
  for _ in 0..100_000 {
    let (id, started) = submit(&mut s, 3, now);
    assert!(started);
    settle(&mut s, id, 0, true, now);
    now += 0.01;
    s.evict(now);
    s.take_timer_cmds();
    s.take_evicted();
  }
  assert_eq!(s.records(), 100);
  assert_eq!(s.totals().completed, 100_000);
}

#[test]
fn retention_never_frees_a_held_slot() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 1,
    max_retained: 0,
    ..Config::default()
  });
  submit(&mut s, 3, 0.0);
  submit(&mut s, 3, 0.0);
  s.cancel(1, 1.0);
  assert!(s.view(1, 1.0, false).is_some(), "readable until the next batch");
  assert!(s.view(1, 1.0, true).is_none(), "but not to queries");
  s.evict(1.0);
  // Not queryable any more, but its slot is still accounted for.
  assert!(s.view(1, 1.0, true).is_none());
  assert_eq!(s.cancel(1, 1.0), None);
  assert_eq!(s.slots_used(), 1);
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (false, Some(2)));
  assert_eq!(s.records(), 1);
}

#[test]
fn close_cancels_queued_or_drains() {
  let mut s = sched(1);
  for _ in 0..3 {
    submit(&mut s, 3, 0.0);
  }
  assert_eq!(s.close(true, 1.0), vec![2, 3]);
  assert!(s.submit(0, 0, false, 3, 0.0, 1.0).is_none());
  assert_eq!(s.totals().cancelled, 2);
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, None));
  assert!(s.is_idle());

  let mut s = sched(1);
  for _ in 0..3 {
    submit(&mut s, 3, 0.0);
  }
  assert!(s.close(false, 1.0).is_empty());
  assert_eq!(settle(&mut s, 1, 0, true, 2.0), (true, Some(2)));
  assert_eq!(s.abort_all(3.0), vec![3, 2]);
  assert!(s.is_idle());
  assert_eq!(s.slots_used(), 0);
  assert_eq!(s.totals().cancelled, 2);
}

#[test]
fn watched_progress_ticks_until_finished() {
  let mut s = sched(1);
  let (id, _) = s.submit(2, 0, true, 3, 0.0, 0.0).expect("open");
  assert_eq!(
    s.take_timer_cmds().unwrap_or_default(),
    vec![TimerCmd::Arm {
      id,
      kind: TimerKind::Progress,
      at_ms: 1000.0
    }]
  );
  assert!(s.set_progress(id, 250.0));
  assert_eq!(s.view(id, 1.0, true).map(|v| v.progress), Some(100.0));
  assert!(s.set_progress(id, -5.0));
  assert_eq!(s.view(id, 1.0, true).map(|v| v.progress), Some(0.0));
  assert!(!s.set_progress(id, f64::NAN));
  assert!(s.progress_tick(id, 1000.0));
  settle(&mut s, id, 0, true, 1500.0);
  assert!(!s.progress_tick(id, 2000.0));
  assert_eq!(s.view(id, 1600.0, true).map(|v| v.progress), Some(100.0));
}

#[test]
fn view_reports_position_and_duration() {
  let mut s = sched(1);
  submit(&mut s, 3, 0.0);
  submit(&mut s, 2, 5.0);
  submit(&mut s, 4, 6.0);
  let v = s.view(2, 10.0, true).expect("queued");
  assert_eq!(v.status, Status::Queued);
  assert_eq!(v.queue_position, Some(2));
  assert_eq!(v.duration, 5.0);
  settle(&mut s, 1, 0, true, 20.0);
  let v = s.view(1, 30.0, true).expect("done");
  assert_eq!(
    (v.duration, v.started_at, v.finished_at),
    (20.0, Some(0.0), Some(20.0))
  );
  assert_eq!(s.running_ids(), vec![3]);
}

#[test]
fn aging_lets_low_priority_work_through() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 1,
    aging_ms: 100.0,
    ..Config::default()
  });
  submit(&mut s, 5, 0.0); // 1 runs
  submit(&mut s, 1, 0.0); // 2: background, waits
  let mut now = 0.0;
  let mut order = vec![];
  let mut current = 1;
  // A steady stream of critical work: one new critical submission per finish.
  for _ in 0..10 {
    submit(&mut s, 5, now);
    now += 60.0;
    let (_, next) = settle(&mut s, current, 0, true, now);
    current = next.expect("something starts");
    order.push(current);
  }
  // Without aging id 2 would never start; with it, after 4 levels × 100 ms it does.
  assert!(order.contains(&2), "order {order:?}");
  let mut s = sched(1);
  submit(&mut s, 5, 0.0);
  submit(&mut s, 1, 0.0);
  let mut current = 1;
  let mut now = 0.0;
  for _ in 0..10 {
    submit(&mut s, 5, now);
    now += 60.0;
    current = settle(&mut s, current, 0, true, now).1.expect("starts");
    assert_ne!(current, 2);
  }
}

#[test]
fn an_agent_that_needs_longer_to_stop_keeps_its_slot_longer() {
  let mut s = sched_with_grace(1, 100.0);
  let (a, started) = submit(&mut s, 3, 0.0);
  assert!(started);
  let (b, _) = submit(&mut s, 3, 0.0);
  assert!(!s.set_min_grace(b, 2_000.0), "queued: nothing kept");
  assert!(s.set_min_grace(a, 2_000.0));
  let _ = s.take_timer_cmds();
  assert_eq!(s.cancel(a, 10.0), Some(Status::Running));
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(
    cmds.iter().any(
      |c| matches!(c, TimerCmd::Arm { id, kind: TimerKind::Grace, at_ms } if *id == a && *at_ms == 2_010.0)
    ),
    "grace armed for 2 s, not 100 ms: {cmds:?}"
  );
  // Its agent settles (the process is gone) before then: the slot goes to b at once, and
  // the override is forgotten with the slot.
  let (_, next) = settle(&mut s, a, 1, false, 900.0);
  assert_eq!(next, Some(b));
  assert!(s.min_grace.is_empty());
  // Without an override, the configured grace applies.
  let _ = s.take_timer_cmds();
  s.cancel(b, 1_000.0);
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.iter().any(
    |c| matches!(c, TimerCmd::Arm { id, kind: TimerKind::Grace, at_ms } if *id == b && *at_ms == 1_100.0)
  ));
}

#[test]
fn an_end_the_store_overrules_with_a_cancel_counts_as_cancelled_once() {
  let mut s = sched(2);
  let (a, _) = submit(&mut s, 1, 0.0);
  let (b, _) = submit(&mut s, 1, 0.0);
  let (c, _) = submit(&mut s, 1, 0.0);
  settle(&mut s, a, 0, true, 10.0);
  settle(&mut s, b, 0, false, 10.0);
  assert!(s.overrule_cancelled(a), "completed, then overruled");
  assert!(s.overrule_cancelled(b), "failed, then overruled");
  assert!(!s.overrule_cancelled(a), "already cancelled: counted once");
  assert!(!s.overrule_cancelled(c), "still running: nothing to overrule");
  assert!(!s.overrule_cancelled(999), "unknown");
  assert_eq!(
    s.totals(),
    Totals {
      submitted: 3,
      completed: 0,
      failed: 0,
      cancelled: 2
    }
  );
  assert_eq!(s.view(a, 20.0, false).map(|v| v.status), Some(Status::Cancelled));
}

#[test]
fn a_closed_scheduler_is_quiet_only_once_its_zombies_let_go_of_their_slots() {
  let mut s = sched_with_grace(2, 100.0);
  let (a, _) = submit(&mut s, 1, 0.0);
  assert_eq!(s.cancel(a, 1.0), Some(Status::Running));
  s.close(true, 2.0);
  assert!(s.is_idle(), "the cancelled execution has ended");
  assert!(!s.is_quiet(), "its agent still holds the slot");
  assert!(s.keeps_alive(), "a shutdown waits for it");
  assert_eq!(s.grace_expired(a, 101.0), Vec::<u64>::new());
  assert!(s.is_quiet());
  assert!(!s.keeps_alive());
}

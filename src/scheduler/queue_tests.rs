use super::*;
use std::collections::HashSet;

fn pop_all(q: &mut PriorityQueue, dead: &HashSet<u64>) -> Vec<u64> {
  let mut out = vec![];
  while let Some(p) = q.pop(|id| !dead.contains(&id), None) {
    out.push(p.id);
  }
  out
}

#[test]
fn higher_priority_first_fifo_within_level() {
  let mut q = PriorityQueue::new();
  let prios = [2, 5, 3, 5, 2, 1, 3, 5];
  for (i, p) in prios.iter().enumerate() {
    q.push(i as u64 + 1, *p, 0);
  }
  assert_eq!(q.len(), 8);
  assert_eq!(pop_all(&mut q, &HashSet::new()), vec![2, 4, 8, 3, 7, 1, 5, 6]);
  assert!(q.is_empty());
}

#[test]
fn position_in_start_order() {
  let mut q = PriorityQueue::new();
  q.push(1, 2, 0);
  q.push(2, 2, 0);
  q.push(3, 5, 0);
  q.push(4, 3, 0);
  q.push(5, 2, 0);
  assert_eq!(q.position(5, 2, |_| true), Some(5));
  assert_eq!(q.position(4, 3, |_| true), Some(2));
  assert_eq!(q.position(9, 3, |_| true), None);
}

#[test]
fn forgotten_entries_are_skipped_and_not_counted() {
  let mut q = PriorityQueue::new();
  for id in 1..=5 {
    q.push(id, 3, 0);
  }
  let mut dead = HashSet::new();
  dead.insert(2);
  q.forget(3, 0);
  dead.insert(4);
  q.forget(3, 0);
  assert_eq!(q.len(), 3);
  assert_eq!(q.ordered(|id| !dead.contains(&id)), vec![1, 3, 5]);
  assert_eq!(q.position(5, 3, |id| !dead.contains(&id)), Some(3));
  assert_eq!(pop_all(&mut q, &dead), vec![1, 3, 5]);
  assert_eq!(q.len(), 0);
}

#[test]
fn aging_promotes_old_heads() {
  let mut q = PriorityQueue::with_levels(&[5, 4, 3, 2, 1]);
  q.push(1, 1, 0); // rank 0
  q.push(2, 5, 0); // rank 4
  q.push(3, 3, 0); // rank 2
  let pop = |q: &mut PriorityQueue, age: &dyn Fn(u64) -> usize| q.pop(|_| true, Some(age)).map(|p| p.id);
  // id 1 gained 2 levels: rank 2 ties with id 3; the older entry wins the tie.
  let age2 = |id: u64| if id == 1 { 2 } else { 0 };
  assert_eq!(pop(&mut q, &age2), Some(2));
  assert_eq!(pop(&mut q, &age2), Some(1));
  assert_eq!(pop(&mut q, &age2), Some(3));

  q.push(4, 1, 0);
  q.push(5, 4, 0); // rank 3
                   // id 4 gained 9 levels: capped at the top rank (4), ahead of id 5.
  let age9 = |id: u64| if id == 4 { 9 } else { 0 };
  assert_eq!(pop(&mut q, &age9), Some(4));
  assert_eq!(pop(&mut q, &age9), Some(5));
  assert_eq!(pop(&mut q, &age9), None);
}

#[test]
fn drain_returns_live_in_order() {
  let mut q = PriorityQueue::new();
  q.push(1, 1, 0);
  q.push(2, 4, 0);
  q.push(3, 4, 0);
  assert_eq!(q.drain(|id| id != 3), vec![2, 1]);
  assert!(q.is_empty());
  assert_eq!(q.pop(|_| true, None), None);
}

/// Agent of each id in the lane tests: its tens (id 23 is agent 2's third entry).
fn agent_of(id: u64) -> u16 {
  (id / 10) as u16
}

fn push(q: &mut PriorityQueue, id: u64, priority: i32) {
  q.push(id, priority, agent_of(id));
}

#[test]
fn lanes_keep_fifo_order_across_agents_within_a_level() {
  let mut q = PriorityQueue::new();
  q.add_lane(1, |id| agent_of(id) == 1, |_| true);
  q.add_lane(2, |id| agent_of(id) == 2, |_| true);
  for id in [11, 12, 13, 21, 22, 23, 31, 32] {
    push(&mut q, id, 3);
  }
  assert_eq!(
    pop_all(&mut q, &HashSet::new()),
    vec![11, 12, 13, 21, 22, 23, 31, 32]
  );
}

#[test]
fn a_blocked_lane_lets_others_pass_lower_priority_included() {
  let mut q = PriorityQueue::new();
  q.add_lane(1, |id| agent_of(id) == 1, |_| true);
  push(&mut q, 11, 5);
  push(&mut q, 21, 5);
  push(&mut q, 31, 1);
  push(&mut q, 12, 1);
  push(&mut q, 13, 5);
  q.set_blocked(1, true);
  assert!(q.has_ready());
  let pop = |q: &mut PriorityQueue| q.pop(|_| true, None).map(|p| p.id);
  assert_eq!(pop(&mut q), Some(21));
  assert_eq!(pop(&mut q), Some(31), "lower priority, other agent");
  assert_eq!(pop(&mut q), None, "only agent 1's entries are left");
  assert!(!q.has_ready());
  assert_eq!(q.len(), 3);
  assert_eq!(q.queued_of(1), 3);
  q.set_blocked(1, false);
  assert_eq!(pop(&mut q), Some(11));
  assert_eq!(pop(&mut q), Some(13));
  assert_eq!(pop(&mut q), Some(12));
  assert_eq!(q.queued_of(1), 0);
}

#[test]
fn adding_a_lane_moves_queued_entries_in_order() {
  let mut q = PriorityQueue::new();
  for id in [11, 12, 21, 13, 22, 14] {
    push(&mut q, id, 3);
  }
  q.forget(3, 1); // 13 cancelled
  let dead: HashSet<u64> = [13].into();
  q.add_lane(1, |id| agent_of(id) == 1, |id| !dead.contains(&id));
  assert_eq!(q.queued_of(1), 3);
  assert_eq!(q.len(), 5);
  q.set_blocked(1, true);
  assert_eq!(pop_all(&mut q, &dead), vec![21, 22]);
  q.set_blocked(1, false);
  assert_eq!(q.ordered(|id| !dead.contains(&id)), vec![11, 12, 14]);
  assert_eq!(pop_all(&mut q, &dead), vec![11, 12, 14]);
}

#[test]
fn a_cancelled_lane_head_does_not_keep_its_place() {
  let mut q = PriorityQueue::new();
  q.add_lane(1, |id| agent_of(id) == 1, |_| true);
  push(&mut q, 11, 3); // seq 0, cancelled below
  push(&mut q, 21, 3); // seq 1
  push(&mut q, 12, 3); // seq 2
  let dead: HashSet<u64> = [11].into();
  q.forget(3, 1);
  assert_eq!(pop_all(&mut q, &dead), vec![21, 12]);
  // Cancelling the last live entry of a lane leaves nothing ready.
  push(&mut q, 15, 3);
  q.forget(3, 1);
  assert!(!q.has_ready());
  assert!(q.is_empty());
}

#[test]
fn positions_and_order_merge_lanes_by_push_order() {
  let mut q = PriorityQueue::new();
  q.add_lane(1, |id| agent_of(id) == 1, |_| true);
  for (id, p) in [(11, 3), (21, 3), (12, 5), (22, 3), (13, 3)] {
    push(&mut q, id, p);
  }
  q.set_blocked(1, true);
  assert_eq!(q.ordered(|_| true), vec![12, 11, 21, 22, 13]);
  assert_eq!(q.position(22, 3, |_| true), Some(4));
  assert_eq!(q.drain(|_| true), vec![12, 11, 21, 22, 13]);
  assert!(q.is_empty());
  assert_eq!(q.queued_of(1), 0);
}

#[test]
fn aging_compares_lane_heads_too() {
  let mut q = PriorityQueue::with_levels(&[5, 4, 3, 2, 1]);
  q.add_lane(1, |id| agent_of(id) == 1, |_| true);
  push(&mut q, 11, 1);
  push(&mut q, 22, 3);
  let age = |id: u64| if id == 11 { 4 } else { 0 };
  assert_eq!(q.pop(|_| true, Some(&age)).map(|p| p.id), Some(11));
  assert_eq!(q.pop(|_| true, Some(&age)).map(|p| p.id), Some(22));
}

/// Steps of `starts` pops, each after one push of a free agent.
fn steps_per_start(q: &mut PriorityQueue, first_id: u64, starts: u64) -> f64 {
  let before = q.steps();
  for i in 0..starts {
    let id = (first_id + i) * 10 + 2; // agent 2, no lane
    q.push(id, 3, 2);
    let popped = q.pop(|_| true, None).map(|p| p.id);
    assert_eq!(popped, Some(id));
  }
  (q.steps() - before) as f64 / starts as f64
}

#[test]
fn a_start_costs_the_same_with_100k_entries_behind_a_blocked_lane() {
  // Without blocked work.
  // Agent 1's ids end in 1, agent 2's in 2.
  let mut empty = PriorityQueue::with_levels(&[5, 4, 3, 2, 1]);
  empty.add_lane(1, |id| id % 10 == 1, |_| true);
  let baseline = steps_per_start(&mut empty, 1, 10_000);

  // 100k entries of agent 1 at a higher level and the same level, its lane blocked.
  let mut q = PriorityQueue::with_levels(&[5, 4, 3, 2, 1]);
  q.add_lane(1, |id| id % 10 == 1, |_| true);
  for i in 0..100_000u64 {
    q.push(i * 10 + 1, if i % 2 == 0 { 5 } else { 3 }, 1);
  }
  q.set_blocked(1, true);
  let loaded = steps_per_start(&mut q, 1_000_000, 10_000);
  assert!(
    loaded <= baseline + 1.0,
    "{loaded} steps per start with 100k blocked entries, {baseline} without"
  );
  assert_eq!(q.len(), 100_000);

  // Blocking and unblocking costs one step per level that has entries, not per entry.
  let before = q.steps();
  q.set_blocked(1, false);
  q.set_blocked(1, true);
  assert!(q.steps() - before <= 4, "{}", q.steps() - before);
}

//! The priority queue: one FIFO per priority level, levels kept in descending order.
//!
//! Enqueue is O(1) amortised (a push on the level's `VecDeque`; finding the level is a scan
//! of the handful of configured levels). Removal of a queued entry (cancellation) is lazy:
//! the caller decrements the level's live count and the stale id is skipped when it reaches
//! the front. Whether an id is still live is decided by the caller through a predicate, so
//! the queue never needs to look into execution records itself.

use std::collections::VecDeque;

#[derive(Debug)]
struct Level {
  priority: i32,
  items: VecDeque<u64>,
  /// Entries in `items` that are still queued (the rest are tombstones).
  live: usize,
}

#[derive(Debug, Default)]
pub struct PriorityQueue {
  /// Sorted by `priority`, highest first.
  levels: Vec<Level>,
  live: usize,
}

impl PriorityQueue {
  pub fn new() -> Self {
    Self::default()
  }

  /// A queue with these levels present from the start (aging ranks count every level).
  pub fn with_levels(priorities: &[i32]) -> Self {
    let mut q = Self::new();
    for &p in priorities {
      q.level_index(p);
    }
    q
  }

  /// Number of live (not cancelled) entries.
  pub fn len(&self) -> usize {
    self.live
  }

  pub fn is_empty(&self) -> bool {
    self.live == 0
  }

  fn level_index(&mut self, priority: i32) -> usize {
    // Levels are few (five by default); a linear scan beats any map here.
    for (i, level) in self.levels.iter().enumerate() {
      if level.priority == priority {
        return i;
      }
      if level.priority < priority {
        self.levels.insert(i, Level::new(priority));
        return i;
      }
    }
    self.levels.push(Level::new(priority));
    self.levels.len() - 1
  }

  /// Appends `id` at the back of its level. Returns its 1-based position in start order.
  pub fn push(&mut self, id: u64, priority: i32) -> usize {
    let idx = self.level_index(priority);
    let ahead: usize = self.levels[..idx].iter().map(|l| l.live).sum();
    let level = &mut self.levels[idx];
    level.items.push_back(id);
    level.live += 1;
    self.live += 1;
    ahead + level.live
  }

  /// Records that a queued entry of `priority` was removed (its id stays as a tombstone).
  pub fn forget(&mut self, priority: i32) {
    if let Some(level) = self.levels.iter_mut().find(|l| l.priority == priority) {
      if level.live > 0 {
        level.live -= 1;
        self.live -= 1;
      }
    }
  }

  /// Removes and returns the next live id. `is_live` tells whether an id is still queued.
  /// With `aging`, `age_levels(id)` returns how many levels that entry has gained by waiting;
  /// the head of each level competes with its aged rank; on equal ranks the older entry
  /// (lower id: ids are issued in submission order) goes first, as FIFO within a level.
  pub fn pop(
    &mut self,
    mut is_live: impl FnMut(u64) -> bool,
    age_levels: Option<&dyn Fn(u64) -> usize>,
  ) -> Option<u64> {
    if self.live == 0 {
      return None;
    }
    let chosen = match age_levels {
      None => self.levels.iter().position(|l| l.live > 0)?,
      Some(age) => {
        let count = self.levels.len();
        let mut best: Option<(usize, u64, usize)> = None; // (effective rank, head id, index)
        for i in 0..count {
          Self::drop_tombstones(&mut self.levels[i], &mut is_live);
          let Some(&head) = self.levels[i].items.front() else {
            continue;
          };
          let base_rank = count - 1 - i;
          let rank = (base_rank + age(head)).min(count - 1);
          if best.is_none_or(|(r, h, _)| rank > r || (rank == r && head < h)) {
            best = Some((rank, head, i));
          }
        }
        best?.2
      }
    };
    let level = &mut self.levels[chosen];
    Self::drop_tombstones(level, &mut is_live);
    let id = level.items.pop_front()?;
    level.live -= 1;
    self.live -= 1;
    Some(id)
  }

  fn drop_tombstones(level: &mut Level, is_live: &mut impl FnMut(u64) -> bool) {
    while let Some(&front) = level.items.front() {
      if is_live(front) {
        break;
      }
      level.items.pop_front();
    }
    if level.live == 0 {
      // Only tombstones remain: release their memory.
      level.items.clear();
    }
  }

  /// Live ids in start order (without aging). O(n); for queries, not the hot path.
  pub fn ordered(&self, mut is_live: impl FnMut(u64) -> bool) -> Vec<u64> {
    let mut out = Vec::with_capacity(self.live);
    for level in &self.levels {
      out.extend(level.items.iter().copied().filter(|&id| is_live(id)));
    }
    out
  }

  /// 1-based position of `id` in start order, if it is queued.
  pub fn position(&self, id: u64, priority: i32, mut is_live: impl FnMut(u64) -> bool) -> Option<usize> {
    let mut ahead = 0;
    for level in &self.levels {
      if level.priority != priority {
        ahead += level.live;
        continue;
      }
      let mut index = 0;
      for &item in &level.items {
        if item == id {
          return Some(ahead + index + 1);
        }
        if is_live(item) {
          index += 1;
        }
      }
      return None;
    }
    None
  }

  /// Removes every entry and returns the live ones in start order.
  pub fn drain(&mut self, is_live: impl FnMut(u64) -> bool) -> Vec<u64> {
    let out = self.ordered(is_live);
    self.levels.clear();
    self.live = 0;
    out
  }
}

impl Level {
  fn new(priority: i32) -> Self {
    Level {
      priority,
      items: VecDeque::new(),
      live: 0,
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::collections::HashSet;

  fn pop_all(q: &mut PriorityQueue, dead: &HashSet<u64>) -> Vec<u64> {
    let mut out = vec![];
    while let Some(id) = q.pop(|id| !dead.contains(&id), None) {
      out.push(id);
    }
    out
  }

  #[test]
  fn higher_priority_first_fifo_within_level() {
    let mut q = PriorityQueue::new();
    let prios = [2, 5, 3, 5, 2, 1, 3, 5];
    for (i, p) in prios.iter().enumerate() {
      q.push(i as u64 + 1, *p);
    }
    assert_eq!(q.len(), 8);
    assert_eq!(pop_all(&mut q, &HashSet::new()), vec![2, 4, 8, 3, 7, 1, 5, 6]);
    assert!(q.is_empty());
  }

  #[test]
  fn push_reports_position_in_start_order() {
    let mut q = PriorityQueue::new();
    assert_eq!(q.push(1, 2), 1);
    assert_eq!(q.push(2, 2), 2);
    assert_eq!(q.push(3, 5), 1);
    assert_eq!(q.push(4, 3), 2);
    assert_eq!(q.push(5, 2), 5);
    assert_eq!(q.position(5, 2, |_| true), Some(5));
    assert_eq!(q.position(4, 3, |_| true), Some(2));
    assert_eq!(q.position(9, 3, |_| true), None);
  }

  #[test]
  fn forgotten_entries_are_skipped_and_not_counted() {
    let mut q = PriorityQueue::new();
    for id in 1..=5 {
      q.push(id, 3);
    }
    let mut dead = HashSet::new();
    dead.insert(2);
    q.forget(3);
    dead.insert(4);
    q.forget(3);
    assert_eq!(q.len(), 3);
    assert_eq!(q.ordered(|id| !dead.contains(&id)), vec![1, 3, 5]);
    assert_eq!(q.position(5, 3, |id| !dead.contains(&id)), Some(3));
    assert_eq!(pop_all(&mut q, &dead), vec![1, 3, 5]);
    assert_eq!(q.len(), 0);
  }

  #[test]
  fn aging_promotes_old_heads() {
    let mut q = PriorityQueue::with_levels(&[5, 4, 3, 2, 1]);
    q.push(1, 1); // rank 0
    q.push(2, 5); // rank 4
    q.push(3, 3); // rank 2
                  // id 1 gained 2 levels: rank 2 ties with id 3; the older entry wins the tie.
    let age2 = |id: u64| if id == 1 { 2 } else { 0 };
    assert_eq!(q.pop(|_| true, Some(&age2)), Some(2));
    assert_eq!(q.pop(|_| true, Some(&age2)), Some(1));
    assert_eq!(q.pop(|_| true, Some(&age2)), Some(3));

    q.push(4, 1);
    q.push(5, 4); // rank 3
                  // id 4 gained 9 levels: capped at the top rank (4), ahead of id 5.
    let age9 = |id: u64| if id == 4 { 9 } else { 0 };
    assert_eq!(q.pop(|_| true, Some(&age9)), Some(4));
    assert_eq!(q.pop(|_| true, Some(&age9)), Some(5));
    assert_eq!(q.pop(|_| true, Some(&age9)), None);
  }

  #[test]
  fn drain_returns_live_in_order() {
    let mut q = PriorityQueue::new();
    q.push(1, 1);
    q.push(2, 4);
    q.push(3, 4);
    assert_eq!(q.drain(|id| id != 3), vec![2, 1]);
    assert!(q.is_empty());
    assert_eq!(q.pop(|_| true, None), None);
  }
}

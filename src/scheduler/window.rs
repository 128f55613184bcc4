//! `IdWindow`: records keyed by sequential ids, stored by position instead of by hash.
//!
//! Ids are issued in increasing order, so a `VecDeque` of small slots indexed by `id - base`
//! finds a record with a subtraction and an index. A slot holds the position of its record
//! in a slab (a `Vec` whose freed entries are reused, most recently freed first), so a hole
//! left by a removed record costs 4 bytes, not a whole record: records that end out of id
//! order (priorities: a low-priority execution submitted early outlives many younger ones)
//! leave holes behind them cheaply. Holes at the front are popped. A record that outlives
//! very many younger ones would still pin the window open, so once holes outnumber live
//! records `HOLE_RATIO` times over, the live records at the front move to a small overflow
//! map (their slab entries stay where they are) and the window slides on: memory follows
//! the number of live records, never the number of ids ever issued.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for sequential ids (overflow map only): one multiply, high bits well mixed.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
  fn finish(&self) -> u64 {
    self.0
  }
  fn write(&mut self, bytes: &[u8]) {
    for &b in bytes {
      self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
  }
  fn write_u64(&mut self, n: u64) {
    self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
  }
}

/// Holes allowed in the window beyond `HOLE_RATIO` per live record before it is compacted.
const SLACK: usize = 4096;
/// A hole is a 4-byte slot: up to 16 per live record is at most 64 bytes of holes each.
const HOLE_RATIO: usize = 16;
/// An empty slot.
const HOLE: u32 = u32::MAX;
/// Capacity kept when the window empties (a burst's memory is given back beyond this).
const KEEP_CAPACITY: usize = 1024;

#[derive(Debug)]
pub struct IdWindow<T> {
  base: u64,
  /// Slab position of each id's record from `base` on, or `HOLE`.
  slots: VecDeque<u32>,
  /// Live records in `slots`.
  in_window: usize,
  /// The records; `None` entries are free and listed in `free`.
  slab: Vec<Option<T>>,
  free: Vec<u32>,
  /// Ids below `base` still live, with their slab positions.
  overflow: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
}

impl<T> Default for IdWindow<T> {
  fn default() -> Self {
    IdWindow {
      base: 1,
      slots: VecDeque::new(),
      in_window: 0,
      slab: Vec::new(),
      free: Vec::new(),
      overflow: HashMap::default(),
    }
  }
}

impl<T> IdWindow<T> {
  pub fn len(&self) -> usize {
    self.in_window + self.overflow.len()
  }

  pub fn is_empty(&self) -> bool {
    self.len() == 0
  }

  /// Slots currently allocated (live records plus holes), for tests and diagnostics.
  pub fn footprint(&self) -> usize {
    self.slots.len() + self.overflow.len()
  }

  /// The slab position of `id`'s record, if it is live.
  fn position(&self, id: u64) -> Option<usize> {
    let pos = match id.checked_sub(self.base) {
      Some(i) => *self.slots.get(usize::try_from(i).ok()?)?,
      None => *self.overflow.get(&id)?,
    };
    (pos != HOLE).then_some(pos as usize)
  }

  pub fn get(&self, id: u64) -> Option<&T> {
    self.position(id).and_then(|p| self.slab[p].as_ref())
  }

  pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
    self.position(id).and_then(|p| self.slab[p].as_mut())
  }

  /// Stores `value` in a free slab entry and returns its position.
  fn alloc(&mut self, value: T) -> u32 {
    match self.free.pop() {
      Some(p) => {
        self.slab[p as usize] = Some(value);
        p
      }
      None => {
        // More than u32::MAX - 1 live records cannot exist in memory; HOLE stays unused.
        let p = self.slab.len() as u32;
        self.slab.push(Some(value));
        p
      }
    }
  }

  fn release(&mut self, pos: u32) -> Option<T> {
    let v = self.slab[pos as usize].take();
    if v.is_some() {
      self.free.push(pos);
    }
    v
  }

  /// Inserts `value` for `id`. Ids at or beyond the end extend the window (with holes for any
  /// skipped ids); an id inside it replaces its record; an id below it goes to the overflow.
  pub fn insert(&mut self, id: u64, value: T) {
    if self.is_empty() {
      self.base = id;
      self.slots.clear();
    }
    if id < self.base {
      let pos = self.alloc(value);
      if let Some(old) = self.overflow.insert(id, pos) {
        self.release(old);
      }
      return;
    }
    let i = (id - self.base) as usize;
    if i < self.slots.len() {
      let old = self.slots[i];
      if old != HOLE {
        self.slab[old as usize] = Some(value);
        return;
      }
      let pos = self.alloc(value);
      self.slots[i] = pos;
    } else {
      let pos = self.alloc(value);
      self.slots.resize(i, HOLE);
      self.slots.push_back(pos);
    }
    self.in_window += 1;
  }

  pub fn remove(&mut self, id: u64) -> Option<T> {
    let removed = match id.checked_sub(self.base) {
      Some(i) => match self.slots.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
        Some(slot) if *slot != HOLE => {
          let pos = std::mem::replace(slot, HOLE);
          self.in_window -= 1;
          self.release(pos)
        }
        _ => None,
      },
      None => match self.overflow.remove(&id) {
        Some(pos) => self.release(pos),
        None => None,
      },
    };
    if removed.is_some() {
      self.trim();
    }
    removed
  }

  fn trim(&mut self) {
    if self.is_empty() {
      // Give a burst's memory back.
      self.slots.clear();
      self.slots.shrink_to(KEEP_CAPACITY);
      self.slab.clear();
      self.slab.shrink_to(KEEP_CAPACITY);
      self.free.clear();
      self.free.shrink_to(KEEP_CAPACITY);
      self.overflow.shrink_to(0);
      return;
    }
    self.pop_front_holes();
    // Pinned open by old live records: move them aside until holes no longer dominate.
    while self.slots.len() - self.in_window > HOLE_RATIO * self.in_window + SLACK {
      match self.slots.pop_front() {
        Some(HOLE) => {}
        Some(pos) => {
          self.overflow.insert(self.base, pos);
          self.in_window -= 1;
        }
        None => break,
      }
      self.base += 1;
    }
    self.pop_front_holes();
  }

  fn pop_front_holes(&mut self) {
    while self.slots.front() == Some(&HOLE) {
      self.slots.pop_front();
      self.base += 1;
    }
  }

  /// Every live record, overflow first (oldest ids), then the window in id order.
  pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
    let mut old: Vec<(u64, u32)> = self.overflow.iter().map(|(&id, &p)| (id, p)).collect();
    old.sort_unstable_by_key(|&(id, _)| id);
    let base = self.base;
    let slab = &self.slab;
    old
      .into_iter()
      .chain(
        self
          .slots
          .iter()
          .enumerate()
          .filter(|&(_, &p)| p != HOLE)
          .map(move |(i, &p)| (base + i as u64, p)),
      )
      .filter_map(move |(id, p)| slab[p as usize].as_ref().map(|v| (id, v)))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn insert_get_remove_in_order() {
    let mut w = IdWindow::default();
    for id in 1..=10u64 {
      w.insert(id, id * 10);
    }
    assert_eq!(w.len(), 10);
    assert_eq!(w.get(7), Some(&70));
    assert_eq!(w.get(11), None);
    assert_eq!(w.get(0), None);
    *w.get_mut(3).expect("present") += 1;
    assert_eq!(w.remove(3), Some(31));
    assert_eq!(w.remove(3), None);
    assert_eq!(w.remove(1), Some(10));
    assert_eq!(w.remove(2), Some(20));
    assert_eq!(w.get(4), Some(&40));
    assert_eq!(w.len(), 7);
    assert_eq!(
      w.iter().map(|(id, _)| id).collect::<Vec<_>>(),
      vec![4, 5, 6, 7, 8, 9, 10]
    );
  }

  #[test]
  fn a_pinned_record_does_not_keep_the_window_open() {
    let mut w = IdWindow::default();
    w.insert(1, 0u32); // a long-running execution that never ends here
    for id in 2..200_000u64 {
      w.insert(id, 1);
      w.remove(id);
    }
    assert_eq!(w.len(), 1);
    assert!(w.footprint() <= SLACK + 2, "footprint {}", w.footprint());
    assert_eq!(w.get(1), Some(&0));
    assert_eq!(w.remove(1), Some(0));
    assert!(w.is_empty());
    w.insert(500_000, 5);
    assert_eq!(w.get(500_000), Some(&5));
    assert_eq!(w.iter().count(), 1);
  }

  #[test]
  fn holes_and_overflow_iterate_in_id_order() {
    let mut w = IdWindow::default();
    for id in 1..=20_000u64 {
      w.insert(id, id);
    }
    for id in 2..=19_990u64 {
      if id % 1000 != 0 {
        w.remove(id);
      }
    }
    let ids: Vec<u64> = w.iter().map(|(id, _)| id).collect();
    let mut expected = vec![1];
    expected.extend((1..=19).map(|k| k * 1000));
    expected.extend(19_991..=20_000);
    assert_eq!(ids, expected);
    assert_eq!(w.get(5000), Some(&5000));
    assert_eq!(w.remove(5000), Some(5000));
  }

  #[test]
  fn out_of_order_ends_leave_cheap_holes_not_overflow() {
    // Five interleaved priority levels finishing level by level (the W1 benchmark's order).
    let mut w = IdWindow::default();
    for id in 1..=100_000u64 {
      w.insert(id, id);
    }
    for level in 0..4u64 {
      for id in (1..=100_000u64).filter(|id| id % 5 == level) {
        assert_eq!(w.remove(id), Some(id));
      }
    }
    // 20k live among 80k holes: still all in the window, found by position.
    assert_eq!(w.len(), 20_000);
    assert_eq!(w.overflow.len(), 0);
    assert_eq!(w.get(4), Some(&4));
    assert_eq!(w.get(99_999), Some(&99_999));
    for id in (1..=100_000u64).filter(|id| id % 5 == 4) {
      assert_eq!(w.remove(id), Some(id));
    }
    assert!(w.is_empty());
    // The burst's memory is given back.
    assert!(w.slab.capacity() <= KEEP_CAPACITY && w.slots.capacity() <= 2 * KEEP_CAPACITY);
    w.insert(7, 70);
    assert_eq!(w.get(7), Some(&70));
    assert_eq!(w.iter().collect::<Vec<_>>(), vec![(7, &70)]);
  }

  #[test]
  fn slab_entries_are_reused_and_replaced_in_place() {
    let mut w = IdWindow::default();
    w.insert(1, 1u32);
    w.insert(2, 2);
    assert_eq!(w.remove(1), Some(1));
    w.insert(3, 3); // reuses 1's entry
    assert_eq!(w.slab.len(), 2);
    w.insert(3, 33); // same id: replaced, not added
    assert_eq!(w.len(), 2);
    assert_eq!(w.get(3), Some(&33));
    // Below the base (the window slid past 1): kept in the overflow.
    w.insert(1, 11);
    assert_eq!(w.get(1), Some(&11));
    assert_eq!(
      w.iter().map(|(id, v)| (id, *v)).collect::<Vec<_>>(),
      vec![(1, 11), (2, 2), (3, 33)]
    );
    assert_eq!(w.remove(1), Some(11));
    assert_eq!(w.remove(1), None);
    assert_eq!(w.len(), 2);
  }
}

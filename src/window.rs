//! `IdWindow`: records keyed by sequential ids, stored by position instead of by hash.
//!
//! Ids are issued in increasing order, and most records end roughly in that order, so a
//! `VecDeque` indexed by `id - base` holds them: a lookup is a subtraction and an index, and
//! records submitted together sit together in memory. Removing a record leaves a hole; holes
//! at the front are popped. A record that outlives many younger ones (a long-running agent)
//! would pin the window open, so once holes outnumber live records, the live records at the
//! front move to a small overflow map and the window slides on: memory follows the number of
//! live records, never the number of ids ever issued.

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

/// Holes allowed in the window beyond the number of live records before it is compacted.
const SLACK: usize = 4096;

#[derive(Debug)]
pub struct IdWindow<T> {
  base: u64,
  slots: VecDeque<Option<T>>,
  /// Live records in `slots`.
  in_window: usize,
  overflow: HashMap<u64, T, BuildHasherDefault<IdHasher>>,
}

impl<T> Default for IdWindow<T> {
  fn default() -> Self {
    IdWindow {
      base: 1,
      slots: VecDeque::new(),
      in_window: 0,
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

  fn index(&self, id: u64) -> Option<usize> {
    id.checked_sub(self.base)
      .map(|i| i as usize)
      .filter(|&i| i < self.slots.len())
  }

  pub fn get(&self, id: u64) -> Option<&T> {
    match self.index(id) {
      Some(i) => self.slots[i].as_ref(),
      None if id < self.base => self.overflow.get(&id),
      None => None,
    }
  }

  pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
    match self.index(id) {
      Some(i) => self.slots[i].as_mut(),
      None if id < self.base => self.overflow.get_mut(&id),
      None => None,
    }
  }

  /// Inserts `value` for `id`. Ids at or beyond the end extend the window (with holes for any
  /// skipped ids); an id inside it replaces its slot; an id below it goes to the overflow.
  pub fn insert(&mut self, id: u64, value: T) {
    if self.slots.is_empty() && self.overflow.is_empty() {
      self.base = id;
    }
    if id < self.base {
      self.overflow.insert(id, value);
      return;
    }
    let i = (id - self.base) as usize;
    while self.slots.len() < i {
      self.slots.push_back(None);
    }
    if i == self.slots.len() {
      self.slots.push_back(Some(value));
      self.in_window += 1;
    } else if self.slots[i].replace(value).is_none() {
      self.in_window += 1;
    }
  }

  pub fn remove(&mut self, id: u64) -> Option<T> {
    let removed = match self.index(id) {
      Some(i) => {
        let v = self.slots[i].take();
        if v.is_some() {
          self.in_window -= 1;
        }
        v
      }
      None if id < self.base => self.overflow.remove(&id),
      None => None,
    };
    self.trim();
    removed
  }

  fn trim(&mut self) {
    while matches!(self.slots.front(), Some(None)) {
      self.slots.pop_front();
      self.base += 1;
    }
    // Pinned open by old live records: move them aside until holes no longer dominate.
    while self.slots.len() > 2 * self.in_window + SLACK {
      match self.slots.pop_front() {
        Some(Some(v)) => {
          self.overflow.insert(self.base, v);
          self.in_window -= 1;
        }
        Some(None) => {}
        None => break,
      }
      self.base += 1;
    }
    while matches!(self.slots.front(), Some(None)) {
      self.slots.pop_front();
      self.base += 1;
    }
  }

  /// Every live record, overflow first (oldest ids), then the window in id order.
  pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
    let mut old: Vec<(u64, &T)> = self.overflow.iter().map(|(&id, v)| (id, v)).collect();
    old.sort_unstable_by_key(|&(id, _)| id);
    let base = self.base;
    old.into_iter().chain(
      self
        .slots
        .iter()
        .enumerate()
        .filter_map(move |(i, v)| v.as_ref().map(|v| (base + i as u64, v))),
    )
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
}

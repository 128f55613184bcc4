//! The priority queue: per priority level, one FIFO for agents without limits and one
//! "lane" FIFO per agent with limits, levels kept in descending order.
//!
//! Every entry carries a sequence number given at push: within a level, the entry pushed
//! first starts first, whichever FIFO holds it. A lane can be blocked (its agent is at its
//! concurrency limit, or its rate window is full): a level keeps the unblocked lanes that
//! have entries in a set ordered by their head's sequence number, so the next start compares
//! one FIFO head with the first of that set, and never looks at a blocked lane's entries.
//! Blocking or unblocking a lane costs one set update per level; a start, O(levels +
//! log lanes) whatever is queued behind blocked lanes. `steps` counts the entries and
//! lanes looked at, so a test can prove it.
//!
//! Removal of a queued entry (cancellation) is lazy: the caller lowers the live counts
//! (`forget`) and the stale entry is skipped when it reaches the front. Whether an id is
//! still queued is the caller's answer, through a predicate.

use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
  seq: u64,
  id: u64,
}

#[derive(Debug)]
struct Level {
  priority: i32,
  /// Entries of agents without a lane.
  items: VecDeque<Entry>,
  /// Live entries in `items`.
  shared_live: usize,
  /// Live entries at this level in all, lanes included.
  live: usize,
  /// `(head seq, agent)` of every unblocked lane with live entries at this level. A key
  /// may name a head that was cancelled since: it is corrected when it comes first.
  ready: BTreeSet<(u64, u16)>,
}

#[derive(Debug)]
struct LaneFifo {
  priority: i32,
  items: VecDeque<Entry>,
  live: usize,
  /// The key this FIFO has in its level's `ready` set.
  keyed: Option<u64>,
}

#[derive(Debug, Default)]
struct Lane {
  blocked: bool,
  fifos: Vec<LaneFifo>,
  queued: usize,
}

/// Where the next entry of a level comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
  Shared,
  Lane(u16),
}

/// An entry taken from the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Popped {
  pub id: u64,
  /// Its sequence number (see `next_seq`).
  pub seq: u64,
}

#[derive(Debug, Default)]
pub struct PriorityQueue {
  /// Sorted by `priority`, highest first.
  levels: Vec<Level>,
  /// Indexed by agent key; `Some` once the agent has limits.
  lanes: Vec<Option<Lane>>,
  live: usize,
  seq: u64,
  steps: u64,
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

  /// The sequence number the next push gets.
  pub fn next_seq(&self) -> u64 {
    self.seq
  }

  /// Entries and lanes looked at so far (see the module comment).
  pub fn steps(&self) -> u64 {
    self.steps
  }

  /// Whether `agent` has a lane.
  pub fn has_lane(&self, agent: u16) -> bool {
    self.lane(agent).is_some()
  }

  /// Live entries in the lane of `agent` (0 without a lane).
  pub fn queued_of(&self, agent: u16) -> usize {
    self.lane(agent).map_or(0, |l| l.queued)
  }

  /// Whether some live entry could start now (is not behind a blocked lane). O(levels).
  pub fn has_ready(&self) -> bool {
    self
      .levels
      .iter()
      .any(|l| l.shared_live > 0 || !l.ready.is_empty())
  }

  fn lane(&self, agent: u16) -> Option<&Lane> {
    self.lanes.get(usize::from(agent)).and_then(Option::as_ref)
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

  /// Appends `id` (of `agent`) at the back of its level, in its agent's lane if it has one.
  pub fn push(&mut self, id: u64, priority: i32, agent: u16) {
    let idx = self.level_index(priority);
    let entry = Entry { seq: self.seq, id };
    self.seq += 1;
    self.live += 1;
    let level = &mut self.levels[idx];
    level.live += 1;
    match self.lanes.get_mut(usize::from(agent)).and_then(Option::as_mut) {
      None => {
        level.items.push_back(entry);
        level.shared_live += 1;
      }
      Some(lane) => {
        lane.queued += 1;
        let fifo = lane.fifo_mut(priority);
        fifo.items.push_back(entry);
        fifo.live += 1;
        if !lane.blocked {
          let fifo = lane.fifo_mut(priority);
          if fifo.keyed.is_none() {
            fifo.keyed = Some(entry.seq);
            level.ready.insert((entry.seq, agent));
          }
        }
      }
    }
  }

  /// Records that a queued entry of `priority` and `agent` was removed (it stays as a
  /// tombstone until it reaches the front).
  pub fn forget(&mut self, priority: i32, agent: u16) {
    let Some(level) = self.levels.iter_mut().find(|l| l.priority == priority) else {
      return;
    };
    match self.lanes.get_mut(usize::from(agent)).and_then(Option::as_mut) {
      None => {
        if level.shared_live == 0 {
          return;
        }
        level.shared_live -= 1;
        if level.shared_live == 0 {
          level.items.clear(); // only tombstones remain
        }
      }
      Some(lane) => {
        if lane.fifo_mut(priority).live == 0 {
          return;
        }
        lane.queued -= 1;
        let fifo = lane.fifo_mut(priority);
        fifo.live -= 1;
        if fifo.live == 0 {
          fifo.items.clear();
          if let Some(seq) = fifo.keyed.take() {
            level.ready.remove(&(seq, agent));
          }
        }
      }
    }
    level.live -= 1;
    self.live -= 1;
  }

  /// Gives `agent` a lane (once): its entries already queued move there, in order.
  /// `belongs(id)` tells whether an entry is of `agent`; O(queued), once per agent.
  pub fn add_lane(
    &mut self,
    agent: u16,
    belongs: impl Fn(u64) -> bool,
    mut is_live: impl FnMut(u64) -> bool,
  ) {
    let index = usize::from(agent);
    if self.lane(agent).is_some() {
      return;
    }
    if self.lanes.len() <= index {
      self.lanes.resize_with(index + 1, || None);
    }
    let mut lane = Lane::default();
    for level in &mut self.levels {
      if level.shared_live == 0 {
        continue;
      }
      let mut kept = VecDeque::with_capacity(level.items.len());
      let mut moved = VecDeque::new();
      for e in level.items.drain(..) {
        if !is_live(e.id) {
          continue; // a tombstone: dropped here
        }
        if belongs(e.id) {
          moved.push_back(e);
        } else {
          kept.push_back(e);
        }
      }
      level.items = kept;
      if moved.is_empty() {
        continue;
      }
      level.shared_live -= moved.len();
      lane.queued += moved.len();
      let head = moved[0].seq;
      lane.fifos.push(LaneFifo {
        priority: level.priority,
        live: moved.len(),
        items: moved,
        keyed: Some(head),
      });
      level.ready.insert((head, agent));
    }
    self.lanes[index] = Some(lane);
  }

  /// Blocks or unblocks the lane of `agent` (no lane: nothing to do).
  pub fn set_blocked(&mut self, agent: u16, blocked: bool) {
    let Some(lane) = self.lanes.get_mut(usize::from(agent)).and_then(Option::as_mut) else {
      return;
    };
    if lane.blocked == blocked {
      return;
    }
    lane.blocked = blocked;
    for fifo in &mut lane.fifos {
      if fifo.live == 0 {
        continue;
      }
      self.steps += 1;
      let Some(level) = self.levels.iter_mut().find(|l| l.priority == fifo.priority) else {
        continue;
      };
      if blocked {
        if let Some(seq) = fifo.keyed.take() {
          level.ready.remove(&(seq, agent));
        }
      } else if fifo.keyed.is_none() {
        if let Some(front) = fifo.items.front() {
          fifo.keyed = Some(front.seq);
          level.ready.insert((front.seq, agent));
        }
      }
    }
  }

  /// The next live entry of level `i` that may start, and where it is; drops the tombstones
  /// in front of it and corrects stale `ready` keys on the way.
  fn level_head(&mut self, i: usize, is_live: &mut impl FnMut(u64) -> bool) -> Option<(Entry, Source)> {
    let level = &mut self.levels[i];
    self.steps += 1;
    let mut shared = None;
    if level.shared_live > 0 {
      while let Some(&front) = level.items.front() {
        if is_live(front.id) {
          shared = Some(front);
          break;
        }
        self.steps += 1;
        level.items.pop_front();
      }
    }
    let mut from_lane = None;
    while let Some(&(seq, agent)) = level.ready.first() {
      self.steps += 1;
      let Some(lane) = self.lanes.get_mut(usize::from(agent)).and_then(Option::as_mut) else {
        level.ready.remove(&(seq, agent));
        continue;
      };
      let fifo = lane.fifo_mut(level.priority);
      while let Some(&front) = fifo.items.front() {
        if is_live(front.id) {
          break;
        }
        self.steps += 1;
        fifo.items.pop_front();
      }
      match fifo.items.front().copied() {
        Some(front) if front.seq == seq => {
          from_lane = Some((front, agent));
          break;
        }
        Some(front) => {
          // Its head was cancelled: re-key it by the live head.
          level.ready.remove(&(seq, agent));
          level.ready.insert((front.seq, agent));
          fifo.keyed = Some(front.seq);
        }
        None => {
          level.ready.remove(&(seq, agent));
          fifo.keyed = None;
        }
      }
    }
    match (shared, from_lane) {
      (Some(s), Some((l, agent))) if l.seq < s.seq => Some((l, Source::Lane(agent))),
      (Some(s), _) => Some((s, Source::Shared)),
      (None, Some((l, agent))) => Some((l, Source::Lane(agent))),
      (None, None) => None,
    }
  }

  /// Chooses the entry to start next: `(level index, entry, source)`.
  fn select(
    &mut self,
    is_live: &mut impl FnMut(u64) -> bool,
    age_levels: Option<&dyn Fn(u64) -> usize>,
  ) -> Option<(usize, Entry, Source)> {
    if self.live == 0 {
      return None;
    }
    match age_levels {
      None => {
        for i in 0..self.levels.len() {
          if self.levels[i].live == 0 {
            continue;
          }
          if let Some((e, src)) = self.level_head(i, is_live) {
            return Some((i, e, src));
          }
        }
        None
      }
      Some(age) => {
        // The head of each level competes with its aged rank; on equal ranks the entry
        // pushed first goes first, as FIFO within a level.
        let count = self.levels.len();
        let mut best: Option<(usize, usize, Entry, Source)> = None; // (rank, index, entry, source)
        for i in 0..count {
          if self.levels[i].live == 0 {
            continue;
          }
          let Some((e, src)) = self.level_head(i, is_live) else {
            continue;
          };
          let rank = (count - 1 - i + age(e.id)).min(count - 1);
          if best.is_none_or(|(r, _, b, _)| rank > r || (rank == r && e.seq < b.seq)) {
            best = Some((rank, i, e, src));
          }
        }
        best.map(|(_, i, e, src)| (i, e, src))
      }
    }
  }

  /// Removes and returns the next entry that may start (none: empty, or every live entry is
  /// behind a blocked lane). `is_live` tells whether an id is still queued. With `aging`,
  /// `age_levels(id)` returns how many levels that entry has gained by waiting.
  pub fn pop(
    &mut self,
    mut is_live: impl FnMut(u64) -> bool,
    age_levels: Option<&dyn Fn(u64) -> usize>,
  ) -> Option<Popped> {
    let (i, entry, src) = self.select(&mut is_live, age_levels)?;
    let level = &mut self.levels[i];
    match src {
      Source::Shared => {
        level.items.pop_front();
        level.shared_live -= 1;
      }
      Source::Lane(agent) => {
        if let Some(lane) = self.lanes.get_mut(usize::from(agent)).and_then(Option::as_mut) {
          lane.queued -= 1;
          let blocked = lane.blocked;
          let fifo = lane.fifo_mut(level.priority);
          fifo.items.pop_front();
          fifo.live -= 1;
          level.ready.remove(&(entry.seq, agent));
          fifo.keyed = None;
          if fifo.live == 0 {
            fifo.items.clear();
          } else if !blocked {
            if let Some(front) = fifo.items.front() {
              // Possibly a tombstone: corrected when it comes first.
              fifo.keyed = Some(front.seq);
              level.ready.insert((front.seq, agent));
            }
          }
        }
      }
    }
    level.live -= 1;
    self.live -= 1;
    Some(Popped {
      id: entry.id,
      seq: entry.seq,
    })
  }

  /// Live entries of one level in start order (lanes ignored: by sequence number).
  fn level_entries(&self, level: &Level, is_live: &mut impl FnMut(u64) -> bool) -> Vec<Entry> {
    let mut out: Vec<Entry> = level.items.iter().copied().filter(|e| is_live(e.id)).collect();
    let mut merged = false;
    for lane in self.lanes.iter().flatten() {
      for fifo in lane
        .fifos
        .iter()
        .filter(|f| f.priority == level.priority && f.live > 0)
      {
        out.extend(fifo.items.iter().copied().filter(|e| is_live(e.id)));
        merged = true;
      }
    }
    if merged {
      out.sort_unstable_by_key(|e| e.seq);
    }
    out
  }

  /// Live ids in priority and FIFO order (without aging; limits ignored). For queries.
  pub fn ordered(&self, mut is_live: impl FnMut(u64) -> bool) -> Vec<u64> {
    let mut out = Vec::with_capacity(self.live);
    for level in &self.levels {
      if level.live > 0 {
        out.extend(self.level_entries(level, &mut is_live).into_iter().map(|e| e.id));
      }
    }
    out
  }

  /// 1-based position of `id` in the order of `ordered`, if it is queued. O(queued).
  pub fn position(&self, id: u64, priority: i32, mut is_live: impl FnMut(u64) -> bool) -> Option<usize> {
    let mut ahead = 0;
    for level in &self.levels {
      if level.priority != priority {
        ahead += level.live;
        continue;
      }
      let entries = self.level_entries(level, &mut is_live);
      return entries.iter().position(|e| e.id == id).map(|i| ahead + i + 1);
    }
    None
  }

  /// Removes every entry and returns the live ones in the order of `ordered`. Lanes stay
  /// (empty, blocked or not).
  pub fn drain(&mut self, is_live: impl FnMut(u64) -> bool) -> Vec<u64> {
    let out = self.ordered(is_live);
    for level in &mut self.levels {
      level.items.clear();
      level.ready.clear();
      level.live = 0;
      level.shared_live = 0;
    }
    for lane in self.lanes.iter_mut().flatten() {
      lane.fifos.clear();
      lane.queued = 0;
    }
    self.live = 0;
    out
  }
}

impl Level {
  fn new(priority: i32) -> Self {
    Level {
      priority,
      items: VecDeque::new(),
      shared_live: 0,
      live: 0,
      ready: BTreeSet::new(),
    }
  }
}

impl Lane {
  fn fifo_mut(&mut self, priority: i32) -> &mut LaneFifo {
    let i = match self.fifos.iter().position(|f| f.priority == priority) {
      Some(i) => i,
      None => {
        self.fifos.push(LaneFifo {
          priority,
          items: VecDeque::new(),
          live: 0,
          keyed: None,
        });
        self.fifos.len() - 1
      }
    };
    &mut self.fifos[i]
  }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

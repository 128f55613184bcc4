//! Per-agent concurrency limits and rate limits, driven with a fake clock.

use super::limits::Block;
use super::rate::RateLimit;
use super::types::HOLDS_SLOT;
use super::*;
use std::collections::{HashMap, HashSet};

fn sched(max: u32) -> Scheduler {
  Scheduler::new(Config {
    max_concurrent: max,
    cancel_grace_ms: 0.0,
    ..Config::default()
  })
}

fn submit(s: &mut Scheduler, agent: u16, prio: i32, now: f64) -> (u64, bool) {
  s.submit(0, agent, false, prio, 0.0, now).expect("open")
}

fn limit(
  s: &mut Scheduler,
  agent: u16,
  concurrency: Option<u32>,
  rate: Option<RateLimit>,
  now: f64,
) -> Vec<u64> {
  s.set_agent_limits(agent, concurrency, rate, now)
    .expect("agent key > 0")
}

fn rate(max: u32, interval_ms: f64) -> Option<RateLimit> {
  RateLimit::new(max, interval_ms)
}

fn view(s: &Scheduler, agent: u16, now: f64) -> AgentView {
  s.agent_views(now)
    .into_iter()
    .find(|v| v.agent == agent)
    .expect("agent with limits")
}

#[test]
fn an_agent_at_its_limit_lets_other_agents_start_lower_priority_included() {
  let mut s = sched(5);
  limit(&mut s, 1, Some(2), None, 0.0);
  let started: Vec<bool> = (0..4).map(|_| submit(&mut s, 1, 5, 0.0).1).collect();
  assert_eq!(started, vec![true, true, false, false]);
  assert_eq!(
    submit(&mut s, 2, 1, 0.0),
    (5, true),
    "agent 2 starts though lower"
  );
  assert_eq!(submit(&mut s, 2, 1, 0.0), (6, true));
  assert_eq!(s.running(), 4);
  let v = view(&s, 1, 0.0);
  assert_eq!((v.running, v.queued, v.concurrency), (2, 2, Some(2)));
  // A settle of agent 1 frees its slot: its next (FIFO) starts.
  assert_eq!(s.settle(1, 1, true, 1.0).next, Some(3));
  // A settle of agent 2 frees a global slot only: agent 1 is still at its limit.
  assert_eq!(s.settle(5, 1, true, 2.0).next, None);
  assert_eq!(s.queue_order(), vec![4]);
}

#[test]
fn limits_set_at_run_time_apply_to_what_is_already_queued() {
  let mut s = sched(2);
  for _ in 0..4 {
    submit(&mut s, 1, 3, 0.0); // 1, 2 run; 3, 4 queued
  }
  submit(&mut s, 2, 3, 0.0); // 5 queued
  assert!(limit(&mut s, 1, Some(1), None, 0.0).is_empty());
  assert_eq!(view(&s, 1, 0.0).running, 2, "the running ones count");
  // Agent 1 is over its new limit: a freed slot goes to agent 2.
  assert_eq!(s.settle(1, 1, true, 1.0).next, Some(5));
  assert_eq!(s.settle(2, 1, true, 2.0).next, Some(3));
  // Raising the limit starts what it allows at once (a slot is free after 5 ends).
  assert_eq!(s.settle(5, 1, true, 3.0).next, None);
  assert_eq!(limit(&mut s, 1, Some(2), None, 4.0), vec![4]);
  assert!(
    s.set_agent_limits(0, Some(1), None, 4.0).is_none(),
    "key 0 takes no limits"
  );
}

#[test]
fn a_cancelled_attempt_keeps_its_agent_slot_until_its_grace_ends() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 5,
    cancel_grace_ms: 1000.0,
    ..Config::default()
  });
  limit(&mut s, 1, Some(1), None, 0.0);
  submit(&mut s, 1, 3, 0.0);
  submit(&mut s, 1, 3, 0.0);
  assert_eq!(s.cancel(1, 10.0), Some(Status::Running));
  assert_eq!(view(&s, 1, 10.0).running, 1, "the zombie holds the agent's slot");
  assert_eq!(submit(&mut s, 2, 3, 20.0), (3, true), "others run meanwhile");
  assert_eq!(s.grace_expired(1, 1010.0), vec![2]);
}

#[test]
fn the_global_rate_limit_times_the_next_start() {
  let mut s = Scheduler::new(Config {
    max_concurrent: 10,
    rate_limit: rate(3, 100.0),
    ..Config::default()
  });
  let started: Vec<bool> = (0..5).map(|_| submit(&mut s, 1, 3, 0.0).1).collect();
  assert_eq!(started, vec![true, true, true, false, false]);
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(
    cmds.contains(&TimerCmd::Arm {
      id: 0,
      kind: TimerKind::Rate,
      at_ms: 100.0
    }),
    "{cmds:?}"
  );
  assert_eq!(
    s.global_rate(50.0),
    Some((RateLimit::new(3, 100.0).expect("valid"), Some(100.0)))
  );
  assert!(s.pump(99.0).is_empty(), "not before the window lets it");
  assert_eq!(s.rate_due(0, 100.0), vec![4, 5]);
  assert_eq!(s.limited_starts(), (2, 0));
  // Removing the limit lets everything through.
  s.set_rate_limit(None, 100.0);
  assert!(submit(&mut s, 1, 3, 100.0).1);
}

#[test]
fn an_agent_rate_limit_holds_only_that_agent() {
  let mut s = sched(10);
  limit(&mut s, 1, None, rate(2, 50.0), 0.0);
  assert!(submit(&mut s, 1, 3, 0.0).1);
  assert!(submit(&mut s, 1, 3, 0.0).1);
  assert_eq!(submit(&mut s, 1, 3, 0.0), (3, false));
  assert_eq!(submit(&mut s, 2, 3, 0.0), (4, true));
  let v = view(&s, 1, 10.0);
  assert_eq!(v.next_start_at, Some(50.0));
  assert_eq!(v.rate, rate(2, 50.0));
  let cmds = s.take_timer_cmds().unwrap_or_default();
  assert!(cmds.contains(&TimerCmd::Arm {
    id: 1,
    kind: TimerKind::Rate,
    at_ms: 50.0
  }));
  // A firing that comes early starts nothing and arms the timer again; the one on time starts it.
  assert!(s.rate_due(1, 49.0).is_empty());
  assert!(s.take_timer_cmds().unwrap_or_default().contains(&TimerCmd::Arm {
    id: 1,
    kind: TimerKind::Rate,
    at_ms: 50.0
  }));
  assert_eq!(s.rate_due(1, 50.0), vec![3]);
  assert_eq!(s.limited_starts(), (1, 0));
}

#[test]
fn limit_deferred_starts_are_counted_once_each() {
  let mut s = sched(5);
  limit(&mut s, 1, Some(1), None, 0.0);
  for _ in 0..3 {
    submit(&mut s, 1, 3, 0.0);
  }
  assert_eq!(s.settle(1, 1, true, 1.0).next, Some(2));
  assert_eq!(s.settle(2, 1, true, 2.0).next, Some(3));
  assert_eq!(s.settle(3, 1, true, 3.0).next, None);
  assert_eq!(s.limited_starts(), (0, 2));
  // Started at once: not deferred.
  submit(&mut s, 1, 3, 4.0);
  assert_eq!(s.limited_starts(), (0, 2));
}

/// Queue steps per start in a steady stream of agent 2 (`max - 1` running, one queued).
fn steps_per_start(s: &mut Scheduler, starts: u64) -> f64 {
  let mut now = 1.0;
  let mut running: VecDeque<u64> = s
    .running_ids()
    .into_iter()
    .filter(|&id| s.execs.get(id).is_some_and(|e| e.agent == 2))
    .collect();
  let before = s.queue_steps();
  for _ in 0..starts {
    submit(s, 2, 3, now);
    let id = running.pop_front().expect("a running agent-2 execution");
    let next = s.settle(id, 1, true, now).next.expect("the queued one starts");
    running.push_back(next);
    now += 0.001;
  }
  (s.queue_steps() - before) as f64 / starts as f64
}

#[test]
fn a_start_costs_the_same_with_100k_executions_of_a_blocked_agent_queued() {
  let fill = |s: &mut Scheduler| {
    for _ in 0..3 {
      submit(s, 2, 3, 0.0);
    }
    submit(s, 2, 3, 0.0); // queued: the stream keeps one waiting
  };
  let mut empty = sched(4);
  limit(&mut empty, 1, Some(1), None, 0.0);
  submit(&mut empty, 1, 3, 0.0);
  fill(&mut empty);
  let baseline = steps_per_start(&mut empty, 20_000);

  let mut loaded = sched(4);
  limit(&mut loaded, 1, Some(1), None, 0.0);
  for i in 0..100_001 {
    submit(&mut loaded, 1, if i % 2 == 0 { 5 } else { 3 }, 0.0);
  }
  fill(&mut loaded);
  assert_eq!(loaded.queued(), 100_001);
  let with_blocked = steps_per_start(&mut loaded, 20_000);
  assert!(
    with_blocked <= baseline + 1.0,
    "{with_blocked} queue steps per start with 100k blocked, {baseline} without"
  );
}

/// xorshift64*: a seeded, reproducible stream.
struct Rng(u64);
impl Rng {
  fn next(&mut self) -> u64 {
    self.0 ^= self.0 >> 12;
    self.0 ^= self.0 << 25;
    self.0 ^= self.0 >> 27;
    self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
  }
  fn below(&mut self, n: u64) -> u64 {
    self.next() % n
  }
}

/// An independent model of what must hold at every start.
#[derive(Default)]
struct Model {
  agent_of: HashMap<u64, u16>,
  /// Slot holders (running, or cancelled and not yet let go).
  holding: HashSet<u64>,
  /// Running and not cancelled, in start order.
  running: Vec<u64>,
  concurrency: HashMap<u16, u32>,
  agent_rate: HashMap<u16, RateLimit>,
  /// Agents that have had a rate limit: their starts count from then on.
  rate_since: HashSet<u16>,
  global_rate: Option<RateLimit>,
  starts: HashMap<u16, Vec<f64>>,
  global_starts: Vec<f64>,
  checked: usize,
}

fn in_window(starts: &[f64], now: f64, r: RateLimit) -> usize {
  starts
    .iter()
    .rev()
    .take_while(|&&t| t > now - r.interval_ms)
    .count()
}

impl Model {
  fn started(&mut self, id: u64, now: f64) {
    let agent = self.agent_of[&id];
    assert!(self.holding.insert(id), "{id} started twice");
    self.running.push(id);
    let holders = self.holding.iter().filter(|i| self.agent_of[i] == agent).count() as u32;
    if let Some(&c) = self.concurrency.get(&agent) {
      assert!(
        holders <= c,
        "agent {agent}: {holders} holding slots, limit {c}, at {now}"
      );
    }
    let starts = self.starts.entry(agent).or_default();
    if self.rate_since.contains(&agent) {
      starts.push(now);
    }
    if let Some(&r) = self.agent_rate.get(&agent) {
      let n = in_window(starts, now, r);
      assert!(
        n <= r.max as usize,
        "agent {agent}: {n} starts in {} ms at {now}",
        r.interval_ms
      );
    }
    self.global_starts.push(now);
    if let Some(r) = self.global_rate {
      let n = in_window(&self.global_starts, now, r);
      assert!(n <= r.max as usize, "{n} starts in {} ms at {now}", r.interval_ms);
    }
    self.checked += 1;
  }
}

#[test]
fn a_random_mix_never_exceeds_a_limit_and_ends_each_execution_once() {
  let seed = std::env::var("LIMITS_SEED")
    .ok()
    .and_then(|v| v.parse().ok())
    .unwrap_or(0x5eed_1234_u64);
  let mut rng = Rng(seed | 1);
  let mut m = Model {
    global_rate: rate(30, 10.0),
    ..Model::default()
  };
  let mut s = Scheduler::new(Config {
    max_concurrent: 8,
    cancel_grace_ms: 5.0,
    rate_limit: m.global_rate,
    ..Config::default()
  });
  let mut now = 0.0;
  let mut armed: HashMap<(u64, TimerKind), f64> = HashMap::new();
  let mut ends: HashMap<u64, u32> = HashMap::new();
  let mut zombies: HashSet<u64> = HashSet::new();
  let mut submitted = 0u64;

  macro_rules! timers {
    () => {
      for cmd in s.take_timer_cmds().unwrap_or_default() {
        match cmd {
          TimerCmd::Arm { id, kind, at_ms } => {
            armed.insert((id, kind), at_ms);
          }
          TimerCmd::Disarm { id, kind } => {
            armed.remove(&(id, kind));
          }
        }
      }
    };
  }

  let mut op = 0;
  while submitted < 20_000 || !s.is_idle() || !zombies.is_empty() {
    op += 1;
    assert!(op < 1_000_000, "no progress");
    let draining = submitted >= 20_000;
    if draining && op % 5000 == 0 {
      // Let the end come: no more limits.
      for agent in 1..=6u16 {
        limit(&mut s, agent, None, None, now)
          .into_iter()
          .for_each(|id| m.started(id, now));
        m.concurrency.remove(&agent);
        m.agent_rate.remove(&agent);
      }
    }
    match rng.below(100) {
      0..=39 if !draining => {
        let agent = 1 + rng.below(6) as u16;
        let prio = 1 + rng.below(5) as i32;
        let (id, started) = submit(&mut s, agent, prio, now);
        submitted += 1;
        m.agent_of.insert(id, agent);
        if started {
          m.started(id, now);
        }
      }
      40..=69 if !m.running.is_empty() => {
        let id = m.running.swap_remove(rng.below(m.running.len() as u64) as usize);
        let r = s.settle(id, 0, true, now);
        assert!(r.ended);
        *ends.entry(id).or_default() += 1;
        m.holding.remove(&id);
        if let Some(next) = r.next {
          m.started(next, now);
        }
      }
      70..=74 => {
        let queued = if rng.below(2) == 0 {
          s.queue_order()
        } else {
          vec![]
        };
        let id = if queued.is_empty() {
          (!m.running.is_empty()).then(|| m.running.swap_remove(rng.below(m.running.len() as u64) as usize))
        } else {
          Some(queued[rng.below(queued.len() as u64) as usize])
        };
        if let Some(id) = id {
          match s.cancel(id, now) {
            Some(Status::Queued) => *ends.entry(id).or_default() += 1,
            Some(Status::Running) => {
              *ends.entry(id).or_default() += 1;
              zombies.insert(id);
            }
            other => panic!("cancel of {id}: {other:?}"),
          }
        }
      }
      75..=79 if !zombies.is_empty() => {
        // A cancelled agent returns at last: its slot is free.
        let id = *zombies.iter().next().expect("non-empty");
        zombies.remove(&id);
        let r = s.settle(id, 0, false, now);
        assert!(!r.ended, "a cancelled execution ends once");
        m.holding.remove(&id);
        if let Some(next) = r.next {
          m.started(next, now);
        }
      }
      80..=84 if !draining => {
        let agent = 1 + rng.below(6) as u16;
        let c = match rng.below(4) {
          0 => None,
          n => Some(n as u32),
        };
        let r = if rng.below(2) == 0 {
          None
        } else {
          rate(1 + rng.below(5) as u32, 1.0 + rng.below(20) as f64)
        };
        // The model takes the new limits first: starts they allow are checked against them.
        match c {
          Some(c) => m.concurrency.insert(agent, c),
          None => m.concurrency.remove(&agent),
        };
        if r.is_some() {
          m.rate_since.insert(agent);
        }
        match r {
          Some(r) => m.agent_rate.insert(agent, r),
          None => m.agent_rate.remove(&agent),
        };
        for id in limit(&mut s, agent, c, r, now) {
          m.started(id, now);
        }
      }
      85..=86 if !draining => {
        let r = rate(5 + rng.below(40) as u32, 1.0 + rng.below(20) as f64);
        m.global_rate = r;
        for id in s.set_rate_limit(r, now) {
          m.started(id, now);
        }
      }
      _ => {
        now += rng.below(4) as f64 * 0.5;
        timers!();
        let mut due: Vec<((u64, TimerKind), f64)> = armed
          .iter()
          .filter(|(_, &at)| at <= now)
          .map(|(k, &at)| (*k, at))
          .collect();
        due.sort_by(|a, b| a.1.total_cmp(&b.1));
        for ((id, kind), _) in due {
          armed.remove(&(id, kind));
          let started = match kind {
            TimerKind::Rate => s.rate_due(id as u16, now),
            TimerKind::Grace => {
              // The grace period ends: the zombie's slot is free (it may return later).
              if zombies.contains(&id) && s.execs.get(id).is_some_and(|e| e.has(HOLDS_SLOT)) {
                m.holding.remove(&id);
              }
              let started = s.grace_expired(id, now);
              zombies.remove(&id);
              started
            }
            TimerKind::Sweep => {
              s.sweep(now);
              vec![]
            }
            _ => vec![],
          };
          for id in started {
            m.started(id, now);
          }
          timers!();
        }
      }
    }
    timers!();
    // Nothing that could start is left waiting: with a free slot and room in the global
    // window nothing is ready, and every limit holding work back has its timer armed.
    assert!(
      !(s.can_start() && s.limits.global_allows(now) && s.queue.has_ready()),
      "op {op}: a ready execution waits with a free slot at {now}"
    );
    if s.can_start() && s.queue.has_ready() {
      assert!(
        armed.contains_key(&(0, TimerKind::Rate)),
        "op {op}: the global window holds work back without a timer"
      );
    }
    for agent in 1..=6u16 {
      if let Some(Block::Rate(at)) = s.limits.get(agent).map(|a| a.block) {
        assert_eq!(
          armed.get(&(u64::from(agent), TimerKind::Rate)),
          Some(&at),
          "op {op}: agent {agent}'s rate block has no timer"
        );
      }
    }
  }
  assert_eq!(ends.len() as u64, submitted, "every execution ended");
  assert!(ends.values().all(|&n| n == 1), "and each once");
  let t = s.totals();
  assert_eq!(t.completed + t.cancelled, submitted);
  assert!(m.checked > 10_000, "{} starts checked", m.checked);
  let (rate_limited, limit_deferred) = s.limited_starts();
  assert!(
    rate_limited > 0 && limit_deferred > 0,
    "{rate_limited} {limit_deferred}"
  );
}

//! The timer service: one tokio task per executor holding every armed deadline
//! (timeouts, watched-progress ticks, grace periods, retention sweeps, shutdown deadline).
//!
//! The JS thread sends batches of `TimerCmd`s (arm / disarm) over an unbounded channel;
//! due timers are delivered in one batch per wake-up through the `fire` callback, which the
//! binding layer turns into a single threadsafe-function call. Disarming is O(1): the entry
//! leaves the `armed` map and its heap slot is skipped when it comes up; the heap is rebuilt
//! when stale slots outnumber live ones, so memory follows the armed timers, not the history.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::scheduler::{TimerCmd, TimerKind};

pub type Fired = Vec<(TimerKind, u64)>;

pub struct TimerService {
  tx: mpsc::UnboundedSender<Vec<TimerCmd>>,
  task: JoinHandle<()>,
}

impl TimerService {
  /// Starts the service. `epoch` is the instant that `at_ms == 0` stands for.
  pub fn spawn<F>(rt: &Handle, epoch: Instant, fire: F) -> Self
  where
    F: Fn(Fired) + Send + 'static,
  {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = rt.spawn(run(rx, epoch, fire));
    TimerService { tx, task }
  }

  pub fn send(&self, cmds: Vec<TimerCmd>) {
    // A closed channel means the service stopped (shutdown): nothing left to time.
    let _ = self.tx.send(cmds);
  }
}

impl Drop for TimerService {
  fn drop(&mut self) {
    self.task.abort();
  }
}

type Key = (u64, TimerKind);

struct State {
  epoch: Instant,
  seq: u64,
  armed: HashMap<Key, (Instant, u64)>,
  heap: BinaryHeap<Reverse<(Instant, u64, u64, u8)>>,
}

impl State {
  fn apply(&mut self, cmd: TimerCmd) {
    match cmd {
      TimerCmd::Arm { id, kind, at_ms } => {
        let offset = if at_ms.is_finite() && at_ms > 0.0 {
          at_ms
        } else {
          0.0
        };
        let at = self.epoch + Duration::from_secs_f64(offset.min(1e12) / 1000.0);
        self.seq += 1;
        self.armed.insert((id, kind), (at, self.seq));
        self.heap.push(Reverse((at, self.seq, id, kind as u8)));
      }
      TimerCmd::Disarm { id, kind } => {
        self.armed.remove(&(id, kind));
        if self.heap.len() > 1024 && self.heap.len() > 2 * self.armed.len() {
          self.heap = self
            .armed
            .iter()
            .map(|(&(id, kind), &(at, seq))| Reverse((at, seq, id, kind as u8)))
            .collect();
        }
      }
    }
  }

  fn take_due(&mut self, now: Instant) -> Fired {
    let mut fired = Vec::new();
    while let Some(Reverse((at, seq, id, kind))) = self.heap.peek().copied() {
      if at > now {
        break;
      }
      self.heap.pop();
      let Some(kind) = TimerKind::from_u8(kind) else {
        continue;
      };
      if self.armed.get(&(id, kind)).is_some_and(|&(_, s)| s == seq) {
        self.armed.remove(&(id, kind));
        fired.push((kind, id));
      }
    }
    fired
  }

  fn next_deadline(&self) -> Option<Instant> {
    self.heap.peek().map(|Reverse((at, ..))| *at)
  }
}

async fn run<F>(mut rx: mpsc::UnboundedReceiver<Vec<TimerCmd>>, epoch: Instant, fire: F)
where
  F: Fn(Fired) + Send + 'static,
{
  let mut st = State {
    epoch,
    seq: 0,
    armed: HashMap::new(),
    heap: BinaryHeap::new(),
  };
  loop {
    let next = st.next_deadline();
    tokio::select! {
      msg = rx.recv() => match msg {
        Some(cmds) => cmds.into_iter().for_each(|c| st.apply(c)),
        None => break,
      },
      _ = sleep_until(next), if next.is_some() => {
        let fired = st.take_due(Instant::now());
        if !fired.is_empty() {
          tracing::trace!(count = fired.len(), "timers fired");
          fire(fired);
        }
      }
    }
  }
}

async fn sleep_until(at: Option<Instant>) {
  if let Some(at) = at {
    tokio::time::sleep_until(at.into()).await;
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::mpsc as std_mpsc;

  #[test]
  fn fires_in_deadline_order_and_honours_disarm() {
    let rt = crate::system::runtime::handle().expect("runtime");
    let (tx, rx) = std_mpsc::channel();
    let epoch = Instant::now();
    let svc = TimerService::spawn(&rt, epoch, move |f| {
      for item in f {
        let _ = tx.send(item);
      }
    });
    svc.send(vec![
      TimerCmd::Arm {
        id: 1,
        kind: TimerKind::Timeout,
        at_ms: 60.0,
      },
      TimerCmd::Arm {
        id: 2,
        kind: TimerKind::Timeout,
        at_ms: 20.0,
      },
      TimerCmd::Arm {
        id: 3,
        kind: TimerKind::Grace,
        at_ms: 40.0,
      },
      TimerCmd::Arm {
        id: 4,
        kind: TimerKind::Timeout,
        at_ms: 30.0,
      },
    ]);
    svc.send(vec![TimerCmd::Disarm {
      id: 4,
      kind: TimerKind::Timeout,
    }]);
    let got: Vec<_> = (0..3)
      .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("fired"))
      .collect();
    assert_eq!(
      got,
      vec![
        (TimerKind::Timeout, 2),
        (TimerKind::Grace, 3),
        (TimerKind::Timeout, 1)
      ]
    );
    assert!(epoch.elapsed() >= Duration::from_millis(60));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
  }

  #[test]
  fn rearming_replaces_the_deadline() {
    let mut st = State {
      epoch: Instant::now(),
      seq: 0,
      armed: HashMap::new(),
      heap: BinaryHeap::new(),
    };
    st.apply(TimerCmd::Arm {
      id: 7,
      kind: TimerKind::Progress,
      at_ms: 10.0,
    });
    st.apply(TimerCmd::Arm {
      id: 7,
      kind: TimerKind::Progress,
      at_ms: 50.0,
    });
    assert!(st.take_due(st.epoch + Duration::from_millis(20)).is_empty());
    assert_eq!(
      st.take_due(st.epoch + Duration::from_millis(50)),
      vec![(TimerKind::Progress, 7)]
    );
  }

  #[test]
  fn stale_heap_entries_are_compacted() {
    let mut st = State {
      epoch: Instant::now(),
      seq: 0,
      armed: HashMap::new(),
      heap: BinaryHeap::new(),
    };
    for id in 0..10_000 {
      st.apply(TimerCmd::Arm {
        id,
        kind: TimerKind::Timeout,
        at_ms: 60_000.0,
      });
      st.apply(TimerCmd::Disarm {
        id,
        kind: TimerKind::Timeout,
      });
    }
    assert!(st.heap.len() <= 1025, "heap {}", st.heap.len());
    assert!(st.armed.is_empty());
  }
}

//! The published parked claim (see `push`), which two threads may end: the listener answers
//! it as soon as it hears a push to it from another executor, from its own thread (the work
//! reaches JS without waking the store's thread), or the store's thread takes it back
//! (`withdraw`; also how it reads a push of its own submission, after answering that).
//! Whichever comes first ends it, under one lock; the other then finds it ended.
//!
//! The store's thread reads what the listener started (`answered`) before each request and
//! each turn of its periodic work: the end of an execution is never handled before its start
//! is known.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::backend::Answered;
use crate::store::messages::{send_event, Event, SharedSink};
use crate::store::Row;

pub struct Published {
  state: Mutex<State>,
  sink: SharedSink,
}

#[derive(Default)]
struct State {
  /// The claim a push may answer: its token, and JS's request.
  open: Option<(i64, u32)>,
  /// Answered by the listener, not yet read by the store's thread.
  answered: Vec<Answered>,
}

impl State {
  /// Ends claim `token` if it is the open one: its request.
  fn end(&mut self, token: i64) -> Option<u32> {
    match self.open {
      Some((t, req)) if t == token => {
        self.open = None;
        Some(req)
      }
      _ => None,
    }
  }
}

impl Published {
  pub fn new(sink: SharedSink) -> Arc<Published> {
    Arc::new(Published {
      state: Mutex::new(State::default()),
      sink,
    })
  }

  fn state(&self) -> MutexGuard<'_, State> {
    // Nothing is left half-done under the lock: a panic elsewhere does not spoil it.
    self.state.lock().unwrap_or_else(|p| p.into_inner())
  }

  /// Claim `token` of request `req` is published: a push to it answers it.
  pub fn open(&self, token: i64, req: u32) {
    self.state().open = Some((token, req));
  }

  /// The store's thread takes claim `token` back: false when a push answered it first.
  pub fn close(&self, token: i64) -> bool {
    self.state().end(token).is_some()
  }

  /// A push of `rows` to claim `token` heard: answers the claim if it is open; false when it
  /// is not (not open yet, taken back, or answered).
  pub fn answer(&self, token: i64, rows: Vec<Row>) -> bool {
    let mut s = self.state();
    let Some(req) = s.end(token) else {
      return false;
    };
    let started: Vec<(i64, u32)> = rows.iter().map(|r| (r.id, r.attempt)).collect();
    // Under the lock: whatever the store's thread says after finding the claim ended (a
    // close, say) reaches JS after this answer.
    let heard = send_event(&self.sink, Event::claimed(req, rows));
    // Nobody listens any more (the executor is gone): they stay unknown to the store's
    // thread, which hands them back to the queue as it leaves.
    if heard {
      s.answered.push((token, started));
    }
    true
  }

  /// No push answers anything any more (the store's thread stopped). Once this returns, none
  /// is answering either: an answer holds the lock.
  pub fn shut(&self) {
    self.state().open = None;
  }

  /// What the listener answered since the last call.
  pub fn answered(&self) -> Vec<Answered> {
    std::mem::take(&mut self.state().answered)
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::mpsc;

  /// A pushed row: only its id and attempt matter here.
  fn row(id: i64) -> Row {
    Row {
      id,
      attempt: 1,
      ..Row::default()
    }
  }

  #[test]
  fn a_published_claim_ends_once_answered_by_a_push_or_taken_back() {
    let (tx, rx) = mpsc::channel();
    let sink: SharedSink = Arc::new(Mutex::new(Box::new(move |ev| tx.send(ev).is_ok())));
    let p = Published::new(sink);
    // Not open yet: the push is left to the store's thread.
    assert!(!p.answer(7, vec![row(1)]));
    p.open(7, 3);
    assert!(!p.answer(8, vec![row(1)]), "another token");
    assert!(p.answer(7, vec![row(1), row(2)]));
    match rx.try_recv() {
      Ok(Event::Batch { req, result }) => assert_eq!((req, result.claimed.len()), (3, 2)),
      other => panic!("{other:?}"),
    }
    assert!(!p.answer(7, vec![row(3)]), "answered once");
    assert!(!p.close(7), "answered: nothing to take back");
    assert_eq!(p.answered(), vec![(7, vec![(1, 1), (2, 1)])]);
    assert!(p.answered().is_empty(), "told once");
    // Taken back first: a push finds it ended, and nothing reaches JS.
    p.open(9, 4);
    assert!(p.close(9));
    assert!(!p.answer(9, vec![row(4)]));
    assert!(rx.try_recv().is_err());
    assert!(p.answered().is_empty());
    // Shut with a claim open (the store's thread stopped): nothing is answered.
    p.open(10, 5);
    p.shut();
    assert!(!p.answer(10, vec![row(5)]));
    assert!(rx.try_recv().is_err());
  }

  #[test]
  fn executions_answered_to_nobody_stay_unknown_to_the_thread() {
    let sink: SharedSink = Arc::new(Mutex::new(Box::new(|_| false)));
    let p = Published::new(sink);
    p.open(7, 3);
    assert!(p.answer(7, vec![row(1)]), "the claim ends all the same");
    assert!(!p.close(7));
    assert!(p.answered().is_empty(), "handed back as unknown, not run");
  }
}

//! What goes in and out of the store's thread: the requests it takes (`Command`), what it
//! answers and reports (`Event`), and the sink those answers go to.

use std::sync::{Arc, Mutex};

use crate::store::{Batch, BatchResult, CancelRequest, Rescued, Row, StoreError};

pub enum Command {
  Batch {
    req: u32,
    batch: Batch,
  },
  Cancel {
    req: u32,
    id: i64,
    error: String,
  },
  Fetch {
    req: u32,
    id: i64,
  },
  /// Which agents to claim executions of.
  Interest {
    any: bool,
    agents: Vec<String>,
  },
  /// Report when these executions end (they may run elsewhere); `check`: they may have
  /// ended already (not just inserted), so look now.
  Watch {
    ids: Vec<i64>,
    check: bool,
  },
  Unwatch(Vec<i64>),
  /// The most executions of `agent` running at once on every executor (`None`: no limit).
  GlobalLimit {
    req: u32,
    agent: String,
    limit: Option<u32>,
  },
  /// `PRAGMA integrity_check`.
  Check {
    req: u32,
  },
  Close {
    req: u32,
  },
  /// A claim held until claimable work may be waiting (a notification, a poll that finds
  /// some, a due time), then run as a batch and answered under `req`: the answer to work
  /// then comes without a round trip through JS. One at a time; a new one replaces it.
  Park {
    req: u32,
    batch: Batch,
  },
  /// The parked claim now: run (`run`), or answered with nothing claimed. Nothing when none
  /// is parked (its answer is on its way).
  Unpark {
    run: bool,
  },
  /// Another process may have committed: the WAL file was written (SQLite), or the
  /// listener heard a notification (PostgreSQL).
  Wake,
  /// The handle was dropped without `Close`.
  Dropped,
}

impl Command {
  /// The request it answers, if it is one (`Close` is answered by `Closed`).
  pub(super) fn req(&self) -> Option<u32> {
    match self {
      Command::Batch { req, .. }
      | Command::Park { req, .. }
      | Command::Cancel { req, .. }
      | Command::Fetch { req, .. }
      | Command::GlobalLimit { req, .. }
      | Command::Check { req } => Some(*req),
      _ => None,
    }
  }
}

#[derive(Debug)]
pub enum Event {
  Opened {
    owner: String,
  },
  Batch {
    req: u32,
    result: BatchResult,
  },
  Cancelled {
    req: u32,
    was: i32,
  },
  Fetched {
    req: u32,
    row: Option<Box<Row>>,
  },
  Checked {
    req: u32,
    result: String,
  },
  /// A request that answers nothing but its success.
  Done {
    req: u32,
  },
  /// A request failed; nothing of it was written.
  Failed {
    req: u32,
    error: StoreError,
  },
  /// Claimable work may be waiting.
  Changed,
  CancelRequested(Vec<CancelRequest>),
  /// Watched executions that ended, watched ids no longer stored, and ids that ended whose
  /// rows were not read (see `Service::lazy`).
  Ended {
    rows: Vec<Row>,
    gone: Vec<i64>,
    unread: Vec<i64>,
  },
  Rescued(Vec<Rescued>),
  /// The connection to the store was lost (`up` false) or is back; `store` names it.
  Link {
    up: bool,
    store: String,
  },
  /// A failure outside any request (heartbeat, rescue, retention, poll); the thread goes on.
  Background(StoreError),
  /// The thread failed (a panic, or a store that cannot go on): requests in flight get no
  /// answer; later ones the failure.
  Stopped(StoreError),
  Closed {
    req: u32,
  },
}

impl Event {
  /// The answer to claim `req`: the executions it got (pushed to it, or read back).
  pub fn claimed(req: u32, rows: Vec<Row>) -> Event {
    Event::Batch {
      req,
      result: BatchResult {
        claimed: rows,
        ..BatchResult::default()
      },
    }
  }
}

/// Answers go here; `false` means nobody listens any more and the thread stops.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// The sink, shared by the thread and the reads made beside it (`Reader`).
pub type SharedSink = Arc<Mutex<Sink>>;

/// Sends `ev` to `sink`; false when nobody listens any more.
pub fn send_event(sink: &SharedSink, ev: Event) -> bool {
  match sink.lock() {
    Ok(mut f) => f(ev),
    Err(poisoned) => (poisoned.into_inner())(ev),
  }
}

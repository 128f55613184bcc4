//! The store's thread with a parked claim, against a real PostgreSQL server
//! (`BMAD_TEST_PG_URL`, set by `node scripts/pg-cluster.mjs run -- …`).

use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use super::{start, Command, Event, Handle, Options};
use crate::store::pg::tests::{server, target};
use crate::store::schema::Synchronous;
use crate::store::{Batch, NewExecution};

/// An executor's store thread on `schema`, claiming any agent; its events on the receiver.
fn thread(url: &str, schema: &str) -> (Handle, Receiver<Event>) {
  thread_following(url, schema, super::FOLLOW_MS)
}

/// `thread`, whose claims after another executor's wait `follow_ms`.
fn thread_following(url: &str, schema: &str, follow_ms: f64) -> (Handle, Receiver<Event>) {
  thread_with(url, schema, follow_ms, 30_000.0)
}

/// `thread_following` whose leases last `lease_ms` (its heartbeat comes every third).
fn thread_with(url: &str, schema: &str, follow_ms: f64, lease_ms: f64) -> (Handle, Receiver<Event>) {
  let (tx, rx) = mpsc::channel();
  let opts = Options {
    path: Default::default(),
    synchronous: Synchronous::Normal,
    lease_ms,
    // Looks only when woken: no fallback look runs a parked claim in the middle of a test.
    poll_ms: 3_600_000.0,
    ttl_ms: 86_400_000.0,
    max_kept: u64::MAX,
    follow_ms,
    postgres: Some(Ok(target(url, schema))),
  };
  let handle = start(opts, Box::new(move |ev| tx.send(ev).is_ok())).expect("start");
  // Queued before the thread serves: its first look has an agent of interest.
  handle.send(Command::Interest {
    any: true,
    agents: Vec::new(),
  });
  let opened = rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
  assert!(matches!(opened, Event::Opened { .. }), "{opened:?}");
  // Two notices of work: the interest set, and the listener connected (which looks at
  // everything). After them nothing wakes a parked claim but what a test does.
  let mut changed = 0;
  while changed < 2 {
    if let Event::Changed = rx
      .recv_timeout(Duration::from_secs(10))
      .expect("the listener connected")
    {
      changed += 1;
    }
  }
  (handle, rx)
}

fn submission(agent: &str) -> NewExecution {
  NewExecution {
    agent: agent.to_string(),
    task: "t".to_string(),
    options: None,
    level: "medium".to_string(),
    priority: 0,
    mode: 0,
    key: None,
    max_attempts: 1,
    retry_delay_ms: 0.0,
    backoff: 0,
    timeout_ms: 0.0,
    start_after: 0.0,
    seq: 0,
  }
}

fn submit(h: &Handle, req: u32, n: usize) {
  h.send(Command::Batch {
    req,
    batch: Batch {
      inserts: (0..n).map(|_| submission("a")).collect(),
      ..Batch::default()
    },
  });
}

/// `submit` with keys: stored in a transaction, which hands nothing to a parked claim.
fn submit_keyed(h: &Handle, req: u32, n: usize) {
  h.send(Command::Batch {
    req,
    batch: Batch {
      inserts: (0..n)
        .map(|i| NewExecution {
          key: Some(format!("{req}/{i}")),
          ..submission("a")
        })
        .collect(),
      ..Batch::default()
    },
  });
}

fn park(h: &Handle, req: u32, claim: u32) {
  h.send(Command::Park {
    req,
    batch: Batch {
      claim,
      ..Batch::default()
    },
  });
}

/// A claim of up to `n` as batch `req`, run at once.
fn claim(h: &Handle, req: u32, n: u32) {
  h.send(Command::Batch {
    req,
    batch: Batch {
      claim: n,
      ..Batch::default()
    },
  });
}

/// The next answer to a batch (`req`, rows claimed), skipping notices.
fn answer(rx: &Receiver<Event>) -> (u32, usize) {
  let (req, rows) = answer_rows(rx);
  (req, rows.len())
}

/// `answer`, with the rows claimed.
fn answer_rows(rx: &Receiver<Event>) -> (u32, Vec<crate::store::Row>) {
  loop {
    match rx.recv_timeout(Duration::from_secs(10)).expect("an answer") {
      Event::Batch { req, result } => return (req, result.claimed),
      Event::Failed { req, error } => panic!("batch {req} failed: {error:?}"),
      _ => {}
    }
  }
}

/// The next `Changed` notice; no batch is answered before it.
fn changed(rx: &Receiver<Event>) {
  loop {
    match rx.recv_timeout(Duration::from_secs(10)).expect("a notice") {
      Event::Changed => return,
      Event::Batch { req, .. } => panic!("batch {req} answered"),
      _ => {}
    }
  }
}

/// No batch answered for `ms` (notices are skipped).
fn quiet(rx: &Receiver<Event>, ms: u64) {
  let until = std::time::Instant::now() + Duration::from_millis(ms);
  while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
    if let Ok(Event::Batch { req, .. }) = rx.recv_timeout(left) {
      panic!("batch {req} answered");
    }
  }
}

fn close(mut h: Handle, rx: &Receiver<Event>) {
  h.send(Command::Close { req: 999 });
  loop {
    match rx.recv_timeout(Duration::from_secs(10)).expect("closed") {
      Event::Closed { .. } => break,
      Event::Batch { req, .. } => assert_ne!(req, 999),
      _ => {}
    }
  }
  h.join();
}

#[test]
fn a_parked_claim_waits_for_work_and_runs_on_another_executor_s_commit() {
  let Some(url) = server() else { return };
  let (runner, from_runner) = thread(&url, "parked_work");
  let (submitter, from_submitter) = thread(&url, "parked_work");
  // The runner's first look finds nothing: its claim is parked and nothing is answered.
  park(&runner, 1, 4);
  quiet(&from_runner, 300);
  // Keyed: stored queued and announced, not handed to the parked claim (see `pg::push`).
  submit_keyed(&submitter, 1, 3);
  assert_eq!(answer(&from_submitter), (1, 0));
  // The commit's notification runs the parked claim: answered under its request.
  assert_eq!(answer(&from_runner), (1, 3));
  // Answered once: with none parked, work is announced to JS instead.
  submit(&submitter, 2, 1);
  assert_eq!(answer(&from_submitter), (2, 0));
  changed(&from_runner);
  park(&runner, 2, 4);
  runner.send(Command::Unpark { run: true });
  assert_eq!(answer(&from_runner), (2, 1));
  close(runner, &from_runner);
  close(submitter, &from_submitter);
}

#[test]
fn a_parked_claim_taken_back_or_replaced_is_answered_empty_and_runs_when_asked() {
  let Some(url) = server() else { return };
  let (runner, rx) = thread(&url, "parked_back");
  park(&runner, 1, 4);
  runner.send(Command::Unpark { run: false });
  assert_eq!(answer(&rx), (1, 0), "taken back: answered with nothing claimed");
  runner.send(Command::Unpark { run: false });
  quiet(&rx, 200); // nothing parked: nothing to answer
  park(&runner, 2, 4);
  park(&runner, 3, 2);
  assert_eq!(answer(&rx), (2, 0), "replaced: the first is answered empty");
  // Its own submissions announce nothing to this executor: the parked claim hears of them
  // from the batch that stored them, after answering it.
  submit(&runner, 4, 3);
  assert_eq!(answer(&rx), (4, 0));
  assert_eq!(answer(&rx), (3, 2), "the parked claim of 2 took two");
  park(&runner, 5, 4);
  runner.send(Command::Unpark { run: true });
  assert_eq!(answer(&rx), (5, 1), "run when asked: the last one");
  // A parked claim is answered before the thread closes.
  park(&runner, 6, 4);
  runner.send(Command::Close { req: 7 });
  assert_eq!(answer(&rx), (6, 0));
  let mut runner = runner;
  runner.join();
}

#[test]
fn of_idle_executors_the_one_that_found_work_last_claims_first_the_others_after_it() {
  let Some(url) = server() else { return };
  // Followers wait long enough here for the leader's claim to be done on a loaded machine.
  let runners: Vec<(Handle, Receiver<Event>)> = (0..3)
    .map(|_| thread_following(&url, "parked_follow", 300.0))
    .collect();
  let (submitter, from_submitter) = thread(&url, "parked_follow");
  for (i, (h, _)) in runners.iter().enumerate() {
    park(h, 1 + i as u32, 1);
  }
  // One execution at a time: every runner's parked claim is answered, one of them with it,
  // and parked again. After the first, all at once, the runner that took one leads. Keyed:
  // stored in a transaction, which hands nothing to a parked claim (see `pg::push`), so work
  // is announced to all.
  let mut took = [0; 3];
  for round in 0..6u32 {
    submit_keyed(&submitter, round + 1, 1);
    assert_eq!(answer(&from_submitter), (round + 1, 0));
    let mut claimed = 0;
    for (i, (h, rx)) in runners.iter().enumerate() {
      let (req, n) = answer(rx);
      claimed += n;
      if round > 0 {
        took[i] += n;
      }
      park(h, req + 10, 1);
    }
    assert_eq!(claimed, 1, "round {round}: claimed once");
  }
  let most = took.iter().copied().max().unwrap_or(0);
  assert_eq!(most, 5, "one runner leads: {took:?} of 5");
  for (h, rx) in runners {
    close(h, &rx);
  }
  close(submitter, &from_submitter);
}

#[test]
fn a_submission_is_handed_to_one_parked_claim_told_to_it_alone_and_read_when_too_long_to_tell() {
  let Some(url) = server() else { return };
  let runners: Vec<(Handle, Receiver<Event>)> = (0..2).map(|_| thread(&url, "pushed")).collect();
  let (submitter, from_submitter) = thread(&url, "pushed");
  for (i, (h, _)) in runners.iter().enumerate() {
    park(h, 1 + i as u32, 2);
  }
  // Published by now; nothing is answered meanwhile.
  quiet(&runners[0].1, 200);
  quiet(&runners[1].1, 10);
  // Over PostgreSQL's 8000 bytes as a notice: the runner reads the row.
  let task = "x".repeat(9000);
  submitter.send(Command::Batch {
    req: 1,
    batch: Batch {
      inserts: vec![NewExecution {
        task: task.clone(),
        ..submission("a")
      }],
      ..Batch::default()
    },
  });
  assert_eq!(answer(&from_submitter), (1, 0));
  let until = std::time::Instant::now() + Duration::from_secs(10);
  let (taker, rows) = 'found: loop {
    assert!(std::time::Instant::now() < until, "no runner was answered");
    for (i, (_, rx)) in runners.iter().enumerate() {
      if let Ok(ev) = rx.recv_timeout(Duration::from_millis(5)) {
        match ev {
          Event::Batch { req, result } => {
            assert_eq!(req, 1 + i as u32);
            break 'found (i, result.claimed);
          }
          Event::Failed { req, error } => panic!("batch {req} failed: {error:?}"),
          _ => {}
        }
      }
    }
  };
  assert_eq!(rows.len(), 1);
  assert_eq!(
    (rows[0].task.len(), rows[0].status, rows[0].attempt),
    (9000, 1, 1)
  );
  quiet(&runners[1 - taker].1, 300);
  for (h, rx) in runners {
    close(h, &rx);
  }
  close(submitter, &from_submitter);
}

#[test]
fn an_execution_a_push_started_from_the_listener_is_known_to_the_thread_and_kept_running() {
  let Some(url) = server() else { return };
  // A heartbeat every 200 ms, each followed by the hand-back of attempts the thread does not
  // know of: one it did not learn of would be queued again.
  let (runner, from_runner) = thread_with(&url, "pushed_known", super::FOLLOW_MS, 600.0);
  let (submitter, from_submitter) = thread(&url, "pushed_known");
  park(&runner, 1, 2);
  quiet(&from_runner, 200);
  submit(&submitter, 1, 1);
  assert_eq!(answer(&from_submitter), (1, 0));
  let (req, rows) = answer_rows(&from_runner);
  assert_eq!((req, rows.len()), (1, 1));
  let id = rows[0].id;
  std::thread::sleep(Duration::from_millis(1_000));
  submitter.send(Command::Fetch { req: 2, id });
  let row = loop {
    match from_submitter
      .recv_timeout(Duration::from_secs(10))
      .expect("the row")
    {
      Event::Fetched { req: 2, row } => break row.expect("stored"),
      Event::Failed { req, error } => panic!("request {req} failed: {error:?}"),
      _ => {}
    }
  };
  assert_eq!(
    (row.status, row.attempt),
    (1, 1),
    "still running, its first attempt"
  );
  // The next parked claim is published and taken back as usual: nothing pushed to it.
  park(&runner, 2, 2);
  quiet(&from_runner, 100);
  runner.send(Command::Unpark { run: false });
  assert_eq!(answer(&from_runner), (2, 0));
  close(runner, &from_runner);
  close(submitter, &from_submitter);
}

#[test]
fn the_full_look_reads_only_the_latest_kept_rows_of_fire_and_forget_ends_it_never_heard() {
  let Some(url) = server() else { return };
  let (submitter, rx) = thread(&url, "lazy_full");
  let n = crate::protocol::ENDED_KEPT as usize + 5;
  submitter.send(Command::Batch {
    req: 1,
    batch: Batch {
      inserts: (0..n)
        .map(|_| NewExecution {
          mode: crate::protocol::MODE_FIRE,
          ..submission("a")
        })
        .collect(),
      ..Batch::default()
    },
  });
  assert_eq!(answer(&rx), (1, 0));
  // Ended behind the store's back: no notice, so only the full look (every 5 s) finds them.
  let admin = crate::store::pg::PgConnection::open(target(&url, "lazy_full")).expect("open");
  let s = admin.target.quoted_schema();
  admin
    .wait(
      "test",
      admin.client().batch_execute(&format!(
        "UPDATE {s}.bmad_executions SET state = 2, finalized_at = extract(epoch FROM now()) * 1000"
      )),
    )
    .expect("end them");
  let (mut rows, mut unread) = (0, 0);
  let until = std::time::Instant::now() + Duration::from_secs(15);
  while rows + unread < n {
    let left = until.saturating_duration_since(std::time::Instant::now());
    match rx.recv_timeout(left).expect("their ends") {
      Event::Ended {
        rows: r,
        gone,
        unread: u,
      } => {
        assert!(gone.is_empty());
        rows += r.len();
        unread += u.len();
      }
      Event::Batch { req, .. } => panic!("batch {req} answered"),
      _ => {}
    }
  }
  assert_eq!(
    (rows, unread),
    (n - 5, 5),
    "the rows of the latest kept are read, the others told unread"
  );
  close(submitter, &rx);
}

#[test]
fn a_thread_whose_executor_hears_it_no_more_hands_back_what_was_pushed_to_it() {
  let Some(url) = server() else { return };
  let (mut runner, from_runner) = thread(&url, "unheard");
  let (submitter, from_submitter) = thread(&url, "unheard");
  park(&runner, 1, 2);
  quiet(&from_runner, 200);
  // The executor's events can no longer be delivered (its JS is going away): the push
  // answers the parked claim, and nobody hears it.
  drop(from_runner);
  submit(&submitter, 1, 1);
  assert_eq!(answer(&from_submitter), (1, 0));
  // The thread finds out at its next event, and stops.
  std::thread::sleep(Duration::from_millis(200));
  runner.send(Command::Batch {
    req: 2,
    batch: Batch::default(),
  });
  runner.join();
  // What was pushed went back to the queue, its attempt uncounted, for another to claim.
  claim(&submitter, 2, 2);
  let (req, rows) = answer_rows(&from_submitter);
  assert_eq!(req, 2);
  assert_eq!(
    rows
      .iter()
      .map(|r| (r.agent.as_str(), r.attempt))
      .collect::<Vec<_>>(),
    vec![("a", 1)]
  );
  close(submitter, &from_submitter);
}

#[test]
fn a_claim_whose_answer_its_executor_cannot_hear_goes_back_to_the_queue() {
  let Some(url) = server() else { return };
  let (submitter, from_submitter) = thread(&url, "unheard_claim");
  submit_keyed(&submitter, 1, 1);
  assert_eq!(answer(&from_submitter), (1, 0));
  let (mut runner, from_runner) = thread(&url, "unheard_claim");
  // JS is gone before the claim's answer: the thread stops with it, and what it claimed is
  // not left in its name until the lease runs out.
  drop(from_runner);
  claim(&runner, 1, 1);
  runner.join();
  claim(&submitter, 2, 1);
  let (req, rows) = answer_rows(&from_submitter);
  assert_eq!(req, 2);
  // Claimed once before, by the runner: handed back uncounted.
  assert_eq!(rows.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1]);
  close(submitter, &from_submitter);
}

#[test]
fn a_store_opened_for_an_executor_already_gone_is_left_at_once() {
  let Some(url) = server() else { return };
  let opts = Options {
    path: Default::default(),
    synchronous: Synchronous::Normal,
    lease_ms: 30_000.0,
    poll_ms: 3_600_000.0,
    ttl_ms: 86_400_000.0,
    max_kept: u64::MAX,
    follow_ms: super::FOLLOW_MS,
    postgres: Some(Ok(target(&url, "gone_at_open"))),
  };
  // Nobody hears the answer to the open: the thread stops there.
  let mut h = start(opts, Box::new(|_| false)).expect("start");
  h.join();
  let workers = crate::store::pg::tests::rows_in(&url, "gone_at_open", "bmad_workers");
  assert_eq!(
    workers, 0,
    "the worker's row is removed, not left for a rescuer to find stale"
  );
  crate::store::pg::tests::drop_schema(&url, "gone_at_open");
}

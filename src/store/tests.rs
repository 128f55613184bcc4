//! Tests of the durable store. Each test owns a fresh folder under the temp dir and sets the
//! clock through the `now` arguments; only the service runs on the real clock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::backend::Backend;
use super::backend::Interest;
use super::ops::WORKER_LOST;
use super::schema::{Synchronous, APP, MIGRATIONS, VERSION};
use super::service::{self, Command, Event, Options};
use super::*;
use crate::protocol::{
  BACKOFF_EXPONENTIAL, BACKOFF_FIXED, NOT_FOUND, STATUS_CANCELLED, STATUS_COMPLETED, STATUS_FAILED,
  STATUS_QUEUED, STATUS_RUNNING,
};
use crate::system::probes::now_ms;

const T0: f64 = 1_700_000_000_000.0;
const LEASE: f64 = 1_000.0;
const CANCEL_JSON: &str = r#"{"name":"CancelError","code":"ERR_CANCELLED","message":"cancelled"}"#;

/// A folder of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
  fn new(test: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("bmad-store-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("create the test folder");
    TempDir(p)
  }

  fn path(&self, name: &str) -> PathBuf {
    self.0.join(name)
  }

  fn db(&self) -> PathBuf {
    self.path("store.db")
  }
}

impl Drop for TempDir {
  fn drop(&mut self) {
    let _ = std::fs::remove_dir_all(&self.0);
  }
}

fn open(path: &Path) -> Store {
  Store::open(path, Synchronous::Normal, LEASE, T0).expect("open the store")
}

/// A worker that claims executions of any agent.
fn open_any(path: &Path) -> Store {
  let mut s = open(path);
  s.set_interest(Interest::new(true, &[]));
  s
}

fn open_err(path: &Path) -> StoreError {
  Store::open(path, Synchronous::Normal, LEASE, T0)
    .err()
    .expect("the open is refused")
}

/// A plain connection to look at rows the `Store` API does not show.
fn raw(path: &Path) -> Connection {
  let c = Connection::open(path).expect("raw open");
  c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
  c
}

fn exec(agent: &str) -> NewExecution {
  NewExecution {
    agent: agent.to_string(),
    task: format!("task of {agent}"),
    options: Some(r#"{"x":1}"#.to_string()),
    level: "normal".to_string(),
    priority: 0,
    mode: 0,
    key: None,
    max_attempts: 1,
    retry_delay_ms: 0.0,
    backoff: BACKOFF_FIXED,
    timeout_ms: 0.0,
    start_after: 0.0,
    seq: 0,
  }
}

fn with_attempts(agent: &str, max_attempts: u32) -> NewExecution {
  NewExecution {
    max_attempts,
    ..exec(agent)
  }
}

fn with_key(agent: &str, key: &str) -> NewExecution {
  NewExecution {
    key: Some(key.to_string()),
    ..exec(agent)
  }
}

fn insert(s: &mut Store, inserts: Vec<NewExecution>, now: f64) -> Vec<Inserted> {
  let batch = Batch {
    inserts,
    ..Default::default()
  };
  s.batch(&batch, now).expect("insert").inserted
}

fn insert_ids(s: &mut Store, inserts: Vec<NewExecution>, now: f64) -> Vec<i64> {
  insert(s, inserts, now).into_iter().map(|i| i.id).collect()
}

fn claim(s: &mut Store, limit: u32, now: f64) -> Vec<Row> {
  let batch = Batch {
    claim: limit,
    ..Default::default()
  };
  s.batch(&batch, now).expect("claim").claimed
}

fn claimed_ids(s: &mut Store, limit: u32, now: f64) -> Vec<i64> {
  claim(s, limit, now).into_iter().map(|r| r.id).collect()
}

/// The ids a claim of at most `limit` takes, leaving out the agents `exclude`.
fn claimed_excluding(s: &mut Store, limit: u32, exclude: &[&str], now: f64) -> Vec<i64> {
  let batch = Batch {
    claim: limit,
    exclude: exclude.iter().map(|a| a.to_string()).collect(),
    ..Default::default()
  };
  s.batch(&batch, now)
    .expect("claim")
    .claimed
    .iter()
    .map(|r| r.id)
    .collect()
}

/// Runs one finish and checks that `stale` counts it when it is stale.
fn finish(s: &mut Store, f: Finish, now: f64) -> Finished {
  let batch = Batch {
    finishes: vec![f],
    ..Default::default()
  };
  let r = s.batch(&batch, now).expect("finish");
  assert_eq!(r.finished.len(), 1);
  assert_eq!(r.stale, u32::from(r.finished[0] == Finished::Stale));
  r.finished[0]
}

fn completed(id: i64, attempt: u32) -> Finish {
  Finish {
    id,
    attempt,
    status: STATUS_COMPLETED,
    value: Some(format!(r#"{{"done":{id}}}"#)),
    retryable: false,
  }
}

fn failed(id: i64, attempt: u32, retryable: bool) -> Finish {
  Finish {
    id,
    attempt,
    status: STATUS_FAILED,
    value: Some(format!(r#"{{"message":"attempt {attempt} failed"}}"#)),
    retryable,
  }
}

fn release(s: &mut Store, id: i64, attempt: u32, now: f64) {
  let batch = Batch {
    releases: vec![Release { id, attempt }],
    ..Default::default()
  };
  s.batch(&batch, now).expect("release");
}

fn fetch(s: &mut Store, id: i64) -> Row {
  s.fetch(id).expect("fetch").expect("the row exists")
}

fn lease_of(conn: &Connection, id: i64) -> Option<f64> {
  conn
    .query_row(
      "SELECT lease_expires_at FROM bmad_executions WHERE id = ?1",
      [id],
      |r| r.get(0),
    )
    .expect("lease")
}

fn count(conn: &Connection, sql: &str) -> i64 {
  conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Bytes that are no SQLite file (xorshift, fixed seed).
fn noise(n: usize) -> Vec<u8> {
  let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
  (0..n)
    .map(|_| {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      (x >> 24) as u8
    })
    .collect()
}

// ----- open --------------------------------------------------------------------------------

#[test]
fn open_creates_the_parent_folders_and_a_wal_store() {
  let dir = TempDir::new("open_creates_folders");
  let path = dir.path("a/b/c/store.db");
  let mut s = open(&path);
  assert!(path.is_file());
  assert_eq!(s.integrity_check().unwrap(), "ok");
  let conn = raw(&path);
  let meta = |k: &str| -> String {
    conn
      .query_row("SELECT value FROM bmad_meta WHERE key = ?1", [k], |r| r.get(0))
      .unwrap()
  };
  assert_eq!(meta("app"), APP);
  assert_eq!(meta("version"), VERSION.to_string());
  let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
  assert_eq!(mode, "wal");
  let registered: i64 = conn
    .query_row(
      "SELECT count(*) FROM bmad_workers WHERE owner = ?1",
      [&s.me.owner],
      |r| r.get(0),
    )
    .unwrap();
  assert_eq!(registered, 1);
}

#[test]
fn open_refuses_a_file_that_is_not_a_database_untouched() {
  let dir = TempDir::new("open_refuses_noise");
  for (name, bytes) in [
    ("noise.db", noise(8192)),
    ("text.db", b"hello, not a database\n".to_vec()),
  ] {
    let path = dir.path(name);
    std::fs::write(&path, &bytes).unwrap();
    let err = open_err(&path);
    assert_eq!(err.code, "ERR_STORE", "{err}");
    assert!(err.message.contains(&path.display().to_string()), "{err}");
    assert_eq!(
      std::fs::read(&path).unwrap(),
      bytes,
      "the file's bytes are unchanged"
    );
    assert!(!dir.path(&format!("{name}-wal")).exists());
    assert!(!dir.path(&format!("{name}-journal")).exists());
  }
}

#[test]
fn open_refuses_a_database_of_something_else_untouched() {
  let dir = TempDir::new("open_refuses_foreign");
  let foreign = dir.path("foreign.db");
  let lookalike = dir.path("lookalike.db");
  {
    let c = Connection::open(&foreign).unwrap();
    c.execute_batch(
      "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep');",
    )
    .unwrap();
    let c = Connection::open(&lookalike).unwrap();
    c.execute_batch(
      "CREATE TABLE bmad_meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO bmad_meta VALUES ('app', 'other');",
    )
    .unwrap();
  }
  for path in [&foreign, &lookalike] {
    let before = std::fs::read(path).unwrap();
    assert_eq!(&before[18..20], &[1, 1], "a rollback-journal database");
    let err = open_err(path);
    assert_eq!(err.code, "ERR_STORE", "{err}");
    assert!(err.message.contains(&path.display().to_string()), "{err}");
    let after = std::fs::read(path).unwrap();
    assert_eq!(&after[18..20], &before[18..20], "no switch to WAL");
    assert_eq!(after, before);
    let conn = raw(path);
    assert_eq!(
      count(
        &conn,
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'bmad_e%'"
      ),
      0
    );
    assert_eq!(
      count(
        &conn,
        "SELECT count(*) FROM sqlite_master WHERE name = 'bmad_workers'"
      ),
      0
    );
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
  }
}

#[test]
fn open_refuses_a_newer_schema_version() {
  let dir = TempDir::new("open_refuses_version");
  let path = dir.db();
  drop(open(&path));
  raw(&path)
    .execute("UPDATE bmad_meta SET value = '99' WHERE key = 'version'", [])
    .unwrap();
  let err = open_err(&path);
  assert_eq!(err.code, "ERR_STORE_VERSION", "{err}");
  assert!(err.message.contains(&path.display().to_string()), "{err}");
  let v: String = raw(&path)
    .query_row("SELECT value FROM bmad_meta WHERE key = 'version'", [], |r| {
      r.get(0)
    })
    .unwrap();
  assert_eq!(v, "99");
}

#[test]
fn open_refuses_a_version_below_1_and_leaves_it() {
  let dir = TempDir::new("open_refuses_negative");
  let path = dir.db();
  let conn = raw(&path);
  conn
    .execute_batch(&format!(
      "CREATE TABLE bmad_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT; \
       INSERT INTO bmad_meta VALUES ('app', '{APP}'), ('version', '-1');"
    ))
    .unwrap();
  let err = open_err(&path);
  assert_eq!(err.code, "ERR_STORE", "{err}");
  assert!(err.message.contains("bmad_meta.version is -1"), "{err}");
  let v: String = conn
    .query_row("SELECT value FROM bmad_meta WHERE key = 'version'", [], |r| {
      r.get(0)
    })
    .unwrap();
  assert_eq!(v, "-1", "not stamped as current over missing tables");
}

#[test]
fn two_opens_of_one_path_share_the_store() {
  let dir = TempDir::new("two_opens");
  let path = dir.db();
  let mut a = open(&path);
  let mut b = open_any(&path);
  assert_ne!(a.me.owner, b.me.owner);
  let id = insert_ids(&mut a, vec![exec("x")], T0)[0];
  assert_eq!(fetch(&mut b, id).task, "task of x");
  assert_eq!(claimed_ids(&mut b, 4, T0), vec![id]);
  assert_eq!(fetch(&mut a, id).owner.as_deref(), Some(b.me.owner.as_str()));
  assert_eq!(count(&raw(&path), "SELECT count(*) FROM bmad_workers"), 2);
}

#[test]
fn concurrent_first_opens_all_succeed() {
  let dir = TempDir::new("concurrent_opens");
  for round in 0..3 {
    let path = dir.path(&format!("store-{round}.db"));
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
      .map(|_| {
        let (path, barrier) = (path.clone(), barrier.clone());
        std::thread::spawn(move || {
          barrier.wait();
          Store::open(&path, Synchronous::Normal, LEASE, T0).map(|s| s.me.owner.clone())
        })
      })
      .collect();
    for t in threads {
      if let Err(e) = t.join().unwrap() {
        panic!("round {round}: {e}");
      }
    }
    assert_eq!(count(&raw(&path), "SELECT count(*) FROM bmad_workers"), 4);
  }
}

#[test]
fn open_under_a_file_is_refused() {
  let dir = TempDir::new("open_under_file");
  let file = dir.path("plain");
  std::fs::write(&file, b"x").unwrap();
  let path = file.join("sub/store.db");
  let err = open_err(&path);
  assert_eq!(err.code, "ERR_STORE", "{err}");
  assert!(err.message.contains(&path.display().to_string()), "{err}");
  assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

// ----- insert, claim, finish ---------------------------------------------------------------

#[test]
fn a_worker_that_leaves_with_attempts_running_stays_known_until_they_end() {
  let dir = TempDir::new("leave_running");
  let path = dir.db();
  let mut s = open_any(&path);
  let id = insert_ids(&mut s, vec![exec("x")], T0)[0];
  assert_eq!(claimed_ids(&mut s, 1, T0 + 1.0), vec![id]);
  let workers = || count(&raw(&path), "SELECT count(*) FROM bmad_workers");
  // A close that gave up: its attempt is still running in its name. Its row stays, so a
  // rescuer on this host moves it once the process has exited.
  s.leave().expect("leave");
  assert_eq!(workers(), 1);
  assert_eq!(finish(&mut s, completed(id, 1), T0 + 2.0), Finished::Recorded);
  s.leave().expect("leave");
  assert_eq!(workers(), 0);
}

#[test]
fn housekeeping_gives_up_a_lock_soon_and_the_heartbeat_still_waits_its_half_lease() {
  let dir = TempDir::new("short_waits");
  let path = dir.db();
  let mut s = open_any(&path); // lease 1 s: statements wait up to 500 ms for a lock
  insert(&mut s, vec![exec("a")], T0);
  assert_eq!(claim(&mut s, 1, T0).len(), 1);
  let other = raw(&path);
  other
    .execute_batch("BEGIN IMMEDIATE")
    .expect("hold the write lock");
  let t0 = std::time::Instant::now();
  let err = s.rescue(T0).expect_err("busy");
  assert_eq!(err.code, super::BUSY);
  assert!(
    t0.elapsed() < Duration::from_millis(400),
    "rescue waited {:?}",
    t0.elapsed()
  );
  let t0 = std::time::Instant::now();
  assert_eq!(s.retention(1.0, 0, T0).expect_err("busy").code, super::BUSY);
  assert!(
    t0.elapsed() < Duration::from_millis(400),
    "retention waited {:?}",
    t0.elapsed()
  );
  // The heartbeat's wait is the normal one again: a lock held for 200 ms does not fail it.
  let release = std::thread::spawn(move || {
    std::thread::sleep(Duration::from_millis(200));
    other.execute_batch("COMMIT").expect("release");
  });
  s.heartbeat(T0).expect("renewed once the lock is free");
  release.join().expect("join");
  // The lease counts from the write, not from before the wait.
  let lease: f64 = raw(&path)
    .query_row("SELECT lease_expires_at FROM bmad_executions", [], |r| r.get(0))
    .expect("lease");
  assert!(lease >= T0 + 1_150.0, "lease to {}, asked at {T0}", lease - T0);
  // So does a claim's.
  insert(&mut s, vec![exec("a")], T0);
  let other = raw(&path);
  other
    .execute_batch("BEGIN IMMEDIATE")
    .expect("hold the write lock");
  let release = std::thread::spawn(move || {
    std::thread::sleep(Duration::from_millis(200));
    other.execute_batch("COMMIT").expect("release");
  });
  let claimed = claim(&mut s, 1, T0);
  release.join().expect("join");
  assert_eq!(claimed.len(), 1);
  let lease: f64 = raw(&path)
    .query_row(
      "SELECT lease_expires_at FROM bmad_executions WHERE id = ?1",
      [claimed[0].id],
      |r| r.get(0),
    )
    .expect("lease");
  assert!(
    lease >= T0 + 1_150.0,
    "claimed lease to {}, asked at {T0}",
    lease - T0
  );
}

#[test]
fn insert_claim_complete_records_the_end() {
  let dir = TempDir::new("claim_complete");
  let path = dir.db();
  let mut s = open_any(&path);
  let ins = insert(&mut s, vec![exec("x")], T0);
  assert_eq!(ins.len(), 1);
  assert!(!ins[0].existing);
  let id = ins[0].id;
  let r = fetch(&mut s, id);
  assert_eq!((r.status, r.attempt, r.max_attempts), (STATUS_QUEUED, 0, 1));
  assert_eq!((r.owner.clone(), r.created_at, r.scheduled_at), (None, T0, T0));
  assert_eq!(r.options.as_deref(), Some(r#"{"x":1}"#));

  let claimed = claim(&mut s, 8, T0 + 10.0);
  assert_eq!(claimed.len(), 1);
  let r = fetch(&mut s, id);
  assert_eq!(claimed[0], r);
  assert_eq!((r.status, r.attempt), (STATUS_RUNNING, 1));
  assert_eq!(r.owner.as_deref(), Some(s.me.owner.as_str()));
  assert_eq!(r.attempted_at, Some(T0 + 10.0));
  assert_eq!(r.finalized_at, None);
  let conn = raw(&path);
  assert_eq!(lease_of(&conn, id), Some(T0 + 10.0 + LEASE));

  let batch = Batch {
    progress: vec![
      Progress {
        id,
        attempt: 1,
        percent: 40.0,
      },
      Progress {
        id,
        attempt: 2,
        percent: 90.0,
      },
    ],
    ..Default::default()
  };
  s.batch(&batch, T0 + 15.0).unwrap();
  assert_eq!(
    fetch(&mut s, id).progress,
    40.0,
    "a progress of another attempt is ignored"
  );

  assert_eq!(finish(&mut s, completed(id, 1), T0 + 20.0), Finished::Recorded);
  let r = fetch(&mut s, id);
  assert_eq!((r.status, r.attempt, r.progress), (STATUS_COMPLETED, 1, 100.0));
  assert_eq!(r.result.as_deref(), Some(format!(r#"{{"done":{id}}}"#).as_str()));
  assert_eq!(r.finalized_at, Some(T0 + 20.0));
  assert_eq!(lease_of(&conn, id), None);
  assert!(claim(&mut s, 8, T0 + 30.0).is_empty());
}

#[test]
fn claim_takes_higher_priority_first_then_fifo_up_to_the_limit() {
  let dir = TempDir::new("claim_order");
  let mut s = open_any(&dir.db());
  let prio = [1, 5, 1, 5, 3, 1];
  let news = prio
    .iter()
    .map(|&p| NewExecution {
      priority: p,
      ..exec("x")
    })
    .collect();
  let ids = insert_ids(&mut s, news, T0);
  let first = claim(&mut s, 3, T0);
  assert_eq!(
    first.iter().map(|r| r.id).collect::<Vec<_>>(),
    vec![ids[1], ids[3], ids[4]]
  );
  assert_eq!(
    first.iter().map(|r| r.priority).collect::<Vec<_>>(),
    vec![5, 5, 3]
  );
  assert_eq!(claimed_ids(&mut s, 2, T0), vec![ids[0], ids[2]]);
  assert_eq!(claimed_ids(&mut s, 10, T0), vec![ids[5]]);
  assert!(claim(&mut s, 10, T0).is_empty());
}

#[test]
fn claim_takes_only_agents_of_interest() {
  let dir = TempDir::new("claim_interest");
  let path = dir.db();
  let mut s = open(&path);
  let ids = insert_ids(&mut s, vec![exec("a"), exec("b"), exec("a"), exec("c")], T0);
  assert!(claim(&mut s, 10, T0).is_empty(), "no interest claims nothing");
  s.set_interest(Interest::new(false, &["a".to_string()]));
  assert_eq!(claimed_ids(&mut s, 10, T0), vec![ids[0], ids[2]]);
  let mut other = open(&path);
  other.set_interest(Interest::new(true, &[]));
  assert_eq!(claimed_ids(&mut other, 10, T0), vec![ids[1], ids[3]]);
}

#[test]
fn claim_waits_for_the_scheduled_time() {
  let dir = TempDir::new("claim_scheduled");
  let mut s = open_any(&dir.db());
  let mut later = exec("x");
  later.start_after = T0 + 1_000.0;
  let id = insert_ids(&mut s, vec![later, exec("y")], T0)[0];
  let y = claimed_ids(&mut s, 10, T0);
  assert_eq!(y.len(), 1);
  assert_ne!(y[0], id, "the delayed one waits");
  assert_eq!(s.next_due(T0).unwrap(), Some(T0 + 1_000.0));
  assert!(claim(&mut s, 10, T0).is_empty());
  assert_eq!(s.next_due(T0).unwrap(), Some(T0 + 1_000.0));
  assert!(claim(&mut s, 10, T0 + 999.0).is_empty());
  assert_eq!(claimed_ids(&mut s, 10, T0 + 1_000.0), vec![id]);
  assert_eq!(s.next_due(T0).unwrap(), None);
}

#[test]
fn an_execution_due_when_created_is_claimable_whatever_the_claimer_clock_says() {
  let dir = TempDir::new("claim_clock_behind");
  let mut s = open_any(&dir.db());
  // Created by a process whose clock reads a second later (or before this one's was stepped back).
  let id = insert_ids(&mut s, vec![exec("x")], T0 + 1_000.0)[0];
  assert_eq!(claimed_ids(&mut s, 10, T0), vec![id]);
}

#[test]
fn a_rescued_or_released_execution_is_claimable_whatever_the_claimer_clock_says() {
  let dir = TempDir::new("requeued_clock_behind");
  let path = dir.db();
  let mut a = open_any(&path);
  let mut b = open_any(&path);
  let ids = insert_ids(&mut a, vec![with_attempts("x", 2), with_attempts("x", 2)], T0);
  assert_eq!(claimed_ids(&mut a, 2, T0 + 1.0), ids);
  // One handed back, the other rescued when its lease ran out, both by clocks an hour ahead
  // (or before the claimer's clock was stepped back): due at once all the same.
  release(&mut a, ids[0], 1, T0 + 3_600_000.0);
  a.heartbeat(T0 + 1.0).expect("heartbeat");
  let rescued = b.rescue(T0 + 3_600_000.0).expect("rescue");
  let moved: Vec<(i64, u32)> = rescued.iter().map(|r| (r.id, r.status)).collect();
  assert_eq!(moved, vec![(ids[1], STATUS_QUEUED)]);
  assert_eq!(claimed_ids(&mut b, 10, T0 + 2.0), ids);
}

// ----- compare-and-set ---------------------------------------------------------------------

#[test]
fn a_finish_that_no_longer_owns_its_execution_is_stale() {
  let dir = TempDir::new("cas_stale");
  let path = dir.db();
  let mut a = open_any(&path);
  let mut b = open_any(&path);
  let id = insert_ids(&mut a, vec![with_attempts("x", 3)], T0)[0];
  assert_eq!(claimed_ids(&mut a, 1, T0), vec![id]);
  let running = fetch(&mut a, id);

  assert_eq!(
    finish(&mut a, completed(id, 2), T0 + 1.0),
    Finished::Stale,
    "wrong attempt"
  );
  assert_eq!(
    finish(&mut a, failed(id, 2, false), T0 + 1.0),
    Finished::Stale,
    "wrong attempt"
  );
  assert_eq!(
    finish(&mut b, completed(id, 1), T0 + 1.0),
    Finished::Stale,
    "another owner"
  );
  assert_eq!(
    finish(&mut b, failed(id, 1, true), T0 + 1.0),
    Finished::Stale,
    "another owner"
  );
  assert_eq!(fetch(&mut a, id), running, "stale finishes change nothing");
  assert_eq!(a.ends_head().unwrap(), 0, "stale finishes log no end");

  let batch = Batch {
    finishes: vec![completed(id, 1), completed(id, 1)],
    ..Default::default()
  };
  let head = a.ends_head().unwrap();
  let r = a.batch(&batch, T0 + 2.0).unwrap();
  assert_eq!(r.finished, vec![Finished::Recorded, Finished::Stale]);
  assert_eq!(r.stale, 1);
  assert_eq!(a.ends_after(head).unwrap().len(), 1, "a stale finish logs no end");
  let done = fetch(&mut a, id);
  assert_eq!(done.status, STATUS_COMPLETED);
  assert_eq!(
    finish(&mut a, failed(id, 1, false), T0 + 3.0),
    Finished::Stale,
    "finishing twice"
  );
  assert_eq!(fetch(&mut a, id), done);
}

// ----- retry -------------------------------------------------------------------------------

#[test]
fn a_retryable_failure_requeues_until_the_last_attempt() {
  let dir = TempDir::new("retry");
  let path = dir.db();
  let mut s = open_any(&path);
  let news = NewExecution {
    retry_delay_ms: 500.0,
    backoff: BACKOFF_FIXED,
    ..with_attempts("x", 3)
  };
  let id = insert_ids(&mut s, vec![news], T0)[0];
  let conn = raw(&path);
  let mut now = T0;
  for attempt in 1..=2u32 {
    assert_eq!(claimed_ids(&mut s, 1, now), vec![id]);
    assert_eq!(fetch(&mut s, id).attempt, attempt);
    now += 10.0;
    assert_eq!(
      finish(&mut s, failed(id, attempt, true), now),
      Finished::Retry(500.0)
    );
    let r = fetch(&mut s, id);
    assert_eq!(
      (r.status, r.attempt, r.owner.clone()),
      (STATUS_QUEUED, attempt, None)
    );
    assert_eq!(r.scheduled_at, now + 500.0);
    assert_eq!(r.error, failed(id, attempt, true).value);
    assert_eq!(r.finalized_at, None);
    assert_eq!(lease_of(&conn, id), None);
    assert!(claim(&mut s, 1, now + 499.0).is_empty(), "not before its delay");
    now += 500.0;
  }
  assert_eq!(claimed_ids(&mut s, 1, now), vec![id]);
  assert_eq!(finish(&mut s, failed(id, 3, true), now + 1.0), Finished::Recorded);
  let r = fetch(&mut s, id);
  assert_eq!((r.status, r.attempt), (STATUS_FAILED, 3));
  assert_eq!(r.error, failed(id, 3, true).value);
  assert_eq!(r.finalized_at, Some(now + 1.0));
}

#[test]
fn a_failure_that_is_not_retryable_ends_at_once() {
  let dir = TempDir::new("no_retry");
  let mut s = open_any(&dir.db());
  let id = insert_ids(&mut s, vec![with_attempts("x", 3)], T0)[0];
  claim(&mut s, 1, T0);
  assert_eq!(finish(&mut s, failed(id, 1, false), T0 + 5.0), Finished::Recorded);
  let r = fetch(&mut s, id);
  assert_eq!(
    (r.status, r.attempt, r.finalized_at),
    (STATUS_FAILED, 1, Some(T0 + 5.0))
  );
  assert_eq!(r.error, failed(id, 1, false).value);
}

#[test]
fn an_exponential_retry_delay_doubles_with_equal_jitter() {
  let dir = TempDir::new("retry_exponential");
  let mut s = open_any(&dir.db());
  let news = NewExecution {
    retry_delay_ms: 1_000.0,
    backoff: BACKOFF_EXPONENTIAL,
    ..with_attempts("x", 3)
  };
  let id = insert_ids(&mut s, vec![news], T0)[0];
  let mut now = T0;
  for (attempt, full) in [(1u32, 1_000.0), (2, 2_000.0)] {
    claim(&mut s, 1, now);
    let Finished::Retry(delay) = finish(&mut s, failed(id, attempt, true), now) else {
      panic!("attempt {attempt} is retried");
    };
    assert!(delay >= full / 2.0 && delay <= full, "attempt {attempt}: {delay}");
    assert_eq!(fetch(&mut s, id).scheduled_at, now + delay);
    now += delay;
  }
}

// ----- two processes -----------------------------------------------------------------------

#[test]
fn two_stores_claiming_at_once_claim_each_execution_once() {
  let dir = TempDir::new("concurrent_claims");
  let path = dir.db();
  let mut feeder = open(&path);
  let news = (0..2000)
    .map(|i| exec(if i % 2 == 0 { "a" } else { "b" }))
    .collect();
  let ids = insert_ids(&mut feeder, news, T0);
  let barrier = Arc::new(Barrier::new(2));
  let workers: Vec<_> = (0..2)
    .map(|_| {
      let mut s = open_any(&path);
      let barrier = barrier.clone();
      std::thread::spawn(move || {
        barrier.wait();
        let mut mine = Vec::new();
        let mut finishes = Vec::new();
        loop {
          let batch = Batch {
            finishes: std::mem::take(&mut finishes),
            claim: 16,
            ..Default::default()
          };
          let r = s.batch(&batch, T0 + 1.0).expect("batch");
          assert_eq!(r.stale, 0);
          assert!(r.finished.iter().all(|f| *f == Finished::Recorded));
          if r.claimed.is_empty() {
            return mine;
          }
          assert!(r.claimed.len() <= 16);
          for row in r.claimed {
            assert_eq!(row.owner.as_deref(), Some(s.me.owner.as_str()));
            finishes.push(completed(row.id, row.attempt));
            mine.push(row.id);
          }
        }
      })
    })
    .collect();
  let claimed: Vec<Vec<i64>> = workers.into_iter().map(|t| t.join().unwrap()).collect();
  let all: Vec<i64> = claimed.iter().flatten().copied().collect();
  assert_eq!(all.len(), 2000, "no id is claimed twice");
  assert_eq!(
    all.iter().copied().collect::<HashSet<_>>(),
    ids.into_iter().collect::<HashSet<_>>()
  );
  let conn = raw(&path);
  assert_eq!(
    count(
      &conn,
      "SELECT count(*) FROM bmad_executions WHERE state = 2 AND attempt = 1"
    ),
    2000
  );
}

// ----- rescue ------------------------------------------------------------------------------

/// `notices` say once that the rescue of attempt 1 of `id` was refused, with the cause.
pub(in crate::store) fn assert_one_refused_rescue(notices: &[super::StoreError], id: i64) {
  assert_eq!(notices.len(), 1, "{notices:?}");
  assert_eq!(notices[0].code, super::REFUSED);
  let m = &notices[0].message;
  assert!(
    m.contains(&format!("execution {id} (attempt 1)")) && m.contains("refused by the test"),
    "{m}"
  );
}

#[test]
fn a_rescue_the_store_refuses_leaves_that_attempt_running_reported_once_and_moves_the_others() {
  // A trigger of the user's refuses any change to the first one, undoing as SQLite's
  // conflict resolutions do: the statement (ABORT), the whole transaction (ROLLBACK), or
  // nothing of what it already changed (FAIL, after the update).
  for (when, raise) in [("BEFORE", "ABORT"), ("BEFORE", "ROLLBACK"), ("AFTER", "FAIL")] {
    let dir = TempDir::new("rescue_refused");
    let path = dir.db();
    let mut a = open_any(&path);
    let mut b = open(&path);
    let ids = insert_ids(&mut a, vec![with_attempts("x", 1), with_attempts("y", 1)], T0);
    assert_eq!(claimed_ids(&mut a, 10, T0), ids);
    raw(&path)
      .execute_batch(&format!(
        "CREATE TRIGGER refuse {when} UPDATE ON bmad_executions WHEN OLD.id = {} \
         BEGIN SELECT RAISE({raise}, 'refused by the test'); END",
        ids[0]
      ))
      .expect("trigger");
    let ends_before = b.ends_after(0).expect("ends").len();
    let rescued = b.rescue(T0 + 2_000.0).expect("the others are rescued");
    assert_eq!(
      rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
      vec![(ids[1], STATUS_FAILED)],
      "{raise}"
    );
    assert_one_refused_rescue(&b.take_notices(), ids[0]);
    // Not tried again, not reported again: it stays running; the other's end is logged.
    assert!(b.rescue(T0 + 3_000.0).expect("rescue").is_empty(), "{raise}");
    assert!(b.take_notices().is_empty(), "{raise}");
    let state = |id: i64| -> i64 {
      raw(&path)
        .query_row("SELECT state FROM bmad_executions WHERE id = ?1", [id], |r| {
          r.get(0)
        })
        .expect("state")
    };
    assert_eq!((state(ids[0]), state(ids[1])), (1, 3), "{raise}");
    assert_eq!(b.ends_after(0).expect("ends").len(), ends_before + 1, "{raise}");
  }
}

#[test]
fn rescue_moves_executions_whose_lease_expired() {
  let dir = TempDir::new("rescue_lease");
  let path = dir.db();
  let mut a = open_any(&path);
  let mut b = open(&path);
  let ids = insert_ids(
    &mut a,
    vec![
      with_attempts("x", 2),
      with_attempts("y", 1),
      with_attempts("z", 2),
    ],
    T0,
  );
  assert_eq!(claimed_ids(&mut a, 10, T0), ids);
  assert_eq!(
    b.cancel(ids[2], CANCEL_JSON, T0 + 1.0).unwrap(),
    STATUS_RUNNING as i32
  );

  assert!(b.rescue(T0 + 999.0).unwrap().is_empty(), "the lease still holds");
  let mut rescued = b.rescue(T0 + 2_000.0).unwrap();
  rescued.sort_by_key(|r| r.id);
  let lost = |id: i64, agent: &str, status: u32| Rescued {
    id,
    agent: agent.to_string(),
    attempt: 1,
    owner: a.me.owner.clone(),
    status,
  };
  assert_eq!(
    rescued,
    vec![
      lost(ids[0], "x", STATUS_QUEUED),
      lost(ids[1], "y", STATUS_FAILED),
      lost(ids[2], "z", STATUS_CANCELLED)
    ]
  );
  let r = fetch(&mut a, ids[0]);
  assert_eq!((r.status, r.attempt, r.owner.clone()), (STATUS_QUEUED, 1, None));
  assert_eq!(
    (r.scheduled_at, r.finalized_at),
    (r.created_at, None),
    "due at once"
  );
  let r = fetch(&mut a, ids[1]);
  assert_eq!((r.status, r.attempt), (STATUS_FAILED, 1));
  assert!(r.error.as_deref().unwrap().contains("ERR_WORKER_LOST"));
  assert_eq!(r.error.as_deref(), Some(WORKER_LOST));
  assert_eq!(r.finalized_at, Some(T0 + 2_000.0));
  let r = fetch(&mut a, ids[2]);
  assert_eq!(
    (r.status, r.error.as_deref()),
    (STATUS_CANCELLED, Some(CANCEL_JSON))
  );
  assert_eq!(r.finalized_at, Some(T0 + 2_000.0));

  let before: Vec<Row> = ids.iter().map(|&id| fetch(&mut a, id)).collect();
  for &id in &ids {
    assert_eq!(finish(&mut a, completed(id, 1), T0 + 2_001.0), Finished::Stale);
  }
  assert_eq!(
    ids.iter().map(|&id| fetch(&mut a, id)).collect::<Vec<_>>(),
    before
  );
  assert!(b.rescue(T0 + 3_000.0).unwrap().is_empty(), "nothing twice");

  let r = claim(&mut a, 10, T0 + 2_002.0);
  assert_eq!(
    (r.len(), r[0].id, r[0].attempt),
    (1, ids[0], 2),
    "the next attempt"
  );
}

#[test]
fn a_heartbeat_renews_the_lease() {
  let dir = TempDir::new("rescue_heartbeat");
  let path = dir.db();
  let mut a = open_any(&path);
  let mut b = open(&path);
  let id = insert_ids(&mut a, vec![with_attempts("x", 2)], T0)[0];
  claim(&mut a, 1, T0);
  a.heartbeat(T0 + 900.0).unwrap();
  assert_eq!(lease_of(&raw(&path), id), Some(T0 + 900.0 + LEASE));
  assert!(b.rescue(T0 + 1_500.0).unwrap().is_empty());
  let r = fetch(&mut a, id);
  assert_eq!(
    (r.status, r.owner.as_deref()),
    (STATUS_RUNNING, Some(a.me.owner.as_str()))
  );
  let rescued = b.rescue(T0 + 2_000.0).unwrap();
  assert_eq!(rescued.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn a_heartbeat_registers_a_forgotten_worker_again() {
  let dir = TempDir::new("rescue_forgotten");
  let path = dir.db();
  // A long lease heartbeats every 20 s; a short one forgets workers silent for 10 s.
  let mut a = Store::open(&path, Synchronous::Normal, 60_000.0, T0).unwrap();
  let mut b = open(&path);
  a.heartbeat(T0 + 20_000.0).unwrap();
  b.heartbeat(T0 + 31_000.0).unwrap();
  b.rescue(T0 + 31_000.0).unwrap();
  a.heartbeat(T0 + 40_000.0).unwrap();
  let conn = raw(&path);
  let seen: Option<f64> = conn
    .query_row(
      "SELECT heartbeat_at FROM bmad_workers WHERE owner = ?1",
      [&a.me.owner],
      |r| r.get(0),
    )
    .ok();
  assert_eq!(
    seen,
    Some(T0 + 40_000.0),
    "a live worker stays known, so its death is seen at once"
  );
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time.
#[cfg(target_os = "linux")]
fn start_ticks(pid: u32) -> u64 {
  let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
  let rest = &stat[stat.rfind(')').expect("comm") + 1..];
  rest
    .split_whitespace()
    .nth(19)
    .expect("field 22")
    .parse()
    .expect("a number")
}

#[cfg(target_os = "linux")]
#[test]
fn rows_changed_by_hand_out_of_range_or_not_utf8_are_still_claimed_and_finished() {
  let dir = TempDir::new("hand_rows");
  let path = dir.db();
  let mut s = open_any(&path);
  let ids = insert_ids(&mut s, vec![exec("a"), exec("b"), exec("c")], T0);
  let conn = raw(&path);
  // STRICT INTEGER takes any 64-bit value and TEXT any bytes: out of u32 range, and invalid
  // UTF-8, each on its own row.
  conn
    .execute("UPDATE bmad_executions SET mode = -1 WHERE id = ?1", [ids[0]])
    .unwrap();
  conn
    .execute(
      "UPDATE bmad_executions SET max_attempts = 5000000000 WHERE id = ?1",
      [ids[1]],
    )
    .unwrap();
  conn
    .execute(
      "UPDATE bmad_executions SET task = CAST(x'ff41' AS TEXT) WHERE id = ?1",
      [ids[2]],
    )
    .unwrap();
  let rows = claim(&mut s, 10, T0);
  assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
  assert_eq!(rows[0].mode, 0, "a negative count reads as 0");
  assert_eq!(rows[1].max_attempts, u32::MAX, "too large reads as the largest");
  assert_eq!(rows[2].task, "\u{fffd}A", "invalid UTF-8 is replaced");
  for &id in &ids {
    assert_eq!(finish(&mut s, completed(id, 1), T0 + 1.0), Finished::Recorded);
  }
  let got = s.fetch(ids[2]).unwrap().expect("the row");
  assert_eq!((got.status, got.task.as_str()), (STATUS_COMPLETED, "\u{fffd}A"));
  // A new submission is not held up by them either.
  assert_eq!(insert_ids(&mut s, vec![exec("d")], T0 + 2.0).len(), 1);
}

#[test]
fn a_worker_row_with_a_pid_no_process_can_have_does_not_stop_rescue() {
  let dir = TempDir::new("hand_worker");
  let path = dir.db();
  let mut s = open(&path);
  let conn = raw(&path);
  conn
    .execute(
      "INSERT INTO bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES ('odd', ?1, 5000000000, 1, ?2, ?2)",
      params![s.me.host, T0],
    )
    .unwrap();
  let id = insert_ids(&mut s, vec![with_attempts("x", 2)], T0)[0];
  conn
    .execute(
      "UPDATE bmad_executions SET state = 1, attempt = 1, owner = 'gone', lease_expires_at = ?2, attempted_at = ?3 WHERE id = ?1",
      params![id, T0 + 100.0, T0],
    )
    .unwrap();
  let rescued = s.rescue(T0 + 200.0).expect("the odd worker row is passed over");
  assert_eq!(
    rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
    vec![(id, STATUS_QUEUED)]
  );
}

#[test]
fn rescue_moves_the_executions_of_a_dead_owner_at_once() {
  let dir = TempDir::new("rescue_dead");
  let path = dir.db();
  let mut s = open(&path);
  assert!(!s.me.host.is_empty(), "Linux tells hosts apart");
  let mut live = open_any(&path);

  let mut child = std::process::Command::new("sleep")
    .arg("5")
    .spawn()
    .expect("spawn sleep");
  let pid = child.id();
  let started = start_ticks(pid);
  child.kill().unwrap();
  child.wait().unwrap();
  let dead = format!("gone:{pid}:0");
  let conn = raw(&path);
  conn
    .execute(
      "INSERT INTO bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
      params![dead, s.me.host, pid, started as i64, T0],
    )
    .unwrap();
  let ids = insert_ids(&mut s, vec![with_attempts("x", 2), with_attempts("y", 1)], T0);
  for &id in &ids {
    conn
      .execute(
        "UPDATE bmad_executions SET state = 1, attempt = 1, owner = ?2, lease_expires_at = ?3, attempted_at = ?4 WHERE id = ?1",
        params![id, dead, T0 + 1e9, T0],
      )
      .unwrap();
  }
  let kept = insert_ids(&mut s, vec![exec("z")], T0)[0];
  assert_eq!(claimed_ids(&mut live, 1, T0), vec![kept]);

  let mut rescued = s.rescue(T0 + 10.0).unwrap();
  rescued.sort_by_key(|r| r.id);
  assert_eq!(
    rescued,
    vec![
      Rescued {
        id: ids[0],
        agent: "x".into(),
        attempt: 1,
        owner: dead.clone(),
        status: STATUS_QUEUED
      },
      Rescued {
        id: ids[1],
        agent: "y".into(),
        attempt: 1,
        owner: dead.clone(),
        status: STATUS_FAILED
      },
    ]
  );
  assert_eq!(fetch(&mut s, ids[0]).status, STATUS_QUEUED);
  assert_eq!(fetch(&mut s, ids[0]).owner, None);
  assert_eq!(fetch(&mut s, ids[1]).error.as_deref(), Some(WORKER_LOST));
  assert_eq!(
    fetch(&mut s, kept).status,
    STATUS_RUNNING,
    "a live owner keeps its executions"
  );
  let workers: i64 = conn
    .query_row(
      "SELECT count(*) FROM bmad_workers WHERE owner = ?1",
      [&dead],
      |r| r.get(0),
    )
    .unwrap();
  assert_eq!(workers, 0, "the dead worker is forgotten");
  assert_eq!(count(&conn, "SELECT count(*) FROM bmad_workers"), 2);
}

// ----- cancel ------------------------------------------------------------------------------

#[test]
fn cancel_ends_a_queued_execution_at_once() {
  let dir = TempDir::new("cancel_queued");
  let mut s = open_any(&dir.db());
  let id = insert_ids(&mut s, vec![exec("x")], T0)[0];
  assert_eq!(s.cancel(id, CANCEL_JSON, T0 + 5.0).unwrap(), STATUS_QUEUED as i32);
  let r = fetch(&mut s, id);
  assert_eq!(
    (r.status, r.error.as_deref()),
    (STATUS_CANCELLED, Some(CANCEL_JSON))
  );
  assert_eq!((r.attempt, r.finalized_at), (0, Some(T0 + 5.0)));
  assert!(claim(&mut s, 10, T0 + 6.0).is_empty());
  assert_eq!(
    s.cancel(id, CANCEL_JSON, T0 + 7.0).unwrap(),
    STATUS_CANCELLED as i32
  );
  assert_eq!(
    fetch(&mut s, id),
    r,
    "cancelling an ended execution changes nothing"
  );
  assert_eq!(s.cancel(id + 1000, CANCEL_JSON, T0).unwrap(), NOT_FOUND);
}

#[test]
fn cancel_of_a_running_execution_is_requested_of_its_owner() {
  let dir = TempDir::new("cancel_running");
  let path = dir.db();
  let mut owner = open_any(&path);
  let mut other = open(&path);
  let ids = insert_ids(&mut owner, vec![with_attempts("x", 3), exec("y")], T0);
  claim(&mut owner, 10, T0);
  assert!(owner.cancel_requests().unwrap().is_empty());

  assert_eq!(
    other.cancel(ids[0], CANCEL_JSON, T0 + 1.0).unwrap(),
    STATUS_RUNNING as i32
  );
  let r = fetch(&mut other, ids[0]);
  assert_eq!((r.status, r.cancel_requested), (STATUS_RUNNING, true));
  assert_eq!(r.error.as_deref(), Some(CANCEL_JSON));
  assert_eq!(
    owner.cancel_requests().unwrap(),
    vec![CancelRequest {
      id: ids[0],
      attempt: 1
    }]
  );
  assert!(other.cancel_requests().unwrap().is_empty());

  // The owner's failure (retryable even) records the cancel, with the cancel's error.
  assert_eq!(
    finish(&mut owner, failed(ids[0], 1, true), T0 + 2.0),
    Finished::Cancelled
  );
  let r = fetch(&mut owner, ids[0]);
  assert_eq!((r.status, r.finalized_at), (STATUS_CANCELLED, Some(T0 + 2.0)));
  assert_eq!(r.error.as_deref(), Some(CANCEL_JSON));
  assert!(owner.cancel_requests().unwrap().is_empty());
  assert_eq!(
    other.cancel(ids[0], CANCEL_JSON, T0 + 3.0).unwrap(),
    STATUS_CANCELLED as i32
  );

  assert_eq!(
    finish(&mut owner, completed(ids[1], 1), T0 + 4.0),
    Finished::Recorded
  );
  assert_eq!(
    other.cancel(ids[1], CANCEL_JSON, T0 + 5.0).unwrap(),
    STATUS_COMPLETED as i32
  );
  assert_eq!(fetch(&mut other, ids[1]).status, STATUS_COMPLETED);
}

#[test]
fn a_completion_after_a_cancel_was_asked_ends_the_execution_cancelled() {
  let dir = TempDir::new("cancel_then_complete");
  let path = dir.db();
  let mut owner = open_any(&path);
  let mut other = open(&path);
  let ids = insert_ids(&mut owner, vec![exec("x"), exec("y")], T0);
  claim(&mut owner, 10, T0);
  assert_eq!(
    other.cancel(ids[0], CANCEL_JSON, T0 + 1.0).unwrap(),
    STATUS_RUNNING as i32
  );
  // The owner's agent completed before it heard of the cancel: its value is discarded.
  let f = Finish {
    value: Some("\"late\"".to_string()),
    ..completed(ids[0], 1)
  };
  assert_eq!(finish(&mut owner, f, T0 + 2.0), Finished::Cancelled);
  let r = fetch(&mut other, ids[0]);
  assert_eq!(
    (r.status, r.result, r.finalized_at),
    (STATUS_CANCELLED, None, Some(T0 + 2.0))
  );
  assert_eq!(r.error.as_deref(), Some(CANCEL_JSON));
  assert!(owner.cancel_requests().unwrap().is_empty());
  // Its end is logged as any other: a watcher hears it.
  let f = Finish {
    value: Some("\"y\"".to_string()),
    ..completed(ids[1], 1)
  };
  assert_eq!(finish(&mut owner, f, T0 + 3.0), Finished::Recorded);
  assert_eq!(fetch(&mut other, ids[1]).result.as_deref(), Some("\"y\""));
}

// ----- release -----------------------------------------------------------------------------

#[test]
fn release_requeues_without_counting_the_attempt() {
  let dir = TempDir::new("release");
  let path = dir.db();
  let mut s = open_any(&path);
  let mut other = open(&path);
  let ids = insert_ids(&mut s, vec![with_attempts("x", 2), with_attempts("y", 2)], T0);
  claim(&mut s, 10, T0);

  let head = s.ends_head().unwrap();
  release(&mut s, ids[0], 1, T0 + 10.0);
  assert!(
    s.ends_after(head).unwrap().is_empty(),
    "a release back to the queue is no end"
  );
  let r = fetch(&mut s, ids[0]);
  assert_eq!((r.status, r.attempt, r.owner.clone()), (STATUS_QUEUED, 0, None));
  assert_eq!(
    (r.scheduled_at, r.finalized_at),
    (r.created_at, None),
    "due at once"
  );
  assert_eq!(lease_of(&raw(&path), ids[0]), None);
  let again = claim(&mut s, 10, T0 + 11.0);
  assert_eq!((again.len(), again[0].id, again[0].attempt), (1, ids[0], 1));

  other.cancel(ids[1], CANCEL_JSON, T0 + 12.0).unwrap();
  release(&mut s, ids[1], 1, T0 + 13.0);
  let r = fetch(&mut s, ids[1]);
  assert_eq!((r.status, r.attempt), (STATUS_CANCELLED, 1));
  assert_eq!(
    (r.finalized_at, r.error.as_deref()),
    (Some(T0 + 13.0), Some(CANCEL_JSON))
  );
  let ends: Vec<i64> = s.ends_after(head).unwrap().iter().map(|&(_, id)| id).collect();
  assert_eq!(
    ends,
    vec![ids[1]],
    "a release that ends the execution logs its end once"
  );

  // Another owner's release changes nothing.
  let before = fetch(&mut s, ids[0]);
  release(&mut other, ids[0], 1, T0 + 14.0);
  assert_eq!(fetch(&mut s, ids[0]), before);
  assert_eq!(s.ends_after(head).unwrap().len(), 1);
}

// ----- keys --------------------------------------------------------------------------------

#[test]
fn one_key_maps_to_its_live_execution() {
  let dir = TempDir::new("key_dedup");
  let mut s = open_any(&dir.db());
  let first = insert(
    &mut s,
    vec![with_key("x", "k"), with_key("x", "k"), with_key("x", "j")],
    T0,
  );
  assert!(!first[0].existing);
  assert_eq!(
    first[1],
    Inserted {
      id: first[0].id,
      existing: true
    }
  );
  assert!(!first[2].existing);
  assert_ne!(first[2].id, first[0].id);
  let id = first[0].id;
  assert_eq!(
    insert(&mut s, vec![with_key("y", "k")], T0 + 1.0),
    vec![Inserted { id, existing: true }]
  );
  assert_eq!(fetch(&mut s, id).agent, "x", "the earlier execution is untouched");

  let claimed = claimed_ids(&mut s, 1, T0 + 2.0);
  assert_eq!(claimed, vec![id]);
  assert_eq!(
    insert(&mut s, vec![with_key("x", "k")], T0 + 3.0),
    vec![Inserted { id, existing: true }]
  );

  finish(&mut s, completed(id, 1), T0 + 4.0);
  let next = insert(&mut s, vec![with_key("x", "k")], T0 + 5.0);
  assert!(!next[0].existing);
  assert!(next[0].id > first[2].id);
  assert_eq!(fetch(&mut s, next[0].id).key.as_deref(), Some("k"));
}

// ----- ends log ----------------------------------------------------------------------------

#[test]
fn the_ends_log_lists_each_end_once_in_commit_order() {
  let dir = TempDir::new("ends_log");
  let path = dir.db();
  let mut a = open_any(&path);
  let mut b = open(&path);
  assert_eq!(a.ends_head().unwrap(), 0);
  assert!(a.ends_after(0).unwrap().is_empty());
  let ids = insert_ids(
    &mut a,
    vec![
      exec("ok"),
      exec("fail"),
      exec("cancel"),
      with_attempts("retry", 2),
      exec("lost"),
    ],
    T0,
  );
  let head = a.ends_head().unwrap();
  claim(&mut a, 10, T0);
  assert_eq!(
    finish(&mut a, failed(ids[3], 1, true), T0 + 1.0),
    Finished::Retry(0.0)
  );
  assert!(a.ends_after(head).unwrap().is_empty(), "a retry is no end");

  assert_eq!(finish(&mut a, completed(ids[0], 1), T0 + 2.0), Finished::Recorded);
  assert_eq!(
    finish(&mut a, failed(ids[1], 1, false), T0 + 3.0),
    Finished::Recorded
  );
  let mid = b.ends_head().unwrap();
  b.cancel(ids[3], CANCEL_JSON, T0 + 4.0).unwrap(); // queued for its retry
  b.cancel(ids[2], CANCEL_JSON, T0 + 4.0).unwrap(); // running: only requested
  let rescued = b.rescue(T0 + 5_000.0).unwrap();
  assert_eq!(rescued.len(), 2);

  let ends = b.ends_after(head).unwrap();
  let order: Vec<i64> = ends.iter().map(|&(_, id)| id).collect();
  assert_eq!(order[..3], [ids[0], ids[1], ids[3]]);
  let mut rescued_ends = order[3..].to_vec();
  rescued_ends.sort_unstable();
  assert_eq!(rescued_ends, vec![ids[2], ids[4]]);
  assert!(ends.windows(2).all(|w| w[0].0 < w[1].0), "seq increases");
  assert_eq!(b.ends_head().unwrap(), ends.last().unwrap().0);
  assert_eq!(b.ends_after(mid).unwrap(), ends[2..].to_vec());
  assert!(b.ends_after(b.ends_head().unwrap()).unwrap().is_empty());

  let (rows, gone) = a.ended_among(&[ids[0], ids[4], 999_999]).unwrap();
  let mut ended: Vec<(i64, u32)> = rows.iter().map(|r| (r.id, r.status)).collect();
  ended.sort_unstable();
  assert_eq!(ended, vec![(ids[0], STATUS_COMPLETED), (ids[4], STATUS_FAILED)]);
  assert_eq!(gone, vec![999_999]);
  let fresh = insert_ids(&mut a, vec![exec("x")], T0 + 6_000.0)[0];
  let (rows, gone) = a.ended_among(&[fresh]).unwrap();
  assert!(
    rows.is_empty() && gone.is_empty(),
    "a queued execution has not ended"
  );
}

// ----- retention ---------------------------------------------------------------------------

#[test]
fn retention_deletes_old_ends_then_keeps_the_newest() {
  let dir = TempDir::new("retention");
  let path = dir.db();
  let mut s = open_any(&path);
  let live = insert_ids(&mut s, vec![exec("p"), exec("q")], T0 - 1e6);
  claimed_ids(&mut s, 1, T0 - 1e6);
  let ended = insert_ids(&mut s, vec![exec("e"); 5], T0);
  for (i, &id) in ended.iter().enumerate() {
    s.cancel(id, CANCEL_JSON, T0 + i as f64 * 10.0).unwrap();
  }
  // Older than the ttl: the first two (ended at T0 and T0 + 10).
  let now = T0 + 1_000.0;
  assert_eq!(s.retention(985.0, 100, now).unwrap(), 2);
  assert_eq!(s.fetch(ended[0]).unwrap(), None);
  assert_eq!(s.fetch(ended[1]).unwrap(), None);
  // Then the newest two of the three left.
  assert_eq!(s.retention(1e9, 2, now).unwrap(), 1);
  assert_eq!(s.fetch(ended[2]).unwrap(), None);
  assert!(s.fetch(ended[3]).unwrap().is_some());
  assert!(s.fetch(ended[4]).unwrap().is_some());
  assert_eq!(s.retention(1e9, 2, now).unwrap(), 0);
  assert_eq!(s.retention(0.0, 0, now + 1e9).unwrap(), 2);
  assert_eq!(fetch(&mut s, live[0]).status, STATUS_RUNNING);
  assert_eq!(fetch(&mut s, live[1]).status, STATUS_QUEUED);
  assert_eq!(count(&raw(&path), "SELECT count(*) FROM bmad_executions"), 2);
  let (_, gone) = s.ended_among(&ended).unwrap();
  assert_eq!(gone.len(), 5);
}

#[test]
fn retention_keeps_max_kept_when_ends_share_a_time() {
  let dir = TempDir::new("retention_ties");
  let mut s = open_any(&dir.db());
  let ids = insert_ids(&mut s, vec![exec("e"); 3], T0);
  claim(&mut s, 3, T0);
  let batch = Batch {
    finishes: ids.iter().map(|&id| completed(id, 1)).collect(),
    ..Default::default()
  };
  s.batch(&batch, T0 + 1.0).unwrap(); // one batch: one finalized_at
  assert_eq!(s.retention(1e9, 2, T0 + 2.0).unwrap(), 1, "all but the newest 2");
  let kept = ids.iter().filter(|&&id| s.fetch(id).unwrap().is_some()).count();
  assert_eq!(kept, 2);
}

// ----- service -----------------------------------------------------------------------------

fn service_options(path: PathBuf) -> Options {
  Options {
    path,
    synchronous: Synchronous::Normal,
    lease_ms: 30_000.0,
    poll_ms: 1.0,
    ttl_ms: 3_600_000.0,
    max_kept: 10_000,
    follow_ms: service::FOLLOW_MS,
    postgres: None,
  }
}

fn start(opts: Options) -> (service::Handle, mpsc::Receiver<Event>) {
  let (tx, rx) = mpsc::channel();
  let handle = service::start(opts, Box::new(move |ev| tx.send(ev).is_ok())).expect("start the thread");
  (handle, rx)
}

/// The first event `want` accepts within `within`, skipping others.
fn expect(rx: &mpsc::Receiver<Event>, within: Duration, what: &str, want: impl Fn(&Event) -> bool) -> Event {
  let deadline = Instant::now() + within;
  loop {
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
      Ok(ev) if want(&ev) => return ev,
      Ok(_) => {}
      Err(e) => panic!("no {what} within {within:?}: {e}"),
    }
  }
}

/// Drops events until none came for 30 ms.
fn drain(rx: &mpsc::Receiver<Event>) {
  while rx.recv_timeout(Duration::from_millis(30)).is_ok() {}
}

const SOON: Duration = Duration::from_millis(200);
const OPENING: Duration = Duration::from_secs(5);

#[test]
fn the_service_answers_and_wakes_on_other_connections() {
  let dir = TempDir::new("service");
  let path = dir.db();
  let (mut h, rx) = start(service_options(path.clone()));
  let Event::Opened { owner } = expect(&rx, OPENING, "Opened", |e| matches!(e, Event::Opened { .. })) else {
    unreachable!()
  };

  h.send(Command::Interest {
    any: false,
    agents: vec!["a".into()],
  });
  expect(&rx, SOON, "Changed after Interest", |e| {
    matches!(e, Event::Changed)
  });
  let batch = Batch {
    inserts: vec![exec("a"), exec("a")],
    claim: 1,
    ..Default::default()
  };
  assert!(h.send(Command::Batch { req: 1, batch }));
  let Event::Batch { req, result } = expect(&rx, OPENING, "Batch", |e| matches!(e, Event::Batch { .. }))
  else {
    unreachable!()
  };
  assert_eq!(req, 1);
  assert_eq!(result.inserted.len(), 2);
  assert!(result.inserted.iter().all(|i| !i.existing));
  assert_eq!(result.claimed.len(), 1);
  let mine = &result.claimed[0];
  assert_eq!(mine.id, result.inserted[0].id);
  assert_eq!((mine.status, mine.attempt), (STATUS_RUNNING, 1));
  assert_eq!(mine.owner.as_deref(), Some(owner.as_str()));

  let mut other = Store::open(&path, Synchronous::Normal, 30_000.0, now_ms()).unwrap();
  drain(&rx);

  // Work for an agent of interest, committed by another connection.
  insert(&mut other, vec![exec("a")], now_ms());
  expect(&rx, SOON, "Changed", |e| matches!(e, Event::Changed));

  // A cancel of the attempt the service runs.
  assert_eq!(
    other.cancel(mine.id, CANCEL_JSON, now_ms()).unwrap(),
    STATUS_RUNNING as i32
  );
  let want = CancelRequest {
    id: mine.id,
    attempt: 1,
  };
  expect(
    &rx,
    SOON,
    "CancelRequested",
    |e| matches!(e, Event::CancelRequested(l) if l.contains(&want)),
  );

  // The end of a watched execution that runs elsewhere.
  let watched = insert_ids(&mut other, vec![exec("b")], now_ms())[0];
  other.set_interest(Interest::new(false, &["b".into()]));
  assert_eq!(claimed_ids(&mut other, 10, now_ms()), vec![watched]);
  h.send(Command::Watch {
    ids: vec![watched],
    check: true,
  });
  h.send(Command::Fetch { req: 2, id: watched });
  let Event::Fetched {
    req: 2,
    row: Some(row),
  } = expect(&rx, SOON, "Fetched", |e| matches!(e, Event::Fetched { .. }))
  else {
    panic!("the watched row is fetched")
  };
  assert_eq!(row.status, STATUS_RUNNING);
  drain(&rx);
  assert_eq!(
    finish(&mut other, completed(watched, 1), now_ms()),
    Finished::Recorded
  );
  let Event::Ended { rows, gone, .. } = expect(&rx, SOON, "Ended", |e| matches!(e, Event::Ended { .. }))
  else {
    unreachable!()
  };
  assert!(gone.is_empty());
  assert_eq!(rows.len(), 1);
  assert_eq!((rows[0].id, rows[0].status), (watched, STATUS_COMPLETED));
  assert_eq!(rows[0].result, completed(watched, 1).value);

  h.send(Command::Watch {
    ids: vec![999_999],
    check: true,
  });
  let Event::Ended { rows, gone, .. } =
    expect(&rx, SOON, "Ended (gone)", |e| matches!(e, Event::Ended { .. }))
  else {
    unreachable!()
  };
  assert_eq!((rows.len(), gone), (0, vec![999_999]));

  h.send(Command::Check { req: 3 });
  let Event::Checked { req: 3, result } =
    expect(&rx, SOON, "Checked", |e| matches!(e, Event::Checked { .. }))
  else {
    panic!("Checked answers its request")
  };
  assert_eq!(result, "ok");
  h.send(Command::Close { req: 4 });
  expect(&rx, SOON, "Closed", |e| matches!(e, Event::Closed { req: 4 }));
  h.join();
  let conn = raw(&path);
  let left: i64 = conn
    .query_row(
      "SELECT count(*) FROM bmad_workers WHERE owner = ?1",
      [&owner],
      |r| r.get(0),
    )
    .unwrap();
  // Closed with its attempt (`mine`) still running in its name: the worker row stays for a
  // rescuer on this host (see a_worker_that_leaves_with_attempts_running_stays_known_until_they_end).
  assert_eq!(left, 1, "the closed service's attempt still runs: its row stays");
}

#[test]
fn the_service_fails_every_request_when_the_open_fails() {
  let dir = TempDir::new("service_failed");
  let file = dir.path("plain");
  std::fs::write(&file, b"x").unwrap();
  let (mut h, rx) = start(service_options(file.join("store.db")));
  match rx.recv_timeout(OPENING) {
    Ok(Event::Failed { req: 0, error }) => assert_eq!(error.code, "ERR_STORE"),
    other => panic!("expected Failed {{ req: 0 }}, got {other:?}"),
  }
  h.send(Command::Interest {
    any: true,
    agents: vec![],
  });
  h.send(Command::Batch {
    req: 5,
    batch: Batch {
      claim: 1,
      ..Default::default()
    },
  });
  h.send(Command::Fetch { req: 6, id: 1 });
  h.send(Command::Cancel {
    req: 7,
    id: 1,
    error: CANCEL_JSON.into(),
  });
  h.send(Command::Check { req: 8 });
  for want in 5..=8 {
    match rx.recv_timeout(SOON) {
      Ok(Event::Failed { req, error }) => assert_eq!((req, error.code), (want, "ERR_STORE")),
      other => panic!("expected Failed {{ req: {want} }}, got {other:?}"),
    }
  }
  h.send(Command::Close { req: 9 });
  assert!(matches!(rx.recv_timeout(SOON), Ok(Event::Closed { req: 9 })));
  h.join();
}

#[test]
fn a_claim_leaves_the_agents_it_excludes_queued() {
  let dir = TempDir::new("claim_excludes");
  let mut s = open_any(&dir.db());
  let ids = insert_ids(
    &mut s,
    vec![
      exec("busy"),
      exec("busy"),
      exec("free"),
      exec("busy"),
      exec("free"),
    ],
    T0,
  );
  assert_eq!(
    claimed_excluding(&mut s, 10, &["busy"], T0 + 1.0),
    vec![ids[2], ids[4]],
    "only the agent not excluded"
  );
  assert_eq!(claimed_ids(&mut s, 10, T0 + 2.0), vec![ids[0], ids[1], ids[3]]);
}

#[test]
fn the_claim_keeps_its_plan_whatever_values_it_is_given() {
  let dir = TempDir::new("claim_plan");
  let mut s = open_any(&dir.db());
  let ids = insert_ids(&mut s, (0..5).map(|_| exec("a")).collect(), T0);
  let mut claimed = Vec::new();
  for i in 0..5 {
    // A new time, a new interest and a new exclusion list at every call.
    let agents = vec![format!("other{i}")];
    s.set_interest(Interest::new(i % 2 == 0, &agents));
    let batch = Batch {
      claim: 1,
      exclude: vec![format!("busy{i}")],
      ..Default::default()
    };
    claimed.extend(
      s.batch(&batch, T0 + 1.0 + i as f64)
        .expect("claim")
        .claimed
        .iter()
        .map(|r| r.id),
    );
  }
  assert_eq!(
    claimed,
    vec![ids[0], ids[1], ids[2]],
    "claimed only while any agent was of interest"
  );
  // SQLite re-prepares a statement planned from a bound value (the claim's LIMIT) once its
  // bindings are cleared, which rusqlite does at every return to its cache.
  assert_eq!(s.claim_reprepares().expect("status"), 0);
}

/// The schema's objects (type, name, SQL with its spacing normalised), sorted.
fn schema_of(conn: &Connection) -> Vec<(String, String, String)> {
  let mut st = conn
    .prepare(
      "SELECT type, name, coalesce(sql, '') FROM sqlite_schema WHERE name NOT LIKE 'sqlite_autoindex%'",
    )
    .unwrap();
  let rows = st
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))
    .unwrap();
  let mut out: Vec<(String, String, String)> = rows
    .map(|r| {
      let (t, n, sql) = r.unwrap();
      (t, n, sql.split_whitespace().collect::<Vec<_>>().join(" "))
    })
    .collect();
  out.sort();
  out
}

#[test]
fn a_version_1_store_is_migrated_with_its_rows_ids_and_counter() {
  let dir = TempDir::new("migrate_v1");
  let path = dir.db();
  {
    // A store as version 1 left it: three executions, the newest deleted by retention.
    let c = raw(&path);
    c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    c.execute_batch(MIGRATIONS[0]).unwrap();
    c.execute_batch(&format!(
      "INSERT INTO bmad_meta VALUES ('app', '{APP}'), ('version', '1');"
    ))
    .unwrap();
    for (i, state) in [(1, 0), (2, 2), (3, 2)] {
      c.execute(
        "INSERT INTO bmad_executions (id, agent, task, level, priority, mode, state, max_attempts, retry_delay_ms, \
         backoff, timeout_ms, created_at, scheduled_at, result) VALUES (?1, 'a', 'task', 'normal', 2, 0, ?2, 1, 0, 0, 0, ?3, ?3, 'r')",
        params![i, state, T0],
      )
      .unwrap();
    }
    c.execute("DELETE FROM bmad_executions WHERE id = 3", []).unwrap();
  }
  let mut s = open_any(&path);
  assert_eq!(VERSION, 2);
  let conn = raw(&path);
  let version: String = conn
    .query_row("SELECT value FROM bmad_meta WHERE key = 'version'", [], |r| {
      r.get(0)
    })
    .unwrap();
  assert_eq!(version, "2");
  assert_eq!(fetch(&mut s, 2).status, STATUS_COMPLETED);
  assert_eq!(fetch(&mut s, 2).result.as_deref(), Some("r"));
  // The counter goes on past the deleted id: ids are never reused.
  assert_eq!(insert_ids(&mut s, vec![exec("a")], T0), vec![4]);
  assert_eq!(claimed_ids(&mut s, 10, T0 + 1.0), vec![1, 4]);
  let bad = conn.execute("UPDATE bmad_executions SET state = 5 WHERE id = 1", []);
  assert!(bad.is_err(), "the state check holds: {bad:?}");
  // Every table and index of version 1 is there, and the trigger is gone.
  let objects: Vec<(String, String)> = schema_of(&conn).into_iter().map(|(t, n, _)| (t, n)).collect();
  let expected = [
    ("index", "bmad_executions_agent_queue"),
    ("index", "bmad_executions_due"),
    ("index", "bmad_executions_finalized"),
    ("index", "bmad_executions_key"),
    ("index", "bmad_executions_running"),
    ("table", "bmad_ends"),
    ("table", "bmad_executions"),
    ("table", "bmad_meta"),
    ("table", "bmad_workers"),
    ("table", "sqlite_sequence"),
  ];
  let expected: Vec<(String, String)> = expected
    .iter()
    .map(|(t, n)| (t.to_string(), n.to_string()))
    .collect();
  assert_eq!(objects, expected);
  let table_sql = &schema_of(&conn)
    .into_iter()
    .find(|(_, n, _)| n == "bmad_executions")
    .unwrap()
    .2;
  assert!(
    table_sql.contains("STRICT") && table_sql.contains("AUTOINCREMENT"),
    "{table_sql}"
  );
  assert_eq!(finish(&mut s, completed(4, 1), T0 + 2.0), Finished::Recorded);
  assert_eq!(s.ends_after(0).unwrap().len(), 1, "the end is logged");
  assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn an_insert_and_a_completion_build_no_temporary_b_tree() {
  let dir = TempDir::new("no_ephemeral");
  let _s = open(&dir.db());
  let conn = raw(&dir.db());
  let opcodes = |sql: &str| -> Vec<String> {
    let mut st = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; st.parameter_count()];
    let ops = st
      .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(1))
      .unwrap();
    ops.collect::<rusqlite::Result<_>>().unwrap()
  };
  for sql in [super::ops::INSERT, super::ops::COMPLETE] {
    let ops = opcodes(sql);
    assert!(ops.iter().any(|o| o == "Insert"), "{ops:?}");
    assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{sql}: {ops:?}");
  }
}

#[test]
fn a_claim_reads_no_queued_row_of_an_agent_it_leaves_out() {
  let dir = TempDir::new("claim_left_out");
  let mut s = open_any(&dir.db());
  // Ahead in priority: a backlog of an agent this process holds back (its limit is reached)
  // and one of an agent only another process runs.
  let mut held = exec("held");
  held.priority = 5;
  let mut theirs = exec("theirs");
  theirs.priority = 5;
  insert(&mut s, (0..20_000).map(|_| held.clone()).collect(), T0);
  insert(&mut s, (0..20_000).map(|_| theirs.clone()).collect(), T0);
  let mine = insert_ids(&mut s, (0..3).map(|_| exec("mine")).collect(), T0);
  s.set_interest(Interest::new(false, &["held".to_string(), "mine".to_string()]));
  let before = s.claim_steps().expect("steps");
  assert_eq!(claimed_excluding(&mut s, 10, &["held"], T0 + 1.0), mine);
  assert_eq!(s.next_due(T0 + 1.0).unwrap(), None);
  let steps = s.claim_steps().expect("steps") - before;
  // Stepping over the 40k rows left out would take hundreds of thousands (the claim and the
  // look for the next due time that follows a claim short of its limit).
  assert!(steps < 2_000, "the claim ran {steps} SQLite VM steps");
  // The same with any agent of interest: each agent's queue is found by a seek.
  s.set_interest(Interest::new(true, &[]));
  let more = insert_ids(&mut s, (0..2).map(|_| exec("mine")).collect(), T0 + 2.0);
  let before = s.claim_steps().expect("steps");
  assert_eq!(claimed_excluding(&mut s, 10, &["held", "theirs"], T0 + 3.0), more);
  assert_eq!(s.next_due(T0 + 3.0).unwrap(), None);
  let steps = s.claim_steps().expect("steps") - before;
  assert!(steps < 2_000, "the claim ran {steps} SQLite VM steps");
}

#[test]
fn a_claim_merges_the_agents_queues_by_priority_then_id() {
  let dir = TempDir::new("claim_merge");
  let mut s = open_any(&dir.db());
  // Interleaved ids, priorities mixed across three agents, ties between agents.
  let mut want: Vec<(i64, i64)> = Vec::new();
  for i in 0..60i64 {
    let mut e = exec(["a", "b", "c"][(i % 3) as usize]);
    e.priority = (i * 7) % 4;
    let id = insert_ids(&mut s, vec![e], T0)[0];
    want.push((-(i * 7 % 4), id));
  }
  want.sort();
  let ids = |v: &[(i64, i64)]| v.iter().map(|&(_, id)| id).collect::<Vec<_>>();
  assert_eq!(claimed_ids(&mut s, 10, T0), ids(&want[..10]), "any agent");
  s.set_interest(Interest::new(
    false,
    &["c".to_string(), "a".to_string(), "b".to_string()],
  ));
  assert_eq!(
    claimed_ids(&mut s, 25, T0),
    ids(&want[10..35]),
    "a short list of agents"
  );
  // A long list, most of its agents with nothing queued, and one queued agent not in it.
  insert(&mut s, vec![exec("unlisted")], T0);
  let mut long: Vec<String> = (0..10).map(|i| format!("idle{i}")).collect();
  long.extend(["b", "a", "c"].map(String::from));
  s.set_interest(Interest::new(false, &long));
  assert_eq!(
    claimed_ids(&mut s, 100, T0),
    ids(&want[35..]),
    "a long list of agents"
  );
}

#[test]
fn a_claim_among_many_agents_reads_little_more_than_it_takes() {
  let dir = TempDir::new("claim_many_agents");
  let mut s = open_any(&dir.db());
  for a in 0..200 {
    let mut e = exec(&format!("agent{a}"));
    e.priority = a % 5;
    insert(&mut s, (0..100).map(|_| e.clone()).collect(), T0);
  }
  let before = s.claim_steps().expect("steps");
  assert_eq!(claim(&mut s, 64, T0).len(), 64);
  let steps = s.claim_steps().expect("steps") - before;
  // Reading every agent's best 64 would take hundreds of thousands.
  assert!(steps < 40_000, "the claim ran {steps} SQLite VM steps");
}

#[test]
fn a_write_sqlite_refuses_is_told_apart_from_a_failing_store() {
  let dir = TempDir::new("refused_write");
  let mut s = open_any(&dir.db());
  let ids = insert_ids(&mut s, vec![exec("a"), exec("b")], T0);
  assert_eq!(claimed_ids(&mut s, 2, T0 + 1.0), ids);
  // A trigger refuses one value, as a constraint would.
  raw(&dir.db())
    .execute_batch(
      "CREATE TRIGGER refuse BEFORE UPDATE OF state ON bmad_executions \
       WHEN NEW.result LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .expect("trigger");
  let poison = Finish {
    value: Some(r#""poison""#.to_string()),
    ..completed(ids[0], 1)
  };
  let batch = Batch {
    finishes: vec![poison, completed(ids[1], 1)],
    ..Default::default()
  };
  let err = s.batch(&batch, T0 + 2.0).expect_err("refused");
  assert_eq!(err.code, REFUSED, "{err}");
  assert!(err.message.contains("refused by the test"), "{err}");
  // Nothing of the batch was written; the other end alone goes through.
  assert_eq!(finish(&mut s, completed(ids[1], 1), T0 + 3.0), Finished::Recorded);
  assert_eq!(fetch(&mut s, ids[0]).status, STATUS_RUNNING);
  // A table gone (a store broken by hand) is not a refused write.
  raw(&dir.db())
    .execute_batch("DROP TRIGGER refuse; ALTER TABLE bmad_ends RENAME TO gone;")
    .expect("rename");
  let err = s.batch(
    &Batch {
      finishes: vec![completed(ids[0], 1)],
      ..Default::default()
    },
    T0 + 4.0,
  );
  assert_eq!(err.expect_err("no ends log").code, "ERR_STORE");
}

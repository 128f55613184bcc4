//! The store's reads and writes on PostgreSQL: the same operations, states and
//! compare-and-sets as the SQLite driver (`store::ops`), with the decisions of
//! `store::decide`, written for a server a network away: each kind of change in a batch is
//! one statement over arrays (`unnest`), and a batch is one transaction. Claims take rows
//! with `FOR UPDATE SKIP LOCKED`, so executors on several hosts never wait for each other's
//! claims nor take the same row.

use super::batch::{self, BatchSql};
use super::notify::{self, ended};
use super::pool::Pool;
use super::push::{self, PushSql};
use super::rows::{self, fetch_sql, int, row, PgResult};
use super::sweep::Sweeper;
use super::{Db, PgConnection, PgTarget};
use crate::protocol::{NOT_FOUND, STATUS_CANCELLED, STATUS_QUEUED, STATUS_RUNNING};
use crate::scheduler::retry::Jitter;
use crate::store::backend::Interest;
use crate::store::decide;
use crate::store::host::{self, Identity};
use crate::store::ops::{COLUMNS, WORKER_LOST};
use crate::store::{
  Batch, BatchResult, CancelRequest, Refusals, Rescued, Row, StoreError, StoreResult, BUSY, DISCONNECTED,
};
use crate::system::probes::now_ms;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// A difference between this host's clock and the server's below this is left alone
/// (hosts kept in time by NTP); beyond it, times written and compared are the server's.
const SKEW_IGNORED_MS: f64 = 50.0;

/// How long a claim's finding that no agent of interest has a global limit holds (see
/// `PgStore::unlimited_at`).
pub(super) const UNLIMITED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// One worker's connection to a PostgreSQL store.
pub struct PgStore {
  conn: PgConnection,
  /// The quoted schema, in front of every table.
  s: String,
  /// The schema's NOTIFY channel.
  channel: String,
  /// The prefix of the advisory-lock keys of this schema's global limits.
  schema_key: String,
  batch_sql: BatchSql,
  push_sql: PushSql,
  /// The token of this worker's next published parked claim (see `push`): unique across
  /// workers, as a push names its claim by token alone.
  next_token: i64,
  pub me: Identity,
  pub lease_ms: f64,
  jitter: Jitter,
  interest: Interest,
  /// The server's clock less this host's (0 when within `SKEW_IGNORED_MS`): leases written
  /// here and compared on other hosts use one clock.
  offset_ms: f64,
  /// Whether the server's clock was read once (the first reading is kept however slow).
  clock_read: bool,
  /// The look for the next due time: for any agent, and for a list (`next_due_sql`).
  next_due_any: String,
  next_due_listed: String,
  /// The read of one execution (`fetch_sql`), and the hand-back of unknown attempts
  /// (`release_unknown`): built once.
  fetch: String,
  release_unknown: String,
  /// The executions this worker runs whose agent has a global limit (see `batch::Ctx`).
  limited: HashSet<(i64, u32)>,
  /// Retention in the background, on a connection of the pool.
  sweeper: Sweeper,
  /// Attempts whose rescue the server refused.
  refusals: Refusals,
  /// The number of this executor's next try of a batch (see `batch::Ctx`).
  next_try: i64,
  /// When a claim under the lock last found no agent of interest with a global limit (see
  /// `batch::Ctx::unlimited`); a limit set by another process is seen within `UNLIMITED_FOR`.
  unlimited_at: Option<std::time::Instant>,
  /// Tries whose answers were lost, not settled yet, with their numbered submissions.
  lost: Vec<(i64, Vec<u64>)>,
  /// Submissions of settled tries not answered yet: stored with this id, or not stored.
  settled: HashMap<u64, Option<i64>>,
  /// The records of tries answered since the last removal.
  answered: Vec<i64>,
  /// Test: the next batch's answer is lost after its commit.
  #[cfg(test)]
  pub(super) lose_next_answer: bool,
}

impl PgStore {
  /// Connects to the store at `target` (migrating its schema) and registers this worker;
  /// `pool` lends the connections for the work beside its statements.
  pub fn open(target: PgTarget, pool: Pool, lease_ms: f64, now: f64) -> StoreResult<PgStore> {
    let conn = PgConnection::open(target)?;
    let rt = crate::system::runtime::handle().map_err(StoreError::store)?;
    let sweeper = Sweeper::new(rt, pool);
    let s = conn.target.quoted_schema();
    let (next_due_any, next_due_listed) = (next_due_sql(&s, true), next_due_sql(&s, false));
    let fetch = fetch_sql(&s);
    // What it ended (cancelled) is told as a batch's release tells it, and `w` when it moved
    // anything (`$6`: the channel): claimable again, or a slot of a global limit freed.
    let release_unknown = format!(
      "WITH back AS ( \
         UPDATE {s}.bmad_executions e SET {release} \
         WHERE e.owner = $1 AND e.state = 1 \
           AND NOT EXISTS (SELECT 1 FROM unnest($2::int8[], $3::int4[]) k(id, attempt) WHERE k.id = e.id AND k.attempt = e.attempt) \
           AND NOT EXISTS (SELECT 1 FROM {s}.bmad_parked p WHERE p.owner = $1 AND p.token = $5 AND e.id = ANY(p.pushed)) \
         RETURNING e.id, e.state), \
       told AS MATERIALIZED ({told}), \
       work AS MATERIALIZED (SELECT pg_notify($6, 'w') WHERE EXISTS (SELECT 1 FROM back)) \
       SELECT id FROM back WHERE (SELECT count(*) FROM told) + (SELECT count(*) FROM work) >= 0",
      release = batch::RELEASE,
      told = notify::ends_told("SELECT id FROM back WHERE state = 4", "$6")
    );
    let table = format!("{s}.bmad_executions");
    let client = conn.client();
    // Quoted as a literal by the server (whatever its string settings).
    let sequence: Option<String> = conn.wait("cannot read", async {
      client
        .query_one(
          "SELECT quote_literal(pg_get_serial_sequence($1, 'id'))",
          &[&table],
        )
        .await?
        .try_get(0)
    })?;
    let sequence = sequence.ok_or_else(|| {
      StoreError::store(format!(
        "store {}: {table}.id draws from no sequence",
        conn.target.shown
      ))
    })?;
    let channel = notify::channel(&conn.target.schema);
    let mut store = PgStore {
      schema_key: format!("bmad/{s}/"),
      batch_sql: BatchSql::new(&s, &sequence),
      push_sql: PushSql::new(&s),
      next_token: push::first_token(),
      conn,
      s,
      channel,
      me: Identity::new(),
      lease_ms,
      jitter: Jitter::seeded(),
      interest: Interest::new(false, &[]),
      offset_ms: 0.0,
      clock_read: false,
      next_due_any,
      next_due_listed,
      fetch,
      release_unknown,
      limited: Default::default(),
      sweeper,
      refusals: Refusals::default(),
      next_try: 1,
      unlimited_at: None,
      lost: Vec::new(),
      settled: HashMap::new(),
      answered: Vec::new(),
      #[cfg(test)]
      lose_next_answer: false,
    };
    let sql = format!(
      "INSERT INTO {}.bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5)",
      store.s
    );
    store.measure_offset()?;
    let now = store.server_time(now);
    let me = &store.me;
    let (pid, start) = (i64::from(me.pid), me.proc_start as i64);
    store.wait(
      "cannot register in",
      store
        .db()
        .execute(&sql, &[&me.owner, &me.host, &pid, &start, &now]),
    )?;
    Ok(store)
  }

  /// `open` with a pool of its own.
  #[cfg(test)]
  pub fn open_own(target: PgTarget, lease_ms: f64, now: f64) -> StoreResult<PgStore> {
    let pool = Pool::new(target.clone());
    PgStore::open(target, pool, lease_ms, now)
  }

  fn db(&self) -> Db<'_> {
    self.conn.db()
  }

  /// The server process of this store's connection (see `notify::listen`).
  pub fn pid(&self) -> std::sync::Arc<std::sync::atomic::AtomicI32> {
    self.conn.pid()
  }

  pub fn target(&self) -> &PgTarget {
    &self.conn.target
  }

  /// See `PgConnection::broken`.
  pub fn broken(&self) -> Option<StoreError> {
    self.conn.broken()
  }

  /// Notes a connection the server closed since the last look.
  pub fn note_link(&mut self) {
    self.conn.note_link();
  }

  /// Losses (false) and recoveries (true) of the connection since the last call.
  pub fn link_events(&mut self) -> Vec<bool> {
    self.conn.note_link();
    self.conn.take_link_events()
  }

  /// Tries to replace a connection the server closed (nothing to do when it is up).
  pub fn reconnect(&mut self) -> StoreResult<()> {
    self.conn.ensure()
  }

  /// Sets (or, with `None`, removes) the most executions of `agent` running at once across
  /// every executor on the store.
  pub fn set_global_limit(&mut self, agent: &str, limit: Option<u32>) -> StoreResult<()> {
    self.unlimited_at = None;
    self.conn.ensure()?;
    let s = &self.s;
    let channel = &self.channel;
    let db = self.db();
    let client = &db;
    let limit = limit.map(int);
    self.wait("cannot set a limit in", async move {
      client.batch_execute("BEGIN").await?;
      let r = async {
        match limit {
          Some(n) => {
            client
              .execute(
                &format!(
                  "INSERT INTO {s}.bmad_limits (agent, global_concurrency) VALUES ($1, $2) \
                   ON CONFLICT (agent) DO UPDATE SET global_concurrency = excluded.global_concurrency"
                ),
                &[&agent, &n],
              )
              .await?
          }
          None => {
            client
              .execute(
                &format!("DELETE FROM {s}.bmad_limits WHERE agent = $1"),
                &[&agent],
              )
              .await?
          }
        };
        // A higher limit may let queued work start on any executor; every executor's next
        // claim takes the lock again (see `unlimited_at`).
        notify::notify(client, channel, &["l".to_string()]).await
      }
      .await;
      end(client, r).await
    })
  }

  /// Whether the connection is down (closed by the server, not replaced yet).
  pub fn is_down(&self) -> bool {
    self.conn.is_down()
  }

  /// The server's clock less this host's, in ms (0 within `SKEW_IGNORED_MS`).
  pub fn clock_offset_ms(&self) -> f64 {
    self.offset_ms
  }

  /// `now` (this host's clock, ms since the epoch) on the server's clock.
  fn server_time(&self, now: f64) -> f64 {
    now + self.offset_ms
  }

  /// Reads the server's clock: the difference from this host's, from the middle of the
  /// round trip.
  fn measure_offset(&mut self) -> StoreResult<()> {
    let before = now_ms();
    let server: f64 = self.wait("cannot read the clock of", async {
      self
        .db()
        .query_one(
          "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8",
          &[],
        )
        .await?
        .try_get(0)
    })?;
    // The first reading is taken whatever its round trip: there is none better to keep.
    let max_round_trip = if self.clock_read {
      (self.lease_ms / 10.0).min(1_000.0)
    } else {
      f64::INFINITY
    };
    self.offset_ms = clock_offset(before, server, now_ms(), self.offset_ms, max_round_trip);
    self.clock_read = true;
    Ok(())
  }

  pub fn interest(&self) -> &Interest {
    &self.interest
  }

  /// The earliest time a queued execution of interest becomes due, if any is scheduled later.
  pub fn next_due(&mut self, now: f64) -> StoreResult<Option<f64>> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    if self.interest.none {
      return Ok(None);
    }
    // Read from the index of delayed rows (`bmad_executions_due`), never the whole queue: a
    // row due when created is claimable at once (see the claim). Two texts, not `($2 OR
    // agent = ANY($3))`, so each generic plan is the plain one.
    let i = &self.interest;
    let db = self.db();
    let due: Option<f64> = self.wait("cannot read", async {
      let r = if i.any {
        db.query_one(&self.next_due_any, &[&now]).await?
      } else {
        db.query_one(&self.next_due_listed, &[&now, &i.agents]).await?
      };
      r.try_get(0)
    })?;
    // Back on this host's clock: the thread waits for it here.
    Ok(due.map(|t| t - self.offset_ms))
  }

  /// Of `ids`, those stored and not ended (`state + 0`: each looked up by id).
  pub fn open_among(&mut self, ids: &[i64]) -> StoreResult<Vec<i64>> {
    self.conn.ensure()?;
    let sql = format!(
      "SELECT id FROM {}.bmad_executions WHERE id = ANY($1) AND state + 0 < 2",
      self.s
    );
    let db = self.db();
    let client = &db;
    let ids = ids.to_vec();
    self.wait("cannot read", async move {
      let rows = client.query(&sql, &[&ids]).await?;
      rows.iter().map(|r| r.try_get(0)).collect()
    })
  }

  /// Of `ids`, the ended executions (rows) and the ids no longer stored.
  pub fn ended_among(&mut self, ids: &[i64]) -> StoreResult<(Vec<Row>, Vec<i64>)> {
    self.conn.ensure()?;
    let s = &self.s;
    let db = self.db();
    let client = &db;
    let ids = ids.to_vec();
    // `state + 0`: the index of ended rows (`state >= 2`) must not serve this read, whatever
    // the plan was made on: it would go through every ended row (~38 ms at 50k) instead of
    // looking each id up.
    let ended_sql =
      format!("SELECT {COLUMNS} FROM {s}.bmad_executions WHERE id = ANY($1) AND state + 0 >= 2");
    let gone_sql = format!(
      "SELECT x FROM unnest($1::int8[]) x WHERE NOT EXISTS (SELECT 1 FROM {s}.bmad_executions WHERE id = x)"
    );
    self.wait("cannot read", async move {
      let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
      let rows = client.query(&ended_sql, &params).await?;
      // Ids heard of as ended are all found, as a rule: only a look at ids that may run
      // still asks which are gone.
      let gone = if rows.len() < ids.len() {
        client.query(&gone_sql, &params).await?
      } else {
        Vec::new()
      };
      Ok((
        rows::rows(&rows)?,
        gone.iter().map(|r| r.try_get(0)).collect::<PgResult<_>>()?,
      ))
    })
  }

  /// The store's own invariants: "ok", or the rows that break them.
  pub fn integrity_check(&mut self) -> StoreResult<String> {
    self.conn.ensure()?;
    let sql = format!(
      "SELECT count(*) FROM {}.bmad_executions WHERE (state = 1 AND owner IS NULL) \
       OR (state >= 2 AND finalized_at IS NULL) OR (state = 0 AND finalized_at IS NOT NULL) OR attempt > max_attempts + 1",
      self.s
    );
    let bad: i64 = self.wait("cannot check", async {
      self.db().query_one(&sql, &[]).await?.try_get(0)
    })?;
    Ok(if bad == 0 {
      "ok".to_string()
    } else {
      format!("{bad} executions in an impossible state")
    })
  }

  fn wait<T>(&self, what: &str, fut: impl std::future::Future<Output = PgResult<T>>) -> StoreResult<T> {
    self.conn.wait(what, fut)
  }

  pub fn set_interest(&mut self, interest: Interest) {
    self.interest = interest;
    self.unlimited_at = None;
  }

  /// Another executor set a global limit: the next claim takes the lock, and learns of it.
  pub fn limits_changed(&mut self) {
    self.unlimited_at = None;
  }

  /// Runs one batch in one transaction: inserts, attempt ends, progress, releases, claim.
  pub fn batch(&mut self, batch: &Batch, now: f64) -> StoreResult<BatchResult> {
    self.conn.ensure()?;
    let db = self.conn.db();
    self
      .conn
      .wait("cannot prepare for", db.prepare_batch(&self.batch_sql.all()))?;
    let limited = &self.limited;
    let try_no = self.next_try;
    self.next_try += 1;
    let cx = batch::Ctx {
      try_no,
      unlimited: self.unlimited_at.is_some_and(|t| t.elapsed() < UNLIMITED_FOR),
      lost: &self.lost,
      settled: &self.settled,
      forget: &self.answered,
      committed: Cell::new(false),
      limited,
      db: &db,
      sql: &self.batch_sql,
      channel: &self.channel,
      schema_key: &self.schema_key,
      owner: &self.me.owner,
      interest: &self.interest,
      now: now + self.offset_ms,
      lease_ms: self.lease_ms,
    };
    let jitter = &mut self.jitter;
    let gave_up = Cell::new(false);
    let done = self.conn.wait("cannot write to", async {
      let r = batch::run(&cx, batch, jitter).await;
      if let Err(e) = &r {
        gave_up.set(super::server_gave_up(e));
        // What failed is reported; a failed rollback only means the connection is gone.
        let _ = db.batch_execute("ROLLBACK").await;
      }
      r
    });
    let after_commit = cx.committed.get();
    #[cfg(test)]
    let done = match done {
      Ok(_) if std::mem::take(&mut self.lose_next_answer) => Err(StoreError {
        code: DISCONNECTED,
        message: "test: the answer was lost".to_string(),
      }),
      other => other,
    };
    let done = match done {
      Ok(done) => done,
      Err(mut e) => {
        // A lost connection may have let the COMMIT through, and a read after it failed:
        // the next batch with its submissions settles the try. A server's error before the
        // COMMIT rolled it back.
        if after_commit || e.code == DISCONNECTED {
          self.answer_lost(try_no, batch);
        }
        if (after_commit && e.code != DISCONNECTED) || gave_up.get() {
          // Stored, its ids unread: sent again (a few times), it is answered from its record.
          // A statement the server gave up (a settlement waiting on a lost try still under
          // way on a stalled server) may go through later: sent again too.
          e.code = BUSY;
        }
        return Err(e);
      }
    };
    // Settled tries leave `lost`; what they said holds for their submissions still to come,
    // an id found anywhere over "not stored".
    self.lost.retain(|(t, _)| !done.settled.contains(t));
    for (seq, id) in done.found {
      match id {
        Some(_) => {
          self.settled.insert(seq, id);
        }
        None => {
          self.settled.entry(seq).or_insert(None);
        }
      }
    }
    if !self.settled.is_empty() {
      for n in &batch.inserts {
        self.settled.remove(&n.seq);
      }
    }
    if done.forgot {
      self.answered.clear();
    }
    if done.recorded {
      self.answered.push(try_no);
    }
    // A settled try that had committed needs its record no more; an empty one stays, so
    // that try can never commit later (retention removes it after a day).
    self.answered.extend(done.committed);
    for f in &batch.finishes {
      self.limited.remove(&(f.id, f.attempt));
    }
    for r in &batch.releases {
      self.limited.remove(&(r.id, r.attempt));
    }
    self.limited.extend(done.limited);
    if let Some(n) = done.limits {
      self.unlimited_at = (n == 0).then(std::time::Instant::now);
    }
    Ok(done.result)
  }

  /// The answer to try `try_no` of `batch` was lost: its commit may have gone through (or
  /// may yet), so the next batch with any of its submissions settles it first.
  pub(super) fn answer_lost(&mut self, try_no: i64, batch: &Batch) {
    // Submissions whose ids were known already were not sent.
    let seqs: Vec<u64> = batch
      .inserts
      .iter()
      .map(|n| n.seq)
      .filter(|&s| s > 0 && !matches!(self.settled.get(&s), Some(Some(_))))
      .collect();
    if !seqs.is_empty() {
      self.lost.push((try_no, seqs));
    }
  }

  /// Test: the answer to the last try of `batch` was lost (it committed; nobody heard).
  #[cfg(test)]
  pub(super) fn lose_last_answer(&mut self, batch: &Batch) {
    let t = self.next_try - 1;
    self.answered.retain(|&a| a != t);
    self.answer_lost(t, batch);
  }

  /// Test: a try of `batch` sent and given up before it reached the server; its number.
  #[cfg(test)]
  pub(super) fn lose_next_try(&mut self, batch: &Batch) -> i64 {
    let t = self.next_try;
    self.next_try += 1;
    self.answer_lost(t, batch);
    t
  }

  /// Test: `batch` run as try `t` (a try given up that reaches the server late).
  #[cfg(test)]
  pub(super) fn batch_as_try(&mut self, t: i64, batch: &Batch, now: f64) -> StoreResult<BatchResult> {
    let next = std::mem::replace(&mut self.next_try, t);
    let r = self.batch(batch, now);
    self.next_try = next;
    r
  }

  /// Cancels execution `id`: a queued one ends at once, a running one is flagged for its
  /// owner. Returns the status it had (`NOT_FOUND` when there is no such execution).
  pub fn cancel(&mut self, id: i64, error_json: &str, now: f64) -> StoreResult<i32> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    let s = &self.s;
    let channel = &self.channel;
    let db = self.db();
    let client = &db;
    let was = self.wait("cannot cancel in", async move {
      client.batch_execute("BEGIN").await?;
      let r = async {
      let state = client
        .query_opt(&format!("SELECT state FROM {s}.bmad_executions WHERE id = $1 FOR UPDATE"), &[&id])
        .await?
        .map(|r| r.try_get::<_, i16>(0))
        .transpose()?
        .map(|state| u32::try_from(state).unwrap_or(0));
      match state {
        Some(STATUS_QUEUED) => {
          client
            .execute(
              &format!("UPDATE {s}.bmad_executions SET state = 4, error = $2, finalized_at = $3 WHERE id = $1 AND state = 0"),
              &[&id, &error_json, &now],
            )
            .await?;
          notify::notify(client, channel, &ended(&[id])).await?;
        }
        Some(STATUS_RUNNING) => {
          client
            .execute(
              &format!("UPDATE {s}.bmad_executions SET cancel_requested = true, error = $2 WHERE id = $1 AND state = 1"),
              &[&id, &error_json],
            )
            .await?;
          notify::notify(client, channel, &["c".to_string()]).await?;
        }
        _ => {}
      }
      Ok(state.map_or(NOT_FOUND, |v| v as i32))
      }
      .await;
      end(client, r).await
    })?;
    Ok(was)
  }

  /// The running attempts of this worker with a cancel requested.
  pub fn cancel_requests(&mut self) -> StoreResult<Vec<CancelRequest>> {
    self.conn.ensure()?;
    let sql = format!(
      "SELECT id, attempt FROM {}.bmad_executions WHERE owner = $1 AND state = 1 AND cancel_requested",
      self.s
    );
    self.wait("cannot read", async {
      let rows = self.db().query(&sql, &[&self.me.owner]).await?;
      rows
        .iter()
        .map(|r| {
          Ok(CancelRequest {
            id: r.try_get(0)?,
            attempt: u32::try_from(r.try_get::<_, i32>(1)?).unwrap_or(0),
          })
        })
        .collect()
    })
  }

  pub fn fetch(&mut self, id: i64) -> StoreResult<Option<Row>> {
    self.conn.ensure()?;
    self.wait("cannot read", async {
      let r = self.db().query_opt(&self.fetch, &[&id]).await?;
      r.as_ref().map(row).transpose()
    })
  }

  /// Renews the lease of every attempt this worker runs, and its own heartbeat.
  pub fn heartbeat(&mut self, now: f64) -> StoreResult<()> {
    self.conn.ensure()?;
    self.measure_offset()?;
    let now = self.server_time(now);
    let s = &self.s;
    let me = &self.me;
    let lease = now + self.lease_ms;
    let (pid, start) = (i64::from(me.pid), me.proc_start as i64);
    let db = self.db();
    let client = &db;
    self.wait("cannot renew leases in", async move {
      client
        .execute(
          &format!("UPDATE {s}.bmad_executions SET lease_expires_at = $2 WHERE owner = $1 AND state = 1"),
          &[&me.owner, &lease],
        )
        .await?;
      // An upsert: a rescuer may have forgotten this worker after a long silence.
      client
        .execute(
          &format!(
            "INSERT INTO {s}.bmad_workers (owner, host, pid, proc_start, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
          ),
          &[&me.owner, &me.host, &pid, &start, &now],
        )
        .await?;
      Ok(())
    })
  }

  /// Moves on every running execution whose lease expired or whose owner, a process on this
  /// host, has exited (see `store::decide::rescue_status`). Rows are locked as they are
  /// read and each move is a compare-and-set: an attempt that finished meanwhile is left
  /// alone, and two rescuers never move the same row.
  ///
  /// A move the server refuses (a trigger, a constraint) leaves that attempt running and is
  /// reported once (`take_notices`); the others are moved all the same.
  pub fn rescue(&mut self, now: f64) -> StoreResult<Vec<Rescued>> {
    loop {
      let refused = Cell::new(None);
      match self.rescue_round(now, &refused) {
        // The transaction rolled back: again, without that attempt.
        Err(e) if e.code == crate::store::REFUSED => match refused.get() {
          Some((id, attempt)) => self.refusals.refuse(id, attempt, &e),
          None => return Err(e),
        },
        r => return r,
      }
    }
  }

  /// The errors of rescues refused since the last call.
  pub fn take_notices(&mut self) -> Vec<StoreError> {
    self.refusals.take()
  }

  /// One rescue transaction; a move the server refuses fails it, naming the attempt in
  /// `refused`.
  fn rescue_round(&mut self, now: f64, refused: &Cell<Option<(i64, u32)>>) -> StoreResult<Vec<Rescued>> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    let s = self.s.clone();
    let me = &self.me;
    let lease_ms = self.lease_ms;
    let channel = self.channel.clone();
    let sweep_parked = &self.push_sql.sweep;
    let refusals = &self.refusals;
    let db = self.conn.db();
    let client = &db;
    self.conn.wait("cannot rescue in", async move {
      client.batch_execute("BEGIN").await?;
      let r = async {
      let mut dead: Vec<String> = Vec::new();
      if !me.host.is_empty() {
        let workers = client
          .query(
            &format!("SELECT owner, pid, proc_start FROM {s}.bmad_workers WHERE host = $1 AND owner <> $2"),
            &[&me.host, &me.owner],
          )
          .await?;
        for w in &workers {
          let pid = u32::try_from(w.try_get::<_, i64>(1)?).unwrap_or(0);
          if pid != 0 && host::is_dead(pid, w.try_get::<_, i64>(2)? as u64) {
            dead.push(w.try_get(0)?);
          }
        }
      }
      // Never its own attempts: they are alive while this process is.
      let candidates = client
        .query(
          &format!(
            "SELECT id, agent, attempt, owner, max_attempts, cancel_requested FROM {s}.bmad_executions \
             WHERE state = 1 AND ((lease_expires_at < $1 AND owner <> $3) OR owner = ANY($2)) FOR UPDATE SKIP LOCKED"
          ),
          &[&now, &dead, &me.owner],
        )
        .await?;
      let mut out = Vec::new();
      for c in &candidates {
        let (id, agent, attempt, owner): (i64, String, i32, String) =
          (c.try_get(0)?, c.try_get(1)?, c.try_get(2)?, c.try_get(3)?);
        let max_attempts = u32::try_from(c.try_get::<_, i32>(4)?).unwrap_or(1);
        let attempt_u = u32::try_from(attempt).unwrap_or(0);
        if refusals.skips(id, attempt_u) {
          continue;
        }
        let status = decide::rescue_status(c.try_get(5)?, attempt_u, max_attempts);
        let which = "WHERE id = $1 AND attempt = $2 AND owner = $3 AND state = 1";
        let moved = match status {
          // Due at once, whatever a claimer's clock says (as when it was created).
          STATUS_QUEUED => {
            let sql = format!(
              "UPDATE {s}.bmad_executions SET state = 0, owner = NULL, lease_expires_at = NULL, scheduled_at = created_at {which}"
            );
            client.execute(&sql, &[&id, &attempt, &owner]).await
          }
          STATUS_CANCELLED => {
            let sql = format!("UPDATE {s}.bmad_executions SET state = 4, lease_expires_at = NULL, finalized_at = $4 {which}");
            client.execute(&sql, &[&id, &attempt, &owner, &now]).await
          }
          _ => {
            let sql = format!(
              "UPDATE {s}.bmad_executions SET state = 3, error = $5, lease_expires_at = NULL, finalized_at = $4 {which}"
            );
            client.execute(&sql, &[&id, &attempt, &owner, &now, &WORKER_LOST]).await
          }
        };
        let changed = match moved {
          Ok(n) => n,
          Err(e) => {
            if super::refused(&e) {
              refused.set(Some((id, attempt_u)));
            }
            return Err(e);
          }
        };
        if changed == 1 {
          out.push(Rescued {
            id,
            agent,
            attempt: attempt_u,
            owner,
            status,
          });
        }
      }
      // A dead worker is forgotten once none of its attempts is left running: a row another
      // transaction held (skipped above, e.g. the dead process's own batch not yet rolled
      // back) is moved at the next rescue, not left to its lease.
      if !dead.is_empty() {
        client
          .execute(
            &format!(
              "DELETE FROM {s}.bmad_workers w WHERE owner = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM {s}.bmad_executions e WHERE e.state = 1 AND e.owner = w.owner)"
            ),
            &[&dead],
          )
          .await?;
      }
      // Workers silent for long (other hosts) are forgotten; their executions were rescued by
      // lease long before.
      let forget = now - (10.0 * lease_ms).max(600_000.0);
      client
        .execute(
          &format!("DELETE FROM {s}.bmad_workers WHERE heartbeat_at < $1 AND owner <> $2"),
          &[&forget, &me.owner],
        )
        .await?;
      // Parked claims of workers no longer listening, after a lease (a day with pushes).
      client
        .execute(sweep_parked, &[&me.owner, &(now - lease_ms), &(now - 86_400_000.0)])
        .await?;
      let mut notes = ended(&out.iter().filter(|r| r.status != STATUS_QUEUED).map(|r| r.id).collect::<Vec<_>>());
      if !out.is_empty() {
        // Claimable again, or ended: a slot of its agent's global limit may be free.
        notes.push("w".to_string());
      }
      notify::notify(client, &channel, &notes).await?;
      Ok(out)
      }
      .await;
      end(client, r).await
    })
  }

  /// Deletes ended executions older than `ttl_ms`, then all but the newest `max_kept`, and
  /// waits for it (the store thread starts sweeps in the background: `start_retention`).
  #[cfg(test)]
  pub fn retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64> {
    self.conn.ensure()?;
    let (cutoff, keep) = self.retention_bounds(ttl_ms, max_kept, now);
    let s = &self.s;
    let db = self.db();
    self.wait(
      "cannot clean",
      super::sweep::delete_ended(db.client, s, cutoff, keep),
    )
  }

  /// Starts the same deletion on a connection of the pool, unless one is under way, and
  /// returns how many the last finished one deleted (its error, if it failed).
  pub fn start_retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64> {
    // Pruned at each turn, also while the statement connection is down.
    self.sweeper.prune();
    // A lost connection is reported (and won back) by the statement connection.
    self.conn.ensure()?;
    let (cutoff, keep) = self.retention_bounds(ttl_ms, max_kept, now);
    self.sweeper.start(self.s.clone(), cutoff, keep).unwrap_or(Ok(0))
  }

  /// Whether a sweep started by `start_retention` is under way.
  #[cfg(test)]
  pub fn sweeping(&self) -> bool {
    self.sweeper.busy()
  }

  fn retention_bounds(&self, ttl_ms: f64, max_kept: u64, now: f64) -> (f64, i64) {
    (
      self.server_time(now) - ttl_ms,
      i64::try_from(max_kept).unwrap_or(i64::MAX),
    )
  }

  /// Publishes a parked claim (`batch`: its claim) for submissions to fill, while the
  /// listener `listening` (its key) is connected; its token, or `None` (no listener, or no
  /// agent of interest).
  pub fn publish(&mut self, batch: &Batch, now: f64, listening: Option<i64>) -> StoreResult<Option<i64>> {
    let Some(listener) = listening else {
      return Ok(None);
    };
    if self.interest.none || batch.claim == 0 {
      return Ok(None);
    }
    self.conn.ensure()?;
    let token = self.next_token;
    self.next_token += 1;
    let now = self.server_time(now);
    let slots = int(batch.claim);
    let i = &self.interest;
    self.wait(
      "cannot write to",
      self.db().execute(
        &self.push_sql.publish,
        &[
          &self.me.owner,
          &token,
          &i.any,
          &i.agents,
          &batch.exclude,
          &slots,
          &self.lease_ms,
          &now,
          &listener,
        ],
      ),
    )?;
    Ok(Some(token))
  }

  /// Withdraws the published parked claim `token`: the executions pushed to it, if any,
  /// read from the store (their notice may not have come).
  pub fn withdraw(&mut self, token: i64) -> StoreResult<Vec<Row>> {
    self.conn.ensure()?;
    let db = self.db();
    let sql = &self.push_sql;
    let owner = &self.me.owner;
    self.wait("cannot write to", async {
      let ids = push::taken(&db.query(&sql.take, &[owner, &token]).await?)?;
      if ids.is_empty() {
        return Ok(Vec::new());
      }
      rows::rows(&db.query(&sql.rows, &[&ids, owner]).await?)
    })
  }

  /// Hands back to the queue (the attempt uncounted) the attempts this worker holds but
  /// does not know of (`running`: the (id, attempt) it knows), but those pushed to its
  /// parked claim `parked`, and returns their ids; one whose cancel was asked meanwhile ends
  /// cancelled, as a release does.
  pub fn release_unknown(&mut self, running: &[(i64, u32)], parked: Option<i64>) -> StoreResult<Vec<i64>> {
    self.conn.ensure()?;
    let ids: Vec<i64> = running.iter().map(|r| r.0).collect();
    let attempts: Vec<i32> = running.iter().map(|r| int(r.1)).collect();
    let now = self.server_time(now_ms());
    self.wait("cannot write to", async {
      let rows = self
        .db()
        .query(
          &self.release_unknown,
          &[&self.me.owner, &ids, &attempts, &now, &parked, &self.channel],
        )
        .await?;
      rows.iter().map(|r| r.try_get(0)).collect()
    })
  }

  /// Forgets this worker, unless attempts are still running in its name (a close that gave
  /// up, an executor dropped): then the row stays, so that once this process has exited a
  /// rescuer on this host moves them at once instead of at the end of their lease.
  pub fn leave(&mut self) -> StoreResult<()> {
    self.conn.ensure()?;
    // Tries whose answers were lost and were never settled can no longer commit later:
    // their callers have been answered already.
    let mut fenced = Ok(0);
    if !self.lost.is_empty() {
      let tries: Vec<i64> = self.lost.iter().map(|(t, _)| *t).collect();
      let now = now_ms() + self.offset_ms;
      let fence = self.batch_sql.fence();
      fenced = self.wait(
        "cannot leave",
        self.db().execute(fence, &[&self.me.owner, &tries, &now]),
      );
      self.lost.clear();
    }
    // Its batch records go too (it sends nothing again), but not the empty ones that keep
    // tries it gave up from committing late: retention removes those after a day.
    let sql = format!(
      "WITH records AS (DELETE FROM {s}.bmad_batches WHERE owner = $1 AND cardinality(seqs) > 0), \
         parked AS (DELETE FROM {s}.bmad_parked WHERE owner = $1) \
       DELETE FROM {s}.bmad_workers w WHERE owner = $1 \
       AND NOT EXISTS (SELECT 1 FROM {s}.bmad_executions e WHERE e.state = 1 AND e.owner = w.owner)",
      s = self.s
    );
    // The worker's row goes whatever the fence did: a rescuer on this host acts at once.
    self.wait("cannot leave", self.db().execute(&sql, &[&self.me.owner]))?;
    fenced.map(|_| ())
  }
}

/// The server's clock less this host's, from a reading `server` taken between `before` and
/// `after` (this host's clock): the middle of the round trip, wrong by up to half of it. A
/// round trip longer than `max_round_trip` (a stalled network) keeps `previous`: its error
/// could make live leases look expired. Within `SKEW_IGNORED_MS`, 0.
pub(super) fn clock_offset(before: f64, server: f64, after: f64, previous: f64, max_round_trip: f64) -> f64 {
  if after - before > max_round_trip {
    return previous;
  }
  let offset = server - (before + after) / 2.0;
  if offset.abs() < SKEW_IGNORED_MS {
    0.0
  } else {
    offset.round()
  }
}

/// Commits the transaction `r` ran in, or rolls it back and returns its error.
async fn end<T>(client: &Db<'_>, r: PgResult<T>) -> PgResult<T> {
  match r {
    Ok(v) => {
      client.batch_execute("COMMIT").await?;
      Ok(v)
    }
    Err(e) => {
      // What failed is reported; a failed rollback only means the connection is gone.
      let _ = client.batch_execute("ROLLBACK").await;
      Err(e)
    }
  }
}

/// The earliest due time after `$1` of the queued executions of any agent, or (`any` false)
/// of the agents `$2`, in schema `s` (quoted).
pub(super) fn next_due_sql(s: &str, any: bool) -> String {
  let agents = if any { "" } else { " AND agent = ANY($2)" };
  format!("SELECT min(scheduled_at) FROM {s}.bmad_executions WHERE state = 0 AND scheduled_at > created_at AND scheduled_at > $1{agents}")
}

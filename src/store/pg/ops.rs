//! The store's reads and writes on PostgreSQL: the same operations, states and
//! compare-and-sets as the SQLite driver (`store::ops`), with the decisions of
//! `store::decide`, written for a server a network away: each kind of change in a batch is
//! one statement over arrays (`unnest`), and a batch is one transaction. Claims take rows
//! with `FOR UPDATE SKIP LOCKED`, so executors on several hosts never wait for each other's
//! claims nor take the same row.

use tokio_postgres::types::ToSql;

use super::notify::{self, ended};
use super::{Db, PgConnection, PgTarget};
use crate::protocol::{NOT_FOUND, STATUS_CANCELLED, STATUS_COMPLETED, STATUS_QUEUED, STATUS_RUNNING};
use crate::scheduler::retry::Jitter;
use crate::store::decide::{self, AfterAttempt, Stored};
use crate::store::host::{self, Identity};
use crate::store::ops::{Interest, COLUMNS, WORKER_LOST};
use crate::store::{
  Batch, BatchResult, CancelRequest, Finish, Finished, Inserted, NewExecution, Rescued, Row, StoreResult,
};
use crate::system::probes::now_ms;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// A difference between this host's clock and the server's below this is left alone
/// (hosts kept in time by NTP); beyond it, times written and compared are the server's.
const SKEW_IGNORED_MS: f64 = 50.0;

fn row(r: &tokio_postgres::Row) -> Row {
  let u = |i: usize| -> u32 { u32::try_from(r.get::<_, i32>(i)).unwrap_or(0) };
  Row {
    id: r.get(0),
    agent: r.get(1),
    task: r.get(2),
    options: r.get(3),
    level: r.get(4),
    priority: r.get(5),
    mode: u(6),
    key: r.get(7),
    status: u32::try_from(r.get::<_, i16>(8)).unwrap_or(0),
    attempt: u(9),
    max_attempts: u(10),
    timeout_ms: r.get(11),
    progress: r.get(12),
    result: r.get(13),
    error: r.get(14),
    owner: r.get(15),
    cancel_requested: r.get(16),
    created_at: r.get(17),
    scheduled_at: r.get(18),
    attempted_at: r.get(19),
    finalized_at: r.get(20),
  }
}

fn int(v: u32) -> i32 {
  i32::try_from(v).unwrap_or(i32::MAX)
}

/// One worker's connection to a PostgreSQL store.
pub struct PgStore {
  conn: PgConnection,
  /// The quoted schema, in front of every table.
  s: String,
  /// The schema's NOTIFY channel.
  channel: String,
  pub me: Identity,
  pub lease_ms: f64,
  jitter: Jitter,
  interest: Interest,
  /// The server's clock less this host's (0 when within `SKEW_IGNORED_MS`): leases written
  /// here and compared on other hosts use one clock.
  offset_ms: f64,
}

impl PgStore {
  /// Connects to the store at `target` (migrating its schema) and registers this worker.
  pub fn open(target: PgTarget, lease_ms: f64, now: f64) -> StoreResult<PgStore> {
    let conn = PgConnection::open(target)?;
    let s = conn.target.quoted_schema();
    let channel = notify::channel(&conn.target.schema);
    let mut store = PgStore {
      conn,
      s,
      channel,
      me: Identity::new(),
      lease_ms,
      jitter: Jitter::seeded(),
      interest: Interest::new(false, &[]),
      offset_ms: 0.0,
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

  fn db(&self) -> Db<'_> {
    self.conn.db()
  }

  pub fn target(&self) -> &PgTarget {
    &self.conn.target
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
        // A higher limit may let queued work start on any executor.
        notify::notify(client, channel, &["w".to_string()]).await
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
    let server: f64 = self
      .wait(
        "cannot read the clock of",
        self.db().query_one(
          "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8",
          &[],
        ),
      )?
      .get(0);
    let offset = server - (before + now_ms()) / 2.0;
    self.offset_ms = if offset.abs() < SKEW_IGNORED_MS {
      0.0
    } else {
      offset.round()
    };
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
    let sql = format!(
      "SELECT min(scheduled_at) FROM {}.bmad_executions WHERE state = 0 AND scheduled_at > $1 AND ($2 OR agent = ANY($3))",
      self.s
    );
    let i = &self.interest;
    let r = self.wait(
      "cannot read",
      self.db().query_one(&sql, &[&now, &i.any, &i.agents]),
    )?;
    // Back on this host's clock: the thread waits for it here.
    Ok(r.get::<_, Option<f64>>(0).map(|t| t - self.offset_ms))
  }

  /// Of `ids`, the ended executions (rows) and the ids no longer stored.
  pub fn ended_among(&mut self, ids: &[i64]) -> StoreResult<(Vec<Row>, Vec<i64>)> {
    self.conn.ensure()?;
    let s = &self.s;
    let db = self.db();
    let client = &db;
    let ids = ids.to_vec();
    self.wait("cannot read", async move {
      let rows = client
        .query(
          &format!("SELECT {COLUMNS} FROM {s}.bmad_executions WHERE id = ANY($1) AND state >= 2"),
          &[&ids],
        )
        .await?;
      let gone = client
        .query(
          &format!("SELECT x FROM unnest($1::int8[]) x WHERE NOT EXISTS (SELECT 1 FROM {s}.bmad_executions WHERE id = x)"),
          &[&ids],
        )
        .await?;
      Ok((rows.iter().map(row).collect(), gone.iter().map(|r| r.get(0)).collect()))
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
    let bad: i64 = self.wait("cannot check", self.db().query_one(&sql, &[]))?.get(0);
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
  }

  /// Runs one batch in one transaction: inserts, attempt ends, progress, releases, claim.
  pub fn batch(&mut self, batch: &Batch, now: f64) -> StoreResult<BatchResult> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    let s = self.s.clone();
    let owner = self.me.owner.clone();
    let lease_ms = self.lease_ms;
    let interest = self.interest.clone();
    let channel = self.channel.clone();
    let db = self.conn.db();
    let client = &db;
    let jitter = &mut self.jitter;
    self.conn.wait("cannot write to", async move {
      client.batch_execute("BEGIN").await?;
      let out = async {
        let out = run_batch(client, &s, &owner, &interest, batch, now, lease_ms, jitter).await?;
        notify::notify(client, &channel, &batch_notes(batch, &out)).await?;
        Ok(out)
      }
      .await;
      end(client, out).await
    })
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
        .map(|r| u32::try_from(r.get::<_, i16>(0)).unwrap_or(0));
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
    let rows = self.wait("cannot read", self.db().query(&sql, &[&self.me.owner]))?;
    Ok(
      rows
        .iter()
        .map(|r| CancelRequest {
          id: r.get(0),
          attempt: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
        })
        .collect(),
    )
  }

  pub fn fetch(&mut self, id: i64) -> StoreResult<Option<Row>> {
    self.conn.ensure()?;
    let sql = format!("SELECT {COLUMNS} FROM {}.bmad_executions WHERE id = $1", self.s);
    let r = self.wait("cannot read", self.db().query_opt(&sql, &[&id]))?;
    Ok(r.as_ref().map(row))
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
  pub fn rescue(&mut self, now: f64) -> StoreResult<Vec<Rescued>> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    let s = self.s.clone();
    let me = &self.me;
    let lease_ms = self.lease_ms;
    let channel = self.channel.clone();
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
          let pid = u32::try_from(w.get::<_, i64>(1)).unwrap_or(0);
          if pid != 0 && host::is_dead(pid, w.get::<_, i64>(2) as u64) {
            dead.push(w.get(0));
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
        let (id, agent, attempt, owner): (i64, String, i32, String) = (c.get(0), c.get(1), c.get(2), c.get(3));
        let max_attempts = u32::try_from(c.get::<_, i32>(4)).unwrap_or(1);
        let attempt_u = u32::try_from(attempt).unwrap_or(0);
        let status = decide::rescue_status(c.get(5), attempt_u, max_attempts);
        let sql = match status {
          STATUS_QUEUED => format!(
            "UPDATE {s}.bmad_executions SET state = 0, owner = NULL, lease_expires_at = NULL, scheduled_at = $4 \
             WHERE id = $1 AND attempt = $2 AND owner = $3 AND state = 1"
          ),
          STATUS_CANCELLED => format!(
            "UPDATE {s}.bmad_executions SET state = 4, lease_expires_at = NULL, finalized_at = $4 \
             WHERE id = $1 AND attempt = $2 AND owner = $3 AND state = 1"
          ),
          _ => format!(
            "UPDATE {s}.bmad_executions SET state = 3, error = $5, lease_expires_at = NULL, finalized_at = $4 \
             WHERE id = $1 AND attempt = $2 AND owner = $3 AND state = 1"
          ),
        };
        let changed = if status == STATUS_QUEUED || status == STATUS_CANCELLED {
          client.execute(&sql, &[&id, &attempt, &owner, &now]).await?
        } else {
          client.execute(&sql, &[&id, &attempt, &owner, &now, &WORKER_LOST]).await?
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
      if !dead.is_empty() {
        client
          .execute(&format!("DELETE FROM {s}.bmad_workers WHERE owner = ANY($1)"), &[&dead])
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
      let mut notes = ended(&out.iter().filter(|r| r.status != STATUS_QUEUED).map(|r| r.id).collect::<Vec<_>>());
      if out.iter().any(|r| r.status == STATUS_QUEUED) {
        notes.push("w".to_string());
      }
      notify::notify(client, &channel, &notes).await?;
      Ok(out)
      }
      .await;
      end(client, r).await
    })
  }

  /// Deletes ended executions older than `ttl_ms`, then all but the newest `max_kept`.
  pub fn retention(&mut self, ttl_ms: f64, max_kept: u64, now: f64) -> StoreResult<u64> {
    self.conn.ensure()?;
    let now = self.server_time(now);
    let s = &self.s;
    let cutoff = now - ttl_ms;
    let keep = i64::try_from(max_kept).unwrap_or(i64::MAX);
    let db = self.db();
    let client = &db;
    self.wait("cannot clean", async move {
      let mut n = client
        .execute(
          &format!("DELETE FROM {s}.bmad_executions WHERE state >= 2 AND finalized_at < $1"),
          &[&cutoff],
        )
        .await?;
      n += client
        .execute(
          &format!(
            "DELETE FROM {s}.bmad_executions WHERE id IN (SELECT id FROM {s}.bmad_executions WHERE state >= 2 \
             ORDER BY finalized_at DESC, id DESC OFFSET $1)"
          ),
          &[&keep],
        )
        .await?;
      Ok(n)
    })
  }

  /// This worker leaves the store.
  pub fn leave(&mut self) -> StoreResult<()> {
    self.conn.ensure()?;
    let sql = format!("DELETE FROM {}.bmad_workers WHERE owner = $1", self.s);
    self.wait("cannot leave", self.db().execute(&sql, &[&self.me.owner]))?;
    Ok(())
  }
}

/// What a batch's transaction tells the other executors.
fn batch_notes(batch: &Batch, out: &BatchResult) -> Vec<String> {
  let mut ended_ids: Vec<i64> = Vec::new();
  let mut work = out.inserted.iter().any(|i| !i.existing) || !batch.releases.is_empty();
  for (f, r) in batch.finishes.iter().zip(&out.finished) {
    match r {
      Finished::Recorded => ended_ids.push(f.id),
      Finished::Retry(_) => work = true,
      Finished::Stale => {}
    }
  }
  // A release of an execution whose cancel was requested ends it.
  ended_ids.extend(batch.releases.iter().map(|r| r.id));
  let mut notes = ended(&ended_ids);
  if work {
    notes.push("w".to_string());
  }
  notes
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

#[allow(clippy::too_many_arguments)]
async fn run_batch(
  client: &Db<'_>,
  s: &str,
  owner: &str,
  interest: &Interest,
  batch: &Batch,
  now: f64,
  lease_ms: f64,
  jitter: &mut Jitter,
) -> PgResult<BatchResult> {
  let mut out = BatchResult::default();
  if !batch.inserts.is_empty() {
    out.inserted = insert(client, s, &batch.inserts, now).await?;
  }
  if !batch.finishes.is_empty() {
    out.finished = finish(client, s, owner, &batch.finishes, now, jitter).await?;
    out.stale = out.finished.iter().filter(|f| **f == Finished::Stale).count() as u32;
  }
  if !batch.progress.is_empty() {
    let ids: Vec<i64> = batch.progress.iter().map(|p| p.id).collect();
    let attempts: Vec<i32> = batch.progress.iter().map(|p| int(p.attempt)).collect();
    let percents: Vec<f64> = batch.progress.iter().map(|p| p.percent).collect();
    client
      .execute(
        &format!(
          "UPDATE {s}.bmad_executions e SET progress = u.p FROM unnest($1::int8[], $2::int4[], $3::float8[]) u(id, attempt, p) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $4 AND e.state = 1"
        ),
        &[&ids, &attempts, &percents, &owner],
      )
      .await?;
  }
  if !batch.releases.is_empty() {
    let ids: Vec<i64> = batch.releases.iter().map(|r| r.id).collect();
    let attempts: Vec<i32> = batch.releases.iter().map(|r| int(r.attempt)).collect();
    client
      .execute(
        &format!(
          "UPDATE {s}.bmad_executions e SET \
             state = CASE WHEN e.cancel_requested THEN 4 ELSE 0 END, \
             attempt = CASE WHEN e.cancel_requested THEN e.attempt ELSE e.attempt - 1 END, \
             owner = CASE WHEN e.cancel_requested THEN e.owner ELSE NULL END, \
             finalized_at = CASE WHEN e.cancel_requested THEN $4::float8 ELSE NULL END, \
             lease_expires_at = NULL, scheduled_at = $4::float8 \
           FROM unnest($1::int8[], $2::int4[]) u(id, attempt) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $3 AND e.state = 1"
        ),
        &[&ids, &attempts, &owner, &now],
      )
      .await?;
  }
  if batch.claim > 0 && !interest.none {
    let limit = i64::from(batch.claim);
    // Agents with a global limit are claimed only under their lock (a try: one held by
    // another executor's claim leaves them for the next round), so counting their running
    // executions and claiming more is one step across every host; this statement's snapshot
    // comes after the lock, so it sees the claims of the holders before.
    let locked: Vec<String> = client
      .query(
        &format!(
          "SELECT agent FROM {s}.bmad_limits WHERE ($1 OR agent = ANY($2)) AND agent <> ALL($3) \
           AND pg_try_advisory_xact_lock(hashtextextended($4 || agent, 0))"
        ),
        &[
          &interest.any,
          &interest.agents,
          &batch.exclude,
          &format!("bmad/{s}/"),
        ],
      )
      .await?
      .iter()
      .map(|r| r.get(0))
      .collect();
    let rows = client
      .query(
        &format!(
          "WITH quota AS ( \
             SELECT l.agent, l.global_concurrency - (SELECT count(*) FROM {s}.bmad_executions r \
                                                    WHERE r.state = 1 AND r.agent = l.agent) AS q \
             FROM {s}.bmad_limits l WHERE l.agent = ANY($8)), \
           free AS ( \
             SELECT e.id, e.priority FROM {s}.bmad_executions e \
             WHERE e.state = 0 AND e.scheduled_at <= $3 AND ($4 OR e.agent = ANY($5)) AND e.agent <> ALL($6) \
               AND NOT EXISTS (SELECT 1 FROM {s}.bmad_limits l WHERE l.agent = e.agent) \
             ORDER BY e.priority DESC, e.id LIMIT $7 FOR UPDATE SKIP LOCKED), \
           limited AS ( \
             SELECT c.id, c.priority FROM quota CROSS JOIN LATERAL ( \
               SELECT id, priority FROM {s}.bmad_executions e \
               WHERE e.state = 0 AND e.agent = quota.agent AND e.scheduled_at <= $3 \
               ORDER BY priority DESC, id LIMIT greatest(least(quota.q, $7), 0) FOR UPDATE SKIP LOCKED) c), \
           picked AS ( \
             SELECT id FROM (SELECT * FROM free UNION ALL SELECT * FROM limited) u ORDER BY priority DESC, id LIMIT $7) \
           UPDATE {s}.bmad_executions e SET state = 1, attempt = e.attempt + 1, owner = $1, lease_expires_at = $2, attempted_at = $3 \
           FROM picked WHERE e.id = picked.id RETURNING {}",
          returning("e")
        ),
        &[
          &owner,
          &(now + lease_ms),
          &now,
          &interest.any,
          &interest.agents,
          &batch.exclude,
          &limit,
          &locked,
        ],
      )
      .await?;
    let mut claimed: Vec<Row> = rows.iter().map(row).collect();
    claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    out.claimed = claimed;
  }
  Ok(out)
}

/// `COLUMNS` qualified by `alias` (a RETURNING of an UPDATE … FROM names its table).
fn returning(alias: &str) -> String {
  COLUMNS
    .split(',')
    .map(|c| format!("{alias}.{}", c.trim()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Inserts in one statement; a submission whose key is live gets that execution's id.
async fn insert(client: &Db<'_>, s: &str, inserts: &[NewExecution], now: f64) -> PgResult<Vec<Inserted>> {
  let agents: Vec<&str> = inserts.iter().map(|n| n.agent.as_str()).collect();
  let tasks: Vec<&str> = inserts.iter().map(|n| n.task.as_str()).collect();
  let options: Vec<Option<&str>> = inserts.iter().map(|n| n.options.as_deref()).collect();
  let levels: Vec<&str> = inserts.iter().map(|n| n.level.as_str()).collect();
  let priorities: Vec<i64> = inserts.iter().map(|n| n.priority).collect();
  let modes: Vec<i32> = inserts.iter().map(|n| int(n.mode)).collect();
  let keys: Vec<Option<&str>> = inserts.iter().map(|n| n.key.as_deref()).collect();
  let max_attempts: Vec<i32> = inserts.iter().map(|n| int(n.max_attempts.max(1))).collect();
  let delays: Vec<f64> = inserts.iter().map(|n| n.retry_delay_ms).collect();
  let backoffs: Vec<i32> = inserts.iter().map(|n| int(n.backoff)).collect();
  let timeouts: Vec<f64> = inserts.iter().map(|n| n.timeout_ms).collect();
  let start_after: Vec<f64> = inserts.iter().map(|n| n.start_after).collect();
  let params: [&(dyn ToSql + Sync); 13] = [
    &agents,
    &tasks,
    &options,
    &levels,
    &priorities,
    &modes,
    &keys,
    &max_attempts,
    &delays,
    &backoffs,
    &timeouts,
    &start_after,
    &now,
  ];
  // Ids are drawn first, so each input row knows its own; a key already live (or earlier in
  // this batch) makes the insert do nothing and the row gets that execution's id.
  let rows = client
    .query(
      &format!(
        "WITH input AS MATERIALIZED (SELECT u.*, nextval(pg_get_serial_sequence('{s}.bmad_executions', 'id')) AS new_id \
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int4[], $7::text[], $8::int4[], \
                       $9::float8[], $10::int4[], $11::float8[], $12::float8[]) WITH ORDINALITY \
             AS u(agent, task, options, level, priority, mode, key, max_attempts, retry_delay_ms, backoff, timeout_ms, start_after, ord)), \
         ins AS (INSERT INTO {s}.bmad_executions (id, agent, task, options, level, priority, mode, key, state, max_attempts, \
                   retry_delay_ms, backoff, timeout_ms, created_at, scheduled_at) \
           SELECT new_id, agent, task, options, level, priority, mode, key, 0, max_attempts, retry_delay_ms, backoff, timeout_ms, \
                  $13, greatest($13, start_after) FROM input ORDER BY ord \
           ON CONFLICT (key) WHERE key IS NOT NULL AND state <= 1 DO NOTHING RETURNING id, key) \
         SELECT i.key, \
           (SELECT ins.id FROM ins WHERE ins.id = i.new_id), \
           coalesce((SELECT ins.id FROM ins WHERE ins.key = i.key), \
                    (SELECT x.id FROM {s}.bmad_executions x WHERE x.key = i.key AND x.state <= 1)) \
         FROM input i ORDER BY i.ord"
      ),
      &params,
    )
    .await?;
  let mut out = Vec::with_capacity(rows.len());
  for r in &rows {
    if let Some(id) = r.get::<_, Option<i64>>(1) {
      out.push(Inserted { id, existing: false });
      continue;
    }
    let id = match r.get::<_, Option<i64>>(2) {
      Some(id) => id,
      // Its key's execution was committed after this statement's snapshot: read it now.
      None => {
        let key: Option<String> = r.get(0);
        client
          .query_one(
            &format!("SELECT id FROM {s}.bmad_executions WHERE key = $1 AND state <= 1"),
            &[&key],
          )
          .await?
          .get(0)
      }
    };
    out.push(Inserted { id, existing: true });
  }
  Ok(out)
}

/// Attempt ends as compare-and-sets on (id, attempt, owner, running): completions in one
/// statement; failures and cancels read their execution's retry settings (locking the rows),
/// are decided by `store::decide`, and are written in one more.
async fn finish(
  client: &Db<'_>,
  s: &str,
  owner: &str,
  finishes: &[Finish],
  now: f64,
  jitter: &mut Jitter,
) -> PgResult<Vec<Finished>> {
  let mut out = vec![Finished::Stale; finishes.len()];
  let done: Vec<usize> = (0..finishes.len())
    .filter(|&i| finishes[i].status == STATUS_COMPLETED)
    .collect();
  if !done.is_empty() {
    let ids: Vec<i64> = done.iter().map(|&i| finishes[i].id).collect();
    let attempts: Vec<i32> = done.iter().map(|&i| int(finishes[i].attempt)).collect();
    let values: Vec<Option<&str>> = done.iter().map(|&i| finishes[i].value.as_deref()).collect();
    let rows = client
      .query(
        &format!(
          "UPDATE {s}.bmad_executions e SET state = 2, result = u.value, progress = 100, lease_expires_at = NULL, finalized_at = $5 \
           FROM unnest($1::int8[], $2::int4[], $3::text[]) u(id, attempt, value) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $4 AND e.state = 1 RETURNING e.id, e.attempt"
        ),
        &[&ids, &attempts, &values, &owner, &now],
      )
      .await?;
    for r in &rows {
      let (id, attempt): (i64, i32) = (r.get(0), r.get(1));
      if let Some(&i) = done
        .iter()
        .find(|&&i| finishes[i].id == id && int(finishes[i].attempt) == attempt)
      {
        out[i] = Finished::Recorded;
      }
    }
  }
  let rest: Vec<usize> = (0..finishes.len())
    .filter(|&i| finishes[i].status != STATUS_COMPLETED)
    .collect();
  if rest.is_empty() {
    return Ok(out);
  }
  let ids: Vec<i64> = rest.iter().map(|&i| finishes[i].id).collect();
  let attempts: Vec<i32> = rest.iter().map(|&i| int(finishes[i].attempt)).collect();
  let stored = client
    .query(
      &format!(
        "SELECT e.id, e.attempt, e.max_attempts, e.retry_delay_ms, e.backoff, e.cancel_requested FROM {s}.bmad_executions e \
         JOIN unnest($1::int8[], $2::int4[]) u(id, attempt) ON e.id = u.id AND e.attempt = u.attempt \
         WHERE e.owner = $3 AND e.state = 1 FOR UPDATE OF e"
      ),
      &[&ids, &attempts, &owner],
    )
    .await?;
  let (mut w_ids, mut w_attempts, mut w_states, mut w_values, mut w_due) =
    (vec![], vec![], vec![], vec![], vec![]);
  for r in &stored {
    let (id, attempt): (i64, i32) = (r.get(0), r.get(1));
    let Some(&i) = rest
      .iter()
      .find(|&&i| finishes[i].id == id && int(finishes[i].attempt) == attempt)
    else {
      continue;
    };
    let f = &finishes[i];
    let st = Stored {
      max_attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(1),
      retry_delay_ms: r.get(3),
      backoff: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
      cancel_requested: r.get(5),
    };
    let (state, due) = match decide::after_attempt(f.status, f.retryable, f.attempt, st, jitter) {
      AfterAttempt::Retry(delay) => {
        out[i] = Finished::Retry(delay);
        (0i16, Some(now + delay))
      }
      AfterAttempt::End(status) => {
        out[i] = Finished::Recorded;
        (i16::try_from(status).unwrap_or(3), None)
      }
    };
    w_ids.push(id);
    w_attempts.push(attempt);
    w_states.push(state);
    w_values.push(f.value.as_deref());
    w_due.push(due);
  }
  if !w_ids.is_empty() {
    client
      .execute(
        &format!(
          "UPDATE {s}.bmad_executions e SET state = u.state, \
             owner = CASE WHEN u.state = 0 THEN NULL ELSE e.owner END, \
             error = CASE WHEN u.state = 0 THEN u.value ELSE coalesce(u.value, e.error) END, \
             scheduled_at = CASE WHEN u.state = 0 THEN u.due ELSE e.scheduled_at END, \
             finalized_at = CASE WHEN u.state = 0 THEN NULL ELSE $6::float8 END, \
             lease_expires_at = NULL \
           FROM unnest($1::int8[], $2::int4[], $3::int2[], $4::text[], $5::float8[]) u(id, attempt, state, value, due) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $7 AND e.state = 1"
        ),
        &[&w_ids, &w_attempts, &w_states, &w_values, &w_due, &now, &owner],
      )
      .await?;
  }
  Ok(out)
}

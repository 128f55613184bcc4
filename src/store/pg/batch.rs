//! One batch on PostgreSQL: inserts, attempt ends, progress, releases and a claim in one
//! transaction, each kind one statement over arrays (`unnest`), sent together. The server
//! runs a pipeline in order and stops at the first error (the COMMIT at its end then rolls
//! back), so a batch without failures costs one round trip; failures, whose retries are
//! decided here from the rows they lock, cost a second.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use tokio_postgres::types::ToSql;

use super::notify::{self, ended};
use super::push;
use super::rows::{self, int, PgResult};
use super::Db;
use crate::protocol::{STATUS_CANCELLED, STATUS_COMPLETED};
use crate::scheduler::retry::Jitter;
use crate::store::backend::Interest;
use crate::store::decide::{self, AfterAttempt, Stored};
use crate::store::ops::COLUMNS;
use crate::store::{Batch, BatchResult, Finished, Inserted, NewExecution};

type Params<'p> = Vec<&'p (dyn ToSql + Sync)>;

/// What handing an attempt back does to its row (`$4`: now): queued again with the attempt
/// uncounted and due at once whatever a claimer's clock says (as when it was created), or,
/// when its cancel was asked, ended cancelled.
pub const RELEASE: &str = "state = CASE WHEN e.cancel_requested THEN 4 ELSE 0 END, \
  attempt = CASE WHEN e.cancel_requested THEN e.attempt ELSE e.attempt - 1 END, \
  owner = CASE WHEN e.cancel_requested THEN e.owner ELSE NULL END, \
  finalized_at = CASE WHEN e.cancel_requested THEN $4::float8 ELSE NULL END, \
  lease_expires_at = NULL, scheduled_at = e.created_at";

/// The batch's statements for one schema, built once.
pub struct BatchSql {
  insert: String,
  insert_plain: String,
  /// `insert_plain` with the notification of new work (`$18`: the channel) and pushes to an
  /// idle worker, for a batch of keyless submissions only: one statement, so no BEGIN or
  /// COMMIT (it commits alone).
  insert_alone: String,
  complete: String,
  recorded: String,
  failing: String,
  fail: String,
  progress: String,
  release: String,
  lock: String,
  claim: String,
  key_owner: String,
  /// Settles tries `$2` of executor `$1` whose answers were lost: an empty record for each
  /// that has none (waiting for one under way), so it can never commit later.
  fence: String,
  /// The records of tries `$2` of executor `$1`.
  batches: String,
}

impl BatchSql {
  /// `s`: the quoted schema; `sequence`: the qualified name of the sequence of ids, as a
  /// string literal (`quote_literal`).
  pub fn new(s: &str, sequence: &str) -> BatchSql {
    // A constant, resolved once when the statement is planned (not a lookup per row).
    let next_id = format!("nextval({sequence}::regclass)");
    // The submissions as rows with their ids (`input`), and their insert (`ins`, its
    // closing parenthesis left to the statement): the keyed and the plain insert start so.
    let input = format!(
      "input AS MATERIALIZED (SELECT u.*, {next_id} AS new_id \
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int4[], $7::text[], $8::int4[], \
                       $9::float8[], $10::int4[], $11::float8[], $12::float8[], $13::int8[]) WITH ORDINALITY \
             AS u(agent, task, options, level, priority, mode, key, max_attempts, retry_delay_ms, backoff, timeout_ms, start_after, \
                  seq, ord))"
    );
    let columns =
      "id, agent, task, options, level, priority, mode, key, state, max_attempts, retry_delay_ms, backoff, \
                   timeout_ms, created_at, scheduled_at";
    let values = "i.new_id, i.agent, i.task, i.options, i.level, i.priority, i.mode, i.key";
    let rest = "i.max_attempts, i.retry_delay_ms, i.backoff, i.timeout_ms, $14, greatest($14, i.start_after)";
    let insert_rows = format!(
      "WITH {input}, \
         ins AS (INSERT INTO {s}.bmad_executions ({columns}) SELECT {values}, 0, {rest} FROM input i ORDER BY i.ord"
    );
    // The record of the numbered submissions `{from}` inserted, under this try's number
    // (`$17`; see the `bmad_batches` migration), and the removal of the records of tries
    // whose answers this executor has had (`$16`).
    let record = |from: &str| {
      format!(
        "batch_record AS (INSERT INTO {s}.bmad_batches (owner, batch, seqs, ids, recorded_at) \
           SELECT $15, $17, array_agg(i.seq ORDER BY i.ord), array_agg(i.new_id ORDER BY i.ord), $14 \
           FROM {from} WHERE i.seq > 0 HAVING count(*) > 0), \
         forgotten AS (DELETE FROM {s}.bmad_batches WHERE owner = $15 AND batch = ANY($16::int8[]))"
      )
    };
    BatchSql {
      // Ids are drawn first, so each input row knows its own. A key already live (or
      // earlier in this batch) makes the insert do nothing: the row gets that execution's
      // id. Joins, not subqueries per row: a batch may hold thousands.
      insert: format!(
        "{insert_rows} \
           ON CONFLICT DO NOTHING RETURNING id, key), \
         {record} \
         SELECT i.key, mine.id, coalesce(other.id, live.id) \
         FROM input i \
         LEFT JOIN ins mine ON mine.id = i.new_id \
         LEFT JOIN ins other ON mine.id IS NULL AND other.key = i.key \
         LEFT JOIN LATERAL (SELECT x.id FROM {s}.bmad_executions x \
                            WHERE mine.id IS NULL AND other.id IS NULL AND x.key = i.key AND x.state <= 1) live ON true \
         ORDER BY i.ord",
        record = record("input i JOIN ins m ON m.id = i.new_id")
      ),
      // Submissions without keys: each is inserted. The same columns as the statement above.
      insert_plain: format!(
        "{insert_rows}), \
         {record} \
         SELECT key, new_id, NULL::int8 FROM input ORDER BY ord",
        record = record("input i")
      ),
      // The same, pushing what it can to an idle worker (see `push`), with the notification
      // of new work for the rest.
      insert_alone: format!(
        "WITH {input}, {taking}, \
           ins AS (INSERT INTO {s}.bmad_executions ({columns}, attempt, owner, lease_expires_at, attempted_at) \
             SELECT {values}, CASE WHEN g.owner IS NULL THEN 0 ELSE 1 END, {rest}, \
                    CASE WHEN g.owner IS NULL THEN 0 ELSE 1 END, g.owner, $14 + g.lease_ms, \
                    CASE WHEN g.owner IS NULL THEN NULL ELSE $14::float8 END \
             FROM input i LEFT JOIN given g ON g.new_id = i.new_id ORDER BY i.ord RETURNING {COLUMNS}), \
           {record}, {telling} \
         SELECT key, new_id, NULL::int8 FROM input WHERE (SELECT count(*) FROM notified) >= 0 ORDER BY ord",
        taking = push::taking(s),
        telling = push::telling(s),
        record = record("input i")
      ),
      fence: format!(
        "INSERT INTO {s}.bmad_batches (owner, batch, seqs, ids, recorded_at) \
         SELECT $1, b, '{{}}', '{{}}', $3 FROM unnest($2::int8[]) b ON CONFLICT DO NOTHING"
      ),
      batches: format!("SELECT batch, seqs, ids FROM {s}.bmad_batches WHERE owner = $1 AND batch = ANY($2::int8[])"),
      // Completions: only the owner of a running attempt completes it.
      //
      // Every statement over arrays of ids finds each row through the primary key, from
      // the array (`e.id = u.id`), and compares `state + 0`: with `state = 1` the plan (a
      // generic one, made once) read the owner's running rows through their index and
      // scanned the whole array again for each of them, n² steps (at 512 completions, 88
      // µs each instead of 11).
      // The rows it completed are told ended (`$6`: the channel) by the statement itself:
      // a stale completion changes nothing and names nothing.
      complete: format!(
        "WITH done AS ( \
           UPDATE {s}.bmad_executions e SET state = CASE WHEN e.cancel_requested THEN 4 ELSE 2 END, \
             result = CASE WHEN e.cancel_requested THEN NULL ELSE u.value END, \
             progress = CASE WHEN e.cancel_requested THEN e.progress ELSE 100 END, \
             lease_expires_at = NULL, finalized_at = $5 \
           FROM unnest($1::int8[], $2::int4[], $3::text[]) u(id, attempt, value) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $4 AND e.state + 0 = 1 \
           RETURNING e.id, e.attempt, e.state), \
         told AS MATERIALIZED ({told}) \
         SELECT id, attempt, state FROM done WHERE (SELECT count(*) FROM told) >= 0",
        told = notify::ends_told("SELECT id FROM done", "$6")
      ),
      // Completions a try whose answer was lost already recorded: this owner's attempt,
      // ended with this very value. Read after the commit, only for completions that
      // changed nothing (rare), so the common batch pays no second look at its rows.
      // `state + 0`: looked up by id, never through the index of every ended row. (One a
      // cancel overruled is not told apart from a rescue's cancel: it answers stale.)
      recorded: format!(
        "SELECT e.id, e.attempt, e.state FROM {s}.bmad_executions e JOIN unnest($1::int8[], $2::int4[], $3::text[]) u(id, attempt, value) \
           ON e.id = u.id AND e.attempt = u.attempt \
         WHERE e.owner = $4 AND e.state + 0 = 2 AND e.result IS NOT DISTINCT FROM u.value"
      ),
      // Failures and cancels to decide (running), or already recorded by a try whose answer
      // was lost: ended with this very error, or queued again for a retry with it (the owner
      // is cleared then, and the attempt counted at the next claim).
      failing: format!(
        "SELECT e.id, e.attempt, e.max_attempts, e.retry_delay_ms, e.backoff, e.cancel_requested, e.state, \
           e.scheduled_at \
         FROM {s}.bmad_executions e \
         JOIN unnest($1::int8[], $2::int4[], $4::text[]) u(id, attempt, value) ON e.id = u.id AND e.attempt = u.attempt \
         WHERE (e.owner = $3 AND (e.state + 0 = 1 OR (e.state + 0 IN (3, 4) AND e.error IS NOT DISTINCT FROM u.value))) \
             OR (e.state + 0 = 0 AND e.owner IS NULL AND e.error IS NOT DISTINCT FROM u.value) FOR UPDATE OF e"
      ),
      fail: format!(
        "UPDATE {s}.bmad_executions e SET state = u.state, \
           owner = CASE WHEN u.state = 0 THEN NULL ELSE e.owner END, \
           error = CASE WHEN u.state = 0 THEN u.value ELSE coalesce(u.value, e.error) END, \
           scheduled_at = CASE WHEN u.state = 0 THEN u.due ELSE e.scheduled_at END, \
           finalized_at = CASE WHEN u.state = 0 THEN NULL ELSE $6::float8 END, \
           lease_expires_at = NULL \
         FROM unnest($1::int8[], $2::int4[], $3::int2[], $4::text[], $5::float8[]) u(id, attempt, state, value, due) \
         WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $7 AND e.state + 0 = 1"
      ),
      progress: format!(
        "UPDATE {s}.bmad_executions e SET progress = u.p FROM unnest($1::int8[], $2::int4[], $3::float8[]) u(id, attempt, p) \
         WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $4 AND e.state + 0 = 1"
      ),
      // Of the attempts handed back, those that ended (cancelled) are told (`$5`: the
      // channel); the others are queued again.
      release: format!(
        "WITH back AS ( \
           UPDATE {s}.bmad_executions e SET {RELEASE} \
           FROM unnest($1::int8[], $2::int4[]) u(id, attempt) \
           WHERE e.id = u.id AND e.attempt = u.attempt AND e.owner = $3 AND e.state + 0 = 1 RETURNING e.id, e.state) \
         {told}",
        told = notify::ends_told("SELECT id FROM back WHERE state = 4", "$5")
      ),
      // Agents with a global limit are claimed only under their lock (a try: one held by
      // another executor's claim leaves them for the next round). The agents locked are
      // kept in a transaction-local setting for the claim that follows. Only agents of
      // interest are tried (the OFFSET 0 keeps the planner from trying the lock, the
      // cheaper condition, first: it would lock agents this executor does not run). Also
      // answers how many agents of interest have a limit: with none, a claim alone needs
      // no lock (it never takes a limited agent's executions).
      lock: format!(
        "WITH mine AS MATERIALIZED (SELECT agent FROM {s}.bmad_limits WHERE $1 OR agent = ANY($2)) \
         SELECT set_config('bmad.locked', coalesce(( \
           SELECT json_agg(agent)::text FROM (SELECT agent FROM mine WHERE agent <> ALL($3) OFFSET 0) m \
           WHERE pg_try_advisory_xact_lock(hashtextextended($4 || agent, 0))), '[]'), true), \
           (SELECT count(*) FROM mine)"
      ),
      // A statement after the lock's, so its snapshot sees the claims of the lock's earlier
      // holders: counting running executions and claiming more is one step across hosts.
      // Each agent's queue is read from its index in order, the best `$7` of all are taken,
      // and updated through the primary key: one scan over every queued row (`agent =
      // ANY(…)`, or the planner's choice for "any agent") would read and sort them all.
      // Rows locked but not taken (several agents' queues read) were skipped by claims
      // meanwhile: `spill` then announces work, for them to look again after the commit.
      // With any agent of interest, the agents with queued work are found by skipping
      // through the queue index, one probe each.
      claim: format!(
        "WITH RECURSIVE queued(agent) AS ( \
           (SELECT agent FROM {s}.bmad_executions WHERE $4 AND state = 0 ORDER BY agent LIMIT 1) \
           UNION ALL \
           SELECT (SELECT e.agent FROM {s}.bmad_executions e WHERE e.state = 0 AND e.agent > q.agent ORDER BY e.agent LIMIT 1) \
           FROM queued q WHERE q.agent IS NOT NULL), \
         locked AS ( \
           SELECT jsonb_array_elements_text(coalesce(nullif(current_setting('bmad.locked', true), ''), '[]')::jsonb) AS agent), \
         quota AS ( \
           SELECT l.agent, l.global_concurrency - (SELECT count(*) FROM {s}.bmad_executions r \
                                                  WHERE r.state = 1 AND r.agent = l.agent) AS q \
           FROM {s}.bmad_limits l WHERE l.agent IN (SELECT agent FROM locked)), \
         agents AS ( \
           SELECT a.agent FROM ( \
             SELECT unnest($5::text[]) AS agent WHERE NOT $4 \
             UNION ALL SELECT agent FROM queued WHERE agent IS NOT NULL) a \
           WHERE a.agent <> ALL($6) AND NOT EXISTS (SELECT 1 FROM {s}.bmad_limits l WHERE l.agent = a.agent)), \
         free AS ( \
           SELECT c.id, c.priority FROM agents CROSS JOIN LATERAL ( \
             SELECT id, priority FROM {s}.bmad_executions e \
             WHERE e.state = 0 AND e.agent = agents.agent AND (e.scheduled_at <= $3 OR e.scheduled_at <= e.created_at) \
             ORDER BY priority DESC, id LIMIT $7 FOR UPDATE SKIP LOCKED) c), \
         limited AS ( \
           SELECT c.id, c.priority FROM quota CROSS JOIN LATERAL ( \
             SELECT id, priority FROM {s}.bmad_executions e \
             WHERE e.state = 0 AND e.agent = quota.agent AND (e.scheduled_at <= $3 OR e.scheduled_at <= e.created_at) \
             ORDER BY priority DESC, id LIMIT greatest(least(quota.q, $7), 0) FOR UPDATE SKIP LOCKED) c), \
         picked AS ( \
           SELECT id FROM (SELECT * FROM free UNION ALL SELECT * FROM limited) u ORDER BY priority DESC, id LIMIT $7), \
         spill AS MATERIALIZED ( \
           SELECT pg_notify($8, 'w') WHERE (SELECT count(*) FROM free) + (SELECT count(*) FROM limited) > (SELECT count(*) FROM picked)) \
         UPDATE {s}.bmad_executions e SET state = 1, attempt = e.attempt + 1, owner = $1, lease_expires_at = $2, attempted_at = $3 \
         WHERE e.id = ANY(ARRAY(SELECT id FROM picked)) AND (SELECT count(*) FROM spill) >= 0 \
         RETURNING {COLUMNS}, EXISTS (SELECT 1 FROM {s}.bmad_limits l WHERE l.agent = e.agent)"
      ),
      key_owner: format!(
        "SELECT id FROM {s}.bmad_executions WHERE key = $1 ORDER BY (state <= 1) DESC, id DESC LIMIT 1"
      ),
    }
  }

  /// The statement that settles lost tries (`$1` owner, `$2` tries, `$3` now).
  pub fn fence(&self) -> &str {
    &self.fence
  }

  /// Every statement a batch may send, to prepare before a pipeline: a statement prepared
  /// inside one would be sent after the requests behind it.
  pub fn all(&self) -> [&str; 12] {
    [
      &self.insert,
      &self.insert_plain,
      &self.insert_alone,
      &self.complete,
      &self.recorded,
      &self.failing,
      &self.fail,
      &self.progress,
      &self.release,
      &self.lock,
      &self.claim,
      notify::SQL,
    ]
  }
}

#[cfg(test)]
impl BatchSql {
  /// The statements over arrays of ids, by name.
  pub(crate) fn by_ids(&self) -> [(&'static str, &str); 6] {
    [
      ("complete", &self.complete),
      ("recorded", &self.recorded),
      ("failing", &self.failing),
      ("fail", &self.fail),
      ("progress", &self.progress),
      ("release", &self.release),
    ]
  }
}

/// `fut` when `cond`, else nothing (and nothing is sent).
async fn when<T>(cond: bool, fut: impl Future<Output = PgResult<T>>) -> PgResult<Option<T>> {
  if cond {
    fut.await.map(Some)
  } else {
    Ok(None)
  }
}

/// Who runs the batch, and where.
pub struct Ctx<'a> {
  pub db: &'a Db<'a>,
  pub sql: &'a BatchSql,
  pub channel: &'a str,
  pub schema_key: &'a str,
  pub owner: &'a str,
  pub interest: &'a Interest,
  pub now: f64,
  pub lease_ms: f64,
  /// Executions this worker runs whose agent has a global limit: their ends free a slot on
  /// every executor, so they are announced as work.
  pub limited: &'a HashSet<(i64, u32)>,
  /// This try's number, under which it records its submissions.
  pub try_no: i64,
  /// No agent of interest had a global limit a moment ago: a claim alone is one statement,
  /// without the lock's transaction (it takes no limited agent's executions either way).
  pub unlimited: bool,
  /// Tries whose answers were lost and are not settled yet, with their numbered
  /// submissions: this batch settles those it shares a submission with.
  pub lost: &'a [(i64, Vec<u64>)],
  /// What settled tries said of their submissions not sent again yet: stored with this id,
  /// or not stored (None).
  pub settled: &'a HashMap<u64, Option<i64>>,
  /// The records of tries whose answers this executor has had.
  pub forget: &'a [i64],
  /// Set once the COMMIT went through: an error after it (a read of ids) leaves a try that
  /// is stored but unanswered.
  pub committed: std::cell::Cell<bool>,
}

/// A batch's outcome, and the executions it claimed whose agent has a global limit.
pub struct Done {
  pub result: BatchResult,
  pub limited: Vec<(i64, u32)>,
  /// Whether it wrote a record (under `Ctx::try_no`).
  pub recorded: bool,
  /// How many agents of interest have a global limit, when its claim took the lock.
  pub limits: Option<i64>,
  /// Whether it removed the records of `Ctx::forget` (its insert statement does).
  pub forgot: bool,
  /// The lost tries it settled, what they said of their submissions, and which of them had
  /// committed (their records can go once this answer is had).
  pub settled: Vec<i64>,
  pub found: HashMap<u64, Option<i64>>,
  pub committed: Vec<i64>,
}

/// The insert statement's arrays.
struct InsertArgs<'a> {
  agents: Vec<&'a str>,
  tasks: Vec<&'a str>,
  options: Vec<Option<&'a str>>,
  levels: Vec<&'a str>,
  priorities: Vec<i64>,
  modes: Vec<i32>,
  keys: Vec<Option<&'a str>>,
  max_attempts: Vec<i32>,
  delays: Vec<f64>,
  backoffs: Vec<i32>,
  timeouts: Vec<f64>,
  start_after: Vec<f64>,
  seqs: Vec<i64>,
}

impl<'a> InsertArgs<'a> {
  /// The submissions `inserts`, with their numbers (0: none).
  fn new(inserts: &[&'a NewExecution]) -> InsertArgs<'a> {
    InsertArgs {
      agents: inserts.iter().map(|n| n.agent.as_str()).collect(),
      tasks: inserts.iter().map(|n| n.task.as_str()).collect(),
      options: inserts.iter().map(|n| n.options.as_deref()).collect(),
      levels: inserts.iter().map(|n| n.level.as_str()).collect(),
      priorities: inserts.iter().map(|n| n.priority).collect(),
      modes: inserts.iter().map(|n| int(n.mode)).collect(),
      keys: inserts.iter().map(|n| n.key.as_deref()).collect(),
      max_attempts: inserts.iter().map(|n| int(n.max_attempts.max(1))).collect(),
      delays: inserts.iter().map(|n| n.retry_delay_ms).collect(),
      backoffs: inserts.iter().map(|n| int(n.backoff)).collect(),
      timeouts: inserts.iter().map(|n| n.timeout_ms).collect(),
      start_after: inserts.iter().map(|n| n.start_after).collect(),
      seqs: inserts
        .iter()
        .map(|n| i64::try_from(n.seq).unwrap_or(0))
        .collect(),
    }
  }

  fn params<'p>(&'p self, now: &'p f64, cx: &'p Ctx<'p>) -> Params<'p> {
    vec![
      &self.agents,
      &self.tasks,
      &self.options,
      &self.levels,
      &self.priorities,
      &self.modes,
      &self.keys,
      &self.max_attempts,
      &self.delays,
      &self.backoffs,
      &self.timeouts,
      &self.start_after,
      &self.seqs,
      now,
      &cx.owner,
      &cx.forget,
      &cx.try_no,
    ]
  }
}

/// Runs `batch` in one transaction, committed when this returns `Ok`. On `Err` the
/// transaction may still be open (the caller rolls back), or committed already when a read
/// after the commit failed (`recorded`, the ids of keys; `Ctx::committed` says so).
pub async fn run(cx: &Ctx<'_>, batch: &Batch, jitter: &mut Jitter) -> PgResult<Done> {
  let db = cx.db;
  let sql = cx.sql;
  let now = cx.now;
  let mut out = BatchResult {
    finished: vec![Finished::Stale; batch.finishes.len()],
    ..BatchResult::default()
  };

  // Lost tries this batch shares a submission with are settled first: each gets its record,
  // or an empty one if it has none (so it can never commit later); a submission found
  // recorded gets its id from there and is not inserted again.
  let settling: Vec<&(i64, Vec<u64>)> = if cx.lost.is_empty() {
    Vec::new()
  } else {
    let touched: HashSet<u64> = batch.inserts.iter().map(|n| n.seq).filter(|&s| s > 0).collect();
    cx.lost
      .iter()
      .filter(|(_, seqs)| seqs.iter().any(|s| touched.contains(s)))
      .collect()
  };
  let mut found: HashMap<u64, Option<i64>> = HashMap::new();
  let mut stored_tries = Vec::new();
  if !settling.is_empty() {
    let tries: Vec<i64> = settling.iter().map(|(t, _)| *t).collect();
    db.batch_execute("BEGIN").await?;
    db.execute(&sql.fence, &[&cx.owner, &tries, &now]).await?;
    for (_, seqs) in &settling {
      found.extend(seqs.iter().map(|&s| (s, None)));
    }
    for r in db.query(&sql.batches, &[&cx.owner, &tries]).await? {
      let (t, seqs, ids): (i64, Vec<i64>, Vec<i64>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
      if !seqs.is_empty() {
        stored_tries.push(t);
      }
      for (s, id) in seqs.into_iter().zip(ids) {
        found.insert(u64::try_from(s).unwrap_or(0), Some(id));
      }
    }
  }
  // Nothing settled (the rule): every submission is sent, no lookup per submission.
  let looked_up = !found.is_empty() || !cx.settled.is_empty();
  let known = |n: &NewExecution| -> Option<i64> {
    if !looked_up || n.seq == 0 {
      return None;
    }
    // An id found anywhere wins: a later try that sent nothing of `n` has no record of it.
    found
      .get(&n.seq)
      .copied()
      .flatten()
      .or_else(|| cx.settled.get(&n.seq).copied().flatten())
  };
  let sent: Vec<&NewExecution> = batch.inserts.iter().filter(|n| known(n).is_none()).collect();
  let inserts = InsertArgs::new(&sent);
  let insert_params = inserts.params(&now, cx);
  let careful = sent.iter().any(|n| n.key.is_some());
  let insert_sql = if careful { &sql.insert } else { &sql.insert_plain };

  let claiming = batch.claim > 0 && !cx.interest.none;
  // Keyless submissions and nothing else (a producer's batch): one statement, which
  // commits alone (no transaction is open here: every batch ends with COMMIT or ROLLBACK,
  // and a connection left waiting is replaced).
  let alone = settling.is_empty()
    && !careful
    && !sent.is_empty()
    && batch.finishes.is_empty()
    && batch.progress.is_empty()
    && batch.releases.is_empty()
    && !claiming;
  if alone {
    let mut params = insert_params;
    params.push(&cx.channel);
    let rows = db.query(&sql.insert_alone, &params).await?;
    cx.committed.set(true);
    let ids = inserted_ids(db, sql, &rows).await?;
    let recorded = records(&ids, &inserts.seqs, false);
    out.inserted = answers(batch, &known, ids.into_iter());
    return Ok(Done {
      result: out,
      limited: Vec::new(),
      recorded,
      limits: None,
      forgot: true,
      settled: Vec::new(),
      found,
      committed: stored_tries,
    });
  }

  let done: Vec<usize> = (0..batch.finishes.len())
    .filter(|&i| batch.finishes[i].status == STATUS_COMPLETED)
    .collect();
  let done_ids: Vec<i64> = done.iter().map(|&i| batch.finishes[i].id).collect();
  let done_attempts: Vec<i32> = done.iter().map(|&i| int(batch.finishes[i].attempt)).collect();
  let done_values: Vec<Option<&str>> = done.iter().map(|&i| batch.finishes[i].value.as_deref()).collect();
  let done_params: Params = vec![
    &done_ids,
    &done_attempts,
    &done_values,
    &cx.owner,
    &now,
    &cx.channel,
  ];

  let rest: Vec<usize> = (0..batch.finishes.len())
    .filter(|&i| batch.finishes[i].status != STATUS_COMPLETED)
    .collect();
  let rest_ids: Vec<i64> = rest.iter().map(|&i| batch.finishes[i].id).collect();
  let rest_attempts: Vec<i32> = rest.iter().map(|&i| int(batch.finishes[i].attempt)).collect();
  let rest_values: Vec<Option<&str>> = rest.iter().map(|&i| batch.finishes[i].value.as_deref()).collect();
  let failing_params: Params = vec![&rest_ids, &rest_attempts, &cx.owner, &rest_values];

  let p_ids: Vec<i64> = batch.progress.iter().map(|p| p.id).collect();
  let p_attempts: Vec<i32> = batch.progress.iter().map(|p| int(p.attempt)).collect();
  let p_percents: Vec<f64> = batch.progress.iter().map(|p| p.percent).collect();
  let progress_params: Params = vec![&p_ids, &p_attempts, &p_percents, &cx.owner];

  let r_ids: Vec<i64> = batch.releases.iter().map(|r| r.id).collect();
  let r_attempts: Vec<i32> = batch.releases.iter().map(|r| int(r.attempt)).collect();
  let release_params: Params = vec![&r_ids, &r_attempts, &cx.owner, &now, &cx.channel];

  let i = cx.interest;
  let lock_params: Params = vec![&i.any, &i.agents, &batch.exclude, &cx.schema_key];
  let lease = now + cx.lease_ms;
  let limit = i64::from(batch.claim);
  let claim_params: Params = vec![
    &cx.owner,
    &lease,
    &now,
    &i.any,
    &i.agents,
    &batch.exclude,
    &limit,
    &cx.channel,
  ];

  // Without failures, the whole transaction goes at once: what it tells others besides its
  // statements' own notices (work, see `notes_for`) is known before.
  let one_trip = rest.is_empty();
  // A claim and nothing else, with no agent of interest limited: one statement, committing
  // alone (no transaction is open here, as for a lone insert).
  let lone = claiming
    && cx.unlimited
    && settling.is_empty()
    && sent.is_empty()
    && batch.finishes.is_empty()
    && batch.progress.is_empty()
    && batch.releases.is_empty();
  let notes = if one_trip {
    notes_for(batch, &[], cx.limited)
  } else {
    Vec::new()
  };
  let notify_params: Params = vec![&cx.channel, &notes];

  let (begun, inserted, completed, failing, progressed, released, locked, claimed, noted, committed) = tokio::join!(
    biased;
    when(settling.is_empty() && !lone, db.batch_execute("BEGIN")),
    when(!sent.is_empty(), db.query(insert_sql, &insert_params)),
    when(!done.is_empty(), db.query(&sql.complete, &done_params)),
    when(!rest.is_empty(), db.query(&sql.failing, &failing_params)),
    when(!batch.progress.is_empty(), db.execute(&sql.progress, &progress_params)),
    when(!batch.releases.is_empty(), db.execute(&sql.release, &release_params)),
    when(claiming && one_trip && !lone, db.query_one(&sql.lock, &lock_params)),
    when(claiming && one_trip, db.query(&sql.claim, &claim_params)),
    when(one_trip && !notes.is_empty(), db.execute(notify::SQL, &notify_params)),
    when(one_trip && !lone, db.batch_execute("COMMIT")),
  );
  // The first error is the cause; the ones after it say only that the transaction failed.
  begun?;
  let inserted = inserted?;
  let completed = completed?;
  let failing = failing?;
  progressed?;
  released?;
  let locked = locked?;
  let mut claimed = claimed?;
  noted?;
  committed?;
  cx.committed.set(one_trip);
  let mut limits = locked.map(|r| r.try_get::<_, i64>(1)).transpose()?;

  for r in completed.iter().flatten() {
    mark_recorded(&mut out.finished, batch, &done, r)?;
  }

  if let Some(stored) = failing {
    // The failures' outcomes, decided from their locked rows, then the rest of the batch.
    let (mut w_ids, mut w_attempts, mut w_states, mut w_values, mut w_due) = (
      Vec::<i64>::new(),
      Vec::<i32>::new(),
      Vec::<i16>::new(),
      Vec::<Option<&str>>::new(),
      Vec::<Option<f64>>::new(),
    );
    for r in &stored {
      let (id, attempt): (i64, i32) = (r.try_get(0)?, r.try_get(1)?);
      let Some(&i) = rest
        .iter()
        .find(|&&i| batch.finishes[i].id == id && int(batch.finishes[i].attempt) == attempt)
      else {
        continue;
      };
      let state: i16 = r.try_get(6)?;
      let f = &batch.finishes[i];
      if state != 1 {
        out.finished[i] = if state == 0 {
          Finished::Retry((r.try_get::<_, f64>(7)? - now).max(0.0))
        } else {
          Finished::Recorded
        };
        continue;
      }
      let st = Stored {
        max_attempts: u32::try_from(r.try_get::<_, i32>(2)?).unwrap_or(1),
        retry_delay_ms: r.try_get(3)?,
        backoff: u32::try_from(r.try_get::<_, i32>(4)?).unwrap_or(0),
        cancel_requested: r.try_get(5)?,
      };
      // A failure after a cancel was asked: the cancel's error stays.
      let overruled = st.cancel_requested && f.status != STATUS_CANCELLED;
      let (state, due) = match decide::after_attempt(f.status, f.retryable, f.attempt, st, jitter) {
        AfterAttempt::Retry(delay) => {
          out.finished[i] = Finished::Retry(delay);
          (0i16, Some(now + delay))
        }
        AfterAttempt::End(status) => {
          out.finished[i] = if overruled {
            Finished::Cancelled
          } else {
            Finished::Recorded
          };
          (i16::try_from(status).unwrap_or(3), None)
        }
      };
      w_ids.push(id);
      w_attempts.push(attempt);
      w_states.push(state);
      w_values.push(if overruled { None } else { f.value.as_deref() });
      w_due.push(due);
    }
    let fail_params: Params = vec![&w_ids, &w_attempts, &w_states, &w_values, &w_due, &now, &cx.owner];
    let notes = notes_for(batch, &out.finished, cx.limited);
    let notify_params: Params = vec![&cx.channel, &notes];
    let (failed, locked, claimed_now, noted, committed) = tokio::join!(
      biased;
      when(!w_ids.is_empty(), db.execute(&sql.fail, &fail_params)),
      when(claiming, db.query_one(&sql.lock, &lock_params)),
      when(claiming, db.query(&sql.claim, &claim_params)),
      when(!notes.is_empty(), db.execute(notify::SQL, &notify_params)),
      db.batch_execute("COMMIT"),
    );
    failed?;
    let locked = locked?;
    claimed = claimed_now?;
    noted?;
    committed?;
    cx.committed.set(true);
    limits = locked.map(|r| r.try_get::<_, i64>(1)).transpose()?;
  }

  let unheard: Vec<usize> = done
    .iter()
    .copied()
    .filter(|&i| out.finished[i] == Finished::Stale)
    .collect();
  if !unheard.is_empty() {
    let ids: Vec<i64> = unheard.iter().map(|&i| batch.finishes[i].id).collect();
    let attempts: Vec<i32> = unheard.iter().map(|&i| int(batch.finishes[i].attempt)).collect();
    let values: Vec<Option<&str>> = unheard
      .iter()
      .map(|&i| batch.finishes[i].value.as_deref())
      .collect();
    for r in db
      .query(&sql.recorded, &[&ids, &attempts, &values, &cx.owner])
      .await?
    {
      mark_recorded(&mut out.finished, batch, &unheard, &r)?;
    }
  }
  let mut recorded = false;
  let mut fresh = Vec::new().into_iter();
  if let Some(rows) = inserted {
    let ids = inserted_ids(db, sql, &rows).await?;
    recorded = records(&ids, &inserts.seqs, careful);
    fresh = ids.into_iter();
  }
  out.inserted = answers(batch, &known, fresh);
  out.stale = out.finished.iter().filter(|f| **f == Finished::Stale).count() as u32;
  let rows = claimed.unwrap_or_default();
  let mut limited = Vec::new();
  for r in &rows {
    if r.try_get::<_, bool>(21)? {
      limited.push((
        r.try_get::<_, i64>(0)?,
        u32::try_from(r.try_get::<_, i32>(9)?).unwrap_or(0),
      ));
    }
  }
  let mut claimed = rows::rows(&rows)?;
  claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
  out.claimed = claimed;
  Ok(Done {
    result: out,
    limited,
    recorded,
    limits,
    forgot: !sent.is_empty(),
    settled: settling.iter().map(|(t, _)| *t).collect(),
    found,
    committed: stored_tries,
  })
}

/// Whether an insert wrote a record: it holds what was inserted of the numbered submissions
/// (`seqs`), all of a plain insert's, a careful one's own rows.
fn records(ids: &[Inserted], seqs: &[i64], careful: bool) -> bool {
  ids
    .iter()
    .zip(seqs)
    .any(|(i, &s)| (!careful || !i.existing) && s > 0)
}

/// Each submission's id: one found recorded, else the next of those inserted (`fresh`, one
/// row per submission sent, in order).
fn answers(
  batch: &Batch,
  known: &dyn Fn(&NewExecution) -> Option<i64>,
  mut fresh: impl Iterator<Item = Inserted>,
) -> Vec<Inserted> {
  batch
    .inserts
    .iter()
    .filter_map(|n| match known(n) {
      Some(id) => Some(Inserted { id, existing: false }),
      None => fresh.next(),
    })
    .collect()
}

/// The completion among `which` that row `r` (id, attempt, state written) answers is
/// recorded: as completed, or cancelled when a cancel was asked while it ran.
fn mark_recorded(
  finished: &mut [Finished],
  batch: &Batch,
  which: &[usize],
  r: &tokio_postgres::Row,
) -> PgResult<()> {
  let (id, attempt, state): (i64, i32, i16) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
  if let Some(&i) = which
    .iter()
    .find(|&&i| batch.finishes[i].id == id && int(batch.finishes[i].attempt) == attempt)
  {
    finished[i] = if u32::try_from(state) == Ok(STATUS_CANCELLED) {
      Finished::Cancelled
    } else {
      Finished::Recorded
    };
  }
  Ok(())
}

/// Each submission's id from the insert's rows: its own, or that of the execution holding
/// its key. A key whose row was committed after the insert's snapshot is read again (after
/// the commit: that row is committed, whichever host wrote it).
async fn inserted_ids(db: &Db<'_>, sql: &BatchSql, rows: &[tokio_postgres::Row]) -> PgResult<Vec<Inserted>> {
  let mut out = Vec::with_capacity(rows.len());
  for r in rows {
    if let Some(id) = r.try_get::<_, Option<i64>>(1)? {
      out.push(Inserted { id, existing: false });
      continue;
    }
    if let Some(id) = r.try_get::<_, Option<i64>>(2)? {
      out.push(Inserted { id, existing: true });
      continue;
    }
    let key: Option<String> = r.try_get(0)?;
    let id = db.query_one(&sql.key_owner, &[&key]).await?.try_get(0)?;
    out.push(Inserted { id, existing: true });
  }
  Ok(out)
}

/// What a batch's transaction tells the other executors besides what its statements tell
/// (completions, cancelled releases): the failures it ended (`finished`: their outcomes,
/// once decided) and whether claimable work appeared (`limited`: running executions whose
/// end frees a global slot).
fn notes_for(batch: &Batch, finished: &[Finished], limited: &HashSet<(i64, u32)>) -> Vec<String> {
  let mut ended_ids: Vec<i64> = Vec::new();
  let mut work = !batch.inserts.is_empty()
    || !batch.releases.is_empty()
    || batch
      .finishes
      .iter()
      .any(|f| limited.contains(&(f.id, f.attempt)));
  for (f, r) in batch.finishes.iter().zip(finished) {
    if f.status == STATUS_COMPLETED {
      continue;
    }
    match r {
      Finished::Recorded | Finished::Cancelled => ended_ids.push(f.id),
      Finished::Retry(_) => work = true,
      Finished::Stale => {}
    }
  }
  let mut notes = ended(&ended_ids);
  if work {
    notes.push("w".to_string());
  }
  notes
}

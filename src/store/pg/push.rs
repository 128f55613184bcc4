//! Work handed to an idle worker by the submission itself ("pushes"), on PostgreSQL.
//!
//! A worker whose claim is parked (see `messages::Command::Park`) publishes it as a row of
//! `bmad_parked` (at once when it runs nothing, else after a millisecond): the agents it
//! takes, how many executions, the lease they get, a token naming this parked claim, and the
//! key of the advisory lock its listener connection holds while connected. A submission of
//! keyless executions (the insert that commits alone) takes one such row whose listener is
//! connected and that takes some of them, and stores up to its
//! `slots` of the best of them already running for that worker: due now, of agents it takes,
//! without a global limit, and none of their agent due and waiting ahead among the first
//! `LOOKED` of its queue (a candidate refused is stored queued, not replaced). It writes
//! their ids in the row and notifies `p:<token>:<rows as JSON>` on that listener's own
//! channel. The worker's listener answers its parked claim with those rows (`published`):
//! work starts without a claim's round trip. A worker's own submission pushed to its own
//! claim is answered first, then the claim is withdrawn and answered with what it got.
//!
//! Every pushed execution reaches its worker once:
//! - the notification finds the parked claim of its token and answers it;
//! - or the worker took that claim back first by deleting its row (`take`), which waits for
//!   a submission holding the row and returns the ids pushed: those rows are read and answer
//!   the claim (or go back to the queue when JS took the claim back, or at shutdown), and a
//!   late notification of that token is ignored;
//! - or the worker is gone: its rows are leased like any claim's, and rescued.
//!
//! Rows pushed while the notification is on its way are not handed back as unknown claims
//! (`release_unknown` leaves the ids of the current token's row alone).

use super::rows::PgResult;
use crate::store::ops::COLUMNS;
use crate::store::Row;
use serde_json::Value;

/// Notification payloads of a push start so: `p:<token>:<json>`.
pub const PREFIX: &str = "p:";

/// The channel a push is told on, with the listener's key: its own, so no other worker wakes
/// for it.
const CHANNEL: &str = "bmad.p.";

pub fn channel(listener: i64) -> String {
  format!("{CHANNEL}{listener}")
}

/// A listener connection's key: random, so a listener connecting again, and every other
/// one, holds another.
pub fn listener_key() -> i64 {
  // Never 0, which `notify::Listening` reads as "not listening".
  match random() as i64 {
    0 => 1,
    key => key,
  }
}

/// A random start for a worker's tokens (`PgStore::next_token`): unique across workers, as a
/// push names its claim by token alone; positive, and far from overflowing.
pub fn first_token() -> i64 {
  ((random() >> 2) & !0xffff_ffff) as i64 | 1
}

fn random() -> u64 {
  use std::hash::{BuildHasher, Hasher};
  let mut h = std::collections::hash_map::RandomState::new().build_hasher();
  h.write_u128(
    std::time::SystemTime::now()
      .duration_since(std::time::UNIX_EPOCH)
      .map_or(0, |d| d.as_nanos()),
  );
  h.finish()
}

/// The statements of pushes for one schema (`s`: quoted), built once.
pub struct PushSql {
  /// Publishes a parked claim: `$1` owner, `$2` token, `$3` any agent, `$4` agents, `$5`
  /// agents held (not taken), `$6` slots, `$7` lease ms, `$8` now, `$9` the listener's key.
  /// It replaces the worker's earlier row, whose pushes were answered.
  pub publish: String,
  /// Deletes the parked claim `$2` of `$1`; returns the ids pushed to it, if any.
  pub take: String,
  /// The pushed executions `$1` still running for `$2`.
  pub rows: String,
  /// Deletes the rows of workers whose listener is gone (`$1`: this worker) parked before
  /// `$2`, and those with pushes not taken yet (a listener reconnecting takes them) parked
  /// before `$3`. Only a matter of space: a submission passes them by.
  pub sweep: String,
}

/// Whether the parked row `p`'s listener is connected: it holds the advisory lock of its
/// key (`p.listener`, drawn at random per connection), so a shared try fails. A try that
/// succeeds holds it shared until the transaction ends: it keeps no one else from seeing the
/// same, and a listener draws a new key when it connects again.
const LISTENING: &str = "NOT pg_try_advisory_xact_lock_shared(p.listener)";

/// What a listener runs once connected: its key's lock, for as long as its session lasts.
pub const LISTENER: &str = "SELECT pg_advisory_lock($1)";

impl PushSql {
  pub fn new(s: &str) -> PushSql {
    PushSql {
      publish: format!(
        "INSERT INTO {s}.bmad_parked (owner, token, any_agent, agents, held, slots, lease_ms, parked_at, listener) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (owner) DO UPDATE SET token = excluded.token, any_agent = excluded.any_agent, agents = excluded.agents, \
           held = excluded.held, slots = excluded.slots, lease_ms = excluded.lease_ms, parked_at = excluded.parked_at, \
           listener = excluded.listener, pushed = NULL"
      ),
      take: format!("DELETE FROM {s}.bmad_parked WHERE owner = $1 AND token = $2 RETURNING pushed"),
      rows: format!(
        "SELECT {COLUMNS} FROM {s}.bmad_executions WHERE id = ANY($1) AND owner = $2 AND state = 1 ORDER BY priority DESC, id"
      ),
      sweep: format!(
        "DELETE FROM {s}.bmad_parked p WHERE p.owner <> $1 AND p.parked_at < CASE WHEN p.pushed IS NULL THEN $2::float8 ELSE $3::float8 END \
         AND NOT ({LISTENING})"
      ),
    }
  }
}

/// How many of an agent's queued executions, in the claim's order, a push looks at for one
/// due before it: a bound on the cost when many wait for a later time.
const LOOKED: u32 = 64;

/// The parts of the submission statement that push (see `batch::BatchSql`): after `input`
/// (the submissions, with `new_id`, `ord`, `agent`, `priority`, `start_after`), `taker` is
/// the parked claim taken, and `given` the ids it gets with its owner and lease (`$14`: now).
/// Only the best `slots` submissions the worker takes are candidates, so a large batch costs
/// at most that many looks at limits and queues; one that fails is not replaced.
pub fn taking(s: &str) -> String {
  format!(
    "taker AS MATERIALIZED ( \
       SELECT p.owner, p.token, p.any_agent, p.agents, p.held, p.slots, p.lease_ms, p.listener FROM {s}.bmad_parked p \
       WHERE p.pushed IS NULL AND p.slots > 0 AND {LISTENING} \
         AND EXISTS (SELECT 1 FROM input i WHERE i.start_after <= $14 AND (p.any_agent OR i.agent = ANY(p.agents)) \
                     AND i.agent <> ALL(p.held)) \
       ORDER BY p.slots DESC LIMIT 1 FOR UPDATE SKIP LOCKED), \
     given AS MATERIALIZED ( \
       SELECT c.new_id, c.owner, c.lease_ms FROM ( \
         SELECT i.new_id, i.agent, t.owner, t.lease_ms FROM input i CROSS JOIN taker t \
         WHERE i.start_after <= $14 AND (t.any_agent OR i.agent = ANY(t.agents)) AND i.agent <> ALL(t.held) \
         ORDER BY i.priority DESC, i.ord LIMIT (SELECT slots FROM taker)) c \
       WHERE NOT EXISTS (SELECT 1 FROM {s}.bmad_limits l WHERE l.agent = c.agent) \
         AND NOT EXISTS (SELECT 1 FROM (SELECT e.scheduled_at, e.created_at FROM {s}.bmad_executions e \
                                        WHERE e.state = 0 AND e.agent = c.agent ORDER BY e.priority DESC, e.id LIMIT {LOOKED}) w \
                         WHERE w.scheduled_at <= $14 OR w.scheduled_at <= w.created_at))"
  )
}

/// After `ins` (the insert, returning `COLUMNS`): the taken row notes its pushes, and the
/// worker is told on its listener's channel (`channel`); `w` is sent for the rest, if any,
/// on the schema's (`$18`). A payload over PostgreSQL's limit carries no rows: the worker
/// reads them.
pub fn telling(s: &str) -> String {
  format!(
    "took AS MATERIALIZED ( \
       UPDATE {s}.bmad_parked p SET pushed = (SELECT array_agg(new_id) FROM given) \
       FROM taker t WHERE p.owner = t.owner AND EXISTS (SELECT 1 FROM given) RETURNING t.token, t.listener), \
     rows AS (SELECT coalesce(json_agg(json_build_array({COLUMNS}) ORDER BY priority DESC, id)::text, '[]') AS j \
              FROM ins WHERE state = 1), \
     notified AS MATERIALIZED ( \
       SELECT pg_notify($18, 'w') WHERE (SELECT count(*) FROM given) < (SELECT count(*) FROM input) \
       UNION ALL \
       SELECT pg_notify('{CHANNEL}' || t.listener, '{PREFIX}' || t.token || ':' || CASE WHEN octet_length(r.j) <= 7800 THEN r.j ELSE '' END) \
       FROM took t CROSS JOIN rows r)"
  )
}

/// A push heard: its token, and its rows (`None`: too long to send, or unreadable; they are
/// read from the store).
pub fn parse(payload: &str) -> Option<(i64, Option<Vec<Row>>)> {
  let rest = payload.strip_prefix(PREFIX)?;
  let (token, json) = rest.split_once(':')?;
  let token = token.parse::<i64>().ok()?;
  let rows = serde_json::from_str::<Vec<Vec<Value>>>(json)
    .ok()
    .and_then(|rows| rows.iter().map(|r| row(r)).collect::<Option<Vec<Row>>>())
    .filter(|rows| !rows.is_empty());
  Some((token, rows))
}

/// One row of `COLUMNS` as `json_build_array` writes it.
fn row(v: &[Value]) -> Option<Row> {
  if v.len() != 21 {
    return None;
  }
  let text = |i: usize| v[i].as_str().map(str::to_string);
  let int = |i: usize| v[i].as_i64();
  let small = |i: usize| int(i).and_then(|n| u32::try_from(n).ok());
  Some(Row {
    id: int(0)?,
    agent: text(1)?,
    task: text(2)?,
    options: text(3),
    level: text(4)?,
    priority: int(5)?,
    mode: small(6)?,
    key: text(7),
    status: small(8)?,
    attempt: small(9)?,
    max_attempts: small(10)?,
    timeout_ms: float(&v[11])?,
    progress: float(&v[12])?,
    result: text(13),
    error: text(14),
    owner: text(15),
    cancel_requested: v[16].as_bool()?,
    created_at: float(&v[17])?,
    scheduled_at: float(&v[18])?,
    attempted_at: float(&v[19]),
    finalized_at: float(&v[20]),
  })
}

/// A float8 as JSON: a number, or the name of one JSON has none for.
fn float(v: &Value) -> Option<f64> {
  match v {
    Value::Number(n) => n.as_f64(),
    Value::String(s) => match s.as_str() {
      "Infinity" => Some(f64::INFINITY),
      "-Infinity" => Some(f64::NEG_INFINITY),
      "NaN" => Some(f64::NAN),
      _ => None,
    },
    _ => None,
  }
}

/// What deleting a parked row found: the ids pushed to it.
pub fn taken(rows: &[tokio_postgres::Row]) -> PgResult<Vec<i64>> {
  Ok(match rows.first() {
    Some(r) => r.try_get::<_, Option<Vec<i64>>>(0)?.unwrap_or_default(),
    None => Vec::new(),
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_push_payload_reads_back_as_rows() {
    let json = r#"[[7,"a","{}",null,"normal",5,1,null,1,1,3,"Infinity",0,null,null,"h:1:ff",false,1.5e12,1.5e12,1.5e12,null]]"#;
    let (token, rows) = parse(&format!("p:42:{json}")).expect("a push");
    assert_eq!(token, 42);
    let rows = rows.expect("rows");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
      (
        r.id,
        r.agent.as_str(),
        r.priority,
        r.status,
        r.attempt,
        r.max_attempts
      ),
      (7, "a", 5, 1, 1, 3)
    );
    assert_eq!(r.timeout_ms, f64::INFINITY);
    assert_eq!(r.owner.as_deref(), Some("h:1:ff"));
    assert_eq!((r.attempted_at, r.finalized_at), (Some(1.5e12), None));
    // Too long to send, or not ours to read: the rows are read from the store.
    assert_eq!(parse("p:42:"), Some((42, None)));
    assert_eq!(parse("p:42:[[1,2]]"), Some((42, None)));
    assert_eq!(parse("w"), None);
    assert_eq!(parse("p:x:[]"), None);
  }
}

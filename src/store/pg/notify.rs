//! Wake-ups on PostgreSQL: every transaction that others must hear of sends NOTIFYs on the
//! schema's channel, and each executor LISTENs on a connection of its own.
//!
//! Payloads: `w` (claimable work: inserted, retried, released, rescued), `l` (a global limit
//! was set or removed: work may start, and claims take the lock again), `c` (a cancel was
//! requested for a running execution), `f:<id>,<id>…` (executions that ended, each told by
//! the statement that ended it), `p:…` (executions pushed to a parked claim, see `push`),
//! and, from the listener itself, `r` after it (re)connected (anything may have been
//! missed). A payload stays under PostgreSQL's 8000 bytes: long id lists are split.
//! Releases before `f:` told ends as `e:<id>,…`, naming also attempts handed back and ends
//! that changed nothing: a host of such a release may share the schema during an upgrade,
//! so `e:` ids are read as possible ends.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::published::Published;
use super::{open_client, push, quote_ident, Db, PgTarget};
use crate::store::backend::Changes;
use crate::store::messages::Command;

/// Payload bytes PostgreSQL allows, less room for safety.
const MAX_PAYLOAD: usize = 7_900;

/// The channel of a schema's store: `bmad.<schema>`, or for a schema too long for a
/// channel name (PostgreSQL's names hold 63 bytes), `bmad.` and a hash of it, the same in
/// every process.
pub fn channel(schema: &str) -> String {
  let named = format!("bmad.{schema}");
  if named.len() <= MAX_NAME_BYTES {
    return named;
  }
  // FNV-1a, 64 bits: stable across builds and platforms, unlike std's hashers.
  let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
  });
  format!("bmad.{hash:016x}")
}

/// The longest name PostgreSQL keeps whole (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// Sends the payloads `$2` on the channel `$1` (delivered when the transaction commits).
pub const SQL: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) p";

/// Sends `payloads` on `channel` in the current transaction (delivered at its commit).
pub async fn notify(
  client: &Db<'_>,
  channel: &str,
  payloads: &[String],
) -> Result<(), tokio_postgres::Error> {
  if payloads.is_empty() {
    return Ok(());
  }
  client.execute(SQL, &[&channel, &payloads]).await?;
  Ok(())
}

/// Ids in one `f:` payload of `ends_told`: at 20 bytes for the longest id and its comma,
/// they stay under `MAX_PAYLOAD`.
const ENDS_PER_PAYLOAD: usize = 380;

/// A query that sends on the channel `channel` (a parameter, `$n`) `f:` payloads for the
/// `id`s of the query `ids`: a statement tells what it really ended.
pub fn ends_told(ids: &str, channel: &str) -> String {
  format!(
    "SELECT pg_notify({channel}, 'f:' || string_agg(id::text, ',')) \
     FROM (SELECT id, (row_number() OVER () - 1) / {ENDS_PER_PAYLOAD} AS g FROM ({ids}) i) n GROUP BY g"
  )
}

/// `f:` payloads for ended executions, split to fit.
pub fn ended(ids: &[i64]) -> Vec<String> {
  let mut out = Vec::new();
  let mut cur = String::from("f:");
  for id in ids {
    let part = id.to_string();
    if cur.len() + part.len() + 1 > MAX_PAYLOAD {
      out.push(std::mem::replace(&mut cur, String::from("f:")));
    }
    if cur.len() > 2 {
      cur.push(',');
    }
    cur.push_str(&part);
  }
  if cur.len() > 2 {
    out.push(cur);
  }
  out
}

fn ids_in(list: &str) -> impl Iterator<Item = i64> + '_ {
  list.split(',').filter_map(|s| s.parse::<i64>().ok())
}

/// Adds what one payload (not a push: see `push::parse`) says to `c`.
pub fn parse(payload: &str, c: &mut Changes) {
  c.any = true;
  match payload.split_once(':') {
    Some(("f", ids)) => c.ended.extend(ids_in(ids)),
    Some(("e", ids)) => c.maybe_ended.extend(ids_in(ids)),
    _ if payload == "c" => c.cancels = true,
    _ if payload == "l" => {
      c.limits = true;
      c.work = true;
    }
    // Anything may have been missed.
    _ if payload == "r" => {
      c.full = true;
      c.cancels = true;
      c.work = true;
    }
    _ => c.work = true,
  }
}

/// The listener's key while it listens, 0 while it does not (`pg::push` tells a worker
/// connected by its lock; a key is never 0).
pub type Listening = Arc<AtomicI64>;

/// Where a listener's payloads go.
pub struct Listener {
  /// The payloads for the store's thread, each followed by a `Wake` on `wake`.
  pub notes: std::sync::mpsc::Sender<String>,
  pub wake: Sender<Command>,
  /// The server process of this executor's statement connection: what its transactions
  /// announce, it knows already.
  pub own: Arc<AtomicI32>,
  /// The key of the connection listening (see `Listening`).
  pub listening: Listening,
  /// Set while the listener has failed to connect or listen, or lost its connection, and
  /// is trying again; cleared once it listens (see `Postgres::link_changes`).
  pub failed: Arc<AtomicBool>,
  /// The published parked claim, which a push with its rows answers from here.
  pub published: Arc<Published>,
}

/// Listens on the store's channel from a task on `rt`. A push from another executor that
/// answers the published parked claim goes no further; every other payload goes to the
/// store's thread, but those from its own connection that are not pushes. Reconnects with
/// backoff (50 ms to 5 s) and sends `r` once listening again. Stops when the thread's
/// channel is gone; abort the task to stop sooner.
pub fn listen(rt: &tokio::runtime::Handle, target: &PgTarget, to: Listener) -> JoinHandle<()> {
  let Listener {
    notes,
    wake,
    own,
    listening,
    failed,
    published,
  } = to;
  let target = target.clone();
  let listen = format!("LISTEN {}", quote_ident(&channel(&target.schema)));
  rt.spawn(async move {
    let set_listening = |key: i64| listening.store(key, Ordering::Relaxed);
    // The store's thread hears of a failure at once (it reports it and looks more often).
    let fail = || !failed.swap(true, Ordering::Relaxed) && wake.send(Command::Wake).is_err();
    let mut pause = Duration::from_millis(50);
    loop {
      let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
      if let Ok(client) = open_client(&target, Some(tx)).await {
        // A key of its own, its lock held while this session lasts, and its channel for
        // pushes.
        let key = push::listener_key();
        let me = match client.batch_execute(&listen).await {
          Ok(()) => client.execute(push::LISTENER, &[&key]).await.ok(),
          Err(_) => None,
        };
        let me = match me {
          Some(_) => {
            let own = format!("LISTEN {}", quote_ident(&push::channel(key)));
            client.batch_execute(&own).await.ok().map(|_| key)
          }
          None => None,
        };
        if let Some(me) = me {
          pause = Duration::from_millis(50);
          set_listening(me);
          failed.store(false, Ordering::Relaxed);
          if notes.send("r".to_string()).is_err() || wake.send(Command::Wake).is_err() {
            return;
          }
          // Ends when the connection does.
          while let Some(n) = rx.recv().await {
            let payload = n.payload();
            let from_own = n.process_id() == own.load(Ordering::Relaxed);
            if payload.starts_with(push::PREFIX) {
              // A push of this executor's own submission goes to the store's thread, which
              // answers the submission first (JS must know an execution before it runs it).
              if !from_own {
                if let Some((token, Some(rows))) = push::parse(payload) {
                  if published.answer(token, rows) {
                    continue;
                  }
                }
              }
            } else if from_own {
              continue;
            }
            if notes.send(n.payload().to_string()).is_err() || wake.send(Command::Wake).is_err() {
              set_listening(0);
              return;
            }
          }
          set_listening(0);
        }
      }
      if fail() {
        return;
      }
      tokio::time::sleep(pause).await;
      pause = (pause * 2).min(Duration::from_secs(5));
    }
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn ended_ids_are_split_under_the_payload_limit_and_parsed_back() {
    let ids: Vec<i64> = (1_000_000_000..1_000_002_000).collect();
    let payloads = ended(&ids);
    assert!(payloads.len() > 1);
    assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
    let mut c = Changes::default();
    for p in &payloads {
      parse(p, &mut c);
    }
    assert_eq!(c.ended, ids);
    assert!(
      c.any && !c.full && !c.cancels && !c.work,
      "ends alone are no work"
    );
    // An older release's notice: possible ends, never taken for true ones.
    let mut c = Changes::default();
    parse("e:7,8", &mut c);
    assert_eq!((c.ended.len(), c.maybe_ended), (0, vec![7, 8]));
    assert!(c.any && !c.work);
    let heard = |p: &str| {
      let mut c = Changes::default();
      parse(p, &mut c);
      c
    };
    assert_eq!(
      heard("w"),
      Changes {
        any: true,
        work: true,
        ..Changes::default()
      }
    );
    assert_eq!(
      heard("c"),
      Changes {
        any: true,
        cancels: true,
        ..Changes::default()
      }
    );
    assert_eq!(
      heard("l"),
      Changes {
        any: true,
        work: true,
        limits: true,
        ..Changes::default()
      },
      "a limit set: work may start, and claims take the lock"
    );
    assert_eq!(
      heard("r"),
      Changes {
        any: true,
        full: true,
        work: true,
        cancels: true,
        ..Changes::default()
      }
    );
    assert!(ended(&[]).is_empty());
  }
}

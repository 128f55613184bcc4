//! Against a real server: `BMAD_TEST_PG_URL` (set by `node scripts/pg-cluster.mjs run -- …`,
//! which `npm run test:rust` uses). Without it these tests say so and check nothing else.
// A test reads rows with `get`: a row it did not expect fails the test.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::protocol::MODE_EXECUTE;

pub(crate) fn server() -> Option<String> {
  let url = std::env::var("BMAD_TEST_PG_URL").ok().filter(|u| !u.is_empty());
  if url.is_none() {
    eprintln!(
      "BMAD_TEST_PG_URL is not set: PostgreSQL tests not run (node scripts/pg-cluster.mjs run -- cargo test)"
    );
  }
  url
}

/// A schema of its own per test, so the tests can run at once.
pub(crate) fn target(url: &str, schema: &str) -> PgTarget {
  PgTarget::parse(&format!("{url}?schema={schema}_{}", std::process::id())).expect("a valid URL")
}

fn sql(conn: &mut PgConnection, text: &str) {
  let text = text.replace("{s}", &conn.target.quoted_schema());
  conn
    .wait("test", conn.client().batch_execute(&text))
    .expect("test SQL");
}

#[test]
fn url_parameters_the_driver_lacks_are_taken_when_harmless_and_named_when_refused() {
  let parse = |q: &str| PgTarget::parse(&format!("postgres://u:pw@db.example/app?{q}"));
  let t =
    parse("gssencmode=prefer&client_encoding=utf8&fallback_application_name=orchestrator").expect("valid");
  assert_eq!(t.config.get_application_name(), Some("orchestrator"));
  let t = parse("application_name=mine&fallback_application_name=other").expect("valid");
  assert_eq!(
    t.config.get_application_name(),
    Some("mine"),
    "the fallback is only a fallback"
  );
  for (q, named) in [
    ("foo=bar", "unknown option `foo`"),
    ("passfile=%2Ftmp%2Fpw", "unknown option `passfile`"),
    ("keepalives=maybe", "invalid value for option `keepalives`"),
    ("gssencmode=require", "gssencmode=require is not supported"),
    (
      "client_encoding=LATIN1",
      "client_encoding=LATIN1 is not supported",
    ),
  ] {
    let err = parse(q).expect_err(q);
    assert!(err.message.contains(named), "{q}: {}", err.message);
    assert!(
      !err.message.contains("pw"),
      "{q}: the password shows: {}",
      err.message
    );
  }
}

#[test]
fn urls_parse_with_a_schema_and_messages_hide_the_password() {
  let t = PgTarget::parse("postgresql://bmad:s3cret@db.example:6543/jobs?schema=agents&connect_timeout=5")
    .expect("valid");
  assert_eq!(t.schema, "agents");
  assert_eq!(t.shown, "postgres://bmad:***@db.example:6543/jobs");
  assert_eq!(t.config.get_dbname(), Some("jobs"));
  assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(5)));
  assert_eq!(
    PgTarget::parse("postgres://h/db").expect("valid").schema,
    "public"
  );
  assert_eq!(
    PgTarget::parse("postgres://h/db?schema=a%20b")
      .expect("valid")
      .quoted_schema(),
    "\"a b\""
  );
  assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
  let refused = |url: &str| PgTarget::parse(url).err().map(|e| e.message).unwrap_or_default();
  assert!(refused("mysql://h/db").contains("postgres://"));
  assert!(refused("postgres://h/db?schema=").contains("schema name"));
  assert!(refused("postgres://u:pw@h/db?sslmode=sometimes").contains("sslmode=sometimes"));
  assert!(refused("postgres://u:pw@h/db?sslcert=/c.pem").contains("sslcert is not supported"));
  assert!(
    !refused("postgres://u:pw@h/db?sslmode=sometimes").contains("pw"),
    "no password in messages"
  );
  let tls = |url: &str| PgTarget::parse(url).expect("valid").tls.is_some();
  assert!(tls("postgres://h/db"), "prefer by default, as libpq");
  assert!(tls("postgres://h/db?sslmode=require"));
  assert!(!tls("postgres://h/db?sslmode=disable"));
}

#[test]
fn tls_is_used_and_the_certificate_checked_as_sslmode_says() {
  let Some(url) = server() else { return };
  let Some(ca) = std::env::var("BMAD_TEST_PG_CA").ok().filter(|c| !c.is_empty()) else {
    eprintln!("BMAD_TEST_PG_CA is not set (the cluster has no TLS): TLS test not run");
    return;
  };
  let schema = format!("tls_{}", std::process::id());
  let open = |url: &str, params: &str| {
    PgConnection::open(PgTarget::parse(&format!("{url}?schema={schema}&{params}")).expect("valid"))
  };
  let encrypted = |c: &PgConnection| -> bool {
    c.wait(
      "test",
      c.client()
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]),
    )
    .expect("pg_stat_ssl")
    .get(0)
  };
  // The certificate names localhost, not 127.0.0.1.
  let by_name = url.replace("127.0.0.1", "localhost");
  assert!(encrypted(&open(&url, "sslmode=require").expect("require")));
  assert!(encrypted(&open(&url, "sslmode=prefer").expect("prefer")));
  assert!(!encrypted(&open(&url, "sslmode=disable").expect("disable")));
  assert!(encrypted(
    &open(&url, &format!("sslmode=verify-ca&sslrootcert={ca}")).expect("verify-ca")
  ));
  assert!(encrypted(
    &open(&by_name, &format!("sslmode=verify-full&sslrootcert={ca}")).expect("verify-full")
  ));
  let wrong_name = open(&url, &format!("sslmode=verify-full&sslrootcert={ca}"))
    .err()
    .expect("refused");
  assert_eq!(wrong_name.code, "ERR_STORE");
  assert!(
    wrong_name.message.contains("certificate"),
    "{}",
    wrong_name.message
  );
  // A self-signed certificate nobody trusts.
  let unknown = open(&by_name, "sslmode=verify-full&sslrootcert=system")
    .err()
    .expect("refused");
  assert_eq!(unknown.code, "ERR_STORE");
  assert!(unknown.message.contains("certificate"), "{}", unknown.message);
}

#[test]
fn connect_timeout_bounds_a_server_that_accepts_and_never_answers() {
  // Accepts TCP connections and says nothing (no server needed).
  let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
  let port = listener.local_addr().expect("addr").port();
  let t = PgTarget::parse(&format!("postgres://u:pw@127.0.0.1:{port}/db?connect_timeout=1")).expect("valid");
  let started = std::time::Instant::now();
  let err = PgConnection::open(t).err().expect("refused");
  let took = started.elapsed();
  assert!(took < Duration::from_secs(5), "took {took:?}, not ~1 s");
  assert!(
    err
      .message
      .contains("cannot connect to store postgres://u:***@127.0.0.1")
      && err.message.contains("no answer within 1 s"),
    "{}",
    err.message
  );
  drop(listener);
}

#[test]
fn an_unreachable_server_is_reported_with_its_cause() {
  // A port nothing listens on (bound then released).
  let port = std::net::TcpListener::bind("127.0.0.1:0")
    .and_then(|l| l.local_addr())
    .map(|a| a.port())
    .expect("a free port");
  let t = PgTarget::parse(&format!("postgres://u:pw@127.0.0.1:{port}/db?connect_timeout=5")).expect("valid");
  let err = PgConnection::open(t).err().expect("refused");
  assert_eq!(err.code, "ERR_STORE");
  assert!(
    err
      .message
      .contains("cannot connect to store postgres://u:***@127.0.0.1"),
    "{}",
    err.message
  );
  assert!(
    err.message.to_lowercase().contains("refused"),
    "the cause: {}",
    err.message
  );
}

#[test]
fn a_role_without_grants_on_a_schema_another_migrated_is_told_what_it_lacks() {
  let Some(url) = server() else { return };
  let mut owner = PgConnection::open(target(&url, "granted")).expect("create");
  let role = format!("bmad_nogrant_{}", std::process::id());
  sql(
    &mut owner,
    &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA {{s}} TO {role}"),
  );
  let as_role = url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
  let err = PgConnection::open(target(&as_role, "granted"))
    .err()
    .expect("refused");
  assert!(err.message.contains("(42501)"), "{}", err.message);
  assert!(
    err.message.contains("grant this one the privileges"),
    "{}",
    err.message
  );
  sql(
    &mut owner,
    &format!("DROP SCHEMA {{s}} CASCADE; DROP ROLE {role}"),
  );
}

#[test]
fn open_creates_the_schema_once_and_opens_it_again() {
  let Some(url) = server() else { return };
  let mut a = PgConnection::open(target(&url, "fresh")).expect("create");
  let s = a.target.quoted_schema();
  let q = format!("SELECT value FROM {s}.bmad_meta WHERE key = 'version'");
  let version = a
    .wait("read", a.client().query_one(&q, &[]))
    .expect("meta")
    .get::<_, String>(0);
  assert_eq!(version, VERSION.to_string());
  sql(
    &mut a,
    "INSERT INTO {s}.bmad_limits (agent, global_concurrency) VALUES ('x', 2)",
  );
  let _b = PgConnection::open(a.target.clone()).expect("open again");
  sql(&mut a, "DROP SCHEMA {s} CASCADE");
}

#[test]
fn four_hosts_creating_one_store_at_once_all_open_it() {
  let Some(url) = server() else { return };
  let t = target(&url, "race");
  let handles: Vec<_> = (0..4)
    .map(|_| {
      let t = t.clone();
      std::thread::spawn(move || PgConnection::open(t).map(|_| ()))
    })
    .collect();
  for h in handles {
    h.join().expect("no panic").expect("opened");
  }
  let mut c = PgConnection::open(t).expect("open");
  sql(&mut c, "DROP SCHEMA {s} CASCADE");
}

#[test]
fn a_schema_of_something_else_or_of_a_newer_release_is_refused_untouched() {
  let Some(url) = server() else { return };
  let mut admin = PgConnection::open(target(&url, "admin")).expect("open");
  // Tables named like ours, without our meta table.
  let foreign = target(&url, "foreign");
  let fs = foreign.quoted_schema();
  sql(
    &mut admin,
    &format!("CREATE SCHEMA {fs}; CREATE TABLE {fs}.bmad_executions (x int)"),
  );
  let err = PgConnection::open(foreign).err().expect("refused");
  assert!(err.message.contains("no bmad_meta"), "{}", err.message);
  // Another application's meta table.
  let other = target(&url, "other");
  let os = other.quoted_schema();
  sql(
    &mut admin,
    &format!("CREATE SCHEMA {os}; CREATE TABLE {os}.bmad_meta (key text PRIMARY KEY, value text); INSERT INTO {os}.bmad_meta VALUES ('app', 'else')"),
  );
  let err = PgConnection::open(other).err().expect("refused");
  assert!(
    err.message.contains("belongs to something else"),
    "{}",
    err.message
  );
  // A newer version.
  let newer = target(&url, "newer");
  let mut n = PgConnection::open(newer.clone()).expect("create");
  sql(
    &mut n,
    "UPDATE {s}.bmad_meta SET value = '99' WHERE key = 'version'",
  );
  let err = PgConnection::open(newer.clone()).err().expect("refused");
  assert_eq!(err.code, "ERR_STORE_VERSION");
  assert!(err.message.contains("version 99"), "{}", err.message);
  // A version below 1: refused too, and not stamped as current.
  sql(
    &mut n,
    "UPDATE {s}.bmad_meta SET value = '-1' WHERE key = 'version'",
  );
  let err = PgConnection::open(newer.clone()).err().expect("refused");
  assert_eq!(err.code, "ERR_STORE");
  assert!(err.message.contains("bmad_meta.version is -1"), "{}", err.message);
  let q = format!(
    "SELECT value FROM {}.bmad_meta WHERE key = 'version'",
    n.target.quoted_schema()
  );
  let kept = n
    .wait("read", n.client().query_one(&q, &[]))
    .expect("meta")
    .get::<_, String>(0);
  assert_eq!(kept, "-1", "not stamped as current over missing tables");
  // Nothing was written to the refused schemas.
  let q = format!(
    "SELECT count(*) FROM information_schema.tables WHERE table_schema IN ('foreign_{0}', 'other_{0}')",
    std::process::id()
  );
  let count = admin
    .wait("count", admin.client().query_one(&q, &[]))
    .expect("count")
    .get::<_, i64>(0);
  assert_eq!(count, 2, "only the tables the test made");
  sql(&mut n, "DROP SCHEMA {s} CASCADE");
  sql(
    &mut admin,
    &format!("DROP SCHEMA {fs} CASCADE; DROP SCHEMA {os} CASCADE; DROP SCHEMA {{s}} CASCADE"),
  );
}

#[test]
fn a_version_2_schema_is_migrated_keeping_its_rows_and_dropping_tokens() {
  let Some(url) = server() else { return };
  // The schema as a release of version 2 left it, with a queued row and its token.
  let mut admin = PgConnection::open(target(&url, "v2admin")).expect("open");
  let old = format!("\"v2_{}\"", std::process::id());
  let mut setup = format!("CREATE SCHEMA {old};");
  for m in &MIGRATIONS[..2] {
    setup.push_str(&m.replace("{s}", &old));
  }
  setup.push_str(&format!(
    "INSERT INTO {old}.bmad_meta (key, value) VALUES ('app', '{APP}'), ('version', '2'); \
     INSERT INTO {old}.bmad_executions (agent, task, level, priority, mode, state, max_attempts, retry_delay_ms, \
       backoff, timeout_ms, created_at, scheduled_at, token) \
     VALUES ('a', 'kept', 'medium', 0, 0, 0, 1, 0, 0, 0, 1, 1, 'someone:1');"
  ));
  sql(&mut admin, &setup);
  let mut s = store(&url, "v2");
  let c = PgConnection::open(target(&url, "v2")).expect("open");
  let one = |q: &str| -> i64 {
    let q = q.replace("{s}", &c.target.quoted_schema());
    c.wait("test", c.client().query_one(&q, &[]))
      .expect("read")
      .get(0)
  };
  assert_eq!(
    one("SELECT value::int8 FROM {s}.bmad_meta WHERE key = 'version'"),
    VERSION
  );
  assert_eq!(
    one(&format!(
      "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'v2_{}' AND table_name = 'bmad_executions' \
       AND column_name = 'token'",
      std::process::id()
    )),
    0
  );
  let kept = claim(&mut s, 5, T0);
  assert_eq!(kept.len(), 1, "the row of version 2 is claimed");
  assert_eq!(s.fetch(kept[0]).expect("fetch").expect("row").task, "kept");
  let ids = insert(&mut s, vec![exec("a", 0)]);
  assert_eq!(ids.len(), 1);
  drop(c);
  sql(
    &mut admin,
    &format!("DROP SCHEMA {old} CASCADE; DROP SCHEMA {{s}} CASCADE"),
  );
}

#[test]
fn a_role_granted_only_the_use_of_the_tables_runs_the_store() {
  // The README's least-privilege set-up: an owner creates the schema (its first open makes
  // the tables), a runner role gets USAGE and row privileges only.
  let Some(url) = server() else { return };
  let pid = std::process::id();
  let (schema, role) = (format!("granted_{pid}"), format!("runner_{pid}"));
  let owner = PgTarget::parse(&format!("{url}?schema={schema}")).expect("valid");
  let mut admin = PgConnection::open(owner).expect("the owner creates the tables");
  let q = quote_ident(&schema);
  sql(
    &mut admin,
    &format!(
      "CREATE ROLE {role} LOGIN; \
       GRANT USAGE ON SCHEMA {q} TO {role}; \
       GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q} TO {role}; \
       GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {q} TO {role}"
    ),
  );
  let as_runner = url.replacen("postgres@", &format!("{role}@"), 1);
  let mut s = PgStore::open_own(
    PgTarget::parse(&format!("{as_runner}?schema={schema}")).expect("valid"),
    LEASE,
    T0,
  )
  .expect("the runner opens the store");
  s.set_interest(Interest::new(true, &[]));
  let ids = insert(&mut s, vec![exec("a", 0)]);
  assert_eq!(claim(&mut s, 1, T0 + 1.0), ids);
  let done = Finish {
    id: ids[0],
    attempt: 1,
    status: STATUS_COMPLETED,
    value: Some("1".to_string()),
    retryable: false,
  };
  assert_eq!(finish(&mut s, done, T0 + 2.0), Finished::Recorded);
  // Without CREATE on the database, a schema that does not exist cannot be made: said so.
  let err = PgConnection::open(PgTarget::parse(&format!("{as_runner}?schema=missing_{pid}")).expect("valid"))
    .err()
    .expect("refused");
  assert_eq!(err.code, "ERR_STORE");
  assert!(err.message.contains("permission denied"), "{}", err.message);
  drop(s);
  sql(
    &mut admin,
    &format!("DROP SCHEMA {{s}} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"),
  );
}

// ----- operations --------------------------------------------------------------------------

use super::ops::PgStore;
use crate::protocol::{
  BACKOFF_FIXED, STATUS_CANCELLED, STATUS_COMPLETED, STATUS_FAILED, STATUS_QUEUED, STATUS_RUNNING,
};
use crate::store::backend::Interest;
use crate::store::{Batch, Finish, Finished, NewExecution, Release};

const LEASE: f64 = 30_000.0;
const T0: f64 = 1_000_000.0;

fn exec(agent: &str, priority: i64) -> NewExecution {
  NewExecution {
    agent: agent.to_string(),
    task: format!("task of {agent}"),
    options: Some(r#"{"x":1}"#.to_string()),
    level: "medium".to_string(),
    priority,
    mode: 0,
    key: None,
    max_attempts: 1,
    retry_delay_ms: 100.0,
    backoff: BACKOFF_FIXED,
    timeout_ms: 0.0,
    start_after: 0.0,
    seq: 0,
  }
}

/// A worker claiming any agent, on a fresh schema.
fn store(url: &str, schema: &str) -> PgStore {
  let mut s = PgStore::open_own(target(url, schema), LEASE, T0).expect("open");
  s.set_interest(Interest::new(true, &[]));
  s
}

fn insert(s: &mut PgStore, execs: Vec<NewExecution>) -> Vec<i64> {
  let batch = Batch {
    inserts: execs,
    ..Default::default()
  };
  s.batch(&batch, T0)
    .expect("insert")
    .inserted
    .iter()
    .map(|i| i.id)
    .collect()
}

fn claim(s: &mut PgStore, n: u32, now: f64) -> Vec<i64> {
  let batch = Batch {
    claim: n,
    ..Default::default()
  };
  s.batch(&batch, now)
    .expect("claim")
    .claimed
    .iter()
    .map(|r| r.id)
    .collect()
}

fn finish(s: &mut PgStore, f: Finish, now: f64) -> Finished {
  let batch = Batch {
    finishes: vec![f],
    ..Default::default()
  };
  s.batch(&batch, now).expect("finish").finished[0]
}

/// The completion of the first attempt of `id`, without a value.
fn completed(id: i64) -> Finish {
  Finish {
    id,
    attempt: 1,
    status: STATUS_COMPLETED,
    value: None,
    retryable: false,
  }
}

pub(crate) fn drop_schema(url: &str, schema: &str) {
  let mut c = PgConnection::open(target(url, schema)).expect("open");
  sql(&mut c, "DROP SCHEMA {s} CASCADE");
}

/// A batch of submissions of agent "a", numbered `seqs` by their executor.
fn numbered(seqs: &[u64]) -> Batch {
  Batch {
    inserts: seqs
      .iter()
      .map(|&seq| NewExecution { seq, ..exec("a", 0) })
      .collect(),
    ..Default::default()
  }
}

/// The ids a batch answered for its submissions, in order.
fn ids_of(r: &crate::store::BatchResult) -> Vec<i64> {
  r.inserted.iter().map(|i| i.id).collect()
}

/// The rows of `table` in the test schema `schema`.
pub(crate) fn rows_in(url: &str, schema: &str, table: &str) -> i64 {
  let c = PgConnection::open(target(url, schema)).expect("open");
  let q = format!("SELECT count(*) FROM {}.{table}", c.target.quoted_schema());
  c.wait("test", c.client().query_one(&q, &[]))
    .expect("count")
    .get(0)
}

#[test]
fn claims_go_by_priority_then_id_and_keys_dedupe() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "order");
  // The server runs on this machine: same clock, read in the same unit.
  assert_eq!(s.clock_offset_ms(), 0.0);
  let ids = insert(
    &mut s,
    vec![exec("a", 1), exec("a", 5), exec("b", 3), exec("a", 5)],
  );
  assert_eq!(claim(&mut s, 3, T0 + 1.0), vec![ids[1], ids[3], ids[2]]);
  let row = s.fetch(ids[1]).expect("fetch").expect("stored");
  assert_eq!(
    (row.status, row.attempt, row.owner.as_deref()),
    (STATUS_RUNNING, 1, Some(s.me.owner.as_str()))
  );
  // Keys: the second of a batch and a later one get the first one's id while it lives.
  let keyed = |k: &str| NewExecution {
    key: Some(k.to_string()),
    ..exec("a", 1)
  };
  let batch = Batch {
    inserts: vec![keyed("k1"), keyed("k1"), keyed("k2")],
    ..Default::default()
  };
  let r = s.batch(&batch, T0 + 2.0).expect("insert").inserted;
  assert_eq!(
    (r[0].existing, r[1].existing, r[2].existing),
    (false, true, false)
  );
  assert_eq!(r[1].id, r[0].id);
  let again = s
    .batch(
      &Batch {
        inserts: vec![keyed("k1")],
        ..Default::default()
      },
      T0 + 3.0,
    )
    .expect("insert")
    .inserted;
  assert_eq!((again[0].id, again[0].existing), (r[0].id, true));
  drop_schema(&url, "order");
}

#[test]
fn two_hosts_claiming_at_once_never_take_the_same_execution() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "skip");
  insert(&mut a, (0..400).map(|i| exec("a", i % 5)).collect());
  let t = target(&url, "skip");
  let workers: Vec<_> = (0..3)
    .map(|_| {
      let t = t.clone();
      std::thread::spawn(move || {
        let mut w = PgStore::open_own(t, LEASE, T0).expect("open");
        w.set_interest(Interest::new(true, &[]));
        let mut mine = Vec::new();
        loop {
          let got = claim(&mut w, 16, T0 + 1.0);
          if got.is_empty() {
            return mine;
          }
          mine.extend(got);
        }
      })
    })
    .collect();
  let mut all: Vec<i64> = workers
    .into_iter()
    .flat_map(|h| h.join().expect("no panic"))
    .collect();
  let n = all.len();
  all.sort_unstable();
  all.dedup();
  assert_eq!((n, all.len()), (400, 400), "each claimed once");
  drop_schema(&url, "skip");
}

#[test]
fn attempt_ends_are_compare_and_sets_and_failures_follow_the_retry_policy() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "finish");
  let retried = NewExecution {
    max_attempts: 2,
    ..exec("a", 3)
  };
  let ids = insert(&mut s, vec![exec("a", 3), retried, exec("a", 3)]);
  assert_eq!(claim(&mut s, 3, T0 + 1.0), ids);
  let done = |id, attempt, status, retryable| Finish {
    id,
    attempt,
    status,
    value: Some(r#""v""#.to_string()),
    retryable,
  };
  assert_eq!(
    finish(&mut s, done(ids[0], 2, STATUS_COMPLETED, false), T0 + 2.0),
    Finished::Stale,
    "wrong attempt"
  );
  assert_eq!(
    finish(&mut s, done(ids[0], 1, STATUS_COMPLETED, false), T0 + 2.0),
    Finished::Recorded
  );
  assert_eq!(
    finish(&mut s, done(ids[0], 1, STATUS_COMPLETED, false), T0 + 3.0),
    Finished::Recorded,
    "the same end again (a batch sent again after a lost answer) is the one recorded"
  );
  let other_value = Finish {
    value: Some(r#""w""#.to_string()),
    ..done(ids[0], 1, STATUS_COMPLETED, false)
  };
  assert_eq!(finish(&mut s, other_value, T0 + 3.0), Finished::Stale, "once");
  let r = s.fetch(ids[0]).expect("fetch").expect("row");
  assert_eq!(
    (r.status, r.result.as_deref(), r.progress),
    (STATUS_COMPLETED, Some(r#""v""#), 100.0)
  );
  // A retryable failure with an attempt left: queued again after its delay.
  assert_eq!(
    finish(&mut s, done(ids[1], 1, STATUS_FAILED, true), T0 + 4.0),
    Finished::Retry(100.0)
  );
  let r = s.fetch(ids[1]).expect("fetch").expect("row");
  assert_eq!(
    (r.status, r.scheduled_at, r.owner),
    (STATUS_QUEUED, T0 + 104.0, None)
  );
  assert!(claim(&mut s, 1, T0 + 50.0).is_empty(), "not before its delay");
  assert_eq!(claim(&mut s, 1, T0 + 104.0), vec![ids[1]]);
  assert_eq!(
    finish(&mut s, done(ids[1], 2, STATUS_FAILED, true), T0 + 105.0),
    Finished::Recorded
  );
  assert_eq!(
    s.fetch(ids[1]).expect("fetch").expect("row").status,
    STATUS_FAILED
  );
  assert_eq!(
    finish(&mut s, done(ids[2], 1, STATUS_CANCELLED, false), T0 + 5.0),
    Finished::Recorded
  );
  assert_eq!(
    s.fetch(ids[2]).expect("fetch").expect("row").status,
    STATUS_CANCELLED
  );
  drop_schema(&url, "finish");
}

#[test]
fn cancels_end_queued_executions_and_flag_running_ones_for_their_owner() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "cancel");
  let ids = insert(&mut s, vec![exec("a", 3), exec("a", 1)]);
  assert_eq!(claim(&mut s, 1, T0 + 1.0), vec![ids[0]]);
  assert_eq!(
    s.cancel(ids[1], "{}", T0 + 2.0).expect("cancel"),
    STATUS_QUEUED as i32
  );
  assert_eq!(
    s.fetch(ids[1]).expect("fetch").expect("row").status,
    STATUS_CANCELLED
  );
  assert_eq!(
    s.cancel(ids[0], "{}", T0 + 2.0).expect("cancel"),
    STATUS_RUNNING as i32
  );
  let asked = s.cancel_requests().expect("requests");
  assert_eq!((asked.len(), asked[0].id, asked[0].attempt), (1, ids[0], 1));
  // Its agent fails as it stops: the end is a cancel, not a retry.
  let f = Finish {
    id: ids[0],
    attempt: 1,
    status: STATUS_FAILED,
    value: None,
    retryable: true,
  };
  assert_eq!(finish(&mut s, f.clone(), T0 + 3.0), Finished::Cancelled);
  // Sent again (its answer lost): not told apart from a rescue's cancel, so stale; the row
  // stays as the first try left it.
  assert_eq!(finish(&mut s, f, T0 + 3.0), Finished::Stale);
  let r = s.fetch(ids[0]).expect("fetch").expect("row");
  assert_eq!((r.status, r.error.as_deref()), (STATUS_CANCELLED, Some("{}")));
  assert_eq!(s.cancel(999_999, "{}", T0).expect("cancel"), NOT_FOUND_CODE);
  // A completion that comes after a cancel was asked ends it cancelled, its value discarded.
  let more = insert(&mut s, vec![exec("a", 3), exec("a", 3)]);
  assert_eq!(claim(&mut s, 2, T0 + 4.0), more);
  assert_eq!(
    s.cancel(more[0], "{\"c\":1}", T0 + 5.0).expect("cancel"),
    STATUS_RUNNING as i32
  );
  let late = |id| Finish {
    value: Some("\"late\"".to_string()),
    ..completed(id)
  };
  let batch = Batch {
    finishes: vec![late(more[0]), late(more[1])],
    ..Default::default()
  };
  let r = s.batch(&batch, T0 + 6.0).expect("finish");
  assert_eq!(r.finished, vec![Finished::Cancelled, Finished::Recorded]);
  // Sent again (its answer lost): the completion found recorded, the overruled one stale.
  let again = s.batch(&batch, T0 + 6.0).expect("finish again");
  assert_eq!(again.finished, vec![Finished::Stale, Finished::Recorded]);
  let r = s.fetch(more[0]).expect("fetch").expect("row");
  assert_eq!(
    (r.status, r.result.as_deref(), r.error.as_deref()),
    (STATUS_CANCELLED, None, Some("{\"c\":1}"))
  );
  let r = s.fetch(more[1]).expect("fetch").expect("row");
  assert_eq!(
    (r.status, r.result.as_deref()),
    (STATUS_COMPLETED, Some("\"late\""))
  );
  drop_schema(&url, "cancel");
}

const NOT_FOUND_CODE: i32 = crate::protocol::NOT_FOUND;

#[test]
fn a_lost_worker_s_executions_are_rescued_once_and_its_late_end_is_stale() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "rescue");
  let mut b = store(&url, "rescue");
  let again = NewExecution {
    max_attempts: 2,
    ..exec("a", 3)
  };
  let ids = insert(&mut a, vec![again, exec("a", 3)]);
  assert_eq!(claim(&mut a, 2, T0 + 1.0), ids);
  assert!(
    b.rescue(T0 + 2.0).expect("rescue").is_empty(),
    "leases still held"
  );
  // A's leases run out (it stopped heartbeating): B moves its executions on.
  let late = T0 + 1.0 + LEASE + 1.0;
  let rescued = b.rescue(late).expect("rescue");
  let status = |id| rescued.iter().find(|r| r.id == id).map(|r| r.status);
  assert_eq!(
    (status(ids[0]), status(ids[1])),
    (Some(STATUS_QUEUED), Some(STATUS_FAILED))
  );
  let lost = b.fetch(ids[1]).expect("fetch").expect("row");
  assert!(lost
    .error
    .as_deref()
    .is_some_and(|e| e.contains("ERR_WORKER_LOST")));
  assert!(b.rescue(late).expect("rescue").is_empty(), "once");
  // A's late result changes nothing.
  let f = Finish {
    id: ids[0],
    attempt: 1,
    status: STATUS_COMPLETED,
    value: None,
    retryable: false,
  };
  assert_eq!(finish(&mut a, f, late + 1.0), Finished::Stale);
  assert_eq!(claim(&mut b, 5, late + 2.0), vec![ids[0]], "queued again for B");
  drop_schema(&url, "rescue");
}

#[test]
fn a_rescue_the_server_refuses_leaves_that_attempt_running_reported_once_and_moves_the_others() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "rescue_refused");
  let mut b = store(&url, "rescue_refused");
  let ids = insert(&mut a, vec![exec("a", 3), exec("a", 3)]);
  assert_eq!(claim(&mut a, 2, T0 + 1.0), ids);
  // A trigger of the user's refuses any change to the first one.
  let mut c = PgConnection::open(target(&url, "rescue_refused")).expect("open");
  sql(
    &mut c,
    &format!(
      "CREATE FUNCTION {{s}}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
       BEGIN IF OLD.id = {} THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
       CREATE TRIGGER refuse BEFORE UPDATE ON {{s}}.bmad_executions FOR EACH ROW EXECUTE FUNCTION {{s}}.refuse()",
      ids[0]
    ),
  );
  let late = T0 + 1.0 + LEASE + 1.0;
  let rescued = b.rescue(late).expect("the others are rescued");
  assert_eq!(rescued.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[1]]);
  crate::store::tests::assert_one_refused_rescue(&b.take_notices(), ids[0]);
  // Not tried again, not reported again: it stays running.
  assert!(b.rescue(late + 10.0).expect("rescue").is_empty());
  assert!(b.take_notices().is_empty());
  assert_eq!(
    b.fetch(ids[0]).expect("fetch").expect("row").status,
    STATUS_RUNNING
  );
  drop_schema(&url, "rescue_refused");
}

#[test]
fn a_slow_clock_reading_keeps_the_previous_offset() {
  use super::ops::clock_offset;
  // The server 2 s ahead, read in a 10 ms round trip.
  assert_eq!(clock_offset(1_000.0, 3_005.0, 1_010.0, 0.0, 1_000.0), 2_000.0);
  // Within the ignored skew: none.
  assert_eq!(clock_offset(1_000.0, 1_030.0, 1_010.0, 500.0, 1_000.0), 0.0);
  // A 20 s stall: the middle could be 10 s off; the previous offset stays.
  assert_eq!(
    clock_offset(1_000.0, 1_500.0, 21_000.0, 2_000.0, 1_000.0),
    2_000.0
  );
}

#[test]
fn the_server_ends_statements_and_idle_transactions_the_client_has_given_up_on() {
  let Some(url) = server() else { return };
  let c = PgConnection::open(target(&url, "timeouts")).expect("open");
  let show = |name: &str| -> String {
    c.wait("test", c.client().query_one(&format!("SHOW {name}"), &[]))
      .expect("show")
      .get(0)
  };
  assert_eq!(show("statement_timeout"), "25s");
  assert!(
    Duration::from_secs(25) < TIMEOUT,
    "before the client's own timeout"
  );
  assert_eq!(show("idle_in_transaction_session_timeout"), "10s");
  drop(c);
  drop_schema(&url, "timeouts");
}

#[test]
fn a_dead_worker_s_attempt_held_by_another_transaction_is_rescued_at_the_next_rescue() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "held");
  let mut b = store(&url, "held");
  let ids = insert(&mut a, vec![exec("a", 3), exec("a", 2)]);
  assert_eq!(claim(&mut a, 2, T0 + 1.0), ids);
  // A's process has exited: its worker row names a pid that no longer runs.
  let mut child = std::process::Command::new("true").spawn().expect("spawn true");
  let gone = child.id();
  child.wait().expect("wait");
  let mut c = PgConnection::open(target(&url, "held")).expect("open");
  sql(
    &mut c,
    &format!(
      "UPDATE {{s}}.bmad_workers SET pid = {gone}, proc_start = 1 \
       WHERE owner IN (SELECT owner FROM {{s}}.bmad_executions WHERE state = 1)"
    ),
  );
  // Another transaction holds one of its rows while B rescues: B moves the other one only.
  sql(
    &mut c,
    &format!(
      "BEGIN; SELECT 1 FROM {{s}}.bmad_executions WHERE id = {} FOR UPDATE",
      ids[1]
    ),
  );
  let now = T0 + 2.0; // well within the lease
  let first: Vec<i64> = b.rescue(now).expect("rescue").iter().map(|r| r.id).collect();
  assert_eq!(first, vec![ids[0]]);
  sql(&mut c, "ROLLBACK");
  // The dead worker is still known, so its last attempt does not wait for the lease.
  let second: Vec<i64> = b
    .rescue(now + 1.0)
    .expect("rescue")
    .iter()
    .map(|r| r.id)
    .collect();
  assert_eq!(second, vec![ids[1]]);
  let left = PgConnection::open(target(&url, "held")).expect("open");
  let workers: i64 = left
    .wait(
      "test",
      left.client().query_one(
        &format!(
          "SELECT count(*) FROM {}.bmad_workers",
          left.target.quoted_schema()
        ),
        &[],
      ),
    )
    .expect("count")
    .get(0);
  assert_eq!(workers, 1, "then forgotten: only B is left");
  drop(c);
  drop(left);
  drop_schema(&url, "held");
}

#[test]
fn a_rescued_or_released_execution_is_claimable_whatever_the_claimer_clock_says() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "requeued_clock");
  let mut b = store(&url, "requeued_clock");
  let again = || NewExecution {
    max_attempts: 2,
    ..exec("a", 0)
  };
  let ids = insert(&mut a, vec![again(), again()]);
  assert_eq!(claim(&mut a, 2, T0 + 1.0), ids);
  // One handed back, the other rescued when its lease ran out, both by clocks an hour ahead
  // (or before the claimer's clock was stepped back): due at once all the same.
  let release = Batch {
    releases: vec![Release {
      id: ids[0],
      attempt: 1,
    }],
    ..Default::default()
  };
  a.batch(&release, T0 + 3_600_000.0).expect("release");
  let rescued = b.rescue(T0 + 3_600_000.0).expect("rescue");
  let moved: Vec<(i64, u32)> = rescued.iter().map(|r| (r.id, r.status)).collect();
  assert_eq!(moved, vec![(ids[1], STATUS_QUEUED)]);
  assert_eq!(claim(&mut b, 10, T0 + 2.0), ids);
  drop_schema(&url, "requeued_clock");
}

#[test]
fn a_batch_sent_again_after_its_answer_was_lost_changes_nothing_twice() {
  // A batch whose COMMIT went through but whose answer was lost is sent again (here with a
  // new submission): its submissions are not stored twice, its attempt ends are not
  // reported stale, and the executions it claimed go back to the queue once the connection
  // is back.
  let Some(url) = server() else { return };
  let mut s = store(&url, "resend");
  let mut other = store(&url, "resend");
  let submit = numbered(&[1, 2]);
  let first = ids_of(&s.batch(&submit, T0).expect("insert"));
  // What a lost connection leaves: the commit went through, the answer did not come.
  s.lose_last_answer(&submit);
  let again = s.batch(&numbered(&[1, 2, 3]), T0).expect("insert again").inserted;
  assert_eq!(again.len(), 3);
  let third = again[2].id;
  assert!(
    !first.contains(&third),
    "a new submission sent with them is stored"
  );
  let again = &again[..2];
  assert_eq!(
    again.iter().map(|i| i.id).collect::<Vec<_>>(),
    first,
    "the same executions"
  );
  assert!(again.iter().all(|i| !i.existing), "its own, not a key's");
  let count = |table: &str| rows_in(&url, "resend", table);
  assert_eq!(count("bmad_executions"), 3, "nothing stored twice");
  // The same numbers from another executor are other submissions.
  let theirs = other.batch(&submit, T0).expect("insert").inserted;
  assert!(theirs.iter().all(|i| !first.contains(&i.id)));
  assert_eq!(count("bmad_executions"), 5);
  // An executor's answered records are removed by its next insert.
  let fourth = ids_of(&s.batch(&numbered(&[4]), T0).expect("insert"))[0];
  assert_eq!(count("bmad_batches"), 2, "the latest record of each executor");
  for id in [third, fourth] {
    assert_eq!(s.cancel(id, "{}", T0).expect("cancel"), STATUS_QUEUED as i32);
  }
  // Claimed, then ended: a completion and a final failure, each sent twice.
  let claimed = claim(&mut s, 2, T0 + 1.0);
  assert_eq!(claimed, first);
  let ends = Batch {
    finishes: vec![
      Finish {
        id: first[0],
        attempt: 1,
        status: STATUS_COMPLETED,
        value: Some("1".to_string()),
        retryable: false,
      },
      Finish {
        id: first[1],
        attempt: 1,
        status: STATUS_FAILED,
        value: Some(r#"{"message":"no"}"#.to_string()),
        retryable: false,
      },
    ],
    ..Default::default()
  };
  let once = s.batch(&ends, T0 + 2.0).expect("ends").finished;
  let twice = s.batch(&ends, T0 + 2.0).expect("ends again").finished;
  assert_eq!(once, vec![Finished::Recorded, Finished::Recorded]);
  assert_eq!(twice, once, "recorded, not stale");
  let stored = s.fetch(first[1]).expect("fetch").expect("row");
  assert_eq!((stored.status, stored.attempt), (STATUS_FAILED, 1));
  // A claim whose answer never came: the executor does not know of it.
  let lost = claim(&mut s, 5, T0 + 3.0);
  assert_eq!(lost.len(), 2, "the other executor's two");
  let kept = lost[0];
  // Known by id but at another attempt: not the one it runs.
  assert_eq!(
    s.release_unknown(&[(kept, 1), (lost[1], 2)], None)
      .expect("release"),
    vec![lost[1]]
  );
  let back = s.fetch(lost[1]).expect("fetch").expect("row");
  assert_eq!((back.status, back.attempt, back.owner), (STATUS_QUEUED, 0, None));
  assert_eq!(s.fetch(kept).expect("fetch").expect("row").status, STATUS_RUNNING);
  assert_eq!(claim(&mut other, 5, T0 + 4.0), vec![lost[1]]);
  // An executor that leaves takes its records with it.
  s.leave().expect("leave");
  assert_eq!(count("bmad_batches"), 1, "the other executor's");
  drop_schema(&url, "resend");
}

#[test]
fn a_try_given_up_that_reaches_the_server_after_it_was_settled_stores_nothing() {
  // A try whose answer never came may still be on its way (a partition): the batch that
  // sends its submissions again settles it first, and the try fails if it arrives later.
  let Some(url) = server() else { return };
  let mut s = store(&url, "late");
  let first = numbered(&[1, 2]);
  let given_up = s.lose_next_try(&first);
  let ids = ids_of(&s.batch(&numbered(&[1, 2, 3]), T0).expect("sent again"));
  assert_eq!(ids.len(), 3);
  let count = || rows_in(&url, "late", "bmad_executions");
  assert_eq!(count(), 3);
  let refused_on_its_record = |late: StoreResult<crate::store::BatchResult>| match late {
    Err(e) => assert!(e.message.contains("23505"), "refused on its record's key: {e:?}"),
    Ok(r) => panic!("the late try is refused, not answered {r:?}"),
  };
  // A batch of submissions only: one statement.
  refused_on_its_record(s.batch_as_try(given_up, &first, T0));
  assert_eq!(count(), 3, "nothing stored twice");
  // The same for a try in a transaction (a keyed submission rides with it).
  let keyed = |seqs: &[u64]| {
    let mut b = numbered(seqs);
    b.inserts[0].key = Some("late key".to_string());
    b
  };
  let given_up = s.lose_next_try(&keyed(&[5, 6]));
  assert_eq!(
    ids_of(&s.batch(&keyed(&[5, 6]), T0).expect("sent again")).len(),
    2
  );
  assert_eq!(count(), 5);
  refused_on_its_record(s.batch_as_try(given_up, &keyed(&[5, 6]), T0));
  assert_eq!(count(), 5, "nothing stored twice");
  // The executor goes on.
  assert_eq!(ids_of(&s.batch(&numbered(&[7]), T0).expect("insert")).len(), 1);
  assert_eq!(count(), 6);
  drop_schema(&url, "late");
}

#[test]
fn a_lost_try_that_sent_nothing_does_not_undo_what_an_earlier_settlement_found() {
  // A lost try's submissions come back split over two batches: the second half's ids were
  // found by the first half's settlement, so a later lost try that carried them sent none.
  let Some(url) = server() else { return };
  let mut s = store(&url, "split");
  let first = ids_of(&s.batch(&numbered(&[1, 2]), T0).expect("insert"));
  s.lose_last_answer(&numbered(&[1, 2]));
  assert_eq!(
    ids_of(&s.batch(&numbered(&[1]), T0).expect("first half")),
    vec![first[0]]
  );
  s.lose_next_try(&numbered(&[2]));
  assert_eq!(
    ids_of(&s.batch(&numbered(&[2]), T0).expect("second half")),
    vec![first[1]]
  );
  assert_eq!(
    rows_in(&url, "split", "bmad_executions"),
    2,
    "nothing stored twice"
  );
  drop_schema(&url, "split");
}

#[test]
fn settlements_in_a_chain_of_lost_answers_keep_every_id_found() {
  // Two answers lost in a row, the second try settling the first; then the submissions come
  // back one by one: each gets the id stored first, nothing is stored twice.
  let Some(url) = server() else { return };
  let mut s = store(&url, "chain");
  for seqs in [&[1u64, 2][..], &[1, 3]] {
    s.lose_next_answer = true;
    assert_eq!(
      s.batch(&numbered(seqs), T0).expect_err("lost").code,
      "ERR_STORE_DISCONNECTED"
    );
  }
  let stored = |seq: i64| -> i64 {
    let c = PgConnection::open(target(&url, "chain")).expect("open");
    let q = format!(
      "SELECT x.id FROM {}.bmad_batches b, unnest(b.seqs, b.ids) x(seq, id) WHERE x.seq = $1",
      c.target.quoted_schema()
    );
    c.wait("test", c.client().query_one(&q, &[&seq]))
      .expect("recorded once")
      .get(0)
  };
  let (one, two, three) = (stored(1), stored(2), stored(3));
  for (seq, id) in [(2, two), (3, three), (1, one)] {
    let got = s.batch(&numbered(&[seq]), T0).expect("sent again").inserted;
    assert_eq!(
      got.iter().map(|i| i.id).collect::<Vec<_>>(),
      vec![id],
      "seq {seq}"
    );
  }
  assert_eq!(
    rows_in(&url, "chain", "bmad_executions"),
    3,
    "nothing stored twice"
  );
  drop_schema(&url, "chain");
}

#[test]
fn claims_follow_interest_and_exclusions_and_releases_hand_attempts_back() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "interest");
  let ids = insert(&mut s, vec![exec("busy", 5), exec("x", 1), exec("y", 1)]);
  s.set_interest(Interest::new(false, &["busy".to_string(), "x".to_string()]));
  let batch = Batch {
    claim: 10,
    exclude: vec!["busy".to_string()],
    ..Default::default()
  };
  let got: Vec<i64> = s
    .batch(&batch, T0 + 1.0)
    .expect("claim")
    .claimed
    .iter()
    .map(|r| r.id)
    .collect();
  assert_eq!(got, vec![ids[1]], "y is of no interest, busy is excluded");
  let release = Batch {
    releases: vec![Release {
      id: ids[1],
      attempt: 1,
    }],
    ..Default::default()
  };
  s.batch(&release, T0 + 2.0).expect("release");
  let r = s.fetch(ids[1]).expect("fetch").expect("row");
  assert_eq!((r.status, r.attempt, r.owner), (STATUS_QUEUED, 0, None));
  assert_eq!(claim(&mut s, 10, T0 + 3.0), vec![ids[0], ids[1]]);
  // Retention: ended ones older than the TTL go.
  for id in [ids[0], ids[1]] {
    assert_eq!(finish(&mut s, completed(id), T0 + 4.0), Finished::Recorded);
  }
  assert_eq!(s.retention(1000.0, 100, T0 + 2000.0).expect("retention"), 2);
  assert!(s.fetch(ids[0]).expect("fetch").is_none());
  s.heartbeat(T0 + 5.0).expect("heartbeat");
  s.leave().expect("leave");
  drop_schema(&url, "interest");
}

#[test]
fn a_worker_that_leaves_with_attempts_running_stays_known_until_they_end() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "leave");
  let ids = insert(&mut s, vec![exec("a", 0)]);
  assert_eq!(claim(&mut s, 1, T0 + 1.0), ids);
  let c = PgConnection::open(target(&url, "leave")).expect("open");
  let workers = || -> i64 {
    let q = format!("SELECT count(*) FROM {}.bmad_workers", c.target.quoted_schema());
    c.wait("test", c.client().query_one(&q, &[]))
      .expect("count")
      .get(0)
  };
  // A close that gave up: its attempt is still running in its name. Its row stays, so a
  // rescuer on this host moves it once the process has exited.
  s.leave().expect("leave");
  assert_eq!(workers(), 1);
  assert_eq!(finish(&mut s, completed(ids[0]), T0 + 2.0), Finished::Recorded);
  s.leave().expect("leave");
  assert_eq!(workers(), 0);
  drop(c);
  drop_schema(&url, "leave");
}

#[test]
fn a_schema_named_with_quotes_works() {
  let Some(url) = server() else { return };
  let name = "it's \"quoted\"";
  let mut s = store(&url, name);
  let ids = insert(&mut s, vec![exec("a", 0), exec("a", 0)]);
  assert_eq!(ids.len(), 2);
  assert_eq!(claim(&mut s, 2, T0 + 1.0), ids);
  s.leave().expect("leave");
  drop_schema(&url, name);
}

#[test]
fn retention_sweeps_on_its_own_connection_while_batches_go_on() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "sweep");
  let ids = insert(&mut s, vec![exec("a", 0), exec("a", 0), exec("a", 0)]);
  assert_eq!(claim(&mut s, 3, T0 + 1.0), ids);
  for &id in &ids {
    assert_eq!(finish(&mut s, completed(id), T0 + 2.0), Finished::Recorded);
  }
  // Another session holds one ended row: the sweep's delete waits for it.
  let mut holder = PgConnection::open(target(&url, "sweep")).expect("open");
  sql(
    &mut holder,
    &format!(
      "BEGIN; SELECT 1 FROM {{s}}.bmad_executions WHERE id = {} FOR UPDATE",
      ids[0]
    ),
  );
  assert_eq!(s.start_retention(1000.0, 100, T0 + 2000.0).expect("start"), 0);
  std::thread::sleep(Duration::from_millis(200));
  assert!(s.sweeping(), "the sweep waits for the held row");
  // Meanwhile the statement connection goes on: a submission and its claim.
  let more = insert(&mut s, vec![exec("a", 0)]);
  assert_eq!(claim(&mut s, 1, T0 + 3.0), more);
  assert!(s.sweeping(), "still waiting");
  assert_eq!(
    s.start_retention(1000.0, 100, T0 + 2000.0).expect("busy"),
    0,
    "one sweep at a time"
  );
  sql(&mut holder, "ROLLBACK");
  let deadline = std::time::Instant::now() + Duration::from_secs(10);
  while s.sweeping() {
    assert!(
      std::time::Instant::now() < deadline,
      "the sweep ends once the row is free"
    );
    std::thread::sleep(Duration::from_millis(10));
  }
  // The next start reports the finished sweep: the three ended rows went, the running stayed.
  assert_eq!(s.start_retention(1000.0, 100, T0 + 2000.0).expect("report"), 3);
  for id in ids {
    assert!(s.fetch(id).expect("fetch").is_none());
  }
  assert_eq!(
    s.fetch(more[0]).expect("fetch").expect("row").status,
    STATUS_RUNNING
  );
  s.leave().expect("leave");
  drop(holder);
  drop_schema(&url, "sweep");
}

// ----- the store thread on PostgreSQL ------------------------------------------------------

use crate::store::service::{self, Command, Event, Options};
use std::sync::mpsc;
use std::time::Instant;

fn start(url: &str, schema: &str, agents: &[&str]) -> (service::Handle, mpsc::Receiver<Event>) {
  let (handle, rx, _) = start_leased(url, schema, agents, LEASE);
  (handle, rx)
}

/// A store thread whose leases last `lease_ms` (a heartbeat each third); also its owner.
fn start_leased(
  url: &str,
  schema: &str,
  agents: &[&str],
  lease_ms: f64,
) -> (service::Handle, mpsc::Receiver<Event>, String) {
  let opts = Options {
    path: std::path::PathBuf::new(),
    synchronous: crate::store::schema::Synchronous::Normal,
    lease_ms,
    poll_ms: 1.0,
    ttl_ms: 3_600_000.0,
    max_kept: 10_000,
    follow_ms: service::FOLLOW_MS,
    postgres: Some(Ok(target(url, schema))),
  };
  let (tx, rx) = mpsc::channel();
  let handle = service::start(opts, Box::new(move |ev| tx.send(ev).is_ok())).expect("start");
  let Event::Opened { owner } = expect(&rx, Duration::from_secs(10), "Opened", |e| {
    matches!(e, Event::Opened { .. })
  }) else {
    unreachable!()
  };
  handle.send(Command::Interest {
    any: false,
    agents: agents.iter().map(|a| a.to_string()).collect(),
  });
  (handle, rx, owner)
}

fn expect(rx: &mpsc::Receiver<Event>, within: Duration, what: &str, want: impl Fn(&Event) -> bool) -> Event {
  let deadline = Instant::now() + within;
  loop {
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
      Ok(ev) if want(&ev) => return ev,
      Ok(Event::Failed { error, .. }) => panic!("{what}: a request failed: {error}"),
      Ok(_) => {}
      Err(e) => panic!("no {what} within {within:?}: {e}"),
    }
  }
}

/// Runs `batch` through a store thread as batch `req`: its answer.
fn batch_through(
  h: &service::Handle,
  rx: &mpsc::Receiver<Event>,
  req: u32,
  batch: Batch,
) -> crate::store::BatchResult {
  h.send(Command::Batch { req, batch });
  let Event::Batch { result, .. } = expect(
    rx,
    HEARD,
    "the batch's answer",
    |e| matches!(e, Event::Batch { req: r, .. } if *r == req),
  ) else {
    unreachable!()
  };
  result
}

/// Submits `inserts` through a store thread as batch `req`; the ids it answered.
fn submitted(
  h: &service::Handle,
  rx: &mpsc::Receiver<Event>,
  req: u32,
  inserts: Vec<NewExecution>,
) -> Vec<i64> {
  let batch = Batch {
    inserts,
    ..Default::default()
  };
  ids_of(&batch_through(h, rx, req, batch))
}

/// Claims up to `n` through a store thread as batch `req`: the rows claimed.
fn claim_through(
  h: &service::Handle,
  rx: &mpsc::Receiver<Event>,
  req: u32,
  n: u32,
) -> Vec<crate::store::Row> {
  let batch = Batch {
    claim: n,
    ..Default::default()
  };
  batch_through(h, rx, req, batch).claimed
}

/// Closes a store thread and waits for its answer.
fn close_thread(h: &service::Handle, rx: &mpsc::Receiver<Event>) {
  h.send(Command::Close { req: 999 });
  expect(rx, HEARD, "closed", |e| matches!(e, Event::Closed { .. }));
}

/// What a NOTIFY must beat: the thread's own periodic look is the fallback.
const HEARD: Duration = Duration::from_millis(500);

#[test]
fn a_claim_whose_answer_was_lost_goes_back_and_is_looked_for_at_once_by_its_own_worker() {
  let Some(url) = server() else { return };
  // A heartbeat every 200 ms; the fallback looks 250 ms, 750, 1750, then 3750 after the
  // listener connected: between the last two from here, whatever that took.
  let (runner, rx, owner) = start_leased(&url, "unknownback", &["a"], 600.0);
  std::thread::sleep(Duration::from_millis(2200));
  while rx.try_recv().is_ok() {}
  // A claim the server committed for this worker after it had given up on its answer.
  let mut admin = PgConnection::open(target(&url, "unknownback")).expect("open");
  sql(
    &mut admin,
    &format!(
      "INSERT INTO {{s}}.bmad_executions (agent, task, level, priority, mode, state, attempt, owner, lease_expires_at, \
         max_attempts, retry_delay_ms, backoff, timeout_ms, created_at, scheduled_at, attempted_at) \
       VALUES ('a', 't', 'medium', 3, 0, 1, 1, '{owner}', 9e15, 2, 0, 0, 0, 0, 0, 0)"
    ),
  );
  // Its own heartbeat hands it back, and this worker, deaf to its own notice, looks at once
  // instead of at its next fallback look, 1.5 s away.
  expect(&rx, Duration::from_millis(900), "work after the hand-back", |e| {
    matches!(e, Event::Changed)
  });
  let claimed = claim_through(&runner, &rx, 1, 1);
  // The lost attempt was not counted.
  assert_eq!(
    claimed
      .iter()
      .map(|r| (r.agent.as_str(), r.attempt))
      .collect::<Vec<_>>(),
    vec![("a", 1)]
  );
  close_thread(&runner, &rx);
  drop_schema(&url, "unknownback");
}

#[test]
fn a_claim_that_locked_more_than_it_took_tells_the_others_to_look_again() {
  // Reading two agents' queues locks up to n rows of each; the rows not taken were skipped
  // by other claims meanwhile, so after the commit they hear of work.
  let Some(url) = server() else { return };
  let mut a = store(&url, "spill");
  a.set_interest(Interest::new(false, &["x".to_string(), "y".to_string()]));
  insert(
    &mut a,
    vec![exec("x", 0), exec("x", 0), exec("y", 0), exec("y", 0)],
  );
  let (other, rx) = start(&url, "spill", &["x", "y"]);
  // Past the first fallback looks (250 ms, 750, 1750 after the listener connected): the
  // next is 1.5 s away.
  std::thread::sleep(Duration::from_millis(2200));
  while rx.try_recv().is_ok() {}
  assert_eq!(claim(&mut a, 2, T0 + 1.0).len(), 2);
  expect(&rx, HEARD, "work announced by the spilling claim", |e| {
    matches!(e, Event::Changed)
  });
  close_thread(&other, &rx);
  drop_schema(&url, "spill");
}

#[test]
fn another_host_hears_new_work_ends_and_cancels_through_notify() {
  let Some(url) = server() else { return };
  let (runner, runner_rx) = start(&url, "hosts", &["a"]);
  let (submitter, submitter_rx) = start(&url, "hosts", &[]);
  // Work submitted on one host wakes the other (submissions whose submitter takes the
  // value: their ends are read as soon as heard).
  let awaited = NewExecution {
    mode: MODE_EXECUTE,
    ..exec("a", 3)
  };
  let ids = submitted(&submitter, &submitter_rx, 1, vec![awaited.clone(), awaited]);
  let t0 = Instant::now();
  expect(&runner_rx, HEARD, "a wake-up for new work", |e| {
    matches!(e, Event::Changed)
  });
  let claimed = claim_through(&runner, &runner_rx, 2, 4);
  assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
  // Its end reaches the submitter, which watches what it inserted.
  let done = Finish {
    id: ids[0],
    attempt: 1,
    status: STATUS_COMPLETED,
    value: Some("42".to_string()),
    retryable: false,
  };
  runner.send(Command::Batch {
    req: 3,
    batch: Batch {
      finishes: vec![done],
      ..Default::default()
    },
  });
  let Event::Ended { rows, .. } = expect(&submitter_rx, HEARD, "the end", |e| {
    matches!(e, Event::Ended { .. })
  }) else {
    unreachable!()
  };
  assert_eq!((rows[0].id, rows[0].result.as_deref()), (ids[0], Some("42")));
  // A cancel asked on the submitter's host reaches the runner.
  submitter.send(Command::Cancel {
    req: 4,
    id: ids[1],
    error: "{}".to_string(),
  });
  let Event::CancelRequested(list) = expect(&runner_rx, HEARD, "the cancel", |e| {
    matches!(e, Event::CancelRequested(_))
  }) else {
    unreachable!()
  };
  assert_eq!(list[0].id, ids[1]);
  assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
  runner.send(Command::Close { req: 9 });
  close_thread(&submitter, &runner_rx);
  expect(&submitter_rx, HEARD, "closed", |e| {
    matches!(e, Event::Closed { .. })
  });
  drop_schema(&url, "hosts");
}

/// Another host's listener on the schema's channel: its runtime, its client, and what it
/// hears.
type Heard = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;
fn schema_listener(url: &str, schema: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client, Heard) {
  let rt = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .expect("runtime");
  let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
  let t = target(url, schema);
  let client = rt
    .block_on(async {
      let c = open_client(&t, Some(tx)).await.expect("connect");
      c.batch_execute(&format!("LISTEN {}", quote_ident(&notify::channel(&t.schema))))
        .await
        .map(|_| c)
    })
    .expect("listen");
  (rt, client, rx)
}

/// The payloads heard until `enough` says so (or 5 s passed), and 100 ms more without
/// another.
fn heard(rt: &tokio::runtime::Runtime, rx: &mut Heard, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
  let mut out: Vec<String> = Vec::new();
  let deadline = Instant::now() + Duration::from_secs(5);
  rt.block_on(async {
    loop {
      let wait = if enough(&out) {
        Duration::from_millis(100)
      } else {
        deadline.saturating_duration_since(Instant::now())
      };
      match tokio::time::timeout(wait, rx.recv()).await {
        Ok(Some(note)) => out.push(note.payload().to_string()),
        _ => break,
      }
    }
  });
  out
}

/// Heard: `w` (work may wait) and the end of `id`, and no other end.
fn told_work_and_the_end_of(rt: &tokio::runtime::Runtime, rx: &mut Heard, id: i64) {
  let payloads = heard(rt, rx, |p| p.iter().any(|p| p == "w"));
  assert!(payloads.iter().any(|p| p == "w"), "{payloads:?}");
  assert_eq!(ends_in(&payloads), vec![id]);
}

/// The ids `payloads` tell ended, sorted.
fn ends_in(payloads: &[String]) -> Vec<i64> {
  let mut told: Vec<i64> = payloads
    .iter()
    .filter_map(|p| p.strip_prefix("f:"))
    .flat_map(|list| list.split(',').map(|id| id.parse::<i64>().expect("an id")))
    .collect();
  told.sort_unstable();
  told
}

/// The ids told ended, sorted, once `n` are heard, and the longest payload that told them.
fn told_ends(rt: &tokio::runtime::Runtime, rx: &mut Heard, n: usize) -> (Vec<i64>, usize) {
  let payloads = heard(rt, rx, |p| ends_in(p).len() >= n);
  let longest = payloads
    .iter()
    .filter(|p| p.starts_with("f:"))
    .map(String::len)
    .max()
    .unwrap_or(0);
  (ends_in(&payloads), longest)
}

/// A store on `schema` whose agent `g` runs one at a time, with two of its executions: the
/// first claimed at `now` by this store, the second left queued by the limit.
fn limited_one_running(url: &str, schema: &str, now: f64) -> (PgStore, Vec<i64>) {
  let mut a = store(url, schema);
  a.set_global_limit("g", Some(1)).expect("set the limit");
  let ids = insert(&mut a, vec![exec("g", 3), exec("g", 0)]);
  assert_eq!(claim(&mut a, 2, now), vec![ids[0]], "one at a time");
  (a, ids)
}

#[test]
fn a_rescue_that_ends_an_execution_of_a_limited_agent_tells_of_work() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "rescuew");
  let mut b = store(&url, "rescuew");
  a.set_global_limit("g", Some(1)).expect("set the limit");
  let ids = insert(&mut a, vec![exec("g", 3), exec("g", 0)]);
  assert_eq!(claim(&mut a, 2, T0 + 1.0), vec![ids[0]], "one at a time");
  assert!(claim(&mut b, 2, T0 + 1.0).is_empty(), "the limit is held");
  let (rt, _client, mut rx) = schema_listener(&url, "rescuew");
  // A stops; B's rescue ends its attempt (its only one): the slot is free for others.
  let late = T0 + 1.0 + LEASE + 1.0;
  let rescued = b.rescue(late).expect("rescue");
  assert_eq!(
    rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
    vec![(ids[0], STATUS_FAILED)]
  );
  told_work_and_the_end_of(&rt, &mut rx, ids[0]);
  assert_eq!(claim(&mut b, 2, late + 1.0), vec![ids[1]]);
  drop_schema(&url, "rescuew");
}

#[test]
fn a_hand_back_that_only_ended_a_cancelled_attempt_tells_of_its_end_and_of_work() {
  let Some(url) = server() else { return };
  let (mut a, ids) = limited_one_running(&url, "unknownw", T0 + 1.0);
  assert_eq!(a.cancel(ids[0], "{}", T0 + 2.0).expect("cancel"), 1);
  let (rt, _client, mut rx) = schema_listener(&url, "unknownw");
  // A's claim of it is unknown to A (its answer lost): handed back, it ends cancelled, which
  // frees the agent's slot for every executor.
  assert_eq!(a.release_unknown(&[], None).expect("hand back"), vec![ids[0]]);
  told_work_and_the_end_of(&rt, &mut rx, ids[0]);
  assert_eq!(claim(&mut a, 2, T0 + 3.0), vec![ids[1]]);
  drop_schema(&url, "unknownw");
}

#[test]
fn a_rescue_that_only_ends_an_attempt_makes_the_rescuer_look_for_work() {
  let Some(url) = server() else { return };
  let (_a, ids) = limited_one_running(&url, "rescuelook", crate::system::probes::now_ms());
  // A rescue every second; the fallback looks 250 ms, 750, 1750, then 3750 after the
  // listener connected.
  let (runner, rx) = start(&url, "rescuelook", &["g"]);
  std::thread::sleep(Duration::from_millis(2200));
  while rx.try_recv().is_ok() {}
  // A's lease runs out: its attempt (the last one allowed) ends failed at the next rescue,
  // and the rescuer, deaf to its own notice, looks at once for the work it may now take.
  let mut admin = PgConnection::open(target(&url, "rescuelook")).expect("open");
  sql(
    &mut admin,
    &format!(
      "UPDATE {{s}}.bmad_executions SET lease_expires_at = 0 WHERE id = {}",
      ids[0]
    ),
  );
  let Event::Rescued(rescued) = expect(&rx, Duration::from_millis(1500), "the rescue", |e| {
    matches!(e, Event::Rescued(_))
  }) else {
    unreachable!()
  };
  assert_eq!(
    rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
    vec![(ids[0], STATUS_FAILED)]
  );
  expect(&rx, HEARD, "work after the rescue", |e| {
    matches!(e, Event::Changed)
  });
  let claimed = claim_through(&runner, &rx, 1, 1);
  assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[1]]);
  close_thread(&runner, &rx);
  drop_schema(&url, "rescuelook");
}

#[test]
fn a_batch_tells_only_the_executions_it_really_ended() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "told");
  let ids = insert(&mut s, (0..4).map(|_| exec("a", 0)).collect());
  assert_eq!(claim(&mut s, 4, T0), ids);
  let (done, stale, back, cancelled) = (ids[0], ids[1], ids[2], ids[3]);
  assert_eq!(
    s.cancel(cancelled, "{}", T0 + 1.0).expect("cancel"),
    STATUS_RUNNING as i32
  );
  let (rt, _client, mut rx) = schema_listener(&url, "told");
  // One batch: a completion, a completion of an attempt that is not the running one
  // (stale), an attempt handed back, and one handed back after its cancel was asked.
  let batch = Batch {
    finishes: vec![
      completed(done),
      Finish {
        attempt: 2,
        ..completed(stale)
      },
    ],
    releases: vec![
      Release { id: back, attempt: 1 },
      Release {
        id: cancelled,
        attempt: 1,
      },
    ],
    ..Default::default()
  };
  let r = s.batch(&batch, T0 + 2.0).expect("batch");
  assert_eq!(r.finished, vec![Finished::Recorded, Finished::Stale]);
  let (told, _) = told_ends(&rt, &mut rx, 2);
  assert_eq!(
    told,
    vec![done, cancelled],
    "stale {stale} and queued {back} are not ends"
  );
  // Many ends at once, of ids as long as they get, are split under PostgreSQL's payload
  // limit, each told once.
  let c = PgConnection::open(target(&url, "told")).expect("open");
  let q = format!(
    "SELECT setval('{}.bmad_executions_id_seq', 1e18::int8)",
    c.target.quoted_schema()
  );
  c.wait("test", c.client().execute(&q, &[])).expect("setval");
  insert(&mut s, (0..1_000).map(|_| exec("a", 0)).collect());
  let mut ids = claim(&mut s, 1_000, T0 + 3.0);
  assert_eq!(ids.len(), 1_000);
  let batch = Batch {
    finishes: ids.iter().map(|&id| completed(id)).collect(),
    ..Default::default()
  };
  s.batch(&batch, T0 + 4.0).expect("batch");
  let (told, longest) = told_ends(&rt, &mut rx, ids.len());
  ids.sort_unstable();
  assert_eq!(told, ids);
  assert!((7_000..=7_900).contains(&longest), "{longest}");
  drop_schema(&url, "told");
}

#[test]
fn an_unreachable_server_fails_the_open_and_every_request() {
  let port = std::net::TcpListener::bind("127.0.0.1:0")
    .and_then(|l| l.local_addr())
    .map(|a| a.port())
    .expect("a free port");
  let opts = Options {
    path: std::path::PathBuf::new(),
    synchronous: crate::store::schema::Synchronous::Normal,
    lease_ms: LEASE,
    poll_ms: 1.0,
    ttl_ms: 1.0,
    max_kept: 1,
    follow_ms: service::FOLLOW_MS,
    postgres: Some(PgTarget::parse(&format!(
      "postgres://u:pw@127.0.0.1:{port}/db?connect_timeout=3"
    ))),
  };
  let (tx, rx) = mpsc::channel();
  let handle = service::start(opts, Box::new(move |ev| tx.send(ev).is_ok())).expect("start");
  let Ok(Event::Failed { req: 0, error }) = rx.recv_timeout(Duration::from_secs(10)) else {
    panic!("the open fails")
  };
  assert!(error.message.contains("cannot connect"), "{}", error.message);
  handle.send(Command::Fetch { req: 5, id: 1 });
  assert!(matches!(
    rx.recv_timeout(Duration::from_secs(1)),
    Ok(Event::Failed { req: 5, .. })
  ));
}

#[test]
fn a_connection_the_server_ended_is_replaced_and_work_goes_on() {
  let Some(url) = server() else { return };
  let schema = format!("reconnect_{}", std::process::id());
  let t = PgTarget::parse(&format!(
    "{url}?schema={schema}&application_name=bmad_reconnect_{}",
    std::process::id()
  ))
  .expect("valid");
  let mut s = PgStore::open_own(t, LEASE, T0).expect("open");
  s.set_interest(Interest::new(true, &[]));
  let ids = insert(&mut s, vec![exec("a", 1), exec("a", 1)]);
  // An administrator ends the store's session (and only it: other tests share the server).
  let mut admin = PgConnection::open(target(&url, "reconnect_admin")).expect("open");
  sql(
    &mut admin,
    &format!(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bmad_reconnect_{}'",
      std::process::id()
    ),
  );
  let deadline = Instant::now() + Duration::from_secs(5);
  let claimed = loop {
    let batch = Batch {
      claim: 5,
      ..Default::default()
    };
    match s.batch(&batch, T0 + 1.0) {
      Ok(r) => break r.claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
      Err(e) => {
        // At most the operation that found the connection gone fails, as a lost connection.
        assert_eq!(e.code, crate::store::DISCONNECTED, "{e}");
        assert!(Instant::now() < deadline, "still failing: {e}");
        std::thread::sleep(Duration::from_millis(20));
      }
    }
  };
  assert_eq!(claimed, ids, "nothing lost");
  assert_eq!(
    s.link_events(),
    vec![false, true],
    "the loss and the recovery, once each"
  );
  drop_schema(&url, "reconnect");
  drop_schema(&url, "reconnect_admin");
}

#[test]
fn work_whose_notification_was_lost_is_found_by_the_fallback_look() {
  let Some(url) = server() else { return };
  let (runner, rx) = start(&url, "fallback", &["a"]);
  std::thread::sleep(Duration::from_millis(100));
  while rx.try_recv().is_ok() {}
  // A row written without any NOTIFY (as if the notification had been lost).
  let mut admin = PgConnection::open(target(&url, "fallback")).expect("open");
  sql(
    &mut admin,
    "INSERT INTO {s}.bmad_executions (agent, task, level, priority, mode, state, max_attempts, retry_delay_ms, backoff, timeout_ms, created_at, scheduled_at) \
     VALUES ('a', 't', 'medium', 3, 0, 0, 1, 0, 0, 0, 0, 0)",
  );
  expect(
    &rx,
    Duration::from_secs(3),
    "a look without a notification",
    |e| matches!(e, Event::Changed),
  );
  let claimed = claim_through(&runner, &rx, 1, 1);
  assert_eq!(claimed.len(), 1);
  close_thread(&runner, &rx);
  drop_schema(&url, "fallback");
}

#[test]
fn a_global_limit_holds_across_hosts_claiming_at_once() {
  use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
  use std::sync::Arc;
  let Some(url) = server() else { return };
  let mut a = store(&url, "global");
  a.set_global_limit("g", Some(3)).expect("set the limit");
  let total = 120;
  insert(
    &mut a,
    (0..total)
      .map(|i| exec(if i % 4 == 0 { "free" } else { "g" }, i as i64 % 3))
      .collect(),
  );
  let t = target(&url, "global");
  let done = Arc::new(AtomicUsize::new(0));
  let most = Arc::new(AtomicI64::new(0));
  let hosts: Vec<_> = (0..3)
    .map(|_| {
      let (t, done, most) = (t.clone(), done.clone(), most.clone());
      std::thread::spawn(move || {
        let mut w = PgStore::open_own(t.clone(), LEASE, T0).expect("open");
        w.set_interest(Interest::new(true, &[]));
        let count = PgConnection::open(t).expect("open");
        let q = format!(
          "SELECT count(*) FROM {}.bmad_executions WHERE state = 1 AND agent = 'g'",
          count.target.quoted_schema()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while done.load(Ordering::SeqCst) < total && Instant::now() < deadline {
          let got = s_claim(&mut w, 4);
          let running: i64 = count
            .wait("count", count.client().query_one(&q, &[]))
            .expect("count")
            .get(0);
          most.fetch_max(running, Ordering::SeqCst);
          std::thread::sleep(Duration::from_millis(2));
          let finishes: Vec<Finish> = got
            .iter()
            .map(|&id| Finish {
              id,
              attempt: 1,
              status: STATUS_COMPLETED,
              value: None,
              retryable: false,
            })
            .collect();
          if !finishes.is_empty() {
            let b = Batch {
              finishes,
              ..Default::default()
            };
            let r = w.batch(&b, T0 + 2.0).expect("finish");
            done.fetch_add(
              r.finished.iter().filter(|f| **f == Finished::Recorded).count(),
              Ordering::SeqCst,
            );
          }
        }
      })
    })
    .collect();
  for h in hosts {
    h.join().expect("no panic");
  }
  assert_eq!(done.load(Ordering::SeqCst), total, "every execution ran");
  let most = most.load(Ordering::SeqCst);
  assert!(most <= 3, "{most} running at once, limit 3");
  assert_eq!(most, 3, "the limit was reached, so the check could see a breach");
  drop_schema(&url, "global");
}

#[test]
fn statements_over_arrays_of_ids_find_each_row_by_its_primary_key() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "plans");
  // Running rows of one owner, with their statistics known (as autovacuum keeps them).
  insert(&mut s, (0..300).map(|_| exec("a", 1)).collect());
  assert_eq!(s_claim(&mut s, 200).len(), 200);
  let mut c = PgConnection::open(target(&url, "plans")).expect("open");
  sql(&mut c, "ANALYZE {s}.bmad_executions");
  let schema = c.target.quoted_schema();
  let b = super::batch::BatchSql::new(&schema, "'unused'");
  for (name, text) in b.by_ids() {
    let (types, args) = match name {
      "complete" => (
        "int8[], int4[], text[], text, float8, text",
        "'{1,2,3}', '{1,1,1}', '{a,b,c}', 'o', 0, 'c'",
      ),
      "recorded" => (
        "int8[], int4[], text[], text",
        "'{1,2,3}', '{1,1,1}', '{a,b,c}', 'o'",
      ),
      "failing" => (
        "int8[], int4[], text, text[]",
        "'{1,2,3}', '{1,1,1}', 'o', '{a,b,c}'",
      ),
      "fail" => (
        "int8[], int4[], int2[], text[], float8[], float8, text",
        "'{1,2,3}', '{1,1,1}', '{3,3,3}', '{a,b,c}', '{0,0,0}', 0, 'o'",
      ),
      "progress" => (
        "int8[], int4[], float8[], text",
        "'{1,2,3}', '{1,1,1}', '{5,5,5}', 'o'",
      ),
      "release" => (
        "int8[], int4[], text, float8, text",
        "'{1,2,3}', '{1,1,1}', 'o', 0, 'c'",
      ),
      other => panic!("no arguments for {other}"),
    };
    // The connection's own settings: generic plans from the first execution.
    let prepare = format!("DEALLOCATE ALL; PREPARE p({types}) AS {text}");
    c.wait("test", c.client().batch_execute(&prepare))
      .expect("prepare");
    let rows = c
      .wait(
        "test",
        c.client().query(&format!("EXPLAIN EXECUTE p({args})"), &[]),
      )
      .expect("explain");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let plan = plan.join(" | ");
    assert!(plan.contains("bmad_executions_pkey"), "{name}: {plan}");
    assert!(
      !plan.contains("Join Filter"),
      "{name} scans the array once per row: {plan}"
    );
  }
  drop_schema(&url, "plans");
}

fn s_claim(s: &mut PgStore, n: u32) -> Vec<i64> {
  claim(s, n, T0 + 1.0)
}

#[test]
fn an_immediate_execution_is_claimable_at_once_and_the_next_due_time_comes_from_delayed_ones() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "due");
  // Created by a host whose clock reads a second later: due all the same.
  let batch = Batch {
    inserts: vec![exec("a", 1)],
    ..Default::default()
  };
  let early = s.batch(&batch, T0 + 1_000.0).expect("insert").inserted[0].id;
  let later = NewExecution {
    start_after: T0 + 5_000.0,
    ..exec("a", 1)
  };
  let delayed = insert(&mut s, vec![later])[0];
  assert_eq!(claim(&mut s, 10, T0), vec![early]);
  assert_eq!(s.next_due(T0).expect("next due"), Some(T0 + 5_000.0));
  assert_eq!(claim(&mut s, 10, T0 + 5_000.0), vec![delayed]);
  assert_eq!(s.next_due(T0).expect("next due"), None);
  // Both texts read the index of delayed rows, never every queued row (a backlog of another
  // agent here, its statistics known as autovacuum keeps them).
  insert(&mut s, (0..2_000).map(|_| exec("b", 1)).collect());
  let mut c = PgConnection::open(target(&url, "due")).expect("open");
  sql(&mut c, "ANALYZE {s}.bmad_executions");
  let schema = c.target.quoted_schema();
  for any in [true, false] {
    let sql = super::ops::next_due_sql(&schema, any);
    let args = if any { "(0)" } else { "(0, ARRAY[''a''])" }; // inside a quoted literal
    let types = if any { "(float8)" } else { "(float8, text[])" };
    let text = format!(
      "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; DEALLOCATE ALL; \
       PREPARE due{types} AS {sql}; CREATE TEMP TABLE IF NOT EXISTS plan (line text); TRUNCATE plan; \
       DO $$ DECLARE l text; BEGIN FOR l IN EXECUTE 'EXPLAIN EXECUTE due{args}' LOOP INSERT INTO plan VALUES (l); END LOOP; END $$;"
    );
    c.wait("test", c.client().batch_execute(&text)).expect("explain");
    let rows = c
      .wait(
        "test",
        c.client().query("SELECT string_agg(line, ' | ') FROM plan", &[]),
      )
      .expect("plan");
    let plan: String = rows[0].get(0);
    assert!(plan.contains("bmad_executions_due"), "any: {any}: {plan}");
  }
  drop_schema(&url, "due");
}

#[test]
fn a_failure_sent_again_after_its_retry_was_stored_is_a_retry_not_stale() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "resend_retry");
  let id = insert(
    &mut s,
    vec![NewExecution {
      max_attempts: 2,
      ..exec("a", 0)
    }],
  )[0];
  assert_eq!(claim(&mut s, 1, T0 + 1.0), vec![id]);
  let failure = Batch {
    finishes: vec![Finish {
      id,
      attempt: 1,
      status: STATUS_FAILED,
      value: Some(r#"{"message":"no"}"#.to_string()),
      retryable: true,
    }],
    ..Default::default()
  };
  let once = s.batch(&failure, T0 + 2.0).expect("failure").finished;
  assert_eq!(once, vec![Finished::Retry(100.0)]);
  // Its answer lost, the same batch a moment later: the retry the first try stored.
  let twice = s.batch(&failure, T0 + 12.0).expect("failure again").finished;
  assert_eq!(twice, vec![Finished::Retry(90.0)]);
  let row = s.fetch(id).expect("fetch").expect("row");
  assert_eq!(
    (row.status, row.attempt, row.scheduled_at),
    (STATUS_QUEUED, 1, T0 + 102.0)
  );
  // Another attempt's failure is still stale.
  let other = Batch {
    finishes: vec![Finish {
      attempt: 2,
      ..failure.finishes[0].clone()
    }],
    ..Default::default()
  };
  assert_eq!(
    s.batch(&other, T0 + 13.0).expect("stale").finished,
    vec![Finished::Stale]
  );
  drop_schema(&url, "resend_retry");
}

#[test]
fn a_status_read_is_answered_while_a_batch_waits_for_a_row_lock() {
  // Reads go to the pool: one never waits behind a batch held up on the statement
  // connection, and the batch goes on once the lock is gone.
  let Some(url) = server() else { return };
  let schema = "pool_read";
  let mut s = store(&url, schema);
  let ids = insert(&mut s, vec![exec("a", 0), exec("a", 0)]);
  let (runner, rx) = start(&url, schema, &["a"]);
  runner.send(Command::Batch {
    req: 1,
    batch: Batch {
      claim: 2,
      ..Default::default()
    },
  });
  expect(&rx, HEARD, "claimed", |e| {
    matches!(e, Event::Batch { req: 1, .. })
  });
  let mut holder = PgConnection::open(target(&url, schema)).expect("open");
  sql(
    &mut holder,
    &format!(
      "BEGIN; SELECT 1 FROM {{s}}.bmad_executions WHERE id = {} FOR UPDATE",
      ids[0]
    ),
  );
  let done = Finish {
    attempt: 1,
    ..completed(ids[0])
  };
  runner.send(Command::Batch {
    req: 2,
    batch: Batch {
      finishes: vec![done],
      ..Default::default()
    },
  });
  std::thread::sleep(Duration::from_millis(100));
  // Three reads at once: more than the pool's connections, all answered.
  for (req, id) in [(3, ids[1]), (4, ids[0]), (5, ids[1])] {
    assert!(runner.fetch(req, id));
  }
  let mut answered = Vec::new();
  let deadline = Instant::now() + Duration::from_secs(5);
  while answered.len() < 3 {
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
      Ok(Event::Fetched { req, row }) => answered.push((req, row.map(|r| (r.id, r.status)))),
      Ok(Event::Batch { req: 2, .. }) => panic!("the batch went through while the row was held"),
      Ok(Event::Failed { req, error }) => panic!("request {req} failed: {error}"),
      Ok(_) => {}
      Err(e) => panic!("reads answered: {answered:?}; then {e}"),
    }
  }
  answered.sort_by_key(|a| a.0);
  assert_eq!(
    answered,
    vec![
      (3, Some((ids[1], STATUS_RUNNING))),
      (4, Some((ids[0], STATUS_RUNNING))),
      (5, Some((ids[1], STATUS_RUNNING)))
    ]
  );
  sql(&mut holder, "ROLLBACK");
  let Event::Batch { result, .. } = expect(&rx, HEARD, "the end written", |e| {
    matches!(e, Event::Batch { req: 2, .. })
  }) else {
    unreachable!()
  };
  assert_eq!(result.finished, vec![Finished::Recorded]);
  // A read made just before the close is answered before it.
  assert!(runner.fetch(6, ids[0]));
  runner.send(Command::Close { req: 7 });
  let Event::Fetched { row, .. } = expect(&rx, HEARD, "the last read", |e| {
    matches!(e, Event::Fetched { req: 6, .. })
  }) else {
    unreachable!()
  };
  assert_eq!(row.map(|r| r.status), Some(STATUS_COMPLETED));
  expect(&rx, HEARD, "closed", |e| matches!(e, Event::Closed { req: 7 }));
  s.leave().expect("leave");
  drop(holder);
  drop_schema(&url, schema);
}

#[test]
fn the_pool_lends_at_most_its_size_and_lends_a_connection_again() {
  let Some(url) = server() else { return };
  let s = store(&url, "pool_size");
  let pool = super::pool::Pool::new(target(&url, "pool_size"));
  let rt = crate::system::runtime::handle().expect("runtime");
  let (a, b) = rt.block_on(async { (pool.get().await, pool.get().await) });
  let (mut a, b) = (a.expect("a"), b.expect("b"));
  let pid = |l: &super::pool::Lent| -> i32 {
    rt.block_on(l.client().query_one("SELECT pg_backend_pid()", &[]))
      .expect("pid")
      .get(0)
  };
  let pid_a = pid(&a);
  assert_ne!(pid_a, pid(&b));
  // A third waits while both are lent, then gets the one given back.
  let third = rt.spawn({
    let pool = pool.clone();
    async move {
      let mut l = pool.get().await.expect("lent");
      let pid: i32 = l
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
      l.done();
      pid
    }
  });
  std::thread::sleep(Duration::from_millis(200));
  assert!(!third.is_finished(), "a third connection waits");
  a.done();
  drop(a);
  assert_eq!(rt.block_on(third).expect("join"), pid_a);
  // Given back again, it is lent again; one not marked done is closed instead.
  let again = rt.block_on(pool.get()).expect("again");
  assert_eq!(pid(&again), pid_a);
  drop(again);
  drop(b);
  assert_eq!(pool.idle(), 0, "neither was marked done: both closed");
  drop(s);
  drop_schema(&url, "pool_size");
}

#[test]
fn a_claim_alone_takes_no_limited_agent_s_executions_and_sees_a_new_limit_within_its_time() {
  let Some(url) = server() else { return };
  let mut a = store(&url, "lone");
  let mut b = PgStore::open_own(target(&url, "lone"), LEASE, T0).expect("open");
  // No limit yet: the first claim (under the lock) finds none, so the next ones go alone.
  assert!(claim(&mut a, 4, T0).is_empty());
  // Another host limits "g" to 2 and submits to it, and to an agent without a limit (its
  // notice of the limit, which ends `a`'s second at once, is not heard here: no listener).
  b.set_global_limit("g", Some(2)).expect("set the limit");
  let g = insert(&mut b, (0..4).map(|_| exec("g", 0)).collect());
  let free = insert(&mut b, vec![exec("free", 0)]);
  // Alone, a claim takes nothing of a limited agent, even under its limit.
  assert_eq!(claim(&mut a, 8, T0 + 1.0), free);
  std::thread::sleep(super::ops::UNLIMITED_FOR + Duration::from_millis(100));
  // Its finding expired: the claim takes the lock again, and the limit with it.
  assert_eq!(claim(&mut a, 8, T0 + 2.0), g[..2].to_vec());
  assert!(claim(&mut a, 8, T0 + 3.0).is_empty(), "the limit is reached");
  assert_eq!(finish(&mut a, completed(g[0]), T0 + 4.0), Finished::Recorded);
  assert_eq!(
    claim(&mut a, 8, T0 + 5.0),
    vec![g[2]],
    "one slot freed under the limit"
  );
  drop_schema(&url, "lone");
}

#[test]
fn fire_and_forget_ends_are_read_together_and_only_the_latest_kept_ones() {
  let Some(url) = server() else { return };
  let (submitter, rx) = start(&url, "lazy", &[]);
  let mut runner = store(&url, "lazy");
  let kept = crate::protocol::ENDED_KEPT as usize;
  // One awaited submission and kept + 5 fire-and-forget ones.
  let mut inserts = vec![NewExecution {
    mode: MODE_EXECUTE,
    ..exec("a", 9)
  }];
  inserts.extend((0..kept + 5).map(|_| exec("a", 0)));
  let ids = submitted(&submitter, &rx, 1, inserts);
  // The awaited one first (priority 9), alone; its end is read at once.
  assert_eq!(claim(&mut runner, 1, T0), vec![ids[0]]);
  let t0 = Instant::now();
  assert_eq!(
    finish(&mut runner, completed(ids[0]), T0 + 1.0),
    Finished::Recorded
  );
  let Event::Ended { rows, unread, .. } = expect(&rx, HEARD, "the awaited end", |e| {
    matches!(e, Event::Ended { .. })
  }) else {
    unreachable!()
  };
  assert_eq!((rows.len(), rows[0].id, unread.len()), (1, ids[0], 0));
  assert!(t0.elapsed() < Duration::from_millis(200), "read as soon as heard");
  // The others end in two batches; heard within LAZY_MS, they are reported together: the
  // rows of the latest `ENDED_KEPT`, the ids of the rest.
  let rest = &ids[1..];
  let claimed = claim(&mut runner, rest.len() as u32, T0 + 2.0);
  assert_eq!(claimed.len(), rest.len());
  for part in claimed.chunks(claimed.len() / 2 + 1) {
    let b = Batch {
      finishes: part.iter().map(|&id| completed(id)).collect(),
      ..Default::default()
    };
    let r = runner.batch(&b, T0 + 3.0).expect("finish");
    assert!(r.finished.iter().all(|f| *f == Finished::Recorded));
  }
  let Event::Ended { rows, gone, unread } = expect(&rx, Duration::from_secs(5), "the other ends", |e| {
    matches!(e, Event::Ended { .. })
  }) else {
    unreachable!()
  };
  assert!(gone.is_empty());
  assert_eq!(
    (rows.len(), unread.len()),
    (kept, 5),
    "one report for both batches"
  );
  let mut all: Vec<i64> = rows.iter().map(|r| r.id).chain(unread.iter().copied()).collect();
  all.sort_unstable();
  assert_eq!(all, rest.to_vec(), "each end told once");
  assert!(rows.iter().all(|r| r.status == STATUS_COMPLETED));
  close_thread(&submitter, &rx);
  drop_schema(&url, "lazy");
}

#[test]
fn a_fire_and_forget_handed_back_in_the_window_is_not_told_ended_and_its_end_comes_later() {
  let Some(url) = server() else { return };
  let (submitter, rx) = start(&url, "lazyback", &[]);
  let mut runner = store(&url, "lazyback");
  let kept = crate::protocol::ENDED_KEPT as usize;
  let ids = submitted(&submitter, &rx, 1, (0..kept + 3).map(|_| exec("a", 0)).collect());
  // All are claimed; the first three are handed back (queued again: no end is told), then
  // the others end.
  assert_eq!(claim(&mut runner, (kept + 3) as u32, T0), ids);
  let back = ids[..3].to_vec();
  let rest = ids[3..].to_vec();
  let releases = back.iter().map(|&id| Release { id, attempt: 1 }).collect();
  runner
    .batch(
      &Batch {
        releases,
        ..Default::default()
      },
      T0 + 1.0,
    )
    .expect("release");
  let b = Batch {
    finishes: rest.iter().map(|&id| completed(id)).collect(),
    ..Default::default()
  };
  runner.batch(&b, T0 + 3.0).expect("finish");
  let Event::Ended { rows, unread, .. } = expect(&rx, Duration::from_secs(5), "the ends", |e| {
    matches!(e, Event::Ended { .. })
  }) else {
    unreachable!()
  };
  assert_eq!(rows.len(), kept);
  assert!(
    unread.is_empty(),
    "the handed-back ones are queued, not ended: {unread:?}"
  );
  // Still watched: their real ends are told.
  assert_eq!(claim(&mut runner, 3, T0 + 4.0), back);
  // Handed back uncounted: theirs is the first attempt again.
  let b = Batch {
    finishes: back.iter().map(|&id| completed(id)).collect(),
    ..Default::default()
  };
  let r = runner.batch(&b, T0 + 5.0).expect("finish");
  assert!(r.finished.iter().all(|f| *f == Finished::Recorded));
  // Heard: well before the look at every watched id, 5 s on.
  let Event::Ended { rows, unread, .. } = expect(&rx, Duration::from_secs(2), "their ends", |e| {
    matches!(e, Event::Ended { .. })
  }) else {
    unreachable!()
  };
  let mut ended: Vec<i64> = rows.iter().map(|r| r.id).collect();
  ended.sort_unstable();
  assert_eq!((ended, unread.len()), (back, 0));
  close_thread(&submitter, &rx);
  drop_schema(&url, "lazyback");
}

#[test]
fn an_older_release_s_notice_of_ends_is_read_at_once_and_what_is_still_open_stays_watched() {
  let Some(url) = server() else { return };
  let (submitter, rx) = start(&url, "olde", &[]);
  // Fire-and-forget submissions, more than the ends whose rows are read: told as true ends,
  // the oldest heard would be told unread.
  let kept = crate::protocol::ENDED_KEPT as usize;
  let ids = submitted(&submitter, &rx, 1, (0..=kept).map(|_| exec("a", 0)).collect());
  let (open, ended) = (ids[0], &ids[1..]);
  // And one whose submitter takes its value: read as soon as heard.
  let awaited = NewExecution {
    mode: MODE_EXECUTE,
    ..exec("a", 0)
  };
  let awaited = submitted(&submitter, &rx, 2, vec![awaited])[0];
  // A host of an older release ends all but those two and names them all, as it named
  // attempts handed back.
  let mut other = PgConnection::open(target(&url, "olde")).expect("open");
  let channel = notify::channel(&other.target.schema);
  let list: Vec<String> = ids.iter().chain([&awaited]).map(i64::to_string).collect();
  sql(
    &mut other,
    &format!(
      "BEGIN; UPDATE {{s}}.bmad_executions SET state = 2, result = '1', finalized_at = 1 \
       WHERE id NOT IN ({open}, {awaited}); SELECT pg_notify('{channel}', 'e:{}'); COMMIT",
      list.join(",")
    ),
  );
  let mut told = Vec::new();
  while told.len() < kept {
    let Event::Ended { rows, gone, unread } =
      expect(&rx, HEARD, "the ends", |e| matches!(e, Event::Ended { .. }))
    else {
      unreachable!()
    };
    assert!(gone.is_empty() && unread.is_empty(), "{gone:?} {unread:?}");
    told.extend(rows.iter().map(|r| r.id));
  }
  told.sort_unstable();
  assert_eq!(
    told,
    ended.to_vec(),
    "the open ones {open} and {awaited} are not told"
  );
  // Still watched: their true ends are told.
  let mut runner = store(&url, "olde");
  let both = claim(&mut runner, 2, T0);
  assert_eq!(both, vec![open, awaited]);
  for id in both {
    assert_eq!(finish(&mut runner, completed(id), T0 + 1.0), Finished::Recorded);
  }
  let mut told = Vec::new();
  while told.len() < 2 {
    let Event::Ended { rows, unread, .. } = expect(&rx, Duration::from_secs(2), "their ends", |e| {
      matches!(e, Event::Ended { .. })
    }) else {
      unreachable!()
    };
    told.extend(rows.iter().map(|r| r.id).chain(unread));
  }
  told.sort_unstable();
  assert_eq!(told, vec![open, awaited]);
  close_thread(&submitter, &rx);
  drop_schema(&url, "olde");
}

// ----- pushes to a parked claim ------------------------------------------------------------

/// A connection standing for a worker's listener, holding its key's lock: it, its key, and
/// its server process.
fn listener(url: &str, schema: &str) -> (PgConnection, i64, i32) {
  let c = PgConnection::open(target(url, schema)).expect("open");
  let key = super::push::listener_key();
  c.wait("test", c.client().execute(super::push::LISTENER, &[&key]))
    .expect("lock");
  let pid = c
    .wait("test", c.client().query_one("SELECT pg_backend_pid()", &[]))
    .expect("read")
    .get(0);
  (c, key, pid)
}

#[test]
fn a_submission_fills_a_published_claim_with_what_it_may_take_and_the_withdrawal_returns_it() {
  let Some(url) = server() else { return };
  let mut runner = store(&url, "push");
  let mut producer = store(&url, "push");
  let (conn, me, pid) = listener(&url, "push");
  producer.set_global_limit("l", Some(5)).expect("limit");
  // Older work of "b" waits: a push never passes it.
  let waiting = insert(&mut producer, vec![exec("b", 0)]);
  let three = Batch {
    claim: 3,
    ..Default::default()
  };
  let two = Batch {
    claim: 2,
    ..Default::default()
  };
  let token = runner
    .publish(&three, T0, Some(me))
    .expect("publish")
    .expect("a token");
  let ids = insert(
    &mut producer,
    vec![
      exec("a", 0),
      exec("b", 1),
      exec("l", 1),
      exec("a", 2),
      exec("a", 0),
    ],
  );
  let row = |s: &mut PgStore, id: i64| s.fetch(id).expect("fetch").expect("row");
  // The best three are the candidates: "b" waits behind older work, "l" is limited; the
  // "a" of priority 2 is stored running for the runner as a claim would leave it. The
  // others stay queued: a candidate refused is not replaced.
  let r = row(&mut producer, ids[3]);
  assert_eq!(
    (r.status, r.attempt, r.owner.as_deref()),
    (STATUS_RUNNING, 1, Some(runner.me.owner.as_str()))
  );
  assert_eq!(
    r.attempted_at,
    Some(r.created_at),
    "stored running, not claimed later"
  );
  for id in [waiting[0], ids[0], ids[1], ids[2], ids[4]] {
    assert_eq!(row(&mut producer, id).status, STATUS_QUEUED, "{id}");
  }
  // Its notice may be on its way: not handed back as an attempt the runner does not know.
  assert_eq!(
    runner.release_unknown(&[], Some(token)).expect("release"),
    Vec::<i64>::new()
  );
  let pushed: Vec<i64> = runner
    .withdraw(token)
    .expect("withdraw")
    .iter()
    .map(|r| r.id)
    .collect();
  assert_eq!(pushed, vec![ids[3]]);
  assert!(
    runner.withdraw(token).expect("again").is_empty(),
    "withdrawn once"
  );

  // "a" has older work queued now: nothing of it is pushed; "c" is. A push whose claim was
  // withdrawn without reading it (a failure) is handed back by the next look.
  let token = runner
    .publish(&two, T0, Some(me))
    .expect("publish")
    .expect("a token");
  let more = insert(&mut producer, vec![exec("a", 0), exec("c", 0)]);
  assert_eq!(row(&mut producer, more[0]).status, STATUS_QUEUED);
  assert_eq!(row(&mut producer, more[1]).status, STATUS_RUNNING);
  let known = [(ids[3], 1)];
  assert!(runner
    .release_unknown(&known, Some(token))
    .expect("release")
    .is_empty());
  assert_eq!(
    runner.release_unknown(&known, None).expect("release"),
    vec![more[1]]
  );
  assert_eq!(row(&mut producer, more[1]).status, STATUS_QUEUED);
  assert!(
    runner.withdraw(token).expect("withdraw").is_empty(),
    "handed back: not the runner's"
  );

  // A worker whose listener is gone is handed nothing; its row is swept after a lease.
  runner
    .publish(&two, T0, Some(me))
    .expect("publish")
    .expect("a token");
  drop(conn);
  let mut admin = PgConnection::open(target(&url, "push")).expect("open");
  let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
  let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
  while admin
    .wait("test", admin.client().query_one(&gone, &[]))
    .expect("read")
    .get::<_, i64>(0)
    > 0
  {
    assert!(
      std::time::Instant::now() < until,
      "the listener's server process is gone"
    );
    std::thread::sleep(std::time::Duration::from_millis(10));
  }
  let late = insert(&mut producer, vec![exec("d", 0)]);
  assert_eq!(row(&mut producer, late[0]).status, STATUS_QUEUED);
  let parked = |c: &PgConnection| -> i64 {
    let q = format!("SELECT count(*) FROM {}.bmad_parked", c.target.quoted_schema());
    c.wait("test", c.client().query_one(&q, &[]))
      .expect("read")
      .get(0)
  };
  producer.rescue(T0 + LEASE / 2.0).expect("rescue");
  assert_eq!(parked(&admin), 1, "younger than a lease: kept");
  producer.rescue(T0 + LEASE + 1.0).expect("rescue");
  assert_eq!(parked(&admin), 0, "swept");
  sql(&mut admin, "SELECT 1");
  drop_schema(&url, "push");
}

#[test]
fn a_value_the_driver_cannot_read_breaks_the_store_and_an_error_of_the_server_does_not() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "unreadable");
  let ids = insert(&mut s, vec![exec("a", 3)]);
  assert!(s.fetch(ids[0]).expect("read").is_some());
  // A column whose type was changed by hand.
  let mut admin = PgConnection::open(target(&url, "unreadable")).expect("open");
  sql(
    &mut admin,
    "ALTER TABLE {s}.bmad_executions ALTER COLUMN priority TYPE numeric",
  );
  // The server refuses this connection's prepared read (its result type changed): an
  // error of that statement, which is not the store's end.
  let refused = s.fetch(ids[0]).expect_err("refused");
  assert!(refused.message.contains("0A000"), "{}", refused.message);
  assert!(s.broken().is_none());
  // Prepared again, the read meets a priority it cannot read: the store cannot go on.
  let failed = s.fetch(ids[0]).expect_err("unreadable");
  assert!(
    failed.message.contains("error deserializing column 5"),
    "{}",
    failed.message
  );
  let broken = s.broken().expect("broken");
  assert_eq!(broken.message, failed.message);
  // Nothing more is sent: a write fails at once with the same error.
  let refused = s.heartbeat(T0 + 1.0).expect_err("refused once broken");
  assert_eq!(refused.message, failed.message);
  drop_schema(&url, "unreadable");
}

#[test]
fn a_column_altered_by_hand_to_a_type_still_read_alike_costs_one_refused_statement() {
  let Some(url) = server() else { return };
  let mut s = store(&url, "altered");
  let ids = insert(&mut s, vec![exec("a", 3)]);
  assert!(s.fetch(ids[0]).expect("read").is_some());
  let mut admin = PgConnection::open(target(&url, "altered")).expect("open");
  sql(
    &mut admin,
    "ALTER TABLE {s}.bmad_executions ALTER COLUMN agent TYPE varchar(200)",
  );
  let refused = s.fetch(ids[0]).expect_err("refused");
  assert!(refused.message.contains("0A000"), "{}", refused.message);
  // Prepared again at the next use: the store goes on, every later statement answered.
  for _ in 0..3 {
    let r = s.fetch(ids[0]).expect("read").expect("the row");
    assert_eq!(r.agent, "a");
  }
  assert!(s.broken().is_none());
  s.heartbeat(T0 + 1.0).expect("a write");
  drop_schema(&url, "altered");
}

#[test]
fn a_schema_too_long_for_a_channel_name_gets_a_hashed_channel_the_same_everywhere() {
  assert_eq!(notify::channel("js_1"), "bmad.js_1");
  let fits = "s".repeat(notify::MAX_NAME_BYTES - "bmad.".len());
  assert_eq!(notify::channel(&fits), format!("bmad.{fits}"));
  let long = "é".repeat(31);
  let c = notify::channel(&long);
  assert_eq!(c.len(), "bmad.".len() + 16);
  assert_eq!(c, notify::channel(&long), "the same in every process");
  assert_ne!(c, notify::channel(&"e".repeat(62)));
  // FNV-1a of the bytes (checked apart from this code): a later build names the same channel.
  assert_eq!(notify::channel(&"x".repeat(63)), "bmad.1b3bad5c467302bf");
}

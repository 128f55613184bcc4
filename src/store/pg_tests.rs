//! Against a real server: `BMAD_TEST_PG_URL` (set by `node scripts/pg-cluster.mjs run -- …`,
//! which `npm run test:rust` uses). Without it these tests say so and check nothing else.

use super::*;

fn server() -> Option<String> {
  let url = std::env::var("BMAD_TEST_PG_URL").ok().filter(|u| !u.is_empty());
  if url.is_none() {
    eprintln!(
      "BMAD_TEST_PG_URL is not set: PostgreSQL tests not run (node scripts/pg-cluster.mjs run -- cargo test)"
    );
  }
  url
}

/// A schema of its own per test, so the tests can run at once.
fn target(url: &str, schema: &str) -> PgTarget {
  PgTarget::parse(&format!("{url}?schema={schema}_{}", std::process::id())).expect("a valid URL")
}

fn sql(conn: &mut PgConnection, text: &str) {
  let text = text.replace("{s}", &conn.target.quoted_schema());
  conn
    .wait("test", conn.client().batch_execute(&text))
    .expect("test SQL");
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
  assert!(refused("postgres://u:pw@h/db?sslmode=require").contains("sslmode=require"));
  assert!(
    !refused("postgres://u:pw@h/db?sslmode=require").contains("pw"),
    "no password in messages"
  );
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
  let err = PgConnection::open(newer).err().expect("refused");
  assert_eq!(err.code, "ERR_STORE_VERSION");
  assert!(err.message.contains("version 99"), "{}", err.message);
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

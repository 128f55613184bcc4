//! The PostgreSQL side of the store, for executors on several hosts: the connection string,
//! connecting, and the schema (the SQLite store's tables in
//! PostgreSQL's types, versioned the same way, in a schema of the user's choice).
//!
//! The statement connection lives on a runtime of its own, on the store's thread: each call
//! blocks that thread while the runtime drives the connection, so a request and its answer
//! cross no other thread. The store runs on its own thread, never inside a runtime task.

use std::future::Future;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Notification, Row, Statement};

use super::schema::{known_version, APP};
use super::{StoreError, StoreResult};

/// Longest wait for a connection or one operation (a whole batch, a sweep) before the store
/// reports it.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of every connection that runs statements: no JIT (tiny statements on indexes),
/// and the server ends what the client has given up on — a statement before the client's
/// own `TIMEOUT`, a transaction left idle by a client gone without a word.
pub(super) const SESSION: &str =
  "SET jit = off; SET statement_timeout = '25s'; SET idle_in_transaction_session_timeout = '10s'";

/// The schema version this build writes (its own sequence: the SQLite store's differs).
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` brings a schema from version `i` to `i + 1`; `{s}` is the quoted schema.
const MIGRATIONS: [&str; 4] = [
  r"
CREATE TABLE {s}.bmad_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE {s}.bmad_executions (
  id bigserial PRIMARY KEY,
  agent text NOT NULL,
  task text NOT NULL,
  options text,
  level text NOT NULL,
  priority bigint NOT NULL,
  mode integer NOT NULL,
  key text,
  state smallint NOT NULL CHECK (state IN (0, 1, 2, 3, 4)),
  attempt integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL CHECK (max_attempts >= 1),
  retry_delay_ms double precision NOT NULL,
  backoff integer NOT NULL,
  timeout_ms double precision NOT NULL,
  progress double precision NOT NULL DEFAULT 0,
  result text,
  error text,
  owner text,
  lease_expires_at double precision,
  cancel_requested boolean NOT NULL DEFAULT false,
  created_at double precision NOT NULL,
  scheduled_at double precision NOT NULL,
  attempted_at double precision,
  finalized_at double precision,
  token text
);
CREATE INDEX bmad_executions_agent_queue ON {s}.bmad_executions (agent, priority DESC, id) WHERE state = 0;
CREATE INDEX bmad_executions_running ON {s}.bmad_executions (owner) WHERE state = 1;
CREATE INDEX bmad_executions_running_agent ON {s}.bmad_executions (agent) WHERE state = 1;
CREATE INDEX bmad_executions_finalized ON {s}.bmad_executions (finalized_at) WHERE state >= 2;
CREATE UNIQUE INDEX bmad_executions_key ON {s}.bmad_executions (key) WHERE key IS NOT NULL AND state <= 1;
CREATE UNIQUE INDEX bmad_executions_token ON {s}.bmad_executions (token) WHERE token IS NOT NULL;
CREATE TABLE {s}.bmad_workers (
  owner text PRIMARY KEY,
  host text NOT NULL,
  pid bigint NOT NULL,
  proc_start bigint NOT NULL,
  started_at double precision NOT NULL,
  heartbeat_at double precision NOT NULL
);
CREATE TABLE {s}.bmad_limits (
  agent text PRIMARY KEY,
  global_concurrency integer NOT NULL CHECK (global_concurrency >= 1)
);
",
  r"
-- Queued rows due later than their creation (delayed, retried, rescued, released): the next
-- due time is read from them alone, not from every queued row. A row due when created is
-- claimable at once, whatever the claimer's clock.
CREATE INDEX bmad_executions_due ON {s}.bmad_executions (scheduled_at) WHERE state = 0 AND scheduled_at > created_at;
",
  r"
-- One row per try of a batch that inserted numbered submissions: the executor's numbers for
-- them and their ids, written with them. A try whose answer was lost is settled by the next
-- batch sending any of its submissions again: that batch inserts an empty row under the
-- try's number unless one is there (so the try, reaching the server later, fails on the
-- primary key), then reads the rows, and what they hold is answered from them.
CREATE TABLE {s}.bmad_batches (
  owner text NOT NULL,
  batch bigint NOT NULL,
  seqs bigint[] NOT NULL,
  ids bigint[] NOT NULL,
  recorded_at double precision NOT NULL,
  PRIMARY KEY (owner, batch)
);
-- Out of line, not compressed: a batch of 1000 is 16 kB of numbers, which PostgreSQL would
-- otherwise compress at every batch.
ALTER TABLE {s}.bmad_batches ALTER COLUMN seqs SET STORAGE EXTERNAL, ALTER COLUMN ids SET STORAGE EXTERNAL;
DROP INDEX {s}.bmad_executions_token;
ALTER TABLE {s}.bmad_executions DROP COLUMN token;
",
  r"
-- The parked claims of idle workers, which a submission may fill at once (see pg/push.rs):
-- what each takes, and the advisory lock its listener connection holds while connected.
-- `pushed`: the executions a submission gave it, until its next parked claim.
CREATE TABLE {s}.bmad_parked (
  owner text PRIMARY KEY,
  token bigint NOT NULL,
  any_agent boolean NOT NULL,
  agents text[] NOT NULL,
  held text[] NOT NULL,
  slots integer NOT NULL,
  lease_ms double precision NOT NULL,
  parked_at double precision NOT NULL,
  listener bigint NOT NULL,
  pushed bigint[]
);
",
];

/// Where a PostgreSQL store lives: the connection settings, and the schema of its tables.
#[derive(Debug, Clone)]
pub struct PgTarget {
  pub config: tokio_postgres::Config,
  /// TLS when `sslmode` is not `disable` (tokio-postgres then negotiates it as asked).
  pub tls: Option<Arc<rustls::ClientConfig>>,
  pub schema: String,
  /// The URL without its password, for messages.
  pub shown: String,
}

impl PgTarget {
  /// Parses `postgres://` or `postgresql://` URLs; `?schema=` chooses the schema (default
  /// `public`), the other parameters are PostgreSQL's own (`sslmode`, `connect_timeout`, …).
  pub fn parse(url: &str) -> StoreResult<PgTarget> {
    let rest = url
      .strip_prefix("postgres://")
      .or_else(|| url.strip_prefix("postgresql://"))
      .ok_or_else(|| StoreError::store("a PostgreSQL store URL starts with postgres:// or postgresql://"))?;
    let (head, query) = rest.split_once('?').unwrap_or((rest, ""));
    let shown = format!("postgres://{}", hide_password(head));
    let refuse = |what: String| StoreError::store(format!("store {shown}: {what}"));
    let mut schema = "public".to_string();
    let (mut ssl_mode, mut root_cert) = (None, None);
    let mut fallback_name = None;
    let mut kept: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
      match pair.split_once('=') {
        Some(("schema", v)) if !v.is_empty() => schema = decode(v)?,
        Some(("schema", _)) => return Err(StoreError::store("?schema= needs a schema name")),
        Some(("sslmode", v)) => ssl_mode = Some(decode(v)?),
        Some(("sslrootcert", v)) => root_cert = Some(decode(v)?),
        Some((k @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl"), _)) => {
          return Err(refuse(format!(
            "{k} is not supported (client certificates and CRLs)"
          )))
        }
        // libpq parameters common in URLs that mean nothing more here: no GSSAPI encryption
        // (`prefer` falls back to none, as libpq does without it), text always in UTF-8.
        Some(("gssencmode", v)) if matches!(decode(v)?.as_str(), "disable" | "prefer") => {}
        Some(("gssencmode", v)) => {
          return Err(refuse(format!(
            "gssencmode={} is not supported (no GSSAPI encryption; use disable or prefer)",
            decode(v)?
          )))
        }
        Some(("client_encoding", v))
          if matches!(decode(v)?.to_ascii_uppercase().as_str(), "UTF8" | "UTF-8") => {}
        Some(("client_encoding", v)) => {
          return Err(refuse(format!(
            "client_encoding={} is not supported (the store speaks UTF8)",
            decode(v)?
          )))
        }
        Some(("fallback_application_name", v)) => fallback_name = Some(v),
        _ => kept.push(pair.to_string()),
      }
    }
    if let Some(v) = fallback_name {
      if !kept.iter().any(|p| p.starts_with("application_name=")) {
        kept.push(format!("application_name={v}"));
      }
    }
    if schema.len() > notify::MAX_NAME_BYTES {
      return Err(refuse(format!(
        "?schema= names a schema of {} bytes; PostgreSQL keeps at most {} of a name",
        schema.len(),
        notify::MAX_NAME_BYTES
      )));
    }
    let (mode, check) = tls::settings(ssl_mode.as_deref(), root_cert.as_deref()).map_err(refuse)?;
    let base = if kept.is_empty() {
      format!("postgres://{head}")
    } else {
      format!("postgres://{head}?{}", kept.join("&"))
    };
    // The driver's error names the parameter in its source ("unknown option `foo`").
    let mut config =
      base
        .parse::<tokio_postgres::Config>()
        .map_err(|e| match std::error::Error::source(&e) {
          Some(cause) => StoreError::store(format!("store {shown}: {e}: {cause}")),
          None => StoreError::store(format!("store {shown}: {e}")),
        })?;
    config.ssl_mode(mode);
    let tls = match mode {
      tokio_postgres::config::SslMode::Disable => None,
      _ => Some(tls::client_config(check, root_cert.as_deref()).map_err(refuse)?),
    };
    Ok(PgTarget {
      config,
      tls,
      schema,
      shown,
    })
  }

  /// The schema as an identifier, quoted.
  pub fn quoted_schema(&self) -> String {
    quote_ident(&self.schema)
  }
}

/// `user:password@host` without the password.
fn hide_password(head: &str) -> String {
  match head.rsplit_once('@') {
    Some((user_info, host)) => match user_info.split_once(':') {
      Some((user, _)) => format!("{user}:***@{host}"),
      None => head.to_string(),
    },
    None => head.to_string(),
  }
}

/// Percent-decoding of a URL parameter.
fn decode(v: &str) -> StoreResult<String> {
  let bytes = v.as_bytes();
  let mut out = Vec::with_capacity(bytes.len());
  let mut i = 0;
  while i < bytes.len() {
    if bytes[i] == b'%' {
      let hex = v
        .get(i + 1..i + 3)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .ok_or_else(|| StoreError::store(format!("bad %-escape in {v:?}")))?;
      out.push(hex);
      i += 3;
    } else {
      out.push(bytes[i]);
      i += 1;
    }
  }
  String::from_utf8(out).map_err(|_| StoreError::store(format!("{v:?} is not UTF-8 once decoded")))
}

/// `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
  format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether the server refused what a statement wrote: a data exception, a constraint or a
/// trigger's exception (SQLSTATE classes 22, 23 and P0).
pub(super) fn refused(e: &tokio_postgres::Error) -> bool {
  e.code()
    .is_some_and(|c| matches!(c.code().get(..2), Some("22" | "23" | "P0")))
}

/// A PostgreSQL error with what the server said and what caused it (the bare `Display` of a
/// connection failure says only "error connecting to server").
pub(super) fn pg_error(shown: &str, what: &str, e: &tokio_postgres::Error) -> StoreError {
  let mut text = format!("{what} store {shown}: {e}");
  if let Some(db) = e.as_db_error() {
    text = format!("{what} store {shown}: {} ({})", db.message(), db.code().code());
  } else {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
      text.push_str(&format!(": {s}"));
      source = s.source();
    }
  }
  if connection_lost(e) {
    StoreError {
      code: super::DISCONNECTED,
      message: text,
    }
  } else if matches!(e.code().map(|c| c.code()), Some("40P01" | "40001")) || plan_outdated(e) {
    // A deadlock (two hosts inserting the same keys in other orders), a serialization
    // failure, or a prepared statement whose result type changed (prepared again at its
    // next use): nothing was written, and a second try goes through.
    StoreError {
      code: super::BUSY,
      message: text,
    }
  } else if refused(e) {
    // A data exception, a constraint or a trigger's exception: the rows written were refused.
    StoreError {
      code: super::REFUSED,
      message: text,
    }
  } else {
    StoreError::store(text)
  }
}

/// Whether `e` is a value the driver could not read as the type asked for, or a column
/// missing from a row: a schema changed by hand. Reading it again fails the same way.
pub(super) fn unreadable(e: &tokio_postgres::Error) -> bool {
  if e.as_db_error().is_some() || e.is_closed() {
    return false;
  }
  // The driver tells these apart by its `Display` only (tokio-postgres 0.7: its `FromSql`
  // and `Column` kinds; the first is tested against a server).
  let text = e.to_string();
  text.starts_with("error deserializing column") || text.starts_with("invalid column")
}

/// Whether the server refused a prepared statement whose result type changed since it was
/// prepared (a column altered by hand): `feature_not_supported`, raised where the server
/// checks a cached plan (its routine's name is not translated, its message may be).
fn plan_outdated(e: &tokio_postgres::Error) -> bool {
  e.as_db_error().is_some_and(|db| {
    db.code() == &tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED
      && (db.routine() == Some("RevalidateCachedQuery") || db.message().contains("cached plan"))
  })
}

/// Whether the server gave up a statement or a lock wait (`statement_timeout`,
/// `lock_timeout`).
pub(super) fn server_gave_up(e: &tokio_postgres::Error) -> bool {
  matches!(e.code().map(|c| c.code()), Some("57014" | "55P03"))
}

/// Whether `e` is the connection going away (the server restarting or ending the session,
/// the network), not something the request did.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
  if e.is_closed() {
    return true;
  }
  if let Some(db) = e.as_db_error() {
    let code = db.code().code();
    return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
  }
  let mut source = std::error::Error::source(e);
  while let Some(s) = source {
    if s.is::<std::io::Error>() {
      return true;
    }
    source = s.source();
  }
  false
}

/// Statements prepared on the current connection, by their text: each is parsed once, then
/// runs in one round trip (a statement given as text costs a second one to prepare).
/// `batch_ready`: a batch's statements are all among them (checked once per connection,
/// not at every batch).
#[derive(Default)]
pub struct Statements(Mutex<HashMap<String, Statement>>, std::sync::atomic::AtomicBool);

impl Statements {
  fn clear(&self) {
    self.1.store(false, Ordering::Relaxed);
    if let Ok(mut m) = self.0.lock() {
      m.clear();
    }
  }
}

/// The connection's client with its prepared statements: the same calls as `Client`'s.
pub struct Db<'a> {
  pub client: &'a Client,
  statements: &'a Statements,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Db<'_> {
  async fn prepared(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
    if let Some(st) = self.statements.0.lock().ok().and_then(|m| m.get(sql).cloned()) {
      return Ok(st);
    }
    let st = self.client.prepare(sql).await?;
    if let Ok(mut m) = self.statements.0.lock() {
      m.insert(sql.to_string(), st.clone());
    }
    Ok(st)
  }

  /// Prepares a batch's statements `sqls` not prepared yet, in one round trip; once they are
  /// all prepared, later batches on this connection skip the look.
  pub async fn prepare_batch(&self, sqls: &[&str]) -> Result<(), tokio_postgres::Error> {
    if self.statements.1.load(Ordering::Relaxed) {
      return Ok(());
    }
    let missing: Vec<&str> = match self.statements.0.lock() {
      Ok(m) => sqls.iter().copied().filter(|q| !m.contains_key(*q)).collect(),
      Err(_) => sqls.to_vec(),
    };
    let mut prepared = Vec::with_capacity(missing.len());
    for sql in &missing {
      prepared.push(self.client.prepare(sql));
    }
    for (sql, st) in missing.iter().zip(join_in_order(prepared).await) {
      let st = st?;
      if let Ok(mut m) = self.statements.0.lock() {
        m.insert((*sql).to_string(), st);
      }
    }
    self.statements.1.store(true, Ordering::Relaxed);
    Ok(())
  }

  pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
    let st = self.prepared(sql).await?;
    self.client.query(&st, params).await
  }

  pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, tokio_postgres::Error> {
    let st = self.prepared(sql).await?;
    self.client.query_one(&st, params).await
  }

  pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, tokio_postgres::Error> {
    let st = self.prepared(sql).await?;
    self.client.query_opt(&st, params).await
  }

  pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
    let st = self.prepared(sql).await?;
    self.client.execute(&st, params).await
  }

  /// Statements without parameters, by the simple protocol (BEGIN, COMMIT…).
  pub async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
    self.client.batch_execute(sql).await
  }
}

/// One connection to a PostgreSQL store, driven by its own single-threaded runtime while
/// an operation waits on it (idle, it is not read: a closed connection shows at the next
/// operation).
pub struct PgConnection {
  /// Always `Some` until dropped (see `Drop`).
  rt: Option<Runtime>,
  client: Client,
  statements: Statements,
  pub target: PgTarget,
  /// The server closed the connection and it is not replaced yet.
  down: bool,
  /// Losses (false) and recoveries (true) not reported yet.
  link_events: Vec<bool>,
  /// An operation got no answer in time: the connection is replaced before the next one.
  dropped: std::cell::Cell<bool>,
  /// A value read could not be read as its type (see `unreadable`): the store stops.
  broken: std::cell::RefCell<Option<StoreError>>,
  /// The server process of the current connection (0: unknown): the listener ignores the
  /// notifications this connection sent.
  pid: Arc<AtomicI32>,
}

impl Drop for PgConnection {
  fn drop(&mut self) {
    // Without waiting for the runtime's blocking tasks (a name lookup left by a connect that
    // timed out would hold the thread until it returns).
    if let Some(rt) = self.rt.take() {
      rt.shutdown_background();
    }
  }
}

impl PgConnection {
  fn rt(&self) -> &Runtime {
    match &self.rt {
      Some(rt) => rt,
      None => unreachable!("the runtime lives until the connection is dropped"),
    }
  }

  /// Connects and brings the schema to this build's version (creating it when empty).
  pub fn open(target: PgTarget) -> StoreResult<PgConnection> {
    let rt = Builder::new_current_thread()
      .enable_io()
      .enable_time()
      .build()
      .map_err(|e| StoreError::store(format!("cannot start the store's runtime: {e}")))?;
    // A store that cannot be reached at the start is a bad store, not a lost connection.
    let client = connect(&rt, &target).map_err(|e| StoreError::store(e.message))?;
    let mut conn = PgConnection {
      rt: Some(rt),
      client,
      statements: Statements::default(),
      target,
      down: false,
      link_events: Vec::new(),
      dropped: std::cell::Cell::new(false),
      broken: std::cell::RefCell::new(None),
      pid: Arc::new(AtomicI32::new(0)),
    };
    conn.note_pid()?;
    conn.migrate()?;
    Ok(conn)
  }

  /// A new connection when the server closed this one (it restarted, or an administrator
  /// ended it): the next operation works again once the server does.
  pub fn ensure(&mut self) -> StoreResult<()> {
    self.note_link();
    if self.down {
      self.client = connect(self.rt(), &self.target)?;
      self.statements.clear();
      self.dropped.set(false);
      self.note_pid()?;
      self.down = false;
      self.link_events.push(true);
      tracing::debug!(store = %self.target.shown, "reconnected");
    }
    Ok(())
  }

  /// The server process of this connection, as it changes.
  pub fn pid(&self) -> Arc<AtomicI32> {
    self.pid.clone()
  }

  /// Sets up a new connection: notes its server process, and keeps its plans on indexes.
  ///
  /// A statement is planned once per connection and its generic plan kept; planned while
  /// the table was small (a fresh store), the claim's update went through the whole table
  /// (a sequential scan) for ever after: ~13 ms a claim at a thousand rows, growing with
  /// the table. Every statement here has an index to go by: sequential scans are ruled out.
  fn note_pid(&mut self) -> StoreResult<()> {
    let client = &self.client;
    let pid: i32 = self.wait("cannot set up", async move {
      // JIT off too: a plan's cost then counts a ruled-out scan (of a table of a few rows)
      // as huge, which would compile each execution (tens of ms) for nothing. Generic plans
      // from the first execution: a custom plan looked cheaper for a few small statements
      // (the claim's lock, the read of ends), so PostgreSQL planned them again at every
      // execution (~0.06 ms each time, most of their cost). A plan made on an empty table
      // is kept until the table's statistics change much, so each statement is written
      // for the index it should use (`state + 0` where the index of ended rows would
      // match, one text per case where an OR of parameters would hide the index).
      //
      // The server ends what the client has given up on: a statement before the client's
      // own timeout (the claims of a pipeline left running could commit after the
      // reconnect), and a transaction left idle (its client gone without a word: a host
      // that died, a network cut) instead of holding its row locks until TCP notices.
      client
        .batch_execute(&format!(
          "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; {SESSION}"
        ))
        .await?;
      client.query_one("SELECT pg_backend_pid()", &[]).await?.try_get(0)
    })?;
    self.pid.store(pid, Ordering::Relaxed);
    Ok(())
  }

  pub fn is_down(&self) -> bool {
    self.down
  }

  /// Notes a connection the server closed since the last look.
  pub fn note_link(&mut self) {
    if !self.down && (self.client.is_closed() || self.dropped.get()) {
      self.down = true;
      self.link_events.push(false);
    }
  }

  /// Losses (false) and recoveries (true) since the last call, in order.
  pub fn take_link_events(&mut self) -> Vec<bool> {
    std::mem::take(&mut self.link_events)
  }

  /// Waits for `fut` (which may borrow `client()`) on the runtime, at most `TIMEOUT`.
  pub fn wait<T>(
    &self,
    what: &str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
  ) -> StoreResult<T> {
    // Nothing more reaches the server once a value could not be read: the thread stops
    // before it hears the answer of what it would write.
    if let Some(e) = self.broken() {
      return Err(e);
    }
    let shown = &self.target.shown;
    let r = self.rt().block_on(within(shown, what, fut)).and_then(|r| {
      r.map_err(|e| {
        let error = pg_error(shown, what, &e);
        if unreadable(&e) {
          self.broken.replace(Some(error.clone()));
        } else if plan_outdated(&e) {
          // The server keeps refusing these statements: they are prepared again at their
          // next use, against the schema as it is now.
          self.statements.clear();
        }
        error
      })
    });
    if matches!(&r, Err(e) if e.code == super::DISCONNECTED) {
      // No answer in time (or the connection went): this connection is done with, so no
      // later request joins a transaction left open on it. A pipeline already sent whole,
      // COMMIT included, may still commit on the server: claims it made are handed back by
      // the store thread (`release_unknown` at the next heartbeat).
      self.dropped.set(true);
    }
    r
  }

  /// The failure of a value this release cannot read, once one was met: nothing read
  /// through this connection can be trusted to be read alike again, so the store stops.
  pub fn broken(&self) -> Option<StoreError> {
    self.broken.borrow().clone()
  }

  pub fn client(&self) -> &Client {
    &self.client
  }

  /// The client with this connection's prepared statements.
  pub fn db(&self) -> Db<'_> {
    Db {
      client: &self.client,
      statements: &self.statements,
    }
  }

  /// Brings the schema to this build's version, creating it when empty. A schema holding
  /// tables named like ours without our `bmad_meta`, another application's, or a newer
  /// version is refused before anything is written (the transaction is rolled back).
  fn migrate(&mut self) -> StoreResult<()> {
    let client = &self.client;
    let target = &self.target;
    self.wait("cannot migrate", async move {
      client.batch_execute("BEGIN").await?;
      let outcome = migrate_in(client, target).await;
      if matches!(outcome, Ok(Ok(()))) {
        client.batch_execute("COMMIT").await?;
      } else {
        // What failed is reported; a failed rollback only means the connection is gone.
        let _ = client.batch_execute("ROLLBACK").await;
      }
      outcome
    })
    .map_err(|mut e| {
      // information_schema hides the tables a role cannot use: a role without its grants on
      // a schema another role migrated looks like an empty schema it cannot create in.
      if e.message.contains("(42501)") {
        e.message.push_str(
          "; if another role created this schema, grant this one the privileges on its tables that the README lists",
        );
      }
      e
    })?
  }
}

/// A connection to `target`, driven by a task on `rt`.
fn connect(rt: &Runtime, target: &PgTarget) -> StoreResult<Client> {
  rt.block_on(open_client(target, None))
}

/// How long a connection may take to open, the server's first answers included: the URL's
/// `connect_timeout` for each host it lists (tokio-postgres bounds only each TCP connect with
/// it, so a server that accepts and never answers would hold it for ever), at most `TIMEOUT`.
fn connect_budget(target: &PgTarget) -> Duration {
  match target.config.get_connect_timeout() {
    Some(t) if !t.is_zero() => {
      let hosts = u32::try_from(target.config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
      t.saturating_mul(hosts).min(TIMEOUT)
    }
    _ => TIMEOUT,
  }
}

/// Connects to `target` with the TLS it asks for, within `connect_budget`. A task on the
/// runtime drives the connection until it closes (the client then reports errors on every
/// call) and hands the notifications it receives to `notes`.
pub(super) async fn open_client(
  target: &PgTarget,
  notes: Option<UnboundedSender<Notification>>,
) -> StoreResult<Client> {
  let open = async {
    match &target.tls {
      None => {
        let (client, connection) = target.config.connect(NoTls).await?;
        tokio::spawn(drive(connection, notes));
        Ok(client)
      }
      Some(tls) => {
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
        let (client, connection) = target.config.connect(connector).await?;
        tokio::spawn(drive(connection, notes));
        Ok(client)
      }
    }
  };
  let budget = connect_budget(target);
  match tokio::time::timeout(budget, open).await {
    Ok(opened) => opened.map_err(|e| pg_error(&target.shown, "cannot connect to", &e)),
    Err(_) => Err(StoreError {
      code: super::DISCONNECTED,
      message: format!(
        "cannot connect to store {}: no answer within {} s",
        target.shown,
        budget.as_secs_f64()
      ),
    }),
  }
}

async fn drive<S, T>(mut connection: Connection<S, T>, notes: Option<UnboundedSender<Notification>>)
where
  S: AsyncRead + AsyncWrite + Unpin,
  T: AsyncRead + AsyncWrite + Unpin,
{
  while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
    match message {
      Ok(AsyncMessage::Notification(n)) => {
        if let Some(tx) = &notes {
          if tx.send(n).is_err() {
            return;
          }
        }
      }
      Ok(_) => {}
      Err(_) => return,
    }
  }
}

/// The migration inside its transaction: `Ok(Err(_))` for a schema refused.
async fn migrate_in(client: &Client, target: &PgTarget) -> Result<StoreResult<()>, tokio_postgres::Error> {
  let s = target.quoted_schema();
  let shown = &target.shown;
  // One migration at a time, whichever host: the others then see its work.
  client
    .execute(
      "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
      &[&format!("bmad/{}", target.schema)],
    )
    .await?;
  // Created only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
  // even when the schema exists, which a role that only uses the store need not have.
  let exists = client
    .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&target.schema])
    .await?
    .is_some();
  if !exists {
    client.batch_execute(&format!("CREATE SCHEMA {s}")).await?;
  }
  let tables = client
    .query_one(
      "SELECT count(*) FILTER (WHERE table_name = 'bmad_meta'), \
              count(*) FILTER (WHERE table_name IN ('bmad_executions', 'bmad_workers', 'bmad_limits')) \
       FROM information_schema.tables WHERE table_schema = $1",
      &[&target.schema],
    )
    .await?;
  let (meta, ours): (i64, i64) = (tables.try_get(0)?, tables.try_get(1)?);
  let from = if meta == 0 {
    if ours > 0 {
      return Ok(Err(StoreError::store(format!(
        "store {shown}: schema {s} has tables named like ours but no bmad_meta; use another schema (?schema=)"
      ))));
    }
    0
  } else {
    let rows = client
      .query(
        &format!("SELECT key, value FROM {s}.bmad_meta WHERE key IN ('app', 'version')"),
        &[],
      )
      .await?;
    // Another application's table of the same name, with other types, reads as not ours.
    let get = |k: &str| {
      rows
        .iter()
        .find(|r| r.try_get::<_, &str>(0).is_ok_and(|key| key == k))
        .map(|r| r.try_get::<_, String>(1).unwrap_or_default())
    };
    let app = get("app");
    if app.as_deref() != Some(APP) {
      return Ok(Err(StoreError::store(format!(
        "store {shown}: schema {s} belongs to something else (bmad_meta.app is {app:?}); use another schema (?schema=)"
      ))));
    }
    match known_version(&format!("store {shown}"), get("version").as_deref(), VERSION) {
      Ok(v) => v,
      Err(e) => return Ok(Err(e)),
    }
  };
  for sql in MIGRATIONS
    .iter()
    .skip(usize::try_from(from).unwrap_or(usize::MAX))
  {
    client.batch_execute(&sql.replace("{s}", &s)).await?;
  }
  if from < VERSION {
    let upsert = format!(
      "INSERT INTO {s}.bmad_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    );
    client.execute(&upsert, &[&"app", &APP]).await?;
    client
      .execute(&upsert, &[&"version", &VERSION.to_string()])
      .await?;
  }
  Ok(Ok(()))
}

/// `fut`'s output, or, with no answer within `TIMEOUT`, an error of a lost connection: what
/// was sent may still be carried out (a COMMIT among it), as when a connection is lost
/// before its answer came.
pub(super) async fn within<T>(shown: &str, what: &str, fut: impl Future<Output = T>) -> StoreResult<T> {
  tokio::time::timeout(TIMEOUT, fut).await.map_err(|_| StoreError {
    code: super::DISCONNECTED,
    message: format!("{what} store {shown}: no answer within {} s", TIMEOUT.as_secs()),
  })
}

/// `within` for a PostgreSQL operation, its error told as `pg_error` tells it.
pub(super) async fn within_pg<T>(
  shown: &str,
  what: &str,
  fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> StoreResult<T> {
  within(shown, what, fut)
    .await?
    .map_err(|e| pg_error(shown, what, &e))
}

/// Waits for every future of `futs`, polled in their order (each sends its request when
/// first polled, so the requests go out in that order, together).
async fn join_in_order<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
  let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
  let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
  std::future::poll_fn(|cx| {
    let mut pending = false;
    for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
      if o.is_none() {
        match f.as_mut().poll(cx) {
          std::task::Poll::Ready(v) => *o = Some(v),
          std::task::Poll::Pending => pending = true,
        }
      }
    }
    if pending {
      std::task::Poll::Pending
    } else {
      std::task::Poll::Ready(())
    }
  })
  .await;
  out.into_iter().flatten().collect()
}

pub mod backend;
mod batch;
pub mod notify;
pub mod ops;
pub mod pool;
pub mod published;
pub mod push;
pub mod reader;
mod rows;
mod sweep;
mod tls;

#[cfg(test)]
pub(crate) mod tests;

//! What the statements' rows become: an execution read (`COLUMNS`) as the store's `Row`,
//! and the driver's result and integer types.

use crate::store::ops::COLUMNS;
use crate::store::Row;

pub type PgResult<T> = Result<T, tokio_postgres::Error>;

/// An execution's row, read with `COLUMNS` in their order.
pub fn row(r: &tokio_postgres::Row) -> Row {
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

pub fn int(v: u32) -> i32 {
  i32::try_from(v).unwrap_or(i32::MAX)
}

/// The read of one execution in schema `s` (quoted), by id (`$1`).
pub fn fetch_sql(s: &str) -> String {
  format!("SELECT {COLUMNS} FROM {s}.bmad_executions WHERE id = $1")
}

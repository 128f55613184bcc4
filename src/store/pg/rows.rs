//! What the statements' rows become: an execution read (`COLUMNS`) as the store's `Row`,
//! and the driver's result and integer types.

use crate::store::ops::COLUMNS;
use crate::store::Row;

pub type PgResult<T> = Result<T, tokio_postgres::Error>;

/// An execution's row, read with `COLUMNS` in their order. A value the driver cannot read
/// as its column's type (a schema changed by hand) is an error, which stops the store's
/// thread (see `PgConnection::wait`).
pub fn row(r: &tokio_postgres::Row) -> PgResult<Row> {
  let u = |i: usize| -> PgResult<u32> { Ok(u32::try_from(r.try_get::<_, i32>(i)?).unwrap_or(0)) };
  Ok(Row {
    id: r.try_get(0)?,
    agent: r.try_get(1)?,
    task: r.try_get(2)?,
    options: r.try_get(3)?,
    level: r.try_get(4)?,
    priority: r.try_get(5)?,
    mode: u(6)?,
    key: r.try_get(7)?,
    status: u32::try_from(r.try_get::<_, i16>(8)?).unwrap_or(0),
    attempt: u(9)?,
    max_attempts: u(10)?,
    timeout_ms: r.try_get(11)?,
    progress: r.try_get(12)?,
    result: r.try_get(13)?,
    error: r.try_get(14)?,
    owner: r.try_get(15)?,
    cancel_requested: r.try_get(16)?,
    created_at: r.try_get(17)?,
    scheduled_at: r.try_get(18)?,
    attempted_at: r.try_get(19)?,
    finalized_at: r.try_get(20)?,
  })
}

/// Every row of `rows` read with `row`.
pub fn rows(rows: &[tokio_postgres::Row]) -> PgResult<Vec<Row>> {
  rows.iter().map(row).collect()
}

pub fn int(v: u32) -> i32 {
  i32::try_from(v).unwrap_or(i32::MAX)
}

/// The read of one execution in schema `s` (quoted), by id (`$1`).
pub fn fetch_sql(s: &str) -> String {
  format!("SELECT {COLUMNS} FROM {s}.bmad_executions WHERE id = $1")
}

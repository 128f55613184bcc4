//! What crosses between JS and the store's thread as texts and numbers instead of objects
//! (a property by name costs napi a string-table lookup each): a batch's submissions, and
//! stored rows. The layouts are the name arrays of `protocol`; positions come from them at
//! compile time. Nothing here touches napi.

use crate::store::{NewExecution, Row};

/// Where field `name` of `fields` is: the layouts of `protocol` are the one source, and a
/// name missing from them fails the build.
const fn position(fields: &[&str], name: &str) -> usize {
  let mut i = 0;
  while i < fields.len() {
    let (a, b) = (fields[i].as_bytes(), name.as_bytes());
    if a.len() == b.len() {
      let mut j = 0;
      while j < a.len() && a[j] == b[j] {
        j += 1;
      }
      if j == a.len() {
        return i;
      }
    }
    i += 1;
  }
  panic!("a field missing from its layout in protocol.rs")
}

/// Positions of a submission's fields (`INSERT_TEXTS`, `INSERT_NUMBERS`).
mod insert {
  use super::position;
  use crate::protocol::{INSERT_NUMBERS as N, INSERT_TEXTS as T};
  pub const TEXTS: usize = T.len();
  pub const NUMBERS: usize = N.len();
  pub const AGENT: usize = position(&T, "agent");
  pub const TASK: usize = position(&T, "task");
  pub const OPTIONS: usize = position(&T, "options");
  pub const LEVEL: usize = position(&T, "level");
  pub const KEY: usize = position(&T, "key");
  pub const PRIORITY: usize = position(&N, "priority");
  pub const MODE: usize = position(&N, "mode");
  pub const MAX_ATTEMPTS: usize = position(&N, "maxAttempts");
  pub const RETRY_DELAY_MS: usize = position(&N, "retryDelayMs");
  pub const BACKOFF: usize = position(&N, "backoff");
  pub const TIMEOUT_MS: usize = position(&N, "timeoutMs");
  pub const START_AFTER: usize = position(&N, "startAfter");
  pub const SEQ: usize = position(&N, "seq");
}

/// Positions of a stored execution's fields (`ROW_TEXTS`, `ROW_NUMBERS`).
mod row {
  use super::position;
  use crate::protocol::{ROW_NUMBERS as N, ROW_TEXTS as T};
  pub const TEXTS: usize = T.len();
  pub const NUMBERS: usize = N.len();
  pub const AGENT: usize = position(&T, "agent");
  pub const TASK: usize = position(&T, "task");
  pub const OPTIONS: usize = position(&T, "options");
  pub const LEVEL: usize = position(&T, "level");
  pub const KEY: usize = position(&T, "key");
  pub const RESULT: usize = position(&T, "result");
  pub const ERROR: usize = position(&T, "error");
  pub const OWNER: usize = position(&T, "owner");
  pub const ID: usize = position(&N, "id");
  pub const PRIORITY: usize = position(&N, "priority");
  pub const MODE: usize = position(&N, "mode");
  pub const STATUS: usize = position(&N, "status");
  pub const ATTEMPT: usize = position(&N, "attempt");
  pub const MAX_ATTEMPTS: usize = position(&N, "maxAttempts");
  pub const TIMEOUT_MS: usize = position(&N, "timeoutMs");
  pub const PROGRESS: usize = position(&N, "progress");
  pub const CANCEL_REQUESTED: usize = position(&N, "cancelRequested");
  pub const CREATED_AT: usize = position(&N, "createdAt");
  pub const SCHEDULED_AT: usize = position(&N, "scheduledAt");
  pub const ATTEMPTED_AT: usize = position(&N, "attemptedAt");
  pub const FINALIZED_AT: usize = position(&N, "finalizedAt");
}

/// `rows` as texts and numbers, laid out as `row` says. `claims`: what running them needs,
/// without their last result or error (a retry's error may be large), owner or key.
pub fn row_columns(rows: Vec<Row>, claims: bool) -> (Vec<Option<String>>, Vec<f64>) {
  let mut texts = Vec::with_capacity(rows.len() * row::TEXTS);
  let mut numbers = Vec::with_capacity(rows.len() * row::NUMBERS);
  for r in rows {
    let mut t: [Option<String>; row::TEXTS] = Default::default();
    t[row::AGENT] = Some(r.agent);
    t[row::TASK] = Some(r.task);
    t[row::OPTIONS] = r.options;
    t[row::LEVEL] = Some(r.level);
    if !claims {
      t[row::KEY] = r.key;
      t[row::RESULT] = r.result;
      t[row::ERROR] = r.error;
      t[row::OWNER] = r.owner;
    }
    texts.extend(t);
    let mut n = [0.0; row::NUMBERS];
    n[row::ID] = r.id as f64;
    n[row::PRIORITY] = r.priority as f64;
    n[row::MODE] = f64::from(r.mode);
    n[row::STATUS] = f64::from(r.status);
    n[row::ATTEMPT] = f64::from(r.attempt);
    n[row::MAX_ATTEMPTS] = f64::from(r.max_attempts);
    n[row::TIMEOUT_MS] = r.timeout_ms;
    n[row::PROGRESS] = r.progress;
    n[row::CANCEL_REQUESTED] = if r.cancel_requested { 1.0 } else { 0.0 };
    n[row::CREATED_AT] = r.created_at;
    n[row::SCHEDULED_AT] = r.scheduled_at;
    n[row::ATTEMPTED_AT] = r.attempted_at.unwrap_or(f64::NAN);
    n[row::FINALIZED_AT] = r.finalized_at.unwrap_or(f64::NAN);
    numbers.extend(n);
  }
  (texts, numbers)
}

/// `n` if finite, else `or`.
fn finite(n: f64, or: f64) -> f64 {
  if n.is_finite() {
    n
  } else {
    or
  }
}

/// The submissions of a batch from its text and numbers (laid out as `insert` says). Lengths
/// past the text's end (a bug) shorten the texts; nothing panics.
pub fn new_executions(text: &[u16], numbers: &[f64]) -> Vec<NewExecution> {
  let mut at = 0usize;
  let mut next = |len: f64| -> Option<String> {
    if len.is_nan() || len < 0.0 {
      return None;
    }
    let end = at.saturating_add(len as usize).min(text.len());
    let s = String::from_utf16_lossy(&text[at.min(end)..end]);
    at = end;
    Some(s)
  };
  numbers
    .chunks_exact(insert::NUMBERS + insert::TEXTS)
    .map(|c| {
      let (n, lens) = c.split_at(insert::NUMBERS);
      let mut t: [Option<String>; insert::TEXTS] = Default::default();
      for (slot, &len) in t.iter_mut().zip(lens) {
        *slot = next(len);
      }
      let mut take = |i: usize| std::mem::take(&mut t[i]);
      NewExecution {
        agent: take(insert::AGENT).unwrap_or_default(),
        task: take(insert::TASK).unwrap_or_default(),
        options: take(insert::OPTIONS),
        level: take(insert::LEVEL).unwrap_or_default(),
        key: take(insert::KEY),
        priority: finite(n[insert::PRIORITY], 0.0) as i64,
        mode: n[insert::MODE] as u32,
        max_attempts: (n[insert::MAX_ATTEMPTS] as u32).max(1),
        retry_delay_ms: finite(n[insert::RETRY_DELAY_MS], 0.0).max(0.0),
        backoff: n[insert::BACKOFF] as u32,
        timeout_ms: finite(n[insert::TIMEOUT_MS], 0.0).max(0.0),
        start_after: finite(n[insert::START_AFTER], 0.0),
        seq: if n[insert::SEQ].is_finite() && n[insert::SEQ] >= 1.0 {
          n[insert::SEQ] as u64
        } else {
          0
        },
      }
    })
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  /// One submission's numbers then the lengths of `texts`, and the texts joined.
  fn encode(subs: &[([f64; insert::NUMBERS], [Option<&str>; insert::TEXTS])]) -> (Vec<u16>, Vec<f64>) {
    let mut text = Vec::new();
    let mut numbers = Vec::new();
    for (n, t) in subs {
      numbers.extend_from_slice(n);
      for s in t {
        match s {
          Some(s) => {
            let units: Vec<u16> = s.encode_utf16().collect();
            numbers.push(units.len() as f64);
            text.extend(units);
          }
          None => numbers.push(-1.0),
        }
      }
    }
    (text, numbers)
  }

  fn numbers(priority: f64, seq: f64) -> [f64; insert::NUMBERS] {
    let mut n = [0.0; insert::NUMBERS];
    n[insert::PRIORITY] = priority;
    n[insert::MODE] = 3.0;
    n[insert::MAX_ATTEMPTS] = 2.0;
    n[insert::RETRY_DELAY_MS] = 250.0;
    n[insert::BACKOFF] = 1.0;
    n[insert::TIMEOUT_MS] = 5000.0;
    n[insert::START_AFTER] = 123.0;
    n[insert::SEQ] = seq;
    n
  }

  fn texts<'a>(
    agent: &'a str,
    task: &'a str,
    options: Option<&'a str>,
    key: Option<&'a str>,
  ) -> [Option<&'a str>; insert::TEXTS] {
    let mut t = [None; insert::TEXTS];
    t[insert::AGENT] = Some(agent);
    t[insert::TASK] = Some(task);
    t[insert::OPTIONS] = options;
    t[insert::LEVEL] = Some("high");
    t[insert::KEY] = key;
    t
  }

  #[test]
  fn submissions_come_back_field_by_field_with_surrogate_pairs_and_absent_texts() {
    let (text, nums) = encode(&[
      (numbers(5.0, 1.0), texts("a𝄞", "", Some("{\"n\":1}"), None)),
      (numbers(-2.0, 2.0), texts("b", "日本 𝄞x", None, Some("k𝄞"))),
    ]);
    let got = new_executions(&text, &nums);
    assert_eq!(got.len(), 2);
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(
      (
        a.agent.as_str(),
        a.task.as_str(),
        a.options.as_deref(),
        a.level.as_str(),
        a.key.as_deref()
      ),
      ("a𝄞", "", Some("{\"n\":1}"), "high", None)
    );
    assert_eq!(
      (
        b.agent.as_str(),
        b.task.as_str(),
        b.options.as_deref(),
        b.key.as_deref()
      ),
      ("b", "日本 𝄞x", None, Some("k𝄞"))
    );
    assert_eq!(
      (a.priority, a.mode, a.max_attempts, a.backoff, a.seq),
      (5, 3, 2, 1, 1)
    );
    assert_eq!(
      (a.retry_delay_ms, a.timeout_ms, a.start_after),
      (250.0, 5000.0, 123.0)
    );
    assert_eq!((b.priority, b.seq), (-2, 2));
  }

  #[test]
  fn bad_numbers_and_lengths_never_panic() {
    let (text, mut nums) = encode(&[(numbers(f64::NAN, f64::NAN), texts("a", "task", None, None))]);
    // Lengths past the text's end, NaN, infinite: shortened or absent, never a panic.
    nums[insert::NUMBERS + insert::TASK] = 1e300;
    nums[insert::NUMBERS + insert::LEVEL] = f64::NAN;
    nums[insert::TIMEOUT_MS] = f64::INFINITY;
    nums[insert::MAX_ATTEMPTS] = -7.0;
    let got = new_executions(&text, &nums);
    assert_eq!(got.len(), 1);
    let e = &got[0];
    // The task's length runs past the end: it takes the rest (the level's text).
    assert_eq!(
      (e.agent.as_str(), e.task.as_str(), e.level.as_str()),
      ("a", "taskhigh", "")
    );
    assert_eq!((e.priority, e.seq, e.timeout_ms, e.max_attempts), (0, 0, 0.0, 1));
    // A remainder shorter than one submission is left out.
    assert!(new_executions(&text, &nums[..insert::NUMBERS]).is_empty());
    assert!(new_executions(&[], &[]).is_empty());
  }

  fn stored(id: i64) -> Row {
    Row {
      id,
      agent: "agent".into(),
      task: format!("task {id}"),
      options: None,
      level: "low".into(),
      priority: 7,
      mode: 2,
      key: Some("key".into()),
      status: 3,
      attempt: 2,
      max_attempts: 4,
      timeout_ms: 900.0,
      progress: 40.0,
      result: None,
      error: Some("{\"message\":\"no\"}".into()),
      owner: Some("owner".into()),
      cancel_requested: true,
      created_at: 1.0,
      scheduled_at: 2.0,
      attempted_at: None,
      finalized_at: Some(4.0),
    }
  }

  #[test]
  fn rows_cross_field_by_field_and_claims_without_what_running_needs_not() {
    let (t, n) = row_columns(vec![stored(10), stored(11)], false);
    assert_eq!((t.len(), n.len()), (2 * row::TEXTS, 2 * row::NUMBERS));
    let (t1, n1) = (&t[row::TEXTS..], &n[row::NUMBERS..]);
    assert_eq!(t1[row::TASK].as_deref(), Some("task 11"));
    assert_eq!(t1[row::KEY].as_deref(), Some("key"));
    assert_eq!(t1[row::ERROR].as_deref(), Some("{\"message\":\"no\"}"));
    assert_eq!(t1[row::OWNER].as_deref(), Some("owner"));
    assert_eq!(t1[row::OPTIONS], None);
    assert_eq!(
      (n1[row::ID], n1[row::PRIORITY], n1[row::MODE], n1[row::STATUS]),
      (11.0, 7.0, 2.0, 3.0)
    );
    assert_eq!(
      (
        n1[row::ATTEMPT],
        n1[row::MAX_ATTEMPTS],
        n1[row::TIMEOUT_MS],
        n1[row::PROGRESS]
      ),
      (2.0, 4.0, 900.0, 40.0)
    );
    assert_eq!(
      (
        n1[row::CANCEL_REQUESTED],
        n1[row::CREATED_AT],
        n1[row::SCHEDULED_AT],
        n1[row::FINALIZED_AT]
      ),
      (1.0, 1.0, 2.0, 4.0)
    );
    assert!(n1[row::ATTEMPTED_AT].is_nan());
    let (claims, _) = row_columns(vec![stored(12)], true);
    assert_eq!(claims[row::TASK].as_deref(), Some("task 12"));
    for f in [row::KEY, row::RESULT, row::ERROR, row::OWNER] {
      assert_eq!(claims[f], None);
    }
  }
}

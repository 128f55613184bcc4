//! Every code that crosses the JS/Rust boundary, in one table.
//!
//! `npm run generate` writes `lib/protocol.js` from this file and `npm test` fails when that
//! file is stale, so JS never spells one of these numbers by hand. The generator reads only
//! `pub const NAME: type = value;` items (integers, and arrays of strings) with their `///`
//! comments; keep every item on one line in that shape.

// ----- batches (`NativeExecutor.sync`) -----------------------------------------------------

/// Numbers per operation in a batch buffer.
pub const OP_WIDTH: u32 = 4;
/// Operations a batch buffer holds.
pub const BATCH_CAPACITY: u32 = 512;
/// `[OP_SUBMIT, mode | agentKey << SUBMIT_KEY_SHIFT, priority, timeoutMs]`; the answer in slot 1 is the id, positive when it started at once, negative when queued.
pub const OP_SUBMIT: u32 = 1;
/// `[OP_SETTLE_OK, id, -, attempt]`; the answer in slot 2 is the id started in the freed slot (0: none), in slot 3 `RETRY_NONE`.
pub const OP_SETTLE_OK: u32 = 2;
/// `[OP_SETTLE_FAILED, id, final, attempt]` (`final` 1: no retry, whatever the policy); answers as `OP_SETTLE_OK`, slot 3 holds the retry delay (ms) when the execution now waits for its next attempt.
pub const OP_SETTLE_FAILED: u32 = 3;
/// Bits of the packed submit field that hold the mode and `SUBMIT_HELD`; the agent key is above them.
pub const SUBMIT_KEY_SHIFT: u32 = 4;
/// Packed submit flag: the execution waits (status queued, not startable) until `startAfter(id, ms)` arms its start.
pub const SUBMIT_HELD: u32 = 8;
/// A settle or timeout answer: the execution does not wait for a retry.
pub const RETRY_NONE: i32 = -1;
/// `sync` returns `evicted * SYNC_EVICTED_STEP + (idle ? SYNC_IDLE : 0)`.
pub const SYNC_IDLE: u32 = 1;
/// See `SYNC_IDLE`.
pub const SYNC_EVICTED_STEP: u32 = 2;
/// Room for the ids retention drops during one `sync`.
pub const EVICT_CAPACITY: u32 = 1024;

// ----- modes ---------------------------------------------------------------------------------

/// `fireAndForget`.
pub const MODE_FIRE: u32 = 0;
/// `executeWithCallback`.
pub const MODE_CALLBACK: u32 = 1;
/// `executeWatched`: periodic progress updates.
pub const MODE_WATCHED: u32 = 2;
/// `execute`.
pub const MODE_EXECUTE: u32 = 3;
/// One execution of `executeMultiple`.
pub const MODE_AGGREGATE: u32 = 4;
/// Mode names, by mode number.
pub const MODE_NAMES: [&str; 5] = ["fire-and-forget", "async-callback", "watched", "execute", "aggregate"];

// ----- statuses ------------------------------------------------------------------------------

/// Waiting in the queue.
pub const STATUS_QUEUED: u32 = 0;
/// An attempt holds a slot and its agent runs.
pub const STATUS_RUNNING: u32 = 1;
/// Ended with the agent's value.
pub const STATUS_COMPLETED: u32 = 2;
/// Ended with an error (the agent's, or a timeout).
pub const STATUS_FAILED: u32 = 3;
/// Ended by a cancel or a shutdown.
pub const STATUS_CANCELLED: u32 = 4;
/// Between a failed attempt and its retry; shown as "queued".
pub const STATUS_WAITING: u32 = 5;
/// Status names users see, by status number.
pub const STATUS_NAMES: [&str; 6] = ["queued", "running", "completed", "failed", "cancelled", "queued"];
/// `cancel` and `statusOf`: no such execution (or no longer retained).
pub const NOT_FOUND: i32 = -1;

// ----- timers (`[kind, id, kind, id, ...]` to the timer callback) ------------------------------

/// An execution's timeout.
pub const TIMER_TIMEOUT: u32 = 1;
/// A watched execution's periodic progress update.
pub const TIMER_PROGRESS: u32 = 2;
/// End of the grace period of a cancelled or timed-out execution's slot.
pub const TIMER_GRACE: u32 = 3;
/// Retention sweep (id 0).
pub const TIMER_SWEEP: u32 = 4;
/// Shutdown deadline (id 0).
pub const TIMER_SHUTDOWN: u32 = 5;
/// End of the delay before an execution's next attempt.
pub const TIMER_RETRY: u32 = 6;
/// A rate limit lets the next start through (id: the agent key, 0 for the global limit).
pub const TIMER_RATE: u32 = 7;
/// `timeout` answer: the firing was stale (nothing timed out).
pub const TIMEOUT_STALE: i32 = -2;

// ----- retries -------------------------------------------------------------------------------

/// The same delay before every retry.
pub const BACKOFF_FIXED: u32 = 0;
/// The delay doubles per attempt, with equal jitter (half fixed, half random).
pub const BACKOFF_EXPONENTIAL: u32 = 1;
/// Most retries an execution may ask for.
pub const MAX_RETRIES: u32 = 1000;
/// Longest delay or timeout, in ms (what a JS timer can hold: ~24.8 days).
pub const MAX_DELAY_MS: u32 = 2147483647;

// ----- throttling (`observeSample`) ------------------------------------------------------------

/// No change.
pub const THROTTLE_UNCHANGED: u32 = 0;
/// A throttling episode began: new starts are limited to `minConcurrentAgents`.
pub const THROTTLE_BEGAN: u32 = 1;
/// The episode ended.
pub const THROTTLE_ENDED: u32 = 2;

// ----- statistics ------------------------------------------------------------------------------

/// Distinct agent keys with their own statistics and limits; later agents share key 0
/// ("other"), which has no limits.
pub const MAX_AGENT_KEYS: u32 = 4096;
/// Largest `max` of a rate limit.
pub const MAX_RATE: u32 = 1000000;

// ----- command agents --------------------------------------------------------------------------

/// No progress from the output.
pub const PROGRESS_OFF: u32 = 0;
/// Stdout lines go to JS, which matches them with the spec's RegExp.
pub const PROGRESS_REGEXP: u32 = 1;
/// Stdout lines are parsed as JSON in Rust (`{"progress": n}`).
pub const PROGRESS_JSON: u32 = 2;
/// Event: output lines of one stream.
pub const EVENT_LINES: u32 = 1;
/// Event: a progress value.
pub const EVENT_PROGRESS: u32 = 2;
/// Event: the command's exit (exactly one per command).
pub const EVENT_EXIT: u32 = 3;
/// Stream of an `EVENT_LINES` event.
pub const STREAM_STDOUT: u32 = 1;
/// See `STREAM_STDOUT`.
pub const STREAM_STDERR: u32 = 2;

// ----- the durable store (`NativeStore` events) ------------------------------------------------

/// The store is open; `text` is this executor's owner id.
pub const STORE_OPENED: u32 = 1;
/// A batch committed: `ids` the inserted ids (negative: an earlier execution with the key), `codes` per finish `FINISH_RECORDED`, `FINISH_STALE`, `FINISH_CANCELLED` or the retry delay (ms), the claimed executions as rows (`ROW_TEXTS`).
pub const STORE_BATCH: u32 = 2;
/// A cancel: `codes[0]` the status the execution had, or `NOT_FOUND`.
pub const STORE_CANCELLED: u32 = 3;
/// A fetch: the execution as a row (`ROW_TEXTS`), or none.
pub const STORE_FETCHED: u32 = 4;
/// An integrity check: `text` is "ok", or what is wrong.
pub const STORE_CHECKED: u32 = 5;
/// A request failed (`req` 0: opening the store); `errorCode`, `text` the message.
pub const STORE_FAILED: u32 = 6;
/// Claimable work may be waiting (another process committed, a delay ended, a rescue).
pub const STORE_CHANGED: u32 = 7;
/// Cancels requested for attempts this executor runs: `ids` = `[id, attempt, ...]`.
pub const STORE_CANCEL_REQUESTED: u32 = 8;
/// Watched executions ended (rows, `ROW_TEXTS`), or are no longer stored (`ids`), or ended
/// without their rows read (`codes`: fire-and-forget submissions beyond `ENDED_KEPT`).
pub const STORE_ENDED: u32 = 9;
/// The latest final statuses of durable executions an executor keeps for `getExecutionStatus`.
pub const ENDED_KEPT: u32 = 1000;
/// Executions of stopped executors moved on: `ids` = `[id, attempt, status, ...]`, `names` = `[agent, owner, ...]`.
pub const STORE_RESCUED: u32 = 10;
/// A failure outside any request (heartbeat, rescue, retention, poll): `errorCode`, `text`.
pub const STORE_BACKGROUND_ERROR: u32 = 11;
/// The store is closed.
pub const STORE_CLOSED: u32 = 12;
/// The connection to a PostgreSQL store was lost (`codes[0]` 0) or is back (1); `text` names the store.
pub const STORE_LINK: u32 = 13;
/// A request that answers nothing but its success (a global limit set).
pub const STORE_DONE: u32 = 14;
/// The store's thread failed (a panic): no request in flight will be answered; `errorCode`, `text` say why.
pub const STORE_STOPPED: u32 = 15;
/// A batch's submissions cross as one text (`insertText`, every submission's texts one after the other) and numbers (`insertNumbers`): per submission its `INSERT_NUMBERS`, then the length of each of its `INSERT_TEXTS` in UTF-16 code units (-1: none), in these orders. Properties by name would cost a lookup each, a string each a call.
pub const INSERT_TEXTS: [&str; 5] = ["agent", "task", "options", "level", "key"];
/// See `INSERT_TEXTS`.
pub const INSERT_NUMBERS: [&str; 8] = ["priority", "mode", "maxAttempts", "retryDelayMs", "backoff", "timeoutMs", "startAfter", "seq"];
/// Stored executions (`rows` of `STORE_ENDED`, `STORE_FETCHED`, `STORE_BATCH`'s claims) cross as texts (`rowTexts`, null for none) and numbers (`rowNumbers`, NaN for none; `cancelRequested` 1 or 0), these fields per row in these orders.
pub const ROW_TEXTS: [&str; 8] = ["agent", "task", "options", "level", "key", "result", "error", "owner"];
/// See `ROW_TEXTS`.
pub const ROW_NUMBERS: [&str; 13] = ["id", "priority", "mode", "status", "attempt", "maxAttempts", "timeoutMs", "progress", "cancelRequested", "createdAt", "scheduledAt", "attemptedAt", "finalizedAt"];
/// A finish answer: recorded as the execution's end.
pub const FINISH_RECORDED: i32 = -1;
/// A finish answer: the attempt no longer owned the execution; discarded.
pub const FINISH_STALE: i32 = -2;
/// A finish answer: a cancel was asked while the attempt ran, so the execution ended
/// cancelled (the cancel's error stored) and the attempt's own outcome was discarded.
pub const FINISH_CANCELLED: i32 = -3;

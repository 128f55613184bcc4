// Generated from src/protocol.rs by `npm run generate`; do not edit. `npm test` fails when
// this file is stale.
'use strict';

module.exports = Object.freeze({
  /** Numbers per operation in a batch buffer. */
  OP_WIDTH: 4,
  /** Operations a batch buffer holds. */
  BATCH_CAPACITY: 512,
  /** `[OP_SUBMIT, mode | agentKey << SUBMIT_KEY_SHIFT, priority, timeoutMs]`; the answer in slot 1 is the id, positive when it started at once, negative when queued. */
  OP_SUBMIT: 1,
  /** `[OP_SETTLE_OK, id, -, attempt]`; the answer in slot 2 is the id started in the freed slot (0: none), in slot 3 `RETRY_NONE`. */
  OP_SETTLE_OK: 2,
  /** `[OP_SETTLE_FAILED, id, final, attempt]` (`final` 1: no retry, whatever the policy); answers as `OP_SETTLE_OK`, slot 3 holds the retry delay (ms) when the execution now waits for its next attempt. */
  OP_SETTLE_FAILED: 3,
  /** Bits of the packed submit field that hold the mode and `SUBMIT_HELD`; the agent key is above them. */
  SUBMIT_KEY_SHIFT: 4,
  /** Packed submit flag: the execution waits (status queued, not startable) until `startAfter(id, ms)` arms its start. */
  SUBMIT_HELD: 8,
  /** A settle or timeout answer: the execution does not wait for a retry. */
  RETRY_NONE: -1,
  /** `sync` returns `evicted * SYNC_EVICTED_STEP + (idle ? SYNC_IDLE : 0)`. */
  SYNC_IDLE: 1,
  /** See `SYNC_IDLE`. */
  SYNC_EVICTED_STEP: 2,
  /** Room for the ids retention drops during one `sync`. */
  EVICT_CAPACITY: 1024,
  /** `fireAndForget`. */
  MODE_FIRE: 0,
  /** `executeWithCallback`. */
  MODE_CALLBACK: 1,
  /** `executeWatched`: periodic progress updates. */
  MODE_WATCHED: 2,
  /** `execute`. */
  MODE_EXECUTE: 3,
  /** One execution of `executeMultiple`. */
  MODE_AGGREGATE: 4,
  /** Mode names, by mode number. */
  MODE_NAMES: Object.freeze(["fire-and-forget", "async-callback", "watched", "execute", "aggregate"]),
  /** Waiting in the queue. */
  STATUS_QUEUED: 0,
  /** An attempt holds a slot and its agent runs. */
  STATUS_RUNNING: 1,
  /** Ended with the agent's value. */
  STATUS_COMPLETED: 2,
  /** Ended with an error (the agent's, or a timeout). */
  STATUS_FAILED: 3,
  /** Ended by a cancel or a shutdown. */
  STATUS_CANCELLED: 4,
  /** Between a failed attempt and its retry; shown as "queued". */
  STATUS_WAITING: 5,
  /** Status names users see, by status number. */
  STATUS_NAMES: Object.freeze(["queued", "running", "completed", "failed", "cancelled", "queued"]),
  /** `cancel` and `statusOf`: no such execution (or no longer retained). */
  NOT_FOUND: -1,
  /** An execution's timeout. */
  TIMER_TIMEOUT: 1,
  /** A watched execution's periodic progress update. */
  TIMER_PROGRESS: 2,
  /** End of the grace period of a cancelled or timed-out execution's slot. */
  TIMER_GRACE: 3,
  /** Retention sweep (id 0). */
  TIMER_SWEEP: 4,
  /** Shutdown deadline (id 0). */
  TIMER_SHUTDOWN: 5,
  /** End of the delay before an execution's next attempt. */
  TIMER_RETRY: 6,
  /** A rate limit lets the next start through (id: the agent key, 0 for the global limit). */
  TIMER_RATE: 7,
  /** `timeout` answer: the firing was stale (nothing timed out). */
  TIMEOUT_STALE: -2,
  /** The same delay before every retry. */
  BACKOFF_FIXED: 0,
  /** The delay doubles per attempt, with equal jitter (half fixed, half random). */
  BACKOFF_EXPONENTIAL: 1,
  /** Most retries an execution may ask for. */
  MAX_RETRIES: 1000,
  /** Longest delay or timeout, in ms (what a JS timer can hold: ~24.8 days). */
  MAX_DELAY_MS: 2147483647,
  /** No change. */
  THROTTLE_UNCHANGED: 0,
  /** A throttling episode began: new starts are limited to `minConcurrentAgents`. */
  THROTTLE_BEGAN: 1,
  /** The episode ended. */
  THROTTLE_ENDED: 2,
  /** Distinct agent keys with their own statistics and limits; later agents share key 0 ("other"), which has no limits. */
  MAX_AGENT_KEYS: 4096,
  /** Largest `max` of a rate limit. */
  MAX_RATE: 1000000,
  /** No progress from the output. */
  PROGRESS_OFF: 0,
  /** Stdout lines go to JS, which matches them with the spec's RegExp. */
  PROGRESS_REGEXP: 1,
  /** Stdout lines are parsed as JSON in Rust (`{"progress": n}`). */
  PROGRESS_JSON: 2,
  /** Event: output lines of one stream. */
  EVENT_LINES: 1,
  /** Event: a progress value. */
  EVENT_PROGRESS: 2,
  /** Event: the command's exit (exactly one per command). */
  EVENT_EXIT: 3,
  /** Stream of an `EVENT_LINES` event. */
  STREAM_STDOUT: 1,
  /** See `STREAM_STDOUT`. */
  STREAM_STDERR: 2,
  /** The store is open; `text` is this executor's owner id. */
  STORE_OPENED: 1,
  /** A batch committed: `ids` the inserted ids (negative: an earlier execution with the key), `codes` per finish `FINISH_RECORDED`, `FINISH_STALE`, `FINISH_CANCELLED` or the retry delay (ms), the claimed executions as rows (`ROW_TEXTS`). */
  STORE_BATCH: 2,
  /** A cancel: `codes[0]` the status the execution had, or `NOT_FOUND`. */
  STORE_CANCELLED: 3,
  /** A fetch: the execution as a row (`ROW_TEXTS`), or none. */
  STORE_FETCHED: 4,
  /** An integrity check: `text` is "ok", or what is wrong. */
  STORE_CHECKED: 5,
  /** A request failed (`req` 0: opening the store); `errorCode`, `text` the message. */
  STORE_FAILED: 6,
  /** Claimable work may be waiting (another process committed, a delay ended, a rescue). */
  STORE_CHANGED: 7,
  /** Cancels requested for attempts this executor runs: `ids` = `[id, attempt, ...]`. */
  STORE_CANCEL_REQUESTED: 8,
  /** Watched executions ended (rows, `ROW_TEXTS`), or are no longer stored (`ids`), or ended without their rows read (`codes`: fire-and-forget submissions beyond `ENDED_KEPT`). */
  STORE_ENDED: 9,
  /** The latest final statuses of durable executions an executor keeps for `getExecutionStatus`. */
  ENDED_KEPT: 1000,
  /** Executions of stopped executors moved on: `ids` = `[id, attempt, status, ...]`, `names` = `[agent, owner, ...]`. */
  STORE_RESCUED: 10,
  /** A failure outside any request (heartbeat, rescue, retention, poll): `errorCode`, `text`. */
  STORE_BACKGROUND_ERROR: 11,
  /** The store is closed. */
  STORE_CLOSED: 12,
  /** The connection to a PostgreSQL store was lost (`codes[0]` 0) or is back (1); `text` names the store. */
  STORE_LINK: 13,
  /** A request that answers nothing but its success (a global limit set). */
  STORE_DONE: 14,
  /** The store's thread failed (a panic): no request in flight will be answered; `errorCode`, `text` say why. */
  STORE_STOPPED: 15,
  /** A batch's submissions cross as one text (`insertText`, every submission's texts one after the other) and numbers (`insertNumbers`): per submission its `INSERT_NUMBERS`, then the length of each of its `INSERT_TEXTS` in UTF-16 code units (-1: none), in these orders. Properties by name would cost a lookup each, a string each a call. */
  INSERT_TEXTS: Object.freeze(["agent", "task", "options", "level", "key"]),
  /** See `INSERT_TEXTS`. */
  INSERT_NUMBERS: Object.freeze(["priority", "mode", "maxAttempts", "retryDelayMs", "backoff", "timeoutMs", "startAfter", "seq"]),
  /** Stored executions (`rows` of `STORE_ENDED`, `STORE_FETCHED`, `STORE_BATCH`'s claims) cross as texts (`rowTexts`, null for none) and numbers (`rowNumbers`, NaN for none; `cancelRequested` 1 or 0), these fields per row in these orders. */
  ROW_TEXTS: Object.freeze(["agent", "task", "options", "level", "key", "result", "error", "owner"]),
  /** See `ROW_TEXTS`. */
  ROW_NUMBERS: Object.freeze(["id", "priority", "mode", "status", "attempt", "maxAttempts", "timeoutMs", "progress", "cancelRequested", "createdAt", "scheduledAt", "attemptedAt", "finalizedAt"]),
  /** A finish answer: recorded as the execution's end. */
  FINISH_RECORDED: -1,
  /** A finish answer: the attempt no longer owned the execution; discarded. */
  FINISH_STALE: -2,
  /** A finish answer: a cancel was asked while the attempt ran, so the execution ended cancelled (the cancel's error stored) and the attempt's own outcome was discarded. */
  FINISH_CANCELLED: -3,
});

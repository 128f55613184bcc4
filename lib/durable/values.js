'use strict';

// Stored values and what users see of them: error objects to JSON and back, stored rows as
// they cross from Rust and as status objects (the same shape as getExecutionStatus's), and
// durable execution ids.

const { coded, messageOf } = require('../errors.js');
const { MODE_NAMES, STATUS_NAMES, STATUS_COMPLETED, STATUS_FAILED, STATUS_CANCELLED, ROW_TEXTS, ROW_NUMBERS } = require('../protocol.js');

/** Where each field of a stored row is among its texts and among its numbers. */
const T = Object.fromEntries(ROW_TEXTS.map((f, i) => [f, i]));
const N = Object.fromEntries(ROW_NUMBERS.map((f, i) => [f, i]));
const NO_ROWS = Object.freeze([]);

/** A number that may be absent (NaN), as null when it is. */
const orNull = (v) => (Number.isNaN(v) ? null : v);

/**
 * The stored rows an event of the store carries, as objects (see ROW_TEXTS): they cross as
 * texts and numbers, which costs far less than an object per row.
 */
function rowsOf(ev) {
  const texts = ev.rowTexts;
  const numbers = ev.rowNumbers;
  if (numbers.length === 0) return NO_ROWS;
  const rows = [];
  for (let t = 0, n = 0; n < numbers.length; t += ROW_TEXTS.length, n += ROW_NUMBERS.length) {
    rows.push({
      id: numbers[n + N.id],
      agent: texts[t + T.agent],
      task: texts[t + T.task],
      options: texts[t + T.options],
      level: texts[t + T.level],
      priority: numbers[n + N.priority],
      mode: numbers[n + N.mode],
      key: texts[t + T.key],
      status: numbers[n + N.status],
      attempt: numbers[n + N.attempt],
      maxAttempts: numbers[n + N.maxAttempts],
      timeoutMs: numbers[n + N.timeoutMs],
      progress: numbers[n + N.progress],
      result: texts[t + T.result],
      error: texts[t + T.error],
      owner: texts[t + T.owner],
      cancelRequested: numbers[n + N.cancelRequested] === 1,
      createdAt: numbers[n + N.createdAt],
      scheduledAt: numbers[n + N.scheduledAt],
      attemptedAt: orNull(numbers[n + N.attemptedAt]),
      finalizedAt: orNull(numbers[n + N.finalizedAt]),
    });
  }
  return rows;
}

const DURABLE_PREFIX = 'exec-d';
const DURABLE_PATTERN = /^exec-d[1-9][0-9]{0,15}$/;

/** The id users see for stored execution `rowId`. */
const durableId = (rowId) => DURABLE_PREFIX + rowId;

/** The row id in a durable execution id (`exec-d<n>`), else 0. */
function parseDurableId(value) {
  if (typeof value !== 'string' || !DURABLE_PATTERN.test(value)) return 0;
  const n = Number(value.slice(DURABLE_PREFIX.length));
  return Number.isSafeInteger(n) ? n : 0;
}

/** The longest error JSON stored whole (UTF-16 code units; at most 3 bytes each as UTF-8). */
const MAX_ERROR_UNITS = 64 * 1024 * 1024;
/** The characters of its message kept when an error is too big (6 units each at worst, escaped). */
const CUT_MESSAGE = 1024 * 1024;

/**
 * An error as JSON: its name, message and code, plus its own enumerable fields that are
 * strings, numbers or booleans (executionId, timeoutMs, exitCode...). Never throws.
 */
function errorJson(err) {
  const out = { name: 'Error', message: messageOf(err) };
  try {
    if (err !== null && typeof err === 'object') {
      if (typeof err.name === 'string') out.name = err.name;
      for (const key of Object.keys(err)) {
        const v = err[key];
        const t = typeof v;
        if (key !== 'name' && key !== 'message' && (t === 'string' || t === 'boolean' || (t === 'number' && Number.isFinite(v)))) {
          out[key] = v;
        }
      }
    }
  } catch {
    // a throwing getter: keep what was read
  }
  let json = null;
  try {
    json = JSON.stringify(out); // throws past V8's longest string
  } catch {
    // too big: cut below
  }
  if (json !== null && json.length <= MAX_ERROR_UNITS) return json;
  // An error too big to store whole (a message or field of hundreds of MB): its name, code
  // and the start of its message.
  const short = { name: out.name.slice(0, 1024), message: `${out.message.slice(0, CUT_MESSAGE)}... (cut: ${out.message.length} characters)` };
  if (typeof out.code === 'string' && out.code.length <= 1024) short.code = out.code;
  return JSON.stringify(short);
}

/** An Error rebuilt from `errorJson` text (null text: a generic error). */
function errorFromJson(text) {
  let data = null;
  try {
    data = text == null ? null : JSON.parse(text);
  } catch {
    data = null;
  }
  if (data === null || typeof data !== 'object') return coded(Error, 'ERR_STORE', 'The stored error could not be read');
  const err = new Error(typeof data.message === 'string' ? data.message : 'Unknown error');
  for (const key of Object.keys(data)) if (key !== 'message' && key !== 'name') err[key] = data[key];
  if (typeof data.name === 'string' && data.name !== 'Error') {
    Object.defineProperty(err, 'name', { value: data.name, writable: true, configurable: true, enumerable: false });
  }
  return err;
}

/** The stored result as a JS value. */
function resultFromJson(text) {
  return text == null ? null : JSON.parse(text);
}

/** A stored row (see rowsOf) as a status object. */
function rowStatus(row) {
  const executionId = durableId(row.id);
  const status = STATUS_NAMES[row.status];
  const completed = row.status === STATUS_COMPLETED;
  const failed = row.status === STATUS_FAILED || row.status === STATUS_CANCELLED;
  const end = row.finalizedAt == null ? Date.now() : row.finalizedAt;
  const errorObject = failed ? errorFromJson(row.error) : undefined;
  const out = {
    found: true,
    id: executionId,
    executionId,
    agent: row.agent,
    task: row.task,
    mode: MODE_NAMES[row.mode],
    priority: row.level,
    status,
    attempt: row.attempt,
    progress: completed ? 100 : row.progress,
    started: row.createdAt,
    duration: row.attemptedAt == null ? 0 : Math.max(0, end - row.attemptedAt),
    result: completed ? resultFromJson(row.result) : null,
    error: failed ? errorObject.message : null,
    errorObject,
    startedAt: row.attemptedAt == null ? undefined : row.attemptedAt,
    finishedAt: row.finalizedAt == null ? undefined : row.finalizedAt,
    durable: true,
    key: row.key == null ? undefined : row.key,
    owner: row.owner == null ? undefined : row.owner,
    maxAttempts: row.maxAttempts,
  };
  // A delayed execution that has not started yet: when it may.
  if (status === 'queued' && row.attempt === 0 && row.scheduledAt > row.createdAt && row.scheduledAt > Date.now()) out.startAfter = row.scheduledAt;
  return out;
}

module.exports = { durableId, parseDurableId, errorJson, errorFromJson, resultFromJson, rowStatus, rowsOf };

'use strict';

// Durable submissions: a submission is validated, its options stored as JSON, and it is
// queued for the store's next group commit. It is acknowledged only once its row is committed
// (`inserted`): then it has its id, its handle waits for the outcome, and its caller gets
// the answer. A commit that fails for good refuses it (`refused`).
//
// Functions that need the durable layer (the Durable of durable.js) take it as their first
// argument.

const { extras } = require('../record.js');
const { canRun } = require('../agents.js');
const { closedError } = require('../errors.js');
const { follow } = require('../signals.js');
const { storedText } = require('../validate.js');
const { toJson, sized, storedName, sizedTogether } = require('./json.js');
const { isInstance } = require('../validate.js');
const { checkKey } = require('../keys.js');
const { durableId } = require('./values.js');
const { DurableRun } = require('./runs.js');
const { userAborted } = require('./cancels.js');
const { answerClosed } = require('./shutdown.js');
const { takesValue } = require('./outcomes.js');
const P = require('../protocol.js');

const { MODE_EXECUTE, MODE_NAMES } = P;

/** Options that only mean something in the submitting process: not stored. */
const LOCAL_OPTIONS = new Set(['signal', 'onProgress', 'retryIf']);

/** @typedef {import('./durable.js').Durable} Durable */

/**
 * The options stored with a submission: JSON text (null for none), else ERR_NOT_SERIALIZABLE.
 * A `startAfter` Date (already validated) is stored as its ms since the epoch.
 */
function storedOptions(options) {
  if (options === undefined || options === null) return null;
  const copy = {};
  for (const key of Object.keys(options)) if (!LOCAL_OPTIONS.has(key)) copy[key] = options[key];
  if (isInstance(copy.startAfter, Date)) copy.startAfter = copy.startAfter.getTime();
  return toJson(copy, 'options');
}

/**
 * A durable submission: validated, its options stored as JSON, queued for the next commit.
 * @param {Durable} durable
 */
function submit(durable, mode, agent, task, options) {
  const ex = durable.ex;
  const rules = ex._rules;
  const rec = rules.record(mode, agent, task, options);
  // Stored as text: a lone surrogate would come back as U+FFFD, a NUL is refused by
  // PostgreSQL. Agent names and keys are index entries: PostgreSQL's hold 2704 bytes.
  storedName('agent', agent);
  sized(storedText('task', task), 'task');
  const priority = rules.priority;
  const timeoutMs = rules.timeoutMs;
  if (ex._closing) throw closedError();
  if (durable.openError !== null) throw durable.openError;
  let key = null;
  if (options !== undefined && options !== null) {
    const k = options.key;
    if (k !== undefined && k !== null) {
      checkKey(k);
      key = storedName('options.key', k);
    }
  }
  const stored = storedOptions(options);
  sizedTogether(task, stored);
  const x = extras(rec);
  const policy = x.retry !== null ? x.retry : ex.config;
  x.retry = null;
  x.durable = new DurableRun();
  x.durable.key = key === null ? undefined : key;
  x.durable.submittedAt = Date.now();
  durable.link.insert(
    {
      agent,
      task,
      options: stored === null ? undefined : stored,
      level: rec.priority,
      priority,
      mode,
      key: key === null ? undefined : key,
      maxAttempts: policy.retries + 1,
      retryDelayMs: policy.retryDelayMs,
      backoff: policy.backoff === 'fixed' ? P.BACKOFF_FIXED : P.BACKOFF_EXPONENTIAL,
      timeoutMs,
      startAfter: x.startAfter === undefined ? 0 : x.startAfter,
      seq: ++durable.insertSeq,
    },
    rec,
  );
  if (canRun(ex, agent)) durable.link.wantClaim();
  ex._markBusy();
  return rec;
}

/**
 * A committed submission: its id, its handle, its events and its caller's answer.
 * @param {Durable} durable
 */
function inserted(durable, rec, rowId, existing) {
  const ex = durable.ex;
  const d = rec.x.durable;
  d.rowId = rowId;
  d.extId = durableId(rowId);
  d.joined = existing;
  let list = durable.handles.get(rowId);
  if (list === undefined) {
    list = [];
    durable.handles.set(rowId, list);
    // A new row is watched by the store's thread from its commit; an earlier execution
    // with the key may have ended already: look it up.
    if (existing) durable.toCheck.push(rowId);
  }
  const awaited = takesValue(rec);
  // Joining by key a submission of this executor that took no value (its end read lazily):
  // from now its end is read as soon as heard.
  if (awaited && list.length > 0 && !list.some(takesValue)) durable.toCheck.push(rowId);
  list.push(rec);
  if (awaited) durable.awaiting++;
  const x = rec.x;
  if (!existing) {
    ex._emit('execution-queued', {
      executionId: d.extId,
      agent: rec.agent,
      task: rec.task,
      mode: MODE_NAMES[rec.mode],
      priority: rec.priority,
      durable: true,
    });
  }
  if (x.userSignal !== null && !rec.done) {
    if (x.userSignal.aborted) userAborted(durable, rec, x.userSignal.reason);
    else follow(x.userSignal, ex, rec);
  }
  if (x.admitted !== null) {
    const admitted = x.admitted;
    x.admitted = null;
    x.refused = null;
    admitted({ executionId: d.extId, mode: MODE_NAMES[rec.mode], status: 'queued' });
  }
  // Committed after close() answered the waiting callers: this one is answered the same way.
  if (durable.closePromise !== undefined) answerClosed(durable, rowId);
}

/** The commit failed: the submission is refused with the store's error. */
function refused(rec, err) {
  const x = rec.x;
  rec.done = true;
  if (x.userSignal !== null) x.userSignal = null;
  if (x.refused !== null) {
    const refuse = x.refused;
    x.admitted = null;
    x.refused = null;
    refuse(err);
  } else if (rec.mode === MODE_EXECUTE) rec.reject(err);
}

module.exports = { submit, inserted, refused };

'use strict';

// Running stored executions here: claims sized to the free slots, a claimed row turned into
// a local execution of the core (the submission's own handle when it was made here), the
// attempt's end written back to the store, and the store's answer to that end (completed,
// failed, cancelled, retried or stale) reported as events and settled.
//
// The functions take the durable layer (the Durable of durable.js) as their first argument.

const { Execution, extras } = require('../record.js');
const { canRun } = require('../agents.js');
const { heldAgents } = require('../limits.js');
const { coded, messageOf, codeOf, cancelledError } = require('../errors.js');
const { resultJson, storableName } = require('./json.js');
const { durableId, errorJson } = require('./values.js');
const P = require('../protocol.js');

const { MODE_NAMES, MODE_WATCHED, OP_SUBMIT, SUBMIT_KEY_SHIFT, STATUS_COMPLETED, STATUS_FAILED, STATUS_CANCELLED } = P;

/** Errors no retry of a stored execution can fix (retryIf is not asked). */
const NOT_RETRYABLE = new Set(['ERR_COMMAND_SPEC', 'ERR_NOT_SERIALIZABLE', 'ERR_STORE']);
/** A claimed attempt runs once in the core: the store decides about retries. */
const NO_LOCAL_RETRY = Object.freeze({ retries: 0, retryDelayMs: 0, backoff: 'fixed' });
/** Claims per batch at most. */
const MAX_CLAIM = 512;
/**
 * A batch claims at most this fraction of the slots. SQLite: half, so while the store
 * commits one batch, this thread runs the executions of the other, instead of the two
 * threads taking turns. PostgreSQL: all, as the server's cost per claimed row falls with
 * the claim's size (docs/durable.md has the figures).
 */
const claimParts = (durable) => (durable.config.postgres === null ? 2 : 1);

/** @typedef {import('./durable.js').Durable} Durable */

/** The durable side of one execution (`rec.x.durable`). */
class DurableRun {
  constructor() {
    this.rowId = 0; // 0 until its row is committed
    this.extId = '';
    this.attempt = 0; // the store's attempt number of the attempt running here
    this.maxAttempts = 1; // the attempts its stored policy allows
    this.running = false;
    this.release = false; // hand the attempt back uncounted (shutdown)
    this.value = undefined; // the attempt's own result or error
    this.startedAt = 0;
    this.progressAt = 0; // when progress was last stored
    this.progressLater = -1; // a report to store when the interval ends (-1: none)
    this.unstorableAttempt = 0; // the attempt whose end the store refused, now sent as a failure
    this.joined = false; // submitted with the key of a live execution: it joined that one
    this.cancelAsked = false; // the store flagged the running attempt's cancel: it ends cancelled, never handed back
    this.agentBusy = false; // the attempt's agent was called and has not settled (its record is not reused meanwhile)
    this.held = null; // the write of an ended attempt held until its slot is free (writeOnceSlotFree)
    this.progress = 0; // the latest progress reported by the running attempt
    this.key = undefined; // options.key
    this.submittedAt = 0; // when the execution was submitted (epoch ms)
  }
}

/**
 * A local slot freed with nothing local queued: claim if work may be waiting.
 * @param {Durable} durable
 */
function slotFreed(durable) {
  if (durable.link.claimWanted) durable.link.schedule();
}

/**
 * Slots this executor can fill with claimed executions now.
 * @param {Durable} durable
 */
function freeSlots(durable) {
  if (durable.closing || durable.owner === null) return 0;
  const ex = durable.ex;
  ex._flush();
  const c = ex._native.counts();
  if (c.paused || c.closed) return 0;
  const max = c.throttled ? Math.min(c.maxConcurrent, ex.config.minConcurrentAgents) : c.maxConcurrent;
  const held = heldAgents(ex);
  durable.claimExclude = held.agents.filter(storableName);
  const free = Math.max(0, max - c.slotsUsed - (c.queued - held.queued));
  // Prefetch: at most `storePrefetch` executions wait here (any agent's, held ones too),
  // within `maxQueued`; none while throttled.
  const maxQueued = ex.config.maxQueued;
  const room = Math.min(durable.config.prefetch, maxQueued === undefined ? Infinity : maxQueued) - c.queued;
  const ahead = c.throttled ? 0 : Math.max(0, room);
  durable.claimChunk = Math.min(MAX_CLAIM, Math.ceil((max + ahead) / claimParts(durable)));
  return free + ahead;
}

/**
 * A claimed execution becomes a local one: its handle when submitted here, else a new record.
 * @param {Durable} durable
 */
function claimed(durable, row) {
  const ex = durable.ex;
  const rowId = row.id;
  if (durable.closing || ex._closing || !canRun(ex, row.agent)) {
    // Claimed as shutdown began, or its agent was unregistered meanwhile: back, uncounted.
    durable.link.release(rowId, row.attempt);
    return;
  }
  // The submission that wrote the row, when made here (one that joined it by its key holds
  // its own task and options, not the row's).
  let rec = durable._writer(rowId) || null;
  // A stale attempt still holds it, or an earlier attempt's agent has not settled (its late
  // settle must not be taken for the new attempt's): the run gets a record of its own.
  if (rec !== null && (rec.x.durable.running || rec.x.durable.agentBusy)) rec = null;
  let unreadable = null;
  if (rec === null) {
    let options;
    try {
      options = row.options == null ? undefined : JSON.parse(row.options);
    } catch (err) {
      unreadable = coded(Error, 'ERR_STORE', `The stored options of execution ${durableId(rowId)} cannot be read: ${messageOf(err)}`);
    }
    rec = new Execution(row.mode, row.agent, row.task, options, row.level);
    const x = extras(rec);
    x.durable = new DurableRun();
    x.durable.rowId = rowId;
    x.durable.extId = durableId(rowId);
    x.durable.key = row.key == null ? undefined : row.key;
    x.durable.submittedAt = row.createdAt;
  } else {
    rec.rearm();
  }
  const x = rec.x;
  const d = x.durable;
  d.attempt = row.attempt;
  d.maxAttempts = row.maxAttempts;
  d.cancelAsked = false;
  d.held = null;
  d.running = true;
  d.release = false;
  d.value = undefined;
  d.progress = 0;
  d.startedAt = Date.now();
  x.timeoutMs = row.timeoutMs;
  x.retry = NO_LOCAL_RETRY;
  durable.runs.set(rowId, rec);
  durable.stats.claimed++;
  if (unreadable !== null) {
    // Never started: it fails at once (not retried: the same row would fail again).
    attemptEnded(durable, rec, 'failed', unreadable);
    return;
  }
  let key = ex._agentKeys.get(row.agent);
  if (key === undefined) key = ex._internAgent(row.agent);
  ex._push(rec, OP_SUBMIT, row.mode + (key << SUBMIT_KEY_SHIFT), row.priority, row.timeoutMs);
  ex._markBusy();
}

/**
 * The core refused a claimed execution (its queue is full): back to the store, uncounted.
 * @param {Durable} durable
 */
function notTaken(durable, rec) {
  const d = rec.x.durable;
  d.running = false;
  rec.done = true;
  if (durable.runs.get(d.rowId) === rec) durable.runs.delete(d.rowId);
  durable.link.release(d.rowId, d.attempt);
}

/**
 * A local attempt of a durable execution ended (`status` as the lifecycle names it).
 * @param {Durable} durable
 */
function attemptEnded(durable, rec, status, value) {
  const d = rec.x.durable;
  rec.done = true;
  rec.value = value;
  if (!d.running) return;
  d.running = false;
  if (durable.link.dead) {
    // Nothing can be written: its lease runs out and another executor runs it again.
    durable.runs.delete(d.rowId);
    return;
  }
  if (d.cancelAsked && status === 'cancelled') {
    // Its cancel was asked before a shutdown handed it back: the end written, and reported,
    // is the cancel's (the store would end it cancelled on the release, and nobody say so).
    if (codeOf(value) !== 'ERR_EXECUTION_CANCELLED') value = cancelledError(d.extId, rec.agent);
  } else if (d.release || (durable.releaseRunning && status === 'cancelled')) {
    writeOnceSlotFree(durable, rec, () => {
      durable.runs.delete(d.rowId);
      durable.link.release(d.rowId, d.attempt);
    });
    return;
  }
  let code;
  let json;
  let retryable = false;
  if (status === 'completed') {
    try {
      json = resultJson(value);
      code = STATUS_COMPLETED;
    } catch (err) {
      value = err;
      json = errorJson(err);
      code = STATUS_FAILED;
    }
  } else {
    code = status === 'cancelled' ? STATUS_CANCELLED : STATUS_FAILED;
    json = errorJson(value);
    // retryIf (the default declines the hopeless errors) is asked, as in memory, only before
    // a retry the stored policy allows.
    retryable = code === STATUS_FAILED && d.attempt < d.maxAttempts && !NOT_RETRYABLE.has(codeOf(value)) && !durable.ex._declinesRetry(rec, value, d.attempt);
  }
  d.value = value;
  const write = () => {
    durable.link.finish(d.rowId, d.attempt, code, retryable, json, rec);
    durable.link.wantClaim();
  };
  if (retryable) writeOnceSlotFree(durable, rec, write);
  else write();
}

/**
 * Writes an ended attempt's hand-back or retryable end once its slot is free: while its
 * agent, which ignored its timeout or cancel, still holds it (until it settles or its grace
 * period ends), the row stays running here, so no other attempt of the execution starts
 * beside it, in this process or another. A forced shutdown writes at once.
 * @param {Durable} durable
 */
function writeOnceSlotFree(durable, rec, write) {
  const d = rec.x.durable;
  const held = () => {
    // The store's thread stopped meanwhile: nothing can be written (its lease runs out).
    if (durable.link.dead || durable.closed) durable.runs.delete(d.rowId);
    else write();
  };
  if (!durable.forcedOut && d.agentBusy && durable.ex._native.holdsSlot(rec.id)) d.held = held;
  else write();
}

/** The slot of `rec`'s ended attempt is free (its agent settled, or its grace period ended). */
function slotReleased(rec) {
  const d = rec.x.durable;
  const write = d.held;
  if (write === null) return;
  d.held = null;
  write();
}

/** The agent of `rec`'s attempt settled. */
function agentSettled(rec) {
  rec.x.durable.agentBusy = false;
  slotReleased(rec);
}

/**
 * A forced shutdown frees every slot: the writes held for agents go out now, and later ends
 * are written at once.
 * @param {Durable} durable
 */
function releaseHeld(durable) {
  durable.forcedOut = true;
  for (const rec of [...durable.runs.values()]) slotReleased(rec);
}

/**
 * The store's answer to an attempt's end (`code`: the STATUS_* it was finished with).
 * @param {Durable} durable
 */
function finishAnswered(durable, rec, code, answer) {
  const ex = durable.ex;
  const d = rec.x.durable;
  if (durable.runs.get(d.rowId) === rec) durable.runs.delete(d.rowId);
  if (answer === P.FINISH_STALE) {
    // Rescued while it ran (its lease expired): another attempt owns the execution now.
    durable.stats.staleResults++;
    ex._emit('execution-stale', { executionId: d.extId, agent: rec.agent, attempt: d.attempt });
    return;
  }
  if (answer >= 0) {
    ex._emit('execution-retry', {
      executionId: d.extId,
      agent: rec.agent,
      task: rec.task,
      attempt: d.attempt,
      error: messageOf(d.value),
      errorObject: d.value,
      delayMs: answer,
    });
    return;
  }
  if (answer === P.FINISH_CANCELLED) {
    // A cancel was asked while it ran (from another process, not heard here in time): the
    // execution ended cancelled, and the attempt's own outcome is discarded, in the counts too.
    if (code !== STATUS_CANCELLED && rec.id > 0) ex._native.overruleCancelled(rec.id);
    code = STATUS_CANCELLED;
    d.value = cancelledError(d.extId, rec.agent);
  }
  const status = code === STATUS_COMPLETED ? 'completed' : code === STATUS_FAILED ? 'failed' : 'cancelled';
  const event = status === 'completed' ? 'execution-completed' : status === 'failed' ? 'execution-failed' : 'execution-cancelled';
  if (ex._eventsCount !== 0 && ex._events[event] !== undefined) {
    const duration = Date.now() - d.startedAt;
    const base = { executionId: d.extId, agent: rec.agent, task: rec.task, mode: MODE_NAMES[rec.mode] };
    if (status === 'completed') ex._emit(event, { ...base, result: d.value, duration });
    else ex._emit(event, { ...base, error: messageOf(d.value), errorObject: d.value, code: codeOf(d.value), duration });
  }
  // A watched execution's progress-update comes once more at its end, as in memory.
  if (rec.mode === MODE_WATCHED && ex._eventsCount !== 0 && ex._events['progress-update'] !== undefined) {
    ex._dirty.delete(rec);
    ex._emit('progress-update', {
      executionId: d.extId,
      agent: rec.agent,
      progress: status === 'completed' ? 100 : d.progress,
      status,
      duration: Date.now() - d.startedAt,
      detail: rec.x.detail,
    });
  }
  durable._settle(d.rowId, status, d.value, rec);
}

/**
 * Stores a running attempt's progress, at most once per `progressIntervalMs`: a report
 * inside the interval is written when it ends (the latest one), unless the attempt has
 * ended by then.
 * @param {Durable} durable
 */
function progress(durable, rec, percent) {
  const d = rec.x.durable;
  if (!d.running) return;
  d.progress = percent;
  const now = Date.now();
  const interval = durable.ex.config.progressIntervalMs;
  if (now - d.progressAt >= interval) {
    d.progressAt = now;
    d.progressLater = -1;
    durable.link.progress(d.rowId, d.attempt, percent);
    return;
  }
  const pending = d.progressLater >= 0;
  d.progressLater = percent;
  if (pending) return;
  const attempt = d.attempt;
  setTimeout(() => {
    if (!d.running || d.attempt !== attempt || d.progressLater < 0) return;
    d.progressAt = Date.now();
    durable.link.progress(d.rowId, attempt, d.progressLater);
    d.progressLater = -1;
  }, interval - (now - d.progressAt)).unref();
}

module.exports = { DurableRun, MAX_CLAIM, slotFreed, freeSlots, claimed, notTaken, attemptEnded, agentSettled, slotReleased, releaseHeld, finishAnswered, progress };

'use strict';

// Durable executions: with a `store`, a submission is a row in the store before it is
// acknowledged, and any executor on the store runs it.
//
//   submit ─group commit─> row (queued) ─claim (any executor)─> a local execution in the core
//      agent settles ─> _attemptEnded ─group commit─> finish (compare-and-set) ─> outcome
//
// The submitting process keeps a handle (the submission's record) per execution: its
// promise, callback, signal and async context. When this process claims the execution, the
// handle itself runs it, so the agent sees the caller's own options object and
// `execute()` resolves with the agent's own value; when another process runs it, the end is
// read from the store and the handle settles with the stored (JSON) value.

const { StoreLink, storeError } = require('./store-link.js');
const { Outcomes } = require('./outcomes.js');
const { toJson, resultJson } = require('./json.js');
const { durableId, parseDurableId, errorJson, rowStatus } = require('./values.js');
const { Execution, extras } = require('../record.js');
const { canRun, runsAnyAgent } = require('../agents.js');
const { heldAgents } = require('../limits.js');
const { coded, describe, typeError, messageOf, codeOf, closedError, cancelledError, shutdownError } = require('../errors.js');
const { follow } = require('../signals.js');
const P = require('../protocol.js');

const { MODE_EXECUTE, MODE_NAMES, STATUS_NAMES, OP_SUBMIT, SUBMIT_KEY_SHIFT, NOT_FOUND } = P;
const { STATUS_QUEUED, STATUS_RUNNING, STATUS_COMPLETED, STATUS_FAILED, STATUS_CANCELLED } = P;

/** Errors no retry can fix. */
const NOT_RETRYABLE = new Set(['ERR_AGENT_NOT_FOUND', 'ERR_COMMAND_SPAWN', 'ERR_COMMAND_SPEC', 'ERR_NOT_SERIALIZABLE', 'ERR_STORE']);
/** Options that only mean something in the submitting process: not stored. */
const LOCAL_OPTIONS = new Set(['signal', 'onProgress', 'retryIf']);
/** A claimed attempt runs once in the core: the store decides about retries. */
const NO_LOCAL_RETRY = Object.freeze({ retries: 0, retryDelayMs: 0, backoff: 'fixed' });
/** Failed batches in a row for a busy database before its submissions are refused. */
const BUSY_RETRIES = 5;
/** Claims per batch at most. */
const MAX_CLAIM = 512;
/**
 * A batch claims at most this fraction of the slots: while the store commits one batch,
 * this thread runs the executions of the other, instead of the two threads taking turns.
 */
const CLAIM_PARTS = 2;

/** The durable side of one execution (`rec.x.durable`). */
class DurableRun {
  constructor() {
    this.rowId = 0; // 0 until its row is committed
    this.extId = '';
    this.attempt = 0; // the store's attempt number of the attempt running here
    this.running = false;
    this.release = false; // hand the attempt back uncounted (shutdown)
    this.value = undefined; // the attempt's own result or error
    this.startedAt = 0;
    this.progressAt = 0; // when progress was last stored
    this.progressLater = -1; // a report to store when the interval ends (-1: none)
  }
}

/** The options stored with a submission: JSON text (null for none), else ERR_NOT_SERIALIZABLE. */
function storedOptions(options) {
  if (options === undefined || options === null) return null;
  const copy = {};
  for (const key of Object.keys(options)) if (!LOCAL_OPTIONS.has(key)) copy[key] = options[key];
  return toJson(copy, 'options');
}

class Durable extends Outcomes {
  /** `ex` is the executor; `store` its parsed `store` config (see config.js). */
  constructor(ex, store) {
    super(ex);
    this.config = store;
    this.stats = { claimed: 0, staleResults: 0, rescued: 0, storeErrors: 0, busy: 0 };
    this.claimChunk = MAX_CLAIM; // set by _freeSlots
    this.claimExclude = []; // agents at their limits here, set by _freeSlots
    this.insertSeq = 0; // numbers submissions: a batch sent again is recognised by them
    this.limitWrites = []; // globalConcurrency writes not answered yet
    this.owner = null;
    this.openError = null;
    this.worker = false; // initialize() was called: wait for work from other processes
    this.closing = false;
    this.releaseRunning = false;
    this.keptAlive = false;
    this.interestQueued = false;
    this.sendInterest = () => {
      this.interestQueued = false;
      this._sendInterest();
    };
    this.opened = new Promise((resolve, reject) => {
      this.openResolve = resolve;
      this.openReject = reject;
    });
    this.opened.catch(() => {}); // read by initialize() and by each submission
    this.link = new StoreLink(
      {
        path: store.path,
        postgresUrl: store.postgres === null ? undefined : store.postgres,
        synchronousFull: store.synchronous === 'full',
        leaseMs: store.leaseMs,
        pollMs: store.pollMs,
        ttlMs: store.resultTtlMs,
        maxKept: store.maxRetainedResults,
      },
      this,
    );
  }

  // ----- submission ------------------------------------------------------------------

  /** A durable submission: validated, its options stored as JSON, queued for the next commit. */
  submit(mode, agent, task, options) {
    const ex = this.ex;
    const rules = ex._rules;
    const rec = rules.record(mode, agent, task, options);
    const priority = rules.priority;
    const timeoutMs = rules.timeoutMs;
    if (ex._closing) throw closedError();
    if (this.openError !== null) throw this.openError;
    let key = null;
    if (options !== undefined && options !== null) {
      const k = options.key;
      if (k !== undefined && k !== null) {
        if (typeof k !== 'string' || k === '' || k.length > 1024) {
          throw typeError(`options.key must be a non-empty string of at most 1024 characters, got ${describe(k)}`);
        }
        key = k;
      }
    }
    const stored = storedOptions(options);
    const x = extras(rec);
    const policy = x.retry !== null ? x.retry : ex.config;
    x.retry = null;
    x.durable = new DurableRun();
    this.link.insert(
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
        seq: ++this.insertSeq,
      },
      rec,
    );
    if (canRun(ex, agent)) this.link.wantClaim();
    ex._markBusy();
    return rec;
  }

  /** A committed submission: its id, its handle, its events and its caller's answer. */
  _inserted(rec, rowId, existing) {
    const ex = this.ex;
    const d = rec.x.durable;
    d.rowId = rowId;
    d.extId = durableId(rowId);
    let list = this.handles.get(rowId);
    if (list === undefined) {
      list = [];
      this.handles.set(rowId, list);
      // A new row is watched by the store's thread from its commit; an earlier execution
      // with the key may have ended already: look it up.
      if (existing) this.toCheck.push(rowId);
    }
    list.push(rec);
    if (rec.mode === MODE_EXECUTE || rec.callback !== null) this.awaiting++;
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
      if (x.userSignal.aborted) this._userAborted(rec, x.userSignal.reason);
      else follow(x.userSignal, ex, rec);
    }
    if (x.admitted !== null) {
      const admitted = x.admitted;
      x.admitted = null;
      x.refused = null;
      admitted({ executionId: d.extId, mode: MODE_NAMES[rec.mode], status: 'queued' });
    }
  }

  /** The commit failed: the submission is refused with the store's error. */
  _refused(rec, err) {
    const x = rec.x;
    rec.done = true;
    if (x.userSignal !== null) x.userSignal = null;
    if (x.refused !== null) {
      const refused = x.refused;
      x.admitted = null;
      x.refused = null;
      refused(err);
    } else if (rec.mode === MODE_EXECUTE) rec.reject(err);
  }

  // ----- running -----------------------------------------------------------------------

  /** A local slot freed with nothing local queued: claim if work may be waiting. */
  slotFreed() {
    if (this.link.claimWanted) this.link.schedule();
  }

  /** Slots this executor can fill with claimed executions now. */
  _freeSlots() {
    if (this.closing || this.owner === null) return 0;
    const ex = this.ex;
    ex._flush();
    const c = ex._native.counts();
    if (c.paused || c.closed) return 0;
    const max = c.throttled ? Math.min(c.maxConcurrent, ex.config.minConcurrentAgents) : c.maxConcurrent;
    this.claimChunk = Math.min(MAX_CLAIM, Math.ceil(max / CLAIM_PARTS));
    const held = heldAgents(ex);
    this.claimExclude = held.agents;
    return Math.max(0, max - c.slotsUsed - (c.queued - held.queued));
  }

  /** A claimed execution becomes a local one: its handle when submitted here, else a new record. */
  _claimed(row) {
    const ex = this.ex;
    const rowId = row.id;
    if (this.closing || ex._closing || !canRun(ex, row.agent)) {
      // Claimed as shutdown began, or its agent was unregistered meanwhile: back, uncounted.
      this.link.release(rowId, row.attempt);
      return;
    }
    const list = this.handles.get(rowId);
    let rec = list !== undefined ? list[0] : null;
    if (rec !== null && rec.x.durable.running) rec = null; // a stale attempt still holds it
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
    } else {
      rec.rearm();
    }
    const x = rec.x;
    const d = x.durable;
    d.attempt = row.attempt;
    d.running = true;
    d.release = false;
    d.value = undefined;
    d.startedAt = Date.now();
    x.timeoutMs = row.timeoutMs;
    x.retry = NO_LOCAL_RETRY;
    this.runs.set(rowId, rec);
    this.stats.claimed++;
    if (unreadable !== null) {
      // Never started: it fails at once (not retried: the same row would fail again).
      this._attemptEnded(rec, 'failed', unreadable);
      return;
    }
    let key = ex._agentKeys.get(row.agent);
    if (key === undefined) key = ex._internAgent(row.agent);
    ex._push(rec, OP_SUBMIT, row.mode + (key << SUBMIT_KEY_SHIFT), row.priority, row.timeoutMs);
    ex._markBusy();
  }

  /** The core refused a claimed execution (its queue is full): back to the store, uncounted. */
  _notTaken(rec) {
    const d = rec.x.durable;
    d.running = false;
    rec.done = true;
    if (this.runs.get(d.rowId) === rec) this.runs.delete(d.rowId);
    this.link.release(d.rowId, d.attempt);
  }

  /** A local attempt of a durable execution ended (`status` as the lifecycle names it). */
  _attemptEnded(rec, status, value) {
    const d = rec.x.durable;
    rec.done = true;
    rec.value = value;
    if (!d.running) return;
    d.running = false;
    if (d.release || (this.releaseRunning && status === 'cancelled')) {
      this.runs.delete(d.rowId);
      this.link.release(d.rowId, d.attempt);
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
      retryable = code === STATUS_FAILED && !NOT_RETRYABLE.has(codeOf(value)) && !this.ex._declinesRetry(rec, value, d.attempt);
    }
    d.value = value;
    this.link.finish(d.rowId, d.attempt, code, retryable, json, rec);
    this.link.wantClaim();
  }

  /** The store's answer to an attempt's end (`code`: the STATUS_* it was finished with). */
  _finishAnswered(rec, code, answer) {
    const ex = this.ex;
    const d = rec.x.durable;
    if (this.runs.get(d.rowId) === rec) this.runs.delete(d.rowId);
    if (answer === P.FINISH_STALE) {
      // Rescued while it ran (its lease expired): another attempt owns the execution now.
      this.stats.staleResults++;
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
    const status = code === STATUS_COMPLETED ? 'completed' : code === STATUS_FAILED ? 'failed' : 'cancelled';
    const event = status === 'completed' ? 'execution-completed' : status === 'failed' ? 'execution-failed' : 'execution-cancelled';
    if (ex._eventsCount !== 0 && ex._events[event] !== undefined) {
      const duration = Date.now() - d.startedAt;
      const base = { executionId: d.extId, agent: rec.agent, task: rec.task, mode: MODE_NAMES[rec.mode] };
      if (status === 'completed') ex._emit(event, { ...base, result: d.value, duration });
      else ex._emit(event, { ...base, error: messageOf(d.value), errorObject: d.value, code: codeOf(d.value), duration });
    }
    this._settle(d.rowId, status, d.value, rec);
  }

  // ----- cancellation --------------------------------------------------------------------

  /** `cancelExecution` of a durable id, from any process. */
  cancel(executionId) {
    const rowId = parseDurableId(executionId);
    const known = this.runs.get(rowId) || (this.handles.get(rowId) || [])[0];
    const err = cancelledError(executionId, known !== undefined ? known.agent : 'unknown');
    return this.link.cancel(rowId, errorJson(err)).then((ev) => {
      const was = ev.codes[0];
      if (was === NOT_FOUND) return { success: false, error: 'Execution not found' };
      if (was === STATUS_QUEUED) {
        // Ended by this cancel: no executor will report it.
        this.ex._emit('execution-cancelled', {
          executionId,
          agent: err.agent,
          task: known !== undefined ? known.task : undefined,
          mode: known !== undefined ? MODE_NAMES[known.mode] : undefined,
          error: err.message,
          errorObject: err,
          code: err.code,
          duration: 0,
        });
        this._settle(rowId, 'cancelled', err, { ...this._fallbackStatus(rowId, executionId, err), status: 'cancelled' });
        return { success: true, executionId, previousStatus: 'queued' };
      }
      if (was === STATUS_RUNNING) return { success: true, executionId, previousStatus: 'running' };
      return { success: false, error: `Cannot cancel execution in ${STATUS_NAMES[was]} status` };
    });
  }

  /** The submitter's own signal aborted. */
  _userAborted(rec, reason) {
    const d = rec.x.durable;
    // Between attempts (a retry waits) the record is done but the execution is not.
    if (d.rowId === 0 || !this.handles.has(d.rowId)) return;
    this.cancel(d.extId).catch((err) => this._backgroundError(err));
  }

  // ----- progress --------------------------------------------------------------------------

  /**
   * Stores a running attempt's progress, at most once per `progressIntervalMs`: a report
   * inside the interval is written when it ends (the latest one), unless the attempt has
   * ended by then.
   */
  progress(rec, percent) {
    const d = rec.x.durable;
    if (!d.running) return;
    const now = Date.now();
    const interval = this.ex.config.progressIntervalMs;
    if (now - d.progressAt >= interval) {
      d.progressAt = now;
      d.progressLater = -1;
      this.link.progress(d.rowId, d.attempt, percent);
      return;
    }
    const pending = d.progressLater >= 0;
    d.progressLater = percent;
    if (pending) return;
    const attempt = d.attempt;
    setTimeout(() => {
      if (!d.running || d.attempt !== attempt || d.progressLater < 0) return;
      d.progressAt = Date.now();
      this.link.progress(d.rowId, attempt, d.progressLater);
      d.progressLater = -1;
    }, interval - (now - d.progressAt)).unref();
  }

  // ----- queries -------------------------------------------------------------------------

  fetch(executionId) {
    const rowId = parseDurableId(executionId);
    return this.link.fetch(rowId).then((ev) => (ev.rows.length === 0 ? { found: false } : rowStatus(ev.rows[0])));
  }

  /**
   * Stores the most executions of `agent` running at once on every executor (null: none).
   * Sent at once: the store's thread writes it before any claim this executor sends after
   * (and, once open, before anything else); initialize() resolves after it. A failure is
   * reported as `store-error`.
   */
  setGlobalLimit(agent, limit) {
    const written = this.link.globalLimit(agent, limit === null ? 0 : limit).then(
      () => {},
      (err) => {
        if (this.openError === null) this._backgroundError(err); // else initialize() reports it
      },
    );
    this.limitWrites.push(written);
    written.then(() => {
      const i = this.limitWrites.indexOf(written);
      if (i >= 0) this.limitWrites.splice(i, 1);
    });
  }

  // ----- the store's events ------------------------------------------------------------

  /** Every answer and notice of the store's thread. */
  _onStoreEvent(ev) {
    switch (ev.kind) {
      case P.STORE_OPENED:
        this.owner = ev.text;
        this.openResolve();
        this._sendInterest();
        break;
      case P.STORE_FAILED:
        if (ev.req === 0) {
          this.openError = storeError(ev.errorCode, ev.text);
          this.openReject(this.openError);
        } else if (this.link.isBatch(ev.req)) this.link.batchAnswered(ev);
        else this.link.answer(ev);
        break;
      case P.STORE_BATCH:
        this.link.batchAnswered(ev);
        break;
      case P.STORE_CHANGED:
        this.link.wantClaim();
        break;
      case P.STORE_CANCEL_REQUESTED:
        this._cancelRequested(ev.ids);
        break;
      case P.STORE_ENDED:
        for (const row of ev.rows) this._endedRow(row);
        for (const id of ev.ids) this._gone(id);
        break;
      case P.STORE_RESCUED:
        this._rescued(ev.ids, ev.names);
        break;
      case P.STORE_LINK:
        this.ex._emit(ev.codes[0] === 1 ? 'store-reconnected' : 'store-disconnected', { store: ev.text });
        break;
      case P.STORE_BACKGROUND_ERROR:
        // A heartbeat, rescue or retention that found the database busy runs again on its
        // own at its next period: counted, not reported.
        if (ev.errorCode === 'ERR_STORE_BUSY') this.stats.busy++;
        else if (ev.errorCode !== 'ERR_STORE_DISCONNECTED') this._backgroundError(storeError(ev.errorCode, ev.text));
        break;
      default:
        this.link.answer(ev);
    }
    this._flushWatches();
    this._updateKeepAlive();
    if (this.idle()) this.ex._checkIdle();
  }

  /** A batch came back: answers for its submissions and attempt ends, and the claimed rows. */
  _batchDone(sent, ev) {
    if (ev.kind === P.STORE_FAILED) {
      const err = storeError(ev.errorCode, ev.text);
      // Another process held the lock too long: everything goes again as it was (submissions
      // are still unacknowledged), unless it keeps happening.
      // A lost connection to a server: the same, for as long as it takes (store-disconnected
      // tells users; the store thread gets the connection back by itself).
      const lost = ev.errorCode === 'ERR_STORE_DISCONNECTED';
      const transient = lost || (ev.errorCode === 'ERR_STORE_BUSY' && this.link.failures < BUSY_RETRIES);
      for (let i = 0; i < sent.insertRecs.length; i++) {
        if (transient) this.link.insert(sent.inserts[i], sent.insertRecs[i]);
        else this._refused(sent.insertRecs[i], err);
      }
      // A lost connection is reported by store-disconnected.
      if (transient && !lost) this.stats.busy++;
      else if (!transient) this._backgroundError(err);
      // Attempt ends and releases are never lost: they go again with the next batch (which
      // close() waits for), and so does the claim.
      for (let i = 0; i < sent.finishRecs.length; i++) {
        const f = sent.finishes;
        this.link.finish(f[i * 4], f[i * 4 + 1], f[i * 4 + 2], f[i * 4 + 3] === 1, sent.finishValues[i], sent.finishRecs[i]);
      }
      for (let i = 0; i < sent.releases.length; i += 2) this.link.release(sent.releases[i], sent.releases[i + 1]);
      if (sent.claim > 0) this.link.claimWanted = true;
      return;
    }
    const recs = sent.insertRecs;
    for (let i = 0; i < recs.length; i++) {
      const id = ev.ids[i];
      this._inserted(recs[i], id < 0 ? -id : id, id < 0);
    }
    for (let i = 0; i < sent.finishRecs.length; i++) this._finishAnswered(sent.finishRecs[i], sent.finishes[i * 4 + 2], ev.codes[i]);
    const claimed = ev.claimed;
    for (let i = 0; i < claimed.length; i++) this._claimed(claimed[i]);
    // A full claim: more may be waiting for the next free slot.
    if (sent.claim > 0 && claimed.length >= sent.claim) this.link.claimWanted = true;
    if (claimed.length > 0) this.ex._flush();
  }

  /** Closing on a failing store: what could not be written is given up, visibly. */
  _gaveUp(pending) {
    const n = pending.finishRecs.length + pending.releases.length / 2;
    if (n > 0) {
      const err = coded(Error, 'ERR_STORE', `The store kept failing while closing: ${n} attempt end(s) not written; the store's rescue will run them again`);
      this._backgroundError(err);
    }
  }

  _cancelRequested(ids) {
    const ex = this.ex;
    for (let i = 0; i + 1 < ids.length; i += 2) {
      const rec = this.runs.get(ids[i]);
      if (rec === undefined || rec.done) continue;
      const d = rec.x.durable;
      if (!d.running || d.attempt !== ids[i + 1]) continue;
      ex._cancelRec(rec, cancelledError(d.extId, rec.agent));
    }
  }

  _rescued(ids, names) {
    for (let i = 0, j = 0; i + 2 < ids.length; i += 3, j += 2) {
      const rowId = ids[i];
      const status = ids[i + 2];
      this.stats.rescued++;
      this.ex._emit('execution-rescued', {
        executionId: durableId(rowId),
        agent: names[j],
        attempt: ids[i + 1],
        owner: names[j + 1],
        status: STATUS_NAMES[status],
      });
      if (status !== STATUS_QUEUED && (this.handles.has(rowId) || this.waiters.has(rowId))) {
        // Ended by this executor's own rescue: no change of another connection reports it.
        this.link
          .fetch(rowId)
          .then((ev) => {
            if (ev.rows.length > 0) this._endedRow(ev.rows[0]);
          })
          .catch((err) => this._backgroundError(err));
      }
    }
  }

  _backgroundError(error) {
    this.stats.storeErrors++;
    this.ex._emit('store-error', { error, code: error.code, message: error.message });
  }

  // ----- interest, watches, keep-alive, idleness ---------------------------------------

  /** The agents this executor runs changed: claim for the new set. */
  interestChanged() {
    if (!this.interestQueued) {
      this.interestQueued = true;
      queueMicrotask(this.sendInterest);
    }
  }

  _sendInterest() {
    if (this.owner === null || this.closed) return;
    const ex = this.ex;
    if (this.closing) {
      this.link.native.interest(false, []);
      return;
    }
    const any = runsAnyAgent(ex);
    this.link.native.interest(any, any ? [] : [...ex._agents.keys()]);
  }

  /** A request was sent. */
  _storeBusy() {
    this.ex._markBusy();
    this._updateKeepAlive();
  }

  /** Node.js stays alive while an answer or an outcome is awaited, or while a worker waits for work. */
  _updateKeepAlive() {
    if (this.closed) return;
    const on = this.link.busy || this.awaiting > 0 || this.waiters.size > 0 || this.runs.size > 0 || (this.worker && !this.closing);
    if (on !== this.keptAlive) {
      this.keptAlive = on;
      this.link.native.keepAlive(on);
    }
  }

  /** Nothing in flight, running here, or awaited. */
  idle() {
    // Once shutting down, outcomes awaited from elsewhere no longer hold it: close() settles them.
    return !this.link.busy && this.runs.size === 0 && (this.closing || (this.awaiting === 0 && this.waiters.size === 0));
  }

  // ----- shutdown ------------------------------------------------------------------------

  /** Shutdown began: claim nothing more; in `cancel` mode running attempts go back to the queue. */
  beginShutdown(mode) {
    this.closing = true;
    this._sendInterest();
    if (mode === 'cancel') {
      this.releaseRunning = true;
      for (const rec of [...this.runs.values()]) {
        if (rec.done || !rec.x.durable.running) continue;
        rec.x.durable.release = true;
        this.ex._cancelRec(rec, shutdownError(rec.x.durable.extId, rec.agent));
      }
    }
    this._updateKeepAlive();
  }

  /** The shutdown deadline passed: what still runs goes back to the queue. */
  forced() {
    this.releaseRunning = true;
  }

  /**
   * The executor is done: callers still waiting for an outcome get `ERR_EXECUTOR_SHUT_DOWN`
   * (their executions stay in the store), pending writes are committed, the store closed.
   */
  close() {
    if (this.closePromise !== undefined) return this.closePromise;
    this.closing = true;
    for (const [rowId, list] of [...this.handles]) {
      const err = coded(
        Error,
        'ERR_EXECUTOR_SHUT_DOWN',
        `The executor shut down before execution ${durableId(rowId)} ended; it stays in the store (fetchExecutionStatus reads its outcome later)`,
        { executionId: durableId(rowId) },
      );
      this.handles.delete(rowId);
      for (const rec of list) if (rec.mode === MODE_EXECUTE || rec.callback !== null) this._settleHandle(rec, 'failed', err);
    }
    for (const [rowId, list] of [...this.waiters]) {
      this.waiters.delete(rowId);
      for (const w of list) w({ found: false });
    }
    this._flushWatches();
    this.closePromise = this.opened
      .then(
        () => this.link.close(),
        () => this.link.close(),
      )
      .catch((err) => this._backgroundError(err))
      .finally(() => {
        this.closed = true;
        if (this.keptAlive) this.link.native.keepAlive(false);
        this.keptAlive = false;
      });
    return this.closePromise;
  }

  /** `PRAGMA integrity_check` of the store: "ok" when sound. */
  integrityCheck() {
    return this.link.check().then((ev) => ev.text);
  }
}

module.exports = { Durable, DurableRun, parseDurableId };

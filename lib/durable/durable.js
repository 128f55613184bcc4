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
//
// This file builds the durable layer (`ex._store`): its state, and the methods the executor,
// the store link and the parts below call. The work is done in one file per job, as plain
// functions that take this object as their first argument when they need it:
//
//   submissions.js   submit, and the commit's answer: acknowledged or refused
//   runs.js          claims, claimed rows run in the core, attempt ends and their answers, progress
//   cancels.js       cancelExecution of a stored id, the submitter's signal, cancels from the store
//   store-events.js  every answer and notice of the store's thread, routed to the above
//   shutdown.js      this layer's side of shutdown, and closing the store
//
// Under it: outcomes.js (the base class: settling handles and waiters once executions end),
// store-link.js (the batching link to the store's thread), values.js and json.js.

const { StoreLink, storeError } = require('./store-link.js');
const { Outcomes } = require('./outcomes.js');
const { parseDurableId, rowStatus, rowsOf } = require('./values.js');
const submissions = require('./submissions.js');
const runs = require('./runs.js');
const cancels = require('./cancels.js');
const storeEvents = require('./store-events.js');
const shutdown = require('./shutdown.js');
const { runsAnyAgent } = require('../agents.js');
const { storableName } = require('./json.js');

const { MAX_CLAIM } = runs;

class Durable extends Outcomes {
  /** `ex` is the executor; `store` its parsed `store` config (see config.js). */
  constructor(ex, store) {
    super(ex);
    this.config = store;
    this.endedTtlMs = store.resultTtlMs;
    this.stats = { claimed: 0, staleResults: 0, rescued: 0, storeErrors: 0, busy: 0 };
    this.claimChunk = MAX_CLAIM; // set by _freeSlots
    this.claimExclude = []; // agents at their limits here, set by _freeSlots
    this.insertSeq = 0; // numbers submissions: a batch sent again is recognised by them
    this.limitWrites = []; // globalConcurrency writes not answered yet
    this.owner = null;
    this.openError = null;
    this.worker = false; // initialize() was called: wait for work from other processes
    this.claims = false; // the store was told of agents to claim executions of
    this.closing = false;
    this.releaseRunning = false;
    this.forcedOut = false; // a forced shutdown began: ends are written at once, none held
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

  // ----- submission (submissions.js) -------------------------------------------------

  submit(mode, agent, task, options) {
    return submissions.submit(this, mode, agent, task, options);
  }

  // ----- running (runs.js) -------------------------------------------------------------

  slotFreed() {
    runs.slotFreed(this);
  }

  _freeSlots() {
    return runs.freeSlots(this);
  }

  _notTaken(rec) {
    runs.notTaken(this, rec);
  }

  _attemptEnded(rec, status, value) {
    runs.attemptEnded(this, rec, status, value);
  }

  /** The agent of `rec`'s attempt settled. */
  _agentSettled(rec) {
    runs.agentSettled(rec);
  }

  /** The grace period of `rec`'s ended attempt freed its slot. */
  _slotReleased(rec) {
    runs.slotReleased(rec);
  }

  /** A progress report of an attempt running here: stored, and told to this process's watch() iterators. */
  progress(rec, percent, detail) {
    runs.progress(this, rec, percent);
    const d = rec.x.durable;
    const watching = this.watching.get(d.rowId);
    if (watching !== undefined) {
      for (const it of watching) it.push({ executionId: d.extId, agent: rec.agent, progress: percent, status: 'running', detail });
    }
  }

  // ----- cancellation (cancels.js) -----------------------------------------------------

  cancel(executionId) {
    return cancels.cancel(this, executionId);
  }

  _userAborted(rec, reason) {
    cancels.userAborted(this, rec, reason);
  }

  // ----- the store's events (store-events.js) ------------------------------------------

  _onStoreEvent(ev) {
    ev.rows = rowsOf(ev);
    storeEvents.onStoreEvent(this, ev);
  }

  _batchDone(sent, ev) {
    storeEvents.batchDone(this, sent, ev);
  }

  _gaveUp(pending, why) {
    storeEvents.gaveUp(this, pending, why);
  }

  /**
   * The link let go of everything (its thread stopped): callers waiting for outcomes are
   * answered, later submissions refused, and keep-alive and idleness looked at again.
   */
  _linkSettled(text) {
    if (this.openError === null) this.openError = storeError('ERR_STORE', text);
    shutdown.storeStopped(this, text);
    this._updateKeepAlive();
    if (this.idle()) this.ex._checkIdle();
  }

  // ----- shutdown (shutdown.js) --------------------------------------------------------

  beginShutdown(mode) {
    shutdown.beginShutdown(this, mode);
  }

  forced() {
    shutdown.forced(this);
    runs.releaseHeld(this);
  }

  close() {
    return shutdown.close(this);
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

  /** `PRAGMA integrity_check` of the store: "ok" when sound. */
  integrityCheck() {
    return this.link.check().then((ev) => ev.text);
  }

  // ----- interest, keep-alive, idleness ------------------------------------------------

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
      this.claims = false;
      this.link.native.interest(false, []);
      return;
    }
    const any = runsAnyAgent(ex);
    // A name no store can hold (NUL, too long) has no stored executions to claim.
    const agents = any ? [] : [...ex._agents.keys()].filter(storableName);
    this.claims = any || agents.length > 0;
    this.link.native.interest(any, agents);
  }

  /** A request was sent. */
  _storeBusy() {
    this.ex._markBusy();
    this._updateKeepAlive();
  }

  /**
   * Node.js stays alive while an answer or an outcome is awaited, while a worker waits for
   * work, and while the store closes (shutdown() resolves once it is closed).
   */
  _updateKeepAlive() {
    if (this.closed) return;
    const on =
      this.link.busy || this.awaiting > 0 || this.waiters.size > 0 || this.runs.size > 0 || (this.worker && !this.closing) || this.closePromise !== undefined;
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

  // ----- errors no caller waits for ------------------------------------------------------

  /** Counted in `stats.storeErrors` and reported as `store-error`. */
  _backgroundError(error) {
    this.stats.storeErrors++;
    this.ex._emit('store-error', { error, code: error.code, message: error.message });
  }
}

module.exports = { Durable, parseDurableId };

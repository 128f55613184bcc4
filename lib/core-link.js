'use strict';

// The link to the Rust core: the batch protocol and the order in which its answers reach
// user code.
//
// A submission or an agent settling is written as OP_WIDTH numbers into a Float64Array, and
// the batch goes to the core in one call (`sync`) at the end of the current microtask run, or
// at once when the caller needs an answer (queries, cancel, pause...). A napi call costs more
// than the scheduling work it carries, so one call per batch keeps an execution's cost near
// that of a plain JS semaphore.
//
// Answers are handled in two phases. Phase 1 (`_admit`) gives every submission of the batch
// its id and stores its record, and runs no user code. Phase 2 delivers the answers (events,
// callbacks, agent calls) through one queue, in the order the core gave them: user code run
// by a delivery may sync the next batch or start executions, and those answers wait behind
// the rest of this batch, so no execution is started or ended before its submission has been
// answered.

const { EventEmitter } = require('node:events');
const { binding, weakCallback } = require('./native.js');
const { emitSafely } = require('./events.js');
const { RecordTable } = require('./record.js');
const {
  OP_WIDTH,
  BATCH_CAPACITY,
  OP_SUBMIT,
  OP_SETTLE_OK,
  SYNC_IDLE,
  SYNC_EVICTED_STEP,
  EVICT_CAPACITY,
  BACKOFF_FIXED,
  BACKOFF_EXPONENTIAL,
} = require('./protocol.js');

const backoffCode = (name) => (name === 'fixed' ? BACKOFF_FIXED : BACKOFF_EXPONENTIAL);

/** Operations waiting for the next `sync`, then its answers, plus the record each concerns. */
class Batch {
  constructor() {
    this.io = new Float64Array(BATCH_CAPACITY * OP_WIDTH);
    this.recs = new Array(BATCH_CAPACITY).fill(null);
    this.n = 0; // operations written
    this.answered = 0; // operations the core has answered, to deliver
    this.idle = false; // nothing was queued or running after the sync
  }
}

// While work is queued or running, this set holds the executor: the native side only holds
// it weakly (timer callbacks go through a WeakRef), and pending work must never be collected.
const BUSY = new Set();

class CoreLink extends EventEmitter {
  /** `config` is the validated config (see config.js). */
  constructor(config) {
    super();
    this._native = new binding.NativeExecutor(
      {
        maxConcurrent: config.maxConcurrentAgents,
        minConcurrent: config.minConcurrentAgents,
        resultTtlMs: config.resultTtlMs,
        maxRetained: config.maxRetainedResults,
        progressIntervalMs: config.progressIntervalMs,
        cancelGraceMs: config.cancelGraceMs,
        agingMs: config.agingMs,
        levels: [...config.priorityLevels.values()],
        retries: config.retries,
        retryDelayMs: config.retryDelayMs,
        backoff: backoffCode(config.backoff),
        maxQueued: config.maxQueued === undefined ? 0 : config.maxQueued,
        rateMax: config.rateLimit === null ? 0 : config.rateLimit.max,
        rateIntervalMs: config.rateLimit === null ? 0 : config.rateLimit.intervalMs,
      },
      weakCallback(this, '_onTimers'),
    );
    this._records = new RecordTable();
    this._evicted = new Float64Array(EVICT_CAPACITY);
    this._batch = new Batch();
    this._spare = null;
    this._flushQueued = false;
    this._flushTask = () => {
      this._flushQueued = false;
      this._flush();
    };
    this._delivering = false;
    this._backlog = []; // answers waiting for the one being delivered: Batches and functions
    this._admitted = []; // records whose id-returning call is answered after the deliveries
    this._busy = false;
    this._store = null; // the durable layer (durable/durable.js) when a store is configured
    this._queueWaiters = []; // onQueueSizeLessThan(n): { n, resolve }
    /** @type {Record<string, Function | Function[] | undefined>} EventEmitter's listeners by event. */
    this._events;
    /** @type {number} EventEmitter's count of event names with listeners. */
    this._eventsCount;
  }

  // ----- what the lifecycle above does with each answer -------------------------------

  /** A submission's answer, delivered (`started`: it holds a slot already). */
  _submitted(rec, started) {
    throw new Error('implemented by Lifecycle');
  }

  /** A settlement's answer, delivered: `next` started in the freed slot (0: none). */
  _settled(rec, ok, next, retryDelayMs) {
    throw new Error('implemented by Lifecycle');
  }

  /** The core started `rec`: call its agent. */
  _launch(rec) {
    throw new Error('implemented by Lifecycle');
  }

  /** Resolves the id-returning calls of the submissions delivered so far. */
  _answerSubmitters() {
    throw new Error('implemented by Lifecycle');
  }

  /** Nothing is queued or running any more. */
  _becameIdle() {
    throw new Error('implemented by BackgroundExecutor');
  }

  /** A slot was freed: a shutdown waiting for its agents may complete now. */
  _shutdownMayFinish() {
    throw new Error('implemented by BackgroundExecutor');
  }

  /** More slots or room under a limit: with a store, claim stored work for them. */
  _slotsMayHaveFreed() {
    throw new Error('implemented by BackgroundExecutor');
  }

  /** A timer batch from the core: `[kind, id, kind, id, ...]`. */
  _onTimers(batch) {
    throw new Error('implemented by Lifecycle');
  }

  /** Emits `name` to its listeners, if any; a throwing listener cannot break the executor. */
  _emit(name, payload) {
    emitSafely(this, name, payload);
  }

  /** Records one operation for the next sync. */
  _push(rec, op, a, b, c) {
    let batch = this._batch;
    if (batch.n === BATCH_CAPACITY) {
      this._flush();
      batch = this._batch;
    }
    const k = batch.n++;
    const o = k * OP_WIDTH;
    const io = batch.io;
    io[o] = op;
    io[o + 1] = a;
    io[o + 2] = b;
    io[o + 3] = c;
    batch.recs[k] = rec;
    if (!this._flushQueued) {
      this._flushQueued = true;
      queueMicrotask(this._flushTask);
    }
  }

  _markBusy() {
    if (!this._busy) {
      this._busy = true;
      BUSY.add(this);
    }
  }

  /** Sends the pending batch to the core, stores its records, then delivers its answers. */
  _flush() {
    const batch = this._batch;
    const n = batch.n;
    if (n === 0) return;
    // New operations (from user code run by the delivery) go to another batch.
    this._batch = this._spare !== null ? this._spare : new Batch();
    this._spare = null;
    batch.n = 0;
    const r = this._native.sync(batch.io, n, this._evicted);
    const idle = r & SYNC_IDLE;
    if (r >= SYNC_EVICTED_STEP) this._records.drop(this._evicted, (r - idle) / SYNC_EVICTED_STEP);
    const io = batch.io;
    const recs = batch.recs;
    for (let k = 0; k < n; k++) {
      if (io[k * OP_WIDTH] === OP_SUBMIT) this._admit(recs[k], io[k * OP_WIDTH + 1]);
    }
    batch.answered = n;
    batch.idle = idle === 1;
    this._deliver(batch);
    if (this._queueWaiters.length > 0) this._checkQueueWaiters();
  }

  /** Resolves the onQueueSizeLessThan() waiters whose size has been reached. */
  _checkQueueWaiters() {
    const queued = this._native.queued();
    const waiting = this._queueWaiters;
    this._queueWaiters = [];
    for (const w of waiting) {
      if (queued < w.n) w.resolve();
      else this._queueWaiters.push(w);
    }
  }

  /** Phase 1 for one submission: its id, its record stored, its retry policy told to the core. */
  _admit(rec, answer) {
    if (answer === 0) return; // refused (the queue is full): id 0, answered in phase 2
    const id = answer > 0 ? answer : -answer;
    // `| 0` while it fits: an id that reached the record as a boxed double (say, re-read after
    // a deoptimisation) would turn its `id` field into a double field for good.
    rec.id = id <= 0x3fffffff ? id | 0 : id;
    this._records.add(id, rec);
    const x = rec.x;
    if (x !== null) {
      if (x.retry !== null) {
        this._native.setRetryPolicy(id, x.retry.retries, x.retry.retryDelayMs, backoffCode(x.retry.backoff));
        x.retry = null;
      }
      // Held by the core until now: its start is timed from here.
      if (x.startAfter !== undefined && x.durable === null) this._native.startAfter(id, x.startAfter - Date.now());
    }
  }

  /** Phase 2: delivers `job` (a Batch, or a function) now, or after the one being delivered. */
  _deliver(job) {
    if (this._delivering) {
      this._backlog.push(job);
      return;
    }
    this._delivering = true;
    try {
      this._deliverOne(job, false);
      const backlog = this._backlog;
      for (let i = 0; i < backlog.length; i++) this._deliverOne(backlog[i], true);
      backlog.length = 0;
    } finally {
      this._delivering = false;
    }
    if (this._admitted.length > 0) this._answerSubmitters();
  }

  _deliverOne(job, late) {
    if (typeof job === 'function') {
      job();
      return;
    }
    const io = job.io;
    const recs = job.recs;
    const n = job.answered;
    for (let k = 0; k < n; k++) {
      const rec = recs[k];
      recs[k] = null;
      const o = k * OP_WIDTH;
      if (io[o] === OP_SUBMIT) this._submitted(rec, io[o + 1] > 0);
      else this._settled(rec, io[o] === OP_SETTLE_OK, io[o + 2], io[o + 3]);
    }
    job.answered = 0;
    if (this._spare === null) this._spare = job;
    // The idle flag was true at the sync; later answers (`late`) may have changed that.
    if (job.idle && this._batch.n === 0) {
      if (late || this._backlog.length > 0) this._checkIdle();
      else this._onIdle();
      // A shutdown may have been waiting for a cancelled agent to let go of its slot.
      this._shutdownMayFinish();
    }
  }

  /** Starts the executions the core has just started (ids in start order). */
  _launchAll(ids) {
    if (ids.length > 0) this._deliver(() => this._launchIds(ids));
    if (this._queueWaiters.length > 0) this._checkQueueWaiters();
  }

  _launchIds(ids) {
    for (let i = 0; i < ids.length; i++) {
      const rec = this._records.get(ids[i]);
      if (rec !== undefined) this._launch(rec);
    }
  }

  /** Forgets the records retention dropped since the last sync. */
  _collectEvicted() {
    const ids = this._native.takeEvicted();
    this._records.drop(ids, ids.length);
  }

  _checkIdle() {
    if (this._busy && this._batch.n === 0 && this._native.isIdle()) this._onIdle();
  }

  /** Nothing is queued or running any more (in the core, and in flight to the store). */
  _onIdle() {
    if (!this._busy) return;
    if (this._store !== null && !this._store.idle()) return;
    this._busy = false;
    BUSY.delete(this);
    this._becameIdle();
  }

  /** Lets pending work be collected with the executor once it is shut down. */
  _release() {
    BUSY.delete(this);
  }
}

module.exports = { CoreLink, Batch };

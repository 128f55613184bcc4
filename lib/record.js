'use strict';

// One execution as JS sees it: the values that must stay JS values (task, options, result or
// error, callback, promise resolvers), the agent's context object, and the table of records
// by id. Every scheduling state (queued, running, retained, evicted) lives in the Rust core.

const { AsyncResource } = require('node:async_hooks');
const { MODE_EXECUTE, MODE_NAMES } = require('./protocol.js');

const ID_PREFIX = 'exec-';
const ID_PATTERN = /^exec-[1-9][0-9]{0,15}$/;

/** The id users see for core id `id`. */
const extId = (id) => ID_PREFIX + id;

/** Whether `rec` is a stored execution: users know it by its `exec-d` id only. */
const isDurable = (rec) => rec.x !== null && rec.x.durable !== null;

/** The id users see for `rec`: its stored id when durable, else its core id. */
const idOf = (rec) => (isDurable(rec) ? rec.x.durable.extId : ID_PREFIX + rec.id);

/** The attempt number users see: the store's count when durable. */
const attemptOf = (rec) => (isDurable(rec) ? rec.x.durable.attempt : rec.attempt);

/** The core id in an id this package issued (`exec-<n>`, canonical digits only), else 0. */
function parseId(value) {
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) return 0;
  const n = Number(value.slice(ID_PREFIX.length));
  return Number.isSafeInteger(n) ? n : 0;
}

// `Execution.bits`: mode, attempt, phase and two flags in one small integer. A queued
// execution is its record, its promise and its resolvers, and the young-generation GC copies
// every byte of them twice while the queue fills.
const B_PHASE = 3; // 0 queued, 1 an attempt runs, 2 waiting for a retry
const B_CALLED = 4; // the running attempt's agent has been called
const B_DONE = 8; // the outcome has been delivered (promise settled, callback called)
const B_MODE_SHIFT = 4;
const B_ATTEMPT_SHIFT = 7;
const B_NOT_ATTEMPT = (1 << B_ATTEMPT_SHIFT) - 1;

/**
 * One execution. It is the AsyncResource of its submission: made in the submitter's async
 * context, it runs the agent, the callback and onProgress in that context (an
 * AsyncLocalStorage store set around the submission is the agent's store), whichever
 * execution's settlement happens to start it. Being the resource itself, rather than holding
 * one, costs no extra object.
 */
class Execution extends AsyncResource {
  constructor(mode, agent, task, options, priority) {
    super('bmad-background-executor');
    this.id = 0; // given by the core when the batch is synced
    this.agent = agent;
    this.task = task;
    this.options = options;
    this.priority = priority; // level name
    this.bits = mode << B_MODE_SHIFT;
    this.value = undefined; // the result or the error, once the agent settled
    this.resolve = null; // execute(): its promise's resolve; callback modes: the callback
    this.reject = null; // execute(): its promise's reject
    this.x = null; // Extras, created when first needed
  }

  /** One of the MODE_* codes. */
  get mode() {
    return (this.bits >> B_MODE_SHIFT) & 7;
  }
  /**
   * Attempts started so far. The core counts them too; this copy matches each agent
   * settlement to its attempt without a call into the core.
   */
  get attempt() {
    return this.bits >> B_ATTEMPT_SHIFT;
  }
  set attempt(n) {
    this.bits = (this.bits & B_NOT_ATTEMPT) | (n << B_ATTEMPT_SHIFT);
  }
  /** 0 queued, 1 an attempt runs, 2 waiting for a retry (as far as this side has been told). */
  get phase() {
    return this.bits & B_PHASE;
  }
  set phase(p) {
    this.bits = (this.bits & ~B_PHASE) | p;
  }
  get called() {
    return (this.bits & B_CALLED) !== 0;
  }
  set called(yes) {
    this.bits = yes ? this.bits | B_CALLED : this.bits & ~B_CALLED;
  }
  /** Its outcome has been delivered: nothing more is reported for it. */
  get done() {
    return (this.bits & B_DONE) !== 0;
  }
  set done(yes) {
    this.bits = yes ? this.bits | B_DONE : this.bits & ~B_DONE;
  }
  /** Ready for another run (a durable execution claimed again): queued, no attempt, no value. */
  rearm() {
    this.bits = this.bits & (7 << B_MODE_SHIFT);
    this.value = undefined;
    if (this.x !== null) {
      this.x.controller = null;
      this.x.abortReason = undefined;
    }
  }
  /** executeWithCallback's callback (or null); shares its field with `resolve`. */
  get callback() {
    return this.mode === MODE_EXECUTE ? null : this.resolve;
  }
  set callback(fn) {
    if (this.mode !== MODE_EXECUTE) this.resolve = fn;
  }
}

/** Rarely needed per-execution values, kept out of the common record. */
class Extras {
  constructor() {
    this.controller = null; // the attempt's AbortController, made when its signal is read
    this.abortReason = undefined;
    this.userSignal = null; // options.signal, followed while the execution lives
    this.onProgress = null; // options.onProgress
    this.detail = undefined; // the latest progress detail
    this.waiters = null; // waitFor() and watch() resolvers
    this.watchers = null; // watch() iterators
    this.admitted = null; // resolves an id-returning call once the core has answered
    this.refused = null; // rejects it (a durable submission the store could not commit)
    this.retry = null; // options' retry policy, handed to the core with the id
    this.timeoutMs = undefined; // options.timeout, when given
    this.durable = null; // DurableRun of a stored execution (durable/runs.js)
    this.retries = undefined; // options.retries, when given
    this.retryIf = null; // options.retryIf
    this.startAfter = undefined; // a delayed execution's earliest start (epoch ms)
    this.key = undefined; // options.key (in memory; a stored execution's is in the store)
    this.followers = null; // submissions with the same key, settled with this one's outcome
    this.following = null; // the execution this submission follows (same key)
    this.ended = undefined; // the final status name, for submissions that follow it late
  }
}

const extras = (rec) => (rec.x === null ? (rec.x = new Extras()) : rec.x);

/** The record behind an agent's context (for this package's own code: agents cannot reach it). */
let recordOfContext;

/** The third argument of every agent. Fields are getters: nothing is built until used. */
class AgentContext {
  #ex;
  #rec;
  #progress = null;

  static {
    recordOfContext = (ctx) => ctx.#rec;
  }

  constructor(ex, rec) {
    this.#ex = ex;
    this.#rec = rec;
  }

  get executionId() {
    return idOf(this.#rec);
  }
  get agent() {
    return this.#rec.agent;
  }
  get task() {
    return this.#rec.task;
  }
  get options() {
    return this.#rec.options;
  }
  get mode() {
    return MODE_NAMES[this.#rec.mode];
  }
  get priority() {
    return this.#rec.priority;
  }
  get attempt() {
    return attemptOf(this.#rec);
  }
  /** A standard AbortSignal, aborted on cancel, timeout and forced shutdown. */
  get signal() {
    return this.#ex._signalOf(this.#rec);
  }
  /** `progress(percent, detail?)`: 0–100, clamped; non-numbers ignored. Safe to destructure. */
  get progress() {
    if (this.#progress === null) {
      const ex = this.#ex;
      const rec = this.#rec;
      this.#progress = (percent, detail) => ex._reportProgress(rec, percent, detail);
    }
    return this.#progress;
  }
  toJSON() {
    const { executionId, agent, task, mode, priority, attempt } = this;
    return { executionId, agent, task, mode, priority, attempt };
  }
}

/**
 * Records by id. The core keeps each execution's state under the same id and decides when
 * it is dropped (it reports the evicted ids); this table only holds the JS values. Ids come
 * in sequence and every record of a batch is added before any user code runs, so a sliding
 * window over an array (index = id - base) replaces a Map: cheaper to fill, read and collect.
 */
class RecordTable {
  constructor() {
    this.slots = [];
    this.base = 1;
    this.head = 0; // slots before it are all dropped
  }

  get(id) {
    const i = id - this.base;
    return i >= 0 && i < this.slots.length ? this.slots[i] : undefined;
  }

  /** Adds the record of `id`, which must be the next id: the core issues them in sequence. */
  add(id, rec) {
    if (id !== this.base + this.slots.length) throw new Error(`record ${id} out of sequence`);
    this.slots.push(rec);
  }

  /** Forgets the first `n` ids of `ids`; slides the window past the dropped prefix. */
  drop(ids, n) {
    const slots = this.slots;
    for (let k = 0; k < n; k++) {
      const i = ids[k] - this.base;
      if (i >= 0 && i < slots.length) slots[i] = undefined;
    }
    let head = this.head;
    while (head < slots.length && slots[head] === undefined) head++;
    this.head = head;
    if (head > 1024 && head * 2 > slots.length) {
      this.slots = slots.slice(head);
      this.base += head;
      this.head = 0;
    }
  }
}

module.exports = { Execution, Extras, extras, AgentContext, recordOfContext: (ctx) => recordOfContext(ctx), RecordTable, extId, idOf, isDurable, attemptOf, parseId };

'use strict';

// The JS face of the executor: a small EventEmitter wrapper over the native core.
//
// What lives where (see README "Design"):
// - Rust (`NativeExecutor`): the queue, every execution's state, the slots, retention,
//   timers, the keep-alive. Every scheduling decision is made there.
// - Here: the agent registry, the values that must stay JS values (tasks, options, results,
//   errors, callbacks, promise resolvers, AbortControllers) keyed by numeric id, and events.
//
// The hot path is batched: a submission or an agent settling is written as four numbers
// into a Float64Array and the batch goes to Rust in ONE call (`sync`) at the end of the
// current microtask run, or at once when the caller needs the answer (fireAndForget and the
// other id-returning calls, every query, cancel, pause...). A napi call costs more than the
// scheduling work it carries, so one call per batch instead of one per operation is what
// keeps the per-execution cost near the cost of a plain JS semaphore.

const { EventEmitter } = require('node:events');
const binding = require('../binding.js');
const { coded, describe, messageOf, typeError, isArray, isInstance } = require('./errors.js');
const { parseConfig, retryPolicy, integer, isPlainObject, MAX_MS, MAX_INT32 } = require('./config.js');
const { ResourceMonitor } = require('./monitor.js');
const { CommandRunner, parseCommandSpec, commandAgent } = require('./command.js');

const MODE_NAMES = ['fire-and-forget', 'async-callback', 'watched', 'execute', 'aggregate'];
const M_FIRE = 0;
const M_CALLBACK = 1;
const M_WATCHED = 2;
const M_EXECUTE = 3;
const M_AGGREGATE = 4;
const DEFAULT_LEVEL = ['low', 'medium', 'medium', 'medium', 'medium'];
const MODE_EVENTS = ['fire-and-forget-started', 'async-callback-started', 'watched-started'];

const STATUS_NAMES = ['queued', 'running', 'completed', 'failed', 'cancelled'];

// Operation codes of a batch (see NativeExecutor.sync).
const OP_SUBMIT = 1;
const OP_SETTLE_OK = 2;
const OP_SETTLE_FAILED = 3;
const BATCH_CAPACITY = 512;

// Timer kinds (see TimerKind in src/scheduler.rs).
const K_TIMEOUT = 1;
const K_PROGRESS = 2;
const K_GRACE = 3;
const K_SWEEP = 4;
const K_SHUTDOWN = 5;
const K_RETRY = 6;

/** Agent starts per event-loop turn before the executor yields (setImmediate). */
const START_BUDGET = 1024;
/** Room for the ids retention drops during one sync. */
const EVICT_CAPACITY = 1024;

/** Distinct agent names with their own statistics; later names share key 0 ("other"). */
const MAX_AGENT_KEYS = 4096;

const ID_PREFIX = 'exec-';
const extId = (id) => ID_PREFIX + id;
const ID_PATTERN = /^exec-[1-9][0-9]{0,15}$/;

/** The number in an id this executor issued (`exec-<n>`, canonical digits only), else 0. */
function parseId(value) {
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) return 0;
  const n = Number(value.slice(ID_PREFIX.length));
  return Number.isSafeInteger(n) ? n : 0;
}

/** Operations waiting for the next `sync`: four numbers each, plus the record they concern. */
class Batch {
  constructor() {
    this.io = new Float64Array(BATCH_CAPACITY * 4);
    this.recs = new Array(BATCH_CAPACITY).fill(null);
    this.n = 0;
  }
}

/** One submitted execution: the JS values that belong to it. Its state lives in Rust. */
class Execution {
  constructor(mode, agent, task, options, priority) {
    this.id = 0; // assigned by the core at the next sync
    this.agent = agent;
    this.task = task;
    this.options = options;
    this.priority = priority; // level name
    // mode, attempt, phase, called, done and status packed in one small integer (see the
    // accessors below): a queued execution is held by the record, its promise and its
    // resolvers, and every byte of them is copied twice by the young-generation GC while
    // the queue fills.
    this.bits = mode << B_MODE_SHIFT;
    this.value = undefined; // result, or error, once settled
    this.resolve = null; // execute(): its promise's resolve; callback modes: the callback
    this.reject = null; // execute(): its promise's reject
    this.x = null; // Extras, created when first needed
  }

  /** One of M_FIRE ... M_AGGREGATE. */
  get mode() {
    return (this.bits >> B_MODE_SHIFT) & 7;
  }
  /** Attempts started so far (at most retries + 1 <= 1001). */
  get attempt() {
    return this.bits >> B_ATTEMPT_SHIFT;
  }
  set attempt(n) {
    this.bits = (this.bits & B_NOT_ATTEMPT) | (n << B_ATTEMPT_SHIFT);
  }
  /** 0 queued, 1 an attempt is running, 2 waiting for a retry. */
  get phase() {
    return this.bits & B_PHASE;
  }
  set phase(p) {
    this.bits = (this.bits & ~B_PHASE) | p;
  }
  /** The running attempt's agent has been called. */
  get called() {
    return (this.bits & B_CALLED) !== 0;
  }
  set called(yes) {
    this.bits = yes ? this.bits | B_CALLED : this.bits & ~B_CALLED;
  }
  get done() {
    return (this.bits & B_DONE) !== 0;
  }
  set done(yes) {
    this.bits = yes ? this.bits | B_DONE : this.bits & ~B_DONE;
  }
  /** Terminal status name once done, else null. */
  get status() {
    const k = (this.bits >> B_STATUS_SHIFT) & 7;
    return k === 0 ? null : STATUS_NAMES[k];
  }
  set status(name) {
    const k = name === 'completed' ? 2 : name === 'failed' ? 3 : name === 'cancelled' ? 4 : 0;
    this.bits = (this.bits & ~(7 << B_STATUS_SHIFT)) | (k << B_STATUS_SHIFT);
  }
  /** executeWithCallback's callback (or null); shares its field with `resolve`. */
  get callback() {
    return this.mode === M_EXECUTE ? null : this.resolve;
  }
  set callback(fn) {
    if (this.mode !== M_EXECUTE) this.resolve = fn;
  }
}
const B_PHASE = 3;
const B_CALLED = 4;
const B_DONE = 8;
const B_STATUS_SHIFT = 4;
const B_MODE_SHIFT = 7;
const B_ATTEMPT_SHIFT = 10;
const B_NOT_ATTEMPT = (1 << B_ATTEMPT_SHIFT) - 1;

/** Rarely needed per-execution state, kept out of the common record. */
class Extras {
  constructor() {
    this.controller = null;
    this.abortReason = undefined;
    this.userSignal = null;
    this.onUserAbort = null;
    this.onProgress = null;
    this.detail = undefined;
    this.waiters = null;
    this.watchers = null;
    this.admitted = null; // resolves an id-returning call once the core has answered
    this.retry = null; // { retries, delayMs, backoff } when the options override the config
    this.retryEvent = null; // the execution-retry payload waiting for the core's answer
    this.timeoutMs = undefined; // options.timeout, when given
  }
}

const extras = (rec) => (rec.x === null ? (rec.x = new Extras()) : rec.x);

/** The third argument of every agent. Fields are getters: nothing is built until used. */
class AgentContext {
  #ex;
  #rec;
  #progress = null;

  constructor(ex, rec) {
    this.#ex = ex;
    this.#rec = rec;
  }

  get executionId() {
    return extId(this.#rec.id);
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
    return this.#rec.attempt;
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

const rejected = (err) => Promise.reject(err);

/** The async iterator returned by `watch()`: buffered updates, then the final status. */
class Watch {
  constructor() {
    this.items = [];
    this.waiting = null;
    this.ended = false;
    this.onReturn = null;
  }
  push(item) {
    if (this.ended) return;
    if (this.waiting !== null) {
      const w = this.waiting;
      this.waiting = null;
      w({ value: item, done: false });
    } else {
      // A slow consumer keeps at most the latest 100 progress updates.
      if (this.items.length >= 100) this.items.shift();
      this.items.push(item);
    }
  }
  end(final) {
    if (this.ended) return;
    this.push(final);
    this.ended = true;
  }
  next() {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift(), done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }
  return() {
    this.ended = true;
    this.items = [];
    if (this.onReturn !== null) this.onReturn();
    if (this.waiting !== null) this.waiting({ value: undefined, done: true });
    this.waiting = null;
    return Promise.resolve({ value: undefined, done: true });
  }
  [Symbol.asyncIterator]() {
    return this;
  }
}

// The native timer callback holds its function strongly; going through a WeakRef lets an
// executor that nobody references any more be collected (and its native side dropped). While
// work is queued or running, BUSY holds it, so pending work is never dropped by the GC.
const BUSY = new Set();
function timerCallback(weak) {
  return (batch) => {
    const ex = weak.deref();
    if (ex !== undefined) ex._onTimers(batch);
  };
}

const PROMISE_THEN = Promise.prototype.then;

/**
 * Waits for one attempt's agent promise: `.then(w.onFulfilled, w.onRejected)`. With the
 * built-in `then` exactly one of the two runs, once, so the watcher then goes back to a free
 * list (shared by all executors, at most MAX_FREE_WATCHERS long) and is reused: no closures
 * and context allocated per agent call.
 */
class AttemptWatcher {
  constructor() {
    this.ex = null;
    this.rec = null;
    this.attempt = 0;
    this.next = null;
    this.onFulfilled = (v) => this.settle(true, v);
    this.onRejected = (e) => this.settle(false, e);
  }
  settle(ok, value) {
    const { ex, rec, attempt } = this;
    this.ex = null;
    this.rec = null;
    if (freeCount < MAX_FREE_WATCHERS) {
      freeCount++;
      this.next = freeWatchers;
      freeWatchers = this;
    }
    ex._agentSettled(rec, attempt, ok, value);
  }
}
const MAX_FREE_WATCHERS = 4096;
let freeWatchers = null;
let freeCount = 0;

// `new Promise(captureResolvers)` hands its resolvers over without allocating a closure per
// promise (Node 20 has no Promise.withResolvers).
let capturedResolve = null;
let capturedReject = null;
function captureResolvers(resolve, reject) {
  capturedResolve = resolve;
  capturedReject = reject;
}

class BackgroundExecutor extends EventEmitter {
  constructor(config) {
    super();
    const cfg = parseConfig(config);
    this.config = cfg;
    this._levels = cfg.priorityLevels;
    this._levelNames = [...cfg.priorityLevels.keys()];
    this._agents = cfg.agents;
    this._defaultAgent = cfg.defaultAgent;
    this._commands = null; // CommandRunner, created by the first registerCommand
    this._earlyStarts = null; // Set of ids started before their submission was answered
    this._earlyCancels = null; // Set of ids shutdown() cancelled before they were answered
    this._defaultTimeout = cfg.defaultTimeoutMs === undefined ? 0 : cfg.defaultTimeoutMs;
    let lowest = this._levelNames[0];
    for (const name of this._levelNames) if (this._levels.get(name) < this._levels.get(lowest)) lowest = name;
    this._modeLevel = DEFAULT_LEVEL.map((name) => (this._levels.has(name) ? name : lowest));
    this._modePriority = this._modeLevel.map((name) => this._levels.get(name));

    // Records by id. Ids are issued in sequence, so a sliding window over a plain array
    // (index = id - base) replaces a Map: cheaper to fill, to read and to collect.
    this._slots = [];
    // Agent names -> small keys for the core's per-agent statistics (0 = "other").
    this._agentKeys = new Map();
    this._agentNames = ['(other)'];
    this._base = 1;
    this._head = 0;
    this._evicted = new Float64Array(EVICT_CAPACITY);
    this._native = new binding.NativeExecutor(
      {
        maxConcurrent: cfg.maxConcurrentAgents,
        minConcurrent: cfg.minConcurrentAgents,
        resultTtlMs: cfg.resultTtlMs,
        maxRetained: cfg.maxRetainedResults,
        progressIntervalMs: cfg.progressIntervalMs,
        cancelGraceMs: cfg.cancelGraceMs,
        agingMs: cfg.agingMs,
        levels: [...this._levels.values()],
        maxCpuPercent: cfg.maxCpuPercent,
        maxMemoryMb: cfg.maxMemoryMb,
      },
      timerCallback(new WeakRef(this)),
    );

    this._batch = new Batch();
    this._spareBatch = null;
    this._flushQueued = false;
    this._flushTask = () => {
      this._flushQueued = false;
      this._flush();
    };
    this._budget = START_BUDGET;
    this._deferred = [];
    this._yieldScheduled = false;
    this._resumeDeferred = () => this._runDeferred();
    this._dirty = new Set();
    this._progressScheduled = false;
    this._flushProgress = () => this._emitDirtyProgress();
    this._busy = false;
    this._idleWaiters = [];
    this._initialized = false;
    this._closing = false;
    this._shutdownPromise = null;
    this._shutdownResolve = null;
    this._shutdownDone = false;
    this._aggregations = 0;

    this.resourceMonitor = new ResourceMonitor({
      interval: cfg.monitorIntervalMs,
      cpuThreshold: cfg.maxCpuPercent,
      memoryThreshold: cfg.maxMemoryMb,
    });
    this._onSample = (sample) => this._applySample(sample);
    this._onThreshold = (data) => this._emit('resource-threshold-exceeded', data);
    this.resourceMonitor.on('sample', this._onSample);
    this.resourceMonitor.on('threshold-exceeded', this._onThreshold);
    if (shapeAnchors === null) keepShapes();
  }

  // ----- lifecycle ---------------------------------------------------------------------

  /** Starts the resource monitor. Idempotent; resolves to the executor. */
  initialize() {
    if (!this._initialized && !this._closing) {
      this._initialized = true;
      this.resourceMonitor.start();
      this._emit('initialized', {
        maxConcurrentAgents: this._native.counts().maxConcurrent,
        priorityLevels: Object.fromEntries(this._levels),
      });
    }
    return Promise.resolve(this);
  }

  // ----- agents ------------------------------------------------------------------------

  registerAgent(name, fn) {
    if (typeof name !== 'string' || name === '') {
      throw typeError(`registerAgent: name must be a non-empty string, got ${describe(name)}`);
    }
    if (typeof fn !== 'function') throw typeError(`registerAgent: agent must be a function, got ${describe(fn)}`);
    this._agents.set(name, fn);
    return this;
  }

  /**
   * Registers a command agent: a program run from Rust, without a shell, in its own process
   * group. `spec` is `{ command, args?, cwd?, env?, inheritEnv?, input?, progressPattern?,
   * maxOutputBytes?, killSignal?, killGraceMs? }` or a function `(task, options) => spec`
   * (or a promise of one) called per execution. See README "Command agents".
   */
  registerCommand(name, spec) {
    if (typeof name !== 'string' || name === '') {
      throw typeError(`registerCommand: name must be a non-empty string, got ${describe(name)}`);
    }
    const fixed = typeof spec === 'function' ? spec : parseCommandSpec(spec, 'registerCommand: spec');
    this._agents.set(name, commandAgent(this._commandRunner(), name, fixed));
    return this;
  }

  /**
   * The running agent of `executionId` needs up to `ms` to stop once signalled (a command
   * agent's process: killGraceMs and its pipes): its slot's grace period is at least that.
   */
  _needsGrace(executionId, ms) {
    const id = parseId(executionId);
    if (id !== 0) this._native.setMinGrace(id, ms);
  }

  _commandRunner() {
    if (this._commands === null) this._commands = new CommandRunner(this);
    return this._commands;
  }

  // Output lines of command agents cross from Rust only while someone listens to
  // 'command-output': the listener methods tell the runner when that changes. (Not through
  // 'newListener'/'removeListener' listeners of our own: users would see them in
  // eventNames() and could remove them with removeAllListeners().)
  on(event, listener) {
    super.on(event, listener);
    this._listenersChanged(event);
    return this;
  }
  addListener(event, listener) {
    return this.on(event, listener);
  }
  prependListener(event, listener) {
    super.prependListener(event, listener);
    this._listenersChanged(event);
    return this;
  }
  removeListener(event, listener) {
    super.removeListener(event, listener);
    this._listenersChanged(event);
    return this;
  }
  off(event, listener) {
    return this.removeListener(event, listener);
  }
  removeAllListeners(...args) {
    super.removeAllListeners(...args);
    this._listenersChanged('command-output');
    return this;
  }

  _listenersChanged(event) {
    if (event === 'command-output' && this._commands !== null) this._commands.syncForward();
  }

  unregisterAgent(name) {
    if (typeof name !== 'string' || name === '') {
      throw typeError(`unregisterAgent: name must be a non-empty string, got ${describe(name)}`);
    }
    return this._agents.delete(name);
  }

  /**
   * The old extension point. The default resolves the agent (registry, then defaultAgent)
   * and calls it; a subclass or instance that overrides it is called instead, with
   * `{ id, executionId, agent, task, options, mode, priority, context, signal }`.
   */
  spawnAgentProcess(execution) {
    return this._callAgent(execution.agent, execution.task, execution.options, execution.context);
  }

  _callAgent(agent, task, options, context) {
    const fn = this._agents.get(agent);
    if (fn !== undefined) return fn(task, options, context);
    if (this._defaultAgent !== undefined) return this._defaultAgent(agent, task, options, context);
    throw coded(Error, 'ERR_AGENT_NOT_FOUND', `No agent registered for ${JSON.stringify(agent)}`, { agent });
  }

  // ----- submission --------------------------------------------------------------------

  fireAndForget(agent, task, options) {
    return this._submitReturningId(M_FIRE, agent, task, options, null);
  }

  executeWithCallback(agent, task, callback, options) {
    if (callback !== undefined && callback !== null && typeof callback !== 'function') {
      return rejected(typeError(`callback must be a function, null or undefined, got ${describe(callback)}`));
    }
    return this._submitReturningId(M_CALLBACK, agent, task, options, callback || null);
  }

  executeWatched(agent, task, options) {
    return this._submitReturningId(M_WATCHED, agent, task, options, null);
  }

  /** Runs one execution and resolves with the agent's own return value. */
  execute(agent, task, options) {
    let rec;
    try {
      rec = this._submit(M_EXECUTE, agent, task, options);
    } catch (err) {
      return rejected(err);
    }
    const promise = new Promise(captureResolvers);
    rec.resolve = capturedResolve;
    rec.reject = capturedReject;
    return promise;
  }

  _submitReturningId(mode, agent, task, options, callback) {
    let rec;
    try {
      rec = this._submit(mode, agent, task, options);
    } catch (err) {
      return rejected(err);
    }
    rec.callback = callback;
    // Resolved by _submitted with the id and the real status once the core has answered,
    // before the agent is called: the agent's synchronous code never runs inside this call.
    return new Promise((resolve) => {
      extras(rec).admitted = resolve;
    });
  }

  _closedError() {
    return coded(Error, 'ERR_EXECUTOR_SHUT_DOWN', 'The executor has been shut down; no new executions are accepted');
  }

  /** Validates a submission and records it in the current batch. */
  _submit(mode, agent, task, options) {
    if (typeof agent !== 'string' || agent === '') {
      throw typeError(`agent must be a non-empty string, got ${describe(agent)}`);
    }
    if (typeof task !== 'string') throw typeError(`task must be a string, got ${describe(task)}`);
    let level = this._modeLevel[mode];
    let priority = this._modePriority[mode];
    let timeout = this._defaultTimeout;
    let retry = null;
    let signal = null;
    let onProgress = null;
    let timeoutGiven = false;
    if (options !== undefined && options !== null) {
      if (!isPlainObject(options)) throw typeError(`options must be an object, got ${describe(options)}`);
      // Each option is read exactly once (a getter may have side effects or change its mind).
      const p = options.priority;
      const t = options.timeout;
      const sig = options.signal;
      const onp = options.onProgress;
      const retries = options.retries;
      const retryDelayMs = options.retryDelayMs;
      const backoff = options.backoff;
      if (p !== undefined) {
        priority = typeof p === 'string' ? this._levels.get(p) : undefined;
        if (priority === undefined) {
          throw coded(
            RangeError,
            'ERR_UNKNOWN_PRIORITY',
            `options.priority must be one of ${this._levelNames.map((n) => JSON.stringify(n)).join(', ')}, got ${describe(p)}`,
          );
        }
        level = p;
      }
      if (t !== undefined && t !== null) {
        timeout = integer('options.timeout', t, 1, MAX_MS, 0);
        timeoutGiven = true;
      }
      if (sig !== undefined && sig !== null) {
        if (!isInstance(sig, AbortSignal)) throw typeError(`options.signal must be an AbortSignal, got ${describe(sig)}`);
        signal = sig;
      }
      if (onp !== undefined && onp !== null) {
        if (typeof onp !== 'function') throw typeError(`options.onProgress must be a function, got ${describe(onp)}`);
        onProgress = onp;
      }
      if (retries !== undefined || retryDelayMs !== undefined || backoff !== undefined) {
        retry = retryPolicy({ retries, retryDelayMs, backoff }, this.config, 'options.');
      }
    } else {
      options = undefined;
    }
    if (this._closing) throw this._closedError();
    const rec = new Execution(mode, agent, task, options, level);
    if (retry !== null || signal !== null || onProgress !== null || timeoutGiven) {
      const x = extras(rec);
      x.retry = retry;
      x.userSignal = signal; // wired once the core has answered (_submitted)
      x.onProgress = onProgress;
      if (timeoutGiven) x.timeoutMs = timeout;
    }
    let key = this._agentKeys.get(agent);
    if (key === undefined) key = this._internAgent(agent);
    this._push(rec, OP_SUBMIT, mode + 8 * key, priority, timeout);
    if (!this._busy) {
      this._busy = true;
      BUSY.add(this);
    }
    return rec;
  }

  _internAgent(agent) {
    if (this._agentNames.length >= MAX_AGENT_KEYS) return 0;
    const key = this._agentNames.length;
    this._agentNames.push(agent);
    this._agentKeys.set(agent, key);
    return key;
  }

  _push(rec, op, a, b, c) {
    let batch = this._batch;
    if (batch.n === BATCH_CAPACITY) {
      this._flush();
      batch = this._batch;
    }
    const k = batch.n++;
    const o = k << 2;
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

  /** Sends the pending batch to the core and acts on its answers, in order. */
  _flush() {
    const batch = this._batch;
    const n = batch.n;
    if (n === 0) return;
    // Answers are read from this batch while new operations (from callbacks, listeners,
    // agents started here) go to another one.
    this._batch = this._spareBatch !== null ? this._spareBatch : new Batch();
    this._spareBatch = null;
    batch.n = 0;
    const r = this._native.sync(batch.io, n, this._evicted);
    const idle = r % 2;
    if (r > 1) this._dropRecords(this._evicted, (r - idle) / 2);
    const io = batch.io;
    const recs = batch.recs;
    for (let k = 0; k < n; k++) {
      const rec = recs[k];
      recs[k] = null;
      const o = k << 2;
      if (io[o] === OP_SUBMIT) this._submitted(rec, io[o + 1]);
      else this._settled(rec, io[o] === OP_SETTLE_OK, io[o + 2]);
    }
    this._spareBatch = batch;
    if (idle === 1 && this._batch.n === 0) this._onIdle();
  }

  /** The core's answer to a submission: an id, and whether it started at once. */
  _submitted(rec, r) {
    if (r === 0) {
      // Closed between validation and sync (cannot happen through the public API).
      rec.done = true;
      rec.status = 'cancelled';
      const err = this._closedError();
      if (rec.reject !== null) rec.reject(err);
      else if (rec.callback !== null) this._callBack(rec, err, undefined);
      return;
    }
    let started = r > 0;
    // `| 0` while it fits: an id that reaches a record as a boxed double (e.g. re-read after a
    // deoptimisation) would turn the record's `id` field into a double field for good.
    const id = started ? r : -r;
    // Queued when its batch was synced, but started since by a nested sync (see _startUnknown).
    if (!started && this._earlyStarts !== null && this._earlyStarts.delete(id)) started = true;
    rec.id = id <= 0x3fffffff ? id | 0 : id;
    this._store(id, rec);
    // `_eventsCount` (EventEmitter's count of event names with listeners) first: with no
    // listener at all, no lookup in the dictionary-mode `_events` (~10 ns each).
    const events = this._eventsCount === 0 ? null : this._events;
    if (events !== null && events['execution-queued'] !== undefined) {
      this._emit('execution-queued', {
        executionId: extId(id),
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        priority: rec.priority,
        queuePosition: started ? 0 : Math.max(0, this._native.queuePosition(id)),
        queueLength: this._native.counts().queued,
      });
    }
    if (events !== null && rec.mode < M_EXECUTE && events[MODE_EVENTS[rec.mode]] !== undefined) {
      this._emit(MODE_EVENTS[rec.mode], { executionId: extId(id), agent: rec.agent, task: rec.task, priority: rec.priority });
    }
    const x = rec.x;
    if (x !== null && x.userSignal !== null) {
      const signal = x.userSignal;
      if (signal.aborted) {
        this._cancelRec(rec, this._cancelledError(rec, signal.reason));
      } else {
        x.onUserAbort = () => this._cancelRec(rec, this._cancelledError(rec, signal.reason));
        signal.addEventListener('abort', x.onUserAbort, { once: true });
      }
    }
    // Cancelled by a shutdown() made while its batch's answers were being delivered.
    if (!rec.done && this._earlyCancels !== null && this._earlyCancels.delete(id)) {
      started = false;
      this._end(rec, 'cancelled', this._shutdownError(rec));
    }
    if (rec.x !== null && rec.x.admitted !== null) {
      const status = rec.done ? rec.status : started ? 'running' : 'queued';
      rec.x.admitted({ executionId: extId(id), mode: MODE_NAMES[rec.mode], status });
      rec.x.admitted = null;
    }
    // A start that was cancelled meanwhile only gives its slot back (see _run).
    if (started) this._launch(rec);
  }

  // ----- running -----------------------------------------------------------------------

  /** Starts an execution the core has marked running; yields to the event loop when due. */
  /**
   * The core has started `rec` (a new attempt holds a slot and its timeout runs from now):
   * count the attempt at once, and call the agent now or — past the per-turn budget — after
   * yielding to the event loop.
   */
  _launch(rec) {
    if (rec.done) {
      // Cancelled between the core's start decision and now: give the slot back.
      this._push(rec, OP_SETTLE_FAILED, rec.id, -1, rec.attempt + 1);
      return;
    }
    const attempt = ++rec.attempt;
    rec.phase = 1;
    rec.called = false;
    if (attempt > 1 && rec.x !== null) {
      // A fresh signal for the new attempt.
      rec.x.controller = null;
      rec.x.abortReason = undefined;
    }
    // Started now, as far as the core (slots, timeout) and listeners are concerned.
    if (this._eventsCount !== 0 && this._events['execution-started'] !== undefined) {
      this._emit('execution-started', {
        executionId: extId(rec.id),
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        priority: rec.priority,
        attempt,
      });
    }
    if (this._budget <= 0 || this._deferred.length > 0) {
      this._deferred.push(rec, attempt);
      if (!this._yieldScheduled) {
        this._yieldScheduled = true;
        setImmediate(this._resumeDeferred);
      }
      return;
    }
    this._budget--;
    this._run(rec, attempt);
  }

  _runDeferred() {
    this._yieldScheduled = false;
    this._budget = START_BUDGET;
    const list = this._deferred; // rec, attempt, rec, attempt, ...
    this._deferred = [];
    let i = 0;
    for (; i < list.length && this._budget > 0; i += 2) {
      this._budget--;
      const rec = list[i];
      // Its timeout counts from the call, not from the core's start decision.
      if (rec.phase === 1 && !rec.done && list[i + 1] === rec.attempt && this._timeoutOf(rec) > 0) {
        this._native.restartTimeout(rec.id);
      }
      this._run(rec, list[i + 1]);
    }
    if (i < list.length) {
      // Keep the rest, in order, for the next turn.
      this._deferred = list.slice(i).concat(this._deferred);
      if (!this._yieldScheduled) {
        this._yieldScheduled = true;
        setImmediate(this._resumeDeferred);
      }
    }
  }

  _launchAll(ids) {
    for (let i = 0; i < ids.length; i++) {
      const rec = this._rec(ids[i]);
      if (rec !== undefined) this._launch(rec);
      else this._startUnknown(ids[i]);
    }
  }

  /**
   * The core started `id`, whose submission answer this wrapper has not processed yet: a
   * listener or callback run while a batch's answers were being delivered made a nested
   * `sync` (the next batch), which freed a slot and started an execution submitted in the
   * outer batch. `_submitted` launches it when it gets there. (Found by the chaos suite,
   * CHAOS_SEED=11: the execution ran in the core but its agent was never called.)
   */
  _startUnknown(id) {
    if (this._earlyStarts === null) this._earlyStarts = new Set();
    this._earlyStarts.add(id);
  }

  /** Calls the agent for `attempt` of `rec`, unless that attempt ended while it waited. */
  _run(rec, attempt) {
    if (attempt !== rec.attempt) return; // a later attempt exists: this one's slot is gone
    if (rec.done || rec.phase !== 1) {
      // Cancelled before its agent was even called: give the slot back now.
      this._push(rec, OP_SETTLE_FAILED, rec.id, -1, attempt);
      return;
    }
    rec.called = true;
    const ctx = new AgentContext(this, rec);
    let value;
    try {
      if (this.spawnAgentProcess !== BASE_SPAWN) {
        value = this.spawnAgentProcess({
          id: extId(rec.id),
          executionId: extId(rec.id),
          agent: rec.agent,
          task: rec.task,
          options: rec.options,
          mode: MODE_NAMES[rec.mode],
          priority: rec.priority,
          context: ctx,
          signal: ctx.signal,
        });
      } else {
        const fn = this._agents.get(rec.agent);
        value = fn !== undefined ? fn(rec.task, rec.options, ctx) : this._callAgent(rec.agent, rec.task, rec.options, ctx);
      }
    } catch (err) {
      value = Promise.reject(err);
    }
    const promise = Promise.resolve(value);
    if (promise.then !== PROMISE_THEN) {
      // A patched `then` might call back more than once: no reuse.
      promise.then(
        (v) => this._agentSettled(rec, attempt, true, v),
        (e) => this._agentSettled(rec, attempt, false, e),
      );
      return;
    }
    let w = freeWatchers;
    if (w === null) w = new AttemptWatcher();
    else {
      freeWatchers = w.next;
      w.next = null;
      freeCount--;
    }
    w.ex = this;
    w.rec = rec;
    w.attempt = attempt;
    promise.then(w.onFulfilled, w.onRejected);
  }

  _agentSettled(rec, attempt, ok, value) {
    // A settle of an older attempt whose slot the grace period already freed: nothing to do.
    if (attempt !== rec.attempt) return;
    let retryDelay = -1;
    if (!rec.done && rec.phase === 1) {
      if (!ok && this._retryLeft(rec)) {
        retryDelay = this._retryDelay(rec);
        rec.phase = 2;
        extras(rec).retryEvent = this._retryPayload(rec, value, retryDelay);
      } else {
        rec.value = value;
      }
    }
    // Otherwise a late result of a cancelled or timed-out attempt: only the slot goes back.
    this._push(rec, ok ? OP_SETTLE_OK : OP_SETTLE_FAILED, rec.id, retryDelay, attempt);
  }

  /** The core's answer to a settlement: the execution's end, and what started in its slot. */
  _settled(rec, ok, next) {
    if (!rec.done) {
      const x = rec.x;
      if (x !== null && x.retryEvent !== null) {
        const payload = x.retryEvent;
        x.retryEvent = null;
        this._emit('execution-retry', payload);
      } else if (rec.phase === 1) {
        if (ok) this._complete(rec, rec.value);
        else this._end(rec, 'failed', rec.value);
      }
    }
    if (next > 0) {
      const nextRec = this._rec(next);
      if (nextRec !== undefined) this._launch(nextRec);
      else this._startUnknown(next);
    }
  }

  _complete(rec, value) {
    rec.done = true;
    rec.status = 'completed';
    rec.value = value;
    const x = rec.x;
    if (x !== null) {
      if (x.userSignal !== null) this._unwireSignal(x);
      if (x.waiters !== null) this._notifyWaiters(rec);
    }
    const events = this._eventsCount === 0 ? null : this._events;
    const watched = events !== null && rec.mode === M_WATCHED && events['progress-update'] !== undefined;
    if ((events !== null && events['execution-completed'] !== undefined) || watched) {
      const executionId = extId(rec.id);
      const duration = this._durationOf(rec);
      this._emit('execution-completed', {
        executionId,
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        result: value,
        duration,
      });
      if (watched) {
        this._dirty.delete(rec);
        this._emit('progress-update', {
          executionId,
          agent: rec.agent,
          progress: 100,
          status: 'completed',
          duration,
          detail: x !== null ? x.detail : undefined,
        });
      }
    }
    if (rec.mode === M_EXECUTE) rec.resolve(value);
    else if (rec.callback !== null) this._callBack(rec, null, value);
  }

  /** Ends an execution as failed or cancelled, with the original error value. */
  _end(rec, status, err) {
    rec.done = true;
    rec.status = status;
    rec.value = err;
    const x = rec.x;
    if (x !== null) {
      if (x.userSignal !== null) this._unwireSignal(x);
      if (x.waiters !== null) this._notifyWaiters(rec);
    }
    const event = status === 'cancelled' ? 'execution-cancelled' : 'execution-failed';
    const watched = rec.mode === M_WATCHED && this._events['progress-update'] !== undefined;
    if (this._events[event] !== undefined || watched) {
      const executionId = extId(rec.id);
      const duration = this._durationOf(rec);
      this._emit(event, {
        executionId,
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        error: messageOf(err),
        errorObject: err,
        code: err !== null && typeof err === 'object' && typeof err.code === 'string' ? err.code : undefined,
        duration,
      });
      if (watched) {
        this._dirty.delete(rec);
        const v = this._native.viewFinished(rec.id);
        this._emit('progress-update', {
          executionId,
          agent: rec.agent,
          progress: v !== null ? v.progress : 0,
          status,
          duration,
          detail: x !== null ? x.detail : undefined,
        });
      }
    }
    if (rec.mode === M_EXECUTE) rec.reject(err);
    else if (rec.callback !== null) this._callBack(rec, err, undefined);
  }

  _durationOf(rec) {
    const d = this._native.durationOf(rec.id);
    return d >= 0 ? d : 0;
  }

  _callBack(rec, err, value) {
    try {
      rec.callback(err, value);
    } catch (error) {
      this._emit('callback-error', { executionId: extId(rec.id), agent: rec.agent, error });
    }
  }

  // ----- signals, cancellation, progress -----------------------------------------------

  _signalOf(rec) {
    const x = extras(rec);
    if (x.controller === null) {
      x.controller = new AbortController();
      if (x.abortReason !== undefined) x.controller.abort(x.abortReason);
    }
    return x.controller.signal;
  }

  _abort(rec, reason) {
    const x = extras(rec);
    x.abortReason = reason;
    if (x.controller !== null && !x.controller.signal.aborted) x.controller.abort(reason);
  }

  _unwireSignal(x) {
    if (x.onUserAbort !== null) x.userSignal.removeEventListener('abort', x.onUserAbort);
    x.userSignal = null;
    x.onUserAbort = null;
  }

  _cancelledError(rec, cause) {
    const err = coded(Error, 'ERR_EXECUTION_CANCELLED', `Execution ${extId(rec.id)} (${rec.agent}) was cancelled`, {
      executionId: extId(rec.id),
      agent: rec.agent,
    });
    if (cause !== undefined) err.cause = cause;
    return err;
  }

  /** Cancels `rec` if it is queued or running; returns the core's outcome code. */
  _cancelRec(rec, err) {
    this._flush();
    const code = this._native.cancel(rec.id);
    if (code === 2 || code === 3) {
      if (code === 3) this._abort(rec, err);
      this._end(rec, 'cancelled', err);
      this._launchAll(this._native.pump());
      this._checkIdle();
    }
    return code;
  }

  /**
   * Cancels a queued or running execution. A running one is cancelled at once (its signal
   * aborted, its late result discarded); its slot is freed when its agent settles or after
   * `cancelGraceMs`, whichever comes first.
   */
  cancelExecution(executionId) {
    if (typeof executionId !== 'string') {
      return rejected(typeError(`executionId must be a string, got ${describe(executionId)}`));
    }
    this._flush();
    const id = parseId(executionId);
    const rec = id === 0 ? undefined : this._rec(id);
    if (rec === undefined) return Promise.resolve({ success: false, error: 'Execution not found' });
    const code = this._cancelRec(rec, this._cancelledError(rec));
    if (code === 2 || code === 3) {
      return Promise.resolve({ success: true, executionId, previousStatus: code === 2 ? 'queued' : 'running' });
    }
    if (code === 0) return Promise.resolve({ success: false, error: 'Execution not found' });
    return Promise.resolve({ success: false, error: `Cannot cancel execution in ${STATUS_NAMES[code - 10]} status` });
  }

  _reportProgress(rec, percent, detail) {
    if (typeof percent !== 'number' || rec.done) return;
    this._flush();
    if (!this._native.setProgress(rec.id, percent)) return;
    const progress = percent < 0 ? 0 : percent > 100 ? 100 : percent;
    const x = extras(rec);
    if (detail !== undefined) x.detail = detail;
    if (x.watchers !== null) {
      const update = { executionId: extId(rec.id), agent: rec.agent, progress, status: 'running', detail };
      for (const w of x.watchers) w.push(update);
    }
    if (x.onProgress !== null) {
      try {
        x.onProgress({ executionId: extId(rec.id), agent: rec.agent, progress, detail });
      } catch (error) {
        this._emit('callback-error', { executionId: extId(rec.id), agent: rec.agent, error });
      }
    }
    if (rec.mode === M_WATCHED && this._events['progress-update'] !== undefined) {
      this._dirty.add(rec);
      if (!this._progressScheduled) {
        this._progressScheduled = true;
        setImmediate(this._flushProgress);
      }
    }
  }

  /** Coalesced prompt progress: one `progress-update` per reporting execution per turn. */
  _emitDirtyProgress() {
    this._progressScheduled = false;
    const dirty = [...this._dirty];
    this._dirty.clear();
    for (const rec of dirty) if (!rec.done) this._emitProgress(rec);
  }

  _emitProgress(rec) {
    this._flush();
    const v = this._native.view(rec.id);
    if (v === null || rec.done) return;
    this._emit('progress-update', {
      executionId: extId(rec.id),
      agent: rec.agent,
      progress: v.progress,
      status: v.status,
      duration: v.duration,
      detail: rec.x !== null ? rec.x.detail : undefined,
    });
  }

  // ----- timers (called from Rust through the threadsafe function) ---------------------

  _onTimers(batch) {
    this._flush();
    for (let i = 0; i + 1 < batch.length; i += 2) {
      try {
        this._onTimer(batch[i], batch[i + 1]);
      } catch (err) {
        // Only a user listener can throw here; surface it like any throwing listener
        // without leaving the batch half done (a throw back into Rust would be fatal).
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }

  _onTimer(kind, id) {
    switch (kind) {
      case K_TIMEOUT: {
        const rec = this._rec(id);
        if (rec === undefined || rec.done) {
          this._native.timeout(id, -1);
          return;
        }
        // A deferred start whose agent is not called yet: its timeout restarts at the call.
        if (rec.phase === 1 && !rec.called) return;
        const retryDelay = this._retryLeft(rec) ? this._retryDelay(rec) : -1;
        if (!this._native.timeout(id, retryDelay)) return;
        const ms = this._timeoutOf(rec);
        const err = coded(Error, 'ERR_EXECUTION_TIMEOUT', `Execution ${extId(id)} (${rec.agent}) timed out after ${ms} ms`, {
          executionId: extId(id),
          agent: rec.agent,
          timeoutMs: ms,
          attempt: rec.attempt,
        });
        this._abort(rec, err);
        if (retryDelay >= 0) {
          rec.phase = 2;
          this._emit('execution-retry', this._retryPayload(rec, err, retryDelay));
        } else {
          this._end(rec, 'failed', err);
        }
        this._launchAll(this._native.pump());
        this._checkIdle();
        return;
      }
      case K_PROGRESS: {
        const rec = this._rec(id);
        if (this._native.progressTick(id) && rec !== undefined && this._events['progress-update'] !== undefined) {
          this._emitProgress(rec);
        }
        return;
      }
      case K_GRACE:
        this._launchAll(this._native.graceExpired(id));
        return;
      case K_RETRY:
        this._launchAll(this._native.retryDue(id));
        return;
      case K_SWEEP:
        this._native.sweep();
        this._collectEvicted();
        return;
      case K_SHUTDOWN:
        this._forceShutdown();
        return;
      default:
    }
  }

  /** Whether a failed attempt of `rec` may be retried (never once shutting down). */
  _retryLeft(rec) {
    const retries = rec.x !== null && rec.x.retry !== null ? rec.x.retry.retries : this.config.retries;
    return retries > 0 && rec.attempt <= retries && !this._closing;
  }

  /** The delay before the next attempt: fixed, or doubling per attempt with jitter. */
  _retryDelay(rec) {
    const policy = rec.x !== null && rec.x.retry !== null ? rec.x.retry : this.config;
    const base = policy.retryDelayMs;
    if (policy.backoff === 'fixed') return base;
    // Exponential with "equal jitter": half fixed, half random, so retries of many
    // executions that failed together do not all come back at the same moment.
    const d = Math.min(base * 2 ** (rec.attempt - 1), MAX_MS);
    return Math.round(d / 2 + Math.random() * (d / 2));
  }

  _retryPayload(rec, err, delayMs) {
    return {
      executionId: extId(rec.id),
      agent: rec.agent,
      task: rec.task,
      attempt: rec.attempt,
      error: messageOf(err),
      errorObject: err,
      delayMs,
    };
  }

  _timeoutOf(rec) {
    return rec.x !== null && rec.x.timeoutMs !== undefined ? rec.x.timeoutMs : this._defaultTimeout;
  }

  _collectEvicted() {
    const ids = this._native.takeEvicted();
    this._dropRecords(ids, ids.length);
  }

  // ----- the record window ------------------------------------------------------------------

  _rec(id) {
    const i = id - this._base;
    const rec = i >= 0 && i < this._slots.length ? this._slots[i] : undefined;
    return rec === null ? undefined : rec;
  }

  /**
   * Ids are stored in order except when a nested sync (from a listener or callback run while
   * a batch's answers are delivered) answers a later batch first: the ids it skips are
   * padded with null, "answer pending", which the window never slides past (an `undefined`
   * slot is a dropped record).
   */
  _store(id, rec) {
    const i = id - this._base;
    if (i === this._slots.length) this._slots.push(rec);
    else if (i >= 0) {
      while (this._slots.length < i) this._slots.push(null);
      this._slots[i] = rec;
    }
  }

  /** Forgets the records retention dropped; slides the window past the dropped prefix. */
  _dropRecords(ids, n) {
    const slots = this._slots;
    for (let k = 0; k < n; k++) {
      const i = ids[k] - this._base;
      if (i >= 0 && i < slots.length) slots[i] = undefined;
    }
    let head = this._head;
    while (head < slots.length && slots[head] === undefined) head++;
    this._head = head;
    if (head > 1024 && head * 2 > slots.length) {
      this._slots = slots.slice(head);
      this._base += head;
      this._head = 0;
    }
  }

  // ----- idle ----------------------------------------------------------------------------

  _checkIdle() {
    if (this._busy && this._batch.n === 0 && this._native.isIdle()) this._onIdle();
  }

  _onIdle() {
    if (!this._busy) return;
    this._busy = false;
    BUSY.delete(this);
    this._emit('idle', { timestamp: Date.now() });
    const waiters = this._idleWaiters;
    if (waiters.length > 0) {
      this._idleWaiters = [];
      for (const w of waiters) w();
    }
    if (this._closing && !this._shutdownDone) this._finishShutdown(false);
  }

  // ----- run-time control ----------------------------------------------------------------

  setConcurrency(n) {
    if (n === undefined) throw typeError('setConcurrency: n must be an integer >= 1, got undefined');
    integer('setConcurrency: n', n, 1, MAX_INT32, 1);
    this._flush();
    this._launchAll(this._native.setConcurrency(n));
    return this;
  }

  pause() {
    this._flush();
    this._native.setPaused(true);
    this._emit('queue-paused', { queued: this._native.counts().queued });
    return this;
  }

  resume() {
    this._flush();
    const started = this._native.setPaused(false);
    this._emit('queue-unpaused', { started: started.length });
    this._launchAll(started);
    return this;
  }

  // ----- throttling (samples from the resource monitor) ------------------------------------

  _applySample(sample) {
    if (this._shutdownDone) return;
    this._flush();
    const { transition, started } = this._native.observeSample(sample.cpu, sample.memory, this.config.throttleIfExceeded);
    if (transition === 0) return;
    const c = this._native.counts();
    if (transition === 1) {
      this._emit('queue-throttled', {
        reason: sample.exceeded,
        resources: { cpu: sample.cpu, memory: sample.memory },
        running: c.running,
        queued: c.queued,
        minConcurrentAgents: this.config.minConcurrentAgents,
        timestamp: sample.timestamp,
      });
    } else {
      this._emit('queue-resumed', {
        resources: { cpu: sample.cpu, memory: sample.memory },
        running: c.running,
        queued: c.queued,
        started: started.length,
        timestamp: sample.timestamp,
      });
    }
    this._launchAll(started);
  }

  // ----- queries -----------------------------------------------------------------------

  getExecutionStatus(executionId) {
    this._flush();
    const id = parseId(executionId);
    const v = id === 0 ? null : this._native.view(id);
    const rec = v === null ? undefined : this._rec(id);
    if (rec === undefined) return { found: false };
    return this._statusObject(rec, v);
  }

  _statusObject(rec, v) {
    const status = rec.done ? rec.status : v.status;
    const completed = status === 'completed';
    const failed = rec.done && !completed;
    const out = {
      found: true,
      id: extId(rec.id),
      executionId: extId(rec.id),
      agent: rec.agent,
      task: rec.task,
      mode: MODE_NAMES[rec.mode],
      priority: rec.priority,
      status,
      attempt: rec.attempt,
      progress: completed ? 100 : v.progress,
      started: v.submittedAt,
      duration: v.duration,
      result: completed ? rec.value : null,
      error: failed ? messageOf(rec.value) : null,
      errorObject: failed ? rec.value : undefined,
      startedAt: v.startedAt == null ? undefined : v.startedAt,
      finishedAt: v.finishedAt == null ? undefined : v.finishedAt,
    };
    if (status === 'queued') out.queuePosition = v.queuePosition;
    return out;
  }

  getQueueStatus() {
    this._flush();
    const c = this._native.counts();
    const queue = [];
    for (const id of this._native.queueOrder()) {
      const rec = this._rec(id);
      if (rec !== undefined) queue.push({ id: extId(id), agent: rec.agent, priority: rec.priority, mode: MODE_NAMES[rec.mode] });
    }
    return {
      queued: c.queued,
      running: c.running,
      max_concurrent: c.maxConcurrent,
      slots_used: c.slotsUsed,
      paused: c.paused,
      throttled: c.throttled,
      queue,
    };
  }

  getActiveExecutions() {
    this._flush();
    const out = [];
    for (const id of this._native.runningIds()) {
      const rec = this._rec(id);
      const v = this._native.view(id);
      if (rec === undefined || v === null) continue;
      out.push({
        id: extId(id),
        executionId: extId(id),
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        priority: rec.priority,
        progress: v.progress,
        duration: v.duration,
        startedAt: v.startedAt,
      });
      if (this._commands !== null) {
        const usage = this._commands.usageOf(extId(id));
        if (usage !== null) Object.assign(out[out.length - 1], usage);
      }
    }
    return out;
  }

  getStatus() {
    this._flush();
    const c = this._native.counts();
    return {
      initialized: this._initialized,
      running: c.running,
      queued: c.queued,
      max_concurrent: c.maxConcurrent,
      active_processes: c.running,
      command_processes: this._commands === null ? 0 : this._commands.live,
      slots_used: c.slotsUsed,
      paused: c.paused,
      throttled: c.throttled,
      shutting_down: this._closing,
      submitted: c.submitted,
      completed: c.completed,
      failed: c.failed,
      cancelled: c.cancelled,
      retained: c.retained,
      agents: [...this._agents.keys()],
      resources: this.resourceMonitor.getStatus(),
    };
  }

  /** Resolves with the status object (§6) once the execution has finished. */
  waitFor(executionId) {
    if (typeof executionId !== 'string') {
      return rejected(typeError(`executionId must be a string, got ${describe(executionId)}`));
    }
    this._flush();
    const id = parseId(executionId);
    const rec = id === 0 ? undefined : this._rec(id);
    if (rec === undefined || this._native.statusOf(id) < 0) return Promise.resolve({ found: false });
    if (rec.done) return Promise.resolve(this.getExecutionStatus(executionId));
    return new Promise((resolve) => {
      const x = extras(rec);
      if (x.waiters === null) x.waiters = [];
      x.waiters.push(resolve);
    });
  }

  /** Resolves waiters with the final status (read before retention can drop it). */
  _notifyWaiters(rec) {
    const waiters = rec.x.waiters;
    rec.x.waiters = null;
    const v = this._native.viewFinished(rec.id);
    const snapshot = v === null ? { found: false } : this._statusObject(rec, v);
    for (const w of waiters) w(snapshot);
  }

  /**
   * An async iterator over an execution's progress: first where it stands now, then each
   * report (`{ executionId, agent, progress, status, detail }`), ending with its final
   * status object (§6):
   * `for await (const update of bg.watch(id)) …`. For an unknown or expired id it yields
   * `{ found: false }` and ends; for a finished one, its status.
   */
  watch(executionId) {
    if (typeof executionId !== 'string') throw typeError(`executionId must be a string, got ${describe(executionId)}`);
    const watch = new Watch();
    this._flush();
    const id = parseId(executionId);
    const rec = id === 0 ? undefined : this._rec(id);
    if (rec === undefined || this._native.statusOf(id) < 0) watch.end({ found: false });
    else if (rec.done) watch.end(this.getExecutionStatus(executionId));
    else {
      // Start with where it stands now, so a late watcher is not left waiting.
      const v = this._native.view(id);
      watch.push({
        executionId,
        agent: rec.agent,
        progress: v !== null ? v.progress : 0,
        status: v !== null ? v.status : 'queued',
        detail: rec.x !== null ? rec.x.detail : undefined,
      });
      const x = extras(rec);
      if (x.watchers === null) x.watchers = [];
      x.watchers.push(watch);
      if (x.waiters === null) x.waiters = [];
      x.waiters.push((final) => {
        x.watchers = null;
        watch.end(final);
      });
      watch.onReturn = () => {
        if (x.watchers !== null) x.watchers = x.watchers.filter((w) => w !== watch);
      };
    }
    return watch;
  }

  /**
   * Counts by status, executions finished in the last minute, and per agent the queue-wait
   * and run-time percentiles (ms, from bounded histograms kept in Rust: ±12.5 %).
   */
  getStats() {
    this._flush();
    const c = this._native.counts();
    const st = this._native.stats();
    return {
      counts: {
        submitted: c.submitted,
        queued: c.queued,
        running: c.running,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
      },
      throughput: { lastMinute: st.lastMinute, perSecond: Math.round((st.lastMinute / 60) * 100) / 100 },
      agents: st.agents.map((a) => ({
        agent: this._agentNames[a.key],
        queueWait: a.wait,
        runTime: a.run,
      })),
    };
  }

  /** Resolves once nothing is queued or running. */
  onIdle() {
    this._flush();
    if (this._native.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this._idleWaiters.push(resolve));
  }

  // ----- aggregation ---------------------------------------------------------------------

  async executeMultiple(agents, task, options) {
    if (!isArray(agents) || agents.length === 0) {
      throw typeError(`agents must be a non-empty array of agent names, got ${describe(agents)}`);
    }
    for (let i = 0; i < agents.length; i++) {
      if (typeof agents[i] !== 'string' || agents[i] === '') {
        throw typeError(`agents[${i}] must be a non-empty string, got ${describe(agents[i])}`);
      }
    }
    const check = options !== undefined && options !== null && typeof options === 'object' ? options.consistencyCheck : undefined;
    if (check !== undefined && typeof check !== 'function') {
      throw typeError(`options.consistencyCheck must be a function, got ${describe(check)}`);
    }
    // The first submission validates task and options, so a bad call submits nothing.
    const recs = [this._submit(M_AGGREGATE, agents[0], task, options)];
    for (let i = 1; i < agents.length; i++) recs.push(this._submit(M_AGGREGATE, agents[i], task, options));
    const finished = recs.map((rec) => new Promise((resolve) => (extras(rec).waiters = [resolve])));
    this._flush();
    const aggregationId = `agg-${++this._aggregations}`;
    this._emit('aggregation-started', { aggregationId, agents: [...agents], task, executionIds: recs.map((r) => extId(r.id)) });
    const snapshots = await Promise.all(finished);
    const results = snapshots.map((s, i) => {
      const rec = recs[i];
      const ok = rec.status === 'completed';
      return {
        id: extId(rec.id),
        agent: rec.agent,
        status: rec.status,
        result: ok ? rec.value : null,
        error: ok ? null : messageOf(rec.value),
        errorObject: ok ? undefined : rec.value,
        duration: s.found ? s.duration : 0,
      };
    });
    const consistent = this._consistency(results, check);
    const r = binding.aggregateReport(
      results.map((x) => x.status === 'completed'),
      results.map((x) => x.duration),
    );
    const report = {
      total: r.total,
      successful: r.successful,
      failed: r.failed,
      success_rate: r.successRate,
      total_duration: r.totalDuration,
      average_duration: r.averageDuration,
      consistency: consistent,
      timestamp: new Date().toISOString(),
    };
    this._emit('aggregation-completed', { aggregationId, results, report });
    return { aggregationId, results, consistent, report };
  }

  _consistency(results, check) {
    const failures = results.filter((r) => r.status !== 'completed');
    if (failures.length > 0) {
      return {
        consistent: false,
        reason: `${failures.length} of ${results.length} executions did not succeed`,
        failures: failures.map((f) => ({ id: f.id, agent: f.agent, status: f.status, error: f.error })),
      };
    }
    if (check === undefined) return { consistent: true, all_succeeded: true };
    let verdict;
    try {
      verdict = check(results);
    } catch (err) {
      return { consistent: false, reason: `consistencyCheck threw: ${messageOf(err)}`, failures: [] };
    }
    if (verdict === true) return { consistent: true, all_succeeded: true };
    if (verdict === false) return { consistent: false, reason: 'consistencyCheck returned false', failures: [] };
    if (verdict !== null && typeof verdict === 'object') {
      if (verdict.consistent === true) return { consistent: true, all_succeeded: true, reason: verdict.reason };
      return { consistent: false, reason: verdict.reason || 'consistencyCheck reported an inconsistency', failures: [] };
    }
    return { consistent: false, reason: `consistencyCheck returned ${describe(verdict)}`, failures: [] };
  }

  // ----- shutdown ------------------------------------------------------------------------

  /**
   * `mode: 'cancel'` (default) cancels the queue visibly and lets running agents finish;
   * `'drain'` runs the queue to the end. After `timeoutMs`, whatever still runs is aborted
   * and cancelled. Resolves after `shutdown-complete`; later calls return the same promise.
   */
  shutdown(options) {
    if (this._shutdownPromise !== null) return this._shutdownPromise;
    let mode = 'cancel';
    let timeoutMs;
    try {
      ({ mode, timeoutMs } = shutdownOptions(options));
    } catch (err) {
      return rejected(err);
    }
    this._flush();
    this._closing = true;
    this._shutdownPromise = new Promise((resolve) => {
      this._shutdownResolve = resolve;
    });
    const c = this._native.counts();
    this._emit('shutting-down', { running: c.running, queued: c.queued, mode, timeoutMs });
    for (const id of this._native.close(mode === 'cancel')) {
      const rec = this._rec(id);
      if (rec !== undefined) {
        if (!rec.done) this._end(rec, 'cancelled', this._shutdownError(rec));
      } else {
        // Submitted in a batch whose answers are still being delivered (shutdown() called
        // from a listener or callback): ended when its answer arrives.
        if (this._earlyCancels === null) this._earlyCancels = new Set();
        this._earlyCancels.add(id);
      }
    }
    if (this._native.isIdle()) this._finishShutdown(false);
    else if (timeoutMs !== undefined) this._native.armShutdownTimer(timeoutMs);
    return this._shutdownPromise;
  }

  _shutdownError(rec) {
    return coded(Error, 'ERR_EXECUTOR_SHUT_DOWN', `Execution ${extId(rec.id)} (${rec.agent}) was cancelled by shutdown`, {
      executionId: extId(rec.id),
      agent: rec.agent,
    });
  }

  _forceShutdown() {
    if (this._shutdownDone) return;
    this._flush();
    for (const id of this._native.abortAll()) {
      const rec = this._rec(id);
      if (rec === undefined || rec.done) continue;
      const err = this._shutdownError(rec);
      this._abort(rec, err);
      this._end(rec, 'cancelled', err);
    }
    this._deferred = [];
    this._finishShutdown(true);
  }

  _finishShutdown(forced) {
    if (this._shutdownDone) return;
    this._shutdownDone = true;
    BUSY.delete(this);
    this.resourceMonitor.off('sample', this._onSample);
    this.resourceMonitor.off('threshold-exceeded', this._onThreshold);
    this.resourceMonitor.stop();
    const c = this._native.counts();
    this._native.dispose();
    this._collectEvicted();
    this._emit('shutdown-complete', {
      forced,
      completed: c.completed,
      failed: c.failed,
      cancelled: c.cancelled,
      timestamp: Date.now(),
    });
    this._shutdownResolve();
  }

  // ----- events ----------------------------------------------------------------------------

  /** Emits without letting a throwing listener break the executor's bookkeeping. */
  _emit(name, payload) {
    if (this._events[name] === undefined) return;
    try {
      this.emit(name, payload);
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
    }
  }
}

/** Validates `shutdown(options)`; reads each option once. */
function shutdownOptions(options) {
  if (options === undefined || options === null) return { mode: 'cancel', timeoutMs: undefined };
  if (!isPlainObject(options)) throw typeError(`shutdown options must be an object, got ${describe(options)}`);
  const mode = options.mode;
  const timeout = options.timeoutMs;
  if (mode !== undefined && mode !== 'cancel' && mode !== 'drain') {
    const Err = typeof mode === 'string' ? RangeError : TypeError;
    throw coded(Err, 'ERR_INVALID_ARG', `options.mode must be "cancel" or "drain", got ${describe(mode)}`);
  }
  return {
    mode: mode === undefined ? 'cancel' : mode,
    timeoutMs: integer('options.timeoutMs', timeout, 0, MAX_MS, undefined),
  };
}

const BASE_SPAWN = BackgroundExecutor.prototype.spawnAgentProcess;

// V8 drops an object layout (hidden class) once no live object uses it, and with it the
// optimised code specialised for it. When the last executor and its records are collected
// and a new executor starts (the benchmark does this before each run; so may a program with
// short-lived executors), the hot path would run unoptimised again until V8 re-learns it
// (10k executions on a fresh executor: ~3 µs each instead of ~0.6). One idle, shut-down
// executor (no native resources left) and one record of each kind, made when the first
// executor is, keep those layouts alive for the process.
let shapeAnchors = null;
function keepShapes() {
  shapeAnchors = [];
  const rec = new Execution(M_EXECUTE, '', '', undefined, '');
  shapeAnchors.push(rec, new Extras(), new AgentContext(null, rec), new Batch());
  try {
    const donor = new BackgroundExecutor();
    donor.shutdown();
    shapeAnchors.push(donor);
  } catch {
    // Only an optimisation.
  }
}

module.exports = { BackgroundExecutor, MODE_NAMES, STATUS_NAMES };

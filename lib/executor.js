'use strict';

// The public class. State lives in the Rust core (see core-link.js); this file holds the API:
// registration, the submission modes, cancellation, run-time control, and the entry points
// of queries, watching, aggregation and shutdown, each in its own file.

const { Lifecycle } = require('./lifecycle.js');
const { Execution, Extras, AgentContext, extras, isDurable, parseId } = require('./record.js');
const { Batch } = require('./core-link.js');
const { spawnAgentProcess } = require('./agents.js');
const { parseConfig } = require('./config.js');
const { integer, name, MAX_INT32 } = require('./validate.js');
const { limitsOf, limitKey, applyAgentLimits, applyRateLimit } = require('./limits.js');
const { coded, describe, typeError, cancelledError } = require('./errors.js');
const { reportListenerChanges } = require('./events.js');
const { ResourceMonitor } = require('./monitor.js');
const { CommandRunner, commandAgent } = require('./command.js');
const { parseCommandSpec } = require('./command-spec.js');
const queries = require('./queries.js');
const { waitFor, watch, watchStored } = require('./watch.js');
const { executeMultiple } = require('./aggregate.js');
const { shutdown, forceShutdown, shutdownMayFinish } = require('./shutdown.js');
const { Durable, parseDurableId } = require('./durable/durable.js');
const P = require('./protocol.js');

const { MODE_FIRE, MODE_CALLBACK, MODE_WATCHED, MODE_EXECUTE, MODE_NAMES, STATUS_NAMES, NOT_FOUND } = P;
const { THROTTLE_UNCHANGED, THROTTLE_BEGAN } = P;

// `new Promise(captureResolvers)` hands its resolvers over without allocating a closure per
// promise (Node 20 has no Promise.withResolvers).
let capturedResolve = null;
let capturedReject = null;
function captureResolvers(resolve, reject) {
  capturedResolve = resolve;
  capturedReject = reject;
}

function executionIdArg(executionId) {
  if (typeof executionId !== 'string') throw typeError(`executionId must be a string, got ${describe(executionId)}`);
}

/** The longest initialize() waits for the resource monitor's first sample (ms). */
const FIRST_SAMPLE_WAIT_MS = 250;

class BackgroundExecutor extends Lifecycle {
  constructor(config) {
    const cfg = parseConfig(config);
    super(cfg);
    this.config = cfg;
    this._levels = cfg.priorityLevels;
    this._commands = null; // CommandRunner, made by the first registerCommand
    this._initialized = false;
    this._sampled = Promise.resolve(); // the first sample, once the monitor has started (see _start)
    /** @type {{ timer: NodeJS.Timeout, done: () => void } | null} while the first sample is awaited */
    this._sampleWait = null;
    this._idleWaiters = [];
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
    if (cfg.store !== null) this._store = new Durable(this, cfg.store);
    if (shapeAnchors === null) keepShapes();
  }

  // ----- lifecycle ---------------------------------------------------------------------

  /**
   * Starts the resource monitor, and with a store waits until the store is open (rejecting
   * with `ERR_STORE` / `ERR_STORE_VERSION` when it cannot be). With a store, an executor
   * initialized this way is a worker: it keeps Node.js running, waiting for work from
   * other processes, until `shutdown()`. Idempotent; resolves to the executor.
   */
  initialize() {
    if (this._store !== null && !this._closing) {
      this._store.worker = true;
      this._start();
      this._store._updateKeepAlive();
      // The globalConcurrency limits given so far are in the store once it resolves.
      return Promise.all([this._store.opened.then(() => Promise.all(this._store.limitWrites)), this._awaitSample()]).then(() => this);
    }
    this._start();
    return this._awaitSample().then(() => this);
  }

  /** The first sample, for initialize(): till then its timer keeps Node.js alive. */
  _awaitSample() {
    if (this._sampleWait !== null) this._sampleWait.timer.ref();
    return this._sampled;
  }

  _start() {
    if (!this._initialized && !this._closing) {
      this._initialized = true;
      // The monitor samples at once: initialize() resolves once that first sample has set the
      // throttle, or after FIRST_SAMPLE_WAIT_MS, or when the monitor stops. A submission starts
      // the monitor too, and then nothing waits: the timer holds Node.js only for initialize().
      this._sampled = new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.resourceMonitor.off('sample', done);
          this._sampleWait = null;
          resolve();
        };
        const timer = setTimeout(done, FIRST_SAMPLE_WAIT_MS).unref();
        this._sampleWait = { timer, done };
        this.resourceMonitor.on('sample', done);
      });
      this.resourceMonitor.start();
      this._emit('initialized', {
        maxConcurrentAgents: this._native.counts().maxConcurrent,
        priorityLevels: Object.fromEntries(this._levels),
      });
    }
  }

  // ----- agents ------------------------------------------------------------------------

  /** `limits`: `{ concurrency, rateLimit }` of this agent, as `setAgentLimits` takes them. */
  registerAgent(agentName, fn, limits) {
    name('registerAgent: name', agentName);
    if (typeof fn !== 'function') throw typeError(`registerAgent: agent must be a function, got ${describe(fn)}`);
    const changes = limits === undefined ? null : limitsOf('registerAgent: limits', limits);
    const key = changes === null ? 0 : limitKey(this, agentName, changes);
    // Registered first: what the limits let start at once runs this function.
    this._agents.set(agentName, fn);
    if (changes !== null) applyAgentLimits(this, agentName, changes, key);
    if (this._store !== null) this._store.interestChanged();
    return this;
  }

  /**
   * Registers a command agent: a program run from Rust, without a shell, in its own process
   * group. `spec` is a command spec (see command-spec.js) or a function
   * `(task, options) => spec` (or a promise of one) called per execution.
   */
  registerCommand(agentName, spec, limits) {
    name('registerCommand: name', agentName);
    if (process.platform === 'win32') {
      // Killing a whole process tree needs a Job Object there, which is not built yet.
      throw coded(Error, 'ERR_UNSUPPORTED_PLATFORM', 'registerCommand: command agents are not supported on Windows yet; use a function agent that spawns the program', { platform: process.platform });
    }
    const fixed = typeof spec === 'function' ? spec : parseCommandSpec(spec, 'registerCommand: spec');
    const changes = limits === undefined ? null : limitsOf('registerCommand: limits', limits);
    const key = changes === null ? 0 : limitKey(this, agentName, changes);
    if (this._commands === null) this._commands = new CommandRunner(this);
    this._agents.set(agentName, commandAgent(this._commands, agentName, fixed));
    if (changes !== null) applyAgentLimits(this, agentName, changes, key);
    if (this._store !== null) this._store.interestChanged();
    return this;
  }

  /**
   * Changes the limits of `agentName` (registered or not): `{ concurrency, rateLimit }`; a
   * key left out keeps its value, null removes that limit. Executions it allows start now.
   */
  setAgentLimits(agentName, limits) {
    name('setAgentLimits: name', agentName);
    applyAgentLimits(this, agentName, limitsOf('setAgentLimits: limits', limits));
    return this;
  }

  /** Sets the global rate limit `{ max, intervalMs }`, or removes it with null. */
  setRateLimit(limit) {
    if (limit === undefined) throw typeError('setRateLimit: limit must be { max, intervalMs } or null, got undefined');
    applyRateLimit(this, limit, 'setRateLimit: limit');
    return this;
  }

  unregisterAgent(agentName) {
    name('unregisterAgent: name', agentName);
    const had = this._agents.delete(agentName);
    if (this._store !== null) this._store.interestChanged();
    return had;
  }

  /**
   * The running agent of core id `id` needs up to `ms` to stop once signalled (a command
   * agent's process: killGraceMs and its pipes): its slot's grace period is at least that.
   */
  _needsGrace(id, ms) {
    this._native.setMinGrace(id, ms);
  }

  /**
   * An execution's kept value is `from`: keep `to` instead (command output dropped). `kept`:
   * its core id, and its row's id when stored (0 otherwise).
   */
  _replaceRetained(kept, from, to) {
    const rec = this._records.get(kept.coreId);
    if (rec !== undefined && rec.value === from) rec.value = to;
    if (kept.rowId === 0 || this._store === null) return;
    if (rec !== undefined && isDurable(rec) && rec.x.durable.value === from) rec.x.durable.value = to;
    this._store.replaceKept(kept.rowId, from, to);
  }

  /** Output lines of command agents cross from Rust only while someone listens to them. */
  _listenersChanged(event) {
    if ((event === 'command-output' || event === undefined) && this._commands !== null) this._commands.syncForward();
  }

  // ----- submission --------------------------------------------------------------------

  fireAndForget(agent, task, options) {
    return this._submitReturningId(MODE_FIRE, agent, task, options, null);
  }

  executeWithCallback(agent, task, callback, options) {
    if (callback !== undefined && callback !== null && typeof callback !== 'function') {
      return Promise.reject(typeError(`callback must be a function, null or undefined, got ${describe(callback)}`));
    }
    return this._submitReturningId(MODE_CALLBACK, agent, task, options, callback || null);
  }

  executeWatched(agent, task, options) {
    return this._submitReturningId(MODE_WATCHED, agent, task, options, null);
  }

  /** Runs one execution and resolves with the agent's own return value. */
  execute(agent, task, options) {
    let rec;
    try {
      rec = this._submit(MODE_EXECUTE, agent, task, options);
    } catch (err) {
      return Promise.reject(err);
    }
    const promise = new Promise(captureResolvers);
    rec.resolve = capturedResolve;
    rec.reject = capturedReject;
    return promise;
  }

  /** Resource limits hold without initialize(): the monitor starts with the first submission. */
  _submit(mode, agent, task, options) {
    const rec = super._submit(mode, agent, task, options);
    if (!this._initialized) this._start();
    return rec;
  }

  _submitReturningId(mode, agent, task, options, callback) {
    let rec;
    try {
      rec = this._submit(mode, agent, task, options);
    } catch (err) {
      return Promise.reject(err);
    }
    rec.callback = callback;
    // Resolved with the id and the real status once the core has answered, before the agent
    // is called: the agent's synchronous code never runs inside this call.
    return new Promise((resolve, reject) => {
      const x = extras(rec);
      x.admitted = resolve;
      x.refused = reject;
    });
  }

  executeMultiple(agents, task, options) {
    return executeMultiple(this, agents, task, options);
  }

  // ----- cancellation ------------------------------------------------------------------

  /**
   * Cancels a queued or running execution. A running one is cancelled at once (its signal
   * aborted, its late result discarded); its slot is freed when its agent settles or after
   * `cancelGraceMs`, whichever comes first.
   */
  cancelExecution(executionId) {
    try {
      executionIdArg(executionId);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._store !== null && parseDurableId(executionId) !== 0) return this._store.cancel(executionId);
    this._flush();
    const id = parseId(executionId);
    const rec = id === 0 ? undefined : queries.recordOf(this, id);
    if (rec === undefined) return Promise.resolve({ success: false, error: 'Execution not found' });
    const was = this._cancelRec(rec, cancelledError(executionId, rec.agent));
    if (was === NOT_FOUND) return Promise.resolve({ success: false, error: 'Execution not found' });
    if (was === P.STATUS_QUEUED || was === P.STATUS_WAITING || was === P.STATUS_RUNNING) {
      return Promise.resolve({ success: true, executionId, previousStatus: STATUS_NAMES[was] });
    }
    return Promise.resolve({ success: false, error: `Cannot cancel execution in ${STATUS_NAMES[was]} status` });
  }

  // ----- run-time control ----------------------------------------------------------------

  setConcurrency(n) {
    if (n === undefined) throw typeError('setConcurrency: n must be an integer >= 1, got undefined');
    integer('setConcurrency: n', n, 1, MAX_INT32, 1);
    this._flush();
    this._launchAll(this._native.setConcurrency(n));
    this._slotsMayHaveFreed();
    return this;
  }

  pause() {
    // Once shutdown() has begun, nothing is paused: a drain runs the queue to its end.
    if (this._closing) return this;
    this._flush();
    if (this._native.counts().paused) return this; // already paused: no change, no event
    this._native.setPaused(true);
    if (this._store !== null) this._store.link.reviewParked();
    this._emit('queue-paused', { queued: this._native.counts().queued });
    return this;
  }

  resume() {
    this._flush();
    if (!this._native.counts().paused) return this; // not paused: no change, no event
    const started = this._native.setPaused(false);
    this._emit('queue-unpaused', { started: started.length });
    this._launchAll(started);
    this._slotsMayHaveFreed();
    return this;
  }

  /** A resource sample: throttling begins or ends when a threshold is crossed. */
  _applySample(sample) {
    if (this._shutdownDone) return;
    this._flush();
    const exceeded = sample.exceeded.length > 0 && this.config.throttleIfExceeded;
    const { transition, started } = this._native.observeSample(exceeded);
    if (transition === THROTTLE_UNCHANGED) return;
    const c = this._native.counts();
    const resources = { cpu: sample.cpu, memory: sample.memory };
    if (transition === THROTTLE_BEGAN) {
      this._emit('queue-throttled', {
        reason: sample.exceeded,
        resources,
        running: c.running,
        queued: c.queued,
        minConcurrentAgents: this.config.minConcurrentAgents,
        timestamp: sample.timestamp,
      });
    } else {
      this._emit('queue-resumed', {
        resources,
        running: c.running,
        queued: c.queued,
        started: started.length,
        timestamp: sample.timestamp,
      });
    }
    this._launchAll(started);
    this._slotsMayHaveFreed();
  }

  /** More slots (resume, a throttle lifted, a higher concurrency): claim stored work for them. */
  _slotsMayHaveFreed() {
    if (this._store !== null) this._store.link.wantClaim();
  }

  // ----- queries -------------------------------------------------------------------------

  getExecutionStatus(executionId) {
    if (this._store !== null) {
      const rowId = parseDurableId(executionId);
      if (rowId !== 0) return this._store.localStatus(rowId);
    }
    return queries.executionStatus(this, executionId);
  }

  /**
   * The status of any execution: with a store, read from it (an execution of any process);
   * otherwise what `getExecutionStatus` says.
   */
  fetchExecutionStatus(executionId) {
    try {
      executionIdArg(executionId);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._store !== null && parseDurableId(executionId) !== 0) return this._store.fetch(executionId);
    return Promise.resolve(this.getExecutionStatus(executionId));
  }

  /** `PRAGMA integrity_check` of the store ("ok" when sound); null without a store. */
  checkStore() {
    return this._store === null ? Promise.resolve(null) : this._store.integrityCheck();
  }

  getQueueStatus() {
    return queries.queueStatus(this);
  }

  getActiveExecutions() {
    return queries.activeExecutions(this);
  }

  getStatus() {
    return queries.executorStatus(this);
  }

  getStats() {
    return queries.stats(this);
  }

  /** Resolves with the status object once the execution has finished. */
  waitFor(executionId) {
    try {
      executionIdArg(executionId);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this._store !== null && parseDurableId(executionId) !== 0) return this._store.waitFor(executionId);
    return waitFor(this, executionId);
  }

  /**
   * An async iterator over an execution's progress: first where it stands now, then each
   * report (`{ executionId, agent, progress, status, detail }`), ending with its final status
   * object. For an unknown or expired id it yields `{ found: false }` and ends.
   */
  watch(executionId) {
    executionIdArg(executionId);
    if (this._store !== null && parseDurableId(executionId) !== 0) return watchStored(this, executionId);
    return watch(this, executionId);
  }

  /**
   * Resolves once fewer than `n` executions wait in the queue (at once if they already do):
   * a producer's way to wait instead of meeting `maxQueued`.
   */
  onQueueSizeLessThan(n) {
    try {
      if (n === undefined) throw typeError('onQueueSizeLessThan: n must be an integer >= 1, got undefined');
      integer('onQueueSizeLessThan: n', n, 1, Number.MAX_SAFE_INTEGER, 1);
    } catch (err) {
      return Promise.reject(err);
    }
    this._flush();
    if (this._native.counts().queued < n) return Promise.resolve();
    return new Promise((resolve) => this._queueWaiters.push({ n, resolve }));
  }

  /** Resolves once nothing is queued or running. */
  onIdle() {
    this._flush();
    if (this._native.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this._idleWaiters.push(resolve));
  }

  _becameIdle() {
    this._emit('idle', { timestamp: Date.now() });
    const waiters = this._idleWaiters;
    if (waiters.length > 0) {
      this._idleWaiters = [];
      for (const w of waiters) w();
    }
    shutdownMayFinish(this);
  }

  // ----- shutdown ------------------------------------------------------------------------

  /**
   * `mode: 'cancel'` (default) cancels the queue visibly and lets running agents finish;
   * `'drain'` runs the queue to the end. After `timeoutMs`, whatever still runs is aborted
   * and cancelled. Resolves after `shutdown-complete`; later calls return the same promise.
   */
  shutdown(options) {
    return shutdown(this, options);
  }

  _forceShutdown() {
    forceShutdown(this);
  }

  _shutdownMayFinish() {
    shutdownMayFinish(this);
  }

  _stopMonitor() {
    if (this._sampleWait !== null) this._sampleWait.done();
    this.resourceMonitor.off('sample', this._onSample);
    this.resourceMonitor.off('threshold-exceeded', this._onThreshold);
    this.resourceMonitor.stop();
  }
}

/** The old extension point; see agents.js. */
BackgroundExecutor.prototype.spawnAgentProcess = spawnAgentProcess;
reportListenerChanges(BackgroundExecutor);

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
  const rec = new Execution(MODE_EXECUTE, '', '', undefined, '');
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

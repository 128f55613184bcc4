'use strict';

// One execution's way through the executor, on top of the link to the core:
//
//   _submit ─sync─> _admit (id, record) ─> _submitted ─> _launch ─> callAttempt (agents.js)
//      agent settles ─> _agentSettled ─sync─> _settled ─> _complete | _end | retry wait
//
// plus what can happen to it on the way: cancellation, signals, progress reports and the
// core's timers (timeout, progress tick, grace, retry, retention sweep, shutdown deadline).

const { CoreLink } = require('./core-link.js');
const { callAttempt, canRun } = require('./agents.js');
const { Watchers } = require('./watch.js');
const { followKey, leave, keyEnded } = require('./keys.js');
const { SubmitRules } = require('./options.js');
const { isInstance } = require('./validate.js');
const { extras, extId, idOf, isDurable, attemptOf } = require('./record.js');
const { messageOf, codeOf, coded, describe, typeError, closedError, cancelledError, timeoutError, agentNotFound } = require('./errors.js');
const { rethrowLater } = require('./events.js');
const { follow, unfollow } = require('./signals.js');
const P = require('./protocol.js');

const { OP_SUBMIT, OP_SETTLE_OK, OP_SETTLE_FAILED, SUBMIT_KEY_SHIFT, SUBMIT_HELD, MODE_NAMES, MAX_AGENT_KEYS } = P;
const { MODE_WATCHED, MODE_EXECUTE, MODE_AGGREGATE, RETRY_NONE, TIMEOUT_STALE } = P;

/** `<mode>-started` events, emitted when a submission is answered (execute() has none). */
const MODE_EVENTS = ['fire-and-forget-started', 'async-callback-started', 'watched-started'];

/** Agent starts per event-loop turn before the executor yields (setImmediate). */
const START_BUDGET = 1024;


/** Whether `options.signal` is an AbortSignal already aborted (a bad one is refused later). */
function abortedAlready(options) {
  try {
    const signal = options.signal;
    return isInstance(signal, AbortSignal) && signal.aborted === true;
  } catch {
    return false;
  }
}
class Lifecycle extends CoreLink {
  constructor(config) {
    super(config);
    this._rules = new SubmitRules(config);
    this._agents = config.agents;
    this._defaultAgent = config.defaultAgent;
    // Agent names -> small keys for the core's per-agent statistics (0 = "other").
    this._agentKeys = new Map();
    this._agentNames = ['(other)'];
    this._hasAgentLimits = false; // set by the first setAgentLimits (limits.js)
    this._globalLimits = new Map(); // agent -> the globalConcurrency this executor set in the store
    this._closing = false;
    this._budget = START_BUDGET;
    this._deferred = []; // rec, attempt, rec, attempt, ...: starts past the budget
    this._yieldScheduled = false;
    this._resumeDeferred = () => this._runDeferred();
    this._dirty = new Set(); // watched executions with a progress report to emit this turn
    this._keys = new Map(); // options.key -> the queued or running execution holding it
    this._progressScheduled = false;
    this._flushProgress = () => this._emitDirtyProgress();
  }

  /** The shutdown deadline passed. */
  _forceShutdown() {
    throw new Error('implemented by BackgroundExecutor');
  }

  // ----- submission --------------------------------------------------------------------

  /** Validates a submission and records it in the current batch. */
  /** `options.durable`, checked: true, false or undefined. */
  _durableOption(options) {
    const durable = options.durable;
    if (durable !== undefined && durable !== true && durable !== false) {
      throw typeError(`options.durable must be a boolean, got ${describe(durable)}`);
    }
    if (durable === true && this._store === null) {
      throw coded(RangeError, 'ERR_NO_STORE', 'options.durable is true but the executor has no store (config.store)');
    }
    return durable;
  }

  _submit(mode, agent, task, options) {
    // executeMultiple's executions stay in memory: its report is this process's answer.
    let stored = this._store !== null && mode !== MODE_AGGREGATE;
    if (options !== undefined && options !== null) {
      if (this._durableOption(options) === false) stored = false;
      // Cancelled before it was made: nothing may run it, here or elsewhere, so it is not
      // stored; it is recorded and cancelled in memory, whatever agents this process has.
      else if (stored && abortedAlready(options)) return this._submitHere(mode, agent, task, options, false);
    }
    if (stored) return this._store.submit(mode, agent, task, options);
    return this._submitHere(mode, agent, task, options, mode !== MODE_AGGREGATE);
  }

  /** An in-memory submission; `needsAgent`: refused unless an agent here can run it. */
  _submitHere(mode, agent, task, options, needsAgent) {
    const rules = this._rules;
    const rec = rules.record(mode, agent, task, options);
    if (this._closing) throw closedError();
    // executeMultiple reports an unknown agent as that agent's failure, in its results.
    if (needsAgent && !canRun(this, agent)) throw agentNotFound(agent);
    // executeMultiple's executions each run: a key there would make one follow another.
    if (mode !== MODE_AGGREGATE && options !== undefined && options !== null && options.key !== undefined && options.key !== null) {
      if (followKey(this, rec, options.key)) return rec;
    }
    let key = this._agentKeys.get(agent);
    if (key === undefined) key = this._internAgent(agent);
    const held = rec.x !== null && rec.x.startAfter !== undefined ? SUBMIT_HELD : 0;
    this._push(rec, OP_SUBMIT, mode + held + (key << SUBMIT_KEY_SHIFT), rules.priority, rules.timeoutMs);
    this._markBusy();
    // It takes a slot no claim counted: a claim parked for the free ones may now be too big.
    if (this._store !== null) this._store.link.reviewSoon();
    return rec;
  }

  /** The core refused `rec`: the queue holds `maxQueued`. Nothing of it was recorded. */
  _queueFull(rec) {
    const err = this._closing ? closedError() : coded(RangeError, 'ERR_QUEUE_FULL', `The queue is full (maxQueued ${this._rules.config.maxQueued}): ${rec.agent} was not queued`, {
      agent: rec.agent,
      maxQueued: this._rules.config.maxQueued,
    });
    rec.done = true;
    rec.value = err;
    const x = rec.x;
    if (x !== null) {
      if (x.key !== undefined) keyEnded(this, rec, 'failed', err);
      if (x.waiters !== null) {
        const waiters = x.waiters;
        x.waiters = null;
        for (const w of waiters) w({ found: false }, 'failed');
      }
      if (x.refused !== null) {
        const refused = x.refused;
        x.admitted = null;
        x.refused = null;
        refused(err);
        return;
      }
    }
    if (rec.mode === MODE_EXECUTE) rec.reject(err);
  }

  _internAgent(agent) {
    if (this._agentNames.length >= MAX_AGENT_KEYS) return 0;
    const key = this._agentNames.length;
    this._agentNames.push(agent);
    this._agentKeys.set(agent, key);
    return key;
  }

  /** The core's answer to a submission, delivered: events, the caller's answer, the start. */
  _submitted(rec, started) {
    if (isDurable(rec)) {
      // A claimed durable execution: its submission was answered where it was made. One the
      // core refused (its queue is full) goes back to the store uncounted.
      if (rec.id === 0) this._store._notTaken(rec);
      else if (started) this._launch(rec);
      return;
    }
    const id = rec.id;
    if (id === 0) {
      this._queueFull(rec);
      return;
    }
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
    if (events !== null && rec.mode < MODE_EXECUTE && events[MODE_EVENTS[rec.mode]] !== undefined) {
      this._emit(MODE_EVENTS[rec.mode], { executionId: extId(id), agent: rec.agent, task: rec.task, priority: rec.priority });
    }
    const x = rec.x;
    if (x !== null) {
      if (x.userSignal !== null && !rec.done) this._wireSignal(rec, x.userSignal);
      if (x.admitted !== null) this._admitted.push(rec);
    }
    if (started) this._launch(rec);
  }

  /**
   * Answers the id-returning calls (fireAndForget...) of the submissions just delivered, with
   * their status once every pending answer has been delivered: a shutdown() made by a
   * listener meanwhile shows as 'cancelled', a start made by a later answer as 'running'.
   */
  _answerSubmitters() {
    const recs = this._admitted;
    this._admitted = [];
    for (const rec of recs) {
      // Only a cancel (a shutdown, an aborted signal) ends an execution this early.
      const status = rec.done ? 'cancelled' : rec.phase === 1 ? 'running' : 'queued';
      const x = rec.x;
      x.admitted({ executionId: extId(rec.id), mode: MODE_NAMES[rec.mode], status });
      x.admitted = null;
    }
  }

  _wireSignal(rec, signal) {
    if (signal.aborted) this._userAborted(rec, signal.reason);
    else follow(signal, this, rec);
  }

  /** The submitter's own signal aborted: cancel, with its reason as the cause. */
  _userAborted(rec, reason) {
    if (rec.x.durable !== null) {
      this._store._userAborted(rec, reason);
      return;
    }
    if (rec.x.following !== null) {
      leave(this, rec, reason);
      return;
    }
    this._cancelRec(rec, cancelledError(extId(rec.id), rec.agent, reason));
  }

  // ----- running -----------------------------------------------------------------------

  /**
   * The core has started `rec` (a new attempt holds a slot and its timeout runs from now):
   * count the attempt at once, and call the agent now or — past the per-turn budget — after
   * yielding to the event loop.
   */
  _launch(rec) {
    if (rec.done) {
      // Cancelled between the core's start decision and now: give the slot back.
      this._push(rec, OP_SETTLE_FAILED, rec.id, 0, rec.attempt + 1);
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
    if (this._eventsCount !== 0 && this._events['execution-started'] !== undefined) {
      this._emit('execution-started', {
        executionId: idOf(rec),
        agent: rec.agent,
        task: rec.task,
        mode: MODE_NAMES[rec.mode],
        priority: rec.priority,
        attempt: attemptOf(rec),
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
    const list = this._deferred;
    this._deferred = [];
    let i = 0;
    for (; i < list.length && this._budget > 0; i += 2) {
      this._budget--;
      const rec = list[i];
      // Its timeout counts from the call, not from the core's start decision.
      if (rec.phase === 1 && !rec.done && list[i + 1] === rec.attempt && this._rules.timeoutOf(rec) > 0) {
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

  /** Calls the agent for `attempt` of `rec`, unless that attempt ended while it waited. */
  _run(rec, attempt) {
    if (attempt !== rec.attempt) return; // a later attempt exists: this one's slot is gone
    if (rec.done || rec.phase !== 1) {
      // Cancelled before its agent was even called: give the slot back now.
      this._push(rec, OP_SETTLE_FAILED, rec.id, 0, attempt);
      return;
    }
    rec.called = true;
    if (isDurable(rec)) rec.x.durable.agentBusy = true;
    callAttempt(this, rec, attempt);
  }

  /** An attempt's agent settled: the slot goes back to the core with the next sync. */
  _agentSettled(rec, attempt, ok, value) {
    // A settle of an older attempt whose slot the grace period already freed: nothing to do.
    if (attempt !== rec.attempt) return;
    if (isDurable(rec)) this._store._agentSettled(rec);
    // Otherwise a late result of a cancelled or timed-out attempt: only the slot goes back.
    let final = 0;
    if (!rec.done && rec.phase === 1) {
      rec.value = value;
      // A stored execution's retries are the store's: asked when its attempt's end is written.
      if (!ok && !isDurable(rec) && this._declinesRetry(rec, value, attempt)) final = 1;
    }
    this._push(rec, ok ? OP_SETTLE_OK : OP_SETTLE_FAILED, rec.id, final, attempt);
  }

  /**
   * Whether a failed attempt must not be retried: asked only when the policy leaves a retry
   * (for a stored execution, the policy stored with it; see durable/runs.js). `retryIf` (the
   * options', else the config's, else the default that declines ERR_AGENT_NOT_FOUND and
   * ERR_COMMAND_SPAWN) runs in the submitter's async context; one that throws declines, and
   * its error is reported like a callback's.
   */
  _declinesRetry(rec, err, attempt) {
    if (this._closing) return false; // no retries once shutting down: nothing to ask
    const x = rec.x;
    if (x === null || x.durable === null) {
      const retries = x !== null && x.retries !== undefined ? x.retries : this._rules.config.retries;
      if (attempt > retries) return false;
    }
    const fn = x !== null && x.retryIf !== null ? x.retryIf : this._rules.retryIf;
    try {
      return !rec.runInAsyncScope(fn, null, err, attemptOf(rec));
    } catch (error) {
      this._callbackFailed(rec, error);
      return true;
    }
  }

  /** The core's answer to a settlement: the execution's end or retry wait, and the next start. */
  _settled(rec, ok, next, retryDelayMs) {
    if (!rec.done && rec.phase === 1) {
      if (retryDelayMs !== RETRY_NONE) {
        const err = rec.value;
        rec.value = undefined;
        rec.phase = 2;
        this._emit('execution-retry', this._retryPayload(rec, err, retryDelayMs));
      } else if (ok) this._complete(rec, rec.value);
      else this._end(rec, 'failed', rec.value);
    }
    if (next > 0) {
      const nextRec = this._records.get(next);
      if (nextRec !== undefined) this._launch(nextRec);
    } else if (this._store !== null) this._store.slotFreed();
  }

  _retryPayload(rec, err, delayMs) {
    return {
      executionId: idOf(rec),
      agent: rec.agent,
      task: rec.task,
      attempt: rec.attempt,
      error: messageOf(err),
      errorObject: err,
      delayMs,
    };
  }

  // ----- outcomes ----------------------------------------------------------------------

  _complete(rec, value) {
    if (isDurable(rec)) {
      this._store._attemptEnded(rec, 'completed', value);
      return;
    }
    rec.done = true;
    rec.value = value;
    const x = rec.x;
    if (x !== null) {
      if (x.key !== undefined) keyEnded(this, rec, 'completed', value);
      if (x.userSignal !== null) this._unwireSignal(rec);
      if (x.waiters !== null) Watchers.notify(this, rec, 'completed');
    }
    const events = this._eventsCount === 0 ? null : this._events;
    const watched = events !== null && rec.mode === MODE_WATCHED && events['progress-update'] !== undefined;
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
    this._answer(rec, true, value);
  }

  /** Ends an execution as failed or cancelled, with the original error value. */
  _end(rec, status, err) {
    if (isDurable(rec)) {
      this._store._attemptEnded(rec, status, err);
      return;
    }
    rec.done = true;
    rec.value = err;
    const x = rec.x;
    if (x !== null) {
      if (x.key !== undefined) keyEnded(this, rec, status, err);
      if (x.userSignal !== null) this._unwireSignal(rec);
      if (x.waiters !== null) Watchers.notify(this, rec, status);
    }
    const event = status === 'cancelled' ? 'execution-cancelled' : 'execution-failed';
    const watched = rec.mode === MODE_WATCHED && this._events['progress-update'] !== undefined;
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
        code: codeOf(err),
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
    this._answer(rec, false, err);
  }

  /** Settles `rec`'s promise (execute) or calls its callback with the outcome. */
  _answer(rec, ok, value) {
    if (rec.mode === MODE_EXECUTE) {
      if (ok) rec.resolve(value);
      else rec.reject(value);
    } else if (rec.callback !== null) {
      if (ok) this._callBack(rec, null, value);
      else this._callBack(rec, value, undefined);
    }
  }

  _durationOf(rec) {
    const d = this._native.durationOf(rec.id);
    return d >= 0 ? d : 0;
  }

  _callBack(rec, err, value) {
    try {
      rec.runInAsyncScope(rec.callback, null, err, value);
    } catch (error) {
      this._callbackFailed(rec, error);
    }
  }

  /**
   * A user callback (executeWithCallback's, onProgress) threw: `callback-error`, or with no
   * listener an uncaught exception, as an 'error' event nobody handles would be. Never lost.
   */
  _callbackFailed(rec, error) {
    if (this._events['callback-error'] === undefined) rethrowLater(error);
    else this._emit('callback-error', { executionId: idOf(rec), agent: rec.agent, error });
  }

  // ----- signals and cancellation ------------------------------------------------------

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

  _unwireSignal(rec) {
    unfollow(rec.x.userSignal, rec);
    rec.x.userSignal = null;
  }

  /** Cancels `rec` if it is queued or running; returns the status it had (or NOT_FOUND). */
  _cancelRec(rec, err) {
    this._flush();
    const was = this._native.cancel(rec.id);
    if (was === P.STATUS_QUEUED || was === P.STATUS_WAITING || was === P.STATUS_RUNNING) {
      rec.value = err; // readable at once by anything the abort below runs
      if (was === P.STATUS_RUNNING) this._abort(rec, err);
      this._end(rec, 'cancelled', err);
      this._launchAll(this._native.pump());
      this._checkIdle();
    }
    return was;
  }

  // ----- progress ----------------------------------------------------------------------

  _reportProgress(rec, percent, detail) {
    if (typeof percent !== 'number' || rec.done) return;
    this._flush();
    if (!this._native.setProgress(rec.id, percent)) return;
    const progress = percent < 0 ? 0 : percent > 100 ? 100 : percent;
    const x = extras(rec);
    if (detail !== undefined) x.detail = detail;
    if (x.durable !== null) this._store.progress(rec, progress, detail);
    if (x.watchers !== null) Watchers.progress(x, { executionId: idOf(rec), agent: rec.agent, progress, status: 'running', detail });
    if (x.onProgress !== null) {
      try {
        rec.runInAsyncScope(x.onProgress, null, { executionId: idOf(rec), agent: rec.agent, progress, detail });
      } catch (error) {
        this._callbackFailed(rec, error);
      }
    }
    if (rec.mode === MODE_WATCHED && this._events['progress-update'] !== undefined) {
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
      executionId: idOf(rec),
      agent: rec.agent,
      progress: v.progress,
      status: v.status,
      duration: v.duration,
      detail: rec.x !== null ? rec.x.detail : undefined,
    });
  }

  // ----- the core's timers (through the weak threadsafe callback) ----------------------

  /** `batch` is `[kind, id, kind, id, ...]` of the timers that fired. */
  _onTimers(batch) {
    this._flush();
    for (let i = 0; i + 1 < batch.length; i += 2) {
      try {
        this._onTimer(batch[i], batch[i + 1]);
      } catch (err) {
        // Only a user listener can throw here: surface it without leaving the batch half done.
        rethrowLater(err);
      }
    }
  }

  _onTimer(kind, id) {
    switch (kind) {
      case P.TIMER_TIMEOUT:
        this._timedOut(id);
        return;
      case P.TIMER_PROGRESS: {
        const rec = this._records.get(id);
        if (this._native.progressTick(id) && rec !== undefined && this._events['progress-update'] !== undefined) {
          this._emitProgress(rec);
        }
        return;
      }
      case P.TIMER_GRACE: {
        this._launchAll(this._native.graceExpired(id));
        // A stored attempt's write held for this slot goes out once the slot is free.
        const rec = this._records.get(id);
        if (rec !== undefined && rec.id === id && isDurable(rec) && !this._native.holdsSlot(id)) this._store._slotReleased(rec);
        this._shutdownMayFinish();
        return;
      }
      case P.TIMER_RETRY:
        this._launchAll(this._native.retryDue(id));
        return;
      case P.TIMER_RATE:
        this._launchAll(this._native.rateDue(id));
        this._slotsMayHaveFreed();
        return;
      case P.TIMER_SWEEP:
        this._native.sweep();
        this._collectEvicted();
        return;
      case P.TIMER_SHUTDOWN:
        this._forceShutdown();
        return;
      default:
    }
  }

  _timedOut(id) {
    const rec = this._records.get(id);
    // A deferred start whose agent is not called yet: its timeout restarts at the call.
    if (rec !== undefined && !rec.done && rec.phase === 1 && !rec.called) return;
    const live = rec !== undefined && !rec.done && rec.phase === 1;
    const err = live ? timeoutError(idOf(rec), rec.agent, this._rules.timeoutOf(rec), attemptOf(rec)) : null;
    const asks = live && !isDurable(rec) && this._native.timeoutDue(id);
    const r = this._native.timeout(id, !asks || !this._declinesRetry(rec, err, rec.attempt));
    if (r === TIMEOUT_STALE || !live || rec.done) return;
    rec.value = err; // readable at once by anything the abort below runs
    this._abort(rec, err);
    if (r !== RETRY_NONE) {
      rec.phase = 2;
      this._emit('execution-retry', this._retryPayload(rec, err, r));
    } else {
      this._end(rec, 'failed', err);
    }
    this._launchAll(this._native.pump());
    this._checkIdle();
  }
}

module.exports = { Lifecycle };

'use strict';

// Calling agents: the registry lookup, the `spawnAgentProcess` extension point, and waiting
// for each attempt's promise without allocating per call.

const { agentNotFound } = require('./errors.js');
const { AgentContext, idOf } = require('./record.js');
const { MODE_NAMES } = require('./protocol.js');

/** The registered agent (or `defaultAgent`) called with the execution's values. */
function callAgent(ex, agent, task, options, context) {
  const fn = ex._agents.get(agent);
  if (fn !== undefined) return fn(task, options, context);
  if (ex._defaultAgent !== undefined) return ex._defaultAgent(agent, task, options, context);
  throw agentNotFound(agent);
}

/**
 * The default of the old extension point, `BackgroundExecutor.prototype.spawnAgentProcess`:
 * a subclass or instance that overrides it is called instead of the registry, with
 * `{ id, executionId, agent, task, options, mode, priority, context, signal }`.
 */
function spawnAgentProcess(execution) {
  return callAgent(this, execution.agent, execution.task, execution.options, execution.context);
}

/** Whether an execution of `agent` can be called now: registered, a defaultAgent, or an override. */
function canRun(ex, agent) {
  return ex._agents.has(agent) || runsAnyAgent(ex);
}

/** Whether any agent name can run: a `defaultAgent`, or an overridden `spawnAgentProcess`. */
function runsAnyAgent(ex) {
  return ex._defaultAgent !== undefined || ex.spawnAgentProcess !== spawnAgentProcess;
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

/**
 * Calls the agent for `attempt` of `rec`, in the async context of its submission, and reports
 * its settlement to `ex._agentSettled`.
 */
function callAttempt(ex, rec, attempt) {
  rec.runInAsyncScope(callAttemptHere, null, ex, rec, attempt);
}

function callAttemptHere(ex, rec, attempt) {
  const ctx = new AgentContext(ex, rec);
  let value;
  try {
    if (ex.spawnAgentProcess !== spawnAgentProcess) {
      const executionId = idOf(rec);
      value = ex.spawnAgentProcess({
        id: executionId,
        executionId,
        agent: rec.agent,
        task: rec.task,
        options: rec.options,
        mode: MODE_NAMES[rec.mode],
        priority: rec.priority,
        context: ctx,
        signal: ctx.signal,
      });
    } else {
      const fn = ex._agents.get(rec.agent);
      value = fn !== undefined ? fn(rec.task, rec.options, ctx) : callAgent(ex, rec.agent, rec.task, rec.options, ctx);
    }
  } catch (err) {
    value = Promise.reject(err);
  }
  const promise = Promise.resolve(value);
  if (promise.then !== PROMISE_THEN) {
    // A patched `then` might call back more than once: no reuse.
    promise.then(
      (v) => ex._agentSettled(rec, attempt, true, v),
      (e) => ex._agentSettled(rec, attempt, false, e),
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
  w.ex = ex;
  w.rec = rec;
  w.attempt = attempt;
  promise.then(w.onFulfilled, w.onRejected);
}

module.exports = { callAttempt, canRun, runsAnyAgent, spawnAgentProcess };

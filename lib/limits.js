'use strict';

// Per-agent limits (concurrency, rate) and the global rate limit: checked here, kept and
// applied by the core, where an agent at its limit holds only its own executions back.

const { describe, typeError, coded } = require('./errors.js');
const { integer, isOptionsObject, MAX_INT32 } = require('./validate.js');
const { storedName } = require('./durable/json.js');
const { MAX_RATE, MAX_DELAY_MS } = require('./protocol.js');

const LIMIT_KEYS = new Set(['concurrency', 'rateLimit', 'globalConcurrency']);

/** `{ max, intervalMs }` checked; null for null (no limit). */
function rateLimitOf(name, value) {
  if (value === null) return null;
  if (!isOptionsObject(value)) throw typeError(`${name} must be { max, intervalMs } or null, got ${describe(value)}`);
  for (const key of Object.keys(value)) {
    if (key !== 'max' && key !== 'intervalMs') throw typeError(`${name} has an unknown key ${describe(key)}; the keys are max and intervalMs`);
  }
  // Each read once: what is checked is what is used.
  const max = value.max;
  const intervalMs = value.intervalMs;
  if (max === undefined) throw typeError(`${name}.max must be an integer >= 1, got undefined`);
  if (intervalMs === undefined) throw typeError(`${name}.intervalMs must be an integer >= 1, got undefined`);
  return {
    max: integer(`${name}.max`, max, 1, MAX_RATE),
    intervalMs: integer(`${name}.intervalMs`, intervalMs, 1, MAX_DELAY_MS),
  };
}

/**
 * The limits given to `registerAgent`, `registerCommand` or `setAgentLimits`:
 * `{ concurrency?, rateLimit? }`, a key left out keeps its value, null (or an Infinity
 * concurrency) removes that limit. Returns the changes only.
 */
function limitsOf(name, value) {
  if (!isOptionsObject(value)) throw typeError(`${name} must be an object { concurrency, rateLimit }, got ${describe(value)}`);
  for (const key of Object.keys(value)) {
    if (!LIMIT_KEYS.has(key)) throw typeError(`${name} has an unknown key ${describe(key)}; the keys are concurrency, rateLimit and globalConcurrency`);
  }
  const out = {};
  const c = value.concurrency;
  if (c === null || c === Infinity) out.concurrency = null;
  else if (c !== undefined) out.concurrency = integer(`${name}.concurrency`, c, 1, MAX_INT32);
  if (value.rateLimit !== undefined) out.rateLimit = rateLimitOf(`${name}.rateLimit`, value.rateLimit);
  const g = value.globalConcurrency;
  if (g === null || g === Infinity) out.globalConcurrency = null;
  else if (g !== undefined) out.globalConcurrency = integer(`${name}.globalConcurrency`, g, 1, MAX_INT32);
  return out;
}

/**
 * The key under which the core keeps the limits of `agent`, once `changes` are known to be
 * applicable: throws ERR_TOO_MANY_AGENTS when every key is taken (the names seen first,
 * submitted or limited, have one each), ERR_NO_STORE for a `globalConcurrency` without a
 * PostgreSQL store (it is kept there, for every executor). Nothing changes before.
 */
function limitKey(ex, agent, changes) {
  if (changes.globalConcurrency !== undefined && (ex._store === null || ex.config.store.postgres === null)) {
    throw coded(RangeError, 'ERR_NO_STORE', `globalConcurrency of ${describe(agent)} needs a PostgreSQL store (config.store: 'postgres://…'); with SQLite or in memory, use concurrency`, { agent });
  }
  // The name is stored with it, as a submission's is.
  if (changes.globalConcurrency !== undefined) storedName('agent', agent);
  let key = ex._agentKeys.get(agent);
  if (key === undefined) key = ex._internAgent(agent);
  if (key === 0) {
    throw coded(RangeError, 'ERR_TOO_MANY_AGENTS', `Agent ${describe(agent)} cannot take limits: the first ${ex._agentNames.length - 1} agent names this executor saw have the only keys`, { agent });
  }
  return key;
}

/** Applies `changes` (from `limitsOf`) to the limits of `agent`, and starts what they allow. */
function applyAgentLimits(ex, agent, changes, key = limitKey(ex, agent, changes)) {
  ex._flush();
  ex._hasAgentLimits = true;
  const now = ex._native.agentLimits().find((a) => a.key === key);
  const concurrency = changes.concurrency !== undefined ? changes.concurrency : now === undefined || now.concurrency == null ? null : now.concurrency;
  const rate = changes.rateLimit !== undefined ? changes.rateLimit : now === undefined || now.rate == null ? null : now.rate;
  const started = ex._native.setAgentLimits(key, concurrency === null ? 0 : concurrency, rate === null ? 0 : rate.max, rate === null ? 0 : rate.intervalMs);
  if (started !== null) ex._launchAll(started);
  if (changes.globalConcurrency !== undefined) {
    ex._store.setGlobalLimit(agent, changes.globalConcurrency);
    if (changes.globalConcurrency === null) ex._globalLimits.delete(agent);
    else ex._globalLimits.set(agent, changes.globalConcurrency);
  }
  ex._slotsMayHaveFreed();
}

/** Sets (or, with null, removes) the global rate limit, and starts what it allows. */
function applyRateLimit(ex, value, name) {
  const rate = rateLimitOf(name, value);
  ex._flush();
  ex._launchAll(ex._native.setRateLimit(rate === null ? 0 : rate.max, rate === null ? 0 : rate.intervalMs));
  ex._slotsMayHaveFreed();
}

/**
 * The agents their limits hold back now, and how many queued executions wait behind them:
 * a store's claims leave those agents' executions for later (or for other processes), and
 * do not count their queued ones against the free slots, so a limited agent never keeps the
 * others' stored work waiting.
 */
function heldAgents(ex) {
  const agents = [];
  let queued = 0;
  if (!ex._hasAgentLimits) return { agents, queued };
  for (const a of ex._native.agentLimits()) {
    const full = a.concurrency != null && a.running >= a.concurrency;
    if (full || (a.rate != null && a.rate.nextStartAt != null)) {
      agents.push(ex._agentNames[a.key]);
      queued += a.queued;
    }
  }
  return { agents, queued };
}

/** The limits part of `getQueueStatus()`: per agent with limits, and the global rate limit. */
function limitsStatus(ex) {
  const agents = new Map();
  for (const a of ex._native.agentLimits()) {
    const rate = a.rate == null ? null : a.rate;
    const name = ex._agentNames[a.key];
    const globalConcurrency = ex._globalLimits.get(name);
    if (rate === null && a.concurrency == null && globalConcurrency === undefined) continue; // its limits were all removed
    agents.set(name, {
      running: a.running,
      queued: a.queued,
      concurrency: a.concurrency == null ? null : a.concurrency,
      globalConcurrency: globalConcurrency === undefined ? null : globalConcurrency,
      rateLimit: rate === null ? null : { max: rate.max, intervalMs: rate.intervalMs },
      nextStartAt: rate === null || rate.nextStartAt == null ? null : rate.nextStartAt,
    });
  }
  const g = ex._native.globalRate();
  const rateLimit = g == null ? null : { max: g.max, intervalMs: g.intervalMs, nextStartAt: g.nextStartAt == null ? null : g.nextStartAt };
  return { agents: Object.fromEntries(agents), rateLimit };
}

module.exports = { limitsOf, rateLimitOf, limitKey, applyAgentLimits, applyRateLimit, limitsStatus, heldAgents };

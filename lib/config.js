'use strict';

// The constructor's config: every key validated once, with defaults. Bad values get a
// TypeError or RangeError naming the key; unknown keys only warn.

const { describe, typeError, rangeError } = require('./errors.js');
const { integer, number, isOptionsObject, MAX_INT32 } = require('./validate.js');
const { MAX_RETRIES, MAX_DELAY_MS } = require('./protocol.js');
const { rateLimitOf } = require('./limits.js');

const DEFAULT_LEVELS = Object.freeze({ critical: 5, high: 4, medium: 3, low: 2, background: 1 });

const DEFAULTS = Object.freeze({
  maxConcurrentAgents: 5,
  maxCpuPercent: 80,
  maxMemoryMb: 2048,
  throttleIfExceeded: true,
  resultTtlMs: 60000,
  maxRetainedResults: 10000,
  progressIntervalMs: 1000,
  monitorIntervalMs: 1000,
  minConcurrentAgents: 1,
  cancelGraceMs: 5000,
  agingMs: 0,
  maxRetainedOutputBytes: 64 * 1024 * 1024,
  retries: 0,
  retryDelayMs: 1000,
  backoff: 'exponential',
});

const KNOWN = new Set([...Object.keys(DEFAULTS), 'priorityLevels', 'agents', 'defaultAgent', 'defaultTimeoutMs', 'store', 'leaseMs', 'storePollMs', 'storePrefetch', 'retryIf', 'maxQueued', 'rateLimit']);

/** Claimed executions an executor may hold beyond its free slots (`storePrefetch`), at most. */
const MAX_PREFETCH = 10000;

/** Retention of ended executions in a store, unless the config sets it: stores outlive processes. */
const STORE_RETENTION = Object.freeze({ resultTtlMs: 7 * 24 * 3600 * 1000, maxRetainedResults: 1000000 });

/**
 * `{ retries, retryDelayMs, backoff }` from `source` (config or submit options), each key
 * falling back to `defaults`; `prefix` names the argument in error messages. The core applies
 * the policy; this only checks it.
 */
function retryPolicy(source, defaults, prefix = '') {
  const backoff = source.backoff === undefined ? defaults.backoff : source.backoff;
  if (backoff !== 'fixed' && backoff !== 'exponential') {
    const Err = typeof backoff === 'string' ? rangeError : typeError;
    throw Err(`${prefix}backoff must be "fixed" or "exponential", got ${describe(backoff)}`);
  }
  return {
    retries: integer(`${prefix}retries`, source.retries, 0, MAX_RETRIES, defaults.retries),
    retryDelayMs: integer(`${prefix}retryDelayMs`, source.retryDelayMs, 0, MAX_DELAY_MS, defaults.retryDelayMs),
    backoff,
  };
}

function levels(value) {
  if (value === undefined) return new Map(Object.entries(DEFAULT_LEVELS));
  if (!isOptionsObject(value)) {
    throw typeError(`priorityLevels must be an object of level name -> positive integer, got ${describe(value)}`);
  }
  const names = Object.keys(value);
  if (names.length === 0) throw rangeError('priorityLevels must name at least one level, got an empty object');
  const map = new Map();
  for (const name of names) {
    const v = value[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_INT32) {
      const Err = typeof v === 'number' ? rangeError : typeError;
      throw Err(`priorityLevels.${name} must be a positive integer <= ${MAX_INT32}, got ${describe(v)}`);
    }
    map.set(name, v);
  }
  return map;
}

function agentsOf(value) {
  const map = new Map();
  if (value === undefined) return map;
  if (!isOptionsObject(value)) throw typeError(`agents must be an object of agent name -> function, got ${describe(value)}`);
  for (const name of Object.keys(value)) {
    if (name === '') throw typeError('agents must not contain an empty agent name');
    if (typeof value[name] !== 'function') {
      throw typeError(`agents.${name} must be a function, got ${describe(value[name])}`);
    }
    map.set(name, value[name]);
  }
  return map;
}

function parseConfig(config) {
  if (config === undefined || config === null) config = {};
  if (!isOptionsObject(config)) throw typeError(`config must be an object, got ${describe(config)}`);
  for (const key of Object.keys(config)) {
    if (!KNOWN.has(key)) {
      process.emitWarning(`BackgroundExecutor: unknown config key ${describe(key)} is ignored`, {
        code: 'BMAD_BG_UNKNOWN_CONFIG',
      });
    }
  }
  // Each key read once: a getter or Proxy that answers differently the second time cannot
  // slip an unchecked value past the checks below.
  const c = {};
  for (const key of KNOWN) c[key] = config[key];
  const d = DEFAULTS;
  const throttle = c.throttleIfExceeded;
  if (throttle !== undefined && typeof throttle !== 'boolean') {
    throw typeError(`throttleIfExceeded must be a boolean, got ${describe(throttle)}`);
  }
  if (c.retryIf !== undefined && typeof c.retryIf !== 'function') {
    throw typeError(`retryIf must be a function (error, attempt) => boolean, got ${describe(c.retryIf)}`);
  }
  if (c.defaultAgent !== undefined && typeof c.defaultAgent !== 'function') {
    throw typeError(`defaultAgent must be a function, got ${describe(c.defaultAgent)}`);
  }
  return {
    maxConcurrentAgents: integer('maxConcurrentAgents', c.maxConcurrentAgents, 1, MAX_INT32, d.maxConcurrentAgents),
    maxCpuPercent: number('maxCpuPercent', c.maxCpuPercent, (v) => v > 0 && v <= 100, 'a number, 0 < x <= 100', d.maxCpuPercent),
    maxMemoryMb: number('maxMemoryMb', c.maxMemoryMb, (v) => v > 0, 'a number > 0', d.maxMemoryMb),
    throttleIfExceeded: throttle === undefined ? d.throttleIfExceeded : throttle,
    priorityLevels: levels(c.priorityLevels),
    agents: agentsOf(c.agents),
    defaultAgent: c.defaultAgent,
    defaultTimeoutMs: integer('defaultTimeoutMs', c.defaultTimeoutMs, 1, MAX_DELAY_MS, undefined),
    resultTtlMs: integer('resultTtlMs', c.resultTtlMs, 0, Number.MAX_SAFE_INTEGER, d.resultTtlMs),
    maxRetainedResults: integer('maxRetainedResults', c.maxRetainedResults, 0, Number.MAX_SAFE_INTEGER, d.maxRetainedResults),
    progressIntervalMs: integer('progressIntervalMs', c.progressIntervalMs, 1, MAX_DELAY_MS, d.progressIntervalMs),
    monitorIntervalMs: integer('monitorIntervalMs', c.monitorIntervalMs, 1, MAX_DELAY_MS, d.monitorIntervalMs),
    minConcurrentAgents: integer('minConcurrentAgents', c.minConcurrentAgents, 0, MAX_INT32, d.minConcurrentAgents),
    cancelGraceMs: integer('cancelGraceMs', c.cancelGraceMs, 0, MAX_DELAY_MS, d.cancelGraceMs),
    agingMs: integer('agingMs', c.agingMs, 0, MAX_DELAY_MS, d.agingMs),
    maxRetainedOutputBytes: integer('maxRetainedOutputBytes', c.maxRetainedOutputBytes, 0, Number.MAX_SAFE_INTEGER, d.maxRetainedOutputBytes),
    ...retryPolicy(c, d),
    store: storeConfig(c),
    retryIf: c.retryIf,
    maxQueued: integer('maxQueued', c.maxQueued, 1, Number.MAX_SAFE_INTEGER, undefined),
    rateLimit: c.rateLimit === undefined ? null : rateLimitOf('rateLimit', c.rateLimit),
  };
}

/**
 * `store: 'sqlite:<path>[?synchronous=full]'` (the path relative to the working directory)
 * or `'postgres://…[?schema=…]'`, with `leaseMs`, `storePollMs` and `storePrefetch`; null
 * without a store.
 */
function storeConfig(c) {
  const url = c.store;
  if (url === undefined || url === null) {
    if (c.leaseMs !== undefined || c.storePollMs !== undefined || c.storePrefetch !== undefined) {
      throw rangeError('leaseMs, storePollMs and storePrefetch need a store (config.store)');
    }
    return null;
  }
  if (typeof url !== 'string') throw typeError(`store must be a string like "sqlite:.bmad/executions.db", got ${describe(url)}`);
  const common = {
    url,
    leaseMs: integer('leaseMs', c.leaseMs, 100, MAX_DELAY_MS, 30000),
    pollMs: number('storePollMs', c.storePollMs, (v) => v >= 0.1 && v <= 60000, 'a number of ms, 0.1 <= x <= 60000', 0.25),
    prefetch: integer('storePrefetch', c.storePrefetch, 0, MAX_PREFETCH, 0),
    resultTtlMs: c.resultTtlMs === undefined ? STORE_RETENTION.resultTtlMs : c.resultTtlMs,
    maxRetainedResults: c.maxRetainedResults === undefined ? STORE_RETENTION.maxRetainedResults : c.maxRetainedResults,
  };
  // PostgreSQL: the URL goes to the driver as it is (it reports what it refuses).
  if (/^postgres(ql)?:\/\//.test(url)) return { ...common, path: '', postgres: url, synchronous: 'normal' };
  const m = /^sqlite:(?:\/\/)?([^?]+)(?:\?(.*))?$/.exec(url);
  if (m === null) throw rangeError(`store must be "sqlite:<path>" (an embedded SQLite file) or "postgres://…" (a PostgreSQL database), got ${describe(url)}`);
  let synchronous = 'normal';
  for (const pair of (m[2] || '').split('&')) {
    if (pair === '') continue;
    const [k, v] = pair.split('=');
    if (k === 'synchronous' && (v === 'normal' || v === 'full')) synchronous = v;
    else throw rangeError(`store: unknown parameter ${describe(pair)}; the only one is synchronous=normal|full`);
  }
  const { resolve } = require('node:path');
  let file;
  try {
    file = decodeURIComponent(m[1]);
  } catch {
    throw rangeError(`store: the path of ${describe(url)} has a bad %-escape`);
  }
  return { ...common, path: resolve(file), postgres: null, synchronous };
}

module.exports = { parseConfig, retryPolicy };

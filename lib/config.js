'use strict';

// Validation of the constructor config (contract §2). Every bad value gets a TypeError or a
// RangeError with code ERR_INVALID_ARG naming the key and the value; unknown keys only warn.

const { describe, typeError, rangeError } = require('./errors.js');

const DEFAULT_LEVELS = Object.freeze({ critical: 5, high: 4, medium: 3, low: 2, background: 1 });
const MAX_INT32 = 2147483647;
const MAX_MS = 2 ** 31 - 1; // what a JS timer could hold; ~24.8 days

const KNOWN = new Set([
  'maxConcurrentAgents',
  'maxCpuPercent',
  'maxMemoryMb',
  'throttleIfExceeded',
  'priorityLevels',
  'agents',
  'defaultAgent',
  'defaultTimeoutMs',
  'resultTtlMs',
  'maxRetainedResults',
  'progressIntervalMs',
  'monitorIntervalMs',
  'minConcurrentAgents',
  'cancelGraceMs',
  'agingMs',
  'retries',
  'retryDelayMs',
  'backoff',
]);

const MAX_RETRIES = 1000;

/**
 * `{ retries, retryDelayMs, backoff }` from `source` (config or submit options), each key
 * falling back to `defaults`; `prefix` names the argument in error messages.
 */
function retryPolicy(source, defaults, prefix = '') {
  const backoff = source.backoff === undefined ? defaults.backoff : source.backoff;
  if (backoff !== 'fixed' && backoff !== 'exponential') {
    const Err = typeof backoff === 'string' ? rangeError : typeError;
    throw Err(`${prefix}backoff must be "fixed" or "exponential", got ${describe(backoff)}`);
  }
  return {
    retries: integer(`${prefix}retries`, source.retries, 0, MAX_RETRIES, defaults.retries),
    retryDelayMs: integer(`${prefix}retryDelayMs`, source.retryDelayMs, 0, MAX_MS, defaults.retryDelayMs),
    backoff,
  };
}

function isPlainObject(v) {
  if (v === null || typeof v !== 'object') return false;
  try {
    return !Array.isArray(v);
  } catch {
    return false; // a revoked Proxy: not an object we can read
  }
}

function integer(name, value, min, max, fallback) {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name} must be an integer >= ${min}, got ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw rangeError(
      `${name} must be an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}, got ${describe(value)}`,
    );
  }
  return value;
}

function number(name, value, check, rule, fallback) {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name} must be ${rule}, got ${describe(value)}`);
  if (!Number.isFinite(value) || !check(value)) throw rangeError(`${name} must be ${rule}, got ${describe(value)}`);
  return value;
}

function levels(value) {
  if (value === undefined) return new Map(Object.entries(DEFAULT_LEVELS));
  if (!isPlainObject(value)) {
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
  if (!isPlainObject(value)) throw typeError(`agents must be an object of agent name -> function, got ${describe(value)}`);
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
  if (!isPlainObject(config)) throw typeError(`config must be an object, got ${describe(config)}`);
  for (const key of Object.keys(config)) {
    if (!KNOWN.has(key)) {
      process.emitWarning(`BackgroundExecutor: unknown config key ${describe(key)} is ignored`, {
        code: 'BMAD_BG_UNKNOWN_CONFIG',
      });
    }
  }
  const c = config;
  const throttle = c.throttleIfExceeded;
  if (throttle !== undefined && typeof throttle !== 'boolean') {
    throw typeError(`throttleIfExceeded must be a boolean, got ${describe(throttle)}`);
  }
  if (c.defaultAgent !== undefined && typeof c.defaultAgent !== 'function') {
    throw typeError(`defaultAgent must be a function, got ${describe(c.defaultAgent)}`);
  }
  const defaultTimeoutMs = integer('defaultTimeoutMs', c.defaultTimeoutMs, 1, MAX_MS, undefined);
  return {
    maxConcurrentAgents: integer('maxConcurrentAgents', c.maxConcurrentAgents, 1, MAX_INT32, 5),
    maxCpuPercent: number('maxCpuPercent', c.maxCpuPercent, (v) => v > 0 && v <= 100, 'a number, 0 < x <= 100', 80),
    maxMemoryMb: number('maxMemoryMb', c.maxMemoryMb, (v) => v > 0, 'a number > 0', 2048),
    throttleIfExceeded: throttle === undefined ? true : throttle,
    priorityLevels: levels(c.priorityLevels),
    agents: agentsOf(c.agents),
    defaultAgent: c.defaultAgent,
    defaultTimeoutMs,
    resultTtlMs: integer('resultTtlMs', c.resultTtlMs, 0, Number.MAX_SAFE_INTEGER, 60000),
    maxRetainedResults: integer('maxRetainedResults', c.maxRetainedResults, 0, Number.MAX_SAFE_INTEGER, 10000),
    progressIntervalMs: integer('progressIntervalMs', c.progressIntervalMs, 1, MAX_MS, 1000),
    monitorIntervalMs: integer('monitorIntervalMs', c.monitorIntervalMs, 1, MAX_MS, 1000),
    minConcurrentAgents: integer('minConcurrentAgents', c.minConcurrentAgents, 0, MAX_INT32, 1),
    cancelGraceMs: integer('cancelGraceMs', c.cancelGraceMs, 0, MAX_MS, 5000),
    agingMs: integer('agingMs', c.agingMs, 0, MAX_MS, 0),
    ...retryPolicy(c, { retries: 0, retryDelayMs: 1000, backoff: 'exponential' }),
  };
}

module.exports = { parseConfig, retryPolicy, integer, number, isPlainObject, DEFAULT_LEVELS, MAX_MS, MAX_INT32 };

'use strict';

// The options of one call: submissions (`execute(agent, task, options)` and the other modes)
// and `shutdown(options)`. Each option is read exactly once: a getter may have side effects
// or change its mind.

const { coded, codeOf, describe, typeError } = require('./errors.js');
const { integer, isOptionsObject, isInstance } = require('./validate.js');
const { retryPolicy } = require('./config.js');
const { MAX_DELAY_MS } = require('./protocol.js');
const { Execution, extras } = require('./record.js');

/** The largest time a Date can hold (ms from the epoch either way). */
const MAX_DATE_MS = 8.64e15;
/** Errors no retry can fix: an agent that is not there, a program that cannot start. */
const HOPELESS = new Set(['ERR_AGENT_NOT_FOUND', 'ERR_COMMAND_SPAWN']);
/** A command that could not start for want of a resource may start later: these are retried. */
const TRANSIENT_SPAWN = new Set(['EAGAIN', 'EMFILE', 'ENFILE', 'ENOMEM', 'EINTR']);
/** Whether no retry can fix `err`: an agent that is not there, a command that cannot start. */
function hopeless(err) {
  const code = codeOf(err);
  if (!HOPELESS.has(code)) return false;
  if (code !== 'ERR_COMMAND_SPAWN') return true;
  try {
    return !TRANSIENT_SPAWN.has(err.reason);
  } catch {
    return true; // a thrown look-alike with a throwing getter
  }
}
const retryUnlessHopeless = (err) => !hopeless(err);

/** The priority level of each mode (by MODE_* code) when the options name none. */
const MODE_LEVEL = ['low', 'medium', 'medium', 'medium', 'medium'];

/** What a submission is checked against: the executor's levels and defaults. */
class SubmitRules {
  constructor(cfg) {
    this.levels = cfg.priorityLevels;
    this.levelNames = [...cfg.priorityLevels.keys()];
    this.config = cfg;
    this.defaultTimeoutMs = cfg.defaultTimeoutMs === undefined ? 0 : cfg.defaultTimeoutMs;
    let lowest = this.levelNames[0];
    for (const name of this.levelNames) if (this.levels.get(name) < this.levels.get(lowest)) lowest = name;
    // A mode's default level falls back to the lowest level when the config does not have it.
    this.modeLevel = MODE_LEVEL.map((name) => (this.levels.has(name) ? name : lowest));
    this.modePriority = this.modeLevel.map((name) => this.levels.get(name));
    this.priority = 0;
    this.timeoutMs = 0;
    /** The config's retryIf, else the default (see Lifecycle._declinesRetry). */
    this.retryIf = cfg.retryIf !== undefined ? cfg.retryIf : retryUnlessHopeless;
  }

  /**
   * A new record for a valid submission, else throws. Its priority value is left in
   * `this.priority` and its timeout (ms, 0 for none) in `this.timeoutMs`: read at once by the
   * caller, they spare an object per submission.
   */
  record(mode, agent, task, options) {
    if (typeof agent !== 'string' || agent === '') {
      throw typeError(`agent must be a non-empty string, got ${describe(agent)}`);
    }
    if (typeof task !== 'string') throw typeError(`task must be a string, got ${describe(task)}`);
    let level = this.modeLevel[mode];
    let priority = this.modePriority[mode];
    let timeout = this.defaultTimeoutMs;
    if (options === undefined || options === null) {
      this.priority = priority;
      this.timeoutMs = timeout;
      return new Execution(mode, agent, task, undefined, level);
    }
    if (!isOptionsObject(options)) throw typeError(`options must be an object, got ${describe(options)}`);
    const p = options.priority;
    const t = options.timeout;
    const signal = options.signal;
    const onProgress = options.onProgress;
    const retries = options.retries;
    const retryDelayMs = options.retryDelayMs;
    const backoff = options.backoff;
    const retryIf = options.retryIf;
    const delayMs = options.delayMs;
    const startAfter = options.startAfter;
    if (p !== undefined) {
      priority = typeof p === 'string' ? this.levels.get(p) : undefined;
      if (priority === undefined) {
        const names = this.levelNames.map((n) => JSON.stringify(n)).join(', ');
        throw coded(RangeError, 'ERR_UNKNOWN_PRIORITY', `options.priority must be one of ${names}, got ${describe(p)}`);
      }
      level = p;
    }
    const timeoutGiven = t !== undefined && t !== null;
    if (timeoutGiven) timeout = integer('options.timeout', t, 1, MAX_DELAY_MS, 0);
    const hasSignal = signal !== undefined && signal !== null;
    if (hasSignal && !isInstance(signal, AbortSignal)) {
      throw typeError(`options.signal must be an AbortSignal, got ${describe(signal)}`);
    }
    const hasOnProgress = onProgress !== undefined && onProgress !== null;
    if (hasOnProgress && typeof onProgress !== 'function') {
      throw typeError(`options.onProgress must be a function, got ${describe(onProgress)}`);
    }
    let retry = null;
    if (retries !== undefined || retryDelayMs !== undefined || backoff !== undefined) {
      retry = retryPolicy({ retries, retryDelayMs, backoff }, this.config, 'options.');
    }
    const hasRetryIf = retryIf !== undefined && retryIf !== null;
    if (hasRetryIf && typeof retryIf !== 'function') {
      throw typeError(`options.retryIf must be a function (error, attempt) => boolean, got ${describe(retryIf)}`);
    }
    const at = startTime(delayMs, startAfter);
    const rec = new Execution(mode, agent, task, options, level);
    if (at !== undefined) extras(rec).startAfter = at;
    if (retry !== null || hasSignal || hasOnProgress || timeoutGiven || hasRetryIf) {
      const x = extras(rec);
      x.retry = retry;
      if (retry !== null) x.retries = retry.retries;
      if (hasRetryIf) x.retryIf = retryIf;
      if (hasSignal) x.userSignal = signal; // wired once the core has answered
      if (hasOnProgress) x.onProgress = onProgress;
      if (timeoutGiven) x.timeoutMs = timeout;
    }
    this.priority = priority;
    this.timeoutMs = timeout;
    return rec;
  }

  /** The timeout of `rec` in ms (0: none). */
  timeoutOf(rec) {
    return rec.x !== null && rec.x.timeoutMs !== undefined ? rec.x.timeoutMs : this.defaultTimeoutMs;
  }
}

/**
 * When a delayed execution may start (epoch ms), from `options.delayMs` (ms from now) or
 * `options.startAfter` (a Date or epoch ms); undefined when it may start at once.
 */
function startTime(delayMs, startAfter) {
  const hasDelay = delayMs !== undefined && delayMs !== null;
  const hasAfter = startAfter !== undefined && startAfter !== null;
  if (!hasDelay && !hasAfter) return undefined;
  if (hasDelay && hasAfter) throw coded(TypeError, 'ERR_INVALID_ARG', 'options: give delayMs or startAfter, not both');
  const now = Date.now();
  if (hasDelay) {
    const d = integer('options.delayMs', delayMs, 0, MAX_DELAY_MS, 0);
    return d === 0 ? undefined : now + d;
  }
  let t;
  if (isInstance(startAfter, Date)) t = startAfter.getTime();
  else if (typeof startAfter === 'number') t = startAfter;
  else throw typeError(`options.startAfter must be a Date or a time in ms since the epoch, got ${describe(startAfter)}`);
  if (!Number.isFinite(t)) throw coded(RangeError, 'ERR_INVALID_ARG', `options.startAfter must be a valid time, got ${describe(startAfter)}`);
  if (t - now > MAX_DELAY_MS) throw coded(RangeError, 'ERR_INVALID_ARG', `options.startAfter must be at most ${MAX_DELAY_MS} ms ahead, got ${Math.abs(t) <= MAX_DATE_MS ? new Date(t).toISOString() : `${t} ms`}`);
  return t > now ? t : undefined;
}

/** `shutdown(options)`: `{ mode: 'cancel' | 'drain', timeoutMs }`. */
function shutdownOptions(options) {
  if (options === undefined || options === null) return { mode: 'cancel', timeoutMs: undefined };
  if (!isOptionsObject(options)) throw typeError(`shutdown options must be an object, got ${describe(options)}`);
  const mode = options.mode;
  const timeout = options.timeoutMs;
  if (mode !== undefined && mode !== 'cancel' && mode !== 'drain') {
    const Err = typeof mode === 'string' ? RangeError : TypeError;
    throw coded(Err, 'ERR_INVALID_ARG', `options.mode must be "cancel" or "drain", got ${describe(mode)}`);
  }
  return {
    mode: mode === undefined ? 'cancel' : mode,
    timeoutMs: integer('options.timeoutMs', timeout, 0, MAX_DELAY_MS, undefined),
  };
}

module.exports = { SubmitRules, shutdownOptions };

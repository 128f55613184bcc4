'use strict';

// ResourceMonitor: sampling runs in Rust (sysinfo) on the tokio runtime; this class is the
// EventEmitter face of it. Usable alone or as `bg.resourceMonitor`.

const { EventEmitter } = require('node:events');
const { binding, weakCallback } = require('./native.js');
const { describe, typeError, rangeError } = require('./errors.js');
const { isOptionsObject } = require('./validate.js');
const { emitSafely } = require('./events.js');
const { MAX_DELAY_MS } = require('./protocol.js');

function option(opts, name, fallback, check, rule) {
  const v = opts[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(`ResourceMonitor: ${name} must be ${rule}, got ${describe(v)}`);
  if (!Number.isFinite(v) || !check(v)) throw rangeError(`ResourceMonitor: ${name} must be ${rule}, got ${describe(v)}`);
  return v;
}

function toStatus(s) {
  return {
    cpu: s.cpu,
    memory: s.memory,
    total_memory: s.totalMemory,
    free_memory: s.freeMemory,
    process_cpu: s.processCpu,
    load_average: s.loadAverage,
    processes: s.processes,
    timestamp: s.timestamp,
  };
}

/** The options a ResourceMonitor reads: any other key is a typo, warned about. */
const MONITOR_KEYS = new Set(['interval', 'cpuThreshold', 'memoryThreshold']);

class ResourceMonitor extends EventEmitter {
  /**
   * @param {{ interval?: number, cpuThreshold?: number, memoryThreshold?: number }} [options]
   *   interval: ms between samples (default 1000); cpuThreshold: whole-machine busy percent
   *   (default 80); memoryThreshold: MB resident in this process and its children (default 2048).
   */
  constructor(options) {
    super();
    if (options === undefined || options === null) options = {};
    if (!isOptionsObject(options)) throw typeError(`ResourceMonitor: options must be an object, got ${describe(options)}`);
    for (const key of Object.keys(options)) {
      if (!MONITOR_KEYS.has(key)) {
        process.emitWarning(`ResourceMonitor: unknown option ${describe(key)} is ignored`, { code: 'BMAD_BG_UNKNOWN_CONFIG' });
      }
    }
    this._interval = option(options, 'interval', 1000, (v) => Number.isInteger(v) && v >= 1 && v <= MAX_DELAY_MS, 'an integer >= 1');
    const cpu = option(options, 'cpuThreshold', 80, (v) => v > 0 && v <= 100, 'a number, 0 < x <= 100');
    const memory = option(options, 'memoryThreshold', 2048, (v) => v > 0, 'a number > 0');
    this._native = new binding.NativeMonitor(cpu, memory, weakCallback(this, '_onSample'));
    this._stopped = true;
  }

  /** Ms between samples, as checked at construction (read-only: start() passes it to Rust). */
  get interval() {
    return this._interval;
  }

  /** Whole-machine busy percent above which a sample is `exceeded` (held by the native sampler). */
  get cpuThreshold() {
    return this._native.cpuThreshold;
  }

  /** MB resident in this process and its children above which a sample is `exceeded`. */
  get memoryThreshold() {
    return this._native.memoryThreshold;
  }

  get running() {
    return !this._stopped;
  }

  /** Starts periodic sampling (idempotent). The sampler never keeps Node.js alive. */
  start() {
    if (this._native.start(this._interval)) {
      this._stopped = false;
      emitSafely(this, 'started', { interval: this._interval, timestamp: Date.now() });
    }
    return this;
  }

  /** Stops sampling; the Rust task is ended and joined before this returns. */
  stop() {
    if (this._native.stop()) {
      this._stopped = true;
      emitSafely(this, 'stopped', { timestamp: Date.now() });
    }
    return this;
  }

  /** Samples now, emits as a periodic sample would, and returns the status. */
  check() {
    return this._deliver(this._native.sampleNow());
  }

  /** The latest sample (taking one if there is none yet). */
  getStatus() {
    const s = this._native.latest();
    return s === null ? toStatus(this._native.sampleNow()) : toStatus(s);
  }

  /** The last 60 samples: `{ cpu: [{ value, timestamp }], memory: [...] }`. */
  getTrends() {
    return this._native.trends();
  }

  /** A periodic sample. One already on its way when stop() ran is dropped: no events after stop(). */
  _onSample(s) {
    if (!this._stopped) this._deliver(s);
  }

  _deliver(s) {
    const status = toStatus(s);
    emitSafely(this, 'sample', { ...status, exceeded: s.exceeded });
    if (s.exceeded.length > 0) {
      emitSafely(this, 'threshold-exceeded', {
        cpu: s.cpu,
        memory: s.memory,
        timestamp: s.timestamp,
        exceeded: s.exceeded,
        thresholds: { cpu: this.cpuThreshold, memory: this.memoryThreshold },
      });
    }
    return status;
  }
}

module.exports = { ResourceMonitor };

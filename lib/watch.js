'use strict';

// Following one execution: `waitFor(id)` (a promise of its final status) and `watch(id)` (an
// async iterator over its progress, ending with its final status).

const { extras } = require('./record.js');
const { statusObject, findRecord, executionStatus } = require('./queries.js');
const { parseDurableId } = require('./durable/values.js');

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

/** Adds a function called `(finalStatusObject, statusName)` when `rec` ends. */
function onEnd(rec, waiter) {
  const x = extras(rec);
  if (x.waiters === null) x.waiters = [];
  x.waiters.push(waiter);
}

const Watchers = {
  /** `rec` has ended as `status`: its waiters get its final status object (read before retention can drop it). */
  notify(ex, rec, status) {
    const waiters = rec.x.waiters;
    rec.x.waiters = null;
    const v = ex._native.viewFinished(rec.id);
    const snapshot = v === null ? { found: false } : statusObject(rec, v);
    for (const w of waiters) w(snapshot, status);
  },

  /** A progress report of a watched execution (`x` is its Extras). */
  progress(x, update) {
    for (const w of x.watchers) w.push(update);
  },
};

function waitFor(ex, executionId) {
  const rec = findRecord(ex, executionId);
  if (rec === undefined) return Promise.resolve({ found: false });
  if (rec.done) return Promise.resolve(executionStatus(ex, executionId));
  return new Promise((resolve) => onEnd(rec, resolve));
}

function watch(ex, executionId) {
  const it = new Watch();
  const rec = findRecord(ex, executionId);
  if (rec === undefined) it.end({ found: false });
  else if (rec.done) it.end(executionStatus(ex, executionId));
  else {
    // Start with where it stands now, so a late watcher is not left waiting.
    const v = ex._native.view(rec.id);
    it.push({
      executionId,
      agent: rec.agent,
      progress: v !== null ? v.progress : 0,
      status: v !== null ? v.status : 'queued',
      detail: rec.x !== null ? rec.x.detail : undefined,
    });
    const x = extras(rec);
    if (x.watchers === null) x.watchers = [];
    x.watchers.push(it);
    onEnd(rec, (final) => {
      x.watchers = null;
      it.end(final);
    });
    it.onReturn = () => {
      if (x.watchers !== null) x.watchers = x.watchers.filter((w) => w !== it);
    };
  }
  return it;
}

/**
 * `watch()` of a durable execution: where it stands in the store now, the progress reported
 * in this process, then its final status. Progress of an execution running in another
 * process is read with `fetchExecutionStatus`.
 */
function watchStored(ex, executionId) {
  const it = new Watch();
  ex.fetchExecutionStatus(executionId).then(
    (now) => {
      if (!now.found || now.status === 'completed' || now.status === 'failed' || now.status === 'cancelled') {
        it.end(now);
        return;
      }
      it.push({ executionId, agent: now.agent, progress: now.progress, status: now.status, detail: undefined });
      const stop = ex._store.followProgress(parseDurableId(executionId), it);
      it.onReturn = stop;
      ex.waitFor(executionId).then((final) => {
        stop();
        it.end(final);
      });
    },
    (err) => it.end({ found: false, error: err.message, errorObject: err }),
  );
  return it;
}

module.exports = { Watchers, onEnd, waitFor, watch, watchStored };

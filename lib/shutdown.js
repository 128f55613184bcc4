'use strict';

// Shutting an executor down: `'cancel'` (default) cancels the queue and lets running agents
// finish; `'drain'` runs the queue to the end. After `timeoutMs`, whatever still runs is
// aborted and cancelled (the core's shutdown timer calls `forceShutdown`).

const { shutdownError } = require('./errors.js');
const { idOf } = require('./record.js');
const { shutdownOptions } = require('./options.js');

function shutdown(ex, options) {
  if (ex._shutdownPromise !== null) return ex._shutdownPromise;
  let mode;
  let timeoutMs;
  try {
    ({ mode, timeoutMs } = shutdownOptions(options));
  } catch (err) {
    return Promise.reject(err);
  }
  ex._flush();
  ex._closing = true;
  ex._shutdownPromise = new Promise((resolve) => {
    ex._shutdownResolve = resolve;
  });
  const c = ex._native.counts();
  ex._emit('shutting-down', { running: c.running, queued: c.queued, mode, timeoutMs });
  // Stored executions stay in the store; in 'cancel' mode the attempts running here go back.
  if (ex._store !== null) ex._store.beginShutdown(mode);
  const cancelled = ex._native.close(mode === 'cancel');
  if (ex._queueWaiters.length > 0) ex._checkQueueWaiters();
  // A drain runs the queue to the end, so a paused executor resumes.
  if (mode === 'drain' && ex._native.counts().paused) ex._launchAll(ex._native.setPaused(false));
  // Delivered in order: an execution whose submission is still being answered (shutdown()
  // called from a listener or callback) is cancelled after that answer.
  ex._deliver(() => {
    for (const id of cancelled) {
      const rec = ex._records.get(id);
      if (rec !== undefined && !rec.done) ex._end(rec, 'cancelled', shutdownError(idOf(rec), rec.agent));
    }
    if (ex._native.isQuiet()) finishShutdown(ex, false);
    else if (timeoutMs !== undefined) ex._native.armShutdownTimer(timeoutMs);
  });
  return ex._shutdownPromise;
}

/**
 * During a shutdown, a slot was freed: once nothing is queued or running and no cancelled or
 * timed-out agent still holds a slot (it settled, or its grace period ended), it completes.
 */
function shutdownMayFinish(ex) {
  if (ex._closing && !ex._shutdownDone && !ex._busy && ex._native.isQuiet()) finishShutdown(ex, false);
}

/** The shutdown deadline passed: abort and cancel whatever still runs. */
function forceShutdown(ex) {
  if (ex._shutdownDone) return;
  if (ex._store !== null) ex._store.forced();
  ex._flush();
  for (const id of ex._native.abortAll()) {
    const rec = ex._records.get(id);
    if (rec === undefined || rec.done) continue;
    const err = shutdownError(idOf(rec), rec.agent);
    rec.value = err;
    ex._abort(rec, err);
    ex._end(rec, 'cancelled', err);
  }
  ex._deferred = [];
  finishShutdown(ex, true);
}

function finishShutdown(ex, forced) {
  if (ex._shutdownDone) return;
  if (ex._store !== null && ex._store.closed !== true) {
    // Pending writes committed and the store closed before the end is reported.
    ex._store.close().then(() => finishShutdown(ex, forced));
    return;
  }
  ex._shutdownDone = true;
  // Nothing waits in the queue any more.
  for (const w of ex._queueWaiters) w.resolve();
  ex._queueWaiters = [];
  // Nor runs: idle, if no sync has said so (a paused or delayed queue was cancelled, or the
  // deadline passed), so onIdle() waiters are answered and 'idle' comes before the end.
  if (ex._busy || ex._idleWaiters.length > 0) {
    ex._busy = false;
    ex._becameIdle();
  }
  ex._release();
  ex._stopMonitor();
  const c = ex._native.counts();
  ex._native.dispose();
  ex._collectEvicted();
  ex._emit('shutdown-complete', {
    forced,
    completed: c.completed,
    failed: c.failed,
    cancelled: c.cancelled,
    timestamp: Date.now(),
  });
  ex._shutdownResolve();
}

module.exports = { shutdown, forceShutdown, finishShutdown, shutdownMayFinish };

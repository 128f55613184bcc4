'use strict';

// The durable layer's side of an executor's shutdown (../shutdown.js drives it): once it
// begins, nothing more is claimed, and in `cancel` mode the attempts running here go back to
// the queue, uncounted, for another executor; so does whatever still runs at the deadline.
// At the end, callers still waiting for an outcome are answered, pending writes committed,
// and the store closed. Executions stay in the store either way.
//
// The functions take the durable layer (the Durable of durable.js) as their first argument.

const { coded, shutdownError } = require('../errors.js');
const { durableId } = require('./values.js');
const { MODE_EXECUTE } = require('../protocol.js');

/** @typedef {import('./durable.js').Durable} Durable */

/**
 * Shutdown began: claim nothing more; in `cancel` mode running attempts go back to the queue.
 * @param {Durable} durable
 */
function beginShutdown(durable, mode) {
  durable.closing = true;
  durable._sendInterest();
  if (mode === 'cancel') {
    durable.releaseRunning = true;
    for (const rec of [...durable.runs.values()]) {
      if (rec.done || !rec.x.durable.running) continue;
      rec.x.durable.release = true;
      durable.ex._cancelRec(rec, shutdownError(rec.x.durable.extId, rec.agent));
    }
  }
  durable._updateKeepAlive();
}

/**
 * The shutdown deadline passed: what still runs goes back to the queue.
 * @param {Durable} durable
 */
function forced(durable) {
  durable.releaseRunning = true;
}

/** Executors closing their store: held here until closed (the native side holds them weakly). */
const CLOSING = new Set();

/**
 * The executor is done: pending writes are committed (the ends of attempts run here answer
 * their callers as they are recorded), the store closed, and callers still waiting for an
 * outcome then get `ERR_EXECUTOR_SHUT_DOWN` (their executions stay in the store).
 * @param {Durable} durable
 */
function close(durable) {
  if (durable.closePromise !== undefined) return durable.closePromise;
  durable.closing = true;
  CLOSING.add(durable);
  durable.closePromise = durable.opened
    .then(
      () => durable.link.close(),
      () => durable.link.close(),
    )
    .catch((err) => durable._backgroundError(err))
    .finally(() => {
      for (const rowId of [...durable.handles.keys()]) answerClosed(durable, rowId);
      waitersNotFound(durable);
      CLOSING.delete(durable);
      durable.closed = true;
      if (durable.keptAlive) durable.link.native.keepAlive(false);
      durable.keptAlive = false;
    });
  durable._updateKeepAlive();
  return durable.closePromise;
}

/**
 * The callers waiting for execution `rowId` get `ERR_EXECUTOR_SHUT_DOWN`: at close, and for
 * a submission whose commit is answered after it (made just before `shutdown()`).
 * @param {Durable} durable
 */
function answerClosed(durable, rowId) {
  answerWith(
    durable,
    rowId,
    coded(
      Error,
      'ERR_EXECUTOR_SHUT_DOWN',
      `The executor shut down before execution ${durableId(rowId)} ended; it stays in the store (fetchExecutionStatus reads its outcome later)`,
      { executionId: durableId(rowId) },
    ),
  );
}

/**
 * The store's thread failed: every caller waiting for an outcome gets `ERR_STORE` (none
 * could be read any more), `waitFor()` a not-found.
 * @param {Durable} durable
 */
function storeStopped(durable, text) {
  for (const rowId of [...durable.handles.keys()]) {
    const err = coded(Error, 'ERR_STORE', `The outcome of execution ${durableId(rowId)} cannot be read: ${text}`, { executionId: durableId(rowId) });
    answerWith(durable, rowId, err);
  }
  waitersNotFound(durable);
}

/** Every `waitFor()` still waiting gets a not-found: no outcome can be read here any more. */
function waitersNotFound(durable) {
  for (const [rowId, list] of [...durable.waiters]) {
    durable.waiters.delete(rowId);
    for (const w of list) w({ found: false });
  }
}

/** The callers waiting for execution `rowId` get `err`. */
function answerWith(durable, rowId, err) {
  const list = durable.handles.get(rowId);
  if (list === undefined) return;
  durable.handles.delete(rowId);
  for (const rec of list) if (rec.mode === MODE_EXECUTE || rec.callback !== null) durable._settleHandle(rec, 'failed', err);
}

module.exports = { beginShutdown, forced, close, answerClosed, storeStopped };

'use strict';

// Cancelling stored executions. `cancelExecution` of a durable id, from any process, asks
// the store: a queued execution ends at once, here; a running one is marked, and the store's
// thread tells the executor that runs it (`cancelRequested`), which cancels its local
// attempt. The submitter's own `signal` cancels the same way.
//
// The functions take the durable layer (the Durable of durable.js) as their first argument.

const { cancelledError } = require('../errors.js');
const { parseDurableId, errorJson } = require('./values.js');
const { MODE_NAMES, STATUS_NAMES, STATUS_QUEUED, STATUS_RUNNING, STATUS_CANCELLED, NOT_FOUND } = require('../protocol.js');

/** @typedef {import('./durable.js').Durable} Durable */

/** How far the clock of the host that ended an execution may lag this one's (ms). */
const CLOCK_SLACK_MS = 100;

/**
 * `cancelExecution` of a durable id, from any process. One this process does not know is
 * read first: its cancellation error and event name its agent, task and mode.
 * @param {Durable} durable
 */
function cancel(durable, executionId) {
  const rowId = parseDurableId(executionId);
  const known = durable._known(rowId);
  if (known !== undefined) return cancelAs(durable, executionId, rowId, { agent: known.agent, task: known.task, mode: MODE_NAMES[known.mode] });
  return durable.link.fetch(rowId).then((ev) => {
    const row = ev.rows[0];
    if (row === undefined) return { success: false, error: 'Execution not found' };
    return cancelAs(durable, executionId, rowId, { agent: row.agent, task: row.task, mode: MODE_NAMES[row.mode] });
  });
}

/**
 * Asks the store to cancel `rowId`, an execution of `what.agent` (its task and mode).
 * @param {Durable} durable
 */
function cancelAs(durable, executionId, rowId, what) {
  const err = cancelledError(executionId, what.agent);
  const json = errorJson(err);
  const askedAt = Date.now();
  // Running here: from now its attempt's end is this cancel's, even if a shutdown hands it
  // back before the store has answered (the store would end it cancelled, and nobody say so).
  const run = durable.runs.get(rowId);
  const local = run !== undefined && run.x.durable.running;
  if (local) run.x.durable.cancelAsked = true;
  return durable.link
    .cancel(rowId, json)
    .then(
      (ev) => (ev.resent && ev.codes[0] === STATUS_CANCELLED ? byEarlierTry(durable, rowId, json, askedAt) : ev.codes[0]),
      (err) => {
        // Not asked after all: a shutdown may hand the attempt back.
        if (local) run.x.durable.cancelAsked = false;
        throw err;
      },
    )
    .then((was) => {
      if (was === NOT_FOUND) return { success: false, error: 'Execution not found' };
      // Its end, written here as this cancel's, reached the store first.
      if (was === STATUS_CANCELLED && local && run.x.durable.cancelAsked) return { success: true, executionId, previousStatus: 'running' };
      if (was === STATUS_QUEUED) {
        // Ended by this cancel: no executor will report it.
        durable.ex._emit('execution-cancelled', {
          executionId,
          agent: what.agent,
          task: what.task,
          mode: what.mode,
          error: err.message,
          errorObject: err,
          code: err.code,
          duration: 0,
        });
        durable._settle(rowId, 'cancelled', err, { ...durable._fallbackStatus(rowId, executionId, err), task: what.task, mode: what.mode, status: 'cancelled' });
        return { success: true, executionId, previousStatus: 'queued' };
      }
      if (was === STATUS_RUNNING) return { success: true, executionId, previousStatus: 'running' };
      return { success: false, error: `Cannot cancel execution in ${STATUS_NAMES[was]} status` };
    });
}

/**
 * A cancel sent again after a lost connection found its execution cancelled. What did the
 * earlier try (whose answer was lost) find?
 * - Queued: it ended it then, with this very cancel's error; a queued execution is never
 *   flagged `cancel_requested`.
 * - Running: it flagged it, and the execution ended after this cancel was first asked (the
 *   row holds the runner's cancellation error, or this cancel's when it overruled an end).
 * - Else it was cancelled before this cancel.
 * @param {Durable} durable
 */
function byEarlierTry(durable, rowId, json, askedAt) {
  return durable.link.fetch(rowId).then(
    (ev) => {
      const row = ev.rows[0];
      if (row === undefined) return STATUS_CANCELLED;
      if (!row.cancelRequested) return row.error === json ? STATUS_QUEUED : STATUS_CANCELLED;
      return row.finalizedAt != null && row.finalizedAt >= askedAt - CLOCK_SLACK_MS ? STATUS_RUNNING : STATUS_CANCELLED;
    },
    () => STATUS_CANCELLED,
  );
}

/**
 * The submitter's own signal aborted: the execution is cancelled, unless this submission
 * joined a live one by its key; it then leaves it, and the execution goes on for the others.
 * @param {Durable} durable
 */
function userAborted(durable, rec, reason) {
  const d = rec.x.durable;
  // Between attempts (a retry waits) the record is done but the execution is not.
  if (d.rowId === 0 || !durable.handles.has(d.rowId)) return;
  if (d.joined) leave(durable, rec, reason);
  else cancel(durable, d.extId).catch((err) => durable._backgroundError(err));
}

/**
 * A submission that joined execution `rec.x.durable.rowId` by its key leaves it: answered
 * as cancelled (with `reason` as the cause), no longer told of its end.
 * @param {Durable} durable
 */
function leave(durable, rec, reason) {
  const rowId = rec.x.durable.rowId;
  const list = durable.handles.get(rowId);
  const i = list === undefined ? -1 : list.indexOf(rec);
  if (i < 0) return;
  list.splice(i, 1);
  if (list.length === 0) {
    durable.handles.delete(rowId);
    if (!durable.waiters.has(rowId) && !durable.runs.has(rowId)) durable.toUnwatch.push(rowId);
  }
  durable._settleHandle(rec, 'cancelled', cancelledError(rec.x.durable.extId, rec.agent, reason));
  durable._flushWatches();
  durable._updateKeepAlive();
  if (durable.idle()) durable.ex._checkIdle();
}

/**
 * The store asks to cancel attempts (`ids`: row id, attempt, ...): those running here are cancelled.
 * @param {Durable} durable
 */
function cancelRequested(durable, ids) {
  const ex = durable.ex;
  for (let i = 0; i + 1 < ids.length; i += 2) {
    const rec = durable.runs.get(ids[i]);
    if (rec === undefined || rec.done) continue;
    const d = rec.x.durable;
    if (!d.running || d.attempt !== ids[i + 1]) continue;
    d.cancelAsked = true;
    ex._cancelRec(rec, cancelledError(d.extId, rec.agent));
  }
}

module.exports = { cancel, userAborted, cancelRequested };

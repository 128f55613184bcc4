'use strict';

// What the store's thread sends back, routed to the part that handles it. `onStoreEvent`
// takes every answer and notice (the store opened, a request failed, rows changed, cancels
// requested, executions ended or rescued, the link to a server lost or back, a background
// error); `batchDone` takes the answer to one batch: the ids of its submissions, the
// store's answers to its attempt ends, and the rows it claimed. A failed batch is sent again
// as it was while the failure is transient (a busy database, a lost connection).
//
// The functions take the durable layer (the Durable of durable.js) as their first argument.

const { coded } = require('../errors.js');
const { storeError } = require('./store-link.js');
const { durableId, errorJson } = require('./values.js');
const { inserted, refused } = require('./submissions.js');
const { claimed, finishAnswered } = require('./runs.js');
const { cancelRequested } = require('./cancels.js');
const P = require('../protocol.js');

const { STATUS_NAMES, STATUS_QUEUED } = P;

/** Failed batches in a row for a busy database before its submissions are refused. */
const BUSY_RETRIES = 5;

/** @typedef {import('./durable.js').Durable} Durable */

/**
 * Every answer and notice of the store's thread.
 * @param {Durable} durable
 */
function onStoreEvent(durable, ev) {
  switch (ev.kind) {
    case P.STORE_OPENED:
      durable.owner = ev.text;
      durable.openResolve();
      durable._sendInterest();
      break;
    case P.STORE_FAILED:
      if (ev.req === 0) {
        durable.openError = storeError(ev.errorCode, ev.text);
        durable.openReject(durable.openError);
      } else if (durable.link.isBatch(ev.req)) durable.link.batchAnswered(ev);
      else durable.link.answer(ev);
      break;
    case P.STORE_BATCH:
      durable.link.batchAnswered(ev);
      break;
    case P.STORE_CHANGED:
      durable.link.wantClaim();
      break;
    case P.STORE_CANCEL_REQUESTED:
      cancelRequested(durable, ev.ids);
      break;
    case P.STORE_ENDED:
      for (const row of ev.rows) durable._endedRow(row);
      for (const id of ev.ids) durable._gone(id);
      for (const id of ev.codes) durable._endedUnread(id);
      break;
    case P.STORE_RESCUED:
      rescued(durable, ev.ids, ev.names);
      break;
    case P.STORE_LINK:
      durable.ex._emit(ev.codes[0] === 1 ? 'store-reconnected' : 'store-disconnected', { store: ev.text });
      break;
    case P.STORE_STOPPED:
      // The thread failed: users hear why; then it is a stopped thread like any other.
      durable._backgroundError(storeError(ev.errorCode, ev.text));
      durable.link.threadStopped(ev.text, true);
      break;
    case P.STORE_BACKGROUND_ERROR:
      // A heartbeat, rescue or retention that found the database busy runs again on its
      // own at its next period: counted, not reported.
      if (ev.errorCode === 'ERR_STORE_BUSY') durable.stats.busy++;
      else if (ev.errorCode !== 'ERR_STORE_DISCONNECTED') durable._backgroundError(storeError(ev.errorCode, ev.text));
      break;
    default:
      durable.link.answer(ev);
  }
  durable._flushWatches();
  durable._updateKeepAlive();
  if (durable.idle()) durable.ex._checkIdle();
}

/**
 * A batch came back: answers for its submissions and attempt ends, and the claimed rows.
 * @param {Durable} durable
 */
function batchDone(durable, sent, ev) {
  if (ev.kind === P.STORE_FAILED) {
    const err = storeError(ev.errorCode, ev.text);
    // Another process held the lock too long: everything goes again as it was (submissions
    // are still unacknowledged), unless it keeps happening.
    // A lost connection to a server: the same, for as long as it takes (store-disconnected
    // tells users; the store thread gets the connection back by itself).
    const lost = ev.errorCode === 'ERR_STORE_DISCONNECTED';
    const transient = lost || (ev.errorCode === 'ERR_STORE_BUSY' && durable.link.failures < BUSY_RETRIES);
    // The store refused what was written (a constraint, a trigger, a value it cannot hold),
    // not the batch as a whole.
    const bad = ev.errorCode === 'ERR_STORE_REFUSED';
    if (bad && sent.writes + (sent.claim > 0 ? 1 : 0) > 1) {
      // Which write is unknown: the batch goes again in halves, halved again while refused,
      // then the claim, so the refused one fails by itself (and is reported then) and the
      // others are stored. Progress is not sent again (a later report replaces it).
      durable.link.isolate(sent);
      return;
    }
    if (transient && sent.isolated) {
      if (!lost) durable.stats.busy++;
      durable.link.retryIsolated(sent);
      return;
    }
    // A lost connection is reported by store-disconnected.
    if (transient && !lost) durable.stats.busy++;
    else if (!transient && ev.stopped !== true) durable._backgroundError(err);
    for (let i = 0; i < sent.insertRecs.length; i++) {
      if (transient) durable.link.insert(sent.inserts[i], sent.insertRecs[i]);
      else refused(sent.insertRecs[i], err);
    }
    // Attempt ends are never lost: they go again with the next batch (which close() waits
    // for), as long as the store fails (a server read-only for a while, out of space); one
    // the store refuses ends its execution as failed, with that cause.
    for (let i = 0; i < sent.finishRecs.length; i++) {
      const f = sent.finishes;
      if (bad) unstorable(durable, sent.finishRecs[i], f[i * 4 + 1], err);
      else durable.link.finish(f[i * 4], f[i * 4 + 1], f[i * 4 + 2], f[i * 4 + 3] === 1, sent.finishValues[i], sent.finishRecs[i]);
    }
    // Releases too, unless refused: the attempt then stays held here until the executor
    // stops, like an end given up (store-error said why).
    if (!bad) for (let i = 0; i < sent.releases.length; i += 2) durable.link.release(sent.releases[i], sent.releases[i + 1]);
    if (sent.claim > 0) durable.link.claimWanted = true;
    return;
  }
  const recs = sent.insertRecs;
  for (let i = 0; i < recs.length; i++) {
    const id = ev.ids[i];
    inserted(durable, recs[i], id < 0 ? -id : id, id < 0);
  }
  for (let i = 0; i < sent.finishRecs.length; i++) finishAnswered(durable, sent.finishRecs[i], sent.finishes[i * 4 + 2], ev.codes[i]);
  const rows = ev.rows;
  for (let i = 0; i < rows.length; i++) claimed(durable, rows[i]);
  // A full claim: more may be waiting for the next free slot.
  if (sent.claim > 0 && rows.length >= sent.claim) durable.link.claimWanted = true;
  if (rows.length > 0) durable.ex._flush();
}

/**
 * The store refused, for good, the end of `attempt` of `rec` sent alone: the execution ends
 * as failed with an ERR_STORE error naming the cause, a record any store can hold. If that
 * is refused too, the end is given up: the attempt stays running in the store, held by this
 * executor until it stops, then rescued like a crash's; store-error says so.
 * @param {Durable} durable
 */
function unstorable(durable, rec, attempt, cause) {
  const d = rec.x.durable;
  if (d.unstorableAttempt === attempt) {
    if (durable.runs.get(d.rowId) === rec) durable.runs.delete(d.rowId);
    durable._backgroundError(
      coded(Error, 'ERR_STORE', `The end of execution ${d.extId} (attempt ${attempt}) was not written: the store refused it, and its failure too (${cause.message})`, {
        executionId: d.extId,
        cause,
      }),
    );
    return;
  }
  d.unstorableAttempt = attempt;
  const err = coded(Error, 'ERR_STORE', `The outcome of execution ${d.extId} (attempt ${attempt}) could not be stored: ${cause.message}`, {
    executionId: d.extId,
    cause,
  });
  d.value = err;
  durable.link.finish(d.rowId, attempt, P.STATUS_FAILED, false, errorJson(err), rec);
}

/**
 * Closing on a failing store: what could not be written is given up, visibly.
 * @param {Durable} durable
 */
function gaveUp(durable, pending, why = 'The store kept failing while closing') {
  // Submissions not acknowledged: refused, as a commit that failed for good refuses them.
  for (const rec of pending.insertRecs) {
    refused(
      rec,
      coded(Error, 'ERR_STORE', `${why}: the submission could not be confirmed stored (stored only if a commit went through and its answer was lost)`),
    );
  }
  // Attempt ends not written: their executions' leases run out and the store's rescue runs
  // them again elsewhere; here they are done with.
  for (const rec of pending.finishRecs) {
    const d = rec.x.durable;
    if (durable.runs.get(d.rowId) === rec) durable.runs.delete(d.rowId);
  }
  const n = pending.finishRecs.length + pending.releases.length / 2;
  if (n > 0) {
    const err = coded(Error, 'ERR_STORE', `${why}: ${n} attempt end(s) not written; once their leases run out the store's rescue runs them again, or fails them with ERR_WORKER_LOST when no retries are left`);
    durable._backgroundError(err);
  }
}

/**
 * Running attempts of other executors that this executor's store rescued (their lease
 * expired, or their process is gone). `ids`: row id, attempt, status after the rescue, ...;
 * `names`: agent, owner, .... Each is reported; one the rescue ended is settled here.
 * @param {Durable} durable
 */
function rescued(durable, ids, names) {
  for (let i = 0, j = 0; i + 2 < ids.length; i += 3, j += 2) {
    const rowId = ids[i];
    const status = ids[i + 2];
    durable.stats.rescued++;
    durable.ex._emit('execution-rescued', {
      executionId: durableId(rowId),
      agent: names[j],
      attempt: ids[i + 1],
      owner: names[j + 1],
      status: STATUS_NAMES[status],
    });
    if (status !== STATUS_QUEUED && (durable.handles.has(rowId) || durable.waiters.has(rowId))) {
      // Ended by this executor's own rescue: no change of another connection reports it.
      durable.link
        .fetch(rowId)
        .then((ev) => {
          if (ev.rows.length > 0) durable._endedRow(ev.rows[0]);
        })
        .catch((err) => durable._backgroundError(err));
    }
  }
}

module.exports = { onStoreEvent, batchDone, gaveUp };

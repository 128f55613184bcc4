'use strict';

// `options.key` in memory: while an execution with a key is queued or running, a submission
// with the same key follows it — the same id, the same outcome — instead of running.

const { extras, idOf } = require('./record.js');
const { describe, typeError, rangeError, cancelledError } = require('./errors.js');
const { MODE_EXECUTE, MODE_NAMES } = require('./protocol.js');

/** The longest key, in UTF-16 units. */
const MAX_KEY_LENGTH = 1024;

/** Refuses a bad `options.key`: TypeError for a wrong type or '', RangeError when too long. */
function checkKey(key) {
  if (typeof key !== 'string' || key === '') {
    throw typeError(`options.key must be a non-empty string of at most ${MAX_KEY_LENGTH} characters, got ${describe(key)}`);
  }
  if (key.length > MAX_KEY_LENGTH) {
    throw rangeError(`options.key must be at most ${MAX_KEY_LENGTH} characters long, got ${key.length}`);
  }
}

/**
 * Gives `rec` its key: it follows the live execution holding the key (true), or holds the
 * key itself (false).
 */
function followKey(ex, rec, key) {
  checkKey(key);
  const x = extras(rec);
  x.key = key;
  const live = ex._keys.get(key);
  if (live === undefined || live.done) {
    ex._keys.set(key, rec);
    return false;
  }
  const lx = extras(live);
  if (lx.followers === null) lx.followers = [];
  lx.followers.push(rec);
  rec.id = -1; // not an execution of its own
  x.following = live;
  // Its own signal takes it out of the shared execution (which goes on for the others);
  // wired once the caller has its promise, as a submission's signal is.
  if (x.userSignal !== null) {
    queueMicrotask(() => {
      if (!rec.done && x.userSignal !== null) ex._wireSignal(rec, x.userSignal);
    });
  }
  if (rec.mode !== MODE_EXECUTE) {
    // Answered like a submission (its caller sets `admitted` on return), once the execution
    // it follows has its id and every earlier answer has been delivered.
    queueMicrotask(() => {
      ex._flush();
      ex._deliver(() => answerFollower(rec, live));
    });
  }
  return true;
}

/** The id-returning call of a follower: the followed execution's id and status. */
function answerFollower(rec, live) {
  const x = rec.x;
  if (x.admitted === null) return;
  if (live.id === 0) {
    // The execution it followed was refused: so is this one.
    const refused = x.refused;
    x.admitted = null;
    x.refused = null;
    refused(live.value);
    return;
  }
  const status = live.done ? (live.x.ended ?? 'completed') : live.phase === 1 ? 'running' : 'queued';
  const admitted = x.admitted;
  x.admitted = null;
  admitted({ executionId: idOf(live), mode: MODE_NAMES[rec.mode], status });
}

/** A follower's own signal aborted: it leaves with a cancellation; the execution goes on. */
function leave(ex, rec, reason) {
  const live = rec.x.following;
  if (rec.done || live.x.followers === null) return;
  live.x.followers = live.x.followers.filter((f) => f !== rec);
  ex._unwireSignal(rec);
  const err = cancelledError(idOf(live), rec.agent, reason);
  rec.done = true;
  rec.value = err;
  ex._answer(rec, false, err);
}

/** `rec` ended as `status`: its key is free, and its followers get its outcome. */
function keyEnded(ex, rec, status, value) {
  const x = rec.x;
  if (ex._keys.get(x.key) === rec) ex._keys.delete(x.key);
  x.ended = status;
  const followers = x.followers;
  if (followers === null) return;
  x.followers = null;
  for (const f of followers) {
    if (f.x.userSignal !== null) ex._unwireSignal(f);
    f.done = true;
    f.value = value;
    // Following a refused submission (never queued): refused as it is, by the id-returning
    // call's rejection (answerFollower) only, not also by the callback.
    if (rec.id === 0 && f.mode !== MODE_EXECUTE) continue;
    ex._answer(f, status === 'completed', value);
  }
}

module.exports = { checkKey, followKey, leave, keyEnded };

'use strict';

// Users' AbortSignals (`options.signal`). One signal is often shared by many submissions (a
// request's signal, a workflow's): it gets one 'abort' listener however many executions
// follow it, so no MaxListenersExceededWarning and no cost per execution on the signal.

/** signal -> { listener, followers: Map<rec, executor> } */
const followed = new WeakMap();

/** `rec` of executor `ex` is cancelled when `signal` aborts (until `unfollow`). */
function follow(signal, ex, rec) {
  let entry = followed.get(signal);
  if (entry === undefined) {
    entry = { listener: () => aborted(signal), followers: new Map() };
    followed.set(signal, entry);
    signal.addEventListener('abort', entry.listener, { once: true });
  }
  entry.followers.set(rec, ex);
}

/** `rec` ended: `signal` no longer cancels it; the listener goes with the last follower. */
function unfollow(signal, rec) {
  const entry = followed.get(signal);
  if (entry === undefined || !entry.followers.delete(rec) || entry.followers.size > 0) return;
  followed.delete(signal);
  signal.removeEventListener('abort', entry.listener);
}

function aborted(signal) {
  const entry = followed.get(signal);
  if (entry === undefined) return;
  followed.delete(signal);
  for (const [rec, ex] of entry.followers) ex._userAborted(rec, signal.reason);
}

module.exports = { follow, unfollow };

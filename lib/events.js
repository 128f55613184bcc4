'use strict';

// Emitting without letting a listener break the emitter, and telling the executor when its
// listeners change.

const { EventEmitter } = require('node:events');

/** Throws `err` from a fresh task: an uncaught exception, as a throwing listener would be. */
function rethrowLater(err) {
  process.nextTick(() => {
    throw err;
  });
}

/**
 * Emits `name` when it has listeners. A listener that throws does not leave the emitter's
 * bookkeeping half done (and never throws back into a native callback, which would be
 * fatal): its error is re-thrown from a fresh task. `_events` is read first because with no
 * listener that is all an emit costs.
 */
function emitSafely(emitter, name, payload) {
  if (emitter._events[name] === undefined) return;
  try {
    emitter.emit(name, payload);
  } catch (err) {
    rethrowLater(err);
  }
}

/**
 * Makes `Class` call `this._listenersChanged(event)` after every listener change (`event` is
 * undefined when `removeAllListeners()` removed them all). Done by overriding the methods,
 * not with 'newListener' listeners of our own, which users would see in eventNames() and
 * could remove. `once` and `prependOnceListener` go through `on` and `prependListener`.
 */
function reportListenerChanges(Class) {
  for (const method of ['on', 'addListener', 'prependListener', 'removeListener', 'off', 'removeAllListeners']) {
    const base = EventEmitter.prototype[method];
    Class.prototype[method] = function (...args) {
      base.apply(this, args);
      this._listenersChanged(args[0]);
      return this;
    };
  }
}

module.exports = { emitSafely, rethrowLater, reportListenerChanges };

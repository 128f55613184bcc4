'use strict';

// The native core (the loader `npm run build` writes as binding.js) and the one way this
// package hands it a callback.

const binding = require('../binding.js');

/**
 * A callback for the native side that calls `target[method](arg)` through a WeakRef. A native
 * threadsafe function holds its JS function strongly; going through a WeakRef lets an object
 * nobody references any more be collected, and its native half dropped with it.
 */
function weakCallback(target, method) {
  const weak = new WeakRef(target);
  return (arg) => {
    const t = weak.deref();
    if (t !== undefined) t[method](arg);
  };
}

module.exports = { binding, weakCallback };

'use strict';

// Every error this package creates carries a `code` (contract §11).

function coded(Ctor, code, message, extra) {
  const err = new Ctor(message);
  err.code = code;
  if (extra !== undefined) Object.assign(err, extra);
  return err;
}

/** Array.isArray that never throws (it does on a revoked Proxy). */
function isArray(value) {
  try {
    return Array.isArray(value);
  } catch {
    return false;
  }
}

/** `value instanceof Ctor` that never throws (a Proxy's getPrototypeOf trap may). */
function isInstance(value, Ctor) {
  try {
    return value instanceof Ctor;
  } catch {
    return false;
  }
}

/** A short, never-throwing description of any value, for error messages. */
function describe(value) {
  switch (typeof value) {
    case 'string':
      return value.length > 60 ? JSON.stringify(value.slice(0, 57) + '...') : JSON.stringify(value);
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'symbol':
      return value.toString();
    case 'function':
      return `function ${value.name || '(anonymous)'}`;
    case 'undefined':
      return 'undefined';
    case 'boolean':
      return String(value);
    default:
      if (value === null) return 'null';
      try {
        if (Array.isArray(value)) return `an array of length ${value.length}`;
        const tag = Object.prototype.toString.call(value);
        return tag === '[object Object]' ? 'an object' : `an ${tag.slice(8, -1)}`;
      } catch {
        return 'an object';
      }
  }
}

/** The message of anything thrown or rejected: Errors keep theirs, other values are described. */
function messageOf(reason) {
  if (reason instanceof Error) return String(reason.message);
  if (typeof reason === 'string') return reason;
  if (reason !== null && typeof reason === 'object') {
    try {
      if (typeof reason.message === 'string') return reason.message;
    } catch {
      // a throwing getter: fall through
    }
  }
  return `Non-error rejection: ${describe(reason)}`;
}

const typeError = (message) => coded(TypeError, 'ERR_INVALID_ARG', message);
const rangeError = (message) => coded(RangeError, 'ERR_INVALID_ARG', message);

module.exports = { coded, describe, messageOf, typeError, rangeError, isArray, isInstance };

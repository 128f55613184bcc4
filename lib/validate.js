'use strict';

// Argument checks shared by every entry point. Each failure is a TypeError (wrong type) or a
// RangeError (right type, bad value) with code ERR_INVALID_ARG that names the argument.

const { describe, typeError, rangeError } = require('./errors.js');

/** Largest count the core takes for a concurrency (an i32 in JS's eyes). */
const MAX_INT32 = 2147483647;

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

/** An object whose keys can be read as options: not null, not an array, not a revoked Proxy. */
function isOptionsObject(value) {
  if (value === null || typeof value !== 'object') return false;
  try {
    return !Array.isArray(value);
  } catch {
    return false;
  }
}

/** An object literal (or Object.create(null)): not a Map or class instance whose entries would be ignored. */
function hasPlainPrototype(value) {
  try {
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  } catch {
    return false;
  }
}

/** `value` as an integer in [min, max]; `fallback` when undefined. */
function integer(name, value, min, max, fallback) {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name} must be an integer >= ${min}, got ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw rangeError(
      `${name} must be an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}, got ${describe(value)}`,
    );
  }
  return value;
}

/** `value` as a finite number passing `check` (described by `rule`); `fallback` when undefined. */
function number(name, value, check, rule, fallback) {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(`${name} must be ${rule}, got ${describe(value)}`);
  if (!Number.isFinite(value) || !check(value)) throw rangeError(`${name} must be ${rule}, got ${describe(value)}`);
  return value;
}

/** A non-empty string (agent names, execution ids given to registration calls). */
function name(where, value) {
  if (typeof value !== 'string' || value === '') throw typeError(`${where} must be a non-empty string, got ${describe(value)}`);
  wellFormed(where, value);
  return value;
}

/**
 * A string without lone surrogates: one that reaches Rust or a store would come back with
 * U+FFFD in their place, another string (two keys or names would become one).
 */
function wellFormed(where, value) {
  if (!value.isWellFormed()) throw typeError(`${where} must not contain a lone surrogate (UTF-16 code unit without its pair), got ${describe(value)}`);
  return value;
}

/**
 * Text a store keeps: well formed, and without NUL characters, which PostgreSQL's text
 * cannot hold (refused with either store, so an application moves between them unchanged).
 */
function storedText(where, value) {
  wellFormed(where, value);
  if (value.includes('\0')) throw typeError(`${where} must not contain a NUL character (stored as text), got ${describe(value)}`);
  return value;
}

/** A string without NUL characters (what an OS call accepts). */
function osString(where, value) {
  if (typeof value !== 'string') throw typeError(`${where} must be a string, got ${describe(value)}`);
  if (value.includes('\0')) throw typeError(`${where} must not contain a NUL character`);
  return value;
}

module.exports = { isArray, isInstance, isOptionsObject, hasPlainPrototype, integer, number, name, storedText, osString, MAX_INT32 };

'use strict';

// The JSON text of what a durable execution stores: its task, options and result. A value that
// JSON.stringify would drop or change is refused with ERR_NOT_SERIALIZABLE naming its path, so
// what is read back equals what was given. A walk checks the value, then JSON.stringify writes
// it: that is faster than building the text in the walk (one native call instead of one per
// string and key, and no string concatenation), and the text is JSON.stringify's by definition.

const { coded, describe, messageOf } = require('../errors.js');
const { storedText } = require('../validate.js');

/** The deepest nesting of arrays and objects accepted; deeper values are refused. */
const MAX_DEPTH = 1000;

/**
 * The most bytes (UTF-8) one stored text may take. PostgreSQL holds at most 1 GB in a value
 * and in a message, and closes the connection on a bigger message (which would be sent
 * again and again); SQLite at most 10^9 bytes.
 */
const MAX_STORED_BYTES = 512 * 1024 * 1024;

/** Paths longer than this are shortened in messages (the `path` property stays whole). */
const MAX_SHOWN_PATH = 200;

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;
const { hasOwnProperty, propertyIsEnumerable } = Object.prototype;

/** The state of one conversion: the path of the value being read and the objects above it. */
class Walk {
  constructor(root) {
    this.root = root;
    /** keys[i]: the key (string) or index (number) taken below the container at depth i. */
    this.keys = [];
    /** parents[i]: the container at depth i, for cycle checks. */
    this.parents = [];
    /** The depth of the value being read, for errors thrown by getters and Proxy traps. */
    this.at = 0;
    /** The error this walk threw, told apart from what user code throws. */
    this.error = null;
  }
}

/** The path of the value at `depth`: `root.key`, `root[2]`, `root["a b"]`. */
function pathOf(w, depth) {
  let path = w.root;
  for (let i = 0; i < depth; i++) {
    const key = w.keys[i];
    if (typeof key === 'number') path += `[${key}]`;
    else if (IDENTIFIER.test(key)) path += `.${key}`;
    else path += `[${JSON.stringify(key)}]`;
  }
  return path;
}

/** `path`, or its start and end when too long for a message, cut where segments begin. */
function shown(path) {
  if (path.length <= MAX_SHOWN_PATH) return path;
  const head = path.slice(0, MAX_SHOWN_PATH / 2);
  const tail = path.slice(-MAX_SHOWN_PATH / 2);
  const cut = Math.max(head.lastIndexOf('['), head.lastIndexOf('.'));
  const from = tail.search(/[[.]/);
  return `${cut > 0 ? head.slice(0, cut) : head}...${from >= 0 ? tail.slice(from) : tail}`;
}

/**
 * Throws the refusal of the value at `depth`: `<path> is <what>`.
 * @returns {never}
 */
function refuse(w, depth, what, cause) {
  const path = pathOf(w, depth);
  const extra = cause === undefined ? { path } : { path, cause };
  w.error = coded(TypeError, 'ERR_NOT_SERIALIZABLE', `${shown(path)} is ${what}`, extra);
  throw w.error;
}

const article = (name) => (/^[AEIO]/.test(name) ? `an ${name}` : `a ${name}`);

/** What an object whose prototype is not a plain one is, with how to pass it instead. */
function instanceKind(value, proto) {
  if (proto === String.prototype) return 'a boxed string (new String()); pass the string itself';
  if (proto === Number.prototype) return 'a boxed number (new Number()); pass the number itself';
  if (proto === Boolean.prototype) return 'a boxed boolean (new Boolean()); pass the boolean itself';
  if (proto === BigInt.prototype) return 'a boxed BigInt (Object(bigint)); pass it as a string';
  if (proto === Symbol.prototype) return 'a boxed symbol (Object(symbol))';
  let name = '';
  try {
    const ctor = proto.constructor;
    if (typeof ctor === 'function' && ctor.prototype === proto && typeof ctor.name === 'string') name = ctor.name;
  } catch {
    // a throwing getter or trap: described without a name
  }
  if (name === '') return 'an object with a custom prototype (JSON drops inherited properties); pass a plain object';
  let hint = 'pass a plain object';
  try {
    if (value instanceof Date) hint = 'pass date.toISOString()';
    else if (value instanceof Map) hint = 'pass Object.fromEntries(map) or [...map]';
    else if (value instanceof Set) hint = 'pass [...set]';
    else if (value instanceof RegExp) hint = 'pass regexp.source';
    else if (value instanceof Error) hint = 'pass error.message';
    else if (Buffer.isBuffer(value)) hint = "pass buffer.toString('base64')";
    else if (ArrayBuffer.isView(value)) hint = 'pass Array.from(view)';
    else if (value instanceof Promise) hint = 'await it and pass its value';
    else if (Array.isArray(value)) hint = 'pass Array.from(array)';
  } catch {
    // a Proxy whose traps throw: the generic hint
  }
  return `${article(name)} (a class instance); ${hint}`;
}

/** Checks `value`, the value at `depth`: returns if JSON keeps it as it is, else throws. */
function check(w, value, depth) {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      // value - value is 0 for finite numbers, NaN for NaN and the infinities.
      if (value - value === 0) return;
      return refuse(w, depth, value !== value ? 'NaN' : String(value));
    case 'object':
      if (value === null) return;
      w.at = depth;
      if (Array.isArray(value)) array(w, value, depth);
      else object(w, value, depth);
      return;
    case 'function':
      return refuse(w, depth, 'a function');
    case 'bigint':
      return refuse(w, depth, 'a BigInt');
    case 'symbol':
      return refuse(w, depth, `a symbol (${describe(value)})`);
    default:
      // undefined: reached for the top-level value only (containers check their own).
      return refuse(w, depth, 'undefined (JSON has no undefined)');
  }
}

/** Refuses a container nested too deep or containing itself; else records it as a parent. */
function enter(w, value, depth) {
  if (depth >= MAX_DEPTH) refuse(w, depth, `nested deeper than ${MAX_DEPTH} levels of arrays and objects`);
  const parents = w.parents;
  for (let i = 0; i < depth; i++) {
    if (parents[i] === value) refuse(w, depth, `a cycle (it refers back to ${shown(pathOf(w, i))})`);
  }
  parents[depth] = value;
}

function array(w, value, depth) {
  enter(w, value, depth);
  const proto = Object.getPrototypeOf(value);
  if (proto !== Array.prototype) refuse(w, depth, instanceKind(value, proto));
  if (typeof value.toJSON === 'function') refuse(w, depth, 'an array with a toJSON method (JSON would call it)');
  const keys = w.keys;
  const next = depth + 1;
  const length = value.length;
  for (let i = 0; i < length; i++) {
    keys[depth] = i;
    w.at = next;
    const item = value[i];
    if (item === undefined) {
      refuse(w, next, i in value ? 'undefined (JSON turns it into null)' : 'a hole (JSON turns it into null)');
    }
    if (item !== null && typeof item !== 'string') check(w, item, next);
  }
}

function object(w, value, depth) {
  enter(w, value, depth);
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) refuse(w, depth, instanceKind(value, proto));
  if (typeof value.toJSON === 'function') refuse(w, depth, 'an object with a toJSON method (JSON would call it)');
  const names = Object.keys(value);
  // JSON drops symbol keys and non-enumerable properties. (These two calls are much faster
  // than one Reflect.ownKeys.)
  if (Object.getOwnPropertyNames(value).length !== names.length || Object.getOwnPropertySymbols(value).length !== 0) {
    hiddenKey(w, value, depth, Reflect.ownKeys(value));
  }
  const keys = w.keys;
  const next = depth + 1;
  for (let i = 0; i < names.length; i++) {
    const key = names[i];
    keys[depth] = key;
    w.at = next;
    const item = value[key];
    // A property whose value is undefined is accepted and left out, as JSON.stringify does:
    // reading it back gives undefined either way.
    if (item !== undefined && item !== null && typeof item !== 'string') check(w, item, next);
  }
}

/** Refuses the first symbol key or non-enumerable property of `value`. */
function hiddenKey(w, value, depth, all) {
  for (const key of all) {
    if (typeof key === 'symbol') refuse(w, depth, `an object with a symbol key ${describe(key)} (JSON drops it)`);
  }
  for (const key of all) {
    if (hasOwnProperty.call(value, key) && !propertyIsEnumerable.call(value, key)) {
      refuse(w, depth, `an object with a non-enumerable property ${JSON.stringify(key)} (JSON drops it)`);
    }
  }
}

/**
 * The JSON text of `value` (what JSON.stringify returns), or throws a TypeError with code
 * ERR_NOT_SERIALIZABLE and `path`, the path of the refused part from `path` (the name of the
 * argument, e.g. 'options'); a throwing getter or Proxy trap is refused with the error as `cause`.
 * Getters and Proxy traps run twice (the check, then JSON.stringify): one that answers
 * differently the second time is not caught, unless it throws.
 */
function toJson(value, path = 'value') {
  return sized(stringify(value, path), path);
}

/** `JSON.stringify` threw because its text would pass V8's longest string. */
const tooLong = (err) => err instanceof RangeError && /string length/i.test(err.message);

/** The refusal of a value whose JSON text would pass V8's longest string. */
const tooLongError = (path) =>
  coded(RangeError, 'ERR_VALUE_TOO_LARGE', `${path} is too large to store: its JSON text is longer than a JavaScript string can be`, { path });

/**
 * `text`, unless it takes more than MAX_STORED_BYTES as UTF-8: then a RangeError with code
 * ERR_VALUE_TOO_LARGE naming `path`.
 */
function sized(text, path, max = MAX_STORED_BYTES) {
  const bytes = utf8Bytes(text, max);
  if (bytes <= max) return text;
  throw coded(RangeError, 'ERR_VALUE_TOO_LARGE', `${path} is too large to store: ${bytes} bytes as UTF-8 (at most ${max})`, { path });
}

/** The UTF-8 length of `text`, counted only when it could pass `max` (else its low bound). */
function utf8Bytes(text, max) {
  // UTF-8 takes at least a byte and at most three per UTF-16 code unit.
  return text.length * 3 <= max ? text.length : Buffer.byteLength(text, 'utf8');
}

/** The most bytes (UTF-8) of a stored agent name or key: PostgreSQL's index entries hold 2704. */
const MAX_NAME_BYTES = 2048;

/** Whether `name` can be stored as an agent name: no NUL, at most MAX_NAME_BYTES. */
const storableName = (name) => !name.includes('\0') && utf8Bytes(name, MAX_NAME_BYTES) <= MAX_NAME_BYTES;

/** `value`, an agent name or key (`where`) checked as stored text of at most MAX_NAME_BYTES. */
const storedName = (where, value) => sized(storedText(where, value), where, MAX_NAME_BYTES);

/**
 * A submission's `task` and `options` JSON (or null), refused with ERR_VALUE_TOO_LARGE when
 * together over MAX_STORED_BYTES: they go in one row, one message.
 */
function sizedTogether(task, options) {
  if (options === null) return;
  const bytes = utf8Bytes(task + options, MAX_STORED_BYTES);
  if (bytes <= MAX_STORED_BYTES) return;
  throw coded(RangeError, 'ERR_VALUE_TOO_LARGE', `task and options are too large to store together: ${bytes} bytes as UTF-8 (at most ${MAX_STORED_BYTES})`, {
    path: 'options',
  });
}

function stringify(value, path) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(value);
    } catch (err) {
      throw tooLong(err) ? tooLongError(path) : err;
    }
  }
  const w = new Walk(path);
  try {
    check(w, value, 0);
  } catch (err) {
    if (err === w.error) throw err;
    refuse(w, w.at, `unreadable (reading it threw: ${messageOf(err)})`, err);
  }
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (tooLong(err)) throw tooLongError(path);
    // A getter or Proxy trap that threw on its second read only: where is unknown.
    return refuse(w, 0, `unreadable (reading it again threw: ${messageOf(err)})`, err);
  }
}

/** toJson for a result: an agent that returns nothing (undefined) stores null. */
function resultJson(value, path = 'result') {
  return value === undefined ? 'null' : toJson(value, path);
}

module.exports = { toJson, resultJson, sized, storableName, storedName, sizedTogether, MAX_DEPTH };

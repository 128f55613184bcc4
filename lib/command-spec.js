'use strict';

// Command specs (`bg.registerCommand(name, spec)`): validated here once for a fixed spec, or
// per execution for a spec built by a function. Each field is read once; every mistake gets a
// TypeError or RangeError naming the field.

const os = require('node:os');
const { describe, typeError, rangeError } = require('./errors.js');
const { integer, isOptionsObject, hasPlainPrototype, isArray, isInstance, osString } = require('./validate.js');
const { PROGRESS_OFF, PROGRESS_REGEXP, PROGRESS_JSON, MAX_DELAY_MS } = require('./protocol.js');

const SIGNALS = os.constants.signals;
/** Number -> name; the first name of aliases (SIGABRT, not SIGIOT). */
const SIGNAL_NAMES = new Map();
for (const [name, n] of Object.entries(SIGNALS)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
/**
 * Kept output becomes one JS string of at most this many bytes of UTF-8 (invalid bytes, which
 * grow into U+FFFD, are cut again): V8 strings stop at ~512 Mi characters.
 */
const MAX_OUTPUT_LIMIT = 256 * 1024 * 1024;
const DEFAULT_KILL_GRACE_MS = 5000;
const JSON_LINES = 'json-lines';

const SPEC_KEYS = [
  'command',
  'args',
  'cwd',
  'env',
  'inheritEnv',
  'input',
  'progressPattern',
  'maxOutputBytes',
  'killSignal',
  'killGraceMs',
];
const SPEC_KEY_SET = new Set(SPEC_KEYS);

/**
 * Validates a command spec, reading each field once, and returns what the native side
 * needs plus what this file needs (the progress RegExp, names for messages).
 */
function parseCommandSpec(spec, where) {
  if (!isOptionsObject(spec)) throw typeError(`${where} must be an object with a "command", got ${describe(spec)}`);
  for (const key of Object.keys(spec)) {
    if (!SPEC_KEY_SET.has(key)) {
      throw typeError(`${where} has an unknown key ${describe(key)} (known: ${SPEC_KEYS.join(', ')})`);
    }
  }
  const command = osString(`${where}.command`, spec.command);
  if (command === '') throw typeError(`${where}.command must be a non-empty string`);

  const rawArgs = spec.args;
  const args = [];
  if (rawArgs !== undefined) {
    if (!isArray(rawArgs)) throw typeError(`${where}.args must be an array of strings, got ${describe(rawArgs)}`);
    for (let i = 0; i < rawArgs.length; i++) args.push(osString(`${where}.args[${i}]`, rawArgs[i]));
  }

  const rawCwd = spec.cwd;
  const cwd = rawCwd === undefined ? null : osString(`${where}.cwd`, rawCwd);

  const envKeys = [];
  const envValues = [];
  const rawEnv = spec.env;
  if (rawEnv !== undefined) {
    if (!isOptionsObject(rawEnv) || !hasPlainPrototype(rawEnv)) {
      throw typeError(`${where}.env must be an object of name -> string (null removes), got ${describe(rawEnv)}`);
    }
    for (const key of Object.keys(rawEnv)) {
      if (key === '' || key.includes('=') || key.includes('\0')) {
        throw typeError(`${where}.env has an invalid variable name ${describe(key)}`);
      }
      const value = rawEnv[key];
      if (value === undefined) continue; // not given (as a spread of optional values leaves)
      if (value === null) {
        envKeys.push(key);
        envValues.push(null);
      } else {
        envKeys.push(key);
        envValues.push(osString(`${where}.env.${key}`, value));
      }
    }
  }

  const inheritEnv = spec.inheritEnv;
  if (inheritEnv !== undefined && typeof inheritEnv !== 'boolean') {
    throw typeError(`${where}.inheritEnv must be a boolean, got ${describe(inheritEnv)}`);
  }

  const rawInput = spec.input;
  let input = null;
  if (rawInput !== undefined && rawInput !== null) {
    if (typeof rawInput === 'string') input = Buffer.from(rawInput, 'utf8');
    else if (isInstance(rawInput, Uint8Array)) input = Buffer.from(rawInput);
    else throw typeError(`${where}.input must be a string, a Buffer or a Uint8Array, got ${describe(rawInput)}`);
  }

  const pattern = spec.progressPattern;
  /** @type {number} */
  let progress = PROGRESS_OFF;
  let progressRe = null;
  if (pattern !== undefined && pattern !== null) {
    if (pattern === JSON_LINES) {
      progress = PROGRESS_JSON;
    } else if (isInstance(pattern, RegExp)) {
      // A private copy without g/y: matching must not depend on a shared lastIndex.
      progressRe = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''));
      // Its number of capture groups: an alternative that matches '' makes exec() report them.
      const groups = new RegExp(`${pattern.source}|`, progressRe.flags).exec('').length - 1;
      if (groups < 1) {
        throw typeError(`${where}.progressPattern must have a capture group for the percentage, got ${pattern}`);
      }
      progress = PROGRESS_REGEXP;
    } else {
      throw typeError(
        `${where}.progressPattern must be a RegExp with a capture group or "${JSON_LINES}", got ${describe(pattern)}`,
      );
    }
  }

  const maxOutputBytes = integer(`${where}.maxOutputBytes`, spec.maxOutputBytes, 0, MAX_OUTPUT_LIMIT, DEFAULT_MAX_OUTPUT);
  const killGraceMs = integer(`${where}.killGraceMs`, spec.killGraceMs, 0, MAX_DELAY_MS, DEFAULT_KILL_GRACE_MS);

  const rawSignal = spec.killSignal;
  let killSignal = SIGNALS.SIGTERM;
  if (rawSignal !== undefined) {
    if (typeof rawSignal === 'string') {
      if (!Object.hasOwn(SIGNALS, rawSignal)) {
        throw rangeError(`${where}.killSignal must be a signal name such as "SIGTERM", got ${describe(rawSignal)}`);
      }
      killSignal = SIGNALS[rawSignal];
    } else if (typeof rawSignal === 'number') {
      if (!SIGNAL_NAMES.has(rawSignal)) {
        throw rangeError(`${where}.killSignal must be a signal number of this platform, got ${describe(rawSignal)}`);
      }
      killSignal = rawSignal;
    } else {
      throw typeError(`${where}.killSignal must be a signal name or number, got ${describe(rawSignal)}`);
    }
  }

  return {
    native: {
      command,
      args,
      cwd: cwd === null ? undefined : cwd,
      envKeys,
      envValues,
      inheritEnv: inheritEnv !== false,
      input: input === null ? undefined : input,
      maxOutputBytes,
      killSignal,
      killGraceMs,
      progress,
    },
    command,
    args,
    cwd,
    progressRe,
  };
}

module.exports = { parseCommandSpec, SIGNAL_NAMES };

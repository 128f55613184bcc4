'use strict';

// Command agents (`bg.registerCommand(name, spec)`): real programs run from Rust.
//
// The spec is validated here, once for a fixed spec or per execution for a spec function;
// Rust (`NativeCommands`) spawns the program without a shell in its own process group, reads
// its output on the tokio runtime and reports lines, progress values and one exit per
// command. This file turns those into the agent's promise, progress reports and
// `command-output` events. Cancellation reaches the process through the agent's AbortSignal.

const os = require('node:os');
const fs = require('node:fs');
const binding = require('../binding.js');
const { coded, describe, typeError, rangeError, isArray, isInstance } = require('./errors.js');
const { integer, isPlainObject, MAX_MS } = require('./config.js');

const SIGNALS = os.constants.signals;
/** Number -> name; the first name of aliases (SIGABRT, not SIGIOT). */
const SIGNAL_NAMES = new Map();
for (const [name, n] of Object.entries(SIGNALS)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);
const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
/** Kept output becomes one JS string: V8 strings stop at ~512 Mi characters. */
const MAX_OUTPUT_LIMIT = 256 * 1024 * 1024;
const DEFAULT_KILL_GRACE_MS = 5000;
const PROGRESS_OFF = 0;
const PROGRESS_REGEXP = 1;
const PROGRESS_JSON = 2;
const JSON_LINES = 'json-lines';

const EVENT_LINES = 1;
const EVENT_PROGRESS = 2;
const EVENT_EXIT = 3;

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

const hasNul = (s) => s.indexOf('\0') !== -1;

/** An object literal (or Object.create(null)), not a Map or a class instance whose entries would be ignored. */
function hasPlainPrototype(v) {
  try {
    const proto = Object.getPrototypeOf(v);
    return proto === Object.prototype || proto === null;
  } catch {
    return false;
  }
}

function str(where, value) {
  if (typeof value !== 'string') throw typeError(`${where} must be a string, got ${describe(value)}`);
  if (hasNul(value)) throw typeError(`${where} must not contain a NUL character`);
  return value;
}

/**
 * Validates a command spec, reading each field once, and returns what the native side
 * needs plus what this file needs (the progress RegExp, names for messages).
 */
function parseCommandSpec(spec, where) {
  if (!isPlainObject(spec)) throw typeError(`${where} must be an object with a "command", got ${describe(spec)}`);
  for (const key of Object.keys(spec)) {
    if (!SPEC_KEY_SET.has(key)) {
      throw typeError(`${where} has an unknown key ${describe(key)} (known: ${SPEC_KEYS.join(', ')})`);
    }
  }
  const command = str(`${where}.command`, spec.command);
  if (command === '') throw typeError(`${where}.command must be a non-empty string`);

  const rawArgs = spec.args;
  const args = [];
  if (rawArgs !== undefined) {
    if (!isArray(rawArgs)) throw typeError(`${where}.args must be an array of strings, got ${describe(rawArgs)}`);
    for (let i = 0; i < rawArgs.length; i++) args.push(str(`${where}.args[${i}]`, rawArgs[i]));
  }

  const rawCwd = spec.cwd;
  const cwd = rawCwd === undefined ? null : str(`${where}.cwd`, rawCwd);

  const envKeys = [];
  const envValues = [];
  const rawEnv = spec.env;
  if (rawEnv !== undefined) {
    if (!isPlainObject(rawEnv) || !hasPlainPrototype(rawEnv)) {
      throw typeError(`${where}.env must be an object of name -> string (null removes), got ${describe(rawEnv)}`);
    }
    for (const key of Object.keys(rawEnv)) {
      if (key === '' || key.includes('=') || hasNul(key)) {
        throw typeError(`${where}.env has an invalid variable name ${describe(key)}`);
      }
      const value = rawEnv[key];
      if (value === undefined) continue; // not given (as a spread of optional values leaves)
      if (value === null) {
        envKeys.push(key);
        envValues.push(null);
      } else {
        envKeys.push(key);
        envValues.push(str(`${where}.env.${key}`, value));
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
        `${where}.progressPattern must be a RegExp with one capture group or "${JSON_LINES}", got ${describe(pattern)}`,
      );
    }
  }

  const maxOutputBytes = integer(`${where}.maxOutputBytes`, spec.maxOutputBytes, 0, MAX_OUTPUT_LIMIT, DEFAULT_MAX_OUTPUT);
  const killGraceMs = integer(`${where}.killGraceMs`, spec.killGraceMs, 0, MAX_MS, DEFAULT_KILL_GRACE_MS);

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

/** Pipe drain after the group ended (500 ms in Rust) plus slack. */
const GRACE_MARGIN_MS = 1000;

/** Live runners, for the process 'exit' hook (and to keep them reachable while they run). */
const LIVE = new Set();
let exitHookInstalled = false;

/** If Node.js exits while commands run (process.exit()), their groups go with it. */
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const runner of LIVE) runner.killAllNow();
  });
}

function eventsCallback(weak) {
  return (batch) => {
    const runner = weak.deref();
    if (runner !== undefined) runner.onEvents(batch);
  };
}

const round2 = (x) => Math.round(x * 100) / 100;

/** The last non-empty line of `text`, shortened, for an error message. */
function lastLine(text) {
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i].trim();
    if (line !== '') return line.length > 200 ? line.slice(0, 197) + '...' : line;
  }
  return '';
}

/** The command agents of one executor. */
class CommandRunner {
  constructor(executor) {
    this._ex = executor;
    this._native = null;
    this._entries = new Map(); // handle -> entry
    this._byExecution = new Map(); // executionId -> entry of its current attempt
  }

  _nativeOf() {
    if (this._native === null) this._native = new binding.NativeCommands(eventsCallback(new WeakRef(this)));
    return this._native;
  }

  /** Whether every output line should come to JS: someone listens to `command-output`. */
  syncForward() {
    if (this._native !== null) this._native.setForwardOutput(this._ex.listenerCount('command-output') > 0);
  }

  get live() {
    return this._native === null ? 0 : this._native.live;
  }

  killAllNow() {
    if (this._native !== null) this._native.killAllNow();
  }

  /**
   * Runs one command for the agent context `ctx`; resolves with its result. `signal` is the
   * attempt's signal, read when the agent was called: a spec built asynchronously for an
   * attempt that has ended since must not start a process under the next attempt.
   */
  run(spec, ctx, signal) {
    if (signal.aborted) return Promise.reject(signal.reason);
    const native = this._nativeOf();
    this.syncForward();
    const r = native.spawn(spec.native);
    if (r.handle === 0) return Promise.reject(spawnError(spec, r));
    // Once signalled, the process may take killGraceMs (then SIGKILL) and its pipes 0.5 s
    // more: the execution's slot is not handed on before that, whatever cancelGraceMs says.
    this._ex._needsGrace(ctx.executionId, spec.native.killGraceMs + GRACE_MARGIN_MS);
    LIVE.add(this);
    installExitHook();
    return new Promise((resolve, reject) => {
      const entry = {
        handle: r.handle,
        pid: r.pid,
        spec,
        ctx,
        executionId: ctx.executionId,
        agent: ctx.agent,
        resolve,
        reject,
        signal,
        onAbort: null,
      };
      entry.onAbort = () => native.terminate(entry.handle);
      signal.addEventListener('abort', entry.onAbort, { once: true });
      this._entries.set(r.handle, entry);
      this._byExecution.set(entry.executionId, entry);
    });
  }

  /** `{ pid, cpuPercent, rssMb }` of an execution's running command, or null. */
  usageOf(executionId) {
    const entry = this._byExecution.get(executionId);
    if (entry === undefined || this._native === null) return null;
    const u = this._native.usage(entry.handle);
    if (u === null || u === undefined) return null;
    return { pid: u.pid, cpuPercent: u.cpuPercent ?? null, rssMb: u.rssMb ?? null };
  }

  onEvents(batch) {
    const native = this._native;
    const ex = this._ex;
    const listened = ex.listenerCount('command-output') > 0;
    for (let i = 0; i < batch.length; i++) {
      const ev = batch[i];
      const entry = this._entries.get(ev.handle);
      if (entry === undefined) {
        if (ev.kind === EVENT_EXIT) native.release(ev.handle);
        continue;
      }
      if (ev.kind === EVENT_LINES) {
        const lines = ev.lines;
        const re = ev.stream === 1 ? entry.spec.progressRe : null;
        for (let k = 0; k < lines.length; k++) {
          const line = lines[k];
          if (re !== null) {
            const m = re.exec(line);
            if (m !== null && m[1] !== undefined) this._progress(entry, Number(m[1]));
          }
          if (listened) {
            ex._emit('command-output', {
              executionId: entry.executionId,
              agent: entry.agent,
              stream: ev.stream === 1 ? 'stdout' : 'stderr',
              line,
            });
          }
        }
      } else if (ev.kind === EVENT_PROGRESS) {
        this._progress(entry, ev.progress);
      } else if (ev.kind === EVENT_EXIT) {
        this._exited(entry, ev);
      }
    }
    if (native.live === 0) LIVE.delete(this);
  }

  _progress(entry, value) {
    if (typeof value !== 'number' || Number.isNaN(value) || entry.signal.aborted) return;
    try {
      entry.ctx.progress(value);
    } catch {
      // progress after the execution ended: nothing to report
    }
  }

  _exited(entry, ev) {
    this._native.release(entry.handle);
    this._entries.delete(entry.handle);
    if (this._byExecution.get(entry.executionId) === entry) this._byExecution.delete(entry.executionId);
    entry.signal.removeEventListener('abort', entry.onAbort);
    const result = {
      exitCode: ev.exitCode ?? null,
      signal: ev.signal === undefined || ev.signal === null ? null : SIGNAL_NAMES.get(ev.signal) || String(ev.signal),
      stdout: ev.stdout,
      stderr: ev.stderr,
      durationMs: round2(ev.durationMs),
      truncated: ev.truncated,
      stdoutBytes: ev.stdoutBytes,
      stderrBytes: ev.stderrBytes,
    };
    if (result.exitCode === 0) {
      entry.resolve(result);
      return;
    }
    const spec = entry.spec;
    let why;
    if (ev.waitError !== undefined && ev.waitError !== null) why = `could not be waited for: ${ev.waitError}`;
    else if (result.signal !== null) why = `was killed by ${result.signal}`;
    else why = `exited with code ${result.exitCode}`;
    const tail = lastLine(result.stderr);
    const message = `Command ${JSON.stringify(spec.command)} ${why}${tail === '' ? '' : `: ${tail}`}`;
    entry.reject(coded(Error, 'ERR_COMMAND_FAILED', message, { command: spec.command, args: spec.args, ...result }));
  }
}

/** `ERR_COMMAND_SPAWN`, naming the command and the OS reason. */
function spawnError(spec, r) {
  const errno = r.errno ?? 0;
  const name = ERRNO_NAMES.get(errno) || (errno ? `errno ${errno}` : 'unknown error');
  const osMessage = String(r.error || '').replace(/ \(os error \d+\)$/, '');
  let hint = '';
  if (name === 'ENOENT') {
    if (spec.cwd !== null && !fs.existsSync(spec.cwd)) hint = `; the working directory ${JSON.stringify(spec.cwd)} does not exist`;
    else hint = spec.command.includes('/') ? '; no such file' : '; not found in PATH';
  }
  const cause = Object.assign(new Error(osMessage), { code: name, errno: -errno });
  const err = new Error(`Cannot start command ${JSON.stringify(spec.command)}: ${name} (${osMessage})${hint}`, { cause });
  err.code = 'ERR_COMMAND_SPAWN';
  err.command = spec.command;
  err.args = spec.args;
  err.cwd = spec.cwd;
  err.reason = name;
  return err;
}

/**
 * The agent function for a registered command: `spec` is a validated spec or a function
 * `(task, options) => spec` (or a promise of one), validated per execution.
 */
function commandAgent(runner, name, spec) {
  if (typeof spec !== 'function') return (task, options, ctx) => runner.run(spec, ctx, ctx.signal);
  const where = `the command spec built for ${JSON.stringify(name)}`;
  return (task, options, ctx) => {
    const signal = ctx.signal;
    const built = spec(task, options);
    if (built !== null && typeof built === 'object' && typeof built.then === 'function') {
      return Promise.resolve(built).then((s) => runner.run(parseCommandSpec(s, where), ctx, signal));
    }
    return runner.run(parseCommandSpec(built, where), ctx, signal);
  };
}

module.exports = { CommandRunner, parseCommandSpec, commandAgent };

'use strict';

// Command agents at run time: Rust (`NativeCommands`) spawns each program without a shell in
// its own process group, reads its output on the tokio runtime and reports lines, progress
// values and one exit per command. This file turns those into the agent's promise, progress
// reports and `command-output` events. Cancellation reaches the process through the agent's
// AbortSignal.

const os = require('node:os');
const fs = require('node:fs');
const { binding, weakCallback } = require('./native.js');
const { coded } = require('./errors.js');
const { parseCommandSpec, SIGNAL_NAMES } = require('./command-spec.js');
const { EVENT_LINES, EVENT_PROGRESS, EVENT_EXIT, STREAM_STDOUT } = require('./protocol.js');

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

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
    if (this._native === null) this._native = new binding.NativeCommands(weakCallback(this, 'onEvents'));
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
        const re = ev.stream === STREAM_STDOUT ? entry.spec.progressRe : null;
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
              stream: ev.stream === STREAM_STDOUT ? 'stdout' : 'stderr',
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
  const message = `Cannot start command ${JSON.stringify(spec.command)}: ${name} (${osMessage})${hint}`;
  return Object.assign(new Error(message, { cause }), {
    code: 'ERR_COMMAND_SPAWN',
    command: spec.command,
    args: spec.args,
    cwd: spec.cwd,
    reason: name,
  });
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

module.exports = { CommandRunner, commandAgent };

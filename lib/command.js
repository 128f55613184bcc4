'use strict';

// Command agents at run time: Rust (`NativeCommands`) spawns each program without a shell in
// its own process group, reads its output on the tokio runtime and reports lines, progress
// values and one exit per command. This file turns those into the agent's promise, progress
// reports and `command-output` events. Cancellation reaches the process through the agent's
// AbortSignal; the error that ended the execution gets the output produced so far, then all
// of it once the process is gone. Output held by finished executions is bounded in total
// (`OutputBudget`).

const os = require('node:os');
const fs = require('node:fs');
const { binding, weakCallback } = require('./native.js');
const { coded, codeOf, isError, messageOf } = require('./errors.js');
const { parseCommandSpec, SIGNAL_NAMES } = require('./command-spec.js');
const { EVENT_LINES, EVENT_PROGRESS, EVENT_EXIT, STREAM_STDOUT } = require('./protocol.js');
const { recordOfContext, isDurable } = require('./record.js');

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** Pipe drain after the group ended (500 ms in Rust) plus slack. */
const GRACE_MARGIN_MS = 1000;
/** How far back from the end of stderr the last line is looked for. */
const LAST_LINE_SCAN = 64 * 1024;

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

/**
 * The last non-empty line of `text`, shortened, for an error message. Looks at most 64 Ki
 * characters back from the end (stderr may be 256 MiB): a line that starts further back
 * shows its end.
 */
function lastLine(text) {
  let end = text.length;
  const stop = Math.max(0, end - LAST_LINE_SCAN);
  while (end > stop && /\s/.test(text[end - 1])) end--;
  if (end === stop) return '';
  const window = text.slice(Math.max(0, end - LAST_LINE_SCAN), end);
  const nl = window.lastIndexOf('\n');
  if (nl === -1 && end > LAST_LINE_SCAN) return '...' + window.slice(-197).trim(); // its start is further back
  const line = window.slice(nl + 1, nl + 1 + 400).trim();
  return line.length > 200 ? line.slice(0, 197) + '...' : line;
}

/** The output fields of a result or error, from a native exit event or output snapshot. */
function outputFields(o) {
  return {
    stdout: o.stdout,
    stderr: o.stderr,
    truncated: o.truncated,
    stdoutBytes: o.stdoutBytes,
    stderrBytes: o.stderrBytes,
    outputDropped: false,
  };
}

/**
 * The output (stdout, stderr) that finished executions' results and errors hold, in bytes of
 * JS strings: past `limit`, the oldest holders' output is dropped by `onDrop(kept, holder)`
 * (`kept`: `{ coreId, rowId }`, where the value is kept), which keeps a copy without it
 * instead. The objects callers got are never changed; the executor just stops keeping their
 * output. The newest holder always stays whole. Holders are watched weakly: one nobody holds
 * any more no longer counts.
 */
class OutputBudget {
  constructor(limit, onDrop) {
    this.limit = limit;
    this.onDrop = onDrop;
    this.total = 0;
    this.queue = []; // entries, oldest first; dropped or collected ones are skipped
    this.head = 0;
    this.live = 0;
    this.byHolder = new WeakMap();
    this.collected = new FinalizationRegistry((entry) => this._release(entry));
    this.trimScheduled = false;
    this.trim = () => {
      this.trimScheduled = false;
      this._trim();
    };
  }

  /** `holder`, an execution's value kept as `kept` says, now holds `bytes` of output; false if dropped already. */
  hold(holder, bytes, kept) {
    let entry = this.byHolder.get(holder);
    if (entry === undefined) {
      entry = { ref: new WeakRef(holder), kept, bytes: 0, live: true };
      this.byHolder.set(holder, entry);
      this.collected.register(holder, entry);
      this.queue.push(entry);
      this.live++;
      if (this.queue.length - this.head > 2 * this.live + 1024) this._compact();
    } else if (!entry.live) {
      return false;
    }
    this.total += bytes - entry.bytes;
    entry.bytes = bytes;
    if (this.total > this.limit && !this.trimScheduled) {
      this.trimScheduled = true;
      setImmediate(this.trim);
    }
    return true;
  }

  _release(entry) {
    if (!entry.live) return;
    entry.live = false;
    this.live--;
    this.total -= entry.bytes;
    entry.bytes = 0;
  }

  _trim() {
    while (this.total > this.limit && this.live > 1) {
      const entry = this.queue[this.head];
      this.queue[this.head++] = undefined;
      if (!entry.live) continue;
      this._release(entry);
      const holder = entry.ref.deref();
      if (holder !== undefined) this.onDrop(entry.kept, holder);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) this._compact();
  }

  _compact() {
    this.queue = this.queue.slice(this.head).filter((e) => e !== undefined && e.live);
    this.head = 0;
  }
}

/** The command agents of one executor. */
class CommandRunner {
  constructor(executor) {
    this._ex = executor;
    this._native = null;
    this._entries = new Map(); // handle -> entry
    this._byExecution = new Map(); // executionId -> entry of its current attempt
    this._budget = new OutputBudget(executor.config.maxRetainedOutputBytes, (kept, value) =>
      executor._replaceRetained(kept, value, withoutOutput(value)),
    );
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
    const rec = recordOfContext(ctx);
    this._ex._needsGrace(rec.id, spec.native.killGraceMs + GRACE_MARGIN_MS);
    // Where its result or error is kept, for the output budget.
    const kept = { coreId: rec.id, rowId: isDurable(rec) ? rec.x.durable.rowId : 0 };
    LIVE.add(this);
    installExitHook();
    return new Promise((resolve, reject) => {
      const entry = {
        handle: r.handle,
        pid: r.pid,
        spec,
        ctx,
        executionId: ctx.executionId,
        kept,
        agent: ctx.agent,
        resolve,
        reject,
        signal,
        onAbort: null,
      };
      entry.onAbort = () => {
        native.terminate(entry.handle);
        // The error that ends the execution carries what the command printed so far (it is
        // delivered right after this listener); the rest comes with the exit.
        const out = native.output(entry.handle);
        if (out !== null && out !== undefined) this._attachOutput(entry, signal.reason, out);
      };
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

  /** Output fields onto the error that ended an execution (our own coded errors only). */
  _attachOutput(entry, reason, out) {
    if (!isError(reason) || codeOf(reason) === undefined || !Object.isExtensible(reason)) return;
    if (this._budget.hold(reason, out.heapBytes, entry.kept)) Object.assign(reason, outputFields(out));
  }

  _exited(entry, ev) {
    this._native.release(entry.handle);
    this._entries.delete(entry.handle);
    if (this._byExecution.get(entry.executionId) === entry) this._byExecution.delete(entry.executionId);
    entry.signal.removeEventListener('abort', entry.onAbort);
    if (entry.signal.aborted) {
      // Cancelled or timed out: the execution has ended with that error already.
      this._attachOutput(entry, entry.signal.reason, ev);
      entry.reject(entry.signal.reason);
      return;
    }
    const { stdout, stderr, truncated, stdoutBytes, stderrBytes, outputDropped } = outputFields(ev);
    const result = {
      exitCode: ev.exitCode ?? null,
      signal: ev.signal === undefined || ev.signal === null ? null : SIGNAL_NAMES.get(ev.signal) || String(ev.signal),
      stdout,
      stderr,
      durationMs: round2(ev.durationMs),
      truncated,
      stdoutBytes,
      stderrBytes,
      outputDropped,
    };
    if (result.exitCode === 0) {
      this._budget.hold(result, ev.heapBytes, entry.kept);
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
    const err = coded(Error, 'ERR_COMMAND_FAILED', message, { command: spec.command, args: spec.args, ...result });
    this._budget.hold(err, ev.heapBytes, entry.kept);
    entry.reject(err);
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

/** A copy of a result or error whose output was dropped: same prototype and fields, no text. */
function withoutOutput(value) {
  const copy = Object.create(Object.getPrototypeOf(value));
  Object.defineProperties(copy, Object.getOwnPropertyDescriptors(value));
  const field = (v) => ({ value: v, writable: true, enumerable: true, configurable: true });
  return Object.defineProperties(copy, { stdout: field(''), stderr: field(''), outputDropped: field(true) });
}

/** `ERR_COMMAND_SPEC`: the spec function of command agent `name` threw or rejected. */
function specError(name, cause) {
  const err = new Error(`The command spec function of ${JSON.stringify(name)} failed: ${messageOf(cause)}`, { cause });
  return Object.assign(err, { code: 'ERR_COMMAND_SPEC', agent: name });
}

/**
 * The agent function for a registered command: `spec` is a validated spec or a function
 * `(task, options) => spec` (or a promise of one), validated per execution.
 */
function commandAgent(runner, name, spec) {
  if (typeof spec !== 'function') return (task, options, ctx) => runner.run(spec, ctx, ctx.signal);
  const where = `the command spec built for ${JSON.stringify(name)}`;
  const failed = (cause) => Promise.reject(specError(name, cause));
  return (task, options, ctx) => {
    const signal = ctx.signal;
    let built;
    try {
      built = spec(task, options);
    } catch (cause) {
      return failed(cause);
    }
    if (built !== null && typeof built === 'object' && typeof built.then === 'function') {
      return Promise.resolve(built).then((s) => runner.run(parseCommandSpec(s, where), ctx, signal), failed);
    }
    return runner.run(parseCommandSpec(built, where), ctx, signal);
  };
}

module.exports = { CommandRunner, commandAgent };

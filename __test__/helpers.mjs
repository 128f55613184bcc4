// Helpers shared by the test files. The name does not match node's test-file patterns, so
// `node --test __test__/` does not run it as a test file.
//
// The ones that register hooks (exitIfWorkLeftBehind, shutDownAfterEach) must be called at a
// test file's top level, so that the hooks belong to that file's root test.
import { test as nodeTest, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BackgroundExecutor from '../index.mjs';

// ----- test structure ----------------------------------------------------------------------

/** `test(name, fn)` with a 20 s timeout: a hang is a failure, not a stuck run. */
export const test = (name, fn) => nodeTest(name, { timeout: 20000 }, fn);

/**
 * Executors with work keep Node alive by design: if a failed test leaves one behind, end the
 * file `graceMs` after its last test (exit code 1) instead of hanging the whole run.
 */
export function exitIfWorkLeftBehind(graceMs = 3000) {
  after(() => {
    setTimeout(() => {
      process.stderr.write('work was left behind after the last test; exiting\n');
      process.exit(1);
    }, graceMs).unref();
  });
}

/**
 * Returns `create(config, Cls = BackgroundExecutor)`: every executor it creates is shut down
 * (`shutdown({ timeoutMs })`) after the test that created it, even when that test fails, so a
 * failed assertion cannot leave running work that keeps the process alive.
 *
 * Its executors do not throttle unless the config says `throttleIfExceeded: true`: the monitor
 * samples the whole machine at once, and a busy test machine would otherwise hold any of them
 * to `minConcurrentAgents` from its first millisecond.
 */
export function shutDownAfterEach({ timeoutMs = 50 } = {}) {
  const live = new Set();
  afterEach(async () => {
    const list = [...live];
    live.clear();
    await Promise.all(list.map((bg) => bg.shutdown({ timeoutMs })));
  });
  return function create(config = {}, Cls = BackgroundExecutor) {
    const bg = new Cls({ throttleIfExceeded: false, ...config });
    live.add(bg);
    return bg;
  };
}

/** An executor that never throttles (the test machine may be busy). */
export function makeExecutor(extra = {}) {
  return new BackgroundExecutor({ throttleIfExceeded: false, ...extra });
}

/** `create`s a one-slot executor: agent `blocker` holds the slot until `blocker.open()`, agent `rec` pushes its task to `started` and returns it. */
export function blockedExecutor(create) {
  const blocker = gate();
  const started = [];
  const bg = create({
    maxConcurrentAgents: 1,
    agents: {
      blocker: () => blocker.promise,
      rec: (task) => {
        started.push(task);
        return task;
      },
    },
  });
  return { bg, blocker, started };
}

// ----- time and promises -------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A promise with its `resolve` and `reject` outside. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** `p`'s value, or 'pending' if it has not settled within `ms` (the timer keeps nothing alive). */
export function within(p, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms);
    timer.unref();
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A promise that stays pending until `open(value)` resolves it (an agent waits on it). */
export function gate() {
  const { promise, resolve } = deferred();
  return { promise, open: resolve };
}

/**
 * Resolves once `pred()` is true, polling every `intervalMs`; rejects after `timeoutMs`,
 * naming `what` it waited for.
 */
export async function waitUntil(pred, what = 'condition', { timeoutMs = 5000, intervalMs = 5 } = {}) {
  // Two argument orders used to exist; refuse the old one rather than misread it.
  if (typeof what !== 'string') throw new TypeError(`waitUntil(pred, what, { timeoutMs }): what must be a string, got ${typeof what}`);
  // The monotonic clock: a wall-clock step (seen on these VMs) must not end the wait early.
  const end = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Settles a promise into `{ ok, value }` without caring whether it rejects. */
export function settleOf(p) {
  return p.then(
    (value) => ({ ok: true, value }),
    (value) => ({ ok: false, value }),
  );
}

// ----- events ------------------------------------------------------------------------------

/** Records every terminal event: a Map from execution id to `[{ name, e, at }]`. */
export function terminalEvents(bg) {
  const byId = new Map();
  for (const name of ['execution-completed', 'execution-failed', 'execution-cancelled']) {
    bg.on(name, (e) => {
      if (!byId.has(e.executionId)) byId.set(e.executionId, []);
      byId.get(e.executionId).push({ name, e, at: performance.now() });
    });
  }
  return byId;
}

/** Each of `ids` had exactly one terminal event (named `name`, when given). */
export function assertOneTerminal(byId, ids, name) {
  for (const id of ids) {
    const list = byId.get(id) || [];
    assert.equal(list.length, 1, `${id} must have exactly one terminal event, got [${list.map((x) => x.name)}]`);
    if (name !== undefined) assert.equal(list[0].name, name, `${id} terminal event`);
  }
}

// ----- child processes ---------------------------------------------------------------------

/** This checkout's ES module entry point as a file: URL, for child scripts to import (wherever the clone is). */
export const ENTRY = new URL('../index.mjs', import.meta.url).href;

/** A new temporary directory (its name starts with `prefix`), removed after the test `t`. */
export function tempDir(t, prefix = 'bmad-bg-test-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Runs `source` as an ES module in a child `node` (from a temporary .mjs file, removed
 * afterwards), killing it with SIGKILL after `killAfterMs`. `onStdout(stdoutSoFar, child)` is
 * called on every chunk of output. Never rejects for what the child does: resolves, once the
 * child exited and its output is read, with
 * `{ code, signal, killed, stdout, stderr, spawnedAt, exitedAt }` (times from Date.now()).
 */
export async function runScript(source, { nodeArgs = [], killAfterMs = 10000, onStdout } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'bmad-bg-test-'));
  try {
    const file = join(dir, 'script.mjs');
    writeFileSync(file, source);
    return await new Promise((resolve, reject) => {
      const spawnedAt = Date.now();
      const child = spawn(process.execPath, [...nodeArgs, file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', (d) => {
        stdout += d;
        if (onStdout) onStdout(stdout, child);
      });
      child.stderr.on('data', (d) => (stderr += d));
      let killed = false;
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, killAfterMs);
      let exitedAt;
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.on('exit', () => {
        exitedAt = Date.now();
        clearTimeout(timer);
      });
      // 'close' comes after 'exit' once the pipes are drained.
      child.on('close', (code, signal) => resolve({ code, signal, killed, stdout, stderr, spawnedAt, exitedAt }));
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Source for `node -e`: allocates and touches `mb` megabytes, prints `ready`, holds them until
 * its stdin closes, then exits 0 (1 if the memory was not what it wrote).
 */
export const holdMemorySource = (mb) =>
  `const b = Buffer.alloc(${mb} * 1024 * 1024); b.fill(7); process.stdout.write('ready\\n');` +
  `process.stdin.resume(); process.stdin.on('end', () => process.exit(b[4242] === 7 ? 0 : 1));`;

/**
 * Spawns `node -e src` for a child that prints `ready` and runs until its stdin closes.
 * Returns at once `{ child, ready, exited, end, kill }`: `ready` resolves when the child
 * printed `ready` (rejects if it exits first or is not ready within `readyTimeoutMs`); `end()`
 * closes its stdin and waits for the exit (SIGKILL after 3 s); `kill()` (for `t.after`) sends
 * SIGKILL. Both do nothing once the child has exited.
 */
export function spawnHolder(src, { readyTimeoutMs = 10_000 } = {}) {
  const child = spawn(process.execPath, ['-e', src], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const ready = new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`child not ready after ${readyTimeoutMs} ms; stdout: ${out}`)),
      readyTimeoutMs,
    );
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`child exited before ready (${code ?? sig}); stdout: ${out}`));
    });
  });
  ready.catch(() => {}); // whoever awaits it sees the rejection; nobody else must
  const running = () => child.exitCode === null && child.signalCode === null;
  const end = async () => {
    if (!running()) return;
    child.stdin.end();
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  const kill = () => {
    if (running()) child.kill('SIGKILL');
  };
  return { child, ready, exited, end, kill };
}

// ----- processes ---------------------------------------------------------------------------

/**
 * Whether `pid` is a live process: not gone and not a zombie (in a container, PID 1 may never
 * reap an orphan that was killed, so a dead grandchild can stay a zombie).
 */
export function isAlive(pid) {
  let stat;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  return stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)[0] !== 'Z';
}

/**
 * Registers on `bg` the pair of agents that shows a cancelled command keeping its slot: a
 * command agent 'deaf' that prints "ready" and ignores SIGTERM (only the SIGKILL at
 * killGraceMs, 1.5 s, ends it), and an agent 'next' that records when it starts and whether
 * the deaf command (its pid set in `state.pid` by the test) was still alive then. `ready`
 * resolves with the id of the deaf execution once it printed "ready".
 */
export function registerDeafAndNext(bg) {
  const state = { pid: 0, nextStart: null };
  bg.registerCommand('deaf', {
    command: 'sh',
    args: ['-c', "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
    killGraceMs: 1500,
  });
  bg.registerAgent('next', async () => {
    state.nextStart = { at: Date.now(), deafAlive: isAlive(state.pid) };
  });
  const ready = new Promise((resolve) => bg.on('command-output', (e) => e.line === 'ready' && resolve(e.executionId)));
  return { state, ready };
}

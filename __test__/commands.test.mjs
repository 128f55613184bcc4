// Command agents: `bg.registerCommand(name, spec)` runs a program from Rust, without a
// shell, in its own process group. Results and failures, output caps, progress from stdout,
// cancel / timeout / shutdown of the whole group (a grandchild ignoring SIGTERM included),
// spawn errors, env / cwd / input, every mode, spec functions, spec validation,
// getActiveExecutions() usage fields, the monitor counting (and throttling on) the command's
// tree, the `command-output` event, and 50 commands under a concurrency limit of 8.
//
// Programs used: node (process.execPath), sh, sleep. Children that must be stepped through
// states wait for "gate" files in a temporary directory and create "mark" files, so the test
// never guesses how long a child takes to get somewhere.
//
// Dead processes: in this container PID 1 may not reap orphans, so a killed grandchild can stay
// a zombie; a pid counts as dead when /proc/<pid>/stat is gone or its state is 'Z'.
//
// Process lifetime (Node.js staying up / process.exit()) is in commands-lifetime.test.mjs.
import assert from 'node:assert/strict';
import { writeFileSync, existsSync, readFileSync, realpathSync, chmodSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ResourceMonitor } from '../index.mjs';
import {
  test,
  exitIfWorkLeftBehind,
  shutDownAfterEach,
  sleep,
  gate,
  waitUntil,
  settleOf,
  terminalEvents,
  assertOneTerminal,
  isAlive as alive,
  tempDir,
  within,
} from './helpers.mjs';

exitIfWorkLeftBehind();
// Executors made with create() are shut down after each test, even a failed one.
const create = shutDownAfterEach();

const NODE = process.execPath;
const MiB = 1024 * 1024;

// ----- helpers -----------------------------------------------------------------------------

/** The process group of `pid` (field 5 of /proc/<pid>/stat). */
function pgidOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)[2]);
}

/**
 * Polls (every 5 ms) until every pid in `pids` is dead; resolves with a Map pid -> the first
 * performance.now() at which it was seen dead.
 */
async function deathTimes(pids, timeoutMs = 5000) {
  const at = new Map();
  await waitUntil(
    () => {
      const now = performance.now();
      for (const p of pids) if (!at.has(p) && !alive(p)) at.set(p, now);
      return at.size === pids.length;
    },
    `pids ${pids.join(', ')} to be gone`,
    { timeoutMs, intervalMs: 5 },
  );
  return at;
}

/** A temporary directory of gate and mark files, removed after the test. */
function gates(t) {
  const dir = tempDir(t, 'bmad-bg-cmd-');
  return {
    dir,
    path: (name) => join(dir, name),
    open: (name) => writeFileSync(join(dir, name), ''),
    has: (name) => existsSync(join(dir, name)),
    waitFor: (name, timeoutMs = 5000) => waitUntil(() => existsSync(join(dir, name)), `mark file ${name}`, { timeoutMs }),
  };
}

/**
 * `node -e` source of a child that runs `steps` in order: ['out', text] / ['err', text] print a
 * line on stdout / stderr, ['mark', name] creates <dir>/<name>, ['gate', name] waits until
 * <dir>/<name> exists, ['exit', code] exits. (Writes to a pipe are synchronous on Linux: a mark
 * made after a line means that line is in the pipe.)
 */
const stepperSource = (dir, steps) => `
const fs = require('node:fs'), path = require('node:path');
const dir = ${JSON.stringify(dir)};
(async () => {
  for (const [kind, arg] of ${JSON.stringify(steps)}) {
    if (kind === 'out') process.stdout.write(arg + '\\n');
    else if (kind === 'err') process.stderr.write(arg + '\\n');
    else if (kind === 'mark') fs.writeFileSync(path.join(dir, arg), '');
    else if (kind === 'gate') while (!fs.existsSync(path.join(dir, arg))) await new Promise((r) => setTimeout(r, 10));
    else if (kind === 'exit') process.exit(arg);
  }
})();`;

const stepper = (dir, steps, extra = {}) => ({ command: NODE, args: ['-e', stepperSource(dir, steps)], ...extra });

/** `node -e` source: prints what it is given as JSON (argv, env, cwd, stdin). */
const PRINT_ARGV = 'console.log(JSON.stringify(process.argv.slice(1)))';
const PRINT_ENV = 'console.log(JSON.stringify(process.env))';
const PRINT_STDIN =
  'const c = []; process.stdin.on("data", (d) => c.push(d)); process.stdin.on("end", () => { const b = Buffer.concat(c);' +
  ' console.log(JSON.stringify({ length: b.length, hex: b.length <= 64 ? b.toString("hex") : null, text: b.length <= 64 ? b.toString("utf8") : null,' +
  ' fd0: require("fs").readlinkSync("/proc/self/fd/0").replace(/:\\[\\d+\\]$/, "") })); });';

/**
 * A grandchild that ignores SIGTERM (saying so when it gets one) under a leader that does not:
 * the leader prints "leader <pid>", the grandchild "grandchild <pid>" once its handler is set.
 * The grandchild inherits the leader's stdout, so it keeps the pipe open until it dies.
 */
const GRANDCHILD_SRC =
  "process.on('SIGTERM', () => console.log('grandchild ignored SIGTERM')); console.log('grandchild ' + process.pid); setInterval(() => {}, 1000);";
const TREE_SRC =
  "const { spawn } = require('node:child_process');" +
  `spawn(process.execPath, ['-e', ${JSON.stringify(GRANDCHILD_SRC)}], { stdio: ['ignore', 'inherit', 'inherit'] });` +
  "console.log('leader ' + process.pid); setInterval(() => {}, 1000);";

/** Records `command-output` events; `pid(label, id?)` reads "<label> <pid>" lines. */
function outputOf(bg) {
  const events = [];
  const listener = (e) => events.push(e);
  bg.on('command-output', listener);
  return {
    events,
    listener,
    lines: (id) => events.filter((e) => id === undefined || e.executionId === id).map((e) => e.line),
    pid(label, id) {
      for (const e of events) {
        if (id !== undefined && e.executionId !== id) continue;
        const m = /^(\w+) (\d+)$/.exec(e.line);
        if (m !== null && m[1] === label) return Number(m[2]);
      }
      return undefined;
    },
  };
}

const RESULT_KEYS = ['durationMs', 'exitCode', 'outputDropped', 'signal', 'stderr', 'stderrBytes', 'stdout', 'stdoutBytes', 'truncated'];

function isCommandFailed(err) {
  assert.ok(err instanceof Error, `expected an Error, got ${err}`);
  assert.equal(err.code, 'ERR_COMMAND_FAILED', err.message);
  return true;
}

// ----- success and failure -----------------------------------------------------------------

test('a command resolves with { exitCode, signal, stdout, stderr, durationMs, truncated, stdoutBytes, stderrBytes, outputDropped }', async () => {
  const bg = create();
  assert.equal(
    bg.registerCommand('hello', { command: 'sh', args: ['-c', 'printf "out1\\nout2\\n"; printf "warn" >&2; printf "\\303\\251"'] }),
    bg,
    'registerCommand returns the executor',
  );
  assert.ok(bg.getStatus().agents.includes('hello'));
  const events = terminalEvents(bg);
  const t0 = performance.now();
  const r = await bg.execute('hello', 'greet');
  const elapsed = performance.now() - t0;
  assert.deepEqual(Object.keys(r).sort(), RESULT_KEYS);
  assert.equal(r.exitCode, 0);
  assert.equal(r.signal, null);
  assert.equal(r.stdout, 'out1\nout2\né');
  assert.equal(r.stderr, 'warn');
  assert.equal(r.truncated, false);
  assert.equal(r.stdoutBytes, 12, 'bytes, not characters (é is 2 bytes)');
  assert.equal(r.stderrBytes, 4);
  assert.equal(r.outputDropped, false);
  assert.equal(typeof r.durationMs, 'number');
  assert.ok(r.durationMs > 0 && r.durationMs <= elapsed + 5, `durationMs ${r.durationMs} (execute took ${elapsed} ms)`);

  const [{ e }] = [...events.values()][0];
  const s = bg.getExecutionStatus(e.executionId);
  assert.equal(s.status, 'completed');
  assert.deepEqual(s.result, r);
  assert.deepEqual(e.result, r, 'execution-completed carries the result');
  assert.equal(bg.getStatus().command_processes, 0, 'no command process left');

  // Every execution is its own process, and runs the spec again.
  const r2 = await bg.execute('hello', 'again');
  assert.equal(r2.stdout, r.stdout);
});

test('a non-zero exit fails the execution with ERR_COMMAND_FAILED, the result fields, command and args', async () => {
  const bg = create();
  const args = ['-c', 'echo partial; printf "first\\nthe last words\\n\\n" >&2; exit 3'];
  bg.registerCommand('fails', { command: 'sh', args });
  bg.registerCommand('quiet', { command: 'sh', args: ['-c', 'exit 7'] });
  bg.registerCommand('signalled', { command: 'sh', args: ['-c', 'echo bye >&2; kill -USR1 $$'] });
  bg.registerCommand('ok', { command: 'sh', args: ['-c', 'echo fine'] });
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));

  const a = await settleOf(bg.execute('fails', 't'));
  assert.equal(a.ok, false);
  const err = a.value;
  isCommandFailed(err);
  assert.equal(err.message, 'Command "sh" exited with code 3: the last words');
  assert.equal(err.command, 'sh');
  assert.deepEqual(err.args, args);
  assert.equal(err.exitCode, 3);
  assert.equal(err.signal, null);
  assert.equal(err.stdout, 'partial\n');
  assert.equal(err.stderr, 'first\nthe last words\n\n');
  assert.equal(err.stdoutBytes, 8);
  assert.equal(err.stderrBytes, 22);
  assert.equal(err.truncated, false);
  assert.equal(typeof err.durationMs, 'number');
  assert.equal(failed.length, 1);
  assert.equal(failed[0].code, 'ERR_COMMAND_FAILED');
  assert.equal(failed[0].errorObject, err);
  assert.equal(failed[0].error, err.message);
  const s = bg.getExecutionStatus(failed[0].executionId);
  assert.equal(s.status, 'failed');
  assert.equal(s.error, err.message);

  // Without stderr the message ends at the code.
  const q = await settleOf(bg.execute('quiet', 't'));
  isCommandFailed(q.value);
  assert.equal(q.value.message, 'Command "sh" exited with code 7');
  assert.equal(q.value.exitCode, 7);

  // Death by a signal we did not send is a failure too.
  const k = await settleOf(bg.execute('signalled', 't'));
  isCommandFailed(k.value);
  assert.equal(k.value.message, 'Command "sh" was killed by SIGUSR1: bye');
  assert.equal(k.value.exitCode, null);
  assert.equal(k.value.signal, 'SIGUSR1');

  // The executor goes on.
  assert.equal((await bg.execute('ok', 't')).stdout, 'fine\n');
  assert.equal(bg.getStatus().failed, 3);
  assert.equal(bg.getStatus().command_processes, 0);
});

test('retries re-run the command: a fresh process per attempt', async (t) => {
  const g = gates(t);
  const bg = create();
  // Fails on its first run, succeeds on the second (a counter in a file).
  const counter = g.path('count');
  bg.registerCommand('flaky', {
    command: 'sh',
    args: ['-c', 'n=0; [ -f "$0" ] && read n < "$0"; n=$((n+1)); echo $n > "$0"; echo "run $n $$"; [ $n -ge 2 ]', counter],
  });
  const retries = [];
  bg.on('execution-retry', (e) => retries.push(e));
  const r = await bg.execute('flaky', 't', { retries: 2, retryDelayMs: 10 });
  assert.equal(r.exitCode, 0);
  assert.match(r.stdout, /^run 2 \d+\n$/);
  assert.equal(retries.length, 1);
  assert.equal(readFileSync(counter, 'utf8').trim(), '2');
});

// ----- output caps -------------------------------------------------------------------------

test('output is capped per stream at maxOutputBytes (1 MiB by default), counted in full, and memory stays flat', async () => {
  const bg = create();
  // 20 MiB on stdout and 3 MiB on stderr, as fast as node can write them.
  bg.registerCommand('chatty', {
    command: NODE,
    args: [
      '-e',
      "const b = Buffer.alloc(1 << 20, 'x'); for (let i = 0; i < 20; i++) process.stdout.write(b);" +
        "process.stderr.write(Buffer.alloc(3 << 20, 'e'));",
    ],
  });
  globalThis.gc?.();
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  let r;
  try {
    r = await bg.execute('chatty', 't');
  } finally {
    clearInterval(sampler);
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdoutBytes, 20 * MiB);
  assert.equal(r.stderrBytes, 3 * MiB);
  assert.equal(r.stdout.length, MiB);
  assert.equal(r.stderr.length, MiB);
  assert.ok(/^x+$/.test(r.stdout) && /^e+$/.test(r.stderr));
  assert.equal(r.truncated, true);
  // Two 1 MiB strings and their copies; a buffered 23 MiB would show.
  const grew = (peak - rss0) / MiB;
  assert.ok(grew < 20, `this process grew by ${grew.toFixed(1)} MB while the command wrote 23 MiB`);
});

test('maxOutputBytes: exact cut, one stream cut is enough for truncated, 0 keeps nothing, a cut character is dropped whole', async () => {
  const bg = create();
  bg.registerCommand('ten', { command: 'sh', args: ['-c', 'printf 0123456789ABCDEF; printf ab >&2'], maxOutputBytes: 10 });
  bg.registerCommand('errcut', { command: 'sh', args: ['-c', 'printf abc; printf "too long" >&2'], maxOutputBytes: 4 });
  bg.registerCommand('exact', { command: 'sh', args: ['-c', 'printf abcd; printf wxyz >&2'], maxOutputBytes: 4 });
  bg.registerCommand('zero', { command: 'sh', args: ['-c', 'printf abc'], maxOutputBytes: 0 });
  bg.registerCommand('zeroSilent', { command: 'sh', args: ['-c', 'exit 0'], maxOutputBytes: 0 });
  // 'a' then two 2-byte 'é'.
  bg.registerCommand('utf2', { command: 'sh', args: ['-c', 'printf "a\\303\\251\\303\\251"'], maxOutputBytes: 2 });
  bg.registerCommand('utf3', { command: 'sh', args: ['-c', 'printf "a\\303\\251\\303\\251"'], maxOutputBytes: 3 });

  const [ten, errcut, exact, zero, zeroSilent, utf2, utf3] = await Promise.all(
    ['ten', 'errcut', 'exact', 'zero', 'zeroSilent', 'utf2', 'utf3'].map((n) => bg.execute(n, 't')),
  );
  assert.deepEqual([ten.stdout, ten.stderr, ten.truncated, ten.stdoutBytes, ten.stderrBytes], ['0123456789', 'ab', true, 16, 2]);
  assert.deepEqual([errcut.stdout, errcut.stderr, errcut.truncated, errcut.stderrBytes], ['abc', 'too ', true, 8]);
  assert.deepEqual([exact.stdout, exact.stderr, exact.truncated], ['abcd', 'wxyz', false]);
  assert.deepEqual([zero.stdout, zero.truncated, zero.stdoutBytes], ['', true, 3]);
  assert.deepEqual([zeroSilent.stdout, zeroSilent.truncated], ['', false]);
  assert.deepEqual([utf2.stdout, utf2.truncated, utf2.stdoutBytes], ['a', true, 5]);
  assert.deepEqual([utf3.stdout, utf3.truncated], ['aé', true]);

  // The failure carries the capped output and the flag too.
  bg.registerCommand('failcut', { command: 'sh', args: ['-c', 'printf 0123456789 >&2; exit 1'], maxOutputBytes: 4 });
  const f = await settleOf(bg.execute('failcut', 't'));
  isCommandFailed(f.value);
  assert.equal(f.value.stderr, '0123');
  assert.equal(f.value.truncated, true);
  assert.equal(f.value.stderrBytes, 10);
  assert.equal(f.value.message, 'Command "sh" exited with code 1: 0123');
});

// ----- progress ----------------------------------------------------------------------------

test('progressPattern RegExp: matching stdout lines report Number(capture); watched mode shows it (events, status, watch())', async (t) => {
  const g = gates(t);
  const bg = create({ progressIntervalMs: 60000 });
  bg.registerCommand(
    'build',
    stepper(g.dir, [
      ['out', 'starting (no match)'],
      ['out', 'progress: 25%'],
      ['mark', 'm1'],
      ['gate', 'g1'],
      ['err', 'progress: 99%'], // stderr never reports progress
      ['out', 'progress: 60.5%'],
      ['out', 'progress: none%'],
      ['mark', 'm2'],
      ['gate', 'g2'],
      ['out', 'done'],
    ], { progressPattern: /progress: (\S+)%/ }),
  );
  const updates = [];
  bg.on('progress-update', (e) => updates.push(e));
  const { executionId: id, mode } = await bg.executeWatched('build', 'compile');
  assert.equal(mode, 'watched');
  const watched = [];
  const watching = (async () => {
    for await (const u of bg.watch(id)) watched.push(u);
  })();

  await g.waitFor('m1');
  await waitUntil(() => bg.getExecutionStatus(id).progress === 25, 'progress 25 in the status');
  assert.equal(bg.getActiveExecutions().find((e) => e.executionId === id).progress, 25);
  g.open('g1');
  await g.waitFor('m2');
  await waitUntil(() => bg.getExecutionStatus(id).progress === 60.5, 'progress 60.5 in the status');
  g.open('g2');
  const final = await bg.waitFor(id);
  await watching;

  assert.equal(final.status, 'completed');
  assert.equal(final.result.stdout, 'starting (no match)\nprogress: 25%\nprogress: 60.5%\nprogress: none%\ndone\n');
  assert.equal(final.result.stderr, 'progress: 99%\n');
  const running = updates.filter((u) => u.executionId === id && u.status === 'running').map((u) => u.progress);
  assert.deepEqual(running, [25, 60.5], 'one progress-update per report, NaN ignored');
  assert.deepEqual(
    updates.filter((u) => u.status !== 'running').map((u) => [u.status, u.progress]),
    [['completed', 100]],
  );
  const fromWatch = watched.filter((u) => u.status === 'running' && u.progress > 0).map((u) => u.progress);
  assert.deepEqual(fromWatch, [25, 60.5]);
  assert.equal(watched.at(-1).status, 'completed');
  assert.equal(watched.at(-1).found, true);
});

test('progressPattern RegExp: a progress bar redrawn with a lone CR reports each step', async () => {
  const bg = create();
  bg.registerCommand('bar', {
    command: 'sh',
    args: ['-c', 'printf "[#   ] 25%%\\r[##  ] 50%%\\r[### ] 75%%\\r[####] 100%%\\n"'],
    progressPattern: /(\d+)%/,
  });
  const seen = [];
  const r = await bg.execute('bar', 't', { onProgress: (p) => seen.push(p.progress) });
  assert.equal(r.stdout, '[#   ] 25%\r[##  ] 50%\r[### ] 75%\r[####] 100%\n');
  assert.deepEqual(seen, [25, 50, 75, 100]);
});

test('progressPattern RegExp also reports in other modes (onProgress), a g flag does not skip lines', async () => {
  const bg = create();
  bg.registerCommand('steps', {
    command: 'sh',
    args: ['-c', 'for p in 10 20 30 40; do echo "step $p%"; done'],
    progressPattern: /step (\d+)%/g,
  });
  const seen = [];
  const r = await bg.execute('steps', 't', { onProgress: (p) => seen.push(p.progress) });
  assert.equal(r.exitCode, 0);
  assert.deepEqual(seen, [10, 20, 30, 40]);
  // Twice: the pattern's lastIndex is not shared between executions either.
  seen.length = 0;
  await bg.execute('steps', 't', { onProgress: (p) => seen.push(p.progress) });
  assert.deepEqual(seen, [10, 20, 30, 40]);
});

test("progressPattern 'json-lines': {\"progress\": n} lines report n, anything else is ignored", async (t) => {
  const g = gates(t);
  const bg = create({ progressIntervalMs: 60000 });
  bg.registerCommand(
    'json',
    stepper(
      g.dir,
      [
        ['out', '{"progress": 10}'],
        ['out', 'plain text 50'],
        ['out', '{"progress": "20"}'],
        ['out', '{"progress": 30'],
        ['out', '{"other": 70}'],
        ['mark', 'm1'],
        ['gate', 'g1'],
        ['out', '  {"step": "link", "progress": 42.5}  '],
        ['err', '{"progress": 99}'],
        ['out', '{"progress": 80}'],
      ],
      { progressPattern: 'json-lines' },
    ),
  );
  const updates = [];
  bg.on('progress-update', (e) => updates.push(e));
  const reports = [];
  const { executionId: id } = await bg.executeWatched('json', 't', { onProgress: (p) => reports.push(p.progress) });
  await g.waitFor('m1');
  await waitUntil(() => bg.getExecutionStatus(id).progress === 10, 'progress 10 in the status');
  await sleep(50);
  assert.equal(bg.getExecutionStatus(id).progress, 10, 'non-progress lines changed nothing');
  g.open('g1');
  const final = await bg.waitFor(id);
  assert.equal(final.status, 'completed');
  // JSON progress is coalesced per read (only the latest value of a read matters): 42.5 and
  // 80 may arrive in one read, and then only 80 is reported.
  assert.ok(
    reports[0] === 10 && reports.at(-1) === 80 && reports.every((v, i) => v === [10, 42.5, 80][i] || (i === 1 && v === 80)),
    `reports ${JSON.stringify(reports)}: 10, then 42.5 (unless coalesced), then 80`,
  );
  assert.ok(reports.length === 2 || reports.length === 3);
  // progress-update is coalesced per turn: 42.5 and 80 may come in one read, as one update.
  const running = updates.filter((u) => u.executionId === id && u.status === 'running').map((u) => u.progress);
  assert.ok(
    running[0] === 10 && running.at(-1) === 80 && running.every((v) => reports.includes(v)),
    `progress-update values ${JSON.stringify(running)}`,
  );
  assert.ok(final.result.stdout.startsWith('{"progress": 10}\nplain text 50\n'), 'the lines stay in stdout');
});

// ----- cancel, timeout, killSignal, stragglers ----------------------------------------------

test('cancelExecution ends the whole group: SIGTERM to all, SIGKILL after killGraceMs to a grandchild that ignores it', async () => {
  const bg = create();
  bg.registerCommand('tree', { command: NODE, args: ['-e', TREE_SRC], killGraceMs: 300 });
  const out = outputOf(bg);
  const events = terminalEvents(bg);
  const p = settleOf(bg.execute('tree', 't'));
  await waitUntil(() => out.pid('leader') && out.pid('grandchild'), 'the leader and grandchild pids', { timeoutMs: 8000 });
  const leader = out.pid('leader');
  const grandchild = out.pid('grandchild');
  const [active] = bg.getActiveExecutions();
  assert.equal(active.pid, leader, 'getActiveExecutions() shows the leader pid');
  assert.ok(alive(leader) && alive(grandchild));
  assert.equal(pgidOf(leader), leader, 'the command leads its own process group');
  assert.equal(pgidOf(grandchild), leader, 'the grandchild is in that group');
  assert.notEqual(pgidOf(process.pid), leader);
  assert.equal(bg.getStatus().command_processes, 1);

  const t0 = performance.now();
  const c = await bg.cancelExecution(active.executionId);
  assert.deepEqual(c, { success: true, executionId: active.executionId, previousStatus: 'running' });

  // Both dead; the leader (which does not ignore SIGTERM) well before the grandchild.
  const at = await deathTimes([leader, grandchild]);
  const leaderDead = at.get(leader) - t0;
  const grandchildDead = at.get(grandchild) - t0;
  assert.ok(leaderDead < grandchildDead, `the leader died of SIGTERM first (${leaderDead} ms vs ${grandchildDead} ms)`);
  assert.ok(grandchildDead >= 250, `SIGKILL came ${grandchildDead.toFixed(0)} ms after cancel, before killGraceMs 300`);
  assert.ok(grandchildDead < 300 + 2000, `the grandchild lived ${grandchildDead.toFixed(0)} ms after cancel`);
  await waitUntil(() => out.lines().includes('grandchild ignored SIGTERM'), 'the grandchild to have seen SIGTERM', { timeoutMs: 2000 });

  const r = await p;
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  assertOneTerminal(events, [active.executionId], 'execution-cancelled');
  assert.equal(bg.getExecutionStatus(active.executionId).status, 'cancelled');
  await waitUntil(() => bg.getStatus().command_processes === 0, 'command_processes back to 0', { timeoutMs: 3000 });
});

test('killSignal by name or number is what the group receives on cancel', async () => {
  const bg = create();
  const src =
    "for (const s of ['SIGINT', 'SIGUSR1', 'SIGUSR2', 'SIGTERM']) process.on(s, () => { console.log('got ' + s); process.exit(0); });" +
    "console.log('ready'); setInterval(() => {}, 1000);";
  bg.registerCommand('byName', { command: NODE, args: ['-e', src], killSignal: 'SIGINT' });
  bg.registerCommand('byNumber', { command: NODE, args: ['-e', src], killSignal: osConstants.signals.SIGUSR2 });
  bg.registerCommand('byDefault', { command: NODE, args: ['-e', src] });
  const out = outputOf(bg);
  const ids = [];
  for (const name of ['byName', 'byNumber', 'byDefault']) ids.push((await bg.fireAndForget(name, 't')).executionId);
  await waitUntil(() => ids.every((id) => out.lines(id).includes('ready')), 'three ready lines', { timeoutMs: 8000 });
  for (const id of ids) assert.equal((await bg.cancelExecution(id)).success, true);
  await waitUntil(() => ids.every((id) => out.lines(id).length === 2), 'three "got" lines', { timeoutMs: 3000 });
  assert.deepEqual(
    ids.map((id) => out.lines(id)[1]),
    ['got SIGINT', 'got SIGUSR2', 'got SIGTERM'],
  );
  for (const id of ids) assert.equal(bg.getExecutionStatus(id).status, 'cancelled');
  await waitUntil(() => bg.getStatus().command_processes === 0, 'command_processes back to 0', { timeoutMs: 3000 });
});

test('killGraceMs defaults to 5000: a SIGTERM-deaf command is still alive 1.5 s after its cancel', async () => {
  const bg = create();
  bg.registerCommand('deaf', { command: 'sh', args: ['-c', "trap '' TERM; echo ready; exec sleep 30"] });
  const out = outputOf(bg);
  const { executionId } = await bg.fireAndForget('deaf', 't');
  await waitUntil(() => out.lines().includes('ready'), 'the command to be running', { timeoutMs: 8000 });
  const [{ pid }] = bg.getActiveExecutions();
  try {
    assert.equal((await bg.cancelExecution(executionId)).success, true);
    await sleep(1500);
    assert.ok(alive(pid), 'killed before the default grace period');
    assert.equal(bg.getStatus().command_processes, 1, 'still counted while it is being terminated');
  } finally {
    // Not 3.5 s more of waiting: end it here (the executor then sees it die).
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  await waitUntil(() => bg.getStatus().command_processes === 0, 'command_processes back to 0', { timeoutMs: 3000 });
});

test('options.timeout fails with ERR_EXECUTION_TIMEOUT and kills the command (SIGKILL after killGraceMs when SIGTERM is ignored)', async () => {
  const bg = create();
  // sh ignores SIGTERM, and so does the sleep it becomes (an ignored signal stays ignored across exec).
  bg.registerCommand('deaf', { command: 'sh', args: ['-c', "trap '' TERM; exec sleep 30"], killGraceMs: 300 });
  bg.registerCommand('slow', { command: 'sleep', args: ['30'] });
  const pidOfRunning = async () => {
    await waitUntil(() => bg.getActiveExecutions()[0]?.pid !== undefined, 'a running command', { intervalMs: 1 });
    return bg.getActiveExecutions()[0].pid;
  };
  const t0 = performance.now();
  const running = settleOf(bg.execute('deaf', 't', { timeout: 300 }));
  let pid = await pidOfRunning();
  const r = await running;
  const failedAt = performance.now();
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTION_TIMEOUT');
  assert.ok(failedAt - t0 >= 290, `timed out after ${failedAt - t0} ms`);
  assert.ok(typeof pid === 'number' && pid > 0, 'pid known');
  const at = await deathTimes([pid]);
  const lived = at.get(pid) - failedAt;
  assert.ok(lived >= 230, `the SIGTERM-deaf command died ${lived.toFixed(0)} ms after the timeout, before killGraceMs 300`);
  assert.ok(lived < 300 + 2000, `the command lived ${lived.toFixed(0)} ms after the timeout`);

  // An ordinary command dies at once.
  const running2 = settleOf(bg.execute('slow', 't', { timeout: 200 }));
  pid = await pidOfRunning();
  const r2 = await running2;
  const failed2 = performance.now();
  assert.equal(r2.value.code, 'ERR_EXECUTION_TIMEOUT');
  const at2 = await deathTimes([pid]);
  assert.ok(at2.get(pid) - failed2 < 1000, `sleep lived ${at2.get(pid) - failed2} ms after its timeout`);
  await waitUntil(() => bg.getStatus().command_processes === 0, 'command_processes back to 0', { timeoutMs: 3000 });
});

test('when the leader exits normally, what it left in its group is terminated too (SIGKILL after killGraceMs if needed)', async () => {
  const bg = create();
  // A background sleep that holds stdout open, left behind by a leader exiting 0.
  bg.registerCommand('leaves', { command: 'sh', args: ['-c', 'sleep 30 & echo $!'] });
  bg.registerCommand('leavesDeaf', { command: 'sh', args: ['-c', "trap '' TERM; sleep 30 & echo $!"], killGraceMs: 300 });
  const t0 = performance.now();
  const [a, b] = await Promise.all([bg.execute('leaves', 't'), bg.execute('leavesDeaf', 't')]);
  const elapsed = performance.now() - t0;
  assert.equal(a.exitCode, 0);
  assert.equal(b.exitCode, 0);
  const left = Number(a.stdout.trim());
  const leftDeaf = Number(b.stdout.trim());
  assert.ok(left > 0 && leftDeaf > 0, `pids ${a.stdout} ${b.stdout}`);
  assert.ok(elapsed < 4000, `resolved after ${elapsed} ms: the stragglers were not left to run 30 s`);
  assert.ok(b.durationMs >= 250, `the deaf straggler held stdout until SIGKILL (${b.durationMs} ms)`);
  await deathTimes([left, leftDeaf], 2000);
  assert.equal(bg.getStatus().command_processes, 0);
});

test('a process that left the group (setsid) and holds the pipes: reading stops 0.5 s after the group ended', async (t) => {
  const bg = create();
  // The leader starts a detached (setsid) grandchild that inherits stdout and stderr, and exits 0.
  const src =
    "const c = require('node:child_process').spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']," +
    " { detached: true, stdio: ['ignore', 'inherit', 'inherit'] }); console.log('escaped ' + c.pid); c.unref();";
  // killGraceMs is long: the group is empty once the leader exits, so it is not waited for.
  bg.registerCommand('escapes', { command: NODE, args: ['-e', src], killGraceMs: 5000 });
  let escaped;
  t.after(() => {
    if (escaped !== undefined && alive(escaped)) process.kill(escaped, 'SIGKILL');
  });
  const run = bg.execute('escapes', 't');
  run.then((r) => (escaped = Number(r.stdout.split(' ')[1])), () => {});
  const r = await run;
  assert.equal(r.exitCode, 0);
  assert.match(r.stdout, /^escaped \d+\n$/);
  assert.ok(r.durationMs >= 450, `ended ${r.durationMs} ms after the start: before the 500 ms pipe drain`);
  assert.ok(r.durationMs < 4000, `ended ${r.durationMs} ms after the start: it waited for killGraceMs`);
  assert.ok(alive(escaped), 'a process outside the group is not ours to kill');
  assert.equal(bg.getStatus().command_processes, 0);
});

test('a process that left the group and keeps writing: reading still ends soon after the drain', async (t) => {
  const bg = create();
  // The detached grandchild writes a little every millisecond, for ever; the leader exits at once.
  const writer = "setInterval(() => process.stdout.write('y'.repeat(300)), 1)";
  const src =
    `const c = require('node:child_process').spawn(process.execPath, ['-e', ${JSON.stringify(writer)}],` +
    " { detached: true, stdio: ['ignore', 'inherit', 'ignore'] }); process.stderr.write('escaped ' + c.pid); c.unref();";
  bg.registerCommand('floods', { command: NODE, args: ['-e', src], maxOutputBytes: 64 * 1024 * 1024 });
  let escaped;
  t.after(() => {
    if (escaped !== undefined && alive(escaped)) process.kill(escaped, 'SIGKILL');
  });
  const run = bg.execute('floods', 't');
  run.then((r) => (escaped = Number(r.stderr.split(' ')[1])), () => {});
  const r = await within(run, 8000);
  assert.notEqual(r, 'pending', 'execute() settled');
  assert.equal(r.exitCode, 0);
  assert.ok(r.durationMs < 2500, `ended ${r.durationMs} ms after the start`);
  assert.ok(r.stdoutBytes > 0, 'its output was read until then');
});

test('cancelling while an async spec function is still building the spec: no process is started', async (t) => {
  const g = gates(t);
  const bg = create();
  let release;
  bg.registerCommand('slowSpec', () => new Promise((resolve) => (release = resolve)));
  const run = settleOf(bg.execute('slowSpec', 't'));
  await waitUntil(() => release !== undefined, 'the spec function to be called');
  const [active] = bg.getActiveExecutions();
  assert.equal('pid' in active, false, 'no process yet');
  assert.equal((await bg.cancelExecution(active.executionId)).success, true);
  release({ command: 'sh', args: ['-c', ': > "$0"', g.path('started')] });
  const r = await run;
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  await sleep(200);
  assert.equal(g.has('started'), false, 'the command never ran');
  assert.equal(bg.getStatus().command_processes, 0);
});

// ----- shutdown ----------------------------------------------------------------------------

test('shutdown({ timeoutMs }) ends running commands and their groups; queued ones never start', async () => {
  const bg = create({ maxConcurrentAgents: 2 });
  bg.registerCommand('tree', { command: NODE, args: ['-e', TREE_SRC], killGraceMs: 300 });
  bg.registerCommand('sleeper', { command: 'sleep', args: ['30'] });
  let queuedBuilt = 0;
  bg.registerCommand('queued', () => {
    queuedBuilt++;
    return { command: 'sleep', args: ['30'] };
  });
  const out = outputOf(bg);
  const events = terminalEvents(bg);
  const complete = [];
  bg.on('shutdown-complete', (e) => complete.push(e));
  const tree = settleOf(bg.execute('tree', 't'));
  const sleeper = (await bg.fireAndForget('sleeper', 't')).executionId;
  const queued = (await bg.executeWatched('queued', 't')).executionId;
  await waitUntil(() => out.pid('grandchild') !== undefined && bg.getActiveExecutions().length === 2, 'both running', {
    timeoutMs: 8000,
  });
  const pids = [out.pid('leader'), out.pid('grandchild'), bg.getActiveExecutions().find((e) => e.agent === 'sleeper').pid];
  assert.ok(pids.every(alive));

  const t0 = performance.now();
  await bg.shutdown({ timeoutMs: 200 });
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 190 && elapsed < 900, `shutdown resolved after ${elapsed} ms`);
  assert.equal(complete.length, 1);
  assert.equal(complete[0].forced, true);
  const r = await tree;
  assert.equal(r.value.code, 'ERR_EXECUTOR_SHUT_DOWN');
  const treeId = r.value.executionId;
  for (const id of [treeId, sleeper, queued]) {
    assert.equal(bg.getExecutionStatus(id).status, 'cancelled', id);
    assert.equal(bg.getExecutionStatus(id).errorObject.code, 'ERR_EXECUTOR_SHUT_DOWN', id);
  }
  assertOneTerminal(events, [treeId, sleeper, queued], 'execution-cancelled');
  assert.equal(queuedBuilt, 0, 'the queued command was never built nor started');

  const at = await deathTimes(pids);
  const grandchildDead = at.get(pids[1]) - t0;
  assert.ok(grandchildDead >= 200 + 250, `the SIGTERM-deaf grandchild died ${grandchildDead} ms after shutdown() began`);
  assert.ok(at.get(pids[2]) - t0 < 200 + 1500, 'sleep died on SIGTERM');
  await waitUntil(() => bg.getStatus().command_processes === 0, 'command_processes back to 0', { timeoutMs: 3000 });
});

test("shutdown() default 'cancel' lets a running command finish (its result kept) and cancels the queued ones", async (t) => {
  const g = gates(t);
  const bg = create({ maxConcurrentAgents: 1 });
  bg.registerCommand('work', stepper(g.dir, [['out', 'working'], ['mark', 'started'], ['gate', 'go'], ['out', 'finished']]));
  let queuedBuilt = 0;
  bg.registerCommand('queued', () => {
    queuedBuilt++;
    return { command: 'sh', args: ['-c', 'exit 0'] };
  });
  const running = settleOf(bg.execute('work', 't'));
  const queued = settleOf(bg.execute('queued', 't'));
  await g.waitFor('started', 8000);
  const [{ pid, executionId }] = bg.getActiveExecutions();
  const done = bg.shutdown();
  let resolved = false;
  done.then(() => (resolved = true));
  const q = await queued;
  assert.equal(q.value.code, 'ERR_EXECUTOR_SHUT_DOWN');
  await sleep(150);
  assert.equal(resolved, false, 'shutdown waits for the running command');
  assert.ok(alive(pid), 'the running command was not signalled');
  assert.equal(bg.getExecutionStatus(executionId).status, 'running');
  g.open('go');
  await done;
  const r = await running;
  assert.equal(r.ok, true);
  assert.equal(r.value.exitCode, 0);
  assert.equal(r.value.stdout, 'working\nfinished\n');
  assert.equal(bg.getExecutionStatus(executionId).status, 'completed');
  assert.equal(queuedBuilt, 0);
  assert.equal(alive(pid), false);
});

// ----- spawn errors ------------------------------------------------------------------------

test('a program that cannot start fails with ERR_COMMAND_SPAWN: not in PATH, no such file, bad cwd, not executable', async (t) => {
  const g = gates(t);
  const bg = create();
  const notExec = g.path('not-executable.sh');
  writeFileSync(notExec, '#!/bin/sh\necho hi\n');
  chmodSync(notExec, 0o644);
  bg.registerCommand('missing', { command: 'bmad-no-such-program-xyz', args: ['a', 'b'] });
  bg.registerCommand('missingPath', { command: '/nonexistent-bmad-dir/prog' });
  bg.registerCommand('badCwd', { command: 'sh', args: ['-c', 'pwd'], cwd: '/nonexistent/bmad-dir' });
  bg.registerCommand('notExec', { command: notExec });
  bg.registerCommand('ok', { command: 'sh', args: ['-c', 'echo ok'] });
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));

  const m = (await settleOf(bg.execute('missing', 't'))).value;
  assert.ok(m instanceof Error);
  assert.equal(m.code, 'ERR_COMMAND_SPAWN');
  assert.match(m.message, /^Cannot start command "bmad-no-such-program-xyz": ENOENT \(.+\); not found in PATH$/);
  assert.equal(m.command, 'bmad-no-such-program-xyz');
  assert.deepEqual(m.args, ['a', 'b']);
  assert.equal(m.cwd, null);
  assert.equal(m.reason, 'ENOENT');
  assert.ok(m.cause instanceof Error);
  assert.equal(m.cause.code, 'ENOENT');
  assert.equal(failed.at(-1).code, 'ERR_COMMAND_SPAWN');
  assert.equal(bg.getExecutionStatus(failed.at(-1).executionId).status, 'failed');

  const p = (await settleOf(bg.execute('missingPath', 't'))).value;
  assert.equal(p.code, 'ERR_COMMAND_SPAWN');
  assert.equal(p.reason, 'ENOENT');
  assert.match(p.message, /^Cannot start command "\/nonexistent-bmad-dir\/prog": ENOENT /);

  const c = (await settleOf(bg.execute('badCwd', 't'))).value;
  assert.equal(c.code, 'ERR_COMMAND_SPAWN');
  assert.match(c.message, /^Cannot start command "sh": ENOENT \(.+\); the working directory "\/nonexistent\/bmad-dir" does not exist$/);
  assert.equal(c.cwd, '/nonexistent/bmad-dir');
  assert.equal(c.reason, 'ENOENT');
  assert.equal(c.cause.code, 'ENOENT');

  const x = (await settleOf(bg.execute('notExec', 't'))).value;
  assert.equal(x.code, 'ERR_COMMAND_SPAWN');
  assert.equal(x.reason, 'EACCES');
  assert.equal(x.cause.code, 'EACCES');

  // In callback mode too, and the executor goes on.
  const cb = gate();
  await bg.executeWithCallback('missing', 't', (err, value) => cb.open([err, value]));
  const [cbErr, cbValue] = await cb.promise;
  assert.equal(cbErr.code, 'ERR_COMMAND_SPAWN');
  assert.equal(cbValue, undefined);
  assert.equal((await bg.execute('ok', 't')).stdout, 'ok\n');
  assert.equal(bg.getStatus().command_processes, 0);
  assert.equal(bg.getStatus().running, 0);
});

// ----- cwd, env, input, arguments ----------------------------------------------------------

test('cwd sets the working directory', async (t) => {
  const g = gates(t);
  const bg = create();
  bg.registerCommand('pwd', { command: NODE, args: ['-e', 'console.log(process.cwd())'], cwd: g.dir });
  bg.registerCommand('here', { command: NODE, args: ['-e', 'console.log(process.cwd())'] });
  assert.equal((await bg.execute('pwd', 't')).stdout.trim(), realpathSync(g.dir));
  assert.equal((await bg.execute('here', 't')).stdout.trim(), process.cwd(), 'without cwd: the parent one');
});

test('env merges with the parent environment (null removes); inheritEnv: false starts from nothing', async (t) => {
  process.env.BMAD_CMD_KEEP = 'kept';
  process.env.BMAD_CMD_DROP = 'dropped?';
  process.env.BMAD_CMD_OVERRIDE = 'old';
  t.after(() => {
    delete process.env.BMAD_CMD_KEEP;
    delete process.env.BMAD_CMD_DROP;
    delete process.env.BMAD_CMD_OVERRIDE;
  });
  const bg = create();
  bg.registerCommand('merged', {
    command: NODE,
    args: ['-e', PRINT_ENV],
    env: { BMAD_CMD_NEW: 'new $HOME `id`', BMAD_CMD_DROP: null, BMAD_CMD_OVERRIDE: 'new' },
  });
  bg.registerCommand('alone', { command: NODE, args: ['-e', PRINT_ENV], inheritEnv: false, env: { ONLY: '1', GONE: null } });
  bg.registerCommand('empty', { command: NODE, args: ['-e', PRINT_ENV], inheritEnv: false });
  const merged = JSON.parse((await bg.execute('merged', 't')).stdout);
  assert.equal(merged.BMAD_CMD_KEEP, 'kept', 'inherited from the parent (as it is at spawn time)');
  assert.equal(merged.BMAD_CMD_NEW, 'new $HOME `id`', 'set literally');
  assert.equal(merged.BMAD_CMD_OVERRIDE, 'new');
  assert.equal('BMAD_CMD_DROP' in merged, false, 'null removes');
  assert.equal(merged.PATH, process.env.PATH);
  assert.deepEqual(JSON.parse((await bg.execute('alone', 't')).stdout), { ONLY: '1' });
  assert.deepEqual(JSON.parse((await bg.execute('empty', 't')).stdout), {});
});

test('input (string, Buffer, Uint8Array, 2 MiB) is written to stdin, then closed; without it stdin is /dev/null', async () => {
  const bg = create();
  const big = Buffer.alloc(2 * MiB, 'z');
  bg.registerCommand('str', { command: NODE, args: ['-e', PRINT_STDIN], input: 'héllo\nworld' });
  bg.registerCommand('buf', { command: NODE, args: ['-e', PRINT_STDIN], input: Buffer.from([0, 255, 1, 10]) });
  bg.registerCommand('u8', { command: NODE, args: ['-e', PRINT_STDIN], input: new Uint8Array([7, 8, 9]) });
  bg.registerCommand('emptyStr', { command: NODE, args: ['-e', PRINT_STDIN], input: '' });
  bg.registerCommand('big', { command: NODE, args: ['-e', PRINT_STDIN], input: big });
  bg.registerCommand('none', { command: NODE, args: ['-e', PRINT_STDIN] });
  // Exits at once without reading 2 MiB of input: not an error.
  bg.registerCommand('ignores', { command: 'sh', args: ['-c', 'exit 0'], input: big });
  const get = async (name) => JSON.parse((await bg.execute(name, 't')).stdout);
  const str = await get('str');
  assert.equal(str.text, 'héllo\nworld');
  assert.equal(str.fd0, 'pipe');
  assert.equal((await get('buf')).hex, '00ff010a');
  assert.equal((await get('u8')).hex, '070809');
  assert.equal((await get('emptyStr')).length, 0);
  assert.equal((await get('big')).length, 2 * MiB);
  const none = await get('none');
  assert.equal(none.length, 0);
  assert.equal(none.fd0, '/dev/null');
  assert.equal((await bg.execute('ignores', 't')).exitCode, 0);
});

test('no shell: arguments arrive literally, and a command name is not parsed', async (t) => {
  const g = gates(t);
  const bg = create();
  const args = ['$HOME; echo hi', '`id`', '$(id)', '*', '\'q\' "dq"', 'a b', '', '|', '&& touch pwned', '>out.txt', 'é\\n'];
  bg.registerCommand('argv', { command: NODE, args: ['-e', PRINT_ARGV, ...args], cwd: g.dir });
  const r = await bg.execute('argv', 't');
  assert.deepEqual(JSON.parse(r.stdout), args);
  assert.equal(g.has('out.txt'), false, 'no redirection happened');
  assert.equal(g.has('pwned'), false);
  // The spec function's task goes in as one argument, whatever it holds.
  bg.registerCommand('echoTask', (task) => ({ command: NODE, args: ['-e', PRINT_ARGV, task] }));
  const task = '"; rm -rf / #\n$(reboot)';
  assert.deepEqual(JSON.parse((await bg.execute('echoTask', task)).stdout), [task]);
  // "sh -c echo" as a program name is a file name that does not exist, not a shell line.
  bg.registerCommand('notAShell', { command: 'sh -c "echo hi"' });
  const e = (await settleOf(bg.execute('notAShell', 't'))).value;
  assert.equal(e.code, 'ERR_COMMAND_SPAWN');
  assert.equal(e.reason, 'ENOENT');
});

// ----- modes and spec functions ------------------------------------------------------------

test('every mode runs a command agent like a function agent: execute, fireAndForget, executeWithCallback, executeWatched, executeMultiple', async () => {
  const bg = create();
  bg.registerCommand('echo', (task) => ({ command: 'sh', args: ['-c', 'printf "%s" "$0"', task] }));
  bg.registerCommand('fail', { command: 'sh', args: ['-c', 'echo bad >&2; exit 2'] });
  bg.registerAgent('fn', (task) => `fn:${task}`);
  const completed = [];
  bg.on('execution-completed', (e) => completed.push(e));

  assert.equal((await bg.execute('echo', 'ex')).stdout, 'ex');

  const ff = await bg.fireAndForget('echo', 'ff');
  assert.equal(ff.mode, 'fire-and-forget');
  const ffs = await bg.waitFor(ff.executionId);
  assert.equal(ffs.status, 'completed');
  assert.equal(ffs.result.stdout, 'ff');

  const cb = gate();
  const cbSub = await bg.executeWithCallback('echo', 'cb', (err, value) => cb.open([err, value]));
  assert.equal(cbSub.mode, 'async-callback');
  const [cbErr, cbValue] = await cb.promise;
  assert.equal(cbErr, null);
  assert.equal(cbValue.stdout, 'cb');
  assert.equal(cbValue.exitCode, 0);

  const w = await bg.executeWatched('echo', 'w');
  assert.equal(w.mode, 'watched');
  const ws = await bg.waitFor(w.executionId);
  assert.equal(ws.result.stdout, 'w');
  assert.equal(ws.mode, 'watched');

  const cbf = gate();
  await bg.executeWithCallback('fail', 'cbf', (err, value) => cbf.open([err, value]));
  const [cbfErr, cbfValue] = await cbf.promise;
  isCommandFailed(cbfErr);
  assert.equal(cbfValue, undefined);
  const fff = await bg.fireAndForget('fail', 'fff');
  const fffs = await bg.waitFor(fff.executionId);
  assert.equal(fffs.status, 'failed');
  assert.equal(fffs.error, 'Command "sh" exited with code 2: bad');
  assert.equal(fffs.errorObject.code, 'ERR_COMMAND_FAILED');

  const multi = await bg.executeMultiple(['echo', 'fn', 'fail', 'echo'], 'multi');
  assert.deepEqual(
    multi.results.map((r) => [r.agent, r.status]),
    [
      ['echo', 'completed'],
      ['fn', 'completed'],
      ['fail', 'failed'],
      ['echo', 'completed'],
    ],
  );
  assert.equal(multi.results[0].result.stdout, 'multi');
  assert.equal(multi.results[1].result, 'fn:multi');
  assert.equal(multi.results[2].error, 'Command "sh" exited with code 2: bad');
  assert.equal(multi.results[3].result.stdout, 'multi');
  assert.equal(multi.report.successful, 3);
  assert.equal(multi.report.failed, 1);
  assert.equal(multi.consistent.consistent, false);

  assert.deepEqual(
    completed.filter((e) => e.agent === 'echo').map((e) => e.mode),
    ['execute', 'fire-and-forget', 'async-callback', 'watched', 'aggregate', 'aggregate'],
  );
  assert.equal(bg.getStatus().command_processes, 0);
});

test('a spec function is called per execution with (task, options), may be async; a bad spec or a throw (ERR_COMMAND_SPEC) fails only that execution', async () => {
  const bg = create();
  const calls = [];
  bg.registerCommand('dyn', (task, options) => {
    calls.push([task, options]);
    return { command: 'sh', args: ['-c', 'echo "$0 $$"', task] };
  });
  bg.registerCommand('asyncDyn', async (task) => {
    await sleep(5);
    return { command: 'sh', args: ['-c', 'printf "%s" "$0"', `async:${task}`] };
  });
  bg.registerCommand('badArgs', () => ({ command: 'sh', args: ['-c', 1] }));
  bg.registerCommand('badKey', async () => ({ command: 'sh', shell: true }));
  bg.registerCommand('notObject', () => null);
  bg.registerCommand('badSignal', () => ({ command: 'sh', killSignal: 'SIGNOPE' }));
  const boom = new Error('spec builder failed');
  bg.registerCommand('throws', () => {
    throw boom;
  });
  bg.registerCommand('rejects', async () => {
    throw boom;
  });

  const a = await bg.execute('dyn', 'one', { priority: 'high', custom: 42 });
  const b = await bg.execute('dyn', 'two');
  assert.match(a.stdout, /^one \d+\n$/);
  assert.match(b.stdout, /^two \d+\n$/);
  assert.notEqual(a.stdout.split(' ')[1], b.stdout.split(' ')[1], 'one process per execution');
  assert.equal(calls.length, 2);
  assert.equal(calls[0][0], 'one');
  assert.equal(calls[0][1].custom, 42);
  assert.equal(calls[0][1].priority, 'high');
  assert.equal(calls[1][0], 'two');
  assert.equal((await bg.execute('asyncDyn', 'x')).stdout, 'async:x');

  const bad = (await settleOf(bg.execute('badArgs', 't'))).value;
  assert.ok(bad instanceof TypeError, `${bad}`);
  assert.equal(bad.code, 'ERR_INVALID_ARG');
  assert.match(bad.message, /args\[1\] must be a string/);
  assert.match(bad.message, /"badArgs"/, 'names the agent');
  const badKey = (await settleOf(bg.execute('badKey', 't'))).value;
  assert.ok(badKey instanceof TypeError);
  assert.match(badKey.message, /unknown key "shell"/);
  const notObject = (await settleOf(bg.execute('notObject', 't'))).value;
  assert.ok(notObject instanceof TypeError);
  assert.equal(notObject.code, 'ERR_INVALID_ARG');
  const badSignal = (await settleOf(bg.execute('badSignal', 't'))).value;
  assert.ok(badSignal instanceof RangeError);
  assert.match(badSignal.message, /killSignal/);
  for (const name of ['throws', 'rejects']) {
    const err = (await settleOf(bg.execute(name, 't'))).value;
    assert.ok(err instanceof Error, `${name}: ${err}`);
    assert.equal(err.code, 'ERR_COMMAND_SPEC', name);
    assert.equal(err.cause, boom, name);
    assert.equal(err.agent, name);
    assert.equal(err.message, `The command spec function of "${name}" failed: spec builder failed`);
  }
  // A throw that is not an Error is described.
  bg.registerCommand('throwsString', () => {
    throw 'no spec today';
  });
  const s = (await settleOf(bg.execute('throwsString', 't'))).value;
  assert.equal(s.code, 'ERR_COMMAND_SPEC');
  assert.equal(s.cause, 'no spec today');
  assert.match(s.message, /"throwsString" failed: no spec today$/);

  const failedStatus = bg.getStatus();
  assert.equal(failedStatus.failed, 7);
  assert.equal(failedStatus.running, 0);
  assert.equal(failedStatus.command_processes, 0);
  assert.match((await bg.execute('dyn', 'three')).stdout, /^three /, 'the executor keeps working');
});

test('registerCommand validates name and spec synchronously: TypeError / RangeError, code ERR_INVALID_ARG, the field named', () => {
  const bg = create();
  bg.registerCommand('existing', { command: 'sh' });
  const cases = [
    [['', { command: 'sh' }], TypeError, /^registerCommand: name must be a non-empty string/],
    [[5, { command: 'sh' }], TypeError, /name/],
    [[undefined, { command: 'sh' }], TypeError, /name/],
    [['x'], TypeError, /^registerCommand: spec must be an object/],
    [['x', null], TypeError, /spec/],
    [['x', 'sh'], TypeError, /spec/],
    [['x', ['sh']], TypeError, /spec/],
    [['x', {}], TypeError, /spec\.command/],
    [['x', { command: '' }], TypeError, /spec\.command/],
    [['x', { command: 5 }], TypeError, /spec\.command/],
    [['x', { command: 'sh\0' }], TypeError, /spec\.command/],
    [['x', { command: 'sh', args: '-c echo' }], TypeError, /spec\.args/],
    [['x', { command: 'sh', args: ['ok', 1] }], TypeError, /^registerCommand: spec\.args\[1\] must be a string/],
    [['x', { command: 'sh', args: ['a\0b'] }], TypeError, /spec\.args\[0\]/],
    [['x', { command: 'sh', shell: true }], TypeError, /unknown key "shell"/],
    [['x', { command: 'sh', cwd: 5 }], TypeError, /spec\.cwd/],
    [['x', { command: 'sh', env: 'A=1' }], TypeError, /spec\.env/],
    [['x', { command: 'sh', env: { A: 1 } }], TypeError, /spec\.env\.A/],
    [['x', { command: 'sh', env: { 'A=B': 'x' } }], TypeError, /spec\.env/],
    [['x', { command: 'sh', inheritEnv: 'no' }], TypeError, /spec\.inheritEnv/],
    [['x', { command: 'sh', input: 5 }], TypeError, /spec\.input/],
    [['x', { command: 'sh', input: {} }], TypeError, /spec\.input/],
    [['x', { command: 'sh', progressPattern: 'lines' }], TypeError, /spec\.progressPattern/],
    [['x', { command: 'sh', progressPattern: 5 }], TypeError, /spec\.progressPattern/],
    [['x', { command: 'sh', progressPattern: /\d+%/ }], TypeError, /spec\.progressPattern must have a capture group/],
    [['x', { command: 'sh', progressPattern: /(?:\d+)%/ }], TypeError, /spec\.progressPattern must have a capture group/],
    [['x', { command: 'sh', maxOutputBytes: -1 }], RangeError, /spec\.maxOutputBytes/],
    [['x', { command: 'sh', maxOutputBytes: 1.5 }], RangeError, /spec\.maxOutputBytes/],
    [['x', { command: 'sh', maxOutputBytes: '1mb' }], TypeError, /spec\.maxOutputBytes/],
    [['x', { command: 'sh', killSignal: 'SIGNOPE' }], RangeError, /spec\.killSignal/],
    [['x', { command: 'sh', killSignal: 'sigterm' }], RangeError, /spec\.killSignal/],
    [['x', { command: 'sh', killSignal: 9999 }], RangeError, /spec\.killSignal/],
    [['x', { command: 'sh', killSignal: {} }], TypeError, /spec\.killSignal/],
    [['x', { command: 'sh', killGraceMs: -5 }], RangeError, /spec\.killGraceMs/],
    [['x', { command: 'sh', killGraceMs: 'soon' }], TypeError, /spec\.killGraceMs/],
    [['existing', { command: 'sh', args: [1] }], TypeError, /spec\.args\[0\]/],
  ];
  for (const [args, Cls, re] of cases) {
    let thrown;
    try {
      bg.registerCommand(...args);
    } catch (err) {
      thrown = err;
    }
    const label = `registerCommand(${args.map((a) => String(JSON.stringify(a))).join(', ')})`;
    assert.ok(thrown instanceof Cls, `${label} must throw a ${Cls.name}, got ${thrown}`);
    assert.equal(thrown.code, 'ERR_INVALID_ARG', label);
    assert.match(thrown.message, re, label);
  }
  assert.deepEqual(bg.getStatus().agents, ['existing'], 'nothing registered by a failed call');
  // Accepted: every field, progressPattern both ways, signal by number, 0 caps and graces.
  bg.registerCommand('full', {
    command: 'sh',
    args: [],
    cwd: '/',
    env: { A: 'x', B: null, C: undefined },
    inheritEnv: false,
    input: new Uint8Array(1),
    progressPattern: /(\d+)/,
    maxOutputBytes: 0,
    killSignal: osConstants.signals.SIGINT,
    killGraceMs: 0,
  });
  bg.registerCommand('json', { command: 'sh', progressPattern: 'json-lines', killSignal: 'SIGKILL' });
  bg.registerCommand('fn', () => ({}));
  assert.deepEqual(bg.getStatus().agents.sort(), ['existing', 'fn', 'full', 'json']);
});

// ----- getActiveExecutions, command_processes, the monitor ---------------------------------

test('getActiveExecutions(): running commands have pid, cpuPercent, rssMb (function agents do not); getStatus().command_processes', async (t) => {
  const g = gates(t);
  const bg = create({ maxConcurrentAgents: 4 });
  const wait = `const fs = require('fs'); const go = ${JSON.stringify(g.path('go'))};`;
  bg.registerCommand('idle', {
    command: NODE,
    args: ['-e', `${wait} console.log('idle ' + process.pid); const t = setInterval(() => fs.existsSync(go) && clearInterval(t), 20);`],
  });
  bg.registerCommand('busy', {
    command: NODE,
    args: ['-e', `${wait} console.log('busy ' + process.pid); let n = 0; while (!(++n % 100000 === 0 && fs.existsSync(go)));`],
  });
  const fnGate = gate();
  bg.registerAgent('fn', () => fnGate.promise);
  const out = outputOf(bg);
  assert.equal(bg.getStatus().command_processes, 0);
  const runs = ['idle', 'busy', 'fn'].map((a) => bg.execute(a, 't'));
  await waitUntil(() => out.pid('idle') && out.pid('busy'), 'both commands running', { timeoutMs: 8000 });
  assert.equal(bg.getStatus().command_processes, 2);
  bg.getActiveExecutions(); // CPU is measured from one query to the next
  await sleep(400);
  const active = bg.getActiveExecutions();
  assert.equal(active.length, 3);
  const by = Object.fromEntries(active.map((e) => [e.agent, e]));
  for (const name of ['idle', 'busy']) {
    const e = by[name];
    assert.equal(e.pid, out.pid(name), `${name}: pid is the command's`);
    assert.equal(typeof e.cpuPercent, 'number', `${name}: cpuPercent`);
    assert.ok(e.cpuPercent >= 0, `${name}: cpuPercent ${e.cpuPercent}`);
    assert.equal(typeof e.rssMb, 'number', `${name}: rssMb`);
    assert.ok(e.rssMb > 5 && e.rssMb < 300, `${name}: rssMb ${e.rssMb} (a small node process)`);
  }
  assert.ok(by.busy.cpuPercent > 25, `a busy loop uses CPU: ${by.busy.cpuPercent} %`);
  assert.ok(by.idle.cpuPercent < 20, `an idle process does not: ${by.idle.cpuPercent} %`);
  assert.ok(by.busy.cpuPercent <= 110, `percent of one core: ${by.busy.cpuPercent}`);
  for (const key of ['pid', 'cpuPercent', 'rssMb']) assert.equal(key in by.fn, false, `function agent has no ${key}`);
  g.open('go');
  fnGate.open('fn done');
  const [idle, busy, fn] = await Promise.all(runs);
  assert.equal(idle.exitCode, 0);
  assert.equal(busy.exitCode, 0);
  assert.equal(fn, 'fn done');
  assert.equal(bg.getStatus().command_processes, 0);
});

test('the resource monitor memory includes a command holding ~200 MB (and its rssMb counts its tree)', async (t) => {
  const g = gates(t);
  const bg = create();
  const holder =
    `const fs = require('fs'); const b = Buffer.alloc(200 * 1024 * 1024); b.fill(7);` +
    `fs.writeFileSync(${JSON.stringify(g.path('ready'))}, '');` +
    `const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(g.path('go'))})) { clearInterval(t); process.exitCode = b[4242] === 7 ? 0 : 1; } }, 10);`;
  // The holder is a grandchild: sh runs node (not exec), so the tree matters.
  bg.registerCommand('hold', { command: 'sh', args: ['-c', '"$0" -e "$1"; echo "held $?"', NODE, holder] });
  const base = bg.resourceMonitor.check().memory;
  const run = bg.execute('hold', 't');
  await g.waitFor('ready', 10000);
  const withCommand = bg.resourceMonitor.check().memory;
  const delta = withCommand - base;
  assert.ok(delta >= 170, `memory rose by ${delta.toFixed(1)} MB (base ${base}, with the command ${withCommand})`);
  assert.ok(delta <= 500, `memory rose by ${delta.toFixed(1)} MB: counted more than once?`);
  const viaStatus = bg.getStatus().resources.memory - base;
  assert.ok(viaStatus >= 170 && viaStatus <= 500, `getStatus().resources.memory rose by ${viaStatus.toFixed(1)} MB`);
  const [entry] = bg.getActiveExecutions();
  assert.ok(entry.rssMb >= 170 && entry.rssMb <= 500, `rssMb ${entry.rssMb} counts the grandchild holding 200 MB`);
  g.open('go');
  const r = await run;
  assert.equal(r.stdout, 'held 0\n');
  const after = bg.resourceMonitor.check().memory;
  assert.ok(after - base < 60, `memory back near the base once the command ended (base ${base}, after ${after})`);
});

test('memory throttling sees what a command holds: ~200 MB in a command throttles the queue, its end resumes it', async (t) => {
  const g = gates(t);
  const base = new ResourceMonitor().check().memory;
  // maxCpuPercent 100: only memory can trip here, however busy the shared machine is.
  const bg = create({ maxConcurrentAgents: 3, minConcurrentAgents: 0, monitorIntervalMs: 50, maxMemoryMb: Math.round(base + 120), maxCpuPercent: 100, throttleIfExceeded: true });
  bg.registerCommand('hold', {
    command: NODE,
    args: [
      '-e',
      `const fs = require('fs'); const b = Buffer.alloc(200 * 1024 * 1024); b.fill(7);` +
        `fs.writeFileSync(${JSON.stringify(g.path('ready'))}, '');` +
        `const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(g.path('go'))})) { clearInterval(t); process.exitCode = b[4242] === 7 ? 0 : 1; } }, 10);`,
    ],
  });
  let worked = 0;
  bg.registerAgent('work', () => {
    worked++;
    return 'ok';
  });
  const throttled = [];
  const resumed = [];
  bg.on('queue-throttled', (e) => throttled.push(e));
  bg.on('queue-resumed', (e) => resumed.push(e));
  await bg.initialize();
  const hold = bg.execute('hold', 't');
  await g.waitFor('ready', 10000);
  await waitUntil(() => bg.getQueueStatus().throttled, 'the queue to be throttled by the command memory', { timeoutMs: 3000 });
  assert.ok(throttled.length >= 1 && throttled[0].reason.includes('memory'), JSON.stringify(throttled));
  const work = bg.execute('work', 'w');
  await sleep(200);
  assert.equal(worked, 0, 'nothing starts while the command holds the memory');
  g.open('go');
  assert.equal((await hold).exitCode, 0);
  assert.equal(await work, 'ok');
  assert.ok(resumed.length >= 1, 'queue-resumed once the command ended');
});

// ----- command-output ----------------------------------------------------------------------

test("'command-output': every line of both streams, in order, with executionId and agent; LF, CR LF, lone CR, unterminated last line", async () => {
  const bg = create();
  bg.registerCommand('lines', {
    command: 'sh',
    args: ['-c', 'printf "a\\r\\nb\\n\\nc\\n"; printf "e1\\ne2" >&2; printf "bar 1\\rbar 2\\rlast"'],
  });
  bg.registerCommand('other', { command: 'sh', args: ['-c', 'echo other'] });
  const out = outputOf(bg);
  const a = await bg.fireAndForget('lines', 't');
  const b = await bg.fireAndForget('other', 't');
  await bg.onIdle();
  const mine = out.events.filter((e) => e.executionId === a.executionId);
  for (const e of out.events) assert.deepEqual(Object.keys(e).sort(), ['agent', 'executionId', 'line', 'stream']);
  assert.ok(mine.every((e) => e.agent === 'lines'));
  assert.deepEqual(
    mine.filter((e) => e.stream === 'stdout').map((e) => e.line),
    ['a', 'b', '', 'c', 'bar 1', 'bar 2', 'last'],
  );
  assert.deepEqual(
    mine.filter((e) => e.stream === 'stderr').map((e) => e.line),
    ['e1', 'e2'],
  );
  assert.deepEqual(
    out.events.filter((e) => e.executionId === b.executionId).map((e) => [e.agent, e.stream, e.line]),
    [['other', 'stdout', 'other']],
  );
  // The result keeps the raw bytes.
  assert.equal(bg.getExecutionStatus(a.executionId).result.stdout, 'a\r\nb\n\nc\nbar 1\rbar 2\rlast');
});

test("'command-output' only while someone listens: a listener added mid-run gets the later lines, none after it is removed", async (t) => {
  const g = gates(t);
  const bg = create();
  bg.registerCommand(
    'steps',
    stepper(g.dir, [
      ['out', 'before'],
      ['mark', 'm1'],
      ['gate', 'g1'],
      ['out', 'during'],
      ['err', 'during-err'],
      ['mark', 'm2'],
      ['gate', 'g2'],
      ['out', 'after'],
    ]),
  );
  const run = bg.execute('steps', 't');
  await g.waitFor('m1', 8000);
  await sleep(150); // "before" is read (and not forwarded: nobody listens)
  const seen = [];
  const listener = (e) => seen.push([e.stream, e.line]);
  bg.on('command-output', listener);
  g.open('g1');
  await g.waitFor('m2');
  await waitUntil(() => seen.length >= 2, 'the two lines written while listening');
  bg.off('command-output', listener);
  await sleep(20);
  g.open('g2');
  const r = await run;
  assert.equal(r.stdout, 'before\nduring\nafter\n');
  assert.equal(r.stderr, 'during-err\n');
  assert.deepEqual(
    seen.sort(),
    [
      ['stderr', 'during-err'],
      ['stdout', 'during'],
    ],
  );
});

test("'command-output': a listener added in the middle of a line never gets the line's tail as a line", async (t) => {
  const g = gates(t);
  const bg = create();
  // "hel" now, "lo world\nnext\n" once the listener is there.
  const src =
    `const fs = require('fs'); process.stdout.write('first\\nhel'); fs.writeFileSync(${JSON.stringify(g.path('m1'))}, '');` +
    `const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(g.path('g1'))})) { clearInterval(t); process.stdout.write('lo world\\nnext\\n'); } }, 10);`;
  bg.registerCommand('split', { command: NODE, args: ['-e', src] });
  const run = bg.execute('split', 't');
  await g.waitFor('m1', 8000);
  await sleep(150); // "first\nhel" is read while nobody listens
  const seen = [];
  bg.on('command-output', (e) => seen.push(e.line));
  await sleep(20);
  g.open('g1');
  const r = await run;
  assert.equal(r.stdout, 'first\nhello world\nnext\n');
  // The whole line, or nothing of it; never a fragment presented as a line. (All three lines,
  // should the reader have been slower than the sleep above.)
  const expected = [['hello world', 'next'], ['next'], ['first', 'hello world', 'next']];
  assert.ok(
    expected.some((e) => JSON.stringify(e) === JSON.stringify(seen)),
    `the listener got ${JSON.stringify(seen)}, expected ${expected.map((e) => JSON.stringify(e)).join(' or ')}`,
  );
});

test("'command-output': lines longer than 64 KiB are cut for the event (stdout keeps them), the next line is intact", async () => {
  const bg = create();
  bg.registerCommand('long', {
    command: NODE,
    args: ['-e', "process.stdout.write('a'.repeat(100 * 1024) + '\\nafter\\n' + 'b'.repeat(70000) + '\\rend');"],
  });
  const seen = [];
  bg.on('command-output', (e) => seen.push(e.line));
  const r = await bg.execute('long', 't');
  assert.equal(r.stdoutBytes, 100 * 1024 + 7 + 70000 + 4);
  assert.equal(r.stdout.length, r.stdoutBytes, 'stdout is not cut (under 1 MiB)');
  assert.deepEqual(
    seen.map((l) => [l.length, l[0]]),
    [
      [64 * 1024, 'a'],
      [5, 'a'],
      [64 * 1024, 'b'],
      [3, 'e'],
    ],
  );
  assert.equal(seen[1], 'after');
});

test("'command-output' forwards every line even past maxOutputBytes (5000 lines, 100 bytes kept)", async () => {
  const bg = create();
  bg.registerCommand('many', {
    command: NODE,
    args: ['-e', "let s = ''; for (let i = 0; i < 5000; i++) s += 'line ' + i + '\\n'; process.stdout.write(s);"],
    maxOutputBytes: 100,
  });
  const lines = [];
  bg.on('command-output', (e) => lines.push(e.line));
  const r = await bg.execute('many', 't');
  assert.equal(r.stdout.length, 100);
  assert.equal(r.truncated, true);
  assert.equal(lines.length, 5000);
  assert.ok(
    lines.every((l, i) => l === `line ${i}`),
    'in order, none lost',
  );
});

// ----- concurrency -------------------------------------------------------------------------

test('50 commands under maxConcurrentAgents 8: all complete, never more than 8 running (events and live pids)', async () => {
  const bg = create({ maxConcurrentAgents: 8 });
  // exec: the pid that getActiveExecutions() reports is the process that lives 0.2 s.
  bg.registerCommand('nap', { command: 'sh', args: ['-c', 'echo $$; exec sleep 0.2'] });
  let running = 0;
  let maxRunning = 0;
  bg.on('execution-started', () => {
    running++;
    maxRunning = Math.max(maxRunning, running);
  });
  for (const e of ['execution-completed', 'execution-failed', 'execution-cancelled']) bg.on(e, () => running--);
  const pids = new Set();
  let maxAlive = 0;
  let maxProcesses = 0;
  const sample = () => {
    for (const e of bg.getActiveExecutions()) if (e.pid !== undefined) pids.add(e.pid);
    let n = 0;
    for (const p of pids) if (alive(p)) n++;
    maxAlive = Math.max(maxAlive, n);
    maxProcesses = Math.max(maxProcesses, bg.getStatus().command_processes);
  };
  const sampler = setInterval(sample, 5);
  const t0 = performance.now();
  let results;
  try {
    results = await Promise.all(Array.from({ length: 50 }, (_, i) => bg.execute('nap', String(i))));
  } finally {
    clearInterval(sampler);
  }
  const elapsed = performance.now() - t0;
  assert.equal(results.length, 50);
  assert.ok(results.every((r) => r.exitCode === 0));
  const resultPids = new Set(results.map((r) => Number(r.stdout.trim())));
  assert.equal(resultPids.size, 50, '50 distinct processes');
  assert.equal(maxRunning, 8, 'eight at once, not more');
  assert.ok(maxAlive <= 8, `${maxAlive} command processes alive at once`);
  assert.ok(maxAlive >= 2, `the sampler saw them running (${maxAlive})`);
  assert.ok(maxProcesses <= 8, `command_processes reached ${maxProcesses}`);
  assert.ok(pids.size >= 10, `sampled ${pids.size} pids`);
  for (const p of pids) assert.ok(resultPids.has(p), `pid ${p} from getActiveExecutions() is a command's own`);
  // 7 waves of 0.2 s at the very least.
  assert.ok(elapsed >= 7 * 200 - 50, `50 x 0.2 s by 8 took ${elapsed} ms`);
  for (const p of resultPids) assert.equal(alive(p), false, `pid ${p} gone`);
  assert.equal(bg.getStatus().completed, 50);
  assert.equal(bg.getStatus().command_processes, 0);
});

test("'command-output' after removeAllListeners(): a listener added mid-run still gets the lines; no internal listeners show", async () => {
  const bg = create();
  bg.registerCommand('talk', { command: 'sh', args: ['-c', 'sleep 0.3; echo one; sleep 0.3; echo two'] });
  bg.removeAllListeners();
  const lines = [];
  const run = bg.execute('talk', 't');
  await sleep(100);
  bg.on('command-output', (e) => lines.push(e.line));
  await run;
  assert.deepEqual(lines, ['one', 'two']);
  assert.deepEqual(bg.eventNames(), ['command-output']);
});

test('env: undefined values are "not given" (they do not remove an inherited variable); null removes', async (t) => {
  const bg = create();
  process.env.BMAD_BG_KEEP = 'kept';
  process.env.BMAD_BG_DROP = 'dropped';
  t.after(() => {
    delete process.env.BMAD_BG_KEEP;
    delete process.env.BMAD_BG_DROP;
  });
  bg.registerCommand('env', {
    command: 'sh',
    args: ['-c', 'echo "${BMAD_BG_KEEP-unset} ${BMAD_BG_DROP-unset}"'],
    env: { BMAD_BG_KEEP: undefined, BMAD_BG_DROP: null },
  });
  assert.equal((await bg.execute('env', 't')).stdout, 'kept unset\n');
});

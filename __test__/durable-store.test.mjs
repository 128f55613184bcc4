// The durable store in one process: opting in, what is stored (and what is refused), claim
// order, keys, retries, progress, shutdown, retention, bad stores and bad config.
// The store is read only through the executor's API (Node 20 has no node:sqlite).
import assert from 'node:assert/strict';
import { test as nodeTest } from 'node:test';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync, copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import BackgroundExecutor from '../index.mjs';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, tempDir, sleep, gate, waitUntil, settleOf, within } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach({ timeoutMs: 50 });

const FIXTURES = new URL('./fixtures/', import.meta.url);

/** Runs `__test__/durable-fx/<script>` in a child node; resolves with `{ code, signal, stdout, stderr }`. */
function runFx(script, args, { timeoutMs = 10000 } = {}) {
  const file = fileURLToPath(new URL(`./durable-fx/${script}`, import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? null) : 0, signal: err ? err.signal : null, stdout, stderr });
    });
  });
}

/** A store URL in a new temporary directory (removed after the test), and its file path. */
function newStore(t, name = 'executions.db') {
  const dir = tempDir(t, 'bmad-durable-');
  const file = join(dir, name);
  return { dir, file, url: `sqlite:${file}` };
}

/** An executor on `url` that never throttles (the test machine may be busy). */
const make = (url, config = {}) => create({ store: url, ...config });

/** Asserts `p` rejects with an error of class `Ctor` and code `code`; returns the error. */
async function rejectsWith(p, Ctor, code) {
  const r = await settleOf(p);
  assert.equal(r.ok, false, `expected a rejection with ${code}, got ${JSON.stringify(r.value)}`);
  assert.ok(r.value instanceof Ctor, `expected a ${Ctor.name}, got ${r.value && r.value.name}: ${r.value && r.value.message}`);
  assert.equal(r.value.code, code, r.value.message);
  return r.value;
}

/** An agent that resolves when its signal aborts, recording when. */
function abortable(log) {
  return (task, options, ctx) =>
    new Promise((resolve) => {
      log.push({ task, attempt: ctx.attempt, id: ctx.executionId, startedAt: Date.now() });
      ctx.signal.addEventListener('abort', () => {
        log.at(-1).abortedAt = Date.now();
        resolve('late');
      });
    });
}

// ----- opting in ---------------------------------------------------------------------------

test('store: a relative path is resolved against the working directory, parent folders created, WAL mode', async (t) => {
  const dir = tempDir(t, 'bmad-durable-cwd-');
  const before = process.cwd();
  let bg;
  process.chdir(dir);
  try {
    bg = make('sqlite:.bmad/nested/executions.db', { agents: { echo: (task) => `echo ${task}` } });
  } finally {
    process.chdir(before);
  }
  await bg.initialize();
  const file = join(dir, '.bmad', 'nested', 'executions.db');
  assert.ok(existsSync(file), 'the database file is created under the working directory of the constructor');
  assert.ok(!existsSync(join(before, '.bmad', 'nested')), 'nothing is created under the test runner cwd');
  assert.equal(await bg.execute('echo', 'a'), 'echo a');
  // WAL: the -wal file exists while the store is open, and the header says so (bytes 18, 19 = 2).
  assert.ok(existsSync(`${file}-wal`), 'the -wal file exists while the store is open');
  const header = readFileSync(file).subarray(0, 20);
  assert.equal(header.subarray(0, 16).toString('latin1'), 'SQLite format 3\u0000');
  assert.deepEqual([header[18], header[19]], [2, 2], 'the file is in WAL mode');
  assert.equal(await bg.checkStore(), 'ok');
  await bg.shutdown();
});

test('store: the sqlite:// form is accepted too', async (t) => {
  const { file } = newStore(t);
  const bg = make(`sqlite://${file}`, { agents: { echo: (task) => task } });
  assert.equal(await bg.execute('echo', 'x'), 'x');
  assert.ok(existsSync(file));
});

test('with a store every execution is durable: ids exec-d<N>, readable by fetchExecutionStatus', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { echo: (task) => ({ got: task }) } });
  const queued = [];
  bg.on('execution-queued', (e) => queued.push(e));
  const a = await bg.fireAndForget('echo', 'one');
  const b = await bg.executeWatched('echo', 'two');
  assert.deepEqual(a, { executionId: 'exec-d1', mode: 'fire-and-forget', status: 'queued' });
  assert.deepEqual(b, { executionId: 'exec-d2', mode: 'watched', status: 'queued' });
  const final = await bg.waitFor('exec-d1');
  assert.equal(final.status, 'completed');
  assert.deepEqual(final.result, { got: 'one' });
  await bg.waitFor('exec-d2');
  const s = await bg.fetchExecutionStatus('exec-d2');
  assert.equal(s.found, true);
  assert.equal(s.executionId, 'exec-d2');
  assert.equal(s.agent, 'echo');
  assert.equal(s.task, 'two');
  assert.equal(s.mode, 'watched');
  assert.equal(s.status, 'completed');
  assert.equal(s.attempt, 1);
  assert.equal(s.progress, 100);
  assert.deepEqual(s.result, { got: 'two' });
  assert.equal(s.error, null);
  assert.equal(s.durable, true);
  assert.equal(typeof s.startedAt, 'number');
  assert.ok(s.finishedAt >= s.startedAt);
  assert.deepEqual(
    queued.map((e) => [e.executionId, e.durable]),
    [
      ['exec-d1', true],
      ['exec-d2', true],
    ],
  );
});

test('durable: false runs in memory: an exec-<N> id, nothing written to the store', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { echo: (task) => `r:${task}` } });
  await bg.initialize();
  const r = await bg.fireAndForget('echo', 'mem', { durable: false });
  assert.match(r.executionId, /^exec-[1-9][0-9]*$/);
  assert.equal(await bg.execute('echo', 'mem2', { durable: false }), 'r:mem2');
  const local = await bg.waitFor(r.executionId);
  assert.equal(local.status, 'completed');
  assert.equal(local.result, 'r:mem');
  // What fetch says of the in-memory id is what getExecutionStatus says.
  const fetched = await bg.fetchExecutionStatus(r.executionId);
  assert.equal(fetched.found, true);
  assert.equal(fetched.result, 'r:mem');
  assert.notEqual(fetched.durable, true);
  // Nothing was written: the store's first row is still to come.
  assert.deepEqual(await bg.fetchExecutionStatus('exec-d1'), { found: false });
  const d = await bg.fireAndForget('echo', 'stored');
  assert.equal(d.executionId, 'exec-d1');
  assert.equal((await bg.waitFor('exec-d1')).result, 'r:stored');
});

// ----- what is stored, what is refused ----------------------------------------------------

class Point {
  constructor() {
    this.x = 1;
  }
}
const cyclic = () => {
  const o = { a: 1 };
  o.self = o;
  return o;
};

// [what, options, message]
const REFUSED_OPTIONS = [
  ['a function', { onDone() {} }, 'options.onDone is a function'],
  ['a symbol', { s: Symbol('s') }, 'options.s is a symbol (Symbol(s))'],
  ['a BigInt', { meta: { n: 10n } }, 'options.meta.n is a BigInt'],
  ['a cycle', { graph: cyclic() }, 'options.graph.self is a cycle (it refers back to options.graph)'],
  ['undefined in an array', { list: [1, undefined] }, 'options.list[1] is undefined (JSON turns it into null)'],
  ['a class instance', { p: new Point() }, 'options.p is a Point (a class instance); pass a plain object'],
  ['a Date', { when: new Date(0) }, 'options.when is a Date (a class instance); pass date.toISOString()'],
];

test('options that JSON would drop or change are refused at submission with ERR_NOT_SERIALIZABLE naming the path; nothing is written', async (t) => {
  const { url } = newStore(t);
  let calls = 0;
  const bg = make(url, {
    agents: {
      echo: () => {
        calls++;
        return 'ran';
      },
    },
  });
  await bg.initialize();
  const queued = [];
  bg.on('execution-queued', (e) => queued.push(e));
  for (const [what, options, message] of REFUSED_OPTIONS) {
    for (const submit of [
      () => bg.execute('echo', 't', options),
      () => bg.fireAndForget('echo', 't', options),
      () => bg.executeWithCallback('echo', 't', () => {}, options),
      () => bg.executeWatched('echo', 't', options),
    ]) {
      const err = await rejectsWith(submit(), TypeError, 'ERR_NOT_SERIALIZABLE');
      assert.equal(err.message, message, what);
    }
  }
  await sleep(50);
  assert.equal(calls, 0, 'no refused submission ran');
  assert.equal(queued.length, 0, 'no refused submission was queued');
  assert.deepEqual(await bg.fetchExecutionStatus('exec-d1'), { found: false });
  // The next submission is the store's first row.
  const ok = await bg.fireAndForget('echo', 'fine', { meta: { n: 1, list: [1, null], when: new Date(0).toISOString() } });
  assert.equal(ok.executionId, 'exec-d1');
  assert.equal((await bg.waitFor('exec-d1')).result, 'ran');
});

test('a result that is not a JSON value fails the execution with ERR_NOT_SERIALIZABLE, not retried', async (t) => {
  const { url } = newStore(t);
  let calls = 0;
  const bg = make(url, {
    retries: 3,
    retryDelayMs: 10,
    agents: {
      big: () => {
        calls++;
        return { total: 10n };
      },
    },
  });
  const retries = [];
  const failed = [];
  bg.on('execution-retry', (e) => retries.push(e));
  bg.on('execution-failed', (e) => failed.push(e));
  const err = await rejectsWith(bg.execute('big', 't'), TypeError, 'ERR_NOT_SERIALIZABLE');
  assert.equal(err.message, 'result.total is a BigInt');
  await sleep(100);
  assert.equal(calls, 1, 'not retried');
  assert.equal(retries.length, 0);
  assert.equal(failed.length, 1);
  assert.equal(failed[0].code, 'ERR_NOT_SERIALIZABLE');
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'failed');
  assert.equal(s.attempt, 1);
  assert.equal(s.result, null);
  assert.equal(s.error, 'result.total is a BigInt');
  assert.equal(s.errorObject.code, 'ERR_NOT_SERIALIZABLE');
});

test('a result of undefined is stored as null; execute() resolves with undefined', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { nothing: () => undefined } });
  const r = await settleOf(bg.execute('nothing', 't'));
  assert.deepEqual(r, { ok: true, value: undefined });
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'completed');
  assert.equal(s.result, null);
});

test('in the submitting process, execute() resolves with the agent\'s own value and the agent sees the caller\'s options object', async (t) => {
  const { url } = newStore(t);
  const own = { list: [1, 2], nested: { a: 'b' } };
  let seenOptions;
  const bg = make(url, {
    agents: {
      mine: (task, options) => {
        seenOptions = options;
        return own;
      },
    },
  });
  const options = { priority: 'high', meta: { x: 1 } };
  const value = await bg.execute('mine', 't', options);
  assert.equal(value, own, 'the same object, not a JSON copy');
  assert.equal(seenOptions, options, 'the caller\'s own options object');
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.deepEqual(s.result, own, 'stored as JSON');
  assert.notEqual(s.result, own);
  assert.equal(s.priority, 'high');
});

// ----- claims --------------------------------------------------------------------------------

test('claims follow priority, then submission order (FIFO), one at a time with maxConcurrentAgents 1', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { maxConcurrentAgents: 1 });
  await bg.initialize();
  const plan = [
    ['low-1', 'low'],
    ['high-1', 'high'],
    ['bg-1', 'background'],
    ['critical-1', 'critical'],
    ['high-2', 'high'],
    ['low-2', 'low'],
    ['critical-2', 'critical'],
    ['medium-1', 'medium'],
  ];
  const ids = [];
  for (const [task, priority] of plan) ids.push((await bg.fireAndForget('rec', task, { priority })).executionId);
  for (const id of ids) assert.equal((await bg.fetchExecutionStatus(id)).status, 'queued');
  const started = [];
  let running = 0;
  let maxRunning = 0;
  bg.registerAgent('rec', async (task) => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    started.push(task);
    await sleep(5);
    running--;
    return task;
  });
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.status),
    plan.map(() => 'completed'),
  );
  assert.deepEqual(started, ['critical-1', 'critical-2', 'high-1', 'high-2', 'medium-1', 'low-1', 'low-2', 'bg-1']);
  assert.equal(maxRunning, 1);
});

test('an executor claims up to its free slots; the rest stay queued in the store', async (t) => {
  const { url } = newStore(t);
  const g = gate();
  const started = [];
  const bg = make(url, {
    maxConcurrentAgents: 2,
    agents: {
      hold: async (task) => {
        started.push(task);
        await g.promise;
        return task;
      },
    },
  });
  await bg.initialize();
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await bg.fireAndForget('hold', `t${i}`)).executionId);
  await waitUntil(() => started.length === 2, 'two started');
  await sleep(150);
  assert.deepEqual(started, ['t0', 't1']);
  const statuses = [];
  for (const id of ids) statuses.push((await bg.fetchExecutionStatus(id)).status);
  assert.deepEqual(statuses, ['running', 'running', 'queued', 'queued', 'queued']);
  g.open();
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.result),
    ['t0', 't1', 't2', 't3', 't4'],
  );
});

test('a throttled executor claims only minConcurrentAgents at a time', async (t) => {
  const { url } = newStore(t);
  let running = 0;
  let maxRunning = 0;
  const bg = create({
    store: url,
    maxConcurrentAgents: 4,
    minConcurrentAgents: 1,
    maxMemoryMb: 1, // always exceeded: throttled from the first sample
    monitorIntervalMs: 20,
    throttleIfExceeded: true,
    agents: {
      work: async (task) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await sleep(40);
        running--;
        return task;
      },
    },
  });
  const throttled = new Promise((resolve) => bg.once('queue-throttled', resolve));
  await bg.initialize();
  await throttled;
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push((await bg.fireAndForget('work', `t${i}`)).executionId);
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.status),
    ['completed', 'completed', 'completed', 'completed'],
  );
  assert.equal(maxRunning, 1);
});

test('a submission for an agent not registered here is accepted and stays queued until one is registered', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { other: () => 'other' } });
  const events = [];
  bg.on('execution-started', (e) => events.push(e));
  const p = bg.execute('later', 'task-1');
  const p2 = bg.fireAndForget('later', 'task-2');
  const { executionId } = await p2;
  assert.equal(executionId, 'exec-d2');
  await sleep(300);
  const s1 = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s1.status, 'queued');
  assert.equal(s1.agent, 'later');
  assert.equal(s1.task, 'task-1');
  assert.equal((await bg.fetchExecutionStatus('exec-d2')).status, 'queued');
  assert.equal(events.length, 0, 'nothing started');
  bg.registerAgent('later', (task, options, ctx) => `done ${task} ${ctx.executionId}`);
  assert.equal(await p, 'done task-1 exec-d1');
  const f2 = await bg.waitFor('exec-d2');
  assert.equal(f2.status, 'completed');
  assert.equal(f2.result, 'done task-2 exec-d2');
});

test('a defaultAgent claims executions for any agent name', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { defaultAgent: (agent, task, options, ctx) => `default ran ${agent}:${task} as ${ctx.executionId}` });
  assert.equal(await bg.execute('anything', 'x'), 'default ran anything:x as exec-d1');
  assert.equal(await bg.execute('whatever', 'y'), 'default ran whatever:y as exec-d2');
});

test('a submission whose signal is already aborted is cancelled at once and never stored: no executor runs it', async (t) => {
  const { url } = newStore(t);
  let calls = 0;
  const runner = make(url, { agents: { work: () => ++calls } });
  await runner.initialize();
  const submitter = make(url); // has no agent: the store would have taken it
  const cancelled = [];
  submitter.on('execution-cancelled', (e) => cancelled.push(e.executionId));
  const gone = AbortSignal.abort('changed my mind');
  const ff = await submitter.fireAndForget('work', 'a', { signal: gone });
  assert.equal(ff.status, 'cancelled');
  assert.match(ff.executionId, /^exec-\d+$/, 'an in-memory id');
  await assert.rejects(submitter.execute('work', 'b', { signal: gone, durable: true, key: 'k' }), (err) => err.code === 'ERR_EXECUTION_CANCELLED' && err.cause === 'changed my mind');
  assert.equal((await submitter.waitFor(ff.executionId)).status, 'cancelled');
  assert.equal(cancelled.length, 2);
  // Nothing reached the store: the next stored submission is its first row, and it runs.
  const { executionId } = await submitter.fireAndForget('work', 'c');
  assert.equal(executionId, 'exec-d1');
  assert.equal((await submitter.waitFor(executionId)).status, 'completed');
  await sleep(100);
  assert.equal(calls, 1, 'only the live submission ran');
});

// ----- keys ------------------------------------------------------------------------------

test('options.key: while queued or running a duplicate gets the same id and outcome; after the end a new one', async (t) => {
  const { url } = newStore(t);
  const g = gate();
  let calls = 0;
  const bg = make(url);
  // Queued (agent not registered yet): the duplicate gets the same id.
  const q1 = await bg.fireAndForget('keyed', 'first', { key: 'k-1' });
  const q2 = await bg.fireAndForget('keyed', 'second', { key: 'k-1' });
  assert.equal(q2.executionId, q1.executionId);
  const other = await bg.fireAndForget('keyed', 'third', { key: 'k-2' });
  assert.notEqual(other.executionId, q1.executionId);
  bg.registerAgent('keyed', async (task) => {
    calls++;
    await g.promise;
    return { task };
  });
  await waitUntil(() => calls === 2, 'both keyed executions running');
  // Running: two execute() with the key share the execution and its outcome.
  const p1 = bg.execute('keyed', 'dup', { key: 'k-1' });
  const p2 = bg.execute('keyed', 'dup2', { key: 'k-1' });
  const withId = await bg.fireAndForget('keyed', 'dup3', { key: 'k-1' });
  assert.equal(withId.executionId, q1.executionId);
  await sleep(50);
  assert.equal(calls, 2, 'no new execution for a key that is running');
  g.open();
  const [r1, r2] = await Promise.all([p1, p2]);
  assert.deepEqual(r1, { task: 'first' });
  assert.deepEqual(r2, { task: 'first' });
  assert.equal((await bg.waitFor(other.executionId)).result.task, 'third');
  // Ended: the key is free again.
  const again = await bg.fireAndForget('keyed', 'fourth', { key: 'k-1' });
  assert.notEqual(again.executionId, q1.executionId);
  assert.notEqual(again.executionId, other.executionId);
  assert.equal((await bg.waitFor(again.executionId)).result.task, 'fourth');
  assert.equal(calls, 3);
  const s = await bg.fetchExecutionStatus(again.executionId);
  assert.equal(s.key, 'k-1');
});

test("options.key: a joining submission's own signal takes it out; the execution goes on for the others, here and in another executor", async (t) => {
  const { url } = newStore(t);
  const g = gate();
  let calls = 0;
  const agents = {
    keyed: async (task) => {
      calls++;
      await g.promise;
      return { task };
    },
  };
  const runner = make(url, { agents });
  const other = make(url); // submits only
  const first = runner.execute('keyed', 'first', { key: 'k-s' });
  await waitUntil(() => calls === 1, 'the first running');
  // Joiners: one here (whose record would run the execution had it come first), one in
  // another executor. One already aborted is cancelled in memory, never stored.
  const ac = new AbortController();
  const acOther = new AbortController();
  const here = runner.execute('keyed', 'joins', { key: 'k-s', signal: ac.signal });
  const there = other.execute('keyed', 'joins there', { key: 'k-s', signal: acOther.signal });
  const stays = other.execute('keyed', 'stays', { key: 'k-s' });
  const already = runner.execute('keyed', 'too late', { key: 'k-s', signal: AbortSignal.abort('gone') });
  await assert.rejects(already, (err) => err.code === 'ERR_EXECUTION_CANCELLED' && /^exec-\d+$/.test(err.executionId) && err.cause === 'gone');
  // Both joined (their ids answered) before they leave.
  assert.deepEqual((await runner.fireAndForget('keyed', 'x', { key: 'k-s' })).executionId, 'exec-d1');
  ac.abort('not needed');
  acOther.abort('not needed there');
  await assert.rejects(here, { code: 'ERR_EXECUTION_CANCELLED', cause: 'not needed' });
  await assert.rejects(there, { code: 'ERR_EXECUTION_CANCELLED', cause: 'not needed there' });
  await sleep(100);
  assert.equal((await runner.fetchExecutionStatus('exec-d1')).status, 'running', 'the execution goes on');
  g.open();
  assert.deepEqual(await first, { task: 'first' });
  assert.deepEqual(await stays, { task: 'first' });
  assert.equal((await other.fetchExecutionStatus('exec-d1')).status, 'completed');
  assert.equal(calls, 1);
});

test('options.key: an executor that joined a stored execution by its key and then claims it runs the stored task, not its own', async (t) => {
  const { url } = newStore(t);
  const submitter = make(url); // no agents: it never claims
  const first = submitter.execute('keyed', 'first', { key: 'k-j' });
  assert.equal((await submitter.fireAndForget('keyed', 'x', { key: 'k-j' })).executionId, 'exec-d1');
  const runner = make(url);
  const joined = runner.execute('keyed', 'joins', { key: 'k-j', priority: 'low' });
  assert.equal((await runner.fireAndForget('keyed', 'y', { key: 'k-j' })).executionId, 'exec-d1');
  // What this executor knows of it before it runs: the key, and no task of its own.
  const seen = [];
  runner.registerAgent('keyed', (task, options, ctx) => {
    seen.push([task, ctx.executionId]);
    return task.toUpperCase();
  });
  assert.equal(await joined, 'FIRST');
  assert.equal(await first, 'FIRST');
  assert.deepEqual(seen, [['first', 'exec-d1']]);
});

test("options.key: the first submission's own signal cancels the stored execution: those that joined get the cancellation", async (t) => {
  const { url } = newStore(t);
  const g = gate();
  let calls = 0;
  const bg = make(url, {
    agents: {
      keyed: async (task, options, ctx) => {
        calls++;
        await Promise.race([g.promise, new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))]);
        return { task };
      },
    },
  });
  const ac = new AbortController();
  const first = bg.execute('keyed', 'first', { key: 'k-f', signal: ac.signal });
  await waitUntil(() => calls === 1, 'the first running');
  const joined = bg.execute('keyed', 'joins', { key: 'k-f' });
  assert.equal((await bg.fireAndForget('keyed', 'x', { key: 'k-f' })).executionId, 'exec-d1');
  ac.abort('stop');
  await assert.rejects(first, { code: 'ERR_EXECUTION_CANCELLED' });
  await assert.rejects(joined, { code: 'ERR_EXECUTION_CANCELLED' });
  assert.equal((await bg.fetchExecutionStatus('exec-d1')).status, 'cancelled');
  g.open();
});

test('getExecutionStatus() of a stored execution submitted here: its key, its submission time, and startAfter while it waits; fetchExecutionStatus() the same', async (t) => {
  const { url } = newStore(t);
  const bg = make(url);
  const t0 = Date.now();
  const startAfter = t0 + 60_000;
  const { executionId } = await bg.fireAndForget('nobody', 'later', { key: 'k-st', startAfter });
  for (const s of [bg.getExecutionStatus(executionId), await bg.fetchExecutionStatus(executionId)]) {
    assert.equal(s.status, 'queued');
    assert.equal(s.key, 'k-st');
    assert.equal(s.startAfter, startAfter);
    // The store stamps it on its own thread, in fractional ms, a lock wait later at most.
    assert.ok(s.started >= t0 - 5 && s.started <= Date.now() + 100, `started ${s.started} is the submission time (${t0})`);
  }
  const now = await bg.fireAndForget('nobody', 'now');
  assert.equal(bg.getExecutionStatus(now.executionId).startAfter, undefined);
  assert.equal((await bg.fetchExecutionStatus(now.executionId)).startAfter, undefined);
});

// ----- retries -----------------------------------------------------------------------------

test('retries from config: ctx.attempt counts 1, 2, 3, execution-retry events, the store shows the last attempt', async (t) => {
  const { url } = newStore(t);
  const attempts = [];
  const bg = make(url, {
    retries: 2,
    retryDelayMs: 20,
    backoff: 'fixed',
    agents: {
      flaky: (task, options, ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt < 3) throw Object.assign(new Error(`boom ${ctx.attempt}`), { code: 'E_FLAKY' });
        return `ok at ${ctx.attempt}`;
      },
    },
  });
  const retries = [];
  bg.on('execution-retry', (e) => retries.push(e));
  assert.equal(await bg.execute('flaky', 't'), 'ok at 3');
  assert.deepEqual(attempts, [1, 2, 3]);
  assert.deepEqual(
    retries.map((e) => [e.executionId, e.attempt, e.error]),
    [
      ['exec-d1', 1, 'boom 1'],
      ['exec-d1', 2, 'boom 2'],
    ],
  );
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'completed');
  assert.equal(s.attempt, 3);
  assert.equal(s.maxAttempts, 3);
  assert.equal(s.result, 'ok at 3');
});

test('retries from options: an agent that always fails fails after 1 + retries attempts with its error', async (t) => {
  const { url } = newStore(t);
  const attempts = [];
  const bg = make(url, {
    agents: {
      broken: (task, options, ctx) => {
        attempts.push(ctx.attempt);
        throw Object.assign(new Error('always'), { code: 'E_ALWAYS' });
      },
    },
  });
  const err = await rejectsWith(bg.execute('broken', 't', { retries: 1, retryDelayMs: 10 }), Error, 'E_ALWAYS');
  assert.equal(err.message, 'always');
  assert.deepEqual(attempts, [1, 2]);
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'failed');
  assert.equal(s.attempt, 2);
  assert.equal(s.maxAttempts, 2);
  assert.equal(s.error, 'always');
  assert.equal(s.errorObject.code, 'E_ALWAYS');
});

test('a retry never starts beside an attempt whose agent ignored its timeout, in this executor or another', async (t) => {
  for (const mode of ['execute', 'watched']) {
    const { url } = newStore(t, `${mode}.db`);
    const log = [];
    let running = 0;
    let overlaps = 0;
    // Ignores its signal: runs 120 ms whatever its timeout says.
    const slow = async (task, options, ctx) => {
      if (running > 0) overlaps++;
      running++;
      const attempt = ctx.attempt;
      log.push(['start', attempt, performance.now()]);
      await sleep(120);
      log.push(['end', attempt, performance.now()]);
      running--;
      return 'late';
    };
    const a = make(url, { agents: { slow } });
    const b = make(url, { agents: { slow } });
    await Promise.all([a.initialize(), b.initialize()]);
    const options = { timeout: 20, retries: 2, retryDelayMs: 0 };
    const final =
      mode === 'execute'
        ? await settleOf(a.execute('slow', 't', options)).then((r) => r.value.code)
        : await a.executeWatched('slow', 't', options).then(({ executionId }) => a.waitFor(executionId)).then((s) => s.errorObject.code);
    assert.equal(final, 'ERR_EXECUTION_TIMEOUT', mode);
    await waitUntil(() => running === 0, 'the last agent to return');
    assert.equal(overlaps, 0, `${mode}: ${JSON.stringify(log)}`);
    assert.deepEqual(
      log.filter((e) => e[0] === 'start').map((e) => e[1]),
      [1, 2, 3],
      mode,
    );
  }
});

test('an agent that outlives its grace period does not settle the retry that followed it', async (t) => {
  const { url } = newStore(t);
  let calls = 0;
  const bg = make(url, {
    cancelGraceMs: 100,
    retries: 1,
    retryDelayMs: 0,
    agents: {
      // Call 1 times out at 300 ms and returns at 500 ms, after its grace period; call 2 runs then.
      late: () => {
        const n = ++calls;
        return sleep(n === 1 ? 500 : 250).then(() => `result of call ${n}`);
      },
    },
  });
  assert.equal(await bg.execute('late', 't', { timeout: 300 }), 'result of call 2');
  assert.equal(calls, 2);
});

test('with cancelGraceMs: 0 a timed-out attempt whose agent never settles is retried at once', async (t) => {
  const { url } = newStore(t);
  let calls = 0;
  const bg = make(url, { cancelGraceMs: 0, retries: 1, retryDelayMs: 0, agents: { hang: () => (calls++, new Promise(() => {})) } });
  const r = await within(settleOf(bg.execute('hang', 't', { timeout: 100 })), 5000);
  assert.notEqual(r, 'pending', 'both attempts time out within 5 s');
  assert.equal(r.value.code, 'ERR_EXECUTION_TIMEOUT');
  assert.equal(calls, 2);
});

test('retryIf is asked only before a retry the stored policy allows, and decides even for a spawn failure, as in memory', async (t) => {
  const { url } = newStore(t);
  const asked = [];
  const bg = make(url, {
    retries: 1,
    retryDelayMs: 1,
    retryIf: (err, attempt) => {
      asked.push([err.code, attempt]);
      return true;
    },
    agents: {
      fails: async () => {
        throw Object.assign(new Error('x'), { code: 'E_X' });
      },
    },
  });
  bg.registerCommand('missing', { command: join(tempDir(t, 'bmad-nothing-'), 'no-such-program') });
  await assert.rejects(bg.execute('fails', 't'), { code: 'E_X' });
  assert.deepEqual(asked, [['E_X', 1]], 'not asked after the last attempt');
  asked.length = 0;
  const { executionId } = await bg.fireAndForget('missing', 't');
  const s = await bg.waitFor(executionId);
  assert.equal(s.status, 'failed');
  assert.equal(s.errorObject.code, 'ERR_COMMAND_SPAWN');
  assert.equal(s.attempt, 2, 'a retryIf that says yes retries a spawn failure');
  assert.deepEqual(asked, [['ERR_COMMAND_SPAWN', 1]]);
});

test('a thrown value that cannot be read (a revoked Proxy) is retried, then stored as failed with a described message', async (t) => {
  const { url } = newStore(t);
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const attempts = [];
  const bg = make(url, {
    retries: 1,
    retryDelayMs: 1,
    agents: {
      hostile: async (task, options, ctx) => {
        attempts.push(ctx.attempt);
        throw revoked;
      },
    },
  });
  const { executionId } = await bg.fireAndForget('hostile', 't');
  const r = await settleOf(bg.execute('hostile', 'u'));
  assert.equal(r.ok, false);
  assert.ok(Object.is(r.value, revoked), 'the submitter gets the thrown value itself');
  assert.equal((await bg.waitFor(executionId)).status, 'failed');
  assert.deepEqual(attempts.sort(), [1, 1, 2, 2]);
  const reader = make(url);
  const stored = await reader.fetchExecutionStatus(executionId);
  assert.equal(stored.status, 'failed');
  assert.equal(stored.attempt, 2);
  assert.equal(stored.error, 'Unreadable error: an object');
});

// ----- progress ----------------------------------------------------------------------------

test('progress is stored while running, at most once per progressIntervalMs', async (t) => {
  const { url } = newStore(t);
  const g = gate();
  const phase = gate();
  const done = gate();
  const INTERVAL = 1000;
  const bg = make(url, {
    progressIntervalMs: INTERVAL,
    agents: {
      busy: async (task, options, ctx) => {
        // 50 reports at once: the first is stored at once, the latest when the interval ends.
        for (let i = 1; i <= 50; i++) ctx.progress(i);
        phase.open();
        await g.promise;
        // Past the interval: stored again.
        ctx.progress(90);
        await done.promise;
        return 'done';
      },
    },
  });
  // Polls the stored progress (monotonic clock) until it is `want`; the ms it took.
  const storedWithin = async (id, want, from, ms) => {
    for (;;) {
      const p = (await bg.fetchExecutionStatus(id)).progress;
      if (p === want) return performance.now() - from;
      assert.ok(performance.now() - from < ms, `progress ${want} stored within ${ms} ms (still ${p})`);
      await sleep(10);
    }
  };
  const { executionId } = await bg.fireAndForget('busy', 't');
  await phase.promise;
  const t0 = performance.now();
  await sleep(100);
  const s = await bg.fetchExecutionStatus(executionId);
  assert.equal(s.status, 'running');
  assert.equal(s.progress, 1, 'the first report is stored, the rest of the interval is not');
  // The latest report when the interval ends, not before (the first report came before t0).
  const at50 = await storedWithin(executionId, 50, t0, 5 * INTERVAL);
  assert.ok(at50 >= INTERVAL - 150, `the latest report is stored when the interval ends, not ${Math.round(at50)} ms after the first`);
  g.open();
  await storedWithin(executionId, 90, performance.now(), 5 * INTERVAL);
  assert.equal((await bg.fetchExecutionStatus(executionId)).status, 'running');
  done.open();
  assert.equal((await bg.waitFor(executionId)).status, 'completed');
  assert.equal((await bg.fetchExecutionStatus(executionId)).progress, 100);
});

// ----- shutdown ----------------------------------------------------------------------------

test("shutdown() (cancel): the running agent's signal aborts; the execution goes back to the queue without counting an attempt", async (t) => {
  const { url } = newStore(t);
  const log = [];
  const a = make(url, { agents: { hold: abortable(log) } });
  const p = settleOf(a.execute('hold', 'job'));
  await waitUntil(() => log.length === 1, 'the agent started');
  assert.equal(log[0].attempt, 1);
  const t0 = Date.now();
  await a.shutdown();
  assert.ok(log[0].abortedAt !== undefined, 'the signal aborted');
  assert.ok(log[0].abortedAt - t0 < 200, `aborted ${log[0].abortedAt - t0} ms after shutdown()`);
  const r = await p;
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTOR_SHUT_DOWN');
  // A later executor sees it queued, and runs it as attempt 1 again.
  const b = make(url);
  const s = await b.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'queued');
  assert.equal(s.attempt, 0, 'the released attempt is not counted');
  assert.equal(s.maxAttempts, 1);
  const attempts = [];
  b.registerAgent('hold', (task, options, ctx) => {
    attempts.push(ctx.attempt);
    return `again ${task}`;
  });
  const final = await b.waitFor('exec-d1');
  assert.equal(final.status, 'completed');
  assert.equal(final.result, 'again job');
  assert.deepEqual(attempts, [1]);
  const stored = await b.fetchExecutionStatus('exec-d1');
  assert.equal(stored.attempt, 1);
});

test("shutdown({ mode: 'drain' }) waits for this executor's running execution; queued ones stay for the next executor", async (t) => {
  const { url } = newStore(t);
  const ran = [];
  const a = make(url, {
    maxConcurrentAgents: 1,
    agents: {
      slow: async (task) => {
        ran.push(task);
        await sleep(300);
        return `slow ${task}`;
      },
    },
  });
  const first = a.execute('slow', 'a');
  // fireAndForget: a pending execute() of a queued one makes drain hang (see the drain test below).
  const rest = [await a.fireAndForget('slow', 'b'), await a.fireAndForget('slow', 'c')];
  await waitUntil(() => ran.length === 1, 'the first started');
  const t0 = Date.now();
  await a.shutdown({ mode: 'drain' });
  const took = Date.now() - t0;
  assert.ok(took >= 200, `drain waited for the running agent (${took} ms)`);
  assert.equal(await first, 'slow a');
  assert.deepEqual(ran, ['a'], 'nothing new claimed while draining');
  assert.deepEqual(
    rest.map((r) => r.executionId),
    ['exec-d2', 'exec-d3'],
  );
  const b = make(url, { maxConcurrentAgents: 1 });
  assert.equal((await b.fetchExecutionStatus('exec-d1')).status, 'completed');
  assert.equal((await b.fetchExecutionStatus('exec-d2')).status, 'queued');
  assert.equal((await b.fetchExecutionStatus('exec-d3')).status, 'queued');
  const ranB = [];
  b.registerAgent('slow', (task, options, ctx) => {
    ranB.push([task, ctx.attempt]);
    return `b ${task}`;
  });
  const finals = await Promise.all([b.waitFor('exec-d2'), b.waitFor('exec-d3')]);
  assert.deepEqual(
    finals.map((f) => [f.status, f.result]),
    [
      ['completed', 'b b'],
      ['completed', 'b c'],
    ],
  );
  assert.deepEqual(ranB, [
    ['b', 1],
    ['c', 1],
  ]);
});

test('shutdown() (cancel) leaves queued executions in the store for the next executor', async (t) => {
  const { url } = newStore(t);
  const a = make(url);
  const ids = [];
  for (const task of ['x', 'y']) ids.push((await a.fireAndForget('nobody-here', task)).executionId);
  await a.shutdown();
  const b = make(url, { agents: { 'nobody-here': (task) => task.toUpperCase() } });
  const finals = await Promise.all(ids.map((id) => b.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.result),
    ['X', 'Y'],
  );
});

test('shutdown() right after submissions not yet committed: execute() and callbacks get ERR_EXECUTOR_SHUT_DOWN once, the executions stay queued', async (t) => {
  const { url } = newStore(t);
  const a = make(url, { agents: { later: (task) => task } });
  const p = settleOf(a.execute('later', 'p'));
  const calls = [];
  a.executeWithCallback('later', 'c', (err, value) => calls.push({ err, value }));
  const f = a.fireAndForget('later', 'f');
  await a.shutdown();
  const r = await within(p, 2000);
  assert.notEqual(r, 'pending', 'execute() settled');
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTOR_SHUT_DOWN');
  assert.equal(r.value.executionId, 'exec-d1');
  await sleep(50);
  assert.equal(calls.length, 1, 'the callback was called once');
  assert.equal(calls[0].err.code, 'ERR_EXECUTOR_SHUT_DOWN');
  assert.equal(calls[0].err.executionId, 'exec-d2');
  assert.equal((await f).executionId, 'exec-d3');
  const b = make(url);
  for (const id of ['exec-d1', 'exec-d2', 'exec-d3']) assert.equal((await b.fetchExecutionStatus(id)).status, 'queued', id);
});

test('request numbers wrap after 2^32 - 1 (they cross to Rust as u32): executions go on after it, as after days of batches', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { echo: (task) => task } });
  await bg.initialize();
  // Where a long-running worker gets after ~4 billion batches and requests.
  bg._store.link.nextReq = 2 ** 32 - 2;
  const results = [];
  for (const task of ['a', 'b', 'c', 'd']) results.push(await within(bg.execute('echo', task), 3000));
  assert.deepEqual(results, ['a', 'b', 'c', 'd']);
  assert.ok(bg._store.link.nextReq < 100, `wrapped (${bg._store.link.nextReq})`);
});

test('strings with a lone surrogate are refused where they would be stored or cross to Rust: agent names, and a durable agent, task or key', async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { echo: (task) => task } });
  const lone = (where) => ({ name: 'TypeError', code: 'ERR_INVALID_ARG', message: new RegExp(`^${where} must not contain a lone surrogate`) });
  assert.throws(() => bg.registerAgent('a\uD800', () => 1), lone('registerAgent: name'));
  await assert.rejects(bg.execute('echo', 'x\uDFFF'), lone('task'));
  await assert.rejects(bg.execute('e\uD800', 'x'), lone('agent'));
  // Two keys that would both be stored as 'k\uFFFD' and dedupe into one execution.
  await assert.rejects(bg.execute('echo', 'x', { key: 'k\uD800' }), lone('options.key'));
  await assert.rejects(bg.fireAndForget('echo', 'x', { key: 'k\uDFFF' }), lone('options.key'));
  // A surrogate pair is fine.
  assert.equal(await bg.execute('echo', '\uD83D\uDE00', { key: '\uD83D\uDE00' }), '\uD83D\uDE00');
});

test('a queued execution cancelled by an executor that did not submit it: its error and event name its agent, task and mode', async (t) => {
  const { url } = newStore(t);
  const submitter = make(url);
  const { executionId } = await submitter.executeWatched('deploy', 'v1.2.3');
  const other = make(url);
  const events = [];
  other.on('execution-cancelled', (e) => events.push(e));
  assert.deepEqual(await other.cancelExecution(executionId), { success: true, executionId, previousStatus: 'queued' });
  assert.equal(events.length, 1);
  assert.deepEqual(
    { agent: events[0].agent, task: events[0].task, mode: events[0].mode, error: events[0].error },
    { agent: 'deploy', task: 'v1.2.3', mode: 'watched', error: `Execution ${executionId} (deploy) was cancelled` },
  );
  const stored = await submitter.waitFor(executionId);
  assert.equal(stored.status, 'cancelled');
  assert.equal(stored.error, `Execution ${executionId} (deploy) was cancelled`);
  assert.equal(stored.errorObject.agent, 'deploy');
  // An id the store does not have is not found, without a cancel written.
  assert.deepEqual(await other.cancelExecution('exec-d999'), { success: false, error: 'Execution not found' });
});

test('an end the store overrules with a cancel (asked from another executor while the agent finished) counts as cancelled in getStats', async (t) => {
  const { url } = newStore(t);
  const canceller = make(url);
  let unheard = 0;
  let runs = 0;
  const runner = make(url, {
    agents: {
      // Returns as soon as the other executor's cancel is answered: before this executor
      // hears of it, mostly (a run where it heard first proves nothing and is tried again).
      finishes: async (task, options, ctx) => {
        runs++;
        await canceller.cancelExecution(ctx.executionId);
        if (!ctx.signal.aborted) unheard++;
        return 'late';
      },
    },
  });
  const cancelled = [];
  runner.on('execution-cancelled', (e) => cancelled.push(e.executionId));
  while (unheard === 0 && runs < 50) {
    const r = await settleOf(runner.execute('finishes', 't'));
    assert.equal(r.ok, false);
    assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  }
  assert.ok(unheard > 0, 'the agent finished before its executor heard of the cancel at least once');
  const counts = runner.getStats().counts;
  assert.deepEqual({ completed: counts.completed, failed: counts.failed, cancelled: counts.cancelled }, { completed: 0, failed: 0, cancelled: runs });
  assert.equal(cancelled.length, runs);
});

test('shutdown() right after an agent returned: the end is recorded and answers its caller, not ERR_EXECUTOR_SHUT_DOWN', async (t) => {
  for (const mode of ['cancel', 'drain']) {
    const { url } = newStore(t, `${mode}.db`);
    let stopping;
    const bg = make(url, {
      agents: {
        quick: async () => {
          await sleep(5);
          // Called once the agent has returned, before the end is committed.
          process.nextTick(() => (stopping = bg.shutdown({ mode })));
          return 'the result';
        },
      },
    });
    const events = [];
    bg.on('execution-completed', (e) => events.push(e.executionId));
    const r = await settleOf(bg.execute('quick', 't'));
    assert.deepEqual(r, { ok: true, value: 'the result' }, mode);
    await stopping;
    assert.deepEqual(events, ['exec-d1'], mode);
    const reader = make(url);
    assert.equal((await reader.fetchExecutionStatus('exec-d1')).status, 'completed', mode);
  }
});

test('a running execution cancelled here, then shutdown() before the store answered: it ends cancelled, with its event', async (t) => {
  for (const mode of ['cancel', 'drain']) {
    const { url } = newStore(t, `${mode}.db`);
    const started = gate();
    const bg = make(url, {
      agents: {
        // Ignores its signal; would return after 100 ms.
        slow: () => {
          started.open();
          return sleep(100).then(() => 'done');
        },
      },
    });
    const events = [];
    for (const name of ['execution-completed', 'execution-failed', 'execution-cancelled']) bg.on(name, (e) => events.push([name, e.executionId, e.code]));
    const { executionId } = await bg.executeWatched('slow', 't');
    await started.promise;
    const answer = bg.cancelExecution(executionId);
    await bg.shutdown({ mode });
    assert.deepEqual(await answer, { success: true, executionId, previousStatus: 'running' }, mode);
    assert.deepEqual(events, [['execution-cancelled', executionId, 'ERR_EXECUTION_CANCELLED']], mode);
    const stored = await make(url).fetchExecutionStatus(executionId);
    assert.equal(stored.status, 'cancelled', mode);
    assert.equal(stored.errorObject.code, 'ERR_EXECUTION_CANCELLED', mode);
  }
});

test('a forced shutdown hands a running attempt back at its deadline, even one whose agent ignores its signal', async (t) => {
  for (const mode of ['cancel', 'drain']) {
    const { url } = newStore(t, `${mode}.db`);
    const started = gate();
    const bg = make(url, {
      agents: {
        deaf: () => {
          started.open();
          return sleep(300).then(() => 'late');
        },
      },
    });
    const { executionId } = await bg.fireAndForget('deaf', 't');
    await started.promise;
    await bg.shutdown({ mode, timeoutMs: 20 });
    await sleep(400); // the agent has returned meanwhile
    const s = await make(url).fetchExecutionStatus(executionId);
    assert.deepEqual([s.status, s.attempt], ['queued', 0], `${mode}: back in the queue, the attempt not counted`);
  }
});

test('cancels made just before shutdown() all go out before the store closes', async (t) => {
  const { url } = newStore(t);
  const a = make(url);
  const ids = [];
  for (const task of ['x', 'y', 'z']) ids.push((await a.fireAndForget('nobody-here', task)).executionId);
  const answers = ids.map((id) => a.cancelExecution(id));
  await a.shutdown();
  assert.deepEqual(
    (await Promise.all(answers)).map((r) => r.success),
    [true, true, true],
  );
  const b = make(url);
  for (const id of ids) assert.equal((await b.fetchExecutionStatus(id)).status, 'cancelled', id);
});

test("shutdown() of an idle executor with a store emits 'idle' no more: closing the store is no work", async (t) => {
  const { url } = newStore(t);
  const bg = make(url, { agents: { echo: (task) => task } });
  const events = [];
  for (const name of ['idle', 'shutting-down', 'shutdown-complete']) bg.on(name, () => events.push(name));
  assert.equal(await bg.execute('echo', 'a'), 'a');
  await waitUntil(() => events.includes('idle'), 'idle after the execution');
  await bg.shutdown();
  assert.deepEqual(events, ['idle', 'shutting-down', 'shutdown-complete']);
});

// ----- retention ---------------------------------------------------------------------------

test('retention: maxRetainedResults and resultTtlMs delete finished rows (retention runs every 5 s)', async (t) => {
  const byCount = newStore(t, 'count.db');
  const byTtl = newStore(t, 'ttl.db');
  const a = make(byCount.url, { maxRetainedResults: 2, agents: { echo: (task) => task } });
  const b = make(byTtl.url, { resultTtlMs: 300, agents: { echo: (task) => task } });
  await Promise.all([a.initialize(), b.initialize()]);
  for (const task of ['1', '2', '3', '4']) await a.execute('echo', task);
  await b.execute('echo', 'old');
  const g = gate();
  b.registerAgent('hold', () => g.promise);
  const { executionId: running } = await b.fireAndForget('hold', 'still running');
  // Every row is there at first.
  for (const id of ['exec-d1', 'exec-d2', 'exec-d3', 'exec-d4']) assert.equal((await a.fetchExecutionStatus(id)).found, true, id);
  const deadline = Date.now() + 8000;
  let gone = false;
  while (Date.now() < deadline) {
    const [c1, c2, t1] = await Promise.all([a.fetchExecutionStatus('exec-d1'), a.fetchExecutionStatus('exec-d2'), b.fetchExecutionStatus('exec-d1')]);
    if (!c1.found && !c2.found && !t1.found) {
      gone = true;
      break;
    }
    await sleep(100);
  }
  assert.ok(gone, 'the oldest ended rows were deleted within 8 s');
  // Past resultTtlMs this process forgets the end too: every query agrees with the store.
  assert.deepEqual(b.getExecutionStatus('exec-d1'), { found: false });
  assert.deepEqual(await b.waitFor('exec-d1'), { found: false });
  const watched = [];
  for await (const s of b.watch('exec-d1')) watched.push(s);
  assert.deepEqual(watched, [{ found: false }]);
  assert.equal((await a.fetchExecutionStatus('exec-d3')).result, '3');
  assert.equal((await a.fetchExecutionStatus('exec-d4')).result, '4');
  const stillRunning = await b.fetchExecutionStatus(running);
  assert.equal(stillRunning.found, true, 'a running execution is never deleted');
  assert.equal(stillRunning.status, 'running');
  g.open();
  assert.equal((await b.waitFor(running)).status, 'completed');
});

// ----- bad stores ----------------------------------------------------------------------------

/** Asserts an executor on `url` refuses to open with `code`, naming `file`, and stays usable to shut down. */
async function assertBadStore(url, file, code, cause) {
  const bg = make(url, { agents: { echo: (task) => task } });
  const err = await rejectsWith(bg.initialize(), Error, code);
  assert.ok(err.message.includes(file), `message ${JSON.stringify(err.message)} names ${file}`);
  assert.match(err.message, cause, 'the message gives the cause');
  // A submission is refused with the same error.
  const sub = await rejectsWith(bg.execute('echo', 't'), Error, code);
  assert.ok(sub.message.includes(file), sub.message);
  const sub2 = await rejectsWith(bg.fireAndForget('echo', 't'), Error, code);
  assert.ok(sub2.message.includes(file), sub2.message);
  // Queries answer without crashing.
  await settleOf(bg.fetchExecutionStatus('exec-d1'));
  await bg.shutdown();
  return err;
}

test('bad store: a path that cannot be created (under a regular file) -> ERR_STORE at initialize()', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  const blocker = join(dir, 'a-file');
  writeFileSync(blocker, 'not a folder');
  const file = join(blocker, 'sub', 'executions.db');
  await assertBadStore(`sqlite:${file}`, file, 'ERR_STORE', /cannot create the folder/);
  assert.equal(readFileSync(blocker, 'utf8'), 'not a folder');
});

test('once shutdown() resolves the SQLite store is closed: the file alone holds every execution (its WAL checkpointed and removed)', async (t) => {
  const { dir, file, url } = newStore(t);
  const bg = make(url);
  const ids = [];
  for (let i = 0; i < 50; i++) ids.push((await bg.fireAndForget('later', `t${i}`)).executionId);
  await bg.shutdown();
  assert.deepEqual(readdirSync(dir), ['executions.db'], 'no -wal or -shm file left');
  // A copy of the file alone (a backup taken right after shutdown()) has them all.
  const copy = newStore(t);
  copyFileSync(file, copy.file);
  const reader = make(copy.url);
  for (const id of ids) assert.equal((await reader.fetchExecutionStatus(id)).status, 'queued', id);
});

/** Runs `script` in a child node as the unprivileged user 65534. */
const asNobody = (script) =>
  new Promise((resolve) =>
    execFile(process.execPath, ['-e', script], { uid: 65534, gid: 65534, timeout: 10000 }, (err, stdout, stderr) => resolve({ err, stdout, stderr })),
  );

/** A store at `url` (file `file`) that this process may only read is refused, saying why. */
async function refusedWhenReadOnly(t, url, file) {
  const cause = /cannot be written \(the store writes the file and its folder\)/;
  if (process.getuid?.() !== 0) return assertBadStore(url, file, 'ERR_STORE', cause);
  // root writes anyway: the same store opened by an unprivileged user, in a child process
  // (which must be able to load the package from where it lies).
  const entry = JSON.stringify(fileURLToPath(new URL('../index.js', import.meta.url)));
  const probe = await asNobody(`require(${entry})`);
  if (probe.err !== null) return t.skip(`run as root, and user 65534 cannot load the package here: ${probe.stderr.split('\n')[0]}`);
  const r = await asNobody(`const { BackgroundExecutor } = require(${entry});
    const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)} });
    bg.initialize().then(() => console.log('opened'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message }))).then(() => bg.shutdown());`);
  assert.equal(r.err, null, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.code, 'ERR_STORE');
  assert.ok(out.message.includes(file), out.message);
  assert.match(out.message, cause);
}

test('bad store: a store file and folder this process may only read -> ERR_STORE saying it cannot be written, the file unchanged', async (t) => {
  const { dir, file, url } = newStore(t);
  const first = make(url);
  await first.initialize();
  await first.shutdown();
  const bytes = readFileSync(file);
  chmodSync(file, 0o444);
  chmodSync(dir, 0o555);
  try {
    await refusedWhenReadOnly(t, url, file);
  } finally {
    chmodSync(dir, 0o700); // for the folder's removal
  }
  assert.deepEqual(readFileSync(file), bytes);
});

test('bad store: a file of random bytes -> ERR_STORE, its bytes unchanged', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  const file = join(dir, 'random.db');
  const bytes = randomBytes(8192);
  writeFileSync(file, bytes);
  await assertBadStore(`sqlite:${file}`, file, 'ERR_STORE', /not a (usable SQLite )?database/);
  assert.deepEqual(readFileSync(file), bytes);
  assert.ok(!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size === 0, 'no WAL content written');
});

test('bad store: a SQLite database of another application -> ERR_STORE, its bytes unchanged', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  const file = join(dir, 'other-app.db');
  copyFileSync(new URL('other-app.db', FIXTURES), file);
  const bytes = readFileSync(file);
  const err = await assertBadStore(`sqlite:${file}`, file, 'ERR_STORE', /something else|bmad_meta/);
  assert.notEqual(err.code, 'ERR_STORE_VERSION');
  assert.deepEqual(readFileSync(file), bytes);
  assert.ok(!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size === 0, 'no WAL content written');
});

test('bad store: a store written by a newer schema version -> ERR_STORE_VERSION, its bytes unchanged', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  const file = join(dir, 'newer.db');
  copyFileSync(new URL('newer-version.db', FIXTURES), file);
  const bytes = readFileSync(file);
  await assertBadStore(`sqlite:${file}`, file, 'ERR_STORE_VERSION', /version 99/);
  assert.deepEqual(readFileSync(file), bytes);
  assert.ok(!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size === 0, 'no WAL content written');
});

test('bad store: a folder as the path -> ERR_STORE naming it', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  await assertBadStore(`sqlite:${dir}`, dir, 'ERR_STORE', /unable to open/);
});

test('bad store without initialize(): a submission rejects with the store error', async (t) => {
  const dir = tempDir(t, 'bmad-durable-bad-');
  const file = join(dir, 'random.db');
  writeFileSync(file, randomBytes(4096));
  const bg = make(`sqlite:${file}`, { agents: { echo: (task) => task } });
  const err = await rejectsWith(bg.execute('echo', 't'), Error, 'ERR_STORE');
  assert.ok(err.message.includes(file), err.message);
  const cb = await new Promise((resolve) => {
    bg.executeWithCallback('echo', 't', (e) => resolve({ callback: e })).catch((e) => resolve({ rejected: e }));
  });
  const e = cb.callback || cb.rejected;
  assert.ok(e instanceof Error);
  assert.equal(e.code, 'ERR_STORE');
});

// ----- config ------------------------------------------------------------------------------

test('invalid store config and durable options are refused with coded errors', async (t) => {
  assert.throws(() => new BackgroundExecutor({ store: 42 }), (e) => e instanceof TypeError && /store/.test(e.message));
  // A bad value of the `store` key, as of any key: ERR_INVALID_ARG naming both.
  for (const store of ['mysql://x', '', 'sqlite:', 'sqlite:%zz']) {
    assert.throws(
      () => new BackgroundExecutor({ store }),
      (e) => e instanceof RangeError && e.code === 'ERR_INVALID_ARG' && e.message.startsWith('store') && e.message.includes(JSON.stringify(store)),
      store,
    );
  }
  assert.throws(() => new BackgroundExecutor({ leaseMs: 1000 }), (e) => e instanceof RangeError && /leaseMs/.test(e.message));
  assert.throws(() => new BackgroundExecutor({ storePollMs: 5 }), (e) => e instanceof RangeError && /storePollMs/.test(e.message));
  const { url } = newStore(t);
  assert.throws(() => new BackgroundExecutor({ store: url, leaseMs: 10 }), (e) => e instanceof RangeError && /leaseMs/.test(e.message));
  const mem = create({ agents: { echo: (task) => task } });
  await rejectsWith(mem.execute('echo', 't', { durable: 'yes' }), TypeError, 'ERR_INVALID_ARG');
  const noStore = await rejectsWith(mem.execute('echo', 't', { durable: true }), RangeError, 'ERR_NO_STORE');
  assert.match(noStore.message, /store/);
  // Without a store, durable: false is a normal in-memory execution.
  assert.equal(await mem.execute('echo', 'plain', { durable: false }), 'plain');
  const withStore = make(url, { agents: { echo: (task) => task } });
  await rejectsWith(withStore.execute('echo', 't', { durable: 'yes' }), TypeError, 'ERR_INVALID_ARG');
  assert.equal(await withStore.execute('echo', 'explicit', { durable: true }), 'explicit');
  assert.equal((await withStore.fetchExecutionStatus('exec-d1')).result, 'explicit');
});

// ----- group commit ------------------------------------------------------------------------

test('submissions of one microtask batch share one transaction (group commit): the WAL grows by a few pages, not one commit each', async (t) => {
  const one = newStore(t, 'batch.db');
  const many = newStore(t, 'serial.db');
  const a = make(one.url);
  const b = make(many.url);
  await Promise.all([a.initialize(), b.initialize()]);
  const walOf = (file) => statSync(`${file}-wal`).size;
  const a0 = walOf(one.file);
  const b0 = walOf(many.file);
  // 200 submissions in one synchronous run (one batch), for an agent nobody runs.
  const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => a.fireAndForget('nobody', `t${i}`)));
  assert.deepEqual(
    ids.map((r) => r.executionId),
    Array.from({ length: 200 }, (_, i) => `exec-d${i + 1}`),
  );
  // The same 200, each awaited before the next: one commit each.
  for (let i = 0; i < 200; i++) await b.fireAndForget('nobody', `t${i}`);
  const grewBatch = walOf(one.file) - a0;
  const grewSerial = walOf(many.file) - b0;
  assert.ok(grewSerial >= 200 * 4096, `serial commits: WAL grew ${grewSerial} bytes`);
  assert.ok(grewBatch < grewSerial / 10, `one batch: WAL grew ${grewBatch} bytes vs ${grewSerial} for 200 commits`);
  assert.equal((await a.fetchExecutionStatus('exec-d200')).status, 'queued');
});

// ----- shutdown races (in child processes: a regression crashes or hangs the process) ----------

nodeTest(
  'shutdown() right after a submission is acknowledged: the process does not crash, the execution stays in the store',
  { timeout: 20000 },
  async (t) => {
    const { url } = newStore(t);
    const r = await runFx('shutdown-after-submit.mjs', [url]);
    assert.equal(r.stdout.split('\n')[0], JSON.stringify({ executionId: 'exec-d1' }));
    assert.equal(r.code, 0, `exit code ${r.code}; stderr: ${r.stderr}`);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /shut down/);
    // Whatever happened, a later executor runs it once, as attempt 1.
    const attempts = [];
    const bg = make(url, {
      agents: {
        echo: (task, options, ctx) => {
          attempts.push(ctx.attempt);
          return task;
        },
      },
    });
    const final = await bg.waitFor('exec-d1');
    assert.equal(final.status, 'completed');
    assert.deepEqual(attempts, [1]);
  },
);

nodeTest('shutdown() before anything opened the store: Node stays alive until it resolves, after shutdown-complete', { timeout: 20000 }, async (t) => {
  const { url, file } = newStore(t);
  const r = await runFx('shutdown-unopened.mjs', [url]);
  assert.equal(r.code, 0, `exit code ${r.code} (13: the awaited shutdown() never settled); stderr: ${r.stderr}`);
  assert.equal(r.stdout, 'shutdown-complete\nshut down\n');
  assert.equal(r.stderr, '');
  assert.ok(existsSync(file), 'the store was opened, then closed');
});

nodeTest(
  "shutdown({ mode: 'drain' }) with a pending execute() of a queued execution: drains the running one, rejects the queued one's promise",
  { timeout: 20000 },
  async (t) => {
    const { url } = newStore(t);
    const r = await runFx('drain-awaited.mjs', [url]);
    assert.notEqual(r.stdout.trim(), 'hung', 'shutdown({ mode: "drain" }) did not resolve within 3 s');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.first, { ok: true, value: 'slow a' });
    assert.deepEqual(out.second, { ok: false, code: 'ERR_EXECUTOR_SHUT_DOWN' });
    const bg = make(url);
    assert.equal((await bg.fetchExecutionStatus('exec-d2')).status, 'queued');
  },
);

// `storePrefetch`: an executor on a store claims up to that many executions beyond its free
// slots; they wait in its own queue and run within its concurrency. Checked on PostgreSQL,
// where the rows can be read while they are held.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test, shutDownAfterEach, waitUntil, sleep, tempDir } from './helpers.mjs';
import { spawnWorker } from './durable/common.mjs';
import BackgroundExecutor from '../index.mjs';
import { pgTest, sql } from './durable/pg-proxy.mjs';
import { schemas, heldAgent } from './durable/held.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
const fresh = schemas('prefetch');

const make = (url, config = {}) => create({ store: url, ...config });

/** Rows of `schema` per state, as `{ queued, running, completed, cancelled }` counts. */
function states(schema) {
  const rows = sql(`SELECT coalesce(json_object_agg(state, n), '{}') FROM (SELECT state, count(*) AS n FROM "${schema}".bmad_executions GROUP BY state) s`);
  return { queued: rows[0] ?? 0, running: rows[1] ?? 0, completed: rows[2] ?? 0, cancelled: rows[4] ?? 0 };
}

/** Submits `n` executions of `agent` from `submitter`; resolves with their ids. */
async function submit(submitter, agent, n) {
  const ids = [];
  for (let i = 0; i < n; i++) ids.push((await submitter.fireAndForget(agent, `t${i}`)).executionId);
  return ids;
}

/**
 * `n` executions of a held agent submitted to a fresh schema, then a runner with `config`
 * for them (the agent with `limits`): `{ schema, url, submitter, ids, held, runner }`.
 */
async function heldRun(n, config, limits) {
  const { schema, url } = fresh();
  const submitter = make(url);
  await submitter.initialize();
  const ids = await submit(submitter, 'held', n);
  const held = heldAgent();
  const runner = make(url, config);
  runner.registerAgent('held', held.fn, limits);
  await runner.initialize();
  return { schema, url, submitter, ids, held, runner };
}

pgTest('with storePrefetch a runner holds its free slots plus the prefetch, runs them at its concurrency, each once', async () => {
  const { schema, submitter, ids, held } = await heldRun(40, { maxConcurrentAgents: 2, storePrefetch: 10 });
  await waitUntil(() => states(schema).running === 12, 'the runner held 2 + 10 executions', { timeoutMs: 5000 });
  await waitUntil(() => held.running === 2, 'two agents run');
  await sleep(300);
  assert.deepEqual(states(schema), { queued: 28, running: 12, completed: 0, cancelled: 0 }, 'no more than its slots and the prefetch');
  assert.equal(held.running, 2, 'two agents run; the other ten wait here');
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.found && f.status),
    ids.map(() => 'completed'),
  );
  assert.equal(held.maxRunning, 2, 'never more agents at once than maxConcurrentAgents');
  assert.equal(held.calls.size, 40);
  assert.ok([...held.calls.values()].every((n) => n === 1), 'each agent called once');
  assert.deepEqual(sql(`SELECT json_agg(DISTINCT attempt) FROM "${schema}".bmad_executions`), [1]);
});

pgTest('without storePrefetch a runner claims only its free slots', async () => {
  const { schema, submitter, ids, held } = await heldRun(10, { maxConcurrentAgents: 2 });
  await waitUntil(() => held.running === 2, 'two agents run');
  await sleep(300);
  assert.deepEqual(states(schema), { queued: 8, running: 2, completed: 0, cancelled: 0 });
  held.release();
  await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.deepEqual(states(schema), { queued: 0, running: 0, completed: 10, cancelled: 0 });
});

pgTest('maxQueued bounds what a runner prefetches', async () => {
  const { schema, submitter, ids, held } = await heldRun(20, { maxConcurrentAgents: 2, storePrefetch: 10, maxQueued: 3 });
  await waitUntil(() => states(schema).running === 5, 'the runner held 2 + 3 executions');
  await waitUntil(() => held.running === 2, 'two agents run');
  await sleep(300);
  assert.equal(states(schema).running, 5, 'its queue holds maxQueued, no more');
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.ok([...held.calls.values()].every((n) => n === 1), 'each agent called once');
});

pgTest('a throttled runner claims for its reduced slots only, nothing ahead', async () => {
  const { schema, url } = fresh();
  const held = heldAgent();
  // Any memory use exceeds 1 MB: the first sample throttles it to minConcurrentAgents.
  const runner = make(url, { maxConcurrentAgents: 4, storePrefetch: 10, throttleIfExceeded: true, maxMemoryMb: 1, minConcurrentAgents: 1, monitorIntervalMs: 50 });
  const throttled = new Promise((resolve) => runner.once('queue-throttled', resolve));
  runner.registerAgent('held', held.fn);
  await runner.initialize();
  await throttled;
  const submitter = make(url);
  await submitter.initialize();
  const ids = await submit(submitter, 'held', 12);
  await waitUntil(() => held.running === 1, 'one agent runs');
  await sleep(300);
  assert.deepEqual(states(schema), { queued: 11, running: 1, completed: 0, cancelled: 0 }, 'one slot, and no prefetch while throttled');
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(held.maxRunning, 1);
});

pgTest("executions waiting for an agent at its limit count against the prefetch", async () => {
  // 'one' runs one at a time: the runner holds 4 slots + 3 ahead of it, 1 running and 6
  // waiting, which fill the prefetch. Work of another agent then gets the 3 free slots only.
  const { schema, submitter, held, runner } = await heldRun(10, { maxConcurrentAgents: 4, storePrefetch: 3 }, { concurrency: 1 });
  await waitUntil(() => held.running === 1 && states(schema).running === 7, 'the runner held 4 + 3 of one agent');
  const other = heldAgent();
  runner.registerAgent('other', other.fn);
  const more = await submit(submitter, 'other', 10);
  await waitUntil(() => other.running === 3, 'the other agent fills the free slots');
  await sleep(300);
  const running = sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 1 AND agent = 'other'`);
  assert.equal(running, 3, 'nothing of the other agent claimed ahead: the prefetch is full');
  held.release();
  other.release();
  const finals = await Promise.all(more.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
});

pgTest('a cancel from another executor ends a prefetched execution before it starts', async () => {
  const { schema, submitter, ids, held } = await heldRun(6, { maxConcurrentAgents: 1, storePrefetch: 5 });
  await waitUntil(() => states(schema).running === 6, 'the runner held all six');
  // Claimed in order: the first runs, the last waits on the runner.
  assert.equal((await submitter.cancelExecution(ids[5])).success, true);
  const cancelled = await submitter.waitFor(ids[5]);
  assert.equal(cancelled.found && cancelled.status, 'cancelled');
  held.release();
  const finals = await Promise.all(ids.slice(0, 5).map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(held.calls.get('t5'), undefined, 'the cancelled one never started');
  assert.equal(held.calls.size, 5);
});

pgTest("shutdown({ mode: 'cancel' }) hands prefetched executions back uncounted; another runner runs them", async () => {
  const { schema, url, submitter, ids, held: first, runner } = await heldRun(12, { maxConcurrentAgents: 2, storePrefetch: 6 });
  await waitUntil(() => states(schema).running === 8, 'the runner held 2 + 6 executions');
  await waitUntil(() => first.running === 2, 'two agents run');
  await runner.shutdown({ mode: 'cancel', timeoutMs: 2000 });
  assert.deepEqual(states(schema), { queued: 12, running: 0, completed: 0, cancelled: 0 }, 'all back in the queue');
  assert.deepEqual(sql(`SELECT json_agg(DISTINCT attempt) FROM "${schema}".bmad_executions`), [0], 'no attempt counted');
  const second = heldAgent();
  second.release();
  const next = make(url, { maxConcurrentAgents: 4 });
  next.registerAgent('held', second.fn);
  await next.initialize();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(second.calls.size, 12, 'the second runner ran every one');
  assert.equal(first.calls.size, 2, 'the first had started only its two');
});

pgTest('a runner killed with SIGKILL: its prefetched executions are rescued like running ones, an attempt counted each', async (t) => {
  const { schema, url } = fresh();
  const submitter = make(url);
  await submitter.initialize();
  // Each takes a minute on the runner (task "<n>:<ms>"): one runs, four wait there.
  const ids = [];
  for (let i = 0; i < 8; i++) ids.push((await submitter.fireAndForget('job', `${i}:60000`)).executionId);
  const log = join(tempDir(t, 'bmad-prefetch-kill-'), 'worker.log');
  const worker = spawnWorker({ storeUrl: url, log, concurrency: 1, retries: 0, leaseMs: 60000, prefetch: 4 }, 'runner');
  t.after(() => worker.kill());
  await waitUntil(() => states(schema).running === 5, 'the runner held 1 + 4 executions', { timeoutMs: 10000 });
  const held = sql(`SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM "${schema}".bmad_executions WHERE state = 1`);
  assert.equal((await worker.kill()).signal, 'SIGKILL');
  // A runner on this host rescues them at once (the process is gone), no retries left.
  const next = make(url, { maxConcurrentAgents: 8 });
  next.registerAgent('job', async (task) => task);
  await next.initialize();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  const byRow = new Map(ids.map((id, i) => [Number(id.replace('exec-d', '')), finals[i]]));
  for (const [row, f] of byRow) {
    if (held.includes(row)) {
      assert.equal(f.found && f.status, 'failed', `execution ${row} was held by the killed runner`);
      assert.equal(f.errorObject.code, 'ERR_WORKER_LOST');
    } else {
      assert.equal(f.found && f.status, 'completed', `execution ${row} was still queued`);
    }
  }
  assert.equal(held.length, 5);
  assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state >= 2`), 8, 'each ended once');
});

test('on SQLite too: the prefetched executions show as running until their turn', async (t) => {
  const url = `sqlite:${join(tempDir(t, 'bmad-prefetch-'), 'executions.db')}`;
  const submitter = make(url);
  await submitter.initialize();
  const ids = await submit(submitter, 'held', 6);
  const held = heldAgent();
  const runner = make(url, { maxConcurrentAgents: 1, storePrefetch: 3 });
  runner.registerAgent('held', held.fn);
  await runner.initialize();
  const statuses = async () => (await Promise.all(ids.map((id) => submitter.fetchExecutionStatus(id)))).map((s) => s.found && s.status);
  // Polled: the store is read through the executor's API only (Node 20 has no node:sqlite).
  let seen = [];
  for (let i = 0; i < 250 && seen.filter((s) => s === 'running').length < 4; i++) {
    await sleep(20);
    seen = await statuses();
  }
  await sleep(200);
  seen = await statuses();
  assert.deepEqual(seen, ['running', 'running', 'running', 'running', 'queued', 'queued'], 'one slot and three prefetched, claimed in order');
  assert.equal(held.running, 1);
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(held.maxRunning, 1);
  assert.equal(held.calls.size, 6);
});

test('storePrefetch is an integer 0–10000 and needs a store', () => {
  const url = 'postgres://nobody@127.0.0.1:1/none'; // refused before any connection
  const bad = (value, Ctor) =>
    assert.throws(
      () => new BackgroundExecutor({ store: url, storePrefetch: value }),
      (e) => e instanceof Ctor && e.code === 'ERR_INVALID_ARG' && /storePrefetch/.test(e.message),
    );
  bad(-1, RangeError);
  bad(1.5, RangeError);
  bad(10001, RangeError);
  bad('8', TypeError);
  assert.throws(
    () => new BackgroundExecutor({ storePrefetch: 8 }),
    (e) => e instanceof RangeError && /storePrefetch need a store/.test(e.message),
  );
});

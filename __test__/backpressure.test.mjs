// Backpressure: maxQueued refuses a submission that would wait beyond it (ERR_QUEUE_FULL,
// nothing recorded); onQueueSizeLessThan(n) lets a producer wait instead.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, tempDir } from './helpers.mjs';

const make = shutDownAfterEach();

function blocking() {
  const gates = [];
  const fn = () => new Promise((resolve) => gates.push(resolve));
  return { fn, release: () => gates.shift()('done'), pending: () => gates.length };
}

test('maxQueued: beyond it every mode is refused with ERR_QUEUE_FULL and nothing is recorded', async () => {
  const bg = make({ maxConcurrentAgents: 1, maxQueued: 2 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  const running = bg.execute('a', 'run');
  const q1 = bg.execute('a', 'q1');
  const q2 = await bg.fireAndForget('a', 'q2');
  assert.equal(q2.status, 'queued');
  await assert.rejects(bg.execute('a', 'over'), { name: 'RangeError', code: 'ERR_QUEUE_FULL', maxQueued: 2 });
  await assert.rejects(bg.fireAndForget('a', 'over'), { code: 'ERR_QUEUE_FULL' });
  await assert.rejects(bg.executeWithCallback('a', 'over', () => assert.fail('not called')), { code: 'ERR_QUEUE_FULL' });
  await assert.rejects(bg.executeWatched('a', 'over'), { code: 'ERR_QUEUE_FULL' });
  const st = bg.getQueueStatus();
  assert.equal(st.queued, 2);
  assert.equal(bg.getStats().counts.submitted, 3, 'refused submissions are not counted');
  // Ids stay in sequence: the next accepted one follows the last accepted one.
  b.release();
  await running;
  const next = await bg.fireAndForget('a', 'next');
  assert.equal(next.executionId, 'exec-4');
  while (b.pending() > 0 || bg.getQueueStatus().queued > 0) {
    if (b.pending() > 0) b.release();
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(await q1, 'done');
  await bg.onIdle();
});

test('executeMultiple past maxQueued: the items that do not fit are its failures (ERR_QUEUE_FULL, id null); the others run', async () => {
  const bg = make({ maxConcurrentAgents: 1, maxQueued: 2 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  const running = bg.execute('a', 'run');
  const started = [];
  bg.on('aggregation-started', (e) => started.push(e.executionIds));
  const agg = bg.executeMultiple(['a', 'a', 'a', 'a'], 'm');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(bg.getQueueStatus().queued, 2);
  b.release();
  await running;
  while (b.pending() > 0 || bg.getQueueStatus().queued > 0) {
    if (b.pending() > 0) b.release();
    await new Promise((r) => setTimeout(r, 5));
  }
  const r = await agg;
  assert.deepEqual(
    r.results.map((x) => [x.id, x.status, x.errorObject === undefined ? null : x.errorObject.code]),
    [
      ['exec-2', 'completed', null],
      ['exec-3', 'completed', null],
      [null, 'failed', 'ERR_QUEUE_FULL'],
      [null, 'failed', 'ERR_QUEUE_FULL'],
    ],
  );
  assert.deepEqual(started, [['exec-2', 'exec-3', null, null]]);
  assert.equal(r.report.failed, 2);
  assert.equal(r.consistent.consistent, false);
  assert.equal((await bg.fireAndForget('a', 'next')).executionId, 'exec-4', 'the refused items used no id');
});

test('onQueueSizeLessThan(n): resolves at once below n, else when starts bring the queue below n', async () => {
  const bg = make({ maxConcurrentAgents: 1 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  await bg.onQueueSizeLessThan(1);
  const all = [];
  for (let i = 0; i < 4; i++) all.push(bg.execute('a', String(i))); // 1 running, 3 queued
  let below2 = false;
  const p = bg.onQueueSizeLessThan(2).then(() => (below2 = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(below2, false);
  b.release(); // 2 queued
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(below2, false);
  b.release(); // 1 queued
  await p;
  assert.equal(bg.getQueueStatus().queued, 1);
  while (b.pending() > 0 || bg.getQueueStatus().queued > 0) {
    if (b.pending() > 0) b.release();
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(all);
});

test('a producer that waits with onQueueSizeLessThan never meets ERR_QUEUE_FULL', async () => {
  const bg = make({ maxConcurrentAgents: 4, maxQueued: 8 });
  bg.registerAgent('a', async (t) => {
    await new Promise((r) => setTimeout(r, 1));
    return t;
  });
  const all = [];
  for (let i = 0; i < 200; i++) {
    await bg.onQueueSizeLessThan(8);
    all.push(bg.execute('a', String(i)));
  }
  const values = await Promise.all(all);
  assert.equal(values.length, 200);
  assert.equal(values[199], '199');
});

test('bad maxQueued and n are refused with coded errors', async () => {
  assert.throws(() => make({ maxQueued: 0 }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /maxQueued/ });
  assert.throws(() => make({ maxQueued: 'x' }), { name: 'TypeError', message: /maxQueued/ });
  const bg = make();
  await assert.rejects(bg.onQueueSizeLessThan(0), { name: 'RangeError', message: /onQueueSizeLessThan: n/ });
  await assert.rejects(bg.onQueueSizeLessThan(), { name: 'TypeError' });
});

test('shutdown resolves onQueueSizeLessThan waiters', async () => {
  const bg = make({ maxConcurrentAgents: 1 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  const all = [bg.execute('a', '1'), bg.execute('a', '2'), bg.execute('a', '3')].map((p) => p.catch((e) => e.code));
  const waiting = bg.onQueueSizeLessThan(1);
  const done = bg.shutdown({ timeoutMs: 50 });
  await waiting;
  await done;
  assert.deepEqual((await Promise.all(all)).slice(1), ['ERR_EXECUTOR_SHUT_DOWN', 'ERR_EXECUTOR_SHUT_DOWN']);
});

test('a submission following a refused key holder is refused too', async () => {
  const bg = make({ maxConcurrentAgents: 1, maxQueued: 1 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  const running = bg.execute('a', 'run');
  const queued = bg.execute('a', 'queued');
  const holder = bg.fireAndForget('a', 'x', { key: 'k' });
  const follower = bg.fireAndForget('a', 'x', { key: 'k' });
  await assert.rejects(holder, { code: 'ERR_QUEUE_FULL' });
  await assert.rejects(follower, { code: 'ERR_QUEUE_FULL' });
  b.release();
  await running;
  b.release();
  await queued;
});

test('with a store, claimed executions the full local queue cannot take go back to the store', async (t) => {
  const dir = tempDir(t, 'bmad-bp-store-');
  const bg = make({ store: `sqlite:${dir}/s.db`, maxConcurrentAgents: 2, maxQueued: 1 });
  const b = blocking();
  bg.registerAgent('a', b.fn);
  await bg.initialize();
  const ids = [];
  for (let i = 0; i < 6; i++) ids.push((await bg.fireAndForget('a', String(i))).executionId);
  // In-memory work fills the slots and the queue while stored work is claimed.
  const mem = [bg.execute('a', 'm1', { durable: false }), bg.execute('a', 'm2', { durable: false })].map((p) => p.catch((e) => e.code));
  for (let n = 0; n < 200 && (b.pending() > 0 || (await bg.fetchExecutionStatus(ids[5])).status !== 'completed'); n++) {
    if (b.pending() > 0) b.release();
    await new Promise((r) => setTimeout(r, 5));
  }
  for (const id of ids) assert.equal((await bg.fetchExecutionStatus(id)).status, 'completed', id);
  await Promise.allSettled(mem);
});

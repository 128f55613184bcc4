// Queries and retention / memory (resultTtlMs, maxRetainedResults).
import assert from 'node:assert/strict';
import { test, exitIfWorkLeftBehind, makeExecutor, sleep, deferred, waitUntil, runScript, ENTRY } from './helpers.mjs';

exitIfWorkLeftBehind();

test('getExecutionStatus follows an execution through queued -> running -> completed', async () => {
  const gates = new Map();
  const gate = (name) => {
    if (!gates.has(name)) gates.set(name, deferred());
    return gates.get(name);
  };
  const resultObject = { answer: 42, nested: { list: [1, 2, 3] } };
  let ctxOfB;
  const bg = makeExecutor({
    maxConcurrentAgents: 1,
    agents: {
      blocker: async (task) => {
        await gate(task).promise;
        return 'blocker-done';
      },
      worker: async (task, options, context) => {
        ctxOfB = context;
        await gate(task).promise;
        return resultObject;
      },
    },
  });
  try {
    const { executionId: a } = await bg.fireAndForget('blocker', 'A');
    const before = Date.now();
    const submitted = await bg.executeWatched('worker', 'B', { priority: 'high', custom: 'x' });
    const after = Date.now();
    const b = submitted.executionId;
    assert.equal(submitted.status, 'queued');
    assert.equal(submitted.mode, 'watched');

    // ---- queued
    let s = bg.getExecutionStatus(b);
    assert.equal(s.found, true);
    assert.equal(s.id, b);
    assert.equal(s.agent, 'worker');
    assert.equal(s.task, 'B');
    assert.equal(s.mode, 'watched');
    assert.equal(s.priority, 'high');
    assert.equal(s.status, 'queued');
    assert.equal(s.progress, 0);
    assert.equal(typeof s.started, 'number');
    assert.ok(s.started >= before - 50 && s.started <= after + 50, `started ${s.started} not in [${before}, ${after}] (ms since epoch)`);
    assert.equal(typeof s.duration, 'number');
    assert.ok(s.duration >= 0);
    assert.equal(s.result, null);
    assert.equal(s.error, null);
    assert.equal(s.queuePosition, 1, 'first (and only) queued execution');
    assert.equal(s.startedAt, undefined, 'a queued execution has not started');
    assert.equal(s.finishedAt, undefined);
    const startedWhenQueued = s.started;

    // the running one reports its own fields, without queuePosition
    const sa = bg.getExecutionStatus(a);
    assert.equal(sa.status, 'running');
    assert.equal(sa.mode, 'fire-and-forget');
    assert.equal(sa.priority, 'low');
    assert.equal(sa.queuePosition, undefined);
    assert.equal(typeof sa.startedAt, 'number');

    // ---- running
    await sleep(30);
    gate('A').resolve();
    await waitUntil(() => bg.getExecutionStatus(b).status === 'running', 'B running');
    s = bg.getExecutionStatus(b);
    assert.equal(s.status, 'running');
    assert.equal(s.started, startedWhenQueued, '`started` keeps the submission time');
    assert.equal(typeof s.startedAt, 'number');
    assert.ok(s.startedAt >= s.started + 20, 'startedAt is when it started running, after the wait in the queue');
    assert.equal(s.finishedAt, undefined);
    assert.equal(s.queuePosition, undefined);
    assert.equal(s.result, null);
    const d1 = s.duration;
    await sleep(40);
    ctxOfB.progress(40);
    const d2 = bg.getExecutionStatus(b).duration;
    assert.ok(d2 >= d1 + 30, `duration grows while running (${d1} -> ${d2})`);
    assert.equal(bg.getExecutionStatus(b).progress, 40);
    ctxOfB.progress(250);
    assert.equal(bg.getExecutionStatus(b).progress, 100, 'progress is clamped to 100');
    ctxOfB.progress('lots');
    assert.equal(bg.getExecutionStatus(b).progress, 100, 'non-numbers ignored');
    ctxOfB.progress(-5);
    assert.equal(bg.getExecutionStatus(b).progress, 0, 'progress is clamped to 0');

    // ---- completed
    gate('B').resolve();
    const final = await bg.waitFor(b);
    assert.equal(final.status, 'completed');
    s = bg.getExecutionStatus(b);
    assert.equal(s.status, 'completed');
    assert.equal(s.result, resultObject, 'same object identity');
    assert.equal(s.error, null);
    assert.equal(s.progress, 100);
    assert.equal(typeof s.finishedAt, 'number');
    assert.ok(s.finishedAt >= s.startedAt);
    assert.ok(s.duration >= 60, `total duration ${s.duration}`);
    await sleep(30);
    assert.equal(bg.getExecutionStatus(b).duration, s.duration, 'duration is frozen once finished');
    assert.equal(bg.getExecutionStatus(a).result, 'blocker-done');
  } finally {
    for (const g of gates.values()) g.resolve();
    await bg.shutdown();
  }
});

test('getExecutionStatus of a failed execution carries the error message and no result', async () => {
  const bg = makeExecutor({
    agents: {
      boom: async () => {
        await sleep(10);
        throw new Error('kaboom 123');
      },
    },
  });
  try {
    const { executionId } = await bg.executeWithCallback('boom', 't', null);
    const w = await bg.waitFor(executionId);
    assert.equal(w.status, 'failed');
    const s = bg.getExecutionStatus(executionId);
    assert.equal(s.found, true);
    assert.equal(s.status, 'failed');
    assert.equal(s.mode, 'async-callback');
    assert.equal(s.priority, 'medium');
    assert.equal(s.result, null);
    assert.equal(typeof s.error, 'string');
    assert.match(s.error, /kaboom 123/);
    assert.equal(typeof s.finishedAt, 'number');
    assert.ok(s.duration >= 5);
  } finally {
    await bg.shutdown();
  }
});

test('getExecutionStatus returns { found: false } for unknown and garbage ids', async () => {
  const bg = makeExecutor({ agents: { ok: () => 1 } });
  try {
    const { executionId } = await bg.fireAndForget('ok', 't');
    await bg.waitFor(executionId);
    const garbage = [
      'exec-999999',
      'nope',
      '',
      undefined,
      null,
      42,
      {},
      [],
      'exec-0',
      'exec--1',
      'exec-1.5',
      'exec-',
      executionId + 'x',
      ' ' + executionId,
      Symbol('x'),
      { toString: () => executionId },
      '__proto__',
      'constructor',
    ];
    for (const id of garbage) {
      const s = bg.getExecutionStatus(id);
      assert.deepEqual(s, { found: false }, `id ${String(typeof id === 'symbol' ? 'symbol' : JSON.stringify(id))}`);
    }
    assert.deepEqual(bg.getExecutionStatus(), { found: false });
    // and the real one is still there
    assert.equal(bg.getExecutionStatus(executionId).found, true);
  } finally {
    await bg.shutdown();
  }
});

test('getQueueStatus: counts, limits, paused, throttled and the queue in start order', async () => {
  const release = deferred();
  const bg = makeExecutor({
    maxConcurrentAgents: 2,
    agents: { hold: () => release.promise, quick: (t) => t },
  });
  try {
    let q = bg.getQueueStatus();
    assert.deepEqual(
      { queued: q.queued, running: q.running, max_concurrent: q.max_concurrent, paused: q.paused, throttled: q.throttled, queue: q.queue },
      { queued: 0, running: 0, max_concurrent: 2, paused: false, throttled: false, queue: [] },
    );
    await bg.fireAndForget('hold', 'r1');
    await bg.fireAndForget('hold', 'r2');
    const ids = {};
    ids.low1 = (await bg.fireAndForget('quick', 'low1')).executionId; // low
    ids.med1 = (await bg.executeWithCallback('quick', 'med1', null)).executionId; // medium
    ids.crit = (await bg.executeWatched('quick', 'crit', { priority: 'critical' })).executionId;
    ids.med2 = (await bg.executeWatched('quick', 'med2')).executionId; // medium
    ids.bg = (await bg.fireAndForget('quick', 'bg', { priority: 'background' })).executionId;
    ids.high = (await bg.executeWithCallback('quick', 'high', undefined, { priority: 'high' })).executionId;
    q = bg.getQueueStatus();
    assert.equal(q.queued, 6);
    assert.equal(q.running, 2);
    assert.equal(q.max_concurrent, 2);
    assert.equal(q.paused, false);
    assert.equal(q.throttled, false);
    assert.deepEqual(q.queue, [
      { id: ids.crit, agent: 'quick', priority: 'critical', mode: 'watched' },
      { id: ids.high, agent: 'quick', priority: 'high', mode: 'async-callback' },
      { id: ids.med1, agent: 'quick', priority: 'medium', mode: 'async-callback' },
      { id: ids.med2, agent: 'quick', priority: 'medium', mode: 'watched' },
      { id: ids.low1, agent: 'quick', priority: 'low', mode: 'fire-and-forget' },
      { id: ids.bg, agent: 'quick', priority: 'background', mode: 'fire-and-forget' },
    ]);
    // queuePosition agrees with the queue order (1-based)
    q.queue.forEach((item, i) => assert.equal(bg.getExecutionStatus(item.id).queuePosition, i + 1, item.id));

    bg.pause();
    assert.equal(bg.getQueueStatus().paused, true);
    // Pausing keeps the queue: the start order is unchanged; the queue actually starts in that order
    const startOrder = [];
    bg.on('execution-started', ({ executionId }) => startOrder.push(executionId));
    release.resolve();
    await sleep(50);
    assert.equal(bg.getQueueStatus().queued, 6, 'nothing starts while paused');
    assert.equal(bg.getQueueStatus().running, 0);
    bg.resume();
    assert.equal(bg.getQueueStatus().paused, false);
    await bg.onIdle();
    assert.deepEqual(startOrder, [ids.crit, ids.high, ids.med1, ids.med2, ids.low1, ids.bg]);
    q = bg.getQueueStatus();
    assert.equal(q.queued, 0);
    assert.equal(q.running, 0);
    assert.deepEqual(q.queue, []);
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('getActiveExecutions lists exactly the running executions with their fields', async () => {
  const release = deferred();
  const contexts = [];
  const bg = makeExecutor({
    maxConcurrentAgents: 2,
    agents: {
      hold: (task, options, ctx) => {
        contexts.push(ctx);
        return release.promise;
      },
    },
  });
  try {
    assert.deepEqual(bg.getActiveExecutions(), []);
    const a = (await bg.fireAndForget('hold', 'ta')).executionId;
    const b = (await bg.executeWatched('hold', 'tb')).executionId;
    const c = (await bg.fireAndForget('hold', 'tc')).executionId; // queued
    await sleep(20);
    contexts[1].progress(55);
    const active = bg.getActiveExecutions();
    assert.equal(active.length, 2);
    const byId = new Map(active.map((x) => [x.id, x]));
    assert.deepEqual([...byId.keys()].sort(), [a, b].sort());
    assert.ok(!byId.has(c), 'queued executions are not active');
    const ea = byId.get(a);
    assert.equal(ea.agent, 'hold');
    assert.equal(ea.task, 'ta');
    assert.equal(ea.mode, 'fire-and-forget');
    assert.equal(ea.progress, 0);
    assert.equal(typeof ea.duration, 'number');
    assert.ok(ea.duration >= 10);
    const eb = byId.get(b);
    assert.equal(eb.task, 'tb');
    assert.equal(eb.mode, 'watched');
    assert.equal(eb.progress, 55);
    release.resolve();
    await bg.onIdle();
    assert.deepEqual(bg.getActiveExecutions(), []);
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('getStatus totals of completed, failed and cancelled add up to what was submitted', async () => {
  const bg = makeExecutor({
    maxConcurrentAgents: 3,
    agents: {
      ok: async (t) => {
        await sleep(2);
        return t;
      },
      bad: async () => {
        await sleep(2);
        throw new Error('bad');
      },
      slow: (t, o, ctx) => new Promise((resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
    },
  });
  try {
    const before = bg.getStatus();
    assert.equal(before.completed, 0);
    assert.equal(before.failed, 0);
    assert.equal(before.cancelled, 0);
    assert.equal(before.running, 0);
    assert.equal(before.queued, 0);
    assert.equal(before.max_concurrent, 3);
    assert.equal(typeof before.active_processes, 'number');
    assert.equal(typeof before.resources, 'object');

    const toCancel = [];
    let ok = 0;
    let bad = 0;
    for (let i = 0; i < 60; i++) {
      if (i % 5 === 0) {
        toCancel.push((await bg.fireAndForget('slow', `s${i}`)).executionId);
      } else if (i % 3 === 0) {
        bad++;
        await bg.fireAndForget('bad', `b${i}`);
      } else {
        ok++;
        await bg.fireAndForget('ok', `o${i}`);
      }
    }
    // some of the slow ones are running, others queued: cancel all of them
    await sleep(10);
    for (const id of toCancel) assert.equal((await bg.cancelExecution(id)).success, true);
    await bg.onIdle();
    const st = bg.getStatus();
    assert.equal(st.completed, ok);
    assert.equal(st.failed, bad);
    assert.equal(st.cancelled, toCancel.length);
    assert.equal(st.completed + st.failed + st.cancelled, 60);
    assert.equal(st.running, 0);
    assert.equal(st.queued, 0);
    assert.equal(st.active_processes, 0);
  } finally {
    await bg.shutdown();
  }
});

test('maxRetainedResults: 5 keeps only the last 5 of 20 finished executions', async () => {
  const bg = makeExecutor({ maxConcurrentAgents: 1, maxRetainedResults: 5, agents: { ok: (t) => `r-${t}` } });
  try {
    const ids = [];
    for (let i = 0; i < 20; i++) ids.push((await bg.fireAndForget('ok', String(i))).executionId);
    await bg.onIdle();
    await sleep(10);
    const found = ids.map((id) => bg.getExecutionStatus(id).found);
    assert.deepEqual(found, [...Array(15).fill(false), ...Array(5).fill(true)]);
    for (let i = 15; i < 20; i++) assert.equal(bg.getExecutionStatus(ids[i]).result, `r-${i}`);
    assert.equal(bg.getStatus().retained, 5);
    assert.equal(bg.getStatus().completed, 20, 'totals still count evicted executions');
  } finally {
    await bg.shutdown();
  }
});

test('maxRetainedResults: 0 keeps nothing finished, but running work stays queryable', async () => {
  const release = deferred();
  const bg = makeExecutor({ maxRetainedResults: 0, agents: { hold: () => release.promise } });
  try {
    const { executionId } = await bg.fireAndForget('hold', 't');
    assert.equal(bg.getExecutionStatus(executionId).status, 'running');
    release.resolve(1);
    await bg.onIdle();
    await sleep(10);
    assert.deepEqual(bg.getExecutionStatus(executionId), { found: false });
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('resultTtlMs: 100: a finished execution is found at first and gone ~300 ms later', async () => {
  const bg = makeExecutor({ resultTtlMs: 100, agents: { ok: () => 'v' } });
  try {
    const { executionId } = await bg.fireAndForget('ok', 't');
    await bg.waitFor(executionId);
    const s = bg.getExecutionStatus(executionId);
    assert.equal(s.found, true);
    assert.equal(s.result, 'v');
    await sleep(300);
    assert.deepEqual(bg.getExecutionStatus(executionId), { found: false });
    assert.deepEqual(await bg.waitFor(executionId), { found: false }, 'waitFor agrees');
    assert.equal((await bg.cancelExecution(executionId)).success, false);
    // queries stop seeing it at once; the memory is freed by a (slightly lazy) sweep
    await waitUntil(() => bg.getStatus().retained === 0, 'the retention sweep', { timeoutMs: 2000 });
    assert.equal(bg.getStatus().completed, 1);
  } finally {
    await bg.shutdown();
  }
});

test('resultTtlMs does not expire queued or running executions', async () => {
  const release = deferred();
  const bg = makeExecutor({ resultTtlMs: 50, maxConcurrentAgents: 1, agents: { hold: () => release.promise } });
  try {
    const a = (await bg.fireAndForget('hold', 'a')).executionId;
    const b = (await bg.fireAndForget('hold', 'b')).executionId;
    await sleep(200);
    assert.equal(bg.getExecutionStatus(a).status, 'running');
    assert.equal(bg.getExecutionStatus(b).status, 'queued');
    release.resolve();
    await bg.onIdle();
    assert.equal(bg.getExecutionStatus(b).found, true, 'found right after finishing');
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('memory stays flat over 200k executions with default retention (child node --expose-gc)', async () => {
  const script = `
import { BackgroundExecutor } from '${ENTRY}';

const bg = new BackgroundExecutor({ maxConcurrentAgents: 64, throttleIfExceeded: false, agents: { t: (task) => task } });
async function run(n) {
  const BATCH = 5000;
  for (let done = 0; done < n; done += BATCH) {
    const ps = [];
    for (let i = 0; i < BATCH; i++) ps.push(bg.execute('t', 'x'));
    await Promise.all(ps);
  }
  await bg.onIdle();
}
async function heap() {
  for (let i = 0; i < 4; i++) { global.gc(); await new Promise((r) => setImmediate(r)); }
  return process.memoryUsage().heapUsed;
}
await run(20000);
const h0 = await heap();
await run(80000);
const h100 = await heap();
const r100 = bg.getStatus().retained;
await run(100000);
const h200 = await heap();
const st = bg.getStatus();
await bg.shutdown();
process.stdout.write(JSON.stringify({ h0, h100, h200, r100, retained: st.retained, completed: st.completed, rss: process.memoryUsage().rss }));
`;
  const child = await runScript(script, { nodeArgs: ['--expose-gc'], killAfterMs: 25000 });
  if (child.code !== 0) throw new Error(`child exited ${child.code} ${child.signal}: ${child.stderr}`);
  const out = JSON.parse(child.stdout);
  assert.equal(out.completed, 200000);
  assert.ok(out.r100 <= 10000, `retained after 100k: ${out.r100}`);
  assert.ok(out.retained <= 10000, `retained after 200k: ${out.retained}`);
  const growth = out.h200 - out.h100;
  const MB = 1024 * 1024;
  assert.ok(growth < 8 * MB, `heap grew ${(growth / MB).toFixed(2)} MB between 100k and 200k executions (h0 ${(out.h0 / MB).toFixed(1)} MB, h100 ${(out.h100 / MB).toFixed(1)} MB, h200 ${(out.h200 / MB).toFixed(1)} MB)`);
});

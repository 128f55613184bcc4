// Events and their payloads.
import assert from 'node:assert/strict';
import BackgroundExecutor from '../index.mjs';
import { test, exitIfWorkLeftBehind, makeExecutor, sleep, deferred, waitUntil } from './helpers.mjs';

exitIfWorkLeftBehind();

const ALL_EVENTS = [
  'initialized',
  'fire-and-forget-started',
  'async-callback-started',
  'watched-started',
  'execution-queued',
  'execution-started',
  'execution-completed',
  'execution-failed',
  'execution-cancelled',
  'callback-error',
  'progress-update',
  'aggregation-started',
  'aggregation-completed',
  'queue-throttled',
  'queue-resumed',
  'resource-threshold-exceeded',
  'shutting-down',
  'shutdown-complete',
  'idle',
];

/** Records every event (listening to all of them) and every name passed to emit(). */
function record(bg) {
  const log = [];
  const emitted = [];
  const origEmit = bg.emit;
  bg.emit = function (name, ...args) {
    emitted.push(name);
    return origEmit.call(this, name, ...args);
  };
  for (const name of ALL_EVENTS) bg.on(name, (data) => log.push({ name, data }));
  const of = (name) => log.filter((e) => e.name === name).map((e) => e.data);
  return { log, emitted, of };
}

test('initialized is emitted once; initialize() is idempotent and resolves to the executor', async () => {
  const bg = makeExecutor({ maxConcurrentAgents: 3 });
  const rec = record(bg);
  try {
    assert.equal(await bg.initialize(), bg);
    assert.equal(await bg.initialize(), bg);
    assert.equal(rec.of('initialized').length, 1);
    const data = rec.of('initialized')[0];
    assert.equal(typeof data, 'object');
  } finally {
    await bg.shutdown();
  }
});

test('submission events: mode-started events and execution-queued { executionId, queuePosition, queueLength }', async () => {
  const release = deferred();
  const bg = makeExecutor({ maxConcurrentAgents: 1, agents: { hold: () => release.promise } });
  const rec = record(bg);
  try {
    const a = await bg.fireAndForget('hold', 'ta');
    const b = await bg.executeWithCallback('hold', 'tb', () => {});
    const c = await bg.executeWatched('hold', 'tc');
    const d = await bg.fireAndForget('hold', 'td', { priority: 'critical' });

    const ff = rec.of('fire-and-forget-started');
    assert.deepEqual(
      ff.map((x) => x.executionId),
      [a.executionId, d.executionId],
    );
    assert.equal(ff[0].agent, 'hold');
    assert.equal(ff[0].task, 'ta');
    const cb = rec.of('async-callback-started');
    assert.equal(cb.length, 1);
    assert.equal(cb[0].executionId, b.executionId);
    assert.equal(cb[0].agent, 'hold');
    assert.equal(cb[0].task, 'tb');
    const w = rec.of('watched-started');
    assert.equal(w.length, 1);
    assert.equal(w[0].executionId, c.executionId);
    assert.equal(w[0].agent, 'hold');
    assert.equal(w[0].task, 'tc');

    const q = rec.of('execution-queued');
    assert.deepEqual(
      q.map((x) => x.executionId),
      [a.executionId, b.executionId, c.executionId, d.executionId],
    );
    for (const x of q) {
      assert.equal(typeof x.queuePosition, 'number');
      assert.equal(typeof x.queueLength, 'number');
    }
    // a started at once; b, c queue behind it; d (critical) jumps to the front
    assert.equal(q[0].queueLength, 0);
    assert.deepEqual([q[1].queuePosition, q[1].queueLength], [1, 1]);
    assert.deepEqual([q[2].queuePosition, q[2].queueLength], [2, 2]);
    assert.deepEqual([q[3].queuePosition, q[3].queueLength], [1, 3]);
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('execution-started { executionId, agent, task, mode } and execution-completed { executionId, agent, result, duration }', async () => {
  const value = { big: Buffer.from('xyz') };
  const bg = makeExecutor({
    agents: {
      ok: async () => {
        await sleep(40);
        return value;
      },
    },
  });
  const rec = record(bg);
  try {
    const { executionId } = await bg.executeWatched('ok', 'task-1');
    const r = await bg.execute('ok', 'task-2');
    assert.equal(r, value);
    await bg.onIdle();
    const started = rec.of('execution-started');
    assert.equal(started.length, 2);
    assert.deepEqual(
      { executionId: started[0].executionId, agent: started[0].agent, task: started[0].task, mode: started[0].mode },
      { executionId, agent: 'ok', task: 'task-1', mode: 'watched' },
    );
    assert.equal(started[1].task, 'task-2');
    assert.equal(typeof started[1].mode, 'string');
    const completed = rec.of('execution-completed');
    assert.equal(completed.length, 2);
    const first = completed.find((x) => x.executionId === executionId);
    assert.equal(first.agent, 'ok');
    assert.equal(first.result, value, 'the result object itself, not a copy');
    assert.equal(typeof first.duration, 'number');
    assert.ok(first.duration >= 35 && first.duration < 2000, `duration ${first.duration}`);
    // started comes before completed for the same execution
    const order = rec.log.filter((e) => e.data && e.data.executionId === executionId).map((e) => e.name);
    assert.ok(order.indexOf('execution-started') < order.indexOf('execution-completed'), order.join(','));
  } finally {
    await bg.shutdown();
  }
});

test('execution-failed { executionId, agent, error: string, errorObject } keeps the original error', async () => {
  const boom = new TypeError('bad input 7');
  boom.extra = 'kept';
  const bg = makeExecutor({
    agents: {
      bad: async () => {
        throw boom;
      },
      badString: () => Promise.reject('plain string reason'),
    },
  });
  const rec = record(bg);
  try {
    await assert.rejects(bg.execute('bad', 't'), (e) => e === boom);
    await assert.rejects(bg.execute('badString', 't'));
    // Refused at submission in the single modes; executeMultiple runs it and reports the failure.
    await assert.rejects(bg.fireAndForget('nobody', 't'), { code: 'ERR_AGENT_NOT_FOUND' });
    const { results } = await bg.executeMultiple(['nobody'], 't');
    const executionId = results[0].id;
    await bg.onIdle();
    const failed = rec.of('execution-failed');
    assert.equal(failed.length, 3);
    assert.equal(failed[0].agent, 'bad');
    assert.equal(typeof failed[0].executionId, 'string');
    assert.equal(failed[0].error, 'bad input 7');
    assert.equal(failed[0].errorObject, boom);
    assert.equal(typeof failed[1].error, 'string');
    assert.match(failed[1].error, /plain string reason/);
    assert.equal(failed[2].executionId, executionId);
    assert.equal(failed[2].agent, 'nobody');
    assert.equal(failed[2].error, 'No agent registered for "nobody"');
    assert.equal(failed[2].errorObject.code, 'ERR_AGENT_NOT_FOUND');
    assert.equal(rec.of('execution-completed').length, 0);
  } finally {
    await bg.shutdown();
  }
});

test('execution-cancelled { executionId, agent } for queued and running executions; late results are not reported', async () => {
  const late = deferred();
  const bg = makeExecutor({ maxConcurrentAgents: 1, agents: { stubborn: () => late.promise } });
  const rec = record(bg);
  try {
    const running = (await bg.fireAndForget('stubborn', 'r')).executionId;
    const queued = (await bg.fireAndForget('stubborn', 'q')).executionId;
    assert.equal((await bg.cancelExecution(queued)).success, true);
    assert.equal((await bg.cancelExecution(running)).success, true);
    const cancelled = rec.of('execution-cancelled');
    assert.deepEqual(
      cancelled.map((x) => [x.executionId, x.agent]),
      [
        [queued, 'stubborn'],
        [running, 'stubborn'],
      ],
    );
    assert.equal(bg.getExecutionStatus(running).status, 'cancelled');
    late.resolve('too late');
    await sleep(30);
    assert.equal(rec.of('execution-completed').length, 0, 'a late result is discarded');
    assert.equal(rec.of('execution-failed').length, 0);
    assert.equal(bg.getExecutionStatus(running).status, 'cancelled');
    assert.equal(bg.getExecutionStatus(running).result, null);
  } finally {
    late.resolve();
    await bg.shutdown();
  }
});

test('callback-error { executionId, error } when a callback throws; nothing crashes', async () => {
  const thrown = new Error('callback blew up');
  const bg = makeExecutor({ agents: { ok: () => 1, bad: () => Promise.reject(new Error('x')) } });
  const rec = record(bg);
  try {
    let calls = 0;
    const a = await bg.executeWithCallback('ok', 't', () => {
      calls++;
      throw thrown;
    });
    const b = await bg.executeWithCallback('bad', 't', () => {
      calls++;
      throw thrown;
    });
    await bg.onIdle();
    await sleep(10);
    assert.equal(calls, 2, 'each callback called exactly once');
    const errs = rec.of('callback-error');
    assert.deepEqual(errs.map((e) => e.executionId).sort(), [a.executionId, b.executionId].sort());
    for (const e of errs) assert.equal(e.error, thrown);
    assert.equal(await bg.execute('ok', 'after'), 1);
  } finally {
    await bg.shutdown();
  }
});

test('progress-update is periodic while queued and running, and ends with a final update', async () => {
  const release = deferred();
  const bg = makeExecutor({
    maxConcurrentAgents: 1,
    progressIntervalMs: 50,
    agents: {
      hold: () => release.promise,
      slow: async () => {
        await sleep(300);
        return 'done';
      },
    },
  });
  const rec = record(bg);
  try {
    await bg.fireAndForget('hold', 'blocker');
    const { executionId } = await bg.executeWatched('slow', 't');
    await sleep(220);
    const whileQueued = rec.of('progress-update').filter((u) => u.executionId === executionId);
    assert.ok(whileQueued.length >= 2, `${whileQueued.length} updates while queued`);
    for (const u of whileQueued) {
      assert.equal(u.status, 'queued');
      assert.equal(u.agent, 'slow');
      assert.equal(u.progress, 0);
      assert.equal(typeof u.duration, 'number');
    }
    release.resolve();
    await bg.waitFor(executionId);
    await sleep(20);
    const all = rec.of('progress-update').filter((u) => u.executionId === executionId);
    const running = all.filter((u) => u.status === 'running');
    assert.ok(running.length >= 3, `${running.length} updates while running 300 ms at a 50 ms cadence`);
    assert.ok(running.length <= 12, `${running.length} updates: too many for a 50 ms cadence`);
    const last = all[all.length - 1];
    assert.equal(last.status, 'completed');
    assert.equal(last.progress, 100);
    assert.equal(all.filter((u) => u.status === 'completed').length, 1, 'one final update');
    const count = all.length;
    await sleep(150);
    assert.equal(rec.of('progress-update').filter((u) => u.executionId === executionId).length, count, 'no updates after the end');
    // fire-and-forget executions get no progress-update
    const blockerUpdates = rec.of('progress-update').filter((u) => u.agent === 'hold');
    assert.equal(blockerUpdates.length, 0);
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('progress-update is prompt and coalesced when the agent reports progress; final one on failure', async () => {
  const bg = makeExecutor({
    progressIntervalMs: 60000,
    agents: {
      reporter: async (task, options, { progress }) => {
        await sleep(20);
        for (let i = 1; i <= 50; i++) progress(i);
        await sleep(100);
        progress(80, { step: 'eighty' });
        await sleep(100);
        throw new Error('late failure');
      },
    },
  });
  const rec = record(bg);
  try {
    const t0 = Date.now();
    const times = [];
    bg.on('progress-update', (u) => times.push([Date.now() - t0, u.progress, u.status]));
    const { executionId } = await bg.executeWatched('reporter', 't');
    await bg.waitFor(executionId);
    await sleep(20);
    const ups = rec.of('progress-update').filter((u) => u.executionId === executionId);
    const running = ups.filter((u) => u.status === 'running');
    assert.deepEqual(
      running.map((u) => u.progress),
      [50, 80],
      `coalesced: one update per burst (${JSON.stringify(times)})`,
    );
    const at50 = times.find((t) => t[1] === 50)[0];
    assert.ok(at50 < 1000, `the burst was reported ${at50} ms after start, long before the 60 s cadence`);
    const last = ups[ups.length - 1];
    assert.equal(last.status, 'failed');
    assert.equal(last.progress, 80);
    assert.equal(rec.of('execution-failed').length, 1);
  } finally {
    await bg.shutdown();
  }
});

test('idle { } is emitted when nothing is queued or running, once per busy period', async () => {
  const bg = makeExecutor({
    maxConcurrentAgents: 2,
    agents: {
      ok: async () => {
        await sleep(10);
        return 1;
      },
    },
  });
  const rec = record(bg);
  try {
    for (let i = 0; i < 5; i++) await bg.fireAndForget('ok', 't');
    assert.equal(rec.of('idle').length, 0);
    await waitUntil(() => rec.of('idle').length === 1, 'idle', { timeoutMs: 3000 });
    assert.equal(bg.getStatus().running + bg.getStatus().queued, 0);
    assert.equal(rec.of('execution-completed').length, 5);
    await sleep(30);
    assert.equal(rec.of('idle').length, 1);
    await bg.execute('ok', 't');
    await waitUntil(() => rec.of('idle').length === 2, 'second idle', { timeoutMs: 3000 });
  } finally {
    await bg.shutdown();
  }
});

test('shutting-down { running, queued } and shutdown-complete, before shutdown() resolves', async () => {
  const release = deferred();
  const bg = makeExecutor({ maxConcurrentAgents: 1, agents: { hold: () => release.promise } });
  const rec = record(bg);
  try {
    await bg.fireAndForget('hold', 'a');
    await bg.fireAndForget('hold', 'b');
    await bg.fireAndForget('hold', 'c');
    let resolved = false;
    const p = bg.shutdown().then(() => {
      resolved = true;
      return rec.of('shutdown-complete').length;
    });
    const sd = rec.of('shutting-down');
    assert.equal(sd.length, 1);
    assert.equal(sd[0].running, 1);
    assert.equal(sd[0].queued, 2);
    await sleep(20);
    assert.equal(resolved, false, 'waits for the running execution');
    assert.equal(rec.of('shutdown-complete').length, 0);
    release.resolve('x');
    assert.equal(await p, 1, 'shutdown-complete was emitted before shutdown() resolved');
    const names = rec.log.map((e) => e.name);
    assert.ok(names.indexOf('shutting-down') < names.indexOf('shutdown-complete'));
    assert.equal(rec.of('execution-cancelled').length, 2);
    assert.equal(rec.of('execution-completed').length, 1);
  } finally {
    release.resolve();
    await bg.shutdown();
  }
});

test('resource-threshold-exceeded and queue-throttled are emitted when a threshold is exceeded', async () => {
  const bg = new BackgroundExecutor({
    maxMemoryMb: 1, // this process is certainly above 1 MB
    monitorIntervalMs: 50,
    minConcurrentAgents: 1,
    maxConcurrentAgents: 4,
    agents: {
      slow: async () => {
        await sleep(150);
        return 1;
      },
    },
  });
  const rec = record(bg);
  try {
    await bg.initialize();
    await waitUntil(() => rec.of('queue-throttled').length > 0, 'queue-throttled');
    const ex = rec.of('resource-threshold-exceeded');
    assert.ok(ex.length >= 1);
    assert.equal(typeof ex[0].cpu, 'number');
    assert.equal(typeof ex[0].memory, 'number');
    assert.ok(ex[0].memory > 1);
    assert.ok(Array.isArray(ex[0].exceeded));
    assert.ok(ex[0].exceeded.includes('memory'));
    assert.equal(typeof ex[0].timestamp, 'number');
    assert.equal(bg.getQueueStatus().throttled, true);
    // throttled: only minConcurrentAgents (1) may run
    for (let i = 0; i < 4; i++) await bg.fireAndForget('slow', 't');
    await sleep(60);
    assert.equal(bg.getQueueStatus().running, 1);
    assert.equal(bg.getQueueStatus().queued, 3);
  } finally {
    await bg.shutdown();
  }
});

test('exactly one terminal event per execution over a mixed run of 300; the executor never emits "error"', async () => {
  const bg = makeExecutor({
    maxConcurrentAgents: 8,
    progressIntervalMs: 20,
    cancelGraceMs: 200,
    agents: {
      ok: async (task) => {
        await sleep(task.length % 7);
        return task;
      },
      sync: (task) => task,
      bad: async () => {
        await sleep(3);
        throw new Error('bad');
      },
      throwsSync: () => {
        throw new Error('sync throw');
      },
      waitAbort: (task, options, ctx) =>
        new Promise((resolve, reject) => {
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason));
        }),
      ignoreAbort: () => sleep(60).then(() => 'ignored the signal'),
    },
  });
  const rec = record(bg);
  const promises = [];
  const ids = [];
  const expected = new Map();
  let cbCalls = 0;
  try {
    await bg.initialize();
    const controllers = [];
    for (let i = 0; i < 300; i++) {
      const kind = i % 10;
      const task = `task-${i}`;
      let id;
      if (kind === 0 || kind === 1) {
        id = (await bg.fireAndForget(i % 2 ? 'ok' : 'sync', task)).executionId;
        expected.set(id, 'completed');
      } else if (kind === 2) {
        id = (await bg.executeWithCallback('bad', task, () => cbCalls++)).executionId;
        expected.set(id, 'failed');
      } else if (kind === 3) {
        id = (await bg.executeWatched('throwsSync', task)).executionId;
        expected.set(id, 'failed');
      } else if (kind === 4) {
        id = (await bg.executeWatched('waitAbort', task)).executionId;
        expected.set(id, 'cancel-me');
      } else if (kind === 5) {
        id = (await bg.fireAndForget('ignoreAbort', task)).executionId;
        expected.set(id, 'cancel-me');
      } else if (kind === 6) {
        const c = new AbortController();
        controllers.push(c);
        id = (await bg.executeWithCallback('waitAbort', task, () => cbCalls++, { signal: c.signal })).executionId;
        expected.set(id, 'cancelled');
      } else if (kind === 7) {
        id = (await bg.fireAndForget('waitAbort', task, { timeout: 30 })).executionId;
        expected.set(id, 'failed');
      } else if (kind === 8) {
        // An unknown agent is refused at submission (no id, no event); a failing one takes its place.
        await assert.rejects(bg.fireAndForget('no-such-agent', task), { code: 'ERR_AGENT_NOT_FOUND' });
        id = (await bg.fireAndForget('bad', task)).executionId;
        expected.set(id, 'failed');
      } else {
        const p = bg.execute('ok', task);
        promises.push(p);
        id = null;
      }
      if (id) ids.push(id);
      if (i % 50 === 25) await sleep(5);
    }
    // cancel the ones meant to be cancelled: some are running, some still queued
    for (const [id, what] of expected) {
      if (what === 'cancel-me') {
        const r = await bg.cancelExecution(id);
        if (r.success) expected.set(id, 'cancelled');
        else expected.set(id, bg.getExecutionStatus(id).status); // finished before we got to it
      }
    }
    for (const c of controllers) c.abort();
    await Promise.allSettled(promises);
    await bg.onIdle();
    await sleep(250); // late settles of cancelled agents, grace periods
    const terminal = new Map();
    let executeIds = 0;
    for (const e of rec.log) {
      if (!['execution-completed', 'execution-failed', 'execution-cancelled'].includes(e.name)) continue;
      terminal.set(e.data.executionId, (terminal.get(e.data.executionId) || []).concat(e.name));
    }
    const started = new Map();
    for (const e of rec.of('execution-started')) started.set(e.executionId, (started.get(e.executionId) || 0) + 1);
    for (const [id, names] of terminal) {
      assert.equal(names.length, 1, `${id} had terminal events ${names.join(', ')}`);
      assert.ok((started.get(id) || 0) <= 1, `${id} started ${started.get(id)} times`);
    }
    const queuedIds = rec.of('execution-queued').map((e) => e.executionId);
    assert.equal(queuedIds.length, 300);
    assert.equal(new Set(queuedIds).size, 300);
    for (const id of queuedIds) {
      assert.ok(terminal.has(id), `${id} has no terminal event`);
      if (!ids.includes(id)) executeIds++;
    }
    assert.equal(terminal.size, 300);
    assert.equal(executeIds, 30);
    for (const id of ids) {
      const name = terminal.get(id)[0];
      const want = expected.get(id);
      assert.equal(name, `execution-${want}`, `${id} ended with ${name}, expected ${want}`);
      assert.equal(bg.getExecutionStatus(id).status, want);
    }
    assert.equal(cbCalls, 60, 'every callback called exactly once');
    const st = bg.getStatus();
    assert.equal(st.completed + st.failed + st.cancelled, 300);
    assert.equal(rec.of('execution-completed').length, st.completed);
    assert.equal(rec.of('execution-failed').length, st.failed);
    assert.equal(rec.of('execution-cancelled').length, st.cancelled);
    assert.ok(st.cancelled >= 60, `${st.cancelled} cancelled`);
    assert.ok(!rec.emitted.includes('error'), 'never emits "error"');
    assert.equal(bg.listenerCount('error'), 0);
  } finally {
    await bg.shutdown();
  }
  assert.ok(!rec.emitted.includes('error'), 'never emits "error" (shutdown included)');
});

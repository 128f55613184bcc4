// Per-agent concurrency: registerAgent/registerCommand limits and setAgentLimits at run time.
// An execution whose agent is at its limit stays queued while other agents' executions
// start, lower priority included; within one agent, priority and FIFO order hold; the global
// limit and the cancel/timeout slot rule still apply on top.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test, shutDownAfterEach, tempDir } from './helpers.mjs';

const make = shutDownAfterEach();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An agent whose calls wait for `release()`; records the tasks in call order and its peak. */
function gated() {
  const gates = [];
  const order = [];
  let live = 0;
  let peak = 0;
  const fn = async (task) => {
    order.push(task);
    live++;
    peak = Math.max(peak, live);
    try {
      await new Promise((resolve) => gates.push(resolve));
      return task;
    } finally {
      live--;
    }
  };
  return {
    fn,
    order,
    peak: () => peak,
    live: () => live,
    release: () => gates.shift()(),
    pending: () => gates.length,
  };
}

/** Releases `g` until `done()` holds (each release lets a queued call in). */
async function drain(g, done) {
  while (!done()) {
    if (g.pending() > 0) g.release();
    await sleep(1);
  }
}

test('an agent at its limit stays queued while other agents start, lower priority included', async () => {
  const bg = make({ maxConcurrentAgents: 5 });
  const llm = gated();
  const other = gated();
  bg.registerAgent('llm', llm.fn, { concurrency: 2 });
  bg.registerAgent('other', other.fn);
  const runs = [];
  for (let i = 0; i < 6; i++) runs.push(bg.execute('llm', `l${i}`, { priority: 'critical' }));
  runs.push(bg.execute('other', 'o1', { priority: 'background' }));
  runs.push(bg.execute('other', 'o2', { priority: 'background' }));
  await sleep(20);
  assert.deepEqual(llm.order, ['l0', 'l1']);
  assert.deepEqual(other.order, ['o1', 'o2'], 'lower priority, another agent: it starts');
  const st = bg.getQueueStatus();
  assert.deepEqual(st.agents.llm, { running: 2, queued: 4, concurrency: 2, globalConcurrency: null, rateLimit: null, nextStartAt: null });
  assert.equal(st.agents.other, undefined, 'agents without limits are not listed');
  assert.equal(st.running, 4);
  await drain(llm, () => llm.order.length === 6 && llm.pending() === 0);
  other.release();
  other.release();
  assert.deepEqual(await Promise.all(runs), ['l0', 'l1', 'l2', 'l3', 'l4', 'l5', 'o1', 'o2']);
  assert.equal(llm.peak(), 2);
  assert.equal(bg.getStats().limits.limitDeferred, 4, 'the four that waited for the limit');
});

test('within one agent, priority then FIFO order holds', async () => {
  const bg = make({ maxConcurrentAgents: 4 });
  const g = gated();
  bg.registerAgent('a', g.fn, { concurrency: 1 });
  const runs = [
    bg.execute('a', 'first'),
    bg.execute('a', 'low-1', { priority: 'low' }),
    bg.execute('a', 'high-1', { priority: 'high' }),
    bg.execute('a', 'low-2', { priority: 'low' }),
    bg.execute('a', 'high-2', { priority: 'high' }),
  ];
  await drain(g, () => g.order.length === 5 && g.pending() === 0);
  await Promise.all(runs);
  assert.deepEqual(g.order, ['first', 'high-1', 'high-2', 'low-1', 'low-2']);
  assert.equal(g.peak(), 1);
});

test('the global maxConcurrentAgents still applies on top of a larger agent limit', async () => {
  const bg = make({ maxConcurrentAgents: 2 });
  const g = gated();
  bg.registerAgent('a', g.fn, { concurrency: 5 });
  const runs = [1, 2, 3, 4].map((i) => bg.execute('a', `t${i}`));
  await sleep(20);
  assert.equal(g.live(), 2);
  await drain(g, () => g.order.length === 4 && g.pending() === 0);
  await Promise.all(runs);
  assert.equal(g.peak(), 2);
});

test('setAgentLimits at run time: a lower limit holds new starts back, a higher one starts them at once', async () => {
  const bg = make({ maxConcurrentAgents: 10 });
  const g = gated();
  bg.registerAgent('a', g.fn);
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(bg.execute('a', `r${i}`));
  await sleep(10);
  assert.equal(g.live(), 3, 'no limit yet');
  bg.setAgentLimits('a', { concurrency: 1 });
  for (let i = 3; i < 8; i++) runs.push(bg.execute('a', `r${i}`));
  await sleep(10);
  assert.equal(g.live(), 3, 'the running ones go on; nothing new starts');
  assert.equal(bg.getQueueStatus().agents.a.queued, 5);
  g.release();
  g.release();
  await sleep(10);
  assert.equal(g.live(), 1, 'two ended, one runs: at its limit');
  bg.setAgentLimits('a', { concurrency: 4 });
  // Synchronously: the core started three more.
  assert.equal(bg.getQueueStatus().agents.a.running, 4);
  assert.equal(bg.getQueueStatus().agents.a.queued, 2);
  bg.setAgentLimits('a', { concurrency: null });
  assert.equal(bg.getQueueStatus().agents.a, undefined, 'no limits left');
  assert.equal(bg.getQueueStatus().queued, 0, 'and everything started');
  await drain(g, () => g.order.length === 8 && g.pending() === 0);
  assert.equal((await Promise.all(runs)).length, 8);
});

test('limits set before registration and kept across re-registration; setAgentLimits merges keys', async () => {
  const bg = make({ maxConcurrentAgents: 10 });
  bg.setAgentLimits('later', { concurrency: 2 });
  const g = gated();
  bg.registerAgent('later', g.fn);
  bg.setAgentLimits('later', { rateLimit: { max: 100, intervalMs: 1000 } });
  assert.deepEqual(bg.getQueueStatus().agents.later, {
    running: 0,
    queued: 0,
    concurrency: 2,
    globalConcurrency: null,
    rateLimit: { max: 100, intervalMs: 1000 },
    nextStartAt: null,
  });
  bg.registerAgent('later', g.fn); // no limits given: they stay
  assert.equal(bg.getQueueStatus().agents.later.concurrency, 2);
  bg.setAgentLimits('later', { concurrency: Infinity });
  assert.equal(bg.getQueueStatus().agents.later.concurrency, null);
  assert.deepEqual(bg.getQueueStatus().agents.later.rateLimit, { max: 100, intervalMs: 1000 });
});

test('re-registering with limits: what the new limits start runs the new function', async () => {
  const bg = make({ maxConcurrentAgents: 10 });
  const old = gated();
  bg.registerAgent('a', old.fn, { concurrency: 1 });
  const runs = [1, 2, 3].map((i) => bg.execute('a', `t${i}`));
  await sleep(10);
  assert.deepEqual(old.order, ['t1']);
  const calls = [];
  bg.registerAgent('a', async (task) => calls.push(task) && `new:${task}`, { concurrency: 3 });
  old.release();
  assert.deepEqual((await Promise.all(runs)).slice(1), ['new:t2', 'new:t3']);
  assert.deepEqual(calls, ['t2', 't3']);
});

test('a cancelled execution that ignores its signal keeps its agent slot until the grace period ends', async () => {
  const bg = make({ maxConcurrentAgents: 5, cancelGraceMs: 300 });
  const calls = [];
  bg.registerAgent(
    'stubborn',
    async (task) => {
      calls.push({ task, at: performance.now() });
      await sleep(task === 'ignores' ? 2000 : 1);
      return task;
    },
    { concurrency: 1 },
  );
  const first = await bg.fireAndForget('stubborn', 'ignores');
  const next = bg.execute('stubborn', 'next');
  await sleep(20);
  const cancelledAt = performance.now();
  await bg.cancelExecution(first.executionId);
  assert.equal(bg.getQueueStatus().agents.stubborn.running, 1, 'the cancelled agent still holds the slot');
  assert.equal(await next, 'next');
  const waited = calls[1].at - cancelledAt;
  assert.ok(waited >= 250, `the next one started ${waited.toFixed(0)} ms after the cancel (grace 300 ms)`);
});

test('an agent that honours its signal frees its agent slot when it settles', async () => {
  const bg = make({ maxConcurrentAgents: 5, cancelGraceMs: 10000 });
  bg.registerAgent(
    'polite',
    (task, _options, { signal }) =>
      new Promise((resolve, reject) => {
        if (task === 'quick') return resolve(task);
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      }),
    { concurrency: 1 },
  );
  const first = await bg.fireAndForget('polite', 'waits');
  const next = bg.execute('polite', 'quick');
  await sleep(10);
  const t0 = performance.now();
  await bg.cancelExecution(first.executionId);
  assert.equal(await next, 'quick');
  assert.ok(performance.now() - t0 < 2000, 'long before the 10 s grace period');
});

test('registerCommand takes limits too', { skip: process.platform === 'win32' }, async () => {
  const bg = make({ maxConcurrentAgents: 5 });
  bg.registerCommand('nap', { command: process.execPath, args: ['-e', 'setTimeout(() => {}, 150)'] }, { concurrency: 1 });
  const a = bg.execute('nap', 'a');
  const b = bg.execute('nap', 'b');
  await sleep(30);
  assert.deepEqual(bg.getQueueStatus().agents.nap, { running: 1, queued: 1, concurrency: 1, globalConcurrency: null, rateLimit: null, nextStartAt: null });
  const [ra, rb] = await Promise.all([a, b]);
  assert.equal(ra.exitCode, 0);
  assert.equal(rb.exitCode, 0);
});

test('with a store, an agent at its limit does not keep other agents\' stored executions waiting', async (t) => {
  const url = `sqlite:${join(tempDir(t), 'limits.db')}`;
  const bg = make({ store: url, maxConcurrentAgents: 4 });
  const slowStarts = [];
  const fastEnds = [];
  bg.registerAgent(
    'slow',
    async (task) => {
      slowStarts.push(task);
      await sleep(100);
      return task;
    },
    { concurrency: 1 },
  );
  bg.registerAgent('fast', async (task) => {
    fastEnds.push(task);
    return task;
  });
  // Ten of the limited agent first (claimed in id order), then five others.
  const slow = [];
  for (let i = 0; i < 10; i++) slow.push(bg.execute('slow', `s${i}`));
  const fast = [];
  for (let i = 0; i < 5; i++) fast.push(bg.execute('fast', `f${i}`));
  const t0 = performance.now();
  await Promise.all(fast);
  const fastMs = performance.now() - t0;
  // Claiming the slow agent's rows for every free slot would leave the fast ones in the
  // store until nearly all ten had run one by one (~1 s).
  assert.ok(fastMs < 500, `the other agent's executions took ${fastMs.toFixed(0)} ms`);
  assert.ok(slowStarts.length <= 6, `${slowStarts.length} slow starts by then`);
  assert.equal((await Promise.all(slow)).length, 10);
  assert.deepEqual(slowStarts, ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9']);
});

test('bad limits are refused with a coded error naming the argument, and nothing is registered', () => {
  const bg = make();
  const bad = [
    [{ concurrency: 0 }, RangeError, /registerAgent: limits\.concurrency must be an integer >= 1/],
    [{ concurrency: 1.5 }, RangeError, /limits\.concurrency/],
    [{ concurrency: '2' }, TypeError, /limits\.concurrency/],
    [{ rateLimit: { max: 5 } }, TypeError, /limits\.rateLimit\.intervalMs/],
    [{ rateLimit: { max: 0, intervalMs: 10 } }, RangeError, /limits\.rateLimit\.max/],
    [{ rateLimit: 5 }, TypeError, /limits\.rateLimit must be \{ max, intervalMs \} or null/],
    [{ maxConcurrency: 2 }, TypeError, /unknown key "maxConcurrency"/],
    [[], TypeError, /registerAgent: limits must be an object/],
    [null, TypeError, /registerAgent: limits must be an object/],
  ];
  for (const [limits, Ctor, message] of bad) {
    assert.throws(() => bg.registerAgent('x', async () => 1, limits), (err) => {
      assert.ok(err instanceof Ctor, `${JSON.stringify(limits)}: ${err}`);
      assert.equal(err.code, 'ERR_INVALID_ARG');
      assert.match(err.message, message);
      return true;
    });
  }
  assert.equal(bg.getStatus().agents.includes('x'), false, 'nothing registered');
  assert.deepEqual(bg.getQueueStatus().agents, {}, 'no limits recorded');
  assert.throws(() => bg.setAgentLimits('', { concurrency: 1 }), { name: 'TypeError', code: 'ERR_INVALID_ARG' });
  assert.throws(() => bg.setAgentLimits('x'), { name: 'TypeError', message: /setAgentLimits: limits must be an object/ });
});

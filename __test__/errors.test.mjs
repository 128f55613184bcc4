// Configuration validation and errors.
import assert from 'node:assert/strict';
import BackgroundExecutor from '../index.mjs';
import { test, exitIfWorkLeftBehind, makeExecutor, sleep } from './helpers.mjs';

exitIfWorkLeftBehind();

/** How a value should appear in the message. */
function rendered(value) {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  return null; // objects, functions: only the key is required
}

function assertConfigError(config, key, value, Ctor) {
  let err;
  try {
    new BackgroundExecutor(config);
  } catch (e) {
    err = e;
  }
  const what = `${key} = ${typeof value === 'number' || typeof value === 'string' ? JSON.stringify(value) ?? String(value) : typeof value}`;
  assert.ok(err, `${what} was accepted`);
  assert.ok(err instanceof Ctor, `${what}: expected ${Ctor.name}, got ${err && err.name}: ${err && err.message}`);
  assert.equal(err.code, 'ERR_INVALID_ARG', `${what}: code`);
  assert.ok(err.message.includes(key), `${what}: message ${JSON.stringify(err.message)} does not name the key`);
  const r = rendered(value);
  if (r !== null) assert.ok(err.message.includes(r), `${what}: message ${JSON.stringify(err.message)} does not name the value`);
}

const T = TypeError;
const R = RangeError;

// [key, value, error class]
const BAD_CONFIG = [
  ['maxConcurrentAgents', 0, R],
  ['maxConcurrentAgents', -1, R],
  ['maxConcurrentAgents', 1.5, R],
  ['maxConcurrentAgents', NaN, R],
  ['maxConcurrentAgents', Infinity, R],
  ['maxConcurrentAgents', '5', T],
  ['maxConcurrentAgents', null, T],
  ['maxConcurrentAgents', true, T],
  ['maxCpuPercent', 0, R],
  ['maxCpuPercent', -10, R],
  ['maxCpuPercent', 100.5, R],
  ['maxCpuPercent', NaN, R],
  ['maxCpuPercent', Infinity, R],
  ['maxCpuPercent', '80', T],
  ['maxMemoryMb', 0, R],
  ['maxMemoryMb', -1, R],
  ['maxMemoryMb', NaN, R],
  ['maxMemoryMb', Infinity, R],
  ['maxMemoryMb', '2048', T],
  ['throttleIfExceeded', 'yes', T],
  ['throttleIfExceeded', 1, T],
  ['throttleIfExceeded', null, T],
  ['priorityLevels', 'high', T],
  ['priorityLevels', 5, T],
  ['priorityLevels', { urgent: 0 }, R],
  ['priorityLevels', { urgent: -1 }, R],
  ['priorityLevels', { urgent: 1.5 }, R],
  ['priorityLevels', { urgent: NaN }, R],
  ['priorityLevels', { urgent: Infinity }, R],
  ['priorityLevels', { urgent: '5' }, T],
  ['agents', 'monitor', T],
  ['agents', { monitor: 'not a function' }, T],
  ['agents', { monitor: 42 }, T],
  ['defaultAgent', 'monitor', T],
  ['defaultAgent', {}, T],
  ['defaultTimeoutMs', 0, R],
  ['defaultTimeoutMs', -1, R],
  ['defaultTimeoutMs', 1.5, R],
  ['defaultTimeoutMs', NaN, R],
  ['defaultTimeoutMs', Infinity, R],
  ['defaultTimeoutMs', '100', T],
  ['resultTtlMs', -1, R],
  ['resultTtlMs', 0.5, R],
  ['resultTtlMs', NaN, R],
  ['resultTtlMs', Infinity, R],
  ['resultTtlMs', '60000', T],
  ['maxRetainedResults', -1, R],
  ['maxRetainedResults', 2.5, R],
  ['maxRetainedResults', NaN, R],
  ['maxRetainedResults', Infinity, R],
  ['maxRetainedResults', '10', T],
  ['progressIntervalMs', 0, R],
  ['progressIntervalMs', -1, R],
  ['progressIntervalMs', 0.5, R],
  ['progressIntervalMs', NaN, R],
  ['progressIntervalMs', Infinity, R],
  ['progressIntervalMs', '1000', T],
  ['monitorIntervalMs', 0, R],
  ['monitorIntervalMs', -1, R],
  ['monitorIntervalMs', 0.5, R],
  ['monitorIntervalMs', NaN, R],
  ['monitorIntervalMs', Infinity, R],
  ['monitorIntervalMs', '1000', T],
  ['minConcurrentAgents', -1, R],
  ['minConcurrentAgents', 0.5, R],
  ['minConcurrentAgents', NaN, R],
  ['minConcurrentAgents', Infinity, R],
  ['minConcurrentAgents', '1', T],
];

test('the documented message: "maxConcurrentAgents must be an integer >= 1, got 0"', () => {
  assert.throws(
    () => new BackgroundExecutor({ maxConcurrentAgents: 0 }),
    (err) => {
      assert.ok(err instanceof RangeError);
      assert.equal(err.code, 'ERR_INVALID_ARG');
      assert.match(err.message, /^maxConcurrentAgents must be an integer >= 1\b.*, got 0$/);
      return true;
    },
  );
});

test('every key of the config table rejects wrong types, NaN, Infinity, negatives, 0 and non-integers where invalid', () => {
  const keys = new Set();
  for (const [key, value, Ctor] of BAD_CONFIG) {
    keys.add(key);
    assertConfigError({ [key]: value }, key, value, Ctor);
    // also next to valid keys
    assertConfigError({ maxConcurrentAgents: 2, throttleIfExceeded: false, [key]: value }, key, value, Ctor);
  }
  assert.equal(keys.size, 13, 'every config key is covered');
});

test('non-object configs throw a TypeError; undefined and null mean defaults', async () => {
  for (const bad of ['x', 5, true, [], () => {}]) {
    assert.throws(() => new BackgroundExecutor(bad), { name: 'TypeError', code: 'ERR_INVALID_ARG' }, String(bad));
  }
  for (const ok of [undefined, null, {}]) {
    const bg = new BackgroundExecutor(ok);
    assert.equal(bg.getQueueStatus().max_concurrent, 5);
    await bg.shutdown();
  }
});

test('boundary values that are valid are accepted (no old "||" defaults)', async () => {
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 1,
    maxCpuPercent: 100,
    maxMemoryMb: 0.5,
    throttleIfExceeded: false,
    priorityLevels: { only: 1 },
    agents: {},
    defaultAgent: (agent) => `default:${agent}`,
    defaultTimeoutMs: undefined,
    resultTtlMs: 0,
    maxRetainedResults: 0,
    progressIntervalMs: 1,
    monitorIntervalMs: 1,
    minConcurrentAgents: 0,
  });
  try {
    assert.equal(bg.getQueueStatus().max_concurrent, 1, '1 stays 1');
    assert.equal(await bg.execute('anything', 't'), 'default:anything');
  } finally {
    await bg.shutdown();
  }
  const bg2 = new BackgroundExecutor({ maxCpuPercent: 0.1, maxConcurrentAgents: 7 });
  assert.equal(bg2.getQueueStatus().max_concurrent, 7);
  await bg2.shutdown();
});

test('an unknown config key only emits a process warning naming it', async () => {
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  let bg;
  try {
    bg = new BackgroundExecutor({ maxConcurentAgents: 3, throttleIfExceeded: false, agents: { ok: () => 'ok' } });
    await sleep(20);
    const mine = warnings.filter((w) => String(w.message).includes('maxConcurentAgents'));
    assert.equal(mine.length, 1, `warnings: ${warnings.map((w) => w.message).join(' | ')}`);
    assert.equal(bg.getQueueStatus().max_concurrent, 5, 'the misspelt key changed nothing');
    assert.equal(await bg.execute('ok', 't'), 'ok');
  } finally {
    process.off('warning', onWarning);
    if (bg) await bg.shutdown();
  }
});

test('ResourceMonitor options are validated too', () => {
  return import('../index.mjs').then(({ ResourceMonitor }) => {
    assert.throws(() => new ResourceMonitor({ interval: 0 }), { name: 'RangeError', code: 'ERR_INVALID_ARG' });
    assert.throws(() => new ResourceMonitor({ cpuThreshold: 150 }), { name: 'RangeError', code: 'ERR_INVALID_ARG' });
    assert.throws(() => new ResourceMonitor({ memoryThreshold: 'x' }), { name: 'TypeError', code: 'ERR_INVALID_ARG' });
  });
});

// ------------------------------------------------------------------ bad calls

// The agents of the bad-call tests: makeExecutor({ agents: AGENTS }).
const AGENTS = {
  ok: (task) => `ok:${task}`,
  slow: (task, options, ctx) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => resolve('slow'), 5000);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      });
    }),
};

/**
 * Calls `fn` (which must not throw synchronously), expects a rejection with `Ctor` and
 * `code`, then checks that nothing was submitted and that a good execution still works.
 */
async function expectRejection(bg, label, fn, Ctor, code) {
  const before = bg.getStatus().submitted;
  let p;
  try {
    p = fn();
  } catch (e) {
    assert.fail(`${label}: threw synchronously (${e && e.name}: ${e && e.message}) instead of rejecting`);
  }
  assert.ok(p && typeof p.then === 'function', `${label}: did not return a promise`);
  await assert.rejects(p, (err) => {
    assert.ok(err instanceof Ctor, `${label}: expected ${Ctor.name}, got ${err && err.name}: ${err && err.message}`);
    assert.equal(err.code, code, `${label}: code`);
    assert.equal(typeof err.message, 'string');
    assert.ok(err.message.length > 0);
    return true;
  });
  assert.equal(bg.getStatus().submitted, before, `${label}: a bad call submitted something`);
  assert.equal(await bg.execute('ok', label), `ok:${label}`, `${label}: the next good call works`);
}

const BAD_AGENT = ['', 5, null, undefined, {}, ['ok'], Symbol('ok')];
const BAD_TASK = [5, null, undefined, {}, ['t']];
const BAD_OPTIONS = ['high', 5, true];
const BAD_OPTION_FIELDS = [
  [{ timeout: 0 }, R, 'ERR_INVALID_ARG'],
  [{ timeout: -5 }, R, 'ERR_INVALID_ARG'],
  [{ timeout: 1.5 }, R, 'ERR_INVALID_ARG'],
  [{ timeout: NaN }, R, 'ERR_INVALID_ARG'],
  [{ timeout: Infinity }, R, 'ERR_INVALID_ARG'],
  [{ timeout: '100' }, T, 'ERR_INVALID_ARG'],
  [{ signal: 'abort' }, T, 'ERR_INVALID_ARG'],
  [{ signal: { aborted: false } }, T, 'ERR_INVALID_ARG'],
  [{ onProgress: 'log' }, T, 'ERR_INVALID_ARG'],
  [{ priority: 'urgent' }, R, 'ERR_UNKNOWN_PRIORITY'],
  [{ priority: 'HIGH' }, R, 'ERR_UNKNOWN_PRIORITY'],
  [{ priority: 5 }, R, 'ERR_UNKNOWN_PRIORITY'],
  [{ priority: 'toString' }, R, 'ERR_UNKNOWN_PRIORITY'],
  [{ priority: '__proto__' }, R, 'ERR_UNKNOWN_PRIORITY'],
];

const SUBMITTERS = {
  fireAndForget: (bg, agent, task, options) => bg.fireAndForget(agent, task, options),
  executeWithCallback: (bg, agent, task, options) => bg.executeWithCallback(agent, task, () => {}, options),
  executeWatched: (bg, agent, task, options) => bg.executeWatched(agent, task, options),
  execute: (bg, agent, task, options) => bg.execute(agent, task, options),
  executeMultiple: (bg, agent, task, options) => bg.executeMultiple([agent], task, options),
};

for (const [method, submit] of Object.entries(SUBMITTERS)) {
  test(`${method}: bad arguments reject (never throw) with a coded TypeError/RangeError; the next good call works`, async () => {
    const bg = makeExecutor({ agents: AGENTS });
    try {
      for (const agent of BAD_AGENT) {
        const label = `${method}(agent=${typeof agent === 'symbol' ? 'symbol' : JSON.stringify(agent)})`;
        await expectRejection(bg, label, () => submit(bg, agent, 't'), T, 'ERR_INVALID_ARG');
      }
      for (const task of BAD_TASK) {
        await expectRejection(bg, `${method}(task=${JSON.stringify(task)})`, () => submit(bg, 'ok', task), T, 'ERR_INVALID_ARG');
      }
      for (const options of BAD_OPTIONS) {
        await expectRejection(bg, `${method}(options=${JSON.stringify(options)})`, () => submit(bg, 'ok', 't', options), T, 'ERR_INVALID_ARG');
      }
      for (const [options, Ctor, code] of BAD_OPTION_FIELDS) {
        const label = `${method}(options=${JSON.stringify(options, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))})`;
        await expectRejection(bg, label, () => submit(bg, 'ok', 't', options), Ctor, code);
      }
      // valid option values are accepted
      const good = await submit(bg, 'ok', 't', { priority: 'critical', timeout: 1000, signal: new AbortController().signal, onProgress: () => {} });
      assert.ok(good !== undefined);
    } finally {
      await bg.shutdown();
    }
  });
}

test('executeWithCallback: a callback that is not a function, null or undefined rejects with TypeError', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const cb of ['fn', 5, {}, true]) {
      await expectRejection(bg, `callback=${JSON.stringify(cb)}`, () => bg.executeWithCallback('ok', 't', cb), T, 'ERR_INVALID_ARG');
    }
    // null / undefined callbacks are fine
    const a = await bg.executeWithCallback('ok', 't', null);
    const b = await bg.executeWithCallback('ok', 't', undefined, { priority: 'high' });
    assert.equal((await bg.waitFor(a.executionId)).status, 'completed');
    assert.equal((await bg.waitFor(b.executionId)).status, 'completed');
  } finally {
    await bg.shutdown();
  }
});

test('executeMultiple: empty / non-array agents and bad consistencyCheck reject with TypeError', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const agents of [[], 'ok', null, undefined, 5, { length: 1, 0: 'ok' }]) {
      await expectRejection(bg, `executeMultiple(${JSON.stringify(agents)})`, () => bg.executeMultiple(agents, 't'), T, 'ERR_INVALID_ARG');
    }
    await expectRejection(bg, 'executeMultiple([ok, 5])', () => bg.executeMultiple(['ok', 5], 't'), T, 'ERR_INVALID_ARG');
    await expectRejection(bg, 'consistencyCheck: "x"', () => bg.executeMultiple(['ok'], 't', { consistencyCheck: 'x' }), T, 'ERR_INVALID_ARG');
  } finally {
    await bg.shutdown();
  }
});

test('cancelExecution / waitFor: non-string ids reject with TypeError; unknown ids resolve as documented', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const id of [5, null, undefined, {}, ['exec-1']]) {
      await expectRejection(bg, `cancelExecution(${JSON.stringify(id)})`, () => bg.cancelExecution(id), T, 'ERR_INVALID_ARG');
      await expectRejection(bg, `waitFor(${JSON.stringify(id)})`, () => bg.waitFor(id), T, 'ERR_INVALID_ARG');
    }
    assert.deepEqual(await bg.cancelExecution('exec-424242'), { success: false, error: 'Execution not found' });
    assert.deepEqual(await bg.cancelExecution('garbage'), { success: false, error: 'Execution not found' });
    assert.deepEqual(await bg.waitFor('exec-424242'), { found: false });
    const { executionId } = await bg.fireAndForget('ok', 't');
    await bg.waitFor(executionId);
    const r = await bg.cancelExecution(executionId);
    assert.equal(r.success, false);
    assert.equal(r.error, 'Cannot cancel execution in completed status');
  } finally {
    await bg.shutdown();
  }
});

test('unknown priority: RangeError ERR_UNKNOWN_PRIORITY listing the valid names (default and custom levels)', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    await assert.rejects(bg.fireAndForget('ok', 't', { priority: 'urgent' }), (err) => {
      assert.ok(err instanceof RangeError);
      assert.equal(err.code, 'ERR_UNKNOWN_PRIORITY');
      for (const name of ['critical', 'high', 'medium', 'low', 'background']) assert.ok(err.message.includes(name), err.message);
      assert.ok(err.message.includes('urgent'), 'names the bad value');
      return true;
    });
  } finally {
    await bg.shutdown();
  }
  const custom = new BackgroundExecutor({ throttleIfExceeded: false, priorityLevels: { urgent: 10, normal: 5, idle: 1 }, agents: { ok: () => 1 } });
  try {
    await assert.rejects(custom.execute('ok', 't', { priority: 'high' }), (err) => {
      assert.ok(err instanceof RangeError);
      assert.equal(err.code, 'ERR_UNKNOWN_PRIORITY');
      for (const name of ['urgent', 'normal', 'idle']) assert.ok(err.message.includes(name), err.message);
      return true;
    });
    // a mode whose default name is missing gets the lowest level
    const { executionId } = await custom.fireAndForget('ok', 't');
    assert.equal(custom.getExecutionStatus(executionId).priority, 'idle');
    const w = await custom.executeWatched('ok', 't', { priority: 'urgent' });
    assert.equal(custom.getExecutionStatus(w.executionId).priority, 'urgent');
  } finally {
    await custom.shutdown();
  }
});

test('registerAgent / unregisterAgent / setConcurrency throw coded TypeError / RangeError', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const name of ['', 5, null, undefined, {}]) {
      assert.throws(() => bg.registerAgent(name, () => 1), { name: 'TypeError', code: 'ERR_INVALID_ARG' }, `registerAgent(${JSON.stringify(name)})`);
    }
    for (const fn of ['fn', 5, null, undefined, {}]) {
      assert.throws(() => bg.registerAgent('x', fn), { name: 'TypeError', code: 'ERR_INVALID_ARG' }, `registerAgent(x, ${JSON.stringify(fn)})`);
    }
    assert.equal(await bg.execute('ok', 'r'), 'ok:r');
    await assert.rejects(bg.execute('x', 't'), { code: 'ERR_AGENT_NOT_FOUND' }, 'a failed registration registered nothing');

    for (const n of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => bg.setConcurrency(n), (err) => {
        assert.ok(err instanceof RangeError, `setConcurrency(${n}): ${err.name}`);
        assert.equal(err.code, 'ERR_INVALID_ARG');
        assert.ok(err.message.includes(String(n)), err.message);
        return true;
      });
    }
    for (const n of ['3', null, undefined, {}]) {
      assert.throws(() => bg.setConcurrency(n), { name: 'TypeError', code: 'ERR_INVALID_ARG' }, `setConcurrency(${JSON.stringify(n)})`);
    }
    assert.equal(bg.getQueueStatus().max_concurrent, 5, 'bad setConcurrency calls changed nothing');
    bg.setConcurrency(2);
    assert.equal(bg.getQueueStatus().max_concurrent, 2);
    assert.equal(await bg.execute('ok', 'after'), 'ok:after');
  } finally {
    await bg.shutdown();
  }
});

test('shutdown(): bad options reject and leave the executor working', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const opts of ['now', 5, { mode: 'nuke' }, { mode: 5 }, { timeoutMs: -1 }, { timeoutMs: 'x' }]) {
      let p;
      assert.doesNotThrow(() => {
        p = bg.shutdown(opts);
      });
      await assert.rejects(p, (err) => {
        assert.ok(err instanceof TypeError || err instanceof RangeError, `${JSON.stringify(opts)}: ${err}`);
        assert.equal(err.code, 'ERR_INVALID_ARG');
        return true;
      });
      assert.equal(await bg.execute('ok', 'still'), 'ok:still', `after shutdown(${JSON.stringify(opts)})`);
    }
  } finally {
    await bg.shutdown();
  }
});

test('every error the package creates carries its code', async () => {
  const bg = new BackgroundExecutor({
    throttleIfExceeded: false,
    agents: {
      slow: (task, options, ctx) =>
        new Promise((resolve, reject) => {
          const t = setTimeout(() => resolve('slow'), 5000);
          ctx.signal.addEventListener('abort', () => {
            clearTimeout(t);
            reject(ctx.signal.reason);
          });
        }),
    },
  });
  try {
    // ERR_AGENT_NOT_FOUND, including names that live on Object.prototype
    for (const name of ['nobody', '__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      await assert.rejects(bg.execute(name, 't'), (err) => {
        assert.ok(err instanceof Error);
        assert.equal(err.code, 'ERR_AGENT_NOT_FOUND');
        assert.equal(err.message, `No agent registered for "${name}"`);
        return true;
      });
    }
    bg.registerAgent('__proto__', () => 'proto agent');
    assert.equal(await bg.execute('__proto__', 't'), 'proto agent');

    // ERR_EXECUTION_TIMEOUT
    let timeoutSignal;
    bg.registerAgent('watchSignal', (task, options, ctx) => {
      timeoutSignal = ctx.signal;
      return new Promise(() => {});
    });
    await assert.rejects(bg.execute('watchSignal', 't', { timeout: 50 }), (err) => {
      assert.ok(err instanceof Error);
      assert.equal(err.code, 'ERR_EXECUTION_TIMEOUT');
      return true;
    });
    assert.equal(timeoutSignal.aborted, true);
    assert.equal(timeoutSignal.reason.code, 'ERR_EXECUTION_TIMEOUT');

    // ERR_EXECUTION_CANCELLED via cancelExecution, via the caller's signal, and for an already-aborted signal
    let id;
    bg.once('execution-started', (d) => (id = d.executionId));
    const p = bg.execute('slow', 't');
    await sleep(10);
    assert.deepEqual((await bg.cancelExecution(id)).success, true);
    await assert.rejects(p, { code: 'ERR_EXECUTION_CANCELLED' });
    const c = new AbortController();
    const p2 = bg.execute('slow', 't', { signal: c.signal });
    await sleep(10);
    c.abort(new Error('user gave up'));
    await assert.rejects(p2, { code: 'ERR_EXECUTION_CANCELLED' });
    await assert.rejects(bg.execute('slow', 't', { signal: AbortSignal.abort() }), { code: 'ERR_EXECUTION_CANCELLED' });
  } finally {
    await bg.shutdown();
  }
  // ERR_EXECUTOR_SHUT_DOWN
  await assert.rejects(bg.execute('slow', 't'), { code: 'ERR_EXECUTOR_SHUT_DOWN' });
});

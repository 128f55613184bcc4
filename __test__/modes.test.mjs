// Execution modes, results, errors, callbacks, agent resolution, context and progress
//.
import assert from 'node:assert/strict';
import BackgroundExecutor, { BackgroundExecutor as Named } from '../index.mjs';
import { test, shutDownAfterEach, sleep, gate, waitUntil, settleOf, terminalEvents, assertOneTerminal } from './helpers.mjs';

// Executors made with create() are shut down after each test, even a failed one.
const create = shutDownAfterEach();

// ----- entry points ----------------------------------------------------------------------

test('default and named ESM exports are the same BackgroundExecutor class', async () => {
  assert.equal(typeof BackgroundExecutor, 'function');
  assert.equal(BackgroundExecutor, Named);
  const bg = create(undefined, Named);
  assert.ok(bg instanceof BackgroundExecutor);
  assert.equal(typeof bg.on, 'function');
  await bg.shutdown();
});

// ----- return shapes ---------------------------------------------------------------------

test('fireAndForget / executeWithCallback / executeWatched return { executionId, mode, status } with the real status', async () => {
  const g = gate();
  const bg = create({ maxConcurrentAgents: 1, agents: { hold: () => g.promise, quick: () => 'q' } });
  const ff = await bg.fireAndForget('hold', 't1');
  assert.deepEqual(Object.keys(ff).sort(), ['executionId', 'mode', 'status']);
  assert.equal(ff.mode, 'fire-and-forget');
  assert.equal(ff.status, 'running');
  assert.equal(typeof ff.executionId, 'string');
  assert.ok(ff.executionId.length > 0);

  const cb = await bg.executeWithCallback('quick', 't2', () => {});
  assert.equal(cb.mode, 'async-callback');
  assert.equal(cb.status, 'queued');
  const w = await bg.executeWatched('quick', 't3');
  assert.equal(w.mode, 'watched');
  assert.equal(w.status, 'queued');
  const ff2 = await bg.fireAndForget('quick', 't4');
  assert.equal(ff2.mode, 'fire-and-forget');
  assert.equal(ff2.status, 'queued');

  const ids = [ff.executionId, cb.executionId, w.executionId, ff2.executionId];
  assert.equal(new Set(ids).size, 4, 'execution ids are unique');
  assert.equal(bg.getExecutionStatus(ff.executionId).status, 'running');
  assert.equal(bg.getExecutionStatus(cb.executionId).status, 'queued');

  g.open('held');
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  assert.deepEqual(
    finals.map((s) => s.status),
    ['completed', 'completed', 'completed', 'completed'],
  );
  assert.equal(finals[0].result, 'held');
  assert.equal(finals[3].result, 'q');
  await bg.shutdown();
});

test('executeWithCallback and executeWatched report running when a slot is free', async () => {
  const g = gate();
  const bg = create({ maxConcurrentAgents: 2, agents: { hold: () => g.promise } });
  const cb = await bg.executeWithCallback('hold', 'a', null);
  const w = await bg.executeWatched('hold', 'b');
  const third = await bg.executeWithCallback('hold', 'c', undefined);
  assert.equal(cb.status, 'running');
  assert.equal(w.status, 'running');
  assert.equal(third.status, 'queued');
  g.open(1);
  await bg.waitFor(third.executionId);
  await bg.shutdown();
});

// ----- results ---------------------------------------------------------------------------

test('execute() resolves with the exact value the agent returned (identity, Buffer, class instance, undefined)', async () => {
  class Report {
    constructor(n) {
      this.n = n;
    }
    twice() {
      return this.n * 2;
    }
  }
  const obj = { nested: { a: [1, 2, 3] }, fn() {} };
  const buf = Buffer.from([0, 1, 2, 255]);
  const inst = new Report(21);
  const date = new Date(0);
  const bg = create({
    agents: {
      obj: async () => obj,
      buf: async () => buf,
      inst: () => inst, // synchronous return value
      undef: async () => undefined,
      date: async () => date,
      big: async () => 10n,
    },
  });
  const r1 = await bg.execute('obj', 't');
  assert.ok(r1 === obj, 'same object identity');
  assert.equal(typeof r1.fn, 'function', 'functions survive: no JSON round trip');
  const r2 = await bg.execute('buf', 't');
  assert.ok(r2 === buf);
  assert.ok(Buffer.isBuffer(r2));
  const r3 = await bg.execute('inst', 't');
  assert.ok(r3 === inst);
  assert.ok(r3 instanceof Report);
  assert.equal(r3.twice(), 42);
  const r4 = await bg.execute('undef', 't');
  assert.equal(r4, undefined);
  assert.ok((await bg.execute('date', 't')) === date);
  assert.equal(await bg.execute('big', 't'), 10n);
  await bg.shutdown();
});

test('waitFor() resolves with the status object once finished; results keep their identity', async () => {
  const value = { deep: { x: 1 } };
  const err = new Error('nope');
  const bg = create({
    agents: {
      ok: async () => {
        await sleep(30);
        return value;
      },
      bad: async () => {
        await sleep(10);
        throw err;
      },
    },
  });
  const { executionId } = await bg.fireAndForget('ok', 'task-ok');
  const p = bg.waitFor(executionId);
  assert.equal(bg.getExecutionStatus(executionId).status, 'running');
  const s = await p;
  assert.equal(s.found, true);
  assert.equal(s.id, executionId);
  assert.equal(s.agent, 'ok');
  assert.equal(s.task, 'task-ok');
  assert.equal(s.mode, 'fire-and-forget');
  assert.equal(s.status, 'completed');
  assert.ok(s.result === value);
  assert.equal(typeof s.duration, 'number');
  assert.ok(s.duration >= 20, `duration ${s.duration}`);

  const f = await bg.fireAndForget('bad', 'task-bad');
  const sf = await bg.waitFor(f.executionId);
  assert.equal(sf.status, 'failed');
  assert.equal(sf.error, 'nope');
  // waiting on an already finished execution resolves at once
  const again = await bg.waitFor(executionId);
  assert.equal(again.status, 'completed');
  assert.ok(again.result === value);
  await bg.shutdown();
});

// ----- errors ----------------------------------------------------------------------------

test('rejections deliver the original error object to execute(), callbacks and events', async () => {
  const err = new TypeError('boom');
  err.extra = 42;
  const syncErr = new RangeError('sync boom');
  const bg = create({
    agents: {
      rejects: async () => {
        await sleep(5);
        throw err;
      },
      throwsSync: () => {
        throw syncErr;
      },
    },
  });
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));
  const r = await settleOf(bg.execute('rejects', 't'));
  assert.equal(r.ok, false);
  assert.ok(r.value === err, 'execute() rejects with the same error object');
  const r2 = await settleOf(bg.execute('throwsSync', 't'));
  assert.equal(r2.ok, false);
  assert.ok(r2.value === syncErr, 'a synchronous throw reaches execute() unchanged');

  const calls = [];
  const done = gate();
  await bg.executeWithCallback(
    'rejects',
    't',
    (...args) => {
      calls.push(args);
      done.open();
    },
  );
  await done.promise;
  await sleep(30);
  assert.equal(calls.length, 1, 'callback called exactly once');
  assert.ok(calls[0][0] === err, 'callback receives the same error object');
  assert.equal(calls[0][1], undefined);

  assert.equal(failed.length, 3);
  for (const e of failed) {
    assert.equal(typeof e.error, 'string');
    assert.ok(typeof e.executionId === 'string');
  }
  assert.equal(failed[0].error, 'boom');
  assert.ok(failed[0].errorObject === err);
  assert.equal(failed[0].agent, 'rejects');
  assert.equal(failed[1].error, 'sync boom');
  await bg.shutdown();
});

test('non-Error rejections (undefined, a string, a plain object) reach execute() and callbacks unchanged', async () => {
  const plain = { reason: 'plain object' };
  const values = { undef: undefined, str: 'just a string', obj: plain, nul: null, num: 7 };
  const agents = {};
  for (const [k, v] of Object.entries(values)) agents[k] = () => Promise.reject(v);
  agents.throwsStr = () => {
    throw 'thrown string';
  };
  const bg = create({ agents });
  const failedEvents = [];
  bg.on('execution-failed', (e) => failedEvents.push(e));
  for (const [k, v] of Object.entries(values)) {
    const r = await settleOf(bg.execute(k, 't'));
    assert.equal(r.ok, false, `${k} must reject`);
    assert.ok(Object.is(r.value, v), `${k}: rejection value must be the original`);
  }
  const r = await settleOf(bg.execute('throwsStr', 't'));
  assert.equal(r.ok, false);
  assert.equal(r.value, 'thrown string');

  for (const [k, v] of Object.entries(values)) {
    const calls = [];
    const done = gate();
    await bg.executeWithCallback(k, 't', (...args) => {
      calls.push(args);
      done.open();
    });
    await done.promise;
    await sleep(5);
    assert.equal(calls.length, 1);
    // the failure must be visible to the callback: err is the original value
    assert.ok(Object.is(calls[0][0], v), `${k}: callback err must be the original`);
    assert.equal(calls[0][1], undefined);
  }
  // events still carry a string message
  assert.equal(failedEvents.length, 6 + 5);
  for (const e of failedEvents) assert.equal(typeof e.error, 'string');
  assert.equal(failedEvents[1].error, 'just a string');
  // and the status reports the execution as failed, not completed
  const { executionId } = await bg.fireAndForget('undef', 't');
  const s = await bg.waitFor(executionId);
  assert.equal(s.status, 'failed');
  await bg.shutdown();
});

test('a thrown value that cannot be read (revoked Proxy, throwing message or code getter) fails its execution once, after its retries', async () => {
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const trap = new Proxy({}, {
    get(_, key) {
      throw new Error(`get ${String(key)}`);
    },
  });
  const badMessage = Object.defineProperty(new Error('x'), 'message', {
    get() {
      throw new Error('message getter');
    },
  });
  const badCode = Object.defineProperty(new Error('readable'), 'code', {
    get() {
      throw new Error('code getter');
    },
  });
  const values = { revoked, trap, badMessage, badCode };
  const calls = {};
  const agents = {};
  for (const [k, v] of Object.entries(values)) {
    calls[k] = 0;
    agents[k] = async () => {
      calls[k]++;
      throw v;
    };
  }
  const bg = create({ agents, retries: 1, retryDelayMs: 1 });
  const byId = terminalEvents(bg);
  const failed = new Map();
  bg.on('execution-failed', (e) => failed.set(e.executionId, e));
  for (const [k, v] of Object.entries(values)) {
    const { executionId } = await bg.fireAndForget(k, 't');
    const r = await settleOf(bg.execute(k, 't'));
    assert.equal(r.ok, false, `${k} rejects`);
    assert.ok(Object.is(r.value, v), `${k}: the rejection is the thrown value itself`);
    const s = await bg.waitFor(executionId);
    assert.equal(s.status, 'failed', k);
    assert.equal(bg.getExecutionStatus(executionId).status, 'failed', k);
    assert.equal(calls[k], 4, `${k}: two executions, each retried once`);
    assertOneTerminal(byId, [executionId], 'execution-failed');
    const e = failed.get(executionId);
    assert.equal(typeof e.error, 'string', k);
    assert.ok(Object.is(e.errorObject, v), k);
    assert.equal(e.code, undefined, k);
  }
  assert.equal(failed.get('exec-1').error, 'Unreadable error: an object');
  assert.equal(failed.get('exec-5').error, 'Unreadable error: an Error');
  assert.equal(failed.get('exec-7').error, 'readable', 'a readable message is kept when only code throws');
  assert.deepEqual(bg.getStatus().failed, 8);
});

test('callback is called exactly once with (null, result) on success', async () => {
  const result = { ok: 1 };
  const bg = create({ agents: { a: async () => result } });
  const calls = [];
  const done = gate();
  const completed = [];
  bg.on('execution-completed', (e) => completed.push(e));
  const { executionId } = await bg.executeWithCallback('a', 't', (...args) => {
    calls.push(args);
    done.open();
  });
  await done.promise;
  await sleep(50);
  assert.equal(calls.length, 1);
  assert.equal(calls[0][0], null);
  assert.ok(calls[0][1] === result);
  assert.equal(completed.length, 1);
  assert.equal(completed[0].executionId, executionId);
  assert.equal(completed[0].agent, 'a');
  assert.ok(completed[0].result === result);
  assert.equal(typeof completed[0].duration, 'number');
  await bg.shutdown();
});

test('a throwing callback emits callback-error { executionId, error } and nothing crashes', async () => {
  const thrown = new Error('callback exploded');
  const bg = create({ agents: { a: async () => 'r', b: async () => Promise.reject(new Error('x')) } });
  const cbErrors = [];
  bg.on('callback-error', (e) => cbErrors.push(e));
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  try {
    let calls = 0;
    const { executionId } = await bg.executeWithCallback('a', 't', () => {
      calls++;
      throw thrown;
    });
    const { executionId: id2 } = await bg.executeWithCallback('b', 't', () => {
      calls++;
      throw thrown;
    });
    await waitUntil(() => cbErrors.length === 2, 'two callback-error events', { timeoutMs: 3000 });
    await sleep(30);
    assert.equal(calls, 2, 'each callback called exactly once even though it threw');
    assert.equal(cbErrors.length, 2);
    assert.deepEqual(cbErrors.map((e) => e.executionId).sort(), [executionId, id2].sort());
    for (const e of cbErrors) assert.ok(e.error === thrown);
    assert.equal(bg.getExecutionStatus(executionId).status, 'completed');
    assert.equal(bg.getExecutionStatus(id2).status, 'failed');
    assert.equal(uncaught.length, 0);
    // the executor keeps working
    assert.equal(await bg.execute('a', 't'), 'r');
  } finally {
    process.off('uncaughtException', onUncaught);
  }
  await bg.shutdown();
});

test('fire-and-forget agents that fail produce no unhandledRejection', async () => {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const bg = create({
      maxConcurrentAgents: 2,
      agents: {
        rejects: async () => {
          await sleep(5);
          throw new Error('ff rejected');
        },
        throwsSync: () => {
          throw new Error('ff sync');
        },
        rejectsUndefined: () => Promise.reject(undefined),
        // a thenable whose then() throws
        badThenable: () => ({
          then() {
            throw new Error('thenable threw');
          },
        }),
      },
    });
    const ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await bg.fireAndForget('rejects', `t${i}`)).executionId);
      ids.push((await bg.fireAndForget('throwsSync', `t${i}`)).executionId);
      ids.push((await bg.fireAndForget('rejectsUndefined', `t${i}`)).executionId);
      await assert.rejects(bg.fireAndForget('no-such-agent', `t${i}`), { code: 'ERR_AGENT_NOT_FOUND' });
      ids.push((await bg.fireAndForget('badThenable', `t${i}`)).executionId);
    }
    const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
    assert.ok(finals.every((s) => s.status === 'failed'), 'all failed');
    // give any stray rejection time to be reported
    await sleep(50);
    await new Promise((r) => setImmediate(r));
    assert.equal(unhandled.length, 0, `unhandled rejections: ${unhandled.map(String)}`);
    await bg.shutdown();
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

// ----- agent resolution ------------------------------------------------------------------

test('agents registered via config.agents and registerAgent run; unregisterAgent removes them', async () => {
  const bg = create({ agents: { fromConfig: (task) => `config:${task}` } });
  bg.registerAgent('fromRegister', async (task) => `register:${task}`);
  assert.equal(await bg.execute('fromConfig', 'a'), 'config:a');
  assert.equal(await bg.execute('fromRegister', 'b'), 'register:b');
  // re-registering replaces
  bg.registerAgent('fromConfig', () => 'replaced');
  assert.equal(await bg.execute('fromConfig', 'a'), 'replaced');
  bg.unregisterAgent('fromRegister');
  const r = await settleOf(bg.execute('fromRegister', 'b'));
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_AGENT_NOT_FOUND');
  assert.equal(r.value.message, 'No agent registered for "fromRegister"');
  await bg.shutdown();
});

test('an unknown agent is refused at submission with ERR_AGENT_NOT_FOUND in every single mode; executeMultiple reports it as that agent\'s failure', async () => {
  const bg = create();
  const events = terminalEvents(bg);
  const queued = [];
  bg.on('execution-queued', (e) => queued.push(e.executionId));
  const refused = (name) => (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'ERR_AGENT_NOT_FOUND');
    assert.equal(err.message, `No agent registered for "${name}"`);
    assert.equal(err.agent, name);
    return true;
  };
  await assert.rejects(bg.execute('ghost', 't'), refused('ghost'));
  let called = 0;
  await assert.rejects(
    bg.executeWithCallback('ghost-cb', 't', () => called++),
    refused('ghost-cb'),
  );
  await assert.rejects(bg.fireAndForget('ghost-ff', 't'), refused('ghost-ff'));
  await assert.rejects(bg.executeWatched('ghost-w', 't'), refused('ghost-w'));
  await sleep(20);
  assert.equal(called, 0, 'no callback for a refused submission');
  assert.deepEqual(queued, [], 'nothing was queued');
  assert.equal(bg.getStatus().submitted, 0);

  const { results, report } = await bg.executeMultiple(['ghost-m', 'ghost-m2'], 't');
  assert.deepEqual(
    results.map((r) => [r.status, r.errorObject.code, r.error]),
    [
      ['failed', 'ERR_AGENT_NOT_FOUND', 'No agent registered for "ghost-m"'],
      ['failed', 'ERR_AGENT_NOT_FOUND', 'No agent registered for "ghost-m2"'],
    ],
  );
  assert.equal(report.failed, 2);
  for (const r of results) assert.equal(events.get(r.id)[0].name, 'execution-failed');
  assertOneTerminal(events, results.map((r) => r.id));

  // Registered later, the same name runs.
  bg.registerAgent('ghost', (task) => `now:${task}`);
  assert.equal(await bg.execute('ghost', 't'), 'now:t');
  await bg.shutdown();
});

test('defaultAgent receives (agent, task, options, context) for names with no registered agent', async () => {
  const seen = [];
  const bg = create({
    agents: { known: () => 'known-result' },
    defaultAgent: (agent, task, options, context) => {
      seen.push({ agent, task, options, context });
      return { handledBy: 'default', agent };
    },
  });
  const opts = { priority: 'high', custom: { x: 1 } };
  const r = await bg.execute('whatever', 'the-task', opts);
  assert.deepEqual(r, { handledBy: 'default', agent: 'whatever' });
  assert.equal(seen.length, 1);
  assert.equal(seen[0].agent, 'whatever');
  assert.equal(seen[0].task, 'the-task');
  assert.ok(seen[0].options === opts, 'options passed unchanged');
  const ctx = seen[0].context;
  assert.equal(ctx.agent, 'whatever');
  assert.equal(ctx.task, 'the-task');
  assert.ok(ctx.options === opts);
  assert.equal(ctx.priority, 'high');
  assert.ok(ctx.signal instanceof AbortSignal);
  // a registered agent wins over defaultAgent
  assert.equal(await bg.execute('known', 't'), 'known-result');
  assert.equal(seen.length, 1);
  await bg.shutdown();
});

test('__proto__, constructor and toString are ordinary names: not found unless registered, work when registered', async () => {
  const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
  const bg = create();
  for (const name of names) {
    const r = await settleOf(bg.execute(name, 't'));
    assert.equal(r.ok, false, `${name} must not resolve to anything`);
    assert.equal(r.value && r.value.code, 'ERR_AGENT_NOT_FOUND', `${name}: code`);
    assert.equal(r.value.message, `No agent registered for "${name}"`);
  }
  for (const name of names) bg.registerAgent(name, (task) => `${name}:${task}`);
  for (const name of names) assert.equal(await bg.execute(name, 'x'), `${name}:x`);
  for (const name of names) bg.unregisterAgent(name);
  for (const name of names) {
    const r = await settleOf(bg.execute(name, 't'));
    assert.equal(r.value && r.value.code, 'ERR_AGENT_NOT_FOUND');
  }
  await bg.shutdown();

  // config.agents with own keys of those names (computed keys make real own properties)
  const agents = {};
  for (const name of names) {
    Object.defineProperty(agents, name, { value: () => `cfg-${name}`, enumerable: true, writable: true, configurable: true });
  }
  const bg2 = create({ agents });
  for (const name of names) assert.equal(await bg2.execute(name, 't'), `cfg-${name}`);
  await bg2.shutdown();

  // with a defaultAgent, those names reach defaultAgent (never Object.prototype members)
  const bg3 = create({ defaultAgent: (agent) => `default:${agent}` });
  for (const name of names) assert.equal(await bg3.execute(name, 't'), `default:${name}`);
  await bg3.shutdown();
});

test('a subclass overriding spawnAgentProcess is called instead of the registry; its return value is the result', async () => {
  const result = { from: 'subclass' };
  const seen = [];
  class Mocked extends BackgroundExecutor {
    spawnAgentProcess(execution) {
      seen.push(execution);
      return Promise.resolve(result);
    }
  }
  let registryCalls = 0;
  const bg = create({ agents: { real: () => registryCalls++ } }, Mocked);
  const opts = { custom: true };
  const r = await bg.execute('real', 'the-task', opts);
  assert.ok(r === result);
  assert.equal(registryCalls, 0, 'registry agent not called');
  assert.equal(seen.length, 1);
  assert.equal(seen[0].agent, 'real');
  assert.equal(seen[0].task, 'the-task');
  assert.ok(seen[0].options === opts);
  // unknown names go through the override too (no ERR_AGENT_NOT_FOUND)
  assert.ok((await bg.execute('unregistered', 't')) === result);
  // via callback mode as well
  const done = gate();
  await bg.executeWithCallback('real', 't', (err, res) => done.open([err, res]));
  const [err, res] = await done.promise;
  assert.equal(err, null);
  assert.ok(res === result);
  await bg.shutdown();
});

test('an instance overriding spawnAgentProcess is called instead of the registry; its return value is the result', async () => {
  let registryCalls = 0;
  const bg = create({ agents: { real: () => registryCalls++ } });
  const buf = Buffer.from('mock');
  const seen = [];
  bg.spawnAgentProcess = async (execution) => {
    seen.push(execution.agent);
    return buf;
  };
  const r = await bg.execute('real', 't');
  assert.ok(r === buf);
  assert.equal(registryCalls, 0);
  const err = new Error('mock failure');
  bg.spawnAgentProcess = () => Promise.reject(err);
  const r2 = await settleOf(bg.execute('real', 't'));
  assert.equal(r2.ok, false);
  assert.ok(r2.value === err);
  assert.deepEqual(seen, ['real']);
  await bg.shutdown();
});

// ----- context ---------------------------------------------------------------------------

test('context has executionId, agent, task, options, mode, priority, attempt 1 and a real AbortSignal', async () => {
  const contexts = [];
  const bg = create({
    agents: {
      probe: (task, options, context) => {
        contexts.push({ task, options, context, signalAborted: context.signal.aborted });
        return task;
      },
    },
  });
  const o1 = { tag: 1 };
  const o2 = { tag: 2, priority: 'critical' };
  const o3 = { tag: 3 };
  const o4 = { tag: 4, priority: 'background' };
  const ff = await bg.fireAndForget('probe', 'ff', o1);
  const cbDone = gate();
  const cb = await bg.executeWithCallback('probe', 'cb', () => cbDone.open(), o2);
  const w = await bg.executeWatched('probe', 'w', o3);
  await bg.execute('probe', 'ex', o4);
  await Promise.all([bg.waitFor(ff.executionId), cbDone.promise, bg.waitFor(w.executionId)]);
  await bg.execute('probe', 'noopts');
  assert.equal(contexts.length, 5);
  const byTask = Object.fromEntries(contexts.map((c) => [c.task, c]));
  const expect = {
    ff: { id: ff.executionId, mode: 'fire-and-forget', priority: 'low', options: o1 },
    cb: { id: cb.executionId, mode: 'async-callback', priority: 'critical', options: o2 },
    w: { id: w.executionId, mode: 'watched', priority: 'medium', options: o3 },
    ex: { mode: 'execute', priority: 'background', options: o4 },
    noopts: { mode: 'execute', priority: 'medium' },
  };
  for (const [task, e] of Object.entries(expect)) {
    const { context, options } = byTask[task];
    if (e.id) assert.equal(context.executionId, e.id, `${task}: executionId`);
    assert.equal(typeof context.executionId, 'string');
    assert.equal(context.agent, 'probe');
    assert.equal(context.task, task);
    if (e.options) {
      assert.ok(options === e.options, `${task}: options same object`);
      assert.ok(context.options === e.options, `${task}: context.options same object`);
    }
    assert.equal(context.mode, e.mode, `${task}: mode`);
    assert.equal(context.priority, e.priority, `${task}: priority`);
    assert.equal(context.attempt, 1);
    assert.ok(context.signal instanceof AbortSignal, `${task}: signal is an AbortSignal`);
    assert.equal(byTask[task].signalAborted, false);
    assert.equal(typeof context.progress, 'function');
  }
  // execute() ids are distinct from the others
  assert.equal(new Set(contexts.map((c) => c.context.executionId)).size, 5);
  await bg.shutdown();
});

test('progress works when destructured, is clamped and ignores non-numbers and NaN', async () => {
  const steps = [];
  let next = gate();
  const bg = create({
    agents: {
      reporter: async (t, o, { progress }) => {
        // each step: report, then wait for the test to look
        for (const value of [50, 300, 40, -5, 25, 'seventy', NaN, undefined, null, { v: 1 }, 60]) {
          progress(value);
          steps.push(value);
          await next.promise;
        }
        return 'done';
      },
    },
  });
  const { executionId } = await bg.executeWatched('reporter', 't');
  const observed = [];
  for (let i = 0; i < 11; i++) {
    await waitUntil(() => steps.length === i + 1, `step ${i}`, { timeoutMs: 3000 });
    observed.push(bg.getExecutionStatus(executionId).progress);
    const g = next;
    next = gate();
    g.open();
  }
  // 50, 300->100, 40, -5->0, 25, then ignored x5 (stays 25), 60
  assert.deepEqual(observed, [50, 100, 40, 0, 25, 25, 25, 25, 25, 25, 60]);
  const s = await bg.waitFor(executionId);
  assert.equal(s.status, 'completed');
  assert.equal(s.progress, 100);
  await bg.shutdown();
});

test('getActiveExecutions() shows the reported progress of a running execution', async () => {
  const g = gate();
  const reported = gate();
  const bg = create({
    agents: {
      a: async (t, o, ctx) => {
        ctx.progress(33);
        reported.open();
        await g.promise;
      },
    },
  });
  const { executionId } = await bg.fireAndForget('a', 't');
  await reported.promise;
  const active = bg.getActiveExecutions();
  assert.equal(active.length, 1);
  assert.equal(active[0].id, executionId);
  assert.equal(active[0].progress, 33);
  g.open();
  await bg.waitFor(executionId);
  assert.equal(bg.getActiveExecutions().length, 0);
  await bg.shutdown();
});

test('options.onProgress receives each report, clamped, and ignores non-numbers', async () => {
  const reports = [];
  const bg = create({
    agents: {
      a: async (t, o, { progress }) => {
        progress(10);
        progress(150);
        progress('x');
        progress(NaN);
        progress(-1);
        progress(70, { stage: 'seven' });
        await sleep(10);
        return 'ok';
      },
    },
  });
  const r = await bg.execute('a', 't', { onProgress: (p) => reports.push(p) });
  assert.equal(r, 'ok');
  assert.deepEqual(
    reports.map((p) => p.progress),
    [10, 100, 0, 70],
  );
  assert.deepEqual(reports[3].detail, { stage: 'seven' });
  await bg.shutdown();
});

// ----- watched mode ----------------------------------------------------------------------

test('watched mode emits periodic progress-update events while running and a last one on completion', async () => {
  const g = gate();
  let savedProgress = null;
  const bg = create({
    progressIntervalMs: 50,
    agents: {
      slow: (t, o, { progress }) => {
        savedProgress = progress;
        return g.promise;
      },
    },
  });
  const updates = [];
  bg.on('progress-update', (u) => updates.push({ ...u, at: Date.now() }));
  const { executionId } = await bg.executeWatched('slow', 't');
  await sleep(500);
  const running = updates.filter((u) => u.executionId === executionId);
  // ~10 expected at 50 ms; allow a lot of slack for a noisy machine
  assert.ok(running.length >= 3, `expected periodic updates, got ${running.length}`);
  assert.ok(running.length <= 30, `too many periodic updates: ${running.length}`);
  for (const u of running) {
    assert.equal(u.agent, 'slow');
    assert.equal(u.status, 'running');
    assert.equal(u.progress, 0);
    assert.equal(typeof u.duration, 'number');
  }
  // durations grow
  assert.ok(running[running.length - 1].duration > running[0].duration);
  g.open('finished');
  const s = await bg.waitFor(executionId);
  assert.equal(s.status, 'completed');
  await sleep(200);
  const mine = updates.filter((u) => u.executionId === executionId);
  const last = mine[mine.length - 1];
  assert.equal(last.status, 'completed', 'the last update reports completion');
  assert.equal(last.progress, 100);
  assert.equal(mine.filter((u) => u.status === 'completed').length, 1, 'exactly one completion update');
  // no periodic updates after the end, and a late progress report is ignored
  savedProgress(10);
  await sleep(150);
  assert.equal(updates.filter((u) => u.executionId === executionId).length, mine.length);
  assert.equal(bg.getExecutionStatus(executionId).progress, 100);
  await bg.shutdown();
});

test('watched mode emits progress-update while queued too', async () => {
  const g = gate();
  const bg = create({
    maxConcurrentAgents: 1,
    progressIntervalMs: 50,
    agents: { hold: () => g.promise, quick: () => 'q' },
  });
  const updates = [];
  bg.on('progress-update', (u) => updates.push(u));
  await bg.fireAndForget('hold', 't');
  const w = await bg.executeWatched('quick', 't');
  assert.equal(w.status, 'queued');
  await sleep(400);
  const queued = updates.filter((u) => u.executionId === w.executionId);
  assert.ok(queued.length >= 2, `expected updates while queued, got ${queued.length}`);
  assert.ok(queued.every((u) => u.status === 'queued'));
  g.open();
  await bg.waitFor(w.executionId);
  await bg.shutdown();
});

test('watched mode emits progress-update promptly when the agent reports progress', async () => {
  const g = gate();
  const bg = create({
    progressIntervalMs: 60000, // periodic updates will not interfere
    agents: {
      rep: async (t, o, { progress }) => {
        await sleep(20);
        progress(42, 'stage-a');
        await sleep(150);
        progress(43);
        progress(44);
        progress(77); // reported in the same turn: coalesced
        await g.promise;
        return 'r';
      },
    },
  });
  const updates = [];
  let t0 = 0;
  bg.on('progress-update', (u) => updates.push({ ...u, at: Date.now() - t0 }));
  t0 = Date.now();
  const { executionId } = await bg.executeWatched('rep', 't');
  await waitUntil(() => updates.some((u) => u.progress === 42), 'progress 42 update', { timeoutMs: 2000 });
  const first = updates.find((u) => u.progress === 42);
  assert.equal(first.executionId, executionId);
  assert.equal(first.agent, 'rep');
  assert.equal(first.status, 'running');
  assert.equal(typeof first.duration, 'number');
  assert.ok(first.at < 1000, `prompt update took ${first.at} ms`);
  await waitUntil(() => updates.some((u) => u.progress === 77), 'progress 77 update', { timeoutMs: 2000 });
  const after42 = updates.filter((u) => u.executionId === executionId && u.progress !== 42);
  assert.ok(after42.length >= 1 && after42.length <= 3, `coalesced updates, got ${after42.map((u) => u.progress)}`);
  assert.equal(after42[after42.length - 1].progress, 77);
  g.open();
  await bg.waitFor(executionId);
  await sleep(20);
  const last = updates[updates.length - 1];
  assert.equal(last.executionId, executionId);
  assert.equal(last.status, 'completed');
  await bg.shutdown();
});

test('a failed watched execution ends its updates with status failed', async () => {
  const bg = create({
    progressIntervalMs: 50,
    agents: {
      bad: async (t, o, { progress }) => {
        progress(30);
        await sleep(120);
        throw new Error('bad');
      },
    },
  });
  const updates = [];
  bg.on('progress-update', (u) => updates.push(u));
  const { executionId } = await bg.executeWatched('bad', 't');
  const s = await bg.waitFor(executionId);
  assert.equal(s.status, 'failed');
  await sleep(150);
  const mine = updates.filter((u) => u.executionId === executionId);
  assert.ok(mine.length >= 2);
  assert.equal(mine[mine.length - 1].status, 'failed');
  assert.equal(mine.filter((u) => u.status === 'failed').length, 1);
  await bg.shutdown();
});

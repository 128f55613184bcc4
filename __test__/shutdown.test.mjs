// shutdown() and process lifetime.
import assert from 'node:assert/strict';
import { test, exitIfWorkLeftBehind, makeExecutor, sleep, deferred, runScript, ENTRY, within } from './helpers.mjs';

exitIfWorkLeftBehind();

const isShutDown = (err) => {
  assert.ok(err instanceof Error, `${err}`);
  assert.equal(err.code, 'ERR_EXECUTOR_SHUT_DOWN');
  return true;
};

test("shutdown() default 'cancel': queued executions are cancelled visibly, running ones finish", async () => {
  const release = deferred();
  const bg = makeExecutor({
    maxConcurrentAgents: 1,
    agents: {
      hold: async () => {
        await release.promise;
        return 'finished-anyway';
      },
      never: () => {
        throw new Error('a queued execution must not start after shutdown');
      },
    },
  });
  const cancelledEvents = [];
  bg.on('execution-cancelled', (d) => cancelledEvents.push(d));
  const started = [];
  bg.on('execution-started', (d) => started.push(d.executionId));
  const running = (await bg.executeWithCallback('hold', 'r', null)).executionId;
  const ff = (await bg.fireAndForget('never', 'q1')).executionId;
  let cbArgs = null;
  let cbCount = 0;
  const cb = (
    await bg.executeWithCallback('never', 'q2', (...args) => {
      cbCount++;
      cbArgs = args;
    })
  ).executionId;
  const watched = (await bg.executeWatched('never', 'q3')).executionId;
  const exec = bg.execute('never', 'q4');
  let execSettled = false;
  exec.catch(() => {}).finally(() => (execSettled = true));

  const done = bg.shutdown();
  await assert.rejects(exec, isShutDown);
  for (const id of [ff, cb, watched]) {
    const s = bg.getExecutionStatus(id);
    assert.equal(s.status, 'cancelled', `${id}`);
    assert.match(s.error, /shut/i);
  }
  assert.equal(cbCount, 1);
  assert.ok(cbArgs[0] instanceof Error);
  isShutDown(cbArgs[0]);
  assert.equal(cbArgs[1], undefined);
  assert.equal(cancelledEvents.length, 4);
  assert.ok([ff, cb, watched].every((id) => cancelledEvents.some((e) => e.executionId === id)));
  assert.equal(bg.getExecutionStatus(running).status, 'running', 'the running one is left to finish');

  let shutdownResolved = false;
  done.then(() => (shutdownResolved = true));
  await sleep(30);
  assert.equal(shutdownResolved, false, 'shutdown waits for the running execution');
  release.resolve();
  await done;
  assert.equal(execSettled, true);
  assert.deepEqual(started, [running], 'nothing queued ever started');
  const s = bg.getExecutionStatus(running);
  assert.equal(s.status, 'completed');
  assert.equal(s.result, 'finished-anyway');
  const st = bg.getStatus();
  assert.equal(st.completed, 1);
  assert.equal(st.cancelled, 4);
});

test("shutdown({ mode: 'drain' }) runs the queue to the end, but accepts nothing new", async () => {
  const bg = makeExecutor({
    maxConcurrentAgents: 2,
    agents: {
      work: async (task) => {
        await sleep(20);
        return `done-${task}`;
      },
    },
  });
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push((await bg.fireAndForget('work', String(i))).executionId);
  const viaExecute = bg.execute('work', 'x');
  assert.equal(bg.getQueueStatus().queued, 9);
  const done = bg.shutdown({ mode: 'drain' });
  await assert.rejects(bg.fireAndForget('work', 'late'), isShutDown);
  assert.equal(await viaExecute, 'done-x');
  await done;
  for (let i = 0; i < 10; i++) {
    const s = bg.getExecutionStatus(ids[i]);
    assert.equal(s.status, 'completed', ids[i]);
    assert.equal(s.result, `done-${i}`);
  }
  assert.equal(bg.getStatus().completed, 11);
  assert.equal(bg.getStatus().cancelled, 0);
});

test('shutdown({ timeoutMs }) aborts still-running agents and resolves shortly after the timeout', async () => {
  const signals = [];
  const bg = makeExecutor({
    maxConcurrentAgents: 2,
    agents: {
      // ignores its signal and never settles
      deaf: (task, options, ctx) => {
        signals.push(ctx.signal);
        return new Promise(() => {});
      },
    },
  });
  const cancelled = [];
  bg.on('execution-cancelled', (d) => cancelled.push(d.executionId));
  const a = (await bg.fireAndForget('deaf', 'a')).executionId;
  const p = bg.execute('deaf', 'b');
  let rejection;
  p.catch((e) => (rejection = e));
  await sleep(10);
  const t0 = Date.now();
  await bg.shutdown({ timeoutMs: 200 });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 190, `resolved after ${elapsed} ms, before the timeout`);
  assert.ok(elapsed < 200 + 700, `resolved ${elapsed} ms after shutdown({ timeoutMs: 200 })`);
  assert.equal(signals.length, 2);
  for (const s of signals) {
    assert.equal(s.aborted, true);
    assert.ok(s.reason instanceof Error);
    assert.equal(s.reason.code, 'ERR_EXECUTOR_SHUT_DOWN');
  }
  assert.equal(bg.getExecutionStatus(a).status, 'cancelled');
  await sleep(0);
  assert.ok(rejection, 'execute() of an aborted execution rejects');
  assert.equal(rejection.code, 'ERR_EXECUTOR_SHUT_DOWN');
  assert.equal(cancelled.length, 2);
  assert.ok(cancelled.includes(a));
  assert.equal(bg.getStatus().cancelled, 2);
  assert.equal(bg.getStatus().running, 0);
});

test('shutdown() waits for a timed-out or cancelled agent that ignores its signal: until it settles, or its grace period ends', async () => {
  for (const mode of ['cancel', 'drain']) {
    // Settles 150 ms after its signal aborted: shutdown() resolves after that, not before.
    let settledAt = 0;
    const bg = makeExecutor({
      cancelGraceMs: 5000,
      agents: {
        deaf: (task, options, ctx) =>
          new Promise((resolve) => {
            ctx.signal.addEventListener('abort', () =>
              setTimeout(() => {
                settledAt = performance.now();
                resolve('late');
              }, 150),
            );
          }),
      },
    });
    const timedOut = bg.execute('deaf', 't', { timeout: 20 });
    await assert.rejects(timedOut, { code: 'ERR_EXECUTION_TIMEOUT' });
    const { executionId } = await bg.fireAndForget('deaf', 'c');
    await bg.cancelExecution(executionId);
    await bg.shutdown({ mode });
    const resolvedAt = performance.now();
    assert.ok(settledAt > 0 && settledAt <= resolvedAt, `${mode}: shutdown() resolved before the agents settled`);

    // Never settles: shutdown() resolves once the grace period frees its slot.
    const deaf = makeExecutor({ cancelGraceMs: 300, agents: { never: () => new Promise(() => {}) } });
    await assert.rejects(deaf.execute('never', 't', { timeout: 20 }), { code: 'ERR_EXECUTION_TIMEOUT' });
    const t0 = performance.now();
    await deaf.shutdown({ mode });
    const waited = performance.now() - t0;
    // The grace period began at the timeout, a little before t0 on a loaded machine.
    assert.ok(waited >= 100 && waited < 300 + 2000, `${mode}: waited ${waited.toFixed(0)} ms for a 300 ms grace period`);
  }
});

test("shutdown({ mode: 'drain', timeoutMs }) ends queued work visibly too when the time is up", async () => {
  const bg = makeExecutor({ maxConcurrentAgents: 1, agents: { deaf: () => new Promise(() => {}) } });
  const terminal = [];
  for (const e of ['execution-completed', 'execution-failed', 'execution-cancelled']) bg.on(e, (d) => terminal.push([e, d.executionId]));
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await bg.fireAndForget('deaf', String(i))).executionId);
  const t0 = Date.now();
  await bg.shutdown({ mode: 'drain', timeoutMs: 150 });
  assert.ok(Date.now() - t0 < 150 + 700);
  for (const id of ids) assert.equal(bg.getExecutionStatus(id).status, 'cancelled', id);
  assert.equal(terminal.length, 3, JSON.stringify(terminal));
  assert.deepEqual(terminal.map((t) => t[0]), Array(3).fill('execution-cancelled'));
});

test('submissions after shutdown reject (never throw) with code ERR_EXECUTOR_SHUT_DOWN', async () => {
  const bg = makeExecutor({ agents: { ok: () => 1 } });
  assert.equal(await bg.execute('ok', 't'), 1);
  await bg.shutdown();
  const calls = [
    () => bg.fireAndForget('ok', 't'),
    () => bg.executeWithCallback('ok', 't', () => {}),
    () => bg.executeWatched('ok', 't'),
    () => bg.execute('ok', 't'),
    () => bg.executeMultiple(['ok', 'ok'], 't'),
  ];
  for (const call of calls) {
    let p;
    assert.doesNotThrow(() => {
      p = call();
    });
    assert.ok(p instanceof Promise);
    await assert.rejects(p, isShutDown);
  }
  assert.equal(bg.getStatus().completed, 1);
});

test('calling shutdown() twice returns the same promise; it resolves after shutdown-complete', async () => {
  const release = deferred();
  const bg = makeExecutor({ agents: { hold: () => release.promise } });
  const order = [];
  bg.on('shutting-down', () => order.push('shutting-down'));
  bg.on('shutdown-complete', () => order.push('shutdown-complete'));
  await bg.fireAndForget('hold', 't');
  const p1 = bg.shutdown();
  const p2 = bg.shutdown();
  const p3 = bg.shutdown({ mode: 'drain', timeoutMs: 5 });
  assert.equal(p1, p2);
  assert.equal(p1, p3);
  const after = p1.then(() => order.push('resolved'));
  await sleep(50);
  assert.deepEqual(order, ['shutting-down'], 'the second call did not arm a timeout or re-emit');
  release.resolve();
  await after;
  assert.deepEqual(order, ['shutting-down', 'shutdown-complete', 'resolved']);
  assert.equal(bg.shutdown(), p1, 'same promise after it resolved, too');
});

test('shutdown() of an idle (or initialized, never used) executor resolves at once', async () => {
  const bg = makeExecutor();
  await bg.initialize();
  const t0 = Date.now();
  await bg.shutdown();
  assert.ok(Date.now() - t0 < 200);
  const bg2 = makeExecutor();
  await bg2.shutdown();
});

// ---------------------------------------------------------------- process lifetime

const stamp = (out, tag) => {
  const m = out.stdout.match(new RegExp(`${tag}=(\\d+)`));
  assert.ok(m, `no ${tag}= in stdout: ${JSON.stringify(out.stdout)} stderr: ${out.stderr}`);
  return Number(m[1]);
};

test('process: submitted work keeps Node alive until it completes, then the process exits 0', async () => {
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor({ maxConcurrentAgents: 1 });
await bg.initialize();
// the agents hold nothing themselves: their timers are unref'd
const later = (ms, v) => new Promise((r) => setTimeout(() => r(v), ms).unref());
bg.registerAgent('writer', async (task) => {
  await later(300);
  process.stdout.write('AGENT-DONE:' + task + '\\n');
  return task;
});
bg.registerAgent('boom', async () => { await later(50); throw new Error('ignored'); });
await bg.fireAndForget('writer', 'first');
await bg.fireAndForget('boom', 'x');
await bg.executeWithCallback('writer', 'second', () => process.stdout.write('CALLBACK\\n'));
process.stdout.write('TOP-LEVEL-END=' + Date.now() + '\\n');
`);
  assert.equal(out.killed, false, 'the process did not exit by itself');
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /AGENT-DONE:first\n/);
  assert.match(out.stdout, /AGENT-DONE:second\nCALLBACK\n/);
  const end = stamp(out, 'TOP-LEVEL-END');
  assert.ok(out.exitedAt - end >= 600 - 20, 'it ran two 300 ms agents one after the other');
  assert.ok(out.exitedAt - end < 600 + 2000, `exited ${out.exitedAt - end} ms after its top-level code`);
});

test('process: a script that only initializes exits at once', async () => {
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor();
await bg.initialize();
process.stdout.write('TOP-LEVEL-END=' + Date.now() + '\\n');
`);
  assert.equal(out.killed, false, 'an idle executor kept the process alive');
  assert.equal(out.code, 0, out.stderr);
  const end = stamp(out, 'TOP-LEVEL-END');
  assert.ok(out.exitedAt - end < 800, `exited ${out.exitedAt - end} ms after its top-level code`);
  assert.ok(out.exitedAt - out.spawnedAt < 2000, `whole run took ${out.exitedAt - out.spawnedAt} ms`);
});

test('process: shutdown() of an executor a submission started (no initialize) lets the process exit at once', async () => {
  // The monitor starts with the first submission, and its first sample may still be due when
  // shutdown() resolves: nothing may wait for it then.
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor();
bg.registerAgent('quick', (t) => t);
await bg.execute('quick', 'a');
await bg.shutdown();
const t = performance.now();
process.on('exit', () => process.stdout.write('EXIT-DELAY=' + (performance.now() - t) + '\\n'));
`);
  assert.equal(out.code, 0, out.stderr);
  const delay = Number(/EXIT-DELAY=([\d.]+)/.exec(out.stdout)[1]);
  // The first-sample timer would hold it up to 250 ms.
  assert.ok(delay < 180, `the process exited ${delay} ms after shutdown() resolved`);
});

test('process: an executor that finished its work and was never shut down lets the process exit', async () => {
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor({ progressIntervalMs: 50, resultTtlMs: 60000, defaultTimeoutMs: 60000 });
await bg.initialize();
bg.registerAgent('quick', (t) => t);
await bg.execute('quick', 'a');
const { executionId } = await bg.executeWatched('quick', 'b');
await bg.waitFor(executionId);
process.stdout.write('TOP-LEVEL-END=' + Date.now() + '\\n');
`);
  assert.equal(out.killed, false, 'finished work (retention, timeouts, progress timers) kept the process alive');
  assert.equal(out.code, 0, out.stderr);
  assert.ok(out.exitedAt - stamp(out, 'TOP-LEVEL-END') < 500);
});

test('process: shutdown({ timeoutMs: 300 }) with an agent that never settles exits shortly after 300 ms', async () => {
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor();
await bg.initialize();
let signal;
bg.registerAgent('deaf', (task, options, ctx) => { signal = ctx.signal; return new Promise(() => {}); });
await bg.fireAndForget('deaf', 't');
process.stdout.write('SHUTDOWN-CALLED=' + Date.now() + '\\n');
await bg.shutdown({ timeoutMs: 300 });
process.stdout.write('SHUTDOWN-RESOLVED=' + Date.now() + ' aborted=' + signal.aborted + ' code=' + signal.reason.code + '\\n');
`);
  assert.equal(out.killed, false, 'the process did not exit by itself');
  assert.equal(out.code, 0, out.stderr);
  const called = stamp(out, 'SHUTDOWN-CALLED');
  const resolved = stamp(out, 'SHUTDOWN-RESOLVED');
  assert.match(out.stdout, /aborted=true code=ERR_EXECUTOR_SHUT_DOWN/);
  assert.ok(resolved - called >= 290, `resolved after ${resolved - called} ms`);
  assert.ok(out.exitedAt - called < 300 + 700, `exited ${out.exitedAt - called} ms after shutdown({ timeoutMs: 300 })`);
});

test('process: a paused executor with queued work keeps the process alive until resume()', async () => {
  const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';

const bg = new BackgroundExecutor();
bg.pause();
bg.registerAgent('writer', async () => {
  await new Promise((r) => setTimeout(r, 20).unref());
  process.stdout.write('AGENT-RAN=' + Date.now() + '\\n');
});
await bg.fireAndForget('writer', 't');
process.stdout.write('TOP-LEVEL-END=' + Date.now() + '\\n');
// unref'd: only the queued work may keep the process alive long enough for this to fire
setTimeout(() => { process.stdout.write('RESUME=' + Date.now() + '\\n'); bg.resume(); }, 300).unref();
`);
  assert.equal(out.killed, false, 'the process did not exit by itself');
  assert.equal(out.code, 0, out.stderr);
  const end = stamp(out, 'TOP-LEVEL-END');
  const resumed = stamp(out, 'RESUME');
  const ran = stamp(out, 'AGENT-RAN');
  assert.ok(resumed - end >= 280);
  assert.ok(ran >= resumed);
  assert.ok(out.exitedAt - ran < 1000);
});

test('shutdown() called while a batch is being answered cancels that batch\'s queued submissions visibly', async () => {
  const bg = makeExecutor({ maxConcurrentAgents: 1 });
  const hold = deferred();
  bg.registerAgent('hold', () => hold.promise);
  bg.registerAgent('quick', (t) => t);
  await bg.fireAndForget('hold', 'x1');
  let done;
  bg.on('execution-queued', (e) => {
    if (e.task === 'p') done = bg.shutdown();
  });
  const cancelled = [];
  bg.on('execution-cancelled', (e) => cancelled.push(e.task));
  let callbackErr;
  const p = bg.execute('quick', 'p').then(() => 'ok', (e) => e.code);
  const y = bg.execute('quick', 'y').then(() => 'ok', (e) => e.code);
  const z = bg.executeWithCallback('quick', 'z', (err) => (callbackErr = err));
  setTimeout(() => hold.resolve('x'), 50);
  assert.deepEqual(await Promise.all([p, y]), ['ERR_EXECUTOR_SHUT_DOWN', 'ERR_EXECUTOR_SHUT_DOWN']);
  assert.equal((await z).status, 'cancelled');
  await done;
  assert.equal(callbackErr?.code, 'ERR_EXECUTOR_SHUT_DOWN');
  assert.deepEqual(cancelled.sort(), ['p', 'y', 'z']);
});

test('onIdle() waiters are answered, and idle emitted, when shutdown() cancels a queue that never ran (paused)', async () => {
  const bg = makeExecutor({ agents: { a: async (t) => t } });
  bg.pause();
  await bg.fireAndForget('a', 'never');
  const events = [];
  for (const name of ['idle', 'shutdown-complete']) bg.on(name, () => events.push(name));
  const idle = bg.onIdle().then(() => 'idle');
  await bg.shutdown();
  assert.equal(await within(idle, 500), 'idle');
  assert.deepEqual(events, ['idle', 'shutdown-complete']);
});

test("pause() during shutdown({ mode: 'drain' }) changes nothing: the queue runs to its end", async () => {
  const release = deferred();
  const ran = [];
  const bg = makeExecutor({
    maxConcurrentAgents: 1,
    agents: {
      a: async (t) => {
        ran.push(t);
        if (t === 'first') await release.promise;
        return t;
      },
    },
  });
  const results = [bg.execute('a', 'first'), bg.execute('a', 'second')];
  await sleep(20);
  const done = bg.shutdown({ mode: 'drain' });
  bg.pause();
  release.resolve();
  assert.notEqual(await within(done, 3000), 'pending', 'shutdown settled');
  assert.deepEqual(await Promise.all(results), ['first', 'second']);
  assert.deepEqual(ran, ['first', 'second']);
});

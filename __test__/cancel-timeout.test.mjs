// Cancellation, AbortSignals, timeouts and the cancel grace slot rule.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, blockedExecutor, sleep, gate, waitUntil, settleOf, terminalEvents, assertOneTerminal } from './helpers.mjs';

// Executors made with create() are shut down after each test, even a failed one.
const create = shutDownAfterEach();

/** An agent that waits for its signal and rejects with its reason after `delayMs`. */
function honouring(delayMs = 0, onStart) {
  return (task, options, { signal }) =>
    new Promise((resolve, reject) => {
      if (onStart) onStart(task, signal);
      signal.addEventListener('abort', () => {
        if (delayMs === 0) reject(signal.reason);
        else setTimeout(() => reject(signal.reason), delayMs);
      });
    });
}

// ----- cancelling queued executions -------------------------------------------------------

test('cancelling a queued execution: status cancelled, event, callback error, execute() rejection, never starts', async () => {
  const { bg, blocker, started } = blockedExecutor(create);
  const events = terminalEvents(bg);
  const cancelledEvents = [];
  bg.on('execution-cancelled', (e) => cancelledEvents.push(e));
  const b = await bg.fireAndForget('blocker', 'b');
  const cbCalls = [];
  const cb = await bg.executeWithCallback('rec', 'cb', (...args) => cbCalls.push(args));
  const ff = await bg.fireAndForget('rec', 'ff');
  const w = await bg.executeWatched('rec', 'w');
  const exP = settleOf(bg.execute('rec', 'ex', { priority: 'critical' }));
  const keep = await bg.fireAndForget('rec', 'keep');
  const exId = bg.getQueueStatus().queue[0].id; // critical: first in the queue
  assert.equal(bg.getExecutionStatus(exId).task, 'ex');
  assert.equal(bg.getQueueStatus().queued, 5);

  const toCancel = [cb.executionId, ff.executionId, w.executionId, exId];
  for (const id of toCancel) {
    assert.equal(bg.getExecutionStatus(id).status, 'queued');
    const r = await bg.cancelExecution(id);
    assert.equal(r.success, true, `cancel ${id}`);
    assert.equal(bg.getExecutionStatus(id).status, 'cancelled');
  }
  const qs = bg.getQueueStatus();
  assert.equal(qs.queued, 1);
  assert.deepEqual(
    qs.queue.map((q) => q.id),
    [keep.executionId],
  );

  const ex = await exP;
  assert.equal(ex.ok, false);
  assert.ok(ex.value instanceof Error);
  assert.equal(ex.value.code, 'ERR_EXECUTION_CANCELLED');
  assert.equal(cbCalls.length, 1);
  assert.ok(cbCalls[0][0] instanceof Error);
  assert.equal(cbCalls[0][0].code, 'ERR_EXECUTION_CANCELLED');
  assert.equal(cbCalls[0][1], undefined);

  assert.deepEqual(
    cancelledEvents.map((e) => e.executionId),
    toCancel,
  );
  for (const e of cancelledEvents) assert.equal(e.agent, 'rec');

  blocker.open();
  await bg.waitFor(keep.executionId);
  await bg.onIdle();
  await sleep(20);
  assert.deepEqual(started, ['keep'], 'cancelled executions never start');
  for (const id of toCancel) assert.equal(bg.getExecutionStatus(id).status, 'cancelled');
  assert.equal(cbCalls.length, 1);
  assertOneTerminal(events, toCancel, 'execution-cancelled');
  assertOneTerminal(events, [b.executionId, keep.executionId], 'execution-completed');
  const st = bg.getStatus();
  assert.equal(st.cancelled, 4);
  assert.equal(st.completed, 2);
  await bg.shutdown();
});

// ----- cancelling running executions -----------------------------------------------------

test('cancelling a running execution: success, cancelled at once, signal aborted with ERR_EXECUTION_CANCELLED, late result discarded', async () => {
  const release = gate();
  let ctxSignal = null;
  const bg = create({
    agents: {
      stubborn: async (task, options, context) => {
        ctxSignal = context.signal;
        await release.promise; // ignores the signal
        return { late: true };
      },
    },
  });
  const events = terminalEvents(bg);
  const cancelled = [];
  bg.on('execution-cancelled', (e) => cancelled.push(e));
  const cbCalls = [];
  const { executionId, status } = await bg.executeWithCallback('stubborn', 't', (...a) => cbCalls.push(a));
  assert.equal(status, 'running');
  await waitUntil(() => ctxSignal !== null, 'agent started');
  assert.equal(ctxSignal.aborted, false);

  const p = bg.cancelExecution(executionId);
  // at once: synchronously after the call
  assert.equal(bg.getExecutionStatus(executionId).status, 'cancelled');
  assert.equal(ctxSignal.aborted, true);
  const r = await p;
  assert.equal(r.success, true);
  assert.ok(ctxSignal.reason instanceof Error);
  assert.equal(ctxSignal.reason.code, 'ERR_EXECUTION_CANCELLED');
  assert.equal(cancelled.length, 1);
  assert.equal(cancelled[0].executionId, executionId);
  assert.equal(cancelled[0].agent, 'stubborn');
  assert.equal(cbCalls.length, 1);
  assert.equal(cbCalls[0][0].code, 'ERR_EXECUTION_CANCELLED');

  release.open();
  await sleep(50);
  const s = bg.getExecutionStatus(executionId);
  assert.equal(s.status, 'cancelled', 'the late result does not change the status');
  assert.equal(s.result, null);
  assert.equal(cbCalls.length, 1, 'callback not called again with the late result');
  assertOneTerminal(events, [executionId], 'execution-cancelled');
  const again = await bg.cancelExecution(executionId);
  assert.deepEqual(again, { success: false, error: 'Cannot cancel execution in cancelled status' });
  await bg.shutdown();
});

test('cancelling a running execute(): the promise rejects with ERR_EXECUTION_CANCELLED even though the agent resolves later', async () => {
  const release = gate();
  const started = gate();
  const bg = create({
    agents: {
      a: async () => {
        started.open();
        await release.promise;
        return 'late';
      },
    },
  });
  const events = terminalEvents(bg);
  const p = settleOf(bg.execute('a', 't'));
  await started.promise;
  const id = bg.getActiveExecutions()[0].id;
  const r = await bg.cancelExecution(id);
  assert.equal(r.success, true);
  const out = await p;
  assert.equal(out.ok, false);
  assert.equal(out.value.code, 'ERR_EXECUTION_CANCELLED');
  release.open();
  await sleep(30);
  assertOneTerminal(events, [id], 'execution-cancelled');
  await bg.shutdown();
});

// ----- the slot rule -----------------------------------------------------------------------

test('slot rule: an agent that honours its signal frees the slot when it settles (cancelGraceMs 300)', async () => {
  const startedAt = new Map();
  const bg = create({
    maxConcurrentAgents: 1,
    cancelGraceMs: 300,
    agents: {
      // settles 100 ms after its abort
      polite: honouring(100, (task) => startedAt.set(task, performance.now())),
      next: (task) => {
        startedAt.set(task, performance.now());
        return 'next';
      },
    },
  });
  const events = terminalEvents(bg);
  const a = await bg.fireAndForget('polite', 'A');
  const b = await bg.fireAndForget('next', 'B');
  assert.equal(b.status, 'queued');
  await waitUntil(() => startedAt.has('A'), 'A started');
  const t0 = performance.now();
  assert.equal((await bg.cancelExecution(a.executionId)).success, true);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'cancelled');
  await sleep(40);
  assert.equal(startedAt.has('B'), false, 'B does not start while A still holds the slot');
  await waitUntil(() => startedAt.has('B'), 'B started', { timeoutMs: 3000 });
  const delay = startedAt.get('B') - t0;
  assert.ok(delay >= 80, `B started ${delay.toFixed(0)} ms after the cancel, before A settled`);
  assert.ok(delay < 270, `B started ${delay.toFixed(0)} ms after the cancel: the slot was not freed when A settled`);
  await bg.waitFor(b.executionId);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'cancelled', 'A rejecting after cancel does not turn it into failed');
  assertOneTerminal(events, [a.executionId], 'execution-cancelled');
  assertOneTerminal(events, [b.executionId], 'execution-completed');
  await bg.shutdown();
});

test('slot rule: an agent that settles at once on abort lets the next queued start promptly', async () => {
  const startedAt = new Map();
  const bg = create({
    maxConcurrentAgents: 1,
    cancelGraceMs: 300,
    agents: {
      polite: honouring(0, (task) => startedAt.set(task, performance.now())),
      next: (task) => {
        startedAt.set(task, performance.now());
      },
    },
  });
  const a = await bg.fireAndForget('polite', 'A');
  await bg.fireAndForget('next', 'B');
  await waitUntil(() => startedAt.has('A'), 'A started');
  const t0 = performance.now();
  await bg.cancelExecution(a.executionId);
  await waitUntil(() => startedAt.has('B'), 'B started', { timeoutMs: 3000 });
  const delay = startedAt.get('B') - t0;
  assert.ok(delay < 200, `B started ${delay.toFixed(0)} ms after the cancel of an agent that settled at once`);
  await bg.shutdown();
});

test('slot rule: an agent that ignores its signal holds the slot until cancelGraceMs (300 ms), not before, not forever', async () => {
  const startedAt = new Map();
  const release = gate();
  let lateSettled = false;
  const bg = create({
    maxConcurrentAgents: 1,
    cancelGraceMs: 300,
    agents: {
      deaf: async (task) => {
        startedAt.set(task, performance.now());
        await release.promise;
        lateSettled = true;
        return 'late';
      },
      next: (task) => {
        startedAt.set(task, performance.now());
        return 'B-done';
      },
    },
  });
  const events = terminalEvents(bg);
  const a = await bg.fireAndForget('deaf', 'A');
  const b = await bg.fireAndForget('next', 'B');
  await waitUntil(() => startedAt.has('A'), 'A started');
  const t0 = performance.now();
  assert.equal((await bg.cancelExecution(a.executionId)).success, true);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'cancelled');
  await sleep(150);
  assert.equal(startedAt.has('B'), false, 'the slot is still held 150 ms into the 300 ms grace');
  await waitUntil(() => startedAt.has('B'), 'B started after the grace period', { timeoutMs: 4000 });
  const delay = startedAt.get('B') - t0;
  assert.ok(delay >= 250, `B started ${delay.toFixed(0)} ms after the cancel: before the grace period`);
  assert.ok(delay <= 2000, `B started ${delay.toFixed(0)} ms after the cancel: long after the grace period`);
  const sb = await bg.waitFor(b.executionId);
  assert.equal(sb.status, 'completed');
  assert.equal(sb.result, 'B-done');
  // the stubborn agent finally settles: nothing changes
  release.open();
  await waitUntil(() => lateSettled, 'A settled');
  await sleep(30);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'cancelled');
  assertOneTerminal(events, [a.executionId], 'execution-cancelled');
  assertOneTerminal(events, [b.executionId], 'execution-completed');
  await bg.shutdown();
});

// ----- cancel results ------------------------------------------------------------------------

test('cancelExecution on unknown and finished executions', async () => {
  const bg = create({
    agents: { ok: () => 'ok', bad: () => Promise.reject(new Error('bad')) },
  });
  for (const id of ['exec-999999', 'nope', '', 'exec-0', 'exec-1.5']) {
    assert.deepEqual(await bg.cancelExecution(id), { success: false, error: 'Execution not found' }, `id ${JSON.stringify(id)}`);
  }
  const done = await bg.fireAndForget('ok', 't');
  await bg.waitFor(done.executionId);
  assert.deepEqual(await bg.cancelExecution(done.executionId), {
    success: false,
    error: 'Cannot cancel execution in completed status',
  });
  assert.equal(bg.getExecutionStatus(done.executionId).status, 'completed', 'a failed cancel changes nothing');
  const failed = await bg.fireAndForget('bad', 't');
  await bg.waitFor(failed.executionId);
  assert.deepEqual(await bg.cancelExecution(failed.executionId), {
    success: false,
    error: 'Cannot cancel execution in failed status',
  });
  // a bad argument rejects (never throws synchronously)
  let p;
  assert.doesNotThrow(() => {
    p = bg.cancelExecution(42);
  });
  await assert.rejects(p, TypeError);
  await bg.shutdown();
});

// ----- options.signal -------------------------------------------------------------------------

test('options.signal: aborting a queued execution cancels it; it never starts', async () => {
  const { bg, blocker, started } = blockedExecutor(create);
  const events = terminalEvents(bg);
  await bg.fireAndForget('blocker', 'b');
  const ac1 = new AbortController();
  const ac2 = new AbortController();
  const ff = await bg.fireAndForget('rec', 'ff', { signal: ac1.signal });
  const exP = settleOf(bg.execute('rec', 'ex', { signal: ac2.signal }));
  assert.equal(ff.status, 'queued');
  const exId = bg.getQueueStatus().queue.find((q) => q.id !== ff.executionId).id;
  ac1.abort();
  assert.equal(bg.getExecutionStatus(ff.executionId).status, 'cancelled');
  ac2.abort(new Error('user reason'));
  const ex = await exP;
  assert.equal(ex.ok, false);
  assert.equal(ex.value.code, 'ERR_EXECUTION_CANCELLED');
  assert.equal(bg.getQueueStatus().queued, 0);
  blocker.open();
  await bg.onIdle();
  assert.deepEqual(started, []);
  assertOneTerminal(events, [ff.executionId, exId], 'execution-cancelled');
  await bg.shutdown();
});

test('options.signal: aborting a running execution cancels it and aborts the agent signal', async () => {
  let agentSignal = null;
  const release = gate();
  const bg = create({
    agents: {
      a: async (t, o, ctx) => {
        agentSignal = ctx.signal;
        await release.promise;
        return 'late';
      },
    },
  });
  const events = terminalEvents(bg);
  const ac = new AbortController();
  const cbCalls = [];
  const { executionId, status } = await bg.executeWithCallback('a', 't', (...a) => cbCalls.push(a), { signal: ac.signal });
  assert.equal(status, 'running');
  await waitUntil(() => agentSignal !== null, 'agent started');
  ac.abort();
  assert.equal(bg.getExecutionStatus(executionId).status, 'cancelled');
  assert.equal(agentSignal.aborted, true);
  assert.equal(agentSignal.reason.code, 'ERR_EXECUTION_CANCELLED');
  assert.equal(cbCalls.length, 1);
  assert.equal(cbCalls[0][0].code, 'ERR_EXECUTION_CANCELLED');
  release.open();
  await sleep(30);
  assert.equal(bg.getExecutionStatus(executionId).status, 'cancelled');
  assert.equal(cbCalls.length, 1);
  assertOneTerminal(events, [executionId], 'execution-cancelled');
  await bg.shutdown();
});

test('options.signal: an already-aborted signal cancels at once and the agent is never called', async () => {
  let calls = 0;
  const bg = create({ agents: { a: () => calls++ } });
  const events = terminalEvents(bg);
  const signal = AbortSignal.abort();
  const ff = await bg.fireAndForget('a', 't', { signal });
  assert.equal(ff.status, 'cancelled', 'the real status at return time');
  assert.equal(bg.getExecutionStatus(ff.executionId).status, 'cancelled');
  const r = await settleOf(bg.execute('a', 't', { signal }));
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  const cbCalls = [];
  const cb = await bg.executeWithCallback('a', 't', (...a) => cbCalls.push(a), { signal });
  assert.equal(cb.status, 'cancelled');
  assert.equal(cbCalls.length, 1);
  assert.equal(cbCalls[0][0].code, 'ERR_EXECUTION_CANCELLED');
  await sleep(30);
  assert.equal(calls, 0);
  assert.equal(bg.getQueueStatus().running, 0);
  assert.equal(bg.getQueueStatus().queued, 0);
  assertOneTerminal(events, [ff.executionId, cb.executionId], 'execution-cancelled');
  assert.equal(bg.getStatus().cancelled, 3);
  // and the executor is not left broken
  assert.equal(await bg.execute('a', 't'), 0);
  await bg.shutdown();
});

test('options.signal aborted after the execution finished changes nothing', async () => {
  const bg = create({ agents: { a: () => 'ok' } });
  const events = terminalEvents(bg);
  const ac = new AbortController();
  const { executionId } = await bg.fireAndForget('a', 't', { signal: ac.signal });
  await bg.waitFor(executionId);
  ac.abort();
  await sleep(20);
  assert.equal(bg.getExecutionStatus(executionId).status, 'completed');
  assertOneTerminal(events, [executionId], 'execution-completed');
  await bg.shutdown();
});

// ----- timeouts --------------------------------------------------------------------------

test('options.timeout fails a running execution with ERR_EXECUTION_TIMEOUT, aborts its signal and discards the late result', async () => {
  let agentSignal = null;
  let lateReturned = false;
  const bg = create({
    agents: {
      slow: async (t, o, ctx) => {
        agentSignal = ctx.signal;
        await sleep(400); // ignores the signal
        lateReturned = true;
        return 'late';
      },
    },
  });
  const events = terminalEvents(bg);
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));
  const t0 = performance.now();
  const r = await settleOf(bg.execute('slow', 't', { timeout: 100 }));
  const elapsed = performance.now() - t0;
  assert.equal(r.ok, false);
  assert.ok(r.value instanceof Error);
  assert.equal(r.value.code, 'ERR_EXECUTION_TIMEOUT');
  assert.ok(elapsed >= 90, `timed out after ${elapsed.toFixed(0)} ms, before the 100 ms timeout`);
  assert.ok(elapsed < 390, `timed out after ${elapsed.toFixed(0)} ms: it waited for the agent`);
  assert.equal(agentSignal.aborted, true);
  assert.equal(agentSignal.reason.code, 'ERR_EXECUTION_TIMEOUT');
  assert.equal(failed.length, 1);
  const id = failed[0].executionId;
  assert.equal(typeof failed[0].error, 'string');
  assert.equal(bg.getExecutionStatus(id).status, 'failed');
  await waitUntil(() => lateReturned, 'agent returned late');
  await sleep(30);
  const s = bg.getExecutionStatus(id);
  assert.equal(s.status, 'failed', 'the late result is discarded');
  assert.equal(s.result, null);
  assertOneTerminal(events, [id], 'execution-failed');
  await bg.shutdown();
});

test('config defaultTimeoutMs applies to every mode; options.timeout overrides it', async () => {
  const signals = new Map();
  const bg = create({
    defaultTimeoutMs: 100,
    agents: {
      slow: async (t, o, ctx) => {
        signals.set(t, ctx.signal);
        await sleep(300);
        return `late-${t}`;
      },
    },
  });
  const events = terminalEvents(bg);
  const cbCalls = [];
  const cb = await bg.executeWithCallback('slow', 'cb', (...a) => cbCalls.push(a));
  const ff = await bg.fireAndForget('slow', 'ff');
  const w = await bg.executeWatched('slow', 'w');
  const ex = settleOf(bg.execute('slow', 'ex'));
  const longer = bg.execute('slow', 'longer', { timeout: 2000 });
  const [sff, sw, rex] = await Promise.all([bg.waitFor(ff.executionId), bg.waitFor(w.executionId), ex]);
  assert.equal(sff.status, 'failed');
  assert.equal(sw.status, 'failed');
  assert.equal(rex.ok, false);
  assert.equal(rex.value.code, 'ERR_EXECUTION_TIMEOUT');
  await waitUntil(() => cbCalls.length === 1, 'callback');
  assert.equal(cbCalls[0][0].code, 'ERR_EXECUTION_TIMEOUT');
  for (const t of ['cb', 'ff', 'w', 'ex']) {
    assert.equal(signals.get(t).aborted, true, `${t} signal aborted`);
    assert.equal(signals.get(t).reason.code, 'ERR_EXECUTION_TIMEOUT');
  }
  assert.equal(await longer, 'late-longer', 'options.timeout overrides defaultTimeoutMs');
  assert.equal(signals.get('longer').aborted, false);
  await sleep(50);
  assertOneTerminal(events, [cb.executionId, ff.executionId, w.executionId], 'execution-failed');
  assert.equal(bg.getStatus().failed, 4);
  assert.equal(bg.getStatus().completed, 1);
  await bg.shutdown();
});

test('the timeout counts running time, not time spent queued', async () => {
  const blocker = gate();
  const bg = create({
    maxConcurrentAgents: 1,
    agents: {
      blocker: () => blocker.promise,
      quick: async () => {
        await sleep(50);
        return 'quick';
      },
    },
  });
  await bg.fireAndForget('blocker', 'b');
  const p = bg.execute('quick', 't', { timeout: 200 });
  await sleep(400); // queued for twice its timeout
  blocker.open();
  assert.equal(await p, 'quick');
  await bg.shutdown();
});

test('timeout slot rule: an agent that ignores the timeout holds its slot for cancelGraceMs; one that honours it frees it at once', async () => {
  const startedAt = new Map();
  const release = gate();
  const bg = create({
    maxConcurrentAgents: 1,
    cancelGraceMs: 300,
    agents: {
      deaf: async (t) => {
        startedAt.set(t, performance.now());
        await release.promise;
        return 'late';
      },
      polite: honouring(0, (t) => startedAt.set(t, performance.now())),
      next: (t) => {
        startedAt.set(t, performance.now());
        return t;
      },
    },
  });
  const events = terminalEvents(bg);
  const failedAt = new Map();
  bg.on('execution-failed', (e) => failedAt.set(e.executionId, performance.now()));

  // ignoring agent: the timeout fires at ~100 ms, the next starts ~300 ms after that
  const a = await bg.fireAndForget('deaf', 'A', { timeout: 100 });
  const b = await bg.fireAndForget('next', 'B');
  await waitUntil(() => failedAt.has(a.executionId), 'A timed out', { timeoutMs: 3000 });
  const tA = failedAt.get(a.executionId);
  assert.equal(startedAt.has('B'), false, 'B must not start when A times out but keeps running');
  await waitUntil(() => startedAt.has('B'), 'B started', { timeoutMs: 4000 });
  const delayB = startedAt.get('B') - tA;
  assert.ok(delayB >= 250, `B started ${delayB.toFixed(0)} ms after A timed out: before the grace period`);
  assert.ok(delayB <= 2000, `B started ${delayB.toFixed(0)} ms after A timed out`);
  await bg.waitFor(b.executionId);

  // honouring agent: the next starts right after the timeout
  const c = await bg.fireAndForget('polite', 'C', { timeout: 100 });
  const d = await bg.fireAndForget('next', 'D');
  await waitUntil(() => startedAt.has('D'), 'D started', { timeoutMs: 3000 });
  const tC = failedAt.get(c.executionId);
  assert.ok(tC !== undefined, 'C failed by timeout');
  const delayD = startedAt.get('D') - tC;
  assert.ok(delayD < 200, `D started ${delayD.toFixed(0)} ms after C timed out although C settled at once`);
  assert.equal(bg.getExecutionStatus(c.executionId).error.length > 0, true);
  await bg.waitFor(d.executionId);

  release.open();
  await sleep(30);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'failed');
  assertOneTerminal(events, [a.executionId, c.executionId], 'execution-failed');
  assertOneTerminal(events, [b.executionId, d.executionId], 'execution-completed');
  await bg.shutdown();
});

test('cancel after timeout and timeout after cancel: still exactly one terminal event', async () => {
  const release = gate();
  const bg = create({
    agents: {
      deaf: async () => {
        await release.promise;
        return 'late';
      },
    },
  });
  const events = terminalEvents(bg);
  // cancelled at once, its 150 ms timeout must not fire a second terminal event
  const a = await bg.fireAndForget('deaf', 'A', { timeout: 150 });
  assert.equal((await bg.cancelExecution(a.executionId)).success, true);
  // timed out, then cancelled: the cancel is refused
  const b = await bg.fireAndForget('deaf', 'B', { timeout: 50 });
  const sb = await bg.waitFor(b.executionId);
  assert.equal(sb.status, 'failed');
  assert.deepEqual(await bg.cancelExecution(b.executionId), {
    success: false,
    error: 'Cannot cancel execution in failed status',
  });
  // double cancel
  const c = await bg.fireAndForget('deaf', 'C');
  assert.equal((await bg.cancelExecution(c.executionId)).success, true);
  assert.equal((await bg.cancelExecution(c.executionId)).success, false);
  await sleep(300);
  release.open();
  await sleep(50);
  assert.equal(bg.getExecutionStatus(a.executionId).status, 'cancelled');
  assert.equal(bg.getExecutionStatus(b.executionId).status, 'failed');
  assert.equal(bg.getExecutionStatus(c.executionId).status, 'cancelled');
  assertOneTerminal(events, [a.executionId, c.executionId], 'execution-cancelled');
  assertOneTerminal(events, [b.executionId], 'execution-failed');
  await bg.shutdown();
});

test('many executions cancelled, timed out, failed and completed: exactly one terminal event each', async () => {
  const bg = create({
    maxConcurrentAgents: 4,
    cancelGraceMs: 50,
    agents: {
      mixed: async (task, o, { signal }) => {
        const n = Number(task);
        await sleep(n % 7);
        if (n % 5 === 0) throw new Error(`fail ${n}`);
        if (n % 11 === 0) await new Promise((r) => setTimeout(r, 120)); // outlives its timeout
        if (signal.aborted) return 'after-abort';
        return n;
      },
    },
  });
  const events = terminalEvents(bg);
  const ids = [];
  for (let i = 1; i <= 120; i++) {
    const options = i % 11 === 0 ? { timeout: 40 } : {};
    ids.push((await bg.fireAndForget('mixed', String(i), options)).executionId);
  }
  // cancel every third one wherever it is (queued, running or finished)
  const cancelResults = [];
  for (let i = 0; i < ids.length; i += 3) cancelResults.push(await bg.cancelExecution(ids[i]));
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  await sleep(200);
  for (let i = 0; i < ids.length; i++) {
    const list = events.get(ids[i]) || [];
    assert.equal(list.length, 1, `${ids[i]}: ${list.map((x) => x.name)}`);
    const expectedEvent = { completed: 'execution-completed', failed: 'execution-failed', cancelled: 'execution-cancelled' }[finals[i].status];
    assert.equal(list[0].name, expectedEvent, `${ids[i]} event matches its status ${finals[i].status}`);
  }
  assert.ok(cancelResults.some((r) => r.success), 'some cancels succeeded');
  const st = bg.getStatus();
  assert.equal(st.completed + st.failed + st.cancelled, 120);
  await bg.shutdown();
});

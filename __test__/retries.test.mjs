// Retries: options.retries / retryDelayMs / backoff per execution and as
// config defaults; context.attempt; execution-retry events; cancellation and shutdown stop
// pending retries; a timeout counts as a failed attempt.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, sleep, waitUntil, terminalEvents, assertOneTerminal } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach();

function flaky(failures) {
  const seen = [];
  const agent = async (task, options, ctx) => {
    seen.push(ctx.attempt);
    if (ctx.attempt <= failures) throw new Error(`attempt ${ctx.attempt} failed`);
    return { task, attempt: ctx.attempt };
  };
  return { agent, seen };
}

test('a failing agent is retried until it succeeds; attempts count from 1; one execution-retry per retry', async () => {
  const bg = create({ retries: 3, retryDelayMs: 10, backoff: 'fixed' });
  const { agent, seen } = flaky(2);
  bg.registerAgent('flaky', agent);
  const retries = [];
  bg.on('execution-retry', (e) => retries.push(e));
  const ends = terminalEvents(bg);
  const result = await bg.execute('flaky', 'build');
  assert.deepEqual(result, { task: 'build', attempt: 3 });
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(
    retries.map((e) => [e.agent, e.attempt, e.error, e.delayMs, e.errorObject instanceof Error]),
    [
      ['flaky', 1, 'attempt 1 failed', 10, true],
      ['flaky', 2, 'attempt 2 failed', 10, true],
    ],
  );
  const id = retries[0].executionId;
  assertOneTerminal(ends, [id], 'execution-completed');
  const status = bg.getExecutionStatus(id);
  assert.equal(status.status, 'completed');
  assert.equal(status.attempt, 3);
  const s = bg.getStatus();
  assert.deepEqual([s.completed, s.failed], [1, 0], 'a retried attempt is not a failure');
});

test('when retries run out the execution fails with the last error, exactly once', async () => {
  const bg = create();
  const { agent, seen } = flaky(10);
  bg.registerAgent('flaky', agent);
  let callbacks = 0;
  let lastErr;
  const done = new Promise((resolve) => {
    bg.executeWithCallback(
      'flaky',
      't',
      (err) => {
        callbacks++;
        lastErr = err;
        resolve();
      },
      { retries: 2, retryDelayMs: 5, backoff: 'fixed' },
    );
  });
  await done;
  await sleep(30);
  assert.equal(callbacks, 1);
  assert.equal(lastErr.message, 'attempt 3 failed');
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(bg.getStatus().failed, 1);
});

test('the retry delay is waited for; exponential backoff grows with jitter within [d/2, d]', async () => {
  const bg = create();
  const starts = [];
  bg.registerAgent('fails', async () => {
    starts.push(Date.now());
    throw new Error('no');
  });
  const delays = [];
  bg.on('execution-retry', (e) => delays.push(e.delayMs));
  await assert.rejects(bg.execute('fails', 't', { retries: 3, retryDelayMs: 40, backoff: 'exponential' }), /no/);
  assert.equal(starts.length, 4);
  // attempt n waits a delay in [40 * 2^(n-1) / 2, 40 * 2^(n-1)].
  delays.forEach((d, i) => {
    const full = 40 * 2 ** i;
    assert.ok(d >= full / 2 && d <= full, `retry ${i + 1}: ${d} not in [${full / 2}, ${full}]`);
  });
  for (let i = 1; i < starts.length; i++) {
    assert.ok(starts[i] - starts[i - 1] >= delays[i - 1] - 2, `attempt ${i + 1} started before its delay`);
  }
});

test('a timeout counts as a failed attempt; the next attempt waits for the timed-out one to let go of its slot', async () => {
  const bg = create({ maxConcurrentAgents: 1, cancelGraceMs: 200 });
  const attempts = [];
  bg.registerAgent('slow-first', (task, options, { attempt, signal }) => {
    attempts.push({ attempt, at: Date.now() });
    if (attempt === 1) return new Promise(() => {}); // ignores its signal, never settles
    return `attempt ${attempt}`;
  });
  const retries = [];
  bg.on('execution-retry', (e) => retries.push(e));
  const t0 = Date.now();
  const result = await bg.execute('slow-first', 't', { timeout: 50, retries: 1, retryDelayMs: 0 });
  assert.equal(result, 'attempt 2');
  assert.equal(retries.length, 1);
  assert.equal(retries[0].errorObject.code, 'ERR_EXECUTION_TIMEOUT');
  // The second attempt could not start before the grace period freed the slot (~250 ms).
  assert.ok(attempts[1].at - t0 >= 200, `second attempt at ${attempts[1].at - t0} ms`);
});

test('a late result of a timed-out attempt is discarded; the retry decides the outcome', async () => {
  const bg = create({ cancelGraceMs: 1000 });
  bg.registerAgent('late', async (task, options, { attempt }) => {
    if (attempt === 1) {
      await sleep(120); // settles after its 50 ms timeout
      return 'late first';
    }
    return 'second';
  });
  assert.equal(await bg.execute('late', 't', { timeout: 50, retries: 1, retryDelayMs: 0 }), 'second');
});

test('each attempt gets a fresh signal; the failed attempt keeps its aborted one', async () => {
  const bg = create();
  const signals = [];
  bg.registerAgent('sig', async (task, options, { attempt, signal }) => {
    signals.push(signal);
    if (attempt === 1) {
      await new Promise((resolve) => signal.addEventListener('abort', resolve));
      throw signal.reason;
    }
    return signal.aborted;
  });
  assert.equal(await bg.execute('sig', 't', { timeout: 30, retries: 1, retryDelayMs: 0 }), false);
  assert.equal(signals.length, 2);
  assert.notEqual(signals[0], signals[1]);
  assert.equal(signals[0].aborted, true);
  assert.equal(signals[0].reason.code, 'ERR_EXECUTION_TIMEOUT');
});

test('cancelling an execution that waits for a retry cancels it; the retry never runs', async () => {
  const bg = create();
  const { agent, seen } = flaky(10);
  bg.registerAgent('flaky', agent);
  const ends = terminalEvents(bg);
  const p = bg.execute('flaky', 't', { retries: 5, retryDelayMs: 300, backoff: 'fixed' });
  const retry = await new Promise((resolve) => bg.once('execution-retry', resolve));
  const status = bg.getExecutionStatus(retry.executionId);
  assert.equal(status.status, 'queued', 'waiting for its next attempt');
  assert.deepEqual(await bg.cancelExecution(retry.executionId), {
    success: true,
    executionId: retry.executionId,
    previousStatus: 'queued',
  });
  await assert.rejects(p, { code: 'ERR_EXECUTION_CANCELLED' });
  await sleep(400);
  assert.deepEqual(seen, [1]);
  assertOneTerminal(ends, [retry.executionId], 'execution-cancelled');
});

test('shutdown stops pending retries, visibly, in drain mode too', async () => {
  const bg = create();
  const { agent, seen } = flaky(10);
  bg.registerAgent('flaky', agent);
  const p = bg.execute('flaky', 't', { retries: 5, retryDelayMs: 5000, backoff: 'fixed' });
  await new Promise((resolve) => bg.once('execution-retry', resolve));
  const t0 = Date.now();
  await bg.shutdown({ mode: 'drain' });
  assert.ok(Date.now() - t0 < 1000, 'did not wait for the 5 s retry delay');
  await assert.rejects(p, { code: 'ERR_EXECUTOR_SHUT_DOWN' });
  assert.deepEqual(seen, [1]);
  assert.equal(bg.getStatus().cancelled, 1);
});

test('config defaults apply, options override them, and bad values are rejected with ERR_INVALID_ARG', async () => {
  assert.throws(() => create({ retries: -1 }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /retries/ });
  assert.throws(() => create({ retries: 1.5 }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /retries/ });
  assert.throws(() => create({ retryDelayMs: '5' }), { name: 'TypeError', code: 'ERR_INVALID_ARG', message: /retryDelayMs/ });
  assert.throws(() => create({ backoff: 'linear' }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /backoff/ });
  const bg = create({ retries: 1, retryDelayMs: 5 });
  const { agent, seen } = flaky(1);
  bg.registerAgent('flaky', agent);
  await assert.rejects(bg.execute('flaky', 't', { retries: 'x' }), { name: 'TypeError', code: 'ERR_INVALID_ARG', message: /options\.retries/ });
  await assert.rejects(bg.execute('flaky', 't', { backoff: 7 }), { name: 'TypeError', code: 'ERR_INVALID_ARG', message: /options\.backoff/ });
  // The config default (1 retry) makes it succeed; options.retries 0 makes the next one fail.
  assert.deepEqual(await bg.execute('flaky', 'a'), { task: 'a', attempt: 2 });
  seen.length = 0;
  await assert.rejects(bg.execute('flaky', 'b', { retries: 0 }), /attempt 1 failed/);
  assert.deepEqual(seen, [1]);
  await waitUntil(() => bg.getQueueStatus().running === 0, 'idle');
});

// retryIf: which failures are retried. Called before each retry the policy allows, with the
// error and the attempt that failed; a falsy answer ends the execution with that error.
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { test, shutDownAfterEach, tempDir } from './helpers.mjs';

const make = shutDownAfterEach();

const failing = (code) => {
  const calls = [];
  const fn = async (task, options, ctx) => {
    calls.push(ctx.attempt);
    throw Object.assign(new Error(`fail ${ctx.attempt}`), { code });
  };
  return { fn, calls };
};

test('config retryIf: false ends the execution with the error of that attempt; true retries', async () => {
  const seen = [];
  const bg = make({
    retries: 3,
    retryDelayMs: 1,
    retryIf: (err, attempt) => {
      seen.push([err.message, attempt]);
      return attempt < 2;
    },
  });
  const a = failing('E_X');
  bg.registerAgent('a', a.fn);
  const retries = [];
  bg.on('execution-retry', (e) => retries.push(e.attempt));
  await assert.rejects(bg.execute('a', 't'), { message: 'fail 2', code: 'E_X' });
  assert.deepEqual(a.calls, [1, 2]);
  assert.deepEqual(seen, [
    ['fail 1', 1],
    ['fail 2', 2],
  ]);
  assert.deepEqual(retries, [1]);
});

test('options.retryIf overrides the config; it is not asked once no retry is left', async () => {
  let configAsked = 0;
  const asked = [];
  const bg = make({ retries: 1, retryDelayMs: 1, retryIf: () => (configAsked++, false) });
  const a = failing('E_Y');
  bg.registerAgent('a', a.fn);
  await assert.rejects(
    bg.execute('a', 't', { retries: 2, retryIf: (err, attempt) => (asked.push(attempt), true) }),
    { message: 'fail 3' },
  );
  assert.deepEqual(a.calls, [1, 2, 3]);
  assert.deepEqual(asked, [1, 2], 'asked before each retry the policy allows, not after the last attempt');
  assert.equal(configAsked, 0);
});

test('by default ERR_AGENT_NOT_FOUND and ERR_COMMAND_SPAWN are not retried; other errors are', async () => {
  const bg = make({ retries: 2, retryDelayMs: 1 });
  const lost = failing('ERR_AGENT_NOT_FOUND');
  const spawn = failing('ERR_COMMAND_SPAWN');
  const other = failing('E_OTHER');
  bg.registerAgent('lost', lost.fn).registerAgent('spawn', spawn.fn).registerAgent('other', other.fn);
  await assert.rejects(bg.execute('lost', 't'), { code: 'ERR_AGENT_NOT_FOUND' });
  await assert.rejects(bg.execute('spawn', 't'), { code: 'ERR_COMMAND_SPAWN' });
  await assert.rejects(bg.execute('other', 't'), { code: 'E_OTHER' });
  assert.deepEqual(lost.calls, [1]);
  assert.deepEqual(spawn.calls, [1]);
  assert.deepEqual(other.calls, [1, 2, 3]);
});

test('a timeout asks retryIf too, with the timeout error', async () => {
  const seen = [];
  const bg = make({ retries: 2, retryDelayMs: 1, retryIf: (err) => (seen.push(err.code), false) });
  let calls = 0;
  bg.registerAgent('slow', (task, options, ctx) => {
    calls++;
    return new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve('late')));
  });
  await assert.rejects(bg.execute('slow', 't', { timeout: 30 }), { code: 'ERR_EXECUTION_TIMEOUT' });
  assert.equal(calls, 1);
  assert.deepEqual(seen, ['ERR_EXECUTION_TIMEOUT']);
});

test('a retryIf that throws declines the retry and reports its error (callback-error)', async () => {
  const bg = make({ retries: 2, retryDelayMs: 1 });
  const reported = [];
  bg.on('callback-error', (e) => reported.push(e.error.message));
  const a = failing('E_Z');
  bg.registerAgent('a', a.fn);
  await assert.rejects(
    bg.execute('a', 't', {
      retryIf: () => {
        throw new Error('retryIf broke');
      },
    }),
    { message: 'fail 1' },
  );
  assert.deepEqual(a.calls, [1]);
  assert.deepEqual(reported, ['retryIf broke']);
});

test("retryIf runs in the submitter's async context", async () => {
  const als = new AsyncLocalStorage();
  const stores = [];
  const bg = make({ retries: 1, retryDelayMs: 1, retryIf: () => (stores.push(als.getStore()), false) });
  bg.registerAgent('a', failing('E').fn);
  await als.run({ req: 7 }, () => assert.rejects(bg.execute('a', 't')));
  assert.deepEqual(stores, [{ req: 7 }]);
});

test('a retryIf that is not a function is refused, in the config and in the options', async () => {
  assert.throws(() => make({ retryIf: 'yes' }), { name: 'TypeError', code: 'ERR_INVALID_ARG', message: /retryIf must be a function/ });
  const bg = make();
  bg.registerAgent('a', async () => 1);
  await assert.rejects(bg.fireAndForget('a', 't', { retryIf: 42 }), { name: 'TypeError', message: /options\.retryIf must be a function/ });
});

test('with a store, retryIf decides whether the store queues the execution again', async (t) => {
  const dir = tempDir(t, 'bmad-retryif-');
  const bg = make({ store: `sqlite:${dir}/s.db`, retries: 3, retryDelayMs: 1, retryIf: (err, attempt) => attempt < 2 });
  const a = failing('E_S');
  bg.registerAgent('a', a.fn);
  await bg.initialize();
  await assert.rejects(bg.execute('a', 't'), { message: 'fail 2', code: 'E_S' });
  assert.deepEqual(a.calls, [1, 2]);
  const s = await bg.fetchExecutionStatus('exec-d1');
  assert.equal(s.status, 'failed');
  assert.equal(s.attempt, 2);
});

// options.key in memory: while an execution with a key is queued or running, a submission
// with the same key gets that execution's id and outcome instead of a second run.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, tempDir } from './helpers.mjs';

const make = shutDownAfterEach();

function gated() {
  let open;
  const gate = new Promise((r) => (open = r));
  let runs = 0;
  const fn = async (task) => {
    runs++;
    await gate;
    return { task, run: runs };
  };
  return { fn, open: () => open(), runs: () => runs };
}

test('same key while running: same id, one run, every execute() gets the same value', async () => {
  const bg = make();
  const g = gated();
  bg.registerAgent('a', g.fn);
  const first = bg.execute('a', 'one', { key: 'k1' });
  const second = bg.execute('a', 'two', { key: 'k1' });
  const ff = await bg.fireAndForget('a', 'three', { key: 'k1' });
  const cb = new Promise((resolve) => bg.executeWithCallback('a', 'four', (err, v) => resolve([err, v]), { key: 'k1' }));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(g.runs(), 1);
  const status = bg.getExecutionStatus(ff.executionId);
  assert.equal(status.found && status.key, 'k1');
  assert.equal(ff.status, 'running');
  g.open();
  const [v1, v2, [err, v4]] = await Promise.all([first, second, cb]);
  assert.equal(v1, v2, 'the same value object');
  assert.equal(v4, v1);
  assert.equal(err, null);
  assert.deepEqual(v1, { task: 'one', run: 1 });
  assert.equal(g.runs(), 1);
});

test('after the end the key is free: a new submission runs again with a new id', async () => {
  const bg = make();
  let runs = 0;
  bg.registerAgent('a', async (task) => (runs++, task));
  const a = await bg.fireAndForget('a', 'x', { key: 'k2' });
  await bg.waitFor(a.executionId);
  const b = await bg.fireAndForget('a', 'y', { key: 'k2' });
  assert.notEqual(b.executionId, a.executionId);
  await bg.waitFor(b.executionId);
  assert.equal(runs, 2);
});

test('a failure or a cancel reaches every submission with the key; other keys are independent', async () => {
  const bg = make({ maxConcurrentAgents: 1 });
  const g = gated();
  bg.registerAgent('a', g.fn);
  bg.registerAgent('bad', async () => {
    throw Object.assign(new Error('nope'), { code: 'E_BAD' });
  });
  const blocker = bg.execute('a', 'block');
  const q1 = bg.execute('bad', 't', { key: 'k3' });
  const q2 = bg.execute('bad', 't', { key: 'k3' });
  const c1 = bg.execute('a', 'c', { key: 'k4' });
  const c2 = bg.execute('a', 'c', { key: 'k4' });
  const { executionId } = await bg.fireAndForget('a', 'c', { key: 'k4' });
  assert.equal((await bg.cancelExecution(executionId)).success, true);
  await assert.rejects(c1, { code: 'ERR_EXECUTION_CANCELLED' });
  await assert.rejects(c2, { code: 'ERR_EXECUTION_CANCELLED' });
  g.open();
  await blocker;
  await assert.rejects(q1, { code: 'E_BAD' });
  await assert.rejects(q2, { code: 'E_BAD' });
});

test('a bad key is refused: TypeError for a wrong type, RangeError when too long, with a store too', async (t) => {
  const dir = tempDir(t, 'bmad-keys-');
  for (const bg of [make(), make({ store: `sqlite:${dir}/s.db` })]) {
    bg.registerAgent('a', async () => 1);
    await assert.rejects(bg.execute('a', 't', { key: 42 }), { name: 'TypeError', code: 'ERR_INVALID_ARG', message: /options\.key must be a non-empty string/ });
    await assert.rejects(bg.fireAndForget('a', 't', { key: '' }), { name: 'TypeError', code: 'ERR_INVALID_ARG' });
    await assert.rejects(bg.fireAndForget('a', 't', { key: 'k'.repeat(1025) }), {
      name: 'RangeError',
      code: 'ERR_INVALID_ARG',
      message: 'options.key must be at most 1024 characters long, got 1025',
    });
    assert.equal(await bg.execute('a', 't', { key: 'k'.repeat(1024) }), 1);
  }
});

test('executeMultiple refuses a key, in its options or an item\'s, naming it; nothing is submitted', async () => {
  const bg = make();
  let runs = 0;
  bg.registerAgent('a', async () => ++runs);
  bg.registerAgent('b', async () => ++runs);
  const submitted = [];
  bg.on('execution-queued', (e) => submitted.push(e.executionId));
  await assert.rejects(bg.executeMultiple(['a', 'b'], 't', { key: 'shared' }), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG',
    message: /^options\.key: executeMultiple takes no key .*got "shared"/,
  });
  await assert.rejects(bg.executeMultiple([{ agent: 'a', task: 't' }, { agent: 'b', task: 't', options: { key: 5 } }]), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG',
    message: /^agents\[1\]\.options\.key: executeMultiple takes no key .*got 5/,
  });
  assert.equal(bg.getStatus().submitted, 0);
  assert.deepEqual(submitted, []);
  // Without one, every agent runs; key: undefined or null is no key.
  const r = await bg.executeMultiple(['a', 'b'], 't', { key: undefined });
  assert.deepEqual(
    r.results.map((x) => x.status),
    ['completed', 'completed'],
  );
  await bg.executeMultiple([{ agent: 'a', task: 't', options: { key: null } }]);
  assert.equal(runs, 3);
});

test("a follower's own signal takes it out with a cancellation; the execution goes on for the others", async () => {
  const bg = make();
  const g = gated();
  bg.registerAgent('a', g.fn);
  const first = bg.execute('a', 'one', { key: 'k5' });
  const ac = new AbortController();
  const second = bg.execute('a', 'two', { key: 'k5', signal: ac.signal });
  const already = bg.execute('a', 'three', { key: 'k5', signal: AbortSignal.abort('gone') });
  await assert.rejects(already, { code: 'ERR_EXECUTION_CANCELLED' });
  ac.abort('not needed');
  await assert.rejects(second, { code: 'ERR_EXECUTION_CANCELLED', cause: 'not needed' });
  g.open();
  assert.deepEqual(await first, { task: 'one', run: 1 });
  assert.equal(g.runs(), 1);
});

test("the first submission's own signal cancels the execution itself: its followers get the cancellation", async () => {
  const bg = make();
  const g = gated();
  bg.registerAgent('a', g.fn);
  const ac = new AbortController();
  const first = bg.execute('a', 'one', { key: 'k6', signal: ac.signal });
  const second = bg.execute('a', 'two', { key: 'k6' });
  ac.abort('stop');
  await assert.rejects(first, { code: 'ERR_EXECUTION_CANCELLED' });
  await assert.rejects(second, { code: 'ERR_EXECUTION_CANCELLED' });
  g.open();
});

test('callback submissions following a refused one (queue full) are refused once each, by their promise only', async () => {
  const bg = make({ maxConcurrentAgents: 1, maxQueued: 1 });
  const g = gated();
  bg.registerAgent('a', g.fn);
  const busy = bg.execute('a', 'busy');
  const queued = bg.execute('a', 'queued');
  const outcomes = [];
  const answers = ['x', 'y'].map((t) =>
    bg
      .executeWithCallback('a', t, (err) => outcomes.push(['callback', t, err && err.code]), { key: 'k7' })
      .then(
        (r) => outcomes.push(['admitted', t, r.status]),
        (err) => outcomes.push(['rejected', t, err.code]),
      ),
  );
  await Promise.all(answers);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(outcomes.sort(), [
    ['rejected', 'x', 'ERR_QUEUE_FULL'],
    ['rejected', 'y', 'ERR_QUEUE_FULL'],
  ]);
  g.open();
  await Promise.all([busy, queued]);
});

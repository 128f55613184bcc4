// What an executor on a store says of the stored executions it holds: its in-memory queries
// name them by their `exec-d` ids (the only ids users were given), their core ids are not
// found, and command agents of stored executions get what in-memory ones do (process usage in
// getActiveExecutions, a slot kept until a cancelled process is gone, the output budget).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, tempDir, gate, waitUntil, isAlive, registerDeafAndNext } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach({ timeoutMs: 50 });

/** An executor on a new SQLite store (removed after the test) that never throttles. */
function make(t, config = {}) {
  const dir = tempDir(t, 'bmad-durable-views-');
  return create({ store: `sqlite:${join(dir, 'executions.db')}`, ...config });
}

test('getActiveExecutions() and getQueueStatus() name stored executions by their exec-d ids; their core ids are not found', async (t) => {
  // Two claimed ahead of the slot: they wait in this process's queue.
  const bg = make(t, { maxConcurrentAgents: 1, storePrefetch: 2 });
  const g = gate();
  const seen = [];
  bg.registerAgent('hold', async (task, options, ctx) => {
    seen.push(ctx.executionId);
    await g.promise;
    return task;
  });
  await bg.initialize();
  const ids = [];
  for (const task of ['a', 'b', 'c']) ids.push((await bg.fireAndForget('hold', task)).executionId);
  assert.deepEqual(ids, ['exec-d1', 'exec-d2', 'exec-d3']);
  await waitUntil(() => seen.length === 1, 'the first started');

  const active = bg.getActiveExecutions();
  assert.deepEqual(
    active.map((e) => [e.id, e.executionId, e.task]),
    [['exec-d1', 'exec-d1', 'a']],
  );
  // Claimed here and waiting for the slot: under their own ids.
  await waitUntil(() => bg.getQueueStatus().queue.length === 2, 'two claimed ahead');
  assert.deepEqual(
    bg.getQueueStatus().queue.map((q) => q.id),
    ['exec-d2', 'exec-d3'],
  );

  // The core's own ids were never given out: nothing answers to them.
  for (const id of ['exec-1', 'exec-2', 'exec-3']) {
    assert.deepEqual(bg.getExecutionStatus(id), { found: false }, id);
    assert.deepEqual(await bg.fetchExecutionStatus(id), { found: false }, id);
    assert.deepEqual(await bg.waitFor(id), { found: false }, id);
    assert.deepEqual(await bg.cancelExecution(id), { success: false, error: 'Execution not found' }, id);
    const watched = [];
    for await (const s of bg.watch(id)) watched.push(s);
    assert.deepEqual(watched, [{ found: false }], id);
  }
  assert.equal(bg.getExecutionStatus('exec-d1').status, 'running', 'the cancels above touched nothing');

  g.open();
  for (const id of ids) assert.equal((await bg.waitFor(id)).status, 'completed', id);
  assert.deepEqual(seen, ids);
});

test('a stored execution whose value the store refuses: its core id does not answer "completed"', async (t) => {
  const bg = make(t);
  bg.registerAgent('fn', () => () => 1);
  const err = await bg.execute('fn', 't').catch((e) => e);
  assert.equal(err.code, 'ERR_NOT_SERIALIZABLE');
  assert.equal((await bg.fetchExecutionStatus('exec-d1')).status, 'failed');
  assert.equal(bg.getExecutionStatus('exec-d1').status, 'failed');
  assert.deepEqual(bg.getExecutionStatus('exec-1'), { found: false });
});

test('a stored command agent: its pid in getActiveExecutions(), and once cancelled its slot is kept until its SIGTERM-deaf process is gone', async (t) => {
  const bg = make(t, { maxConcurrentAgents: 1, cancelGraceMs: 100 });
  const { state, ready } = registerDeafAndNext(bg);
  await bg.initialize();
  const deaf = bg.execute('deaf', 't').catch((err) => err);
  const id = await ready;
  assert.equal(id, 'exec-d1');
  const [entry] = bg.getActiveExecutions();
  assert.equal(entry.executionId, 'exec-d1');
  state.pid = entry.pid;
  assert.ok(state.pid > 0 && isAlive(state.pid), `the command's pid in getActiveExecutions(): ${JSON.stringify(entry)}`);
  // An in-memory execution waits for the slot here: the core hands it on.
  const next = bg.execute('next', 't', { durable: false });
  const cancelledAt = Date.now();
  assert.equal((await bg.cancelExecution(id)).success, true);
  await next;
  assert.equal((await deaf).code, 'ERR_EXECUTION_CANCELLED');
  const { nextStart } = state;
  const waited = nextStart.at - cancelledAt;
  assert.equal(nextStart.deafAlive, false, `the next agent started ${waited} ms after the cancel, with the SIGTERM-deaf command still alive`);
  assert.ok(waited >= 1300, `the next agent started ${waited} ms after the cancel (killGraceMs 1500)`);
});

test('maxRetainedOutputBytes bounds the output kept for stored command executions too, oldest first', async (t) => {
  const bg = make(t, { maxRetainedOutputBytes: 1000 });
  bg.registerCommand('six', { command: 'sh', args: ['-c', 'printf 123456'] });
  await bg.initialize();
  const first = await bg.execute('six', 'first');
  assert.equal(first.stdout, '123456');
  const ids = [];
  for (let i = 0; i < 300; i++) ids.push((await bg.fireAndForget('six', String(i))).executionId);
  for (const id of ids) await bg.waitFor(id);
  await waitUntil(() => bg.getExecutionStatus('exec-d1').result.outputDropped === true, 'the oldest output dropped', { timeoutMs: 3000 });
  const oldest = bg.getExecutionStatus('exec-d1').result;
  assert.equal(oldest.stdout, '');
  assert.equal(oldest.stdoutBytes, 6, 'the byte counts stay');
  assert.equal(first.stdout, '123456', 'what the caller got is theirs');
  const kept = ids.filter((id) => bg.getExecutionStatus(id).result.outputDropped === false).length;
  assert.ok(kept <= 1000 / 6, `${kept} results of 6 bytes kept under a 1000-byte total`);
  const newest = bg.getExecutionStatus(ids.at(-1)).result;
  assert.equal(newest.stdout, '123456', 'the newest stays whole');
  // What is stored is the whole result.
  assert.equal((await bg.fetchExecutionStatus('exec-d1')).result.stdout, '123456');
});

test('watch() of a stored execution running here yields each progress report, then its final status; executeWatched ends with a final progress-update', async (t) => {
  const bg = make(t);
  const g = gate();
  const step = gate();
  bg.registerAgent('steps', async (task, options, ctx) => {
    await step.promise;
    for (const p of [25, 50, 75]) ctx.progress(p, { at: p });
    await g.promise;
    return 'stepped';
  });
  const updates = [];
  bg.on('progress-update', (e) => updates.push([e.executionId, e.progress, e.status]));
  const { executionId } = await bg.executeWatched('steps', 't');
  assert.equal(executionId, 'exec-d1');
  await waitUntil(() => bg.getActiveExecutions().length === 1, 'running');
  const seen = [];
  const watching = (async () => {
    for await (const s of bg.watch(executionId)) seen.push(s);
  })();
  await waitUntil(() => seen.length === 1, 'the status it starts from');
  step.open();
  await waitUntil(() => seen.length === 4, 'three progress reports', { timeoutMs: 3000 });
  g.open();
  await watching;
  assert.deepEqual(
    seen.slice(1).map((s) => [s.progress, s.status, s.detail]),
    [
      [25, 'running', { at: 25 }],
      [50, 'running', { at: 50 }],
      [75, 'running', { at: 75 }],
      [100, 'completed', undefined],
    ],
  );
  assert.equal(seen.at(-1).result, 'stepped');
  assert.deepEqual(updates.at(-1), ['exec-d1', 100, 'completed'], 'the final progress-update');
});

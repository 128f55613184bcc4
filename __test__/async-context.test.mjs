// Agents run in the async context of the code that submitted them, as if called there: an
// AsyncLocalStorage store set around a submission is the store its agent, its callback, its
// onProgress and the continuation of its execute() see — whichever execution's settlement
// happened to start it.
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, sleep } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach();
const als = new AsyncLocalStorage();
const store = () => als.getStore()?.req;

test('at concurrency 1, each agent, callback, onProgress and execute() continuation sees its own submitter\'s store', async () => {
  const bg = create({ maxConcurrentAgents: 1 });
  const seen = { agent: [], callback: [], progress: [], continuation: [] };
  bg.registerAgent('work', async (task, options, ctx) => {
    seen.agent.push([task, store()]);
    ctx.progress(50);
    await sleep(5); // the next start comes from this settlement
    seen.agent.push([`${task} after await`, store()]);
    return task;
  });
  const done = [];
  for (const req of [1, 2, 3]) {
    als.run({ req }, () => {
      const onProgress = () => seen.progress.push([`e${req}`, store()]);
      done.push(bg.execute('work', `e${req}`, { onProgress }).then(() => seen.continuation.push([`e${req}`, store()])));
      bg.executeWithCallback('work', `c${req}`, () => seen.callback.push([`c${req}`, store()]));
    });
  }
  await Promise.all(done);
  await bg.onIdle();
  assert.deepEqual(
    seen.agent.filter(([t]) => !t.includes('after')),
    [['e1', 1], ['c1', 1], ['e2', 2], ['c2', 2], ['e3', 3], ['c3', 3]],
  );
  assert.ok(seen.agent.filter(([t]) => t.includes('after')).every(([t, r]) => t.slice(1, 2) === String(r)));
  assert.deepEqual(seen.callback, [['c1', 1], ['c2', 2], ['c3', 3]]);
  assert.deepEqual(seen.progress, [['e1', 1], ['e2', 2], ['e3', 3]]);
  assert.deepEqual(seen.continuation, [['e1', 1], ['e2', 2], ['e3', 3]]);
});

test('retries, fire-and-forget, watched and starts deferred past the per-turn budget keep the submitter\'s store', async () => {
  const bg = create({ maxConcurrentAgents: 2000 });
  const mismatches = [];
  let attempts = 0;
  bg.registerAgent('check', (task, options, ctx) => {
    if (String(store()) !== task) mismatches.push([task, store(), ctx.attempt]);
    if (options?.flaky && ctx.attempt === 1) {
      attempts++;
      throw new Error('first attempt fails');
    }
    return task;
  });
  const ids = [];
  // 1500 starts in one turn: the last ~500 are deferred to a later turn (setImmediate).
  for (let i = 0; i < 1500; i++) als.run({ req: i }, () => ids.push(bg.execute('check', String(i))));
  for (let i = 1500; i < 1510; i++) {
    als.run({ req: i }, () => {
      ids.push(bg.fireAndForget('check', String(i)));
      ids.push(bg.executeWatched('check', String(i)));
      ids.push(bg.execute('check', String(i), { flaky: true, retries: 1, retryDelayMs: 5 }));
    });
  }
  await Promise.all(ids);
  await bg.onIdle();
  assert.equal(attempts, 10);
  assert.deepEqual(mismatches, []);
});

test('outside any store, agents see none (no store leaks from one submission to the next)', async () => {
  const bg = create({ maxConcurrentAgents: 1 });
  const seen = [];
  bg.registerAgent('look', async (task) => {
    seen.push([task, store()]);
    await sleep(2);
  });
  const a = als.run({ req: 'inside' }, () => bg.execute('look', 'a'));
  const b = bg.execute('look', 'b');
  await Promise.all([a, b]);
  assert.deepEqual(seen, [['a', 'inside'], ['b', undefined]]);
});

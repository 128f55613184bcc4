// Mistakes that must not vanish silently: a throwing callback with nobody listening, a
// forgotten initialize(), a drain of a paused executor, one signal shared by many
// submissions. (An unknown agent refused at submission: modes.test.mjs.)
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, sleep, runScript, ENTRY } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach();

test('a throwing callback or onProgress emits callback-error; with no listener it is an uncaught exception', async () => {
  const bg = create();
  bg.registerAgent('p', (task, options, ctx) => ctx.progress(10));
  const errors = [];
  bg.on('callback-error', (e) => errors.push([e.agent, e.error.message]));
  await bg.executeWithCallback('p', 't', () => {
    throw new Error('callback boom');
  });
  await bg.execute('p', 't', {
    onProgress: () => {
      throw new Error('progress boom');
    },
  });
  await bg.onIdle();
  await sleep(10);
  assert.deepEqual(errors.sort(), [
    ['p', 'callback boom'],
    ['p', 'progress boom'],
  ]);

  for (const which of ['callback', 'onProgress']) {
    const out = await runScript(`
import { BackgroundExecutor } from '${ENTRY}';
const bg = new BackgroundExecutor({ throttleIfExceeded: false });
bg.registerAgent('p', (task, options, ctx) => ctx.progress(10));
process.on('exit', (code) => process.stdout.write('EXIT ' + code + '\\n'));
if (${JSON.stringify(which)} === 'callback') {
  await bg.executeWithCallback('p', 't', () => { throw new Error('lost ${which}'); });
} else {
  await bg.execute('p', 't', { onProgress: () => { throw new Error('lost ${which}'); } });
}
await bg.onIdle();
setTimeout(() => bg.shutdown(), 50);
`);
    assert.match(out.stderr, new RegExp(`Error: lost ${which}`), `${which}: ${out.stderr}`);
    assert.notEqual(out.code, 0, `${which}: the process fails as with any uncaught exception`);
  }
});

test('without initialize(), resource limits hold: the monitor starts with the first submission', async () => {
  const bg = create({ maxConcurrentAgents: 3, minConcurrentAgents: 1, maxMemoryMb: 1, monitorIntervalMs: 20, throttleIfExceeded: true });
  const throttled = [];
  bg.on('queue-throttled', (e) => throttled.push(e.reason));
  let running = 0;
  let maxAfterThrottle = 0;
  bg.registerAgent('hold', async () => {
    running++;
    if (throttled.length > 0) maxAfterThrottle = Math.max(maxAfterThrottle, running);
    await sleep(60);
    running--;
  });
  assert.equal(bg.getStatus().initialized, false);
  const all = [];
  for (let i = 0; i < 9; i++) all.push(bg.execute('hold', `t${i}`));
  assert.equal(bg.getStatus().initialized, true, 'initialized by the first submission');
  assert.equal(bg.resourceMonitor.running, true);
  await Promise.all(all);
  assert.ok(throttled.length >= 1, 'throttled: memory is far above 1 MB');
  assert.ok(throttled[0].includes('memory'));
  assert.ok(maxAfterThrottle <= 1, `at most minConcurrentAgents started while throttled, saw ${maxAfterThrottle}`);
});

test('after await initialize(), resource limits hold from the first submission: it waits for the first sample, taken at once', async () => {
  // The default interval: the first periodic sample would come a second later.
  const bg = create({ maxConcurrentAgents: 4, minConcurrentAgents: 1, maxMemoryMb: 1, throttleIfExceeded: true });
  let running = 0;
  let most = 0;
  bg.registerAgent('hold', async () => {
    running++;
    most = Math.max(most, running);
    await sleep(30);
    running--;
  });
  const t0 = performance.now();
  await bg.initialize();
  const waited = performance.now() - t0;
  assert.equal(bg.getStatus().throttled, true, `throttled once initialize() resolved (after ${Math.round(waited)} ms)`);
  await Promise.all(Array.from({ length: 8 }, (_, i) => bg.execute('hold', `t${i}`)));
  assert.equal(most, 1, 'one at a time (minConcurrentAgents) while throttled');
});

test("shutdown({ mode: 'drain' }) on a paused executor resumes it and runs the queue to the end", async () => {
  const bg = create({ maxConcurrentAgents: 2 });
  const ran = [];
  bg.registerAgent('w', async (task) => {
    await sleep(5);
    ran.push(task);
    return task;
  });
  bg.pause();
  const results = [1, 2, 3, 4].map((i) => bg.execute('w', `t${i}`));
  await sleep(20);
  assert.deepEqual(ran, [], 'paused: nothing ran');
  const unpaused = [];
  bg.on('queue-unpaused', (e) => unpaused.push(e));
  const done = await Promise.race([bg.shutdown({ mode: 'drain' }).then(() => 'settled'), sleep(3000).then(() => 'hung')]);
  assert.equal(done, 'settled');
  assert.deepEqual(await Promise.all(results), ['t1', 't2', 't3', 't4']);
  assert.deepEqual(ran.sort(), ['t1', 't2', 't3', 't4']);
  assert.equal(bg.getStatus().completed, 4);
});

test('one AbortSignal shared by many submissions gets one listener, cancels them all, and is left clean', async () => {
  const warnings = [];
  const onWarning = (w) => warnings.push(w.name);
  process.on('warning', onWarning);
  try {
    const bg = create({ maxConcurrentAgents: 5 });
    bg.registerAgent('wait', (task, options, ctx) => new Promise((resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))));
    bg.registerAgent('quick', (task) => task);
    const shared = new AbortController();
    const outcomes = [];
    for (let i = 0; i < 40; i++) {
      outcomes.push(bg.execute('wait', `w${i}`, { signal: shared.signal }).then(() => 'ok', (e) => e.code));
    }
    await sleep(20);
    assert.equal(getEventListeners(shared.signal, 'abort').length, 1, 'one listener for 40 executions');
    shared.abort(new Error('user stop'));
    assert.deepEqual(new Set(await Promise.all(outcomes)), new Set(['ERR_EXECUTION_CANCELLED']));
    assert.equal(getEventListeners(shared.signal, 'abort').length, 0);

    // Executions that end on their own take the listener with the last of them.
    const other = new AbortController();
    await Promise.all(Array.from({ length: 30 }, (_, i) => bg.execute('quick', `q${i}`, { signal: other.signal })));
    assert.equal(getEventListeners(other.signal, 'abort').length, 0);
    await sleep(10);
    assert.deepEqual(warnings.filter((n) => n === 'MaxListenersExceededWarning'), []);
  } finally {
    process.off('warning', onWarning);
  }
});

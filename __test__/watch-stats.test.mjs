// watch(), onIdle(), getStats() and the BMAD_BG_LOG diagnostics.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, sleep, gate } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach();
const entry = fileURLToPath(new URL('../index.js', import.meta.url));

test('watch() yields each progress report in order, then the final status, then ends', async () => {
  const bg = create();
  bg.registerAgent('steps', async (task, options, { progress }) => {
    for (let i = 1; i <= 4; i++) {
      await sleep(5);
      progress(i * 25, `step ${i}`);
    }
    return { done: task };
  });
  const { executionId } = await bg.executeWatched('steps', 'suite');
  const seen = [];
  for await (const update of bg.watch(executionId)) seen.push(update);
  // Where it stood when watching began, then every report, then the final status.
  assert.deepEqual(
    seen.slice(0, 5).map((u) => [u.executionId, u.agent, u.progress, u.status, u.detail]),
    [[executionId, 'steps', 0, 'running', undefined]].concat(
      [1, 2, 3, 4].map((i) => [executionId, 'steps', i * 25, 'running', `step ${i}`]),
    ),
  );
  const final = seen[5];
  assert.equal(seen.length, 6);
  assert.equal(final.found, true);
  assert.equal(final.status, 'completed');
  assert.deepEqual(final.result, { done: 'suite' });
});

test('watch() ends with the failure or cancellation status, and handles unknown and finished ids', async () => {
  const bg = create();
  const release = gate();
  bg.registerAgent('fails', async (t, o, { progress }) => {
    progress(10);
    await release.promise;
    throw new Error('boom');
  });
  bg.registerAgent('blocks', () => new Promise(() => {}));
  const failing = await bg.fireAndForget('fails', 't');
  const iter = bg.watch(failing.executionId);
  // It reported 10 % before watching began: the first item says so.
  const first = await iter.next();
  assert.equal(first.value.progress, 10);
  assert.equal(first.value.status, 'running');
  release.open();
  const last = await iter.next();
  assert.equal(last.value.status, 'failed');
  assert.equal(last.value.error, 'boom');
  assert.deepEqual(await iter.next(), { value: undefined, done: true });

  const blocked = await bg.fireAndForget('blocks', 't');
  const watching = (async () => {
    const all = [];
    for await (const u of bg.watch(blocked.executionId)) all.push(u);
    return all;
  })();
  await bg.cancelExecution(blocked.executionId);
  const all = await watching;
  assert.equal(all.at(-1).status, 'cancelled');

  const unknown = [];
  for await (const u of bg.watch('exec-999999')) unknown.push(u);
  assert.deepEqual(unknown, [{ found: false }]);
  const finished = [];
  for await (const u of bg.watch(failing.executionId)) finished.push(u);
  assert.equal(finished.length, 1);
  assert.equal(finished[0].status, 'failed');
  assert.throws(() => bg.watch(42), { name: 'TypeError', code: 'ERR_INVALID_ARG' });
});

test('breaking out of a watch loop stops it; the execution goes on', async () => {
  const bg = create();
  bg.registerAgent('long', async (t, o, { progress }) => {
    for (let i = 1; i <= 5; i++) {
      await sleep(5);
      progress(i * 20);
    }
    return 'finished';
  });
  const { executionId } = await bg.executeWatched('long', 't');
  for await (const u of bg.watch(executionId)) {
    if (u.progress >= 40) break;
  }
  const status = await bg.waitFor(executionId);
  assert.equal(status.status, 'completed');
  assert.equal(status.result, 'finished');
});

test('onIdle() resolves once nothing is queued or running, and at once when idle', async () => {
  const bg = create({ maxConcurrentAgents: 2 });
  let finished = 0;
  bg.registerAgent('work', async (t, options) => {
    await sleep(options.ms);
    finished++;
  });
  for (const ms of [30, 10, 50, 20]) bg.fireAndForget('work', 't', { ms });
  await bg.onIdle();
  assert.equal(finished, 4);
  const q = bg.getQueueStatus();
  assert.equal(q.queued + q.running, 0);
  const t0 = Date.now();
  await bg.onIdle();
  assert.ok(Date.now() - t0 < 50);
});

test('getStats(): counts, throughput and per-agent wait/run percentiles', async () => {
  const bg = create({ maxConcurrentAgents: 1 });
  bg.registerAgent('fast', async () => sleep(5));
  bg.registerAgent('slow', async () => sleep(60));
  bg.registerAgent('bad', async () => {
    throw new Error('no');
  });
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(bg.execute('slow', 't'));
  for (let i = 0; i < 6; i++) runs.push(bg.execute('fast', 't'));
  runs.push(bg.execute('bad', 't').catch(() => 'failed'));
  await Promise.all(runs);
  const stats = bg.getStats();
  assert.deepEqual(stats.counts, { submitted: 10, queued: 0, running: 0, completed: 9, failed: 1, cancelled: 0 });
  assert.equal(stats.throughput.lastMinute, 10);
  assert.equal(stats.throughput.perSecond, Math.round((10 / 60) * 100) / 100);
  const by = Object.fromEntries(stats.agents.map((a) => [a.agent, a]));
  assert.deepEqual(Object.keys(by).sort(), ['bad', 'fast', 'slow']);
  assert.equal(by.slow.runTime.count, 3);
  assert.equal(by.fast.runTime.count, 6);
  // Histograms are within 12.5 %; timers add a little: generous bounds.
  assert.ok(by.slow.runTime.p50 >= 60 * 0.875 && by.slow.runTime.p50 < 400, `slow p50 ${by.slow.runTime.p50}`);
  assert.ok(by.fast.runTime.p50 < by.slow.runTime.p50, 'fast agents run faster than slow ones');
  // With one slot, the fast ones waited behind all three slow ones.
  assert.ok(by.fast.queueWait.p50 >= 3 * 60 * 0.875, `fast wait p50 ${by.fast.queueWait.p50}`);
  for (const a of stats.agents) {
    for (const h of [a.queueWait, a.runTime]) assert.ok(h.p50 <= h.p90 && h.p90 <= h.p99, JSON.stringify(h));
  }
});

test('BMAD_BG_LOG=debug prints the scheduling decisions on stderr; silent without it', () => {
  const script = `
    const BackgroundExecutor = require(${JSON.stringify(entry)});
    const bg = new BackgroundExecutor({ maxConcurrentAgents: 1, throttleIfExceeded: false });
    bg.registerAgent('a', async () => 1);
    Promise.all([bg.execute('a', 't'), bg.execute('a', 't')]).then(() => bg.shutdown());
  `;
  const run = (env) =>
    spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20000 });
  const withLog = run({ BMAD_BG_LOG: 'debug' });
  assert.equal(withLog.status, 0, withLog.stderr);
  for (const decision of ['start id=1', 'queued id=2', 'start id=2', 'finished id=1 status="completed"']) {
    assert.ok(withLog.stderr.includes(decision), `missing "${decision}" in:\n${withLog.stderr}`);
  }
  assert.ok(!withLog.stderr.includes('\u001b['), 'no colour codes when stderr is not a terminal');
  const env = { ...process.env };
  delete env.BMAD_BG_LOG;
  const silent = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 20000 });
  assert.equal(silent.status, 0);
  assert.equal(silent.stderr, '');
});

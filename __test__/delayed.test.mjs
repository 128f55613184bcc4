// Delayed executions: options.delayMs / options.startAfter queue an execution that does not
// start before then; the core times it; it shows as queued with startAfter; cancel works.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, tempDir } from './helpers.mjs';

const make = shutDownAfterEach();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('delayMs: not started before the delay; others run meanwhile; queued with startAfter', async () => {
  const bg = make({ maxConcurrentAgents: 1 });
  const starts = [];
  bg.registerAgent('a', async (task) => {
    starts.push([task, Date.now()]);
    return task;
  });
  const t0 = Date.now();
  const delayed = bg.execute('a', 'later', { delayMs: 150 });
  const { executionId } = await bg.fireAndForget('a', 'later-ff', { delayMs: 150 });
  const s = bg.getExecutionStatus(executionId);
  assert.equal(s.found && s.status, 'queued');
  assert.ok(s.found && s.startAfter >= t0 + 150 && s.startAfter <= Date.now() + 150, `startAfter ${s.found && s.startAfter}`);
  assert.equal(await bg.execute('a', 'now'), 'now', 'an undelayed execution starts at once');
  assert.equal(await delayed, 'later');
  await bg.waitFor(executionId);
  const later = starts.filter(([t]) => t.startsWith('later'));
  assert.equal(later.length, 2);
  for (const [, at] of later) assert.ok(at - t0 >= 145, `started after ${at - t0} ms`);
  assert.equal(starts[0][0], 'now');
});

test('startAfter takes a Date or epoch ms; a past time starts at once', async () => {
  const bg = make();
  bg.registerAgent('a', async () => Date.now());
  const t0 = Date.now();
  const byDate = await bg.execute('a', 'x', { startAfter: new Date(t0 + 120) });
  assert.ok(byDate - t0 >= 115, `${byDate - t0}`);
  const byMs = await bg.execute('a', 'x', { startAfter: Date.now() + 60 });
  assert.ok(byMs >= t0 + 60);
  const past = Date.now();
  const now = await bg.execute('a', 'x', { startAfter: past - 1000 });
  assert.ok(now - past < 100);
});

test('a delayed execution can be cancelled while it waits; its agent never runs', async () => {
  const bg = make();
  let runs = 0;
  bg.registerAgent('a', async () => runs++);
  const p = bg.execute('a', 'x', { delayMs: 200 });
  const { executionId } = await bg.fireAndForget('a', 'y', { delayMs: 200 });
  const r = await bg.cancelExecution(executionId);
  assert.deepEqual([r.success, r.previousStatus], [true, 'queued']);
  const ac = new AbortController();
  const q = bg.execute('a', 'z', { delayMs: 200, signal: ac.signal });
  ac.abort();
  await assert.rejects(q, { code: 'ERR_EXECUTION_CANCELLED' });
  await p;
  await sleep(250);
  assert.equal(runs, 1, 'only the uncancelled one ran');
});

test('bad delays are refused with coded errors', async () => {
  const bg = make();
  bg.registerAgent('a', async () => 1);
  await assert.rejects(bg.execute('a', 'x', { delayMs: -1 }), { name: 'RangeError', message: /options\.delayMs/ });
  await assert.rejects(bg.execute('a', 'x', { delayMs: 'soon' }), { name: 'TypeError', message: /options\.delayMs/ });
  await assert.rejects(bg.execute('a', 'x', { startAfter: 'tomorrow' }), { name: 'TypeError', message: /options\.startAfter/ });
  await assert.rejects(bg.execute('a', 'x', { startAfter: new Date('nope') }), { name: 'RangeError', message: /valid time/ });
  await assert.rejects(bg.execute('a', 'x', { delayMs: 5, startAfter: Date.now() }), { name: 'TypeError', message: /not both/ });
  // Too far ahead, including past the largest time a Date can hold: coded and naming the option.
  for (const startAfter of [Date.now() + 2 ** 31, 8.64e15, 8.64e15 + 1, 1e20, Number.MAX_VALUE]) {
    await assert.rejects(bg.execute('a', 'x', { startAfter }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /options\.startAfter must be at most 2147483647 ms ahead/ });
  }
  await assert.rejects(bg.execute('a', 'x', { delayMs: 2 ** 31 }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /options\.delayMs/ });
});

test('with a store, a delayed execution is stored with its start time and claimed when due', async (t) => {
  const dir = tempDir(t, 'bmad-delayed-');
  const bg = make({ store: `sqlite:${dir}/s.db` });
  bg.registerAgent('a', async () => Date.now());
  await bg.initialize();
  const t0 = Date.now();
  const { executionId } = await bg.fireAndForget('a', 'x', { delayMs: 200 });
  const queued = await bg.fetchExecutionStatus(executionId);
  assert.equal(queued.found && queued.status, 'queued');
  const final = await bg.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed');
  assert.ok(final.found && final.result - t0 >= 195, `started after ${final.found && final.result - t0} ms`);
});

test('with a store, startAfter may be a Date: stored as its ms since the epoch', async (t) => {
  const dir = tempDir(t, 'bmad-delayed-');
  const bg = make({ store: `sqlite:${dir}/s.db` });
  const seen = [];
  bg.registerAgent('a', async (task, options) => {
    seen.push(options.startAfter);
    return Date.now();
  });
  const at = new Date(Date.now() + 150);
  const { executionId } = await bg.fireAndForget('a', 'x', { startAfter: at });
  const queued = await bg.fetchExecutionStatus(executionId);
  assert.equal(queued.found && queued.status, 'queued');
  assert.equal(queued.found && queued.startAfter, at.getTime());
  const final = await bg.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed');
  assert.ok(final.found && final.result >= at.getTime() - 5, `started ${final.found && at.getTime() - final.result} ms early`);
  // The submitting process runs it with the options as given; another would read the number.
  assert.equal(seen.length, 1);
  assert.equal(new Date(seen[0]).getTime(), at.getTime());
  await assert.rejects(bg.execute('a', 'x', { startAfter: new Date('nope') }), { name: 'RangeError', message: /valid time/ });
});

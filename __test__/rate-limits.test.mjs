// Rate limits: at most `max` agent starts in any window of `intervalMs` (a sliding window,
// not fixed buckets), global (config.rateLimit, setRateLimit) and per agent; the next start
// is timed by the core's own timer.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test, shutDownAfterEach } from './helpers.mjs';

const make = shutDownAfterEach();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// The agent sees its start a little after the core made it (an event-loop turn): windows are
// checked with this much slack.
const SLACK_MS = 15;

/** An agent that records when each call came (ms, performance.now()). */
function recorder() {
  const starts = [];
  const fn = async (task) => {
    starts.push({ task, at: performance.now() });
    return task;
  };
  return { fn, starts };
}

/** The most starts in any window of `intervalMs` (less SLACK_MS), over `times`. */
function busiestWindow(times, intervalMs) {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0; i < sorted.length; i++) {
    let n = 0;
    while (i + n < sorted.length && sorted[i + n] < sorted[i] + intervalMs - SLACK_MS) n++;
    most = Math.max(most, n);
  }
  return most;
}

test('the global rate limit: at most max starts in any window, the next one timed by the core', async () => {
  const bg = make({ maxConcurrentAgents: 10, rateLimit: { max: 3, intervalMs: 300 } });
  const r = recorder();
  bg.registerAgent('a', r.fn);
  const t0 = performance.now();
  const runs = [1, 2, 3, 4, 5, 6, 7].map((i) => bg.execute('a', `t${i}`));
  await sleep(50);
  assert.equal(r.starts.length, 3);
  const rate = bg.getQueueStatus().rateLimit;
  assert.deepEqual({ max: rate.max, intervalMs: rate.intervalMs }, { max: 3, intervalMs: 300 });
  // Wall-clock times from the core's monotonic clock: a few ms of slack either way.
  assert.ok(rate.nextStartAt > Date.now() - SLACK_MS && rate.nextStartAt <= Date.now() + 300 + SLACK_MS, `nextStartAt ${rate.nextStartAt - Date.now()} ms ahead`);
  await Promise.all(runs);
  const times = r.starts.map((s) => s.at - t0);
  assert.equal(busiestWindow(times, 300), 3, `starts at ${times.map(Math.round)}`);
  // Seven starts at three per 300 ms: the last one comes at 600 ms, not before, and not much
  // later (the core's timer, not a polling interval, times it).
  assert.ok(times[6] >= 600 - SLACK_MS, `${times[6]}`);
  assert.ok(times[6] < 600 + 250, `${times[6]}`);
  assert.deepEqual(bg.getStats().limits, { rateLimited: 4, limitDeferred: 0 });
});

test('a sliding window, not fixed buckets: no boundary lets 2 x max through', async () => {
  const bg = make({ maxConcurrentAgents: 10, rateLimit: { max: 2, intervalMs: 400 } });
  const r = recorder();
  bg.registerAgent('a', r.fn);
  const t0 = performance.now();
  await bg.execute('a', 'alone');
  await sleep(300);
  // Fixed 400 ms buckets would start one of these now and two more at 400 ms: three starts
  // within [300, 700). The window lets one start now, one at 400, one at 700.
  await Promise.all(['x', 'y', 'z'].map((t) => bg.execute('a', t)));
  const times = r.starts.map((s) => s.at - t0);
  assert.equal(busiestWindow(times, 400), 2, `starts at ${times.map(Math.round)}`);
  assert.ok(times[3] >= times[1] + 400 - SLACK_MS, `starts at ${times.map(Math.round)}`);
});

test('an agent rate limit holds only that agent; getQueueStatus shows when it starts next', async () => {
  const bg = make({ maxConcurrentAgents: 10 });
  const llm = recorder();
  const other = recorder();
  bg.registerAgent('llm', llm.fn, { rateLimit: { max: 2, intervalMs: 300 } });
  bg.registerAgent('other', other.fn);
  const t0 = performance.now();
  const runs = ['a', 'b', 'c', 'd'].map((t) => bg.execute('llm', t));
  const others = [1, 2, 3, 4, 5].map((i) => bg.execute('other', `o${i}`, { priority: 'background' }));
  await Promise.all(others);
  assert.equal(llm.starts.length, 2);
  const st = bg.getQueueStatus().agents.llm;
  assert.equal(st.queued, 2);
  assert.deepEqual(st.rateLimit, { max: 2, intervalMs: 300 });
  assert.ok(st.nextStartAt > Date.now() - SLACK_MS && st.nextStartAt <= Date.now() + 300 + SLACK_MS, `${st.nextStartAt - Date.now()}`);
  await Promise.all(runs);
  const times = llm.starts.map((s) => s.at - t0);
  assert.ok(times[2] >= 300 - SLACK_MS, `starts at ${times.map(Math.round)}`);
  assert.equal(busiestWindow(times, 300), 2);
  assert.notEqual(bg.getQueueStatus().agents.llm.nextStartAt, null, 'c and d filled the window again');
  await sleep(350);
  assert.equal(bg.getQueueStatus().agents.llm.nextStartAt, null, 'room again once they left it');
});

test('setRateLimit at run time: raising it starts what it allows at once, null removes it', async () => {
  const bg = make({ maxConcurrentAgents: 20, rateLimit: { max: 1, intervalMs: 60000 } });
  const r = recorder();
  bg.registerAgent('a', r.fn);
  const runs = [1, 2, 3, 4, 5, 6].map((i) => bg.execute('a', `t${i}`));
  await sleep(20);
  assert.equal(r.starts.length, 1);
  bg.setRateLimit({ max: 3, intervalMs: 60000 });
  assert.equal(bg.getQueueStatus().queued, 3, 'two more started in the call');
  bg.setRateLimit(null);
  assert.equal(bg.getQueueStatus().queued, 0);
  assert.equal(bg.getQueueStatus().rateLimit, null);
  assert.equal((await Promise.all(runs)).length, 6);
});

test('executions held by a rate limit keep the process alive until they ran', () => {
  const index = fileURLToPath(new URL('../index.js', import.meta.url));
  const script = `
    const { BackgroundExecutor } = require(${JSON.stringify(index)});
    const bg = new BackgroundExecutor({ throttleIfExceeded: false, rateLimit: { max: 1, intervalMs: 200 } });
    let ran = 0;
    bg.registerAgent('a', async () => { ran++; });
    for (let i = 0; i < 3; i++) bg.fireAndForget('a', 't' + i);
    process.on('exit', () => console.log('ran ' + ran));
  `;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'ran 3');
});

test('bad rate limits are refused with a coded error naming the argument', () => {
  assert.throws(() => make({ rateLimit: { max: 0, intervalMs: 100 } }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /^rateLimit\.max must be an integer >= 1 and <= 1000000/ });
  assert.throws(() => make({ rateLimit: { max: 5 } }), { name: 'TypeError', message: /^rateLimit\.intervalMs/ });
  assert.throws(() => make({ rateLimit: { max: 5, intervalMs: 0.5 } }), { name: 'RangeError', message: /^rateLimit\.intervalMs/ });
  assert.throws(() => make({ rateLimit: '5/s' }), { name: 'TypeError', message: /^rateLimit must be \{ max, intervalMs \} or null/ });
  assert.throws(() => make({ rateLimit: { max: 5, intervalMs: 100, perAgent: true } }), { name: 'TypeError', message: /^rateLimit has an unknown key "perAgent"/ });
  const bg = make();
  assert.throws(() => bg.setRateLimit(), { name: 'TypeError', message: /^setRateLimit: limit must be/ });
  assert.throws(() => bg.setRateLimit({ max: 2e6, intervalMs: 10 }), { name: 'RangeError', message: /^setRateLimit: limit\.max/ });
  assert.equal(bg.getQueueStatus().rateLimit, null, 'nothing set');
});

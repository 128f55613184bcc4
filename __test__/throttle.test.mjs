// Throttling with real resource trips: memory held by a child process an
// agent started, and CPU over a tiny maxCpuPercent. While a threshold is exceeded, no start
// beyond minConcurrentAgents; `queue-throttled` once per episode; `queue-resumed` once, at
// the first sample back under the thresholds; all work completes.
//
// The machine is shared: margins are generous and every wait is bounded.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

import { BackgroundExecutor, ResourceMonitor } from '../index.mjs';
import { sleep, waitUntil, holdMemorySource, spawnHolder } from './helpers.mjs';

/** Records every event of interest, in order, with a timestamp. */
function recorder(bg) {
  const log = [];
  for (const name of ['queue-throttled', 'queue-resumed', 'resource-threshold-exceeded', 'execution-failed']) {
    bg.on(name, (payload) => log.push({ name, payload, at: Date.now() }));
  }
  const count = (name) => log.filter((e) => e.name === name).length;
  const first = (name) => log.find((e) => e.name === name);
  return { log, count, first };
}

/** Counts concurrently running agents, overall and of the 'work' agent. */
function tracker() {
  const tr = { running: 0, maxRunning: 0, work: 0, maxWork: 0, starts: [], startStates: [], log: null, bg: null };
  tr.enter = (kind) => {
    tr.running++;
    tr.maxRunning = Math.max(tr.maxRunning, tr.running);
    if (kind === 'work') {
      tr.work++;
      tr.maxWork = Math.max(tr.maxWork, tr.work);
      tr.starts.push(Date.now());
      if (tr.bg) tr.startStates.push({ throttled: tr.bg.getQueueStatus().throttled, running: tr.running });
      if (tr.log) tr.log.push({ name: 'work-start', at: Date.now() });
    }
  };
  tr.leave = (kind) => {
    tr.running--;
    if (kind === 'work') tr.work--;
  };
  return tr;
}

/** Memory (MB) the monitor counts for this process right now. */
function currentMemoryMb() {
  return new ResourceMonitor().check().memory;
}

test('memory trip: an agent holding ~300 MB in its child throttles, and its exit resumes', async (t) => {
  const base = currentMemoryMb();
  const maxMemoryMb = Math.round(base + 120);
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 4,
    minConcurrentAgents: 1,
    monitorIntervalMs: 50,
    maxMemoryMb,
    maxCpuPercent: 100,
  });
  const ev = recorder(bg);
  const tr = tracker();
  tr.log = ev.log;
  tr.bg = bg;

  let hog = null;
  let release;
  const released = new Promise((r) => (release = r));
  let markReady;
  const hogReadyP = new Promise((r) => (markReady = r));
  let hogExitedAt = 0;

  bg.registerAgent('hog', async () => {
    tr.enter('hog');
    try {
      hog = spawnHolder(holdMemorySource(300));
      t.after(hog.kill);
      await hog.ready;
      markReady();
      await released;
      await hog.end();
      hogExitedAt = Date.now();
      ev.log.push({ name: 'hog-exited', at: hogExitedAt });
      return 'hog done';
    } finally {
      tr.leave('hog');
    }
  });
  bg.registerAgent('work', async (task) => {
    tr.enter('work');
    try {
      await sleep(200);
      return `done ${task}`;
    } finally {
      tr.leave('work');
    }
  });

  try {
    await bg.initialize();
    await sleep(200);
    assert.equal(ev.count('queue-throttled'), 0, `throttled before any load (base ${base} MB, limit ${maxMemoryMb} MB)`);
    assert.equal(bg.getQueueStatus().throttled, false);

    const hogDone = bg.execute('hog', 'hold memory', { priority: 'high' });
    await hogReadyP;
    await waitUntil(() => ev.count('queue-throttled') > 0, 'queue-throttled after the hog allocated');
    const thr = ev.first('queue-throttled').payload;
    assert.ok(thr.resources.memory > maxMemoryMb, `throttled at ${thr.resources.memory} MB, limit ${maxMemoryMb}`);
    await sleep(120); // a couple of samples after the child is fully allocated
    const held = bg.resourceMonitor.getStatus().memory;
    assert.ok(held - base >= 250, `the hog's ~300 MB is counted: ${held} MB vs base ${base} MB`);
    assert.equal(typeof thr.resources.cpu, 'number');
    assert.ok(Array.isArray(thr.reason) && thr.reason.includes('memory'), `reason ${JSON.stringify(thr.reason)}`);
    assert.equal(thr.running, 1, 'the hog is running');
    assert.equal(thr.queued, 0);
    assert.equal(thr.minConcurrentAgents, 1);
    assert.equal(bg.getQueueStatus().throttled, true);
    assert.equal(bg.getStatus().throttled, true);

    // Work submitted while throttled: the hog already uses the one slot minConcurrentAgents allows.
    const works = [];
    for (let i = 0; i < 6; i++) works.push(bg.execute('work', `w${i}`));
    await sleep(600); // ~12 samples, all over the limit
    let q = bg.getQueueStatus();
    assert.equal(tr.work, 0, 'no work started beyond minConcurrentAgents while throttled');
    assert.equal(q.running, 1);
    assert.equal(q.queued, 6);
    assert.equal(q.throttled, true);
    assert.equal(ev.count('queue-throttled'), 1, 'queue-throttled once for the episode, not once per sample');
    assert.equal(ev.count('queue-resumed'), 0);
    // The monitor's event is re-emitted, once per exceeding sample.
    const rte = ev.log.filter((e) => e.name === 'resource-threshold-exceeded');
    assert.ok(rte.length >= 3, `resource-threshold-exceeded re-emitted per sample (${rte.length})`);
    for (const e of rte) {
      assert.ok(e.payload.exceeded.includes('memory'));
      assert.ok(e.payload.memory > maxMemoryMb);
      assert.equal(typeof e.payload.timestamp, 'number');
    }

    // Release: the child exits, memory falls, the next sample resumes.
    release();
    assert.equal(await hogDone, 'hog done');
    await waitUntil(() => ev.count('queue-resumed') > 0, 'queue-resumed after the hog exited');
    const resumed = ev.first('queue-resumed');
    assert.ok(resumed.at - hogExitedAt < 1500, `resumed ${resumed.at - hogExitedAt} ms after the hog exited (interval 50 ms)`);
    assert.ok(resumed.payload.resources.memory <= maxMemoryMb, `resumed at ${resumed.payload.resources.memory} MB`);
    assert.equal(bg.getQueueStatus().throttled, false);

    const results = await Promise.all(works);
    assert.deepEqual(results, [0, 1, 2, 3, 4, 5].map((i) => `done w${i}`));
    // Before the resume, only the slot the hog freed could be reused (minConcurrentAgents 1):
    // every start while throttled had nothing else running. With the throttle gone, up to 4 ran.
    const resumedIdx = ev.log.findIndex((e) => e.name === 'queue-resumed');
    const early = ev.log.slice(0, resumedIdx).filter((e) => e.name === 'work-start');
    assert.ok(early.length <= 1, `${early.length} work starts before queue-resumed`);
    const throttledStarts = tr.startStates.filter((st) => st.throttled);
    for (const st of throttledStarts) {
      assert.ok(st.running <= 1, `a start while throttled with ${st.running} running (min 1)`);
    }
    assert.equal(tr.maxWork, 4, `work concurrency after the resume: ${tr.maxWork}`);
    assert.ok(tr.maxRunning <= 4, `never more than maxConcurrentAgents (${tr.maxRunning})`);

    await sleep(300);
    assert.equal(ev.count('queue-throttled'), 1, 'one episode');
    assert.equal(ev.count('queue-resumed'), 1, 'queue-resumed once');
    q = bg.getQueueStatus();
    assert.equal(q.throttled, false);
    assert.equal(q.running, 0);
    assert.equal(q.queued, 0);
    assert.equal(ev.count('execution-failed'), 0);
  } finally {
    release();
    await bg.shutdown();
  }
});

test('minConcurrentAgents 0: nothing starts while throttled, everything runs after', async (t) => {
  const base = currentMemoryMb();
  const maxMemoryMb = Math.round(base + 120);
  // maxCpuPercent 100: only memory can trip here, however busy the shared machine is.
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 3, minConcurrentAgents: 0, monitorIntervalMs: 50, maxMemoryMb, maxCpuPercent: 100 });
  const ev = recorder(bg);
  const tr = tracker();
  bg.registerAgent('work', async () => {
    tr.enter('work');
    await sleep(100);
    tr.leave('work');
    return 'ok';
  });
  // The memory is held by a child of this process (counted the same way as an agent's).
  const holder = spawnHolder(holdMemorySource(300));
  t.after(holder.kill);
  try {
    await holder.ready;
    await bg.initialize();
    await waitUntil(() => bg.getQueueStatus().throttled, 'throttled');
    const works = [1, 2, 3].map((i) => bg.execute('work', `w${i}`));
    await sleep(400);
    assert.equal(tr.maxWork, 0, 'nothing starts while throttled with minConcurrentAgents 0');
    assert.equal(bg.getQueueStatus().queued, 3);
    await holder.end();
    assert.deepEqual(await Promise.all(works), ['ok', 'ok', 'ok']);
    assert.equal(tr.maxWork, 3);
    assert.equal(ev.count('queue-throttled'), 1);
    assert.equal(ev.count('queue-resumed'), 1);
  } finally {
    await holder.end();
    await bg.shutdown();
  }
});

test('throttleIfExceeded: false — thresholds are reported but nothing throttles', async () => {
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 4,
    minConcurrentAgents: 1,
    monitorIntervalMs: 50,
    maxMemoryMb: 1, // always exceeded
    maxCpuPercent: 100, // only memory is exceeded, however busy the shared machine is
    throttleIfExceeded: false,
  });
  const ev = recorder(bg);
  const tr = tracker();
  bg.registerAgent('work', async () => {
    tr.enter('work');
    await sleep(150);
    tr.leave('work');
    return 'ok';
  });
  try {
    await bg.initialize();
    await waitUntil(() => ev.count('resource-threshold-exceeded') >= 2, 'resource-threshold-exceeded');
    const works = [];
    for (let i = 0; i < 8; i++) works.push(bg.execute('work', `w${i}`));
    let sawThrottled = false;
    const poll = setInterval(() => {
      if (bg.getQueueStatus().throttled) sawThrottled = true;
    }, 10);
    try {
      assert.deepEqual(await Promise.all(works), Array(8).fill('ok'));
    } finally {
      clearInterval(poll);
    }
    assert.equal(sawThrottled, false, 'getQueueStatus().throttled stayed false');
    assert.equal(tr.maxWork, 4, `ran at full concurrency (${tr.maxWork})`);
    assert.equal(ev.count('queue-throttled'), 0);
    assert.equal(ev.count('queue-resumed'), 0);
    const e = ev.first('resource-threshold-exceeded').payload;
    assert.deepEqual(e.exceeded, ['memory']);
  } finally {
    await bg.shutdown();
  }
});

test('CPU trip: a tiny maxCpuPercent throttles to minConcurrentAgents while the machine is busy', async (t) => {
  // A child busy-looping keeps whole-machine CPU well above 0.001 % for the whole test.
  const burner = spawn(process.execPath, ['-e', 'const end = Date.now() + 20000; while (Date.now() < end);'], {
    stdio: 'ignore',
  });
  t.after(() => burner.exitCode === null && burner.kill('SIGKILL'));
  assert.throws(() => new BackgroundExecutor({ maxCpuPercent: 0 }), RangeError, 'maxCpuPercent must be > 0');
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 4,
    minConcurrentAgents: 1,
    monitorIntervalMs: 50,
    maxCpuPercent: 0.001,
  });
  const ev = recorder(bg);
  const tr = tracker();
  bg.registerAgent('work', async () => {
    tr.enter('work');
    await sleep(150);
    tr.leave('work');
    return 'ok';
  });
  try {
    await sleep(100);
    await bg.initialize();
    await waitUntil(() => ev.count('queue-throttled') > 0, 'queue-throttled by CPU');
    const thr = ev.first('queue-throttled').payload;
    assert.ok(thr.reason.includes('cpu'), `reason ${JSON.stringify(thr.reason)}`);
    assert.ok(thr.resources.cpu > 0.001, `cpu ${thr.resources.cpu}`);
    assert.equal(bg.getQueueStatus().throttled, true);
    const cpuEvents = ev.log.filter((e) => e.name === 'resource-threshold-exceeded');
    assert.ok(cpuEvents.length >= 1 && cpuEvents[0].payload.exceeded.includes('cpu'));

    // minConcurrentAgents 1: under a lasting throttle, work still runs, one at a time.
    const works = [1, 2, 3, 4].map((i) => bg.execute('work', `w${i}`));
    await sleep(50);
    const q = bg.getQueueStatus();
    assert.equal(q.running, 1, 'one running while throttled');
    assert.equal(q.queued, 3);
    assert.deepEqual(await Promise.all(works), ['ok', 'ok', 'ok', 'ok']);
    assert.equal(tr.maxWork, 1, `at most minConcurrentAgents ran at once while throttled (${tr.maxWork})`);
    assert.equal(ev.count('queue-throttled'), 1, 'one episode while the burner runs');
    assert.equal(bg.getQueueStatus().throttled, true);
  } finally {
    burner.kill('SIGKILL');
    await bg.shutdown();
  }
});

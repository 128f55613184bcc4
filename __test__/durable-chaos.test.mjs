// Durable store chaos, with real processes (no internal hook): 4 worker processes
// (__test__/durable/worker.mjs) on one store file run 20k durable executions submitted from
// this process, while a random worker is SIGKILLed and restarted every ~2 s. Every execution
// must end exactly once, re-runs only for attempts a killed process lost, the store sound.
//
// Every random choice (the tasks' sleeps, which worker dies, when) comes from a PRNG seeded by
// CHAOS_SEED (random when unset; printed in the test name): `CHAOS_SEED=<n> node --test
// __test__/durable-chaos.test.mjs` replays the same tasks and the same kill schedule
// (the operating system's scheduling is not replayable, of course). For exploring, not for CI:
// CHAOS_N (executions, default 20000) and CHAOS_KILL_MS (mean time between kills, default 2000).
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import BackgroundExecutor from '../index.mjs';
import { tempDir, sleep, isAlive, exitIfWorkLeftBehind } from './helpers.mjs';
import { mulberry32, spawnWorker, readLogs, checkRescues, checkAttempts } from './durable/common.mjs';

exitIfWorkLeftBehind();

const N = process.env.CHAOS_N !== undefined ? Number(process.env.CHAOS_N) : 20000;
const WORKERS = 4;
const CONCURRENCY = 16;
const RETRIES = 5; // attempts = 6: an execution survives 5 lost attempts
const LEASE_MS = 2000; // a dead local owner is rescued at once anyway (pid + start time)
const CHUNK = 1000;
/** Mean time between kills (each wait is drawn in [0.75, 1.25] of it). */
const KILL_MS = process.env.CHAOS_KILL_MS !== undefined ? Number(process.env.CHAOS_KILL_MS) : 2000;
const seed = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

nodeTest(`chaos: ${N} durable executions, 4 processes, one SIGKILLed every ~${KILL_MS / 1000} s (seed ${seed})`, { timeout: 90000 }, async (t) => {
  const t0 = Date.now();
  const dir = tempDir(t, 'bmad-durable-chaos-');
  const store = join(dir, 'store.db');
  const taskRand = mulberry32(seed);
  const chaosRand = mulberry32(seed ^ 0x9e3779b9);
  const tasks = Array.from({ length: N }, (_, i) => `${i}:${Math.floor(taskRand() * 41)}`); // sleeps 0-40 ms

  // ----- the workers -----
  let generation = 0;
  const all = []; // every worker process ever spawned
  const spawnSlot = (slot) => {
    const w = spawnWorker(
      { store, log: join(dir, `w${slot}-${generation++}.log`), concurrency: CONCURRENCY, retries: RETRIES, leaseMs: LEASE_MS },
      `worker ${slot}`,
    );
    all.push(w);
    return w;
  };
  t.after(() => Promise.all(all.map((w) => w.kill())));
  const slots = Array.from({ length: WORKERS }, (_, i) => spawnSlot(i));

  // ----- the submitter: this process, an executor with no agent -----
  const sub = new BackgroundExecutor({ store: `sqlite:${store}`, retries: RETRIES, retryDelayMs: 0, backoff: 'fixed' });
  t.after(() => sub.shutdown());
  const subRescued = [];
  const subErrors = [];
  sub.on('execution-rescued', (e) => subRescued.push(e));
  sub.on('store-error', (e) => subErrors.push(e));

  // ----- chaos: every 1.5-2.5 s (KILL_MS ± 25%) a random worker is SIGKILLed, a new one takes its slot -----
  const kills = []; // { pid, slot, at }
  let allEnded = false;
  let wake;
  const stopChaos = new Promise((r) => (wake = r));
  const chaos = (async () => {
    while (!allEnded) {
      const delay = Math.round(KILL_MS * (0.75 + chaosRand() / 2));
      const slot = Math.floor(chaosRand() * WORKERS);
      await Promise.race([sleep(delay), stopChaos]);
      if (allEnded) break;
      const victim = slots[slot];
      const at = Date.now();
      victim.child.kill('SIGKILL');
      const r = await victim.exited;
      assert.deepEqual(r, { code: null, signal: 'SIGKILL' }, `worker ${slot} (pid ${victim.pid}) died of the SIGKILL; stderr: ${victim.stderr()}`);
      assert.equal(isAlive(victim.pid), false, `killed worker ${victim.pid} is gone`);
      kills.push({ pid: victim.pid, slot, at });
      // Nothing left to run: the slot stays empty (a worker still starting would be stopped at once).
      if (allEnded) break;
      slots[slot] = spawnSlot(slot);
    }
  })();
  chaos.catch(() => {}); // awaited below

  // ----- submit in chunks, wait for every outcome -----
  const ids = [];
  const finalsP = [];
  for (let i = 0; i < N; i += CHUNK) {
    const answers = await Promise.all(tasks.slice(i, i + CHUNK).map((task) => sub.fireAndForget('job', task)));
    for (const a of answers) {
      ids.push(a.executionId);
      finalsP.push(sub.waitFor(a.executionId));
    }
  }
  const submittedAt = Date.now();
  assert.equal(new Set(ids).size, N, 'distinct execution ids');
  const waited = await Promise.all(finalsP);
  const endedAt = Date.now();
  allEnded = true;
  wake();
  await chaos;

  // ----- stop the workers (stdin closed: shutdown, exit 0) -----
  // A kill that came as the last execution ended leaves its slot empty.
  const survivors = slots.filter((w) => !kills.some((k) => k.pid === w.pid));
  assert.ok(survivors.length >= WORKERS - 1, `${survivors.length} workers alive at the end`);
  const exits = await Promise.all(survivors.map((w) => w.end()));
  for (let i = 0; i < survivors.length; i++) {
    assert.deepEqual(exits[i], { code: 0, signal: null }, `worker ${i} (pid ${survivors[i].pid}) stops cleanly; stderr: ${survivors[i].stderr()}`);
  }

  // ----- read everything back -----
  const finals = [];
  for (let i = 0; i < N; i += CHUNK) finals.push(...(await Promise.all(ids.slice(i, i + CHUNK).map((id) => sub.fetchExecutionStatus(id)))));
  const fetchedAt = Date.now();
  const logs = readLogs(dir);
  const integrity = await sub.checkStore();

  const killedPids = new Map(kills.map((k) => [k.pid, k.at]));
  const otherKinds = new Map();
  const rescuedAttempts = new Map(); // "id attempt" -> times rescued
  for (const o of logs.other) {
    const f = o.line.split(' ');
    otherKinds.set(f[0], (otherKinds.get(f[0]) || 0) + 1);
    if (f[0] === 'rescued') {
      assert.equal(f[3], 'queued', `a rescued attempt goes back to the queue: ${o.line}`);
      const k = `${f[1]} ${f[2]}`;
      rescuedAttempts.set(k, (rescuedAttempts.get(k) || 0) + 1);
    }
  }
  for (const e of subRescued) {
    assert.equal(e.status, 'queued', JSON.stringify(e));
    const k = `${e.executionId} ${e.attempt}`;
    rescuedAttempts.set(k, (rescuedAttempts.get(k) || 0) + 1);
  }

  // reRun: executions with more than one attempt; lostRunning: attempts that started in a
  // killed process and never returned there; lostAfterEnd: attempts that returned in a killed
  // process that died before the commit; lostUnstarted: attempts claimed by a killed process
  // before their agent was called.
  const tally = { reRun: 0, lostRunning: 0, lostAfterEnd: 0, lostUnstarted: 0, maxEndToKill: 0 };
  const lostAttempts = new Map(); // "id attempt" -> { owner: pid of its process (0: unknown), next: start time of the next attempt }
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    const f = finals[i];
    const list = logs.byId.get(id) || [];
    const what = `${id} (task ${tasks[i]}, seed ${seed}): ${JSON.stringify(f)}; log: ${JSON.stringify(list)}`;
    assert.equal(f.status, 'completed', what);
    assert.equal(waited[i].status, 'completed', what);
    assert.equal(waited[i].attempt, f.attempt, what);
    assert.equal(f.task, tasks[i], what);
    assert.deepEqual(f.result, { task: tasks[i], pid: f.result.pid, attempt: f.attempt }, what);
    assert.ok(f.attempt >= 1 && f.attempt <= RETRIES + 1, what);

    // The attempt the store kept ran once, in the process its result names; every other
    // attempt was lost by a killed process.
    checkAttempts({ id, list, attempt: f.attempt, pid: f.result.pid, killedPids, lost: lostAttempts, tally, endGapMs: () => 2000, what });
  }
  const unloggedRescues = checkRescues({ rescued: rescuedAttempts, lost: lostAttempts, killedPids, kills, logs, concurrency: CONCURRENCY });

  const totalMs = Date.now() - t0;
  t.diagnostic(
    `seed ${seed}: ${N} executions; submitted in ${submittedAt - t0} ms, all ended at ${endedAt - t0} ms, ` +
      `statuses fetched in ${fetchedAt - endedAt} ms (incl. stopping workers), total ${totalMs} ms; ` +
      `${kills.length} kills (slots ${kills.map((k) => k.slot).join(',')}), ${all.length} processes; ` +
      `re-run ${tally.reRun} executions: lost running ${tally.lostRunning}, lost after return ${tally.lostAfterEnd} (max ${tally.maxEndToKill} ms before the kill), ` +
      `lost before start ${tally.lostUnstarted}; other log lines ${JSON.stringify(Object.fromEntries(otherKinds))}, rescued by this process ${subRescued.length}, ` +
      `rescues unlogged (their process killed) ${unloggedRescues}`,
  );

  for (const kind of ['failed', 'cancelled', 'retry', 'stale', 'store-error']) {
    assert.equal(otherKinds.get(kind) || 0, 0, `no "${kind}" line in the workers' logs: ${logs.other.filter((o) => o.line.startsWith(kind)).map((o) => o.line).slice(0, 5)}`);
  }
  assert.deepEqual(subErrors, [], 'no store error in the submitting process');
  assert.equal(integrity, 'ok', 'PRAGMA integrity_check');
  assert.ok(kills.length >= 2, `at least 2 kills happened (got ${kills.length})`);
  assert.ok(tally.reRun >= 1, 'some executions were running at a kill');
});

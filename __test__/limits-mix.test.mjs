// Per-agent limits and rate limits under a random mix: 20k executions over 6 agents, with
// per-agent limits (setAgentLimits) and the global rate limit (setRateLimit) changed at run
// time, random priorities, fire-and-forget and execute(), cancellations and failures. Checked:
// no agent ever exceeds its concurrency limit (at every start), no sliding window holds more
// than `max` starts (per agent and global), every execution ends exactly once.
//
// Seeded: `LIMITS_SEED=<n> node --test __test__/limits-mix.test.mjs` replays a seed's
// submissions and limit changes (the interleaving with timers still varies from run to run).
// LIMITS_DEBUG=1 prints a summary.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, sleep } from './helpers.mjs';

const make = shutDownAfterEach();

const SEED = process.env.LIMITS_SEED !== undefined ? Number(process.env.LIMITS_SEED) >>> 0 : 20240611;
const DEBUG = process.env.LIMITS_DEBUG === '1';
const TOTAL = 20000;
const AGENTS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot'];
const PRIORITIES = ['critical', 'high', 'medium', 'low', 'background'];

function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = mulberry32(SEED);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (list) => list[Math.floor(rand() * list.length)];
const chance = (p) => rand() < p;

/** A random per-agent rate limit: mostly 0.75–3 starts per ms, sometimes a tight one. */
function randomRate() {
  if (chance(0.12)) return { max: int(2, 8), intervalMs: int(15, 40) };
  return briskRate();
}
function briskRate() {
  const intervalMs = int(20, 80);
  return { max: Math.max(1, Math.round(intervalMs * (0.75 + rand() * 2.25))), intervalMs };
}
/** A random global rate limit: generous (4–8 starts per ms), it holds back bursts only. */
function randomGlobalRate() {
  const intervalMs = int(20, 60);
  return { max: Math.round(intervalMs * (4 + rand() * 4)), intervalMs };
}
const randomConcurrency = () => (chance(0.2) ? 1 : int(2, 8));

/** How many of the sorted `times` are > `t`. */
function countAfter(times, t) {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid] > t) hi = mid;
    else lo = mid + 1;
  }
  return times.length - lo;
}

const fmt = (r) => (r === null ? 'none' : `${r.max}/${r.intervalMs}ms`);

test('a random mix of 20k executions under limits changed at run time: no limit is ever exceeded, every execution ends once', async () => {
  const t0 = performance.now();
  const tag = `(LIMITS_SEED=${SEED})`;
  const violations = [];
  const violate = (msg) => {
    if (violations.length < 40) violations.push(msg);
    else if (violations.length === 40) violations.push('...');
  };

  // ----- when starts happened ------------------------------------------------------------
  // The core decides a start inside one of its calls and the wrapper emits execution-started
  // later in the same job (synchronous run of JS), after the starts before it in that
  // delivery: up to several ms later (a big batch, a GC pause). So each start gets two times:
  // `high`, when its event is seen (>= the core's time), and `low`, when a microtask of ours
  // last ran before the job that started it (<= the core's time: that microtask ended before
  // the job began). A start p counts in the window of a later start s when
  // low(p) > high(s) - intervalMs: then it surely was in the core's window too, whatever the
  // delays. Our microtask is queued at every start and every agent settle (before the
  // wrapper's own reaction to it), so `low` is close behind for most starts.
  let low = performance.now();
  let tickQueued = false;
  const tick = () => {
    tickQueued = false;
    low = performance.now();
  };
  const queueTick = () => {
    if (!tickQueued) {
      tickQueued = true;
      queueMicrotask(tick);
    }
  };

  // ----- the test's own bookkeeping of the limits in force ----------------------------
  // concHist: the concurrency limits in force, in order (Infinity: none); while a change is
  // being applied, the larger of the old and the new one (the call first delivers what the
  // old limits allowed). rates: the rate limits a start may have been checked against (one,
  // or old and new during a change; null: none). lows: the `low` times of the starts,
  // recorded from when the agent first had a rate limit (a removed limit keeps counting, as
  // in the core).
  const initialKinds = ['concurrency', 'concurrency', 'rate', 'both', 'both', 'none'];
  for (let i = initialKinds.length - 1; i > 0; i--) {
    const j = int(0, i);
    [initialKinds[i], initialKinds[j]] = [initialKinds[j], initialKinds[i]];
  }
  const globalRate0 = randomGlobalRate();
  const glob = { rates: [globalRate0], lows: [], checks: 0, full: 0 };

  const bg = make({ maxConcurrentAgents: 24, rateLimit: globalRate0, cancelGraceMs: 60000 });

  const ag = {};
  const terminal = new Map(); // executionId -> [terminal event names]
  const idOfTask = new Map(); // task -> executionId, from the terminal events
  const startIdx = new Map(); // executionId -> index into its agent's concHist at its start
  let started = 0;

  /** The start at `high` (its `lowAt` just pushed to w.lows) against the limits of `w`. */
  const windowCheck = (what, w, high) => {
    if (w.rates.some((r) => r === null)) return; // no limit among the candidates
    w.checks++;
    const seen = [];
    let ok = false;
    for (const r of w.rates) {
      // The earlier starts surely in the window, and this one.
      const inside = countAfter(w.lows, high - r.intervalMs) - (w.lows[w.lows.length - 1] > high - r.intervalMs ? 1 : 0) + 1;
      if (inside === r.max) w.full++;
      if (inside <= r.max) ok = true;
      seen.push(`${inside} starts within ${r.intervalMs} ms, limit ${fmt(r)}`);
    }
    if (!ok) violate(`${what}: start #${w.lows.length} at ${(high - t0).toFixed(2)} ms: ${seen.join(' / ')}`);
  };

  for (const name of ['execution-completed', 'execution-failed', 'execution-cancelled']) {
    bg.on(name, (e) => {
      const list = terminal.get(e.executionId);
      if (list === undefined) terminal.set(e.executionId, [name]);
      else list.push(name);
      const id = idOfTask.get(e.task);
      if (id === undefined) idOfTask.set(e.task, e.executionId);
      else if (id !== e.executionId) violate(`task ${e.task} ended as ${id} and as ${e.executionId}`);
      // Cancelled between its start and a deferred call: its function is never called.
      if (name === 'execution-cancelled') startIdx.delete(e.executionId);
    });
  }
  bg.on('execution-started', (e) => {
    const high = performance.now();
    const lowAt = low;
    queueTick();
    started++;
    const s = ag[e.agent];
    // The core decided this start in this job: the executions of this agent whose functions
    // run (plus this one) fit the limit in force.
    const conc = s.concHist[s.concHist.length - 1];
    if (s.live + 1 > conc) violate(`${e.agent}: started ${e.executionId} with ${s.live} already running, concurrency limit ${conc}`);
    startIdx.set(e.executionId, s.concHist.length - 1);
    if (s.recording) {
      s.lows.push(lowAt);
      windowCheck(`${e.agent} rate`, s, high);
    }
    glob.lows.push(lowAt);
    windowCheck('global rate', glob, high);
  });

  // ----- agents ------------------------------------------------------------------------
  // The task says what the agent does: `${n}|${kind}|${fails}|${delayMs}`. kinds: s (returns
  // or throws synchronously), m (a microtask), i (setImmediate), t (a timer, cut short by
  // the signal).
  const agentFn = (name) => (task, options, ctx) => {
    const s = ag[name];
    s.live++;
    s.calls++;
    if (s.live > s.maxLive) s.maxLive = s.live;
    const id = ctx.executionId;
    const from = startIdx.get(id);
    startIdx.delete(id);
    if (from === undefined) violate(`${name}: ${id} called without an execution-started event`);
    else {
      // Called later than started (past the wrapper's per-turn start budget): what runs now
      // fits the largest limit in force since the start.
      let bound = 0;
      for (let k = from; k < s.concHist.length; k++) bound = Math.max(bound, s.concHist[k]);
      if (s.live > bound) violate(`${name}: ${id} called with ${s.live} running (itself included), concurrency limit ${bound}`);
    }
    const [, kind, fails, delay] = task.split('|');
    const end = () => {
      if (fails === '1') throw new Error(`boom ${task}`);
      return `${task}:ok`;
    };
    if (kind === 's') {
      try {
        return end();
      } finally {
        s.live--;
        queueTick();
      }
    }
    const work =
      kind === 'm'
        ? Promise.resolve()
        : kind === 'i'
          ? new Promise((resolve) => setImmediate(resolve))
          : new Promise((resolve, reject) => {
              const signal = ctx.signal;
              const timer = setTimeout(resolve, Number(delay));
              signal.addEventListener(
                'abort',
                () => {
                  clearTimeout(timer);
                  reject(signal.reason);
                },
                { once: true },
              );
            });
    // Counted out before the returned promise settles, so before the core frees the slot.
    return work.then(end).finally(() => {
      s.live--;
      queueTick();
    });
  };

  for (let i = 0; i < AGENTS.length; i++) {
    const name = AGENTS[i];
    const kind = initialKinds[i];
    const conc = kind === 'concurrency' || kind === 'both' ? randomConcurrency() : Infinity;
    const rate = kind === 'rate' || kind === 'both' ? randomRate() : null;
    ag[name] = { concHist: [conc], rates: [rate], conc, rate, recording: rate !== null, lows: [], live: 0, maxLive: 0, calls: 0, checks: 0, full: 0, changes: 0 };
    const limits = {};
    if (conc !== Infinity) limits.concurrency = conc;
    if (rate !== null) limits.rateLimit = rate;
    bg.registerAgent(name, agentFn(name), kind === 'none' ? undefined : limits);
  }

  /** What getQueueStatus() shows of the limits of `name` matches the test's bookkeeping. */
  const checkShown = (name) => {
    const s = ag[name];
    const st = bg.getQueueStatus().agents[name];
    const want = { concurrency: s.conc === Infinity ? null : s.conc, rateLimit: s.rate };
    const got = st === undefined ? { concurrency: null, rateLimit: null } : { concurrency: st.concurrency, rateLimit: st.rateLimit };
    if (JSON.stringify(got) !== JSON.stringify(want)) violate(`${name}: getQueueStatus shows ${JSON.stringify(got)}, set ${JSON.stringify(want)}`);
  };

  const changeAgent = (name, change = {}) => {
    const s = ag[name];
    const r = rand();
    if (Object.keys(change).length === 0) {
      if (r < 0.45) change.concurrency = chance(0.2) ? pick([null, Infinity]) : randomConcurrency();
      if (r > 0.3) change.rateLimit = chance(0.25) ? null : randomRate();
    }
    const conc = change.concurrency === undefined ? s.conc : change.concurrency === null ? Infinity : change.concurrency;
    const rate = change.rateLimit === undefined ? s.rate : change.rateLimit;
    s.concHist.push(Math.max(s.conc, conc));
    s.rates = [s.rate, rate];
    bg.setAgentLimits(name, change);
    s.concHist.push(conc);
    s.rates = [rate];
    s.conc = conc;
    s.rate = rate;
    // The core records starts from the agent's first rate limit on; the starts this very
    // call made are left out here (the check counts fewer than the core, never more).
    if (rate !== null) s.recording = true;
    s.changes++;
    checkShown(name);
  };

  let globalChanges = 0;
  const changeGlobal = () => {
    const rate = chance(0.2) ? null : randomGlobalRate();
    glob.rates = [glob.rates[glob.rates.length - 1], rate];
    bg.setRateLimit(rate);
    glob.rates = [rate];
    globalChanges++;
    const got = bg.getQueueStatus().rateLimit;
    const shown = got === null ? null : { max: got.max, intervalMs: got.intervalMs };
    if (JSON.stringify(shown) !== JSON.stringify(rate)) violate(`global: getQueueStatus shows ${JSON.stringify(shown)}, set ${JSON.stringify(rate)}`);
  };

  // ----- submissions in waves ----------------------------------------------------------
  const executes = []; // { task, settled: [{ ok, value }] }
  const fafIds = [];
  const controllers = []; // AbortControllers of execute() calls, not aborted yet
  const cancelOk = new Set(); // ids whose cancelExecution said success
  let submitted = 0;
  let waves = 0;
  let cancelCalls = 0;
  let aborts = 0;
  while (submitted < TOTAL) {
    waves++;
    const size = Math.min(TOTAL - submitted, int(100, 400));
    const acks = [];
    for (let k = 0; k < size; k++) {
      const n = submitted++;
      const r = rand();
      const kind = r < 0.25 ? 's' : r < 0.55 ? 'm' : r < 0.9 ? 'i' : 't';
      const task = `${n}|${kind}|${chance(0.1) ? 1 : 0}|${int(1, 4)}`;
      const agent = pick(AGENTS);
      const options = { priority: pick(PRIORITIES) };
      if (chance(0.5)) {
        acks.push(bg.fireAndForget(agent, task, options));
      } else {
        if (chance(0.05)) {
          const c = new AbortController();
          options.signal = c.signal;
          controllers.push(c);
        }
        const entry = { task, settled: [] };
        executes.push(entry);
        bg.execute(agent, task, options).then(
          (value) => entry.settled.push({ ok: true, value }),
          (value) => entry.settled.push({ ok: false, value }),
        );
      }
    }
    for (const ack of await Promise.all(acks)) fafIds.push(ack.executionId);

    // Limits changed while the queue holds work.
    const changes = int(0, 3);
    for (let k = 0; k < changes; k++) changeAgent(pick(AGENTS));
    if (chance(0.15)) changeGlobal();

    // Cancel some recent fire-and-forget executions (queued, running or already over).
    const cancels = int(0, 6);
    for (let k = 0; k < cancels; k++) {
      const id = fafIds[fafIds.length - 1 - int(0, Math.min(fafIds.length - 1, 600))];
      cancelCalls++;
      const res = await bg.cancelExecution(id);
      if (res.success) cancelOk.add(id);
    }
    if (controllers.length > 0 && chance(0.5)) {
      controllers.splice(int(0, controllers.length - 1), 1)[0].abort();
      aborts++;
    }

    const pause = rand();
    if (pause < 0.4) await new Promise((resolve) => setImmediate(resolve));
    else if (pause < 0.8) await sleep(int(0, 3));
    else await bg.onQueueSizeLessThan(1500);
  }
  const submittedAt = performance.now();
  for (const c of controllers) c.abort();
  // A tight rate limit left in force would make the drain long: loosened, as any change.
  for (const name of AGENTS) {
    const rate = ag[name].rate;
    if (rate !== null && rate.max < rate.intervalMs / 2) changeAgent(name, { rateLimit: briskRate() });
  }

  await bg.onIdle();
  // The execute() promises settle from the same deliveries; let their reactions run.
  await new Promise((resolve) => setImmediate(resolve));
  const idleAt = performance.now();

  // ----- checks ------------------------------------------------------------------------
  const stats = bg.getStats();
  if (DEBUG) {
    console.log(
      [
        `seed ${SEED}: ${waves} waves, submitted in ${(submittedAt - t0).toFixed(0)} ms, idle at ${(idleAt - t0).toFixed(0)} ms`,
        `global rate ${fmt(globalRate0)} at first, ${globalChanges} changes, ${glob.checks} window checks, ${glob.full} full`,
        `cancel calls ${cancelCalls} (${cancelOk.size} succeeded), aborts ${aborts}, starts ${started}`,
        `stats: ${JSON.stringify(stats.counts)} ${JSON.stringify(stats.limits)}`,
        ...AGENTS.map((n) => {
          const s = ag[n];
          return `${n}: calls ${s.calls}, max running ${s.maxLive}, ${s.changes} changes, ends with concurrency ${s.conc}, rate ${fmt(s.rate)}; ${s.checks} window checks, ${s.full} full`;
        }),
      ].join('\n'),
    );
  }
  assert.deepEqual(violations, [], `limit violations ${tag}:\n${violations.join('\n')}`);

  for (const [name, s] of Object.entries(ag)) assert.equal(s.live, 0, `${name} still has running functions ${tag}`);
  assert.deepEqual([...startIdx.keys()].slice(0, 10), [], `started executions whose agent was never called ${tag}`);

  // Every execution ended exactly once: one terminal event per id, one id per task.
  assert.equal(terminal.size, TOTAL, `executions with a terminal event ${tag}`);
  assert.equal(idOfTask.size, TOTAL, `tasks with a terminal event ${tag}`);
  const outcome = { 'execution-completed': 0, 'execution-failed': 0, 'execution-cancelled': 0 };
  const wrong = [];
  for (const [id, list] of terminal) {
    if (list.length !== 1) wrong.push(`${id}: [${list}]`);
    else outcome[list[0]]++;
  }
  assert.deepEqual(wrong.slice(0, 20), [], `executions without exactly one terminal event ${tag}`);
  for (const id of fafIds) assert.ok(terminal.has(id), `fire-and-forget ${id} has a terminal event ${tag}`);
  for (const id of cancelOk) {
    assert.deepEqual(terminal.get(id), ['execution-cancelled'], `${id}: cancelExecution said success ${tag}`);
  }
  for (const e of executes) {
    assert.equal(e.settled.length, 1, `execute(${e.task}) settled ${e.settled.length} times ${tag}`);
    const [ev] = terminal.get(idOfTask.get(e.task));
    const { ok, value } = e.settled[0];
    if (ev === 'execution-completed') assert.deepEqual({ ok, value }, { ok: true, value: `${e.task}:ok` }, `execute(${e.task}) ${tag}`);
    else assert.equal(ok, false, `execute(${e.task}) resolved but its event was ${ev} ${tag}`);
  }
  const c = stats.counts;
  assert.deepEqual(
    { submitted: c.submitted, queued: c.queued, running: c.running, completed: c.completed, failed: c.failed, cancelled: c.cancelled },
    { submitted: TOTAL, queued: 0, running: 0, completed: outcome['execution-completed'], failed: outcome['execution-failed'], cancelled: outcome['execution-cancelled'] },
    `getStats().counts ${tag}`,
  );
  assert.ok(outcome['execution-failed'] > 0 && outcome['execution-cancelled'] > 0, `some failed and some were cancelled ${tag}: ${JSON.stringify(outcome)}`);
  assert.ok(stats.limits.limitDeferred > 0, `some starts waited for a concurrency limit ${tag}: ${JSON.stringify(stats.limits)}`);
  assert.ok(stats.limits.rateLimited > 0, `some starts waited for a rate limit ${tag}: ${JSON.stringify(stats.limits)}`);
});

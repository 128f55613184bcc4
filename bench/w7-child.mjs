// W7 producer and worker processes, one system each, started by bench/w7.mjs (with a Node.js
// 22+ binary: graphile-worker and pg-boss need it) and driven over IPC.
//
//   node bench/w7-child.mjs '<json spec>'
//   spec: { system: 'this'|'bullmq'|'graphile'|'pgboss', role: 'producer'|'worker',
//           mode: 'throughput'|'latency', opts: {…the configuration…}, concurrency,
//           url (PostgreSQL) | redisPort, name (schema / queue), n, chunk, gapMs }
//
// Parent -> child: { type: 'go' } (the producer starts adding), { type: 'stop' }.
// Child -> parent: { type: 'ready', versions }, { type: 'added', t0, t1, n } (producer),
//   { type: 'done', count, t } (worker: completions so far, time of the last one),
//   { type: 'lat', pairs: [[i, ms], …] } (worker: add→start of job i), { type: 'note', message },
//   { type: 'closed', closeMs, cpuMs }, { type: 'error', message }.
// Times are CLOCK_MONOTONIC in ms (process.hrtime), the same clock in every process of this
// machine, unlike performance.timeOrigin + now(), which follows the wall clock at each process's
// start (and this VM's wall clock is stepped and slewed).
//
// Reports are coalesced (at most one message per REPORT_MS per worker) so that telling the
// parent costs the same small amount for every system; the time of each completion is taken
// when it happens, not when it is reported. In a latency run a worker keeps its reports until
// the parent asks for them ('flush', once every job is added): a report soon after each start
// would reach the parent as the next job is added, and put its work on that job's path.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { nowMs as clock } from './lib/clock.mjs';

const require = createRequire(import.meta.url);
/** The installed version of a package, also of one whose exports hide its package.json. */
function pkgVersion(name) {
  let dir = path.dirname(require.resolve(name));
  while (path.basename(dir) !== name && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
}
const REPORT_MS = 2;
const QUEUE = 'w7';

const spec = JSON.parse(process.argv[2]);
const latency = spec.mode === 'latency';
const send = (msg) => new Promise((resolve) => (process.connected ? process.send(msg, () => resolve()) : resolve()));

// ----- completion and latency reports ----------------------------------------------------

let done = 0;
let tLast = 0;
let pairs = [];
let reportTimer = null;
function report() {
  reportTimer = null;
  if (!process.connected) return;
  if (pairs.length > 0) {
    process.send({ type: 'lat', pairs });
    pairs = [];
  }
  process.send({ type: 'done', count: done, t: tLast });
}
const scheduleReport = () => {
  if (reportTimer === null && !latency) reportTimer = setTimeout(report, REPORT_MS);
};
/** `k` jobs completed now. */
function completed(k = 1) {
  done += k;
  tLast = clock();
  scheduleReport();
}
/** Job `i`, added at `t0`, starts now. */
function started(i, t0) {
  pairs.push([i, clock() - t0]);
  scheduleReport();
}

let noted = 0;
function note(message) {
  if (noted++ < 5 && process.connected) process.send({ type: 'note', message: String(message).slice(0, 500) });
}
let failing = false;
async function fail(err) {
  if (failing) return;
  failing = true;
  await send({ type: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}

// ----- the producer's loops --------------------------------------------------------------

/** Throughput: n jobs in chunks of `chunk`, each chunk awaited; addChunk(from, to). */
async function addAll(addChunk) {
  const t0 = clock();
  for (let i = 0; i < spec.n; i += spec.chunk) await addChunk(i, Math.min(spec.n, i + spec.chunk));
  await send({ type: 'added', t0, t1: clock(), n: spec.n });
}

/** Latency: n jobs one at a time, gapMs apart on a fixed schedule, none awaited before the next. */
async function addPaced(addOne) {
  const pending = [];
  const t0 = clock();
  for (let i = 0; i < spec.n; i++) {
    const wait = t0 + i * spec.gapMs - clock();
    if (wait >= 1) await new Promise((resolve) => setTimeout(resolve, wait));
    pending.push(addOne(i, clock()));
  }
  await Promise.all(pending);
  await send({ type: 'added', t0, t1: clock(), n: spec.n });
}

// ----- systems: each returns { versions, go(), close() } ---------------------------------

async function thisSystem() {
  const { BackgroundExecutor } = require('../index.js');
  const bg = new BackgroundExecutor({
    store: `${spec.url}?schema=${spec.name}`,
    maxConcurrentAgents: spec.concurrency,
    throttleIfExceeded: false,
    ...spec.opts,
  });
  bg.on('store-error', (e) => note(`store-error: ${e && e.message}`));
  if (spec.role === 'worker') {
    if (latency) {
      bg.registerAgent(QUEUE, async (task) => {
        const [i, t0] = task.split(' ');
        started(Number(i), Number(t0));
        return null;
      });
    } else bg.registerAgent(QUEUE, async (task) => task);
    bg.on('execution-completed', () => completed());
    bg.on('execution-failed', (e) => fail(new Error(`execution ${e.executionId} failed: ${e.error}`)));
  }
  await bg.initialize();
  const go = latency
    ? () => addPaced((i, t) => bg.fireAndForget(QUEUE, `${i} ${t}`))
    : () =>
        addAll((from, to) => {
          const ps = [];
          for (let i = from; i < to; i++) ps.push(bg.fireAndForget(QUEUE, String(i)));
          return Promise.all(ps);
        });
  return { versions: { this: JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version }, go, close: () => bg.shutdown() };
}

async function bullmqSystem() {
  const { Queue, Worker } = await import('bullmq');
  const connection = { host: '127.0.0.1', port: spec.redisPort };
  const versions = { bullmq: pkgVersion('bullmq'), ioredis: pkgVersion('ioredis') };
  if (spec.role === 'worker') {
    const proc = latency
      ? async (job) => {
          started(job.data.i, job.data.t);
          return null;
        }
      : async (job) => job.data.i;
    const worker = new Worker(spec.name, proc, { connection, concurrency: spec.concurrency, ...spec.opts.worker });
    worker.on('completed', () => completed());
    worker.on('failed', (job, err) => fail(new Error(`BullMQ job ${job?.id} failed: ${err?.message}`)));
    worker.on('error', fail);
    await worker.waitUntilReady();
    return { versions, close: () => worker.close() };
  }
  const queue = new Queue(spec.name, { connection, defaultJobOptions: spec.opts.jobOptions });
  await queue.waitUntilReady();
  const go = latency
    ? () => addPaced((i, t) => queue.add(QUEUE, { i, t }))
    : () =>
        addAll((from, to) => {
          const jobs = [];
          for (let i = from; i < to; i++) jobs.push({ name: QUEUE, data: { i } });
          return queue.addBulk(jobs);
        });
  return { versions, go, close: () => queue.close() };
}

/** graphile-worker's logger: warnings and errors only (no line per job). */
function quietLogger(Logger) {
  return new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') note(`graphile-worker ${level}: ${message}`);
  });
}

async function graphileSystem() {
  const gw = await import('graphile-worker');
  const versions = { graphileWorker: pkgVersion('graphile-worker'), pg: pkgVersion('pg') };
  const logger = quietLogger(gw.Logger);
  const shared = { connectionString: spec.url, schema: spec.name, logger, ...spec.opts.shared };
  if (spec.role === 'worker') {
    const task = latency
      ? async (payload) => {
          started(payload.i, payload.t);
        }
      : async (payload) => payload.i;
    const runner = await gw.run({
      ...shared,
      concurrency: spec.concurrency,
      noHandleSignals: true,
      taskList: { [QUEUE]: task },
      ...(spec.opts.preset ? { preset: { worker: spec.opts.preset } } : {}),
    });
    runner.events.on('job:success', () => completed());
    runner.events.on('job:error', ({ job, error }) => fail(new Error(`graphile-worker job ${job?.id} failed: ${error?.message ?? error}`)));
    return { versions, close: () => runner.stop() };
  }
  const utils = await gw.makeWorkerUtils(shared);
  await utils.migrate();
  const go = latency
    ? () => addPaced((i, t) => utils.addJob(QUEUE, { i, t }))
    : () =>
        addAll((from, to) => {
          const jobs = [];
          for (let i = from; i < to; i++) jobs.push({ identifier: QUEUE, payload: { i } });
          return utils.addJobs(jobs);
        });
  return { versions, go, close: () => utils.release() };
}

async function pgbossSystem() {
  const { PgBoss } = await import('pg-boss');
  const versions = { pgBoss: pkgVersion('pg-boss'), pg: pkgVersion('pg') };
  const boss = new PgBoss({ connectionString: spec.url, schema: spec.name, ...spec.opts.instance });
  boss.on('error', (err) => note(`pg-boss error: ${err && err.message}`));
  boss.on('warning', (w) => note(`pg-boss warning: ${w && (w.message || JSON.stringify(w))}`));
  await boss.start();
  if (spec.role === 'worker') {
    const work = spec.opts.work;
    const handler = latency
      ? async (jobs) => {
          for (const job of jobs) started(job.data.i, job.data.t);
        }
      : async (jobs) => {
          const out = jobs.map((job) => job.data.i);
          completed(jobs.length);
          return work.batchSize > 1 ? undefined : out[0];
        };
    await boss.work(QUEUE, work, handler);
    return { versions, close: () => boss.stop({ graceful: true, close: true }) };
  }
  await boss.createQueue(QUEUE, spec.opts.queue);
  const go = latency
    ? () => addPaced((i, t) => boss.send(QUEUE, { i, t }))
    : () =>
        addAll((from, to) => {
          const jobs = [];
          for (let i = from; i < to; i++) jobs.push({ data: { i } });
          return boss.insert(QUEUE, jobs);
        });
  return { versions, go, close: () => boss.stop({ graceful: true, close: true }) };
}

const SYSTEMS = { this: thisSystem, bullmq: bullmqSystem, graphile: graphileSystem, pgboss: pgbossSystem };

async function main() {
  if (typeof process.send !== 'function') {
    console.error('w7-child: started by bench/w7.mjs only (needs an IPC channel)');
    process.exit(2);
  }
  process.on('disconnect', () => process.exit(1)); // the parent is gone
  process.on('unhandledRejection', fail);
  const sys = await SYSTEMS[spec.system]();
  process.on('message', async (msg) => {
    try {
      if (msg.type === 'go') await sys.go();
      else if (msg.type === 'flush') report();
      else if (msg.type === 'stop') {
        if (reportTimer !== null) {
          clearTimeout(reportTimer);
          report();
        }
        const t = clock();
        await sys.close();
        if (reportTimer !== null) {
          clearTimeout(reportTimer);
          report();
        }
        const cpu = process.cpuUsage();
        await send({ type: 'closed', closeMs: clock() - t, cpuMs: (cpu.user + cpu.system) / 1000 });
        process.removeAllListeners('disconnect');
        process.disconnect();
      }
    } catch (err) {
      await fail(err);
    }
  });
  await send({ type: 'ready', versions: sys.versions, node: process.version });
}

main().catch(fail);

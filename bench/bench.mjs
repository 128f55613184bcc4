// Benchmark of bmad-background-executor against its peers.
//
// One invocation measures every system side by side on the same machine state:
//   this       BackgroundExecutor({ maxConcurrentAgents: 64, throttleIfExceeded: false }),
//              bg.execute(name, task, { i, priority })
//   this+ALS   the same, submitted inside an AsyncLocalStorage run(): what carrying the
//              submitter's async context to each agent costs when a store is in use
//   p-queue    new PQueue({ concurrency: 64 }), queue.add(fn, { priority }) with the same 5 priorities (5..1)
//   fastq      fastq.promise(worker, 64): no priorities, the unprioritised floor
//   semaphore  a bare ~25-line JS semaphore (no priorities), for reference
//   floor      (W1 only) no scheduler at all: what any promise-returning execute() must do and
//              nothing more — a promise and its resolvers per call, the options kept until the
//              agent runs, 64 slots calling the agent in FIFO order and resolving each promise
//              with its value. A reference for W1 on this machine, not a peer.
//   floor+ctx  (W1 only) the floor plus the submitter's async context carried to each agent, as
//              AsyncLocalStorage users need (an AsyncResource per call, the agent called in
//              its scope): what that one behaviour costs on this Node.js, with no scheduler.
// Every system runs the same agent `async (task, opts) => opts.i` with the same
// `opts = { i, priority }` object, the same concurrency (64) and the same N.
//
// Workloads
//   W1 throughput  submit N, then await all (Promise.all); µs per execution; medians of
//                  21 runs (N <= 10k), 5 (N <= 100k) or 3 (larger N), each on a fresh instance;
//                  warm-up runs per system and N (at min(N, 100k), >= 200k executions in all) are
//                  excluded. Runs are interleaved, the system order rotating every round, with
//                  gc() before each run. GC pauses inside each run are recorded too.
//   W2 memory      N executions submitted while paused; (RSS and heap after gc) - (before), per
//                  queued execution. Each system is measured in a fresh child process, because
//                  RSS is process-wide and W1 leaves resident-but-free heap pages behind that
//                  would absorb the growth. Then resumed and drained (p-queue: cleared).
//   W3 latency     idle queue, sequential awaited executions; time from the call to the agent
//                  being called (the agent records process.hrtime.bigint()).
//   W4 responsive  a backlog of N drains; monitorEventLoopDelay({ resolution: 1 }) and a 1 ms
//                  setInterval, enabled after the (synchronous) submit loop, report the
//                  event-loop delay while it drains. Histogram values are intervals between
//                  1 ms timer wake-ups, so an idle loop reads ~1.1 ms.
//   W5 limits      bench/w5.mjs in a child process: 5 agents each limited to 4 concurrent
//                  executions plus a global rate limit (present, never reached), 100k executions,
//                  µs per execution against p-queue (one queue per agent with its share of the
//                  rate as intervalCap) and against the same executor without limits.
//   W6 durable     bench/w6.mjs in a child process: this package with a SQLite store against
//                  BullMQ on a throw-away local redis-server (jobs/s, submit→start latency).
//   W7 multi-host  bench/w7.mjs in a child process: this package with a PostgreSQL store, a
//                  producer and 3 worker processes (concurrency 64 each), against BullMQ,
//                  graphile-worker and pg-boss in the same shape (jobs/s, add→start latency).
//
// p-queue's priority insert is a sorted-array splice (O(n)) and its dequeue is Array#shift on
// a large array (O(n) too), so it is run under a time budget (--pqueue-budget, default 120 s):
// a run that exceeds it is aborted, reported as skipped, and its µs/exec as a lower bound.
// In W2 and W4, where 1M p-queue items would take many minutes, p-queue runs at 100k.
//
// Usage
//   npm run bench                                   (= node --expose-gc bench/bench.mjs)
//   node --expose-gc bench/bench.mjs --json bench/results.json
//   node --expose-gc bench/bench.mjs --quick        (N = 10k, 100k; W2/W4 at 100k; 3 runs)
// Options
//   --json FILE             write all results (raw runs included) as JSON
//   --quick                 smaller N, fewer runs
//   --only w1,w2,w3,w4,w5,w6,w7  run a subset of the workloads
//   --systems a,b           subset of: this,thisAls,fastq,pqueue,semaphore,floor,floorCtx
//   --sizes 10000,100000    W1 sizes
//   --runs K                measured runs per size (overrides 21/5/3)
//   --warmup-execs N        warm-up executions per system and size (default 200k; --quick 100k)
//   --w2-n N, --w4-n N      N for W2 / W4 (default 1M; --quick 100k)
//   --w3-n N                sequential executions for W3 (default 5000)
//   --pqueue-budget S       seconds before a single p-queue run is aborted (default 120)
//   --pqueue-small-n N      N used for p-queue in W2/W4 (default 100k)
//   --w5-n N                executions per W5 run (default 100k, also with --quick: 3 runs then);
//                           --runs and --warmup-execs apply to W5 too
//   --w6-n N                jobs per W6 throughput run (default 100k; --quick 20k)
//   --w7-n N                jobs per W7 throughput run (default 100k; --quick 20k, one run)

import { performance, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { AsyncLocalStorage, AsyncResource } from 'node:async_hooks';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, readdirSync, mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import os from 'node:os';

import BackgroundExecutor from '../index.mjs';
import PQueue from 'p-queue';
import fastq from 'fastq';

const SELF = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SELF), '..');

// ----- parameters ------------------------------------------------------------------------

const CONCURRENCY = 64;
const LEVEL_NAMES = ['critical', 'high', 'medium', 'low', 'background'];
const LEVEL_NUMBERS = [5, 4, 3, 2, 1]; // the same levels as p-queue priorities
const TASK = 'task';
const AGENT = 'echo';
const agent = async (task, opts) => opts.i;

const SYSTEMS = ['this', 'thisAls', 'fastq', 'pqueue', 'semaphore', 'floor', 'floorCtx'];
const LABEL = { this: 'this', thisAls: 'this+ALS', fastq: 'fastq', pqueue: 'p-queue', semaphore: 'semaphore', floor: 'floor', floorCtx: 'floor+ctx' };
/** Systems that take part in W1 only (the floors cannot pause: they are W1 references). */
const W1_ONLY = new Set(['floor', 'floorCtx', 'thisAls']);
const als = new AsyncLocalStorage();

function argValue(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const hasFlag = (name) => process.argv.includes(`--${name}`);
const numList = (s) => s.split(',').map((x) => Number(x.replace(/_/g, '')));

const QUICK = hasFlag('quick');
const OPT = {
  quick: QUICK,
  json: argValue('json', null),
  only: argValue('only', 'w1,w2,w3,w4,w5,w6,w7').split(','),
  systems: argValue('systems', SYSTEMS.join(',')).split(',').filter((s) => SYSTEMS.includes(s)),
  sizes: numList(argValue('sizes', QUICK ? '10000,100000' : '10000,100000,1000000')),
  runs: argValue('runs', null) === null ? null : Number(argValue('runs')),
  warmupExecs: Number(argValue('warmup-execs', QUICK ? '100000' : '200000')),
  w2N: Number(argValue('w2-n', QUICK ? '100000' : '1000000')),
  w3N: Number(argValue('w3-n', QUICK ? '1000' : '5000')),
  w4N: Number(argValue('w4-n', QUICK ? '100000' : '1000000')),
  pqueueBudgetS: Number(argValue('pqueue-budget', '120')),
  pqueueSmallN: Number(argValue('pqueue-small-n', '100000')),
  w5N: Number(argValue('w5-n', '100000')),
  w6N: Number(argValue('w6-n', QUICK ? '20000' : '100000')),
  w7N: Number(argValue('w7-n', QUICK ? '20000' : '100000')),
};
const runsFor = (n) => (OPT.runs !== null ? OPT.runs : QUICK ? 3 : n <= 10_000 ? 21 : n <= 100_000 ? 5 : 3);

// ----- helpers ---------------------------------------------------------------------------

if (typeof globalThis.gc !== 'function') {
  console.error('bench: run with --expose-gc (npm run bench does); results would include stray GC.');
  process.exit(2);
}
const gc = () => {
  globalThis.gc();
  globalThis.gc();
};
const tick = () => new Promise((resolve) => setImmediate(resolve));

// GC pauses on the main thread, to tell how much of a run was garbage collection.
const gcEntries = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcEntries.push([e.startTime, e.duration]);
}).observe({ entryTypes: ['gc'] });
async function gcPauseMs(from, to) {
  await tick();
  await tick();
  let ms = 0;
  for (const [start, d] of gcEntries) if (start >= from && start < to) ms += d;
  gcEntries.length = 0;
  return ms;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}
/** A packed array of n nulls, allocated outside the timed region. */
function slots(n) {
  const a = [];
  for (let i = 0; i < n; i++) a.push(null);
  return a;
}
const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const fmtN = (n) => n.toLocaleString('en-US');
function table(headers, rows) {
  const w = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => String(r[c]).length)));
  const line = (r) => r.map((v, c) => (c === 0 ? String(v).padEnd(w[c]) : String(v).padStart(w[c]))).join('  ');
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}
function check(results, n) {
  // Every result is its own index: all executions ran, with the right options.
  if (results.length !== n || results[0] !== 0 || results[n - 1] !== n - 1 || results[n >> 1] !== n >> 1) {
    throw new Error(`wrong results (length ${results.length})`);
  }
}

// ----- the bare semaphore baseline -------------------------------------------------------

class Semaphore {
  constructor(limit) {
    this.limit = limit;
    this.active = 0;
    this.paused = false;
    this.queue = []; // flat: fn, task, opts, resolve, reject
    this.head = 0;
  }
  run(fn, task, opts) {
    return new Promise((resolve, reject) => {
      if (!this.paused && this.active < this.limit) this.start(fn, task, opts, resolve, reject);
      else this.queue.push(fn, task, opts, resolve, reject);
    });
  }
  start(fn, task, opts, resolve, reject) {
    this.active++;
    let p;
    try {
      p = fn(task, opts);
    } catch (err) {
      p = Promise.reject(err);
    }
    Promise.resolve(p).then(
      (v) => (resolve(v), this.done()),
      (e) => (reject(e), this.done()),
    );
  }
  done() {
    this.active--;
    this.pump();
  }
  pump() {
    const q = this.queue;
    while (!this.paused && this.active < this.limit && this.head < q.length) {
      const h = this.head;
      this.head += 5;
      this.start(q[h], q[h + 1], q[h + 2], q[h + 3], q[h + 4]);
      q[h] = q[h + 1] = q[h + 2] = q[h + 3] = q[h + 4] = undefined;
    }
    if (this.head > 0 && this.head === q.length) this.queue.length = this.head = 0;
  }
  pause() {
    this.paused = true;
  }
  resume() {
    this.paused = false;
    this.pump();
  }
}

// ----- the floor: no scheduler ---------------------------------------------------------------
// The leanest of the variants tried (three arrays and async loops were ~20 % slower at 1M):
// one flat array of (opts, resolve, reject) and 64 reusable handler objects, so nothing but
// the promises, their resolvers, the options and the agents' own promises is allocated.

let floorResolve = null;
let floorReject = null;
function floorCapture(resolve, reject) {
  floorResolve = resolve;
  floorReject = reject;
}
/** One of the 64 slots: calls the agent for the next submission, settles its promise, repeats. */
class FloorSlot {
  constructor(f) {
    this.f = f;
    this.resolve = null;
    this.reject = null;
    this.ok = (v) => {
      this.resolve(v);
      this.next();
    };
    this.err = (e) => {
      this.reject(e);
      this.next();
    };
  }
  next() {
    const f = this.f;
    const q = f.q;
    const j = f.head;
    if (j >= q.length) return;
    f.head = j + 3;
    const opts = q[j];
    this.resolve = q[j + 1];
    this.reject = q[j + 2];
    q[j] = q[j + 1] = q[j + 2] = undefined;
    let p;
    try {
      p = f.fn(TASK, opts);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(this.ok, this.err);
  }
}

/**
 * A floor slot that calls each agent in the async context of its submission. Its own class,
 * not a subclass of FloorSlot: sharing the handlers would make the floor's own `next` call
 * polymorphic, and slow the reference it is compared with.
 */
class FloorContextSlot {
  constructor(f) {
    this.f = f;
    this.resolve = null;
    this.reject = null;
    this.ok = (v) => {
      this.resolve(v);
      this.next();
    };
    this.err = (e) => {
      this.reject(e);
      this.next();
    };
  }
  next() {
    const f = this.f;
    const q = f.q;
    const j = f.head;
    if (j >= q.length) return;
    f.head = j + 4;
    const scope = q[j];
    const opts = q[j + 1];
    this.resolve = q[j + 2];
    this.reject = q[j + 3];
    q[j] = q[j + 1] = q[j + 2] = q[j + 3] = undefined;
    let p;
    try {
      p = scope.runInAsyncScope(f.fn, null, TASK, opts);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(this.ok, this.err);
  }
}

// ----- the systems -----------------------------------------------------------------------
// create(agentFn) -> an instance; submitAll(inst, ps, n, deadline) fills ps with the n
// promises (one tight, monomorphic loop per system) and returns false if it gave up at
// `deadline` (performance.now() ms). settle(inst, ps, n) resolves when all n are done (or
// when an aborted p-queue run is idle again).

const fastqWorker = (fn) =>
  function worker(opts) {
    return fn(TASK, opts);
  };

const impl = {
  this: {
    create(fn = agent) {
      // The resource monitor runs (it starts with the first submission) but does not
      // throttle: the peers have no such limit, and a busy benchmark machine would trip it.
      const bg = new BackgroundExecutor({ maxConcurrentAgents: CONCURRENCY, throttleIfExceeded: false });
      bg.registerAgent(AGENT, fn);
      return bg;
    },
    submitAll(bg, ps, n) {
      for (let i = 0; i < n; i++) ps[i] = bg.execute(AGENT, TASK, { i, priority: LEVEL_NAMES[i % 5] });
      return true;
    },
    submitOne: (bg, i) => bg.execute(AGENT, TASK, { i, priority: LEVEL_NAMES[i % 5] }),
    settle: (bg, ps) => Promise.all(ps),
    pause: (bg) => bg.pause(),
    resume: (bg) => bg.resume(),
    close: (bg) => bg.shutdown(),
  },
  // In Node.js 20 a used AsyncLocalStorage turns on async hooks for every promise of the
  // process until it is disabled: each run disables it at the end, so the other systems are
  // measured without them.
  thisAls: {
    create: (fn) => impl.this.create(fn),
    submitAll(bg, ps, n) {
      return als.run({ run: n }, () => impl.this.submitAll(bg, ps, n));
    },
    submitOne: (bg, i) => als.run({ i }, () => impl.this.submitOne(bg, i)),
    settle: (bg, ps) => Promise.all(ps),
    pause: (bg) => bg.pause(),
    resume: (bg) => bg.resume(),
    close: (bg) => {
      als.disable();
      return bg.shutdown();
    },
  },
  pqueue: {
    create() {
      const q = new PQueue({ concurrency: CONCURRENCY });
      // Budget guard: p-queue drains in one microtask chain, so no timer can interrupt it;
      // a 'next' listener (one per finished job, the clock read every 1024th) can.
      q.benchDeadline = Infinity;
      q.benchAborted = false;
      q.benchAbort = null;
      let count = 0;
      q.addEventListener('next', () => {
        if ((++count & 1023) === 0 && !q.benchAborted && performance.now() > q.benchDeadline) impl.pqueue.abort(q);
      });
      return q;
    },
    abort(q) {
      q.benchAborted = true;
      q.clear();
      if (q.benchAbort !== null) q.benchAbort();
    },
    submitAll(q, ps, n, deadline = Infinity, priorities = true) {
      q.benchDeadline = deadline;
      for (let i = 0; i < n; i++) {
        if ((i & 1023) === 0 && performance.now() > deadline) {
          q.benchSubmitted = i;
          impl.pqueue.abort(q);
          return false;
        }
        const opts = { i, priority: LEVEL_NAMES[i % 5] };
        ps[i] = q.add(() => agent(TASK, opts), { priority: priorities ? LEVEL_NUMBERS[i % 5] : 0 });
      }
      q.benchSubmitted = n;
      return true;
    },
    submitOne(q, i, fn) {
      const opts = { i, priority: LEVEL_NAMES[i % 5] };
      return q.add(() => fn(TASK, opts), { priority: LEVEL_NUMBERS[i % 5] });
    },
    async settle(q, ps) {
      if (q.benchAborted) {
        await q.onIdle();
        return null;
      }
      const aborted = new Promise((resolve) => {
        q.benchAbort = resolve;
      });
      const r = await Promise.race([Promise.all(ps), aborted]);
      if (q.benchAborted) {
        await q.onIdle();
        return null;
      }
      return r;
    },
    pause: (q) => q.pause(),
    resume: (q) => q.start(),
    close: (q) => q.clear(),
  },
  fastq: {
    create(fn = agent) {
      return fastq.promise(fastqWorker(fn), CONCURRENCY);
    },
    submitAll(q, ps, n) {
      for (let i = 0; i < n; i++) ps[i] = q.push({ i, priority: LEVEL_NAMES[i % 5] });
      return true;
    },
    submitOne: (q, i) => q.push({ i, priority: LEVEL_NAMES[i % 5] }),
    settle: (q, ps) => Promise.all(ps),
    pause: (q) => q.pause(),
    resume: (q) => q.resume(),
    close: (q) => q.kill(),
  },
  floor: {
    create(fn = agent) {
      return { fn, q: [], head: 0 };
    },
    submitAll(f, ps, n) {
      for (let i = 0; i < n; i++) {
        ps[i] = new Promise(floorCapture);
        f.q.push({ i, priority: LEVEL_NAMES[i % 5] }, floorResolve, floorReject);
      }
      for (let w = 0; w < CONCURRENCY; w++) new FloorSlot(f).next();
      return true;
    },
    settle: (f, ps) => Promise.all(ps),
    close: () => {},
  },
  floorCtx: {
    create(fn = agent) {
      return { fn, q: [], head: 0 };
    },
    submitAll(f, ps, n) {
      for (let i = 0; i < n; i++) {
        ps[i] = new Promise(floorCapture);
        f.q.push(new AsyncResource('floor'), { i, priority: LEVEL_NAMES[i % 5] }, floorResolve, floorReject);
      }
      for (let w = 0; w < CONCURRENCY; w++) new FloorContextSlot(f).next();
      return true;
    },
    settle: (f, ps) => Promise.all(ps),
    close: () => {},
  },
  semaphore: {
    create(fn = agent) {
      const s = new Semaphore(CONCURRENCY);
      s.fn = fn;
      return s;
    },
    submitAll(s, ps, n) {
      for (let i = 0; i < n; i++) ps[i] = s.run(agent, TASK, { i, priority: LEVEL_NAMES[i % 5] });
      return true;
    },
    submitOne: (s, i) => s.run(s.fn, TASK, { i, priority: LEVEL_NAMES[i % 5] }),
    settle: (s, ps) => Promise.all(ps),
    pause: (s) => s.pause(),
    resume: (s) => s.resume(),
    close: () => {},
  },
};

// ----- W1: throughput --------------------------------------------------------------------

async function w1Run(sys, n) {
  const I = impl[sys];
  const inst = I.create();
  const ps = slots(n);
  gc();
  const deadline = sys === 'pqueue' ? performance.now() + OPT.pqueueBudgetS * 1000 : Infinity;
  const t0 = performance.now();
  const submitted = I.submitAll(inst, ps, n, deadline);
  const t1 = performance.now();
  const results = await I.settle(inst, submitted ? ps : ps.slice(0, inst.benchSubmitted));
  const t2 = performance.now();
  const gcMs = await gcPauseMs(t0, t2);
  await I.close(inst);
  if (!submitted || results === null) {
    return { skipped: true, ms: t2 - t0, submitMs: t1 - t0, submitted: inst.benchSubmitted, phase: submitted ? 'drain' : 'submit' };
  }
  check(results, n);
  return { skipped: false, ms: t2 - t0, submitMs: t1 - t0, gcMs };
}

async function w1() {
  console.log(`\n## W1 throughput — concurrency ${CONCURRENCY}, 5 interleaved priorities (fastq, semaphore: none)`);
  const out = { sizes: OPT.sizes, systems: {} };
  for (const s of OPT.systems) out.systems[s] = {};
  const gaveUp = new Set(); // systems that exceeded the budget at a smaller N
  for (const n of OPT.sizes) {
    const runs = runsFor(n);
    const active = OPT.systems.filter((s) => !gaveUp.has(s));
    for (const s of OPT.systems) {
      if (gaveUp.has(s)) {
        out.systems[s][n] = { skipped: true, note: `not run: exceeded the ${OPT.pqueueBudgetS} s budget at a smaller N` };
      }
    }
    // Warm-up (excluded): runs of min(N, 100k) until warmupExecs executions, at least one.
    const wn = Math.min(n, 100_000);
    const warmRuns = Math.max(1, Math.ceil(OPT.warmupExecs / wn));
    for (let w = 0; w < warmRuns; w++) {
      for (const s of active) {
        if (gaveUp.has(s)) continue;
        const r = await w1Run(s, wn);
        if (r.skipped) gaveUp.add(s);
      }
    }
    const rec = {};
    for (const s of active) {
      rec[s] = { runsMs: [], submitMs: [], gcMs: [], skipped: false };
      if (gaveUp.has(s)) Object.assign(rec[s], { skipped: true, note: `not run: its warm-up exceeded the ${OPT.pqueueBudgetS} s budget` });
    }
    for (let r = 0; r < runs; r++) {
      const order = active.map((_, k) => active[(k + r) % active.length]);
      for (const s of order) {
        if (rec[s].skipped) continue;
        const res = await w1Run(s, n);
        if (res.skipped) {
          rec[s].skipped = true;
          rec[s].note =
            `aborted: a single run exceeded the ${OPT.pqueueBudgetS} s budget (${res.phase} phase; ` +
            `${fmtN(res.submitted)} of ${fmtN(n)} submitted after ${fmt(res.ms / 1000, 1)} s)`;
          rec[s].lowerBoundUsPerExec = (res.ms * 1000) / n;
          rec[s].abortedAfterS = res.ms / 1000;
          rec[s].abortedPhase = res.phase;
          rec[s].submittedBeforeAbort = res.submitted;
          gaveUp.add(s);
          continue;
        }
        rec[s].runsMs.push(res.ms);
        rec[s].submitMs.push(res.submitMs);
        rec[s].gcMs.push(res.gcMs);
      }
      process.stderr.write(`  N=${fmtN(n)} round ${r + 1}/${runs} done\n`);
    }
    for (const s of active) {
      const x = rec[s];
      if (x.runsMs.length > 0 && !x.skipped) {
        x.medianMs = median(x.runsMs);
        x.usPerExec = (x.medianMs * 1000) / n;
        x.minUs = (Math.min(...x.runsMs) * 1000) / n;
        x.maxUs = (Math.max(...x.runsMs) * 1000) / n;
        x.submitUsPerExec = (median(x.submitMs) * 1000) / n;
        x.gcUsPerExec = (median(x.gcMs) * 1000) / n;
      }
      out.systems[s][n] = x;
    }
  }
  // Print.
  const us = (s, n) => out.systems[s]?.[n]?.usPerExec;
  const cell = (s, n) => {
    const x = out.systems[s]?.[n];
    if (x === undefined) return '—';
    if (x.skipped) return x.lowerBoundUsPerExec !== undefined ? `>${fmt(x.lowerBoundUsPerExec, 1)} (skipped)` : 'skipped';
    return `${fmt(x.usPerExec)} [${fmt(x.minUs)}–${fmt(x.maxUs)}]`;
  };
  const sysCols = OPT.systems;
  const headers = ['N', 'runs', ...sysCols.map((s) => `${LABEL[s]} µs/exec [min–max]`)];
  const hasRatio = sysCols.includes('this');
  if (hasRatio && sysCols.includes('fastq')) headers.push('this/fastq');
  if (hasRatio && sysCols.includes('pqueue')) headers.push('p-queue/this');
  if (hasRatio && sysCols.includes('semaphore')) headers.push('this/semaphore');
  if (hasRatio && sysCols.includes('floor')) headers.push('this/floor');
  const hasFloors = sysCols.includes('floor') && sysCols.includes('floorCtx');
  if (hasFloors) headers.push('floor+ctx/floor');
  if (hasRatio && sysCols.includes('thisAls')) headers.push('this+ALS/this');
  const rows = [];
  out.ratios = {};
  for (const n of OPT.sizes) {
    const row = [fmtN(n), String(runsFor(n)), ...sysCols.map((s) => cell(s, n))];
    const ratios = {};
    if (hasRatio && sysCols.includes('fastq')) {
      ratios.thisOverFastq = us('this', n) / us('fastq', n);
      row.push(fmt(ratios.thisOverFastq));
    }
    if (hasRatio && sysCols.includes('pqueue')) {
      const pq = out.systems.pqueue[n];
      if (pq && pq.skipped && pq.lowerBoundUsPerExec !== undefined) {
        ratios.pqueueOverThis = pq.lowerBoundUsPerExec / us('this', n);
        ratios.pqueueOverThisIsLowerBound = true;
        row.push(`>${fmt(ratios.pqueueOverThis, 1)}`);
      } else {
        ratios.pqueueOverThis = us('pqueue', n) / us('this', n);
        row.push(fmt(ratios.pqueueOverThis, 1));
      }
    }
    if (hasRatio && sysCols.includes('semaphore')) {
      ratios.thisOverSemaphore = us('this', n) / us('semaphore', n);
      row.push(fmt(ratios.thisOverSemaphore, 1));
    }
    if (hasRatio && sysCols.includes('floor')) {
      ratios.thisOverFloor = us('this', n) / us('floor', n);
      row.push(fmt(ratios.thisOverFloor));
    }
    if (hasFloors) {
      ratios.floorCtxOverFloor = us('floorCtx', n) / us('floor', n);
      row.push(fmt(ratios.floorCtxOverFloor));
    }
    if (hasRatio && sysCols.includes('thisAls')) {
      ratios.alsOverThis = us('thisAls', n) / us('this', n);
      row.push(fmt(ratios.alsOverThis));
    }
    out.ratios[n] = ratios;
    rows.push(row);
  }
  console.log(table(headers, rows));
  const sub = OPT.systems.map((s) => `${LABEL[s]} ${OPT.sizes.map((n) => fmt(out.systems[s][n]?.submitUsPerExec)).join('/')}`);
  console.log(`  submit phase only, µs/exec (N = ${OPT.sizes.map(fmtN).join('/')}): ${sub.join('; ')}`);
  const gcs = OPT.systems.map((s) => `${LABEL[s]} ${OPT.sizes.map((n) => fmt(out.systems[s][n]?.gcUsPerExec)).join('/')}`);
  console.log(`  main-thread GC pauses within a run, µs/exec (same N): ${gcs.join('; ')}`);
  for (const s of OPT.systems) for (const n of OPT.sizes) if (out.systems[s][n]?.note) console.log(`  note: ${LABEL[s]} N=${fmtN(n)}: ${out.systems[s][n].note}`);
  return out;
}

// ----- W2: memory per queued execution (child processes) ---------------------------------

async function w2Child(sys, n, priorities) {
  const I = impl[sys];
  const inst = I.create();
  I.pause(inst);
  const ps = slots(n);
  await tick();
  gc();
  await tick();
  gc();
  const before = process.memoryUsage();
  const t0 = performance.now();
  if (sys === 'pqueue') I.submitAll(inst, ps, n, Infinity, priorities);
  else I.submitAll(inst, ps, n);
  const submitMs = performance.now() - t0;
  await tick(); // lets a batched submission reach its queue
  gc();
  await tick();
  gc();
  const after = process.memoryUsage();
  const per = (k) => (after[k] - before[k]) / n;
  const out = {
    system: sys,
    n,
    priorities,
    code: codeHashes(),
    submitMs,
    rssBytes: per('rss'),
    heapUsedBytes: per('heapUsed'),
    externalBytes: per('external'),
    before,
    after,
  };
  // Then let it all run (p-queue: its 1M drain is O(n^2), so it is cleared instead).
  const t1 = performance.now();
  if (sys === 'pqueue') {
    I.close(inst);
    out.after_ = 'cleared';
  } else {
    I.resume(inst);
    check(await Promise.all(ps), n);
    out.drainMs = performance.now() - t1;
    await I.close(inst);
  }
  return out;
}

function spawnChild(args) {
  const r = spawnSync(process.execPath, ['--expose-gc', SELF, ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`child ${args.join(' ')} failed: ${r.stderr}`);
  const line = r.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

async function w2() {
  const n = OPT.w2N;
  console.log(`\n## W2 memory — ${fmtN(n)} executions queued while paused (fresh child process per system)`);
  const plan = [];
  for (const s of OPT.systems.filter((x) => !W1_ONLY.has(x))) {
    if (s === 'pqueue') {
      const small = Math.min(n, OPT.pqueueSmallN);
      plan.push({ key: 'pqueue', sys: s, n: small, priorities: true, label: `p-queue (5 priorities, N=${fmtN(small)})` });
      if (small < n) {
        plan.push({ key: 'pqueueNoPrio', sys: s, n, priorities: false, label: `p-queue (no priorities: O(1) append, N=${fmtN(n)})` });
      }
    } else {
      plan.push({ key: s, sys: s, n, priorities: true, label: `${LABEL[s]}${s === 'this' ? ' (5 priorities)' : ''}` });
    }
  }
  const out = { n, systems: {} };
  const rows = [];
  for (const p of plan) {
    const r = spawnChild(['--w2-child', p.sys, String(p.n), p.priorities ? '1' : '0']);
    r.label = p.label;
    out.systems[p.key] = r;
    rows.push([p.label, fmtN(p.n), fmt(r.rssBytes, 0), fmt(r.heapUsedBytes, 0), fmt(r.rssBytes - r.heapUsedBytes, 0), fmt(r.submitMs / 1000, 2)]);
  }
  console.log(table(['system', 'N', 'RSS B/exec', 'JS heap B/exec', 'RSS-heap B/exec', 'submit s'], rows));
  console.log('  RSS-heap ≈ native (Rust) memory plus V8 heap slack; the JS heap column counts only live JS objects.');
  if (out.systems.this && out.systems.pqueue) {
    out.thisOverPqueueRss = out.systems.this.rssBytes / out.systems.pqueue.rssBytes;
    console.log(`  this / p-queue (RSS per queued execution): ${fmt(out.thisOverPqueueRss)}`);
  }
  return out;
}

// ----- W3: latency from execute() to the agent being called ------------------------------

async function w3() {
  const n = OPT.w3N;
  const warm = Math.max(200, n >> 2);
  console.log(`\n## W3 latency — idle queue, ${fmtN(n)} sequential awaited executions (after ${fmtN(warm)} warm-up)`);
  const out = { n, systems: {} };
  const rows = [];
  for (const s of OPT.systems.filter((x) => !W1_ONLY.has(x))) {
    const I = impl[s];
    let calledAt = 0n;
    const timed = async (task, opts) => {
      calledAt = process.hrtime.bigint();
      return opts.i;
    };
    const inst = I.create(timed);
    gc();
    const lat = new Float64Array(n);
    for (let i = 0; i < warm + n; i++) {
      const t0 = process.hrtime.bigint();
      const v = await I.submitOne(inst, i, timed);
      if (v !== i) throw new Error(`W3 ${s}: wrong result`);
      if (i >= warm) lat[i - warm] = Number(calledAt - t0) / 1000;
    }
    await I.close(inst);
    const sorted = Array.from(lat).sort((a, b) => a - b);
    const r = {
      medianUs: percentile(sorted, 50),
      p90Us: percentile(sorted, 90),
      p99Us: percentile(sorted, 99),
      maxUs: sorted[sorted.length - 1],
      meanUs: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    };
    out.systems[s] = r;
    rows.push([LABEL[s], fmt(r.medianUs), fmt(r.p90Us), fmt(r.p99Us), fmt(r.maxUs, 1), fmt(r.meanUs)]);
  }
  console.log(table(['system', 'median µs', 'p90 µs', 'p99 µs', 'max µs', 'mean µs'], rows));
  return out;
}

// ----- W4: event-loop responsiveness while a backlog drains ------------------------------

async function w4() {
  const n = OPT.w4N;
  console.log(`\n## W4 responsiveness — event-loop delay while a backlog of ${fmtN(n)} drains`);
  const out = { n, systems: {} };
  const rows = [];
  for (const s of OPT.systems.filter((x) => !W1_ONLY.has(x))) {
    const I = impl[s];
    const sn = s === 'pqueue' ? Math.min(n, OPT.pqueueSmallN) : n;
    const inst = I.create();
    const ps = slots(sn);
    gc();
    // Submitted while paused, so that the drain starts only after both timers have fired
    // once: a histogram's first wake-up only sets its reference time, and a drain that
    // starts before it (and never yields) would go unrecorded.
    I.pause(inst);
    const t0 = performance.now();
    const ok = I.submitAll(inst, ps, sn, s === 'pqueue' ? t0 + OPT.pqueueBudgetS * 1000 : Infinity);
    const submitMs = performance.now() - t0;
    // Subscribe to all N before the measurement: Promise.all over 1M promises is itself a
    // synchronous block of a few hundred ms that belongs to this harness, not to the queue.
    const all = ok ? I.settle(inst, ps) : null;
    const h = monitorEventLoopDelay({ resolution: 1 });
    const gaps = [];
    let last = 0;
    const iv = setInterval(() => {
      const t = performance.now();
      if (last !== 0) gaps.push(t - last);
      last = t;
    }, 1);
    h.enable();
    await sleep(10); // (no h.reset(): it would clear the reference time too; ~10 idle samples stay in)
    gaps.length = 0;
    const t1 = performance.now();
    I.resume(inst);
    const results = ok ? await all : null;
    const drainMs = performance.now() - t1;
    await sleep(20); // let both timers fire once more, so a drain that never yielded is recorded
    h.disable();
    clearInterval(iv);
    await I.close(inst);
    if (results === null) {
      out.systems[s] = { n: sn, skipped: true, note: `exceeded the ${OPT.pqueueBudgetS} s budget` };
      rows.push([LABEL[s], fmtN(sn), 'skipped', '', '', '', '', '']);
      continue;
    }
    check(results, sn);
    const g = gaps.sort((a, b) => a - b);
    const r = {
      n: sn,
      submitMs,
      drainMs,
      eldMaxMs: h.max / 1e6,
      eldP99Ms: h.percentile(99) / 1e6,
      eldP50Ms: h.percentile(50) / 1e6,
      eldCount: h.count,
      intervalTicks: g.length,
      intervalMaxGapMs: g.length ? g[g.length - 1] : null,
      intervalP99GapMs: g.length ? percentile(g, 99) : null,
    };
    out.systems[s] = r;
    rows.push([
      LABEL[s],
      fmtN(sn),
      fmt(r.drainMs / 1000, 2),
      fmt(r.eldP99Ms),
      fmt(r.eldMaxMs),
      fmt(r.intervalP99GapMs),
      fmt(r.intervalMaxGapMs),
      String(r.intervalTicks),
    ]);
    gc();
  }
  console.log(table(['system', 'N', 'drain s', 'ELD p99 ms', 'ELD max ms', '1ms-tick p99 gap', 'max gap', 'ticks'], rows));
  console.log('  submitted while paused; measured from resume() to the end of the drain (+20 ms). ELD = monitorEventLoopDelay');
  console.log('  (values are intervals between 1 ms wake-ups: an idle loop reads ~1.1 ms); tick gap = interval between 1 ms setInterval callbacks.');
  return out;
}

// ----- W5: per-agent limits and a global rate limit (bench/w5.mjs, in a child process) ----

/** Runs bench/w5.mjs, which prints its own table, and returns its JSON results. */
function w5() {
  const file = path.join(os.tmpdir(), `bench-w5-${process.pid}.json`);
  const args = ['--expose-gc', path.join(ROOT, 'bench', 'w5.mjs'), '--n', String(OPT.w5N), '--warmup-execs', String(OPT.warmupExecs), '--json', file];
  if (OPT.quick) args.push('--quick');
  if (OPT.runs !== null) args.push('--runs', String(OPT.runs));
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  try {
    if (r.status !== 0) return { error: `bench/w5.mjs exited with ${r.status ?? r.signal}`, goals: [] };
    return JSON.parse(readFileSync(file, 'utf8'));
  } finally {
    rmSync(file, { force: true });
  }
}

// ----- W6: durable executions (bench/w6.mjs, in a child process) ------------------------

/** Runs bench/w6.mjs, which prints its own tables, and returns its JSON results. */
function w6() {
  const file = path.join(os.tmpdir(), `bench-w6-${process.pid}.json`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bench', 'w6.mjs'), '--n', String(OPT.w6N), '--json', file], { stdio: 'inherit' });
  try {
    if (r.status !== 0) return { error: `bench/w6.mjs exited with ${r.status ?? r.signal}`, goals: [] };
    return JSON.parse(readFileSync(file, 'utf8'));
  } finally {
    rmSync(file, { force: true });
  }
}

// ----- W7: durable executions across processes (bench/w7.mjs, in a child process) --------

/** Runs bench/w7.mjs, which prints its own tables, and returns its JSON results. */
function w7() {
  const file = path.join(os.tmpdir(), `bench-w7-${process.pid}.json`);
  const args = [path.join(ROOT, 'bench', 'w7.mjs'), '--n', String(OPT.w7N), '--json', file, ...(QUICK ? ['--quick'] : [])];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  try {
    if (r.status !== 0) return { error: `bench/w7.mjs exited with ${r.status ?? r.signal}`, goals: [] };
    return JSON.parse(readFileSync(file, 'utf8'));
  } finally {
    rmSync(file, { force: true });
  }
}

// ----- goals -----------------------------------------------------------------------------

function goals(res) {
  const g = [];
  const add = (name, value, target, pass, detail = '') => g.push({ name, value, target, pass, detail });
  const w1r = res.w1;
  if (w1r && w1r.systems.this) {
    // W1 is judged against the floor measured in the same run (what any promise-returning
    // execute() costs on this machine at this moment) and against the current p-queue.
    for (const n of [100_000, 1_000_000]) {
      const r = w1r.ratios[n]?.thisOverFloor;
      if (r !== undefined && !Number.isNaN(r)) add(`W1 this/floor @${fmtN(n)}`, fmt(r), '<= 1.15', r <= 1.15);
    }
    const r = w1r.ratios[100_000]?.pqueueOverThis;
    if (r !== undefined && !Number.isNaN(r)) {
      const lb = w1r.ratios[100_000].pqueueOverThisIsLowerBound;
      add('W1 p-queue/this @100k', `${lb ? '>' : ''}${fmt(r, 1)}`, '>= 10', r >= 10, lb ? 'p-queue run aborted; lower bound' : '');
    }
    for (const n of [100_000, 1_000_000]) {
      const a = w1r.ratios[n]?.alsOverThis;
      if (a !== undefined && !Number.isNaN(a)) add(`W1 this+ALS/this @${fmtN(n)}`, fmt(a), '(reported)', true);
    }
  }
  if (res.w2 && res.w2.systems.this && res.w2.systems.pqueue) {
    const a = res.w2.systems.this.rssBytes;
    const b = res.w2.systems.pqueue.rssBytes;
    add('W2 RSS B/queued exec: this vs p-queue', `${fmt(a, 0)} vs ${fmt(b, 0)}`, 'this < p-queue', a < b);
  }
  if (res.w3 && res.w3.systems.this) {
    const m = res.w3.systems.this.medianUs;
    add('W3 this median µs', fmt(m), '< 20', m < 20);
  }
  if (res.w4 && res.w4.systems.this && !res.w4.systems.this.skipped) {
    const r = res.w4.systems.this;
    add('W4 this ELD p99 ms', fmt(r.eldP99Ms), '< 10', r.eldP99Ms < 10);
    add('W4 this ELD max ms', fmt(r.eldMaxMs), '< 50', r.eldMaxMs < 50);
  }
  for (const x of res.w5?.goals ?? []) g.push(x);
  for (const x of res.w6?.goals ?? []) g.push(x);
  for (const x of res.w7?.goals ?? []) g.push(x);
  console.log('\n## Goals');
  console.log(table(['goal', 'measured', 'target', 'result'], g.map((x) => [x.name, x.value, x.target, (x.pass ? 'PASS' : 'MISS') + (x.detail ? ` (${x.detail})` : '')])));
  return g;
}

// ----- environment -----------------------------------------------------------------------

function sha256(file) {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 16);
  } catch {
    return null;
  }
}
function git(args) {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}
/** One hash over every file of lib/ (what runs in JS). */
function libHash() {
  const h = createHash('sha256');
  for (const f of readdirSync(path.join(ROOT, 'lib'), { recursive: true }).filter((f) => f.endsWith('.js')).sort()) h.update(f).update(readFileSync(path.join(ROOT, 'lib', f)));
  return h.digest('hex').slice(0, 16);
}
function codeHashes() {
  const nodeFile = readdirSync(ROOT).find((f) => f.endsWith('.node'));
  return { executorJs: libHash(), addon: nodeFile ? sha256(path.join(ROOT, nodeFile)) : null };
}
function environment() {
  const nodeFile = readdirSync(ROOT).find((f) => f.endsWith('.node'));
  const pkgVersion = (name) => JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  return {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    totalMemGb: +(os.totalmem() / 2 ** 30).toFixed(1),
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
    argv: process.argv.slice(2),
    execArgv: process.execArgv,
    gitHead: git(['rev-parse', '--short', 'HEAD']),
    gitDirty: (git(['status', '--porcelain', '--', 'lib', 'src', 'index.js', 'index.mjs']) || '') !== '',
    executorJsSha256: libHash(),
    nativeAddon: nodeFile,
    nativeAddonSha256: nodeFile ? sha256(path.join(ROOT, nodeFile)) : null,
    pQueueVersion: pkgVersion('p-queue'),
    fastqVersion: pkgVersion('fastq'),
  };
}

// ----- main ------------------------------------------------------------------------------

async function main() {
  const childAt = process.argv.indexOf('--w2-child');
  if (childAt >= 0) {
    const [sys, n, prio] = process.argv.slice(childAt + 1);
    const r = await w2Child(sys, Number(n), prio === '1');
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const env = environment();
  console.log('# bmad-background-executor benchmark');
  console.log(
    `node ${env.node} (V8 ${env.v8}), ${env.platform}, ${env.cpu} x${env.cores}, ${env.totalMemGb} GB; ` +
      `loadavg ${env.loadavgAtStart.join(' ')}; git ${env.gitHead}${env.gitDirty ? ' (dirty)' : ''}, ` +
      `lib/ ${env.executorJsSha256}, addon ${env.nativeAddonSha256}; p-queue ${env.pQueueVersion}, fastq ${env.fastqVersion}`,
  );
  if (env.loadavgAtStart[0] > 0.5 * env.cores) console.log(`  warning: the machine is busy (loadavg ${env.loadavgAtStart[0]}); timings will be noisy`);
  console.log(`systems: ${OPT.systems.map((s) => LABEL[s]).join(', ')}; agent: async (task, opts) => opts.i; concurrency ${CONCURRENCY}`);
  const started = performance.now();
  const res = { env, options: OPT };
  if (OPT.only.includes('w1')) res.w1 = await w1();
  if (OPT.only.includes('w2')) res.w2 = await w2();
  if (OPT.only.includes('w3')) res.w3 = await w3();
  if (OPT.only.includes('w4')) res.w4 = await w4();
  if (OPT.only.includes('w5')) res.w5 = w5();
  if (OPT.only.includes('w6')) res.w6 = w6();
  if (OPT.only.includes('w7')) res.w7 = w7();
  res.goals = goals(res);
  res.env.loadavgAtEnd = os.loadavg().map((x) => +x.toFixed(2));
  const end = codeHashes();
  res.env.codeChangedDuringRun = end.executorJs !== env.executorJsSha256 || end.addon !== env.nativeAddonSha256;
  // In-process workloads use the code loaded at start; a W2 child loads the files anew, which
  // matters only for this package's own child.
  const w2This = res.w2?.systems.this?.code;
  res.env.w2ThisUsedOtherCode = !!w2This && (w2This.executorJs !== env.executorJsSha256 || w2This.addon !== env.nativeAddonSha256);
  if (res.env.w2ThisUsedOtherCode) {
    console.log('\nWARNING: lib/ or the addon changed before the W2 child of this package ran: W2 measured other code.');
  } else if (res.env.codeChangedDuringRun) {
    console.log('\nnote: lib/ or the addon changed on disk after this package was measured; all results are for the hashes above.');
  }
  res.env.wallSeconds = +((performance.now() - started) / 1000).toFixed(1);
  console.log(`\ntotal ${res.env.wallSeconds} s; loadavg at end ${res.env.loadavgAtEnd.join(' ')}`);
  if (OPT.json) {
    const file = path.resolve(OPT.json);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify(res, null, 2)}\n`);
    console.log(`wrote ${path.relative(process.cwd(), file) || file}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

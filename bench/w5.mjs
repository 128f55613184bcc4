// W5 per-agent limits: 5 agents each limited to 4 concurrent executions, plus a global
// sliding-window rate limit, against p-queue (one queue per agent) and against the same
// executor without limits (W1's pattern over 5 agents).
//
//   this        BackgroundExecutor({ maxConcurrentAgents: 20, throttleIfExceeded: false,
//               rateLimit: { max: 1_000_000, intervalMs: 1000 } }); 5 agents, each
//               registerAgent(name, fn, { concurrency: 4 })
//   agentOnly   the same, without the global rate limit (the agent lanes alone)
//   rateOnly    the same, without the agents' limits (the global rate limit alone)
//   nolimits    maxConcurrentAgents 20, the 5 agents without limits: the W1-like reference
//   pqueue      one PQueue per agent { concurrency: 4, intervalCap: 200_000, interval: 1000,
//               strict: true } (strict = a sliding window, as this package's); p-queue has no
//               limit shared by several queues, so the global rate is split evenly per agent
//   pqueueFixed the same with p-queue's default fixed windows (strict: false)
//
// The rate limit (1M starts per second, MAX_RATE, the largest accepted) is present but never
// reached: a run of 100k takes >= 0.1 s, so no window holds more than 100k starts. What W5
// measures is the cost of the bookkeeping — every start is recorded in the global window and
// checked against it, and counted against its agent's lane, which blocks at 4 running and is
// unblocked when one of them settles — not time spent waiting. Each run checks that
// getStats().limits.rateLimited is 0 (no start waited for the rate limit).
//
// Every system runs the agent `async (task, opts) => opts.i` with `opts = { i, priority }`
// and W1's 5 priorities (priority i % 5); execution i goes to agent (i + floor(i / 5)) % 5,
// so consecutive submissions go to different agents and each agent gets 1/5 of every
// priority. N executions are submitted in one loop, then awaited (Promise.all); µs per
// execution is the median over the measured runs, each on a fresh instance, with gc() before
// it; warm-up runs (excluded) first; the order of the systems rotates every round. Before
// the timed runs, a short check with an agent that stays busy for one event-loop turn
// records the peak number of running executions per agent and in total (expected 4 and 20,
// or up to 20 per agent for nolimits).
//
// Usage
//   node --expose-gc bench/w5.mjs [--n 100000] [--runs 5] [--quick] [--json out.json]
//   (npm run bench runs it in a child process; `npm run bench -- --only w5` runs only it)
// Options
//   --n N                executions per run (default 100000)
//   --runs K             measured runs per system (default 7; --quick 3)
//   --warmup-execs N     warm-up executions per system (default 200000; --quick 100000)
//   --systems a,b        subset of: this,agentOnly,rateOnly,nolimits,pqueue,pqueueFixed
//   --rate MAX/MS        the global rate limit (default 1000000/1000)
//   --json FILE          write the results as JSON

import { performance, PerformanceObserver } from 'node:perf_hooks';
import { readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { exitWhenDone, loadavg, machine, table, writeJson } from './lib/report.mjs';
import BackgroundExecutor from '../index.mjs';
import PQueue from 'p-queue';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const AGENTS = ['w5a', 'w5b', 'w5c', 'w5d', 'w5e'];
const PER_AGENT = 4;
const TOTAL = AGENTS.length * PER_AGENT; // 20
const LEVEL_NAMES = ['critical', 'high', 'medium', 'low', 'background'];
const LEVEL_NUMBERS = [5, 4, 3, 2, 1]; // the same levels as p-queue priorities
const TASK = 'task';
const agent = async (task, opts) => opts.i;

const SYSTEMS = ['this', 'agentOnly', 'rateOnly', 'nolimits', 'pqueue', 'pqueueFixed'];
const LABEL = {
  this: 'this (W5: agents 4 + rate)',
  agentOnly: 'this, agent limits only',
  rateOnly: 'this, rate limit only',
  nolimits: 'this, no limits',
  pqueue: 'p-queue ×5 (strict)',
  pqueueFixed: 'p-queue ×5 (fixed windows)',
};

function argValue(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const num = (name, fallback) => Number(String(argValue(name, fallback)).replace(/_/g, ''));
const QUICK = process.argv.includes('--quick');
const [rateMax, rateMs] = String(argValue('rate', '1000000/1000'))
  .split('/')
  .map((x) => Number(x.replace(/_/g, '')));
const OPT = {
  quick: QUICK,
  n: num('n', 100_000),
  runs: num('runs', QUICK ? 3 : 7),
  warmupExecs: num('warmup-execs', QUICK ? 100_000 : 200_000),
  systems: argValue('systems', SYSTEMS.join(','))
    .split(',')
    .filter((s) => SYSTEMS.includes(s)),
  rate: { max: rateMax, intervalMs: rateMs },
  json: argValue('json', null),
};
/** p-queue has no limit shared between queues: each agent's queue gets 1/5 of the rate. */
const PQ_INTERVAL_CAP = Math.max(1, Math.floor(OPT.rate.max / AGENTS.length));

// ----- helpers ---------------------------------------------------------------------------

if (typeof globalThis.gc !== 'function') {
  console.error('w5: run with --expose-gc (npm run bench does); results would include stray GC.');
  process.exit(2);
}
const gc = () => {
  globalThis.gc();
  globalThis.gc();
};
const tick = () => new Promise((resolve) => setImmediate(resolve));
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
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function slots(n) {
  const a = [];
  for (let i = 0; i < n; i++) a.push(null);
  return a;
}
const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
const fmtN = (n) => n.toLocaleString('en-US');
function check(results, n) {
  if (results.length !== n || results[0] !== 0 || results[n - 1] !== n - 1 || results[n >> 1] !== n >> 1) {
    throw new Error(`wrong results (length ${results.length})`);
  }
}
/** The agent of execution i: consecutive submissions go to different agents. */
const agentIndex = (i) => (i + ((i / 5) | 0)) % 5;

// ----- the systems -----------------------------------------------------------------------

function thisSystem({ agentLimits, rate }) {
  return {
    create(fn = agent) {
      const config = { maxConcurrentAgents: TOTAL, throttleIfExceeded: false };
      if (rate) config.rateLimit = { ...OPT.rate };
      const bg = new BackgroundExecutor(config);
      for (const name of AGENTS) {
        if (agentLimits) bg.registerAgent(name, fn, { concurrency: PER_AGENT });
        else bg.registerAgent(name, fn);
      }
      return bg;
    },
    submitAll(bg, ps, n) {
      for (let i = 0; i < n; i++) ps[i] = bg.execute(AGENTS[agentIndex(i)], TASK, { i, priority: LEVEL_NAMES[i % 5] });
    },
    after(bg) {
      return bg.getStats().limits;
    },
    close: (bg) => bg.shutdown(),
  };
}

function pqueueSystem(strict) {
  return {
    create(fn = agent) {
      const qs = AGENTS.map(() => new PQueue({ concurrency: PER_AGENT, intervalCap: PQ_INTERVAL_CAP, interval: OPT.rate.intervalMs, strict }));
      qs.fn = fn;
      return qs;
    },
    submitAll(qs, ps, n) {
      const fn = qs.fn;
      for (let i = 0; i < n; i++) {
        const opts = { i, priority: LEVEL_NAMES[i % 5] };
        ps[i] = qs[agentIndex(i)].add(() => fn(TASK, opts), { priority: LEVEL_NUMBERS[i % 5] });
      }
    },
    after: () => null,
    close(qs) {
      for (const q of qs) q.clear();
    },
  };
}

const impl = {
  this: thisSystem({ agentLimits: true, rate: true }),
  agentOnly: thisSystem({ agentLimits: true, rate: false }),
  rateOnly: thisSystem({ agentLimits: false, rate: true }),
  nolimits: thisSystem({ agentLimits: false, rate: false }),
  pqueue: pqueueSystem(true),
  pqueueFixed: pqueueSystem(false),
};

// ----- the limits check (untimed) --------------------------------------------------------

/** Peak running executions per agent and in total, with agents busy for one loop turn. */
async function peaks(sys, n = 2000) {
  const running = new Array(AGENTS.length).fill(0);
  const peak = new Array(AGENTS.length).fill(0);
  let total = 0;
  let peakTotal = 0;
  const busy = async (task, opts) => {
    const a = agentIndex(opts.i);
    running[a]++;
    total++;
    if (running[a] > peak[a]) peak[a] = running[a];
    if (total > peakTotal) peakTotal = total;
    await tick();
    running[a]--;
    total--;
    return opts.i;
  };
  const I = impl[sys];
  const inst = I.create(busy);
  const ps = slots(n);
  I.submitAll(inst, ps, n);
  check(await Promise.all(ps), n);
  await I.close(inst);
  return { perAgent: Math.max(...peak), total: peakTotal };
}

// ----- runs ------------------------------------------------------------------------------

async function run(sys, n) {
  const I = impl[sys];
  const inst = I.create();
  const ps = slots(n);
  gc();
  const t0 = performance.now();
  I.submitAll(inst, ps, n);
  const t1 = performance.now();
  const results = await Promise.all(ps);
  const t2 = performance.now();
  const gcMs = await gcPauseMs(t0, t2);
  check(results, n);
  const limits = I.after(inst);
  await I.close(inst);
  return { ms: t2 - t0, submitMs: t1 - t0, gcMs, limits };
}

async function measure() {
  const n = OPT.n;
  const systems = OPT.systems;
  const out = { n, runs: OPT.runs, rate: OPT.rate, pqueueIntervalCap: PQ_INTERVAL_CAP, systems: {} };
  out.peaks = {};
  for (const s of systems) out.peaks[s] = await peaks(s);
  const wn = Math.min(n, 100_000);
  const warmRuns = Math.max(1, Math.ceil(OPT.warmupExecs / wn));
  for (let w = 0; w < warmRuns; w++) for (const s of systems) await run(s, wn);
  const rec = {};
  for (const s of systems) rec[s] = { runsMs: [], submitMs: [], gcMs: [], rateLimited: 0, limitDeferred: [] };
  for (let r = 0; r < OPT.runs; r++) {
    const order = systems.map((_, k) => systems[(k + r) % systems.length]);
    for (const s of order) {
      const res = await run(s, n);
      rec[s].runsMs.push(res.ms);
      rec[s].submitMs.push(res.submitMs);
      rec[s].gcMs.push(res.gcMs);
      if (res.limits) {
        rec[s].rateLimited += res.limits.rateLimited;
        rec[s].limitDeferred.push(res.limits.limitDeferred);
      }
    }
    process.stderr.write(`  W5 N=${fmtN(n)} round ${r + 1}/${OPT.runs} done\n`);
  }
  for (const s of systems) {
    const x = rec[s];
    x.medianMs = median(x.runsMs);
    x.usPerExec = (x.medianMs * 1000) / n;
    x.minUs = (Math.min(...x.runsMs) * 1000) / n;
    x.maxUs = (Math.max(...x.runsMs) * 1000) / n;
    x.submitUsPerExec = (median(x.submitMs) * 1000) / n;
    x.gcUsPerExec = (median(x.gcMs) * 1000) / n;
    out.systems[s] = x;
  }
  // Paired: the ratio of two systems within each round (adjacent in time), then the median;
  // steadier than the ratio of the medians when the machine's load drifts.
  const paired = (a, b) => (rec[a] && rec[b] ? median(rec[a].runsMs.map((x, k) => x / rec[b].runsMs[k])) : NaN);
  out.pairedRatios = {
    thisOverPqueue: paired('this', 'pqueue'),
    thisOverNolimits: paired('this', 'nolimits'),
    agentOnlyOverNolimits: paired('agentOnly', 'nolimits'),
    rateOnlyOverNolimits: paired('rateOnly', 'nolimits'),
  };
  const us = (s) => out.systems[s]?.usPerExec;
  out.ratios = {
    thisOverPqueue: us('this') / us('pqueue'),
    thisOverPqueueFixed: us('this') / us('pqueueFixed'),
    thisOverNolimits: us('this') / us('nolimits'),
    agentOnlyOverNolimits: us('agentOnly') / us('nolimits'),
    rateOnlyOverNolimits: us('rateOnly') / us('nolimits'),
  };
  return out;
}

// ----- report ----------------------------------------------------------------------------

function goals(res) {
  const g = [];
  const add = (name, value) => g.push({ name, value, target: '(reported)', pass: true, detail: '' });
  const r = res.ratios;
  if (!Number.isNaN(r.thisOverPqueue)) add(`W5 this/p-queue (strict) @${fmtN(res.n)}`, fmt(r.thisOverPqueue));
  if (!Number.isNaN(r.thisOverNolimits)) add(`W5 this/no limits @${fmtN(res.n)}`, fmt(r.thisOverNolimits));
  return g;
}

function report(res) {
  const rows = OPT.systems.map((s) => {
    const x = res.systems[s];
    const p = res.peaks[s];
    return [
      LABEL[s],
      `${fmt(x.usPerExec)} [${fmt(x.minUs)}–${fmt(x.maxUs)}]`,
      fmt(x.submitUsPerExec),
      fmt(x.gcUsPerExec),
      res.systems.this ? fmt(res.systems.this.usPerExec / x.usPerExec) : '—',
      `${p.perAgent} / ${p.total}`,
    ];
  });
  console.log(table(['system', 'µs/exec [min–max]', 'submit µs', 'GC µs', 'W5 this ÷ it', 'peak running agent / total'], rows));
  const t = res.systems.this;
  if (t) {
    console.log(
      `  this: starts that waited for the rate limit ${fmtN(t.rateLimited)} (over all runs: the limit never held one back); ` +
        `for their agent's limit ${fmtN(median(t.limitDeferred))} per run (median)`,
    );
  }
  const r = res.ratios;
  console.log(
    `  ratios: this/p-queue strict ${fmt(r.thisOverPqueue)}, this/p-queue fixed ${fmt(r.thisOverPqueueFixed)}, ` +
      `this/no limits ${fmt(r.thisOverNolimits)} (agent limits only ${fmt(r.agentOnlyOverNolimits)}, rate limit only ${fmt(r.rateOnlyOverNolimits)})`,
  );
  const pr = res.pairedRatios;
  console.log(
    `  paired (median of per-round ratios): this/p-queue strict ${fmt(pr.thisOverPqueue)}, this/no limits ${fmt(pr.thisOverNolimits)} ` +
      `(agent limits only ${fmt(pr.agentOnlyOverNolimits)}, rate limit only ${fmt(pr.rateOnlyOverNolimits)})`,
  );
}

/** The built addon this run loads (others may rebuild it between runs). */
function addonHash() {
  const file = readdirSync(ROOT).find((f) => f.endsWith('.node'));
  return file ? createHash('sha256').update(readFileSync(path.join(ROOT, file))).digest('hex').slice(0, 16) : null;
}

async function main() {
  const pq = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', 'p-queue', 'package.json'), 'utf8')).version;
  console.log(
    `\n## W5 limits — ${fmtN(OPT.n)} executions over ${AGENTS.length} agents (each limited to ${PER_AGENT}), 5 priorities, ` +
      `global rate ${fmtN(OPT.rate.max)} per ${fmtN(OPT.rate.intervalMs)} ms; ${OPT.runs} runs; p-queue ${pq} ` +
      `(per queue: concurrency ${PER_AGENT}, intervalCap ${fmtN(PQ_INTERVAL_CAP)}, interval ${OPT.rate.intervalMs})`,
  );
  const res = {
    env: {
      ...machine(),
      pQueueVersion: pq,
      addonSha256: addonHash(),
    },
    options: OPT,
    ...(await measure()),
  };
  res.goals = goals(res);
  res.env.loadavgAtEnd = loadavg();
  res.env.addonChangedDuringRun = addonHash() !== res.env.addonSha256;
  report(res);
  console.log(`  addon ${res.env.addonSha256}${res.env.addonChangedDuringRun ? ' (CHANGED on disk during the run: results are for the one loaded at start)' : ''}; loadavg ${res.env.loadavgAtStart[0]} → ${res.env.loadavgAtEnd[0]}`);
  if (OPT.json) writeJson(OPT.json, res);
}

// p-queue's interval timers must not keep the benchmark alive.
exitWhenDone(main());

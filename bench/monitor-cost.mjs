// What the resource monitor's sampling costs in CPU time (goal: < 0.5 % of one
// core at the default 1 s interval).
//
// Each configuration runs in its own child process that loads the addon, creates a
// ResourceMonitor and (except the baseline) starts it, then idles for SECONDS. CPU time is
// read from process.cpuUsage() (getrusage: every thread, the tokio sampler included) and
// from /proc/self/stat utime+stime (Linux; clock ticks), plus a per-thread breakdown from
// /proc/self/task/*/stat. The monitor's cost = run - baseline, as percent of one core.
// A direct measurement of one sample (check(), on the calling thread) is printed too.
//
//   node bench/monitor-cost.mjs            # 10 s per configuration
//   node bench/monitor-cost.mjs --seconds 5 --intervals 1000,100,10

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import os from 'node:os';

const SELF = fileURLToPath(import.meta.url);
const INDEX = fileURLToPath(new URL('../index.mjs', import.meta.url));

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

/** utime + stime in ms from a /proc/.../stat line (fields 14 and 15). */
function statCpuMs(path) {
  const s = readFileSync(path, 'utf8');
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime is field 14 -> rest[11], stime field 15 -> rest[12].
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
}

function threadTimes() {
  const out = {};
  if (!existsSync('/proc/self/task')) return out;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const comm = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const name = tid === String(process.pid) ? 'main (JS)' : comm;
      out[name] = (out[name] || 0) + statCpuMs(`/proc/self/task/${tid}/stat`);
    } catch {}
  }
  return out;
}

function snapshot() {
  const u = process.cpuUsage();
  return {
    wall: performance.now(),
    rusage: (u.user + u.system) / 1000,
    proc: existsSync('/proc/self/stat') ? statCpuMs('/proc/self/stat') : NaN,
    threads: threadTimes(),
  };
}

// ----- child: one configuration --------------------------------------------------------------

async function child(interval, seconds) {
  const { ResourceMonitor } = await import(INDEX);
  const m = new ResourceMonitor({ interval: interval > 0 ? interval : 1000 });
  m.check(); // the sampler exists in every configuration (its setup is not the steady cost)
  let samples = 0;
  if (interval > 0) {
    m.on('sample', () => samples++);
    m.start();
  }
  // Warm up: one second (or a couple of intervals) before measuring.
  await new Promise((r) => setTimeout(r, Math.max(1000, 2 * interval)));
  const before = snapshot();
  const samplesBefore = samples;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = snapshot();
  const measuredSamples = samples - samplesBefore;
  m.stop();
  // One sample, timed directly on this thread.
  const n = 50;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) m.check();
  const c1 = process.cpuUsage(c0);
  const perSampleWall = (performance.now() - t0) / n;
  const perSampleCpu = (c1.user + c1.system) / 1000 / n;
  const threads = {};
  for (const [k, v] of Object.entries(after.threads)) threads[k] = v - (before.threads[k] || 0);
  process.stdout.write(
    JSON.stringify({
      interval,
      wallMs: after.wall - before.wall,
      rusageMs: after.rusage - before.rusage,
      procMs: after.proc - before.proc,
      samples: measuredSamples,
      threads,
      perSampleWall,
      perSampleCpu,
    }),
  );
}

// ----- parent -----------------------------------------------------------------------------------

function run(interval, seconds) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [SELF, '--child', String(interval), '--seconds', String(seconds)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child ${interval} exited ${code}`))));
  });
}

const pct = (ms, wall) => (100 * ms) / wall;
const f = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

async function main() {
  const seconds = Number(arg('seconds', '10'));
  const intervals = arg('intervals', '1000,100')
    .split(',')
    .map(Number)
    .filter((x) => x > 0);
  const procs = existsSync('/proc') ? readdirSync('/proc').filter((d) => /^\d+$/.test(d)).length : NaN;
  console.log(
    `monitor cost: ${seconds} s per configuration; ${os.cpus().length} CPUs, ${procs} processes on the machine ` +
      `(on Linux only this process tree is refreshed each sample), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; node ${process.version}`,
  );
  const base = await run(0, seconds);
  const rows = [base];
  for (const iv of intervals) rows.push(await run(iv, seconds));
  const baseR = pct(base.rusageMs, base.wallMs);
  const baseP = pct(base.procMs, base.wallMs);
  console.log('');
  console.log('config        samples  cpuUsage %core  /proc %core  monitor cost (cpuUsage / /proc)  per sample');
  for (const r of rows) {
    const name = r.interval === 0 ? 'no monitor' : `${r.interval} ms`;
    const rp = pct(r.rusageMs, r.wallMs);
    const pp = pct(r.procMs, r.wallMs);
    const cost = r.interval === 0 ? '-' : `${f(rp - baseR)} % / ${f(pp - baseP)} %`;
    const per = r.samples > 0 ? `${f((r.rusageMs - (base.rusageMs * r.wallMs) / base.wallMs) / r.samples, 2)} ms` : '-';
    console.log(
      `${name.padEnd(13)} ${String(r.samples).padStart(7)}  ${f(rp).padStart(14)}  ${f(pp).padStart(11)}  ${cost.padStart(31)}  ${per.padStart(10)}`,
    );
  }
  console.log('');
  console.log('CPU ms by thread over the measured window:');
  for (const r of rows) {
    const name = r.interval === 0 ? 'no monitor' : `${r.interval} ms`;
    const parts = Object.entries(r.threads)
      .filter(([, v]) => v > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v.toFixed(0)}`);
    console.log(`  ${name.padEnd(11)} ${parts.join(', ') || '(all zero)'}`);
  }
  console.log('');
  console.log(
    `one sample via check() (all of it on the calling thread): ${f(base.perSampleWall, 2)} ms wall, ${f(base.perSampleCpu, 2)} ms CPU` +
      ` -> at 1 s: ${f(base.perSampleCpu / 10, 3)} % of one core, at 100 ms: ${f(base.perSampleCpu, 2)} %`,
  );
  const at1s = rows.find((r) => r.interval === 1000);
  if (at1s) {
    const cost = pct(at1s.rusageMs, at1s.wallMs) - baseR;
    console.log(`goal (< 0.5 % of one core at 1 s): ${cost < 0.5 ? 'met' : 'NOT met'} (${f(cost)} %)`);
  }
}

if (process.argv.includes('--child')) {
  child(Number(arg('child', '0')), Number(arg('seconds', '10'))).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

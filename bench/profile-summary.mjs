// Summarises a V8 .cpuprofile (from `node --cpu-prof`) by self time: the top functions, and
// totals per origin (this package's JS, its native addon calls, node internals, peers, GC...).
//
//   node --expose-gc --cpu-prof --cpu-prof-dir=bench/profiles bench/bench.mjs \
//        --only w1 --systems this --sizes 100000 --runs 5
//   node bench/profile-summary.mjs bench/profiles/<file>.cpuprofile [--top 30]
//
// Time in a native (napi) method is attributed by V8 to a frame named after the method with
// no script URL, so `sync`, `counts`, ... show up as "(native) sync".

import { readFileSync } from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const file = args.find((a) => a.endsWith('.cpuprofile'));
if (!file) {
  console.error('usage: node bench/profile-summary.mjs FILE.cpuprofile [--top N]');
  process.exit(2);
}
const topAt = args.indexOf('--top');
const TOP = topAt >= 0 ? Number(args[topAt + 1]) : 30;

const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));

// Self time per node from the sample stream (timeDeltas[i] is the time before sample i).
const self = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const dt = prof.timeDeltas[i + 1] ?? 0; // the time until the next sample belongs to this one
  self.set(prof.samples[i], (self.get(prof.samples[i]) || 0) + dt);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function origin(cf) {
  const url = cf.url || '';
  if (!url) {
    if (cf.functionName.startsWith('(')) return cf.functionName; // (garbage collector), (program), (idle)
    return 'native / V8 builtin';
  }
  if (url.includes('/node_modules/p-queue/') || url.includes('/node_modules/eventemitter3/')) return 'p-queue';
  if (url.includes('/node_modules/fastq/') || url.includes('/node_modules/reusify/')) return 'fastq';
  if (url.includes('/bench/')) return 'bench harness';
  if (url.startsWith('node:')) return 'node internals';
  if (url.includes('/lib/') || url.endsWith('/index.js') || url.endsWith('/index.mjs') || url.endsWith('/binding.js')) return 'this package (JS)';
  return 'other JS';
}
function label(cf) {
  const name = cf.functionName || '(anonymous)';
  if (!cf.url) return name.startsWith('(') ? name : `(native) ${name}`;
  return `${name}  ${path.basename(cf.url)}:${cf.lineNumber + 1}`;
}

const perFn = new Map();
const perOrigin = new Map();
for (const [id, t] of self) {
  const cf = byId.get(id).callFrame;
  const key = label(cf);
  const o = origin(cf);
  const e = perFn.get(key) || { t: 0, origin: o };
  e.t += t;
  perFn.set(key, e);
  perOrigin.set(o, (perOrigin.get(o) || 0) + t);
}

const pct = (t) => ((100 * t) / total).toFixed(1).padStart(5);
const ms = (t) => (t / 1000).toFixed(0).padStart(7);
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${prof.samples.length} samples`);
console.log('\nself time by origin');
for (const [o, t] of [...perOrigin].sort((a, b) => b[1] - a[1])) console.log(`${pct(t)} %  ${ms(t)} ms  ${o}`);
console.log(`\ntop ${TOP} functions by self time`);
for (const [k, e] of [...perFn].sort((a, b) => b[1].t - a[1].t).slice(0, TOP)) {
  console.log(`${pct(e.t)} %  ${ms(e.t)} ms  ${k}   [${e.origin}]`);
}

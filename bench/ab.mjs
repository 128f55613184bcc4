// In-process A/B of two builds of this package on W1's pattern (5 interleaved priorities,
// concurrency 64, N submitted then awaited). The machine is shared and noisy: timings of
// separate invocations minutes apart differ by ±20 %, so a change is judged by the median
// of paired ratios B/A from runs alternated in one process.
//
//   git worktree add /tmp/base <commit> && (cd /tmp/base && ln -s "$PWD/../<repo>/node_modules" . && npm run build)
//   node --expose-gc bench/ab.mjs /tmp/base . [N] [ROUNDS] [--als]
//
// With --als, every run submits inside an AsyncLocalStorage's run() (a context to carry).
//
// A and B are package directories (each with its built .node); both load in one process.

import { createRequire } from 'node:module';
import { AsyncLocalStorage } from 'node:async_hooks';
import path from 'node:path';

const args = process.argv.slice(2).filter((a) => a !== '--als');
const als = process.argv.includes('--als') ? new AsyncLocalStorage() : null;
const [dirA, dirB, nArg, rArg] = args;
if (!dirA || !dirB || typeof globalThis.gc !== 'function') {
  console.error('usage: node --expose-gc bench/ab.mjs DIR_A DIR_B [N=1000000] [ROUNDS=7]');
  process.exit(2);
}
const N = Number(nArg || 1_000_000);
const ROUNDS = Number(rArg || 7);
const require = createRequire(import.meta.url);
const A = require(path.resolve(dirA, 'index.js'));
const B = require(path.resolve(dirB, 'index.js'));
const LEVELS = ['critical', 'high', 'medium', 'low', 'background'];
const tick = () => new Promise((resolve) => setImmediate(resolve));

async function run(Executor, n) {
  const bg = new Executor({ maxConcurrentAgents: 64 });
  bg.registerAgent('echo', async (task, opts) => opts.i);
  const ps = new Array(n).fill(null);
  globalThis.gc();
  await tick();
  const t0 = performance.now();
  const submit = () => {
    for (let i = 0; i < n; i++) ps[i] = bg.execute('echo', 'task', { i, priority: LEVELS[i % 5] });
  };
  if (als === null) submit();
  else als.run({ run: n }, submit);
  const results = await Promise.all(ps);
  const us = ((performance.now() - t0) * 1000) / n;
  if (results[n - 1] !== n - 1) throw new Error('wrong results');
  await bg.shutdown();
  return us;
}

const median = (xs) => {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

for (let w = 0; w < 3; w++) {
  await run(A, 100_000);
  await run(B, 100_000);
}
const a = [];
const b = [];
const ratios = [];
for (let k = 0; k < ROUNDS; k++) {
  // Alternate which build goes first.
  let x;
  let y;
  if (k % 2 === 0) {
    x = await run(A, N);
    y = await run(B, N);
  } else {
    y = await run(B, N);
    x = await run(A, N);
  }
  a.push(x);
  b.push(y);
  ratios.push(y / x);
}
console.log(
  `N=${N.toLocaleString('en-US')}: A ${median(a).toFixed(2)} µs/exec, B ${median(b).toFixed(2)} µs/exec; ` +
    `B/A median of ${ROUNDS} paired runs ${median(ratios).toFixed(3)} [${ratios.map((r) => r.toFixed(2)).join(' ')}]`,
);

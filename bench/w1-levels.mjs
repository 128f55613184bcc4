// What W1's priority levels cost alone: N execute() calls on one executor (W1's agent and
// concurrency), with W1's five interleaved priorities against one priority for all.
// Alternated runs after warm-up; medians of µs per execution.
//
//   node --expose-gc bench/w1-levels.mjs [N] [RUNS]     (defaults 100000, 7)

import { BackgroundExecutor } from '../index.mjs';

const N = Number(process.argv[2] ?? 100_000);
const RUNS = Number(process.argv[3] ?? 7);
const LEVELS = ['critical', 'high', 'medium', 'low', 'background'];
const agent = async (task, opts) => opts.i;
if (typeof globalThis.gc !== 'function') {
  console.error('run with --expose-gc');
  process.exit(2);
}

async function run(mixed) {
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 64, throttleIfExceeded: false });
  bg.registerAgent('a', agent);
  const ps = new Array(N);
  globalThis.gc();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) ps[i] = bg.execute('a', 't', { i, priority: mixed ? LEVELS[i % 5] : 'medium' });
  await Promise.all(ps);
  const us = ((performance.now() - t0) * 1000) / N;
  await bg.shutdown();
  return us;
}

const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (let w = 0; w < 3; w++) {
  await run(true);
  await run(false);
}
const mixed = [];
const one = [];
for (let k = 0; k < RUNS; k++) {
  mixed.push(await run(true));
  one.push(await run(false));
}
console.log(`N=${N}, ${RUNS} runs: five levels ${median(mixed).toFixed(2)} µs/execution, one level ${median(one).toFixed(2)} (ratio ${(median(mixed) / median(one)).toFixed(2)})`);

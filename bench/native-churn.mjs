// Native churn check (docs/memory-safety.md): RSS left behind per ResourceMonitor
// start()/stop() cycle and per executor lifecycle, measured after gc(). Not part of npm test.
//
//   node --expose-gc bench/native-churn.mjs [--cycles 100000] [--executors 5000]
//
// monitor cycles  `m.start(); m.stop()` on one ResourceMonitor. Each cycle should leave ~0 B.
// executors       `new BackgroundExecutor()`, registerAgent, initialize(), one execute(),
//                 shutdown(), dropped. The figure is RSS, so it includes memory that glibc's
//                 malloc keeps after free (see the doc): compare it before/after a change,
//                 do not read it as live objects.

import BackgroundExecutor, { ResourceMonitor } from '../index.mjs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}
const CYCLES = arg('cycles', 100_000);
const EXECUTORS = arg('executors', 5000);

if (typeof globalThis.gc !== 'function') {
  console.error('Run with --expose-gc');
  process.exit(2);
}

async function rss() {
  for (let i = 0; i < 5; i++) {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().rss;
}
const kib = (b) => (b / 1024).toFixed(1);

// ----- ResourceMonitor start/stop ----------------------------------------------------------
{
  const m = new ResourceMonitor({ interval: 1000 });
  for (let i = 0; i < 1000; i++) {
    m.start();
    m.stop();
  }
  const before = await rss();
  for (let i = 0; i < CYCLES; i++) {
    m.start();
    m.stop();
  }
  const after = await rss();
  console.log(
    `monitor start/stop x${CYCLES}: RSS ${kib(before)} -> ${kib(after)} KiB, ${((after - before) / CYCLES).toFixed(1)} B per cycle`,
  );
}

// ----- executor lifecycles -----------------------------------------------------------------
{
  const one = async () => {
    const bg = new BackgroundExecutor();
    bg.registerAgent('a', async () => 1);
    await bg.initialize();
    await bg.execute('a', 't');
    await bg.shutdown();
  };
  for (let i = 0; i < 500; i++) await one();
  const before = await rss();
  for (let i = 0; i < EXECUTORS; i++) await one();
  const after = await rss();
  console.log(
    `executor lifecycles x${EXECUTORS}: RSS ${kib(before)} -> ${kib(after)} KiB, ${((after - before) / EXECUTORS / 1024).toFixed(1)} KiB per executor`,
  );
}

// Command agents against a JS agent that uses child_process, in one process run.
//
//   node bench/commands.mjs [--n 200] [--rounds 5] [--heap-mb 0]
//
// Both run the same program N times through the same executor settings (maxConcurrentAgents 8):
//   command     bg.registerCommand('t', { command: 'true' })
//   execFile    bg.registerAgent('t', () => execFile('true'))   (node:child_process, promisified)
// Reported per system, medians over rounds (order alternating): wall ms for N executions, and
// the JS-thread time spent in the spawn call itself (command: NativeCommands.spawn, timed by
// wrapping it; execFile: the synchronous part of execFile()). --heap-mb holds that many MB of
// resident memory in this process first, to show how spawn cost depends on the parent's size.
import { execFile as execFileCb } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import BackgroundExecutor from '../index.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const N = arg('n', 200);
const ROUNDS = arg('rounds', 5);
const HEAP_MB = arg('heap-mb', 0);
const held = HEAP_MB > 0 ? Buffer.alloc(HEAP_MB * 1024 * 1024, 1) : null;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function runCommand() {
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 8, throttleIfExceeded: false });
  bg.registerCommand('t', { command: 'true' });
  const native = bg._commands._nativeOf();
  const spawn = native.spawn.bind(native);
  let spawnMs = 0;
  native.spawn = (spec) => {
    const t = performance.now();
    const r = spawn(spec);
    spawnMs += performance.now() - t;
    return r;
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: N }, () => bg.execute('t', '')));
  const wall = performance.now() - t0;
  await bg.shutdown();
  return { wall, spawnMs: spawnMs / N };
}

async function runExecFile() {
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 8, throttleIfExceeded: false });
  let spawnMs = 0;
  bg.registerAgent('t', () => {
    const t = performance.now();
    const p = new Promise((resolve, reject) => {
      execFileCb('true', (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr })));
    });
    spawnMs += performance.now() - t;
    return p;
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: N }, () => bg.execute('t', '')));
  const wall = performance.now() - t0;
  await bg.shutdown();
  return { wall, spawnMs: spawnMs / N };
}

const results = { command: [], execFile: [] };
await runCommand(); // warm-up
await runExecFile();
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 ? [['execFile', runExecFile], ['command', runCommand]] : [['command', runCommand], ['execFile', runExecFile]];
  for (const [name, fn] of order) results[name].push(await fn());
}
const rss = Math.round(process.memoryUsage().rss / 1048576);
console.log(`Node ${process.version}, N = ${N} executions of \`true\`, concurrency 8, ${ROUNDS} rounds, RSS ${rss} MB${held ? ` (${HEAP_MB} MB held)` : ''}`);
console.log('system     wall ms (median)   µs/execution   JS-thread spawn call ms (median of means)');
for (const [name, runs] of Object.entries(results)) {
  const wall = median(runs.map((x) => x.wall));
  const spawn = median(runs.map((x) => x.spawnMs));
  console.log(`${name.padEnd(10)} ${wall.toFixed(1).padStart(15)}   ${((wall * 1000) / N).toFixed(0).padStart(12)}   ${spawn.toFixed(3).padStart(10)}`);
}
const ratio = median(results.execFile.map((x) => x.wall)) / median(results.command.map((x) => x.wall));
console.log(`execFile wall / command wall: ${ratio.toFixed(2)}`);

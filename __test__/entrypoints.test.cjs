'use strict';
// CommonJS and ESM entry points.
const { test: nodeTest } = require('node:test');
// A hang is a failure, not a stuck run.
const test = (name, fn) => nodeTest(name, { timeout: 20000 }, fn);
// Executors with work keep Node alive by design: if a failed test leaves one behind, end the
// file 3 s after its last test instead of hanging the whole run.
nodeTest.after(() => {
  setTimeout(() => {
    process.stderr.write('work was left behind after the last test; exiting\n');
    process.exit(1);
  }, 3000).unref();
});
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

test('require(): the module itself is the BackgroundExecutor class', async () => {
  const BackgroundExecutor = require('../index.js');
  assert.equal(typeof BackgroundExecutor, 'function');
  assert.equal(BackgroundExecutor.name, 'BackgroundExecutor');
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 2, throttleIfExceeded: false });
  try {
    assert.ok(bg instanceof BackgroundExecutor);
    assert.ok(bg instanceof EventEmitter);
    assert.equal(await bg.initialize(), bg);
    bg.registerAgent('echo', (task) => ({ echoed: task }));
    assert.deepEqual(await bg.execute('echo', 'cjs'), { echoed: 'cjs' });
    assert.equal(bg.getQueueStatus().max_concurrent, 2);
  } finally {
    await bg.shutdown();
  }
});

test('require(): destructuring { BackgroundExecutor, ResourceMonitor } works and names the same class', async () => {
  const mod = require('../index.js');
  const { BackgroundExecutor, ResourceMonitor } = require('../index.js');
  assert.equal(BackgroundExecutor, mod);
  assert.equal(mod.default, mod);
  assert.equal(typeof ResourceMonitor, 'function');
  const bg = new BackgroundExecutor({ throttleIfExceeded: false, agents: { a: () => 1 } });
  try {
    assert.ok(bg.resourceMonitor instanceof ResourceMonitor);
    const { executionId } = await bg.fireAndForget('a', 't');
    assert.equal((await bg.waitFor(executionId)).status, 'completed');
  } finally {
    await bg.shutdown();
  }
});

test('require() by package name (self-reference through "exports") gives the same class', () => {
  const byName = require('bmad-background-executor');
  assert.equal(byName, require('../index.js'));
  assert.equal(byName.BackgroundExecutor, byName);
  assert.equal(typeof byName.ResourceMonitor, 'function');
});

test('ESM and CJS entry points export the very same classes (no dual-package hazard)', async () => {
  const cjs = require('../index.js');
  const esm = await import('../index.mjs');
  assert.equal(esm.default, cjs);
  assert.equal(esm.BackgroundExecutor, cjs);
  assert.equal(esm.ResourceMonitor, cjs.ResourceMonitor);
  const byName = await import('bmad-background-executor');
  assert.equal(byName.default, cjs);
  assert.equal(byName.BackgroundExecutor, cjs);
  assert.equal(byName.ResourceMonitor, cjs.ResourceMonitor);
});

test('ResourceMonitor is usable alone: start/stop/check/getStatus/getTrends and its events', async () => {
  const { ResourceMonitor } = require('../index.js');
  const m = new ResourceMonitor({ interval: 50, cpuThreshold: 100, memoryThreshold: 1 });
  assert.ok(m instanceof EventEmitter);
  const events = [];
  m.on('started', () => events.push('started'));
  m.on('stopped', () => events.push('stopped'));
  const exceeded = [];
  m.on('threshold-exceeded', (d) => exceeded.push(d));
  try {
    m.start();
    await new Promise((r) => setTimeout(r, 300));
    const s = m.getStatus();
    for (const k of ['cpu', 'memory', 'total_memory', 'free_memory', 'process_cpu', 'timestamp']) {
      assert.equal(typeof s[k], 'number', `${k}: ${s[k]}`);
      assert.ok(Number.isFinite(s[k]), k);
    }
    assert.ok(s.cpu >= 0 && s.cpu <= 100, `cpu ${s.cpu}`);
    assert.ok(s.memory > 1, `memory ${s.memory} MB`);
    assert.ok(s.total_memory >= s.free_memory);
    assert.ok('load_average' in s);
    const checked = m.check();
    assert.equal(typeof checked.cpu, 'number');
    const trends = m.getTrends();
    assert.ok(Array.isArray(trends.cpu));
    assert.ok(Array.isArray(trends.memory));
    assert.ok(trends.cpu.length >= 2, `${trends.cpu.length} samples in 300 ms at 50 ms`);
    assert.ok(trends.cpu.length <= 60);
    assert.equal(typeof trends.cpu[0].value, 'number');
    assert.equal(typeof trends.cpu[0].timestamp, 'number');
    assert.ok(exceeded.length >= 1, 'memoryThreshold 1 MB is exceeded');
    assert.ok(exceeded[0].exceeded.includes('memory'));
    assert.equal(typeof exceeded[0].cpu, 'number');
    assert.equal(typeof exceeded[0].memory, 'number');
    assert.equal(typeof exceeded[0].timestamp, 'number');
  } finally {
    m.stop();
  }
  assert.deepEqual(events, ['started', 'stopped']);
});

test('ResourceMonitor: no threshold-exceeded / sample events after stop() returns', async () => {
  const { ResourceMonitor } = require('../index.js');
  const m = new ResourceMonitor({ interval: 1, memoryThreshold: 1 });
  let stopped = false;
  const late = [];
  m.on('threshold-exceeded', () => {
    if (stopped) late.push('threshold-exceeded');
  });
  m.on('stopped', () => {
    if (stopped) late.push('stopped again');
  });
  m.start();
  await new Promise((r) => setTimeout(r, 30));
  // keep the JS thread busy so that samples taken meanwhile wait for delivery
  const t = Date.now();
  while (Date.now() - t < 20);
  m.stop();
  stopped = true;
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(late, [], 'events delivered after stop()');
  assert.equal(m.running, false);
});

test('index.d.ts (package.json "types") exists and types the public names', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.name, 'bmad-background-executor');
  assert.equal(pkg.main, 'index.js');
  const typesFile = path.join(root, pkg.types || 'index.d.ts');
  assert.ok(fs.existsSync(typesFile), `${typesFile} is missing (index.d.ts types every public name)`);
  const dts = fs.readFileSync(typesFile, 'utf8');
  for (const name of ['BackgroundExecutor', 'ResourceMonitor', 'executeMultiple', 'getExecutionStatus', 'shutdown']) {
    assert.ok(dts.includes(name), `index.d.ts does not mention ${name}`);
  }
});

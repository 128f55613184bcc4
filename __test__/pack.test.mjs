// The drop-in check: the package as it is published — the root package (`npm pack`: the loader,
// no binary) and the platform package of this machine (npm/<platform>/ with the built binary,
// as the release's `napi artifacts` fills it) — installed into a fresh project with no network,
// and used from child Node.js processes exactly as a consumer would: an ES module orchestrator
// that runs every example of the guide and a CommonJS script. Without the platform package,
// loading fails with ERR_NATIVE_BINDING_NOT_FOUND, which says what to do.
//
// Nothing here rebuilds the addon: it packs the built bmad-background-executor.<platform>.node
// and the generated binding.js / binding.d.ts as they are (build first with `npm run build`).
// The installs run with `--offline` and a private, empty npm cache, so they prove the tarballs
// need nothing from any registry.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import platform from '../lib/platform.js';

const { platformOfTriple } = platform;

const root = fileURLToPath(new URL('..', import.meta.url));
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const PKG = rootPkg.name;

// A hang is a failure, not a stuck run.
const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

/** The `.node` file napi-rs builds for this machine (`<name>.<platform>-<arch>[-abi].node`). */
function nativeFileName() {
  let triple = `${process.platform}-${process.arch}`;
  if (process.platform === 'linux') {
    const header = process.report && process.report.getReport().header;
    triple += header && header.glibcVersionRuntime ? '-gnu' : '-musl';
  } else if (process.platform === 'win32') {
    triple += '-msvc';
  }
  return `${PKG}.${triple}.node`;
}
const NATIVE = nativeFileName();
/** This machine's napi platform (`linux-x64-gnu`) and the package that carries its binary. */
const PLATFORM = NATIVE.slice(PKG.length + 1, -'.node'.length);
const PLATFORM_PKG = `${PKG}-${PLATFORM}`;

/** The environment for child processes: no npm lifecycle variables, no test-runner context. */
function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('npm_') || k === 'NODE_TEST_CONTEXT' || k === 'INIT_CWD') continue;
    env[k] = v;
  }
  return { ...env, NO_UPDATE_NOTIFIER: '1', ...extra };
}

/** Runs a command; resolves { code, stdout, stderr, ms } (never rejects on a non-zero exit). */
function run(cmd, args, { cwd, timeout = 30_000, env = childEnv() } = {}) {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 32 * 1024 * 1024, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number' && !err.killed) {
        reject(new Error(`could not run ${cmd} ${args.join(' ')}: ${err.message}`));
        return;
      }
      const code = err ? (err.killed ? `killed after ${timeout} ms` : err.code) : 0;
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

/** npm's CLI script, run with this Node.js: works where `npm` is a .cmd shim (Windows). */
const NPM_CLI = [
  process.env.npm_execpath,
  join(dirname(process.execPath), 'node_modules', 'npm', 'bin', 'npm-cli.js'),
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
].find((f) => f && f.endsWith('npm-cli.js') && existsSync(f));
const npm = (args, opts) => (NPM_CLI ? run(process.execPath, [NPM_CLI, ...args], opts) : run('npm', args, opts));

const describeRun = (what, r) => `${what} exited with ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;

const NPM_FLAGS = ['--no-audit', '--no-fund', '--no-update-notifier', '--loglevel=warn'];

let work; // temp root
let cache; // private, empty npm cache
let packDir; // where the tarball goes
let project; // the consumer project
let packed; // npm pack --json entry
let tarball; // absolute path of the .tgz
let platformPacked; // npm pack --json entry of the platform package
let platformTarball; // absolute path of its .tgz
let typesTarballs; // @types/node and what it needs, packed from this checkout's node_modules
let installed = false;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'bmad-bg-pack-'));
  cache = join(work, 'npm-cache');
  packDir = join(work, 'pack');
  project = join(work, 'consumer');
  mkdirSync(cache);
  mkdirSync(packDir);
  mkdirSync(project);
  // The typings' dependency, packed from node_modules, so that installs stay offline.
  typesTarballs = [];
  for (const dep of ['@types/node', 'undici-types']) {
    const r = await npm(['pack', join(root, 'node_modules', dep), '--pack-destination', packDir, '--json', `--cache=${cache}`, ...NPM_FLAGS], { cwd: work });
    assert.equal(r.code, 0, describeRun(`npm pack ${dep}`, r));
    typesTarballs.push(join(packDir, JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))[0].filename));
  }
});

after(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

// ----- 1. the tarball ---------------------------------------------------------------------------

test('npm pack --ignore-scripts: the root tarball has the generated loader, no binary and nothing from the repo tooling', async () => {
  const r = await npm(['pack', '--pack-destination', packDir, '--json', '--ignore-scripts', `--cache=${cache}`, ...NPM_FLAGS], {
    cwd: root,
  });
  assert.equal(r.code, 0, describeRun('npm pack', r));
  let parsed;
  try {
    parsed = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')));
  } catch (err) {
    assert.fail(`npm pack --json did not print JSON (${err.message}):\n${r.stdout}`);
  }
  assert.equal(parsed.length, 1, 'one package packed');
  packed = parsed[0];
  assert.equal(packed.name, PKG);
  assert.equal(packed.version, rootPkg.version);
  tarball = join(packDir, packed.filename);
  assert.ok(existsSync(tarball), `the tarball ${tarball} exists`);
  assert.equal(statSync(tarball).size, packed.size, 'the tarball on disk is the one npm reported');

  const files = packed.files.map((f) => f.path);
  const fileSet = new Set(files);
  const required = [
    'package.json',
    'index.js',
    'index.mjs',
    'index.d.ts',
    'binding.js',
    'binding.d.ts',
    // every module of the implementation
    ...readdirSync(join(root, 'lib'))
      .filter((f) => f.endsWith('.js'))
      .map((f) => `lib/${f}`),
  ];
  const missing = required.filter((f) => !fileSet.has(f));
  assert.deepEqual(missing, [], `files missing from the tarball: ${missing.join(', ')}\ntarball: ${files.join(', ')}`);

  // Whatever package.json points at must be in the tarball too.
  const targets = new Set([rootPkg.main, rootPkg.types]);
  (function walk(v) {
    if (typeof v === 'string') targets.add(v);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  })(rootPkg.exports);
  for (const t of targets) {
    if (t === undefined) continue;
    const p = t.replace(/^\.\//, '');
    assert.ok(fileSet.has(p), `package.json points at ${t}, which is not in the tarball`);
  }

  // Binaries come in the platform packages; installing builds nothing.
  assert.deepEqual(files.filter((f) => f.endsWith('.node')), [], 'no binary in the root package');
  for (const s of ['preinstall', 'install', 'postinstall', 'prepare']) {
    assert.equal((rootPkg.scripts || {})[s], undefined, `no "${s}" script: a consumer never builds`);
  }
  assert.match((rootPkg.repository || {}).url || '', /^git\+https:\/\/github\.com\/[^/]+\/[^/]+\.git$/, 'repository.url (npm provenance checks it)');

  const forbidden = files.filter((f) => /^(__test__|bench|demo|src|target|node_modules)\//.test(f));
  assert.deepEqual(forbidden, [], `repo-only files in the tarball: ${forbidden.join(', ')}`);
  assert.ok(!files.some((f) => f.endsWith('.tgz')), 'no tarball inside the tarball');

  // No runtime dependencies; the typings' own (@types/node, which TypeScript's publishing
  // guide puts in "dependencies") is types only, installed below from this checkout's copy.
  assert.deepEqual(Object.keys(rootPkg.dependencies || {}), ['@types/node'], 'the only dependency is @types/node');
});

test('npm/: one platform package per napi target; this machine\'s packed with the built binary', async () => {
  const platforms = rootPkg.napi.targets.map(platformOfTriple);
  assert.deepEqual(readdirSync(join(root, 'npm')).sort(), [...platforms].sort(), 'npm/ holds exactly the targets of package.json');
  for (const platform of platforms) {
    const p = JSON.parse(readFileSync(join(root, 'npm', platform, 'package.json'), 'utf8'));
    const [os, cpu, abi] = platform.split('-');
    const main = `${rootPkg.napi.binaryName}.${platform}.node`;
    assert.equal(p.name, `${PKG}-${platform}`);
    assert.equal(p.version, rootPkg.version, `${p.name} has the root's version`);
    assert.equal(p.main, main);
    assert.deepEqual(p.files, [main]);
    assert.deepEqual([p.os, p.cpu], [[os], [cpu]], `${p.name} os/cpu`);
    if (os === 'linux') assert.deepEqual(p.libc, [abi === 'gnu' ? 'glibc' : abi], `${p.name} libc`);
    assert.deepEqual(p.repository, rootPkg.repository, `${p.name} repository`);
    assert.deepEqual(p.engines, rootPkg.engines, `${p.name} engines`);
  }
  assert.ok(platforms.includes(PLATFORM), `${PLATFORM} (this machine) is a target`);

  assert.ok(
    existsSync(join(root, NATIVE)),
    `${NATIVE} is not built in ${root}: run \`npm run build\` first (this test packs what is there)`,
  );
  const src = join(work, 'platform-package');
  cpSync(join(root, 'npm', PLATFORM), src, { recursive: true });
  copyFileSync(join(root, NATIVE), join(src, NATIVE));
  const r = await npm(['pack', '--pack-destination', packDir, '--json', '--ignore-scripts', `--cache=${cache}`, ...NPM_FLAGS], { cwd: src });
  assert.equal(r.code, 0, describeRun('npm pack (platform package)', r));
  platformPacked = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')))[0];
  platformTarball = join(packDir, platformPacked.filename);
  assert.equal(platformPacked.name, PLATFORM_PKG);
  assert.deepEqual(platformPacked.files.map((f) => f.path).sort(), [NATIVE, 'README.md', 'package.json'].sort());
  // The binary is packed whole.
  const nativeEntry = platformPacked.files.find((f) => f.path === NATIVE);
  assert.equal(nativeEntry.size, statSync(join(root, NATIVE)).size, `${NATIVE} is packed whole`);
  assert.ok(nativeEntry.size > 100_000, `${NATIVE} looks like a real addon (${nativeEntry.size} bytes)`);
});

// ----- 2. the install ---------------------------------------------------------------------------

/** The files under `dir`, relative, with forward slashes. */
function filesUnder(dir) {
  const out = [];
  (function walk(d) {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p).split('\\').join('/'));
    }
  })(dir);
  return out.sort();
}

test('npm install <root tarball> <platform tarball> into a fresh {"type":"module"} project, offline, with an empty cache', async () => {
  assert.ok(tarball && platformTarball, 'the pack tests ran first');
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
  const r = await npm(['install', tarball, platformTarball, ...typesTarballs, '--offline', '--ignore-scripts', `--cache=${cache}`, ...NPM_FLAGS], {
    cwd: project,
    timeout: 45_000,
  });
  assert.equal(
    r.code,
    0,
    `${describeRun('npm install --offline', r)}\nThe tarball could not be installed without a registry (it should need none: no dependencies).`,
  );
  const dir = join(project, 'node_modules', PKG);
  assert.ok(existsSync(dir), `${dir} exists`);
  // Exactly what was packed was installed.
  assert.deepEqual(filesUnder(dir), packed.files.map((f) => f.path).sort());
  assert.deepEqual(filesUnder(join(project, 'node_modules', PLATFORM_PKG)), platformPacked.files.map((f) => f.path).sort());
  // Nothing else came along.
  const others = readdirSync(join(project, 'node_modules')).filter((n) => !n.startsWith('.') && n !== PKG);
  assert.deepEqual(others.sort(), ['@types', PLATFORM_PKG, 'undici-types'].sort(), 'nothing but the typings\' dependency came along');
  const consumerPkg = JSON.parse(readFileSync(join(project, 'package.json'), 'utf8'));
  assert.ok(consumerPkg.dependencies && consumerPkg.dependencies[PKG], 'recorded as a dependency');
  installed = true;
});

// ----- 3. the consumer scripts -------------------------------------------------------------------

/** Runs `node <file>` in the consumer project; the script prints `SUMMARY <json>` as its last act. */
async function runConsumer(file, source) {
  assert.ok(installed, 'the install test ran first');
  writeFileSync(join(project, file), source);
  // No process.exit() in the scripts: the child must end by itself, which proves that after
  // shutdown() nothing native keeps Node.js alive.
  const r = await run(process.execPath, [file], { cwd: project, timeout: 30_000 });
  assert.equal(r.code, 0, describeRun(`node ${file}`, r));
  const line = r.stdout.split('\n').find((l) => l.startsWith('SUMMARY '));
  assert.ok(line, `node ${file} printed no SUMMARY line\n${describeRun(file, r)}`);
  // PACK_TEST_DEBUG=1 shows what the script observed.
  if (process.env.PACK_TEST_DEBUG) process.stderr.write(`${file} (${r.ms} ms): ${line}\n${r.stderr}`);
  return { summary: JSON.parse(line.slice('SUMMARY '.length)), stderr: r.stderr, ms: r.ms };
}

// The guide's examples, in order, in an orchestrator-style ES module. `console` is shadowed so
// the examples' own console.log lines are kept and asserted; everything else observed goes into
// the summary. Agents: monitor (metrics, or blocks until released/cancelled), eval ({ tests }),
// qa (reports progress), oracle, validator.
const ORCHESTRATOR = String.raw`
import BackgroundExecutor from '${PKG}';
import { BackgroundExecutor as NamedExecutor, ResourceMonitor } from '${PKG}';
import { createRequire } from 'node:module';

const watchdog = setTimeout(() => {
  process.stdout.write('HANG: the orchestrator did not finish\n');
  process.exit(3);
}, 20000);
watchdog.unref();

const lines = [];
const fmt = (args) => args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
const console = {
  log: (...args) => lines.push(fmt(args)),
  error: (...args) => lines.push('ERROR ' + fmt(args)),
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what, ms = 5000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting for ' + what);
    await sleep(5);
  }
}
const summary = { resolved: {}, entry: {}, events: {}, examples: {} };
const S = summary.examples;

// Where the package came from, and whether ESM and CJS share one class.
const require = createRequire(import.meta.url);
summary.resolved.esm = import.meta.resolve('${PKG}');
summary.resolved.cjs = require.resolve('${PKG}');
summary.entry.defaultIsClass = typeof BackgroundExecutor === 'function' && BackgroundExecutor.name === 'BackgroundExecutor';
summary.entry.namedIsDefault = NamedExecutor === BackgroundExecutor;
summary.entry.resourceMonitorIsClass = typeof ResourceMonitor === 'function';
summary.entry.sameClassAsRequire = require('${PKG}') === BackgroundExecutor;

// ----- Configuration (the guide's constructor, verbatim) -----
const guideConfig = {
  maxConcurrentAgents: 5,
  maxCpuPercent: 80,
  maxMemoryMb: 2048,
  throttleIfExceeded: true,
  priorityLevels: {
    critical: 5,
    high: 4,
    medium: 3,
    low: 2,
    background: 1
  }
};
// Plus one key: a busy test machine (whole-machine CPU > 80 %) must not throttle the queue
// example below 5 running. Throttling itself is exercised by the "hot" executor further down.
const bg = new BackgroundExecutor({ ...guideConfig, minConcurrentAgents: 5 });
summary.entry.instanceOfResourceMonitor = bg.resourceMonitor instanceof ResourceMonitor;

// ----- Events (every listener of the guide, counting payloads) -----
const seen = summary.events;
const payloads = {};
for (const name of [
  'execution-started', 'execution-completed', 'execution-failed', 'execution-cancelled',
  'execution-queued', 'queue-throttled', 'progress-update', 'aggregation-started',
  'aggregation-completed', 'resource-threshold-exceeded', 'initialized', 'shutting-down', 'shutdown-complete',
]) {
  seen[name] = 0;
  payloads[name] = [];
  bg.on(name, (data) => {
    seen[name]++;
    payloads[name].push(data);
  });
}

// ----- Agents -----
let release;
const gate = new Promise((r) => (release = r));
const TESTS = ['unit: parser', 'unit: scheduler', 'integration: prd'];
bg.registerAgent('monitor', async (task, options, { signal }) => {
  if (task === 'block') {
    await new Promise((resolve, reject) => {
      gate.then(resolve);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    return { released: true };
  }
  await sleep(10);
  return { metrics: { cpu: 12, memory: 34 }, task };
});
bg.registerAgent('eval', async (task) => {
  await sleep(20);
  return { tests: [...TESTS], task };
});
bg.registerAgent('qa', async (task, options, { progress }) => {
  for (let p = 0; p < 100; p += 25) {
    progress(p);
    await sleep(30);
  }
  progress(100);
  return { passed: 120, failed: 0 };
});
bg.registerAgent('datasets', async () => {
  throw Object.assign(new Error('dataset store unavailable'), { code: 'ERR_DATASETS' });
});
bg.registerAgent('oracle', async (task, options) => {
  await sleep(30);
  return { valid: true, artifact: options && options.artifact };
});
bg.registerAgent('validator', async (task, options) => {
  await sleep(10);
  return { traceable: true, artifact: options && options.artifact };
});

// ----- API Reference: Initialize -----
const initialized = await bg.initialize();
S.initializeResolvesToExecutor = initialized === bg;

// ----- 1. Fire-and-Forget -----
{
  const { executionId } = await bg.fireAndForget(
    'monitor',
    'track-metrics',
    { priority: 'low' }
  );
  const final = await bg.waitFor(executionId);
  S.fireAndForget = { executionId, status: final.status, result: final.result, priority: final.priority, mode: final.mode };
}

// ----- 2. Async with Callback -----
{
  let calls = 0;
  let done;
  const called = new Promise((r) => (done = r));
  const returned = await bg.executeWithCallback(
    'eval',
    'generate-test-datasets',
    (err, result) => {
      calls++;
      if (err) {
        console.error('Failed:', err);
      } else {
        console.log('Tests generated:', result);
      }
      done();
    },
    { priority: 'medium' }
  );
  await called;
  // An agent nobody registered is refused at once: no id, no callback.
  let refused;
  await bg.executeWithCallback('nobody', 'generate-test-datasets', () => {}).catch((err) => {
    refused = { code: err.code, message: err.message };
  });
  // A failing one: the error reaches the callback.
  let failDone;
  const failCalled = new Promise((r) => (failDone = r));
  let failure;
  await bg.executeWithCallback('datasets', 'generate-test-datasets', (err, result) => {
    failure = { code: err && err.code, message: err && err.message, isError: err instanceof Error, result };
    failDone();
  });
  await failCalled;
  S.callback = { returned, calls, failure, refused };
}

// ----- 3. Watched Background -----
{
  const progressSeen = [];
  const { executionId } = await bg.executeWatched(
    'qa',
    'run-full-test-suite',
    { priority: 'high' }
  );
  bg.on('progress-update', (d) => {
    if (d.executionId === executionId) progressSeen.push({ progress: d.progress, status: d.status });
  });
  await until(() => bg.getExecutionStatus(executionId).progress >= 25, 'qa progress');
  // Get status periodically
  const status = bg.getExecutionStatus(executionId);
  console.log(` + "`Progress: ${status.progress}%`" + String.raw`);
  const during = { status: status.status, progress: status.progress };
  const final = await bg.waitFor(executionId);
  await sleep(20);
  S.watched = { executionId, during, final: { status: final.status, progress: final.progress, result: final.result }, progressSeen };
}

// ----- Execution Status (the guide's block, verbatim) -----
{
  const { executionId } = await bg.fireAndForget('monitor', 'track-metrics');
  await bg.waitFor(executionId);
  const status = bg.getExecutionStatus(executionId);

  if (status.found) {
    console.log('Status:', status.status);
    console.log('Progress:', status.progress);
    console.log('Duration:', status.duration);

    if (status.result) {
      console.log('Result:', status.result);
    }
  }
  S.executionStatus = {
    found: status.found, status: status.status, progress: status.progress, duration: status.duration,
    started: status.started, result: status.result, agent: status.agent, task: status.task,
  };
  S.unknownStatus = bg.getExecutionStatus('exec-999999999');
}

// ----- Priority Queue + Queue Management + Active executions -----
{
  // Fill all five slots with blocking monitors, then queue three more of different priorities.
  const blockers = [];
  for (let i = 0; i < 5; i++) blockers.push((await bg.fireAndForget('monitor', 'block', { priority: 'critical' })).executionId);
  const bgItem = await bg.fireAndForget('validator', 'trace', { priority: 'background' });
  const critItem = await bg.fireAndForget('oracle', 'validate', { priority: 'critical' });
  const highItem = await bg.fireAndForget('eval', 'tests', { priority: 'high' });

  const queue = bg.getQueueStatus();

  console.log(` + "`Queued: ${queue.queued}`" + String.raw`);
  console.log(` + "`Running: ${queue.running}/${queue.max_concurrent}`" + String.raw`);

  queue.queue.forEach(item => {
    console.log(` + "`- ${item.agent}: ${item.priority}`" + String.raw`);
  });

  const active = bg.getActiveExecutions();

  active.forEach(exec => {
    console.log(` + "`${exec.agent}: ${exec.progress}%`" + String.raw`);
  });

  S.queue = {
    queued: queue.queued, running: queue.running, max_concurrent: queue.max_concurrent, paused: queue.paused,
    order: queue.queue.map((q) => q.id),
    items: queue.queue.map((q) => ({ agent: q.agent, priority: q.priority, mode: q.mode })),
    expectedOrder: [critItem.executionId, highItem.executionId, bgItem.executionId],
    submittedStatus: [bgItem.status, critItem.status, highItem.status],
  };
  S.active = active.map((e) => ({ id: e.id, agent: e.agent, task: e.task, mode: e.mode, progress: e.progress, duration: e.duration }));
  S.activeBlockers = active.filter((e) => blockers.includes(e.id)).length;

  // ----- Cancellation (the guide's block, on a running and a queued execution) -----
  const cancelOne = async (executionId) => {
    const result = await bg.cancelExecution(executionId);

    if (result.success) {
      console.log('Execution cancelled');
    } else {
      console.log('Cannot cancel:', result.error);
    }
    return result;
  };
  const runningCancel = await cancelOne(blockers[0]);
  const queuedCancel = await cancelOne(bgItem.executionId);
  const again = await cancelOne(blockers[0]);
  const unknown = await cancelOne('exec-999999999');
  const cancelledStatus = bg.getExecutionStatus(blockers[0]);
  S.cancel = {
    running: runningCancel, queued: queuedCancel, again, unknown,
    status: cancelledStatus.status, error: cancelledStatus.error,
    queuedStatus: bg.getExecutionStatus(bgItem.executionId).status,
  };

  // Let the rest run.
  release();
  const finals = await Promise.all([...blockers.slice(1), critItem.executionId, highItem.executionId].map((id) => bg.waitFor(id)));
  S.afterRelease = finals.map((f) => f.status);
}

// ----- Result Aggregation (the guide's block, verbatim) -----
{
  const result = await bg.executeMultiple(
    ['oracle', 'eval', 'validator'],
    'validate-artifact',
    { artifact: 'prd.md', priority: 'high' }
  );

  console.log('Success rate:', result.report.success_rate);
  console.log('Average duration:', result.report.average_duration);
  S.aggregation = {
    aggregationId: result.aggregationId,
    results: result.results.map((r) => ({ agent: r.agent, status: r.status, result: r.result, error: r.error, duration: r.duration })),
    consistent: result.consistent,
    report: result.report,
  };
  // The integration example's form, with one failing agent.
  const validation = await bg.executeMultiple(
    ['oracle', 'eval', 'nobody'],
    'validate-prd',
    { artifact: 'prd.md', priority: 'critical' }
  );
  console.log(` + "`Validation: ${validation.report.success_rate}% passed`" + String.raw`);
  S.aggregationWithFailure = { report: validation.report, consistent: validation.consistent };
}

// ----- Resource Monitoring (the guide's blocks) -----
{
  const resources = bg.resourceMonitor.getStatus();

  console.log(` + "`CPU: ${resources.cpu}%`" + String.raw`);
  console.log(` + "`Memory: ${resources.memory}MB`" + String.raw`);
  console.log(` + "`Free: ${resources.free_memory}MB`" + String.raw`);
  S.resources = resources;

  // Monitor events: a second executor whose memory threshold is certainly exceeded (1 MB),
  // so the guide's threshold listener really fires, and the queue is throttled.
  const hot = new BackgroundExecutor({ maxMemoryMb: 1, monitorIntervalMs: 50, throttleIfExceeded: true });
  const heard = [];
  hot.resourceMonitor.on('threshold-exceeded', (data) => {
    console.log('Resource threshold exceeded:', Object.keys(data).sort().join(','));
    heard.push(data);
    // Auto-throttle if enabled
  });
  let reEmitted = 0;
  let throttled = null;
  hot.on('resource-threshold-exceeded', ({ cpu, memory }) => {
    reEmitted++;
  });
  hot.on('queue-throttled', (d) => (throttled = d));
  hot.registerAgent('monitor', async () => ({ ok: true }));
  await hot.initialize();
  await until(() => heard.length > 0 && throttled !== null, 'threshold-exceeded and queue-throttled');
  // Throttled still runs minConcurrentAgents (1) at a time: work completes.
  const r = await hot.execute('monitor', 'while-throttled');
  const hotStatus = hot.getStatus();
  await hot.shutdown();
  S.threshold = {
    first: heard[0], reEmitted, throttled, resultWhileThrottled: r,
    hotThrottled: hotStatus.throttled, hotResourceMemory: hotStatus.resources.memory,
  };
}

// ----- ResourceMonitor alone -----
{
  const m = new ResourceMonitor({ interval: 100, cpuThreshold: 100, memoryThreshold: 1e9 });
  const sampled = m.check();
  m.start();
  await sleep(250);
  const trends = m.getTrends();
  const wasRunning = m.running;
  m.stop();
  S.monitorAlone = { sampled, trendCount: trends.cpu.length, memoryTrendCount: trends.memory.length, wasRunning, running: m.running };
}

// ----- Get Status -----
{
  await bg.onIdle();
  const status = bg.getStatus();
  S.status = status;
}

// ----- Example Integration (abridged to what it does, not its sleeps) -----
{
  bg.on('resource-threshold-exceeded', ({ cpu, memory }) => {
    console.log(` + "`Resources high - CPU: ${cpu}%, Memory: ${memory}MB`" + String.raw`);
  });
  let ready;
  const readyP = new Promise((r) => (ready = r));
  await bg.fireAndForget('monitor', 'track-metrics', {
    priority: 'background'
  });
  await bg.executeWithCallback(
    'eval',
    'generate-tests',
    (err, result) => {
      if (!err) {
        console.log('Tests ready:', result.tests.length);
      }
      ready();
    },
    { priority: 'medium' }
  );
  await readyP;
  const onSigint = async () => {
    await bg.shutdown();
    process.exit(0);
  };
  process.on('SIGINT', onSigint);
  await bg.onIdle();
  process.off('SIGINT', onSigint);
}

// ----- Shutdown -----
{
  const completeSeen = seen['shutdown-complete'];
  await bg.shutdown();
  let rejected = null;
  try {
    await bg.fireAndForget('monitor', 'after-shutdown');
  } catch (err) {
    rejected = { code: err.code, message: err.message };
  }
  S.shutdown = {
    completeBefore: completeSeen,
    completeAfter: seen['shutdown-complete'],
    shuttingDown: payloads['shutting-down'][0],
    complete: payloads['shutdown-complete'][0],
    rejected,
    statusAfter: { shutting_down: bg.getStatus().shutting_down, running: bg.getStatus().running, queued: bg.getStatus().queued },
    again: (await bg.shutdown()) === undefined,
  };
}

summary.lines = lines;
summary.payloadSamples = {
  queued: payloads['execution-queued'].slice(-1)[0],
  started: payloads['execution-started'][0],
  completed: payloads['execution-completed'][0],
  failed: payloads['execution-failed'][0] && { ...payloads['execution-failed'][0], errorObject: undefined },
  cancelled: payloads['execution-cancelled'][0] && { ...payloads['execution-cancelled'][0], errorObject: undefined },
  aggregationStarted: payloads['aggregation-started'][0],
  initialized: payloads['initialized'][0],
};
// The native addon this process loaded.
summary.resolved.native = Object.keys(require.cache).filter((k) => k.endsWith('.node'));
process.stdout.write('SUMMARY ' + JSON.stringify(summary) + '\n');
// No process.exit(): the process must end by itself.
`;

test('ESM orchestrator in the consumer project: import BackgroundExecutor from the package and run every guide example', async () => {
  const { summary, stderr, ms } = await runConsumer('orchestrator.mjs', ORCHESTRATOR);
  const S = summary.examples;
  const pkgDir = join(project, 'node_modules', PKG);

  // Loaded from the installed tarball, not from the repo.
  assert.ok(fileURLToPath(summary.resolved.esm).startsWith(pkgDir), `ESM resolved to ${summary.resolved.esm}`);
  assert.ok(fileURLToPath(summary.resolved.esm).endsWith('index.mjs'));
  assert.ok(summary.resolved.cjs.startsWith(pkgDir) && summary.resolved.cjs.endsWith('index.js'), summary.resolved.cjs);
  assert.deepEqual(summary.resolved.native, [join(project, 'node_modules', PLATFORM_PKG, NATIVE)], 'the binary of the platform package');
  assert.deepEqual(summary.entry, {
    defaultIsClass: true,
    namedIsDefault: true,
    resourceMonitorIsClass: true,
    sameClassAsRequire: true,
    instanceOfResourceMonitor: true,
  });
  assert.equal(S.initializeResolvesToExecutor, true);

  // 1. Fire-and-forget.
  assert.match(S.fireAndForget.executionId, /^exec-\d+$/);
  assert.equal(S.fireAndForget.status, 'completed');
  assert.equal(S.fireAndForget.priority, 'low');
  assert.equal(S.fireAndForget.mode, 'fire-and-forget');
  assert.deepEqual(S.fireAndForget.result, { metrics: { cpu: 12, memory: 34 }, task: 'track-metrics' });

  // 2. Callback: called once with the agent's value; failures reach it as the error.
  assert.equal(S.callback.calls, 1);
  assert.equal(S.callback.returned.mode, 'async-callback');
  assert.match(S.callback.returned.executionId, /^exec-\d+$/);
  assert.ok(['queued', 'running'].includes(S.callback.returned.status));
  const tests = ['unit: parser', 'unit: scheduler', 'integration: prd'];
  assert.ok(
    summary.lines.includes(`Tests generated: ${JSON.stringify({ tests, task: 'generate-test-datasets' })}`),
    summary.lines.join('\n'),
  );
  assert.deepEqual(S.callback.refused, { code: 'ERR_AGENT_NOT_FOUND', message: 'No agent registered for "nobody"' });
  assert.deepEqual(S.callback.failure, {
    code: 'ERR_DATASETS',
    message: 'dataset store unavailable',
    isError: true,
  });

  // 3. Watched: status queries during the run, progress events, final 100 %.
  assert.equal(S.watched.during.status, 'running');
  assert.ok(S.watched.during.progress >= 25 && S.watched.during.progress < 100, JSON.stringify(S.watched.during));
  assert.ok(summary.lines.includes(`Progress: ${S.watched.during.progress}%`));
  assert.deepEqual(S.watched.final, { status: 'completed', progress: 100, result: { passed: 120, failed: 0 } });
  assert.ok(S.watched.progressSeen.length >= 1, 'progress-update events for the watched execution');
  assert.deepEqual(S.watched.progressSeen.at(-1), { progress: 100, status: 'completed' });
  const seenProgress = S.watched.progressSeen.map((p) => p.progress);
  assert.deepEqual(seenProgress, [...seenProgress].sort((a, b) => a - b), 'progress never goes back');

  // Execution status block.
  const st = S.executionStatus;
  assert.equal(st.found, true);
  assert.equal(st.status, 'completed');
  assert.equal(st.progress, 100);
  assert.ok(st.duration >= 0 && Number.isFinite(st.duration));
  assert.ok(Math.abs(st.started - Date.now()) < 60_000, 'started is a submission timestamp');
  assert.equal(st.agent, 'monitor');
  assert.equal(st.task, 'track-metrics');
  for (const l of ['Status: completed', 'Progress: 100', `Duration: ${st.duration}`, `Result: ${JSON.stringify(st.result)}`]) {
    assert.ok(summary.lines.includes(l), `printed ${l}`);
  }
  assert.deepEqual(S.unknownStatus, { found: false });

  // Priority queue and queue management: 5 running, 3 queued in priority order.
  assert.equal(S.queue.max_concurrent, 5);
  assert.equal(S.queue.running, 5);
  assert.equal(S.queue.queued, 3);
  assert.equal(S.queue.paused, false);
  assert.deepEqual(S.queue.submittedStatus, ['queued', 'queued', 'queued']);
  assert.deepEqual(S.queue.order, S.queue.expectedOrder, 'critical, then high, then background');
  assert.deepEqual(S.queue.items.map((i) => `${i.agent}:${i.priority}:${i.mode}`), [
    'oracle:critical:fire-and-forget',
    'eval:high:fire-and-forget',
    'validator:background:fire-and-forget',
  ]);
  assert.ok(summary.lines.includes('Queued: 3'));
  assert.ok(summary.lines.includes('Running: 5/5'));
  assert.ok(summary.lines.includes('- oracle: critical'));
  assert.ok(summary.lines.includes('- validator: background'));
  assert.equal(S.active.length, 5);
  assert.equal(S.activeBlockers, 5);
  for (const e of S.active) {
    assert.equal(e.agent, 'monitor');
    assert.equal(e.task, 'block');
    assert.equal(e.progress, 0);
    assert.ok(e.duration >= 0);
  }
  assert.equal(summary.lines.filter((l) => l === 'monitor: 0%').length, 5);

  // Cancellation.
  assert.deepEqual(S.cancel.running, { success: true, executionId: S.active[0].id, previousStatus: 'running' });
  assert.equal(S.cancel.queued.success, true);
  assert.equal(S.cancel.queued.previousStatus, 'queued');
  assert.deepEqual(S.cancel.again, { success: false, error: 'Cannot cancel execution in cancelled status' });
  assert.deepEqual(S.cancel.unknown, { success: false, error: 'Execution not found' });
  assert.equal(S.cancel.status, 'cancelled');
  assert.match(S.cancel.error, /cancelled/);
  assert.equal(S.cancel.queuedStatus, 'cancelled');
  assert.equal(summary.lines.filter((l) => l === 'Execution cancelled').length, 2);
  assert.ok(summary.lines.includes('Cannot cancel: Execution not found'));
  assert.deepEqual(S.afterRelease, ['completed', 'completed', 'completed', 'completed', 'completed', 'completed']);

  // Aggregation: real results, in input order, and the report.
  const agg = S.aggregation;
  assert.match(agg.aggregationId, /\S/);
  assert.deepEqual(agg.results.map((r) => [r.agent, r.status, r.error]), [
    ['oracle', 'completed', null],
    ['eval', 'completed', null],
    ['validator', 'completed', null],
  ]);
  assert.deepEqual(agg.results[0].result, { valid: true, artifact: 'prd.md' });
  assert.deepEqual(agg.results[1].result, { tests, task: 'validate-artifact' });
  assert.deepEqual(agg.results[2].result, { traceable: true, artifact: 'prd.md' });
  assert.equal(agg.consistent.consistent, true);
  const rep = agg.report;
  assert.equal(rep.total, 3);
  assert.equal(rep.successful, 3);
  assert.equal(rep.failed, 0);
  assert.equal(rep.success_rate, 100);
  assert.equal(rep.consistency.consistent, true);
  const sum = agg.results.reduce((a, r) => a + r.duration, 0);
  assert.ok(Math.abs(rep.total_duration - sum) <= 1, `total_duration ${rep.total_duration} = sum of durations ${sum}`);
  assert.ok(Math.abs(rep.average_duration - rep.total_duration / 3) <= 1, `average_duration ${rep.average_duration}`);
  assert.ok(agg.results[0].duration >= 25, 'oracle really ran (30 ms)');
  assert.ok(!Number.isNaN(Date.parse(rep.timestamp)));
  assert.ok(summary.lines.includes('Success rate: 100'));
  assert.ok(summary.lines.includes(`Average duration: ${rep.average_duration}`));
  const agf = S.aggregationWithFailure;
  assert.equal(agf.report.total, 3);
  assert.equal(agf.report.successful, 2);
  assert.equal(agf.report.failed, 1);
  assert.equal(agf.report.success_rate, 66.67);
  assert.equal(agf.consistent.consistent, false);
  assert.deepEqual(agf.consistent.failures.map((f) => [f.agent, f.status]), [['nobody', 'failed']]);
  assert.ok(summary.lines.includes('Validation: 66.67% passed'));

  // Resources.
  const res = S.resources;
  for (const k of ['cpu', 'memory', 'total_memory', 'free_memory', 'process_cpu', 'timestamp']) {
    assert.equal(typeof res[k], 'number', `resources.${k} is a number`);
  }
  assert.ok(res.cpu >= 0 && res.cpu <= 100, `cpu ${res.cpu}`);
  assert.ok(res.memory > 5 && res.memory < res.total_memory, `memory ${res.memory} MB`);
  assert.ok(res.free_memory > 0 && res.free_memory <= res.total_memory);
  assert.ok(Array.isArray(res.load_average));
  assert.ok(summary.lines.includes(`CPU: ${res.cpu}%`));
  assert.ok(summary.lines.includes(`Memory: ${res.memory}MB`));
  assert.ok(summary.lines.includes(`Free: ${res.free_memory}MB`));

  // Threshold listener: really fired, re-emitted, and throttled the queue.
  const th = S.threshold;
  assert.ok(th.first.exceeded.includes('memory'), JSON.stringify(th.first));
  assert.ok(th.first.memory > 1);
  assert.equal(th.first.thresholds.memory, 1);
  assert.ok(th.reEmitted >= 1, 'resource-threshold-exceeded re-emitted by the executor');
  assert.ok(th.throttled.reason.includes('memory'), JSON.stringify(th.throttled));
  assert.equal(th.throttled.minConcurrentAgents, 1);
  assert.deepEqual(th.resultWhileThrottled, { ok: true });
  assert.equal(th.hotThrottled, true);
  assert.ok(summary.lines.some((l) => l.startsWith('Resource threshold exceeded: ') && l.includes('exceeded')));

  // ResourceMonitor alone.
  const ma = S.monitorAlone;
  assert.equal(typeof ma.sampled.cpu, 'number');
  assert.ok(ma.trendCount >= 2, `trends after 250 ms at 100 ms: ${ma.trendCount}`);
  assert.equal(ma.memoryTrendCount, ma.trendCount);
  assert.equal(ma.wasRunning, true);
  assert.equal(ma.running, false);

  // getStatus after everything above.
  const gs = S.status;
  assert.equal(gs.initialized, true);
  assert.equal(gs.running, 0);
  assert.equal(gs.queued, 0);
  assert.equal(gs.max_concurrent, 5);
  assert.equal(gs.active_processes, 0);
  assert.equal(gs.shutting_down, false);
  assert.equal(gs.cancelled, 2);
  assert.equal(gs.failed, 2, 'the callback to "datasets" and the aggregation\'s "nobody"');
  assert.equal(gs.completed, 15, 'every completed execution of the examples above');
  assert.deepEqual(gs.agents.sort(), ['datasets', 'eval', 'monitor', 'oracle', 'qa', 'validator']);
  assert.equal(typeof gs.resources.cpu, 'number');

  // Example integration.
  assert.ok(summary.lines.includes('Tests ready: 3'));

  // Events of the guide, all really emitted (queue-throttled and the threshold on the hot executor).
  const ev = summary.events;
  for (const name of [
    'execution-started',
    'execution-completed',
    'execution-failed',
    'execution-cancelled',
    'execution-queued',
    'progress-update',
    'aggregation-started',
    'aggregation-completed',
    'initialized',
    'shutting-down',
    'shutdown-complete',
  ]) {
    assert.ok(ev[name] >= 1, `${name} emitted (${ev[name]})`);
  }
  assert.equal(ev['execution-cancelled'], 2);
  assert.equal(ev['execution-failed'], 2);
  assert.equal(ev['aggregation-started'], 2);
  assert.equal(ev['aggregation-completed'], 2);
  assert.equal(ev['shutdown-complete'], 1);
  // Exactly one end event per execution that started or queued.
  assert.equal(ev['execution-completed'] + ev['execution-failed'] + ev['execution-cancelled'], gs.completed + gs.failed + gs.cancelled + 2);
  const p = summary.payloadSamples;
  assert.deepEqual(Object.keys(p.initialized).sort(), ['maxConcurrentAgents', 'priorityLevels']);
  assert.deepEqual(p.initialized.priorityLevels, { critical: 5, high: 4, medium: 3, low: 2, background: 1 });
  for (const k of ['executionId', 'agent', 'task', 'mode']) assert.ok(k in p.started, `execution-started.${k}`);
  for (const k of ['executionId', 'agent', 'result', 'duration']) assert.ok(k in p.completed, `execution-completed.${k}`);
  for (const k of ['executionId', 'queuePosition', 'queueLength']) assert.ok(k in p.queued, `execution-queued.${k}`);
  assert.equal(p.failed.error, 'dataset store unavailable');
  assert.equal(p.failed.code, 'ERR_DATASETS');
  assert.equal(p.cancelled.code, 'ERR_EXECUTION_CANCELLED');
  assert.deepEqual(p.aggregationStarted.agents, ['oracle', 'eval', 'validator']);
  assert.equal(p.aggregationStarted.task, 'validate-artifact');

  // Shutdown.
  const sd = S.shutdown;
  assert.equal(sd.completeBefore, 0);
  assert.equal(sd.completeAfter, 1);
  assert.equal(sd.shuttingDown.running, 0);
  assert.equal(sd.shuttingDown.queued, 0);
  assert.equal(sd.complete.forced, false);
  assert.deepEqual(sd.rejected && sd.rejected.code, 'ERR_EXECUTOR_SHUT_DOWN');
  assert.deepEqual(sd.statusAfter, { shutting_down: true, running: 0, queued: 0 });
  assert.equal(sd.again, true);

  assert.equal(summary.lines.filter((l) => l.startsWith('ERROR ')).length, 0, summary.lines.join('\n'));
  assert.doesNotMatch(stderr, /Error|Warning|warn/i, `stderr of the orchestrator:\n${stderr}`);
  assert.ok(ms < 20_000, `the orchestrator took ${ms} ms`);
});

const CJS_SCRIPT = String.raw`
'use strict';
const assert = require('node:assert/strict');
const BackgroundExecutor = require('${PKG}');
const { BackgroundExecutor: Named, ResourceMonitor } = require('${PKG}');

const watchdog = setTimeout(() => {
  process.stdout.write('HANG: the CommonJS script did not finish\n');
  process.exit(3);
}, 20000);
watchdog.unref();

(async () => {
  const summary = {
    resolved: require.resolve('${PKG}'),
    moduleIsClass: typeof BackgroundExecutor === 'function' && BackgroundExecutor.name === 'BackgroundExecutor',
    namedIsModule: Named === BackgroundExecutor,
    defaultIsModule: BackgroundExecutor.default === BackgroundExecutor,
    resourceMonitorIsClass: typeof ResourceMonitor === 'function',
  };
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 2 });
  const named = new Named({ maxConcurrentAgents: 1 });
  summary.instanceOfBoth = bg instanceof Named && named instanceof BackgroundExecutor;
  summary.hasMonitor = bg.resourceMonitor instanceof ResourceMonitor;
  bg.registerAgent('echo', async (task, options, context) => ({ echoed: task, options, mode: context.mode, agent: context.agent }));
  await bg.initialize();
  const events = [];
  bg.on('execution-completed', (d) => events.push([d.agent, d.task]));
  summary.result = await bg.execute('echo', 'from-cjs', { priority: 'high', artifact: 'prd.md' });
  const { executionId, mode } = await bg.fireAndForget('echo', 'fire');
  summary.fire = { mode, final: (await bg.waitFor(executionId)).status };
  summary.events = events;
  const monitor = new ResourceMonitor({ interval: 100 });
  const sample = monitor.check();
  summary.sample = { cpu: typeof sample.cpu, memory: sample.memory > 0 };
  await Promise.all([bg.shutdown(), named.shutdown()]);
  summary.native = Object.keys(require.cache).filter((k) => k.endsWith('.node'));
  process.stdout.write('SUMMARY ' + JSON.stringify(summary) + '\n');
})().catch((err) => {
  process.stdout.write('FAILED ' + (err && err.stack) + '\n');
  process.exitCode = 1;
});
`;

test('CommonJS script in the consumer project: require() as the class and destructured, one execution', async () => {
  const { summary, stderr } = await runConsumer('script.cjs', CJS_SCRIPT);
  const pkgDir = join(project, 'node_modules', PKG);
  assert.equal(summary.resolved, join(pkgDir, 'index.js'));
  assert.deepEqual(summary.native, [join(project, 'node_modules', PLATFORM_PKG, NATIVE)], 'the binary of the platform package');
  assert.equal(summary.moduleIsClass, true, 'require() gives the class itself');
  assert.equal(summary.namedIsModule, true, '{ BackgroundExecutor } is the same class');
  assert.equal(summary.defaultIsModule, true, '.default is the same class');
  assert.equal(summary.resourceMonitorIsClass, true);
  assert.equal(summary.instanceOfBoth, true);
  assert.equal(summary.hasMonitor, true);
  assert.deepEqual(summary.result, {
    echoed: 'from-cjs',
    options: { priority: 'high', artifact: 'prd.md' },
    mode: 'execute',
    agent: 'echo',
  });
  assert.deepEqual(summary.fire, { mode: 'fire-and-forget', final: 'completed' });
  assert.deepEqual(summary.events, [
    ['echo', 'from-cjs'],
    ['echo', 'fire'],
  ]);
  assert.deepEqual(summary.sample, { cpu: 'number', memory: true });
  assert.equal(stderr, '', 'nothing on stderr');
});

// ----- 4. no binary ------------------------------------------------------------------------------

/** What `require('<PKG>')` gives in `dir`: 'LOADED <native file>' or the error's fields. */
async function probeLoad(dir, { prelude = '', env } = {}) {
  const source = `${prelude}
try {
  const B = require('${PKG}');
  const bg = new B({ maxConcurrentAgents: 1 });
  bg.registerAgent('echo', async (task) => task);
  bg.execute('echo', 'ok').then(async (r) => {
    await bg.shutdown();
    console.log('LOADED ' + r + ' ' + Object.keys(require.cache).filter((k) => k.endsWith('.node')).join());
  });
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message, platform: e.platform, published: e.published }));
}`;
  const r = await run(process.execPath, ['-e', source], { cwd: dir, env });
  assert.equal(r.code, 0, describeRun('node -e <probe>', r));
  const line = r.stdout.trim().split('\n').at(-1);
  return line.startsWith('LOADED ') ? line : JSON.parse(line);
}

test('without the platform package: ERR_NATIVE_BINDING_NOT_FOUND says what was found, what exists, what to do', async () => {
  assert.ok(tarball, 'the pack test ran first');
  const dir = join(work, 'consumer-no-binary');
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer-no-binary', private: true }, null, 2));
  const r = await npm(['install', tarball, ...typesTarballs, '--offline', '--ignore-scripts', `--cache=${cache}`, ...NPM_FLAGS], { cwd: dir, timeout: 45_000 });
  assert.equal(r.code, 0, describeRun('npm install --offline', r));
  const published = rootPkg.napi.targets.map(platformOfTriple);

  // A published platform whose package is missing.
  const e = await probeLoad(dir);
  assert.equal(typeof e, 'object', `the package loaded without its platform package: ${e}`);
  assert.equal(e.code, 'ERR_NATIVE_BINDING_NOT_FOUND');
  assert.equal(e.platform, PLATFORM);
  assert.deepEqual(e.published, published);
  const [advice] = e.message.split('Load attempts:');
  assert.ok(advice.includes(`${process.platform} ${process.arch}`), `names the platform found:\n${e.message}`);
  if (process.platform === 'linux') assert.match(advice, /\((glibc [\d.]+|musl)\)/, 'names the libc found');
  assert.ok(advice.includes(`${PLATFORM_PKG}@${rootPkg.version}`), `names the missing package:\n${e.message}`);
  assert.ok(advice.includes(`Published platforms: ${published.join(', ')}.`), `lists the published platforms:\n${e.message}`);
  assert.ok(advice.includes('--omit=optional') && advice.includes('NAPI_RS_NATIVE_LIBRARY_PATH'), `says what to do:\n${e.message}`);
  assert.doesNotMatch(advice, /lockfile|package-lock/i, 'no lockfile advice');

  // A platform nothing is published for.
  const u = await probeLoad(dir, { prelude: "Object.defineProperty(process, 'arch', { value: 'riscv64' });" });
  assert.equal(u.code, 'ERR_NATIVE_BINDING_NOT_FOUND');
  assert.match(u.platform, /-riscv64/);
  assert.ok(u.message.includes(`No prebuilt binary is published for ${u.platform}.`), u.message);
  assert.ok(u.message.includes('Building from source') && u.message.includes('NAPI_RS_NATIVE_LIBRARY_PATH'), u.message);

  // The way out it names: a binary built elsewhere, pointed at by NAPI_RS_NATIVE_LIBRARY_PATH.
  const ok = await probeLoad(dir, { env: childEnv({ NAPI_RS_NATIVE_LIBRARY_PATH: join(root, NATIVE) }) });
  assert.equal(ok, `LOADED ok ${join(root, NATIVE)}`);
});

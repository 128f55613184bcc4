// Demo: the guide's "Example Integration", with real agents.
//
//   node demo/demo.mjs        (or: npm run demo)
//
// Agents (demo/agents.mjs) do real work and report through context.progress / context.signal:
//   monitor    samples bg.resourceMonitor.getStatus()
//   eval       generates hash-chain test vectors (node:crypto), or compiles an artifact's examples
//   qa         reads + checksums src/ and lib/, `node --check`s the JavaScript, per-file progress
//   oracle     checks an artifact's structure and its priority table against the executor
//   validator  checks that every bg.method() the artifact shows exists; resolves its links
//   scan       a command agent (bg.registerCommand): demo/scan.mjs run as a separate process
//              from Rust, reporting progress as JSON lines
//   sleep      a command agent that outlives its timeout: its process group is terminated
//
// The artifact validated is the guide this package replaces
// (../../shared/seed/background-execution-guide.md, relative to this file) when it is there,
// else a generated markdown document.
//
// Output (demo/view.mjs): in a terminal, a live progress bar per execution that reports
// progress (fed by bg.watch(id)), the log lines scrolling above the bars, and summary tables
// at the end. Piped or redirected (`node demo/demo.mjs | cat`, CI, tests): plain log lines.

import BackgroundExecutor from '../index.mjs';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeAgents } from './agents.mjs';
import { createView } from './view.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const GUIDE = path.resolve(ROOT, '../shared/seed/background-execution-guide.md');

// ----- logging -------------------------------------------------------------------------------

const t0 = performance.now();
const view = createView({ stream: process.stdout });
function log(tag, message) {
  const t = String(Math.round(performance.now() - t0)).padStart(5);
  view.log(`[${t} ms] ${tag.padEnd(9)} ${message}`);
}
const section = (title) => view.log(`\n--- ${title} ---`);
// Durations from the executor are fractional milliseconds (e.g. 15.341360999999779): shown rounded.
const ms = (x) => `${Math.round(x)} ms`;

// A demo that hangs is a bug worth hearing about; this timer never keeps the process alive.
const watchdog = setTimeout(() => {
  view.stop();
  console.error('demo: still running after 20 s; something keeps the process alive');
  process.exit(1);
}, 20000).unref();

// ----- the executor --------------------------------------------------------------------------

const CONFIG = {
  maxConcurrentAgents: 3, // small enough that a queue forms
  maxCpuPercent: 80,
  maxMemoryMb: 2048,
  throttleIfExceeded: true,
  progressIntervalMs: 250, // watched-mode heartbeat (prompt updates come on each context.progress)
  monitorIntervalMs: 250,
};
const bg = new BackgroundExecutor(CONFIG);

let priorityLevels = {};
bg.once('initialized', (e) => {
  priorityLevels = e.priorityLevels;
  log('executor', `initialized: max ${e.maxConcurrentAgents} concurrent, levels ${JSON.stringify(e.priorityLevels)}`);
});

const agents = makeAgents({ bg, root: ROOT, levels: () => priorityLevels, log });
for (const [name, fn] of Object.entries(agents)) bg.registerAgent(name, fn);
// Command agents: programs, not functions. Spawned without a shell, watched from Rust.
bg.registerCommand('scan', (task, options) => ({
  command: process.execPath,
  args: [path.join(HERE, 'scan.mjs'), options.dir, String(options.delayMs ?? 0)],
  progressPattern: 'json-lines',
}));
bg.registerCommand('sleep', (task) => ({ command: 'sleep', args: [task], killGraceMs: 1000 }));

// Every execution, by id: what was submitted, then its live state and its final status.
const runs = new Map();
const following = [];
function setStatus(id, status) {
  const run = runs.get(id);
  if (run === undefined) return;
  run.status = status;
  view.update(id, { status });
}

/**
 * Follows one execution with bg.watch(id): its progress reports, then its final status
 * object. Watched executions get a bar at once; any other gets one at its first report.
 */
async function follow(id) {
  const run = runs.get(id);
  if (run.mode === 'watched') view.track(id, run);
  try {
    for await (const update of bg.watch(id)) {
      if (update.found === undefined) {
        run.progress = update.progress;
        if (update.detail !== undefined) run.detail = update.detail;
        view.track(id, run);
        view.update(id, { progress: update.progress, detail: update.detail });
      } else if (update.found) {
        run.final = update;
        run.status = update.status;
        view.update(id, { status: update.status, progress: update.progress, duration: update.duration });
      } else {
        log('watch', `bg.watch(${id}) ended with { found: false }`);
      }
    }
  } catch (err) {
    log('FAILED', `bg.watch(${id}) threw: ${err?.stack ?? err}`);
  }
}

// Lifecycle events, one line each.
const label = (e) => `${e.executionId} ${e.agent} "${e.task}"`;
bg.on('execution-queued', (e) => {
  const { executionId: id, agent, task, mode, priority } = e;
  runs.set(id, { id, agent, task, mode, priority, status: e.queuePosition > 0 ? 'queued' : 'running', progress: 0, since: performance.now() });
  following.push(follow(id));
  if (e.queuePosition > 0) log('queue', `${label(e)} queued (${e.priority}), position ${e.queuePosition} of ${e.queueLength}`);
});
bg.on('execution-started', (e) => {
  setStatus(e.executionId, 'running');
  log('start', `${label(e)} [${e.mode}, ${e.priority}]`);
});
bg.on('execution-completed', (e) => {
  setStatus(e.executionId, 'completed');
  log('done', `${label(e)} completed in ${ms(e.duration)}${summarize(e.agent, e.result)}`);
});
bg.on('execution-failed', (e) => {
  setStatus(e.executionId, 'failed');
  log('FAILED', `${label(e)} after ${ms(e.duration)}: ${e.error}`);
});
bg.on('execution-cancelled', (e) => {
  setStatus(e.executionId, 'cancelled');
  log('cancel', `${label(e)} cancelled after ${ms(e.duration)} (${e.code})`);
});
bg.on('callback-error', (e) => log('FAILED', `callback of ${e.executionId} threw: ${e.error?.message}`));
bg.on('queue-throttled', (e) =>
  log('throttle', `queue throttled (${e.reason.join('+')}): ${e.running} running, ${e.queued} queued, at most ${e.minConcurrentAgents} start while high`),
);
bg.on('queue-resumed', (e) => log('throttle', `queue resumed: started ${e.started}, ${e.running} running, ${e.queued} queued`));

function summarize(agent, r) {
  if (r === null || typeof r !== 'object') return '';
  switch (agent) {
    case 'monitor':
      return ` - ${r.samples} samples, CPU avg ${r.cpu.avg.toFixed(1)}% (max ${r.cpu.max.toFixed(1)}%), memory max ${r.memory.max.toFixed(1)} MB`;
    case 'eval':
      return r.tests ? ` - ${r.tests.length} test vectors in ${r.datasets} datasets` : ` - ${r.passed}/${r.checks} checks`;
    case 'scan': {
      const last = JSON.parse(r.stdout.trim().split('\n').pop());
      return ` - exit ${r.exitCode}: ${last.files} files, ${last.bytes} bytes, ${last.markers} TODO/FIXME, sha256 ${last.sha256.slice(0, 12)} (stderr: ${r.stderr.trim()})`;
    }
    case 'qa':
      return ` - ${r.files} files x${r.rounds}, ${r.bytes} bytes, ${r.lines} lines, ${r.syntaxChecked} syntax-checked, digest ${r.digest.slice(0, 12)}`;
    default:
      return r.checks !== undefined ? ` - ${r.passed}/${r.checks} checks` : '';
  }
}

// Resource events (as in the guide), counted and printed at most once a second.
let thresholdEvents = 0;
let lastThresholdLog = -Infinity;
bg.on('resource-threshold-exceeded', ({ cpu, memory, exceeded }) => {
  thresholdEvents++;
  if (performance.now() - lastThresholdLog < 1000) return;
  lastThresholdLog = performance.now();
  log('resources', `Resources high - CPU: ${cpu.toFixed(1)}%, Memory: ${memory.toFixed(1)}MB (exceeded: ${exceeded.join(', ')})`);
});

// Cleanup on Ctrl-C, as in the guide: queued work is cancelled, running agents finish.
let interrupted = false;
process.once('SIGINT', async () => {
  interrupted = true;
  log('signal', 'SIGINT: shutting down');
  await bg.shutdown();
  view.stop();
  process.exit(130);
});

try {
  await main();
} catch (err) {
  // After Ctrl-C the scenario's next submission is refused; the SIGINT handler exits.
  if (!(interrupted && err?.code === 'ERR_EXECUTOR_SHUT_DOWN')) {
    view.stop(); // the bars' frame timer would keep the process alive
    throw err;
  }
}

// ----- scene 8: the durable store (demo/durable.mjs; alone: node demo/durable.mjs) ----------
// Real processes on an embedded SQLite store: a worker SIGKILLed halfway, a new one finishes.
if (!interrupted) {
  watchdog.refresh(); // the scene gets 20 s of its own (it takes ~5)
  const { durableScene } = await import('./durable.mjs');
  await durableScene({ t0, title: '8. durable store: a worker process SIGKILLed halfway, a new process finishes the work' });
}

// ----- the scenario --------------------------------------------------------------------------

async function main() {
  await bg.initialize();
  // Note: the monitor's very first reading is the machine's CPU average since boot, not over a
  // recent interval; the readings after it cover the last interval.
  const r0 = bg.resourceMonitor.getStatus();
  log('resources', `CPU ${r0.cpu.toFixed(1)}%, memory ${r0.memory.toFixed(1)} MB, free ${r0.free_memory} MB of ${r0.total_memory} MB`);

  section('1. fire-and-forget: continuous monitoring');
  const monitorRun = await bg.fireAndForget('monitor', 'track-metrics', { priority: 'background', samples: 6, intervalMs: 300 });
  log('submit', `fireAndForget -> ${JSON.stringify(monitorRun)}`);

  section('2. async with callback: generate tests');
  let testsDelivered;
  const testsReady = new Promise((resolve) => {
    testsDelivered = resolve;
  });
  const evalRun = await bg.executeWithCallback(
    'eval',
    'generate-tests',
    (err, result) => {
      if (err) log('callback', `Failed: ${err.message}`);
      else log('callback', `Tests ready: ${result.tests.length} (e.g. ${result.tests[0].id}: sha256^${result.tests[0].iterations}(${result.tests[0].input.slice(0, 8)}...) = ${result.tests[0].expected.slice(0, 12)}...)`);
      testsDelivered();
    },
    { priority: 'medium' },
  );
  log('submit', `executeWithCallback -> ${JSON.stringify(evalRun)}`);

  section('3. watched: long-running QA with progress');
  const { executionId } = await bg.executeWatched('qa', 'run-full-suite', { priority: 'high' });
  log('submit', `executeWatched -> ${executionId}`);
  let lastProgress = -1;
  // In a terminal the bar (fed by bg.watch) shows this; piped, one line per change.
  bg.on('progress-update', ({ executionId: id, progress, status, detail }) => {
    if (view.tty || id !== executionId || progress === lastProgress) return;
    lastProgress = progress;
    log('progress', `QA Progress: ${Math.round(progress)}% ${status}${detail ? ` (${detail})` : ''}`);
  });

  section('4. cancellation: a low-priority soak run, cancelled once it is under way');
  let quarterDone;
  const quarter = new Promise((resolve) => {
    quarterDone = resolve;
  });
  const soak = await bg.fireAndForget('qa', 'soak-suite', {
    priority: 'low',
    rounds: 4,
    onProgress: ({ progress }) => progress >= 20 && quarterDone(progress),
  });
  log('submit', `fireAndForget -> ${JSON.stringify(soak)}`);
  const q = bg.getQueueStatus();
  log('queue', `Queued: ${q.queued}, Running: ${q.running}/${q.max_concurrent}; queue: ${q.queue.map((i) => `${i.agent}:${i.priority}`).join(', ') || '(empty)'}`);
  // Cancel once a fifth of it is done (or give up if it ends first, so the demo cannot hang).
  const at = await Promise.race([quarter, bg.waitFor(soak.executionId).then(() => null)]);
  if (at === null) log('cancel', `${soak.executionId} ended before it could be cancelled`);
  log('active', bg.getActiveExecutions().map((x) => `${x.agent} ${x.id} ${x.mode} ${Math.round(x.progress)}%`).join(', '));
  const cancel = await bg.cancelExecution(soak.executionId);
  log('cancel', `cancelExecution(${soak.executionId})${at === null ? '' : ` at ${Math.round(at)}%`} -> ${JSON.stringify(cancel)}`);
  const soakFinal = await bg.waitFor(soak.executionId);
  log('cancel', `status: ${soakFinal.status}, progress ${Math.round(soakFinal.progress)}%, error: ${soakFinal.error}`);
  const again = await bg.cancelExecution(soak.executionId);
  log('cancel', `cancelling it again -> ${JSON.stringify(again)}`);

  section('5. parallel validation: executeMultiple');
  const artifact = existsSync(GUIDE)
    ? { artifact: path.basename(GUIDE), path: GUIDE }
    : { artifact: 'prd.md (generated)', source: generatedPrd() };
  log('validate', `artifact: ${artifact.path ? `${path.relative(ROOT, artifact.path)} (relative to the repository)` : artifact.artifact}`);
  bg.once('aggregation-started', (e) => log('aggregate', `${e.aggregationId} started: ${e.agents.join(', ')} -> ${e.executionIds.join(', ')}`));
  const validation = await bg.executeMultiple(['oracle', 'eval', 'validator'], 'validate-prd', {
    ...artifact,
    priority: 'critical',
    requiredSections: ['Purpose', 'Execution Modes', 'Priority Queue', 'API Reference', 'Example Integration'],
    consistencyCheck: (results) => {
      const sums = new Set(results.map((r) => r.result.sha256));
      return { consistent: sums.size === 1, reason: `${sums.size} distinct artifact digest(s) seen by the agents` };
    },
  });
  for (const r of validation.results) {
    const warn = r.result?.warnings?.length ? `; warnings: ${r.result.warnings.join('; ')}` : '';
    const checks = r.result?.names ? `: ${r.result.names.join('; ')}` : '';
    log('result', `${r.agent.padEnd(9)} ${r.status} in ${ms(r.duration)}${r.error ? `: ${r.error}` : checks}${warn}`);
  }
  const rep = validation.report;
  log('report', `total ${rep.total}, successful ${rep.successful}, failed ${rep.failed}, average ${rep.average_duration} ms, total ${rep.total_duration} ms`);
  log('report', `consistency: ${JSON.stringify(validation.consistent)}`);
  log('report', `Validation: ${rep.success_rate}% passed`);

  section('6. command agents: a real program with JSON-lines progress, and one that times out');
  const scan = await bg.executeWatched('scan', 'scan-sources', { priority: 'high', dir: path.join(ROOT, 'src'), delayMs: 15 });
  log('submit', `executeWatched('scan') -> ${scan.executionId}`);
  await waitUntilRunning(scan.executionId);
  await new Promise((r) => setTimeout(r, 150)); // let it run a little: CPU is measured since its start
  for (const x of bg.getActiveExecutions().filter((a) => a.pid !== undefined)) {
    log('active', `${x.agent} ${x.id}: pid ${x.pid}, CPU ${x.cpuPercent}%, RSS ${x.rssMb} MB`);
  }
  const slept = await bg.execute('sleep', '30', { timeout: 300 }).catch((err) => err);
  log('command', `execute('sleep', '30', { timeout: 300 }) -> ${slept.code}: the process group got SIGTERM`);
  const scanFinal = await bg.waitFor(scan.executionId);
  log('status', `${scan.executionId} (scan): ${scanFinal.status}, ${scanFinal.progress}%`);

  section('7. wrap-up: a direct execute(), wait for the callback and the watched run, shut down');
  const health = await bg.execute('monitor', 'health-check', { priority: 'high', samples: 2, intervalMs: 100 });
  log('execute', `execute('monitor', 'health-check') resolved with the agent's value: ${health.samples} samples, CPU max ${health.cpu.max.toFixed(1)}%`);
  await testsReady;
  const qaFinal = await bg.waitFor(executionId);
  log('status', `getExecutionStatus(${executionId}): ${qaFinal.status}, ${qaFinal.progress}%, ${ms(qaFinal.duration)}`);
  const monitorNow = bg.getExecutionStatus(monitorRun.executionId);
  log('status', `getExecutionStatus(${monitorRun.executionId}): ${monitorNow.status}, ${Math.round(monitorNow.progress)}%`);
  bg.once('shutting-down', (e) => log('shutdown', `shutting down (${e.mode}): ${e.running} running, ${e.queued} queued`));
  bg.once('shutdown-complete', (e) =>
    log('shutdown', `complete${e.forced ? ' (forced)' : ''}: ${e.completed} completed, ${e.failed} failed, ${e.cancelled} cancelled`),
  );
  await bg.shutdown();
  try {
    await bg.fireAndForget('monitor', 'too-late');
    log('FAILED', 'a submission after shutdown was accepted');
  } catch (err) {
    log('shutdown', `a submission after shutdown rejects: ${err.code}`);
  }

  // Every bg.watch() has ended by now (shutdown waited for the last execution).
  await Promise.all(following);
  view.stop();

  section('summary');
  summary();
  log('summary', `resource-threshold-exceeded events: ${thresholdEvents} (thresholds: CPU ${CONFIG.maxCpuPercent}%, memory ${CONFIG.maxMemoryMb} MB)`);
  log('summary', `done in ${Math.round(performance.now() - t0)} ms`);
}

/** Resolves once `id` runs (or has ended), polling its status. */
async function waitUntilRunning(id) {
  while (bg.getExecutionStatus(id).status === 'queued') await new Promise((r) => setTimeout(r, 10));
}

/** Every execution (final status from bg.watch), totals (bg.getStatus()), run times (bg.getStats()). */
function summary() {
  const s = bg.getStatus();
  const totals = `submitted ${s.submitted}: completed ${s.completed}, failed ${s.failed}, cancelled ${s.cancelled}; running ${s.running}, queued ${s.queued}`;
  const stats = bg.getStats().agents;
  const rows = [...runs.values()].map((r) => {
    const status = r.final?.status ?? r.status;
    const duration = r.final?.duration;
    return { ...r, status, duration: duration === undefined ? '?' : String(Math.round(duration)) };
  });
  const round1 = (x) => String(Math.round(x * 10) / 10);

  if (!view.tty) {
    for (const r of rows) {
      log('summary', `${r.id} ${r.agent} "${r.task}" [${r.mode}, ${r.priority}]: ${r.status} in ${r.duration} ms`);
    }
    log('summary', totals);
    for (const a of stats) {
      log('summary', `${a.agent}: ${a.runTime.count} run(s), run time p50 ${round1(a.runTime.p50)} ms, p90 ${round1(a.runTime.p90)} ms; queue wait p50 ${round1(a.queueWait.p50)} ms, p90 ${round1(a.queueWait.p90)} ms`);
    }
    return;
  }

  view.table(
    ['id', 'agent', 'task', 'mode', 'priority', 'status', 'duration ms'],
    rows.map((r) => [r.id, r.agent, r.task, r.mode, r.priority, view.paint(r.status, r.status), r.duration]),
    { align: [, , , , , , 'right'], footer: `totals: ${totals}` },
  );
  view.table(
    ['agent', 'runs', 'run p50 ms', 'run p90 ms', 'wait p50 ms', 'wait p90 ms'],
    stats.map((a) => [a.agent, a.runTime.count, round1(a.runTime.p50), round1(a.runTime.p90), round1(a.queueWait.p50), round1(a.queueWait.p90)]),
    { align: [, 'right', 'right', 'right', 'right', 'right'] },
  );
  log('summary', 'totals from bg.getStatus(); per-agent times from bg.getStats() (histograms, within 12.5 %)');
}

// ----- a stand-in artifact when the guide is not next to this checkout ------------------------

function generatedPrd() {
  const fence = '```';
  return [
    '# PRD: Background Validation',
    '',
    '## Purpose',
    'Validate artifacts in the background.',
    '',
    '## Execution Modes',
    `${fence}javascript`,
    "const { executionId } = await bg.fireAndForget('monitor', 'track-metrics', { priority: 'low' });",
    "await bg.executeWithCallback('eval', 'generate-tests', (err, result) => {}, { priority: 'medium' });",
    "const watched = await bg.executeWatched('qa', 'run-full-suite', { priority: 'high' });",
    fence,
    '',
    '## Priority Queue',
    `${fence}javascript`,
    '{ critical: 5, high: 4, medium: 3, low: 2, background: 1 }',
    fence,
    '',
    '## API Reference',
    `${fence}javascript`,
    "const result = await bg.executeMultiple(['oracle', 'eval', 'validator'], 'validate-prd', {});",
    'const status = bg.getExecutionStatus(executionId);',
    'const resources = bg.resourceMonitor.getStatus();',
    'await bg.shutdown();',
    fence,
    '',
    '## Example Integration',
    'See [the guide](https://example.invalid/background-execution-guide.md).',
    '',
  ].join('\n');
}

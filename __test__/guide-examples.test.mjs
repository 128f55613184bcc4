// Every JavaScript example of the old guide (/work/shared/seed/background-execution-guide.md),
// run against this package with the same calls and option objects. `console` is shadowed in
// each test so that what the examples print can be asserted.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import BackgroundExecutor from '../index.mjs';
import { test, exitIfWorkLeftBehind, sleep, waitUntil, runScript, ENTRY } from './helpers.mjs';

exitIfWorkLeftBehind();

function capture() {
  const lines = [];
  const fmt = (args) => args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
  return {
    lines,
    log: (...args) => lines.push(fmt(args)),
    error: (...args) => lines.push('ERROR ' + fmt(args)),
    warn: (...args) => lines.push('WARN ' + fmt(args)),
  };
}

const TESTS = ['unit: parser', 'unit: scheduler', 'integration: prd'];

/** The agents the guide's examples use. */
function registerGuideAgents(bg, calls = []) {
  bg.registerAgent('monitor', async (task, options) => {
    calls.push(['monitor', task, options]);
    await sleep(20);
    return { metrics: { cpu: 12, memory: 34 }, task };
  });
  bg.registerAgent('eval', async (task, options) => {
    calls.push(['eval', task, options]);
    await sleep(30);
    return { tests: [...TESTS], task };
  });
  bg.registerAgent('qa', async (task, options, { progress }) => {
    calls.push(['qa', task, options]);
    for (let p = 0; p < 100; p += 25) {
      progress(p);
      await sleep(40);
    }
    progress(100);
    return { passed: 120, failed: 0 };
  });
  bg.registerAgent('oracle', async (task, options) => {
    calls.push(['oracle', task, options]);
    await sleep(40);
    return { valid: true, artifact: options && options.artifact };
  });
  bg.registerAgent('validator', async (task, options) => {
    calls.push(['validator', task, options]);
    await sleep(10);
    return { traceable: true };
  });
  return bg;
}

/** The guide's constructor call (Concurrency Management). */
function guideExecutor() {
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 5,
    maxCpuPercent: 80,
    maxMemoryMb: 2048,
    throttleIfExceeded: true,
  });
  return bg;
}

test('Execution mode 1: fire-and-forget', async () => {
  const bg = guideExecutor();
  const calls = [];
  registerGuideAgents(bg, calls);
  await bg.initialize();
  try {
    const { executionId } = await bg.fireAndForget(
      'monitor',
      'track-metrics',
      { priority: 'low' }
    );
    assert.equal(typeof executionId, 'string');
    assert.equal(bg.getExecutionStatus(executionId).priority, 'low');
    // "Result saved when complete"
    await waitUntil(() => bg.getExecutionStatus(executionId).status === 'completed', 'monitor completed');
    assert.deepEqual(bg.getExecutionStatus(executionId).result, { metrics: { cpu: 12, memory: 34 }, task: 'track-metrics' });
    assert.deepEqual(calls[0], ['monitor', 'track-metrics', { priority: 'low' }]);
  } finally {
    await bg.shutdown();
  }
});

test('Execution mode 2: async with callback', async () => {
  const console = capture();
  const bg = guideExecutor();
  registerGuideAgents(bg);
  await bg.initialize();
  try {
    let calls = 0;
    await bg.executeWithCallback(
      'eval',
      'generate-test-datasets',
      (err, result) => {
        calls++;
        if (err) {
          console.error('Failed:', err);
        } else {
          console.log('Tests generated:', result);
        }
      },
      { priority: 'medium' }
    );
    await waitUntil(() => calls > 0, 'callback');
    assert.equal(calls, 1);
    assert.deepEqual(console.lines, [`Tests generated: ${JSON.stringify({ tests: TESTS, task: 'generate-test-datasets' })}`]);

    // error handling via callback: a failing agent's error reaches it (an unknown agent is
    // refused at submission instead)
    await assert.rejects(bg.executeWithCallback('nope', 't', () => {}), { code: 'ERR_AGENT_NOT_FOUND' });
    bg.registerAgent('datasets', async () => {
      throw new Error('dataset store unavailable');
    });
    await bg.executeWithCallback(
      'datasets',
      'generate-test-datasets',
      (err, result) => {
        calls++;
        if (err) {
          console.error('Failed:', err.message);
        } else {
          console.log('Tests generated:', result);
        }
      },
      { priority: 'medium' }
    );
    await waitUntil(() => calls > 1, 'error callback');
    assert.equal(console.lines[1], 'ERROR Failed: dataset store unavailable');
  } finally {
    await bg.shutdown();
  }
});

test('Execution mode 3: watched background with periodic status queries', async () => {
  const console = capture();
  const bg = guideExecutor();
  registerGuideAgents(bg);
  await bg.initialize();
  try {
    const { executionId } = await bg.executeWatched(
      'qa',
      'run-full-test-suite',
      { priority: 'high' }
    );

    // Get status periodically
    const seen = [];
    for (let i = 0; i < 4; i++) {
      const status = bg.getExecutionStatus(executionId);
      console.log(`Progress: ${status.progress}%`);
      seen.push(status.progress);
      await sleep(45);
    }
    for (const line of console.lines) assert.match(line, /^Progress: \d+(\.\d+)?%$/);
    assert.ok(seen.some((p) => p > 0), `progress moved: ${seen}`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i] >= seen[i - 1], `progress never goes back: ${seen}`);
    await bg.waitFor(executionId);
    const status = bg.getExecutionStatus(executionId);
    console.log(`Progress: ${status.progress}%`);
    assert.equal(console.lines.at(-1), 'Progress: 100%');
  } finally {
    await bg.shutdown();
  }
});

test('Priority queue: higher priority executions run first', async () => {
  const levels = {
    critical: 5,    // Eval test execution (blocking commits)
    high: 4,        // Oracle validation (blocking artifacts)
    medium: 3,      // Validator traceability checks
    low: 2,         // Monitor metrics collection
    background: 1   // QA supplemental tests
  };
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 1, priorityLevels: levels });
  registerGuideAgents(bg);
  const order = [];
  bg.on('execution-started', ({ task }) => order.push(task));
  try {
    await bg.fireAndForget('monitor', 'first-in');
    for (const p of ['background', 'low', 'medium', 'high', 'critical', 'medium']) {
      await bg.fireAndForget('validator', `${p}`, { priority: p });
    }
    await bg.onIdle();
    assert.deepEqual(order, ['first-in', 'critical', 'high', 'medium', 'medium', 'low', 'background']);
  } finally {
    await bg.shutdown();
  }
});

test('Concurrency management: never more than maxConcurrentAgents at once', async () => {
  const bg = new BackgroundExecutor({
    maxConcurrentAgents: 5,
    maxCpuPercent: 80,
    maxMemoryMb: 2048,
    throttleIfExceeded: true
  });
  let running = 0;
  let peak = 0;
  bg.registerAgent('oracle', async () => {
    running++;
    peak = Math.max(peak, running);
    await sleep(50);
    running--;
    return true;
  });
  try {
    const ps = [];
    for (let i = 0; i < 12; i++) ps.push(bg.execute('oracle', `t${i}`));
    await sleep(10);
    assert.equal(bg.getQueueStatus().running, 5);
    assert.equal(bg.getQueueStatus().queued, 7);
    await Promise.all(ps);
    assert.equal(peak, 5);
    assert.equal(bg.getStatus().max_concurrent, 5);
  } finally {
    await bg.shutdown();
  }
});

test('Resource monitoring: getStatus() numbers and the threshold-exceeded event', async () => {
  const console = capture();
  const bg = guideExecutor();
  await bg.initialize();
  try {
    const resources = bg.resourceMonitor.getStatus();

    console.log(`CPU: ${resources.cpu}%`);
    console.log(`Memory: ${resources.memory}MB`);
    console.log(`Free: ${resources.free_memory}MB`);

    for (const k of ['cpu', 'memory', 'free_memory']) {
      assert.equal(typeof resources[k], 'number', k);
      assert.ok(Number.isFinite(resources[k]), k);
      assert.ok(resources[k] >= 0, k);
    }
    assert.ok(resources.cpu <= 100);
    assert.ok(resources.memory > 1, 'this process uses more than 1 MB');
    assert.match(console.lines[0], /^CPU: \d+(\.\d+)?%$/);
    assert.match(console.lines[1], /^Memory: \d+(\.\d+)?MB$/);
    assert.match(console.lines[2], /^Free: \d+(\.\d+)?MB$/);
  } finally {
    await bg.shutdown();
  }

  // Monitor events: with a 1 MB memory limit the threshold is certainly exceeded
  const low = new BackgroundExecutor({ maxMemoryMb: 1, monitorIntervalMs: 50 });
  const seen = [];
  low.resourceMonitor.on('threshold-exceeded', (data) => {
    console.log('Resource threshold exceeded:', data);
    seen.push(data);
    // Auto-throttle if enabled
  });
  const relayed = [];
  low.on('resource-threshold-exceeded', (d) => relayed.push(d));
  await low.initialize();
  try {
    await waitUntil(() => seen.length > 0 && relayed.length > 0, 'threshold-exceeded');
    assert.ok(seen[0].exceeded.includes('memory'));
    assert.equal(typeof seen[0].cpu, 'number');
    assert.equal(typeof seen[0].memory, 'number');
    assert.ok(console.lines.some((l) => l.startsWith('Resource threshold exceeded: {')));
    await waitUntil(() => low.getQueueStatus().throttled === true, 'auto-throttle');
  } finally {
    await low.shutdown();
  }
});

test('Result aggregation: executeMultiple and the aggregation report', async () => {
  const console = capture();
  const bg = guideExecutor();
  const calls = [];
  registerGuideAgents(bg, calls);
  await bg.initialize();
  try {
    const result = await bg.executeMultiple(
      ['oracle', 'eval', 'validator'],
      'validate-artifact',
      { artifact: 'prd.md', priority: 'high' }
    );

    console.log('Success rate:', result.report.success_rate);
    console.log('Average duration:', result.report.average_duration);

    assert.equal(console.lines[0], 'Success rate: 100');
    assert.match(console.lines[1], /^Average duration: \d+(\.\d+)?$/);
    const r = result.report;
    assert.equal(r.total, 3);
    assert.equal(r.successful, 3);
    assert.equal(r.failed, 0);
    assert.equal(r.success_rate, 100);
    assert.equal(typeof r.total_duration, 'number');
    assert.ok(Math.abs(r.average_duration - r.total_duration / 3) < 1);
    assert.ok(r.total_duration >= 40 + 30 + 10 - 5, `${r.total_duration}`);
    assert.equal(r.consistency.consistent, true);
    assert.deepEqual(
      calls.map((c) => c[0]).sort(),
      ['eval', 'oracle', 'validator'],
    );
    for (const c of calls) assert.deepEqual(c.slice(1), ['validate-artifact', { artifact: 'prd.md', priority: 'high' }]);
    assert.deepEqual(result.results[0].result, { valid: true, artifact: 'prd.md' });
    assert.deepEqual(result.results[1].result.tests, TESTS);
  } finally {
    await bg.shutdown();
  }
});

test('Execution status: found, status, progress, duration, result', async () => {
  const console = capture();
  const bg = guideExecutor();
  registerGuideAgents(bg);
  await bg.initialize();
  try {
    const { executionId } = await bg.executeWatched('eval', 'generate-tests');
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

    assert.equal(console.lines.length, 4);
    assert.equal(console.lines[0], 'Status: completed');
    assert.equal(console.lines[1], 'Progress: 100');
    assert.match(console.lines[2], /^Duration: \d+(\.\d+)?$/);
    assert.equal(console.lines[3], `Result: ${JSON.stringify({ tests: TESTS, task: 'generate-tests' })}`);
    for (const s of ['queued', 'running', 'completed', 'failed', 'cancelled']) assert.equal(typeof s, 'string');
  } finally {
    await bg.shutdown();
  }
});

test('Queue management: getQueueStatus and getActiveExecutions', async () => {
  const console = capture();
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 2, throttleIfExceeded: true });
  registerGuideAgents(bg);
  await bg.initialize();
  try {
    await bg.executeWatched('qa', 'run-full-suite', { priority: 'high' });
    await bg.fireAndForget('monitor', 'track-metrics', { priority: 'low' });
    await bg.fireAndForget('oracle', 'validate', { priority: 'critical' });
    await bg.fireAndForget('validator', 'trace', { priority: 'background' });
    await sleep(60); // let qa report some progress; monitor (20 ms) is done, oracle running

    const queue = bg.getQueueStatus();

    console.log(`Queued: ${queue.queued}`);
    console.log(`Running: ${queue.running}/${queue.max_concurrent}`);

    queue.queue.forEach(item => {
      console.log(`- ${item.agent}: ${item.priority}`);
    });

    const active = bg.getActiveExecutions();

    active.forEach(exec => {
      console.log(`${exec.agent}: ${exec.progress}%`);
    });

    assert.match(console.lines[0], /^Queued: \d+$/);
    assert.match(console.lines[1], /^Running: [0-2]\/2$/);
    assert.equal(queue.queue.length, queue.queued);
    for (const item of queue.queue) assert.ok(console.lines.includes(`- ${item.agent}: ${item.priority}`));
    assert.equal(active.length, queue.running);
    const qaLine = console.lines.find((l) => l.startsWith('qa: '));
    assert.ok(qaLine, console.lines.join('\n'));
    assert.match(qaLine, /^qa: \d+(\.\d+)?%$/);
    assert.notEqual(qaLine, 'qa: 0%', 'qa reported progress');
  } finally {
    await bg.shutdown();
  }
});

test('Cancellation: cancelling a running execution, and a finished one', async () => {
  const console = capture();
  const bg = guideExecutor();
  registerGuideAgents(bg);
  bg.registerAgent('long', (task, options, { signal }) => new Promise((resolve, reject) => {
    const t = setTimeout(resolve, 10000);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  }));
  await bg.initialize();
  try {
    let { executionId } = await bg.fireAndForget('long', 'forever');
    await sleep(20);

    let result = await bg.cancelExecution(executionId);

    if (result.success) {
      console.log('Execution cancelled');
    } else {
      console.log('Cannot cancel:', result.error);
    }

    assert.equal(result.success, true);
    assert.deepEqual(console.lines, ['Execution cancelled']);
    assert.equal(bg.getExecutionStatus(executionId).status, 'cancelled');

    ({ executionId } = await bg.fireAndForget('validator', 'quick'));
    await bg.waitFor(executionId);

    result = await bg.cancelExecution(executionId);

    if (result.success) {
      console.log('Execution cancelled');
    } else {
      console.log('Cannot cancel:', result.error);
    }

    assert.deepEqual(result, { success: false, error: 'Cannot cancel execution in completed status' });
    assert.equal(console.lines[1], 'Cannot cancel: Cannot cancel execution in completed status');
  } finally {
    await bg.shutdown();
  }
});

test('Events: every listener of the guide fires with the data it needs', async () => {
  const bg = new BackgroundExecutor({ maxConcurrentAgents: 1, maxMemoryMb: 1, monitorIntervalMs: 50, progressIntervalMs: 30 });
  registerGuideAgents(bg);
  bg.registerAgent('broken', async () => { throw new Error('broken agent'); });
  bg.registerAgent('long', (task, options, { signal }) => new Promise((resolve, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason));
  }));
  const got = {};
  const add = (name) => (data) => (got[name] = got[name] || []).push(data);

  // Execution lifecycle
  bg.on('execution-started', add('execution-started'));
  bg.on('execution-completed', add('execution-completed'));
  bg.on('execution-failed', add('execution-failed'));
  bg.on('execution-cancelled', add('execution-cancelled'));

  // Queue events
  bg.on('execution-queued', add('execution-queued'));
  bg.on('queue-throttled', add('queue-throttled'));

  // Progress events (watched mode)
  bg.on('progress-update', add('progress-update'));

  // Aggregation events
  bg.on('aggregation-started', add('aggregation-started'));
  bg.on('aggregation-completed', add('aggregation-completed'));

  // Resource events
  bg.on('resource-threshold-exceeded', add('resource-threshold-exceeded'));

  await bg.initialize();
  try {
    await bg.executeWatched('qa', 'run-full-suite', { priority: 'high' });
    await bg.fireAndForget('broken', 'x');
    const { executionId } = await bg.fireAndForget('long', 'x');
    await bg.executeMultiple(['oracle', 'eval', 'validator'], 'validate-artifact', { artifact: 'prd.md', priority: 'high' }).then(
      (agg) => add('multiple')(agg),
    ).catch(() => {});
    // 'long' is queued behind the aggregation at 'low'; cancel it once it runs
    await waitUntil(() => bg.getExecutionStatus(executionId).status === 'running', 'long running');
    await bg.cancelExecution(executionId);
    await bg.onIdle();
    await waitUntil(() => (got['queue-throttled'] || []).length > 0, 'queue-throttled');
    for (const name of [
      'execution-started',
      'execution-completed',
      'execution-failed',
      'execution-cancelled',
      'execution-queued',
      'queue-throttled',
      'progress-update',
      'aggregation-started',
      'aggregation-completed',
      'resource-threshold-exceeded',
    ]) {
      assert.ok((got[name] || []).length > 0, `no ${name}`);
    }
    assert.equal(got['execution-queued'].length, 6);
    assert.equal(got['execution-completed'].length, 4);
    assert.equal(got['execution-failed'].length, 1);
    assert.equal(got['execution-failed'][0].error, 'broken agent');
    assert.equal(got['execution-cancelled'][0].executionId, executionId);
    assert.ok(got['progress-update'].every((u) => u.agent === 'qa'));
    assert.ok(got['progress-update'].some((u) => u.progress > 0 && u.progress < 100));
    assert.equal(got['aggregation-completed'][0].report.success_rate, 100);
  } finally {
    await bg.shutdown();
  }
});

test('Configuration: the guide constructor with priorityLevels, and the API reference calls', async () => {
  const config = {
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
  const bg = new BackgroundExecutor(config);
  await bg.initialize();
  registerGuideAgents(bg);
  const agent = 'eval';
  const task = 'generate-tests';
  const options = { priority: 'medium' };
  const callback = () => {};
  const agents = ['oracle', 'eval', 'validator'];
  try {
    {
      const { executionId } = await bg.fireAndForget(agent, task, options);
      assert.match(executionId, /\S/);
    }
    await bg.executeWithCallback(agent, task, callback, options);
    {
      const { executionId } = await bg.executeWatched(agent, task, options);
      {
        const status = bg.getExecutionStatus(executionId);
        assert.equal(status.found, true);
      }
      {
        const result = await bg.cancelExecution(executionId);
        assert.equal(typeof result.success, 'boolean');
      }
    }
    {
      const result = await bg.executeMultiple(agents, task, options);
      assert.equal(result.report.total, 3);
    }
    {
      const queue = bg.getQueueStatus();
      assert.equal(queue.max_concurrent, 5);
    }
    {
      const active = bg.getActiveExecutions();
      assert.ok(Array.isArray(active));
    }
    {
      const status = bg.getStatus();
      for (const k of ['running', 'queued', 'max_concurrent', 'active_processes', 'resources']) assert.ok(k in status, k);
      assert.equal(typeof status.resources.cpu, 'number');
    }
  } finally {
    await bg.shutdown();
  }
});

test('Integration with orchestrator: executeMultiple from an event handler', async () => {
  const bg = guideExecutor();
  registerGuideAgents(bg);
  await bg.initialize();
  const orchestrator = new EventEmitter();
  const done = new Promise((resolve) => bg.once('aggregation-completed', resolve));
  try {
    orchestrator.on('artifact-created', async ({ artifact }) => {
      // Validate in background
      await bg.executeMultiple(
        ['oracle', 'eval', 'validator'],
        'validate-artifact',
        { artifact, priority: 'high' }
      );
    });
    orchestrator.emit('artifact-created', { artifact: 'architecture.md' });
    const { results, report } = await done;
    assert.equal(report.success_rate, 100);
    assert.deepEqual(results.map((r) => r.agent), ['oracle', 'eval', 'validator']);
    assert.equal(results[0].result.artifact, 'architecture.md');
  } finally {
    await bg.shutdown();
  }
});

// ----------------------------------------------------------- the full "Example Integration"

const AGENTS_SOURCE = `
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
bg.registerAgent('monitor', async () => { await sleep(MONITOR_MS); process.stdout.write('MONITOR-DONE\\n'); return { ok: true }; });
bg.registerAgent('eval', async () => { await sleep(30); return { tests: ['a', 'b', 'c'] }; });
bg.registerAgent('qa', async (task, options, { progress }) => {
  for (let p = 0; p < 100; p += 20) { progress(p); await sleep(40); }
  return { passed: true };
});
bg.registerAgent('oracle', async () => { await sleep(40); return { valid: true }; });
bg.registerAgent('validator', async () => { await sleep(20); return { traceable: true }; });
`;

// The guide's example, verbatim except the import line and the agent registration.
function exampleIntegration(monitorMs) {
  return `
import BackgroundExecutor from '${ENTRY}';


const bg = new BackgroundExecutor({
  maxConcurrentAgents: 5,
  maxCpuPercent: 80
});

await bg.initialize();
const MONITOR_MS = ${monitorMs};
${AGENTS_SOURCE}
// Continuous monitoring (fire-and-forget)
await bg.fireAndForget('monitor', 'track-metrics', {
  priority: 'background'
});

// Generate tests with notification
await bg.executeWithCallback(
  'eval',
  'generate-tests',
  (err, result) => {
    if (!err) {
      console.log('Tests ready:', result.tests.length);
    }
  },
  { priority: 'medium' }
);

// Long-running QA with progress
const { executionId } = await bg.executeWatched(
  'qa',
  'run-full-suite',
  { priority: 'high' }
);

bg.on('progress-update', ({ executionId: id, progress }) => {
  if (id === executionId) {
    console.log(\`QA Progress: \${progress}%\`);
  }
});

// Parallel validation
const validation = await bg.executeMultiple(
  ['oracle', 'eval', 'validator'],
  'validate-prd',
  { artifact: 'prd.md', priority: 'critical' }
);

console.log(\`Validation: \${validation.report.success_rate}% passed\`);

// Monitor resources
bg.on('resource-threshold-exceeded', ({ cpu, memory }) => {
  console.log(\`Resources high - CPU: \${cpu}%, Memory: \${memory}MB\`);
});

// Cleanup on exit
process.on('SIGINT', async () => {
  await bg.shutdown();
  process.exit(0);
});
`;
}

test('Example Integration runs as written and the process exits by itself when the work is done', async () => {
  const out = await runScript(exampleIntegration(200), { killAfterMs: 15000 });
  assert.equal(out.killed, false, 'the example never exited');
  assert.equal(out.code, 0, out.stderr);
  const lines = out.stdout.trim().split('\n');
  assert.ok(lines.includes('Tests ready: 3'), out.stdout);
  assert.ok(lines.includes('Validation: 100% passed'), out.stdout);
  assert.ok(lines.includes('MONITOR-DONE'), 'the fire-and-forget monitor finished before the exit');
  const qa = lines.filter((l) => l.startsWith('QA Progress: '));
  assert.ok(qa.length >= 2, out.stdout);
  for (const l of qa) assert.match(l, /^QA Progress: \d+(\.\d+)?%$/);
  assert.equal(qa.at(-1), 'QA Progress: 100%');
});

test('Example Integration: SIGINT runs the cleanup (shutdown) and exits 0', async () => {
  let sent = false;
  const out = await runScript(exampleIntegration(1500), {
    killAfterMs: 15000,
    onStdout: (stdout, child) => {
      if (!sent && stdout.includes('Validation:')) {
        sent = true;
        // Node needs a moment after process.on('SIGINT') before the handler really catches
        // the signal (seen with plain Node too); the monitor agent runs for 1.5 s anyway.
        setTimeout(() => child.kill('SIGINT'), 150);
      }
    },
  });
  const info = `code ${out.code} signal ${out.signal}\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`;
  assert.equal(sent, true, info);
  assert.equal(out.killed, false, info);
  assert.equal(out.code, 0, info);
  // default shutdown lets the running monitor finish before exiting
  assert.match(out.stdout, /MONITOR-DONE/);
});

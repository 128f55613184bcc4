// The durable store across processes: this test process submits (it registers no agents, so it
// never claims), worker processes (__test__/durable-fx/worker.mjs) run the work. Outcomes,
// queries, events and cancellation cross the process boundary through the store only.
// Times are compared across processes on the system's monotonic clock (process.hrtime, in ms):
// a wall-clock step between two processes' starts does not shift one against the other.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, tempDir, sleep, settleOf, isAlive } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach({ timeoutMs: 50 });

const FX = (name) => fileURLToPath(new URL(`./durable-fx/${name}`, import.meta.url));
const now = () => Number(process.hrtime.bigint()) / 1e6;

/** A store URL in a new temporary directory, removed after the test. */
function newStore(t) {
  const dir = tempDir(t, 'bmad-durable-proc-');
  return `sqlite:${join(dir, 'executions.db')}`;
}

/** A submitter on `url`: no agents, so it claims nothing. Records every event it emits. */
function submitter(url, config = {}) {
  const bg = create({ store: url, ...config });
  const events = [];
  for (const name of ['execution-queued', 'execution-started', 'execution-completed', 'execution-failed', 'execution-cancelled', 'execution-retry']) {
    bg.on(name, (e) => events.push({ name, id: e.executionId, e }));
  }
  return { bg, events };
}

/**
 * Runs `durable-fx/<script>` with `args` as a child node. Returns `{ child, lines, waitFor,
 * exited }`: `lines` are its stdout lines parsed as JSON (others kept as strings);
 * `waitFor(pred, what, ms)` resolves with the first line matching `pred`. The child is killed
 * (SIGKILL) after the test if still running.
 */
function startFx(t, script, args) {
  const child = spawn(process.execPath, [FX(script), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  const waiters = new Set();
  let buf = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        line = text;
      }
      lines.push(line);
      for (const w of [...waiters]) w();
    }
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  exited.then(() => {
    for (const w of [...waiters]) w();
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const waitFor = (pred, what, ms = 8000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = lines.find(pred);
        if (found !== undefined) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiters.delete(check);
          clearTimeout(timer);
          reject(new Error(`${script} exited (${child.exitCode ?? child.signalCode}) before ${what}; stderr: ${stderr}`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out after ${ms} ms waiting for ${what} from ${script}; lines: ${JSON.stringify(lines)}; stderr: ${stderr}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { child, lines, waitFor, exited, stderr: () => stderr };
}

/** A worker process on `url`, ready (its store open). `stop()` shuts it down through its stdin. */
async function startWorker(t, url, config) {
  const w = startFx(t, 'worker.mjs', config === undefined ? [url] : [url, JSON.stringify(config)]);
  const ready = await w.waitFor((l) => l.event === 'ready', 'ready');
  w.pid = ready.pid;
  w.events = (id) => w.lines.filter((l) => l.id === id && typeof l.event === 'string' && l.event.startsWith('execution-')).map((l) => l.event);
  w.stop = async () => {
    w.child.stdin.end();
    const timer = setTimeout(() => w.child.kill('SIGKILL'), 5000);
    const r = await w.exited;
    clearTimeout(timer);
    return r;
  };
  return w;
}

// ----- outcomes cross processes --------------------------------------------------------------

test("a submitter with no agents: execute() and executeWithCallback settle when a worker process runs them", async (t) => {
  const url = newStore(t);
  const { bg, events } = submitter(url);
  await bg.initialize();
  const worker = await startWorker(t, url);
  assert.notEqual(worker.pid, process.pid);

  const ok = bg.execute('echo', 'hello', { meta: { n: 1 } });
  const bad = settleOf(bg.execute('fail', 'boom'));
  const cbOk = new Promise((resolve) => {
    bg.executeWithCallback('echo', 'by callback', (err, result) => resolve({ err, result })).catch((err) => resolve({ rejected: err }));
  });
  const cbBad = new Promise((resolve) => {
    bg.executeWithCallback('fail', 'cb boom', (err, result) => resolve({ err, result })).catch((err) => resolve({ rejected: err }));
  });

  const value = await ok;
  assert.deepEqual(value, { echoed: 'hello', options: { meta: { n: 1 } }, attempt: 1, id: 'exec-d1', pid: worker.pid });

  const failed = await bad;
  assert.equal(failed.ok, false);
  assert.ok(failed.value instanceof Error, 'an Error rebuilt from the store');
  assert.equal(failed.value.message, 'failed boom');
  assert.equal(failed.value.code, 'E_AGENT_FAILED');
  assert.equal(failed.value.detail, 7);

  const c1 = await cbOk;
  assert.equal(c1.rejected, undefined);
  assert.equal(c1.err, null);
  assert.equal(c1.result.echoed, 'by callback');
  assert.equal(c1.result.pid, worker.pid);

  const c2 = await cbBad;
  assert.equal(c2.rejected, undefined);
  assert.ok(c2.err instanceof Error);
  assert.equal(c2.err.message, 'failed cb boom');
  assert.equal(c2.err.code, 'E_AGENT_FAILED');
  assert.equal(c2.result, undefined);

  // Events: the runner emits the execution events; the submitter only its execution-queued.
  const ids = ['exec-d1', 'exec-d2', 'exec-d3', 'exec-d4'];
  for (const id of ids) {
    await worker.waitFor((l) => /^execution-(completed|failed)$/.test(l.event) && l.id === id, `the end of ${id} in the worker`);
  }
  assert.deepEqual(worker.events('exec-d1'), ['execution-started', 'execution-completed']);
  assert.deepEqual(worker.events('exec-d2'), ['execution-started', 'execution-failed']);
  assert.deepEqual(worker.events('exec-d3'), ['execution-started', 'execution-completed']);
  assert.deepEqual(worker.events('exec-d4'), ['execution-started', 'execution-failed']);
  assert.equal(worker.lines.find((l) => l.event === 'execution-failed' && l.id === 'exec-d2').code, 'E_AGENT_FAILED');
  await sleep(50);
  assert.deepEqual(
    events.map((e) => [e.name, e.id]),
    ids.map((id) => ['execution-queued', id]),
  );
  assert.ok(events.every((e) => e.e.durable === true));
  // The submitter's view of the store matches.
  const s = await bg.fetchExecutionStatus('exec-d2');
  assert.equal(s.status, 'failed');
  assert.equal(s.error, 'failed boom');
  assert.equal(s.errorObject.code, 'E_AGENT_FAILED');
  assert.ok(s.owner, 'the owner is recorded');
  await worker.stop();
});

test('a submission is durable once acknowledged: a submitter killed right after is not lost; waitFor, watch and fetchExecutionStatus work for its id', async (t) => {
  const url = newStore(t);
  // Another process submits and is SIGKILLed as soon as it prints the acknowledged id.
  const sub = startFx(t, 'submit.mjs', [url, 'steps', '400']);
  const { executionId } = await sub.waitFor((l) => typeof l.executionId === 'string', 'the acknowledged id');
  sub.child.kill('SIGKILL');
  await sub.exited;
  assert.equal(executionId, 'exec-d1');

  const { bg, events } = submitter(url);
  const queued = await bg.fetchExecutionStatus(executionId);
  assert.equal(queued.found, true);
  assert.equal(queued.status, 'queued');
  assert.equal(queued.agent, 'steps');
  assert.equal(queued.task, '400');
  assert.equal(queued.mode, 'fire-and-forget');
  assert.equal(queued.durable, true);
  // getExecutionStatus only knows what this process submitted or ran.
  assert.deepEqual(bg.getExecutionStatus(executionId), { found: false });

  const watched = [];
  const watching = (async () => {
    for await (const s of bg.watch(executionId)) watched.push(s);
  })();
  const waited = bg.waitFor(executionId);
  await sleep(50);
  const worker = await startWorker(t, url);
  await worker.waitFor((l) => l.event === 'progress' && l.id === executionId, 'progress reported');
  // Progress is stored by the worker and read here.
  let running;
  const end = Date.now() + 3000;
  do {
    running = await bg.fetchExecutionStatus(executionId);
    if (running.status === 'running' && running.progress === 40) break;
    await sleep(10);
  } while (Date.now() < end);
  assert.equal(running.status, 'running');
  assert.equal(running.progress, 40);
  assert.equal(running.attempt, 1);

  const final = await waited;
  assert.equal(final.found, true);
  assert.equal(final.executionId, executionId);
  assert.equal(final.status, 'completed');
  assert.equal(final.result, 'stepped');
  await watching;
  assert.equal(watched[0].status, 'queued', 'watch yields where it stands first');
  assert.equal(watched.at(-1).status, 'completed', 'then the final status');
  assert.equal(watched.at(-1).result, 'stepped');
  const fetched = await bg.fetchExecutionStatus(executionId);
  assert.equal(fetched.status, 'completed');
  assert.equal(fetched.progress, 100);
  assert.equal(fetched.result, 'stepped');
  assert.ok(fetched.finishedAt >= fetched.startedAt);
  // This process emitted nothing for an execution it neither submitted nor ran.
  await worker.waitFor((l) => l.event === 'execution-completed' && l.id === executionId, 'execution-completed in the worker');
  assert.deepEqual(events, []);
  assert.deepEqual(worker.events(executionId), ['execution-started', 'execution-completed']);
  await worker.stop();
});

// ----- cancellation across processes ---------------------------------------------------------

test("cancelExecution(id) from the submitter aborts the agent's signal in the worker process within 200 ms", async (t) => {
  const url = newStore(t);
  const { bg, events } = submitter(url);
  await bg.initialize();
  const worker = await startWorker(t, url);
  const p = settleOf(bg.execute('hold', 'forever'));
  const started = await worker.waitFor((l) => l.event === 'hold-started', 'the agent started');
  const id = started.id;
  assert.equal(id, 'exec-d1');
  await sleep(50);
  const t0 = now();
  const answer = await bg.cancelExecution(id);
  assert.deepEqual(answer, { success: true, executionId: id, previousStatus: 'running' });
  const aborted = await worker.waitFor((l) => l.event === 'hold-aborted' && l.id === id, 'the signal aborted');
  const latency = aborted.at - t0;
  t.diagnostic(`signal aborted in the worker ${latency.toFixed(1)} ms after cancelExecution()`);
  assert.ok(latency >= 0 && latency < 200, `the signal aborted ${latency.toFixed(1)} ms after cancelExecution()`);
  assert.equal(aborted.code, 'ERR_EXECUTION_CANCELLED');

  const r = await p;
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  const s = await bg.fetchExecutionStatus(id);
  assert.equal(s.status, 'cancelled');
  assert.equal(s.result, null, 'the agent\'s late value is not stored');
  await worker.waitFor((l) => l.event === 'execution-cancelled' && l.id === id, 'execution-cancelled in the worker');
  assert.deepEqual(worker.events(id), ['execution-started', 'execution-cancelled']);
  assert.deepEqual(
    events.map((e) => e.name),
    ['execution-queued'],
    'the submitter emits no end event for an execution another process ran',
  );
  // A second cancel finds it ended.
  const again = await bg.cancelExecution(id);
  assert.equal(again.success, false);
  await worker.stop();
});

test('an execution cancelled from another process while its agent keeps the event loop busy ends cancelled: the late value is discarded, everywhere', async (t) => {
  const url = newStore(t);
  const { bg, events } = submitter(url);
  await bg.initialize();
  const worker = await startWorker(t, url);
  // The agent returns once this file exists: made after the cancel was answered.
  const release = join(tempDir(t, 'bmad-durable-busy-'), 'release');
  const p = settleOf(bg.execute('busy', release));
  const started = await worker.waitFor((l) => l.event === 'busy-started', 'the agent started');
  const answer = await bg.cancelExecution(started.id);
  writeFileSync(release, '');
  assert.deepEqual(answer, { success: true, executionId: started.id, previousStatus: 'running' });
  const r = await p;
  assert.equal(r.ok, false, `execute() rejects: ${JSON.stringify(r.value)}`);
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  const s = await bg.fetchExecutionStatus(started.id);
  assert.equal(s.status, 'cancelled');
  assert.equal(s.result, null, 'the late value is not stored');
  assert.equal(s.errorObject.code, 'ERR_EXECUTION_CANCELLED');
  // The worker ran it to its end and reports what the store recorded.
  await worker.waitFor((l) => l.event === 'execution-cancelled' && l.id === started.id, 'execution-cancelled in the worker');
  assert.deepEqual(worker.events(started.id), ['execution-started', 'execution-cancelled']);
  assert.deepEqual(
    events.map((e) => e.name),
    ['execution-queued'],
  );
  await worker.stop();
});

test('a command agent cancelled from another process: its process is gone within ~200 ms', async (t) => {
  // The worker finds its command's pid in /proc.
  if (process.platform !== 'linux') return t.skip('finds the command process in /proc: Linux only');
  const url = newStore(t);
  const { bg } = submitter(url);
  await bg.initialize();
  const worker = await startWorker(t, url);
  const { executionId } = await bg.fireAndForget('sleeper', 'x');
  const { pid } = await worker.waitFor((l) => l.event === 'command-pid' && l.id === executionId, 'the command pid');
  assert.equal(typeof pid, 'number', 'the worker found its sleep child');
  assert.ok(isAlive(pid));
  await sleep(50);
  assert.ok(isAlive(pid), 'still running before the cancel');
  const t0 = performance.now();
  const answer = await bg.cancelExecution(executionId);
  assert.equal(answer.success, true);
  assert.equal(answer.previousStatus, 'running');
  while (isAlive(pid) && performance.now() - t0 < 2000) await sleep(2);
  const took = performance.now() - t0;
  t.diagnostic(`command process gone ${took.toFixed(1)} ms after cancelExecution()`);
  assert.ok(!isAlive(pid), 'the command process is gone');
  assert.ok(took < 300, `the command process was gone ${took.toFixed(1)} ms after cancelExecution()`);
  // Reaped by the worker: kill(pid, 0) fails.
  const reapEnd = Date.now() + 2000;
  let reaped = false;
  while (!reaped && Date.now() < reapEnd) {
    try {
      process.kill(pid, 0);
      await sleep(5);
    } catch (err) {
      reaped = err.code === 'ESRCH';
    }
  }
  assert.ok(reaped, 'process.kill(pid, 0) throws ESRCH');
  const final = await bg.waitFor(executionId);
  assert.equal(final.status, 'cancelled');
  await worker.stop();
});

test('a queued execution cancelled from another process ends cancelled and no worker ever runs it', async (t) => {
  const url = newStore(t);
  const { bg, events } = submitter(url);
  await bg.initialize();
  const p = settleOf(bg.execute('echo', 'never'));
  await sleep(20);
  const id = 'exec-d1';
  assert.equal((await bg.fetchExecutionStatus(id)).status, 'queued');

  const canceller = startFx(t, 'cancel.mjs', [url, id]);
  const out = await canceller.waitFor((l) => l.result !== undefined, 'the cancel answer');
  assert.deepEqual(out.result, { success: true, executionId: id, previousStatus: 'queued' });
  // Nobody runs it: the cancelling process reports its end.
  assert.deepEqual(out.events, [{ event: 'execution-cancelled', id, code: 'ERR_EXECUTION_CANCELLED' }]);
  assert.equal((await canceller.exited).code, 0);

  const r = await p;
  assert.equal(r.ok, false, 'the submitter\'s execute() settles with the cancellation');
  assert.equal(r.value.code, 'ERR_EXECUTION_CANCELLED');
  assert.equal((await bg.fetchExecutionStatus(id)).status, 'cancelled');

  // A worker started now runs later work, never the cancelled one.
  const worker = await startWorker(t, url);
  const later = await bg.execute('echo', 'later');
  assert.equal(later.id, 'exec-d2');
  await sleep(100);
  assert.deepEqual(worker.events(id), []);
  assert.equal(worker.lines.some((l) => l.event === 'execution-started' && l.id === id), false);
  const s = await bg.fetchExecutionStatus(id);
  assert.equal(s.status, 'cancelled');
  assert.equal(s.attempt, 0, 'never attempted');
  assert.equal(
    events.filter((e) => e.id === id && e.name !== 'execution-queued').length,
    0,
    'the submitter did not end it itself',
  );
  await worker.stop();
});

// ----- claims across processes ---------------------------------------------------------------

test('each worker claims only agents it registered; two workers share the queue without running anything twice', async (t) => {
  const url = newStore(t);
  const { bg } = submitter(url);
  await bg.initialize();
  const [w1, w2] = await Promise.all([startWorker(t, url, { maxConcurrentAgents: 2 }), startWorker(t, url, { maxConcurrentAgents: 2 })]);
  const n = 40;
  const results = await Promise.all(Array.from({ length: n }, (_, i) => bg.execute('echo', `t${i}`)));
  assert.deepEqual(
    results.map((r) => r.echoed),
    Array.from({ length: n }, (_, i) => `t${i}`),
  );
  assert.ok(results.every((r) => r.pid === w1.pid || r.pid === w2.pid));
  assert.ok(results.every((r) => r.attempt === 1));
  // Each execution started exactly once, in one of the workers (their event lines may come
  // after the outcome reached this process: wait for every end line first).
  const endedIn = (w) => w.lines.filter((l) => l.event === 'execution-completed').length;
  const end = Date.now() + 5000;
  while (endedIn(w1) + endedIn(w2) < n && Date.now() < end) await sleep(10);
  const startedIn = (w) => w.lines.filter((l) => l.event === 'execution-started').map((l) => l.id);
  const all = [...startedIn(w1), ...startedIn(w2)].sort();
  assert.deepEqual(all, results.map((r) => r.id).sort());
  // An agent neither registered stays queued.
  const { executionId } = await bg.fireAndForget('nobody-registers-this', 'x');
  await sleep(200);
  assert.equal((await bg.fetchExecutionStatus(executionId)).status, 'queued');
  await Promise.all([w1.stop(), w2.stop()]);
});

// An idle runner on PostgreSQL leaves a claim for its free slots with its store's thread,
// which runs it as soon as work is announced: work from elsewhere is claimed without a
// round trip through the runner's JS thread. The claim is taken back when it would claim
// more than the runner may run now (paused, fewer slots, shutting down).
import assert from 'node:assert/strict';
import { shutDownAfterEach, waitUntil, sleep, runScript, ENTRY } from './helpers.mjs';
import BackgroundExecutor from '../index.mjs';
import { pgTest, sql } from './durable/pg-proxy.mjs';
import { schemas, inState, heldAgent } from './durable/held.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
const fresh = schemas('parked');

const make = (url, config = {}) => create({ store: url, ...config });

/** A runner of a held agent and a submitter on a fresh schema, both open; the runner idle. */
async function idleRunner(config) {
  const { schema, url } = fresh();
  const held = heldAgent();
  const runner = make(url, config);
  runner.registerAgent('held', held.fn);
  await runner.initialize();
  const submitter = make(url);
  await submitter.initialize();
  // Idle: its first claims found nothing, and its claim waits in its store's thread.
  await sleep(100);
  return { schema, url, held, runner, submitter };
}

async function submit(submitter, n) {
  const ids = [];
  for (let i = 0; i < n; i++) ids.push((await submitter.fireAndForget('held', `t${i}`)).executionId);
  return ids;
}

pgTest("an idle runner claims work from elsewhere while its JS thread is blocked", async () => {
  const { schema, held, submitter } = await idleRunner({ maxConcurrentAgents: 4 });
  const submitted = submitter.fireAndForget('held', 'blocked');
  await Promise.resolve(); // the submission's batch goes to the submitter's store thread
  // From here until the loop ends, no JS runs in this process: neither executor's. The
  // runner's store thread hears the submission's commit and claims it on its own.
  const until = Date.now() + 5000;
  let running = 0;
  while (running === 0 && Date.now() < until) running = inState(schema, 1);
  assert.equal(running, 1, 'claimed by the runner before its JS thread could ask');
  const { executionId } = await submitted;
  held.release();
  const final = await submitter.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed');
  assert.equal(held.calls.size, 1);
});

pgTest('a paused runner claims nothing submitted elsewhere; resumed, it runs each once', async () => {
  const { schema, held, runner, submitter } = await idleRunner({ maxConcurrentAgents: 4 });
  runner.pause();
  const ids = await submit(submitter, 3);
  await sleep(400);
  assert.equal(inState(schema, 0), 3, 'all still queued in the store');
  assert.equal(held.calls.size, 0);
  held.release();
  runner.resume();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.found && f.status),
    ['completed', 'completed', 'completed'],
  );
  assert.equal(held.calls.size, 3);
});

pgTest('a runner whose concurrency is lowered claims for its new slots only', async () => {
  const { schema, held, runner, submitter } = await idleRunner({ maxConcurrentAgents: 4 });
  runner.setConcurrency(1);
  const ids = await submit(submitter, 4);
  await waitUntil(() => held.running === 1, 'one agent runs');
  await sleep(400);
  assert.equal(inState(schema, 1), 1, 'one claimed: the claim for four was taken back');
  assert.equal(inState(schema, 0), 3);
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(held.maxRunning, 1);
});

pgTest('a runner shut down while idle leaves what is submitted meanwhile to the others, uncounted', async () => {
  const { schema, url, held, runner, submitter } = await idleRunner({ maxConcurrentAgents: 4 });
  const closing = runner.shutdown({ timeoutMs: 2000 });
  const ids = await submit(submitter, 3);
  await closing;
  assert.equal(held.calls.size, 0, 'nothing ran on the runner that shut down');
  assert.equal(inState(schema, 0), 3, 'all queued');
  assert.deepEqual(sql(`SELECT json_agg(DISTINCT attempt) FROM "${schema}".bmad_executions`), [0], 'no attempt counted');
  const next = make(url, { maxConcurrentAgents: 4 });
  next.registerAgent('held', async (task) => `next ${task}`);
  await next.initialize();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.deepEqual(
    finals.map((f) => f.found && f.result),
    ['next t0', 'next t1', 'next t2'],
  );
});

pgTest('a global limit set elsewhere holds on a runner that had found none', async () => {
  const { schema, url, held, submitter } = await idleRunner({ maxConcurrentAgents: 8 });
  // Another executor limits the agent to 2 across every executor, and submits to it.
  const limiter = make(url);
  limiter.registerAgent('held', held.fn, { globalConcurrency: 2 });
  await limiter.initialize();
  limiter.pause(); // it sets the limit; the runner runs them
  const ids = [];
  for (let i = 0; i < 6; i++) ids.push((await limiter.fireAndForget('held', `g${i}`)).executionId);
  const submitted = Date.now();
  let most = 0;
  const until = Date.now() + 3000;
  while (Date.now() < until && held.running < 2) {
    most = Math.max(most, inState(schema, 1));
    await sleep(20);
  }
  for (let i = 0; i < 20; i++) {
    most = Math.max(most, inState(schema, 1));
    await sleep(20);
  }
  assert.equal(held.running, 2, 'two run');
  // The limit's notice makes the runner's next claim take the lock: not a second later.
  assert.ok(held.startedAt - submitted < 1000, `started ${held.startedAt - submitted} ms after the submissions`);
  assert.equal(most, 2, 'never more than the limit claimed');
  held.release();
  const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
  assert.ok(finals.every((f) => f.found && f.status === 'completed'));
  assert.equal(held.maxRunning, 2);
});

// Closing waits for the parked claim's answer: Node.js must stay alive for it, not more.
pgTest('an idle runner shuts down at once, its parked claim answered', async () => {
  const { url } = fresh();
  const bg = new BackgroundExecutor({ store: url, throttleIfExceeded: false });
  bg.registerAgent('held', async () => 1);
  await bg.initialize();
  await sleep(50);
  const t0 = Date.now();
  await bg.shutdown({ timeoutMs: 2000 });
  assert.ok(Date.now() - t0 < 1500, `shut down in ${Date.now() - t0} ms`);
});

pgTest('a submission of its own right after registering its agent starts at once on an idle runner', async () => {
  const { runner, submitter } = await idleRunner({ maxConcurrentAgents: 4 });
  // Registering changes what the runner claims: its parked claim runs (and finds nothing)
  // just before the submission is stored, which its own store thread is not told of.
  for (let i = 0; i < 3; i++) {
    await sleep(300); // idle: the store's fallback look is further away each time
    runner.registerAgent(`late${i}`, async (task) => `ran ${task}`);
    const t0 = Date.now();
    assert.equal(await runner.execute(`late${i}`, `r${i}`), `ran r${i}`);
    assert.ok(Date.now() - t0 < 500, `round ${i}: ran ${Date.now() - t0} ms after its submission`);
  }
  assert.ok(submitter);
});

pgTest('a process that ran no agent, once it registers one, runs work submitted elsewhere at once', async () => {
  const { url } = fresh();
  const late = make(url, { maxConcurrentAgents: 4 });
  await late.initialize();
  const submitter = make(url);
  await submitter.initialize();
  await sleep(300); // idle: the store's fallback look is further away
  const ran = [];
  late.registerAgent('late', async (task) => {
    ran.push(task);
    return `late ran ${task}`;
  });
  await sleep(50);
  const t0 = Date.now();
  const { executionId } = await submitter.fireAndForget('late', 'x');
  const final = await submitter.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed');
  assert.equal(final.result, 'late ran x');
  assert.deepEqual(ran, ['x']);
  assert.ok(Date.now() - t0 < 1000, `ran ${Date.now() - t0} ms after its submission`);
});

pgTest('executions started without a claim (durable: false) take slots a parked claim had counted', async () => {
  const { schema, held, runner, submitter } = await idleRunner({ maxConcurrentAgents: 2 });
  const local = [runner.execute('held', 'here 1', { durable: false }), runner.execute('held', 'here 2', { durable: false })];
  await waitUntil(() => held.running === 2, 'both slots taken by executions in memory');
  const [id] = await submit(submitter, 1);
  await sleep(400);
  assert.equal(inState(schema, 0), 1, 'no slot is free: the stored execution stays queued');
  held.release();
  await Promise.all(local);
  const final = await submitter.waitFor(id);
  assert.equal(final.found && final.status, 'completed');
});

pgTest('a process that never called initialize() claims nothing it cannot run before it exits', async (t) => {
  const { schema, url } = fresh();
  const submitter = make(url);
  await submitter.initialize();
  // The child runs one execution of its own through the store, then its last JS is a busy
  // second while the parent submits; then its event loop is empty and it exits.
  let submitted = null;
  const child = runScript(
    `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
     const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, throttleIfExceeded: false });
     bg.registerAgent('job', async (task) => 'child ' + task);
     console.log(await bg.execute('job', 'own'));
     await new Promise((r) => setTimeout(r, 200));
     console.log('idle');
     const until = Date.now() + 1000;
     while (Date.now() < until) {}`,
    {
      onStdout: (out) => {
        if (submitted === null && out.includes('idle')) submitted = submitter.fireAndForget('job', 'late');
      },
    },
  );
  const exited = await child;
  assert.equal(exited.code, 0, exited.stderr);
  assert.match(exited.stdout, /child own/);
  const { executionId } = await submitted;
  // Whatever the child did with it, the execution is not lost with the child.
  const runner = make(url, { leaseMs: 2000 });
  runner.registerAgent('job', async (task) => `parent ${task}`);
  await runner.initialize();
  const final = await submitter.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed', JSON.stringify(final));
  assert.equal(final.attempt, 1, 'run once, no attempt lost with the child');
  assert.deepEqual(sql(`SELECT json_agg(state) FROM "${schema}".bmad_executions WHERE task = 'late'`), [2]);
  t.diagnostic(`run by: ${final.result}`);
});

pgTest("an idle runner sleeps: its listener wakes its store thread, no poll every few ms does", async (t) => {
  const { url } = fresh();
  // Alone in a child process, so that its CPU time is its own.
  const child = await runScript(
    `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
     const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)} });
     bg.registerAgent('job', async () => null);
     await bg.initialize();
     await new Promise((r) => setTimeout(r, 1500));
     const before = process.cpuUsage();
     await new Promise((r) => setTimeout(r, 4000));
     const used = process.cpuUsage(before);
     console.log(JSON.stringify({ ms: (used.user + used.system) / 1000 }));
     await bg.shutdown();`,
    { killAfterMs: 20_000 },
  );
  assert.equal(child.code, 0, child.stderr);
  const { ms } = JSON.parse(child.stdout.trim().split('\n').pop());
  // About 6–11 ms here (heartbeats, rescues, the listener's fallback looks); a poll every
  // 5 ms costs about 50.
  assert.ok(ms < 25, `CPU time over 4 s idle: ${ms.toFixed(1)} ms`);
  t.diagnostic(`CPU time over 4 s idle: ${ms.toFixed(1)} ms`);
});

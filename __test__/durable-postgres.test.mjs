// The durable store on PostgreSQL (`store: 'postgres://…?schema=…'`), against the throw-away
// server that scripts/pg-cluster.mjs starts for `npm test` (BMAD_TEST_PG_URL). Executors in
// this process and in child processes stand for hosts: each has its own connections.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { test, shutDownAfterEach, waitUntil, within, sleep, ENTRY } from './helpers.mjs';
import { SERVER, pgTest, sql } from './durable/pg-proxy.mjs';
import { ownServer } from './durable/own-server.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
let schemas = 0;
/** A URL with a schema of its own, so tests do not see each other's executions. */
const fresh = () => `${SERVER}?schema=js_${process.pid}_${++schemas}`;
const make = (url, config = {}) => create({ store: url, ...config });

/** A URL on this file's own server (for the tests that restart it), with a schema of its own. */
async function restartable() {
  const own = await ownServer();
  return { url: `${own.url}?schema=js_${process.pid}_${++schemas}`, server: own.url, restart: own.restartCommand };
}

pgTest('an execution submitted on one executor runs on another and its value comes back', async () => {
  const url = fresh();
  const runner = make(url);
  const submitter = make(url);
  const seen = [];
  runner.registerAgent('echo', async (task, options) => {
    seen.push({ task, options });
    return options === undefined ? { echoed: task } : { echoed: task, n: options.n };
  });
  await Promise.all([runner.initialize(), submitter.initialize()]);
  const value = await submitter.execute('echo', 'hello', { n: 7 });
  assert.deepEqual(value, { echoed: 'hello', n: 7 });
  assert.deepEqual(seen, [{ task: 'hello', options: { n: 7 } }]);
  const { executionId } = await submitter.fireAndForget('echo', 'again');
  const final = await submitter.waitFor(executionId);
  assert.equal(final.found && final.status, 'completed');
  const stored = await runner.fetchExecutionStatus(executionId);
  assert.equal(stored.found && stored.status, 'completed');
  assert.deepEqual(stored.found && stored.result, { echoed: 'again' });
  assert.equal(await runner.checkStore(), 'ok');
});

pgTest('a cancel asked on one executor aborts the agent running on another', async () => {
  const url = fresh();
  const runner = make(url);
  const submitter = make(url);
  let aborted = null;
  runner.registerAgent(
    'long',
    (_task, _options, { signal }) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          aborted = Date.now();
          reject(signal.reason);
        });
      }),
  );
  await Promise.all([runner.initialize(), submitter.initialize()]);
  const { executionId } = await submitter.fireAndForget('long', 't');
  await waitUntil(() => runner.getActiveExecutions().length === 1, 'the runner started it');
  const asked = Date.now();
  const r = await submitter.cancelExecution(executionId);
  assert.equal(r.success, true);
  await waitUntil(() => aborted !== null, 'the agent was aborted', { timeoutMs: 3000 });
  assert.ok(aborted - asked < 1000, `aborted ${aborted - asked} ms after the cancel`);
  const final = await submitter.waitFor(executionId);
  assert.equal(final.found && final.status, 'cancelled');
});

pgTest('over TLS: verify-full with the server\'s CA works end to end; a certificate for another name is refused', async (t) => {
  const ca = process.env.BMAD_TEST_PG_CA;
  if (!ca) return t.skip('BMAD_TEST_PG_CA is not set (the cluster has no TLS)');
  // The server's certificate names localhost, not 127.0.0.1.
  const url = fresh().replace('127.0.0.1', 'localhost') + `&sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`;
  const runner = make(url);
  const submitter = make(url);
  runner.registerAgent('echo', async (task) => ({ echoed: task }));
  await Promise.all([runner.initialize(), submitter.initialize()]);
  // The submitter hears of the end through its listener connection, over TLS too.
  assert.deepEqual(await submitter.execute('echo', 'secret'), { echoed: 'secret' });
  const wrongName = make(fresh() + `&sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`);
  await assert.rejects(wrongName.initialize(), (err) => err.code === 'ERR_STORE' && /certificate/i.test(err.message) && /127\.0\.0\.1/.test(err.message));
  const untrusted = make(fresh().replace('127.0.0.1', 'localhost') + '&sslmode=verify-full&sslrootcert=system');
  await assert.rejects(untrusted.initialize(), (err) => err.code === 'ERR_STORE' && /certificate/i.test(err.message));
});

pgTest('shutdown() before anything opened the store: Node stays alive until it resolves, and the schema was created', async () => {
  const url = fresh();
  const fx = fileURLToPath(new URL('./durable-fx/shutdown-unopened.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [fx, url], { encoding: 'utf8', timeout: 20000, killSignal: 'SIGKILL' });
  assert.equal(r.status, 0, `exit ${r.status ?? r.signal} (13: the awaited shutdown() never settled); stderr: ${r.stderr}`);
  assert.equal(r.stdout, 'shutdown-complete\nshut down\n');
  const schema = new URL(url).searchParams.get('schema');
  assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions`), 0);
});

pgTest('a schema name of 63 bytes (multi-byte characters too) works across executors; one of 64 is refused at initialize() naming its length', async () => {
  // 63 bytes: 'é' is 2 bytes in UTF-8. Its channel name, bmad.<schema>, would be 68.
  const base = `js_${process.pid}_${++schemas}_`;
  const schema = base + 'é'.repeat(Math.floor((63 - base.length) / 2)) + 'x'.repeat((63 - base.length) % 2);
  assert.equal(Buffer.byteLength(schema), 63);
  const url = `${SERVER}?schema=${encodeURIComponent(schema)}`;
  const submitter = make(url);
  const runner = make(url, { agents: { echo: (task) => `ran ${task}` } });
  await runner.initialize();
  assert.equal(await within(submitter.execute('echo', 'long'), 10000), 'ran long');
  const { executionId } = await submitter.fireAndForget('echo', 'again');
  assert.equal((await within(submitter.waitFor(executionId), 10000)).result, 'ran again');
  assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2`), 2);
  const tooLong = make(`${SERVER}?schema=${'y'.repeat(64)}`);
  await assert.rejects(tooLong.initialize(), (err) => err.code === 'ERR_STORE' && /schema of 64 bytes; PostgreSQL keeps at most 63/.test(err.message));
});

pgTest('a runner killed with SIGKILL: another one takes its execution over once its lease ran out', async (t) => {
  const url = fresh();
  // The first runner: a child process that starts the execution, then is killed.
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
       const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, leaseMs: 600, throttleIfExceeded: false });
       bg.registerAgent('work', async (task, o, { attempt }) => { console.log('started ' + attempt); await new Promise(() => {}); });
       await bg.initialize();`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  // Its agent never settles: killed here too if the test fails before the kill below.
  t.after(() => child.kill('SIGKILL'));
  const submitter = make(url, { leaseMs: 600 });
  await submitter.initialize();
  const done = submitter.execute('work', 'survives', { retries: 1 });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await waitUntil(() => out.includes('started 1'), 'the child started it', { timeoutMs: 10000 });
  child.kill('SIGKILL');
  await once(child, 'exit');
  // The second runner, here.
  const attempts = [];
  const rescuer = make(url, { leaseMs: 600 });
  rescuer.registerAgent('work', async (task, _options, { attempt }) => {
    attempts.push(attempt);
    return `${task} on attempt ${attempt}`;
  });
  assert.equal(await done, 'survives on attempt 2');
  assert.deepEqual(attempts, [2], 'run once more, here');
});

pgTest('a row this release cannot read (a column changed by hand) stops the store: callers rejected with the cause, one store-error', async () => {
  const url = fresh();
  const first = make(url);
  await first.initialize();
  await first.shutdown();
  const schema = new URL(url).searchParams.get('schema');
  sql(`ALTER TABLE "${schema}".bmad_executions ALTER COLUMN priority TYPE numeric; SELECT 1`);
  const bg = make(url);
  const errors = [];
  bg.on('store-error', (e) => errors.push(e.error));
  bg.registerAgent('a', async (task) => task);
  await bg.initialize();
  // Stored, then claimed: the claimed rows cannot be read.
  const runs = await within(Promise.allSettled([bg.execute('a', 'x'), bg.execute('a', 'y')]), 10000);
  assert.notEqual(runs, 'pending');
  for (const r of runs) {
    assert.equal(r.status, 'rejected');
    assert.equal(r.reason.code, 'ERR_STORE');
    // Read as an error of the statement (the driver's own panic would say "error retrieving").
    assert.match(r.reason.message, /store's thread failed \(cannot write to store .*: error deserializing column 5/);
  }
  await sleep(300);
  assert.deepEqual(
    errors.map((e) => e.code),
    ['ERR_STORE'],
    'said once',
  );
  await assert.rejects(bg.execute('a', 'later'), (err) => err.code === 'ERR_STORE');
  // Requests after the stop fail too, and say nothing more to store-error listeners.
  await assert.rejects(bg.fetchExecutionStatus('exec-d1'), (err) => err.code === 'ERR_STORE');
  const aborted = new AbortController();
  const late = bg.execute('a', 'aborted later', { signal: aborted.signal }).catch((err) => err);
  aborted.abort();
  assert.equal((await late).code, 'ERR_STORE');
  assert.notEqual(await within(bg.shutdown(), 3000), 'pending', 'shutdown() settled');
  await sleep(100);
  assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'));
});

pgTest('an unreachable server fails initialize() with ERR_STORE naming the cause, the password hidden', async () => {
  const bg = make('postgres://bmad:s3cret@127.0.0.1:1/none?connect_timeout=2');
  await assert.rejects(bg.initialize(), (err) => {
    assert.equal(err.code, 'ERR_STORE');
    assert.match(err.message, /cannot connect to store postgres:\/\/bmad:\*\*\*@127\.0\.0\.1:1\/none/);
    assert.match(err.message, /refused/i);
    assert.doesNotMatch(err.message, /s3cret/);
    return true;
  });
});

pgTest('the server restarted in the middle of a run: every execution ends once, none runs twice', async () => {
  const { url, server, restart } = await restartable();
  const runner = make(url);
  const submitter = make(url);
  const calls = new Map();
  runner.registerAgent('step', async (task) => {
    calls.set(task, (calls.get(task) || 0) + 1);
    await new Promise((r) => setTimeout(r, 10));
    return task;
  });
  const links = [];
  for (const [name, bg] of [['runner', runner], ['submitter', submitter]]) {
    bg.on('store-disconnected', (e) => links.push(`${name} lost ${e.store}`));
    bg.on('store-reconnected', (e) => links.push(`${name} back ${e.store}`));
  }
  await Promise.all([runner.initialize(), submitter.initialize()]);
  const tasks = Array.from({ length: 60 }, (_, i) => `t${i}`);
  const runs = tasks.map((t) => submitter.execute('step', t));
  await waitUntil(() => calls.size >= 10, 'some ran before the restart', { timeoutMs: 10000 });
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(restart[0], restart.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const values = await Promise.all(runs);
  assert.deepEqual(values, tasks);
  assert.deepEqual([...calls.values()].filter((n) => n !== 1), [], 'each agent called once');
  assert.equal(calls.size, 60);
  // Both saw the connection go and come back, once, in that order.
  await waitUntil(() => links.length === 4, 'both executors reconnected', { timeoutMs: 8000 });
  const shown = server.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  for (const name of ['runner', 'submitter']) {
    assert.deepEqual(links.filter((l) => l.startsWith(name)), [`${name} lost ${shown}`, `${name} back ${shown}`]);
  }
});

pgTest('a listener the server closes is reported: store-disconnected, then store-reconnected once it listens again', async () => {
  const url = fresh();
  const app = (who) => `bmad_listen_${who}_${process.pid}_${schemas}`;
  const runner = make(`${url}&application_name=${app('r')}`, { agents: { echo: (task) => task } });
  const submitter = make(`${url}&application_name=${app('s')}`);
  const links = [];
  for (const [name, bg] of [['runner', runner], ['submitter', submitter]]) {
    bg.on('store-disconnected', () => links.push(`${name} lost`));
    bg.on('store-reconnected', () => links.push(`${name} back`));
  }
  await Promise.all([runner.initialize(), submitter.initialize()]);
  const listeners = (who) => sql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app(who)}' AND query LIKE 'LISTEN%'`);
  await waitUntil(() => listeners('r') === 1 && listeners('s') === 1, 'both executors listening', { timeoutMs: 10000 });
  // Only the runner's listener goes; its statement connection stays.
  sql(`SELECT json_agg(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '${app('r')}' AND query LIKE 'LISTEN%'`);
  await waitUntil(() => links.length === 2, 'the listener reported lost and back', { timeoutMs: 10000 });
  assert.deepEqual(links, ['runner lost', 'runner back']);
  assert.equal(await submitter.execute('echo', 'after'), 'after');
  assert.deepEqual(links, ['runner lost', 'runner back'], 'nothing more');
});

pgTest('submissions made while the server restarts wait for it instead of failing', async () => {
  const { url, restart } = await restartable();
  const runner = make(url);
  const submitter = make(url);
  runner.registerAgent('echo', async (task) => task);
  await Promise.all([runner.initialize(), submitter.initialize()]);
  const { spawn: spawnChild } = await import('node:child_process');
  const restarting = spawnChild(restart[0], restart.slice(1), { stdio: 'ignore' });
  const exited = once(restarting, 'exit');
  const runs = [];
  // Submissions spread over the restart: some hit the closed connection.
  for (let i = 0; i < 40; i++) {
    runs.push(submitter.execute('echo', `s${i}`));
    await new Promise((r) => setTimeout(r, 10));
  }
  const [code] = await exited;
  assert.equal(code, 0);
  const results = await Promise.allSettled(runs);
  assert.deepEqual(
    results.filter((r) => r.status === 'rejected').map((r) => r.reason.message),
    [],
    'none refused',
  );
  assert.deepEqual(
    results.map((r) => r.value),
    Array.from({ length: 40 }, (_, i) => `s${i}`),
  );
});

pgTest('requests made while the server restarts wait for it: a cancel, a status read, a globalConcurrency', async () => {
  const { url, restart } = await restartable();
  const runner = make(url, { maxConcurrentAgents: 5 });
  const other = make(url, { maxConcurrentAgents: 5 });
  const submitter = make(url);
  let aborted = 0;
  const hold = (_task, _options, { signal }) =>
    new Promise((_resolve, reject) => {
      signal.addEventListener('abort', () => {
        aborted++;
        reject(signal.reason);
      });
    });
  let live = 0;
  let most = 0;
  const limited = async (task) => {
    live++;
    most = Math.max(most, live);
    await new Promise((r) => setTimeout(r, 15));
    live--;
    return task;
  };
  for (const bg of [runner, other]) {
    bg.registerAgent('hold', hold);
    bg.registerAgent('g', limited);
  }
  const errors = [];
  for (const bg of [runner, other, submitter]) bg.on('store-error', (e) => errors.push(e.message));
  await Promise.all([runner.initialize(), other.initialize(), submitter.initialize()]);
  const held = await submitter.fireAndForget('hold', 'h');
  await waitUntil(() => aborted === 0 && runner.getActiveExecutions().length + other.getActiveExecutions().length === 1, 'the hold runs');
  const { spawn: spawnChild } = await import('node:child_process');
  const restarting = spawnChild(restart[0], restart.slice(1), { stdio: 'ignore' });
  const exited = once(restarting, 'exit');
  // Asked while the server goes down and comes back (a fast restart takes ~0.3 s here).
  const asked = [];
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 40));
    asked.push(submitter.fetchExecutionStatus(held.executionId));
  }
  runner.setAgentLimits('g', { globalConcurrency: 2 });
  const cancelled = submitter.cancelExecution(held.executionId);
  const [code] = await exited;
  assert.equal(code, 0);
  for (const r of await Promise.all(asked)) assert.equal(r.found && r.status, 'running');
  assert.equal((await cancelled).success, true);
  assert.equal((await submitter.waitFor(held.executionId)).status, 'cancelled');
  assert.equal(aborted, 1);
  // The limit reached the store: two executors together run at most 2 of 'g' at once.
  await runner.initialize(); // resolves once the limits given so far are stored
  const tasks = Array.from({ length: 16 }, (_, i) => `g${i}`);
  assert.deepEqual(await Promise.all(tasks.map((t) => submitter.execute('g', t))), tasks);
  assert.equal(most, 2, `${most} at once across both`);
  assert.deepEqual(errors, [], 'nothing failed');
});

pgTest('globalConcurrency: at most n executions of an agent run at once across executors', async () => {
  const url = fresh();
  const a = make(url, { maxConcurrentAgents: 5 });
  const b = make(url, { maxConcurrentAgents: 5 });
  let live = 0;
  let most = 0;
  const agent = async (task) => {
    live++;
    most = Math.max(most, live);
    await new Promise((r) => setTimeout(r, 15));
    live--;
    return task;
  };
  a.registerAgent('g', agent, { globalConcurrency: 2 });
  b.registerAgent('g', agent);
  await Promise.all([a.initialize(), b.initialize()]);
  await new Promise((r) => setTimeout(r, 50)); // the limit is stored
  const tasks = Array.from({ length: 24 }, (_, i) => `g${i}`);
  assert.deepEqual(await Promise.all(tasks.map((t, i) => (i % 2 ? a : b).execute('g', t))), tasks);
  assert.equal(most, 2, `${most} at once across both`);
  assert.equal(a.getQueueStatus().agents.g.globalConcurrency, 2);
  assert.equal(b.getQueueStatus().agents.g, undefined, 'b set no limit of its own');
  // Removed: both run up to their own slots again.
  a.setAgentLimits('g', { globalConcurrency: null });
  assert.equal(a.getQueueStatus().agents.g, undefined);
  await new Promise((r) => setTimeout(r, 50));
  most = 0;
  await Promise.all(tasks.map((t, i) => (i % 2 ? a : b).execute('g', t)));
  assert.ok(most > 2, `${most} at once without the limit`);
});

test('globalConcurrency without a PostgreSQL store is refused, nothing registered', () => {
  const bg = create();
  assert.throws(() => bg.registerAgent('g', async () => 1, { globalConcurrency: 2 }), { name: 'RangeError', code: 'ERR_NO_STORE', message: /globalConcurrency of "g" needs a PostgreSQL store/ });
  assert.equal(bg.getStatus().agents.includes('g'), false);
  assert.throws(() => bg.setAgentLimits('g', { globalConcurrency: 0 }), { name: 'RangeError', code: 'ERR_INVALID_ARG', message: /globalConcurrency/ });
});

pgTest("a row the driver cannot read (a schema changed by hand) fails the store visibly: store-error, requests refused, shutdown settles; nothing waits in silence", async () => {
  const schema = `js_${process.pid}_${++schemas}`;
  const url = `${SERVER}?schema=${schema}`;
  const submitter = make(url);
  await submitter.initialize();
  const { executionId } = await submitter.fireAndForget('reader', 'task');
  sql(`ALTER TABLE "${schema}".bmad_executions ALTER COLUMN level DROP NOT NULL; SELECT 1`);
  sql(`WITH u AS (UPDATE "${schema}".bmad_executions SET level = NULL RETURNING 1) SELECT count(*) FROM u`);
  const worker = make(url);
  const errors = [];
  worker.on('store-error', (e) => errors.push(e.message));
  worker.registerAgent('reader', async (task) => task);
  await worker.initialize();
  await waitUntil(() => errors.some((m) => m.includes("the store's thread failed")), 'store-error names the failure', { timeoutMs: 5000 });
  const later = await within(
    worker.execute('reader', 'more').then(
      () => 'resolved',
      (err) => err.code,
    ),
    3000,
  );
  assert.equal(later, 'ERR_STORE', 'a later submission is refused, not left pending');
  // Known stopped: nothing is tried again (each try would say so again).
  const told = errors.length;
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(errors.length, told, `no more store errors: ${errors.slice(told)}`);
  assert.notEqual(await within(worker.onIdle(), 3000), 'pending', 'nothing left waiting: the worker is idle');
  assert.equal(sql(`SELECT state FROM "${schema}".bmad_executions WHERE id = ${executionId.slice('exec-d'.length)}`), 1, 'claimed before the failure');
  // Reading the row fails the submitter's read the same way: an error, not a hang.
  await assert.rejects(submitter.fetchExecutionStatus(executionId), { code: 'ERR_STORE' });
  assert.notEqual(await within(worker.shutdown(), 5000), 'pending', 'shutdown() settled');
});

pgTest('fetchExecutionStatus reads on the pool, and shutdown() closes every connection of the executor', async () => {
  const app = `bmad_pool_${process.pid}_${++schemas}`;
  const url = `${SERVER}?schema=js_${process.pid}_${schemas}&application_name=${app}`;
  const open = () => sql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}'`);
  const bg = make(url);
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  const { executionId } = await bg.fireAndForget('echo', 'x');
  await bg.waitFor(executionId);
  const [a, b] = await Promise.all([bg.fetchExecutionStatus(executionId), bg.fetchExecutionStatus(executionId)]);
  assert.deepEqual([a.status, b.status], ['completed', 'completed']);
  // Statements, LISTEN, and the pool's two connections (two reads at once).
  assert.equal(open(), 4);
  await bg.shutdown();
  await waitUntil(() => open() === 0, 'no connection left open after shutdown()', { timeoutMs: 5000, intervalMs: 50 });
});

// PostgreSQL crashing in the middle of a run: every process of the server killed with
// SIGKILL (no shutdown message reaches the clients, their sockets just close), then started
// again, recovering from its WAL. The server is this file's own, with commits answered only
// once written (synchronous_commit on): what a client was told is committed survives.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { shutDownAfterEach, waitUntil, within, sleep } from './helpers.mjs';
import { pgTest } from './durable/pg-proxy.mjs';
import { ownServer } from './durable/own-server.mjs';

const create = shutDownAfterEach({ timeoutMs: 3000 });

pgTest('the server killed with SIGKILL mid-run and started again: every submission kept, every execution run and ended once', async () => {
  const server = await ownServer({ durableCommits: true });
  const schema = `crash_${process.pid}`;
  const url = `${server.url}?schema=${schema}`;
  const runner = create({ store: url, maxConcurrentAgents: 8 });
  const submitter = create({ store: url });
  const calls = new Map();
  runner.registerAgent('step', async (task) => {
    calls.set(task, (calls.get(task) || 0) + 1);
    await sleep(10);
    return task;
  });
  const links = [];
  for (const [name, bg] of [['runner', runner], ['submitter', submitter]]) {
    bg.on('store-disconnected', () => links.push(`${name} lost`));
    bg.on('store-reconnected', () => links.push(`${name} back`));
  }
  await Promise.all([runner.initialize(), submitter.initialize()]);

  const tasks = Array.from({ length: 120 }, (_, i) => `t${i}`);
  const runs = tasks.slice(0, 60).map((t) => submitter.execute('step', t));
  await waitUntil(() => calls.size >= 10, 'some ran before the crash', { timeoutMs: 10000 });
  const killed = await server.crash();
  assert.ok(killed.length >= 2, 'the postmaster and its children were killed');
  // Submitted while the server is down: they wait for it.
  for (const t of tasks.slice(60)) runs.push(submitter.execute('step', t));
  await sleep(200);
  server.start();

  const values = await within(Promise.all(runs), 15000);
  assert.deepEqual(values, tasks, 'every execute() resolved with its own value');
  assert.deepEqual([...calls.entries()].filter(([, n]) => n !== 1), [], 'each agent called once');
  assert.equal(calls.size, 120);
  // In the recovered database: each execution once, completed, on its first attempt.
  const rows = JSON.parse(
    execFileSync(
      'psql',
      ['-XAtq', '-d', server.url, '-c', `SELECT json_agg(json_build_array(task, state, attempt) ORDER BY id) FROM "${schema}".bmad_executions`],
      { encoding: 'utf8' },
    ),
  );
  assert.equal(rows.length, 120, 'no submission lost or stored twice');
  assert.deepEqual(
    rows.map(([task]) => task).sort(),
    [...tasks].sort(),
  );
  assert.deepEqual(rows.filter(([, state, attempt]) => state !== 2 || attempt !== 1), [], 'completed on attempt 1');
  await waitUntil(() => links.length === 4, 'both executors reconnected', { timeoutMs: 8000 });
  for (const name of ['runner', 'submitter']) {
    assert.deepEqual(links.filter((l) => l.startsWith(name)), [`${name} lost`, `${name} back`]);
  }
  assert.equal(await runner.checkStore(), 'ok');
});

// A COMMIT that reaches PostgreSQL but whose answer never comes back: the executor talks to
// the server through a TCP proxy that forwards a COMMIT, drops the server's answer and cuts
// the connection. The transaction is committed; the executor only knows the connection was
// lost, sends the batch again once it reconnects, and must not store, run or record
// anything twice.
import assert from 'node:assert/strict';
import { shutDownAfterEach, waitUntil } from './helpers.mjs';
import { sql, startProxy, pgTest, direct } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 5000 });
let schemas = 0;

pgTest('a batch of submissions whose COMMIT answer was lost is sent again and stored once', async () => {
  const schema = `lost_insert_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const runs = new Map();
    const runner = create({ store: direct(schema), maxConcurrentAgents: 8 });
    runner.registerAgent('count', async (task) => {
      runs.set(task, (runs.get(task) || 0) + 1);
      return { task };
    });
    const submitter = create({ store: proxy.url(schema) });
    const links = [];
    submitter.on('store-disconnected', () => links.push('down'));
    submitter.on('store-reconnected', () => links.push('up'));
    await Promise.all([runner.initialize(), submitter.initialize()]);

    proxy.arm();
    const N = 50;
    const submitted = Promise.all(Array.from({ length: N }, (_, i) => submitter.fireAndForget('count', `t${i}`)));
    await waitUntil(() => proxy.state.cuts === 1, 'the COMMIT went through the proxy and its answer was dropped');
    // The first try committed: its rows are in the store while the submitter cannot reconnect.
    await waitUntil(() => sql(`SELECT count(*) FROM "${schema}".bmad_executions`) === N, 'the first try committed', { timeoutMs: 3000 });
    proxy.open();
    const answers = await submitted;
    const ids = answers.map((a) => a.executionId);
    assert.equal(new Set(ids).size, N, 'one execution per submission');
    await Promise.all(ids.map((id) => submitter.waitFor(id)));
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions`), N, 'nothing stored twice');
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2 AND attempt = 1`), N);
    assert.equal(runs.size, N);
    assert.ok([...runs.values()].every((n) => n === 1), 'each ran once');
    for (const [i, id] of ids.entries()) {
      const st = await submitter.fetchExecutionStatus(id);
      assert.deepEqual(st.found && st.result, { task: `t${i}` }, 'each answer names its own execution');
    }
    assert.deepEqual(links, ['down', 'up']);
  } finally {
    await proxy.close();
  }
});

pgTest('a batch lost on the way and delivered after it was sent again (a partition) stores nothing twice', async () => {
  const schema = `late_insert_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const submitter = create({ store: proxy.url(schema) });
    await submitter.initialize();
    proxy.hold('bmad_batches');
    const N = 20;
    const answers = await Promise.all(Array.from({ length: N }, (_, i) => submitter.fireAndForget('nobody', `t${i}`)));
    assert.notEqual(proxy.state.held, null, 'a try was kept from the server, its client cut');
    const ids = answers.map((a) => Number(a.executionId.replace('exec-d', '')));
    assert.equal(new Set(ids).size, N);
    const stored = () => sql(`SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM "${schema}".bmad_executions`);
    assert.deepEqual(stored(), [...ids].sort((a, b) => a - b), 'sent again: each stored once');
    // The late try reaches the server now: refused on its record's primary key.
    const errors = await proxy.release();
    assert.equal(errors[0], '23505', `a unique violation first, got ${errors.join(', ')}`);
    assert.ok(errors.slice(1).every((c) => c === '25P02'), `then only the aborted transaction, got ${errors.join(', ')}`);
    assert.deepEqual(stored(), [...ids].sort((a, b) => a - b), 'nothing stored twice');
  } finally {
    await proxy.close();
  }
});

pgTest("a runner's batch whose COMMIT answer was lost: its ends are recorded once, its claims handed back, nothing runs twice", async () => {
  const schema = `lost_end_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    // Everything is queued before the runner starts: its batches after its first claim are
    // its ends (with the claims they carry), and the first end arms the proxy.
    const submitter = create({ store: direct(schema) });
    await submitter.initialize();
    const N = 40;
    const ids = (await Promise.all(Array.from({ length: N }, (_, i) => submitter.fireAndForget('count', `t${i}`)))).map((a) => a.executionId);
    const runs = new Map();
    const stale = [];
    const runner = create({ store: proxy.url(schema), maxConcurrentAgents: 4 });
    runner.on('execution-stale', (e) => stale.push(e));
    let returned = 0;
    runner.registerAgent('count', async (task) => {
      runs.set(task, (runs.get(task) || 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      // The next batch that records a completion loses its answer (a batch already on its
      // way with claims only is let through).
      if (++returned === 1) proxy.arm('THEN NULL ELSE u.value END');
      return { task };
    });
    await runner.initialize();
    await waitUntil(() => proxy.state.cuts === 1, 'a batch of the runner lost its answer', { timeoutMs: 10000 });
    // The batch committed: an end is stored though the runner never heard so.
    await waitUntil(() => sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2`) >= 1, 'the cut batch committed an end', {
      timeoutMs: 3000,
    });
    proxy.open();
    const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
    assert.ok(finals.every((f) => f.found && f.status === 'completed'));
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2 AND attempt = 1`), N, 'each ended once, in its first attempt');
    assert.equal(runs.size, N);
    assert.deepEqual(
      [...runs].filter(([, n]) => n !== 1),
      [],
      'nothing ran twice',
    );
    assert.deepEqual(stale, [], 'no end reported stale');
  } finally {
    await proxy.close();
  }
});

pgTest('a cancel whose COMMIT answer was lost is sent again and answers as the cancel that ended the execution', async () => {
  const schema = `lost_cancel_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const submitter = create({ store: direct(schema) });
    await submitter.initialize();
    // Nobody runs this agent: the execution stays queued.
    const { executionId } = await submitter.fireAndForget('nobody', 'task');
    const canceller = create({ store: proxy.url(schema) });
    const cancelled = [];
    canceller.on('execution-cancelled', (e) => cancelled.push(e.executionId));
    await canceller.initialize();

    proxy.arm('SET state = 4, error = $2');
    const answer = canceller.cancelExecution(executionId);
    await waitUntil(() => proxy.state.cuts === 1, "the cancel's COMMIT went through and its answer was dropped");
    await waitUntil(() => sql(`SELECT state FROM "${schema}".bmad_executions`) === 4, 'the first try committed', { timeoutMs: 3000 });
    proxy.open();
    assert.deepEqual(await answer, { success: true, executionId, previousStatus: 'queued' });
    assert.deepEqual(cancelled, [executionId], 'its event, once');
    const final = await submitter.waitFor(executionId);
    assert.equal(final.status, 'cancelled');
    // A second cancel is a cancel of a cancelled execution.
    assert.deepEqual(await canceller.cancelExecution(executionId), { success: false, error: 'Cannot cancel execution in cancelled status' });
  } finally {
    await proxy.close();
  }
});

pgTest('a claim that commits after its batch was given up (answer too late) is handed back by the next heartbeat, not renewed for ever', async () => {
  const schema = `late_claim_${process.pid}_${++schemas}`;
  // Heartbeats every leaseMs / 3.
  const worker = create({ store: direct(schema), leaseMs: 900 });
  await worker.initialize();
  // Nobody here runs 'late': the row is queued, then taken in this worker's name as a
  // pipeline that timed out on the client and committed on the server afterwards would.
  const { executionId } = await worker.fireAndForget('late', 'task');
  const owner = sql(`SELECT to_json(owner) FROM "${schema}".bmad_workers`);
  sql(
    `WITH u AS (UPDATE "${schema}".bmad_executions SET state = 1, attempt = 1, owner = '${owner}', ` +
      `lease_expires_at = extract(epoch FROM now()) * 1000 + 3600000 RETURNING 1) SELECT count(*) FROM u`,
  );
  await waitUntil(() => sql(`SELECT state FROM "${schema}".bmad_executions`) === 0, 'the claim nobody here knows of is queued again', {
    timeoutMs: 3000,
  });
  assert.deepEqual(sql(`SELECT json_build_array(attempt, owner) FROM "${schema}".bmad_executions`), [0, null], 'the attempt uncounted');
  // Another executor runs it.
  const runner = create({ store: direct(schema) });
  runner.registerAgent('late', async (task) => `ran ${task}`);
  const final = await runner.waitFor(executionId);
  assert.deepEqual([final.status, final.result, final.attempt], ['completed', 'ran task', 1]);
});

pgTest('a cancel of a RUNNING execution whose COMMIT answer was lost answers as the cancel that stopped it', async () => {
  const schema = `lost_cancel_running_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const runner = create({ store: direct(schema) });
    let started = 0;
    runner.registerAgent('hold', (_task, _options, { signal }) => {
      started++;
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    });
    await runner.initialize();
    const { executionId } = await runner.fireAndForget('hold', 'task');
    await waitUntil(() => started === 1, 'the agent runs');
    // Another process cancels it; the answer of its first try is lost.
    const canceller = create({ store: proxy.url(schema) });
    const cancelled = [];
    canceller.on('execution-cancelled', (e) => cancelled.push(e.executionId));
    await canceller.initialize();
    proxy.arm('SET cancel_requested = true');
    const answer = canceller.cancelExecution(executionId);
    await waitUntil(() => proxy.state.cuts === 1, "the cancel's COMMIT went through and its answer was dropped");
    // The runner hears of it and stops the agent: the execution ends cancelled meanwhile.
    await waitUntil(() => sql(`SELECT state FROM "${schema}".bmad_executions`) === 4, 'the runner ended it cancelled', { timeoutMs: 5000 });
    proxy.open();
    assert.deepEqual(await answer, { success: true, executionId, previousStatus: 'running' });
    assert.deepEqual(cancelled, [], 'the runner reports its end, not the canceller');
  } finally {
    await proxy.close();
  }
});

// An executor cut off from PostgreSQL for longer than its lease: another executor moves its
// execution on and ends it. Back on line, the first one answers its caller with that outcome;
// its own attempt, still running meanwhile, ends as stale, and nothing of it is left behind.
import assert from 'node:assert/strict';
import { shutDownAfterEach, waitUntil, settleOf, gate, within } from './helpers.mjs';
import { sql, startProxy, pgTest, direct } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 5000 });

pgTest("an attempt still running here when another executor ended its execution ends as stale, and leaves this executor idle", async () => {
  const schema = `partition_${process.pid}`;
  const proxy = await startProxy();
  try {
    const release = gate();
    let startedHere = 0;
    const a = create({ store: proxy.url(schema), leaseMs: 600 });
    a.registerAgent('slow', async () => {
      startedHere++;
      await release.promise;
      return 'from a';
    });
    const stale = [];
    a.on('execution-stale', (e) => stale.push(e));
    await a.initialize();
    const p = settleOf(a.execute('slow', 't', { retries: 1 }));
    await waitUntil(() => startedHere === 1, 'the attempt runs in a');

    // a is cut off; its lease runs out, b rescues the execution and ends it.
    proxy.cut();
    const b = create({ store: direct(schema), leaseMs: 600 });
    b.registerAgent('slow', async () => 'from b');
    await b.initialize();
    await waitUntil(() => sql(`SELECT state FROM "${schema}".bmad_executions`) === 2, 'b completed it', { timeoutMs: 10000 });

    // Back on line, a answers its caller with b's outcome, its own agent still running.
    proxy.open();
    const r = await within(p, 10000);
    assert.notEqual(r, 'pending', 'execute() settled');
    assert.deepEqual(r, { ok: true, value: 'from b' });
    assert.equal(startedHere, 1);

    // a's attempt ends: its result is stale, and a is left with nothing running or awaited.
    release.open();
    await waitUntil(() => stale.length === 1, 'execution-stale', { timeoutMs: 5000 });
    assert.equal(stale[0].attempt, 1);
    assert.notEqual(await within(a.onIdle(), 3000), 'pending', 'a is idle');
    assert.deepEqual(sql(`SELECT json_build_array(state, attempt, result) FROM "${schema}".bmad_executions`), [2, 2, '"from b"']);
    assert.notEqual(await within(a.shutdown(), 3000), 'pending', 'shutdown() settled');
  } finally {
    await proxy.close();
  }
});

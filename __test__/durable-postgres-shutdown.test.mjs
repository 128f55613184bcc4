// shutdown() while the PostgreSQL server is out of reach: it settles, and so does every
// caller. The executor talks to the server through a TCP proxy that cuts its connections.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { shutDownAfterEach, waitUntil, settleOf, within } from './helpers.mjs';
import { startProxy, pgTest, direct } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 5000 });
let schemas = 0;

pgTest('a submission that cannot be stored before shutdown() gives up is refused with ERR_STORE, not left pending', async () => {
  const schema = `shutdown_insert_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const submitter = create({ store: proxy.url(schema) });
    await submitter.initialize();
    proxy.cut();
    const p = settleOf(submitter.execute('x', 'never stored'));
    await sleep(100); // its batch failed at least once and waits to go again
    const closed = submitter.shutdown();
    const r = await within(p, 15000);
    assert.notEqual(r, 'pending', 'execute() settled');
    assert.equal(r.ok, false);
    assert.equal(r.value.code, 'ERR_STORE');
    assert.match(r.value.message, /could not be confirmed stored/);
    assert.notEqual(await within(closed, 5000), 'pending', 'shutdown() settled');
  } finally {
    await proxy.close();
  }
});

pgTest('shutdown() while a claim is lost with the connection settles once the server is back', async () => {
  const schema = `shutdown_claim_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const worker = create({ store: proxy.url(schema) });
    worker.registerAgent('x', async (task) => task);
    const submitter = create({ store: direct(schema) });
    await Promise.all([worker.initialize(), submitter.initialize()]);
    // The worker's claim reaches the server, its answer is dropped and the connection cut.
    proxy.arm('SET state = 1, attempt = e.attempt + 1');
    await submitter.fireAndForget('x', 'claimed, answer lost');
    await waitUntil(() => proxy.state.cuts === 1, 'the claim was cut', { intervalMs: 1 });
    // The claim is still in flight: shutdown() waits for it, then for nothing more.
    const closed = worker.shutdown();
    await sleep(300);
    proxy.open();
    assert.notEqual(await within(closed, 15000), 'pending', 'shutdown() settled');
  } finally {
    await proxy.close();
  }
});

// Requests other than batches (a globalConcurrency write, a cancel, a fetch) that a lost
// connection failed are sent again once it is back, in the order they were made: a limit set
// twice while PostgreSQL was out of reach ends with the later value.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { shutDownAfterEach, waitUntil } from './helpers.mjs';
import { sql, startProxy, pgTest } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 5000 });

pgTest('two globalConcurrency writes made while the server is out of reach land in the order they were made', async () => {
  const schema = `request_order_${process.pid}`;
  const proxy = await startProxy();
  try {
    const bg = create({ store: proxy.url(schema) });
    const links = [];
    bg.on('store-disconnected', () => links.push('down'));
    bg.on('store-reconnected', () => links.push('up'));
    await bg.initialize();
    const limit = () => sql(`SELECT coalesce((SELECT global_concurrency FROM "${schema}".bmad_limits WHERE agent = 'x'), 0)`);

    proxy.cut();
    bg.setAgentLimits('x', { globalConcurrency: 2 });
    // The first write fails again and again meanwhile, and its next try moves further away.
    await sleep(700);
    bg.setAgentLimits('x', { globalConcurrency: 5 });
    await sleep(200);
    proxy.open();
    await waitUntil(() => limit() === 5, 'the later value is stored', { timeoutMs: 5000 });
    // Longer than any pause between tries: a write of the earlier value would have come.
    await sleep(1500);
    assert.equal(limit(), 5, 'the earlier value never lands after the later one');
    assert.deepEqual(links, ['down', 'up']);
  } finally {
    await proxy.close();
  }
});

pgTest('a limit write made while an earlier one is lost with the connection lands after it, even once the server is back', async () => {
  const schema = `request_order_inflight_${process.pid}`;
  const proxy = await startProxy();
  try {
    const bg = create({ store: proxy.url(schema) });
    await bg.initialize();
    const limit = () => sql(`SELECT coalesce((SELECT global_concurrency FROM "${schema}".bmad_limits WHERE agent = 'x'), 0)`);
    // The first write commits, its answer is dropped and its connection cut 100 ms later;
    // the server is reachable again before then.
    proxy.arm('global_concurrency) VALUES');
    bg.setAgentLimits('x', { globalConcurrency: 2 });
    await waitUntil(() => proxy.state.cuts === 1, 'the first write committed, its answer dropped', { intervalMs: 1 });
    proxy.open();
    // Made while the first is unanswered: the store thread runs it once the first has failed.
    bg.setAgentLimits('x', { globalConcurrency: 5 });
    // The later write is answered once the earlier one, sent again, has landed before it.
    await waitUntil(() => limit() === 5, 'the later value is stored', { timeoutMs: 8000 });
    await sleep(1000);
    assert.equal(limit(), 5, 'the earlier write, sent again, did not land after the later one');
  } finally {
    await proxy.close();
  }
});

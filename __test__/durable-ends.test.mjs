// Ends of a submitter's executions run elsewhere: an awaited one is read as soon as it is
// heard of; fire-and-forget ones, whose status only `getExecutionStatus` reports, are read
// together a moment later, and only the latest ENDED_KEPT of them (the statuses an
// executor keeps). `waitFor` reads any of them.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test, shutDownAfterEach, tempDir, waitUntil, sleep } from './helpers.mjs';
import { SERVER, pgTest } from './durable/pg-proxy.mjs';

const { ENDED_KEPT } = createRequire(import.meta.url)('../lib/protocol.js');
const create = shutDownAfterEach({ timeoutMs: 2000 });
const make = (url, config = {}) => create({ store: url, throttleIfExceeded: false, ...config });

async function latestKept(url) {
  const submitter = make(url);
  await submitter.initialize();
  const n = ENDED_KEPT + 20;
  const ids = [];
  for (let i = 0; i < n; i++) ids.push((await submitter.fireAndForget('quick', `t${i}`)).executionId);
  // And one awaited: its end is read as soon as heard.
  const awaited = submitter.execute('quick', 'awaited');
  const runner = make(url, { maxConcurrentAgents: 64 });
  let ran = 0;
  runner.registerAgent('quick', async (task) => {
    ran++;
    return `done ${task}`;
  });
  await runner.initialize();
  assert.equal(await awaited, 'done awaited');
  await waitUntil(() => ran === n + 1, 'all ran', { timeoutMs: 15000, intervalMs: 20 });
  const known = () => ids.filter((id) => submitter.getExecutionStatus(id).found);
  await waitUntil(() => known().length >= ENDED_KEPT - 1, 'the latest ends are known', { timeoutMs: 5000, intervalMs: 20 });
  await sleep(500);
  const found = known();
  // The awaited one, read first, counts among the statuses kept until later ones push it out.
  assert.ok(found.length >= ENDED_KEPT - 1 && found.length <= ENDED_KEPT, `the latest ENDED_KEPT statuses, no more: ${found.length}`);
  for (const id of found) {
    const s = submitter.getExecutionStatus(id);
    assert.equal(s.status, 'completed');
    assert.equal(s.result, `done t${ids.indexOf(id)}`);
  }
  const older = ids.find((id) => !found.includes(id));
  const final = await submitter.waitFor(older);
  assert.equal(final.found && final.status, 'completed');
  assert.equal(final.result, `done t${ids.indexOf(older)}`);
}

test('SQLite: the submitter knows the latest ENDED_KEPT ends run elsewhere; waitFor reads any', async (t) => {
  await latestKept(`sqlite:${join(tempDir(t, 'bmad-ends-'), 'executions.db')}`);
});

pgTest('PostgreSQL: the submitter knows the latest ENDED_KEPT ends run elsewhere; waitFor reads any', async () => {
  await latestKept(`${SERVER}?schema=ends_${process.pid}`);
});

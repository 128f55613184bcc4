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
const make = (url, config = {}) => create({ store: url, ...config });

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
  // Until its end is heard, a submission's status is 'queued' here.
  const known = () =>
    ids.filter((id) => {
      const s = submitter.getExecutionStatus(id);
      return s.found && s.status === 'completed';
    });
  await waitUntil(() => known().length >= ENDED_KEPT - 1, 'the latest ends are known', { timeoutMs: 5000, intervalMs: 20 });
  await sleep(500);
  const found = known();
  // The awaited one, read first, counts among the statuses kept until later ones push it out.
  assert.ok(found.length >= ENDED_KEPT - 1 && found.length <= ENDED_KEPT, `the latest ENDED_KEPT statuses, no more: ${found.length}`);
  for (const id of found) assert.equal(submitter.getExecutionStatus(id).result, `done t${ids.indexOf(id)}`);
  const others = ids.filter((id) => !found.includes(id));
  assert.ok(others.every((id) => !submitter.getExecutionStatus(id).found), 'the older ends are not kept here');
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

async function keyedJoin(url) {
  const submitter = make(url);
  await submitter.initialize();
  const ends = new Map();
  const runner = make(url);
  runner.registerAgent('job', async (task) => {
    await sleep(50);
    ends.set(task, Date.now());
    return `done ${task}`;
  });
  await runner.initialize();
  const lags = [];
  for (let i = 0; i < 3; i++) {
    // A fire-and-forget submission, then an awaited one joining it by key.
    await submitter.fireAndForget('job', `k${i}`, { key: `key-${i}` });
    const value = await submitter.execute('job', `k${i}`, { key: `key-${i}` });
    lags.push(Date.now() - ends.get(`k${i}`));
    assert.equal(value, `done k${i}`);
  }
  // Read as soon as heard, not with the fire-and-forget ends a while later.
  assert.ok(Math.min(...lags) < 200, `settled ${lags.join(', ')} ms after the agent returned`);
}

test('SQLite: an awaited submission joining a fire-and-forget one by key settles as soon as it ends', async (t) => {
  await keyedJoin(`sqlite:${join(tempDir(t, 'bmad-ends-'), 'executions.db')}`);
});

pgTest('PostgreSQL: an awaited submission joining a fire-and-forget one by key settles as soon as it ends', async () => {
  await keyedJoin(`${SERVER}?schema=ends_key_${process.pid}`);
});

// An idle runner on PostgreSQL publishes its parked claim; a submission from elsewhere fills
// it in the statement that stores it (the rows are stored running, for that runner) and tells
// the runner alone: the work starts without a claim. Only a runner whose listener is
// connected is handed anything.
import assert from 'node:assert/strict';
import { shutDownAfterEach, waitUntil, sleep, spawnHolder, ENTRY } from './helpers.mjs';
import { pgTest, sql } from './durable/pg-proxy.mjs';
import { schemas, heldAgent } from './durable/held.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
const fresh = schemas('push');

const make = (url, config = {}) => create({ store: url, ...config });

/** The stored rows of `schema` as `{ task, state, attempt, owner, pushed }`, by id. */
const rows = (schema) =>
  sql(
    `SELECT coalesce(json_agg(json_build_object('task', task, 'state', state, 'attempt', attempt, 'owner', owner,
       'pushed', attempted_at = created_at) ORDER BY id), '[]') FROM "${schema}".bmad_executions`,
  );

const parked = (schema) => sql(`SELECT coalesce(json_agg(owner ORDER BY owner), '[]') FROM "${schema}".bmad_parked`);

pgTest('a submission to an idle runner is stored running for it and starts without a claim', async () => {
  const { schema, url } = fresh();
  const held = heldAgent();
  const runner = make(url, { maxConcurrentAgents: 2 });
  runner.registerAgent('held', held.fn);
  await runner.initialize();
  const submitter = make(url);
  await submitter.initialize();
  // Read as it is seen: the claim is withdrawn and published again now and then.
  let owner;
  await waitUntil(() => (owner = parked(schema)[0]) !== undefined, 'the runner parked');

  // Three in one statement for two free slots: two are handed over, the third is announced
  // and claimed once a slot frees.
  const ids = (await Promise.all(['a', 'b', 'c'].map((t) => submitter.fireAndForget('held', t)))).map((s) => s.executionId);
  await waitUntil(() => held.running === 2, 'two running');
  const stored = rows(schema);
  for (const r of stored.slice(0, 2)) assert.deepEqual(r, { task: r.task, state: 1, attempt: 1, owner, pushed: true });
  assert.deepEqual(stored[2], { task: 'c', state: 0, attempt: 0, owner: null, pushed: null });
  held.release();
  for (const id of ids) assert.equal((await submitter.waitFor(id)).status, 'completed');
  assert.deepEqual([...held.calls.values()], [1, 1, 1], 'each ran once');
  assert.equal(rows(schema)[2].attempt, 1);

  // Shut down, the runner's parked claim is gone from the store.
  await runner.shutdown();
  assert.deepEqual(parked(schema), []);
});

pgTest('a runner killed with SIGKILL is handed nothing: the submission runs elsewhere on its first attempt', async (t) => {
  const { schema, url } = fresh();
  const runner = make(url, { maxConcurrentAgents: 2 });
  runner.registerAgent('job', async (task) => `parent ${task}`);
  await runner.initialize();
  await waitUntil(() => parked(schema).length === 1, 'the runner parked');
  // The child parks more slots than the parent: of the two, a submission would pick it.
  const child = spawnHolder(`
    import(${JSON.stringify(ENTRY)}).then(async ({ BackgroundExecutor }) => {
      const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, throttleIfExceeded: false, maxConcurrentAgents: 16 });
      bg.registerAgent('job', async (task) => 'child ' + task);
      await bg.initialize();
      setInterval(() => {}, 1000);
      console.log('ready');
    });`);
  t.after(child.kill);
  await child.ready;
  await waitUntil(() => parked(schema).length === 2, 'the child parked');
  const [dead, listener] = sql(`SELECT json_build_array(owner, listener::text) FROM "${schema}".bmad_parked WHERE slots = 16`);
  child.kill();
  await child.exited;
  // The server has seen the connection go: its listener's lock is free.
  await waitUntil(() => sql(`SELECT to_json(pg_try_advisory_xact_lock_shared(${listener}))`) === true, 'its listener gone');
  assert.ok(parked(schema).includes(dead), 'its parked claim is still there');

  // Never handed to the dead runner. One submitted while the live runner's claim is being
  // run again (its fallback look) is claimed, not handed over: another then goes.
  let stored;
  for (let i = 0; i < 5; i++) {
    const { executionId } = await runner.fireAndForget('job', `late${i}`);
    const final = await runner.waitFor(executionId);
    assert.equal(final.status, 'completed', JSON.stringify(final));
    assert.equal(final.result, `parent late${i}`);
    assert.equal(final.attempt, 1, 'never handed to the dead runner');
    stored = rows(schema)[i];
    if (stored.pushed) break;
    await waitUntil(() => parked(schema).length === 2, 'the live runner parked again');
  }
  assert.equal(stored.pushed, true, 'handed to the live one');

  // A rescue sweeps the dead runner's parked claim once it is older than a lease.
  const sweeper = make(url, { leaseMs: 1000 });
  await sleep(1000);
  await sweeper.initialize();
  await waitUntil(() => !parked(schema).includes(dead), 'the dead parked claim swept');
});

pgTest("a runner's own submission handed to its own parked claim is answered first: the agent gets the caller's options", async () => {
  const { schema, url } = fresh();
  const runner = make(url, { maxConcurrentAgents: 4 });
  const got = [];
  const order = [];
  runner.registerAgent('own', async (task, options) => {
    got.push(options);
    return task;
  });
  runner.on('execution-queued', (e) => order.push(`queued ${e.executionId}`));
  runner.on('execution-started', (e) => order.push(`started ${e.executionId}`));
  await runner.initialize();
  // The token of the runner's published claim: a new one once it parked again.
  const token = () => sql(`SELECT coalesce(json_agg(token::text), '[]') FROM "${schema}".bmad_parked`)[0];
  await waitUntil(() => token() !== undefined, 'the runner parked');
  for (let i = 0; i < 20; i++) {
    const published = token();
    const options = { round: i, marker: {} };
    const { executionId } = await runner.fireAndForget('own', `t${i}`, options);
    assert.equal((await runner.waitFor(executionId)).status, 'completed');
    assert.equal(got[i], options, `round ${i}: the caller's own object, not a copy of the stored one`);
    assert.deepEqual(order.splice(0), [`queued ${executionId}`, `started ${executionId}`], `round ${i}`);
    await waitUntil(() => token() !== undefined && token() !== published, 'parked again');
  }
  // Each ran once. Handed over, most of them: stored running for it by the submission (one
  // that came while the claim was being run or taken back is stored queued and claimed).
  const stored = rows(schema);
  assert.ok(stored.every((r) => r.state === 2 && r.attempt === 1), JSON.stringify(stored));
  assert.ok(stored.filter((r) => r.pushed).length >= 1, `none handed over: ${JSON.stringify(stored)}`);
});

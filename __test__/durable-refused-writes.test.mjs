// Writes a store refuses for good (not a lost connection): the refused submission or attempt
// end fails alone, visibly, and everything grouped with it in the same commit goes on. The
// refusals come from the real server: a trigger raises for one value, as a constraint or a
// value the server cannot hold would. Text that no store can hold (NUL) is refused before.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, tempDir, settleOf, waitUntil, within, sleep, ENTRY } from './helpers.mjs';
import { SERVER, pgTest, sql } from './durable/pg-proxy.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach({ timeoutMs: 2000 });

let schemas = 0;
const schemaName = () => `refused_${process.pid}_${++schemas}`;
const make = (url, config = {}) => create({ store: url, ...config });

/** A fresh schema on the test server whose executions table raises when `condition` holds. */
async function refusingStore(when, condition) {
  const schema = schemaName();
  const url = `${SERVER}?schema=${schema}`;
  // The executor creates the tables; the trigger is added to them.
  const first = make(url);
  await first.initialize();
  await first.shutdown();
  sql(`CREATE FUNCTION ${schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF ${condition} THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$;
       CREATE TRIGGER refuse BEFORE ${when} ON ${schema}.bmad_executions
       FOR EACH ROW EXECUTE FUNCTION ${schema}.refuse(); SELECT 1`);
  return { url, schema };
}

pgTest('a submission the server refuses fails alone: the others of its commit are stored and run', async () => {
  const { url, schema } = await refusingStore('INSERT', "NEW.task = 'poison'");
  const bg = make(url);
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  const errors = [];
  bg.on('store-error', (e) => errors.push(e));
  // One synchronous loop: one group commit.
  const all = ['ok-1', 'poison', 'ok-2', 'ok-3'].map((t) => settleOf(bg.execute('echo', t)));
  const [a, poison, b, c] = await within(Promise.all(all), 10000);
  assert.deepEqual([a, b, c], [
    { ok: true, value: 'ok-1' },
    { ok: true, value: 'ok-2' },
    { ok: true, value: 'ok-3' },
  ]);
  assert.equal(poison.ok, false);
  assert.equal(poison.value.code, 'ERR_STORE');
  assert.match(poison.value.message, /refused by the test trigger/);
  const rows = sql(`SELECT json_agg(task ORDER BY id) FROM ${schema}.bmad_executions`);
  assert.deepEqual(rows, ['ok-1', 'ok-2', 'ok-3']);
  // Reported once: by the lone try that found the refused one.
  assert.equal(errors.length, 1);
  assert.match(errors[0].error.message, /refused by the test trigger/);
  // Later submissions are not held back by it.
  assert.equal(await within(bg.execute('echo', 'after'), 5000), 'after');
});

pgTest('a submission refused among 5,000 of one commit is found by halving: a few dozen inserts, the others stored in their order', async () => {
  const { url, schema } = await refusingStore('INSERT', "NEW.task = 'poison'");
  // Insert statements tried, committed or not: a sequence is not rolled back.
  sql(`CREATE SEQUENCE ${schema}.tries;
       CREATE FUNCTION ${schema}.count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('${schema}.tries'); RETURN NULL; END $$;
       CREATE TRIGGER count BEFORE INSERT ON ${schema}.bmad_executions FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.count(); SELECT 1`);
  const bg = make(url);
  await bg.initialize();
  const tasks = Array.from({ length: 5000 }, (_, i) => (i === 3210 ? 'poison' : `t${i}`));
  // One synchronous loop: one group commit. No agent runs them: they stay queued.
  const results = await within(Promise.all(tasks.map((t) => settleOf(bg.fireAndForget('elsewhere', t)))), 20000);
  assert.notEqual(results, 'pending');
  const failed = results.map((r, i) => [i, r]).filter(([, r]) => !r.ok);
  assert.deepEqual(
    failed.map(([i, r]) => [i, r.value.code]),
    [[3210, 'ERR_STORE']],
  );
  assert.deepEqual(sql(`SELECT json_agg(task ORDER BY id) FROM ${schema}.bmad_executions`), tasks.filter((t) => t !== 'poison'), 'stored once each, in order');
  const tries = sql(`SELECT last_value FROM ${schema}.tries`);
  assert.ok(tries <= 2 * Math.ceil(Math.log2(5000)) + 1, `${tries} insert statements`);
});

pgTest('two refused commits in flight at once: each one\'s refused submission fails alone, the others are stored in their order', async () => {
  const { url, schema } = await refusingStore('INSERT', "NEW.task LIKE 'poison%'");
  const bg = make(url);
  await bg.initialize();
  const submit = (tasks) => tasks.map((t) => settleOf(bg.fireAndForget('elsewhere', t)));
  const first = submit(['a1', 'a2', 'poison-a', 'a3', 'a4', 'a5']);
  await null; // the first commit is sent; the second goes while it is in flight
  const second = submit(['b1', 'b2', 'b3', 'poison-b', 'b4']);
  const results = await within(Promise.all([...first, ...second]), 10000);
  assert.notEqual(results, 'pending');
  assert.deepEqual(
    results.map((r) => r.ok),
    [true, true, false, true, true, true, true, true, true, false, true],
  );
  assert.deepEqual(sql(`SELECT json_agg(task ORDER BY id) FROM ${schema}.bmad_executions`), ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'b2', 'b3', 'b4']);
});

pgTest('a rescue the server refuses leaves that attempt running and says so once; the others are rescued', async () => {
  const { url, schema } = await refusingStore('UPDATE', "OLD.task = 'poison' AND OLD.state = 1 AND NEW.state <> 1");
  // A runner in a child process takes both executions, then is killed.
  const source = `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
    const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, leaseMs: 600, throttleIfExceeded: false });
    bg.registerAgent('hold', async (task) => { console.log('started ' + task); await new Promise(() => {}); });
    await bg.initialize();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  try {
    const bg = make(url, { leaseMs: 600 });
    const errors = [];
    bg.on('store-error', (e) => errors.push(e.error));
    const rescued = [];
    bg.on('execution-rescued', (e) => rescued.push(e));
    await bg.initialize();
    const fine = settleOf(bg.execute('hold', 'fine'));
    const { executionId: poisonId } = await bg.fireAndForget('hold', 'poison');
    await waitUntil(() => out.includes('started fine') && out.includes('started poison'), 'the child runs both', { timeoutMs: 10000 });
    child.kill('SIGKILL');
    const r = await within(fine, 10000);
    assert.notEqual(r, 'pending');
    assert.equal(r.ok, false);
    assert.equal(r.value.code, 'ERR_WORKER_LOST');
    await sleep(1500); // a few more rescue rounds: said once
    assert.deepEqual(rescued.map((e) => e.status), ['failed']);
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'));
    assert.match(errors[0].message, /stays running: its rescue was refused .*refused by the test trigger/);
    assert.match(errors[0].message, new RegExp(`execution ${poisonId.replace('exec-d', '')} \\(attempt 1\\)`));
    assert.deepEqual(sql(`SELECT json_agg(json_build_array(task, state) ORDER BY id) FROM ${schema}.bmad_executions`), [
      ['fine', 3],
      ['poison', 1],
    ]);
  } finally {
    child.kill('SIGKILL');
  }
});

pgTest('an attempt end the server refuses ends its execution as failed, once; the ends beside it are stored', async () => {
  const { url, schema } = await refusingStore('UPDATE', "NEW.state = 2 AND NEW.result LIKE '%poison%'");
  const bg = make(url);
  const release = [];
  // The three agents return together, so their ends share a commit.
  bg.registerAgent('echo', (task) => new Promise((resolve) => release.push(() => resolve(task))));
  await bg.initialize();
  const ends = [];
  for (const name of ['execution-completed', 'execution-failed']) bg.on(name, (e) => ends.push({ name, id: e.executionId, code: e.code }));
  const submitted = ['a', 'poison', 'b'].map((t) => settleOf(bg.execute('echo', t)));
  await waitUntil(() => release.length === 3, 'three agents running', { timeoutMs: 10000 });
  for (const go of release) go();
  const [a, poison, b] = await within(Promise.all(submitted), 10000);
  assert.deepEqual([a, b], [
    { ok: true, value: 'a' },
    { ok: true, value: 'b' },
  ]);
  assert.equal(poison.ok, false);
  assert.equal(poison.value.code, 'ERR_STORE');
  assert.match(poison.value.message, /could not be stored/);
  assert.match(poison.value.message, /refused by the test trigger/);
  const stored = sql(
    `SELECT json_agg(json_build_object('task', task, 'state', state, 'attempt', attempt, 'error', error::json->>'code') ORDER BY id)
     FROM ${schema}.bmad_executions`,
  );
  assert.deepEqual(stored, [
    { task: 'a', state: 2, attempt: 1, error: null },
    { task: 'poison', state: 3, attempt: 1, error: 'ERR_STORE' },
    { task: 'b', state: 2, attempt: 1, error: null },
  ]);
  // One outcome each.
  assert.equal(ends.length, 3, JSON.stringify(ends));
  assert.deepEqual(ends.filter((e) => e.name === 'execution-failed').map((e) => e.code), ['ERR_STORE']);
  // The executor goes on storing.
  const later = bg.execute('echo', 'later');
  await waitUntil(() => release.length === 4, 'a fourth agent running', { timeoutMs: 5000 });
  release[3]();
  assert.equal(await within(later, 5000), 'later');
});

pgTest('an attempt end the server refuses even as a failure is given up, and the others go on', async () => {
  // Every end of the poison execution is refused, its failure too: it is left to its lease.
  const { url, schema } = await refusingStore('UPDATE', "NEW.state >= 2 AND NEW.task = 'poison'");
  const bg = make(url, { leaseMs: 60000 });
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  const errors = [];
  bg.on('store-error', (e) => errors.push(e.error.message));
  const poison = settleOf(bg.execute('echo', 'poison'));
  const ok = await within(Promise.all([bg.execute('echo', 'x'), bg.execute('echo', 'y')]), 10000);
  assert.deepEqual(ok, ['x', 'y']);
  await waitUntil(() => errors.some((m) => /not written/.test(m)), 'the end given up', { timeoutMs: 10000 });
  const row = sql(`SELECT json_build_object('state', state, 'owner', owner IS NOT NULL) FROM ${schema}.bmad_executions WHERE task = 'poison'`);
  assert.deepEqual(row, { state: 1, owner: true });
  assert.equal(await within(bg.execute('echo', 'z'), 5000), 'z');
  await bg.shutdown();
  // Its caller is answered at shutdown, as for any execution still running in the store.
  const r = await within(poison, 5000);
  assert.equal(r.ok, false);
});

pgTest('an attempt end the server fails to write for a while (read-only) is kept, and written once it can be', async () => {
  const schema = schemaName();
  const url = `${SERVER}?schema=${schema}`;
  const first = make(url);
  await first.initialize();
  await first.shutdown();
  // Not a refused value: the server cannot write now (a standby during a failover says so).
  sql(`CREATE TABLE ${schema}.readonly (on_ boolean); INSERT INTO ${schema}.readonly VALUES (true);
       CREATE FUNCTION ${schema}.readonly() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.state >= 2 AND (SELECT on_ FROM ${schema}.readonly) THEN
         RAISE EXCEPTION 'cannot execute UPDATE in a read-only transaction' USING ERRCODE = '25006'; END IF;
       RETURN NEW; END $$;
       CREATE TRIGGER readonly BEFORE UPDATE ON ${schema}.bmad_executions FOR EACH ROW EXECUTE FUNCTION ${schema}.readonly();
       SELECT 1`);
  const bg = make(url);
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  const errors = [];
  bg.on('store-error', (e) => errors.push(e.error.message));
  const done = bg.execute('echo', 'kept');
  await waitUntil(() => errors.length >= 2, 'the end failing twice', { timeoutMs: 10000 });
  assert.equal(await within(done, 50), 'pending');
  sql(`UPDATE ${schema}.readonly SET on_ = false; SELECT 1`);
  assert.equal(await within(done, 10000), 'kept');
  const row = sql(`SELECT json_build_object('state', state, 'attempt', attempt, 'result', result) FROM ${schema}.bmad_executions`);
  assert.deepEqual(row, { state: 2, attempt: 1, result: '"kept"' });
});

for (const kind of ['sqlite', 'postgres']) {
  const t = kind === 'postgres' ? pgTest : test;
  t(`${kind}: text with a NUL character is refused at submission, naming the argument`, async (ctx) => {
    const url = kind === 'postgres' ? `${SERVER}?schema=${schemaName()}` : `sqlite:${join(tempDir(ctx, 'bmad-nul-'), 'x.db')}`;
    const bg = make(url);
    bg.registerAgent('echo', async (task) => task);
    await bg.initialize();
    const results = await Promise.all([
      settleOf(bg.execute('echo', 'ok')),
      settleOf(bg.execute('echo', 'bad\u0000task')),
      settleOf(bg.fireAndForget('echo', 'x', { key: 'k\u0000' })),
      settleOf(bg.execute('no\u0000agent', 'x')),
    ]);
    assert.deepEqual(results[0], { ok: true, value: 'ok' });
    const [task, key, agent] = results.slice(1).map((r) => r.value);
    for (const [err, where] of [
      [task, 'task'],
      [key, 'options.key'],
      [agent, 'agent'],
    ]) {
      assert.ok(err instanceof TypeError, `${where}: ${err && err.message}`);
      assert.match(err.message, new RegExp(`^${where.replace('.', '\\.')} must not contain a NUL character`));
    }
  });
}

test('a value too large to store is refused: a task at submission, a result as the execution failing', async (ctx) => {
  const bg = make(`sqlite:${join(tempDir(ctx, 'bmad-big-'), 'x.db')}`);
  // 180M characters of 3 bytes each as UTF-8: over the 512 MiB a stored text may take.
  const big = '€'.repeat(180_000_000);
  bg.registerAgent('big', async () => big);
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  const task = await settleOf(bg.execute('echo', big));
  assert.equal(task.ok, false);
  assert.ok(task.value instanceof RangeError);
  assert.equal(task.value.code, 'ERR_VALUE_TOO_LARGE');
  assert.match(task.value.message, /^task is too large to store: 540000000 bytes as UTF-8 \(at most 536870912\)$/);
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));
  const [result, beside] = await Promise.all([settleOf(bg.execute('big', 'x')), settleOf(bg.execute('echo', 'small'))]);
  assert.deepEqual(beside, { ok: true, value: 'small' });
  assert.equal(result.ok, false);
  assert.equal(result.value.code, 'ERR_VALUE_TOO_LARGE');
  assert.match(result.value.message, /^result is too large to store: 540000002 bytes as UTF-8 \(at most 536870912\)$/);
  assert.deepEqual(failed.map((e) => e.code), ['ERR_VALUE_TOO_LARGE']);
  // Stored as that failure, not retried.
  const stored = await bg.fetchExecutionStatus(failed[0].executionId);
  assert.equal(stored.status, 'failed');
  assert.equal(stored.attempt, 1);
  assert.equal(stored.errorObject.code, 'ERR_VALUE_TOO_LARGE');
});

pgTest('attempt ends carrying more text than a batch takes are committed in several batches', async () => {
  const schema = schemaName();
  const bg = make(`${SERVER}?schema=${schema}`);
  const release = [];
  bg.registerAgent('echo', (task) => new Promise((resolve) => release.push(() => resolve(task === 'big' ? 'x'.repeat(70_000_000) : task))));
  await bg.initialize();
  const run = async (tasks) => {
    const done = tasks.map((t) => bg.execute('echo', t));
    await waitUntil(() => release.length === tasks.length, 'agents running', { timeoutMs: 10000 });
    for (const go of release.splice(0)) go();
    await within(Promise.all(done), 30000);
  };
  // Two small ends released together share a commit (the same finalized_at); two of 70M
  // characters each are over a batch's 128M and go in two.
  await run(['a', 'b']);
  await run(['big', 'big']);
  const commits = sql(
    `SELECT json_object_agg(t, n) FROM (SELECT CASE WHEN task = 'big' THEN 'big' ELSE 'small' END t, count(DISTINCT finalized_at) n
     FROM ${schema}.bmad_executions GROUP BY 1) c`,
  );
  assert.deepEqual(commits, { small: 1, big: 2 });
});

pgTest('refused writes are not a failing store: submissions behind them are stored at a shutdown and after a busy lock', async () => {
  const { url, schema } = await refusingStore('INSERT', "NEW.task LIKE 'poison%'");
  // 'busy-once' meets a serialization failure (40001) at its first try: retried as busy.
  sql(`CREATE SEQUENCE ${schema}.once;
       CREATE OR REPLACE FUNCTION ${schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.task LIKE 'poison%' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
         IF NEW.task = 'busy-once' AND nextval('${schema}.once') = 1 THEN RAISE EXCEPTION 'busy once' USING ERRCODE = '40001'; END IF;
         RETURN NEW; END $$; SELECT 1`);
  const bg = make(url);
  await bg.initialize();
  const tasks = [...Array.from({ length: 10 }, (_, i) => `poison${i}`), 'busy-once', 'good'];
  const all = tasks.map((t) => settleOf(bg.fireAndForget('nobody', t)));
  const down = bg.shutdown({ timeoutMs: 5000 });
  const results = await within(Promise.all(all), 15000);
  await down;
  assert.deepEqual(
    results.map((r) => (r.ok ? 'ok' : r.value.code)),
    [...Array(10).fill('ERR_STORE'), 'ok', 'ok'],
  );
  assert.deepEqual(sql(`SELECT json_agg(task ORDER BY task) FROM ${schema}.bmad_executions`), ['busy-once', 'good']);
});

pgTest('a claim the server refuses is not blamed on the attempt end or submission sent with it', async () => {
  // The claim of one queued row is refused; the end of another execution, sent in the same
  // batch as a claim, is stored with its value.
  const { url, schema } = await refusingStore('UPDATE', "NEW.state = 1 AND NEW.task = 'poison'");
  const bg = make(url, { leaseMs: 60000 });
  const release = [];
  bg.registerAgent('echo', (t) => new Promise((resolve) => release.push(() => resolve(t))));
  await bg.initialize();
  const errors = [];
  bg.on('store-error', (e) => errors.push(e.error.message));
  const slow = settleOf(bg.execute('echo', 'slow'));
  await waitUntil(() => release.length === 1, 'slow running', { timeoutMs: 5000 });
  const other = make(url);
  await other.initialize();
  // Keyed: stored queued and claimed, not handed to the idle runner by the insert.
  await other.fireAndForget('echo', 'poison', { key: 'poison' });
  await waitUntil(() => errors.length > 0, 'the claim refused', { timeoutMs: 5000 });
  release[0]();
  assert.deepEqual(await within(slow, 5000), { ok: true, value: 'slow' });
  assert.equal((await within(settleOf(bg.fireAndForget('nobody', 'lone')), 5000)).ok, true);
  assert.deepEqual(
    sql(`SELECT json_agg(json_build_object('task', task, 'state', state) ORDER BY id) FROM ${schema}.bmad_executions`),
    [
      { task: 'slow', state: 2 },
      { task: 'poison', state: 0 },
      { task: 'lone', state: 0 },
    ],
  );
  assert.ok(!errors.some((m) => /not written|could not be stored/.test(m)), errors.join('\n'));
  await bg.shutdown();
});

for (const kind of ['sqlite', 'postgres']) {
  const t = kind === 'postgres' ? pgTest : test;
  t(`${kind}: a key or agent name over 2048 bytes as UTF-8 is refused at submission`, async (ctx) => {
    const url = kind === 'postgres' ? `${SERVER}?schema=${schemaName()}` : `sqlite:${join(tempDir(ctx, 'bmad-key-'), 'x.db')}`;
    const bg = make(url);
    await bg.initialize();
    // 1024 characters of 3 bytes: within the key's 1024 characters, over a PostgreSQL index entry.
    const wide = '字'.repeat(1024);
    const [a, key, agent, b] = await Promise.all([
      settleOf(bg.fireAndForget('nobody', 'a')),
      settleOf(bg.fireAndForget('nobody', 'k', { key: wide })),
      settleOf(bg.fireAndForget(wide, 'x')),
      settleOf(bg.fireAndForget('nobody', 'b')),
    ]);
    assert.equal(a.ok && b.ok, true);
    for (const [r, where] of [
      [key, 'options.key'],
      [agent, 'agent'],
    ]) {
      assert.ok(r.value instanceof RangeError, where);
      assert.equal(r.value.code, 'ERR_VALUE_TOO_LARGE');
      assert.match(r.value.message, new RegExp(`^${where.replace('.', '\\.')} is too large to store: 3072 bytes as UTF-8 \\(at most 2048\\)$`));
    }
  });
}

test('an error too big to store whole is stored cut, and its execution fails with it', async (ctx) => {
  const bg = make(`sqlite:${join(tempDir(ctx, 'bmad-err-'), 'x.db')}`);
  // 90M characters escaped as \u0001 would be longer than V8's longest string.
  bg.registerAgent('bad', async () => {
    throw Object.assign(new Error('\u0001'.repeat(90_000_000)), { code: 'E_HUGE' });
  });
  await bg.initialize();
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e.executionId));
  const r = await within(settleOf(bg.execute('bad', 'x')), 20000);
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'E_HUGE');
  const stored = await bg.fetchExecutionStatus(failed[0]);
  assert.equal(stored.status, 'failed');
  assert.equal(stored.errorObject.code, 'E_HUGE');
  assert.equal(stored.errorObject.message.length, 1024 * 1024 + ' (cut: 90000000 characters)'.length + 3);
});

pgTest('an agent registered under a name no store can hold runs in memory only; the claims of the others go on', async () => {
  const bg = make(`${SERVER}?schema=${schemaName()}`);
  bg.registerAgent('a\u0000b', async (task) => `nul:${task}`);
  bg.registerAgent('echo', async (task) => task);
  await bg.initialize();
  assert.equal(await within(bg.execute('echo', 'stored'), 5000), 'stored');
  assert.equal(await within(bg.execute('a\u0000b', 'x', { durable: false }), 5000), 'nul:x');
  assert.throws(() => bg.setAgentLimits('a\u0000b', { globalConcurrency: 1 }), (err) => err instanceof TypeError && /^agent must not contain a NUL/.test(err.message));
  assert.equal(await within(bg.execute('echo', 'after'), 5000), 'after');
});

test('a result whose JSON would be longer than a JavaScript string fails with ERR_VALUE_TOO_LARGE', async (ctx) => {
  const bg = make(`sqlite:${join(tempDir(ctx, 'bmad-long-'), 'x.db')}`);
  // 100M characters, each escaped as \u0001: 600M, past V8's longest string.
  bg.registerAgent('long', async () => '\u0001'.repeat(100_000_000));
  await bg.initialize();
  const r = await within(settleOf(bg.execute('long', 'x')), 20000);
  assert.equal(r.ok, false);
  assert.equal(r.value.code, 'ERR_VALUE_TOO_LARGE');
  assert.match(r.value.message, /^result is too large to store: its JSON text is longer than a JavaScript string can be$/);
});

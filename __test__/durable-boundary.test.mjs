// What crosses between JS and the store's thread: a batch's submissions go as one text and
// numbers, stored rows come back as texts and numbers (claims, ends heard of, fetches). Each
// field must land where it belongs, for every submission of a batch, with texts of any
// length and script, and with the fields that may be absent present or not.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test, shutDownAfterEach, tempDir, within } from './helpers.mjs';
import { SERVER, pgTest } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
const make = (url, config = {}) => create({ store: url, ...config });

const TEXTS = ['', 'plain', 'é', 'a𝄞b (a surrogate pair)', '日本語のタスク', 'x'.repeat(5000), '{"looks":"like json"}', 'tab\tand\nnewline'];
const AGENTS = ['a', 'agent-é', 'agent-𝄞'];
const LEVELS = ['critical', 'high', 'medium', 'low', 'background'];

/** Submission `i`: its agent, task, options (absent for every third) and key (every fourth). */
function submission(i) {
  let options;
  if (i % 3 !== 0) {
    options = { n: i, s: TEXTS[(i + 3) % TEXTS.length], priority: LEVELS[i % LEVELS.length], retries: i % 5 };
    if (i % 4 === 0) options.key = `key-${i}-𝄞`;
  }
  return { agent: AGENTS[i % AGENTS.length], task: `${i}:${TEXTS[i % TEXTS.length]}`, options };
}

async function roundTrip(url) {
  const N = 40;
  const submitter = make(url);
  await submitter.initialize();
  const t0 = Date.now();
  // One synchronous loop: one batch.
  const subs = Array.from({ length: N }, (_, i) => submission(i));
  const answers = subs.map((s) => submitter.fireAndForget(s.agent, s.task, s.options));
  const ids = (await Promise.all(answers)).map((a) => a.executionId);
  assert.equal(new Set(ids).size, N, 'one id per submission');

  // Another executor claims them: each agent call gets its own submission's task and options.
  const runner = make(url, { maxConcurrentAgents: 8 });
  const seen = new Map();
  for (const agent of AGENTS) {
    runner.registerAgent(agent, async (task, options) => {
      const i = Number(task.slice(0, task.indexOf(':')));
      seen.set(i, { agent, task, options });
      return { i, echo: task, note: TEXTS[i % TEXTS.length] };
    });
  }
  await runner.initialize();
  // The submitter hears the ends from the store (rows read back) and settles waitFor.
  const finals = await within(Promise.all(ids.map((id) => submitter.waitFor(id))), 15000);
  for (let i = 0; i < N; i++) {
    const s = subs[i];
    assert.deepEqual(seen.get(i), { agent: s.agent, task: s.task, options: s.options }, `agent call ${i}`);
    const f = finals[i];
    assert.equal(f.found && f.executionId, ids[i]);
    assert.equal(f.status, 'completed', `execution ${i}`);
    assert.equal(f.agent, s.agent);
    assert.equal(f.task, s.task);
    assert.deepEqual(f.result, { i, echo: s.task, note: TEXTS[i % TEXTS.length] });
    // Read straight from the store by the other executor: every field where it belongs.
    const row = await runner.fetchExecutionStatus(ids[i]);
    assert.equal(row.found && row.status, 'completed');
    assert.equal(row.agent, s.agent);
    assert.equal(row.task, s.task);
    // fireAndForget's default level is low.
    assert.equal(row.priority, s.options === undefined ? 'low' : s.options.priority);
    assert.equal(row.key, s.options?.key);
    assert.equal(row.attempt, 1);
    assert.equal(row.mode, 'fire-and-forget');
    assert.ok(typeof row.owner === 'string' && row.owner === finals[0].owner && row.owner !== '', `owner of ${i}`);
    assert.ok(row.started >= t0 && row.started <= row.startedAt, `created at of ${i}`);
    assert.equal(row.maxAttempts, (s.options?.retries ?? 0) + 1);
    assert.equal(row.durable, true);
    assert.ok(typeof row.startedAt === 'number' && typeof row.finishedAt === 'number' && row.finishedAt >= row.startedAt, `times of ${i}`);
    assert.deepEqual(row.result, f.result);
  }
  assert.equal(await runner.checkStore(), 'ok');
}

test('SQLite: every field of a batch of submissions and of the rows read back lands where it belongs', async (t) => {
  await roundTrip(`sqlite:${join(tempDir(t, 'bmad-boundary-'), 'executions.db')}`);
});

pgTest('PostgreSQL: every field of a batch of submissions and of the rows read back lands where it belongs', async () => {
  await roundTrip(`${SERVER}?schema=boundary_${process.pid}`);
});

/**
 * Fire-and-forget submissions that another executor runs: the submitter hears their ends
 * and its getExecutionStatus says how each ended, with its value, read from the store.
 */
async function endsHeard(url) {
  const submitter = make(url);
  await submitter.initialize();
  const tasks = ['ok-1', 'ok-2', 'fail-3', 'ok-4'];
  const ids = (await Promise.all(tasks.map((task) => submitter.fireAndForget('worker', task)))).map((a) => a.executionId);
  const runner = make(url);
  runner.registerAgent('worker', async (task) => {
    if (task.startsWith('fail')) throw new Error(`no luck with ${task} 𝄞`);
    return { task, list: [1, 'two', null] };
  });
  await runner.initialize();
  const statuses = await within(
    (async () => {
      for (;;) {
        const all = ids.map((id) => submitter.getExecutionStatus(id));
        if (all.every((s) => s.found && (s.status === 'completed' || s.status === 'failed'))) return all;
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    15000,
  );
  tasks.forEach((task, i) => {
    const s = statuses[i];
    assert.equal(s.executionId, ids[i]);
    assert.equal(s.task, task);
    assert.equal(s.agent, 'worker');
    if (task.startsWith('fail')) {
      assert.equal(s.status, 'failed');
      assert.equal(s.error, `no luck with ${task} 𝄞`);
      assert.equal(s.result, null);
    } else {
      assert.equal(s.status, 'completed');
      assert.deepEqual(s.result, { task, list: [1, 'two', null] });
    }
    // The same object each time it is asked for.
    assert.equal(submitter.getExecutionStatus(ids[i]), s);
  });
}

test('SQLite: the submitter of fire-and-forget executions run elsewhere knows how each ended', async (t) => {
  await endsHeard(`sqlite:${join(tempDir(t, 'bmad-boundary-'), 'executions.db')}`);
});

pgTest('PostgreSQL: the submitter of fire-and-forget executions run elsewhere knows how each ended', async () => {
  await endsHeard(`${SERVER}?schema=boundary_ends_${process.pid}`);
});

/**
 * The numbers of a submission, each where it belongs: a timeout, a delay, and a retry's
 * delay and backoff, in one batch with a plain submission, each seen to act.
 */
async function numbersAct(url) {
  const submitter = make(url);
  await submitter.initialize();
  const t0 = Date.now();
  const subs = [
    ['plain', {}],
    ['slow', { timeout: 150 }],
    ['late', { delayMs: 400 }],
    ['flaky', { retries: 1, retryDelayMs: 300, backoff: 'fixed' }],
  ];
  const ids = (await Promise.all(subs.map(([task, options]) => submitter.fireAndForget('n', task, options)))).map((a) => a.executionId);
  const runner = make(url);
  const calls = [];
  runner.registerAgent('n', async (task, _options, { signal }) => {
    calls.push({ task, at: Date.now() });
    if (task === 'slow') await new Promise((resolve) => signal.addEventListener('abort', resolve));
    if (task === 'flaky' && calls.filter((c) => c.task === 'flaky').length === 1) throw new Error('first try fails');
    return task;
  });
  await runner.initialize();
  const finals = await within(Promise.all(ids.map((id) => submitter.waitFor(id))), 15000);
  const [plain, slow, late, flaky] = finals;
  assert.equal(plain.status, 'completed');
  assert.equal(slow.status, 'failed', 'the timeout of 150 ms ended the agent that waits for its signal');
  assert.match(slow.error, /timed out|timeout/i);
  const lateCall = calls.find((c) => c.task === 'late');
  assert.ok(lateCall.at - t0 >= 400 - 20, `the delay of 400 ms held the start back (started after ${lateCall.at - t0} ms)`);
  assert.equal(late.status, 'completed');
  const flakyCalls = calls.filter((c) => c.task === 'flaky');
  assert.equal(flakyCalls.length, 2);
  assert.ok(flakyCalls[1].at - flakyCalls[0].at >= 300 - 20, `the retry waited its 300 ms (${flakyCalls[1].at - flakyCalls[0].at} ms)`);
  assert.equal(flaky.status, 'completed');
  assert.equal(flaky.attempt, 2);
  assert.equal(flaky.maxAttempts, 2);
}

test('SQLite: a timeout, a delay and a retry delay sent in one batch each act on their own submission', async (t) => {
  await numbersAct(`sqlite:${join(tempDir(t, 'bmad-boundary-'), 'executions.db')}`);
});

pgTest('PostgreSQL: a timeout, a delay and a retry delay sent in one batch each act on their own submission', async () => {
  await numbersAct(`${SERVER}?schema=boundary_numbers_${process.pid}`);
});

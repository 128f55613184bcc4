// executeMultiple.
import assert from 'node:assert/strict';
import { test, exitIfWorkLeftBehind, makeExecutor, sleep, within } from './helpers.mjs';

exitIfWorkLeftBehind();

// The agents most tests here use: makeExecutor({ agents: AGENTS }).
const AGENTS = {
  a100: async (task) => {
    await sleep(100);
    return { agent: 'a100', task };
  },
  a200: async (task) => {
    await sleep(200);
    return { agent: 'a200', task };
  },
  a300: async (task) => {
    await sleep(300);
    return { agent: 'a300', task };
  },
  fail: async () => {
    await sleep(50);
    throw new Error('agent exploded');
  },
  same: async () => 'same-answer',
  other: async () => 'other-answer',
};

test('executeMultiple waits for every agent and returns results in input order', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const t0 = Date.now();
    const out = await bg.executeMultiple(['a300', 'a100', 'a200'], 'validate', { artifact: 'prd.md' });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 295, `waited ${elapsed} ms, the slowest agent takes 300 ms`);
    assert.equal(typeof out.aggregationId, 'string');
    assert.equal(out.results.length, 3);
    assert.deepEqual(
      out.results.map((r) => r.agent),
      ['a300', 'a100', 'a200'],
    );
    for (const r of out.results) {
      assert.equal(r.status, 'completed');
      assert.deepEqual(r.result, { agent: r.agent, task: 'validate' });
      assert.equal(r.error, null);
      assert.equal(typeof r.id, 'string');
      assert.equal(typeof r.duration, 'number');
    }
    const delays = { a100: 100, a200: 200, a300: 300 };
    for (const r of out.results) {
      assert.ok(r.duration >= delays[r.agent] - 5, `${r.agent} duration ${r.duration}`);
      assert.ok(r.duration < delays[r.agent] + 1000, `${r.agent} duration ${r.duration}`);
    }
    // ids are real executions, finished and queryable
    assert.equal(new Set(out.results.map((r) => r.id)).size, 3);
    for (const r of out.results) {
      const s = bg.getExecutionStatus(r.id);
      assert.equal(s.found, true);
      assert.equal(s.status, 'completed');
      assert.equal(s.agent, r.agent);
      assert.equal(s.result, r.result, 'the same result object');
    }
    assert.deepEqual(out.consistent, { consistent: true, all_succeeded: true });
    assert.equal(bg.getStatus().running, 0);
  } finally {
    await bg.shutdown();
  }
});

test('agents run concurrently (subject to maxConcurrentAgents)', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const t0 = Date.now();
    await bg.executeMultiple(['a300', 'a300', 'a300'], 't');
    const parallel = Date.now() - t0;
    assert.ok(parallel < 850, `three 300 ms agents in parallel took ${parallel} ms`);
  } finally {
    await bg.shutdown();
  }
  const bg1 = makeExecutor({ agents: AGENTS, maxConcurrentAgents: 1 });
  try {
    const t0 = Date.now();
    const out = await bg1.executeMultiple(['a100', 'a100', 'a100'], 't');
    const serial = Date.now() - t0;
    assert.ok(serial >= 295, `with one slot three 100 ms agents took ${serial} ms`);
    assert.equal(out.report.successful, 3);
  } finally {
    await bg1.shutdown();
  }
});

test('a failing agent is counted as failed; the slow one is still waited for', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const t0 = Date.now();
    const out = await bg.executeMultiple(['a100', 'fail', 'a300'], 'x');
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 295, `elapsed ${elapsed}`);
    assert.deepEqual(
      out.results.map((r) => [r.agent, r.status]),
      [
        ['a100', 'completed'],
        ['fail', 'failed'],
        ['a300', 'completed'],
      ],
    );
    const failed = out.results[1];
    assert.equal(failed.result, null);
    assert.equal(typeof failed.error, 'string');
    assert.match(failed.error, /agent exploded/);
    assert.equal(out.report.total, 3);
    assert.equal(out.report.successful, 2);
    assert.equal(out.report.failed, 1);
    assert.ok(Math.abs(out.report.success_rate - 200 / 3) < 0.01, `success_rate ${out.report.success_rate}`);
    assert.equal(out.consistent.consistent, false);
    assert.equal(typeof out.consistent.reason, 'string');
    assert.ok(out.consistent.reason.length > 0);
    assert.ok(Array.isArray(out.consistent.failures));
    assert.equal(out.consistent.failures.length, 1);
    assert.equal(out.consistent.failures[0].agent, 'fail');
    assert.equal(out.report.consistency, out.consistent);
  } finally {
    await bg.shutdown();
  }
});

test('an unknown agent fails with ERR_AGENT_NOT_FOUND inside the aggregation', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const out = await bg.executeMultiple(['a100', 'nobody-here'], 'x');
    assert.equal(out.results[1].status, 'failed');
    assert.match(out.results[1].error, /No agent registered for "nobody-here"/);
    assert.equal(out.report.successful, 1);
    assert.equal(out.report.success_rate, 50);
  } finally {
    await bg.shutdown();
  }
});

test('report arithmetic: total, successful, failed, success_rate, total/average duration, timestamp', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const before = Date.now();
    const out = await bg.executeMultiple(['a100', 'a200', 'fail', 'a300'], 'x');
    const after = Date.now();
    const { report, results } = out;
    assert.deepEqual(
      Object.keys(report).sort(),
      ['average_duration', 'consistency', 'failed', 'success_rate', 'successful', 'timestamp', 'total', 'total_duration'].sort(),
    );
    assert.equal(report.total, 4);
    assert.equal(report.successful, 3);
    assert.equal(report.failed, 1);
    assert.equal(report.success_rate, 75);
    const sum = results.reduce((a, r) => a + r.duration, 0);
    assert.ok(Math.abs(report.total_duration - sum) < 1, `total_duration ${report.total_duration} vs sum ${sum}`);
    assert.ok(Math.abs(report.average_duration - sum / 4) < 1, `average_duration ${report.average_duration} vs ${sum / 4}`);
    assert.ok(report.total_duration >= 100 + 200 + 300 + 50 - 10);
    const ts = typeof report.timestamp === 'number' ? report.timestamp : Date.parse(report.timestamp);
    assert.ok(Number.isFinite(ts), `timestamp ${report.timestamp}`);
    assert.ok(ts >= before - 1000 && ts <= after + 1000);
    assert.equal(report.consistency, out.consistent);

    const all = await bg.executeMultiple(['same', 'same'], 'x');
    assert.equal(all.report.success_rate, 100);
    assert.equal(all.report.failed, 0);
    const none = await bg.executeMultiple(['fail', 'fail'], 'x');
    assert.equal(none.report.success_rate, 0);
    assert.equal(none.report.successful, 0);
    assert.equal(none.report.failed, 2);
    assert.equal(none.consistent.failures.length, 2);
  } finally {
    await bg.shutdown();
  }
});

test('options.consistencyCheck: receives results, may return false, an object, a promise of either, or throw', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    let seen;
    const ok = await bg.executeMultiple(['same', 'same'], 'x', {
      consistencyCheck: (results) => {
        seen = results;
        return results.every((r) => r.result === results[0].result);
      },
    });
    assert.deepEqual(ok.consistent, { consistent: true, all_succeeded: true });
    assert.ok(Array.isArray(seen));
    assert.deepEqual(
      seen.map((r) => [r.agent, r.status, r.result]),
      [
        ['same', 'completed', 'same-answer'],
        ['same', 'completed', 'same-answer'],
      ],
    );

    const differ = await bg.executeMultiple(['same', 'other'], 'x', {
      consistencyCheck: (results) => results.every((r) => r.result === results[0].result),
    });
    assert.equal(differ.consistent.consistent, false);
    assert.equal(typeof differ.consistent.reason, 'string');
    assert.equal(differ.report.consistency.consistent, false);
    assert.equal(differ.report.success_rate, 100, 'inconsistency is not failure');

    const obj = await bg.executeMultiple(['same', 'other'], 'x', {
      consistencyCheck: () => ({ consistent: false, reason: 'answers differ: same vs other' }),
    });
    assert.equal(obj.consistent.consistent, false);
    assert.equal(obj.consistent.reason, 'answers differ: same vs other');

    const objOk = await bg.executeMultiple(['same', 'same'], 'x', {
      consistencyCheck: () => ({ consistent: true }),
    });
    assert.equal(objOk.consistent.consistent, true);

    const thrown = await bg.executeMultiple(['same', 'same'], 'x', {
      consistencyCheck: () => {
        throw new Error('checker broke');
      },
    });
    assert.equal(thrown.consistent.consistent, false);
    assert.match(thrown.consistent.reason, /checker broke/);
    assert.equal(thrown.report.successful, 2);

    // An async check is awaited: its verdict counts, and a rejection is an inconsistency.
    const asyncOk = await bg.executeMultiple(['same', 'same'], 'x', { consistencyCheck: async () => true });
    assert.deepEqual(asyncOk.consistent, { consistent: true, all_succeeded: true });
    const asyncDiffer = await bg.executeMultiple(['same', 'other'], 'x', {
      consistencyCheck: async () => ({ consistent: false, reason: 'fetched reference differs' }),
    });
    assert.deepEqual(asyncDiffer.consistent, { consistent: false, reason: 'fetched reference differs', failures: [] });
    const rejected = await bg.executeMultiple(['same', 'same'], 'x', { consistencyCheck: () => Promise.reject(new Error('reference down')) });
    assert.equal(rejected.consistent.consistent, false);
    assert.match(rejected.consistent.reason, /consistencyCheck threw: reference down/);
    // A verdict whose fields cannot be read is an inconsistency too, not a rejection.
    const unreadable = await bg.executeMultiple(['same', 'same'], 'x', {
      consistencyCheck: () => ({
        get consistent() {
          throw new Error('getter broke');
        },
      }),
    });
    assert.match(unreadable.consistent.reason, /getter broke/);

    // with failures the failures decide; the check result never turns failure into consistent
    const withFail = await bg.executeMultiple(['same', 'fail'], 'x', { consistencyCheck: () => true });
    assert.equal(withFail.consistent.consistent, false);
    assert.equal(withFail.consistent.failures.length, 1);
  } finally {
    await bg.shutdown();
  }
});

test('empty and non-array agents reject with TypeError ERR_INVALID_ARG and submit nothing', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    for (const bad of [[], 'a100', undefined, null, 42, { 0: 'a100', length: 1 }, new Set(['a100'])]) {
      const p = bg.executeMultiple(bad, 'x');
      assert.ok(p instanceof Promise, 'returns a promise, does not throw synchronously');
      await assert.rejects(p, (err) => {
        assert.ok(err instanceof TypeError, `${err}`);
        assert.equal(err.code, 'ERR_INVALID_ARG');
        return true;
      });
    }
    await assert.rejects(bg.executeMultiple(['a100', 42], 'x'), { name: 'TypeError', code: 'ERR_INVALID_ARG' });
    await assert.rejects(bg.executeMultiple(['a100', 'a200'], 'x', { priority: 'urgent' }), { name: 'RangeError', code: 'ERR_UNKNOWN_PRIORITY' });
    assert.equal(bg.getStatus().submitted ?? 0, 0, 'a bad call submits nothing');
    assert.equal(bg.getStatus().queued + bg.getStatus().running, 0);
    const out = await bg.executeMultiple(['same'], 'x');
    assert.equal(out.report.successful, 1);
  } finally {
    await bg.shutdown();
  }
});

test('events aggregation-started and aggregation-completed carry their payloads', async () => {
  const bg = makeExecutor({ agents: AGENTS });
  try {
    const events = [];
    bg.on('aggregation-started', (d) => events.push(['started', d, Date.now()]));
    bg.on('aggregation-completed', (d) => events.push(['completed', d, Date.now()]));
    const agents = ['a100', 'fail'];
    const p = bg.executeMultiple(agents, 'the-task');
    const out = await p;
    assert.deepEqual(
      events.map((e) => e[0]),
      ['started', 'completed'],
    );
    const [, started] = events[0];
    assert.equal(started.aggregationId, out.aggregationId);
    assert.deepEqual(started.agents, ['a100', 'fail']);
    assert.equal(started.task, 'the-task');
    const [, completed] = events[1];
    assert.equal(completed.aggregationId, out.aggregationId);
    assert.deepEqual(completed.results, out.results);
    assert.deepEqual(completed.report, out.report);
    assert.equal(completed.report.failed, 1);
    // distinct aggregations have distinct ids
    const out2 = await bg.executeMultiple(['same'], 't');
    assert.notEqual(out2.aggregationId, out.aggregationId);
  } finally {
    await bg.shutdown();
  }
});

test('options reach every agent unchanged and the priority applies to each execution', async () => {
  const seen = [];
  const bg = makeExecutor({
    maxConcurrentAgents: 1,
    agents: {
      probe: (task, options, ctx) => {
        seen.push({ task, options, priority: ctx.priority });
        return ctx.executionId;
      },
    },
  });
  try {
    const options = { artifact: 'prd.md', priority: 'critical' };
    const out = await bg.executeMultiple(['probe', 'probe'], 'validate-artifact', options);
    assert.equal(seen.length, 2);
    for (const s of seen) {
      assert.equal(s.task, 'validate-artifact');
      assert.equal(s.options, options);
      assert.equal(s.priority, 'critical');
    }
    assert.deepEqual(
      out.results.map((r) => r.result),
      out.results.map((r) => r.id),
    );
  } finally {
    await bg.shutdown();
  }
});

test('executeMultiple of more items than one native batch settles when they end while it is still submitting (aborted signal, full queue)', async () => {
  const bg = makeExecutor({ maxConcurrentAgents: 2, agents: { a: async (t) => t } });
  const names = Array.from({ length: 600 }, () => 'a');
  const aborted = await within(bg.executeMultiple(names, 't', { signal: AbortSignal.abort() }), 3000);
  assert.notEqual(aborted, 'pending', 'settled with an aborted signal');
  assert.equal(aborted.results.length, 600);
  assert.ok(aborted.results.every((r) => r.status === 'cancelled'));
  const small = makeExecutor({ maxConcurrentAgents: 1, maxQueued: 10, agents: { a: async (t) => t } });
  const full = await within(small.executeMultiple(names, 't'), 3000);
  assert.notEqual(full, 'pending', 'settled with a full queue');
  assert.equal(full.results.length, 600);
  assert.ok(full.results.filter((r) => r.status === 'failed').length >= 589, 'the items past maxQueued failed');
  await Promise.all([bg.shutdown(), small.shutdown()]);
});

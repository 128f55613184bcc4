// executeMultiple with different tasks: [{ agent, task, options }] items, in one aggregation
// whose report has the same shape as with one shared task.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach } from './helpers.mjs';

const make = shutDownAfterEach();

test('items run their own task and options; results keep input order and name the task', async () => {
  const bg = make();
  const seen = [];
  bg.registerAgent('echo', async (task, options, ctx) => {
    seen.push([task, ctx.priority, options && options.tag]);
    return task.toUpperCase();
  });
  const started = [];
  bg.on('aggregation-started', (e) => started.push(e));
  const r = await bg.executeMultiple([
    { agent: 'echo', task: 'a', options: { priority: 'high', tag: 1 } },
    { agent: 'echo', task: 'b' },
  ]);
  assert.deepEqual(
    r.results.map((x) => [x.agent, x.task, x.status, x.result]),
    [
      ['echo', 'a', 'completed', 'A'],
      ['echo', 'b', 'completed', 'B'],
    ],
  );
  assert.deepEqual(seen.sort(), [
    ['a', 'high', 1],
    ['b', 'medium', undefined],
  ]);
  assert.equal(r.report.total, 2);
  assert.equal(r.report.successful, 2);
  assert.equal(r.consistent.consistent, true);
  assert.deepEqual(started[0].tasks, ['a', 'b']);
  assert.deepEqual(started[0].agents, ['echo', 'echo']);
});

test('(items, options): options give consistencyCheck and the default options; names run the shared task', async () => {
  const bg = make();
  bg.registerAgent('len', async (task, options) => task.length + (options && options.plus ? options.plus : 0));
  const r = await bg.executeMultiple([{ agent: 'len', task: 'abc' }, { agent: 'len', task: 'de', options: { plus: 10 } }], {
    plus: 1,
    consistencyCheck: (results) => ({ consistent: results[0].result === 4, reason: 'first is 3 + 1' }),
  });
  assert.deepEqual(
    r.results.map((x) => x.result),
    [4, 12],
  );
  assert.equal(r.consistent.consistent, true);
  const mixed = await bg.executeMultiple(['len', { agent: 'len', task: 'xyzw' }], 'ab');
  assert.deepEqual(
    mixed.results.map((x) => [x.task, x.result]),
    [
      ['ab', 2],
      ['xyzw', 4],
    ],
  );
});

test('a bad item is refused with a TypeError naming it, and nothing is submitted', async () => {
  const bg = make();
  let calls = 0;
  bg.registerAgent('a', async () => calls++);
  await assert.rejects(bg.executeMultiple([{ agent: 'a', task: 'ok' }, { agent: 'a', task: 5 }]), {
    name: 'TypeError',
    message: /agents\[1\]\.task must be a string, got 5/,
  });
  await assert.rejects(bg.executeMultiple([{ agent: '', task: 'x' }]), { message: /agents\[0\]\.agent must be a non-empty string/ });
  await assert.rejects(bg.executeMultiple([{ agent: 'a', task: 'x' }, 7]), { message: /agents\[1\] must be an agent name or/ });
  await assert.rejects(bg.executeMultiple([{ agent: 'a', task: 'x', options: { priority: 'nope' } }]), { code: 'ERR_UNKNOWN_PRIORITY' });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 0);
  assert.equal(bg.getStats().counts.submitted, 0);
});

test('an item whose options are refused by the durable check submits nothing either', async () => {
  const bg = make();
  let calls = 0;
  bg.registerAgent('a', async () => calls++);
  await assert.rejects(bg.executeMultiple([{ agent: 'a', task: 'x' }, { agent: 'a', task: 'y', options: { durable: true } }]), { code: 'ERR_NO_STORE' });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 0);
});

// What an executor may conclude about another one's attempts: on its own host it may judge a
// process dead and take its attempts at once; on another host only an expired lease counts;
// and a lease is renewed from the store's thread, so an agent blocking the event loop keeps
// its attempt. Another host is a process in a pid and UTS namespace of its own (`unshare`, as
// root): another process table, where its pid means nothing here, and another hostname.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { afterEach } from 'node:test';
import { shutDownAfterEach, waitUntil, within, sleep, ENTRY } from './helpers.mjs';
import { pgTest, direct, sql } from './durable/pg-proxy.mjs';

const create = shutDownAfterEach({ timeoutMs: 2000 });
const make = (url, config = {}) => create({ store: url, ...config });
let schemas = 0;
const fresh = () => `hosts_${process.pid}_${++schemas}`;

/** Child processes of the running test, killed after it whatever happened. */
const children = new Set();
afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
});

const OTHER_HOST = 'bmad-other-host';
const unshareArgs = ['--pid', '--fork', '--kill-child', '--mount-proc', '--uts'];
/** Whether this process may make namespaces (root, util-linux's unshare). */
const canUnshare = spawnSync('unshare', [...unshareArgs, 'true'], { stdio: 'ignore' }).status === 0;

/**
 * A runner in a child process; `otherHost`: in namespaces of its own, named OTHER_HOST. It
 * registers `agent` (which prints `started <attempt>` and never returns) and prints `ready`.
 * Resolves `{ child, out() }`.
 */
async function runner(url, { leaseMs, otherHost, agent = 'hold' }) {
  const source = `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
    const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, leaseMs: ${leaseMs}, throttleIfExceeded: false });
    bg.registerAgent(${JSON.stringify(agent)}, async (task, o, { attempt }) => {
      console.log('started ' + attempt);
      await new Promise(() => {});
    });
    await bg.initialize();
    console.log('ready');`;
  const [cmd, args] = otherHost
    ? ['unshare', [...unshareArgs, 'sh', '-c', `hostname ${OTHER_HOST} && exec "$0" --input-type=module -e "$1"`, process.execPath, source]]
    : [process.execPath, ['--input-type=module', '-e', source]];
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await waitUntil(() => out.includes('ready') || child.exitCode !== null, 'the runner is ready', { timeoutMs: 10000 });
  assert.ok(out.includes('ready'), `the runner started (exit ${child.exitCode})`);
  return { child, out: () => out };
}

/** The execution's row: attempt, state, owner, lease and when its attempt was claimed. */
const rowOf = (schema) =>
  sql(
    `SELECT json_build_object('attempt', attempt, 'state', state, 'owner', owner, 'lease', lease_expires_at, 'attemptedAt', attempted_at) FROM "${schema}".bmad_executions`,
  );

const otherHostTest = canUnshare
  ? pgTest
  : process.env.BMAD_REQUIRE_PG === '1'
    ? (name) => pgTest(name, () => assert.fail('unshare cannot make pid and UTS namespaces here (needs root and util-linux)'))
    : (name) => pgTest(name, (t) => t.skip('unshare cannot make namespaces here (needs root)'));

otherHostTest('an executor on another host keeps its attempt while it lives, and loses it only once its lease has run out after it is killed', async () => {
  const schema = fresh();
  const url = direct(schema);
  // Here: rescues every 150 ms (half its lease), and runs the agent too once the attempt is free.
  const here = make(url, { leaseMs: 300 });
  await here.initialize();
  const rescued = [];
  here.on('execution-rescued', (e) => rescued.push(e));
  const done = here.execute('hold', 'across hosts', { retries: 1 });
  const { child, out } = await runner(url, { leaseMs: 1500, otherHost: true });
  await waitUntil(() => out().includes('started 1'), 'the other host started it', { timeoutMs: 10000 });

  // The store holds it under another host key, with its pid in its own namespace: 1, which
  // here is another process altogether (another start time: "reused" if it were judged here).
  const workers = sql(`SELECT json_agg(json_build_object('owner', owner, 'host', host, 'pid', pid) ORDER BY started_at) FROM "${schema}".bmad_workers`);
  const other = workers.find((w) => w.owner.startsWith(`${OTHER_HOST}:`));
  const mine = workers.find((w) => !w.owner.startsWith(`${OTHER_HOST}:`));
  assert.ok(other && mine, JSON.stringify(workers));
  assert.equal(other.pid, 1);
  assert.notEqual(other.host, mine.host);

  // While it lives, through two of its leases and twenty rescue rounds here: left alone.
  const ranHere = [];
  here.registerAgent('hold', async (task, _options, { attempt }) => {
    ranHere.push(attempt);
    return `${task} on attempt ${attempt}`;
  });
  await sleep(3000);
  const held = rowOf(schema);
  assert.deepEqual([held.state, held.attempt, held.owner], [1, 1, other.owner], 'still its attempt');
  assert.deepEqual(ranHere, []);

  // Killed: taken over here, but not before the lease it held ran out.
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(await within(done, 10000), 'across hosts on attempt 2');
  const after = rowOf(schema);
  assert.deepEqual([after.state, after.attempt, after.owner], [2, 2, mine.owner]);
  assert.ok(after.attemptedAt >= held.lease, `claimed again at ${after.attemptedAt}, before the lease's end ${held.lease}`);
  assert.deepEqual(ranHere, [2]);
  assert.deepEqual(
    rescued.map((e) => [e.owner, e.attempt]),
    [[other.owner, 1]],
  );
});

pgTest('an executor on the same host that is killed loses its attempt at once, long before its lease ends', async () => {
  const schema = fresh();
  const url = direct(schema);
  const here = make(url, { leaseMs: 300 });
  await here.initialize();
  const done = here.execute('hold', 'same host', { retries: 1 });
  const { child, out } = await runner(url, { leaseMs: 8000, otherHost: false });
  await waitUntil(() => out().includes('started 1'), 'the child started it', { timeoutMs: 10000 });
  here.registerAgent('hold', async (task, _options, { attempt }) => `${task} on attempt ${attempt}`);
  const held = rowOf(schema);
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(await within(done, 5000), 'same host on attempt 2');
  const after = rowOf(schema);
  assert.equal(after.attempt, 2);
  assert.ok(after.attemptedAt < held.lease - 4000, `claimed again at ${after.attemptedAt}, the lease ran to ${held.lease}`);
});

pgTest('an agent blocking the event loop for four leases keeps its attempt: leases are renewed from the store thread', async () => {
  const schema = fresh();
  const url = direct(schema);
  // Another executor in another process, running the same agent: it would take the attempt
  // over (and print "started") if the lease ran out. It registers the agent once the attempt
  // runs here, so that it cannot claim it first.
  const source = `import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
    const bg = new BackgroundExecutor({ store: ${JSON.stringify(url)}, leaseMs: 1200, throttleIfExceeded: false });
    await bg.initialize();
    process.stdin.once('data', () => {
      bg.registerAgent('busy', async (task, o, { attempt }) => { console.log('started ' + attempt); return 'elsewhere'; });
      console.log('registered');
    });
    console.log('ready');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await waitUntil(() => out.includes('ready'), 'the other executor is ready', { timeoutMs: 10000 });
  // Renewed every 400 ms: a renewal may come up to 800 ms late on a busy machine.
  const a = make(url, { leaseMs: 1200 });
  const stale = [];
  a.on('execution-stale', (e) => stale.push(e));
  a.registerAgent('busy', async () => {
    child.stdin.write('go\n');
    await waitUntil(() => out.includes('registered'), 'the other executor runs the agent too', { timeoutMs: 5000 });
    // Four leases without a turn of the event loop.
    const end = Date.now() + 4800;
    while (Date.now() < end);
    return 'here';
  });
  await a.initialize();
  assert.equal(await within(a.execute('busy', 't', { retries: 1 }), 10000), 'here');
  await sleep(500); // a late claim there would show by now
  assert.equal(out.includes('started'), false, 'never run by the other executor');
  assert.deepEqual(stale, []);
  const row = rowOf(schema);
  assert.deepEqual([row.state, row.attempt], [2, 1]);
});

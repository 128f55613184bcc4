// Durable store, crash recovery with real processes (no internal hook):
//   A submits 200 durable executions, runs them 8 at a time, and is SIGKILLed while some run;
//   B opens the same store file and completes all 200, the interrupted ones as attempt 2;
//   this process (an executor with no agent) reads every result with fetchExecutionStatus.
// The processes are __test__/durable/worker.mjs; each appends `start|end|done <id> <attempt>
// <pid> <time>` lines to its own log (`done`: the store committed the outcome).
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import BackgroundExecutor from '../index.mjs';
import { test, tempDir, sleep, isAlive, exitIfWorkLeftBehind } from './helpers.mjs';
import { mulberry32, spawnWorker, readLogs } from './durable/common.mjs';

exitIfWorkLeftBehind();

const N = 200;
const CONCURRENCY = 8;
const seed = process.env.CRASH_SEED !== undefined ? Number(process.env.CRASH_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

/** Lines of `file` as [kind, id, attempt, pid], [] while it does not exist. */
function logLines(file) {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' '));
}

test(`a SIGKILLed process's running executions are completed by the next one as attempt 2 (seed ${seed})`, async (t) => {
  const dir = tempDir(t, 'bmad-durable-crash-');
  const store = join(dir, 'store.db');
  const rand = mulberry32(seed);
  const tasks = Array.from({ length: N }, (_, i) => `${i}:${100 + Math.floor(rand() * 201)}`); // sleeps 100-300 ms
  writeFileSync(join(dir, 'tasks.json'), JSON.stringify(tasks));
  const base = { store, concurrency: CONCURRENCY, retries: 1, leaseMs: 30000 };

  // ----- A: submits the 200, runs them, is SIGKILLed while some run -----
  const logA = join(dir, 'a.log');
  const a = spawnWorker({ ...base, log: logA, submit: join(dir, 'tasks.json') }, 'A');
  t.after(() => a.kill());
  const ids = JSON.parse((await a.line('ids ')).slice(4));
  assert.equal(ids.length, N);
  assert.equal(new Set(ids).size, N, 'distinct execution ids');
  for (const id of ids) assert.match(id, /^exec-d\d+$/);
  const taskOf = new Map(ids.map((id, i) => [id, tasks[i]]));

  // Kill once some have ended and ~8 are running (a start without end in A's log).
  let ended = 0;
  let open = 0;
  const deadline = Date.now() + 10000;
  for (;;) {
    const lines = logLines(logA);
    const started = new Set(lines.filter((l) => l[0] === 'start').map((l) => l[1]));
    for (const l of lines) if (l[0] === 'end') started.delete(l[1]);
    ended = lines.filter((l) => l[0] === 'end').length;
    open = started.size;
    if (ended >= 16 && open >= CONCURRENCY - 2) break;
    assert.ok(Date.now() < deadline, `A never had 16 ended and ${CONCURRENCY - 2} running (ended ${ended}, running ${open}); stderr: ${a.stderr()}`);
    assert.ok(a.running(), `A exited early; stderr: ${a.stderr()}`);
    await sleep(5);
  }
  const killedAt = Date.now();
  a.child.kill('SIGKILL');
  const exitA = await a.exited;
  assert.deepEqual(exitA, { code: null, signal: 'SIGKILL' });
  assert.equal(isAlive(a.pid), false, `A (pid ${a.pid}) must be gone`);
  assert.throws(() => process.kill(a.pid, 0), { code: 'ESRCH' }, `A (pid ${a.pid}) must not exist any more`);

  // ----- B: same store, same agent: completes all 200 -----
  writeFileSync(join(dir, 'ids.json'), JSON.stringify(ids));
  const b = spawnWorker({ ...base, log: join(dir, 'b.log'), waitIds: join(dir, 'ids.json') }, 'B');
  t.after(() => b.kill());
  assert.equal(await b.line('ended ', 15000), 'ended 0', 'B: every execution completed');
  assert.deepEqual(await b.exited, { code: 0, signal: null }, `B exits 0; stderr: ${b.stderr()}`);

  // ----- C: this process, an executor with no agent, reads every result -----
  const c = new BackgroundExecutor({ store: `sqlite:${store}` });
  t.after(() => c.shutdown());
  const finals = await Promise.all(ids.map((id) => c.fetchExecutionStatus(id)));

  const logs = readLogs(dir);
  assert.deepEqual(logs.other.filter((o) => !/^rescued /.test(o.line)), [], 'no failure, retry, stale result or store error was logged');
  const rescued = logs.other.filter((o) => o.file === 'b.log').map((o) => o.line.split(' '));

  const interrupted = []; // a start in A without its end in A
  const lostAfterEnd = []; // the agent returned in A, but A died before the store committed it
  const claimedNotStarted = []; // claimed by A (attempt 1 spent) but its agent never started in A
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    const f = finals[i];
    const what = `${id} (task ${tasks[i]}): ${JSON.stringify(f)}; log: ${JSON.stringify(logs.byId.get(id))}`;
    assert.equal(f.found, true, what);
    assert.equal(f.status, 'completed', what);
    assert.equal(f.task, taskOf.get(id), what);
    assert.equal(f.agent, 'job', what);
    assert.deepEqual(f.result, { task: tasks[i], pid: f.result.pid, attempt: f.attempt }, what);

    const list = logs.byId.get(id) || [];
    const inA = list.filter((e) => e.pid === a.pid);
    const inB = list.filter((e) => e.pid === b.pid);
    assert.equal(inA.length + inB.length, list.length, what);
    const startA = inA.filter((e) => e.kind === 'start');
    const endA = inA.filter((e) => e.kind === 'end');
    const doneA = inA.filter((e) => e.kind === 'done');
    const startB = inB.filter((e) => e.kind === 'start');
    const endB = inB.filter((e) => e.kind === 'end');
    assert.ok(startA.length <= 1 && endA.length <= 1 && doneA.length <= 1, `A ran it at most once: ${what}`);
    assert.ok(startB.length <= 1 && endB.length <= 1, `B ran it at most once: ${what}`);

    if (startA.length === 1 && endA.length === 0) {
      // Running at the kill: re-run once by B, as attempt 2.
      interrupted.push(id);
      assert.equal(startA[0].attempt, 1, what);
      assert.equal(f.attempt, 2, `interrupted in A: attempt 2 in B. ${what}`);
      assert.equal(f.result.pid, b.pid, what);
      assert.deepEqual([startB.length, endB.length, startB[0].attempt], [1, 1, 2], what);
    } else if (doneA.length === 1) {
      // Committed by A: never again.
      assert.deepEqual([startA.length, endA.length, startB.length, endB.length], [1, 1, 0, 0], `committed in A, never re-run: ${what}`);
      assert.equal(f.attempt, 1, what);
      assert.equal(f.result.pid, a.pid, what);
    } else if (endA.length === 1) {
      // The agent returned in A just before the kill; the store decides whether A's result
      // was committed (attempt 1, A's result) or not (re-run by B as attempt 2).
      if (f.attempt === 1) {
        assert.equal(f.result.pid, a.pid, what);
        assert.deepEqual([startB.length, endB.length], [0, 0], `committed in A, never re-run: ${what}`);
      } else {
        lostAfterEnd.push(id);
        assert.equal(f.attempt, 2, what);
        assert.equal(f.result.pid, b.pid, what);
        assert.deepEqual([startB.length, endB.length, startB[0].attempt], [1, 1, 2], what);
        assert.ok(endA[0].t >= killedAt - 1000, `returned less than 1 s before the kill: ${what}`);
      }
    } else {
      // Never started in A: ran once, in B; as attempt 1, unless A had already claimed it
      // (the claim was committed, the agent not called yet) when it was killed.
      assert.deepEqual([startB.length, endB.length], [1, 1], `never started by A: ran once in B. ${what}`);
      assert.equal(f.result.pid, b.pid, what);
      if (f.attempt !== 1) {
        claimedNotStarted.push(id);
        assert.equal(f.attempt, 2, what);
      }
      assert.equal(startB[0].attempt, f.attempt, what);
    }
    // Exactly one `end` line of the attempt the store kept, in the process its result names.
    const endsOfFinal = list.filter((e) => e.kind === 'end' && e.attempt === f.attempt);
    assert.equal(endsOfFinal.length, 1, what);
    assert.equal(endsOfFinal[0].pid, f.result.pid, what);
  }
  const reRun = new Set([...interrupted, ...lostAfterEnd, ...claimedNotStarted]);
  t.diagnostic(
    `seed ${seed}: A killed with ${ended} ended and ${open} running; interrupted ${interrupted.length}, ` +
      `returned-but-uncommitted ${lostAfterEnd.length}, claimed-not-started ${claimedNotStarted.length}; rescued by B ${rescued.length}`,
  );
  assert.ok(interrupted.length >= 1, 'some executions were running at the kill');
  assert.ok(reRun.size <= CONCURRENCY, `at most ${CONCURRENCY} executions (A's slots) were re-run: ${[...reRun]}`);
  // B rescued exactly the executions whose attempt 1 A lost.
  assert.deepEqual(
    rescued.map((r) => [r[1], r[2], r[3]]).sort(),
    [...reRun].map((id) => [id, '1', 'queued']).sort(),
    'B rescued (back to queued) the attempts A lost, and only those',
  );
  // Every attempt 2 is one A lost; every other execution ran once.
  for (let i = 0; i < N; i++) assert.equal(finals[i].attempt, reRun.has(ids[i]) ? 2 : 1, ids[i]);

  assert.equal(await c.checkStore(), 'ok');
});

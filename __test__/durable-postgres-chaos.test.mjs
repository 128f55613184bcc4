// PostgreSQL store chaos, several hosts simulated by processes (no internal hook): 3 worker
// processes (__test__/durable/worker.mjs) on one schema of a real server run 20k durable
// executions submitted from this process, while a random worker is SIGKILLed and restarted
// every ~2 s and the server itself is restarted once in the middle. Checked:
//   - every execution ends exactly once (the rows read back from the database, the waitFor()
//     outcomes, the workers' logs): re-runs only for attempts a killed process lost; every
//     attempt claimed once (the trigger below records each claim), run by the process that
//     claimed it soon after the claim, and claimed again soon after that process was killed
//     (a dead process of this host is rescued at once, not when its lease runs out);
//   - `globalConcurrency` is never exceeded, checked IN THE DATABASE AT EVERY CLAIM: a trigger
//     on bmad_executions (state becoming 1) counts the running executions of the claimed
//     agent and records a violation when they are more than its stored limit;
//   - a cancel issued here (a submitting executor) aborts the agent running in a worker
//     process, while the kills go on: the agent sees its signal aborted, the row ends cancelled.
//
// The test starts a server of its own (scripts/pg-cluster.mjs's startPostgres), so that
// its restart and the other suites' do not meet; it runs where the other PostgreSQL suites
// run (BMAD_TEST_PG_URL set by `node scripts/pg-cluster.mjs run -- …`) and is skipped where
// they are.
//
// Every random choice (agents and sleeps of the tasks, which worker dies and when, when the
// server restarts, when the cancels come) comes from PRNGs seeded by CHAOS_SEED (random when
// unset; printed in the test name). For exploring, not for CI: CHAOS_N (executions, default
// 20000) and CHAOS_KILL_MS (mean time between kills, default 2000); CHAOS_KEEP=1 keeps the
// workers' logs.
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BackgroundExecutor from '../index.mjs';
import { tempDir, sleep, isAlive, exitIfWorkLeftBehind, waitUntil, deferred } from './helpers.mjs';
import { mulberry32, spawnWorker, readLogs, checkRescues, checkAttempts } from './durable/common.mjs';

exitIfWorkLeftBehind();

const PG_TESTS = Boolean(process.env.BMAD_TEST_PG_URL);
let SERVER = ''; // the URL of this test's own server, once started
const PSQL = process.env.PSQL || 'psql';
const N = process.env.CHAOS_N !== undefined ? Number(process.env.CHAOS_N) : 20000;
const WORKERS = 3;
const CONCURRENCY = 32;
const RETRIES = 5; // attempts = 6: an execution survives 5 lost attempts
// Long: a dead local owner is rescued at once anyway (pid + start time); a lease running out
// during the server's restart would re-run attempts of live processes.
const LEASE_MS = 15000;
/** Most ms from a kill to the next claim of an attempt the killed process held (rescued at once, not by lease). */
const RESCUE_MS = 5000;
/** Most ms from a claim to the start of its attempt (or to the death of the process that claimed it). */
const CLAIM_START_MS = 3000;
const CHUNK = 1000;
/** The agent with a global limit, its limit, and the share of the executions it gets. */
const LIMITED = 'limited';
const LIMIT = 3;
const LIMITED_SHARE = 0.08;
/** Executions of agent `hold` (waits for its signal), each cancelled from this process. */
const HOLDS = 3;
/** Mean time between kills (each wait is drawn in [0.75, 1.25] of it). */
const KILL_MS = process.env.CHAOS_KILL_MS !== undefined ? Number(process.env.CHAOS_KILL_MS) : 2000;
const seed = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const NAME = `postgres chaos: ${N} durable executions, 3 processes, one SIGKILLed every ~${KILL_MS / 1000} s, the server restarted once (seed ${seed})`;

/** Runs `text` (SQL) through psql on the test server; returns its unaligned, tuples-only output. */
function psql(text) {
  return execFileSync(PSQL, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', SERVER, '-f', '-'], {
    input: text,
    encoding: 'utf8',
    maxBuffer: 1 << 28,
    timeout: 30000,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}
/** One JSON value selected by `query` (a single row, single column). */
const psqlJson = (query) => JSON.parse(psql(query).trim());

/**
 * The claim check, in the database: every change of a row to state 1 (a claim), and every row
 * stored running (handed to an idle executor by its submission), is recorded in
 * chaos_claims; for an agent with a row in bmad_limits, the running executions of that agent
 * are counted (the trigger's own statements see what the claim statement did and every
 * committed claim), and more than its limit is recorded in chaos_violations with the ids,
 * attempts and owners of the running ones.
 */
const TRIGGER = (s) => `
CREATE TABLE ${s}.chaos_claims (exec_id bigint NOT NULL, agent text NOT NULL, attempt integer NOT NULL, owner text,
  running bigint, lim integer, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE ${s}.chaos_violations (exec_id bigint NOT NULL, agent text NOT NULL, attempt integer NOT NULL, owner text,
  running bigint NOT NULL, lim integer NOT NULL, running_rows text[], at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION ${s}.chaos_on_claim() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
  lim integer;
  n bigint;
BEGIN
  SELECT l.global_concurrency INTO lim FROM ${s}.bmad_limits l WHERE l.agent = NEW.agent;
  IF lim IS NOT NULL THEN
    SELECT count(*) INTO n FROM ${s}.bmad_executions e WHERE e.state = 1 AND e.agent = NEW.agent;
    IF n > lim THEN
      INSERT INTO ${s}.chaos_violations (exec_id, agent, attempt, owner, running, lim, running_rows)
      SELECT NEW.id, NEW.agent, NEW.attempt, NEW.owner, n, lim,
             array_agg(e.id || '/' || e.attempt || '/' || coalesce(e.owner, '-') ORDER BY e.id)
      FROM ${s}.bmad_executions e WHERE e.state = 1 AND e.agent = NEW.agent;
    END IF;
  END IF;
  INSERT INTO ${s}.chaos_claims (exec_id, agent, attempt, owner, running, lim) VALUES (NEW.id, NEW.agent, NEW.attempt, NEW.owner, n, lim);
  RETURN NULL;
END
$f$;
CREATE TRIGGER chaos_on_claim AFTER UPDATE ON ${s}.bmad_executions
  FOR EACH ROW WHEN (NEW.state = 1 AND OLD.state <> 1) EXECUTE FUNCTION ${s}.chaos_on_claim();
CREATE TRIGGER chaos_on_push AFTER INSERT ON ${s}.bmad_executions
  FOR EACH ROW WHEN (NEW.state = 1) EXECUTE FUNCTION ${s}.chaos_on_claim();
`;

const test = PG_TESTS ? (name, fn) => nodeTest(name, { timeout: 150000 }, fn) : (name) => nodeTest(name, (t) => t.skip('BMAD_TEST_PG_URL is not set (run it through scripts/pg-cluster.mjs)'));

test(NAME, async (t) => {
  const t0 = Date.now();
  // Imported here: an installed package has no scripts/ (and no server to test against).
  const { startPostgres } = await import('../scripts/pg-cluster.mjs');
  const pg = await startPostgres();
  // Stopped last (after hooks run in order): here if the test ends before they are all set.
  let stopped = false;
  const stopServer = () => {
    if (!stopped) {
      stopped = true;
      pg.stop();
    }
  };
  process.once('exit', stopServer);
  SERVER = pg.url;
  const restartCmd = pg.restartCommand;
  const schema = `chaos_${process.pid}_${seed}`;
  const url = `${SERVER}?schema=${schema}`;
  // CHAOS_KEEP=1 keeps the workers' logs (the folder is printed), for a look after a failure.
  const dir = process.env.CHAOS_KEEP ? mkdtempSync(join(tmpdir(), 'bmad-pg-chaos-')) : tempDir(t, 'bmad-pg-chaos-');
  if (process.env.CHAOS_KEEP) t.diagnostic(`logs kept in ${dir}, schema ${url}`);
  const taskRand = mulberry32(seed);
  const chaosRand = mulberry32(seed ^ 0x9e3779b9);
  const planRand = mulberry32(seed ^ 0x85ebca6b);
  // Task "<i>:<ms>": the limited agent's sleep 0-10 ms (it runs 3 at a time), the other's 0-40 ms.
  const agents = [];
  const tasks = [];
  for (let i = 0; i < N; i++) {
    const limited = taskRand() < LIMITED_SHARE;
    agents.push(limited ? LIMITED : 'job');
    tasks.push(`${i}:${Math.floor(taskRand() * (limited ? 11 : 41))}`);
  }
  const limitedShare = agents.filter((a) => a === LIMITED).length;
  const restartAt = Math.floor(N * (0.35 + 0.3 * planRand())); // executions ended before the restart
  const holdDelays = Array.from({ length: HOLDS }, () => 1000 + Math.round(3000 * planRand()));
  const cancelDelays = Array.from({ length: HOLDS }, () => 100 + Math.round(500 * planRand()));

  // ----- the submitter: this process, an executor with no agent; it creates the schema -----
  const sub = new BackgroundExecutor({ store: url, retries: RETRIES, retryDelayMs: 0, backoff: 'fixed', throttleIfExceeded: false, leaseMs: LEASE_MS });
  t.after(() => sub.shutdown({ timeoutMs: 2000 }));
  const subRescued = [];
  const subErrors = [];
  const subLinks = [];
  sub.on('execution-rescued', (e) => subRescued.push(e));
  sub.on('store-error', (e) => subErrors.push(e));
  sub.on('store-disconnected', () => subLinks.push(['lost', Date.now()]));
  sub.on('store-reconnected', () => subLinks.push(['back', Date.now()]));
  await sub.initialize();
  psql(TRIGGER(`"${schema}"`));

  // ----- the workers -----
  let generation = 0;
  const all = []; // every worker process ever spawned
  const spawnSlot = (slot) => {
    const w = spawnWorker(
      {
        storeUrl: url,
        log: join(dir, `w${slot}-${generation++}.log`),
        concurrency: CONCURRENCY,
        retries: RETRIES,
        leaseMs: LEASE_MS,
        agents: [{ name: 'job' }, { name: LIMITED, globalConcurrency: LIMIT }],
        hold: true,
      },
      `worker ${slot}`,
    );
    all.push(w);
    return w;
  };
  // The chaos below stops once everything ended, or when the test ends early (a failure).
  let allEnded = false;
  let wake;
  const stopChaos = new Promise((r) => (wake = r));
  t.after(() => {
    allEnded = true;
    wake();
    return Promise.all(all.map((w) => w.kill()));
  });
  t.after(stopServer);
  const slots = Array.from({ length: WORKERS }, (_, i) => spawnSlot(i));
  await Promise.all(slots.map((w) => w.line('ready ', 20000)));
  // The limit is stored by the workers once their store is open: submit after that (before it,
  // the agent has no limit in the store).
  await waitUntil(() => psql(`SELECT global_concurrency FROM "${schema}".bmad_limits WHERE agent = '${LIMITED}'`).trim() === String(LIMIT), 'the limit stored', {
    timeoutMs: 10000,
    intervalMs: 50,
  });
  const readyAt = Date.now();

  // ----- the server's restart, once `restartAt` executions have ended -----
  let ended = 0;
  let serverDown = null; // a deferred while the server restarts: no worker is started meanwhile
  const restart = { from: 0, to: 0 };
  const restarted = (async () => {
    while (ended < restartAt && !allEnded) await sleep(10);
    if (allEnded) throw new Error(`all ${N} ended before the restart point ${restartAt}`);
    serverDown = deferred();
    // A worker whose initialize() meets a server going down fails it (ERR_STORE, as documented):
    // restart once every worker started so far is ready (or killed).
    await Promise.all(slots.map((w) => w.line('ready ', 20000).catch((err) => (w.child.killed ? null : Promise.reject(err)))));
    if (allEnded) return;
    restart.from = Date.now();
    const child = spawn(restartCmd[0], restartCmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const [code] = await once(child, 'exit');
    restart.to = Date.now();
    restart.endedBefore = ended;
    const down = serverDown;
    serverDown = null;
    down.resolve();
    assert.equal(code, 0, `the server restarted: ${err}`);
  })();
  restarted.catch(() => {}); // awaited below

  // ----- chaos: every 1.5-2.5 s (KILL_MS ± 25%) a random worker is SIGKILLed, a new one takes its slot -----
  let protectedPid = 0; // the worker running the `hold` being cancelled: not killed meanwhile
  const kills = []; // { pid, slot, at }
  const chaos = (async () => {
    while (!allEnded) {
      const delay = Math.round(KILL_MS * (0.75 + chaosRand() / 2));
      let slot = Math.floor(chaosRand() * WORKERS);
      await Promise.race([sleep(delay), stopChaos]);
      if (allEnded) break;
      if (slots[slot].pid === protectedPid) slot = (slot + 1) % WORKERS;
      const victim = slots[slot];
      const at = Date.now();
      victim.child.kill('SIGKILL');
      const r = await victim.exited;
      assert.deepEqual(r, { code: null, signal: 'SIGKILL' }, `worker ${slot} (pid ${victim.pid}) died of the SIGKILL; stderr: ${victim.stderr()}`);
      assert.equal(isAlive(victim.pid), false, `killed worker ${victim.pid} is gone`);
      kills.push({ pid: victim.pid, slot, at });
      if (serverDown !== null) await serverDown.promise;
      if (allEnded) break;
      slots[slot] = spawnSlot(slot);
    }
  })();
  chaos.catch(() => {}); // awaited below

  // ----- cancels: a `hold` execution submitted here starts in a worker, is cancelled from here -----
  const holds = []; // { k, id, pid, attempt, startedAt, askedAt, abortedAt, final }
  const holding = (async () => {
    for (let k = 0; k < HOLDS; k++) {
      await sleep(holdDelays[k]);
      const { executionId: id } = await sub.fireAndForget('hold', `hold${k}`, { priority: 'critical' });
      const h = { k, id };
      holds.push(h);
      // The worker that printed its start and is not killed: protected from now on (set in
      // the check itself, so no kill comes between).
      await waitUntil(
        () => {
          for (const w of slots) {
            if (w.child.killed || !w.running()) continue;
            const line = w.stdoutLines.find((l) => l.startsWith(`hold ${id} `));
            if (line === undefined) continue;
            const f = line.split(' ');
            Object.assign(h, { w, pid: w.pid, attempt: Number(f[2]), startedAt: Number(f[4]) });
            protectedPid = w.pid;
            return true;
          }
          return false;
        },
        `hold ${k} (${id}) running in a live worker`,
        { timeoutMs: 30000, intervalMs: 5 },
      );
      assert.equal(h.pid, Number(h.w.stdoutLines.find((l) => l.startsWith(`hold ${id} `)).split(' ')[3]));
      await sleep(cancelDelays[k]);
      // A cancel asked while the server restarts waits for it, as a submission does.
      h.askedAt = Date.now();
      h.cancel = await sub.cancelExecution(id);
      const line = await h.w.line(`aborted ${id} ${h.attempt} `, 15000);
      h.abortedAt = Number(line.split(' ')[4]);
      h.final = await sub.waitFor(id);
      protectedPid = 0;
    }
  })();
  holding.catch(() => {}); // awaited below

  // ----- submit in chunks, wait for every outcome -----
  const ids = [];
  const finalsP = [];
  for (let i = 0; i < N; i += CHUNK) {
    const answers = await Promise.all(tasks.slice(i, i + CHUNK).map((task, j) => sub.fireAndForget(agents[i + j], task)));
    for (const a of answers) {
      ids.push(a.executionId);
      finalsP.push(
        sub.waitFor(a.executionId).then((f) => {
          ended++;
          return f;
        }),
      );
    }
  }
  const submittedAt = Date.now();
  assert.equal(new Set(ids).size, N, 'distinct execution ids');
  const waited = await Promise.all(finalsP);
  const endedAt = Date.now();
  await holding;
  allEnded = true;
  wake();
  await chaos;
  await restarted;

  // ----- stop the workers (stdin closed: shutdown, exit 0) -----
  // A kill that came as the last execution ended leaves its slot empty (no respawn after the end).
  const survivors = slots.filter((w) => !kills.some((k) => k.pid === w.pid));
  assert.ok(survivors.length >= WORKERS - 1, `${survivors.length} workers alive at the end`);
  const exits = await Promise.all(survivors.map((w) => w.end(10000)));
  for (let i = 0; i < survivors.length; i++) {
    assert.deepEqual(exits[i], { code: 0, signal: null }, `worker ${i} (pid ${survivors[i].pid}) stops cleanly; stderr: ${survivors[i].stderr()}`);
  }
  const stoppedAt = Date.now();

  // ----- read everything back: the rows, the claims the trigger saw, the logs -----
  const s = `"${schema}"`;
  const rows = psqlJson(
    `SELECT coalesce(json_agg(json_build_array(id, agent, task, state, attempt, owner, result, error, cancel_requested, finalized_at) ORDER BY id), '[]') FROM ${s}.bmad_executions`,
  ).map(([id, agent, task, state, attempt, owner, result, error, cancelRequested, finalizedAt]) => ({
    id: `exec-d${id}`,
    agent,
    task,
    state,
    attempt,
    owner,
    result,
    error,
    cancelRequested,
    finalizedAt,
  }));
  const claims = psqlJson(`SELECT coalesce(json_agg(json_build_array(exec_id, agent, attempt, running, lim, round(extract(epoch FROM at) * 1000), owner)), '[]') FROM ${s}.chaos_claims`);
  const violations = psqlJson(`SELECT coalesce(json_agg(v), '[]') FROM (SELECT * FROM ${s}.chaos_violations ORDER BY at LIMIT 20) v`);
  const limitsAtEnd = psqlJson(`SELECT coalesce(json_agg(json_build_array(agent, global_concurrency)), '[]') FROM ${s}.bmad_limits`);
  // The check itself can see a violation: 4 executions of the agent made running by one
  // statement, in a transaction rolled back (each of the 4 claims counts 4 running).
  const selfCheck = psql(
    `BEGIN;
     UPDATE ${s}.bmad_executions SET state = 1 WHERE id IN (SELECT id FROM ${s}.bmad_executions WHERE agent = '${LIMITED}' ORDER BY id LIMIT ${LIMIT + 1});
     SELECT count(*) FILTER (WHERE running = ${LIMIT + 1}) FROM ${s}.chaos_violations;
     ROLLBACK;`,
  ).trim();
  const integrity = await sub.checkStore();
  const readAt = Date.now();
  const logs = readLogs(dir);

  // ----- globalConcurrency: checked by the trigger at every claim -----
  assert.deepEqual(violations, [], `globalConcurrency ${LIMIT} of "${LIMITED}" exceeded at a claim (seed ${seed}); the first violations`);
  assert.equal(selfCheck, String(LIMIT + 1), 'the trigger records a violation when there is one');
  assert.deepEqual(limitsAtEnd, [[LIMITED, LIMIT]], 'the stored limits');
  const limitedClaims = claims.filter((c) => c[1] === LIMITED);
  assert.ok(limitedClaims.length >= limitedShare, `the trigger saw every claim of "${LIMITED}": ${limitedClaims.length} claims, ${limitedShare} executions`);
  for (const c of limitedClaims) assert.equal(c[4], LIMIT, `the trigger read the limit: ${JSON.stringify(c)}`);
  const mostRunning = Math.max(...limitedClaims.map((c) => c[3]));
  assert.ok(mostRunning <= LIMIT, `at most ${LIMIT} running at a claim, the trigger counted ${mostRunning}`);
  assert.equal(mostRunning, LIMIT, `the limit was reached (the check had something to check): at most ${mostRunning} running at a claim`);
  const claimsOf = new Map(); // id -> [attempts claimed]
  const claimOf = new Map(); // "id attempt" -> { pid: of the claiming process, at }
  for (const [id, , attempt, , , at, owner] of claims) {
    const key = `exec-d${id}`;
    if (!claimsOf.has(key)) claimsOf.set(key, []);
    claimsOf.get(key).push(attempt);
    claimOf.set(`${key} ${attempt}`, { pid: Number(owner.split(':')[1]), at });
  }

  // ----- the rows: N + HOLDS, each in one final state -----
  const rowOf = new Map(rows.map((r) => [r.id, r]));
  const holdIds = new Set(holds.map((h) => h.id));
  assert.equal(rows.length, N + HOLDS, 'every submitted execution has one row, no other row');
  for (const id of [...ids, ...holdIds]) assert.ok(rowOf.has(id), `a row for ${id}`);
  for (const r of rows) {
    // Claimed attempts 1, 2, …, its attempt: each once (an attempt claimed twice would have run twice).
    const claimed = (claimsOf.get(r.id) || []).sort((a, b) => a - b);
    assert.deepEqual(claimed, Array.from({ length: r.attempt }, (_, k) => k + 1), `claims of ${r.id}: ${JSON.stringify(r)}`);
  }

  // ----- the cancels: asked here, seen by the agent in the worker that ran it -----
  assert.equal(holds.length, HOLDS);
  for (const h of holds) {
    const r = rowOf.get(h.id);
    const what = `hold ${h.k} ${h.id} (seed ${seed}): ${JSON.stringify({ ...h, w: undefined })}; row ${JSON.stringify(r)}`;
    assert.notEqual(h.pid, process.pid, what);
    assert.equal(h.cancel.success, true, what);
    assert.ok(h.abortedAt >= h.askedAt - 5, `aborted after the cancel was asked: ${what}`);
    // The goal is 100 ms (measured here: ~5-10 ms at this load); a server restart in between
    // adds its own length, hence the margin. After the restart, the links come back at their
    // next retry (a backoff doubling from 50 ms): up to about the restart's length later.
    const down = restart.to - restart.from;
    if (h.askedAt > restart.to + 2 * down + 1000 || h.askedAt + 1500 < restart.from) {
      assert.ok(h.abortedAt - h.askedAt < 1500, `aborted ${h.abortedAt - h.askedAt} ms after the cancel: ${what}`);
    }
    assert.equal(h.final.status, 'cancelled', what);
    assert.equal(r.state, 4, `the row ends cancelled: ${what}`);
    assert.equal(r.attempt, h.attempt, `the cancelled attempt is the one that saw the abort: ${what}`);
    const hl = logs.other.filter((o) => o.line.split(' ')[1] === h.id).map((o) => o.line.split(' '));
    // Its worker logged: hold, aborted, and the execution-cancelled event (after the commit).
    assert.equal(hl.filter((f) => f[0] === 'aborted').length, 1, `one abort: ${what}; ${JSON.stringify(hl)}`);
    assert.equal(hl.filter((f) => f[0] === 'cancelled').length, 1, `one execution-cancelled: ${what}; ${JSON.stringify(hl)}`);
    assert.equal(Number(hl.find((f) => f[0] === 'aborted')[3]), h.pid, what);
    assert.equal(Number(hl.find((f) => f[0] === 'cancelled')[3]), h.pid, `emitted by the worker that ran it: ${what}`);
    // Earlier attempts of the hold, if any, were lost by killed processes.
    for (const f of hl.filter((x) => x[0] === 'hold' && Number(x[2]) !== h.attempt)) {
      assert.ok(Number(f[2]) < h.attempt && kills.some((k) => k.pid === Number(f[3])), `an earlier hold attempt's process was killed: ${what}`);
    }
  }

  // ----- every execution ends exactly once -----
  const killedPids = new Map(kills.map((k) => [k.pid, k.at]));
  const otherKinds = new Map();
  const rescuedAttempts = new Map(); // "id attempt" -> times rescued
  for (const o of logs.other) {
    const f = o.line.split(' ');
    otherKinds.set(f[0], (otherKinds.get(f[0]) || 0) + 1);
    if (f[0] === 'rescued' && !holdIds.has(f[1])) {
      assert.equal(f[3], 'queued', `a rescued attempt goes back to the queue: ${o.line}`);
      const k = `${f[1]} ${f[2]}`;
      rescuedAttempts.set(k, (rescuedAttempts.get(k) || 0) + 1);
    }
  }
  for (const e of subRescued) {
    if (holdIds.has(e.executionId)) continue;
    assert.equal(e.status, 'queued', JSON.stringify(e));
    const k = `${e.executionId} ${e.attempt}`;
    rescuedAttempts.set(k, (rescuedAttempts.get(k) || 0) + 1);
  }
  // A returned attempt lost (its process killed before the commit) returned shortly before the
  // kill, or while the server was down (the commit waits for it).
  const restartMs = restart.to - restart.from;
  const duringRestart = (tm) => tm >= restart.from - 2000 && tm <= restart.to;

  // See checkAttempts (durable/common.mjs).
  const tally = { reRun: 0, lostRunning: 0, lostAfterEnd: 0, lostUnstarted: 0, maxEndToKill: 0 };
  const rescueDelays = []; // ms from a kill to the next claim of each attempt the killed process held
  let maxRescue = { delay: 0 };
  let maxClaimToStart = { delay: 0 };
  const lostAttempts = new Map(); // "id attempt" -> { owner: pid of its process (0: unknown), next: start time of the next attempt }
  for (let i = 0; i < N; i++) {
    const id = ids[i];
    const r = rowOf.get(id);
    const w = waited[i];
    const list = logs.byId.get(id) || [];
    const what = `${id} (${agents[i]} ${tasks[i]}, seed ${seed}): row ${JSON.stringify(r)}; waitFor ${JSON.stringify(w)}; log: ${JSON.stringify(list)}`;
    assert.equal(r.state, 2, `completed in the database: ${what}`);
    assert.equal(r.agent, agents[i], what);
    assert.equal(r.task, tasks[i], what);
    assert.equal(r.error, null, what);
    const result = JSON.parse(r.result);
    assert.deepEqual(result, { task: tasks[i], pid: result.pid, attempt: r.attempt }, what);
    assert.equal(w.status, 'completed', what);
    assert.equal(w.attempt, r.attempt, what);
    assert.deepEqual(w.result, result, what);
    assert.ok(r.attempt >= 1 && r.attempt <= RETRIES + 1, what);

    // The attempt the store kept ran once, in the process its result names; every other
    // attempt was lost by a killed process (a returned one lost shortly before the kill, or
    // while the server was down: the commit waited for it).
    checkAttempts({
      id,
      list,
      attempt: r.attempt,
      pid: result.pid,
      killedPids,
      lost: lostAttempts,
      tally,
      endGapMs: (t) => (duringRestart(t) ? 2000 + restartMs + KILL_MS * 1.25 : 2000),
      what,
    });
    for (let k = 1; k < r.attempt; k++) {
      // Claimed by a process that was killed; claimed again soon after the kill, not after
      // the lease: a dead process of this host is seen at once.
      const claim = claimOf.get(`${id} ${k}`);
      const reclaim = claimOf.get(`${id} ${k + 1}`);
      assert.ok(killedPids.has(claim.pid), `attempt ${k} was re-run: the process that claimed it (${claim.pid}) must have been killed. ${what}`);
      const delay = reclaim.at - killedPids.get(claim.pid);
      rescueDelays.push(delay);
      if (delay > maxRescue.delay) maxRescue = { delay, attempt: `${id} ${k}`, pid: claim.pid, killedAt: killedPids.get(claim.pid) - t0 };
    }
    // Each attempt ran in the process that claimed it, soon after the claim; an attempt never
    // started was claimed by a process killed soon after (none sits claimed and not run).
    for (let k = 1; k <= r.attempt; k++) {
      const claim = claimOf.get(`${id} ${k}`);
      const start = list.find((e) => e.kind === 'start' && e.attempt === k);
      const near = (tm) => (duringRestart(tm) ? restartMs : 0);
      if (start !== undefined) {
        assert.equal(start.pid, claim.pid, `attempt ${k} ran in the process that claimed it: ${what}`);
        const delay = start.t - claim.at;
        if (delay > maxClaimToStart.delay) maxClaimToStart = { delay, attempt: `${id} ${k}`, pid: claim.pid, claimedAt: claim.at - t0 };
        assert.ok(delay < CLAIM_START_MS + near(claim.at), `attempt ${k} started ${delay} ms after its claim (at ${claim.at - t0} ms): ${what}`);
      } else {
        const delay = killedPids.get(claim.pid) - claim.at;
        assert.ok(delay < CLAIM_START_MS + near(claim.at), `attempt ${k}, never started, was claimed ${delay} ms before its process was killed (claimed at ${claim.at - t0} ms): ${what}`);
      }
    }
  }
  const unloggedRescues = checkRescues({ rescued: rescuedAttempts, lost: lostAttempts, killedPids, kills, logs, concurrency: CONCURRENCY });
  rescueDelays.sort((a, b) => a - b);
  const rescueP = (q) => (rescueDelays.length === 0 ? 0 : rescueDelays[Math.min(rescueDelays.length - 1, Math.floor(q * rescueDelays.length))]);

  // ----- the restart was felt, and survived -----
  const linkLines = logs.other.filter((o) => o.line.startsWith('link-'));
  const workersReconnected = new Set(linkLines.filter((o) => o.line.startsWith('link-back')).map((o) => o.file)).size;
  const totalMs = Date.now() - t0;
  // The longest time without a claim (of `agent`, or of any), and when it began.
  const longestPause = (agent) => {
    const times = claims.filter((c) => agent === undefined || c[1] === agent).map((c) => c[5]).sort((a, b) => a - b);
    let most = [0, 0];
    for (let i = 1; i < times.length; i++) if (times[i] - times[i - 1] > most[0]) most = [times[i] - times[i - 1], times[i - 1] - t0];
    return `${most[0]} ms from ${most[1]} ms`;
  };
  const lastEnd = (agent) => Math.round(Math.max(...rows.filter((r) => r.agent === agent).map((r) => r.finalizedAt)) - t0);
  t.diagnostic(
    `seed ${seed}: ${N} executions (${limitedShare} of "${LIMITED}", globalConcurrency ${LIMIT}); workers ready at ${readyAt - t0} ms, ` +
      `submitted at ${submittedAt - t0} ms, all ended at ${endedAt - t0} ms (the last "job" at ${lastEnd('job')} ms, the last "${LIMITED}" at ${lastEnd(LIMITED)} ms), workers stopped at ${stoppedAt - t0} ms, read back in ${readAt - stoppedAt} ms, total ${totalMs} ms; ` +
      `server restarted at ${restart.from - t0} ms (after ${restart.endedBefore} ended) in ${restartMs} ms; ` +
      `${kills.length} kills (slots ${kills.map((k) => k.slot).join(',')}), ${all.length} processes; ` +
      `re-run ${tally.reRun} executions: lost running ${tally.lostRunning}, lost after return ${tally.lostAfterEnd} (max ${tally.maxEndToKill} ms before the kill), ` +
      `lost before start ${tally.lostUnstarted}; claims ${claims.length} (${limitedClaims.length} of "${LIMITED}", at most ${mostRunning} running at one; ` +
      `longest pause without a claim ${longestPause()}, of "job" ${longestPause('job')}, of "${LIMITED}" ${longestPause(LIMITED)}); ` +
      `cancels: ${holds.map((h) => `${h.id} attempt ${h.attempt} (started at ${h.startedAt - t0} ms) asked at ${h.askedAt - t0} ms, aborted in pid ${h.pid} ${h.abortedAt - h.askedAt} ms later`).join(', ')}; ` +
      `other log lines ${JSON.stringify(Object.fromEntries(otherKinds))}, workers reconnected ${workersReconnected}, this process's link ${JSON.stringify(subLinks.map((l) => l[0]))}, ` +
      `rescued by this process ${subRescued.length}, rescues unlogged (their process killed) ${unloggedRescues}; ` +
      `from a kill to the next claim of its attempts: median ${rescueP(0.5)} ms, p99 ${rescueP(0.99)} ms, max ${JSON.stringify(maxRescue)}; ` +
      `from a claim to its start: max ${JSON.stringify(maxClaimToStart)}`,
  );
  // The lease is long (LEASE_MS): a dead owner's attempt claimed again only when it ran out
  // was not rescued "at once".
  const rescueBound = RESCUE_MS + restartMs;
  assert.ok(
    maxRescue.delay < rescueBound,
    `an attempt of a killed process is claimed again within ${rescueBound} ms of the kill, not after the lease (${LEASE_MS} ms): ${JSON.stringify(maxRescue)}; ` +
      `its log: ${JSON.stringify(logs.byId.get(maxRescue.attempt?.split(' ')[0]))}; claims: ${JSON.stringify(claims.filter((c) => `exec-d${c[0]}` === maxRescue.attempt?.split(' ')[0]))}`,
  );

  assert.ok(restart.to > restart.from && restart.endedBefore < N, 'the server was restarted before the end');
  assert.deepEqual(subLinks.map((l) => l[0]).slice(0, 2), ['lost', 'back'], "this process's connection was lost and came back");
  assert.ok(workersReconnected >= 1, 'some worker saw the restart and reconnected');
  const cancelledLines = logs.other.filter((o) => o.line.startsWith('cancelled ') && !holdIds.has(o.line.split(' ')[1]));
  assert.deepEqual(cancelledLines, [], 'no execution but the holds cancelled');
  for (const kind of ['failed', 'retry', 'stale', 'store-error']) {
    assert.equal(otherKinds.get(kind) || 0, 0, `no "${kind}" line in the workers' logs: ${logs.other.filter((o) => o.line.startsWith(kind)).map((o) => o.line).slice(0, 5)}`);
  }
  assert.deepEqual(subErrors, [], 'no store error in the submitting process');
  assert.equal(integrity, 'ok', 'checkStore()');
  assert.ok(kills.length >= 2, `at least 2 kills happened (got ${kills.length})`);
  assert.ok(tally.reRun >= 1, 'some executions were running at a kill');
});

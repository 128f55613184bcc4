// Demo scene: the durable store survives a crash.
//
//   node demo/durable.mjs     (alone; `npm run demo` runs it as its last scene)
//
// With real processes only, on an embedded SQLite store in a temporary folder:
//   1. child 1 (demo/durable-child.mjs) opens the store as a worker, submits a workflow of 12
//      agent executions (oracle, eval, validator, qa; retries: 1) and runs them, 3 at a time;
//   2. halfway (5 completed, a few running) this process SIGKILLs it: no shutdown, no cleanup,
//      its running executions are left in the store under a lease nobody renews;
//   3. child 2 opens the same store: its executor rescues the dead owner's executions (back to
//      the queue, attempt 2 of 2) and finishes the workflow;
//   4. this process reads every execution back with bg.fetchExecutionStatus(id) and shows
//      which ran once (attempt 1) and which ran again after the crash (attempt 2), and who ran them.
// The children report on stdout, one JSON object a line; this process draws it (demo/view.mjs:
// live bars in a terminal, plain log lines when piped).

import BackgroundExecutor from '../index.mjs';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createView } from './view.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, 'durable-child.mjs');
/** SIGKILL child 1 once this many executions completed and at least KILL_RUNNING are under way. */
const KILL_COMPLETED = 5;
const KILL_RUNNING = 2;
/** The scene never takes longer than this: its children are killed and it fails. */
const SCENE_LIMIT_MS = 30000;

/**
 * Runs the scene. `t0`: the time origin of the log lines (the demo's, to continue its clock).
 * Resolves with `{ completed, ranOnce, ranAgain, total }` when every execution of the workflow
 * completed; rejects otherwise.
 */
export async function durableScene({ t0 = performance.now(), title = 'durable store: a worker SIGKILLed halfway, a new process finishes the work', stream = process.stdout } = {}) {
  const view = createView({ stream });
  const log = (tag, message) => view.log(`[${String(Math.round(performance.now() - t0)).padStart(5)} ms] ${tag.padEnd(9)} ${message}`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bmad-durable-demo-'));
  const storePath = path.join(dir, 'workflow.db');
  const store = `sqlite:${storePath}`;
  const children = [];
  // Whatever happens (an error, Ctrl-C, process.exit), no child outlives this process and the
  // store's folder goes.
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`durable scene: still running after ${SCENE_LIMIT_MS / 1000} s`)), SCENE_LIMIT_MS);
    timer.unref();
  });

  // Every execution of the workflow, by id, as the children reported it.
  const runs = new Map();
  const runOf = (id, agent, task) => {
    let run = runs.get(id);
    if (run === undefined) {
      run = { id, agent, task, status: 'queued', progress: 0, detail: undefined, since: performance.now(), runners: [] };
      runs.set(id, run);
      view.track(bar(id), run);
    }
    return run;
  };
  // The view pads ids to 6 characters: bars are keyed by ids padded to 8 (exec-d10), to stay aligned.
  const bar = (id) => id.padEnd(8);
  const count = (status) => [...runs.values()].filter((r) => r.status === status).length;
  const names = new Map(); // pid -> 'child N'
  const who = (pid) => names.get(pid) ?? `pid ${pid}`;

  /** Spawns child `n`; `onMessage(msg)` gets each JSON line of its stdout. */
  function start(n, args, onMessage) {
    const child = spawn(process.execPath, [CHILD, storePath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    names.set(child.pid, `child ${n}`);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      const lines = (buffered + chunk).split('\n');
      buffered = lines.pop(); // a line cut by the SIGKILL never ends: dropped
      for (const line of lines) {
        if (line.trim() === '') continue;
        try {
          onMessage(JSON.parse(line));
        } catch (err) {
          log('FAILED', `child ${n}: ${err.message} in ${JSON.stringify(line)}`);
        }
      }
    });
    return { child, exited };
  }

  /** What both children report: starts, progress, ends, rescues. */
  function common(n, m) {
    switch (m.type) {
      case 'ready':
        log(`child ${n}`, `pid ${m.pid} opened ${path.basename(storePath)} as a worker (3 slots; agents oracle, eval, validator, qa)`);
        break;
      case 'submitted':
        for (const [i, id] of m.ids.entries()) runOf(id, m.workflow[i][0], m.workflow[i][1]);
        log('submit', `${m.ids.length} durable executions committed: ${m.ids[0]} .. ${m.ids.at(-1)}, retries: 1 (2 attempts each)`);
        break;
      case 'start': {
        const run = runOf(m.id, m.agent, m.task);
        Object.assign(run, { status: 'running', progress: 0, attempt: m.attempt, detail: m.attempt > 1 ? `attempt ${m.attempt}` : undefined, since: performance.now() });
        run.runners.push({ child: n, pid: m.pid, attempt: m.attempt });
        view.update(bar(m.id), { status: 'running', progress: 0, detail: run.detail ?? '', since: run.since, duration: null });
        log('start', `${m.id} ${m.agent} "${m.task}" in child ${n}, attempt ${m.attempt}`);
        break;
      }
      case 'progress': {
        const run = runs.get(m.id);
        Object.assign(run, { progress: m.progress, detail: run.attempt > 1 ? `attempt ${run.attempt}: ${m.detail}` : m.detail });
        view.update(bar(m.id), { progress: m.progress, detail: run.detail });
        if (!view.tty && m.progress < 100) log('progress', `${m.id} ${run.agent} ${String(m.progress).padStart(3)}% ${m.detail}`);
        break;
      }
      case 'done': {
        const run = runs.get(m.id);
        Object.assign(run, { status: 'completed', progress: 100 });
        view.update(bar(m.id), { status: 'completed', progress: 100, duration: m.duration });
        log('done', `${m.id} ${run.agent} "${run.task}" completed in ${m.duration} ms (${count('completed')}/${runs.size})`);
        break;
      }
      case 'failed':
        runs.get(m.id).status = 'failed';
        view.update(bar(m.id), { status: 'failed' });
        log('FAILED', `${m.id}: ${m.error}`);
        break;
      case 'rescued': {
        const run = runOf(m.executionId, m.agent, '');
        const owner = Number(/:(\d+):[0-9a-f]+$/.exec(m.owner ?? '')?.[1]);
        run.status = m.status;
        view.update(bar(m.executionId), { status: m.status, detail: `rescued from ${who(owner)}` });
        log('rescued', `${m.executionId} ${m.agent}: attempt ${m.attempt} belonged to ${who(owner)} (pid ${owner}, exited) -> ${m.status}`);
        break;
      }
      case 'finished':
        log(`child ${n}`, `every execution of the workflow has ended (${m.statuses.filter((s) => s === 'completed').length} completed); child ${n} shuts down`);
        break;
      default:
        break;
    }
  }

  try {
    view.log(`\n--- ${title} ---`);
    log('store', `${store} (a temporary folder, removed at the end)`);

    // ----- 1. child 1 submits the workflow and runs it, until it is killed -------------------
    let ids = [];
    let killedAt = null;
    /** What child 1 was running when it died: lost, its bar frozen where it stopped. */
    const markLost = (running) => {
      for (const r of running) {
        r.status = 'lost';
        r.lostAt = r.progress;
        view.update(bar(r.id), { status: 'lost', detail: `killed at ${r.progress}%`, duration: performance.now() - r.since });
      }
    };
    const first = start(1, [], (m) => {
      common(1, m);
      if (m.type === 'submitted') ids = m.ids;
      const running = [...runs.values()].filter((r) => r.status === 'running');
      // Lines still in the pipe after the kill tell what happened before it: a start there is lost too.
      if (killedAt !== null) return markLost(running);
      if (ids.length === 0) return;
      const underWay = running.filter((r) => r.progress > 0).length;
      if ((count('completed') >= KILL_COMPLETED && underWay >= KILL_RUNNING) || count('completed') >= KILL_COMPLETED + 3) {
        killedAt = performance.now();
        first.child.kill('SIGKILL');
        const doing = running.map((r) => `${r.id} ${r.agent} ${r.progress}%`).join(', ');
        log('SIGKILL', `-> child 1 (pid ${first.child.pid}): ${count('completed')} completed, ${running.length} running (${doing}), ${count('queued')} queued`);
        markLost(running);
      }
    });
    const gone = await Promise.race([first.exited, limit]);
    if (killedAt === null) {
      throw new Error(`child 1 ended on its own (${JSON.stringify(gone)}) before it could be killed`);
    }
    let probe = 'still there';
    try {
      process.kill(first.child.pid, 0);
    } catch (err) {
      probe = err.code; // ESRCH: no such process
    }
    log('child 1', `pid ${first.child.pid} is gone (${gone.signal ?? `exit code ${gone.code}`}; kill(pid, 0) -> ${probe}): no shutdown ran, its ${count('lost')} running execution(s) stay 'running' in the store under a lease nobody renews`);
    await sleep(300); // a moment to see the bars where the crash left them

    // ----- 2. child 2 opens the same store and finishes the work -------------------------------
    const second = start(2, ['resume', ids.join(',')], (m) => common(2, m));
    log('child 2', `pid ${second.child.pid}: node demo/durable-child.mjs ${path.basename(storePath)} resume <${ids.length} ids>`);
    const end = await Promise.race([second.exited, limit]);
    if (end.code !== 0) throw new Error(`child 2 exited with ${end.signal ?? end.code}`);
    view.stop();

    // ----- 3. read every execution back from the store ----------------------------------------
    const bg = new BackgroundExecutor({ store }); // no agents registered here: it only reads
    const rows = [];
    for (const id of ids) rows.push(await bg.fetchExecutionStatus(id));
    const integrity = await bg.checkStore();
    await bg.shutdown();

    /** Who ran it: the child whose owner id the store holds, after any child killed under it. */
    const ranBy = (s) => {
      const run = runs.get(s.executionId);
      const last = who(Number(/:(\d+):[0-9a-f]+$/.exec(s.owner ?? '')?.[1]));
      let before = [...new Set(run.runners.map((r) => `child ${r.child}`).filter((c) => c !== last))];
      if (before.length === 0 && s.attempt > 1) before = ['a killed worker']; // its start never reached us
      const killed = before.map((c) => `${c} killed${run.lostAt === undefined ? '' : ` at ${run.lostAt}%`}`);
      return [...killed, last].join(', then ');
    };
    const table = rows.map((s) => ({
      id: s.executionId,
      agent: s.agent,
      task: s.task,
      status: s.status,
      attempt: s.attempt,
      verdict: s.status !== 'completed' ? '' : s.attempt === 1 ? 'ran once' : 'ran again',
      by: ranBy(s),
      duration: s.duration === undefined || s.duration === null ? '?' : String(Math.round(s.duration)),
    }));
    const completed = table.filter((r) => r.status === 'completed').length;
    const ranOnce = table.filter((r) => r.verdict === 'ran once').length;
    const ranAgain = table.filter((r) => r.verdict === 'ran again').length;
    const totals = `${completed}/${table.length} completed: ${ranOnce} ran once, ${ranAgain} ran again; integrity_check: ${integrity}`;

    view.log('\n--- durable summary: bg.fetchExecutionStatus(id) of each ---');
    if (
      !view.table(
        ['id', 'agent', 'status', 'attempt', 'workers'],
        table.map((r) => [r.id, r.agent, view.paint(r.status, r.status), `${r.attempt} (${r.verdict})`, r.by]),
        { footer: totals },
      )
    ) {
      for (const r of table) {
        log('summary', `${r.id.padEnd(8)} ${r.agent.padEnd(9)} ${r.task.padEnd(14)} ${r.status}, attempt ${r.attempt} (${r.verdict}), ${r.duration} ms, ran by ${r.by}`);
      }
      log('summary', totals);
    }
    log('summary', `attempt 2: lost in child 1's crash (${Math.round(killedAt - t0)} ms in), run again by child 2`);

    if (completed !== table.length) throw new Error(`durable scene: ${table.length - completed} execution(s) did not complete`);
    return { total: table.length, completed, ranOnce, ranAgain };
  } finally {
    clearTimeout(timer);
    view.stop();
    cleanup();
    process.removeListener('exit', cleanup);
  }
}

// ----- alone: node demo/durable.mjs ------------------------------------------------------------

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.once('SIGINT', () => process.exit(130)); // runs the cleanup: no child left, no store left
  const t0 = performance.now();
  await durableScene({ t0, title: 'durable store: a worker SIGKILLed halfway, a new process finishes the work' });
  console.log(`[${String(Math.round(performance.now() - t0)).padStart(5)} ms] ${'summary'.padEnd(9)} done`);
}

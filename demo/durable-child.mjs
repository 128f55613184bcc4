// The worker process of the durable scene (demo/durable.mjs).
//
//   node demo/durable-child.mjs <store path>                 submits the workflow, then runs it
//   node demo/durable-child.mjs <store path> resume <id,...>  runs what is left of it, exits when
//                                                             every listed execution has ended
//
// Both open the same SQLite store (`sqlite:<store path>`) as a worker executor that runs the
// agents below, and report what happens as JSON lines on stdout, one object a line, for the
// parent to draw: { type: 'ready' | 'submitted' | 'start' | 'progress' | 'done' | 'failed' |
// 'rescued' | 'finished', ... }. The parent SIGKILLs the first one halfway through.

import BackgroundExecutor from '../index.mjs';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The workflow: a release review. [agent, task, total work in ms]; executions run three at a
 * time, first in, first out, each allowed one retry (two attempts in all).
 */
const WORKFLOW = [
  ['oracle', 'check-sections', 600],
  ['eval', 'gen-vectors', 500],
  ['validator', 'check-links', 400],
  ['qa', 'checksum-lib', 700],
  ['oracle', 'check-levels', 450],
  ['eval', 'build-examples', 800],
  ['validator', 'check-api', 550],
  ['qa', 'syntax-scan', 900],
  ['eval', 'replay-vectors', 350],
  ['oracle', 'check-modes', 650],
  ['validator', 'check-anchors', 300],
  ['qa', 'smoke-suite', 750],
];
const CONCURRENCY = 3;

const send = (message) => process.stdout.write(`${JSON.stringify({ ...message, pid: process.pid })}\n`);
const sha256 = (data) => createHash('sha256').update(data).digest('hex');

// ----- the agents: a few steps of real (small) work each, paced to the task's `workMs` ----------

/** Runs `steps` (name, fn) over `workMs`, reporting progress after each through context.progress. */
async function stepped(agent, task, options, ctx, steps) {
  const { executionId: id, attempt } = ctx;
  send({ type: 'start', id, agent, task, attempt });
  const pace = options.workMs / steps.length;
  const out = {};
  for (let i = 0; i < steps.length; i++) {
    const [name, fn] = steps[i];
    const began = performance.now();
    Object.assign(out, await fn());
    // The rest of the step's share of the time: the "thinking" of an agent.
    await sleep(Math.max(0, pace - (performance.now() - began)), undefined, { signal: ctx.signal });
    const progress = Math.round(((i + 1) / steps.length) * 100);
    ctx.progress(progress, name);
    send({ type: 'progress', id, progress, detail: name });
  }
  return { ...out, ranBy: process.pid, attempt };
}

const files = async (dir) => (await readdir(path.join(ROOT, dir), { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
const readme = () => readFile(path.join(ROOT, 'README.md'), 'utf8').catch(() => '# README\n');

const AGENTS = {
  oracle: (task, options, ctx) =>
    stepped('oracle', task, options, ctx, [
      ['read README', async () => ({ bytes: (await readme()).length })],
      ['headings', async () => ({ headings: (await readme()).split('\n').filter((l) => /^#{1,3} /.test(l)).length })],
      ['digest', async () => ({ sha256: sha256(await readme()).slice(0, 16) })],
    ]),
  eval: (task, options, ctx) => {
    let h = task;
    const chain = () => {
      for (let i = 0; i < 2000; i++) h = sha256(h);
      return { vector: h.slice(0, 16) };
    };
    return stepped('eval', task, options, ctx, [
      ['vectors 1/4', chain],
      ['vectors 2/4', chain],
      ['vectors 3/4', chain],
      ['vectors 4/4', chain],
    ]);
  },
  validator: (task, options, ctx) =>
    stepped('validator', task, options, ctx, [
      ['links', async () => ({ links: [...(await readme()).matchAll(/\]\(([^)\s]+)\)/g)].length })],
      ['api names', async () => ({ calls: [...(await readme()).matchAll(/\bbg\.(\w+)\(/g)].length })],
    ]),
  qa: (task, options, ctx) =>
    stepped('qa', task, options, ctx, [
      ['list lib/', async () => ({ files: (await files('lib')).length })],
      ['checksum', async () => {
        const list = await files('lib');
        const sums = await Promise.all(list.map(async (e) => sha256(await readFile(path.join(e.parentPath ?? e.path, e.name)))));
        return { digest: sha256(sums.join('')).slice(0, 16) };
      }],
      ['syntax', async () => ({ checked: (await files('lib')).filter((e) => e.name.endsWith('.js')).length })],
    ]),
};

// ----- the process -------------------------------------------------------------------------

const [storePath, mode = 'start', idList = ''] = process.argv.slice(2);
if (storePath === undefined) {
  console.error('usage: node demo/durable-child.mjs <store path> [resume <id,id,...>]');
  process.exit(2);
}

// throttleIfExceeded: false: this scene is about a crash, not load; on a busy machine the
// resource monitor would otherwise run the workflow one execution at a time.
const bg = new BackgroundExecutor({
  store: `sqlite:${storePath}`,
  maxConcurrentAgents: CONCURRENCY,
  throttleIfExceeded: false,
  retries: 1,
  leaseMs: 2000,
});
for (const [name, fn] of Object.entries(AGENTS)) bg.registerAgent(name, fn);
bg.on('execution-completed', (e) => send({ type: 'done', id: e.executionId, duration: e.duration }));
bg.on('execution-failed', (e) => send({ type: 'failed', id: e.executionId, error: String(e.error) }));
bg.on('execution-rescued', (e) => send({ type: 'rescued', ...e }));
bg.on('store-error', (e) => console.error(`durable-child: store error ${e.code}: ${e.message}`));

await bg.initialize(); // a worker: claims work for its agents until shutdown()
send({ type: 'ready', mode });

let ids;
if (mode === 'resume') {
  ids = idList.split(',').filter(Boolean);
} else {
  ids = [];
  for (const [agent, task, workMs] of WORKFLOW) {
    const { executionId } = await bg.fireAndForget(agent, task, { priority: 'medium', retries: 1, workMs });
    ids.push(executionId);
  }
  send({ type: 'submitted', ids, workflow: WORKFLOW });
}

// Every execution of the workflow ended (here or in another process): done.
const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
await bg.shutdown({ mode: 'drain' });
send({ type: 'finished', statuses: finals.map((f) => f.status) });

// A store worker in its own process, for the durable crash and chaos tests
// (__test__/durable-crash.test.mjs, __test__/durable-chaos.test.mjs,
// __test__/durable-postgres-chaos.test.mjs). Not a test file.
//
//   node worker.mjs '<json config>'
//
// config: {
//   store: path of the SQLite file, or storeUrl: a full store URL (`postgres://…?schema=…`),
//   log: path of this process's log file,
//   concurrency, retries, leaseMs, prefetch? (storePrefetch),
//   agents?: [{ name, globalConcurrency? }]: the agents running `job` tasks (below), with
//            their limits; default [{ name: 'job' }],
//   hold?: true registers agent `hold` (below),
//   submit?: path of a JSON file holding an array of tasks: submitted with fireAndForget,
//            then `ids <json array>` is printed,
//   waitIds?: path of a JSON file holding execution ids: once all of them ended (waitFor),
//             prints `ended`, shuts down and exits 0,
// }
// Without waitIds it runs until its stdin closes, then shuts down and exits 0.
//
// Agent `job`: its task is "<n>:<ms>". It appends `start <id> <attempt> <pid> <ms-since-epoch>`,
// sleeps <ms>, appends `end ...`, and returns { task, pid, attempt }. When the store has
// committed the outcome (event execution-completed, emitted after the commit), it appends
// `done ...`. Other events are logged too (`failed`, `cancelled`, `rescued`, `stale`,
// `store-error`, `link-lost`/`link-back` for store-disconnected/store-reconnected). Each line
// is one appendFileSync (O_APPEND, far below PIPE_BUF): atomic.
//
// Agent `hold` (config.hold): logs and prints `hold <id> <attempt> <pid> <ms>`, then waits
// until its signal is aborted (a cancel, from any process); then logs and prints
// `aborted <id> <attempt> <pid> <ms>` and rejects with the signal's reason.
import { appendFileSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const ENTRY = new URL('../../index.mjs', import.meta.url).href;
const { default: BackgroundExecutor } = await import(ENTRY);

const cfg = JSON.parse(process.argv[2]);
const pid = process.pid;
const log = (line) => appendFileSync(cfg.log, `${line} ${pid} ${Date.now()}\n`);

const bg = new BackgroundExecutor({
  store: cfg.storeUrl ?? `sqlite:${cfg.store}`,
  maxConcurrentAgents: cfg.concurrency,
  retries: cfg.retries,
  retryDelayMs: 0,
  backoff: 'fixed',
  throttleIfExceeded: false,
  leaseMs: cfg.leaseMs,
  storePrefetch: cfg.prefetch,
});

const job = async (task, options, ctx) => {
  const ms = Number(task.slice(task.indexOf(':') + 1));
  log(`start ${ctx.executionId} ${ctx.attempt}`);
  if (ms > 0) await sleep(ms);
  log(`end ${ctx.executionId} ${ctx.attempt}`);
  return { task, pid, attempt: ctx.attempt };
};
for (const { name, ...limits } of cfg.agents ?? [{ name: 'job' }]) {
  if (Object.keys(limits).length === 0) bg.registerAgent(name, job);
  else bg.registerAgent(name, job, limits);
}

if (cfg.hold) {
  bg.registerAgent('hold', (task, options, { executionId, attempt, signal }) => {
    const say = (what) => {
      log(`${what} ${executionId} ${attempt}`);
      process.stdout.write(`${what} ${executionId} ${attempt} ${pid} ${Date.now()}\n`);
    };
    return new Promise((resolve, reject) => {
      const aborted = () => {
        say('aborted');
        reject(signal.reason);
      };
      say('hold');
      if (signal.aborted) aborted();
      else signal.addEventListener('abort', aborted, { once: true });
    });
  });
}

bg.on('execution-completed', (e) => log(`done ${e.executionId} ${e.result && e.result.attempt}`));
bg.on('execution-failed', (e) => log(`failed ${e.executionId} ${e.code}`));
bg.on('execution-cancelled', (e) => log(`cancelled ${e.executionId} ${e.code}`));
bg.on('execution-retry', (e) => log(`retry ${e.executionId} ${e.attempt}`));
bg.on('execution-rescued', (e) => log(`rescued ${e.executionId} ${e.attempt} ${e.status} ${e.owner}`));
bg.on('execution-stale', (e) => log(`stale ${e.executionId} ${e.attempt}`));
bg.on('store-error', (e) => log(`store-error ${e.code} ${JSON.stringify(e.message)}`));
bg.on('store-disconnected', () => log('link-lost'));
bg.on('store-reconnected', () => log('link-back'));

await bg.initialize();
process.stdout.write(`ready ${pid}\n`);

if (cfg.submit) {
  const tasks = JSON.parse(readFileSync(cfg.submit, 'utf8'));
  const answers = await Promise.all(tasks.map((task) => bg.fireAndForget('job', task)));
  process.stdout.write(`ids ${JSON.stringify(answers.map((a) => a.executionId))}\n`);
}

async function stop(code) {
  await bg.shutdown();
  process.exit(code);
}

if (cfg.waitIds) {
  const ids = JSON.parse(readFileSync(cfg.waitIds, 'utf8'));
  const finals = await Promise.all(ids.map((id) => bg.waitFor(id)));
  const notCompleted = finals.filter((f) => f.status !== 'completed').length;
  process.stdout.write(`ended ${notCompleted}\n`);
  await stop(0);
} else {
  process.stdin.resume();
  process.stdin.on('end', () => stop(0));
}

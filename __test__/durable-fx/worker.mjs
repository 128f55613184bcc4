// A worker process on a store: `node worker.mjs <storeUrl> [configJson]`.
// Registers the agents below, initializes (a worker waits for work until shutdown), prints
// one JSON line per event (`{ event, ..., at }`, `at` = the system's monotonic clock in ms,
// comparable across processes), and shuts down when its stdin closes.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import BackgroundExecutor from '../../index.mjs';

const [url, configJson] = process.argv.slice(2);
const extra = configJson ? JSON.parse(configJson) : {};
const now = () => Number(process.hrtime.bigint()) / 1e6;
const out = (o) => process.stdout.write(`${JSON.stringify({ ...o, at: now() })}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const bg = new BackgroundExecutor({
  store: url,
  throttleIfExceeded: false,
  maxConcurrentAgents: 4,
  ...extra,
  agents: {
    echo: (task, options, ctx) => ({ echoed: task, options: options ?? null, attempt: ctx.attempt, id: ctx.executionId, pid: process.pid }),
    fail: (task) => {
      throw Object.assign(new Error(`failed ${task}`), { code: 'E_AGENT_FAILED', detail: 7 });
    },
    // Runs until its signal aborts; reports when it started and when the signal aborted.
    hold: (task, options, ctx) =>
      new Promise((resolve) => {
        out({ event: 'hold-started', id: ctx.executionId, task });
        ctx.signal.addEventListener('abort', () => {
          out({ event: 'hold-aborted', id: ctx.executionId, code: ctx.signal.reason?.code });
          resolve('late');
        });
      }),
    // Keeps the event loop busy (it hears no cancel meanwhile) until the file `task` exists
    // (at most 20 s), then returns.
    busy: (task, options, ctx) => {
      out({ event: 'busy-started', id: ctx.executionId });
      const end = Date.now() + 20000;
      while (!existsSync(task) && Date.now() < end);
      return 'busy done';
    },
    // Reports progress 40, then runs for `task` ms.
    steps: async (task, options, ctx) => {
      ctx.progress(40);
      out({ event: 'progress', id: ctx.executionId, progress: 40 });
      await sleep(Number(task));
      return 'stepped';
    },
  },
});
// Command agents are POSIX only (registerCommand throws ERR_UNSUPPORTED_PLATFORM on Windows).
if (process.platform !== 'win32') bg.registerCommand('sleeper', { command: 'sleep', args: ['30'] });

for (const name of ['execution-queued', 'execution-started', 'execution-completed', 'execution-failed', 'execution-cancelled', 'execution-retry']) {
  bg.on(name, (e) => out({ event: name, id: e.executionId, agent: e.agent, code: e.code }));
}
bg.on('store-error', (e) => out({ event: 'store-error', code: e.code, message: e.message }));

/** The pid of this process's `sleep` child, found in /proc (it runs in its own process group). */
async function reportSleepChild(id) {
  const end = Date.now() + 3000;
  while (Date.now() < end) {
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      let stat;
      try {
        stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      } catch {
        continue;
      }
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (ppid === process.pid && comm === 'sleep') {
        out({ event: 'command-pid', id, pid: Number(name) });
        return;
      }
    }
    await sleep(5);
  }
  out({ event: 'command-pid', id, pid: null });
}
bg.on('execution-started', (e) => {
  if (e.agent === 'sleeper') reportSleepChild(e.executionId);
});

try {
  await bg.initialize();
} catch (err) {
  out({ event: 'init-failed', code: err.code, message: err.message });
  process.exit(3);
}
out({ event: 'ready', pid: process.pid });
process.stdin.on('end', async () => {
  await bg.shutdown({ timeoutMs: 1000 });
  out({ event: 'stopped' });
  process.exit(0);
});
process.stdin.resume();

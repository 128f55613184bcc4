// `node drain-awaited.mjs <storeUrl>`: one slot; execute() of a running execution and of a
// queued one, then shutdown({ mode: 'drain' }). Prints `{ tookMs, first, second }` (each
// `{ ok, value }` or `{ ok, code }`) and exits 0; prints `hung` and exits 2 if the shutdown
// has not resolved after 3 s.
import BackgroundExecutor from '../../index.mjs';

const [url] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let started = 0;
const bg = new BackgroundExecutor({
  store: url,
  throttleIfExceeded: false,
  maxConcurrentAgents: 1,
  agents: {
    slow: async (task) => {
      started++;
      await sleep(200);
      return `slow ${task}`;
    },
  },
});
const settle = (p) => p.then((value) => ({ ok: true, value }), (err) => ({ ok: false, code: err.code }));
const first = settle(bg.execute('slow', 'a'));
const second = settle(bg.execute('slow', 'b'));
while (started === 0) await sleep(5);
const t0 = Date.now();
setTimeout(() => {
  process.stdout.write('hung\n');
  process.exit(2);
}, 3000).unref();
await bg.shutdown({ mode: 'drain' });
process.stdout.write(`${JSON.stringify({ tookMs: Date.now() - t0, first: await first, second: await second })}\n`);

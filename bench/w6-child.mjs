// W6 worker process for the cross-process latency measurement: runs the jobs that the parent
// (w6.mjs) submits and sends it each job's add→start time in ms over IPC.
//   node bench/w6-child.mjs bullmq <redis port> <queue name> <count>
//   node bench/w6-child.mjs this <store file> <count>
// Messages to the parent: { type: 'ready' }, then { type: 'latencies', values } or { type: 'error', message }.

import { nowMs } from './lib/clock.mjs';

let finishing = false;
const send = (msg) => new Promise((resolve) => process.send(msg, () => resolve()));

/** Collects `count` values; `all` resolves with them. */
function collector(count) {
  const values = [];
  let done;
  const all = new Promise((resolve) => {
    done = resolve;
  });
  return {
    all,
    record(ms) {
      values.push(ms);
      if (values.length === count) done(values);
    },
  };
}

async function bullmq(port, queueName, count) {
  const { Worker } = await import('bullmq');
  const c = collector(count);
  const worker = new Worker(
    queueName,
    async (job) => {
      c.record(nowMs() - job.data.t0);
      return null;
    },
    { connection: { host: '127.0.0.1', port }, concurrency: 64 },
  );
  worker.on('error', (err) => fail(err));
  await worker.waitUntilReady();
  await send({ type: 'ready' });
  const values = await c.all;
  finishing = true;
  await send({ type: 'latencies', values });
  await worker.close();
}

async function thisStore(file, count) {
  const api = await import('./w6-this.mjs');
  const c = collector(count);
  const bg = await api.openExecutor(file, {
    register: {
      w6lat: async (task) => {
        c.record(nowMs() - Number(task));
      },
    },
  });
  await send({ type: 'ready' });
  const values = await c.all;
  finishing = true;
  await send({ type: 'latencies', values });
  await api.close(bg);
}

async function fail(err) {
  finishing = true;
  if (process.connected) await send({ type: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}

if (typeof process.send !== 'function') {
  console.error('w6-child: started by bench/w6.mjs only (needs an IPC channel)');
  process.exit(2);
}
// The parent is gone before the results were sent: nothing left to do.
process.on('disconnect', () => {
  if (!finishing) process.exit(1);
});

const [mode, ...args] = process.argv.slice(2);
const run =
  mode === 'bullmq'
    ? () => bullmq(Number(args[0]), args[1], Number(args[2]))
    : mode === 'this'
      ? () => thisStore(args[0], Number(args[1]))
      : () => Promise.reject(new Error(`w6-child: unknown mode ${mode}`));
run().then(
  () => {
    if (process.connected) process.disconnect();
  },
  fail,
);

// A short check of an installed bmad-background-executor, run from the consumer project that
// installed it: `node smoke.mjs`. It uses each submission mode, a cancellation, an aggregation,
// the resource monitor, the durable store and shutdown, then prints `SMOKE <json>` and ends by itself (nothing
// native may keep the process alive). Exit code 1 on any failure.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BackgroundExecutor, { ResourceMonitor } from 'bmad-background-executor';

const require = createRequire(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const watchdog = setTimeout(() => {
  console.log('SMOKE-HANG');
  process.exit(3);
}, 60_000);
watchdog.unref();

const bg = new BackgroundExecutor({ maxConcurrentAgents: 2 });
bg.registerAgent('echo', async (task, options) => ({ task, options }));
bg.registerAgent('slow', async (task, options, { progress, signal }) => {
  for (let p = 0; p <= 100; p += 50) {
    if (signal.aborted) throw signal.reason;
    progress(p);
    await sleep(20);
  }
  return { done: task };
});
bg.registerAgent('block', (task, options, { signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))));
await bg.initialize();

const s = { arch: process.arch, node: process.version };
s.native = Object.keys(require.cache).filter((k) => k.endsWith('.node'));
s.execute = await bg.execute('echo', 'hello', { priority: 'high' });
const fired = await bg.fireAndForget('slow', 'fire');
s.fireAndForget = (await bg.waitFor(fired.executionId)).status;
s.callback = await new Promise((resolve) => bg.executeWithCallback('echo', 'cb', (err, result) => resolve(err ? err.code : result.task)));
const watched = await bg.executeWatched('slow', 'watched');
s.watched = (await bg.waitFor(watched.executionId)).status;
const blocked = await bg.fireAndForget('block', 'forever');
await sleep(20);
s.cancel = (await bg.cancelExecution(blocked.executionId)).success;
const agg = await bg.executeMultiple(['echo', 'slow'], 'together');
s.aggregate = agg.results.map((r) => `${r.agent}:${r.status}`);
const monitor = new ResourceMonitor({ interval: 100 });
const sample = monitor.check();
s.monitor = typeof sample.cpu === 'number' && sample.memory > 0;
s.status = bg.getStatus().completed;
await bg.shutdown();

// The durable store (bundled SQLite): a stored execution, read back, an integrity check.
const dir = mkdtempSync(join(tmpdir(), 'bmad-smoke-store-'));
try {
  const durable = new BackgroundExecutor({ store: `sqlite:${join(dir, 'smoke.db')}` });
  durable.registerAgent('echo', async (task) => ({ task }));
  await durable.initialize();
  const stored = await durable.execute('echo', 'stored');
  const id = (await durable.fireAndForget('echo', 'read-back')).executionId;
  await durable.waitFor(id);
  const read = await durable.fetchExecutionStatus(id);
  s.store = { result: stored.task, read: read.found ? `${read.status}:${read.result.task}` : 'missing', integrity: await durable.checkStore() };
  await durable.shutdown();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// With BMAD_SMOKE_PG_URL (a server whose certificate names localhost) and BMAD_SMOKE_PG_CA:
// the PostgreSQL store over verified TLS, an execution across two executors, and a
// certificate for another name refused.
if (process.env.BMAD_SMOKE_PG_URL) {
  const base = process.env.BMAD_SMOKE_PG_URL;
  const tls = `sslmode=verify-full&sslrootcert=${encodeURIComponent(process.env.BMAD_SMOKE_PG_CA)}`;
  const url = `${base.replace('127.0.0.1', 'localhost')}?schema=smoke_${process.pid}&${tls}`;
  const runner = new BackgroundExecutor({ store: url, throttleIfExceeded: false });
  const submitter = new BackgroundExecutor({ store: url, throttleIfExceeded: false });
  runner.registerAgent('echo', async (task) => ({ task }));
  await Promise.all([runner.initialize(), submitter.initialize()]);
  s.postgresTls = { across: (await submitter.execute('echo', 'tls')).task };
  const wrong = new BackgroundExecutor({ store: `${base}?schema=smoke_${process.pid}&${tls}` });
  s.postgresTls.wrongName = await wrong.initialize().then(
    () => 'accepted',
    (e) => (e.code === 'ERR_STORE' && /certificate/.test(e.message) ? 'refused' : e.message),
  );
  await Promise.all([runner.shutdown(), submitter.shutdown(), wrong.shutdown().catch(() => {})]);
}

const ok =
  s.native.length === 1 &&
  s.execute.task === 'hello' &&
  s.fireAndForget === 'completed' &&
  s.callback === 'cb' &&
  s.watched === 'completed' &&
  s.cancel === true &&
  s.aggregate.join() === 'echo:completed,slow:completed' &&
  s.monitor === true &&
  s.store.result === 'stored' &&
  s.store.read === 'completed:read-back' &&
  s.store.integrity === 'ok' &&
  (!process.env.BMAD_SMOKE_PG_URL || (s.postgresTls.across === 'tls' && s.postgresTls.wrongName === 'refused'));
console.log(`SMOKE ${JSON.stringify(s)}`);
if (!ok) process.exitCode = 1;

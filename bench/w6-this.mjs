// W6: every call the workload makes into this package's durable store, in one place, so that a
// change of the store's API is a change of this file only. Used by w6.mjs and w6-child.mjs.
//
// Expected API: new BackgroundExecutor({ store: 'sqlite:' + file, maxConcurrentAgents, ... }),
// registerAgent(name, fn), initialize(), execute(name, task) -> promise of the agent's value,
// fireAndForget(name, task) -> promise (settled or not, it is only checked for rejection),
// shutdown(). Every execution is durable when a store is configured. A process with no agent
// registered for a name submits into the store; a process that has the agent runs it.

import { createRequire } from 'node:module';
import { existsSync, statSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { BackgroundExecutor } = require('../index.js');


/** The store URL for a SQLite file. */
export const storeUrl = (file) => `sqlite:${file}`;

/**
 * An initialised executor on the store `file`, with `register` ({ name: fn }) registered.
 * Throws when this build ignores the `store` option: an in-memory run would pass for a durable one.
 */
export async function openExecutor(file, { register = {}, ...config } = {}) {
  const ignored = [];
  const onWarning = (w) => {
    if (w && w.code === 'BMAD_BG_UNKNOWN_CONFIG' && /store/.test(w.message)) ignored.push(w.message);
  };
  process.on('warning', onWarning);
  let bg;
  try {
    // No CPU/memory throttling, as in the other workloads: BullMQ has none either.
    bg = new BackgroundExecutor({ store: storeUrl(file), maxConcurrentAgents: 64, throttleIfExceeded: false, ...config });
    for (const [name, fn] of Object.entries(register)) bg.registerAgent(name, fn);
    await bg.initialize();
    // emitWarning delivers on a later tick.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', onWarning);
  }
  if (ignored.length > 0) {
    await bg.shutdown().catch(() => {});
    const err = new Error(`this build ignores the 'store' option (warning: ${ignored[0]})`);
    err.code = 'W6_NO_STORE';
    throw err;
  }
  return bg;
}

export const execute = (bg, agent, task) => bg.execute(agent, task);
export const fireAndForget = (bg, agent, task) => bg.fireAndForget(agent, task);
export const close = (bg) => bg.shutdown();

/** Bytes of the store file and its WAL; throws when nothing was stored there. */
export function storeBytes(file) {
  const size = (f) => (existsSync(f) ? statSync(f).size : 0);
  const out = { db: size(file), wal: size(`${file}-wal`) };
  if (out.db + out.wal === 0) throw new Error(`store file ${file} is missing or empty after the run: executions were not durable`);
  return out;
}

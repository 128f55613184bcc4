// Child processes and last-resort cleanups for the benchmark scripts (w6.mjs, w7.mjs): every
// process a script starts is SIGKILLed and its temporary files removed when the script ends,
// also on an error or a signal.

import { spawn } from 'node:child_process';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A registry of synchronous cleanups, run newest first on exit and on SIGINT/SIGTERM (after
 * printing `<name>: <signal>, stopping`). `add(fn)` returns a key for `delete(key)`.
 */
export function createCleanups(name) {
  const fns = new Map();
  let next = 0;
  const runSync = () => {
    for (const fn of [...fns.values()].reverse()) {
      try {
        fn();
      } catch {
        // best effort: the process is ending
      }
    }
    fns.clear();
  };
  process.on('exit', runSync);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      console.error(`\n${name}: ${sig}, stopping`);
      runSync();
      process.exit(130);
    });
  }
  return {
    add(fn) {
      const key = next++;
      fns.set(key, fn);
      return key;
    },
    delete: (key) => fns.delete(key),
    runSync,
  };
}

/**
 * Spawns a process that is SIGKILLed if this one ends first (a cleanup in `cleanups`);
 * `exited` resolves on its exit with `{ code, signal }` or `{ error }`, also kept in `exitInfo`.
 */
export function spawnTracked(cleanups, cmd, args, options) {
  const proc = spawn(cmd, args, options);
  const key = cleanups.add(() => proc.kill('SIGKILL'));
  proc.exitInfo = null;
  proc.exited = new Promise((resolve) => {
    const done = (info) => {
      if (proc.exitInfo === null) proc.exitInfo = info;
      cleanups.delete(key);
      resolve(proc.exitInfo);
    };
    proc.once('exit', (code, signal) => done({ code, signal }));
    proc.once('error', (error) => done({ error }));
  });
  return proc;
}

/** Sends `signal`, then SIGKILL if the process is still there after `graceMs`. */
export async function stopProcess(proc, signal = 'SIGTERM', graceMs = 5000) {
  if (proc.exitInfo !== null) return;
  proc.kill(signal);
  if ((await Promise.race([proc.exited, sleep(graceMs).then(() => null)])) === null) {
    proc.kill('SIGKILL');
    await proc.exited;
  }
}

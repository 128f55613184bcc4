// Helpers of the PostgreSQL tests that hold agents and read rows: a schema of its own per
// test, counts of rows per state, and an agent held until released.
import { SERVER, sql } from './pg-proxy.mjs';

/** `fresh()`: a schema of its own (`<prefix>_<pid>_<n>`) and its URL, so tests do not see each other's executions. */
export function schemas(prefix) {
  let n = 0;
  return () => {
    const schema = `${prefix}_${process.pid}_${++n}`;
    return { schema, url: `${SERVER}?schema=${schema}` };
  };
}

/** Rows of `schema` in `state` (0 queued, 1 running, 2 completed). */
export const inState = (schema, state) => sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = ${state}`);

/**
 * An agent held until `release()`: its calls per task, the most running at once, and when
 * it first ran. A held call ends with its signal's reason when aborted.
 */
export function heldAgent() {
  const calls = new Map();
  let running = 0;
  let opened = false;
  const waiting = [];
  const agent = {
    calls,
    maxRunning: 0,
    startedAt: 0,
    get running() {
      return running;
    },
    release() {
      opened = true;
      for (const w of waiting.splice(0)) w();
    },
    fn: async (task, _options, { signal }) => {
      if (calls.size === 0) agent.startedAt = Date.now();
      calls.set(task, (calls.get(task) ?? 0) + 1);
      running++;
      agent.maxRunning = Math.max(agent.maxRunning, running);
      try {
        if (!opened) {
          await new Promise((resolve, reject) => {
            waiting.push(resolve);
            signal.addEventListener('abort', () => reject(signal.reason));
          });
        }
        return `done ${task}`;
      } finally {
        running--;
      }
    },
  };
  return agent;
}

// What the W5–W7 scripts share at their ends: the machine in their results, tables, the
// goals section, the JSON file and the process's exit.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The 1/5/15-minute load averages, rounded. */
export const loadavg = () => os.loadavg().map((x) => +x.toFixed(2));

/** The machine and the time, for a result's `env`. */
export function machine() {
  return {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    loadavgAtStart: loadavg(),
  };
}

/** A text table: the first `left` columns padded on the right, the others on the left. */
export function table(headers, rows, left = 1) {
  const w = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => String(r[c]).length)));
  const line = (r) => r.map((v, c) => (c < left ? String(v).padEnd(w[c]) : String(v).padStart(w[c]))).join('  ');
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

/** The goals section: `goals` in bench.mjs's shape ({ name, value, target, pass, detail }). */
export function printGoals(title, goals, none) {
  console.log(`\n## ${title} goals`);
  if (goals.length === 0) console.log(`  (none: ${none})`);
  else console.log(table(['goal', 'measured', 'target', 'result'], goals.map((x) => [x.name, x.value, x.target, (x.pass ? 'PASS' : 'MISS') + (x.detail ? ` (${x.detail})` : '')])));
}

/** Writes `res` as JSON to `file` (folders created) and says where. */
export function writeJson(file, res) {
  const full = path.resolve(file);
  fs.mkdirSync(path.dirname(full), { recursive: true });
  fs.writeFileSync(full, `${JSON.stringify(res, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), full) || full}`);
}

/**
 * Exits once `main` settles (timers, sockets and children left by peers must not keep the
 * benchmark alive), after `cleanup`; 1 when it failed.
 */
export function exitWhenDone(main, cleanup = () => {}) {
  main.then(
    () => {
      cleanup();
      process.exit(0);
    },
    (err) => {
      console.error(err);
      cleanup();
      process.exit(1);
    },
  );
}

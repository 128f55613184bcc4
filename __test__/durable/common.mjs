// Shared by the durable crash and chaos tests: a seeded PRNG, worker processes
// (./worker.mjs) and the parsing of their log lines. Not a test file.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const WORKER = fileURLToPath(new URL('./worker.mjs', import.meta.url));

/** mulberry32: a small seeded PRNG, floats in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Spawns `node worker.mjs <cfg>` (stdin a pipe kept open, stdout read by lines, stderr kept).
 * Returns `{ child, pid, label, stdoutLines, stderr(), line(prefix, timeoutMs), exited,
 * running(), kill(), end() }`.
 */
export function spawnWorker(cfg, label) {
  const child = spawn(process.execPath, [WORKER, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code, signal }));
  const stdoutLines = [];
  const waiting = []; // [prefix, resolve]
  let buf = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      stdoutLines.push(line);
      for (let i = waiting.length - 1; i >= 0; i--) {
        if (line.startsWith(waiting[i][0])) {
          waiting[i][1](line);
          waiting.splice(i, 1);
        }
      }
    }
  });
  child.stderr.on('data', (d) => (err += d));
  child.stdin.on('error', () => {}); // EPIPE once it is dead
  const running = () => child.exitCode === null && child.signalCode === null;
  const w = {
    child,
    pid: child.pid,
    label,
    stdoutLines,
    stderr: () => err,
    exited,
    running,
    /** Resolves with the first stdout line starting with `prefix` (also one already printed). */
    line(prefix, timeoutMs = 15000) {
      const seen = stdoutLines.find((l) => l.startsWith(prefix));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${label} (pid ${child.pid}) printed no "${prefix}" line in ${timeoutMs} ms; stderr: ${err}`)),
          timeoutMs,
        );
        const entry = [
          prefix,
          (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        ];
        waiting.push(entry);
        exited.then(({ code, signal }) => {
          if (waiting.includes(entry)) {
            clearTimeout(timer);
            reject(new Error(`${label} (pid ${child.pid}) exited (${code ?? signal}) before printing "${prefix}"; stderr: ${err}`));
          }
        });
      });
    },
    kill() {
      if (running()) child.kill('SIGKILL');
      return exited;
    },
    /** Closes its stdin (the worker shuts down and exits); SIGKILL after `graceMs`. */
    async end(graceMs = 5000) {
      if (!running()) return exited;
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  return w;
}

/**
 * Parses every `*.log` file of `dir`: `{ byId: Map(id -> [{ kind, attempt, pid, t, file }]),
 * other: [entries of kinds other than start/end/done], lines }`.
 */
export function readLogs(dir) {
  const byId = new Map();
  const other = [];
  let lines = 0;
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.log')) continue;
    const text = readFileSync(join(dir, name), 'utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      lines++;
      const f = line.split(' ');
      const kind = f[0];
      if (kind === 'start' || kind === 'end' || kind === 'done') {
        if (f.length !== 5) throw new Error(`bad log line in ${name}: ${JSON.stringify(line)}`);
        const e = { kind, id: f[1], attempt: Number(f[2]), pid: Number(f[3]), t: Number(f[4]), file: name };
        let list = byId.get(e.id);
        if (list === undefined) byId.set(e.id, (list = []));
        list.push(e);
      } else {
        other.push({ line, file: name });
      }
    }
  }
  return { byId, other, lines };
}

/**
 * The chaos tests' rescue checks: each rescue (`rescued`: Map("id attempt" -> times logged))
 * is of a lost attempt (`lost`: Map("id attempt" -> { owner, next })), once; a lost attempt
 * without a logged rescue was rescued by a process killed right after (before its log line):
 * some other process was killed between the owner's death and shortly after the next attempt
 * started. A process holds at most `concurrency` attempts: a kill loses no more. Returns how
 * many rescues went unlogged.
 */
export function checkRescues({ rescued, lost, killedPids, kills, logs, concurrency }) {
  const bad = [...rescued].filter(([k, n]) => n !== 1 || !lost.has(k));
  assert.deepEqual(bad, [], 'each rescue is of a lost attempt, once');
  let unlogged = 0;
  for (const [k, { owner, next }] of lost) {
    if (rescued.has(k)) continue;
    unlogged++;
    const from = owner === 0 ? 0 : killedPids.get(owner);
    assert.ok(
      kills.some((x) => x.pid !== owner && x.at >= from && x.at <= next + 1000),
      `lost attempt ${k} (process ${owner || 'unknown'}) was rescued by no process that lived on: ${JSON.stringify(logs.byId.get(k.split(' ')[0]))}`,
    );
  }
  assert.ok(lost.size <= concurrency * kills.length, `${lost.size} attempts lost in ${kills.length} kills`);
  return unlogged;
}

/**
 * The chaos tests' check of one execution's log lines (`list`, from readLogs) against the
 * attempt the store kept (`attempt`, run by process `pid`): that attempt started and ended
 * once, in that process, and only it committed (`done`); every earlier attempt was lost by a
 * killed process (`killedPids`: pid -> kill time), started there or not at all, and, if it
 * returned, returned at most `endGapMs(returnTime)` before the kill. Adds each lost attempt to
 * `lost` (for checkRescues) and counts into `tally` ({ reRun, lostRunning, lostAfterEnd,
 * lostUnstarted, maxEndToKill }).
 */
export function checkAttempts({ id, list, attempt, pid, killedPids, lost, tally, endGapMs, what }) {
  const of = (kind, k) => list.filter((e) => e.kind === kind && e.attempt === k);
  const finalStarts = of('start', attempt);
  const finalEnds = of('end', attempt);
  assert.equal(finalStarts.length, 1, `one start of the kept attempt: ${what}`);
  assert.equal(finalEnds.length, 1, `one end of the kept attempt: ${what}`);
  assert.equal(finalStarts[0].pid, pid, what);
  assert.equal(finalEnds[0].pid, pid, what);
  for (const d of list.filter((e) => e.kind === 'done')) {
    // `done`: the store committed this outcome. Only the kept attempt can have one.
    assert.deepEqual([d.attempt, d.pid], [attempt, pid], `a committed outcome is never re-run: ${what}`);
  }
  const started = list.filter((e) => e.kind === 'start');
  const attempts = new Set(started.map((e) => e.attempt));
  assert.equal(attempts.size, started.length, `no attempt started twice: ${what}`);
  for (let k = 1; k < attempt; k++) {
    const starts = of('start', k);
    let next = k + 1;
    while (of('start', next).length === 0) next++; // the kept attempt has one
    lost.set(`${id} ${k}`, { owner: starts.length === 0 ? 0 : starts[0].pid, next: of('start', next)[0].t });
    if (starts.length === 0) {
      tally.lostUnstarted++;
      continue;
    }
    const s = starts[0];
    assert.ok(killedPids.has(s.pid), `attempt ${k} was re-run: its process ${s.pid} must have been killed. ${what}`);
    const ends = of('end', k);
    if (ends.length === 0) tally.lostRunning++;
    else {
      tally.lostAfterEnd++;
      assert.equal(ends[0].pid, s.pid, what);
      const gap = killedPids.get(s.pid) - ends[0].t;
      tally.maxEndToKill = Math.max(tally.maxEndToKill, gap);
      assert.ok(gap >= -50 && gap < endGapMs(ends[0].t), `a returned attempt lost only if its process died right after (${gap} ms): ${what}`);
    }
  }
  for (const k of attempts) assert.ok(k <= attempt, `no attempt after the kept one: ${what}`);
  if (attempt > 1) tally.reRun++;
  else assert.equal(list.filter((e) => e.kind !== 'done').length, 2, `ran once: one start, one end. ${what}`);
}

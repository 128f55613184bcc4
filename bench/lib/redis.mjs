// A throw-away redis-server for the BullMQ runs of w6.mjs and w7.mjs: a free port on
// 127.0.0.1, AOF with one fsync a second (Redis's documented durable setup), no RDB snapshots.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sleep, stopProcess } from './procs.mjs';

/** The executable `cmd` on PATH, or null. */
export function findOnPath(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, cmd);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** True when a Redis server on `port` answers PING with PONG. */
export function ping(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const end = (ok) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => end(false), timeoutMs);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) end(buf.startsWith('+PONG'));
    });
    s.on('error', () => end(false));
  });
}

/**
 * Starts redis-server `bin` with its files in `<parentDir>/<subdir>`; `spawnTracked(cmd, args,
 * options)` starts it (a process with exitInfo/exited, see procs.mjs). Resolves
 * `{ port, dir, version, stop() }` once it answers PING.
 */
export async function startRedis(bin, parentDir, spawnTracked, subdir = 'redis') {
  const dir = path.join(parentDir, subdir);
  fs.mkdirSync(dir);
  const log = path.join(dir, 'redis.log');
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no', '--logfile', log];
  const proc = spawnTracked(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d;
  });
  const deadline = performance.now() + 10_000;
  while (!(await ping(port))) {
    const why = proc.exitInfo
      ? `exited (${proc.exitInfo.error ? proc.exitInfo.error.message : `code ${proc.exitInfo.code}, signal ${proc.exitInfo.signal}`})`
      : performance.now() > deadline
        ? 'did not answer PING within 10 s'
        : null;
    if (why !== null) {
      await stopProcess(proc, 'SIGKILL');
      let tail = stderr.trim();
      try {
        tail += `\n${fs.readFileSync(log, 'utf8').trim().split('\n').slice(-5).join('\n')}`;
      } catch {
        // no log written
      }
      throw new Error(`redis-server ${why}: ${tail.trim()}`);
    }
    await sleep(50);
  }
  let version = null;
  try {
    version = /v=(\S+)/.exec(execFileSync(bin, ['--version'], { encoding: 'utf8' }))?.[1] ?? null;
  } catch {
    // reported as unknown
  }
  return { port, dir, version, stop: () => stopProcess(proc) };
}

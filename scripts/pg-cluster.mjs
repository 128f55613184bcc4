// A throw-away PostgreSQL cluster for the tests: a fresh data folder under the temporary
// folder, a free port on 127.0.0.1, no unix socket, trust authentication, fsync off; removed
// when stopped. As root the server runs as the `postgres` user (initdb and pg_ctl refuse
// root).
//
//   node scripts/pg-cluster.mjs run -- <command> [args…]
//
// starts a cluster, runs the command with BMAD_TEST_PG_URL=postgres://postgres@127.0.0.1:<port>/bmad_test
// (and BMAD_TEST_PG_CA, the certificate of its TLS, when openssl is there to make one; tests
// that restart a server start one of their own) and stops the cluster
// whatever the command did; exits with the command's code. Without
// PostgreSQL on the machine the command runs without the URL (its PostgreSQL tests say they
// are not run), unless BMAD_REQUIRE_PG=1 (CI), which makes that an error.
//
// PostgreSQL is looked for in PG_BIN, then `pg_config --bindir`, then the newest
// /usr/lib/postgresql/<version>/bin.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding initdb and pg_ctl, or null. */
export function findPostgres() {
  const has = (dir) => dir && existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'));
  if (process.env.PG_BIN) return has(process.env.PG_BIN) ? process.env.PG_BIN : null;
  const fromConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (fromConfig.status === 0 && has(fromConfig.stdout.trim())) return fromConfig.stdout.trim();
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (has(path.join(base, v, 'bin'))) return path.join(base, v, 'bin');
  return null;
}

/**
 * The fields of `/proc/<pid>/stat` after the command name (which may hold spaces): state,
 * then the parent's pid, ...; null once the process is gone.
 */
function statOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** The pids whose parent is `ppid`. */
const childrenOf = (ppid) =>
  readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(statOf(name)?.[1]) === ppid)
    .map(Number);

/** Whether process `pid` exists and has not exited (a zombie has). */
const running = (pid) => {
  const fields = statOf(pid);
  return fields !== null && !/^[ZX]/.test(fields[0]);
};

/** Whether `port` (0: any) can be listened on now; the port found, or null. */
function tryPort(port) {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(null) : reject(err)));
    server.listen(port, '127.0.0.1', () => {
      const found = server.address().port;
      server.close(() => resolve(found));
    });
  });
}

/**
 * A free port for the server, below the range the system hands out to outgoing connections:
 * while the server is down (a restart), a client's connection cannot take its port.
 */
async function freePort() {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // Not Linux: the default range's start.
  }
  if (low > 12000) {
    for (let i = 0; i < 50; i++) {
      const port = await tryPort(10000 + Math.floor(Math.random() * (low - 10000)));
      if (port !== null) return port;
    }
  }
  const port = await tryPort(0);
  if (port === null) throw new Error('no free port for the PostgreSQL server');
  return port;
}

/** Whether `openssl` can be run (for a TLS-enabled cluster). */
export function hasOpenssl() {
  return spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Starts a cluster; resolves `{ url, port, dir, ca, restart(), crash(), start(), stop() }`.
 * With `ssl`, the server also accepts TLS, with a certificate for `localhost` (not for
 * 127.0.0.1, so that verify-full to the address fails and to the name succeeds) signed by a
 * CA of its own; `ca` is the CA's certificate (null without `ssl`). With `durableCommits`, a
 * commit is answered only once its WAL is written (`synchronous_commit = on`), so what was
 * acknowledged survives the server's processes being killed (`crash()`); fsync stays off, so
 * a crash of the machine is not survived.
 */
export async function startPostgres(bin = findPostgres(), { ssl = false, durableCommits = false } = {}) {
  if (bin === null) throw new Error('PostgreSQL is not installed (no initdb/pg_ctl found; set PG_BIN)');
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(path.join(tmpdir(), 'bmad-pg-'));
  if (asRoot) {
    const id = (flag) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, id('-u'), id('-g'));
  }
  chmodSync(dir, 0o700);
  // The command line of a PostgreSQL tool (as `postgres` when root).
  const command = (tool, args) => (asRoot ? ['runuser', '-u', 'postgres', '--', path.join(bin, tool), ...args] : [path.join(bin, tool), ...args]);
  const run = (tool, args) => {
    const [cmd, ...argv] = command(tool, args);
    const r = spawnSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status !== 0) throw new Error(`${tool} failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || String(r.error)).trim()}`);
  };
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'log');
  try {
    run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
    const port = await freePort();
    let ca = null;
    const tls = [];
    if (ssl) {
      // A CA of its own, and the server's certificate signed by it.
      const file = (name) => path.join(dir, name);
      ca = file('ca.crt');
      const openssl = (...args) => execFileSync('openssl', args, { stdio: 'ignore' });
      openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', ca, '-days', '2', '-subj', '/CN=bmad test CA');
      openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=localhost');
      writeFileSync(file('server.ext'), 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n');
      openssl('x509', '-req', '-in', file('server.csr'), '-CA', ca, '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('server.crt'), '-days', '2', '-extfile', file('server.ext'));
      chmodSync(file('server.key'), 0o600);
      if (asRoot) {
        const id = (flag) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
        for (const name of ['server.key', 'server.crt']) chownSync(file(name), id('-u'), id('-g'));
      }
      tls.push('-c ssl=on', `-c ssl_cert_file=${file('server.crt')}`, `-c ssl_key_file=${file('server.key')}`);
    }
    const options = [
      `-p ${port}`,
      '-c listen_addresses=127.0.0.1',
      "-c unix_socket_directories=''",
      '-c fsync=off',
      `-c synchronous_commit=${durableCommits ? 'on' : 'off'}`,
      '-c full_page_writes=off',
      '-c max_connections=200',
      ...tls,
    ].join(' ');
    const start = () => run('pg_ctl', ['-D', data, '-l', log, '-o', options, '-w', '-t', '60', 'start']);
    start();
    run('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'bmad_test']);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/bmad_test`,
      port,
      dir,
      ca,
      /** The command line that restarts the server (for tests of a restart mid-run). */
      restartCommand: command('pg_ctl', ['-D', data, '-l', log, '-m', 'fast', '-w', 'restart']),
      restart: () => run('pg_ctl', ['-D', data, '-l', log, '-o', options, '-m', 'fast', '-w', 'restart']),
      /**
       * Kills the postmaster and every process it started with SIGKILL, as a crash would, and
       * waits until they are gone; resolves their pids. `start()` then recovers from the WAL.
       */
      async crash() {
        // Only this cluster's postmaster: a pid left in the file may belong to another process now.
        let postmaster = 0;
        let cmdline = '';
        try {
          postmaster = Number(readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
          cmdline = readFileSync(`/proc/${postmaster}/cmdline`, 'utf8');
        } catch {
          // not started, or gone
        }
        if (!cmdline.includes(data)) throw new Error(`the postmaster of ${data} is not running (pid ${postmaster})`);
        // Stopped first, so it forks nothing more while its children are listed (once it is
        // dead they belong to init); then every one of them and the postmaster are killed.
        process.kill(postmaster, 'SIGSTOP');
        const killed = [...childrenOf(postmaster), postmaster];
        for (const pid of killed) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // exited meanwhile
          }
        }
        // Dead once exited: a zombie that a parent does not reap (a container whose init
        // reaps nothing) holds no lock and no memory of the server.
        const deadline = Date.now() + 10000;
        while (killed.some(running)) {
          if (Date.now() > deadline) throw new Error(`server processes still running 10 s after SIGKILL: ${killed.filter(running).join(', ')}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        // PostgreSQL refuses to start while the pid in its lock file exists, zombie or not.
        rmSync(path.join(data, 'postmaster.pid'), { force: true });
        return killed;
      },
      start,
      stop() {
        try {
          run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    spawnSync(asRoot ? 'runuser' : path.join(bin, 'pg_ctl'), asRoot ? ['-u', 'postgres', '--', path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop'] : ['-D', data, '-m', 'immediate', 'stop']);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function main(argv) {
  const sep = argv.indexOf('--');
  if (argv[0] !== 'run' || sep < 0 || sep === argv.length - 1) {
    console.error('usage: node scripts/pg-cluster.mjs run -- <command> [args…]');
    return 2;
  }
  const [cmd, ...args] = argv.slice(sep + 1);
  const env = { ...process.env };
  let pg = null;
  const bin = findPostgres();
  if (bin === null) {
    if (process.env.BMAD_REQUIRE_PG === '1') {
      console.error('pg-cluster: PostgreSQL is required (BMAD_REQUIRE_PG=1) but not installed');
      return 1;
    }
    console.error('pg-cluster: PostgreSQL is not installed: the PostgreSQL tests will not run');
  } else {
    const ssl = hasOpenssl();
    if (!ssl) {
      if (process.env.BMAD_REQUIRE_PG === '1') {
        console.error('pg-cluster: openssl is required for the TLS tests (BMAD_REQUIRE_PG=1) but not installed');
        return 1;
      }
      console.error('pg-cluster: openssl is not installed: the TLS tests will not run');
    }
    pg = await startPostgres(bin, { ssl });
    env.BMAD_TEST_PG_URL = pg.url;
    if (pg.ca !== null) env.BMAD_TEST_PG_CA = pg.ca;
  }
  const stop = () => {
    if (pg !== null) {
      const p = pg;
      pg = null;
      p.stop();
    }
  };
  process.on('exit', stop);
  try {
    const child = spawn(cmd, args, { stdio: 'inherit', env });
    const code = await new Promise((resolve) => {
      child.on('error', (err) => {
        console.error(`pg-cluster: cannot run ${cmd}: ${err.message}`);
        resolve(1);
      });
      child.on('close', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
    });
    return code;
  } finally {
    stop();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}

// Command agents under stress and at the edges (each test here reproduces a defect a
// review found, fixed since): output floods, processes that outlive their leader, pid reuse,
// zombies, stale attempts, worker teardown, environments without pidfd, limits of the spec.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { test, exitIfWorkLeftBehind, shutDownAfterEach, sleep, waitUntil, runScript, isAlive, ENTRY, tempDir, registerDeafAndNext } from './helpers.mjs';

const NODE = process.execPath;
const MiB = 1024 * 1024;

exitIfWorkLeftBehind();
const create = shutDownAfterEach();
const rssMb = () => process.memoryUsage().rss / MiB;

// ----- output floods: backpressure, not memory -----------------------------------------------

for (const [label, extra, listen] of [
  ["a 'command-output' listener", {}, true],
  ['a RegExp progressPattern', { progressPattern: /(\d+)%/ }, false],
  ["'json-lines' progress", { args: ['{"progress": 1}'], progressPattern: 'json-lines' }, false],
]) {
  test(`a child printing as fast as it can with ${label}: memory stays flat and the timeout fires on time`, async () => {
    const bg = create();
    bg.registerCommand('flood', { command: 'yes', args: ['50%'], maxOutputBytes: 1000, killGraceMs: 100, ...extra });
    let lines = 0;
    if (listen) bg.on('command-output', () => lines++);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 50); // the event loop stays live
    const before = rssMb();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb())), 20);
    const t0 = performance.now();
    try {
      const err = await bg.execute('flood', 't', { timeout: 1500 }).then(
        () => assert.fail('a flood that is never done cannot complete'),
        (e) => e,
      );
      const tookMs = performance.now() - t0;
      assert.equal(err.code, 'ERR_EXECUTION_TIMEOUT');
      assert.ok(tookMs < 3500, `the 1500 ms timeout fired after ${Math.round(tookMs)} ms`);
      assert.ok(ticks >= 10, `a 50 ms interval ran ${ticks} times in ${Math.round(tookMs)} ms`);
      await waitUntil(() => bg.getStatus().command_processes === 0, 'the flood ended', { timeoutMs: 3000 });
      assert.ok(peak - before < 200, `RSS grew ${Math.round(peak - before)} MB during the flood`);
      if (listen) assert.ok(lines > 10_000, `the listener got ${lines} lines`);
    } finally {
      clearInterval(timer);
      clearInterval(sampler);
    }
  });
}

// ----- processes that outlive their leader ---------------------------------------------------

test('Node.js stays up until what a command left in its group (SIGTERM-deaf, detached stdio) is SIGKILLed', async () => {
  for (const how of ['exits by itself', 'times out']) {
    const leader = how === 'exits by itself' ? 'echo $!; sleep 0.1' : 'echo $!; sleep 30';
    const script = `
      import BackgroundExecutor from ${JSON.stringify(ENTRY)};
      const bg = new BackgroundExecutor({ throttleIfExceeded: false });
      bg.registerCommand('x', {
        command: 'sh',
        args: ['-c', ${JSON.stringify(`(trap "" TERM; exec sleep 30) </dev/null >/dev/null 2>&1 & ${leader}`)}],
        killGraceMs: 700,
      });
      bg.on('command-output', ({ line }) => console.log('straggler ' + line));
      bg.execute('x', 't', { timeout: 300 }).then(() => console.log('completed'), (e) => console.log('ended ' + e.code));
    `;
    const r = await runScript(script, { killAfterMs: 10_000 });
    assert.equal(r.code, 0, `${how}: ${r.stderr}`);
    const pid = Number(/straggler (\d+)/.exec(r.stdout)?.[1]);
    assert.ok(pid > 1, `${how}: ${r.stdout}`);
    assert.equal(isAlive(pid), false, `${how}: the straggler ${pid} outlived Node.js`);
    const lifetime = r.exitedAt - r.spawnedAt;
    assert.ok(lifetime >= 700, `${how}: Node.js exited ${lifetime} ms after its start, before the straggler's SIGKILL`);
  }
});

test('zombies left in a group (nobody reaps them) do not hold a command for its grace period', async () => {
  const bg = create();
  // SIGTERM kills both sh and sleep; sleep's parent is gone, so it may stay a zombie.
  bg.registerCommand('s', { command: 'sh', args: ['-c', 'sleep 30'], killGraceMs: 5000 });
  const t0 = performance.now();
  await assert.rejects(bg.execute('s', 't', { timeout: 200 }), { code: 'ERR_EXECUTION_TIMEOUT' });
  await waitUntil(() => bg.getStatus().command_processes === 0, 'the command ended', { timeoutMs: 4000 });
  const ms = performance.now() - t0;
  assert.ok(ms < 2500, `ended ${Math.round(ms)} ms after the start (grace is 5000 ms)`);
});

test('a cancelled command whose leader dies at once ends at once; Node.js does not wait for its kill deadline', async () => {
  const r = await runScript(
    `import BackgroundExecutor from ${JSON.stringify(ENTRY)};
     const bg = new BackgroundExecutor({ throttleIfExceeded: false });
     bg.registerCommand('s', { command: 'sleep', args: ['30'], killGraceMs: 5000 });
     const p = bg.execute('s', 't');
     p.catch((e) => console.log(e.code));
     setTimeout(() => {
       console.log('pid ' + bg.getActiveExecutions()[0].pid);
       bg.shutdown({ timeoutMs: 0 });
     }, 300);`,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ERR_EXECUTOR_SHUT_DOWN/);
  const pid = Number(/pid (\d+)/.exec(r.stdout)?.[1]);
  assert.equal(isAlive(pid), false);
  const lifetime = r.exitedAt - r.spawnedAt;
  assert.ok(lifetime < 4000, `Node.js exited ${lifetime} ms after its start: it waited for the 5 s kill deadline`);
});

// ----- attempts, workers, kernels without pidfd ------------------------------------------------

test('a spec built asynchronously for an attempt that has ended does not start a process', async (t) => {
  const dir = tempDir(t, 'bmad-bg-cmd-rob-');
  const bg = create({ maxConcurrentAgents: 1, cancelGraceMs: 50 });
  let calls = 0;
  bg.registerCommand('slow-spec', async () => {
    const n = ++calls;
    await sleep(n === 1 ? 400 : 0); // attempt 1's spec arrives after attempt 1 timed out
    return { command: 'sh', args: ['-c', `touch ${join(dir, `started-${n}`)}; sleep 0.5`] };
  });
  const r = await bg.execute('slow-spec', 't', { timeout: 200, retries: 1, retryDelayMs: 0 }).catch((e) => e);
  assert.equal(r.code, 'ERR_EXECUTION_TIMEOUT');
  await sleep(400);
  assert.equal(calls, 2);
  assert.equal(existsSync(join(dir, 'started-2')), true, 'attempt 2 ran');
  assert.equal(existsSync(join(dir, 'started-1')), false, "attempt 1's late spec started a process");
});

test("a worker's terminate() kills the commands it started", async () => {
  const w = new Worker(
    `import(${JSON.stringify(ENTRY)}).then(({ default: BackgroundExecutor }) => {
       const bg = new BackgroundExecutor({ throttleIfExceeded: false });
       bg.registerCommand('s', { command: 'sleep', args: ['30'] });
       bg.fireAndForget('s', 't');
       const poll = setInterval(() => {
         const pid = bg.getActiveExecutions()[0]?.pid;
         if (pid !== undefined) { clearInterval(poll); require('node:worker_threads').parentPort.postMessage(pid); }
       }, 10);
     });`,
    { eval: true },
  );
  const pid = await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  assert.equal(isAlive(pid), true);
  await w.terminate();
  await waitUntil(() => !isAlive(pid), `sleep ${pid} killed with its worker`, { timeoutMs: 2000 });
});

test('without pidfd (old kernels), commands still end after Node.js has spawned a child_process of its own', async (t) => {
  let gcc = true;
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
  } catch {
    gcc = false;
  }
  if (!gcc || process.platform !== 'linux') return t.skip('needs gcc on Linux');
  const dir = tempDir(t, 'bmad-bg-cmd-rob-');
  // A preload that makes pidfd_open fail: exits must be found without pidfds, and without
  // SIGCHLD (libuv takes it over once Node.js spawns a child of its own).
  writeFileSync(
    join(dir, 'nopidfd.c'),
    `#define _GNU_SOURCE
     #include <stdarg.h>
     #include <errno.h>
     #include <dlfcn.h>
     #include <sys/syscall.h>
     long syscall(long n, ...) {
       va_list ap; va_start(ap, n);
       long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
       va_end(ap);
       if (n == SYS_pidfd_open) { errno = ENOSYS; return -1; }
       static long (*real)(long, ...) = 0;
       if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
       return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
     }`,
  );
  execFileSync('gcc', ['-shared', '-fPIC', '-o', join(dir, 'nopidfd.so'), join(dir, 'nopidfd.c'), '-ldl']);
  const script = `
    import BackgroundExecutor from ${JSON.stringify(ENTRY)};
    import { execFile } from 'node:child_process';
    const bg = new BackgroundExecutor({ throttleIfExceeded: false });
    bg.registerCommand('t', { command: 'true' });
    console.log('first ' + (await bg.execute('t', 'a')).exitCode);
    await new Promise((r) => execFile('true', r));
    console.log('second ' + (await bg.execute('t', 'b')).exitCode);
  `;
  const file = join(dir, 'script.mjs');
  writeFileSync(file, script);
  const out = execFileSync(NODE, [file], {
    env: { ...process.env, LD_PRELOAD: join(dir, 'nopidfd.so') },
    timeout: 10_000,
    encoding: 'utf8',
  });
  assert.equal(out, 'first 0\nsecond 0\n');
});

// ----- spec limits and reporting ---------------------------------------------------------------

test('spec limits: maxOutputBytes at most 256 MiB (a JS string must hold it), env must be a plain object', () => {
  const bg = create();
  bg.registerCommand('ok', { command: 'true', maxOutputBytes: 256 * MiB, env: Object.assign(Object.create(null), { A: '1' }) });
  assert.throws(() => bg.registerCommand('big', { command: 'true', maxOutputBytes: 256 * MiB + 1 }), {
    name: 'RangeError',
    code: 'ERR_INVALID_ARG',
    message: /spec\.maxOutputBytes/,
  });
  assert.throws(() => bg.registerCommand('map', { command: 'true', env: new Map([['CI', '1']]) }), {
    name: 'TypeError',
    code: 'ERR_INVALID_ARG',
    message: /spec\.env must be an object/,
  });
});

test('a signal is reported by its usual name (SIGABRT, not its alias SIGIOT)', async () => {
  const bg = create();
  bg.registerCommand('abrt', { command: 'sh', args: ['-c', 'kill -ABRT $$'] });
  await assert.rejects(bg.execute('abrt', 't'), { code: 'ERR_COMMAND_FAILED', signal: 'SIGABRT', message: /killed by SIGABRT/ });
});

test('cpuPercent counts a tree of short-lived busy children (a test runner\'s shape)', async () => {
  const bg = create();
  // 30 children, each busy for 0.1 s, one after the other: the tree is busy all the time.
  bg.registerCommand('busy', {
    command: 'sh',
    args: ['-c', 'i=0; while [ $i -lt 30 ]; do timeout 0.1 sh -c "while :; do :; done"; i=$((i+1)); done'],
  });
  const { executionId } = await bg.executeWatched('busy', 't');
  await sleep(300);
  bg.getActiveExecutions(); // starts a measuring window
  await sleep(1000);
  const e = bg.getActiveExecutions().find((x) => x.executionId === executionId);
  assert.ok(e !== undefined, 'still running');
  assert.ok(e.cpuPercent > 25, `cpuPercent ${e.cpuPercent} for a tree that keeps one core busy`);
  await bg.cancelExecution(executionId);
});

test('a cancelled command keeps its slot until its process is gone, even when cancelGraceMs is shorter than killGraceMs', async () => {
  const bg = create({ maxConcurrentAgents: 1, cancelGraceMs: 100 });
  const { state, ready } = registerDeafAndNext(bg);
  const deaf = bg.execute('deaf', 't').catch((err) => err);
  const id = await ready;
  state.pid = bg.getActiveExecutions()[0].pid;
  assert.ok(state.pid > 0);
  const cancelledAt = Date.now();
  assert.equal((await bg.cancelExecution(id)).success, true);
  await bg.execute('next', 't');
  assert.equal((await deaf).code, 'ERR_EXECUTION_CANCELLED');
  const { nextStart } = state;
  const waited = nextStart.at - cancelledAt;
  assert.equal(nextStart.deafAlive, false, `the next agent started ${waited} ms after the cancel, with the SIGTERM-deaf command still alive`);
  assert.ok(waited >= 1300, `the next agent started ${waited} ms after the cancel (killGraceMs 1500)`);
  assert.ok(waited < 4000, `the next agent started ${waited} ms after the cancel`);
});

test('a command that cannot start for want of file descriptors (EMFILE) is retried, and starts once they are free', async () => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { spawn } = await import('node:child_process');
  const dir = mkdtempSync(join(tmpdir(), 'bmad-emfile-'));
  try {
    const file = join(dir, 'script.mjs');
    writeFileSync(
      file,
      `
      import { openSync, closeSync } from 'node:fs';
      import { BackgroundExecutor } from ${JSON.stringify(ENTRY)};
      const bg = new BackgroundExecutor({ throttleIfExceeded: false });
      bg.registerCommand('echo', { command: 'echo', args: ['started'] });
      const retries = [];
      bg.on('execution-retry', (e) => retries.push(e.error));
      // Every descriptor taken: the command's pipes cannot be made.
      const held = [];
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
      const result = bg.execute('echo', '', { retries: 3, retryDelayMs: 200, backoff: 'fixed' });
      setTimeout(() => { for (const fd of held) closeSync(fd); }, 50);
      const r = await result.then((v) => ({ ok: v.stdout.trim() }), (e) => ({ error: e.code, reason: e.reason }));
      await bg.shutdown();
      console.log(JSON.stringify({ r, retries }));
      `,
    );
    const out = await new Promise((resolve, reject) => {
      // A low limit: a few hundred descriptors to take, not a million.
      const child = spawn('sh', ['-c', `ulimit -n 256 && exec "${process.execPath}" "${file}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      let err = '';
      child.stdout.on('data', (d) => (text += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`exit ${code}: ${err}`))));
    });
    const { r, retries } = JSON.parse(out.trim().split('\n').pop());
    assert.deepEqual(r, { ok: 'started' });
    assert.ok(retries.length >= 1 && retries.every((m) => m.includes('EMFILE')), JSON.stringify(retries));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

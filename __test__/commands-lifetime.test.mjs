// Command agents and the life of the Node.js process, in child scripts:
// - a script that only runs commands stays up while they run and exits by itself right after;
// - after a cancel or a forced shutdown, a command still being terminated keeps Node.js up
//   until its group is gone (it gets its grace period), and no longer;
// - process.exit() (or an uncaught exception) while commands run kills their whole groups,
//   grandchildren (even SIGTERM-deaf ones) included;
// - registering a command that never runs keeps nothing alive;
// - Node.js killed outright (no JS runs at all) while commands run: the sentinel kills their
//   groups.
//
// Dead processes: in this container PID 1 may not reap orphans, so a killed process can stay a
// zombie; a pid counts as dead when /proc/<pid>/stat is gone or its state is 'Z'.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test, exitIfWorkLeftBehind, waitUntil, runScript, isAlive as alive, ENTRY, tempDir } from './helpers.mjs';

exitIfWorkLeftBehind();

/** Runs `source` and notes when each stdout line arrived (Date.now()). */
async function runTimed(source, options = {}) {
  const lineAt = new Map();
  const r = await runScript(source, {
    ...options,
    onStdout(all) {
      for (const line of all.split('\n').slice(0, -1)) if (!lineAt.has(line)) lineAt.set(line, Date.now());
    },
  });
  return { ...r, lineAt };
}

const HEADER = `import BackgroundExecutor from ${JSON.stringify(ENTRY)};
const bg = new BackgroundExecutor({ throttleIfExceeded: false });
`;

test('a script that only runs commands stays alive while they run and exits by itself right after', async (t) => {
  const dir = tempDir(t, 'bmad-bg-cmd-life-');
  const touched = join(dir, 'touched');
  const r = await runTimed(
    HEADER +
      `bg.registerCommand('nap', { command: 'sleep', args: ['0.6'] });
bg.registerCommand('touch', { command: 'sh', args: ['-c', 'sleep 0.4; : > "$0"', ${JSON.stringify(touched)}] });
const t0 = Date.now();
await bg.fireAndForget('touch', 't'); // nobody waits for this one
bg.execute('nap', 't').then((r) => console.log('nap ' + r.exitCode + ' ' + (Date.now() - t0)));
`,
  );
  assert.equal(r.killed, false, 'the script did not exit by itself');
  assert.equal(r.code, 0, r.stderr);
  const line = [...r.lineAt.keys()].find((l) => l.startsWith('nap '));
  assert.ok(line, `stdout: ${r.stdout}`);
  const [, code, ms] = line.split(' ');
  assert.equal(code, '0');
  assert.ok(Number(ms) >= 550, `the command ran ${ms} ms`);
  assert.ok(existsSync(touched), 'the fire-and-forget command ran to its end');
  const lingered = r.exitedAt - r.lineAt.get(line);
  assert.ok(lingered < 1000, `the script exited ${lingered} ms after the last command ended`);
});

test('registering commands (and running none) keeps nothing alive', async () => {
  const r = await runScript(
    HEADER +
      `bg.registerCommand('never', { command: 'sleep', args: ['30'] });
bg.registerCommand('neverFn', () => ({ command: 'sleep', args: ['30'] }));
console.log('registered');
`,
  );
  assert.equal(r.killed, false);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'registered\n');
  assert.ok(r.exitedAt - r.spawnedAt < 3000, `exited after ${r.exitedAt - r.spawnedAt} ms`);
});

// A command that, on SIGTERM, cleans up for 0.4 s (then writes a file) before exiting. The
// trap runs once the foreground sleep (also signalled: same group) has ended.
const cleanupSpec = (file) =>
  `{ command: 'sh', args: ['-c', "trap 'sleep 0.4; : > \\"$0\\"; exit 0' TERM; echo ready; while :; do sleep 0.05; done", ${JSON.stringify(file)}], killGraceMs: 5000 }`;

test('after a cancel or a forced shutdown, Node.js stays up while the command cleans up (its grace period), then exits', async (t) => {
  const dir = tempDir(t, 'bmad-bg-cmd-life-');
  const afterCancel = join(dir, 'cleaned-after-cancel');
  const afterShutdown = join(dir, 'cleaned-after-shutdown');
  const readyThen = (body) =>
    `bg.on('command-output', async (e) => {
  if (e.line !== 'ready') return;
  console.log('pid ' + bg.getActiveExecutions()[0].pid);
  ${body}
});
`;
  const [cancelled, shutDown] = await Promise.all([
    runTimed(
      HEADER +
        `bg.registerCommand('cleanup', ${cleanupSpec(afterCancel)});
${readyThen(`const c = await bg.cancelExecution(e.executionId); console.log('cancelled ' + c.success);`)}
await bg.fireAndForget('cleanup', 't');
`,
    ),
    runTimed(
      HEADER +
        `bg.registerCommand('cleanup', ${cleanupSpec(afterShutdown)});
${readyThen(`await bg.shutdown({ timeoutMs: 0 }); console.log('shut down');`)}
await bg.fireAndForget('cleanup', 't');
`,
    ),
  ]);
  for (const [r, endLine, file] of [
    [cancelled, 'cancelled true', afterCancel],
    [shutDown, 'shut down', afterShutdown],
  ]) {
    assert.equal(r.killed, false, `${endLine}: the script did not exit by itself; stdout ${r.stdout}`);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.lineAt.has(endLine), `stdout: ${r.stdout}`);
    assert.ok(existsSync(file), `${endLine}: the command was given the time to clean up`);
    const stayed = r.exitedAt - r.lineAt.get(endLine);
    assert.ok(stayed >= 300, `${endLine}: Node.js exited ${stayed} ms later, before the command's 0.4 s cleanup`);
    assert.ok(stayed < 2500, `${endLine}: Node.js exited ${stayed} ms later (killGraceMs is 5000, cleanup 400)`);
    const pid = Number(r.stdout.match(/^pid (\d+)$/m)[1]);
    assert.equal(alive(pid), false, `${endLine}: command ${pid} gone`);
  }
});

/** Source that starts three commands with grandchildren, prints their pids, then runs `end`. */
const manyThenSource = (end) =>
  HEADER +
  `bg.registerCommand('sleeper', { command: 'sleep', args: ['30'] });
bg.registerCommand('tree', { command: 'sh', args: ['-c', 'sleep 30 & echo "grandchild $!"; exec sleep 30'] });
// Ignores SIGTERM, and so does its grandchild; a 60 s grace: only SIGKILL ends them in time.
bg.registerCommand('deaf', {
  command: 'sh',
  args: ['-c', "trap '' TERM; sleep 30 & echo \\"grandchild $!\\"; exec sleep 30"],
  killGraceMs: 60000,
});
const grandchildren = [];
bg.on('command-output', (e) => {
  const m = /^grandchild (\\d+)$/.exec(e.line);
  if (m) grandchildren.push(Number(m[1]));
});
for (const name of ['sleeper', 'tree', 'deaf']) await bg.fireAndForget(name, 't');
while (grandchildren.length < 2 || bg.getActiveExecutions().filter((a) => a.pid).length < 3) {
  await new Promise((r) => setTimeout(r, 10));
}
const leaders = bg.getActiveExecutions().map((a) => a.pid);
console.log(JSON.stringify({ pids: [...leaders, ...grandchildren] }));
${end}
`;

test('process.exit() or an uncaught exception while commands run kills their whole groups (SIGTERM-deaf grandchildren too)', async () => {
  const [exited, threw] = await Promise.all([
    runScript(manyThenSource('process.exit(0);')),
    runScript(manyThenSource("setTimeout(() => { throw new Error('boom'); }, 0);")),
  ]);
  for (const [r, label, code] of [
    [exited, 'process.exit(0)', 0],
    [threw, 'uncaught exception', 1],
  ]) {
    assert.equal(r.killed, false, `${label}: the script did not exit; stdout ${r.stdout}; stderr ${r.stderr}`);
    assert.equal(r.code, code, `${label}: ${r.stderr}`);
    const { pids } = JSON.parse(r.stdout.trim().split('\n').at(-1));
    assert.equal(pids.length, 5, `${label}: three leaders and two grandchildren: ${pids}`);
    try {
      await waitUntil(() => pids.every((p) => !alive(p)), `${label}: pids ${pids.join(', ')} gone`, { timeoutMs: 2000 });
    } catch (err) {
      err.message += ` (still alive: ${pids.filter(alive).join(', ')})`;
      throw err;
    }
  }
});

test('Node.js killed outright (SIGKILL, or SIGTERM/SIGINT nobody handles) while commands run: the sentinel kills their whole groups', async () => {
  const cases = ['SIGKILL', 'SIGTERM', 'SIGINT'];
  const runs = await Promise.all(cases.map((sig) => runScript(manyThenSource(`process.kill(process.pid, '${sig}');`))));
  const all = [];
  try {
    for (const [i, r] of runs.entries()) {
      const label = cases[i];
      assert.equal(r.killed, false, `${label}: the script did not die; stdout ${r.stdout}; stderr ${r.stderr}`);
      assert.equal(r.signal, label, `${label}: died by its signal (${r.code}/${r.signal}): ${r.stderr}`);
      const { pids } = JSON.parse(r.stdout.trim().split('\n').at(-1));
      assert.equal(pids.length, 5, `${label}: three leaders and two grandchildren: ${pids}`);
      all.push(...pids);
    }
    try {
      await waitUntil(() => all.every((p) => !alive(p)), `pids ${all.join(', ')} gone`, { timeoutMs: 3000 });
    } catch (err) {
      err.message += ` (still alive: ${all.filter(alive).join(', ')})`;
      throw err;
    }
  } finally {
    // Whatever survived a failure must not outlive the test (a process or its group).
    for (const p of all.filter(alive)) {
      for (const target of [-p, p]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {}
      }
    }
  }
});

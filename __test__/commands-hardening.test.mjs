// Command agents against hostile or careless input, each test a finding of a security and
// robustness review: output that cannot become a JS string as it is (140M line breaks on
// stderr, 180 MB of invalid UTF-8), a leftover process whose name is not UTF-8, many groups
// lingering at once, programs looked up along a PATH the spec sets, output retained by
// finished executions, what a command inherits from Node.js (descriptors, ignored signals),
// and the output a cancelled or timed-out command leaves on its error.
//
// Floods run in child scripts: before these were fixed, they crashed Node.js.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import BackgroundExecutor from '../index.mjs';
import { test, exitIfWorkLeftBehind, shutDownAfterEach, sleep, waitUntil, runScript, isAlive, ENTRY, tempDir } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach();

const MiB = 1024 * 1024;
const HEADER = `import BackgroundExecutor from ${JSON.stringify(ENTRY)};
const bg = new BackgroundExecutor({ throttleIfExceeded: false });
`;

/** Source that records the longest pause of the event loop in `stall` (ms). */
const STALL_PROBE = `let stall = 0, last = performance.now();
const probe = setInterval(() => { const n = performance.now(); stall = Math.max(stall, n - last); last = n; }, 1);
const stopProbe = async () => { await new Promise((r) => setTimeout(r, 20)); clearInterval(probe); return Math.round(stall); };
`;

// ----- output that does not fit a JS string as it is -------------------------------------------

test('140M line breaks on a failing command\'s stderr: ERR_COMMAND_FAILED with all of it, Node.js stays up', async () => {
  const r = await runScript(
    HEADER +
      STALL_PROBE +
      `bg.registerCommand('breaks', {
  command: 'sh',
  args: ['-c', "echo 'the real error'; head -c 140000000 /dev/zero | tr '\\\\0' '\\\\n' >&2; exit 1"],
  maxOutputBytes: 256 * 1024 * 1024,
});
const err = await bg.execute('breaks', 't').then(() => null, (e) => e);
console.log(JSON.stringify({ code: err.code, message: err.message, bytes: err.stderrBytes, length: err.stderr.length, stall: await stopProbe() }));`,
    { killAfterMs: 15_000 },
  );
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal}: ${r.stderr.slice(0, 500)}`);
  const out = JSON.parse(r.stdout);
  assert.equal(out.code, 'ERR_COMMAND_FAILED');
  assert.equal(out.message, 'Command "sh" exited with code 1', 'no last line: only line breaks end stderr');
  assert.equal(out.bytes, 140_000_000);
  assert.equal(out.length, 140_000_000);
  assert.ok(out.stall < 2000, `the JS thread stalled ${out.stall} ms`);
});

test('the last stderr line of a failure is looked for from the end: after 100 000 blank lines none, a 100 KB line shows its end', async () => {
  const bg = create();
  bg.registerCommand('blank', { command: 'sh', args: ['-c', "echo early >&2; head -c 100000 /dev/zero | tr '\\0' '\\n' >&2; exit 2"] });
  bg.registerCommand('long', { command: 'sh', args: ['-c', "head -c 100000 /dev/zero | tr '\\0' x >&2; printf 'END\\n\\n' >&2; exit 2"] });
  bg.registerCommand('short', { command: 'sh', args: ['-c', "printf 'a\\n  the last one  \\n\\n' >&2; exit 2"] });
  const message = async (name) => (await bg.execute(name, 't').catch((e) => e)).message;
  assert.equal(await message('blank'), 'Command "sh" exited with code 2');
  assert.equal(await message('long'), `Command "sh" exited with code 2: ...${'x'.repeat(194)}END`);
  assert.equal(await message('short'), 'Command "sh" exited with code 2: the last one');
});

test('180 MB of invalid UTF-8 with maxOutputBytes 256 MiB: stdout holds at most 256 MiB of UTF-8 and the batch is not lost', async () => {
  const r = await runScript(
    HEADER +
      STALL_PROBE +
      `bg.registerCommand('ff', {
  command: 'sh',
  args: ['-c', "head -c 180000000 /dev/zero | tr '\\\\0' '\\\\377'"],
  maxOutputBytes: 256 * 1024 * 1024,
});
bg.registerCommand('small', { command: 'sh', args: ['-c', 'echo small'] });
const [big, small] = await Promise.all([bg.execute('ff', 't'), bg.execute('small', 't')]);
const utf8 = Buffer.byteLength(big.stdout);
const onlyReplacement = !/[^\\uFFFD]/.test(big.stdout);
console.log(JSON.stringify({ utf8, bytes: big.stdoutBytes, truncated: big.truncated, onlyReplacement, small: small.stdout, stall: await stopProbe() }));`,
    { killAfterMs: 15_000 },
  );
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal}: ${r.stderr.slice(0, 500)}`);
  const out = JSON.parse(r.stdout);
  assert.ok(out.utf8 <= 256 * MiB && out.utf8 > 255 * MiB, `stdout is ${out.utf8} bytes of UTF-8`);
  assert.equal(out.bytes, 180_000_000, 'stdoutBytes counts what the command wrote');
  assert.equal(out.truncated, true, 'the text was cut at the cap');
  assert.equal(out.onlyReplacement, true);
  assert.equal(out.small, 'small\n');
  assert.ok(out.stall < 2000, `the JS thread stalled ${out.stall} ms`);
});

test('invalid UTF-8 under the cap: each bad byte is U+FFFD, the text is cut at maxOutputBytes of UTF-8', async () => {
  const bg = create();
  bg.registerCommand('bad', { command: 'sh', args: ['-c', "printf 'ok\\377\\376!'"], maxOutputBytes: 100 });
  bg.registerCommand('grows', { command: 'sh', args: ['-c', "printf '\\377\\377\\377\\377'"], maxOutputBytes: 10 });
  const bad = await bg.execute('bad', 't');
  assert.equal(bad.stdout, 'ok\uFFFD\uFFFD!');
  assert.equal(bad.truncated, false);
  const grows = await bg.execute('grows', 't');
  assert.equal(grows.stdout, '\uFFFD\uFFFD\uFFFD', '4 bytes kept, 3 replacement characters fit 10 bytes of UTF-8');
  assert.equal(grows.stdoutBytes, 4);
  assert.equal(grows.truncated, true);
});

// ----- leftover processes ----------------------------------------------------------------------

test('a leftover process whose name is not UTF-8 (cut inside a character) is terminated with its leader', async (t) => {
  const dir = tempDir(t, 'bmad-bg-cmd-hard-');
  // Nine 2-byte characters: the kernel keeps 15 bytes of the name, splitting the eighth.
  const sleeper = join(dir, 'ééééééééé');
  symlinkSync('/bin/sleep', sleeper);
  const bg = create();
  bg.registerCommand('leaves', { command: 'sh', args: ['-c', '"$0" 30 & echo $!', sleeper], killGraceMs: 300 });
  let pid = 0;
  t.after(() => {
    if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL');
  });
  const r = await bg.execute('leaves', 't');
  pid = Number(r.stdout.trim());
  assert.ok(pid > 0, r.stdout);
  await waitUntil(() => !isAlive(pid), `the leftover ${pid} to be killed`, { timeoutMs: 3000 });
});

test('200 groups lingering at once (SIGTERM-deaf leftovers, 2 s grace) share their /proc scans: little CPU', async () => {
  const bg = create({ maxConcurrentAgents: 200 });
  bg.registerCommand('leave', {
    command: 'sh',
    args: ['-c', "(trap '' TERM; exec sleep 30) </dev/null >/dev/null 2>&1 & exit 0"],
    killGraceMs: 2000,
  });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: 200 }, () => bg.execute('leave', 't')));
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  assert.ok(results.every((r) => r.exitCode === 0));
  assert.ok(wall >= 1900, `the leftovers got their grace period (${Math.round(wall)} ms)`);
  // A scan per group and tick took ~3 s of CPU here; one scan per tick for all, ~0.4 s.
  assert.ok(cpuMs < 1500, `${Math.round(cpuMs)} ms of CPU in ${Math.round(wall)} ms`);
});

// ----- programs along the child's PATH ---------------------------------------------------------

test('env.PATH or inheritEnv: false: a bare name is looked up along the child\'s PATH, and a file without #! is not run by a shell', async (t) => {
  const dir = tempDir(t, 'bmad-bg-cmd-hard-');
  writeFileSync(join(dir, 'no-shebang'), 'echo run by a shell\n');
  chmodSync(join(dir, 'no-shebang'), 0o755);
  writeFileSync(join(dir, 'tool'), '#!/bin/sh\necho "tool $PATH"\n');
  chmodSync(join(dir, 'tool'), 0o755);
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'tool'), '#!/bin/sh\necho "relative tool"\n');
  chmodSync(join(dir, 'sub', 'tool'), 0o755);
  const bg = create();
  bg.registerCommand('noShebang', { command: 'no-shebang', env: { PATH: dir } });
  bg.registerCommand('tool', { command: 'tool', env: { PATH: `/nonexistent:${dir}` } });
  bg.registerCommand('bare', { command: 'sh', args: ['-c', 'echo "$0"'], inheritEnv: false });
  bg.registerCommand('relative', { command: 'tool', env: { PATH: 'sub' }, cwd: dir });
  bg.registerCommand('missing', { command: 'tool', env: { PATH: '/nonexistent' } });

  const e = await bg.execute('noShebang', 't').then(
    (r) => assert.fail(`ran: ${JSON.stringify(r.stdout)}`),
    (err) => err,
  );
  assert.equal(e.code, 'ERR_COMMAND_SPAWN');
  assert.equal(e.reason, 'ENOEXEC');
  assert.equal((await bg.execute('tool', 't')).stdout, `tool /nonexistent:${dir}\n`);
  assert.equal((await bg.execute('bare', 't')).stdout, 'sh\n', 'no PATH at all: /bin:/usr/bin, argv[0] as given');
  assert.equal((await bg.execute('relative', 't')).stdout, 'relative tool\n', 'a relative PATH entry is the child\'s');
  const m = await bg.execute('missing', 't').catch((err) => err);
  assert.equal(m.code, 'ERR_COMMAND_SPAWN');
  assert.equal(m.reason, 'ENOENT');
  assert.match(m.message, /not found in PATH$/);
});

// ----- output retained by finished executions -----------------------------------------------

test('output kept by finished executions is bounded (64 MiB by default): the oldest is dropped first and marked; callers keep theirs', async () => {
  const bg = create({ maxConcurrentAgents: 4 });
  bg.registerCommand('twoMiB', { command: 'head', args: ['-c', String(2 * MiB), '/dev/zero'], maxOutputBytes: 4 * MiB });
  bg.registerCommand('fails', { command: 'sh', args: ['-c', `head -c ${2 * MiB} /dev/zero >&2; exit 1`], maxOutputBytes: 4 * MiB });
  const ids = [];
  const delivered = [];
  for (let i = 0; i < 40; i++) {
    const fails = i % 10 === 1;
    ids.push(
      (await bg.executeWithCallback(fails ? 'fails' : 'twoMiB', String(i), (err, result) => (delivered[i] = err ?? result))).executionId,
    );
  }
  for (const id of ids) await bg.waitFor(id);
  const last = await bg.execute('twoMiB', 'last');
  assert.equal(last.stdout.length, 2 * MiB);
  await sleep(10);
  const statuses = ids.map((id) => bg.getExecutionStatus(id));
  const held = (s) => (s.status === 'completed' ? s.result : s.errorObject);
  const kept = statuses.map((s) => held(s).stdout.length + held(s).stderr.length);
  const total = kept.reduce((a, b) => a + b, 0) + last.stdout.length;
  assert.ok(total <= 64 * MiB, `${total / MiB} MiB of output retained`);
  const first = held(statuses[0]);
  assert.equal(first.outputDropped, true);
  assert.equal(first.stdout, '');
  assert.equal(first.stdoutBytes, 2 * MiB, 'the byte counts stay');
  assert.equal(first.exitCode, 0, 'the other fields stay');
  const failed = held(statuses[1]);
  assert.equal(failed.code, 'ERR_COMMAND_FAILED');
  assert.ok(failed instanceof Error);
  assert.match(failed.message, /exited with code 1/);
  assert.equal(failed.outputDropped, true, 'failures count too');
  // What the callers got is theirs: never emptied.
  assert.equal(delivered[0].stdout.length, 2 * MiB);
  assert.equal(delivered[0].outputDropped, false);
  assert.equal(delivered[1].stderr.length, 2 * MiB);
  assert.equal(delivered[1].outputDropped, false);
  const newest = held(statuses.at(-1));
  assert.equal(newest.outputDropped, false);
  assert.equal(newest.stdout.length + newest.stderr.length, 2 * MiB);
  assert.equal(last.outputDropped, false);
});

test('maxRetainedOutputBytes sets the total of retained output', async () => {
  const bg = create({ maxRetainedOutputBytes: 1000 });
  assert.equal(bg.config.maxRetainedOutputBytes, 1000);
  bg.registerCommand('six', { command: 'sh', args: ['-c', 'printf 123456'] });
  const a = await bg.fireAndForget('six', 'a');
  const b = await bg.fireAndForget('six', 'b');
  await bg.waitFor(b.executionId);
  await sleep(10);
  const result = (x) => bg.getExecutionStatus(x.executionId).result;
  assert.deepEqual([result(a).stdout, result(a).outputDropped, result(b).stdout], ['123456', false, '123456'], 'under the total: kept');
  const big = [];
  for (let i = 0; i < 200; i++) big.push(await bg.fireAndForget('six', String(i)));
  await bg.onIdle();
  await sleep(10);
  const kept = big.filter((x) => !result(x).outputDropped).length;
  assert.ok(kept <= 1000 / 6 && kept >= 100, `${kept} results of 6 bytes kept under a 1000-byte total`);
  assert.equal(result(a).outputDropped, true, 'the oldest went first');
  assert.equal(result(a).stdout, '');
});

// ----- what a command inherits from Node.js --------------------------------------------------

test('commands and the sentinel inherit no descriptor beyond 0-2 and no ignored signal from Node.js', async (t) => {
  // A Node.js started with a 4th descriptor (no close-on-exec) runs a command, then looks at
  // what the command and the sentinel have.
  const source =
    HEADER +
    `import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
const extra = readlinkSync('/proc/self/fd/3');
bg.registerCommand('look', { command: 'sh', args: ['-c', 'ls -l /proc/$$/fd; grep SigIgn /proc/$$/status'] });
const r = await bg.execute('look', 't');
const stat = (pid) => readFileSync('/proc/' + pid + '/stat', 'latin1');
const sentinel = readdirSync('/proc').find((p) => /^\\d+$/.test(p) && (() => {
  try {
    return readFileSync('/proc/' + p + '/cmdline', 'latin1').includes('bmad-bg-sentinel') &&
      Number(stat(p).slice(stat(p).lastIndexOf(')') + 1).trim().split(' ')[1]) === process.pid;
  } catch { return false; }
})());
const sentinelFds = readdirSync('/proc/' + sentinel + '/fd').map((fd) => { try { return readlinkSync('/proc/' + sentinel + '/fd/' + fd); } catch { return ''; } });
const sentinelIgn = /SigIgn:\\s*(\\w+)/.exec(readFileSync('/proc/' + sentinel + '/status', 'utf8'))[1];
const nodeIgn = /SigIgn:\\s*(\\w+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1];
console.log(JSON.stringify({ extra, command: r.stdout, sentinel, sentinelFds, sentinelIgn, nodeIgn }));
await bg.shutdown();`;
  const dir = tempDir(t, 'bmad-bg-cmd-hard-');
  const file = join(dir, 'script.mjs');
  writeFileSync(file, source);
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  const out = JSON.parse(stdout);
  assert.match(out.extra, /^(pipe|socket):\[\d+\]$/, 'the test gave Node.js a descriptor 3');
  const bit = (mask, sig) => (BigInt(`0x${mask}`) >> BigInt(sig - 1)) & 1n;
  assert.equal(bit(out.nodeIgn, 25), 1n, 'Node.js ignores SIGXFSZ');
  assert.equal(out.command.includes(out.extra), false, `the command inherited ${out.extra}:\n${out.command}`);
  const commandIgn = /SigIgn:\s*(\w+)/.exec(out.command)[1];
  // Signals 1-31; glibc's posix_spawn keeps its own internal signals (32, 33) ignored.
  assert.equal(BigInt(`0x${commandIgn}`) & 0x7fffffffn, 0n, `the command ignores signals: ${commandIgn}`);
  assert.ok(Number(out.sentinel) > 0, 'the sentinel was found');
  assert.equal(out.sentinelFds.includes(out.extra), false, `the sentinel inherited ${out.extra}: ${out.sentinelFds}`);
  assert.equal(bit(out.sentinelIgn, 25), 0n, `the sentinel ignores SIGXFSZ: ${out.sentinelIgn}`);
});

// ----- the output of a command that was cancelled or timed out ---------------------------------

test('a timed-out or cancelled command keeps its output on the error: what it printed so far, then all of it', async () => {
  const bg = create();
  // Deaf to SIGTERM: alive until its SIGKILL 1.5 s after the timeout, so the error its caller
  // gets can only hold what it printed before.
  bg.registerCommand('deaf', { command: 'sh', args: ['-c', "trap '' TERM; echo started; echo warn >&2; sleep 30 & wait"], killGraceMs: 1500 });
  // Prints a last line when terminated: the error gets it once the process is gone.
  bg.registerCommand('tidy', { command: 'sh', args: ['-c', 'trap "echo cleaning up; exit 3" TERM; echo started; sleep 30 & wait'] });
  const failed = [];
  bg.on('execution-failed', (e) => failed.push(e));

  // The timeout leaves the shell time to print on a loaded machine (400 ms flaked there).
  const err = await bg.execute('deaf', 't', { timeout: 1200 }).then(
    () => assert.fail('cannot complete'),
    (e) => e,
  );
  assert.equal(err.code, 'ERR_EXECUTION_TIMEOUT');
  assert.equal(bg.getStatus().command_processes, 1, 'still being terminated');
  assert.equal(err.stdout, 'started\n');
  assert.equal(err.stderr, 'warn\n');
  assert.equal(err.stdoutBytes, 8);
  assert.equal(err.stderrBytes, 5);
  assert.equal(err.truncated, false);
  assert.equal(err.outputDropped, false);
  assert.equal(failed[0].errorObject, err);

  const lines = [];
  bg.on('command-output', (e) => lines.push(`${e.agent}: ${e.line}`));
  const run = bg.execute('tidy', 'c').catch((e) => e);
  // Cancelled once its first line has been read (a loaded machine may take a while).
  await waitUntil(() => lines.includes('tidy: started'), 'tidy printed its first line');
  const { executionId } = bg.getActiveExecutions().find((a) => a.agent === 'tidy');
  assert.equal((await bg.cancelExecution(executionId)).success, true);
  const c = await run;
  assert.equal(c.code, 'ERR_EXECUTION_CANCELLED');
  assert.match(c.stdout, /^started\n/);
  // 'deaf' goes at its SIGKILL, ~2.7 s after its start; a loaded machine adds seconds (4 s flaked in CI).
  await waitUntil(() => bg.getStatus().command_processes === 0, 'both commands ended', { timeoutMs: 10000 });
  assert.equal(c.stdout, 'started\ncleaning up\n', 'what it printed while being terminated is added');
  assert.equal(c.stdoutBytes, 20);
  assert.equal(bg.getExecutionStatus(executionId).errorObject, c);
  assert.equal(err.stdout, 'started\n');
});

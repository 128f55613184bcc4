// Garbage collection: an executor nobody references any more is collected (its native side
// with it), but never while it still has queued or running work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runScript } from './helpers.mjs';

const entry = fileURLToPath(new URL('../index.mjs', import.meta.url));

/** Runs `source` as a module in a child `node --expose-gc`; its trimmed stdout. */
async function runChild(source) {
  const r = await runScript(source, { nodeArgs: ['--expose-gc'], killAfterMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

test('idle executors that were never shut down are collected', async () => {
  const out = await runChild(`
    import BackgroundExecutor from ${JSON.stringify(entry)};
    let collected = 0;
    const registry = new FinalizationRegistry(() => collected++);
    for (let k = 0; k < 100; k++) {
      const bg = new BackgroundExecutor();
      bg.registerAgent('a', async () => k);
      if (k % 2) await bg.initialize();
      await bg.execute('a', 't');
      registry.register(bg, k);
    }
    for (let i = 0; i < 30 && collected < 100; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(collected);
  `);
  // All but possibly the last one, which the loop's scope may still hold.
  assert.ok(Number(out) >= 99, `collected ${out} of 100`);
});

test('an unreferenced executor with queued work is kept until the work is done', async () => {
  const out = await runChild(`
    import BackgroundExecutor from ${JSON.stringify(entry)};
    let ran = false;
    let collected = false;
    const registry = new FinalizationRegistry(() => (collected = true));
    const result = (() => {
      const bg = new BackgroundExecutor({ maxConcurrentAgents: 1, cancelGraceMs: 200 });
      bg.registerAgent('stuck', () => new Promise(() => {})); // ignores its signal, never settles
      bg.registerAgent('next', async () => { ran = true; return 'next ran'; });
      bg.fireAndForget('stuck', 't').then(({ executionId }) => bg.cancelExecution(executionId));
      const p = bg.execute('next', 't'); // queued behind the stuck slot until the grace period ends
      registry.register(bg, 'bg');
      return p;
    })();
    for (let i = 0; i < 5; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(await result, ran);
    for (let i = 0; i < 30 && !collected; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(collected);
  `);
  assert.deepEqual(out.split('\n'), ['next ran true', 'true']);
});

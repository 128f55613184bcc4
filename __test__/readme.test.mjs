// Every JavaScript block of the README runs as written: each is saved as an ES module in a
// fresh project whose node_modules/bmad-background-executor is this checkout, run with
// node, and must exit 0 by itself (no work left keeping it alive).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, tempDir } from './helpers.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** `{ line, code }` of every ```js block. */
function blocks(markdown) {
  const out = [];
  const re = /^```js\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(markdown); m !== null; m = re.exec(markdown)) {
    out.push({ line: markdown.slice(0, m.index).split('\n').length, code: m[1] });
  }
  return out;
}

test('the README has its quick start and command example as runnable blocks', () => {
  assert.ok(blocks(readme).length >= 3, `${blocks(readme).length} js blocks`);
});

for (const { line, code } of blocks(readme)) {
  test(`README.md:${line} runs as written`, (t) => {
    // The PostgreSQL example runs against the test server, in a schema of its own.
    const env = { ...process.env };
    if (code.includes('process.env.DATABASE_URL')) {
      if (!process.env.BMAD_TEST_PG_URL) return t.skip('BMAD_TEST_PG_URL is not set (run it through scripts/pg-cluster.mjs)');
      env.DATABASE_URL = `${process.env.BMAD_TEST_PG_URL}?schema=readme_${process.pid}_${line}`;
    }
    const dir = tempDir(t, 'bmad-bg-readme-');
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(root, join(dir, 'node_modules', 'bmad-background-executor'), 'dir');
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(join(dir, 'example.mjs'), code);
    const r = spawnSync(process.execPath, ['example.mjs'], { cwd: dir, env, encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  });
}

// What depends on the platform: command agents are refused on Windows with a coded error
// (function agents and the scheduler work everywhere).
import assert from 'node:assert/strict';
import { test, makeExecutor } from './helpers.mjs';

test('registerCommand on Windows throws ERR_UNSUPPORTED_PLATFORM; function agents still run', async () => {
  const bg = makeExecutor();
  const real = Object.getOwnPropertyDescriptor(process, 'platform');
  Object.defineProperty(process, 'platform', { value: 'win32' });
  try {
    assert.throws(() => bg.registerCommand('build', { command: 'cargo' }), (err) => {
      assert.equal(err.code, 'ERR_UNSUPPORTED_PLATFORM');
      assert.equal(err.platform, 'win32');
      assert.match(err.message, /not supported on Windows/);
      return true;
    });
    bg.registerAgent('fn', (task) => `ran ${task}`);
    assert.equal(await bg.execute('fn', 'here'), 'ran here');
  } finally {
    Object.defineProperty(process, 'platform', real);
  }
  // Elsewhere it registers.
  bg.registerCommand('ok', { command: 'true' });
  assert.equal((await bg.execute('ok', 't')).exitCode, 0);
  await bg.shutdown();
});

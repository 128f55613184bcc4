// A PostgreSQL server of a test file's own, for the tests that restart or crash it: the other
// suites, run at the same time, share the test server and must not see it go. Started at
// first use (with that call's options), stopped when the file's tests are done, or when the
// process exits if they are cut short.
import { after } from 'node:test';

let own = null;
const stop = () => {
  const server = own;
  own = null;
  server?.stop();
};
after(stop);
process.once('exit', stop);

/** The file's own server (see scripts/pg-cluster.mjs's startPostgres for `options`). */
export async function ownServer(options = {}) {
  if (own === null) {
    // Imported here: an installed package has no scripts/ (and no server to test against).
    const { startPostgres } = await import('../../scripts/pg-cluster.mjs');
    own = await startPostgres(undefined, options);
  }
  return own;
}

// `node shutdown-unopened.mjs <storeUrl>`: an executor on a store shuts down before anything
// opened its store (no initialize(), no submission, no query). Prints `shutdown-complete` (the
// event), then `shut down` once shutdown() resolved, and exits 0.
import BackgroundExecutor from '../../index.mjs';

const [url] = process.argv.slice(2);
const bg = new BackgroundExecutor({ store: url });
bg.on('shutdown-complete', () => process.stdout.write('shutdown-complete\n'));
await bg.shutdown();
process.stdout.write('shut down\n');

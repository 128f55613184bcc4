// `node shutdown-after-submit.mjs <storeUrl>`: an executor that can run its agent submits one
// execution and shuts down as soon as the submission is acknowledged. Prints `{ executionId }`,
// then `shut down`, and exits 0.
import BackgroundExecutor from '../../index.mjs';

const [url] = process.argv.slice(2);
const bg = new BackgroundExecutor({ store: url, throttleIfExceeded: false, agents: { echo: (task) => task } });
const { executionId } = await bg.fireAndForget('echo', 'soon');
process.stdout.write(`${JSON.stringify({ executionId })}\n`);
await bg.shutdown();
process.stdout.write('shut down\n');

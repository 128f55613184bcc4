// `node cancel.mjs <storeUrl> <executionId>`: another process cancels an execution of the
// store, prints `{ result, events }` (the answer of cancelExecution and the events emitted here).
import BackgroundExecutor from '../../index.mjs';

const [url, executionId] = process.argv.slice(2);
const bg = new BackgroundExecutor({ store: url, throttleIfExceeded: false });
const events = [];
bg.on('execution-cancelled', (e) => events.push({ event: 'execution-cancelled', id: e.executionId, code: e.code }));
await bg.initialize();
const result = await bg.cancelExecution(executionId);
await bg.shutdown();
process.stdout.write(`${JSON.stringify({ result, events })}\n`);

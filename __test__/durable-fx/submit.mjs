// `node submit.mjs <storeUrl> <agent> <task>`: a process with no agents submits one
// fire-and-forget execution, prints `{ executionId, at }` once the submission is acknowledged,
// and then waits (to be killed).
import BackgroundExecutor from '../../index.mjs';

const [url, agent, task] = process.argv.slice(2);
const bg = new BackgroundExecutor({ store: url, throttleIfExceeded: false });
const { executionId } = await bg.fireAndForget(agent, task);
process.stdout.write(`${JSON.stringify({ executionId, at: Number(process.hrtime.bigint()) / 1e6 })}\n`);
setInterval(() => {}, 1000);

// The ESM entry point as a TypeScript ESM consumer sees it:
//   import BackgroundExecutor, { BackgroundExecutor, ResourceMonitor } from 'bmad-background-executor'
// At run time index.mjs has a real default export (the class), so the typings must make the
// default import constructable. Type-checked only (tsconfig.entry.json).

import BackgroundExecutor, { BackgroundExecutor as NamedExecutor, ResourceMonitor } from 'bmad-background-executor';
import type { Submitted } from 'bmad-background-executor';

const bg = new BackgroundExecutor({ maxConcurrentAgents: 5, maxCpuPercent: 80 });
const named: NamedExecutor = bg;
const monitor: ResourceMonitor = bg.resourceMonitor;
const alone = new ResourceMonitor({ interval: 1000 });

await bg.initialize();
bg.registerAgent('monitor', () => ({ cpu: 1 }));
const submitted: Submitted<'fire-and-forget'> = await bg.fireAndForget('monitor', 'track-metrics', { priority: 'low' });
bg.on('execution-completed', ({ executionId, result }) => [executionId, result]);
await bg.shutdown();

export { named, monitor, alone, submitted };

// The ESM entry point as a TypeScript ESM consumer sees it:
//   import BackgroundExecutor, { BackgroundExecutor, ResourceMonitor } from 'bmad-background-executor'
// At run time index.mjs has a real default export (the class), so the typings must make the
// default import constructable. Type-checked only (tsconfig.json).

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

// Level names inferred from priorityLevels, through the default import.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const custom = new BackgroundExecutor({ priorityLevels: { urgent: 2, later: 1 } });
const customNamed: NamedExecutor<'urgent' | 'later'> = custom;
const levelsTyped: Equal<NonNullable<Parameters<typeof custom.fireAndForget>[2]>['priority'], 'urgent' | 'later' | undefined> = true;
await custom.fireAndForget('monitor', 'track-metrics', { priority: 'urgent' });

export { named, monitor, alone, submitted, customNamed, levelsTyped };
